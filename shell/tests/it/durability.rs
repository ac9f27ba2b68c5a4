//! Every write `runql serve` acknowledged is there after the server is killed, and nothing is
//! there twice: four official `mlflow` clients log batches (retrying, as they do by default)
//! while the server is killed with SIGKILL at random moments and restarted on the same port,
//! twenty times, then stopped with SIGTERM five times. The clients print each batch the
//! server acknowledged; the store must hold every acknowledged point exactly once. A SIGTERM
//! drains and exits by itself (within its 5 s deadline: `runql_server::SHUTDOWN_DEADLINE`),
//! and the runs its clients still own stay `running` through every stop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::cli::runql;
use crate::mlflow::python;

const CLIENTS: usize = 4;

/// `runql serve` on `port`; its first stderr line says it listens.
fn serve(store: &std::path::Path, port: u16) -> Child {
    // The port was just freed by a killed server: binding may need a moment.
    for _ in 0..50 {
        let mut child = runql()
            .args([
                "--store",
                &store.to_string_lossy(),
                "serve",
                "--port",
                &port.to_string(),
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        err.read_line(&mut line).unwrap();
        if line.contains("http://") {
            // Keep reading its log so that it never blocks on a full pipe.
            std::thread::spawn(move || for _ in err.lines() {});
            return child;
        }
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("runql serve could not listen on port {port}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the clients were told: the last acknowledged step of each run.
type Acked = Arc<Mutex<HashMap<String, i64>>>;

fn status_of(store: &std::path::Path, run: &str) -> String {
    let out = runql()
        .args([
            "--store",
            &store.to_string_lossy(),
            "sql",
            &format!("SELECT status FROM runs WHERE run_id = '{run}'"),
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn acknowledged_writes_survive_kills_and_stops() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let script = format!(
        "{}/tests/python/mlflow_durability.py",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let mut server = serve(dir.path(), port);
    let acked: Acked = Arc::default();
    let mut clients = Vec::new();
    let mut readers = Vec::new();
    for i in 0..CLIENTS {
        let mut c = Command::new(&python)
            .args([&script, &format!("client-{i}")])
            .env("MLFLOW_TRACKING_URI", &url)
            .env("BATCHES", "1000000")
            // Retry through a restart, quickly.
            .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "10")
            .env("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            .env("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.1")
            .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join(format!("client-{i}.log"))).unwrap())
            .spawn()
            .unwrap();
        let out = BufReader::new(c.stdout.take().unwrap());
        let acked = acked.clone();
        readers.push(std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("run"), Some(id), None) => {
                        acked.lock().unwrap().insert(id.to_string(), -1);
                    }
                    (Some("acked"), Some(id), Some(step)) => {
                        let step: i64 = step.parse().unwrap();
                        acked.lock().unwrap().insert(id.to_string(), step);
                    }
                    _ => {}
                }
            }
        }));
        clients.push(c);
    }
    // The kills start once every client has its run: a kill while a client is still starting
    // (its experiments/create answered by nobody) is the client's failure, not the server's —
    // the mlflow client does not retry a POST whose answer was lost (seen on a loaded machine).
    let started = Instant::now();
    while acked.lock().unwrap().len() < CLIENTS {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the clients did not start: {:?}",
            acked.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rng = rand::rng();
    let rounds = 20 + 5;
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let sigterm = round >= 20;
        if sigterm {
            let t = Instant::now();
            Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status()
                .unwrap();
            // It stops by itself; a hung server fails the test rather than hanging it.
            let status = loop {
                if let Some(s) = server.try_wait().unwrap() {
                    break s;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "round {round}: the server did not stop after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(status.success(), "round {round}: {status:?}");
            eprintln!("round {round}: SIGTERM, stopped in {:?}", t.elapsed());
        } else {
            server.kill().unwrap();
            let _ = server.wait();
        }
        // While it is down, the clients' runs are theirs: still running.
        for run in acked.lock().unwrap().keys() {
            assert_eq!(
                status_of(dir.path(), run),
                "running",
                "round {round}: run {run}"
            );
        }
        server = serve(dir.path(), port);
    }
    // The clients stop wherever they are; what they were told is the truth to check.
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    for r in readers {
        r.join().unwrap();
    }
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());

    let acked = acked.lock().unwrap().clone();
    let logs = || {
        (0..CLIENTS)
            .map(|i| {
                std::fs::read_to_string(dir.path().join(format!("client-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    assert_eq!(acked.len(), CLIENTS, "{acked:?}\n{}", logs());
    let out = runql()
        .args([
            "--store",
            &dir.path().to_string_lossy(),
            "sql",
            "SELECT run_id, count(*) AS n, count(DISTINCT step) AS distinct_steps, \
             min(step) AS lo, max(step) AS hi FROM metrics GROUP BY run_id",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut seen = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (run, n, distinct, lo, hi): (&str, i64, i64, i64, i64) = (
            f[0],
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
        );
        let Some(&last) = acked.get(run) else {
            continue;
        };
        seen += 1;
        assert_eq!(
            n,
            distinct,
            "run {run}: {} points written twice",
            n - distinct
        );
        // Batches are whole: no gap below the last acknowledged step, nothing before 0.
        assert_eq!(lo, 0, "run {run}");
        assert!(
            hi >= last,
            "run {run}: acknowledged up to step {last}, stored up to {hi}"
        );
        assert_eq!(n, hi + 1, "run {run}: a gap below step {hi}");
        assert!(
            last > 0,
            "run {run} logged nothing acknowledged: the test proves nothing"
        );
    }
    assert_eq!(seen, CLIENTS, "{text}");
}
