//! A query for one run opens only that run's objects: every object-store request is recorded
//! by a wrapper around the store, and the test checks which paths were read.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use runql_core::{Capture, RunId, Store};
use runql_query::Engine;

use crate::fixture::block_on;

/// Records the path of every read and listing.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    log: Mutex<Vec<(&'static str, String)>>,
}

impl Recording {
    fn note(&self, op: &'static str, path: &Path) {
        self.log.lock().unwrap().push((op, path.to_string()));
    }

    fn take(&self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
        self.note(if o.head { "head" } else { "get" }, l);
        self.inner.get_opts(l, o).await
    }
    async fn get_ranges(&self, l: &Path, r: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.note("get", l);
        self.inner.get_ranges(l, r).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.note("list", prefix.unwrap_or(&Path::default()));
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.note("list", prefix.unwrap_or(&Path::default()));
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

/// Five runs compacted, five more compacted separately, five live.
fn store_with_three_batches() -> (tempfile::TempDir, Store, Vec<RunId>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    let project = store.project("p");
    let mut ids = Vec::new();
    for batch in 0..3 {
        for r in 0..5 {
            let run = project.run().capture(Capture::none()).start().unwrap();
            for step in 0..100 {
                run.log_metric("loss", step, (batch * 5 + r) as f64)
                    .unwrap();
                run.log_metric("acc", step, step as f64).unwrap();
            }
            run.log_param("seed", r).unwrap();
            ids.push(run.id());
            run.finish().unwrap();
        }
        if batch < 2 {
            block_on(store.compact("p")).unwrap();
        }
    }
    (dir, store, ids)
}

fn count(engine: &Engine, sql: &str) -> i64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batches = rt.block_on(engine.query(sql)).unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn single_run_queries_open_only_that_runs_objects() {
    let (_dir, store, ids) = store_with_three_batches();
    let recording = Arc::new(Recording {
        inner: store.object_store(),
        log: Mutex::new(Vec::new()),
    });
    let store = store.with_object_store(recording.clone());
    let engine = block_on(Engine::new(store.clone())).unwrap();
    let manifest = block_on(store.read_manifest("p")).unwrap();
    recording.take();

    // A compacted run: only its own compaction's metrics file, no live folder but its own.
    let compacted = ids[2].to_string();
    let n = count(
        &engine,
        &format!("SELECT count(*) FROM metrics WHERE run_id = '{compacted}'"),
    );
    assert_eq!(n, 200);
    let entry = manifest
        .entries
        .iter()
        .find(|e| e.runs.iter().any(|c| c.run_id == compacted))
        .unwrap();
    let its_file = entry.files.iter().find(|f| f.table == "metrics").unwrap();
    let log = recording.take();
    for (op, path) in &log {
        // Per project: the manifest and the deletion markers; per run: its own objects.
        let ok = path.contains("/manifest")
            || path.ends_with("/deleted")
            || path.ends_with(&its_file.path)
            || path.contains(&format!("/live/{compacted}"))
            || path.ends_with("runql.json")
            || path == "projects"
            || (*op == "list" && path.is_empty());
        assert!(ok, "{op} {path} is not the run's: {log:#?}");
    }
    assert!(
        log.iter().any(|(_, p)| p.ends_with(&its_file.path)),
        "{log:#?}"
    );

    // A live run: its own segments only, no Parquet at all.
    let live = ids[12].to_string();
    let n = count(
        &engine,
        &format!("SELECT count(*) FROM metrics WHERE run_id = '{live}' AND key = 'loss'"),
    );
    assert_eq!(n, 100);
    let log = recording.take();
    for (op, path) in &log {
        let ok = path.contains("/manifest")
            || path.ends_with("/deleted")
            || path.contains(&format!("/live/{live}"))
            || path.ends_with("runql.json")
            || path == "projects"
            || (*op == "list" && path.is_empty());
        assert!(ok, "{op} {path} is not the run's: {log:#?}");
    }
    assert!(
        log.iter()
            .any(|(op, p)| *op == "get" && p.contains(&format!("/live/{live}/metrics.")))
    );

    // The whole project, for contrast: every file and every live run is read.
    let n = count(&engine, "SELECT count(*) FROM metrics WHERE project = 'p'");
    assert_eq!(n, 15 * 200);
    let log = recording.take();
    let parquet = log
        .iter()
        .filter(|(_, p)| p.ends_with(".parquet"))
        .map(|(_, p)| p.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(parquet.len(), 2, "{log:#?}");
}
