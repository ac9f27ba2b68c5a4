//! Reading a store back: projects, runs, and the rows of every table, live segments and
//! compacted Parquet together, pruned by project, run and key before anything is read.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
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
use super::manifest::DataFile;
use super::rows::{records_from_batch, records_to_batch, resolve};
use super::snapshot::{LiveRun, ProjectSnapshot};
use super::summary::{combine_summaries, summarize_metrics, summarize_segment};
use super::{Store, segment};
use crate::error::{Error, Result};
use crate::model::RunRecord;
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

/// Everything one run logged, read back.
#[derive(Debug, Clone)]
pub struct RunData {
    pub record: RunRecord,
    pub tables: BTreeMap<Table, Vec<RecordBatch>>,
}

impl Store {
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
                // The markers are the truth: a record that says deleted without one (written
                // by a resumed run before 2026-12-03) reads restored.
                let stale = || {
                    out.iter().any(|b| {
                        b.column_by_name("deleted")
                            .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
                            .is_some_and(|d| d.true_count() > 0)
                    })
                };
                if !snap.deleted.is_empty() || stale() {
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
                    let combined = combine_summaries(&summaries)?;
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
                let summary = summarize_segment(project, &run.run_id, &raw)?;
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
