//! Client and store benchmarks (a bench binary: `cargo bench -p runql-core --bench client`).
//!
//! Prints one table; figures go to docs/benchmarks.md. Measures:
//! - `log_metric` amortized cost on the calling thread (string key, and a registered key);
//! - sustained points/s for one run to local disk, until everything is written;
//! - time to start a run, log one value and finish it;
//! - bytes on disk per metric point after compaction, for realistic curves, next to the same
//!   rows written by Parquet's default zstd settings.

use std::time::{Duration, Instant};

use runql_core::{Capture, Run, Store, Table};

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().to_string_lossy()).expect("store");
    (dir, store)
}

fn row(what: &str, value: String, goal: &str) {
    println!("| {what} | {value} | {goal} |");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n: i64 = if quick { 2_000_000 } else { 50_000_000 };
    println!("| measure | result | goal |");
    println!("|---|---|---|");

    // 1-2. Per-call logging, amortized on the calling thread, then until everything is written.
    throughput(n, "`log_metric(&str, step, value)`", |run, n| {
        let keys = ["train/loss", "train/acc", "lr", "grad_norm"];
        for step in 0..n / 4 {
            for k in keys {
                run.log_metric(k, step, step as f64 * 0.5).expect("log");
            }
        }
    });
    throughput(n, "`log(MetricKey, step, value)`", |run, n| {
        let k = run.metric_key("train/loss").expect("key");
        for step in 0..n {
            run.log(k, step, step as f64 * 0.5).expect("log");
        }
    });

    // 3. Whole series at once (`log_series`), e.g. replaying a curve.
    let points: Vec<(i64, f64)> = (0..n).map(|s| (s, s as f64 * 0.5)).collect();
    throughput(n, "`log_series(&str, &[(step, value)])`", |run, _| {
        run.log_series("train/loss", &points).expect("series");
    });

    // 4. Start a run, log one value, finish.
    for (label, capture) in [
        ("no capture", Capture::none()),
        (
            "default capture (git, env files, sysmetrics)",
            Capture::default(),
        ),
    ] {
        let (_d, store) = temp_store();
        let project = store.project("bench");
        let mut times = Vec::new();
        for _ in 0..(if quick { 10 } else { 50 }) {
            let t = Instant::now();
            let run = project
                .run()
                .capture(capture.clone())
                .start()
                .expect("start");
            run.log_metric("x", 0, 1.0).expect("log");
            let started = t.elapsed();
            run.finish().expect("finish");
            times.push((started, t.elapsed()));
        }
        times.sort();
        let (start_med, _) = times[times.len() / 2];
        let mut total: Vec<Duration> = times.iter().map(|t| t.1).collect();
        total.sort();
        row(
            &format!("start a run + log one value, {label}"),
            format!(
                "{:.2} ms (to finish: {:.2} ms), median",
                start_med.as_secs_f64() * 1e3,
                total[total.len() / 2].as_secs_f64() * 1e3
            ),
            "≤ 5 ms",
        );
    }

    // 5. Bytes per point after compaction: noisy float32-born losses at training-step pace.
    {
        let (dir, store) = temp_store();
        let steps: i64 = if quick { 100_000 } else { 1_000_000 };
        let run = store
            .project("bytes")
            .run()
            .capture(Capture::none())
            .start()
            .expect("start");
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let t0 = 1_790_000_000_000_000i64;
        let mut ts = t0;
        for step in 0..steps {
            // ~120 ms a step, with jitter, like a real GPU training step.
            ts += 120_000 + (next() * 4000.0) as i64;
            let progress = step as f64 / steps as f64;
            let loss = 2.3 * (-4.0 * progress).exp() + 0.05 + 0.02 * (next() - 0.5);
            let acc = 1.0 - 0.9 * (-5.0 * progress).exp() + 0.01 * (next() - 0.5);
            run.log_metric_at("train/loss", step, f64::from(loss as f32), ts)
                .expect("log");
            run.log_metric_at("train/acc", step, f64::from(acc as f32), ts)
                .expect("log");
        }
        run.finish().expect("finish");
        let report = runql_core::block_on(store.compact("bytes")).expect("compact");
        let points = (2 * steps) as f64;
        let metrics_bytes = file_size(dir.path(), &report.files, "metrics");
        row(
            "bytes on disk per metric point after compaction (f32-born noisy curves, ~120 ms steps)",
            format!(
                "{:.2} B/point ({} points, {metrics_bytes} bytes)",
                metrics_bytes as f64 / points,
                points
            ),
            "≤ 4 B",
        );
        // The same rows written with Parquet's default settings + zstd, for reference.
        let batches =
            runql_core::block_on(store.scan(Table::Metrics, &runql_core::Scan::project("bytes")))
                .expect("scan");
        let mut buf = Vec::new();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(&mut buf, Table::Metrics.schema(), Some(props))
                .expect("writer");
        for b in &batches {
            w.write(b).expect("write");
        }
        w.close().expect("close");
        row(
            "same rows, Parquet default encodings + zstd (reference)",
            format!("{:.2} B/point", buf.len() as f64 / points),
            "",
        );
    }
}

/// Runs `log` (which logs `n` points) on a fresh run and reports the time per point on the
/// calling thread and the points per second until `finish` returns (everything written).
fn throughput(n: i64, what: &str, log: impl FnOnce(&Run, i64)) {
    let (_d, store) = temp_store();
    let run = store
        .project("bench")
        .run()
        .capture(Capture::none())
        .start()
        .expect("start");
    let t = Instant::now();
    log(&run, n);
    let per_call = t.elapsed().as_nanos() as f64 / n as f64;
    let t2 = Instant::now();
    run.finish().expect("finish");
    let total = t.elapsed();
    row(
        &format!("{what} amortized"),
        format!("{per_call:.1} ns/point"),
        "≤ 100 ns",
    );
    row(
        &format!("one run to local disk, {what} until `finish` returns"),
        format!(
            "{:.1} M points/s (finish took {:.0?})",
            n as f64 / total.as_secs_f64() / 1e6,
            t2.elapsed()
        ),
        "≥ 20 M/s",
    );
}

fn file_size(root: &std::path::Path, files: &[String], table: &str) -> u64 {
    files
        .iter()
        .filter(|f| f.contains(&format!("/data/{table}/")))
        .map(|f| {
            std::fs::metadata(root.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum()
}
