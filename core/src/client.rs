//! The Rust client: log runs from a training loop.
//!
//! Logging never waits on I/O. Values go into an in-memory buffer under a short lock; a
//! background writer thread per run flushes the buffer to a live segment at least every
//! `flush_interval` (1 s by default), or as soon as it holds [`CHUNK_POINTS`] metric points.
//! Memory is bounded: when the writer falls [`MAX_PENDING_CHUNKS`] chunks behind, logging
//! waits for it (backpressure) instead of growing without limit.
//!
//! ```no_run
//! # fn main() -> runql_core::Result<()> {
//! let store = runql_core::Store::open("/tmp/runql-demo")?;
//! let run = store.project("mnist").run().name("baseline").start()?;
//! run.log_params([("lr", "0.01"), ("batch", "64")])?;
//! for step in 0..100 {
//!     run.log_metric("train/loss", step, 1.0 / (step as f64 + 1.0))?;
//! }
//! run.finish()?;
//! # Ok(()) }
//! ```
//!
//! When the store is unreachable (an object store's outage, a full disk), the writer keeps
//! what was logged in memory, retries with backoff and says so ([`Run::health`], a warning in
//! the log, an error from [`Run::flush`]); nothing is lost once the store is back, as long as
//! the buffer stays under its bound ([`RunBuilder::outage_buffer`], 256 MiB by default). Past
//! the bound, logging calls fail with [`Error::OutageBufferFull`] (the values are not kept)
//! until the store is back. [`Run::finish`] waits for the store up to
//! [`RunBuilder::finish_timeout`].
//!
//! A run dropped without [`Run::finish`] is marked `failed` when the thread is panicking and
//! `killed` otherwise; a process that dies without dropping it stops sending heartbeats, and
//! readers mark the run `crashed` once its heartbeat is stale.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::Int32Type;
use bytes::Bytes;

use crate::capture::{self, Capture};
use crate::error::{Error, Result};
use crate::model::{
    MAX_PARAM_VALUE_LEN, MAX_TAG_VALUE_LEN, RunId, RunRecord, RunStatus, guess_media_type,
    normalize_artifact_path, now_us, param_value_num, validate_key, validate_project,
};
use crate::schema::Table;
use crate::store::{Store, segment};

/// Metric points per chunk handed to the writer.
pub const CHUNK_POINTS: usize = 1 << 20;
/// Chunks waiting for the writer before logging blocks.
pub const MAX_PENDING_CHUNKS: usize = 3;
/// Default bound of the memory a run holds while the store is unreachable.
pub const DEFAULT_OUTAGE_BUFFER: u64 = 256 << 20;
/// Default time [`Run::finish`] waits for an unreachable store.
pub const DEFAULT_FINISH_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait between two tries to reach an unreachable store.
const MAX_OUTAGE_BACKOFF: Duration = Duration::from_secs(5);
/// The tag that holds a run's notes (the same key MLflow uses).
pub const NOTE_TAG: &str = "mlflow.note.content";

/// A project of a store: where runs are started.
#[derive(Debug, Clone)]
pub struct Project {
    store: Store,
    name: String,
}

impl Store {
    /// A handle on a project; it is created when its first run starts.
    pub fn project(&self, name: impl Into<String>) -> Project {
        Project {
            store: self.clone(),
            name: name.into(),
        }
    }
}

impl Project {
    /// The project's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store the project lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts configuring a new run.
    pub fn run(&self) -> RunBuilder {
        RunBuilder {
            store: self.store.clone(),
            project: self.name.clone(),
            name: None,
            parent: None,
            group: None,
            tags: Vec::new(),
            capture: Capture::default(),
            flush_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(10),
            outage_buffer: DEFAULT_OUTAGE_BUFFER,
            finish_timeout: DEFAULT_FINISH_TIMEOUT,
            run_id: None,
            command: None,
            resume: None,
            started_at: None,
            runtime: None,
        }
    }

    /// Reopens an existing run of this project to log more into it: an MLflow client resuming
    /// a run, a second process of the same job, a server restarted mid-run. The run keeps its
    /// name, parent, group, command and start time, and is `running` again until it finishes.
    /// Params it logged before stay (first value wins); nothing is captured again.
    pub async fn resume(&self, run_id: RunId) -> Result<RunBuilder> {
        let id = run_id.to_string();
        let batches = self
            .store
            .scan(
                crate::schema::Table::Runs,
                &crate::store::Scan::project(&self.name).runs([id.as_str()]),
            )
            .await?;
        let record = batches
            .iter()
            .flat_map(|b| crate::store::records_from_batch(b).unwrap_or_default())
            .next()
            .ok_or_else(|| Error::RunNotFound {
                run_id: id,
                project: Some(self.name.clone()),
            })?;
        // The params it logged before: a changed value must still be refused.
        let params = self
            .store
            .scan(
                crate::schema::Table::Params,
                &crate::store::Scan::project(&self.name).runs([record.run_id.as_str()]),
            )
            .await?;
        let mut known = HashMap::new();
        for b in &params {
            let keys = crate::store::read::string_column(b, "key")?;
            let values = crate::store::read::string_column(b, "value")?;
            for i in 0..b.num_rows() {
                known.insert(keys.value(i).to_string(), values.value(i).to_string());
            }
        }
        let mut builder = self.run().capture(Capture::none()).run_id(run_id);
        builder.resume = Some((record, known));
        Ok(builder)
    }
}

/// Configures a run before it starts.
#[derive(Debug, Clone)]
pub struct RunBuilder {
    store: Store,
    project: String,
    name: Option<String>,
    parent: Option<String>,
    group: Option<String>,
    tags: Vec<(String, String)>,
    capture: Capture,
    flush_interval: Duration,
    heartbeat_interval: Duration,
    outage_buffer: u64,
    finish_timeout: Duration,
    run_id: Option<RunId>,
    started_at: Option<i64>,
    command: Option<String>,
    /// The record and params of the run being resumed.
    resume: Option<(RunRecord, HashMap<String, String>)>,
    /// A multi-thread runtime the writer does its I/O on, instead of a runtime of its own.
    runtime: Option<tokio::runtime::Handle>,
}

impl RunBuilder {
    /// The command line to record instead of this process's own (for a wrapper that runs
    /// another program as the run, like `runql run -- python train.py`).
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// A human-readable name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Makes this run a child of `parent` (a sweep's trial, a fold of a cross-validation…).
    pub fn parent(mut self, parent: &Run) -> Self {
        self.parent = Some(parent.id().as_hex());
        self
    }

    /// Makes this run a child of the run with this id.
    pub fn parent_id(mut self, parent: RunId) -> Self {
        self.parent = Some(parent.as_hex());
        self
    }

    /// Puts the run in a group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets a tag from the start.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    /// What context to capture (default: everything, see [`Capture`]).
    pub fn capture(mut self, capture: Capture) -> Self {
        self.capture = capture;
        self
    }

    /// Longest time logged values wait in memory before being written (default 1 s): what a
    /// crash can lose at most.
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = every.max(Duration::from_millis(1));
        self
    }

    /// How often the run says it is alive when it logs nothing (default 10 s).
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat_interval = every.max(Duration::from_millis(1));
        self
    }

    /// How many bytes of logged data the run keeps in memory while the store is unreachable
    /// (default [`DEFAULT_OUTAGE_BUFFER`], 256 MiB). Past it, logging calls fail with
    /// [`Error::OutageBufferFull`] until the store is back.
    pub fn outage_buffer(mut self, bytes: u64) -> Self {
        self.outage_buffer = bytes;
        self
    }

    /// How long [`Run::finish`] (and dropping a run) waits for an unreachable store before it
    /// gives up on what is still buffered (default 120 s).
    pub fn finish_timeout(mut self, timeout: Duration) -> Self {
        self.finish_timeout = timeout;
        self
    }

    /// Uses this id instead of a fresh one.
    pub fn run_id(mut self, id: RunId) -> Self {
        self.run_id = Some(id);
        self
    }

    /// Records this start time (µs since the epoch) instead of now: for runs imported from
    /// another tool's records (an Optuna trial, an MLflow folder).
    pub fn started_at(mut self, us: i64) -> Self {
        self.started_at = Some(us);
        self
    }

    /// Has the run's writer thread do its store I/O on this runtime instead of starting a
    /// runtime (and, on a local disk, a blocking-pool thread) of its own: for a process that
    /// keeps many runs open and has a runtime for as long as they live, such as the tracking
    /// server. Ignored unless it is a multi-thread runtime: a current-thread runtime only
    /// drives I/O inside its own `block_on`. The runtime must outlive the run.
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = (handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .then_some(handle);
        self
    }

    /// Starts the run: writes its record and starts its background writer. Returns once the
    /// run is visible in the store.
    pub fn start(self) -> Result<Run> {
        validate_project(&self.project)?;
        for (k, v) in &self.tags {
            validate_key("tag key", k)?;
            check_len("tag value", v, MAX_TAG_VALUE_LEN)?;
        }
        let run_id = self.run_id.unwrap_or_default();
        let now = now_us();
        let mut record = match self.resume.as_ref().map(|r| &r.0) {
            Some(previous) => {
                let mut r = previous.clone();
                r.status = RunStatus::Running;
                r.ended = None;
                r.heartbeat = Some(now);
                r
            }
            None => RunRecord::new(&self.project, run_id, now),
        };
        if let Some(t) = self.started_at {
            record.created = t;
            record.started = Some(t);
        }
        if self.resume.is_none() || self.name.is_some() {
            record.name = self.name.clone();
        }
        if self.resume.is_none() || self.parent.is_some() {
            record.parent_run_id = self.parent.clone();
        }
        if self.resume.is_none() || self.group.is_some() {
            record.run_group = self.group.clone();
        }
        if let Some(command) = &self.command {
            record.command = Some(command.clone());
        } else if self.capture.command {
            record.command = Some(capture::command_line());
        }
        if self.capture.host {
            record.username = capture::username();
            record.hostname = capture::hostname();
        }

        let (tx, rx) = mpsc::sync_channel(MAX_PENDING_CHUNKS);
        let shared = Arc::new(Shared {
            project: self.project.clone(),
            run_id,
            buf: Mutex::new(Buffer::default()),
            tx,
            state: AtomicU8::new(OK),
            error: Mutex::new(None),
            health: Mutex::new(HealthState::default()),
            outage_buffer: self.outage_buffer,
            params: Mutex::new(
                self.resume
                    .as_ref()
                    .map(|r| r.1.clone())
                    .unwrap_or_default(),
            ),
        });
        {
            let mut b = shared.lock();
            for (k, v) in &self.tags {
                b.tags.push((k.clone(), v.clone()));
            }
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let started = Box::new(record.clone());
        let writer = Writer {
            store: self.store.clone(),
            shared: shared.clone(),
            record,
            writer_id: uuid::Uuid::now_v7().simple().to_string(),
            snapshot: None,
            capture: self.capture.clone(),
            unsynced: Vec::new(),
            ipc_buf: Vec::new(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            outage: None,
            record_dirty: false,
            superseded: Vec::new(),
            finish_timeout: self.finish_timeout,
        };
        let flush_interval = self.flush_interval;
        let heartbeat_interval = self.heartbeat_interval;
        let runtime = self.runtime.clone();
        let handle = std::thread::Builder::new()
            .name(format!("runql-writer-{run_id}"))
            .spawn(move || writer.run(rx, ready_tx, runtime, flush_interval, heartbeat_interval))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(e);
            }
            Err(_) => {
                let _ = handle.join();
                return Err(Error::Internal(
                    "the writer thread stopped before the run started".into(),
                ));
            }
        }
        let sampler = self
            .capture
            .system_metrics
            .map(|every| spawn_sampler(shared.clone(), every));
        Ok(Run {
            shared,
            store: self.store,
            started,
            writer: Some(handle),
            sampler,
            ended: false,
        })
    }
}

/// A live run. Log to it from any thread (`&self` methods); finish it with [`Run::finish`].
pub struct Run {
    shared: Arc<Shared>,
    store: Store,
    /// The record as `start` stored it (boxed: a run handle stays small).
    started: Box<RunRecord>,
    writer: Option<JoinHandle<()>>,
    sampler: Option<(JoinHandle<()>, mpsc::Sender<()>)>,
    ended: bool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("project", &self.shared.project)
            .field("run_id", &self.shared.run_id)
            .finish()
    }
}

/// A metric key registered once, for the fastest logging path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricKey(i32);

impl Run {
    /// The run's id.
    pub fn id(&self) -> RunId {
        self.shared.run_id
    }

    /// The run's project.
    pub fn project(&self) -> &str {
        &self.shared.project
    }

    /// The run's record as [`RunBuilder::start`] stored it (status `running`).
    pub fn started_record(&self) -> &RunRecord {
        &self.started
    }

    /// The store the run writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts configuring a child run in the same project.
    pub fn child(&self) -> RunBuilder {
        self.store.project(self.project()).run().parent(self)
    }

    /// Logs one metric point at `step`, timestamped now. Never waits on I/O (it waits only when
    /// the writer is [`MAX_PENDING_CHUNKS`] chunks behind). Fails only for an invalid key or
    /// when the background writer has failed.
    #[inline]
    pub fn log_metric(&self, key: &str, step: i64, value: f64) -> Result<()> {
        self.log_metric_at(key, step, value, now_us())
    }

    /// Logs one metric point with an explicit timestamp (µs since the Unix epoch).
    pub fn log_metric_at(&self, key: &str, step: i64, value: f64, ts_us: i64) -> Result<()> {
        self.shared.check()?;
        let mut b = self.shared.lock();
        let id = match b.keys.get(key) {
            Some(&id) => id,
            None => b.add_key(key)?,
        };
        b.push_metric(id, step, ts_us, value);
        self.shared.maybe_hand_off(b);
        Ok(())
    }

    /// Registers a metric key once; [`Run::log`] with it skips the key lookup.
    pub fn metric_key(&self, key: &str) -> Result<MetricKey> {
        let mut b = self.shared.lock();
        match b.keys.get(key) {
            Some(&id) => Ok(MetricKey(id)),
            None => b.add_key(key).map(MetricKey),
        }
    }

    /// Logs one point of a registered key, timestamped now.
    #[inline]
    pub fn log(&self, key: MetricKey, step: i64, value: f64) -> Result<()> {
        self.shared.check()?;
        let ts = now_us();
        let mut b = self.shared.lock();
        b.push_metric(key.0, step, ts, value);
        self.shared.maybe_hand_off(b);
        Ok(())
    }

    /// Logs several metrics at one step under one timestamp.
    pub fn log_metrics<'a>(
        &self,
        step: i64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<()> {
        self.shared.check()?;
        let ts = now_us();
        let mut b = self.shared.lock();
        for (key, value) in values {
            let id = match b.keys.get(key) {
                Some(&id) => id,
                None => b.add_key(key)?,
            };
            b.push_metric(id, step, ts, value);
        }
        self.shared.maybe_hand_off(b);
        Ok(())
    }

    /// Logs points of any keys, each with its own step and timestamp (µs): `(key, step, value,
    /// ts_us)`. One lock per few thousand points: what a server receiving batches uses.
    pub fn log_points<'a>(
        &self,
        points: impl IntoIterator<Item = (&'a str, i64, f64, i64)>,
    ) -> Result<()> {
        self.shared.check()?;
        let mut points = points.into_iter().peekable();
        while points.peek().is_some() {
            let mut b = self.shared.lock();
            for (key, step, value, ts) in points.by_ref().take(CHUNK_POINTS / 4) {
                let id = match b.keys.get(key) {
                    Some(&id) => id,
                    None => b.add_key(key)?,
                };
                b.push_metric(id, step, ts, value);
            }
            self.shared.maybe_hand_off(b);
        }
        Ok(())
    }

    /// Logs a whole series of one key: `(step, value)` pairs, timestamped now.
    pub fn log_series(&self, key: &str, points: &[(i64, f64)]) -> Result<()> {
        self.shared.check()?;
        let ts = now_us();
        let id = self.metric_key(key)?.0;
        for chunk in points.chunks(CHUNK_POINTS / 4) {
            let mut b = self.shared.lock();
            for &(step, value) in chunk {
                b.push_metric(id, step, ts, value);
            }
            self.shared.maybe_hand_off(b);
        }
        Ok(())
    }

    /// Logs a parameter. Params are immutable: logging the same value again is fine, a
    /// different value is an error.
    pub fn log_param(&self, key: &str, value: impl ToString) -> Result<()> {
        self.log_params([(key, value.to_string())])
    }

    /// Logs several parameters; nothing is logged if any of them is invalid.
    pub fn log_params<K: AsRef<str>, V: ToString>(
        &self,
        params: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        self.shared.check()?;
        let params: Vec<(String, String)> = params
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.to_string()))
            .collect();
        let mut known = self.shared.params.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch: HashMap<&str, &str> = HashMap::new();
        for (k, v) in &params {
            validate_key("param key", k)?;
            check_len("param value", v, MAX_PARAM_VALUE_LEN)?;
            let old = known
                .get(k.as_str())
                .map(String::as_str)
                .or(batch.get(k.as_str()).copied());
            if let Some(old) = old
                && old != v
            {
                return Err(Error::ParamChanged {
                    run_id: self.id().as_hex(),
                    key: k.clone(),
                    old: old.to_string(),
                    new: v.clone(),
                });
            }
            batch.insert(k, v);
        }
        let mut b = self.shared.lock();
        for (k, v) in params {
            if known.contains_key(&k) {
                continue;
            }
            known.insert(k.clone(), v.clone());
            b.params.push((k, v));
        }
        Ok(())
    }

    /// Sets a tag; setting it again replaces the value.
    pub fn set_tag(&self, key: &str, value: impl Into<String>) -> Result<()> {
        self.shared.check()?;
        let value = value.into();
        validate_key("tag key", key)?;
        check_len("tag value", &value, MAX_TAG_VALUE_LEN)?;
        self.shared.lock().tags.push((key.to_string(), value));
        Ok(())
    }

    /// Sets the run's notes (markdown), stored as the tag `mlflow.note.content`.
    pub fn set_note(&self, text: impl Into<String>) -> Result<()> {
        self.set_tag(NOTE_TAG, text)
    }

    /// Records a dataset the run used.
    pub fn log_input(&self, input: Input) -> Result<()> {
        self.shared.check()?;
        if input.name.trim().is_empty() {
            return Err(Error::InvalidValue {
                what: "input",
                reason: "the dataset name is empty".into(),
            });
        }
        let ts = now_us();
        self.shared.lock().inputs.push((input, ts));
        Ok(())
    }

    /// Records one line of output (`stream` is `stdout` or `stderr`).
    pub fn log_line(&self, stream: &str, line: impl Into<String>) -> Result<()> {
        self.shared.check()?;
        let ts = now_us();
        self.shared
            .lock()
            .logs
            .push((ts, stream.to_string(), line.into()));
        Ok(())
    }

    /// Records one system metric sample (the sampler does this by itself).
    pub fn log_system_metric(&self, key: &str, value: f64) -> Result<()> {
        self.shared.check()?;
        validate_key("system metric key", key)?;
        self.shared
            .lock()
            .system
            .push((key.to_string(), now_us(), value));
        Ok(())
    }

    /// Logs a local file as an artifact, under its file name. Waits until the content is
    /// stored (content-addressed, so a file logged twice is stored once).
    pub fn log_artifact(&self, file: impl AsRef<Path>) -> Result<Artifact> {
        let file = file.as_ref();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::ArtifactPath {
                path: file.display().to_string(),
                reason: "it names no file".into(),
            })?;
        self.log_artifact_as(file, &name)
    }

    /// Logs a local file as an artifact at `artifact_path` inside the run.
    pub fn log_artifact_as(&self, file: impl AsRef<Path>, artifact_path: &str) -> Result<Artifact> {
        let path = normalize_artifact_path(artifact_path)?;
        let file = file.as_ref();
        if !file.is_file() {
            return Err(Error::ReadFile {
                path: file.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a readable file"),
            });
        }
        self.store_artifact(path, BlobSource::File(file.to_path_buf()))
    }

    /// Logs bytes as an artifact at `artifact_path` inside the run.
    pub fn log_artifact_bytes(
        &self,
        artifact_path: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<Artifact> {
        let path = normalize_artifact_path(artifact_path)?;
        self.store_artifact(path, BlobSource::Bytes(bytes.into()))
    }

    fn store_artifact(&self, path: String, source: BlobSource) -> Result<Artifact> {
        self.shared.check()?;
        let (ack, done) = mpsc::channel();
        self.shared.send(Msg::Blob { source, ack })?;
        let (digest, size) = done.recv().map_err(|_| self.shared.writer_error())??;
        let artifact = Artifact {
            media_type: guess_media_type(&path).map(str::to_string),
            path,
            digest,
            size,
            created: now_us(),
        };
        self.shared.lock().artifacts.push(artifact.clone());
        Ok(artifact)
    }

    /// Writes everything logged so far and waits until it is stored. While the store is
    /// unreachable this fails with [`Error::StoreUnavailable`]; what was logged stays buffered
    /// and is written when the store is back.
    pub fn flush(&self) -> Result<()> {
        if self.shared.state.load(Ordering::Relaxed) == FAILED {
            return Err(self.shared.writer_error());
        }
        let (ack, done) = mpsc::channel();
        self.shared.send(Msg::Flush(ack))?;
        done.recv().map_err(|_| self.shared.writer_error())?
    }

    /// Whether the store is reachable for this run's writer, and how much logged data waits in
    /// memory for it.
    pub fn health(&self) -> RunHealth {
        let h = self.shared.health_mut();
        RunHealth {
            unreachable_for: h.since.map(|t| t.elapsed()),
            last_error: h.last_error.clone(),
            pending_bytes: h.pending_bytes,
            outage_buffer: self.shared.outage_buffer,
        }
    }

    /// Ends the run as `finished`, writing everything logged.
    pub fn finish(mut self) -> Result<()> {
        self.end(RunStatus::Finished)
    }

    /// Ends the run with another status (`failed`, `killed`).
    pub fn finish_with(mut self, status: RunStatus) -> Result<()> {
        self.end_at(status, None).map(drop)
    }

    /// Like [`Run::finish_with`], and returns the run's final record as stored (what a reader
    /// of the run would now get, without reading it back).
    pub fn finish_with_record(mut self, status: RunStatus) -> Result<RunRecord> {
        self.end_at(status, None)?
            .ok_or_else(|| Error::Internal("the run had ended already".into()))
    }

    /// Ends the run with a status and an end time (µs since the epoch) taken from another
    /// tool's records rather than now.
    pub fn finish_at(mut self, status: RunStatus, ended_us: i64) -> Result<()> {
        self.end_at(status, Some(ended_us)).map(drop)
    }

    fn end(&mut self, status: RunStatus) -> Result<()> {
        self.end_at(status, None).map(drop)
    }

    /// Ends the run; its final record, `None` when it had ended already.
    fn end_at(&mut self, status: RunStatus, at: Option<i64>) -> Result<Option<RunRecord>> {
        if self.ended {
            return Ok(None);
        }
        self.ended = true;
        if let Some((handle, stop)) = self.sampler.take() {
            drop(stop);
            let _ = handle.join();
        }
        let (ack, done) = mpsc::channel();
        let sent = self.shared.tx.send(Msg::End { status, at, ack });
        let result = match sent {
            Ok(()) => done
                .recv()
                .map_err(|_| self.shared.writer_error())
                .and_then(|r| r),
            Err(_) => Err(self.shared.writer_error()),
        };
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        result.map(Some)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.ended {
            let status = if std::thread::panicking() {
                RunStatus::Failed
            } else {
                RunStatus::Killed
            };
            if let Err(e) = self.end(status) {
                tracing::warn!(run_id = %self.shared.run_id, error = %e, "could not end the run cleanly");
            }
        }
    }
}

/// A dataset a run used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub name: String,
    pub uri: Option<String>,
    pub digest: Option<String>,
    /// train, eval, test…
    pub role: Option<String>,
}

impl Input {
    pub fn new(name: impl Into<String>) -> Self {
        Input {
            name: name.into(),
            ..Input::default()
        }
    }
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }
    pub fn digest(mut self, digest: impl Into<String>) -> Self {
        self.digest = Some(digest.into());
        self
    }
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }
}

/// An artifact as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub path: String,
    pub digest: String,
    pub size: u64,
    pub media_type: Option<String>,
    pub created: i64,
}

fn check_len(what: &'static str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::InvalidValue {
            what,
            reason: format!("it is {} bytes long, the limit is {max}", value.len()),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared state between the logging threads and the writer.

struct Shared {
    project: String,
    run_id: RunId,
    buf: Mutex<Buffer>,
    tx: SyncSender<Msg>,
    /// [`OK`], [`FAILED`] or [`FULL`]: read by every logging call.
    state: AtomicU8,
    error: Mutex<Option<String>>,
    /// What the writer last said about the store, for [`Run::health`].
    health: Mutex<HealthState>,
    outage_buffer: u64,
    params: Mutex<HashMap<String, String>>,
}

impl Shared {
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    fn check(&self) -> Result<()> {
        match self.state.load(Ordering::Relaxed) {
            OK => Ok(()),
            FULL => Err(self.full_error()),
            _ => Err(self.writer_error()),
        }
    }

    #[cold]
    fn full_error(&self) -> Error {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        Error::OutageBufferFull {
            run_id: self.run_id.as_hex(),
            secs: h.since.map_or(0, |t| t.elapsed().as_secs()),
            reason: h.last_error.clone().unwrap_or_default(),
            bound: human_bytes(self.outage_buffer),
        }
    }

    fn health_mut(&self) -> MutexGuard<'_, HealthState> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer_error(&self) -> Error {
        let reason = self
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "the writer thread has stopped (the run was ended)".into());
        Error::Writer {
            run_id: self.run_id.as_hex(),
            reason,
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(run_id = %self.run_id, %reason, "run writer failed");
        let mut e = self.error.lock().unwrap_or_else(|e| e.into_inner());
        e.get_or_insert(reason);
        self.state.store(FAILED, Ordering::Relaxed);
    }

    fn send(&self, msg: Msg) -> Result<()> {
        self.tx.send(msg).map_err(|_| self.writer_error())
    }

    /// Hands a full chunk to the writer, outside the lock (this is where backpressure waits).
    #[inline]
    fn maybe_hand_off(&self, mut b: MutexGuard<'_, Buffer>) {
        if b.metric_len() < CHUNK_POINTS {
            return;
        }
        let chunk = b.take_chunk();
        drop(b);
        if self.tx.send(Msg::Chunk(Box::new(chunk))).is_err() {
            self.fail("the writer thread has stopped".into());
        }
    }
}

/// `Shared::state`: logging works.
const OK: u8 = 0;
/// `Shared::state`: the writer failed for good.
const FAILED: u8 = 1;
/// `Shared::state`: the store is unreachable and the outage buffer is full.
const FULL: u8 = 2;

#[derive(Default)]
struct HealthState {
    /// When the store became unreachable (None: it is reachable).
    since: Option<Instant>,
    last_error: Option<String>,
    pending_bytes: u64,
}

/// How a run's writer is doing with the store: see [`Run::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunHealth {
    /// How long the store has been unreachable; `None` when the last write went through.
    pub unreachable_for: Option<Duration>,
    /// The last error the store gave, while it is unreachable.
    pub last_error: Option<String>,
    /// Bytes of logged data waiting in memory for the store.
    pub pending_bytes: u64,
    /// The bound on `pending_bytes` ([`RunBuilder::outage_buffer`]).
    pub outage_buffer: u64,
}

impl RunHealth {
    /// True when everything handed to the writer has reached the store.
    pub fn is_ok(&self) -> bool {
        self.unreachable_for.is_none() && self.pending_bytes == 0
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[derive(Default)]
struct Buffer {
    keys: HashMap<Box<str>, i32, foldhash::fast::RandomState>,
    /// Every metric key so far, by id; shared with chunks (copied only when a key is added
    /// while the writer still holds an older list).
    key_names: Arc<Vec<String>>,
    m: MetricCols,
    /// Column vectors the writer gave back: reusing them keeps page faults (which cost more
    /// than everything else on the logging path) out of the hot loop.
    spare: Vec<MetricCols>,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    system: Vec<(String, i64, f64)>,
    artifacts: Vec<Artifact>,
    logs: Vec<(i64, String, String)>,
    inputs: Vec<(Input, i64)>,
    /// Sequence number of the next chunk: chunks are numbered under the lock, so segment
    /// order is logging order even when chunks reach the writer out of order.
    next_seq: u64,
}

impl Buffer {
    #[cold]
    fn add_key(&mut self, key: &str) -> Result<i32> {
        validate_key("metric key", key)?;
        let id = i32::try_from(self.key_names.len()).map_err(|_| Error::InvalidValue {
            what: "metric key",
            reason: "a run cannot have more than 2^31 metric keys".into(),
        })?;
        Arc::make_mut(&mut self.key_names).push(key.to_string());
        self.keys.insert(key.into(), id);
        Ok(id)
    }

    #[inline]
    fn push_metric(&mut self, key: i32, step: i64, ts: i64, value: f64) {
        if self.m.key.capacity() == 0 {
            self.reserve();
        }
        self.m.key.push(key);
        self.m.step.push(step);
        self.m.ts.push(ts);
        self.m.value.push(value);
    }

    #[cold]
    fn reserve(&mut self) {
        self.m = self.spare.pop().unwrap_or_else(|| MetricCols {
            key: Vec::with_capacity(CHUNK_POINTS),
            step: Vec::with_capacity(CHUNK_POINTS),
            ts: Vec::with_capacity(CHUNK_POINTS),
            value: Vec::with_capacity(CHUNK_POINTS),
        });
    }

    #[inline]
    fn metric_len(&self) -> usize {
        self.m.key.len()
    }

    fn is_empty(&self) -> bool {
        self.m.key.is_empty()
            && self.params.is_empty()
            && self.tags.is_empty()
            && self.system.is_empty()
            && self.artifacts.is_empty()
            && self.logs.is_empty()
            && self.inputs.is_empty()
    }

    fn take_chunk(&mut self) -> Chunk {
        let seq = self.next_seq;
        self.next_seq += 1;
        Chunk {
            seq,
            key_names: self.key_names.clone(),
            m: std::mem::take(&mut self.m),
            params: std::mem::take(&mut self.params),
            tags: std::mem::take(&mut self.tags),
            system: std::mem::take(&mut self.system),
            artifacts: std::mem::take(&mut self.artifacts),
            logs: std::mem::take(&mut self.logs),
            inputs: std::mem::take(&mut self.inputs),
        }
    }
}

/// The metric columns of a chunk.
#[derive(Default)]
struct MetricCols {
    key: Vec<i32>,
    step: Vec<i64>,
    ts: Vec<i64>,
    value: Vec<f64>,
}

struct Chunk {
    seq: u64,
    key_names: Arc<Vec<String>>,
    m: MetricCols,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    system: Vec<(String, i64, f64)>,
    artifacts: Vec<Artifact>,
    logs: Vec<(i64, String, String)>,
    inputs: Vec<(Input, i64)>,
}

enum BlobSource {
    File(PathBuf),
    Bytes(Bytes),
}

enum Msg {
    Chunk(Box<Chunk>),
    Flush(mpsc::Sender<Result<()>>),
    Blob {
        source: BlobSource,
        ack: mpsc::Sender<Result<(String, u64)>>,
    },
    End {
        status: RunStatus,
        /// The end time to record, when it is not now.
        at: Option<i64>,
        /// The final record as stored, or why it could not be.
        ack: mpsc::Sender<Result<RunRecord>>,
    },
}

// ---------------------------------------------------------------------------------------------
// The writer thread.

struct Writer {
    store: Store,
    shared: Arc<Shared>,
    record: RunRecord,
    writer_id: String,
    /// The newest record snapshot this writer wrote (deleted when superseded).
    snapshot: Option<object_store::path::Path>,
    capture: Capture,
    /// Segments written without fsync (full chunks), synced at the next timed flush.
    unsynced: Vec<object_store::path::Path>,
    /// The IPC encoding buffer, reused from chunk to chunk.
    ipc_buf: Vec<u8>,
    /// Encoded segments not yet written (while the store is unreachable), oldest first.
    backlog: VecDeque<(object_store::path::Path, Bytes)>,
    backlog_bytes: u64,
    /// Set while the store is unreachable.
    outage: Option<Outage>,
    /// The run record changed (heartbeat, context) but could not be written yet.
    record_dirty: bool,
    /// Superseded record snapshots whose deletion failed; retried with the next write.
    superseded: Vec<object_store::path::Path>,
    finish_timeout: Duration,
}

/// Where the writer thread runs its store I/O.
enum WriterRuntime {
    /// A current-thread runtime of its own.
    Own(tokio::runtime::Runtime),
    /// A multi-thread runtime of the process (see [`RunBuilder::runtime`]).
    Shared(tokio::runtime::Handle),
}

impl WriterRuntime {
    fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        match self {
            WriterRuntime::Own(rt) => rt.block_on(fut),
            WriterRuntime::Shared(handle) => handle.block_on(fut),
        }
    }
}

/// An outage of the store, as the writer sees it.
struct Outage {
    since: Instant,
    /// When to try the store again.
    next_try: Instant,
    /// The wait after the next failed try.
    delay: Duration,
    last_error: String,
}

impl Writer {
    fn run(
        mut self,
        rx: Receiver<Msg>,
        ready: mpsc::Sender<Result<()>>,
        runtime: Option<tokio::runtime::Handle>,
        flush_interval: Duration,
        heartbeat_interval: Duration,
    ) {
        // This thread exists to wait on the store: it does its local-disk I/O itself.
        crate::store::do_local_io_inline();
        let rt = match runtime {
            Some(handle) => WriterRuntime::Shared(handle),
            None => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => WriterRuntime::Own(rt),
                Err(e) => {
                    let _ =
                        ready.send(Err(Error::Internal(format!("cannot start a runtime: {e}"))));
                    return;
                }
            },
        };
        // The first record is written before `start` returns: a store that cannot be reached
        // now is an error for the caller, not an outage to wait out.
        let started = rt.block_on(async {
            self.store.create_project(&self.record.project).await?;
            let path = self.store.write_run_record(&self.record).await?;
            self.snapshot = Some(path);
            Ok(())
        });
        let ok = started.is_ok();
        let _ = ready.send(started);
        if !ok {
            return;
        }
        rt.block_on(self.capture_context());

        let mut next_flush = Instant::now() + flush_interval;
        let mut next_heartbeat = Instant::now() + heartbeat_interval;
        loop {
            let now = Instant::now();
            let mut deadline = next_flush.min(next_heartbeat);
            if let Some(o) = &self.outage {
                deadline = deadline.min(o.next_try);
            }
            match rx.recv_timeout(deadline.saturating_duration_since(now)) {
                Ok(Msg::Chunk(chunk)) => {
                    // Full chunks are written at once but synced with the next timed flush, so
                    // a fast logger is bound by memory bandwidth, not by fsync latency.
                    let r = rt.block_on(self.write_chunk(*chunk, false));
                    self.report(&r);
                }
                Ok(Msg::Flush(ack)) => {
                    let chunk = self.shared.lock().take_chunk();
                    // An explicit flush tries the store now, even during an outage.
                    if let Some(o) = &mut self.outage {
                        o.next_try = Instant::now();
                    }
                    let r = rt.block_on(self.write_chunk(chunk, true));
                    self.report(&r);
                    let _ = ack.send(r);
                }
                Ok(Msg::Blob { source, ack }) => {
                    let r = rt.block_on(async {
                        match source {
                            BlobSource::File(f) => self.store.put_blob_file(&f).await,
                            BlobSource::Bytes(b) => self.store.put_blob(b).await,
                        }
                    });
                    let _ = ack.send(r);
                }
                Ok(Msg::End { status, at, ack }) => {
                    let chunk = self.shared.lock().take_chunk();
                    let r = rt.block_on(self.end(chunk, status, at));
                    let _ = ack.send(r.map(|()| self.record.clone()));
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Deadlines are checked after every message too: a steady stream of chunks must
            // not starve the timed flush of small rows or the heartbeat.
            let now = Instant::now();
            let heartbeat_due = now >= next_heartbeat;
            if heartbeat_due {
                self.record.heartbeat = Some(now_us());
                self.record_dirty = true;
                next_heartbeat = now + heartbeat_interval;
            }
            let retry_due = self.outage.as_ref().is_some_and(|o| now >= o.next_try);
            if now >= next_flush || retry_due || heartbeat_due {
                let chunk = {
                    let mut b = self.shared.lock();
                    (!b.is_empty()).then(|| b.take_chunk())
                };
                let r = rt.block_on(async {
                    match chunk {
                        Some(chunk) => self.write_chunk(chunk, true).await,
                        None => self.drain(true).await,
                    }
                });
                self.report(&r);
                next_flush = now + flush_interval;
            }
        }
    }

    /// Fails the run on an error that is not an outage (outages are reported by `drain`).
    fn report(&self, r: &Result<()>) {
        match r {
            Ok(()) | Err(Error::StoreUnavailable { .. }) => {}
            Err(e) => self.shared.fail(e.to_string()),
        }
    }

    /// Ends the run: writes what is left, waiting up to `finish_timeout` for an unreachable
    /// store, then the final record.
    async fn end(&mut self, chunk: Chunk, status: RunStatus, at: Option<i64>) -> Result<()> {
        self.enqueue(chunk)?;
        let now = now_us();
        self.record.status = status;
        self.record.ended = Some(at.unwrap_or(now));
        self.record.heartbeat = Some(now);
        self.record_dirty = true;
        let deadline = Instant::now() + self.finish_timeout;
        loop {
            if let Some(o) = &mut self.outage {
                o.next_try = Instant::now();
            }
            match self.drain(true).await {
                Ok(()) => return Ok(()),
                Err(Error::StoreUnavailable { secs, reason, .. }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Writer {
                            run_id: self.record.run_id.clone(),
                            reason: format!(
                                "the store stayed unreachable for {secs} s ({reason}); {} of logged data and the run's end could not be written (RunBuilder::finish_timeout waits longer)",
                                human_bytes(self.backlog_bytes)
                            ),
                        });
                    }
                    let wait = self
                        .outage
                        .as_ref()
                        .map_or(Duration::from_millis(100), |o| {
                            o.next_try - now.min(o.next_try)
                        });
                    tokio::time::sleep(wait.min(deadline - now)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Git state, environment files and the diff, captured once after the run started so
    /// that `start()` stays fast.
    async fn capture_context(&mut self) {
        let dir = self.capture.dir();
        let mut artifacts = Vec::new();
        if self.capture.git
            && let Some(git) = capture::git_state(&dir, self.capture.git_diff)
        {
            self.record.git_commit = git.commit;
            self.record.git_branch = git.branch;
            self.record.git_dirty = git.dirty;
            if let Some(remote) = git.remote {
                self.shared.lock().tags.push(("git.remote".into(), remote));
            }
            if let Some(diff) = git.diff {
                artifacts.push(("git/diff.patch".to_string(), diff));
            }
            self.record_dirty = true;
            let r = self.drain(false).await;
            self.report(&r);
        }
        if self.capture.env_files {
            for (name, content) in capture::env_files(&dir) {
                artifacts.push((format!("env/{name}"), content));
            }
        }
        for (path, content) in artifacts {
            match self.store.put_blob(Bytes::from(content)).await {
                Ok((digest, size)) => self.shared.lock().artifacts.push(Artifact {
                    media_type: guess_media_type(&path).map(str::to_string),
                    path,
                    digest,
                    size,
                    created: now_us(),
                }),
                Err(e) => tracing::warn!(error = %e, %path, "could not capture"),
            }
        }
    }

    /// Writes a chunk as one segment per table it has rows for (through the backlog, so that
    /// an unreachable store delays it instead of losing it). `durable`: also sync it and every
    /// segment written before it.
    async fn write_chunk(&mut self, chunk: Chunk, durable: bool) -> Result<()> {
        self.enqueue(chunk)?;
        self.drain(durable).await
    }

    /// Encodes a chunk into segments at the back of the backlog.
    fn enqueue(&mut self, mut chunk: Chunk) -> Result<()> {
        let seq = chunk.seq;
        let metrics = std::mem::take(&mut chunk.m);
        if !metrics.key.is_empty() {
            let (body, cols) =
                encode_metrics(metrics, &chunk.key_names, std::mem::take(&mut self.ipc_buf))?;
            // Give the vectors back for reuse when nobody else holds them.
            if let Some(cols) = cols {
                self.shared.lock().spare.push(cols);
            }
            self.push_segment(Table::Metrics, seq, body);
        }
        for (table, batch) in chunk_batches(chunk)? {
            let body = segment::encode(table, &[batch])?;
            self.push_segment(table, seq, body);
        }
        Ok(())
    }

    fn push_segment(&mut self, table: Table, seq: u64, body: Bytes) {
        let path = self.store.layout().segment(
            &self.record.project,
            &self.record.run_id,
            table,
            &self.writer_id,
            seq,
            self.store.nested_live(),
        );
        self.backlog_bytes += body.len() as u64;
        self.backlog.push_back((path, body));
    }

    /// Writes the backlog (and the record when it changed), oldest first. During an outage
    /// only when a retry is due; a failed write starts or extends the outage and returns
    /// [`Error::StoreUnavailable`]; everything stays queued for the next try.
    async fn drain(&mut self, durable: bool) -> Result<()> {
        if let Some(o) = &self.outage
            && Instant::now() < o.next_try
        {
            self.publish();
            return Err(self.unavailable());
        }
        while let Some((path, body)) = self.backlog.front() {
            let (path, body) = (path.clone(), body.clone());
            if let Err(e) = self.store.put_unsynced(&path, body).await {
                return Err(self.failed_try(e));
            }
            if let Some((_, body)) = self.backlog.pop_front() {
                self.backlog_bytes -= body.len() as u64;
                // The metrics encoding buffer comes back for the next chunk.
                if let Ok(buf) = body.try_into_mut()
                    && buf.capacity() > self.ipc_buf.capacity()
                {
                    let mut buf = Vec::from(buf);
                    buf.clear();
                    self.ipc_buf = buf;
                }
            }
            self.unsynced.push(path);
        }
        if durable && !self.unsynced.is_empty() {
            if let Err(e) = self.store.sync(self.unsynced.clone()).await {
                return Err(self.failed_try(e));
            }
            self.unsynced.clear();
        }
        if self.record_dirty {
            match self.store.write_run_record(&self.record).await {
                Ok(path) => {
                    self.record_dirty = false;
                    if let Some(old) = self.snapshot.replace(path) {
                        self.superseded.push(old);
                    }
                }
                Err(e) => return Err(self.failed_try(e)),
            }
        }
        if !self.superseded.is_empty() {
            let old = std::mem::take(&mut self.superseded);
            if let Err(e) = self.store.delete_all(old.iter().cloned()).await {
                // Harmless (readers take the newest snapshot); deleted with the next write.
                tracing::warn!(error = %e, "could not delete a superseded run record");
                self.superseded = old;
            }
        }
        self.recovered();
        Ok(())
    }

    /// A write failed: the store is unreachable (until a write goes through again).
    fn failed_try(&mut self, e: Error) -> Error {
        let now = Instant::now();
        let reason = match &e {
            Error::Storage { source, .. } => source.to_string(),
            e => e.to_string(),
        };
        match &mut self.outage {
            Some(o) => {
                o.delay = (o.delay * 2).min(MAX_OUTAGE_BACKOFF);
                o.next_try = now + o.delay;
                o.last_error = reason.clone();
            }
            None => {
                tracing::warn!(
                    run_id = %self.record.run_id,
                    error = %reason,
                    "the store is unreachable: keeping what is logged in memory and retrying"
                );
                let delay = Duration::from_millis(250);
                self.outage = Some(Outage {
                    since: now,
                    next_try: now + delay,
                    delay,
                    last_error: reason.clone(),
                });
            }
        }
        self.publish();
        self.unavailable()
    }

    /// A write went through: the outage (if any) is over.
    fn recovered(&mut self) {
        if let Some(o) = self.outage.take() {
            tracing::info!(
                run_id = %self.record.run_id,
                after_secs = o.since.elapsed().as_secs(),
                "the store is reachable again; everything buffered is written"
            );
        }
        self.publish();
    }

    /// Tells loggers how the store is doing, and whether the outage buffer is full.
    fn publish(&self) {
        {
            let mut h = self.shared.health_mut();
            h.since = self.outage.as_ref().map(|o| o.since);
            h.last_error = self.outage.as_ref().map(|o| o.last_error.clone());
            h.pending_bytes = self.backlog_bytes;
        }
        let full = self.backlog_bytes > self.shared.outage_buffer;
        let _ = self.shared.state.compare_exchange(
            if full { OK } else { FULL },
            if full { FULL } else { OK },
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn unavailable(&self) -> Error {
        let (secs, reason) = self.outage.as_ref().map_or((0, String::new()), |o| {
            (o.since.elapsed().as_secs(), o.last_error.clone())
        });
        Error::StoreUnavailable {
            run_id: self.record.run_id.clone(),
            secs,
            reason,
            pending: human_bytes(self.backlog_bytes),
        }
    }
}

/// The segment-schema batches of a chunk, one per table with rows.
fn chunk_batches(chunk: Chunk) -> Result<Vec<(Table, RecordBatch)>> {
    // Metrics are encoded by `encode_metrics`, which recycles their vectors.
    let mut out = Vec::new();
    let ts_array =
        |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let utf8 = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let opt_utf8 = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let dict = |keys: Vec<i32>, names: &[String]| -> Result<ArrayRef> {
        let values = Arc::new(StringArray::from_iter_values(names.iter()));
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(keys),
            values,
        )?))
    };
    let batch =
        |table: Table, cols: Vec<ArrayRef>| RecordBatch::try_new(table.segment_schema(), cols);

    if !chunk.params.is_empty() {
        let nums: Vec<Option<f64>> = chunk
            .params
            .iter()
            .map(|(_, v)| param_value_num(v))
            .collect();
        let (keys, values): (Vec<String>, Vec<String>) = chunk.params.into_iter().unzip();
        let (ids, names) = dictionary_of(keys);
        out.push((
            Table::Params,
            batch(
                Table::Params,
                vec![
                    dict(ids, &names)?,
                    utf8(values),
                    Arc::new(Float64Array::from(nums)),
                ],
            )?,
        ));
    }
    if !chunk.tags.is_empty() {
        let (keys, values): (Vec<String>, Vec<String>) = chunk.tags.into_iter().unzip();
        let (ids, names) = dictionary_of(keys);
        out.push((
            Table::Tags,
            batch(Table::Tags, vec![dict(ids, &names)?, utf8(values)])?,
        ));
    }
    if !chunk.system.is_empty() {
        let mut keys = Vec::new();
        let mut ts = Vec::new();
        let mut vals = Vec::new();
        for (k, t, v) in chunk.system {
            keys.push(k);
            ts.push(t);
            vals.push(v);
        }
        let (ids, names) = dictionary_of(keys);
        out.push((
            Table::SystemMetrics,
            batch(
                Table::SystemMetrics,
                vec![
                    dict(ids, &names)?,
                    ts_array(ts),
                    Arc::new(Float64Array::from(vals)),
                ],
            )?,
        ));
    }
    if !chunk.artifacts.is_empty() {
        let a = chunk.artifacts;
        out.push((
            Table::Artifacts,
            batch(
                Table::Artifacts,
                vec![
                    utf8(a.iter().map(|x| x.path.clone()).collect()),
                    utf8(a.iter().map(|x| x.digest.clone()).collect()),
                    Arc::new(Int64Array::from_iter_values(
                        a.iter().map(|x| x.size as i64),
                    )),
                    opt_utf8(a.iter().map(|x| x.media_type.clone()).collect()),
                    ts_array(a.iter().map(|x| x.created).collect()),
                ],
            )?,
        ));
    }
    if !chunk.logs.is_empty() {
        let mut ts = Vec::new();
        let mut streams = Vec::new();
        let mut lines = Vec::new();
        for (t, s, l) in chunk.logs {
            ts.push(t);
            streams.push(s);
            lines.push(l);
        }
        out.push((
            Table::Logs,
            batch(Table::Logs, vec![ts_array(ts), utf8(streams), utf8(lines)])?,
        ));
    }
    if !chunk.inputs.is_empty() {
        let i = chunk.inputs;
        out.push((
            Table::Inputs,
            batch(
                Table::Inputs,
                vec![
                    utf8(i.iter().map(|(x, _)| x.name.clone()).collect()),
                    opt_utf8(i.iter().map(|(x, _)| x.uri.clone()).collect()),
                    opt_utf8(i.iter().map(|(x, _)| x.digest.clone()).collect()),
                    opt_utf8(i.iter().map(|(x, _)| x.role.clone()).collect()),
                    ts_array(i.iter().map(|(_, t)| *t).collect()),
                ],
            )?,
        ));
    }
    Ok(out)
}

/// Encodes metric columns as a segment without copying them, then takes the vectors back out
/// of the Arrow arrays (when nothing else holds them) so the logging side can reuse them.
fn encode_metrics(
    cols: MetricCols,
    key_names: &[String],
    mut buf: Vec<u8>,
) -> Result<(Bytes, Option<MetricCols>)> {
    let keys = Int32Array::from(cols.key);
    let step = Int64Array::from(cols.step);
    let ts = TimestampMicrosecondArray::from(cols.ts).with_timezone("UTC");
    let value = Float64Array::from(cols.value);
    {
        let names = Arc::new(StringArray::from_iter_values(key_names.iter()));
        let dict = DictionaryArray::<Int32Type>::try_new(keys.clone(), names)?;
        let batch = RecordBatch::try_new(
            Table::Metrics.segment_schema(),
            vec![
                Arc::new(dict),
                Arc::new(step.clone()),
                Arc::new(ts.clone()),
                Arc::new(value.clone()),
            ],
        )?;
        segment::encode_into(Table::Metrics, &[batch], &mut buf)?;
    }
    fn back<T: arrow::datatypes::ArrowPrimitiveType>(
        a: arrow::array::PrimitiveArray<T>,
    ) -> Option<Vec<T::Native>> {
        let mut v = a.into_parts().1.into_inner().into_vec::<T::Native>().ok()?;
        v.clear();
        Some(v)
    }
    let cols = (|| {
        Some(MetricCols {
            key: back(keys)?,
            step: back(step)?,
            ts: back(ts)?,
            value: back(value)?,
        })
    })();
    Ok((Bytes::from(buf), cols))
}

fn dictionary_of(keys: Vec<String>) -> (Vec<i32>, Vec<String>) {
    let mut index: HashMap<String, i32> = HashMap::new();
    let mut names = Vec::new();
    let ids = keys
        .into_iter()
        .map(|k| {
            *index.entry(k).or_insert_with_key(|k| {
                names.push(k.clone());
                names.len() as i32 - 1
            })
        })
        .collect();
    (ids, names)
}

fn spawn_sampler(shared: Arc<Shared>, every: Duration) -> (JoinHandle<()>, mpsc::Sender<()>) {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("runql-sysmetrics".into())
        .spawn(move || {
            let mut sampler = crate::sysmetrics::Sampler::new();
            loop {
                match stop_rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        let ts = now_us();
                        let samples = sampler.sample();
                        let mut b = shared.lock();
                        b.system
                            .extend(samples.into_iter().map(|(k, v)| (k, ts, v)));
                    }
                    _ => return,
                }
            }
        });
    match handle {
        Ok(h) => (h, stop_tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the system metrics sampler");
            (std::thread::spawn(|| {}), stop_tx)
        }
    }
}
