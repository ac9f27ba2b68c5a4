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
//!
//! This module keeps [`Store`]: opening a URL, the format marker, project and run records, and
//! the object primitives (put, get, list, delete) the other modules build on. The local-disk
//! side of those primitives is in `local`, what a handle keeps decoded in `cache`.

mod blob;
mod cache;
mod compact;
mod datasets;
mod gc;
pub mod layout;
mod local;
mod manifest;
mod models;
mod plugins;
mod project_meta;
mod read;
mod rows;
pub(crate) mod segment;
mod snapshot;
mod summary;
mod tables;
#[cfg(test)]
mod testing;
mod traces;

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
pub use models::{LoggedModel, MODEL_STATUSES, ModelChange, ModelMetric, NewModel, is_model_id};
pub use project_meta::{ProjectChange, ProjectMeta};
pub use read::{RunData, Scan};
pub use rows::{
    boolean_column, f64_column, i64_column, records_from_batch, records_to_batch, resolve,
    string_column, timestamp_column,
};
pub use snapshot::{LiveRun, ProjectSnapshot};
pub use summary::summarize_metrics;
pub use tables::{TableCompaction, TableDef};
pub use traces::{TRACE_FILES, is_trace_id};

pub(crate) use local::do_local_io_inline;

use cache::{DecodedCache, FooterCache, ManifestCache, RecordCache};
use local::{
    io_to_store, local_backend, local_delete, local_file, local_io, local_list, local_put,
    local_read, local_sync, remove_empty_parents,
};

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
    records: RecordCache,
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
                local_backend(&dir).map_err(bad)?
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
                local_backend(&expand_tilde(trimmed)).map_err(bad)?
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
        let mut names = Vec::with_capacity(listing.common_prefixes.len());
        for prefix in &listing.common_prefixes {
            let Some(part) = prefix.filename() else {
                continue;
            };
            if let Some(name) = layout::decode_name(part) {
                names.push(name);
            } else if layout::is_shortened(part) {
                // A long name: its record, written before anything else of the project, has it.
                let record = prefix.clone().join("project.json");
                if let Some(bytes) = self.get_opt(&record).await? {
                    let r: ProjectRecord =
                        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&record, e))?;
                    names.push(r.name);
                }
            }
        }
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
    pub(crate) async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, true).await
    }

    /// Like [`Store::put`], but on a local disk without waiting for the data to reach the disk:
    /// the object is whole or absent after a process crash, and after a power loss it may be
    /// torn (readers skip it) until [`Store::sync`] has been called for it.
    pub(crate) async fn put_unsynced(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.put_with(path, bytes, false).await
    }

    /// Makes objects written by [`Store::put_unsynced`] durable (fsync of the files and their
    /// directories on a local disk; nothing to do on object stores).
    pub(crate) async fn sync(&self, paths: Vec<Path>) -> Result<()> {
        let Some(root) = &self.inner.local_root else {
            return Ok(());
        };
        let files: Vec<PathBuf> = paths
            .iter()
            .map(|p| local_file(root, self.layout(), p))
            .collect();
        local_io(move || local_sync(&files))
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
    pub(crate) async fn put_if_absent(&self, path: &Path, bytes: Bytes) -> Result<bool> {
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
    pub(crate) async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        if let Some(root) = self.local_reads() {
            // One read, where object_store's local get is two trips to the blocking pool.
            let file = local_file(root, self.layout(), path);
            return local_io(move || local_read(&file))
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

    /// Reads an object whose bytes are handed to users (artifact blobs, model files): on a
    /// local disk, a path that goes through a symbolic link is refused, so no link placed in
    /// the store serves a file from outside it.
    pub(crate) async fn get_contained(&self, path: &Path) -> Result<Option<Bytes>> {
        if let Some(root) = &self.inner.local_root {
            let root = root.clone();
            let relative = self.layout().relative(path);
            let shown = path.clone();
            local_io(move || local::refuse_links(&root, &relative))
                .await
                .map_err(|e| Error::storage(&shown, io_to_store(&shown, e)))?;
        }
        self.get_opt(path).await
    }

    /// Metadata of an object; `None` if it does not exist.
    pub(crate) async fn head_opt(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        match self.inner.objects.head(path).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(path, e)),
        }
    }

    /// Every object below `prefix` (recursively).
    pub(crate) async fn list_all(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
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

    /// The objects directly below `prefix` and its direct child "directories".
    pub(crate) async fn list_with_delimiter(
        &self,
        prefix: &Path,
    ) -> Result<object_store::ListResult> {
        self.inner
            .objects
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(|e| Error::storage(prefix, e))
    }

    /// The direct children "directories" of `prefix`.
    pub(crate) async fn list_dirs(&self, prefix: &Path) -> Result<Vec<Path>> {
        self.inner
            .objects
            .list_with_delimiter(Some(prefix))
            .await
            .map(|l| l.common_prefixes)
            .map_err(|e| Error::storage(prefix, e))
    }

    /// Deletes objects; ones already gone are fine.
    pub(crate) async fn delete_all(&self, paths: impl IntoIterator<Item = Path>) -> Result<()> {
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
            return local_io(move || Ok(local_delete(&root, &files)))
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

/// An object store, the root path inside it, and the directory when it is local.
type Backend = (Arc<dyn ObjectStore>, Path, Option<PathBuf>);

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
