//! Helpers shared by the tests.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use runql_core::{Capture, Project, RunBuilder, Scan, Store, Table};

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runql_core::block_on(f)
}

/// Where a test's store lives: a local temp dir, or a fresh prefix of the object store named
/// by `RUNQL_TEST_STORE` (e.g. `s3://runql-test`, with `AWS_ENDPOINT`… set: scripts/test runs
/// these tests a second time against a real S3-compatible server that way).
pub struct TestStore {
    dir: tempfile::TempDir,
    url: String,
}

impl TestStore {
    /// The store's URL, for child processes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store's folder when it is local (`None` on an object store).
    pub fn local(&self) -> Option<&std::path::Path> {
        (!self.url.contains("://")).then(|| self.dir.path())
    }
}

/// A fresh store (see [`TestStore`]).
pub fn temp_store() -> (TestStore, Store) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let url = match std::env::var("RUNQL_TEST_STORE") {
        Ok(base) if !base.is_empty() => {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                uuid::Uuid::now_v7().simple()
            )
        }
        _ => dir.path().to_string_lossy().into_owned(),
    };
    let store = Store::open(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    (TestStore { dir, url }, store)
}

/// Every object under `prefix`, with its bytes.
pub fn objects_under(
    store: &Store,
    prefix: &object_store::path::Path,
) -> Vec<(object_store::path::Path, bytes::Bytes)> {
    block_on(store.raw_list(prefix))
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_iter()
        .map(|m| {
            let bytes = block_on(store.raw_get(&m.location))
                .unwrap_or_else(|e| panic!("get: {e}"))
                .unwrap_or_else(|| panic!("{} vanished", m.location));
            (m.location, bytes)
        })
        .collect()
}

/// A run builder that captures nothing (fast, deterministic).
pub fn quiet_run(project: &Project) -> RunBuilder {
    project.run().capture(Capture::none())
}

/// (step, value bits) of every point of one metric key of one run, sorted by step.
pub fn metric_points(store: &Store, project: &str, run_id: &str, key: &str) -> Vec<(i64, u64)> {
    let batches = block_on(store.scan(
        Table::Metrics,
        &Scan::project(project).runs([run_id]).keys([key]),
    ))
    .unwrap_or_else(|e| panic!("scan: {e}"));
    let mut out = Vec::new();
    for b in &batches {
        let step = b
            .column_by_name("step")
            .map(|c| c.as_primitive::<Int64Type>().clone());
        let value = b
            .column_by_name("value")
            .map(|c| c.as_primitive::<Float64Type>().clone());
        let (Some(step), Some(value)) = (step, value) else {
            panic!("metrics columns missing")
        };
        for i in 0..b.num_rows() {
            out.push((step.value(i), value.value(i).to_bits()));
        }
    }
    out.sort();
    out
}

/// Every value of a string column across batches, in order.
pub fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"))
                .as_string::<i32>()
                .clone();
            (0..c.len()).map(move |i| c.value(i).to_string())
        })
        .collect()
}

/// Rows per run id in some batches.
pub fn rows_per_run(batches: &[RecordBatch]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for run in strings(batches, "run_id") {
        *out.entry(run).or_default() += 1;
    }
    out
}

/// Every row of a table, as sorted debug strings (for "reads are identical" checks).
pub fn table_rows(store: &Store, table: Table, scan: &Scan) -> Vec<String> {
    let batches = block_on(store.scan(table, scan)).unwrap_or_else(|e| panic!("scan {table}: {e}"));
    let mut rows = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let mut row = String::new();
            for c in b.columns() {
                let v = arrow::util::display::array_value_to_string(c, i).unwrap_or_default();
                // Floats: compare bits so NaN and -0.0 count.
                if let Some(f) = c.as_primitive_opt::<Float64Type>()
                    && f.is_valid(i)
                {
                    row.push_str(&format!("{:x}|", f.value(i).to_bits()));
                    continue;
                }
                row.push_str(&v);
                row.push('|');
            }
            rows.push(row);
        }
    }
    rows.sort();
    rows
}

/// The python interpreter for tests that need Python packages (.ci/run sets RUNQL_PYTHON to
/// a venv that has them).
pub fn python() -> String {
    std::env::var("RUNQL_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether `python` can import `module`; when it cannot, tests skip locally but fail in CI.
pub fn python_has(module: &str) -> bool {
    let ok = std::process::Command::new(python())
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok
        && (std::env::var_os("CI").is_some() || std::env::var_os("RUNQL_REQUIRE_PYTHON").is_some())
    {
        panic!("python module {module} is missing: scripts/test installs it");
    }
    if !ok {
        eprintln!("skipping: python module {module} is not installed (.ci/run installs it)");
    }
    ok
}

/// Raw object access for tests that stage what a crash leaves behind (a put that a compaction
/// would have deleted, an orphan file): through the store's `object_store`, as any other
/// process would see it. runql's own writes go through its typed API only.
pub trait RawObjects {
    fn raw_put(
        &self,
        path: &object_store::path::Path,
        bytes: bytes::Bytes,
    ) -> impl std::future::Future<Output = object_store::Result<()>>;
    fn raw_get(
        &self,
        path: &object_store::path::Path,
    ) -> impl std::future::Future<Output = object_store::Result<Option<bytes::Bytes>>>;
    fn raw_head(
        &self,
        path: &object_store::path::Path,
    ) -> impl std::future::Future<Output = object_store::Result<Option<object_store::ObjectMeta>>>;
    fn raw_list(
        &self,
        prefix: &object_store::path::Path,
    ) -> impl std::future::Future<Output = object_store::Result<Vec<object_store::ObjectMeta>>>;
}

impl RawObjects for Store {
    async fn raw_put(
        &self,
        path: &object_store::path::Path,
        bytes: bytes::Bytes,
    ) -> object_store::Result<()> {
        use object_store::ObjectStoreExt;
        self.object_store()
            .put(path, bytes.into())
            .await
            .map(|_| ())
    }

    async fn raw_get(
        &self,
        path: &object_store::path::Path,
    ) -> object_store::Result<Option<bytes::Bytes>> {
        use object_store::ObjectStoreExt;
        match self.object_store().get(path).await {
            Ok(r) => r.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn raw_head(
        &self,
        path: &object_store::path::Path,
    ) -> object_store::Result<Option<object_store::ObjectMeta>> {
        use object_store::ObjectStoreExt;
        match self.object_store().head(path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn raw_list(
        &self,
        prefix: &object_store::path::Path,
    ) -> object_store::Result<Vec<object_store::ObjectMeta>> {
        use futures::TryStreamExt;
        self.object_store().list(Some(prefix)).try_collect().await
    }
}
