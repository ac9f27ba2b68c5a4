//! `runql serve` against `mlflow server` (SQLite backend) under the same client workload:
//! the official `mlflow` client logs RUNS runs × 20 params × 5 keys × 1,000 steps through
//! `log_batch` into each server in turn (benches/mlflow_workload.py), then times searches and a
//! metric history. The server's CPU time (its whole process tree: MLflow's workers included) is
//! read from /proc around the logging phase.
//!
//! ```sh
//! RUNQL_PYTHON=~/.cache/runql-venv/bin/python \
//! RUNQL_MLFLOW_PYTHON=~/.cache/runql-mlflow-venv/bin/python \
//! cargo bench -p runql --bench mlflow_server        # RUNS=20 for a quick look
//! ```
//!
//! `ONLY=runql` (or `ONLY=mlflow`) runs one server: for a look at one side, not for the table.
//!
//! Figures go to docs/benchmarks.md. Without both Pythons the bench says so and does nothing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed (with its workers) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        for pid in descendants(self.child.id()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process id below `root`, `root` included.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(fields) = stat(pid) {
                parent.push((pid, fields.0));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// (parent pid, user + system CPU ticks) of a process.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU seconds used so far by a process tree.
fn tree_cpu_s(root: u32, tick: f64) -> f64 {
    descendants(root)
        .into_iter()
        .filter_map(stat)
        .map(|(_, t)| t as f64 / tick)
        .sum()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

fn wait_up(python: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = Command::new(python)
            .args([
                "-c",
                &format!("import urllib.request; urllib.request.urlopen('{url}/health')"),
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not come up");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn runql_server(dir: &std::path::Path, python: &str) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_runql"))
        .arg("--store")
        .arg(dir.join("store"))
        .args(["serve", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runql serve starts");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_up(python, &server.url);
    server
}

fn mlflow_server(dir: &std::path::Path, python: &str) -> Server {
    let port = free_port();
    let child = Command::new(python)
        .process_group(0)
        .args(["-m", "mlflow", "server", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mlflow server starts");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_up(python, &server.url);
    server
}

/// What one server did under the workload.
struct Figures {
    client: serde_json::Value,
    server_cpu_log_s: f64,
    server_cpu_read_s: f64,
}

fn workload(server: &Server, client_python: &str, tick: f64) -> Figures {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/mlflow_workload.py");
    let mut child = Command::new(client_python)
        .arg(script)
        .env("MLFLOW_TRACKING_URI", &server.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the workload starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let root = server.child.id();
    let mut marks = Vec::new();
    let mut result = serde_json::Value::Null;
    for line in stdout.lines() {
        let line = line.expect("workload output");
        if !line.starts_with('{') {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("the workload printed {line:?}"));
        if v.get("phase").is_some() {
            marks.push(tree_cpu_s(root, tick));
            writeln!(stdin).expect("the workload reads its go");
            stdin.flush().expect("flush");
        } else {
            marks.push(tree_cpu_s(root, tick));
            result = v;
        }
    }
    let status = child.wait().expect("the workload ends");
    assert!(
        status.success(),
        "the workload failed against {}",
        server.url
    );
    assert_eq!(marks.len(), 3, "phases log, read and the result");
    Figures {
        client: result,
        server_cpu_log_s: marks[1] - marks[0],
        server_cpu_read_s: marks[2] - marks[1],
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let (Ok(client_python), Ok(mlflow_python)) = (
        std::env::var("RUNQL_PYTHON"),
        std::env::var("RUNQL_MLFLOW_PYTHON"),
    ) else {
        eprintln!(
            "mlflow_server bench skipped: set RUNQL_PYTHON (with mlflow) and RUNQL_MLFLOW_PYTHON \
             (with the full mlflow server); scripts/test creates both venvs"
        );
        return;
    };
    let tick = clock_ticks();
    let mut rows = Vec::new();
    let only = std::env::var("ONLY").unwrap_or_default();
    for name in ["runql serve", "mlflow server"] {
        if !name.starts_with(only.as_str()) {
            continue;
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let server = if name == "runql serve" {
            runql_server(dir.path(), &client_python)
        } else {
            mlflow_server(dir.path(), &mlflow_python)
        };
        eprintln!("{name}: logging…");
        let f = workload(&server, &client_python, tick);
        drop(server);
        let points = f.client["points"].as_f64().unwrap_or(0.0);
        let cpu_per_m = f.server_cpu_log_s / (points / 1e6);
        eprintln!(
            "{name}: {} points in {:.1} s, server CPU {:.2} s",
            points, f.client["log_s"], f.server_cpu_log_s
        );
        rows.push((name, f, cpu_per_m));
    }
    println!(
        "\n| server | points | client wall (s) | client CPU (s) | points/s | server CPU s per M points | search (ms) | top-10 (ms) | history (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, f, cpu_per_m) in &rows {
        let c = &f.client;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} |",
            c["points"],
            c["log_s"].as_f64().unwrap_or(0.0),
            c["client_cpu_s"].as_f64().unwrap_or(0.0),
            c["points_per_s"].as_f64().unwrap_or(0.0),
            cpu_per_m,
            c["search_ms"].as_f64().unwrap_or(0.0),
            c["top10_ms"].as_f64().unwrap_or(0.0),
            c["history_ms"].as_f64().unwrap_or(0.0),
        );
    }
    if let [(_, a, ac), (_, b, bc)] = rows.as_slice() {
        let ratio = |x: &serde_json::Value, y: &serde_json::Value| {
            y.as_f64().unwrap_or(0.0) / x.as_f64().unwrap_or(f64::NAN)
        };
        println!(
            "\nrunql vs mlflow: server CPU per point {:.0}× less, search {:.1}× faster, top-10 {:.1}× faster, history {:.1}× faster; server CPU during reads {:.2} s vs {:.2} s",
            bc / ac,
            ratio(&a.client["search_ms"], &b.client["search_ms"]),
            ratio(&a.client["top10_ms"], &b.client["top10_ms"]),
            ratio(&a.client["history_ms"], &b.client["history_ms"]),
            a.server_cpu_read_s,
            b.server_cpu_read_s,
        );
    }
}
