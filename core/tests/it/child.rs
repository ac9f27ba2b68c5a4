//! Child processes for the crash and concurrency tests: this test binary run again with
//! `RUNQL_TEST_CHILD=<role>`, through the ignored test below.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use runql_core::{Capture, Store};

/// Starts this test binary as a child playing `role`.
pub fn spawn(role: &str, store: &str, extra: &[(&str, String)]) -> std::process::Child {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child::entry",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RUNQL_TEST_CHILD", role)
    .env("RUNQL_TEST_STORE", store)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap_or_else(|e| panic!("spawn child: {e}"))
}

/// The text after `marker` in a line a child printed. The test harness may print
/// `test child::entry ... ` before a child's first line, so the marker is searched for.
pub fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[test]
#[ignore = "entry point of child processes, run by other tests"]
fn entry() {
    let Ok(role) = std::env::var("RUNQL_TEST_CHILD") else {
        return;
    };
    let store = Store::open(&env("RUNQL_TEST_STORE")).unwrap_or_else(|e| panic!("{e}"));
    match role.as_str() {
        "crash" => crash_child(&store),
        "wal" => wal_child(&store),
        "concurrent" => concurrent_child(&store),
        "compact" => {
            let project = env("RUNQL_TEST_PROJECT");
            runql_core::block_on(store.compact(&project)).unwrap_or_else(|e| panic!("{e}"));
        }
        other => panic!("unknown child role {other}"),
    }
}

/// Logs metrics forever; after every explicit flush prints `flushed <run> <last step>`.
fn crash_child(store: &Store) {
    let run = store
        .project("crash")
        .run()
        .capture(Capture::none())
        .flush_interval(Duration::from_millis(20))
        .heartbeat_interval(Duration::from_millis(50))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "run {}", run.id());
    let _ = out.flush();
    let mut step: i64 = 0;
    loop {
        for _ in 0..500 {
            run.log_metric("loss", step, (step as f64).sin())
                .unwrap_or_else(|e| panic!("{e}"));
            step += 1;
        }
        run.flush().unwrap_or_else(|e| panic!("{e}"));
        let _ = writeln!(out, "flushed {}", step - 1);
        let _ = out.flush();
    }
}

/// Logs `RUNQL_TEST_RUNS` runs at once (interleaved), each `RUNQL_TEST_POINTS` points.
fn concurrent_child(store: &Store) {
    let runs: usize = env("RUNQL_TEST_RUNS").parse().unwrap_or(25);
    let points: i64 = env("RUNQL_TEST_POINTS").parse().unwrap_or(1000);
    let process: String = env("RUNQL_TEST_PROCESS");
    let project = store.project("concurrency");
    let handles: Vec<_> = (0..runs)
        .map(|i| {
            project
                .run()
                .name(format!("p{process}-r{i}"))
                .capture(Capture::none())
                .flush_interval(Duration::from_millis(10))
                .start()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for step in 0..points {
        for (i, run) in handles.iter().enumerate() {
            run.log_metric("loss", step, step as f64 + i as f64)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    for (i, run) in handles.iter().enumerate() {
        run.log_param("index", i).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut out = std::io::stdout().lock();
    for run in handles {
        let id = run.id();
        run.finish().unwrap_or_else(|e| panic!("{e}"));
        let _ = writeln!(out, "done {id}");
    }
    let _ = out.flush();
}

/// Logs batches of 100 points through a write-ahead log (`RUNQL_TEST_WAL`) as the server
/// does: each batch under one lock with an ack id, then waits for it to be durable and prints
/// `acked <last step>`. Never flushes itself: its writer writes segments every 100 ms.
fn wal_child(store: &Store) {
    let dir = std::path::PathBuf::from(env("RUNQL_TEST_WAL"));
    let (wal, _) = runql_core::Wal::open(&dir).unwrap_or_else(|e| panic!("{e}"));
    let run = store
        .project("wal")
        .run()
        .capture(Capture::none())
        .flush_interval(Duration::from_millis(100))
        .wal(wal)
        .owned_elsewhere(Duration::from_secs(600))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "run {}", run.id());
    let _ = out.flush();
    let mut step: i64 = 0;
    loop {
        let points: Vec<(&str, i64, f64, i64)> = (step..step + 100)
            .map(|s| ("loss", s, (s as f64).cos(), s))
            .collect();
        let batch = runql_core::Batch {
            metrics: points,
            ..runql_core::Batch::default()
        };
        let ack = *blake3::hash(&step.to_le_bytes()).as_bytes();
        run.log_batch(&batch, Some(ack))
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(run.wait_durable())
            .unwrap_or_else(|e| panic!("{e}"));
        step += 100;
        let _ = writeln!(out, "acked {}", step - 1);
        let _ = out.flush();
    }
}
