//! Compaction: the live segments of finished runs become Parquet files listed by the manifest.
//!
//! Order of work, which is what makes it crash-safe and idempotent:
//! 1. read the finished runs' segments and records; write one Parquet file per table (many runs
//!    per file, sorted by run, key and step) and a `metric_summary` file. Until step 2 these
//!    files are invisible: nothing refers to them.
//! 2. write one manifest entry claiming the runs and listing the files. From that moment readers
//!    read the runs from Parquet and skip their segments.
//! 3. delete the consumed segments and record snapshots.
//!
//! A crash before 2 leaves unreferenced files (`gc` removes them); a crash before 3 leaves
//! segments that readers already skip (the next compaction removes them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::manifest::{DataFile, Manifest, ManifestEntry, PLAIN_VERSION, RunClaim};
use super::rows::{records_to_batch, resolve_keeping, string_column};
use super::snapshot::LiveRun;
use super::summary::{Acc, summarize, summary_batch};
use super::{Store, segment};
use crate::error::{Error, Result};
use crate::model::{RunRecord, now_us};
use crate::schema::{FORMAT_VERSION, Table};

/// Rows per Parquet row group of `metrics` (and the other point tables): a quarter million
/// points is a few MB, large enough to scan fast, small enough that one run's points (files
/// are sorted by run) are found in one or two row groups by their `run_id` statistics.
const ROW_GROUP_ROWS: usize = 1 << 18;
/// Rows per row group of the per-run tables (`runs`, `params`, `tags`, `metric_summary`):
/// opening one run of a 100,000-run project reads one such group, not the whole file, while a
/// scan of every run still reads few, large enough groups (fewer requests on object stores).
const SMALL_ROW_GROUP_ROWS: usize = 1 << 16;
/// Live bytes compacted into one set of files (and one manifest entry) at most.
const MAX_BATCH_BYTES: u64 = 512 << 20;

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    pub project: String,
    /// Runs compacted.
    pub runs: usize,
    /// Rows written per table.
    pub rows: BTreeMap<Table, u64>,
    /// Parquet files written (root-relative paths).
    pub files: Vec<String>,
    /// Bytes of Parquet written.
    pub bytes: u64,
    /// Live objects removed (consumed segments and superseded snapshots).
    pub removed: usize,
    /// Extension tables whose small files were merged.
    pub tables: Vec<super::tables::TableCompaction>,
    /// Extension-table files deleted, replaced by merged ones more than ten minutes ago.
    pub replaced_removed: usize,
}

impl Store {
    /// Compacts every finished (or crashed) run of a project that still has live data.
    /// Running runs are left alone. Safe to run at any time, from any number of processes.
    pub async fn compact(&self, project: &str) -> Result<CompactReport> {
        self.ensure_writable().await?;
        let snap = self.snapshot(project, None).await?;
        let mut report = CompactReport {
            project: project.to_string(),
            ..CompactReport::default()
        };
        let mut garbage: Vec<object_store::path::Path> = Vec::new();
        let mut batch: Vec<(&LiveRun, RunRecord)> = Vec::new();
        let mut batch_bytes = 0u64;
        for run in snap.live.values() {
            garbage.extend(run.garbage.iter().cloned());
            let Some(record) = run.effective_record(self.stale_after()) else {
                continue;
            };
            if !record.status.is_terminal() {
                continue;
            }
            let bytes: u64 = run.segments.values().flatten().map(|(_, m)| m.size).sum();
            if !batch.is_empty() && batch_bytes + bytes > MAX_BATCH_BYTES {
                self.compact_batch(
                    project,
                    &snap.manifest,
                    std::mem::take(&mut batch),
                    &mut report,
                )
                .await?;
                batch_bytes = 0;
            }
            batch_bytes += bytes;
            batch.push((run, record));
        }
        if !batch.is_empty() {
            self.compact_batch(project, &snap.manifest, batch, &mut report)
                .await?;
        }
        report.removed += garbage.len();
        self.delete_all(garbage).await?;
        // Extension tables: one file per append (a trace, a plugin's rows) merged once there
        // are enough; what earlier merges replaced goes once no query can still be reading it.
        let manifest = self.read_manifest(project).await?;
        report.tables = self
            .compact_tables(project, &manifest, super::tables::MERGE_AT_FILES)
            .await?;
        let manifest = if report.tables.is_empty() {
            manifest
        } else {
            self.read_manifest(project).await?
        };
        report.replaced_removed = self
            .remove_replaced(project, &manifest, super::tables::REPLACED_GRACE)
            .await?
            .0;
        Ok(report)
    }

    async fn compact_batch(
        &self,
        project: &str,
        manifest: &Manifest,
        runs: Vec<(&LiveRun, RunRecord)>,
        report: &mut CompactReport,
    ) -> Result<()> {
        let entry_id = uuid::Uuid::now_v7().simple().to_string();
        let mut files = Vec::new();
        let mut written = Vec::new();
        let mut tables: BTreeMap<Table, Vec<RecordBatch>> = BTreeMap::new();
        // Metrics segments as stored, per run: sorted and summarized without widening.
        let mut metrics: Vec<(&str, Vec<RecordBatch>)> = Vec::new();
        for (run, _) in &runs {
            for (table, segments) in &run.segments {
                for (_, meta) in segments {
                    let bytes = self.get_opt(&meta.location).await?.ok_or_else(|| {
                        Error::corrupt(
                            &meta.location,
                            "segment vanished during compaction (another compaction won; retry)",
                        )
                    })?;
                    let raw = segment::decode_raw(bytes, &meta.location)?;
                    if *table == Table::Metrics {
                        match metrics.last_mut() {
                            Some((id, batches)) if *id == run.run_id => batches.extend(raw),
                            _ => metrics.push((&run.run_id, raw)),
                        }
                        continue;
                    }
                    for b in &raw {
                        let rows = segment::widen(*table, project, &run.run_id, b)?;
                        tables.entry(*table).or_default().push(rows);
                    }
                }
            }
        }
        let records: Vec<RunRecord> = runs.iter().map(|(_, r)| r.clone()).collect();
        tables.insert(Table::Runs, vec![records_to_batch(&records)?]);
        if !metrics.is_empty() {
            let (sorted, summary) = match sorted_metrics(project, &metrics)? {
                Some(done) => done,
                None => {
                    let mut wide = Vec::new();
                    for (run, raw) in &metrics {
                        for b in raw {
                            wide.push(segment::widen(Table::Metrics, project, run, b)?);
                        }
                    }
                    let sorted = sort_table(Table::Metrics, &wide)?;
                    let summary = summarize(&sorted)?;
                    (sorted, summary)
                }
            };
            tables.insert(Table::Metrics, vec![sorted]);
            tables.insert(Table::MetricSummary, vec![summary]);
        }
        for (table, batches) in tables {
            // Params and tags are resolved before they are written (one row per run and key), so
            // that the files read right by themselves, with DuckDB or Polars too.
            // A deleted tag's record is kept where the run was compacted before (its older
            // value sits in an earlier file); elsewhere the deletion is applied and dropped.
            let batches =
                resolve_keeping(table, batches, |run| manifest.claims(run).next().is_some())?;
            let sorted = if table == Table::Metrics || table == Table::MetricSummary {
                concat_batches(&table.schema(), &batches)?
            } else {
                sort_table(table, &batches)?
            };
            if sorted.num_rows() == 0 {
                continue;
            }
            let body = write_parquet(table, &sorted)?;
            let path = self.layout().data_file(project, table, &entry_id);
            let size = body.len() as u64;
            self.put(&path, body).await?;
            written.push(path.clone());
            *report.rows.entry(table).or_default() += sorted.num_rows() as u64;
            report.bytes += size;
            let rel = self.layout().relative(&path);
            report.files.push(rel.clone());
            files.push(DataFile {
                table: table.name().to_string(),
                path: rel,
                rows: sorted.num_rows() as u64,
                bytes: size,
            });
        }
        let claims: Vec<RunClaim> = runs
            .iter()
            .map(|(run, _)| {
                let mut segments: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                for (name, _) in run.segments.values().flatten() {
                    let e = segments
                        .entry(name.writer.clone())
                        .or_insert((name.seq, name.seq));
                    e.0 = e.0.min(name.seq);
                    e.1 = e.1.max(name.seq);
                }
                RunClaim {
                    run_id: run.run_id.clone(),
                    segments,
                    meta: run.record_snapshot.clone().unwrap_or_default(),
                }
            })
            .collect();

        // Optimistic check: if another compaction claimed any of these runs meanwhile, give up
        // on this batch (its files stay unreferenced, for gc) rather than write a losing claim.
        let current = self.read_manifest(project).await?;
        let ours: HashSet<&str> = claims.iter().map(|c| c.run_id.as_str()).collect();
        let raced = claims
            .iter()
            .any(|c| current.claims(&c.run_id).any(|k| k.overlaps(c)));
        if raced {
            tracing::info!(
                project,
                runs = ours.len(),
                "another compaction claimed these runs first; skipping"
            );
            self.delete_all(written).await?;
            return Ok(());
        }

        let entry = ManifestEntry {
            version: PLAIN_VERSION,
            id: entry_id.clone(),
            created: now_us(),
            runs: claims,
            files,
            replaces: Vec::new(),
        };
        let body = serde_json::to_vec(&entry).map_err(|e| Error::Internal(e.to_string()))?;
        self.put(
            &self.layout().manifest_entry(project, &entry_id),
            Bytes::from(body),
        )
        .await?;
        report.runs += runs.len();

        // The runs are compacted: their live objects are garbage now.
        let mut consumed = Vec::new();
        for (run, _) in &runs {
            consumed.extend(
                run.segments
                    .values()
                    .flatten()
                    .map(|(_, m)| m.location.clone()),
            );
            consumed.extend(run.record_path.clone());
        }
        report.removed += consumed.len();
        self.delete_all(consumed).await
    }
}

/// The columns each table is sorted by in Parquet: run first, then key and time.
fn sort_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Runs => &["run_id"],
        Table::Params | Table::Tags => &["run_id", "key"],
        Table::Metrics => &["run_id", "key", "step", "ts"],
        Table::SystemMetrics => &["run_id", "key", "ts"],
        Table::Artifacts => &["run_id", "path"],
        Table::Logs => &["run_id", "ts"],
        Table::Inputs => &["run_id", "name"],
        Table::MetricSummary => &["run_id", "key"],
    }
}

/// Concatenates batches of a table and sorts them by the table's sort columns (stable, so
/// rows logged in order stay in order).
///
/// The sort columns are encoded once into arrow's byte-comparable row format and the row
/// indices sorted by those bytes: several times faster than a lexicographic sort that compares
/// column by column through dynamic comparators (it was the largest cost of a compaction).
pub(crate) fn sort_table(table: Table, batches: &[RecordBatch]) -> Result<RecordBatch> {
    use arrow::row::{RowConverter, SortField};
    let schema = table.schema();
    let all = concat_batches(&schema, batches)?;
    let n = all.num_rows();
    if n <= 1 {
        return Ok(all);
    }
    if table == Table::Metrics
        && let Some(order) = metric_order(&all)
    {
        return match order {
            None => Ok(all),
            Some(order) => {
                let idx = arrow::array::UInt32Array::from(order);
                Ok(take_record_batch(&all, &idx)?)
            }
        };
    }
    let columns: Vec<ArrayRef> = sort_columns(table)
        .iter()
        .filter_map(|name| all.column_by_name(name).cloned())
        .collect();
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&columns)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Segments mostly arrive in order already: then there is nothing to move.
    if order
        .windows(2)
        .all(|w| rows.row(w[0] as usize) <= rows.row(w[1] as usize))
    {
        return Ok(all);
    }
    // Stable: equal keys keep their logging order.
    order.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
    let idx = arrow::array::UInt32Array::from(order);
    Ok(take_record_batch(&all, &idx)?)
}

/// The order of `metrics` rows by (run_id, key, step, ts), ties in row order: `Some(None)` when
/// they are in order already; `None` when a sort column has nulls (the general path sorts
/// those). Run ids and keys are few: they are ranked once, and rows compare as four integers
/// instead of as encoded rows (that comparison was a quarter of a compaction's time).
fn metric_order(all: &RecordBatch) -> Option<Option<Vec<u32>>> {
    let run = string_column(all, "run_id").ok()?;
    let key = string_column(all, "key").ok()?;
    let step = all
        .column_by_name("step")?
        .as_primitive_opt::<Int64Type>()?;
    let ts = all
        .column_by_name("ts")?
        .as_primitive_opt::<TimestampMicrosecondType>()?;
    if [
        run.null_count(),
        key.null_count(),
        step.null_count(),
        ts.null_count(),
    ]
    .iter()
    .any(|&n| n > 0)
    {
        return None;
    }
    // Each distinct string's rank in byte order (the order arrow's row format gives).
    fn ranks<'a>(col: &'a arrow::array::StringArray) -> Vec<u32> {
        let mut ids: HashMap<&'a str, u32> = HashMap::new();
        let row_ids: Vec<u32> = (0..col.len())
            .map(|i| {
                let next = ids.len() as u32;
                *ids.entry(col.value(i)).or_insert(next)
            })
            .collect();
        let mut names: Vec<(&str, u32)> = ids.into_iter().collect();
        names.sort_unstable();
        let mut rank = vec![0u32; names.len()];
        for (r, (_, id)) in names.into_iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        row_ids.into_iter().map(|id| rank[id as usize]).collect()
    }
    let (run, key) = (ranks(run), ranks(key));
    let (step, ts) = (step.values(), ts.values());
    let at = |i: u32| {
        let i = i as usize;
        (run[i], key[i], step[i], ts[i])
    };
    let n = all.num_rows() as u32;
    if (1..n).all(|i| at(i - 1) <= at(i)) {
        return Some(None);
    }
    let mut order: Vec<u32> = (0..n).collect();
    // Stable: equal keys keep their logging order.
    order.sort_by_key(|&i| at(i));
    Some(Some(order))
}

/// The `metrics` rows of runs (each run's segment batches as stored, in write order) sorted by
/// run, key, step and time — ties in logging order — and their `metric_summary` rows: what
/// [`sort_table`] and [`summarize`] give over the same rows widened, without widening them
/// (a run id and a project per row), hashing keys per row, or comparing strings to sort. Each
/// run is sorted by itself, its keys ranked through its segments' dictionaries. `None` when a
/// batch is not in the layout this build writes (the caller takes the general path).
fn sorted_metrics(
    project: &str,
    runs: &[(&str, Vec<RecordBatch>)],
) -> Result<Option<(RecordBatch, RecordBatch)>> {
    use arrow::array::{AsArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::Int32Type;
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| runs[a].0.cmp(runs[b].0));
    let total: usize = runs
        .iter()
        .flat_map(|(_, b)| b)
        .map(RecordBatch::num_rows)
        .sum();
    let mut run_ids = StringBuilder::with_capacity(
        total,
        runs.iter().map(|r| r.0.len()).max().unwrap_or(0) * total,
    );
    let mut keys = StringBuilder::with_capacity(total, 8 * total);
    let (mut steps, mut times, mut values) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
    );
    let mut summary: Vec<((&str, &str, &str), Acc)> = Vec::new();
    // (key rank, step, time, value) of one run's points, reused run to run.
    let mut points: Vec<(u32, i64, i64, f64)> = Vec::new();
    for &r in &order {
        let (run, batches) = (runs[r].0, &runs[r].1);
        // The run's key names, each once, and each batch's dictionary codes mapped to them.
        let mut names: Vec<&str> = Vec::new();
        let mut ids: HashMap<&str, u32> = HashMap::new();
        // Per batch: its key column, and its dictionary codes mapped to the run's key ids.
        let mut codes = Vec::with_capacity(batches.len());
        for b in batches {
            let dict = b
                .column_by_name("key")
                .and_then(|c| c.as_dictionary_opt::<Int32Type>());
            let Some(dict) = dict else {
                return Ok(None);
            };
            let Some(values) = dict.values().as_string_opt::<i32>() else {
                return Ok(None);
            };
            let nulls = ["step", "ts", "value"]
                .iter()
                .map(|c| b.column_by_name(c).map_or(1, |c| c.null_count()))
                .sum::<usize>();
            if nulls + dict.keys().null_count() + values.null_count() > 0 {
                return Ok(None);
            }
            let ids_of_codes: Vec<u32> = (0..values.len())
                .map(|c| {
                    let name = values.value(c);
                    *ids.entry(name).or_insert_with(|| {
                        names.push(name);
                        (names.len() - 1) as u32
                    })
                })
                .collect();
            codes.push((dict, ids_of_codes));
        }
        // Ranks in byte order, as the row format compares strings.
        let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
        by_name.sort_by(|&a, &b| names[a as usize].cmp(names[b as usize]));
        let mut rank = vec![0u32; names.len()];
        for (r, &id) in by_name.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        points.clear();
        for (b, (dict, codes)) in batches.iter().zip(&codes) {
            let step = b
                .column_by_name("step")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
            let ts = b
                .column_by_name("ts")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>());
            let value = b
                .column_by_name("value")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>());
            let (Some(step), Some(ts), Some(value)) = (step, ts, value) else {
                return Ok(None);
            };
            for (i, &code) in dict.keys().values().iter().enumerate() {
                let Some(&id) = usize::try_from(code).ok().and_then(|c| codes.get(c)) else {
                    return Ok(None);
                };
                points.push((
                    rank[id as usize],
                    step.value(i),
                    ts.value(i),
                    value.value(i),
                ));
            }
        }
        // Stable: points at the same step and time keep their logging order.
        if !points.is_sorted_by_key(|p| (p.0, p.1, p.2)) {
            points.sort_by_key(|p| (p.0, p.1, p.2));
        }
        let mut start = 0;
        while start < points.len() {
            let k = points[start].0;
            let name = names[by_name[k as usize] as usize];
            let mut acc = Acc::point(points[start].1, points[start].2, points[start].3);
            let mut end = start + 1;
            while end < points.len() && points[end].0 == k {
                acc.merge(Acc::point(points[end].1, points[end].2, points[end].3));
                end += 1;
            }
            for &(_, step, ts, value) in &points[start..end] {
                run_ids.append_value(run);
                keys.append_value(name);
                steps.push(step);
                times.push(ts);
                values.push(value);
            }
            summary.push(((project, run, name), acc));
            start = end;
        }
    }
    let schema = Table::Metrics.schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef> {
            Ok(match f.name().as_str() {
                "project" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    project, total,
                ))),
                "run_id" => Arc::new(run_ids.finish()),
                "key" => Arc::new(keys.finish()),
                "step" => Arc::new(Int64Array::from(std::mem::take(&mut steps))),
                "ts" => Arc::new(
                    TimestampMicrosecondArray::from(std::mem::take(&mut times))
                        .with_timezone("UTC"),
                ),
                "value" => Arc::new(Float64Array::from(std::mem::take(&mut values))),
                other => {
                    return Err(Error::Internal(format!(
                        "metrics column {other} unknown to compaction"
                    )));
                }
            })
        })
        .collect::<Result<_>>()?;
    let sorted = RecordBatch::try_new(schema, columns)?;
    Ok(Some((sorted, summary_batch(summary)?)))
}

/// Writer settings per table: zstd; dictionaries for strings; delta encoding for steps and
/// times; byte-stream-split for float values (float32-born values leave whole byte planes
/// zero, which zstd then removes).
pub fn writer_properties(table: Table) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(match table {
            Table::Runs | Table::Params | Table::Tags | Table::MetricSummary => {
                SMALL_ROW_GROUP_ROWS
            }
            _ => ROW_GROUP_ROWS,
        }))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![
            KeyValue::new("runql.format_version".into(), FORMAT_VERSION.to_string()),
            KeyValue::new("runql.table".into(), table.name().to_string()),
        ]));
    let schema = table.schema();
    let sorting: Vec<SortingColumn> = sort_columns(table)
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    b = b.set_sorting_columns(Some(sorting));
    for field in schema.fields() {
        let path = ColumnPath::from(field.name().as_str());
        match field.data_type() {
            arrow::datatypes::DataType::Int64 | arrow::datatypes::DataType::Timestamp(..) => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
            }
            arrow::datatypes::DataType::Float64 => {
                b = b
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
            }
            _ => {}
        }
    }
    b.build()
}

/// Encodes a batch as a Parquet file.
pub fn write_parquet(table: Table, batch: &RecordBatch) -> Result<Bytes> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, table.schema(), Some(writer_properties(table)))
        .map_err(|e| Error::parquet(table, e))?;
    w.write(batch).map_err(|e| Error::parquet(table, e))?;
    w.close().map_err(|e| Error::parquet(table, e))?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Float64Type;

    use super::*;
    use crate::store::summary::{combine_summaries, summarize_points};
    use crate::store::testing::{points, show, stored};

    #[test]
    fn metrics_sorted_from_stored_segments_equal_the_general_sort_and_summary() {
        // Runs listed out of order ("ab" after "a" in byte order), dictionaries coding keys
        // differently batch to batch, steps out of order, a step logged twice at the same time
        // (logging order decides), NaN and -0.0.
        let runs: Vec<(&str, Vec<RecordBatch>)> = vec![
            (
                "ab",
                vec![stored(&["b", "a"], &[("b", 2, 5, 1.0), ("a", 0, 0, 6.0)])],
            ),
            (
                "a",
                vec![
                    stored(
                        &["loss", "val"],
                        &[
                            ("val", 1, 1, 2.0),
                            ("loss", 1, 9, 3.0),
                            ("loss", 1, 9, 4.0),
                            ("loss", 0, 20, f64::NAN),
                        ],
                    ),
                    stored(
                        &["val", "loss", "lr"],
                        &[
                            ("loss", 1, 3, -0.0),
                            ("lr", 0, 0, 1e-3),
                            ("loss", 1, 9, 5.0),
                            ("val", 0, 0, 0.0),
                        ],
                    ),
                ],
            ),
            ("b", vec![stored(&["x"], &[("x", 0, 0, 1.0)])]),
        ];
        let (sorted, summary) = sorted_metrics("p", &runs)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("stored segments take the fast path"));
        let wide: Vec<RecordBatch> = runs
            .iter()
            .flat_map(|(run, batches)| {
                batches.iter().map(move |b| {
                    segment::widen(Table::Metrics, "p", run, b).unwrap_or_else(|e| panic!("{e}"))
                })
            })
            .collect();
        let general = sort_table(Table::Metrics, &wide).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(show(&sorted), show(&general));
        let general_summary = summarize(&general).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(show(&summary), show(&general_summary));
        assert_eq!(sorted.num_rows(), 11);
        assert_eq!(summary.num_rows(), 6);
    }

    #[test]
    fn folded_and_combined_summaries_equal_the_sorted_summary() {
        // Three segments of two runs: steps out of order, a step logged again (same time: the
        // later segment wins), NaN only in one piece, -0.0 against 0.0, keys in one piece only.
        let pieces = [
            points(&[
                ("a", "loss", 5, 50, 0.5),
                ("a", "loss", 1, 10, 0.9),
                ("a", "acc", 0, 5, f64::NAN),
                ("b", "loss", 0, 1, 0.0),
            ]),
            points(&[
                ("a", "loss", 5, 50, 0.4),
                ("a", "loss", 3, 30, -0.0),
                ("b", "loss", 2, 1, 2.0),
                ("b", "lr", 0, 1, 1e-3),
            ]),
            points(&[("a", "acc", 1, 6, 0.7), ("b", "loss", 1, 9, -0.0)]),
        ];
        let whole =
            summarize(&sort_table(Table::Metrics, &pieces).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        let parts: Vec<RecordBatch> = pieces
            .iter()
            .map(|p| {
                summarize(
                    &sort_table(Table::Metrics, std::slice::from_ref(p))
                        .unwrap_or_else(|e| panic!("{e}")),
                )
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let combined = combine_summaries(&parts).unwrap_or_else(|e| panic!("{e}"));
        let folded = summarize_points(&pieces).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(show(&combined), show(&whole));
        assert_eq!(show(&folded), show(&whole));
        assert_eq!(whole.num_rows(), 4);
    }

    #[test]
    fn metrics_sort_by_run_key_step_time_keeping_logging_order_on_ties() {
        let rows = [
            ("b", "loss", 2, 5, 1.0),
            ("a", "val", 1, 1, 2.0),
            ("a", "loss", 1, 9, 3.0),
            ("a", "loss", 1, 9, 4.0),
            ("a", "loss", 0, 20, 5.0),
            ("ab", "a", 0, 0, 6.0),
            ("a", "loss", 1, 3, 7.0),
        ];
        let sorted = sort_table(Table::Metrics, &[points(&rows)]).unwrap_or_else(|e| panic!("{e}"));
        let mut expected: Vec<usize> = (0..rows.len()).collect();
        expected.sort_by_key(|&i| (rows[i].0, rows[i].1, rows[i].2, rows[i].3));
        let values: Vec<f64> = sorted
            .column(5)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        let want: Vec<f64> = expected.iter().map(|&i| rows[i].4).collect();
        assert_eq!(values, want);
        // Already sorted input comes back as is.
        let again = sort_table(Table::Metrics, std::slice::from_ref(&sorted))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, sorted);
    }
}
