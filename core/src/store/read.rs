//! Reading a store back: projects, runs, and the rows of every table, live segments and
//! compacted Parquet together, pruned by project, run and key before anything is read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::filter_record_batch;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::cache::Part;
use super::layout::{LiveObject, SegmentName};
use super::manifest::{DataFile, Manifest};
use super::{Store, segment};
use crate::error::{Error, Result};
use crate::model::{RunRecord, RunStatus, now_us};
use crate::schema::Table;

/// What to read: which projects, runs and keys. `None` means all.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub projects: Option<Vec<String>>,
    pub run_ids: Option<Vec<String>>,
    /// Metric, param or tag keys (tables without a `key` column ignore it).
    pub keys: Option<Vec<String>>,
}

impl Scan {
    /// Everything.
    pub fn all() -> Scan {
        Scan::default()
    }

    /// Only this project.
    pub fn project(project: impl Into<String>) -> Scan {
        Scan {
            projects: Some(vec![project.into()]),
            ..Scan::default()
        }
    }

    /// Only these runs.
    pub fn runs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, run_ids: I) -> Scan {
        self.run_ids = Some(run_ids.into_iter().map(Into::into).collect());
        self
    }

    /// Only these keys.
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Scan {
        self.keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }
}

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

/// Everything one run logged, read back.
#[derive(Debug, Clone)]
pub struct RunData {
    pub record: RunRecord,
    pub tables: BTreeMap<Table, Vec<RecordBatch>>,
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

    /// Rows of `table` selected by `scan`, from every project it names (all by default).
    pub async fn scan(&self, table: Table, scan: &Scan) -> Result<Vec<RecordBatch>> {
        self.check_readable().await?;
        let projects = match &scan.projects {
            Some(p) => p.clone(),
            None => self.list_projects().await?,
        };
        let mut out = Vec::new();
        for project in projects {
            let snap = self.snapshot(&project, scan.run_ids.as_deref()).await?;
            out.extend(self.read_snapshot(&snap, table, scan).await?);
        }
        resolve(table, out)
    }

    /// The run records of a project (or of all projects), newest first.
    pub async fn list_runs(&self, project: Option<&str>) -> Result<Vec<RunRecord>> {
        let scan = Scan {
            projects: project.map(|p| vec![p.to_string()]),
            ..Scan::default()
        };
        let batches = self.scan(Table::Runs, &scan).await?;
        let mut runs = Vec::new();
        for b in &batches {
            runs.extend(records_from_batch(b)?);
        }
        runs.sort_by(|a, b| b.created.cmp(&a.created).then(b.run_id.cmp(&a.run_id)));
        Ok(runs)
    }

    /// Finds the project of a run id (a run id is unique across the store).
    pub async fn find_run(&self, run_id: &str) -> Result<RunRecord> {
        for project in self.list_projects().await? {
            let batches = self
                .scan(Table::Runs, &Scan::project(&project).runs([run_id]))
                .await?;
            if let Some(b) = batches.iter().find(|b| b.num_rows() > 0)
                && let Some(r) = records_from_batch(b)?.into_iter().next()
            {
                return Ok(r);
            }
        }
        Err(Error::RunNotFound {
            run_id: run_id.to_string(),
            project: None,
        })
    }

    /// Everything one run logged.
    pub async fn read_run(&self, project: &str, run_id: &str) -> Result<RunData> {
        let scan = Scan::project(project).runs([run_id]);
        let snap = self.snapshot(project, Some(&[run_id.to_string()])).await?;
        let runs = resolve(
            Table::Runs,
            self.read_snapshot(&snap, Table::Runs, &scan).await?,
        )?;
        let record = runs
            .iter()
            .flat_map(|b| records_from_batch(b).unwrap_or_default())
            .next()
            .ok_or_else(|| Error::RunNotFound {
                run_id: run_id.to_string(),
                project: Some(project.to_string()),
            })?;
        let mut tables = BTreeMap::new();
        for table in Table::LOGGED {
            let batches = resolve(table, self.read_snapshot(&snap, table, &scan).await?)?;
            tables.insert(table, batches);
        }
        Ok(RunData { record, tables })
    }

    /// Reads one table out of a snapshot.
    pub async fn read_snapshot(
        &self,
        snap: &ProjectSnapshot,
        table: Table,
        scan: &Scan,
    ) -> Result<Vec<RecordBatch>> {
        let run_filter: Option<HashSet<&str>> = scan
            .run_ids
            .as_ref()
            .map(|r| r.iter().map(String::as_str).collect());
        let key_filter: Option<HashSet<&str>> = scan
            .keys
            .as_ref()
            .map(|r| r.iter().map(String::as_str).collect());
        let has_key = table.schema().column_with_name("key").is_some();
        let key_filter = if has_key { key_filter } else { None };

        // Live run records override compacted ones (a run resumed after compaction).
        let live_records: HashSet<&str> = snap
            .live
            .values()
            .filter(|r| r.record.is_some())
            .map(|r| r.run_id.as_str())
            .collect();

        // A summary of a run split between places is recomputed from all its metrics below.
        let split_summaries: HashSet<String> = if table == Table::MetricSummary {
            snap.split_runs(table)
                .into_iter()
                .filter(|r| run_filter.as_ref().is_none_or(|f| f.contains(r.as_str())))
                .collect()
        } else {
            HashSet::new()
        };

        let mut out = Vec::new();
        for (file, excluded) in snap.manifest.files(table) {
            let mut excluded: HashSet<&str> = excluded
                .map(|s| s.iter().map(String::as_str).collect())
                .unwrap_or_default();
            if table == Table::Runs {
                excluded.extend(live_records.iter().copied());
            }
            excluded.extend(split_summaries.iter().map(String::as_str));
            let filter = RowFilter {
                runs: run_filter.as_ref(),
                keys: key_filter.as_ref(),
                excluded: &excluded,
            };
            out.extend(self.read_parquet(table, file, &filter).await?);
        }

        let live_runs = snap.live.values().filter(|r| {
            run_filter
                .as_ref()
                .is_none_or(|f| f.contains(r.run_id.as_str()))
        });
        match table {
            Table::Runs => {
                let records: Vec<RunRecord> = live_runs
                    .filter_map(|r| r.effective_record(self.stale_after()))
                    .collect();
                if !records.is_empty() {
                    out.push(records_to_batch(&records)?);
                }
                if !snap.deleted.is_empty() {
                    out = out
                        .iter()
                        .map(|b| {
                            let mut records = records_from_batch(b)?;
                            for r in &mut records {
                                r.deleted = snap.deleted.contains(&r.run_id);
                            }
                            records_to_batch(&records)
                        })
                        .collect::<Result<_>>()?;
                }
            }
            Table::MetricSummary => {
                let mut summaries = Vec::new();
                for run in live_runs.filter(|r| !split_summaries.contains(&r.run_id)) {
                    summaries.extend(self.segment_summaries(&snap.project, run).await?);
                }
                let mut metrics = Vec::new();
                if !split_summaries.is_empty() {
                    let split = Scan {
                        projects: None,
                        run_ids: Some(split_summaries.iter().cloned().collect()),
                        keys: scan.keys.clone(),
                    };
                    metrics
                        .extend(Box::pin(self.read_snapshot(snap, Table::Metrics, &split)).await?);
                }
                let metrics = filter_keys(metrics, key_filter.as_ref())?;
                if !metrics.is_empty() {
                    summaries.push(summarize_metrics(&metrics)?);
                }
                if !summaries.is_empty() {
                    let combined = super::compact::combine_summaries(&summaries)?;
                    out.extend(filter_keys(vec![combined], key_filter.as_ref())?);
                }
            }
            _ => {
                for run in live_runs {
                    let batches = self.read_segments(&snap.project, run, table).await?;
                    out.extend(filter_keys(batches, key_filter.as_ref())?);
                }
            }
        }
        Ok(out)
    }

    /// The `metric_summary` rows of each of a live run's metrics segments, in write order
    /// (kept decoded: a segment never changes).
    async fn segment_summaries(&self, project: &str, run: &LiveRun) -> Result<Vec<RecordBatch>> {
        let Some(segments) = run.segments.get(&Table::Metrics) else {
            return Ok(Vec::new());
        };
        // Owned items and an explicit store reference keep the future `Send` for callers such
        // as DataFusion (borrowed closure arguments make it higher-ranked).
        let store = self;
        let metas: Vec<ObjectMeta> = segments.iter().map(|(_, m)| m.clone()).collect();
        stream::iter(metas)
            .map(move |meta: ObjectMeta| async move {
                let path = meta.location.as_ref();
                if let Some(b) = store.decoded_cache().get(path, Part::Summary) {
                    return Ok(b);
                }
                let bytes = store.segment_bytes(&meta).await?;
                let raw = segment::decode_raw(bytes, &meta.location)?;
                let summary = super::compact::summarize_segment(project, &run.run_id, &raw)?;
                store
                    .decoded_cache()
                    .insert(path, Part::Summary, summary.clone());
                Ok(summary)
            })
            .buffered(8)
            .try_collect()
            .await
    }

    /// The rows of one table in a live run's segments, in write order.
    pub async fn read_segments(
        &self,
        project: &str,
        run: &LiveRun,
        table: Table,
    ) -> Result<Vec<RecordBatch>> {
        let Some(segments) = run.segments.get(&table) else {
            return Ok(Vec::new());
        };
        let store = self;
        let metas: Vec<ObjectMeta> = segments.iter().map(|(_, m)| m.clone()).collect();
        let decoded: Vec<Vec<RecordBatch>> = stream::iter(metas)
            .map(move |meta: ObjectMeta| async move {
                store.read_segment(project, &run.run_id, table, &meta).await
            })
            .buffered(8)
            .try_collect()
            .await?;
        Ok(decoded.into_iter().flatten().collect())
    }

    /// The rows of one live segment. Those of the small per-run tables are kept decoded: every
    /// search reads them.
    async fn read_segment(
        &self,
        project: &str,
        run_id: &str,
        table: Table,
        meta: &ObjectMeta,
    ) -> Result<Vec<RecordBatch>> {
        let keep = matches!(table, Table::Params | Table::Tags | Table::Inputs);
        let path = meta.location.as_ref();
        if keep && let Some(b) = self.decoded_cache().get(path, Part::Segment) {
            return Ok(vec![b]);
        }
        let bytes = self.segment_bytes(meta).await?;
        let batches = segment::decode(table, project, run_id, bytes, &meta.location)?;
        if keep {
            let one = arrow::compute::concat_batches(&table.schema(), &batches)?;
            self.decoded_cache()
                .insert(path, Part::Segment, one.clone());
            return Ok(vec![one]);
        }
        Ok(batches)
    }

    /// The bytes of a live segment.
    async fn segment_bytes(&self, meta: &ObjectMeta) -> Result<Bytes> {
        self.get_opt(&meta.location).await?.ok_or_else(|| {
            // Compacted and removed since the listing: the manifest now has the rows, but this
            // snapshot predates it. Report rather than silently drop.
            Error::storage(
                &meta.location,
                object_store::Error::NotFound {
                    path: meta.location.to_string(),
                    source: "segment removed by a concurrent compaction; retry the read".into(),
                },
            )
        })
    }

    async fn read_parquet(
        &self,
        table: Table,
        file: &DataFile,
        filter: &RowFilter<'_>,
    ) -> Result<Vec<RecordBatch>> {
        let path = self.layout().absolute(&file.path);
        let reader = ObjectReader {
            store: self.object_store(),
            path: path.clone(),
            size: file.bytes,
        };
        let (meta, reader) = match self.cached_footer(path.as_ref()) {
            Some(footer) => {
                let meta = ArrowReaderMetadata::try_new(footer, ArrowReaderOptions::default())
                    .map_err(|e| Error::parquet(&path, e))?;
                (meta, reader)
            }
            None => {
                let mut reader = reader;
                let meta = ArrowReaderMetadata::load_async(&mut reader, Default::default())
                    .await
                    .map_err(|e| Error::parquet(&path, e))?;
                self.cache_footer(path.as_ref(), meta.metadata().clone());
                (meta, reader)
            }
        };
        let footer = meta.metadata().clone();
        let schema = footer.file_metadata().schema_descr();
        let col_index = |name: &str| schema.columns().iter().position(|c| c.name() == name);
        let run_col = col_index("run_id");
        let key_col = col_index("key");
        let mut row_groups = Vec::new();
        for (i, rg) in footer.row_groups().iter().enumerate() {
            let keep_run = match (filter.runs, run_col) {
                (Some(runs), Some(c)) => stats_may_contain(rg.column(c).statistics(), runs),
                _ => true,
            };
            let keep_key = match (filter.keys, key_col) {
                (Some(keys), Some(c)) => stats_may_contain(rg.column(c).statistics(), keys),
                _ => true,
            };
            if keep_run && keep_key {
                row_groups.push(i);
            }
        }
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        // The small per-run tables are read whole by every page of runs: their decoded row
        // groups are kept. Metric points are read by key and step range, and are large.
        let cached = matches!(
            table,
            Table::Runs | Table::Params | Table::Tags | Table::MetricSummary | Table::Inputs
        );
        let mut batches = Vec::new();
        if cached {
            for rg in row_groups {
                let hit = self.decoded_cache().get(path.as_ref(), Part::RowGroup(rg));
                let batch = match hit {
                    Some(b) => b,
                    None => {
                        let rows = footer.row_group(rg).num_rows().max(1) as usize;
                        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
                            reader.clone(),
                            meta.clone(),
                        )
                        .with_row_groups(vec![rg])
                        .with_batch_size(rows)
                        .build()
                        .map_err(|e| Error::parquet(&path, e))?;
                        let parts: Vec<RecordBatch> = stream
                            .try_collect()
                            .await
                            .map_err(|e| Error::parquet(&path, e))?;
                        let b = arrow::compute::concat_batches(meta.schema(), &parts)?;
                        self.decoded_cache()
                            .insert(path.as_ref(), Part::RowGroup(rg), b.clone());
                        b
                    }
                };
                batches.push(batch);
            }
        } else {
            let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
                .with_row_groups(row_groups)
                .build()
                .map_err(|e| Error::parquet(&path, e))?;
            batches = stream
                .try_collect()
                .await
                .map_err(|e| Error::parquet(&path, e))?;
        }
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let b = filter.apply(&b)?;
            if b.num_rows() > 0 {
                out.push(b);
            }
        }
        Ok(out)
    }
}

struct RowFilter<'a> {
    runs: Option<&'a HashSet<&'a str>>,
    keys: Option<&'a HashSet<&'a str>>,
    excluded: &'a HashSet<&'a str>,
}

impl RowFilter<'_> {
    fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.runs.is_none() && self.keys.is_none() && self.excluded.is_empty() {
            return Ok(batch.clone());
        }
        let mut mask = vec![true; batch.num_rows()];
        if let Some(runs) = self.runs {
            and_membership(batch, "run_id", |v| runs.contains(v), &mut mask);
        }
        if !self.excluded.is_empty() {
            and_membership(batch, "run_id", |v| !self.excluded.contains(v), &mut mask);
        }
        if let Some(keys) = self.keys {
            and_membership(batch, "key", |v| keys.contains(v), &mut mask);
        }
        Ok(filter_record_batch(batch, &BooleanArray::from(mask))?)
    }
}

fn and_membership(
    batch: &RecordBatch,
    column: &str,
    keep: impl Fn(&str) -> bool,
    mask: &mut [bool],
) {
    let Some(col) = batch.column_by_name(column) else {
        return;
    };
    let Some(strings) = col.as_any().downcast_ref::<StringArray>() else {
        return;
    };
    for (i, m) in mask.iter_mut().enumerate() {
        if *m {
            *m = strings.is_valid(i) && keep(strings.value(i));
        }
    }
}

fn filter_keys(
    batches: Vec<RecordBatch>,
    keys: Option<&HashSet<&str>>,
) -> Result<Vec<RecordBatch>> {
    let Some(keys) = keys else {
        return Ok(batches);
    };
    let empty = HashSet::new();
    let f = RowFilter {
        runs: None,
        keys: Some(keys),
        excluded: &empty,
    };
    batches.iter().map(|b| f.apply(b)).collect()
}

fn stats_may_contain(
    stats: Option<&parquet::file::statistics::Statistics>,
    wanted: &HashSet<&str>,
) -> bool {
    let Some(stats) = stats else { return true };
    let (Some(min), Some(max)) = (stats.min_bytes_opt(), stats.max_bytes_opt()) else {
        return true;
    };
    wanted
        .iter()
        .any(|w| w.as_bytes() >= min && w.as_bytes() <= max)
}

/// Applies the table's "later event wins" rules to rows read in write order: one row per run
/// and key in `tags` (the last set) and `params` (the first logged), and one row per run in
/// `runs` (the newest record: compacted files come in manifest order, live records last).
pub fn resolve(table: Table, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let (keep_last, by_key) = match table {
        Table::Runs => (true, false),
        Table::Tags => (true, true),
        Table::Params => (false, true),
        _ => return Ok(batches),
    };
    let mut winner: HashMap<(String, String), (usize, usize)> = HashMap::new();
    for (bi, b) in batches.iter().enumerate() {
        let runs = string_column(b, "run_id")?;
        let keys = if by_key {
            Some(string_column(b, "key")?)
        } else {
            None
        };
        for row in 0..b.num_rows() {
            let key = keys.map(|k| k.value(row).to_string()).unwrap_or_default();
            let k = (runs.value(row).to_string(), key);
            if keep_last {
                winner.insert(k, (bi, row));
            } else {
                winner.entry(k).or_insert((bi, row));
            }
        }
    }
    let mut keep: Vec<Vec<bool>> = batches.iter().map(|b| vec![false; b.num_rows()]).collect();
    for (bi, row) in winner.into_values() {
        keep[bi][row] = true;
    }
    batches
        .iter()
        .zip(keep)
        .map(|(b, m)| Ok(filter_record_batch(b, &BooleanArray::from(m))?))
        .filter(|b: &Result<RecordBatch>| b.as_ref().map_or(true, |b| b.num_rows() > 0))
        .collect()
}

pub(crate) fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| Error::Internal(format!("column {name} is missing or not a string column")))
}

/// The `metric_summary` rows of some `metrics` rows of any runs, in write order (of two points
/// at the same step and time, the later row is the last value), in one pass without sorting.
pub fn summarize_metrics(metrics: &[RecordBatch]) -> Result<RecordBatch> {
    super::compact::summarize_points(metrics)
}

/// The `runs` table rows of some records.
pub fn records_to_batch(records: &[RunRecord]) -> Result<RecordBatch> {
    let schema = Table::Runs.schema();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let col: ArrayRef = match name {
            "git_dirty" | "deleted" => {
                let mut b = BooleanBuilder::with_capacity(records.len());
                for r in records {
                    b.append_option(if name == "deleted" {
                        Some(r.deleted)
                    } else {
                        r.git_dirty
                    });
                }
                Arc::new(b.finish())
            }
            "created" | "started" | "ended" | "heartbeat" => {
                let mut b =
                    TimestampMicrosecondBuilder::with_capacity(records.len()).with_timezone("UTC");
                for r in records {
                    b.append_option(match name {
                        "created" => Some(r.created),
                        "started" => r.started,
                        "ended" => r.ended,
                        _ => r.heartbeat,
                    });
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                for r in records {
                    let v: Option<&str> = match name {
                        "project" => Some(&r.project),
                        "run_id" => Some(&r.run_id),
                        "name" => r.name.as_deref(),
                        "status" => Some(r.status.as_str()),
                        "parent_run_id" => r.parent_run_id.as_deref(),
                        "run_group" => r.run_group.as_deref(),
                        "username" => r.username.as_deref(),
                        "hostname" => r.hostname.as_deref(),
                        "command" => r.command.as_deref(),
                        "git_commit" => r.git_commit.as_deref(),
                        "git_branch" => r.git_branch.as_deref(),
                        other => {
                            return Err(Error::Internal(format!(
                                "runs column {other} has no source"
                            )));
                        }
                    };
                    b.append_option(v);
                }
                Arc::new(b.finish())
            }
        };
        columns.push(col);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Run records out of a batch of the `runs` table.
pub fn records_from_batch(batch: &RecordBatch) -> Result<Vec<RunRecord>> {
    use arrow::array::{AsArray, types::TimestampMicrosecondType};
    let s = |name: &str| string_column(batch, name);
    let ts = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone())
            .ok_or_else(|| Error::Internal(format!("runs column {name} missing")))
    };
    let b = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| c.as_boolean().clone())
            .ok_or_else(|| Error::Internal(format!("runs column {name} missing")))
    };
    let (project, run_id, name, status, parent, group) = (
        s("project")?,
        s("run_id")?,
        s("name")?,
        s("status")?,
        s("parent_run_id")?,
        s("run_group")?,
    );
    let (user, host, command, commit, branch) = (
        s("username")?,
        s("hostname")?,
        s("command")?,
        s("git_commit")?,
        s("git_branch")?,
    );
    let (created, started, ended, heartbeat) = (
        ts("created")?,
        ts("started")?,
        ts("ended")?,
        ts("heartbeat")?,
    );
    let (dirty, deleted) = (b("git_dirty")?, b("deleted")?);
    let opt_s = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let opt_t =
        |a: &arrow::array::TimestampMicrosecondArray, i: usize| a.is_valid(i).then(|| a.value(i));
    (0..batch.num_rows())
        .map(|i| {
            Ok(RunRecord {
                project: project.value(i).to_string(),
                run_id: run_id.value(i).to_string(),
                name: opt_s(name, i),
                status: status.value(i).parse()?,
                parent_run_id: opt_s(parent, i),
                run_group: opt_s(group, i),
                username: opt_s(user, i),
                hostname: opt_s(host, i),
                command: opt_s(command, i),
                git_commit: opt_s(commit, i),
                git_branch: opt_s(branch, i),
                git_dirty: dirty.is_valid(i).then(|| dirty.value(i)),
                created: created.value(i),
                started: opt_t(&started, i),
                ended: opt_t(&ended, i),
                heartbeat: opt_t(&heartbeat, i),
                deleted: deleted.is_valid(i) && deleted.value(i),
            })
        })
        .collect()
}

/// Reads a Parquet file of known size through `object_store`, by byte ranges.
#[derive(Clone)]
struct ObjectReader {
    store: Arc<dyn object_store::ObjectStore>,
    path: Path,
    size: u64,
}

fn to_parquet_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        async move {
            object_store::ObjectStoreExt::get_range(self.store.as_ref(), &self.path, range)
                .await
                .map_err(to_parquet_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(to_parquet_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
