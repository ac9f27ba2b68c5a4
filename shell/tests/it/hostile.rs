//! `runql serve` against what a hostile web page and a runaway query can do to it:
//! tests/browser/hostile.py attacks a server over a demo store from pages of other origins in
//! a real headless Chromium (cross-site writes through no-cors fetches and text/plain forms,
//! session statements, embedded reads, DNS rebinding) and checks that nothing changed and the
//! dashboard still works; tests/browser/limits.py runs queries past a server's small SQL limits
//! (timeout, memory, result size, a client that disconnects) and watches its memory and CPU.
//! The first is skipped without Chromium and Playwright unless RUNQL_REQUIRE_BROWSER is set, the
//! second without Python unless RUNQL_REQUIRE_PYTHON is set (scripts/test sets both).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{demo_store, runql};
use crate::dashboard::browser;
use crate::mlflow::serve;

fn script(name: &str) -> String {
    format!(
        "{}/tests/browser/{name}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    )
}

/// Python (its standard library is all limits.py needs).
fn python() -> Option<String> {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import json, socket, urllib.request"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(python)
    } else if std::env::var_os("RUNQL_REQUIRE_PYTHON").is_some() {
        panic!("no Python ({python}); scripts/test installs one");
    } else {
        eprintln!("skipped: no Python ({python})");
        None
    }
}

/// `runql serve` on a free port with extra flags; killed when dropped. Its stderr is kept
/// (and read all along, so that its logging never blocks it) for failure messages.
#[derive(Debug)]
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_with(store: &Path, flags: &[&str]) -> Server {
    let mut child = runql()
        .args(["--store", &store.to_string_lossy(), "serve", "--port", "0"])
        .args(flags)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
        let _ = child.kill();
        panic!("no address in {line:?}");
    };
    let url = url.to_string();
    let log = Arc::new(Mutex::new(line));
    let kept = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut line = Vec::new();
        while stderr.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            kept.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });
    let server = Server { child, url, log };
    wait_for_health(&server);
    server
}

/// Until GET /health answers 200 (10 s at most).
fn wait_for_health(server: &Server) {
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(
                s,
                "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match answer {
            Ok(text) if text.starts_with("HTTP/1.1 200") => return,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("{}/health did not answer 200: {other:?}", server.url),
        }
    }
}

#[test]
fn hostile_pages_cannot_use_or_change_the_server() {
    let Some((python, chromium)) = browser() else {
        return;
    };
    let dir = demo_store();
    let server = serve(dir.path());
    let out = Command::new(&python)
        .arg(script("hostile.py"))
        .arg(&server.url)
        .env("RUNQL_CHROMIUM", chromium)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the hostile pages got through:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn queries_past_the_servers_limits_are_stopped() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A small result limit too, so that the 400,000,000-row query meets it (rather than the
    // timeout, which an unoptimised build can reach first).
    let server = serve_with(
        dir.path(),
        &[
            "--sql-timeout",
            "3",
            "--sql-memory-mb",
            "256",
            "--sql-max-result-mb",
            "64",
        ],
    );
    let out = Command::new(&python)
        .arg(script("limits.py"))
        .arg(&server.url)
        .arg(server.child.id().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SQL limits did not hold:\n{}\n{}\nthe server's log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log.lock().unwrap()
    );
}
