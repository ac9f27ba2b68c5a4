//! Extension tables get one file per append; a compaction merges them, once there are enough,
//! into one file that replaces them — every row read once before, during and after, and the
//! replaced files deleted only once no query can still be reading them.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use runql_core::Store;
use runql_query::Engine;

use crate::fixture::block_on;

fn rows(schema: &Arc<Schema>, episode: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["p"])),
            Arc::new(Int64Array::from(vec![episode])),
        ],
    )
    .unwrap()
}

fn files_on_disk(dir: &std::path::Path) -> usize {
    walk(&dir.join("projects/p/data"))
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    usize::from(e.path().extension().is_some_and(|x| x == "parquet"))
                }
            })
            .sum()
    })
}

#[test]
fn small_files_of_an_extension_table_are_merged_and_every_row_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("project", DataType::Utf8, false),
        Field::new("episode", DataType::Int64, false),
    ]));
    block_on(store.define_table("rl", "episodes", schema.clone())).unwrap();
    for i in 0..20 {
        block_on(store.append_rows("p", "rl", "episodes", &[rows(&schema, i)])).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = rt.block_on(Engine::new(store.clone())).unwrap();
    let episodes = || -> Vec<i64> {
        let b = rt
            .block_on(engine.query("SELECT episode FROM rl.episodes ORDER BY episode"))
            .unwrap();
        b.iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    };
    let all: Vec<i64> = (0..20).collect();
    assert_eq!(episodes(), all);
    assert_eq!(files_on_disk(dir.path()), 20);

    let report = block_on(store.compact("p")).unwrap();
    assert_eq!(report.tables.len(), 1, "{report:?}");
    assert_eq!(
        (
            report.tables[0].table.as_str(),
            report.tables[0].files,
            report.tables[0].rows
        ),
        ("rl.episodes", 20, 20)
    );
    let manifest = block_on(store.read_manifest("p")).unwrap();
    assert_eq!(manifest.extension_files("rl.episodes").len(), 1);
    // The merged entry is of the version that older readers refuse (they would read both).
    assert!(
        manifest
            .entries
            .iter()
            .any(|e| e.version == 2 && e.replaces.len() == 20)
    );
    assert!(
        manifest
            .entries
            .iter()
            .filter(|e| e.replaces.is_empty())
            .all(|e| e.version == 1)
    );
    // Every row once, from the merged file; the replaced files are still there for queries
    // that listed them before.
    assert_eq!(episodes(), all);
    assert_eq!(files_on_disk(dir.path()), 21);

    // Rows appended after the merge are read beside it.
    for i in 20..23 {
        block_on(store.append_rows("p", "rl", "episodes", &[rows(&schema, i)])).unwrap();
    }
    let all: Vec<i64> = (0..23).collect();
    assert_eq!(episodes(), all);
    // Too few small files to merge again; the replaced ones are younger than the grace.
    let report = block_on(store.compact("p")).unwrap();
    assert!(report.tables.is_empty(), "{report:?}");
    assert_eq!(report.replaced_removed, 0);
    assert_eq!(files_on_disk(dir.path()), 24);

    // gc past the grace deletes the replaced files and their entries, and nothing else.
    let gc = block_on(store.gc("p", Duration::ZERO)).unwrap();
    assert_eq!(gc.replaced_files, 20, "{gc:?}");
    assert_eq!(files_on_disk(dir.path()), 4);
    let manifest = block_on(store.read_manifest("p")).unwrap();
    assert_eq!(manifest.entries.len(), 4);
    assert_eq!(episodes(), all);
    let gc = block_on(store.gc("p", Duration::ZERO)).unwrap();
    assert_eq!((gc.replaced_files, gc.unreferenced_files), (0, 0), "{gc:?}");
    assert_eq!(episodes(), all);
}
