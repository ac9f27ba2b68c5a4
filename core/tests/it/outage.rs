//! Fault injection: the S3 server (moto, scripts/s3-server) is stopped and started again while
//! runs log. The writer buffers and retries, says so, loses nothing within its buffer bound,
//! and refuses values clearly past it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use runql_core::{Error, Run, RunStatus, Store};

use crate::util::{block_on, metric_points, quiet_run};

/// A moto S3 server this test controls (stop / start).
struct S3Server {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    url: String,
}

impl S3Server {
    /// Starts one, or returns `None` (the test skips) when its Python is not installed
    /// locally; scripts/test installs it and sets `RUNQL_S3_PYTHON`.
    fn start() -> Option<S3Server> {
        if std::env::var_os("RUNQL_TEST_STORE").is_some() {
            // The pass of the store tests on S3: this test runs its own server, once, in the
            // local pass.
            return None;
        }
        let python = match std::env::var("RUNQL_S3_PYTHON") {
            Ok(p) => p,
            Err(_) if std::env::var_os("RUNQL_REQUIRE_PYTHON").is_some() => {
                panic!("RUNQL_S3_PYTHON is not set: scripts/test installs moto and sets it")
            }
            Err(_) => {
                eprintln!("skipping: RUNQL_S3_PYTHON (a Python with moto) is not set");
                return None;
            }
        };
        let root = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let script = std::path::Path::new(&root).join("../scripts/s3-server");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--control")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("scripts/s3-server: {e}"));
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut url = String::new();
        out.read_line(&mut url).unwrap();
        let url = url.trim().to_string();
        assert!(url.starts_with("http://"), "scripts/s3-server said {url:?}");
        Some(S3Server {
            child,
            stdin,
            out,
            url,
        })
    }

    fn command(&mut self, command: &str, answer: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), answer);
    }

    fn stop(&mut self) {
        self.command("stop", "stopped");
    }

    fn restart(&mut self) {
        self.command("start", "started");
    }

    /// A fresh store on this server (settings given explicitly, not through the environment).
    fn store(&self) -> Store {
        let url = format!("s3://runql-test/{}", uuid::Uuid::now_v7().simple());
        Store::open_with_options(
            &url,
            [
                ("aws_endpoint", self.url.as_str()),
                ("aws_allow_http", "true"),
                ("aws_access_key_id", "test"),
                ("aws_secret_access_key", "test"),
                ("aws_region", "us-east-1"),
            ],
        )
        .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn steps(store: &Store, run: &str) -> Vec<i64> {
    metric_points(store, "outage", run, "loss")
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn status(store: &Store, run: &str) -> RunStatus {
    let runs = block_on(store.list_runs(Some("outage"))).unwrap();
    runs.iter()
        .find(|r| r.run_id == run)
        .unwrap_or_else(|| panic!("run {run} is not listed"))
        .status
}

fn log_steps(run: &Run, steps: std::ops::Range<i64>, pause: Duration) {
    for step in steps {
        run.log_metric("loss", step, step as f64).unwrap();
        std::thread::sleep(pause);
    }
}

#[test]
fn logging_survives_a_stopped_and_restarted_server() {
    let Some(mut s3) = S3Server::start() else {
        return;
    };
    let store = s3.store();
    let run = quiet_run(&store.project("outage"))
        .flush_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    let id = run.id().as_hex();
    run.log_param("lr", "0.1").unwrap();
    log_steps(&run, 0..50, Duration::from_millis(1));
    run.flush().unwrap();
    assert!(run.health().is_ok(), "{:?}", run.health());

    s3.stop();
    // Logging goes on as if nothing happened…
    log_steps(&run, 50..250, Duration::from_millis(5));
    run.set_tag("phase", "outage").unwrap();
    // …and the writer reports the outage.
    wait_until("the outage to be noticed", Duration::from_secs(60), || {
        run.health().unreachable_for.is_some()
    });
    let health = run.health();
    assert!(health.pending_bytes > 0, "{health:?}");
    assert!(health.last_error.is_some(), "{health:?}");
    let err = run.flush().unwrap_err();
    assert!(matches!(err, Error::StoreUnavailable { .. }), "{err}");
    let message = err.to_string();
    eprintln!("FLUSH: {message}");
    assert!(
        message.contains("unreachable") && message.contains("written when the store is back"),
        "{message}"
    );
    log_steps(&run, 250..300, Duration::from_millis(1));

    s3.restart();
    wait_until("the buffer to be written", Duration::from_secs(60), || {
        run.health().is_ok()
    });
    log_steps(&run, 300..350, Duration::from_millis(1));
    run.finish().unwrap();

    assert_eq!(steps(&store, &id), (0..350).collect::<Vec<_>>());
    assert_eq!(status(&store, &id), RunStatus::Finished);
    let tags = crate::util::table_rows(
        &store,
        runql_core::Table::Tags,
        &runql_core::Scan::project("outage").runs([id.as_str()]),
    );
    assert!(
        tags.iter().any(|t| t.contains("phase|outage")),
        "the tag set during the outage is missing: {tags:?}"
    );
}

#[test]
fn a_full_outage_buffer_refuses_values_and_keeps_the_rest() {
    let Some(mut s3) = S3Server::start() else {
        return;
    };
    let store = s3.store();
    let run = quiet_run(&store.project("outage"))
        .flush_interval(Duration::from_millis(20))
        .outage_buffer(16 << 10)
        .start()
        .unwrap();
    let id = run.id().as_hex();
    let mut accepted = Vec::new();
    for step in 0..20 {
        run.log_metric("loss", step, 0.5).unwrap();
        accepted.push(step);
    }
    run.flush().unwrap();

    s3.stop();
    let mut step = 20;
    let refused = loop {
        match run.log_metric("loss", step, 0.5) {
            Ok(()) => accepted.push(step),
            Err(e) => break e,
        }
        step += 1;
        assert!(step < 10_000_000, "logging was never refused");
        if step % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    assert!(
        matches!(refused, Error::OutageBufferFull { .. }),
        "{refused}"
    );
    let message = refused.to_string();
    eprintln!("REFUSED: {message} accepted={}", accepted.len());
    assert!(
        message.contains("unreachable")
            && message.contains("16.0 KiB")
            && message.contains("not recorded")
            && message.contains("outage_buffer"),
        "{message}"
    );
    // Still refused while the store is away.
    step += 1;
    assert!(run.log_metric("loss", step, 0.5).is_err());

    s3.restart();
    wait_until("logging to work again", Duration::from_secs(60), || {
        step += 1;
        match run.log_metric("loss", step, 0.5) {
            Ok(()) => {
                accepted.push(step);
                true
            }
            Err(_) => false,
        }
    });
    for _ in 0..10 {
        step += 1;
        run.log_metric("loss", step, 0.5).unwrap();
        accepted.push(step);
    }
    run.finish().unwrap();
    // Every value that logging accepted is stored; none that it refused.
    assert_eq!(steps(&store, &id), accepted);
    assert_eq!(status(&store, &id), RunStatus::Finished);
}

#[test]
fn finish_gives_up_on_a_store_that_stays_away_and_says_what_was_lost() {
    let Some(mut s3) = S3Server::start() else {
        return;
    };
    let store = s3.store();
    let run = quiet_run(&store.project("outage"))
        .flush_interval(Duration::from_millis(20))
        .finish_timeout(Duration::from_secs(2))
        .start()
        .unwrap();
    let id = run.id().as_hex();
    log_steps(&run, 0..10, Duration::ZERO);
    run.flush().unwrap();
    s3.stop();
    log_steps(&run, 10..20, Duration::ZERO);
    let started = Instant::now();
    let err = run.finish().unwrap_err().to_string();
    eprintln!("FINISH: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "finish waited {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("stayed unreachable") && err.contains("could not be written"),
        "{err}"
    );
    s3.restart();
    // What was flushed before the outage is there; the run is not marked finished.
    assert_eq!(steps(&store, &id), (0..10).collect::<Vec<_>>());
    assert_ne!(status(&store, &id), RunStatus::Finished);
}
