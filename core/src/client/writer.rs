//! The writer thread of a run: it writes the chunks the loggers hand over as segments, the
//! run's record (start, context, heartbeats, end) and artifact blobs, and rides out store
//! outages: encoded segments wait in a backlog, retried with backoff ([`Outage`]), while the
//! writer keeps serving loggers and publishes how it is doing ([`RunHealth`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::buffer::{BlobSource, Chunk, FULL, Msg, OK, RunState, human_bytes};
use super::encode::{chunk_batches, encode_metrics};
use super::values::Artifact;
use super::wal::{Lsn, RunLsns, Wal};
use crate::capture::{self, Capture};
use crate::error::{Error, Result};
use crate::model::{RunRecord, RunStatus, guess_media_type, now_us};
use crate::schema::Table;
use crate::store::{Store, segment};

/// Longest wait between two tries to reach an unreachable store.
const MAX_OUTAGE_BACKOFF: Duration = Duration::from_secs(5);

pub(super) struct Writer {
    store: Store,
    shared: Arc<RunState>,
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
    /// The run's write-ahead log, and how far it has synced what it logged into it.
    wal: Option<(Wal, Arc<RunLsns>)>,
    /// The last log record whose rows are in a segment written (not necessarily synced).
    enqueued_lsn: Lsn,
}

/// Where the writer thread runs its store I/O.
enum WriterRuntime {
    /// A current-thread runtime of its own.
    Own(tokio::runtime::Runtime),
    /// A multi-thread runtime of the process (see
    /// [`RunBuilder::runtime`](super::RunBuilder::runtime)).
    Process(tokio::runtime::Handle),
}

impl WriterRuntime {
    fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        match self {
            WriterRuntime::Own(rt) => rt.block_on(fut),
            WriterRuntime::Process(handle) => handle.block_on(fut),
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
    /// A writer for the run of `record`, which `start` has not written yet.
    pub(super) fn new(
        store: Store,
        shared: Arc<RunState>,
        record: RunRecord,
        writer_id: String,
        capture: Capture,
        finish_timeout: Duration,
        wal: Option<(Wal, Arc<RunLsns>)>,
    ) -> Writer {
        Writer {
            store,
            shared,
            record,
            writer_id,
            wal,
            enqueued_lsn: 0,
            snapshot: None,
            capture,
            unsynced: Vec::new(),
            ipc_buf: Vec::new(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            outage: None,
            record_dirty: false,
            superseded: Vec::new(),
            finish_timeout,
        }
    }

    pub(super) fn run(
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
            Some(handle) => WriterRuntime::Process(handle),
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
                Ok(Msg::Rename { name, ack }) => {
                    self.record.name = Some(name);
                    self.record_dirty = true;
                    let chunk = self.shared.lock().take_chunk();
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
                Ok(Msg::Release { ack }) => {
                    let chunk = self.shared.lock().take_chunk();
                    let r = rt.block_on(self.release(chunk));
                    let _ = ack.send(r);
                    return;
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

    /// Lets go of the run without ending it: writes and syncs what is left (and the record, if
    /// it changed), waiting up to `finish_timeout` for an unreachable store. The heartbeat is
    /// not refreshed: letting go is not a sign of life from the run's owner, whose silence is
    /// what readers judge it by.
    async fn release(&mut self, chunk: Chunk) -> Result<()> {
        self.enqueue(chunk)?;
        let deadline = Instant::now() + self.finish_timeout;
        loop {
            if let Some(o) = &mut self.outage {
                o.next_try = Instant::now();
            }
            match self.drain(true).await {
                Err(Error::StoreUnavailable { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r => return r,
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
        if let Some((wal, _)) = &self.wal
            && chunk.wal_lsn > 0
        {
            // A segment in the store must have its log records: recovery, seeing the
            // segment, skips them. (A log that cannot be written fails the requests waiting
            // on it; the rows are written all the same.)
            let _ = wal.wait(chunk.wal_lsn);
            self.enqueued_lsn = self.enqueued_lsn.max(chunk.wal_lsn);
        }
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
        if durable && let Some((_, lsns)) = &self.wal {
            // Everything enqueued is written and synced: its log records may go.
            lsns.synced
                .fetch_max(self.enqueued_lsn, std::sync::atomic::Ordering::AcqRel);
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
