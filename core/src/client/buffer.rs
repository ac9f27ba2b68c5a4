//! The hot path: the [`Buffer`] logging calls fill under a short lock (metric points as
//! [`MetricCols`], a column vector each), the [`Chunk`]s it hands to the writer, and the
//! [`RunState`] state between the loggers and the writer (the buffer, the channel, the run's
//! state that every logging call checks, what the writer says about the store).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use super::values::{Artifact, Input};
use super::wal::{Delta, Lsn, RunLsns, Wal};
use crate::error::{Error, Result};
use crate::model::{RunId, RunRecord, RunStatus, validate_key};

/// Metric points per chunk handed to the writer.
pub const CHUNK_POINTS: usize = 1 << 20;
/// Chunks waiting for the writer before logging blocks.
pub const MAX_PENDING_CHUNKS: usize = 3;

pub(super) struct RunState {
    pub(super) project: String,
    pub(super) run_id: RunId,
    pub(super) buf: Mutex<Buffer>,
    pub(super) tx: SyncSender<Msg>,
    /// [`OK`], [`FAILED`] or [`FULL`]: read by every logging call.
    pub(super) state: AtomicU8,
    pub(super) error: Mutex<Option<String>>,
    /// What the writer last said about the store, for [`Run::health`](super::Run::health).
    pub(super) health: Mutex<HealthState>,
    pub(super) outage_buffer: u64,
    /// The params and tag keys the run has, to refuse a changed param and to bound how many
    /// a run may have.
    pub(super) known: Mutex<Known>,
}

/// What a run has logged that later calls are checked against.
#[derive(Debug, Default, Clone)]
pub(super) struct Known {
    pub(super) params: HashMap<String, String>,
    pub(super) tags: std::collections::HashSet<String>,
}

impl Known {
    /// Refuses `new_params` new params and `new_tags` new tag keys beyond the run's limits.
    pub(super) fn room_for(
        &self,
        run_id: &RunId,
        new_params: usize,
        new_tags: usize,
    ) -> Result<()> {
        use crate::model::{MAX_PARAMS_PER_RUN, MAX_TAGS_PER_RUN};
        let full = |what: &'static str, have: usize, max: usize| Error::InvalidValue {
            what,
            reason: format!(
                "run {} has {have} distinct {what}s, and a run may have at most {max}: log \
                 values that change per step or per item as metrics or as a table",
                run_id.as_hex()
            ),
        };
        if self.params.len() + new_params > MAX_PARAMS_PER_RUN {
            return Err(full("param", self.params.len(), MAX_PARAMS_PER_RUN));
        }
        if self.tags.len() + new_tags > MAX_TAGS_PER_RUN {
            return Err(full("tag", self.tags.len(), MAX_TAGS_PER_RUN));
        }
        Ok(())
    }
}

impl RunState {
    #[inline]
    pub(super) fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    pub(super) fn check(&self) -> Result<()> {
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

    pub(super) fn health_mut(&self) -> MutexGuard<'_, HealthState> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn writer_error(&self) -> Error {
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

    pub(super) fn fail(&self, reason: String) {
        tracing::error!(run_id = %self.run_id, %reason, "run writer failed");
        let mut e = self.error.lock().unwrap_or_else(|e| e.into_inner());
        e.get_or_insert(reason);
        self.state.store(FAILED, Ordering::Relaxed);
    }

    pub(super) fn send(&self, msg: Msg) -> Result<()> {
        self.tx.send(msg).map_err(|_| self.writer_error())
    }

    /// Hands a full chunk to the writer, outside the lock (this is where backpressure waits).
    #[inline]
    pub(super) fn maybe_hand_off(&self, mut b: MutexGuard<'_, Buffer>) {
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

/// `RunState::state`: logging works.
pub(super) const OK: u8 = 0;
/// `RunState::state`: the writer failed for good.
pub(super) const FAILED: u8 = 1;
/// `RunState::state`: the store is unreachable and the outage buffer is full.
pub(super) const FULL: u8 = 2;

#[derive(Default)]
pub(super) struct HealthState {
    /// When the store became unreachable (None: it is reachable).
    pub(super) since: Option<Instant>,
    pub(super) last_error: Option<String>,
    pub(super) pending_bytes: u64,
}

pub(super) fn human_bytes(n: u64) -> String {
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
pub(super) struct Buffer {
    pub(super) keys: HashMap<Box<str>, i32, foldhash::fast::RandomState>,
    /// Every metric key so far, by id; shared with chunks (copied only when a key is added
    /// while the writer still holds an older list).
    key_names: Arc<Vec<String>>,
    m: MetricCols,
    /// Column vectors the writer gave back: reusing them keeps page faults (which cost more
    /// than everything else on the logging path) out of the hot loop.
    pub(super) spare: Vec<MetricCols>,
    pub(super) params: Vec<(String, String)>,
    pub(super) tags: Vec<(String, String)>,
    pub(super) system: Vec<(String, i64, f64)>,
    pub(super) artifacts: Vec<Artifact>,
    pub(super) logs: Vec<(i64, String, String)>,
    pub(super) inputs: Vec<(Input, i64)>,
    /// Sequence number of the next chunk: chunks are numbered under the lock, so segment
    /// order is logging order even when chunks reach the writer out of order.
    next_seq: u64,
    /// Where every logging call's rows are also written ahead, when the run has a log.
    pub(super) wal: Option<WalLog>,
}

/// A run's side of a write-ahead log: its records name the run, its writer and the chunk.
pub(super) struct WalLog {
    pub(super) wal: Wal,
    pub(super) project: String,
    pub(super) run_id: String,
    pub(super) writer: String,
    pub(super) lsns: Arc<RunLsns>,
}

/// Where a logging call's rows start in the buffer (taken only when the run has a log).
pub(super) struct Mark {
    metrics: usize,
    params: usize,
    tags: usize,
    system: usize,
    artifacts: usize,
    logs: usize,
    inputs: usize,
}

impl Buffer {
    /// Marks where the next logging call's rows start; `None` when the run has no log (the
    /// hot path then pays one branch).
    #[inline]
    pub(super) fn mark(&self) -> Option<Mark> {
        self.wal.as_ref()?;
        Some(Mark {
            metrics: self.m.key.len(),
            params: self.params.len(),
            tags: self.tags.len(),
            system: self.system.len(),
            artifacts: self.artifacts.len(),
            logs: self.logs.len(),
            inputs: self.inputs.len(),
        })
    }

    /// Appends the rows logged since `mark` to the run's log as one record, still under the
    /// buffer's lock, so that the record names the chunk the rows are in. `ack` is kept with
    /// it (a request id, for recovery to recognise a retry). The record's position, when there
    /// is a log.
    #[inline]
    pub(super) fn commit(&mut self, mark: Option<Mark>, ack: Option<[u8; 32]>) -> Option<Lsn> {
        let mark = mark?;
        self.commit_slow(mark, ack)
    }

    #[cold]
    fn commit_slow(&mut self, mark: Mark, ack: Option<[u8; 32]>) -> Option<Lsn> {
        let log = self.wal.as_ref()?;
        let mut keys: Vec<String> = Vec::new();
        let mut local: HashMap<i32, u32> = HashMap::new();
        let mut metrics = Vec::with_capacity(self.m.key.len().saturating_sub(mark.metrics));
        for i in mark.metrics.min(self.m.key.len())..self.m.key.len() {
            let id = self.m.key[i];
            let k = *local.entry(id).or_insert_with(|| {
                keys.push(self.key_names[id as usize].clone());
                (keys.len() - 1) as u32
            });
            metrics.push((k, self.m.step[i], self.m.ts[i], self.m.value[i]));
        }
        let delta = Delta {
            project: log.project.clone(),
            run_id: log.run_id.clone(),
            writer: log.writer.clone(),
            seq: self.next_seq,
            ack,
            keys,
            metrics,
            params: self.params[mark.params..].to_vec(),
            tags: self.tags[mark.tags..].to_vec(),
            system: self.system[mark.system..].to_vec(),
            artifacts: self.artifacts[mark.artifacts..].to_vec(),
            logs: self.logs[mark.logs..].to_vec(),
            inputs: self.inputs[mark.inputs..].to_vec(),
        };
        if delta.metrics.is_empty()
            && delta.params.is_empty()
            && delta.tags.is_empty()
            && delta.system.is_empty()
            && delta.artifacts.is_empty()
            && delta.logs.is_empty()
            && delta.inputs.is_empty()
            && ack.is_none()
        {
            return None;
        }
        let lsn = log.wal.append(&delta.encode());
        log.lsns.appended.store(lsn, Ordering::Release);
        Some(lsn)
    }

    #[cold]
    pub(super) fn add_key(&mut self, key: &str) -> Result<i32> {
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
    pub(super) fn push_metric(&mut self, key: i32, step: i64, ts: i64, value: f64) {
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
    pub(super) fn metric_len(&self) -> usize {
        self.m.key.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.m.key.is_empty()
            && self.params.is_empty()
            && self.tags.is_empty()
            && self.system.is_empty()
            && self.artifacts.is_empty()
            && self.logs.is_empty()
            && self.inputs.is_empty()
    }

    pub(super) fn take_chunk(&mut self) -> Chunk {
        let seq = self.next_seq;
        self.next_seq += 1;
        Chunk {
            seq,
            wal_lsn: self
                .wal
                .as_ref()
                .map_or(0, |w| w.lsns.appended.load(Ordering::Acquire)),
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
pub(super) struct MetricCols {
    pub(super) key: Vec<i32>,
    pub(super) step: Vec<i64>,
    pub(super) ts: Vec<i64>,
    pub(super) value: Vec<f64>,
}

pub(super) struct Chunk {
    pub(super) seq: u64,
    /// The last log record whose rows are in this chunk (0 without a log): the writer writes
    /// the chunk only once that record is durable.
    pub(super) wal_lsn: Lsn,
    pub(super) key_names: Arc<Vec<String>>,
    pub(super) m: MetricCols,
    pub(super) params: Vec<(String, String)>,
    pub(super) tags: Vec<(String, String)>,
    pub(super) system: Vec<(String, i64, f64)>,
    pub(super) artifacts: Vec<Artifact>,
    pub(super) logs: Vec<(i64, String, String)>,
    pub(super) inputs: Vec<(Input, i64)>,
}

pub(super) enum BlobSource {
    File(PathBuf),
    Bytes(Bytes),
}

pub(super) enum Msg {
    Chunk(Box<Chunk>),
    Flush(mpsc::Sender<Result<()>>),
    /// A new name for the run: its record is written again, with what is pending.
    Rename {
        name: String,
        ack: mpsc::Sender<Result<()>>,
    },
    Blob {
        source: BlobSource,
        ack: mpsc::Sender<Result<(String, u64)>>,
    },
    /// Write and sync everything, refresh the record, stop — without ending the run.
    Release {
        ack: mpsc::Sender<Result<()>>,
    },
    End {
        status: RunStatus,
        /// The end time to record, when it is not now.
        at: Option<i64>,
        /// The final record as stored, or why it could not be.
        ack: mpsc::Sender<Result<RunRecord>>,
    },
}
