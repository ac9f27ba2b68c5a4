//! `runql sql --engine ballista://…`: a Ballista scheduler and two executors started on
//! loopback by the test; the query benchmark's three questions give the same rows on Ballista
//! as on the embedded engine.

use std::process::Output;

use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use runql_core::{Capture, Store};

use crate::cli::runql;

/// The three questions of the query benchmark (query/benches/search.rs), plus one over
/// `runs` and `tags`.
const QUERIES: [&str; 4] = [
    "SELECT s.run_id, s.last_value AS val_loss \
     FROM metric_summary s JOIN params p ON p.run_id = s.run_id AND p.project = s.project \
     WHERE p.key = 'lr' AND p.value_num = 0.01 AND s.key = 'val_loss' AND s.last_value < 0.5 \
     ORDER BY val_loss",
    "SELECT run_id, last_value AS val_loss FROM metric_summary \
     WHERE key = 'val_loss' ORDER BY val_loss LIMIT 10",
    "SELECT key, step, ts, value FROM metrics WHERE run_id = '{run}'",
    "SELECT r.name, t.value AS team, count(*) AS n, sum(m.value) AS total \
     FROM runs r JOIN tags t ON t.run_id = r.run_id AND t.key = 'team' \
     JOIN metrics m ON m.run_id = r.run_id \
     GROUP BY r.name, t.value ORDER BY r.name",
];

/// 40 runs × 3 keys × 200 steps in two projects, compacted; returns one run id.
fn generate(dir: &std::path::Path) -> String {
    let store = Store::open(&dir.to_string_lossy()).unwrap();
    let mut some_run = String::new();
    for (p, project) in ["vision", "nlp"].into_iter().enumerate() {
        for i in 0..20 {
            let run = store
                .project(project)
                .run()
                .capture(Capture::none())
                .name(format!("{project}-{i:02}"))
                .start()
                .unwrap();
            let lr = [0.1, 0.01, 0.001][i % 3];
            run.log_params([("lr", lr.to_string()), ("seed", i.to_string())])
                .unwrap();
            run.set_tag("team", ["a", "b"][(i + p) % 2]).unwrap();
            for step in 0..200 {
                let x = step as f64 / 200.0;
                let val = 1.0 / (1.0 + x * (i + 1) as f64) + (p as f64) * 0.1;
                run.log_metrics(
                    step,
                    [("loss", val * 0.9), ("val_loss", val), ("acc", 1.0 - val)],
                )
                .unwrap();
            }
            some_run = run.id().as_hex();
            run.finish().unwrap();
        }
        runql_core::block_on(store.compact(project)).unwrap();
    }
    some_run
}

/// Starts a scheduler and two executors in this process; returns the scheduler's port.
fn start_cluster(rt: &tokio::runtime::Runtime) -> u16 {
    rt.block_on(async {
        let addr = ballista_scheduler::standalone::new_standalone_scheduler()
            .await
            .unwrap();
        let scheduler = SchedulerGrpcClient::connect(format!("http://127.0.0.1:{}", addr.port()))
            .await
            .unwrap();
        for _ in 0..2 {
            ballista_executor::new_standalone_executor(
                scheduler.clone(),
                2,
                BallistaCodec::default(),
            )
            .await
            .unwrap();
        }
        addr.port()
    })
}

fn sql(store: &std::path::Path, query: &str, engine: Option<&str>) -> Output {
    let mut cmd = runql();
    cmd.args([
        "--store",
        &store.to_string_lossy(),
        "sql",
        "--format",
        "csv",
    ]);
    if let Some(e) = engine {
        cmd.args(["--engine", e]);
    }
    cmd.arg(query).output().unwrap()
}

/// Header line, then the rows sorted (queries without ORDER BY have no order to keep).
fn rows(o: &Output) -> (String, Vec<String>) {
    let text = crate::cli::stdout(o);
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next().unwrap_or_default();
    let mut rows: Vec<String> = lines.collect();
    rows.sort();
    (header, rows)
}

#[test]
fn ballista_gives_the_embedded_engines_answers() {
    let dir = tempfile::tempdir().unwrap();
    let run = generate(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let port = start_cluster(&rt);
    let engine = format!("ballista://127.0.0.1:{port}");

    for query in QUERIES {
        let query = query.replace("{run}", &run);
        let embedded = sql(dir.path(), &query, None);
        let distributed = sql(dir.path(), &query, Some(&engine));
        let (eh, er) = rows(&embedded);
        let (dh, dr) = rows(&distributed);
        assert!(!er.is_empty(), "{query}: no rows");
        assert_eq!(eh, dh, "{query}: columns differ");
        assert_eq!(er, dr, "{query}: rows differ");
        // Everything was compacted: nothing to warn about.
        assert!(
            !String::from_utf8_lossy(&distributed.stderr).contains("note:"),
            "{}",
            String::from_utf8_lossy(&distributed.stderr)
        );
    }

    // A run logged after the compaction is live: Ballista says it cannot see it.
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    let late = store
        .project("nlp")
        .run()
        .capture(Capture::none())
        .start()
        .unwrap();
    late.log_metric("val_loss", 0, 0.01).unwrap();
    late.finish().unwrap();
    let out = sql(dir.path(), QUERIES[1], Some(&engine));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("project \"nlp\": 1 run(s) have data not compacted yet")
            && stderr.contains("runql compact"),
        "{stderr}"
    );
}

#[test]
fn a_scheduler_that_is_not_there_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    generate_small(dir.path());
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = sql(
        dir.path(),
        "SELECT 1",
        Some(&format!("ballista://127.0.0.1:{port}")),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Ballista scheduler at ballista://127.0.0.1:"),
        "{stderr}"
    );
    let out = sql(dir.path(), "SELECT 1", Some("http://example.com"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a Ballista scheduler address"),
        "{stderr}"
    );
}

fn generate_small(dir: &std::path::Path) {
    let store = Store::open(&dir.to_string_lossy()).unwrap();
    let run = store
        .project("p")
        .run()
        .capture(Capture::none())
        .start()
        .unwrap();
    run.log_metric("x", 0, 1.0).unwrap();
    run.finish().unwrap();
}
