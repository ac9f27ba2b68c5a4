//! Extension tables: declared once with a schema, appended per project, read back as Parquet.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use runql_core::Error;

use crate::util::{block_on, temp_store};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("episode", DataType::Int64, false),
    ]))
}

#[test]
fn declared_tables_take_rows_of_their_schema_only() {
    let (_dir, store) = temp_store();
    block_on(store.define_table("rl", "episodes", schema())).unwrap();
    // Declaring again with the same schema is fine.
    block_on(store.define_table("rl", "episodes", schema())).unwrap();

    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)]));
    let err = block_on(store.define_table("rl", "episodes", other.clone())).unwrap_err();
    assert!(err.to_string().contains("already declared"), "{err}");
    for (ns, name) in [
        ("RL", "episodes"),
        ("public", "t"),
        ("rl", "bad-name"),
        ("rl", ""),
    ] {
        let err = block_on(store.define_table(ns, name, schema())).unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { .. }),
            "{ns}.{name}: {err}"
        );
    }

    let rows = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec!["a", "a", "b"])),
            Arc::new(Int64Array::from(vec![0, 1, 0])),
        ],
    )
    .unwrap();
    assert_eq!(
        block_on(store.append_rows("p", "rl", "episodes", &[rows])).unwrap(),
        3
    );
    let wrong = RecordBatch::try_new(other, vec![Arc::new(StringArray::from(vec!["z"]))]).unwrap();
    let err = block_on(store.append_rows("p", "rl", "episodes", &[wrong])).unwrap_err();
    assert!(err.to_string().contains("declared with"), "{err}");
    let err = block_on(store.append_rows("p", "rl", "nope", &[])).unwrap_err();
    assert!(err.to_string().contains("not declared"), "{err}");

    let tables = block_on(store.list_tables()).unwrap();
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].qualified(), "rl.episodes");
    let manifest = block_on(store.read_manifest("p")).unwrap();
    let files: Vec<_> = manifest.entries.iter().flat_map(|e| &e.files).collect();
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].table.as_str(), files[0].rows), ("rl.episodes", 3));
    // Core reads and compaction ignore extension files.
    block_on(store.compact("p")).unwrap();
    assert!(block_on(store.list_runs(Some("p"))).unwrap().is_empty());
}
