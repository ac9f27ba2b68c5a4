//! The stores the tests query: an empty one, and a small one with every kind of run and value
//! the engine must get right (compacted and live, split, running, crashed, unicode, NaN/±inf,
//! 1,200 metric keys, a run with no metrics). Run ids and metric timestamps are fixed so that
//! `.slt` files can spell out results.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use runql_core::model::RunStatus;
use runql_core::{Capture, Input, Project, Run, RunBuilder, Store};

/// Staleness used by fixture engines: a running run silent for this long is `crashed`.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

/// A store and the runs that must stay alive while it is queried.
pub struct Fixture {
    pub store: Store,
    pub _dir: tempfile::TempDir,
    _running: Vec<Run>,
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runql_core::block_on(f)
}

fn run(project: &Project, id: &str, name: &str) -> RunBuilder {
    project
        .run()
        .capture(Capture::none())
        .run_id(id.parse().unwrap())
        .name(name)
}

/// Fixed timestamps: 2026-01-01T00:00:00Z plus `step` seconds.
pub fn ts(step: i64) -> i64 {
    1_767_225_600_000_000 + step * 1_000_000
}

pub fn empty() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    Fixture {
        store: store.with_stale_after(STALE_AFTER),
        _dir: dir,
        _running: Vec::new(),
    }
}

/// Run ids of the demo store.
pub mod ids {
    pub const SWEEP: &str = "0000000000007000800000000000a000";
    pub const TRIALS: [&str; 3] = [
        "0000000000007000800000000000a001",
        "0000000000007000800000000000a002",
        "0000000000007000800000000000a003",
    ];
    pub const EDGE: &str = "0000000000007000800000000000b001";
    pub const NO_METRICS: &str = "0000000000007000800000000000b002";
    pub const RUNNING: &str = "0000000000007000800000000000b003";
    pub const CRASHED: &str = "0000000000007000800000000000b004";
}

pub fn demo() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    let mut running = Vec::new();

    // vision: an LR sweep, compacted; then trial 0 resumed (a run split between a compaction
    // and live segments).
    let vision = store.project("vision");
    let sweep = run(&vision, ids::SWEEP, "sweep")
        .group("lr-sweep")
        .start()
        .unwrap();
    sweep.log_param("sweep", "lr").unwrap();
    for (i, lr) in [0.1, 0.01, 0.001].into_iter().enumerate() {
        let t = run(&vision, ids::TRIALS[i], &format!("trial-{i}"))
            .parent(&sweep)
            .group("lr-sweep")
            .tag("stage", "dev")
            .start()
            .unwrap();
        t.log_param("lr", lr).unwrap();
        t.log_param("optimizer", if i == 1 { "sgd" } else { "adam" })
            .unwrap();
        t.log_param("batch_size", 32).unwrap();
        t.set_tag("note", "first").unwrap();
        t.set_tag("note", format!("trial {i}")).unwrap();
        for step in 0..10 {
            let s = step as f64;
            let loss = (1.0 + 10.0 * lr) / (s + 1.0);
            // Trial 2 diverges after step 5.
            let val = if i == 2 && step > 5 {
                0.3 + 0.2 * (s - 5.0)
            } else {
                loss + 0.05
            };
            t.log_metric_at("loss", step, loss, ts(step)).unwrap();
            t.log_metric_at("val_loss", step, val, ts(step)).unwrap();
            t.log_metric_at(
                "acc",
                step,
                0.5 + s * 0.04 * (i as f64 + 1.0) / 3.0,
                ts(step),
            )
            .unwrap();
        }
        t.log_line("stdout", format!("epoch 9 done, lr={lr}"))
            .unwrap();
        t.log_line("stderr", "warning: slow data loader").unwrap();
        t.log_input(
            Input::new("cifar10")
                .uri("s3://data/cifar10")
                .digest("sha256:c1f4")
                .role("train"),
        )
        .unwrap();
        t.log_artifact_bytes(
            "model/weights.txt",
            format!("weights of trial {i}").into_bytes(),
        )
        .unwrap();
        t.log_system_metric("gpu.0.util", 50.0 + 10.0 * i as f64)
            .unwrap();
        t.log_system_metric("gpu.0.util", 70.0 + 10.0 * i as f64)
            .unwrap();
        if i == 2 {
            t.finish_with(RunStatus::Failed).unwrap();
        } else {
            t.finish().unwrap();
        }
    }
    sweep.finish().unwrap();
    block_on(store.compact("vision")).unwrap();

    // Trial 0 resumed after compaction: its params again, ten more steps, a new tag value.
    let resumed = run(&vision, ids::TRIALS[0], "trial-0")
        .parent_id(ids::SWEEP.parse().unwrap())
        .group("lr-sweep")
        .start()
        .unwrap();
    resumed.log_param("lr", 0.1).unwrap();
    resumed.set_tag("note", "resumed").unwrap();
    for step in 10..20 {
        let loss = 2.0 / (step as f64 + 1.0);
        resumed.log_metric_at("loss", step, loss, ts(step)).unwrap();
        resumed
            .log_metric_at("val_loss", step, loss + 0.05, ts(step))
            .unwrap();
    }
    resumed.finish().unwrap();

    // An extension table, as a plugin would declare and fill it.
    let schema = Arc::new(Schema::new(vec![
        Field::new("project", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("number", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
        Field::new("state", DataType::Utf8, false),
    ]));
    block_on(store.define_table("optuna", "trials", schema.clone())).unwrap();
    let trials = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["vision"; 3])),
            Arc::new(StringArray::from(ids::TRIALS.to_vec())),
            Arc::new(Int64Array::from(vec![0, 1, 2])),
            Arc::new(Float64Array::from(vec![Some(0.15), Some(0.16), None])),
            Arc::new(StringArray::from(vec!["COMPLETE", "COMPLETE", "FAIL"])),
        ],
    )
    .unwrap();
    block_on(store.append_rows("vision", "optuna", "trials", &[trials])).unwrap();

    // nlp: live runs only (no compaction).
    let nlp = store.project("nlp");
    let edge = run(&nlp, ids::EDGE, "edge cases ✓").start().unwrap();
    for (step, v) in [0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0]
        .into_iter()
        .enumerate()
    {
        edge.log_metric_at("ünïcode/损失", step as i64, v, ts(step as i64))
            .unwrap();
    }
    for layer in 0..1200 {
        edge.log_metric_at(
            &format!("layer.{layer:04}.grad_norm"),
            0,
            layer as f64,
            ts(0),
        )
        .unwrap();
    }
    edge.log_param("model", "tiny-ßert").unwrap();
    edge.log_param("model", "tiny-ßert").unwrap();
    edge.set_tag("stage", "draft").unwrap();
    edge.set_tag("stage", "final").unwrap();
    edge.log_param("lr", 0.0003).unwrap();
    edge.finish().unwrap();

    let nothing = run(&nlp, ids::NO_METRICS, "no metrics").start().unwrap();
    nothing.log_param("lr", 0.01).unwrap();
    nothing.finish().unwrap();

    // Crashed: logged, flushed, then silent (its writer is leaked, as if the process died).
    let crashed = run(&nlp, ids::CRASHED, "crashed")
        .heartbeat_interval(Duration::from_secs(3600))
        .start()
        .unwrap();
    for step in 0..3 {
        crashed
            .log_metric_at("loss", step, 1.0 / (step as f64 + 1.0), ts(step))
            .unwrap();
    }
    crashed.flush().unwrap();
    std::mem::forget(crashed);

    let live = run(&nlp, ids::RUNNING, "running")
        .heartbeat_interval(Duration::from_millis(300))
        .start()
        .unwrap();
    for step in 0..5 {
        live.log_metric_at("loss", step, 1.0 / (step as f64 + 1.0), ts(step))
            .unwrap();
    }
    live.flush().unwrap();
    running.push(live);

    // Let the crashed run go stale while the running one keeps beating.
    std::thread::sleep(STALE_AFTER + Duration::from_millis(500));
    Fixture {
        store: store.with_stale_after(STALE_AFTER),
        _dir: dir,
        _running: running,
    }
}
