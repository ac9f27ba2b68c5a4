//! The store: every project, run, row and artifact, over `object_store`.
//!
//! A store is a URL: a local path (the default, `~/.runql` or `$RUNQL_STORE`), `file://`,
//! `s3://`, `gs://`, `az://`, or `memory://` for tests. All I/O goes through `object_store`,
//! with one exception: on a local disk, objects are written as temp file, fsync, rename (with
//! the directory fsynced), which `object_store`'s local backend does not do.
//!
//! Rules that make the store safe without locks (see docs/architecture.md):
//! every object is written once, under a name no other writer can choose; an object is complete
//! when it is visible; a later object supersedes an earlier one, nothing is changed in place.

mod blob;
mod compact;
mod gc;
pub mod layout;
mod manifest;
pub(crate) mod read;
pub(crate) mod segment;
mod tables;

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

pub use compact::CompactReport;
pub use gc::GcReport;
pub use layout::Layout;
pub use manifest::{Manifest, ManifestEntry};
pub use read::{
    LiveRun, ProjectSnapshot, RunData, Scan, f64_column, i64_column, records_from_batch,
    records_to_batch, resolve, string_column, summarize_metrics, timestamp_column,
};
pub use tables::TableDef;

use crate::error::{Error, Result};
use crate::model::{RunRecord, now_us, validate_project};
use crate::schema::FORMAT_VERSION;

/// How long a running run may go without a sign of life before readers call it `crashed`.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(60);

/// A handle on a store. Cheap to clone; every clone shares one connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    objects: Arc<dyn ObjectStore>,
    layout: Layout,
    /// The directory of a local store, for the fsync'd write path.
    local_root: Option<PathBuf>,
    /// Whether reads, listings and deletes of a local store go to the disk directly too;
    /// not when `objects` wraps it ([`Store::with_object_store`]: the wrapper sees them).
    local_reads: bool,
    stale_after: Duration,
    /// The store's format version, once its marker was read (or written).
    format_checked: tokio::sync::OnceCell<u32>,
    /// Per project, the manifest entry names last listed and their folded manifest.
    manifests: ManifestCache,
    footers: FooterCache,
    row_groups: std::sync::Mutex<DecodedCache>,
    /// Run record snapshots by path (each snapshot is a new object, never rewritten).
    records: std::sync::Mutex<HashMap<String, crate::model::RunRecord>>,
}

type ManifestCache = std::sync::Mutex<HashMap<String, (Vec<String>, Arc<Manifest>)>>;

/// Parquet footers of compacted files, by path. Those files never change once written, so a
/// footer read once is good for as long as the file exists.
type FooterCache = std::sync::Mutex<HashMap<String, Arc<parquet::file::metadata::ParquetMetaData>>>;

/// Footers kept at most (the cache starts over past this).
const MAX_FOOTERS: usize = 1024;

/// Run record snapshots kept at most (the cache starts over past this).
const MAX_RECORDS: usize = 16 * 1024;

/// Decoded parts of immutable objects, by path: row groups of the small per-run tables
/// (`runs`, `params`, `tags`, `metric_summary`, `inputs`) of compacted files, the live segments
/// of `params`, `tags` and `inputs`, and the metric summary of each live metrics segment. Every
/// search and every page of runs reads those whole;
/// decoding them again each time was most of the work (Parquet builds a zstd context per column
/// chunk it opens; a live run's summary read every point it logged). Compacted files and
/// segments never change once written.
#[derive(Default)]
pub(crate) struct DecodedCache {
    entries: HashMap<(String, Part), (arrow::array::RecordBatch, u64)>,
    /// Bytes held and the use counter (for evicting the least recently used).
    bytes: usize,
    tick: u64,
}

/// Which decoded part of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    RowGroup(usize),
    /// A metrics segment's `metric_summary` rows.
    Summary,
    /// A live segment's rows.
    Segment,
}

/// Decoded rows kept at most, in bytes of Arrow memory.
const DECODED_CACHE_BYTES: usize = 256 << 20;

impl DecodedCache {
    pub(crate) fn get(&mut self, path: &str, part: Part) -> Option<arrow::array::RecordBatch> {
        self.tick += 1;
        let tick = self.tick;
        let (batch, used) = self.entries.get_mut(&(path.to_string(), part))?;
        *used = tick;
        Some(batch.clone())
    }

    pub(crate) fn insert(&mut self, path: &str, part: Part, batch: arrow::array::RecordBatch) {
        let size = batch.get_array_memory_size();
        if size > DECODED_CACHE_BYTES / 4 {
            return;
        }
        while self.bytes + size > DECODED_CACHE_BYTES {
            // Evict the least recently used eighth at once: one scan per many inserts.
            let mut uses: Vec<u64> = self.entries.values().map(|(_, u)| *u).collect();
            if uses.is_empty() {
                break;
            }
            uses.sort_unstable();
            let cut = uses[uses.len() / 8];
            let mut freed = 0;
            self.entries.retain(|_, (b, u)| {
                let keep = *u > cut;
                if !keep {
                    freed += b.get_array_memory_size();
                }
                keep
            });
            self.bytes -= freed.min(self.bytes);
        }
        self.tick += 1;
        self.bytes += size;
        if let Some((old, _)) = self
            .entries
            .insert((path.to_string(), part), (batch, self.tick))
        {
            self.bytes -= old.get_array_memory_size().min(self.bytes);
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.inner.url)
            .finish()
    }
}

/// The store marker, `runql.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: String,
    version: u32,
    created: i64,
}

/// The project record, `project.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub name: String,
    /// Microseconds since the Unix epoch.
    pub created: i64,
}

impl Store {
    /// The store named by `$RUNQL_STORE`, or `~/.runql`.
    pub fn default_url() -> String {
        if let Ok(url) = std::env::var("RUNQL_STORE")
            && !url.trim().is_empty()
        {
            return url;
        }
        match home_dir() {
            Some(home) => home.join(".runql").to_string_lossy().into_owned(),
            None => ".runql".to_string(),
        }
    }

    /// Opens the default store ([`Store::default_url`]).
    pub fn open_default() -> Result<Store> {
        Store::open(&Store::default_url())
    }

    /// Opens a store by URL or local path. Nothing is read or written until the store is used.
    ///
    /// Object-store credentials and settings come from the usual environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`…).
    pub fn open(url: &str) -> Result<Store> {
        Store::open_with_options(url, std::iter::empty::<(String, String)>())
    }

    /// Like [`Store::open`], with object-store settings given here (`aws_endpoint`,
    /// `aws_allow_http`, `google_service_account`…, the keys `object_store` knows) taking
    /// precedence over the environment's. Local and `memory://` stores ignore them.
    ///
    /// Requests to an object store are retried ([`STORE_RETRY`]): a few times, for seconds,
    /// not minutes, so that a run's writer notices an outage soon and buffers instead (see
    /// [`crate::RunHealth`]).
    pub fn open_with_options<K, V>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Store>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let bad = |reason: String| Error::StoreUrl {
            url: url.to_string(),
            reason,
        };
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(bad("the URL is empty".into()));
        }
        let (objects, root, local_root): Backend =
            if trimmed == "memory://" || trimmed.starts_with("memory://") {
                (Arc::new(InMemory::new()), Path::default(), None)
            } else if let Some(rest) = trimmed.strip_prefix("file://") {
                let dir = expand_tilde(rest);
                local(&dir).map_err(bad)?
            } else if trimmed.contains("://") {
                let parsed = url::Url::parse(trimmed).map_err(|e| bad(e.to_string()))?;
                let options: Vec<(String, String)> = std::env::vars()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .chain(
                        options
                            .into_iter()
                            .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.into())),
                    )
                    .collect();
                let (store, path) = remote(&parsed, options).map_err(|e| bad(e.to_string()))?;
                (store, path, None)
            } else {
                local(&expand_tilde(trimmed)).map_err(bad)?
            };
        Ok(Store::from_parts(
            trimmed.to_string(),
            objects,
            Layout::new(root),
            local_root,
            true,
            DEFAULT_STALE_AFTER,
        ))
    }

    /// A handle with fresh caches (nothing cached is shared between handles built this way).
    fn from_parts(
        url: String,
        objects: Arc<dyn ObjectStore>,
        layout: Layout,
        local_root: Option<PathBuf>,
        local_reads: bool,
        stale_after: Duration,
    ) -> Store {
        Store {
            inner: Arc::new(Inner {
                url,
                objects,
                layout,
                local_reads: local_reads && local_root.is_some(),
                local_root,
                stale_after,
                format_checked: tokio::sync::OnceCell::new(),
                manifests: ManifestCache::default(),
                footers: FooterCache::default(),
                row_groups: Default::default(),
                records: Default::default(),
            }),
        }
    }

    /// A handle on the same store whose readers call a running run `crashed` once it has been
    /// silent for `stale_after`.
    pub fn with_stale_after(&self, stale_after: Duration) -> Store {
        Store::from_parts(
            self.inner.url.clone(),
            self.inner.objects.clone(),
            self.inner.layout.clone(),
            self.inner.local_root.clone(),
            self.inner.local_reads,
            stale_after,
        )
    }

    /// A handle on the same store whose objects are read and written through `objects`, which
    /// must see the same objects (a wrapper that counts, caches or throttles requests).
    pub fn with_object_store(&self, objects: Arc<dyn ObjectStore>) -> Store {
        Store::from_parts(
            self.inner.url.clone(),
            objects,
            self.inner.layout.clone(),
            self.inner.local_root.clone(),
            false,
            self.inner.stale_after,
        )
    }

    /// The local directory to read, list and delete in directly, if that is how this handle
    /// reads.
    fn local_reads(&self) -> Option<&PathBuf> {
        self.inner
            .local_root
            .as_ref()
            .filter(|_| self.inner.local_reads)
    }

    pub(crate) fn cached_footer(
        &self,
        path: &str,
    ) -> Option<Arc<parquet::file::metadata::ParquetMetaData>> {
        let cache = self.inner.footers.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(path).cloned()
    }

    pub(crate) fn cache_footer(
        &self,
        path: &str,
        footer: Arc<parquet::file::metadata::ParquetMetaData>,
    ) {
        let mut cache = self.inner.footers.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_FOOTERS {
            cache.clear();
        }
        cache.insert(path.to_string(), footer);
    }

    pub(crate) fn decoded_cache(&self) -> std::sync::MutexGuard<'_, DecodedCache> {
        self.inner
            .row_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn cached_record(&self, path: &str) -> Option<crate::model::RunRecord> {
        let cache = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(path).cloned()
    }

    pub(crate) fn cache_record(&self, path: &str, record: &crate::model::RunRecord) {
        let mut cache = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_RECORDS {
            cache.clear();
        }
        cache.insert(path.to_string(), record.clone());
    }

    pub(crate) fn manifest_cache(&self, project: &str) -> Option<(Vec<String>, Arc<Manifest>)> {
        self.inner
            .manifests
            .lock()
            .ok()
            .and_then(|m| m.get(project).cloned())
    }

    pub(crate) fn set_manifest_cache(
        &self,
        project: &str,
        names: Vec<String>,
        manifest: Arc<Manifest>,
    ) {
        if let Ok(mut m) = self.inner.manifests.lock() {
            m.insert(project.to_string(), (names, manifest));
        }
    }

    /// Marks a run deleted (or restores it): MLflow's delete/restore. The run and its rows stay;
    /// `runs.deleted` reads true. A marker object, so an active writer's record updates and
    /// compactions never undo it.
    pub async fn set_run_deleted(&self, project: &str, run_id: &str, deleted: bool) -> Result<()> {
        self.ensure_writable().await?;
        let marker = self.layout().deleted_marker(project, run_id);
        if deleted {
            self.put(&marker, Bytes::new()).await
        } else {
            self.delete_all([marker]).await
        }
    }

    /// The URL the store was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The underlying object store (shared with DataFusion by the query engine).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.objects.clone()
    }

    /// The paths of this store's objects.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The directory of a local store; `None` on object stores.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.inner.local_root.as_deref()
    }

    /// How long a silent running run stays `running` for readers.
    pub fn stale_after(&self) -> Duration {
        self.inner.stale_after
    }

    /// Checks the store's format version, creating the marker if the store is new.
    pub async fn ensure_writable(&self) -> Result<()> {
        self.inner
            .format_checked
            .get_or_try_init(|| async {
                let path = self.layout().marker();
                match self.read_marker().await? {
                    Some(version) => Ok(version),
                    None => {
                        let marker = Marker {
                            format: "runql".into(),
                            version: FORMAT_VERSION,
                            created: now_us(),
                        };
                        let body = serde_json::to_vec_pretty(&marker)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        self.put_if_absent(&path, Bytes::from(body)).await?;
                        // Another writer may have won the race, with another version.
                        self.read_marker()
                            .await?
                            .ok_or_else(|| Error::corrupt(&path, "the store marker vanished"))
                    }
                }
            })
            .await
            .map(|_| ())
    }

    /// Checks the store's format version if it has a marker (an empty store reads as empty).
    pub async fn check_readable(&self) -> Result<()> {
        // A marker once found readable stays so (it is written once): one GET per handle,
        // not one per query.
        if self.inner.format_checked.initialized() {
            return Ok(());
        }
        if let Some(version) = self.read_marker().await? {
            let _ = self.inner.format_checked.set(version);
        }
        Ok(())
    }

    /// Whether live objects are written in format 1's sub-folders (`meta/`, `<table>/`): only
    /// into a store whose marker says format 1, so that older runql versions keep reading it.
    /// Known once [`Store::ensure_writable`] ran, which every writer calls first.
    pub(crate) fn nested_live(&self) -> bool {
        self.inner.format_checked.get().is_some_and(|&v| v < 2)
    }

    /// The format version in the store's marker, if there is one.
    async fn read_marker(&self) -> Result<Option<u32>> {
        let path = self.layout().marker();
        let Some(bytes) = self.get_opt(&path).await? else {
            return Ok(None);
        };
        let marker: Marker =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?;
        if marker.version > FORMAT_VERSION {
            return Err(Error::NewerStore {
                url: self.url().to_string(),
                found: marker.version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(Some(marker.version))
    }

    /// Creates a project if it does not exist yet. Creating an existing project is fine.
    pub async fn create_project(&self, project: &str) -> Result<ProjectRecord> {
        validate_project(project)?;
        self.ensure_writable().await?;
        let path = self.layout().project_record(project);
        if let Some(existing) = self.project_record(project).await? {
            return Ok(existing);
        }
        let record = ProjectRecord {
            name: project.to_string(),
            created: now_us(),
        };
        let body = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        self.put_if_absent(&path, Bytes::from(body)).await?;
        Ok(self.project_record(project).await?.unwrap_or(record))
    }

    /// The record of a project, if it exists.
    pub async fn project_record(&self, project: &str) -> Result<Option<ProjectRecord>> {
        let path = self.layout().project_record(project);
        match self.get_opt(&path).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::corrupt(&path, e)),
            None => Ok(None),
        }
    }

    /// Every project of the store, sorted by name.
    pub async fn list_projects(&self) -> Result<Vec<String>> {
        self.check_readable().await?;
        let prefix = self.layout().projects();
        let listing = self
            .inner
            .objects
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| Error::storage(&prefix, e))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(layout::decode_name))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Writes a snapshot of a run's record; the newest snapshot wins.
    pub async fn write_run_record(&self, record: &RunRecord) -> Result<Path> {
        self.ensure_writable().await?;
        let snapshot = uuid::Uuid::now_v7().simple().to_string();
        let path = self.layout().run_meta(
            &record.project,
            &record.run_id,
            &snapshot,
            self.nested_live(),
        );
        let body = serde_json::to_vec(record).map_err(|e| Error::Internal(e.to_string()))?;
        self.put(&path, Bytes::from(body)).await?;
        Ok(path)
    }

    /// Writes an object so that it is complete when it becomes visible.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, true).await
    }

    /// Like [`Store::put`], but on a local disk without waiting for the data to reach the disk:
    /// the object is whole or absent after a process crash, and after a power loss it may be
    /// torn (readers skip it) until [`Store::sync`] has been called for it.
    pub async fn put_unsynced(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, false).await
    }

    /// Makes objects written by [`Store::put_unsynced`] durable (fsync of the files and their
    /// directories on a local disk; nothing to do on object stores).
    pub async fn sync(&self, paths: Vec<Path>) -> Result<()> {
        let Some(root) = &self.inner.local_root else {
            return Ok(());
        };
        let files: Vec<PathBuf> = paths
            .iter()
            .map(|p| local_file(root, self.layout(), p))
            .collect();
        local_io(move || {
            let mut dirs = std::collections::BTreeSet::new();
            for f in &files {
                std::fs::File::open(f)?.sync_data()?;
                if let Some(d) = f.parent() {
                    dirs.insert(d.to_path_buf());
                }
            }
            for d in dirs {
                std::fs::File::open(d)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::storage(self.url(), io_to_store(&Path::default(), e)))
    }

    async fn put_with(&self, path: &Path, bytes: Bytes, sync: bool) -> Result<()> {
        if let Some(root) = &self.inner.local_root {
            let file = local_file(root, self.layout(), path);
            return local_io(move || local_put(&file, &bytes, false, sync))
                .await
                .map(|_| ())
                .map_err(|e| Error::storage(path, io_to_store(path, e)));
        }
        self.inner
            .objects
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(|e| Error::storage(path, e))
    }

    /// Writes an object unless one exists at that path; returns whether this call wrote it.
    pub async fn put_if_absent(&self, path: &Path, bytes: Bytes) -> Result<bool> {
        if let Some(root) = &self.inner.local_root {
            let file = local_file(root, self.layout(), path);
            return local_io(move || local_put(&file, &bytes, true, true))
                .await
                .map_err(|e| Error::storage(path, io_to_store(path, e)));
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .objects
            .put_opts(path, PutPayload::from_bytes(bytes.clone()), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                // Backends without conditional writes: the object is immutable content, so
                // a lost race writes the same bytes twice, which is harmless.
                if self.head_opt(path).await?.is_some() {
                    return Ok(false);
                }
                self.put(path, bytes).await.map(|_| true)
            }
            Err(e) => Err(Error::storage(path, e)),
        }
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        if let Some(root) = self.local_reads() {
            // One read, where object_store's local get is two trips to the blocking pool.
            let file = local_file(root, self.layout(), path);
            return local_io(move || match std::fs::read(&file) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                    ) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            })
            .await
            .map_err(|e| Error::storage(path, io_to_store(path, e)));
        }
        match self.inner.objects.get(path).await {
            Ok(r) => r
                .bytes()
                .await
                .map(Some)
                .map_err(|e| Error::storage(path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(path, e)),
        }
    }

    /// Metadata of an object; `None` if it does not exist.
    pub async fn head_opt(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.inner.objects.head(path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(path, e)),
        }
    }

    /// Every object below `prefix` (recursively).
    pub async fn list_all(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        if let Some(root) = self.local_reads() {
            let dir = local_file(root, self.layout(), prefix);
            let base = prefix.clone();
            let listed = local_io(move || local_list(&dir, &base))
                .await
                .map_err(|e| Error::storage(prefix, io_to_store(prefix, e)))?;
            if let Some(listed) = listed {
                return Ok(listed);
            }
        }
        self.inner
            .objects
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| Error::storage(prefix, e))
    }

    /// The direct children "directories" of `prefix`.
    pub async fn list_dirs(&self, prefix: &Path) -> Result<Vec<Path>> {
        self.inner
            .objects
            .list_with_delimiter(Some(prefix))
            .await
            .map(|l| l.common_prefixes)
            .map_err(|e| Error::storage(prefix, e))
    }

    /// Deletes objects; ones already gone are fine.
    pub async fn delete_all(&self, paths: impl IntoIterator<Item = Path>) -> Result<()> {
        if let Some(root) = self.local_reads() {
            // One trip to the blocking pool for the lot, not one per object.
            let files: Vec<(Path, PathBuf)> = paths
                .into_iter()
                .map(|p| {
                    let f = local_file(root, self.layout(), &p);
                    (p, f)
                })
                .collect();
            let root = root.clone();
            return local_io(move || {
                for (path, file) in files {
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Ok(Err(Error::storage(&path, io_to_store(&path, e)))),
                    }
                    remove_empty_parents(&root, &file);
                }
                Ok(Ok(()))
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        }
        for path in paths {
            match self.inner.objects.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::storage(&path, e)),
            }
            if let Some(root) = &self.inner.local_root {
                remove_empty_parents(root, &local_file(root, self.layout(), &path));
            }
        }
        Ok(())
    }
}

/// How requests to an object store are retried: 4 times over at most 15 s. `object_store`'s
/// default (10 times over 3 minutes) would hold a run's writer inside one request for minutes
/// during an outage, when it should be buffering and telling the user.
pub const STORE_RETRY: (usize, Duration) = (4, Duration::from_secs(15));

fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: STORE_RETRY.0,
        retry_timeout: STORE_RETRY.1,
    }
}

/// The object store of an `s3://`, `gs://`, `az://`… URL, configured by `options` (later
/// options win) and with runql's retry policy.
fn remote(
    url: &url::Url,
    options: Vec<(String, String)>,
) -> std::result::Result<(Arc<dyn ObjectStore>, Path), object_store::Error> {
    use object_store::ObjectStoreScheme;
    macro_rules! build {
        ($builder:ty) => {{
            let builder = options.into_iter().fold(
                <$builder>::new().with_url(url.to_string()),
                |builder, (key, value)| match key.parse() {
                    Ok(k) => builder.with_config(k, value),
                    Err(_) => builder,
                },
            );
            Arc::new(builder.with_retry(retry_config()).build()?) as Arc<dyn ObjectStore>
        }};
    }
    let (scheme, path) = ObjectStoreScheme::parse(url)?;
    let path = Path::parse(path)?;
    let store = match scheme {
        ObjectStoreScheme::AmazonS3 => build!(object_store::aws::AmazonS3Builder),
        ObjectStoreScheme::GoogleCloudStorage => {
            build!(object_store::gcp::GoogleCloudStorageBuilder)
        }
        ObjectStoreScheme::MicrosoftAzure => build!(object_store::azure::MicrosoftAzureBuilder),
        _ => {
            let (store, path) = object_store::parse_url_opts(url, options)?;
            return Ok((Arc::from(store), path));
        }
    };
    Ok((store, path))
}

thread_local! {
    /// Whether this thread does local-disk I/O itself rather than on tokio's blocking pool.
    static INLINE_IO: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one that may block on local-disk I/O: a run's writer thread,
/// which exists to wait on the store. Its local reads and writes then run on it directly
/// instead of being handed to tokio's blocking pool and back (two thread switches an object).
pub(crate) fn do_local_io_inline() {
    INLINE_IO.with(|c| c.set(true));
}

/// Runs blocking local-disk work: on this thread when it is marked for it, else on tokio's
/// blocking pool.
async fn local_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    if INLINE_IO.with(std::cell::Cell::get) {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// An object store, the root path inside it, and the directory when it is local.
type Backend = (Arc<dyn ObjectStore>, Path, Option<PathBuf>);

fn local(dir: &FsPath) -> std::result::Result<Backend, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let fs =
        object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
    Ok((Arc::new(fs), Path::default(), Some(dir)))
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        return home_dir().unwrap_or_else(|| PathBuf::from("~"));
    }
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = home_dir()
    {
        return home.join(rest);
    }
    PathBuf::from(path)
}

fn local_file(root: &FsPath, layout: &Layout, path: &Path) -> PathBuf {
    let mut file = root.to_path_buf();
    for part in layout.relative(path).split('/').filter(|p| !p.is_empty()) {
        file.push(part);
    }
    file
}

fn io_to_store(path: &Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local",
        source: format!("{path}: {e}").into(),
    }
}

/// temp file, write, fsync, then rename (or hard link when `create_only`), then fsync the
/// directory: after a crash or power loss the object is either whole or absent.
fn local_put(file: &FsPath, bytes: &[u8], create_only: bool, sync: bool) -> std::io::Result<bool> {
    use std::io::Write;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = file
        .parent()
        .ok_or_else(|| std::io::Error::other("object path has no parent directory"))?;
    ensure_dir(dir, sync)?;
    // `name#<digits>` is what object_store's local backend skips when listing.
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(format!("#{}{n:06}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        drop(f);
        if create_only {
            match std::fs::hard_link(&tmp, file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(e),
            }
            std::fs::remove_file(&tmp)?;
        } else {
            std::fs::rename(&tmp, file)?;
        }
        if sync && let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and any missing folders above it. With `sync`, a folder it creates is made
/// durable in its parent (fsync of the parent), so that a power loss cannot take a new run's
/// folder away with the objects fsync'd inside it. One `mkdir` when the folder exists.
fn ensure_dir(dir: &FsPath, sync: bool) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().ok_or(e)?;
            ensure_dir(parent, sync)?;
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                // Created meanwhile by another writer (which syncs it).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    if sync && let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Removes the now-empty directories above a deleted local object, up to the store root.
/// Lists every object below `dir` (the local folder of `prefix`) with one `readdir` per folder
/// and one `statx` per file: what `object_store`'s local lister returns (same locations, sizes,
/// times and ETags; temporary `name#<digits>` files skipped), without its cost per listing
/// (it canonicalizes the root, a `readlink` per path component, and stats every entry twice).
/// `None` when a name needs `object_store`'s own encoding or an entry is a symbolic link: the
/// caller then lists through `object_store`.
fn local_list(dir: &FsPath, prefix: &Path) -> std::io::Result<Option<Vec<ObjectMeta>>> {
    fn plain(name: &str) -> bool {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'='))
    }
    fn temporary(name: &str) -> bool {
        name.split_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
    let mut out = Vec::new();
    let base = prefix.as_ref().to_string();
    // (folder, its location with a trailing '/', or empty at the store's root)
    let mut todo = vec![(
        dir.to_path_buf(),
        if base.is_empty() { base } else { base + "/" },
    )];
    while let Some((folder, location)) = todo.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Ok(None);
            };
            if temporary(name) {
                continue;
            }
            if !plain(name) {
                return Ok(None);
            }
            let kind = match entry.file_type() {
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if kind.is_symlink() {
                return Ok(None);
            }
            if kind.is_dir() {
                todo.push((entry.path(), format!("{location}{name}/")));
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let modified = meta.modified()?;
            let micros = modified
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0u64;
            out.push(ObjectMeta {
                location: Path::from(format!("{location}{name}")),
                last_modified: modified.into(),
                size: meta.len(),
                e_tag: Some(format!("{inode:x}-{micros:x}-{:x}", meta.len())),
                version: None,
            });
        }
    }
    Ok(Some(out))
}

fn remove_empty_parents(root: &FsPath, file: &FsPath) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) {
            break;
        }
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
        v.sort_by(|a, b| a.location.cmp(&b.location));
        v
    }

    #[test]
    fn local_puts_create_missing_folders_and_refuse_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for sync in [true, false] {
            let file = dir.path().join(format!("a{sync}/b/c/object.json"));
            assert!(local_put(&file, b"one", false, sync).unwrap_or_else(|e| panic!("{e}")));
            // Into folders that exist now.
            let next = file.with_file_name("next.json");
            assert!(local_put(&next, b"two", false, sync).unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(
                std::fs::read(&file).unwrap_or_else(|e| panic!("{e}")),
                b"one"
            );
            assert_eq!(
                std::fs::read(&next).unwrap_or_else(|e| panic!("{e}")),
                b"two"
            );
        }
        // A file where a folder should be: an error, and nothing left behind.
        std::fs::write(dir.path().join("blocked"), b"x").unwrap_or_else(|e| panic!("{e}"));
        let under = dir.path().join("blocked/object.json");
        assert!(local_put(&under, b"three", false, true).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("blocked")).unwrap_or_default(),
            b"x"
        );
    }

    /// The local lister returns exactly what `object_store`'s does, and hands over to it for
    /// names it would encode.
    #[test]
    fn local_listing_equals_object_stores() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().canonicalize().unwrap_or_else(|e| panic!("{e}"));
        for f in [
            "projects/p/live/r1/meta.01.json",
            "projects/p/live/r1/metrics.w-0000000001.arrow",
            "projects/p/live/r1/meta/02.json",
            "projects/p/live/r2/params.w-0000000001.arrow",
            "projects/a=2Fb/project.json",
            "blobs/sha256/ab/cdef",
        ] {
            let file = root.join(f);
            std::fs::create_dir_all(file.parent().unwrap_or(&root))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&file, f.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        }
        // A write in progress: skipped by both.
        std::fs::write(root.join("projects/p/live/r1/meta.03.json#17"), b"x")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(root.join("projects/p/live/empty"))
            .unwrap_or_else(|e| panic!("{e}"));
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for prefix in [
            "",
            "projects",
            "projects/p/live",
            "projects/p/live/r1",
            "nosuch",
        ] {
            let p = Path::from(prefix);
            let theirs: Vec<ObjectMeta> = rt
                .block_on(fs.list(Some(&p)).try_collect())
                .unwrap_or_else(|e| panic!("{e}"));
            let dir = local_file(&root, &Layout::new(Path::default()), &p);
            let ours = local_list(&dir, &p)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("{prefix}: plain names need no fallback"));
            assert_eq!(sorted(ours), sorted(theirs), "prefix {prefix:?}");
        }
        // A name object_store would encode: the caller falls back to it.
        std::fs::write(root.join("projects/p/live/r2/odd name%.txt"), b"x")
            .unwrap_or_else(|e| panic!("{e}"));
        let p = Path::from("projects/p/live");
        let dir = local_file(&root, &Layout::new(Path::default()), &p);
        assert!(
            local_list(&dir, &p)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
    }
}
