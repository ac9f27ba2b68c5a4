//! Configuring a run before it starts: [`Project`] (where runs start), [`RunBuilder`] (name,
//! parent, tags, capture, intervals, outage bounds) and resuming an existing run; `start` writes
//! the first record and starts the run's writer thread.

use std::sync::atomic::AtomicU8;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::buffer::{Buffer, HealthState, MAX_PENDING_CHUNKS, OK, RunState, WalLog};
use super::run::{Run, check_len};
use super::sampler::spawn_sampler;
use super::wal::Wal;
use super::writer::Writer;
use crate::capture::{self, Capture};
use crate::error::{Error, Result};
use crate::model::{
    MAX_TAG_VALUE_LEN, RunId, RunRecord, RunStatus, now_us, validate_key, validate_project,
};
use crate::store::Store;

/// Default bound of the memory a run holds while the store is unreachable.
pub const DEFAULT_OUTAGE_BUFFER: u64 = 256 << 20;
/// Default time [`Run::finish`] waits for an unreachable store.
pub const DEFAULT_FINISH_TIMEOUT: Duration = Duration::from_secs(120);

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
            wal: None,
            owned_elsewhere: None,
            source: Source::default(),
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
        let mut known = super::buffer::Known::default();
        for b in &params {
            let keys = crate::store::string_column(b, "key")?;
            let values = crate::store::string_column(b, "value")?;
            for i in 0..b.num_rows() {
                known
                    .params
                    .insert(keys.value(i).to_string(), values.value(i).to_string());
            }
        }
        // And its tag keys: how many a run may have counts those too.
        let tags = self
            .store
            .scan(
                crate::schema::Table::Tags,
                &crate::store::Scan::project(&self.name).runs([record.run_id.as_str()]),
            )
            .await?;
        for b in &tags {
            let keys = crate::store::string_column(b, "key")?;
            for i in 0..b.num_rows() {
                known.tags.insert(keys.value(i).to_string());
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
    resume: Option<(RunRecord, super::buffer::Known)>,
    /// A multi-thread runtime the writer does its I/O on, instead of a runtime of its own.
    runtime: Option<tokio::runtime::Handle>,
    wal: Option<Wal>,
    /// How long the run's client may be silent before readers call it crashed, when this
    /// process only writes for it.
    owned_elsewhere: Option<Duration>,
    /// Who and what code, as another process reported them (a server's client).
    source: Source,
}

/// Who started a run and from what code, when another process reports it (the MLflow
/// client's `mlflow.user` and `mlflow.source.git.*` tags): the `username`, `git_commit`,
/// `git_branch` and `git_dirty` columns of `runs`. What is `None` is left as captured.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub username: Option<String>,
    pub git_commit: Option<String>,
    pub git_branch: Option<String>,
    pub git_dirty: Option<bool>,
}

impl RunBuilder {
    /// Who started the run and from what code, as the process that owns it reported them.
    pub fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

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

    /// Writes everything the run logs ahead into `wal` too, so that a caller can wait until
    /// it is durable ([`Run::wait_durable`]) rather than for the next flush: for a process
    /// that acknowledges writes to others (the tracking server).
    pub fn wal(mut self, wal: Wal) -> Self {
        self.wal = Some(wal);
        self
    }

    /// Says that this process only writes for the run, whose status belongs to a client
    /// elsewhere (an MLflow client logging through the server): the run sends no heartbeats
    /// of its own — it is alive while its client logs — its record tells readers to call it
    /// `crashed` after `silent_after` without a write (instead of the store's default), and
    /// dropping the handle releases it ([`Run::release`]) rather than ending it.
    pub fn owned_elsewhere(mut self, silent_after: Duration) -> Self {
        self.owned_elsewhere = Some(silent_after);
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
                // Deletion is a marker of its own (Store::set_run_deleted), which readers fold
                // into the record they give: written back into the record, it would outlive a
                // restore.
                r.deleted = false;
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
        if let Some(u) = &self.source.username {
            record.username = Some(u.clone());
        }
        if let Some(c) = &self.source.git_commit {
            record.git_commit = Some(c.clone());
        }
        if let Some(b) = &self.source.git_branch {
            record.git_branch = Some(b.clone());
        }
        if let Some(d) = self.source.git_dirty {
            record.git_dirty = Some(d);
        }
        if let Some(silent) = self.owned_elsewhere {
            record.silent_after = Some(silent.as_secs().max(1));
        }
        let writer_id = uuid::Uuid::now_v7().simple().to_string();
        let wal = self.wal.as_ref().map(|w| (w.clone(), w.register()));

        let (tx, rx) = mpsc::sync_channel(MAX_PENDING_CHUNKS);
        let shared = Arc::new(RunState {
            project: self.project.clone(),
            run_id,
            buf: Mutex::new(Buffer::default()),
            tx,
            state: AtomicU8::new(OK),
            error: Mutex::new(None),
            health: Mutex::new(HealthState::default()),
            outage_buffer: self.outage_buffer,
            known: Mutex::new({
                let mut known = self
                    .resume
                    .as_ref()
                    .map(|r| r.1.clone())
                    .unwrap_or_default();
                known.tags.extend(self.tags.iter().map(|(k, _)| k.clone()));
                known
            }),
        });
        {
            let mut b = shared.lock();
            b.wal = wal.as_ref().map(|(w, lsns)| WalLog {
                wal: w.clone(),
                project: self.project.clone(),
                run_id: run_id.as_hex(),
                writer: writer_id.clone(),
                lsns: lsns.clone(),
            });
            let mark = b.mark();
            for (k, v) in &self.tags {
                b.tags.push((k.clone(), v.clone()));
            }
            b.commit(mark, None);
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let started = Box::new(record.clone());
        let writer = Writer::new(
            self.store.clone(),
            shared.clone(),
            record,
            writer_id,
            self.capture.clone(),
            self.finish_timeout,
            wal,
        );
        let flush_interval = self.flush_interval;
        // A run written for a client elsewhere is alive while its client logs: no heartbeats.
        let heartbeat_interval = match self.owned_elsewhere {
            Some(_) => Duration::from_secs(10 * 365 * 24 * 3600),
            None => self.heartbeat_interval,
        };
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
            owned_elsewhere: self.owned_elsewhere.is_some(),
        })
    }
}

impl Run {
    /// Starts configuring a child run in the same project.
    pub fn child(&self) -> RunBuilder {
        self.store().project(self.project()).run().parent(self)
    }
}
