//! runql-plugins' integration tests: the sandbox against hostile components, and ingest of
//! files written by the real libraries through the first-party plugins, checked with SQL.

mod docs;
mod ingest;
mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;

use runql_core::Store;
use runql_plugins::{Registry, Sandbox};

/// A component built by build.rs beside the first-party ones (example and hostile plugins).
pub fn test_wasm(crate_name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("RUNQL_TEST_WASM_DIR")).join(format!("{crate_name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("fixtures")
    .join(path)
}

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store").to_string_lossy()).expect("store");
    (dir, store)
}

/// A registry whose compiled components are cached across tests and runs (as runql caches
/// them in ~/.cache/runql/plugins).
pub fn registry(store: &Store) -> Registry {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    Registry::new(
        store.clone(),
        Arc::new(Sandbox::new(Some(cache)).expect("sandbox")),
    )
}
