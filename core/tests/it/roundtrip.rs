//! What is logged is read back exactly; bad input gets a clear error.

use std::time::Duration;

use arrow::array::{Array, AsArray};
use runql_core::{Error, Input, RunStatus, Scan, Store, Table};

use crate::util::{RawObjects, block_on, metric_points, quiet_run, strings, temp_store};

const SPECIAL: [f64; 7] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -0.0,
    0.0,
    f64::MIN_POSITIVE,
    f64::MAX,
];

fn exercise(store: &Store) {
    let project = store.project("mnist");
    let run = quiet_run(&project)
        .name("baseline")
        .group("seeds")
        .tag("team", "vision")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let id = run.id().as_hex();
    run.log_params([("lr", "0.01"), ("optimizer", "adam"), ("batch", "64")])
        .unwrap_or_else(|e| panic!("{e}"));
    run.log_param("lr", "0.01")
        .unwrap_or_else(|e| panic!("same value again is fine: {e}"));
    for (i, v) in SPECIAL.iter().enumerate() {
        run.log_metric("special", i as i64, *v)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for step in 0..3000 {
        run.log_metrics(
            step,
            [
                ("train/loss", 1.0 / (step as f64 + 1.0)),
                ("損失/検証", step as f64),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    run.set_tag("stage", "warmup")
        .unwrap_or_else(|e| panic!("{e}"));
    run.set_tag("stage", "done")
        .unwrap_or_else(|e| panic!("{e}"));
    run.set_note("first try").unwrap_or_else(|e| panic!("{e}"));
    run.log_input(
        Input::new("mnist")
            .uri("s3://data/mnist")
            .digest("abc")
            .role("train"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    run.log_line("stdout", "epoch 1 done")
        .unwrap_or_else(|e| panic!("{e}"));
    run.log_system_metric("cpu.util", 42.5)
        .unwrap_or_else(|e| panic!("{e}"));
    let a1 = run
        .log_artifact_bytes("models/weights.bin", vec![7u8; 1000])
        .unwrap_or_else(|e| panic!("{e}"));
    let a2 = run
        .log_artifact_bytes("copy/weights.bin", vec![7u8; 1000])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a1.digest, a2.digest, "same content, same blob");
    let child = run
        .child()
        .name("trial-0")
        .capture(runql_core::Capture::none())
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let child_id = child.id().as_hex();
    child
        .log_metric("objective", 0, 0.5)
        .unwrap_or_else(|e| panic!("{e}"));
    child.finish().unwrap_or_else(|e| panic!("{e}"));
    run.finish().unwrap_or_else(|e| panic!("{e}"));

    // Exactly what was logged, NaN, ±inf and -0.0 included (bit for bit).
    let special = metric_points(store, "mnist", &id, "special");
    let expected: Vec<(i64, u64)> = SPECIAL
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_bits()))
        .collect();
    assert_eq!(special, expected);
    assert_eq!(metric_points(store, "mnist", &id, "train/loss").len(), 3000);
    assert_eq!(metric_points(store, "mnist", &id, "損失/検証").len(), 3000);

    let data = block_on(store.read_run("mnist", &id)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(data.record.status, RunStatus::Finished);
    assert_eq!(data.record.name.as_deref(), Some("baseline"));
    assert_eq!(data.record.run_group.as_deref(), Some("seeds"));
    assert!(data.record.ended.is_some());
    let rows = |t: Table| data.tables[&t].iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(rows(Table::Params), 3);
    assert_eq!(
        rows(Table::Tags),
        3,
        "team, stage (last value only) and the note"
    );
    assert_eq!(rows(Table::Metrics), 6007);
    assert_eq!(rows(Table::Artifacts), 2);
    assert_eq!(rows(Table::Logs), 1);
    assert_eq!(rows(Table::Inputs), 1);
    assert_eq!(rows(Table::SystemMetrics), 1);
    let tags = &data.tables[&Table::Tags];
    let stage: Vec<String> = strings(tags, "key")
        .into_iter()
        .zip(strings(tags, "value"))
        .filter(|(k, _)| k == "stage")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(stage, vec!["done".to_string()]);
    let params = &data.tables[&Table::Params];
    let nums: Vec<Option<f64>> = params
        .iter()
        .flat_map(|b| {
            let n = b
                .column_by_name("value_num")
                .unwrap_or_else(|| panic!())
                .as_primitive::<arrow::datatypes::Float64Type>()
                .clone();
            (0..n.len())
                .map(|i| n.is_valid(i).then(|| n.value(i)))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        nums.iter().filter(|n| n.is_some()).count(),
        2,
        "lr and batch are numbers, adam is not"
    );

    let blob = block_on(store.get_blob(&a1.digest)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(blob.as_ref(), &[7u8; 1000][..]);

    let runs = block_on(store.list_runs(Some("mnist"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runs.len(), 2);
    let child_rec = runs
        .iter()
        .find(|r| r.run_id == child_id)
        .unwrap_or_else(|| panic!("child missing"));
    assert_eq!(child_rec.parent_run_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        block_on(store.list_projects()).unwrap_or_default(),
        vec!["mnist".to_string()]
    );
    assert_eq!(
        block_on(store.find_run(&child_id))
            .map(|r| r.project)
            .ok()
            .as_deref(),
        Some("mnist")
    );
}

#[test]
fn local_store_reads_back_exactly() {
    let (_dir, store) = temp_store();
    exercise(&store);
    // And again after compaction, from Parquet.
    let report = block_on(store.compact("mnist")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.runs, 2);
    let ids: Vec<String> = block_on(store.list_runs(Some("mnist")))
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    let parent = ids
        .iter()
        .find(|id| !metric_points(&store, "mnist", id, "special").is_empty())
        .unwrap_or_else(|| panic!());
    let special = metric_points(&store, "mnist", parent, "special");
    let expected: Vec<(i64, u64)> = SPECIAL
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_bits()))
        .collect();
    assert_eq!(special, expected);
}

#[test]
fn memory_store_reads_back_exactly() {
    let store = Store::open("memory://").unwrap_or_else(|e| panic!("{e}"));
    exercise(&store);
}

#[test]
fn bad_input_gets_clear_errors() {
    let (_dir, store) = temp_store();
    let run = quiet_run(&store.project("p"))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let msg = |e: Error| e.to_string();
    assert!(msg(run.log_metric("", 0, 1.0).unwrap_err()).contains("empty"));
    assert!(msg(run.log_metric(&"k".repeat(300), 0, 1.0).unwrap_err()).contains("limit is 250"));
    run.log_param("lr", 0.1).unwrap_or_else(|e| panic!("{e}"));
    let changed = msg(run.log_param("lr", 0.2).unwrap_err());
    assert!(
        changed.contains("\"lr\"") && changed.contains("0.1") && changed.contains("0.2"),
        "{changed}"
    );
    assert!(msg(run.log_artifact_bytes("../escape.txt", "x").unwrap_err()).contains(".."));
    assert!(msg(run.log_artifact_bytes("/etc/passwd", "x").unwrap_err()).contains("absolute"));
    let missing = msg(run.log_artifact("/definitely/not/here.txt").unwrap_err());
    assert!(missing.contains("/definitely/not/here.txt"), "{missing}");
    assert!(quiet_run(&store.project("")).start().is_err());
    run.finish().unwrap_or_else(|e| panic!("{e}"));

    let unknown = block_on(store.read_run("p", "0000000000000000000000000000abcd")).unwrap_err();
    assert!(unknown.is_not_found(), "{unknown}");
    assert!(
        block_on(store.find_run("0000000000000000000000000000abcd"))
            .unwrap_err()
            .is_not_found()
    );
    assert!("not-a-run-id".parse::<runql_core::RunId>().is_err());
    let bad_url = Store::open("s3://").unwrap_err().to_string();
    assert!(bad_url.contains("s3://"), "{bad_url}");
}

#[test]
fn a_store_from_a_newer_runql_is_refused() {
    let (dir, store) = temp_store();
    block_on(store.ensure_writable()).unwrap_or_else(|e| panic!("{e}"));
    block_on(store.raw_put(
        &store.layout().marker(),
        bytes::Bytes::from_static(br#"{"format":"runql","version":99,"created":0}"#),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let again = Store::open(dir.url()).unwrap_or_else(|e| panic!("{e}"));
    let err = block_on(again.list_projects()).unwrap_err().to_string();
    assert!(
        err.contains("version 99") && err.contains("upgrade"),
        "{err}"
    );
}

#[test]
fn run_lifecycle_statuses() {
    let (_dir, store) = temp_store();
    let project = store.project("life");
    let dropped = quiet_run(&project)
        .name("dropped")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    drop(dropped);
    let panicked = std::thread::spawn({
        let project = project.clone();
        move || {
            let _run = quiet_run(&project)
                .name("panicked")
                .start()
                .unwrap_or_else(|e| panic!("{e}"));
            panic!("training diverged");
        }
    })
    .join();
    assert!(panicked.is_err());
    let failed = quiet_run(&project)
        .name("failed")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    failed
        .finish_with(RunStatus::Failed)
        .unwrap_or_else(|e| panic!("{e}"));
    let live = quiet_run(&project)
        .name("live")
        .heartbeat_interval(Duration::from_millis(20))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(100));

    let status = |name: &str| {
        block_on(
            store
                .with_stale_after(Duration::from_secs(5))
                .list_runs(Some("life")),
        )
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.name.as_deref() == Some(name))
        .map(|r| r.status)
    };
    assert_eq!(status("dropped"), Some(RunStatus::Killed));
    assert_eq!(status("panicked"), Some(RunStatus::Failed));
    assert_eq!(status("failed"), Some(RunStatus::Failed));
    assert_eq!(
        status("live"),
        Some(RunStatus::Running),
        "heartbeats keep a live run running"
    );
    // Compaction leaves running runs alone.
    let report = block_on(store.compact("life")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.runs, 3);
    assert_eq!(status("live"), Some(RunStatus::Running));
    live.finish().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status("live"), Some(RunStatus::Finished));
    let _ = block_on(store.scan(Table::Runs, &Scan::all())).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn context_is_captured() {
    let (_dir, store) = temp_store();
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(work.path().join("requirements.txt"), "torch==2.5\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let capture = runql_core::Capture {
        working_dir: Some(work.path().to_path_buf()),
        system_metrics: Some(Duration::from_millis(20)),
        ..runql_core::Capture::default()
    };
    let run = store
        .project("ctx")
        .run()
        .capture(capture)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let id = run.id().as_hex();
    std::thread::sleep(Duration::from_millis(150));
    run.finish().unwrap_or_else(|e| panic!("{e}"));
    let data = block_on(store.read_run("ctx", &id)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        data.record
            .command
            .as_deref()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(data.record.hostname.is_some());
    let artifacts = strings(&data.tables[&Table::Artifacts], "path");
    assert!(
        artifacts.contains(&"env/requirements.txt".to_string()),
        "{artifacts:?}"
    );
    let sys: usize = data.tables[&Table::SystemMetrics]
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert!(sys > 0, "system metrics were sampled");
}

#[test]
fn a_resumed_run_keeps_its_identity_and_adds_to_its_data() {
    let (_dir, store) = temp_store();
    let project = store.project("p");
    let run = quiet_run(&project)
        .name("first")
        .group("g")
        .start()
        .unwrap();
    let id = run.id();
    run.log_param("lr", 0.1).unwrap();
    for step in 0..5 {
        run.log_metric("loss", step, 1.0).unwrap();
    }
    run.finish().unwrap();
    block_on(store.compact("p")).unwrap();
    let before = block_on(store.read_run("p", &id.to_string()))
        .unwrap()
        .record;

    let again = block_on(project.resume(id)).unwrap().start().unwrap();
    assert_eq!(again.id(), id);
    again.log_param("lr", 0.1).unwrap();
    for step in 5..8 {
        again.log_metric("loss", step, 0.5).unwrap();
    }
    again.finish().unwrap();

    let after = block_on(store.read_run("p", &id.to_string())).unwrap();
    assert_eq!(after.record.name.as_deref(), Some("first"));
    assert_eq!(after.record.run_group.as_deref(), Some("g"));
    assert_eq!(after.record.created, before.created);
    assert_eq!(after.record.started, before.started);
    assert_eq!(after.record.status, runql_core::RunStatus::Finished);
    assert!(after.record.ended >= before.ended);
    assert_eq!(metric_points(&store, "p", &id.to_string(), "loss").len(), 8);
    let params =
        block_on(store.scan(runql_core::Table::Params, &runql_core::Scan::project("p"))).unwrap();
    assert_eq!(params.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    let missing = block_on(project.resume(runql_core::RunId::new())).unwrap_err();
    assert!(
        matches!(missing, runql_core::Error::RunNotFound { .. }),
        "{missing}"
    );
}

/// Format 2 keeps a run's live objects side by side in its folder; a store created by a format-1
/// runql keeps getting format 1's sub-folders (older versions read it still), and both read
/// back and compact the same.
#[test]
fn format_1_stores_keep_their_layout_and_both_layouts_read_back() {
    for version in [1u32, 2] {
        let (dir, store) = temp_store();
        if version == 1 {
            let marker = br#"{"format":"runql","version":1,"created":0}"#;
            block_on(store.raw_put(&store.layout().marker(), bytes::Bytes::from_static(marker)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // A fresh handle, as a later process would open it.
        let store = Store::open(dir.url()).unwrap_or_else(|e| panic!("{e}"));
        let run = quiet_run(&store.project("layout"))
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let id = run.id().as_hex();
        run.log_param("lr", "0.1").unwrap_or_else(|e| panic!("{e}"));
        for step in 0..100 {
            run.log_metric("loss", step, 1.0 / (1 + step) as f64)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        run.flush().unwrap_or_else(|e| panic!("{e}"));
        let live = store.layout().live("layout");
        let depth = live.parts().count();
        let objects = block_on(store.raw_list(&live)).unwrap_or_else(|e| panic!("{e}"));
        assert!(objects.len() >= 3, "{objects:?}");
        for o in &objects {
            let below = o.location.parts().count() - depth;
            let want = if version == 1 { 3 } else { 2 };
            assert_eq!(below, want, "format {version}: {}", o.location);
        }
        run.finish().unwrap_or_else(|e| panic!("{e}"));
        let expect: Vec<(i64, u64)> = (0..100)
            .map(|s| (s, (1.0 / (1 + s) as f64).to_bits()))
            .collect();
        assert_eq!(metric_points(&store, "layout", &id, "loss"), expect);
        let runs = block_on(store.list_runs(Some("layout"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, RunStatus::Finished);
        // Compaction consumes every live object of either layout.
        let report = block_on(store.compact("layout")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.runs, 1);
        let left = block_on(store.raw_list(&live)).unwrap_or_else(|e| panic!("{e}"));
        assert!(left.is_empty(), "format {version}: {left:?}");
        assert_eq!(metric_points(&store, "layout", &id, "loss"), expect);
        let params = table_rows_of(&store, &id);
        assert_eq!(params, vec!["lr=0.1".to_string()]);
    }
}

fn table_rows_of(store: &Store, run_id: &str) -> Vec<String> {
    let batches = block_on(store.scan(Table::Params, &Scan::project("layout").runs([run_id])))
        .unwrap_or_else(|e| panic!("{e}"));
    let (k, v) = (strings(&batches, "key"), strings(&batches, "value"));
    k.into_iter()
        .zip(v)
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// A run can do its I/O on the process's multi-thread runtime (what the server does); a
/// current-thread runtime is not used (it drives I/O only inside its own `block_on`), and the
/// run still works.
#[test]
fn a_run_writes_through_a_shared_runtime() {
    let (_dir, store) = temp_store();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for (name, handle) in [("multi", multi.handle()), ("current", current.handle())] {
        let run = quiet_run(&store.project("shared"))
            .name(name)
            .runtime(handle.clone())
            .start()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let id = run.id().as_hex();
        for step in 0..1000 {
            run.log_metric("loss", step, step as f64)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        run.flush().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(metric_points(&store, "shared", &id, "loss").len(), 1000);
        let record = run
            .finish_with_record(RunStatus::Finished)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(record.status, RunStatus::Finished);
        assert!(record.ended.is_some());
        let stored = block_on(store.list_runs(Some("shared")))
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .find(|r| r.run_id == id)
            .unwrap_or_else(|| panic!("{name}: run {id} not listed"));
        assert_eq!(stored.status, record.status);
        assert_eq!(stored.ended, record.ended);
    }
}

#[test]
fn a_run_has_at_most_ten_thousand_tags_and_params() {
    use runql_core::model::{MAX_PARAMS_PER_RUN, MAX_TAGS_PER_RUN};
    let (_dir, store) = temp_store();
    let project = store.project("p");
    let run = quiet_run(&project)
        .tag("from_builder", "1")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let id = run.id();
    for i in 1..MAX_TAGS_PER_RUN {
        run.set_tag(&format!("t{i}"), "v")
            .unwrap_or_else(|e| panic!("tag {i}: {e}"));
    }
    let err = run.set_tag("one_too_many", "v").unwrap_err().to_string();
    assert!(err.contains("at most 10000"), "{err}");
    // Setting a tag it has again is fine.
    run.set_tag("t1", "w").unwrap_or_else(|e| panic!("{e}"));
    let params: Vec<(String, String)> = (0..MAX_PARAMS_PER_RUN)
        .map(|i| (format!("p{i}"), i.to_string()))
        .collect();
    run.log_params(params).unwrap_or_else(|e| panic!("{e}"));
    let err = run.log_param("p_extra", 1).unwrap_err().to_string();
    assert!(err.contains("distinct params"), "{err}");
    run.log_param("p7", 7).unwrap_or_else(|e| panic!("{e}"));
    run.finish().unwrap_or_else(|e| panic!("{e}"));
    // A resumed run counts what it had.
    let again = block_on(project.resume(id))
        .unwrap_or_else(|e| panic!("{e}"))
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.set_tag("one_too_many", "v").is_err());
    again
        .set_tag("t2", "again")
        .unwrap_or_else(|e| panic!("{e}"));
    again.finish().unwrap_or_else(|e| panic!("{e}"));
}
