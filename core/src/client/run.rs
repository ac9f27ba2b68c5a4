//! The run handle: [`Run`] and its logging methods (metrics, params, tags, inputs, lines,
//! artifacts), flushing, health and ending; [`Input`] and [`Artifact`], what it records. Every
//! logging call takes the run's buffer lock briefly and never waits on I/O.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::buffer::{BlobSource, CHUNK_POINTS, FAILED, Msg, RunState};
use super::values::{Artifact, Batch, Input, RunHealth};
use crate::error::{Error, Result};
use crate::model::{
    MAX_PARAM_VALUE_LEN, MAX_TAG_VALUE_LEN, RunId, RunRecord, RunStatus, TAG_TOMBSTONE,
    guess_media_type, normalize_artifact_path, now_us, validate_key,
};
use crate::store::Store;

/// The tag that holds a run's notes (the same key MLflow uses).
pub const NOTE_TAG: &str = "mlflow.note.content";

/// A live run. Log to it from any thread (`&self` methods); finish it with [`Run::finish`].
pub struct Run {
    pub(super) shared: Arc<RunState>,
    pub(super) store: Store,
    /// The record as `start` stored it (boxed: a run handle stays small).
    pub(super) started: Box<RunRecord>,
    pub(super) writer: Option<JoinHandle<()>>,
    pub(super) sampler: Option<(JoinHandle<()>, mpsc::Sender<()>)>,
    pub(super) ended: bool,
    /// Dropping the handle releases the run instead of ending it (see
    /// [`RunBuilder::owned_elsewhere`](super::RunBuilder::owned_elsewhere)).
    pub(super) owned_elsewhere: bool,
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

    /// The run's record as [`RunBuilder::start`](super::RunBuilder::start) stored it (status `running`).
    pub fn started_record(&self) -> &RunRecord {
        &self.started
    }

    /// The store the run writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Logs one metric point at `step`, timestamped now. Never waits on I/O (it waits only when
    /// the writer is [`MAX_PENDING_CHUNKS`](super::MAX_PENDING_CHUNKS) chunks behind). Fails
    /// only for an invalid key or when the background writer has failed.
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
        let mark = b.mark();
        b.push_metric(id, step, ts_us, value);
        b.commit(mark, None);
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
        let mark = b.mark();
        b.push_metric(key.0, step, ts, value);
        b.commit(mark, None);
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
        let mark = b.mark();
        let mut pushed = Ok(());
        for (key, value) in values {
            let id = match b.keys.get(key) {
                Some(&id) => id,
                None => match b.add_key(key) {
                    Ok(id) => id,
                    Err(e) => {
                        pushed = Err(e);
                        break;
                    }
                },
            };
            b.push_metric(id, step, ts, value);
        }
        // What was pushed before a bad key stays logged, and so in the log too.
        b.commit(mark, None);
        self.shared.maybe_hand_off(b);
        pushed
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
            let mark = b.mark();
            let mut pushed = Ok(());
            for (key, step, value, ts) in points.by_ref().take(CHUNK_POINTS / 4) {
                let id = match b.keys.get(key) {
                    Some(&id) => id,
                    None => match b.add_key(key) {
                        Ok(id) => id,
                        Err(e) => {
                            pushed = Err(e);
                            break;
                        }
                    },
                };
                b.push_metric(id, step, ts, value);
            }
            b.commit(mark, None);
            self.shared.maybe_hand_off(b);
            pushed?;
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
            let mark = b.mark();
            for &(step, value) in chunk {
                b.push_metric(id, step, ts, value);
            }
            b.commit(mark, None);
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
        let mut known = self.shared.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch: HashMap<&str, &str> = HashMap::new();
        for (k, v) in &params {
            validate_key("param key", k)?;
            check_len("param value", v, MAX_PARAM_VALUE_LEN)?;
            let old = known
                .params
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
        let new = batch
            .keys()
            .filter(|k| !known.params.contains_key(**k))
            .count();
        known.room_for(&self.id(), new, 0)?;
        let mut b = self.shared.lock();
        let mark = b.mark();
        for (k, v) in params {
            if known.params.contains_key(&k) {
                continue;
            }
            known.params.insert(k.clone(), v.clone());
            b.params.push((k, v));
        }
        b.commit(mark, None);
        Ok(())
    }

    /// Sets a tag; setting it again replaces the value.
    pub fn set_tag(&self, key: &str, value: impl Into<String>) -> Result<()> {
        self.shared.check()?;
        let value = value.into();
        validate_key("tag key", key)?;
        check_len("tag value", &value, MAX_TAG_VALUE_LEN)?;
        if value == TAG_TOMBSTONE {
            return Err(Error::InvalidValue {
                what: "tag value",
                reason: format!("{TAG_TOMBSTONE:?} is what runql records for a deleted tag"),
            });
        }
        let mut known = self.shared.known.lock().unwrap_or_else(|e| e.into_inner());
        if !known.tags.contains(key) {
            known.room_for(&self.id(), 0, 1)?;
            known.tags.insert(key.to_string());
        }
        let mut b = self.shared.lock();
        drop(known);
        let mark = b.mark();
        b.tags.push((key.to_string(), value));
        b.commit(mark, None);
        Ok(())
    }

    /// Deletes a tag: it reads as never set (`get`, the `tags` table), until it is set again.
    pub fn delete_tag(&self, key: &str) -> Result<()> {
        self.shared.check()?;
        validate_key("tag key", key)?;
        let mut b = self.shared.lock();
        let mark = b.mark();
        b.tags.push((key.to_string(), TAG_TOMBSTONE.to_string()));
        b.commit(mark, None);
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
        let mut b = self.shared.lock();
        let mark = b.mark();
        b.inputs.push((input, ts));
        b.commit(mark, None);
        Ok(())
    }

    /// Records one line of output (`stream` is `stdout` or `stderr`).
    pub fn log_line(&self, stream: &str, line: impl Into<String>) -> Result<()> {
        self.shared.check()?;
        let ts = now_us();
        let mut b = self.shared.lock();
        let mark = b.mark();
        b.logs.push((ts, stream.to_string(), line.into()));
        b.commit(mark, None);
        Ok(())
    }

    /// Records one system metric sample (the sampler does this by itself).
    pub fn log_system_metric(&self, key: &str, value: f64) -> Result<()> {
        self.shared.check()?;
        validate_key("system metric key", key)?;
        let mut b = self.shared.lock();
        let mark = b.mark();
        b.system.push((key.to_string(), now_us(), value));
        b.commit(mark, None);
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
        let mut b = self.shared.lock();
        let mark = b.mark();
        b.artifacts.push(artifact.clone());
        b.commit(mark, None);
        Ok(artifact)
    }

    /// Logs what one request carries — params, tags and metric points — all or nothing, under
    /// one lock: a tracking server's `log-batch`. Everything is checked before anything is
    /// logged. With a write-ahead log ([`RunBuilder::wal`](super::RunBuilder::wal)) the rows
    /// are one record, kept with `ack` (the request's id: after a crash,
    /// [`Wal::recover`](super::Wal::recover) gives back the ids of what was applied, so a
    /// retried request is recognised); wait for it with [`Run::wait_durable`].
    pub fn log_batch(&self, batch: &Batch<'_>, ack: Option<[u8; 32]>) -> Result<()> {
        self.shared.check()?;
        for (k, _, _, _) in &batch.metrics {
            validate_key("metric key", k)?;
        }
        for (k, _, _) in &batch.system {
            validate_key("system metric key", k)?;
        }
        for (k, v) in &batch.tags {
            validate_key("tag key", k)?;
            check_len("tag value", v, MAX_TAG_VALUE_LEN)?;
        }
        let mut known = self.shared.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut new_params: Vec<(&str, &str)> = Vec::new();
        for &(k, v) in &batch.params {
            validate_key("param key", k)?;
            check_len("param value", v, MAX_PARAM_VALUE_LEN)?;
            let old = known
                .params
                .get(k)
                .map(String::as_str)
                .or_else(|| new_params.iter().find(|(nk, _)| *nk == k).map(|(_, v)| *v));
            match old {
                Some(old) if old != v => {
                    return Err(Error::ParamChanged {
                        run_id: self.id().as_hex(),
                        key: k.to_string(),
                        old: old.to_string(),
                        new: v.to_string(),
                    });
                }
                Some(_) => {}
                None => new_params.push((k, v)),
            }
        }
        let mut new_tags: Vec<&str> = batch
            .tags
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !known.tags.contains(*k))
            .collect();
        new_tags.sort_unstable();
        new_tags.dedup();
        known.room_for(&self.id(), new_params.len(), new_tags.len())?;
        let mut b = self.shared.lock();
        let mark = b.mark();
        for (k, v) in new_params {
            known.params.insert(k.to_string(), v.to_string());
            b.params.push((k.to_string(), v.to_string()));
        }
        known.tags.extend(new_tags.into_iter().map(str::to_string));
        drop(known);
        for &(k, v) in &batch.tags {
            b.tags.push((k.to_string(), v.to_string()));
        }
        for &(key, step, value, ts) in &batch.metrics {
            let id = match b.keys.get(key) {
                Some(&id) => id,
                // Checked above: adding it cannot fail but for 2^31 keys.
                None => b.add_key(key)?,
            };
            b.push_metric(id, step, ts, value);
        }
        for &(key, ts, value) in &batch.system {
            b.system.push((key.to_string(), ts, value));
        }
        b.commit(mark, ack);
        self.shared.maybe_hand_off(b);
        Ok(())
    }

    /// Waits until everything logged so far is durable in the run's write-ahead log (at once
    /// without one): what a server waits for before it acknowledges a request.
    pub async fn wait_durable(&self) -> Result<()> {
        let (wal, lsn) = {
            let b = self.shared.lock();
            match &b.wal {
                Some(w) => (
                    w.wal.clone(),
                    w.lsns.appended.load(std::sync::atomic::Ordering::Acquire),
                ),
                None => return Ok(()),
            }
        };
        wal.wait_async(lsn).await
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

    /// Renames the run: its record is written again with the new name (with everything
    /// logged so far) before this returns. Like [`Run::flush`] while the store is unreachable.
    pub fn rename(&self, name: impl Into<String>) -> Result<()> {
        let name = name.into();
        check_len("run name", &name, MAX_TAG_VALUE_LEN)?;
        if self.shared.state.load(Ordering::Relaxed) == FAILED {
            return Err(self.shared.writer_error());
        }
        let (ack, done) = mpsc::channel();
        self.shared.send(Msg::Rename { name, ack })?;
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

    /// Lets go of the run without ending it: writes and syncs everything logged (its record
    /// too if it changed, its heartbeat left as the last logging call left it), and stops the
    /// writer; the run stays `running` for readers until its silence
    /// says otherwise (see [`RunBuilder::owned_elsewhere`](super::RunBuilder::owned_elsewhere)).
    /// For a server whose client owns the run's status: the client may log again later,
    /// through this server or another.
    pub fn release(mut self) -> Result<()> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        if let Some((handle, stop)) = self.sampler.take() {
            drop(stop);
            let _ = handle.join();
        }
        let (ack, done) = mpsc::channel();
        let result = match self.shared.tx.send(Msg::Release { ack }) {
            Ok(()) => done
                .recv()
                .map_err(|_| self.shared.writer_error())
                .and_then(|r| r),
            Err(_) => Err(self.shared.writer_error()),
        };
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        result
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

    /// Like [`Run::finish_with_record`], ending at `at` (µs since the epoch) when given, now
    /// otherwise.
    pub fn end_with_record(mut self, status: RunStatus, at: Option<i64>) -> Result<RunRecord> {
        self.end_at(status, at)?
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
        if !self.ended && self.owned_elsewhere {
            if let Err(e) = self.release_now() {
                tracing::warn!(run_id = %self.shared.run_id, error = %e, "could not release the run cleanly");
            }
            return;
        }
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

pub(super) fn check_len(what: &'static str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::InvalidValue {
            what,
            reason: format!("it is {} bytes long, the limit is {max}", value.len()),
        });
    }
    Ok(())
}
