//! The `projects` table: a renamed experiment shows its new name beside its id, its tags and
//! deletion as its metadata records say, and joins to runs by `project`.

use arrow::array::{Array, AsArray, RecordBatch};
use runql_core::store::ProjectChange;
use runql_core::{Capture, Store};
use runql_query::Engine;

use crate::fixture::block_on;

fn column(b: &[RecordBatch], i: usize) -> Vec<String> {
    b.iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
            let c = c.as_string::<i32>().clone();
            (0..c.len())
                .map(|r| {
                    if c.is_null(r) {
                        "NULL".to_string()
                    } else {
                        c.value(r).to_string()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn projects_list_names_tags_and_deletion_and_join_to_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    for p in ["a", "b"] {
        let run = store
            .project(p)
            .run()
            .capture(Capture::none())
            .start()
            .unwrap();
        run.log_metric("loss", 0, 1.0).unwrap();
        run.finish().unwrap();
    }
    block_on(store.change_project(
        "a",
        &ProjectChange {
            display_name: Some("vision — 视觉".into()),
            set_tags: vec![("team".into(), "cv".into()), ("z".into(), "1".into())],
            ..Default::default()
        },
    ))
    .unwrap();
    block_on(store.change_project(
        "b",
        &ProjectChange {
            deleted: Some(true),
            ..Default::default()
        },
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = rt.block_on(Engine::new(store.clone())).unwrap();
    let q = |sql: &str| rt.block_on(engine.query(sql)).unwrap();
    let b = q(
        "SELECT project, name, deleted, tags, created IS NOT NULL, updated >= created \
               FROM projects ORDER BY project",
    );
    assert_eq!(column(&b, 0), ["a", "b"]);
    assert_eq!(column(&b, 1), ["vision — 视觉", "b"]);
    assert_eq!(column(&b, 2), ["false", "true"]);
    assert_eq!(column(&b, 3), [r#"{"team":"cv","z":"1"}"#, "{}"]);
    assert_eq!(column(&b, 4), ["true", "true"]);
    assert_eq!(column(&b, 5), ["true", "true"]);
    // Runs by the name their experiment is shown under.
    let b = q(
        "SELECT p.name, count(*) FROM runs r JOIN projects p USING (project) \
               GROUP BY p.name ORDER BY p.name",
    );
    assert_eq!(column(&b, 0), ["b", "vision — 视觉"]);
    assert_eq!(column(&b, 1), ["1", "1"]);
    // Listed beside the other tables, and not replaceable.
    let b = q("SELECT table_type FROM information_schema.tables WHERE table_name = 'projects'");
    assert_eq!(column(&b, 0), ["VIEW"]);
    let writable = rt
        .block_on(Engine::builder(store.clone()).writable(true).build())
        .unwrap();
    let err = rt
        .block_on(writable.query("CREATE VIEW projects AS SELECT 1"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("projects"), "{err}");
}
