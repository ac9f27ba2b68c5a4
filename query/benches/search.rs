//! Query benchmark (a bench binary): `cargo bench -p runql-query --bench search [-- --runs N]`.
//!
//! Generates (once, then reuses) a store of N runs (default 10,000) × 10 metric keys × 1,000
//! steps, compacted, and times three questions with runql and, in the same run, with DuckDB
//! (Python, from `$RUNQL_PYTHON`) over the same Parquet files:
//! - (a) the MLflow-style search "param lr = 0.01 and last val_loss < 0.5, ordered by val_loss";
//! - (b) "final val_loss per run, top 10";
//! - (c) one run's full history, in a fresh process (no cache of any kind).
//!
//! Prints a markdown table for docs/benchmarks.md. The store lives in
//! `$RUNQL_BENCH_DIR` (default `~/.cache/runql-bench`), keyed by N.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use runql_core::{Capture, Store};
use runql_query::Engine;

const KEYS: [&str; 10] = [
    "loss",
    "val_loss",
    "acc",
    "val_acc",
    "lr",
    "grad_norm",
    "throughput",
    "gpu_mem",
    "epoch_time",
    "weight_norm",
];
const STEPS: i64 = 1000;
const LRS: [f64; 4] = [0.1, 0.01, 0.001, 0.0001];

const QUERY_A: &str = "SELECT s.run_id, s.last_value AS val_loss \
     FROM metric_summary s JOIN params p ON p.run_id = s.run_id AND p.project = s.project \
     WHERE p.key = 'lr' AND p.value_num = 0.01 AND s.key = 'val_loss' AND s.last_value < 0.5 \
     ORDER BY val_loss";
const QUERY_B: &str = "SELECT run_id, last_value AS val_loss FROM metric_summary \
     WHERE key = 'val_loss' ORDER BY val_loss LIMIT 10";
const QUERY_C: &str = "SELECT key, step, ts, value FROM metrics WHERE run_id = '{run}'";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-history") {
        child_history(&args[i + 1], &args[i + 2]);
        return;
    }
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let base = std::env::var_os("RUNQL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/runql-bench"));
    let dir = base.join(format!("store-{runs}"));
    let store = generate(&dir, runs);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = rt.block_on(Engine::new(store.clone())).expect("engine");

    let probe = rt
        .block_on(engine.query("SELECT min(run_id) FROM runs"))
        .expect("probe");
    let run_id = first_string(&probe);
    let query_c = QUERY_C.replace("{run}", &run_id);

    let (a_rows, a) = time(&rt, &engine, QUERY_A, 10);
    let (b_rows, b) = time(&rt, &engine, QUERY_B, 10);
    let (c_rows, c_warm) = time(&rt, &engine, &query_c, 10);
    let c_fresh = median(
        (0..7)
            .map(|_| {
                let out = Command::new(std::env::current_exe().expect("exe"))
                    .args(["--child-history", &dir.to_string_lossy(), &run_id])
                    .output()
                    .expect("child");
                let text = String::from_utf8_lossy(&out.stdout);
                let us: u64 = text.trim().parse().unwrap_or_else(|_| {
                    panic!(
                        "child said {text:?} {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
                Duration::from_micros(us)
            })
            .collect(),
    );

    let duck = duckdb(&dir, &run_id);
    println!(
        "Store: {runs} runs × {} keys × {STEPS} steps = {} points, compacted.\n",
        KEYS.len(),
        runs as u64 * KEYS.len() as u64 * STEPS as u64
    );
    println!(
        "| query | rows | runql | DuckDB, raw metrics | ratio | DuckDB over runql's metric_summary |"
    );
    println!("|---|---|---|---|---|---|");
    let row =
        |name: &str, rows: usize, ours: Duration, theirs: Option<f64>, summary: Option<f64>| {
            let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |ms| format!("{ms:.1} ms"));
            let ratio = theirs.map_or("n/a".to_string(), |t| {
                format!("{:.1}× faster", t / ms(ours))
            });
            println!(
                "| {name} | {rows} | {:.1} ms | {} | {ratio} | {} |",
                ms(ours),
                fmt(theirs),
                fmt(summary)
            );
        };
    row(
        "(a) lr = 0.01 and last val_loss < 0.5, by val_loss",
        a_rows,
        a,
        duck.first().copied(),
        duck.get(3).copied(),
    );
    row(
        "(b) final val_loss per run, top 10",
        b_rows,
        b,
        duck.get(1).copied(),
        duck.get(4).copied(),
    );
    row(
        "(c) one run's full history, warm engine",
        c_rows,
        c_warm,
        duck.get(2).copied(),
        None,
    );
    row(
        "(c) one run's full history, fresh process",
        c_rows,
        c_fresh,
        duck.get(2).copied(),
        None,
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn first_string(batches: &[RecordBatch]) -> String {
    use arrow::array::AsArray;
    batches[0].column(0).as_string::<i32>().value(0).to_string()
}

/// Runs `sql` once to warm up, then `n` times; the median time and the row count.
fn time(rt: &tokio::runtime::Runtime, engine: &Engine, sql: &str, n: usize) -> (usize, Duration) {
    let rows = rt
        .block_on(engine.query(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    let times = (0..n)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(engine.query(sql)).expect("query");
            t.elapsed()
        })
        .collect();
    (rows, median(times))
}

/// (c) in this process, from opening the store to the last row.
fn child_history(dir: &str, run_id: &str) {
    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let verbose = std::env::var_os("RUNQL_BENCH_VERBOSE").is_some();
    let rows: usize = rt.block_on(async {
        let engine = Engine::open(dir).await.expect("engine");
        if verbose {
            eprintln!("open: {:?}", t.elapsed());
            let m = Instant::now();
            engine.store().list_projects().await.expect("projects");
            eprintln!("list_projects: {:?}", m.elapsed());
            let m = Instant::now();
            engine
                .store()
                .read_manifest("bench")
                .await
                .expect("manifest");
            eprintln!("read_manifest (now cached): {:?}", m.elapsed());
            let m = Instant::now();
            engine
                .store()
                .snapshot("bench", Some(&[run_id.to_string()]))
                .await
                .expect("snap");
            eprintln!("snapshot: {:?}", m.elapsed());
        }
        let sql = QUERY_C.replace("{run}", run_id);
        if std::env::var_os("RUNQL_BENCH_EXPLAIN").is_some() {
            let plan = engine
                .query(&format!("EXPLAIN ANALYZE {sql}"))
                .await
                .expect("explain");
            eprintln!(
                "{}",
                arrow::util::pretty::pretty_format_batches(&plan).expect("fmt")
            );
        }
        let df = engine.sql(&sql).await.expect("plan");
        if verbose {
            eprintln!("planned: {:?}", t.elapsed());
        }
        let rows = df
            .collect()
            .await
            .expect("query")
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        if verbose {
            eprintln!("collected: {:?}", t.elapsed());
        }
        rows
    });
    assert_eq!(rows, KEYS.len() * STEPS as usize);
    println!("{}", t.elapsed().as_micros());
}

/// The benchmark store: made once, reused while its marker file exists.
fn generate(dir: &PathBuf, runs: usize) -> Store {
    let done = dir.join("bench-complete");
    if done.exists() {
        return Store::open(&dir.to_string_lossy()).expect("store");
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench dir");
    let store = Store::open(&dir.to_string_lossy()).expect("store");
    let t = Instant::now();
    let threads = 2;
    std::thread::scope(|s| {
        for th in 0..threads {
            let store = store.clone();
            s.spawn(move || {
                let project = store.project("bench");
                for r in (th..runs).step_by(threads) {
                    let run = project
                        .run()
                        .capture(Capture::none())
                        .flush_interval(Duration::from_secs(3600))
                        .start()
                        .expect("start");
                    let lr = LRS[r % LRS.len()];
                    run.log_param("lr", lr).expect("param");
                    run.log_param("batch_size", 32 << (r % 3)).expect("param");
                    run.log_param("optimizer", if r % 2 == 0 { "adam" } else { "sgd" })
                        .expect("param");
                    let keys: Vec<_> = KEYS
                        .iter()
                        .map(|k| run.metric_key(k).expect("key"))
                        .collect();
                    // Each run converges to its own floor, between 0.2 and 1.0.
                    let floor = 0.2 + 0.8 * ((r * 7919) % 1000) as f64 / 1000.0;
                    for step in 0..STEPS {
                        let x = step as f64;
                        let loss = floor + 2.0 * (-x / 200.0).exp();
                        let vals = [
                            loss,
                            loss + 0.05 + 0.01 * (x * 0.37).sin(),
                            1.0 - loss / 3.0,
                            1.0 - loss / 2.9,
                            lr * (1.0 - x / STEPS as f64),
                            1.0 / (1.0 + x).sqrt(),
                            1000.0 + (x * 0.1).sin() * 50.0,
                            8.0e9 + x,
                            0.25 + 0.01 * (x * 0.13).cos(),
                            10.0 + x * 0.001,
                        ];
                        for (k, v) in keys.iter().zip(vals) {
                            run.log(*k, step, v).expect("log");
                        }
                    }
                    run.finish().expect("finish");
                    if r % 1000 == 0 {
                        eprintln!("generated {r} runs in {:?}", t.elapsed());
                    }
                }
            });
        }
    });
    eprintln!("logged {runs} runs in {:?}; compacting", t.elapsed());
    let t = Instant::now();
    let report = runql_core::block_on(store.compact("bench")).expect("compact");
    eprintln!(
        "compacted {} runs in {:?}: {} bytes",
        report.runs,
        t.elapsed(),
        report.bytes
    );
    std::fs::write(&done, b"").expect("marker");
    store
}

/// DuckDB over the compacted Parquet: (a), (b), (c) from raw metrics, then (a), (b) over
/// runql's metric_summary files. Milliseconds, median of 10 (c: fresh connection each time).
fn duckdb(dir: &std::path::Path, run_id: &str) -> Vec<f64> {
    let python = std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| {
        home()
            .join(".cache/runql-venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let data = dir.join("projects/bench/data");
    let script = format!(
        r#"
import duckdb, time, statistics, sys
d = {data:?}
m = f"read_parquet('{{d}}/metrics/*.parquet')"
p = f"read_parquet('{{d}}/params/*.parquet')"
s = f"read_parquet('{{d}}/metric_summary/*.parquet')"
qa = f"""SELECT l.run_id, l.v FROM (SELECT run_id, arg_max(value, step) AS v FROM {{m}} WHERE key = 'val_loss' GROUP BY run_id) l
        JOIN {{p}} p ON p.run_id = l.run_id WHERE p.key = 'lr' AND p.value_num = 0.01 AND l.v < 0.5 ORDER BY l.v"""
qb = f"SELECT run_id, arg_max(value, step) AS v FROM {{m}} WHERE key = 'val_loss' GROUP BY run_id ORDER BY v LIMIT 10"
qc = f"SELECT key, step, ts, value FROM {{m}} WHERE run_id = '{run_id}'"
qa2 = f"""SELECT s.run_id, s.last_value FROM {{s}} s JOIN {{p}} p ON p.run_id = s.run_id
        WHERE p.key = 'lr' AND p.value_num = 0.01 AND s.key = 'val_loss' AND s.last_value < 0.5 ORDER BY 2"""
qb2 = f"SELECT run_id, last_value FROM {{s}} WHERE key = 'val_loss' ORDER BY 2 LIMIT 10"
def bench(q, fresh=False):
    con = duckdb.connect()
    con.execute(q).fetchall()
    ts = []
    for _ in range(10):
        if fresh:
            con = duckdb.connect()
        t = time.perf_counter(); con.execute(q).fetchall(); ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)
print(" ".join(str(bench(q, fresh=(q is qc))) for q in [qa, qb, qc, qa2, qb2]))
"#
    );
    match Command::new(&python).args(["-c", &script]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect(),
        Ok(out) => {
            eprintln!("DuckDB failed: {}", String::from_utf8_lossy(&out.stderr));
            Vec::new()
        }
        Err(e) => {
            eprintln!("no Python for DuckDB ({python}): {e}");
            Vec::new()
        }
    }
}
