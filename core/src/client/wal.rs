//! A write-ahead log for a process that acknowledges what it logs: the tracking server answers
//! a client only once what it logged is on disk, and a run's segments (written every second)
//! are not that. A run given a [`Wal`] ([`RunBuilder::wal`](super::RunBuilder::wal)) appends
//! what each logging call put into its buffer as one record — under the buffer's lock, so the
//! record names the exact segment the rows will be written to (the run's writer id and the
//! chunk's sequence number) — and [`Wal::wait`] returns once the record is durable. Records
//! that arrive together share one `fdatasync` (group commit): a thread writes whatever is
//! pending, syncs, and wakes every waiter it covered.
//!
//! Recovery after a crash ([`Wal::recover`]) rebuilds, from the records of logs whose process
//! died, every segment that is missing from the store under the name it would have had, and
//! writes it once (a segment already there, or consumed by a compaction, is skipped): nothing
//! acknowledged is lost and nothing is written twice. A run's writer never writes a segment
//! before the records of its rows are durable, so a segment in the store always has its
//! records too.
//!
//! The log is a local folder (`<dir>/<id>.lock` held locked while the process lives,
//! `<dir>/<id>-<n>.wal` files of framed records). A file is deleted once every run that logged
//! into it has written and synced those rows as segments; a new file is started every 64 MiB
//! or 30 s. It is not part of the store's format: the store stays readable without it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::buffer::{Chunk, MetricCols};
use super::encode::{chunk_batches, encode_metrics};
use super::values::{Artifact, Input};
use crate::error::{Error, Result};
use crate::schema::Table;
use crate::store::{Store, segment};

/// The first bytes of every log file.
const MAGIC: &[u8] = b"RUNQLWAL1\n";
/// A new file is started past this size…
const ROTATE_BYTES: u64 = 64 << 20;
/// …or this age.
const ROTATE_AGE: Duration = Duration::from_secs(30);

/// A file grows in zeroed steps of this size, synced once each, so that the sync of each
/// group commit writes data only: a file whose size changes makes every `fdatasync` commit
/// the file system's journal too (most of the server's CPU per acknowledged point, measured).
/// A record is never empty, so recovery stops at the first zero length.
const GROW_BYTES: u64 = 1 << 20;

/// A position in the log: the number of records appended before and including one.
pub type Lsn = u64;

/// What a run logged into the log and how much of it it has synced as segments.
#[derive(Debug, Default)]
pub(super) struct RunLsns {
    /// The last record this run appended.
    pub(super) appended: AtomicU64,
    /// Every record up to this one is in synced segments.
    pub(super) synced: AtomicU64,
}

/// The log of one process. Cheap to clone; the last clone stops its thread.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    id: String,
    /// Held locked for the life of the process: a log whose lock can be taken is a dead one's.
    _lock: File,
    pending: Mutex<Pending>,
    /// Wakes the log's thread.
    work: Condvar,
    durable: Mutex<Durable>,
    /// Wakes threads waiting for a record to be durable.
    synced: Condvar,
    /// The same, for async waiters.
    durable_tx: tokio::sync::watch::Sender<Lsn>,
    runs: Mutex<Vec<Weak<RunLsns>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// The last record appended.
    last: Lsn,
    stop: bool,
}

#[derive(Default)]
struct Durable {
    lsn: Lsn,
    /// Why the log cannot be written (a full disk): every later wait fails with it.
    failed: Option<String>,
}

/// What [`Wal::recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Log files read (and then deleted).
    pub files: usize,
    /// Records read from them.
    pub records: usize,
    /// Segments written because they were missing from the store.
    pub segments: usize,
    /// The acknowledgement ids of the records read (see [`Run::log_batch`](super::Run::log_batch)):
    /// requests that were applied, which a client retrying must not apply again.
    pub acks: Vec<[u8; 32]>,
}

impl Wal {
    /// Opens a new log in `dir` (created if missing) for this process, and lists the logs of
    /// processes that died without removing theirs, for [`Wal::recover`].
    pub fn open(dir: &Path) -> Result<(Wal, Vec<PathBuf>)> {
        let io = |what: &str, e: std::io::Error| Error::Storage {
            path: dir.display().to_string(),
            source: object_store::Error::Generic {
                store: "wal",
                source: format!("{what}: {e}").into(),
            },
        };
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the log folder", e))?;
        let dead = dead_logs(dir).map_err(|e| io("cannot list the log folder", e))?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let lock = File::create(dir.join(format!("{id}.lock")))
            .map_err(|e| io("cannot create the log's lock", e))?;
        lock.lock().map_err(|e| io("cannot lock the log", e))?;
        let (durable_tx, _) = tokio::sync::watch::channel(0);
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            id,
            _lock: lock,
            pending: Mutex::default(),
            work: Condvar::new(),
            durable: Mutex::default(),
            synced: Condvar::new(),
            durable_tx,
            runs: Mutex::default(),
            thread: Mutex::default(),
        });
        let file =
            LogFile::create(dir, &inner.id, 0).map_err(|e| io("cannot start a log file", e))?;
        file.sync_dir()
            .map_err(|e| io("cannot sync the log folder", e))?;
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("runql-wal".into())
            .spawn(move || log_thread(weak, file))
            .map_err(|e| Error::Internal(format!("cannot start the log's thread: {e}")))?;
        if let Ok(mut t) = inner.thread.lock() {
            *t = Some(handle);
        }
        Ok((Wal { inner }, dead))
    }

    /// Appends one record; it is durable once [`Wal::wait`] for its position returns.
    pub(super) fn append(&self, record: &[u8]) -> Lsn {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.buf
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        p.buf
            .extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        p.buf.extend_from_slice(record);
        p.last += 1;
        let lsn = p.last;
        drop(p);
        self.inner.work.notify_one();
        lsn
    }

    /// Registers a run that logs into this log (its records keep their file until it synced).
    pub(super) fn register(&self) -> Arc<RunLsns> {
        let lsns = Arc::new(RunLsns::default());
        if let Ok(mut runs) = self.inner.runs.lock() {
            runs.retain(|w| w.strong_count() > 0);
            runs.push(Arc::downgrade(&lsns));
        }
        lsns
    }

    /// Waits until every record up to `lsn` is durable.
    pub fn wait(&self, lsn: Lsn) -> Result<()> {
        let mut d = self.inner.durable.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(e) = &d.failed {
                return Err(wal_failed(e));
            }
            if d.lsn >= lsn {
                return Ok(());
            }
            d = self.inner.synced.wait(d).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// [`Wal::wait`] for async code.
    pub async fn wait_async(&self, lsn: Lsn) -> Result<()> {
        let mut rx = self.inner.durable_tx.subscribe();
        let _ = rx.wait_for(|d| *d >= lsn || *d == Lsn::MAX).await;
        let d = self.inner.durable.lock().unwrap_or_else(|e| e.into_inner());
        match &d.failed {
            Some(e) => Err(wal_failed(e)),
            None => Ok(()),
        }
    }

    /// Writes what is pending, stops the log's thread and removes the log: for a process that
    /// made every run's rows durable in the store first (the server at shutdown, after
    /// releasing its runs). A log that is not closed is recovered by the next process.
    pub fn close(self) -> Result<()> {
        {
            let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.stop = true;
        }
        self.inner.work.notify_one();
        let handle = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        let d = self.inner.durable.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &d.failed {
            return Err(wal_failed(e));
        }
        drop(d);
        let all_synced = self.unsynced_runs() == 0;
        if all_synced {
            remove_log(&self.inner.dir, &self.inner.id);
        }
        Ok(())
    }

    /// Runs registered that have not synced everything they logged.
    fn unsynced_runs(&self) -> usize {
        let runs = self.inner.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.iter()
            .filter_map(Weak::upgrade)
            .filter(|r| r.synced.load(Ordering::Acquire) < r.appended.load(Ordering::Acquire))
            .count()
    }

    /// Rebuilds, from dead processes' logs (see [`Wal::open`]), every segment missing from
    /// `store`, then deletes those logs. Idempotent: a crash during recovery leaves the logs,
    /// and the next recovery skips what this one wrote.
    pub async fn recover(store: &Store, logs: &[PathBuf]) -> Result<Recovered> {
        Wal::recover_into(store, logs, None).await
    }

    /// [`Wal::recover`] for a process that goes on acknowledging: the request ids of the dead
    /// logs are written into this log, durably, before those logs are deleted. A client may
    /// retry a request whose answer a crash cut off only after the next process crashed too;
    /// the one after that must still recognise it.
    pub async fn adopt(&self, store: &Store, logs: &[PathBuf]) -> Result<Recovered> {
        Wal::recover_into(store, logs, Some(self)).await
    }

    /// Appends request ids alone (no rows), and waits until they are durable.
    async fn carry_acks(&self, acks: &[[u8; 32]]) -> Result<()> {
        let mut last = None;
        for ack in acks {
            let d = Delta {
                project: String::new(),
                run_id: String::new(),
                writer: String::new(),
                seq: 0,
                ack: Some(*ack),
                keys: Vec::new(),
                metrics: Vec::new(),
                params: Vec::new(),
                tags: Vec::new(),
                system: Vec::new(),
                artifacts: Vec::new(),
                logs: Vec::new(),
                inputs: Vec::new(),
            };
            last = Some(self.append(&d.encode()));
        }
        match last {
            Some(lsn) => self.wait_async(lsn).await,
            None => Ok(()),
        }
    }

    async fn recover_into(
        store: &Store,
        logs: &[PathBuf],
        carry: Option<&Wal>,
    ) -> Result<Recovered> {
        let mut out = Recovered::default();
        // Records by the segment they belong to, in log order.
        let mut chunks: BTreeMap<(String, String, String, u64), Vec<Delta>> = BTreeMap::new();
        for log in logs {
            for path in files_of(log)? {
                let bytes = std::fs::read(&path).map_err(|e| Error::ReadFile {
                    path: path.clone(),
                    source: e,
                })?;
                out.files += 1;
                for record in frames(&bytes) {
                    let d = Delta::decode(record)
                        .map_err(|reason| Error::corrupt(path.display(), reason))?;
                    out.records += 1;
                    if let Some(ack) = d.ack {
                        out.acks.push(ack);
                    }
                    if d.project.is_empty() {
                        continue; // request ids carried over from an older log
                    }
                    let key = (d.project.clone(), d.run_id.clone(), d.writer.clone(), d.seq);
                    chunks.entry(key).or_default().push(d);
                }
            }
        }
        let mut manifests = BTreeMap::new();
        for ((project, run_id, writer, seq), deltas) in chunks {
            if !manifests.contains_key(&project) {
                manifests.insert(project.clone(), store.read_manifest(&project).await?);
            }
            let consumed = manifests[&project]
                .claims(&run_id)
                .any(|c| c.covers(&writer, seq));
            if consumed {
                continue;
            }
            for (table, body) in segments_of(seq, deltas)? {
                let path = store.layout().segment(
                    &project,
                    &run_id,
                    table,
                    &writer,
                    seq,
                    store.nested_live(),
                );
                if store.put_if_absent(&path, body.clone()).await? {
                    out.segments += 1;
                    continue;
                }
                // Present. A segment is written before it is synced (its records are durable
                // here meanwhile), so a power loss can leave it empty or torn under its own
                // name: one holding fewer rows than its records is written again, whole.
                let rows = |bytes: bytes::Bytes| -> Result<usize> {
                    Ok(crate::store::segment::decode_raw(bytes, &path)?
                        .iter()
                        .map(|b| b.num_rows())
                        .sum())
                };
                let stored = match store.get_opt(&path).await? {
                    Some(bytes) => rows(bytes)?,
                    None => 0,
                };
                if stored < rows(body.clone())? {
                    tracing::warn!(%path, stored, "rewriting a segment a power loss left incomplete");
                    store.put(&path, body).await?;
                    out.segments += 1;
                }
            }
        }
        if let Some(wal) = carry {
            wal.carry_acks(&out.acks).await?;
        }
        for log in logs {
            let (dir, id) = split_log(log);
            remove_log(dir, id);
        }
        Ok(out)
    }
}

fn wal_failed(e: &str) -> Error {
    Error::StoreUnavailable {
        run_id: String::new(),
        secs: 0,
        reason: format!("the write-ahead log cannot be written: {e}"),
        pending: "what was logged since".into(),
    }
}

/// One log file being appended to.
struct LogFile {
    path: PathBuf,
    file: File,
    bytes: u64,
    /// The file's size: `bytes` of records, then zeros.
    allocated: u64,
    opened: Instant,
    n: u64,
    /// The last record written to it.
    last: Lsn,
}

impl LogFile {
    fn create(dir: &Path, id: &str, n: u64) -> std::io::Result<LogFile> {
        let path = dir.join(format!("{id}-{n:06}.wal"));
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let mut log = LogFile {
            path,
            file,
            bytes: 0,
            allocated: 0,
            opened: Instant::now(),
            n,
            last: 0,
        };
        log.append(MAGIC)?;
        Ok(log)
    }

    /// Writes `buf` after the records and makes it durable, growing the file first when it
    /// would not fit.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let end = self.bytes + buf.len() as u64;
        if end > self.allocated {
            let size = end.div_ceil(GROW_BYTES) * GROW_BYTES;
            self.file.seek(SeekFrom::Start(self.allocated))?;
            let zeros = vec![0u8; 64 << 10];
            let mut at = self.allocated;
            while at < size {
                let n = (size - at).min(zeros.len() as u64) as usize;
                self.file.write_all(&zeros[..n])?;
                at += n as u64;
            }
            self.file.sync_all()?;
            self.allocated = size;
        }
        self.file.seek(SeekFrom::Start(self.bytes))?;
        self.file.write_all(buf)?;
        self.file.sync_data()?;
        self.bytes = end;
        Ok(())
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        match self.path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }
}

/// The log's thread: writes what is pending, syncs, publishes how far the log is durable, and
/// rotates and deletes files.
fn log_thread(inner: Weak<Inner>, mut file: LogFile) {
    // Files full or old, not deleted yet: (path, last record in it).
    let mut sealed: Vec<(PathBuf, Lsn)> = Vec::new();
    loop {
        let Some(me) = inner.upgrade() else { return };
        let (buf, last, stop) = {
            let mut p = me.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.buf.is_empty() && !p.stop {
                p = me
                    .work
                    .wait_timeout(p, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            (std::mem::take(&mut p.buf), p.last, p.stop)
        };
        if !buf.is_empty() {
            let written = file.append(&buf);
            let mut d = me.durable.lock().unwrap_or_else(|e| e.into_inner());
            match written {
                Ok(()) => {
                    file.last = last;
                    d.lsn = last;
                    me.durable_tx.send_replace(last);
                }
                Err(e) => {
                    tracing::error!(error = %e, path = %file.path.display(), "the write-ahead log cannot be written");
                    d.failed.get_or_insert(e.to_string());
                    me.durable_tx.send_replace(Lsn::MAX);
                }
            }
            drop(d);
            me.synced.notify_all();
        }
        if stop {
            return;
        }
        if file.bytes >= ROTATE_BYTES || (file.opened.elapsed() >= ROTATE_AGE && file.last > 0) {
            match LogFile::create(&me.dir, &me.id, file.n + 1) {
                Ok(next) => {
                    let old = std::mem::replace(&mut file, next);
                    let _ = file.sync_dir();
                    sealed.push((old.path, old.last));
                }
                Err(e) => tracing::warn!(error = %e, "cannot start a new write-ahead log file"),
            }
        }
        // A sealed file goes once every run has synced what it logged up to its last record.
        let runs: Vec<Arc<RunLsns>> = me
            .runs
            .lock()
            .map(|r| r.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        sealed.retain(|(path, last)| {
            let done = runs.iter().all(|r| {
                let appended = r.appended.load(Ordering::Acquire);
                r.synced.load(Ordering::Acquire) >= appended.min(*last)
            });
            if done {
                let _ = std::fs::remove_file(path);
            }
            !done
        });
    }
}

/// The records of a log file's bytes, up to a torn or damaged tail or the zeros the file was
/// grown by.
fn frames(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes.strip_prefix(MAGIC).unwrap_or(&[]);
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if len == 0 {
            return None;
        }
        let crc = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?);
        let record = rest.get(8..8 + len)?;
        if crc32fast::hash(record) != crc {
            return None;
        }
        rest = &rest[8 + len..];
        Some(record)
    })
}

/// Logs in `dir` whose process is gone: their lock file can be locked.
fn dead_logs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().and_then(|x| x.to_str()) != Some("lock") {
            continue;
        }
        let Ok(f) = File::open(&path) else { continue };
        if f.try_lock().is_ok() {
            // Released with `f`: the next process sees it dead too, until it is recovered.
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// (folder, id) of a log's lock file.
fn split_log(lock: &Path) -> (&Path, &str) {
    let dir = lock.parent().unwrap_or(Path::new("."));
    let id = lock
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    (dir, id)
}

/// The files of the log whose lock file is `lock`, in order.
fn files_of(lock: &Path) -> Result<Vec<PathBuf>> {
    let (dir, id) = split_log(lock);
    let prefix = format!("{id}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::ReadFile {
            path: dir.to_path_buf(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|x| x.to_str()) == Some("wal")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Removes a log's files and then its lock.
fn remove_log(dir: &Path, id: &str) {
    if let Ok(files) = files_of(&dir.join(format!("{id}.lock"))) {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    }
    let _ = std::fs::remove_file(dir.join(format!("{id}.lock")));
}

/// What one logging call put into a run's buffer, as a log record names it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Delta {
    pub(super) project: String,
    pub(super) run_id: String,
    pub(super) writer: String,
    pub(super) seq: u64,
    pub(super) ack: Option<[u8; 32]>,
    /// Metric keys of `metrics`, by index.
    pub(super) keys: Vec<String>,
    /// (key index, step, ts µs, value).
    pub(super) metrics: Vec<(u32, i64, i64, f64)>,
    pub(super) params: Vec<(String, String)>,
    pub(super) tags: Vec<(String, String)>,
    pub(super) system: Vec<(String, i64, f64)>,
    pub(super) artifacts: Vec<Artifact>,
    pub(super) logs: Vec<(i64, String, String)>,
    pub(super) inputs: Vec<(Input, i64)>,
}

const RECORD_VERSION: u8 = 1;

impl Delta {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + self.metrics.len() * 28));
        w.u8(RECORD_VERSION);
        w.str(&self.project);
        w.str(&self.run_id);
        w.str(&self.writer);
        w.u64(self.seq);
        match &self.ack {
            Some(a) => {
                w.u8(1);
                w.0.extend_from_slice(a);
            }
            None => w.u8(0),
        }
        w.u32(self.keys.len() as u32);
        for k in &self.keys {
            w.str(k);
        }
        w.u32(self.metrics.len() as u32);
        for (k, step, ts, v) in &self.metrics {
            w.u32(*k);
            w.u64(*step as u64);
            w.u64(*ts as u64);
            w.u64(v.to_bits());
        }
        for list in [&self.params, &self.tags] {
            w.u32(list.len() as u32);
            for (k, v) in list {
                w.str(k);
                w.str(v);
            }
        }
        w.u32(self.system.len() as u32);
        for (k, ts, v) in &self.system {
            w.str(k);
            w.u64(*ts as u64);
            w.u64(v.to_bits());
        }
        w.u32(self.artifacts.len() as u32);
        for a in &self.artifacts {
            w.str(&a.path);
            w.str(&a.digest);
            w.u64(a.size);
            w.opt(a.media_type.as_deref());
            w.u64(a.created as u64);
        }
        w.u32(self.logs.len() as u32);
        for (ts, stream, line) in &self.logs {
            w.u64(*ts as u64);
            w.str(stream);
            w.str(line);
        }
        w.u32(self.inputs.len() as u32);
        for (i, ts) in &self.inputs {
            w.str(&i.name);
            w.opt(i.uri.as_deref());
            w.opt(i.digest.as_deref());
            w.opt(i.role.as_deref());
            w.u64(*ts as u64);
        }
        w.0
    }

    pub(super) fn decode(bytes: &[u8]) -> std::result::Result<Delta, String> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(format!(
                "a log record of version {version}, this runql reads {RECORD_VERSION}"
            ));
        }
        let mut d = Delta {
            project: r.str()?,
            run_id: r.str()?,
            writer: r.str()?,
            seq: r.u64()?,
            ..Delta::default()
        };
        if r.u8()? == 1 {
            d.ack = Some(r.take(32)?.try_into().map_err(|_| "short ack")?);
        }
        for _ in 0..r.u32()? {
            d.keys.push(r.str()?);
        }
        for _ in 0..r.u32()? {
            let k = r.u32()?;
            if k as usize >= d.keys.len() {
                return Err(format!("metric key {k} out of range"));
            }
            d.metrics.push((
                k,
                r.u64()? as i64,
                r.u64()? as i64,
                f64::from_bits(r.u64()?),
            ));
        }
        for list in [&mut d.params, &mut d.tags] {
            for _ in 0..r.u32()? {
                list.push((r.str()?, r.str()?));
            }
        }
        for _ in 0..r.u32()? {
            d.system
                .push((r.str()?, r.u64()? as i64, f64::from_bits(r.u64()?)));
        }
        for _ in 0..r.u32()? {
            d.artifacts.push(Artifact {
                path: r.str()?,
                digest: r.str()?,
                size: r.u64()?,
                media_type: r.opt()?,
                created: r.u64()? as i64,
            });
        }
        for _ in 0..r.u32()? {
            d.logs.push((r.u64()? as i64, r.str()?, r.str()?));
        }
        for _ in 0..r.u32()? {
            let input = Input {
                name: r.str()?,
                uri: r.opt()?,
                digest: r.opt()?,
                role: r.opt()?,
            };
            d.inputs.push((input, r.u64()? as i64));
        }
        if !r.0.is_empty() {
            return Err(format!("{} bytes after the record", r.0.len()));
        }
        Ok(d)
    }
}

/// The segments of chunk `seq` rebuilt from its records, as the run's writer would have
/// encoded them.
fn segments_of(seq: u64, deltas: Vec<Delta>) -> Result<Vec<(Table, bytes::Bytes)>> {
    let mut key_names: Vec<String> = Vec::new();
    let mut ids: std::collections::HashMap<String, i32> = Default::default();
    let mut chunk = Chunk {
        seq,
        key_names: Arc::new(Vec::new()),
        m: MetricCols::default(),
        params: Vec::new(),
        tags: Vec::new(),
        system: Vec::new(),
        artifacts: Vec::new(),
        logs: Vec::new(),
        inputs: Vec::new(),
        wal_lsn: 0,
    };
    for d in deltas {
        for (k, step, ts, v) in d.metrics {
            let name = &d.keys[k as usize];
            let id = match ids.get(name) {
                Some(&id) => id,
                None => {
                    let id = key_names.len() as i32;
                    key_names.push(name.clone());
                    ids.insert(name.clone(), id);
                    id
                }
            };
            chunk.m.key.push(id);
            chunk.m.step.push(step);
            chunk.m.ts.push(ts);
            chunk.m.value.push(v);
        }
        chunk.params.extend(d.params);
        chunk.tags.extend(d.tags);
        chunk.system.extend(d.system);
        chunk.artifacts.extend(d.artifacts);
        chunk.logs.extend(d.logs);
        chunk.inputs.extend(d.inputs);
    }
    chunk.key_names = Arc::new(key_names);
    let mut out = Vec::new();
    let metrics = std::mem::take(&mut chunk.m);
    if !metrics.key.is_empty() {
        let (body, _) = encode_metrics(metrics, &chunk.key_names, Vec::new())?;
        out.push((Table::Metrics, body));
    }
    for (table, batch) in chunk_batches(chunk)? {
        out.push((table, segment::encode(table, &[batch])?));
    }
    Ok(out)
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("the record ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> std::result::Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    fn opt(&mut self) -> std::result::Result<Option<String>, String> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let d = Delta {
            project: "p".into(),
            run_id: "r".into(),
            writer: "w".into(),
            seq: 7,
            ack: Some([9; 32]),
            keys: vec!["loss".into(), "acc".into()],
            metrics: vec![(0, -1, i64::MIN, f64::NAN), (1, i64::MAX, 5, -0.0)],
            params: vec![("lr".into(), "0.1".into())],
            tags: vec![("t".into(), "é".into())],
            system: vec![("cpu".into(), 1, 2.5)],
            artifacts: vec![Artifact {
                path: "a.txt".into(),
                digest: "d".into(),
                size: 3,
                media_type: None,
                created: 4,
            }],
            logs: vec![(1, "stdout".into(), "hi".into())],
            inputs: vec![(Input::new("data").role("train"), 3)],
        };
        let bytes = d.encode();
        let back = Delta::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.metrics[0].3.to_bits(), f64::NAN.to_bits());
        assert_eq!(back.metrics[1].3.to_bits(), (-0.0f64).to_bits());
        let mut same = back.clone();
        same.metrics = d.metrics.clone();
        assert_eq!(format!("{same:?}"), format!("{d:?}"));
        // Two framed records, the second torn: only the first is read.
        let mut file = MAGIC.to_vec();
        for _ in 0..2 {
            file.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
            file.extend_from_slice(&bytes);
        }
        file.truncate(file.len() - 3);
        assert_eq!(frames(&file).count(), 1);
        // A flipped bit ends the log there too.
        let mut bad = file.clone();
        bad[MAGIC.len() + 8] ^= 1;
        assert_eq!(frames(&bad).count(), 0);
        assert!(Delta::decode(&bytes[..bytes.len() - 1]).is_err());
        // The zeros a file was grown by end it: one whole record, then zeros.
        let mut grown = file[..MAGIC.len() + 8 + bytes.len()].to_vec();
        grown.resize(GROW_BYTES as usize, 0);
        assert_eq!(frames(&grown).count(), 1);
    }

    #[test]
    fn a_log_file_grows_in_zeroed_steps_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFile::create(dir.path(), "t", 1).unwrap();
        let record = vec![7u8; 300 << 10];
        let mut frame = (record.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32fast::hash(&record).to_le_bytes());
        frame.extend_from_slice(&record);
        for _ in 0..5 {
            log.append(&frame).unwrap();
        }
        let bytes = std::fs::read(&log.path).unwrap();
        // 10 + 5 × (8 + 300 KiB) bytes of records fit in two steps.
        assert_eq!(bytes.len() as u64, 2 * GROW_BYTES);
        assert_eq!(log.bytes, (MAGIC.len() + 5 * frame.len()) as u64);
        assert_eq!(frames(&bytes).count(), 5);
        assert!(frames(&bytes).all(|r| r == record.as_slice()));
    }
}
