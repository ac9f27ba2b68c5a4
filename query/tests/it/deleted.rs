//! Runs marked deleted (MLflow's delete/restore) read `deleted = true`, compacted or live.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use runql_core::{Capture, Store};
use runql_query::Engine;

use crate::fixture::block_on;

#[test]
fn deleted_markers_apply_to_compacted_and_live_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    let project = store.project("p");
    let mut ids = Vec::new();
    for i in 0..2 {
        let run = project.run().capture(Capture::none()).start().unwrap();
        run.log_metric("loss", 0, 1.0).unwrap();
        ids.push(run.id().to_string());
        run.finish().unwrap();
        if i == 0 {
            block_on(store.compact("p")).unwrap();
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let deleted = |engine: &Engine| -> i64 {
        let b = rt
            .block_on(engine.query("SELECT count(*) FROM runs WHERE deleted"))
            .unwrap();
        b[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    let engine = rt.block_on(Engine::new(store.clone())).unwrap();
    assert_eq!(deleted(&engine), 0);
    for id in &ids {
        block_on(store.set_run_deleted("p", id, true)).unwrap();
    }
    assert_eq!(deleted(&engine), 2);
    assert!(
        block_on(store.list_runs(Some("p")))
            .unwrap()
            .iter()
            .all(|r| r.deleted)
    );
    block_on(store.set_run_deleted("p", &ids[0], false)).unwrap();
    assert_eq!(deleted(&engine), 1);
    let b = rt
        .block_on(engine.query("SELECT count(*) FROM runs"))
        .unwrap();
    assert_eq!(
        b[0].column(0).as_primitive::<Int64Type>().value(0),
        2,
        "no run read twice"
    );
}
