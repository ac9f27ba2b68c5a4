//! The dashboard in headless Chromium over big projects: 10 runs × 100,000 points overlaid in
//! the compare view, and a 10,000-run project in the runs table (first page, sort by a metric,
//! SQL filter, scroll to the middle). Times are taken by the browser test driver around each
//! step, until what the step shows is on screen (benches/dashboard.py).
//!
//! ```sh
//! RUNQL_PYTHON=~/.cache/runql-venv/bin/python cargo bench -p runql --bench dashboard
//! ```
//!
//! Needs Playwright in RUNQL_PYTHON and Chromium (/usr/bin/chromium or RUNQL_CHROMIUM);
//! scripts/test installs both. Figures go to docs/benchmarks.md.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use runql_core::{Capture, Store};

const CURVE_RUNS: usize = 10;
const CURVE_POINTS: i64 = 100_000;
const MANY_RUNS: usize = 10_000;

fn main() {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into());
    let chromium = std::env::var("RUNQL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ok = Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok || !std::path::Path::new(&chromium).exists() {
        eprintln!("dashboard bench: needs Playwright in {python} and {chromium}; skipped");
        return;
    }
    let many_runs = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MANY_RUNS);
    // RUNQL_BENCH_STORE=DIR keeps the generated store there (a fresh folder) to look at after.
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("RUNQL_BENCH_STORE")
        .unwrap_or_else(|_| dir.path().to_string_lossy().to_string());
    let store = Store::open(&url).unwrap();

    let t = Instant::now();
    let mut ids = Vec::new();
    for r in 0..CURVE_RUNS {
        let run = store
            .project("curves")
            .run()
            .name(format!("run-{r}"))
            .capture(Capture::none())
            .start()
            .unwrap();
        run.log_param("seed", r).unwrap();
        let speed = 1.0 + r as f64 * 0.3;
        for step in 0..CURVE_POINTS {
            let x = step as f64 / CURVE_POINTS as f64;
            let noise = ((step * 7919 + r as i64 * 104_729) % 1000) as f64 / 1000.0 - 0.5;
            run.log_metric("loss", step, (-x * 5.0 * speed).exp() + 0.05 * noise)
                .unwrap();
        }
        ids.push(run.id().to_string());
        run.finish().unwrap();
    }
    eprintln!(
        "generated {CURVE_RUNS} runs × {CURVE_POINTS} points in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for r in 0..many_runs {
        let run = store
            .project("many")
            .run()
            .name(format!("run-{r:05}"))
            .capture(Capture::none())
            .start()
            .unwrap();
        run.log_params([
            ("lr", format!("{}", 1e-4 * (1 + r % 100) as f64)),
            ("batch_size", format!("{}", 16 << (r % 4))),
            ("model", ["cnn", "mlp", "vit"][r % 3].to_string()),
        ])
        .unwrap();
        run.log_metric("val/acc", 10, 0.5 + ((r * 7919) % 5000) as f64 / 10_000.0)
            .unwrap();
        run.log_metric("train/loss", 10, ((r * 104_729) % 1000) as f64 / 1000.0)
            .unwrap();
        run.finish().unwrap();
    }
    eprintln!(
        "generated {many_runs} runs in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    rt.block_on(async {
        store.compact("curves").await.unwrap();
        store.compact("many").await.unwrap();
    });
    eprintln!("compacted in {:.1} s", t.elapsed().as_secs_f64());
    drop(store);

    let mut child = Command::new(env!("CARGO_BIN_EXE_runql"))
        .args(["--store", &url, "serve", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/dashboard.py");
    let status = Command::new(&python)
        .arg(script)
        .arg(&server)
        .arg(ids.join(","))
        .arg(many_runs.to_string())
        .env("RUNQL_CHROMIUM", &chromium)
        .status()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.success(), "the dashboard bench failed");
}
