//! Snapshots: a project as of one moment — its folded manifest, its live runs (what of each is
//! not yet compacted) and its deleted runs — taken with one LIST of the live area (or of the
//! chosen runs' folders) and one GET per live run's newest record. Every read and every
//! compaction starts from one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;

use super::Store;
use super::layout::{LiveObject, SegmentName};
use super::manifest::Manifest;
use crate::error::{Error, Result};
use crate::model::{RunRecord, RunStatus, now_us};
use crate::schema::Table;

/// A run that still has live (not yet compacted) objects.
#[derive(Debug, Clone)]
pub struct LiveRun {
    pub run_id: String,
    /// The newest run record not consumed by a compaction; `None` when every snapshot was.
    pub record: Option<RunRecord>,
    /// File stem of that record's snapshot.
    pub record_snapshot: Option<String>,
    /// The path of that snapshot.
    pub record_path: Option<Path>,
    /// Segments not consumed by a compaction, per table, in write order.
    pub segments: BTreeMap<Table, Vec<(SegmentName, ObjectMeta)>>,
    /// Objects a compaction already consumed or a newer snapshot superseded: garbage.
    pub garbage: Vec<Path>,
    /// Newest modification time of any of the run's objects, µs since the epoch.
    pub last_modified: i64,
}

impl LiveRun {
    /// The run's status as readers see it: a running run silent for longer than `stale_after`
    /// is `crashed`.
    pub fn effective_record(&self, stale_after: std::time::Duration) -> Option<RunRecord> {
        let mut record = self.record.clone()?;
        let heartbeat = record
            .heartbeat
            .unwrap_or(record.created)
            .max(self.last_modified);
        record.heartbeat = Some(heartbeat);
        let stale_after = record
            .silent_after
            .map_or(stale_after, std::time::Duration::from_secs);
        if record.status == RunStatus::Running
            && now_us() - heartbeat > stale_after.as_micros() as i64
        {
            record.status = RunStatus::Crashed;
        }
        Some(record)
    }
}

/// One project as of one moment: its manifest and its live runs.
#[derive(Debug, Clone)]
pub struct ProjectSnapshot {
    pub project: String,
    pub manifest: Arc<Manifest>,
    pub live: BTreeMap<String, LiveRun>,
    /// Runs marked deleted (their `runs.deleted` reads true).
    pub deleted: HashSet<String>,
}

impl ProjectSnapshot {
    /// Runs whose rows of `table` may come from more than one place (several compactions, or a
    /// compaction and live objects: a run resumed after it was compacted). Their rows of the
    /// tables with "later event wins" rules (`runs`, `params`, `tags`) and of `metric_summary`
    /// must be read together and resolved; every other run's rows are already final.
    pub fn split_runs(&self, table: Table) -> HashSet<String> {
        let source = match table {
            Table::MetricSummary => Table::Metrics,
            t => t,
        };
        let mut out = HashSet::new();
        for (run_id, claims) in self.manifest.claim_counts() {
            let live = self.live.get(run_id).is_some_and(|r| {
                if table == Table::Runs {
                    r.record.is_some()
                } else {
                    r.segments.get(&source).is_some_and(|s| !s.is_empty())
                }
            });
            // A deleted run's `runs` row is rewritten on the way out, so it is read here.
            let marked = table == Table::Runs && self.deleted.contains(run_id);
            if claims + usize::from(live) > 1 || marked {
                out.insert(run_id.to_string());
            }
        }
        out
    }
}

/// Up to this many runs, a snapshot of chosen runs lists each run's folder; beyond, it lists
/// which runs have a live folder first.
const PER_RUN_LISTS: usize = 8;

impl Store {
    /// A snapshot of a project: its manifest and its live runs (only `runs`, when given).
    pub async fn snapshot(
        &self,
        project: &str,
        runs: Option<&[String]>,
    ) -> Result<ProjectSnapshot> {
        let manifest = self.read_manifest(project).await?;
        let live_root = self.layout().live(project);
        let objects: Vec<ObjectMeta> = match runs {
            None => self.list_all(&live_root).await?,
            Some(ids) => {
                // One LIST per run; for many runs, first one LIST of the live folder's run
                // folders (a page per 1,000 live runs), so that runs with nothing live (the
                // compacted ones: most, in a big project) cost no request at all.
                let ids: Vec<String> = if ids.len() > PER_RUN_LISTS {
                    let live: HashSet<String> = self
                        .list_dirs(&live_root)
                        .await?
                        .into_iter()
                        .filter_map(|p| p.filename().map(str::to_string))
                        .collect();
                    ids.iter()
                        .filter(|id| live.contains(*id))
                        .cloned()
                        .collect()
                } else {
                    ids.to_vec()
                };
                // Owned items and an explicit store reference keep the future `Send` for
                // callers such as DataFusion (borrowed closure arguments make it higher-ranked).
                let store = self;
                stream::iter(ids)
                    .map(move |id: String| {
                        let dir = store.layout().run(project, &id);
                        async move { store.list_all(&dir).await }
                    })
                    .buffer_unordered(16)
                    .try_concat()
                    .await?
            }
        };
        let root_depth = live_root.parts().count();
        // run id -> (meta snapshots, segments, newest mtime)
        #[derive(Default)]
        struct Found {
            metas: Vec<(String, Path)>,
            segments: BTreeMap<Table, Vec<(SegmentName, ObjectMeta)>>,
            last_modified: i64,
            garbage: Vec<Path>,
        }
        let mut found: HashMap<String, Found> = HashMap::new();
        for meta in objects {
            let Some((run_id, object)) = LiveObject::at(&meta.location, root_depth) else {
                continue;
            };
            let f = found.entry(run_id.to_string()).or_default();
            f.last_modified = f.last_modified.max(meta.last_modified.timestamp_micros());
            match object {
                LiveObject::Meta(stem) => f.metas.push((stem, meta.location.clone())),
                LiveObject::Segment(table, name) => {
                    if manifest.consumed_segment(run_id, &name.writer, name.seq) {
                        f.garbage.push(meta.location.clone());
                    } else {
                        f.segments.entry(table).or_default().push((name, meta));
                    }
                }
            }
        }
        let live: Vec<LiveRun> = stream::iter(found)
            .map(|(run_id, mut f)| {
                let manifest = &manifest;
                async move {
                    f.metas.sort();
                    let newest = f.metas.pop();
                    f.garbage.extend(f.metas.into_iter().map(|(_, p)| p));
                    for segs in f.segments.values_mut() {
                        segs.sort_by(|a, b| a.0.cmp(&b.0));
                    }
                    let (record, record_snapshot) = match newest {
                        Some((stem, path)) if !manifest.consumed_meta(&run_id, &stem) => {
                            let cached = self.cached_record(path.as_ref());
                            let bytes = match cached {
                                Some(_) => None,
                                None => self.get_opt(&path).await?,
                            };
                            match (cached, bytes) {
                                (Some(rec), _) => (Some(rec), Some((stem, path))),
                                (None, Some(bytes)) => {
                                    let rec: RunRecord = serde_json::from_slice(&bytes)
                                        .map_err(|e| Error::corrupt(&path, e))?;
                                    self.cache_record(path.as_ref(), &rec);
                                    (Some(rec), Some((stem, path)))
                                }
                                // Superseded by a newer snapshot (a heartbeat) and deleted
                                // between LIST and GET: read the newest one now.
                                (None, None) => match self.newest_record(project, &run_id).await? {
                                    Some((rec, stem, path)) => (Some(rec), Some((stem, path))),
                                    None => (None, None),
                                },
                            }
                        }
                        Some((_, path)) => {
                            f.garbage.push(path);
                            (None, None)
                        }
                        None => (None, None),
                    };
                    let (record_snapshot, record_path) = record_snapshot.unzip();
                    Ok::<_, Error>(LiveRun {
                        run_id,
                        record,
                        record_snapshot,
                        record_path,
                        segments: f.segments,
                        garbage: f.garbage,
                        last_modified: f.last_modified,
                    })
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let deleted = self
            .list_all(&self.layout().deleted(project))
            .await?
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect();
        Ok(ProjectSnapshot {
            project: project.to_string(),
            manifest,
            live: live.into_iter().map(|r| (r.run_id.clone(), r)).collect(),
            deleted,
        })
    }

    /// The newest record snapshot of a live run, listed afresh.
    async fn newest_record(
        &self,
        project: &str,
        run_id: &str,
    ) -> Result<Option<(RunRecord, String, Path)>> {
        let dir = self.layout().run(project, run_id);
        let depth = self.layout().live(project).parts().count();
        // A snapshot can be superseded again while we read: retry a few times.
        for _ in 0..3 {
            let mut metas: Vec<(String, ObjectMeta)> = self
                .list_all(&dir)
                .await?
                .into_iter()
                .filter_map(|m| match LiveObject::at(&m.location, depth)?.1 {
                    LiveObject::Meta(stem) => Some((stem, m)),
                    LiveObject::Segment(..) => None,
                })
                .collect();
            metas.sort_by(|a, b| a.0.cmp(&b.0));
            let Some((stem, newest)) = metas.pop() else {
                return Ok(None);
            };
            if let Some(bytes) = self.get_opt(&newest.location).await? {
                let rec: RunRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::corrupt(&newest.location, e))?;
                return Ok(Some((rec, stem, newest.location)));
            }
        }
        Ok(None)
    }
}
