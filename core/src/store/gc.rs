//! Garbage collection: removes what no reader will ever look at again — live objects a
//! compaction consumed (a crash between its manifest entry and its deletes leaves them), run
//! record snapshots superseded by newer ones, Parquet files no manifest entry references (a
//! compaction that crashed or lost a race), and temporary files of interrupted local writes.
//!
//! Unreferenced files and temporary files are only removed once they are older than a grace
//! period, because a running compaction writes its files before the manifest entry that makes
//! them visible.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::Store;
use crate::error::Result;

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub project: String,
    /// Consumed segments and superseded run-record snapshots.
    pub live_objects: usize,
    /// Parquet files no manifest entry references.
    pub unreferenced_files: usize,
    /// Extension-table files replaced by merged ones (see `compact`) longer ago than the grace.
    pub replaced_files: usize,
    /// Temporary files of interrupted local writes.
    pub temp_files: usize,
    /// Bytes freed.
    pub bytes: u64,
}

impl Store {
    /// Removes a project's garbage; files that may belong to a compaction still in progress
    /// (younger than `grace`) are kept.
    pub async fn gc(&self, project: &str, grace: Duration) -> Result<GcReport> {
        self.ensure_writable().await?;
        let mut report = GcReport {
            project: project.to_string(),
            ..GcReport::default()
        };
        let snap = self.snapshot(project, None).await?;
        let mut doomed = Vec::new();
        for run in snap.live.values() {
            doomed.extend(run.garbage.iter().cloned());
        }
        report.live_objects = doomed.len();

        let referenced: HashSet<&str> = snap
            .manifest
            .entries
            .iter()
            .flat_map(|e| e.files.iter().map(|f| f.path.as_str()))
            .collect();
        let cutoff = chrono_cutoff(grace);
        let data = self.layout().project(project).join("data");
        for meta in self.list_all(&data).await? {
            let rel = self.layout().relative(&meta.location);
            if !referenced.contains(rel.as_str()) && meta.last_modified.timestamp_micros() < cutoff
            {
                report.unreferenced_files += 1;
                report.bytes += meta.size;
                doomed.push(meta.location);
            }
        }
        self.delete_all(doomed).await?;
        let (replaced, bytes) = self.remove_replaced(project, &snap.manifest, grace).await?;
        report.replaced_files = replaced;
        report.bytes += bytes;

        // Temporary files (`name#digits`) are invisible to object-store listings: walk the
        // folder of a local store.
        if let Some(root) = self.local_root() {
            let dir = root.join(self.layout().relative(&self.layout().project(project)));
            let deadline = SystemTime::now()
                .checked_sub(grace)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            remove_temp_files(&dir, deadline, &mut report);
        }
        Ok(report)
    }
}

/// Microseconds since the epoch, `grace` ago.
fn chrono_cutoff(grace: Duration) -> i64 {
    crate::model::now_us().saturating_sub(i64::try_from(grace.as_micros()).unwrap_or(i64::MAX))
}

fn remove_temp_files(dir: &std::path::Path, deadline: SystemTime, report: &mut GcReport) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            remove_temp_files(&path, deadline, report);
            continue;
        }
        let is_temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, digits)| {
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            });
        let old = meta.modified().is_ok_and(|m| m < deadline);
        if is_temp && old && std::fs::remove_file(&path).is_ok() {
            report.temp_files += 1;
            report.bytes += meta.len();
        }
    }
}
