//! The analysis endpoints of `runql serve`: 10 M metric points (POINTS=…) into a pandas frame
//! through Arrow Flight SQL (ADBC), `POST /api/sql` JSON, the Postgres wire (psycopg) and the
//! `mlflow` client's `get_metric_history` loop, in one run (benches/connect.py); and psql's
//! connect + first query.
//!
//! ```sh
//! RUNQL_PYTHON=~/.cache/runql-venv/bin/python cargo bench -p runql --bench connect
//! ```
//!
//! Figures go to docs/benchmarks.md. Without the Python clients the bench says so and stops.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args([
            "-c",
            "import adbc_driver_flightsql, psycopg, pandas, mlflow",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "connect bench: needs RUNQL_PYTHON with adbc-driver-flightsql, psycopg, pandas, mlflow"
        );
        return;
    }
    let points: i64 = std::env::var("POINTS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(10_000_000);
    let runs: i64 = 20;
    let dir = tempfile::tempdir().expect("a temporary store");
    let store = runql_core::Store::open(&dir.path().to_string_lossy()).expect("the store opens");
    let t = Instant::now();
    let project = store.project("bench");
    for r in 0..runs {
        let run = project
            .run()
            .name(format!("run-{r}"))
            .capture(runql_core::Capture::none())
            .start()
            .expect("a run starts");
        let series: Vec<(i64, f64)> = (0..points / runs)
            .map(|s| (s, 1.0 / (1.0 + s as f64 * 1e-4) + r as f64 * 1e-3))
            .collect();
        run.log_series("loss", &series)
            .expect("the points are logged");
        run.finish().expect("the run finishes");
    }
    drop(store);
    let exe = env!("CARGO_BIN_EXE_runql");
    let compact = Command::new(exe)
        .args(["--store", &dir.path().to_string_lossy(), "compact"])
        .status()
        .expect("runql compact runs");
    assert!(compact.success());
    eprintln!(
        "store of {points} points written and compacted in {:.1?}",
        t.elapsed()
    );

    let mut server = Command::new(exe)
        .args([
            "--store",
            &dir.path().to_string_lossy(),
            "serve",
            "--port",
            "0",
        ])
        .args([
            "--pg-port",
            "0",
            "--flight-port",
            "0",
            "--sql-max-result-mb",
            "8192",
        ])
        .args(["--sql-memory-mb", "8192", "--sql-timeout", "3600"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("runql serve starts");
    let mut lines = BufReader::new(server.stderr.take().expect("its stderr")).lines();
    let (mut http, mut pg, mut flight) = (None, None, None);
    while http.is_none() || pg.is_none() || flight.is_none() {
        let line = lines
            .next()
            .expect("runql serve stopped")
            .expect("a line of stderr");
        if let Some(rest) = line.split(" on ").nth(1) {
            let addr = rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_string();
            if line.starts_with("runql serving Postgres") {
                pg = addr.rsplit(':').next().map(str::to_string);
            } else if line.starts_with("runql serving Flight SQL") {
                flight = Some(addr);
            } else if line.starts_with("runql serving ") {
                http = Some(addr);
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let out = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/connect.py"))
        .env("RUNQL_HTTP", http.expect("the HTTP address"))
        .env("RUNQL_FLIGHT", flight.expect("the Flight SQL address"))
        .env("RUNQL_PG_PORT", pg.expect("the Postgres port"))
        .output()
        .expect("the bench script runs");
    let _ = server.kill();
    let _ = server.wait();
    if !out.status.success() {
        panic!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let figures: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .expect("a JSON line"),
    )
    .expect("the figures are JSON");
    let rate = |k: &str| figures[k]["rows_per_s"].as_f64().expect("a rate");
    println!("| path | rows | seconds | rows/s | vs Flight SQL |");
    println!("|---|---|---|---|---|");
    for k in [
        "flight_sql",
        "http_json",
        "postgres",
        "postgres_binary",
        "postgres_pandas",
        "mlflow_get_metric_history",
    ] {
        println!(
            "| {k} | {} | {:.2} | {:.0} | {:.1}× slower |",
            figures[k]["rows"],
            figures[k]["seconds"].as_f64().expect("seconds"),
            rate(k),
            rate("flight_sql") / rate(k)
        );
    }
    println!(
        "| psql connect + first query (median of 20) | | {:.1} ms | | |",
        figures["psql_connect_first_query_ms"]
            .as_f64()
            .expect("a time")
    );
}
