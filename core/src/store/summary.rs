//! Metric summaries: the `metric_summary` rows (count, min, max, first and last step, last value
//! and time per run and key) of metric points, folded from points sorted or in write order, from
//! a live metrics segment as stored, or combined from the summaries of pieces of a run's points.
//! Compaction writes them; readers fold a live run's from its segments' summaries.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};

use super::rows::{f64_column, i64_column, string_column, timestamp_column};
use super::segment;
use crate::error::{Error, Result};
use crate::schema::Table;

/// The `metric_summary` rows of some `metrics` rows of any runs, in write order (of two points
/// at the same step and time, the later row is the last value), in one pass without sorting.
pub fn summarize_metrics(metrics: &[RecordBatch]) -> Result<RecordBatch> {
    summarize_points(metrics)
}

/// The `metric_summary` rows of a `metrics` batch sorted by (run_id, key, step, ts).
pub(crate) fn summarize(metrics: &RecordBatch) -> Result<RecordBatch> {
    let project = string_column(metrics, "project")?;
    let run = string_column(metrics, "run_id")?;
    let key = string_column(metrics, "key")?;
    let (step, ts, value) = point_columns(metrics)?;
    let point = |i: usize| Acc::point(step.value(i), ts.value(i), value.value(i));
    // Sorted input: each run and key is one run of rows, folded in order.
    let mut rows: Vec<((&str, &str, &str), Acc)> = Vec::new();
    let n = metrics.num_rows();
    let mut start = 0;
    while start < n {
        let mut acc = point(start);
        let mut end = start + 1;
        while end < n && run.value(end) == run.value(start) && key.value(end) == key.value(start) {
            acc.merge(point(end));
            end += 1;
        }
        rows.push((
            (project.value(start), run.value(start), key.value(start)),
            acc,
        ));
        start = end;
    }
    summary_batch(rows)
}

/// One run and key's summary being folded.
pub(super) struct Acc {
    count: i64,
    min: Option<f64>,
    max: Option<f64>,
    first: i64,
    /// (step, time, value) of the last point: highest (step, time), a tie going to the later.
    last: (i64, i64, f64),
}

impl Acc {
    /// One point's summary.
    pub(super) fn point(step: i64, ts: i64, value: f64) -> Acc {
        let finite = (!value.is_nan()).then_some(value);
        Acc {
            count: 1,
            min: finite,
            max: finite,
            first: step,
            last: (step, ts, value),
        }
    }

    /// Folds in the summary of points logged after this one's.
    pub(super) fn merge(&mut self, other: Acc) {
        self.count += other.count;
        if let Some(v) = other.min {
            self.min = Some(self.min.map_or(v, |m| {
                if v < m || (v == m && v.is_sign_negative()) {
                    v
                } else {
                    m
                }
            }));
        }
        if let Some(v) = other.max {
            self.max = Some(self.max.map_or(v, |m| {
                if v > m || (v == m && m.is_sign_negative()) {
                    v
                } else {
                    m
                }
            }));
        }
        self.first = self.first.min(other.first);
        if (other.last.0, other.last.1) >= (self.last.0, self.last.1) {
            self.last = other.last;
        }
    }
}

/// Summaries folded in write order, keyed by (project, run, key) borrowed from the batches.
#[derive(Default)]
struct Fold<'a> {
    index: HashMap<(&'a str, &'a str, &'a str), usize>,
    accs: Vec<((&'a str, &'a str, &'a str), Acc)>,
}

impl<'a> Fold<'a> {
    fn add(&mut self, id: (&'a str, &'a str, &'a str), acc: Acc) {
        match self.index.get(&id) {
            Some(&i) => self.accs[i].1.merge(acc),
            None => {
                self.index.insert(id, self.accs.len());
                self.accs.push((id, acc));
            }
        }
    }

    /// The `metric_summary` rows, by run and key.
    fn finish(mut self) -> Result<RecordBatch> {
        self.accs
            .sort_by(|a, b| (a.0.1, a.0.2).cmp(&(b.0.1, b.0.2)));
        summary_batch(self.accs)
    }
}

/// `metric_summary` rows out of folded summaries, in the given order.
pub(super) fn summary_batch(rows: Vec<((&str, &str, &str), Acc)>) -> Result<RecordBatch> {
    let mut b_project = StringBuilder::new();
    let mut b_run = StringBuilder::new();
    let mut b_key = StringBuilder::new();
    let mut b_count = Int64Builder::new();
    let mut b_min = Float64Builder::new();
    let mut b_max = Float64Builder::new();
    let mut b_first = Int64Builder::new();
    let mut b_last_step = Int64Builder::new();
    let mut b_last_value = Float64Builder::new();
    let mut b_last_ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for ((project, run, key), a) in rows {
        b_project.append_value(project);
        b_run.append_value(run);
        b_key.append_value(key);
        b_count.append_value(a.count);
        b_min.append_option(a.min);
        b_max.append_option(a.max);
        b_first.append_value(a.first);
        b_last_step.append_value(a.last.0);
        b_last_value.append_value(a.last.2);
        b_last_ts.append_value(a.last.1);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(b_project.finish()),
        Arc::new(b_run.finish()),
        Arc::new(b_key.finish()),
        Arc::new(b_count.finish()),
        Arc::new(b_min.finish()),
        Arc::new(b_max.finish()),
        Arc::new(b_first.finish()),
        Arc::new(b_last_step.finish()),
        Arc::new(b_last_value.finish()),
        Arc::new(b_last_ts.finish()),
    ];
    Ok(RecordBatch::try_new(Table::MetricSummary.schema(), cols)?)
}

/// The step, time and value columns of `metrics` rows (full or segment schema).
type PointColumns<'a> = (
    &'a arrow::array::Int64Array,
    &'a arrow::array::TimestampMicrosecondArray,
    &'a arrow::array::Float64Array,
);

fn point_columns(b: &RecordBatch) -> Result<PointColumns<'_>> {
    Ok((
        i64_column(b, "step")?,
        timestamp_column(b, "ts")?,
        f64_column(b, "value")?,
    ))
}

/// The `metric_summary` rows of `metrics` rows in write order, in one pass (no sort): the rows
/// `summarize` gives over the same points sorted.
pub(crate) fn summarize_points(metrics: &[RecordBatch]) -> Result<RecordBatch> {
    let mut fold = Fold::default();
    for b in metrics {
        let (project, run, key) = (
            string_column(b, "project")?,
            string_column(b, "run_id")?,
            string_column(b, "key")?,
        );
        let (step, ts, value) = point_columns(b)?;
        for i in 0..b.num_rows() {
            fold.add(
                (project.value(i), run.value(i), key.value(i)),
                Acc::point(step.value(i), ts.value(i), value.value(i)),
            );
        }
    }
    fold.finish()
}

/// The `metric_summary` rows of one live metrics segment of a run, from its batches as stored
/// (keys dictionary-encoded, no project or run column): the rows [`summarize_points`] gives
/// over the same rows widened, without widening them — a point costs an index into its
/// batch's dictionary, not a hash of three strings.
pub(crate) fn summarize_segment(
    project: &str,
    run: &str,
    raw: &[RecordBatch],
) -> Result<RecordBatch> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut accs: Vec<(&str, Option<Acc>)> = Vec::new();
    for b in raw {
        let dict = b
            .column_by_name("key")
            .and_then(|c| c.as_dictionary_opt::<Int32Type>())
            .filter(|d| d.keys().null_count() == 0);
        let Some(dict) = dict else {
            // Not the layout this build writes: widen and fold the general way.
            let wide: Vec<RecordBatch> = raw
                .iter()
                .map(|b| segment::widen(Table::Metrics, project, run, b))
                .collect::<Result<_>>()?;
            return summarize_points(&wide);
        };
        let names = dict.values().as_string_opt::<i32>().ok_or_else(|| {
            Error::Internal("metrics segment keys are not a string dictionary".into())
        })?;
        let (step, ts, value) = point_columns(b)?;
        // Dictionary code -> the fold's slot, looked up once per code and batch.
        let mut slots: Vec<Option<usize>> = vec![None; names.len()];
        for (i, &code) in dict.keys().values().iter().enumerate() {
            let code = usize::try_from(code)
                .ok()
                .filter(|&c| c < names.len())
                .ok_or_else(|| Error::Internal("metrics segment key code out of range".into()))?;
            let slot = match slots[code] {
                Some(slot) => slot,
                None => {
                    let name = names.value(code);
                    let slot = *index.entry(name).or_insert_with(|| {
                        accs.push((name, None));
                        accs.len() - 1
                    });
                    slots[code] = Some(slot);
                    slot
                }
            };
            let point = Acc::point(step.value(i), ts.value(i), value.value(i));
            match &mut accs[slot].1 {
                Some(acc) => acc.merge(point),
                empty => *empty = Some(point),
            }
        }
    }
    let mut rows: Vec<((&str, &str, &str), Acc)> = accs
        .into_iter()
        .filter_map(|(key, acc)| Some(((project, run, key), acc?)))
        .collect();
    rows.sort_by(|a, b| a.0.2.cmp(b.0.2));
    summary_batch(rows)
}

/// `metric_summary` rows of pieces of a run's points (segments, in write order) folded into
/// one row per run and key: the rows `summarize` gives over all those points at once (counts
/// add up, first is the lowest step, last the highest (step, time) with a tie going to the
/// later piece, and min and max keep their -0.0 and NaN rules).
pub(crate) fn combine_summaries(parts: &[RecordBatch]) -> Result<RecordBatch> {
    if let [one] = parts {
        return Ok(one.clone());
    }
    let mut fold = Fold::default();
    for b in parts {
        let (project, run, key) = (
            string_column(b, "project")?,
            string_column(b, "run_id")?,
            string_column(b, "key")?,
        );
        let (count, first, last_step) = (
            i64_column(b, "count")?,
            i64_column(b, "first_step")?,
            i64_column(b, "last_step")?,
        );
        let (min, max, last_value) = (
            f64_column(b, "min")?,
            f64_column(b, "max")?,
            f64_column(b, "last_value")?,
        );
        let last_ts = timestamp_column(b, "last_ts")?;
        for i in 0..b.num_rows() {
            let opt = |a: &arrow::array::Float64Array| a.is_valid(i).then(|| a.value(i));
            fold.add(
                (project.value(i), run.value(i), key.value(i)),
                Acc {
                    count: count.value(i),
                    min: opt(min),
                    max: opt(max),
                    first: first.value(i),
                    last: (last_step.value(i), last_ts.value(i), last_value.value(i)),
                },
            );
        }
    }
    fold.finish()
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;
    use crate::store::testing::{show, stored};

    #[test]
    fn summary_min_max_ignore_nan_and_keep_signed_zero() {
        let schema = Table::Metrics.schema();
        let n = 4;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::StringArray::from(vec!["p"; n])),
                Arc::new(arrow::array::StringArray::from(vec!["r"; n])),
                Arc::new(arrow::array::StringArray::from(vec!["k"; n])),
                Arc::new(arrow::array::Int64Array::from(vec![0, 1, 2, 3])),
                Arc::new(
                    arrow::array::TimestampMicrosecondArray::from(vec![1, 2, 3, 4])
                        .with_timezone("UTC"),
                ),
                Arc::new(arrow::array::Float64Array::from(vec![
                    f64::NAN,
                    0.0,
                    -0.0,
                    f64::NAN,
                ])),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let s = summarize(&batch).unwrap_or_else(|e| panic!("{e}"));
        let min = s.column(4).as_primitive::<Float64Type>().value(0);
        let last = s.column(8).as_primitive::<Float64Type>().value(0);
        assert!(min == 0.0 && min.is_sign_negative());
        assert!(last.is_nan());
        assert_eq!(s.column(3).as_primitive::<Int64Type>().value(0), 4);
    }

    #[test]
    fn a_segment_summarized_as_stored_equals_its_widened_rows_summarized() {
        // Two batches whose dictionaries code the same keys differently, a key of the second
        // only, a step logged again at the same time (the later wins), NaN and -0.0.
        let batches = [
            stored(
                &["loss", "acc"],
                &[
                    ("loss", 5, 50, 0.5),
                    ("acc", 0, 5, f64::NAN),
                    ("loss", 1, 10, 0.0),
                    ("acc", 1, 6, 0.7),
                ],
            ),
            stored(
                &["lr", "acc", "loss"],
                &[
                    ("loss", 5, 50, 0.4),
                    ("loss", 3, 30, -0.0),
                    ("lr", 0, 1, 1e-3),
                    ("acc", 0, 5, f64::NAN),
                ],
            ),
        ];
        // Through the IPC stream, as segments are read.
        let bytes = segment::encode(Table::Metrics, &batches).unwrap_or_else(|e| panic!("{e}"));
        let raw = segment::decode_raw(bytes, &"test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(raw.len(), 2);
        let ours = summarize_segment("p", "r", &raw).unwrap_or_else(|e| panic!("{e}"));
        let wide: Vec<RecordBatch> = raw
            .iter()
            .map(|b| segment::widen(Table::Metrics, "p", "r", b).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let theirs = summarize_points(&wide).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(show(&ours), show(&theirs));
        assert_eq!(ours.num_rows(), 3);
    }
}
