//! What a store handle keeps of objects that never change once written, so that a second read
//! costs no decoding: folded manifests (by the entry names they were folded from), Parquet
//! footers of compacted files, run record snapshots, and decoded rows ([`DecodedCache`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Manifest, Store};

/// Per project, the manifest entry names last listed and their folded manifest.
pub(super) type ManifestCache = std::sync::Mutex<HashMap<String, (Vec<String>, Arc<Manifest>)>>;

/// Parquet footers of compacted files, by path. Those files never change once written, so a
/// footer read once is good for as long as the file exists.
pub(super) type FooterCache =
    std::sync::Mutex<HashMap<String, Arc<parquet::file::metadata::ParquetMetaData>>>;

/// Footers kept at most (the cache starts over past this).
const MAX_FOOTERS: usize = 1024;

/// Run record snapshots kept at most (the cache starts over past this).
const MAX_RECORDS: usize = 16 * 1024;

/// Run record snapshots by path (each snapshot is a new object, never rewritten).
pub(super) type RecordCache = std::sync::Mutex<HashMap<String, crate::model::RunRecord>>;

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

impl Store {
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
}
