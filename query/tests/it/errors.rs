//! What the engine's errors say about themselves: callers branch on these, never on text.

use runql_core::Store;
use runql_query::Engine;

use crate::fixture::block_on;

/// The server refreshes its plugin tables when a query names one it does not know yet: that
/// depends on DataFusion's wording of a missing table or schema, pinned here.
#[test]
fn an_unknown_table_or_schema_is_a_missing_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    let engine = block_on(Engine::new(store)).unwrap();
    for sql in [
        "SELECT * FROM no_such_table",
        "SELECT * FROM optuna.trials",
        "SELECT * FROM nowhere.at_all",
    ] {
        let e = block_on(engine.sql(sql)).err().unwrap();
        assert!(e.is_missing_table(), "{sql}: {e}");
    }
    for sql in ["SELECT no_such_column FROM runs", "SELEC 1"] {
        let e = block_on(engine.sql(sql)).err().unwrap();
        assert!(!e.is_missing_table(), "{sql}: {e}");
    }
}
