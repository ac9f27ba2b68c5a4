//! Metric histories: `metrics/get-history` (one run, paged), and the two bulk reads MLflow's
//! UI draws its charts from: `metrics/get-history-bulk` (every point of up to 100 runs) and
//! `metrics/get-history-bulk-interval` (each run's points sampled evenly, its ends kept).

use axum::response::{IntoResponse, Response};
use runql_core::store::{f64_column, i64_column, string_column, timestamp_column};
use runql_core::{Scan, Table};
use serde::Deserialize;
use serde_json::{Value, json};

use super::held::{flush_if_open, read_record};
use super::state::{Mlflow, State};
use super::wire::{self, Int, Strings, page_offset, run_id_of};
use crate::error::ApiError;
use crate::request::{MlflowQuery, Read};

/// One point of a history: (step, timestamp in µs, value).
type Point = (i64, i64, f64);

/// Every point of `key` in `run_id`, ordered by (step, timestamp). System metrics
/// (`system/…`) have no step: MLflow numbers a key's samples 0, 1, 2…, and so does this.
async fn points(s: &Mlflow, run_id: &str, key: &str) -> Result<Vec<Point>, ApiError> {
    flush_if_open(s, run_id).await?;
    let record = read_record(s, run_id).await?;
    let scan = Scan::project(&record.project).runs([run_id]).keys([key]);
    let mut points: Vec<Point> = Vec::new();
    if super::logging::is_system(key) {
        let mut samples = Vec::new();
        for b in s.store().scan(Table::SystemMetrics, &scan).await? {
            let (k, ts, v) = (
                string_column(&b, "key")?,
                timestamp_column(&b, "ts")?,
                f64_column(&b, "value")?,
            );
            for i in 0..b.num_rows() {
                if k.value(i) == key {
                    samples.push((ts.value(i), v.value(i)));
                }
            }
        }
        samples.sort_by_key(|a| a.0);
        points.extend(
            samples
                .into_iter()
                .enumerate()
                .map(|(i, (ts, v))| (i as i64, ts, v)),
        );
    } else {
        for b in s.store().scan(Table::Metrics, &scan).await? {
            let (step, ts, v) = (
                i64_column(&b, "step")?,
                timestamp_column(&b, "ts")?,
                f64_column(&b, "value")?,
            );
            for i in 0..b.num_rows() {
                points.push((step.value(i), ts.value(i), v.value(i)));
            }
        }
    }
    points.sort_by_key(|p| (p.0, p.1));
    Ok(points)
}

/// The points of a run the bulk reads answer with: none for a run that does not exist (as
/// MLflow's SQL store answers), every other error as it is.
async fn points_or_none(s: &Mlflow, run_id: &str, key: &str) -> Result<Vec<Point>, ApiError> {
    match points(s, run_id, key).await {
        Err(e) if e.status_and_code().0 == axum::http::StatusCode::NOT_FOUND => Ok(Vec::new()),
        other => other,
    }
}

/// The latest sample of each system metric (`system/…`) of each run in these
/// `system_metrics` batches, as MLflow's `Metric`s by run id (the step is the sample's
/// number, as `get-history` numbers them): MLflow lists them among a run's latest metrics.
pub(crate) fn latest_system(
    batches: &[arrow::array::RecordBatch],
) -> Result<std::collections::HashMap<String, Vec<Value>>, ApiError> {
    let mut latest: std::collections::BTreeMap<(&str, &str), (i64, i64, f64)> = Default::default();
    for b in batches {
        let (id, k, ts, v) = (
            string_column(b, "run_id")?,
            string_column(b, "key")?,
            timestamp_column(b, "ts")?,
            f64_column(b, "value")?,
        );
        for i in 0..b.num_rows() {
            if !super::logging::is_system(k.value(i)) {
                continue;
            }
            let e = latest
                .entry((id.value(i), k.value(i)))
                .or_insert((-1, i64::MIN, 0.0));
            e.0 += 1;
            if ts.value(i) >= e.1 {
                (e.1, e.2) = (ts.value(i), v.value(i));
            }
        }
    }
    let mut out: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for ((id, key), point) in latest {
        out.entry(id.to_string())
            .or_default()
            .push(metric_json(key, point, None));
    }
    Ok(out)
}

/// MLflow's `Metric` (with its run id when `run_id` is given).
fn metric_json(key: &str, (step, ts, v): Point, run_id: Option<&str>) -> Value {
    let mut m = json!({"key": key, "value": wire::double(v), "timestamp": ts / 1000, "step": step});
    if let Some(id) = run_id {
        m["run_id"] = json!(id);
    }
    m
}

/// `metrics/get-history`.
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    run_id: Option<String>,
    run_uuid: Option<String>,
    metric_key: String,
    max_results: Option<Int>,
    page_token: Option<String>,
}

pub(crate) async fn get_history(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let run_id = run_id_of(q.run_id, q.run_uuid)?;
    let points = points(&s, &run_id, &q.metric_key).await?;
    let start = page_offset(q.page_token.as_deref())?;
    let limit = q.max_results.map_or(25_000, |m| m.0).clamp(1, 25_000) as usize;
    let page: Vec<Value> = points
        .iter()
        .skip(start)
        .take(limit)
        .map(|p| metric_json(&q.metric_key, *p, None))
        .collect();
    let more = start + limit < points.len();
    Ok(wire::page("metrics", page, more.then_some(start + limit)))
}

/// Most runs one bulk read names.
const MAX_BULK_RUNS: usize = 100;
/// Most points `metrics/get-history-bulk` answers with, all runs together.
const MAX_BULK_POINTS: usize = 25_000;
/// Most points per run `metrics/get-history-bulk-interval` is asked for.
const MAX_INTERVAL_STEPS: i64 = 2_500;

/// `metrics/get-history-bulk` (MLflow serves it under `/ajax-api` only).
#[derive(Debug, Deserialize)]
pub(crate) struct BulkQuery {
    #[serde(default)]
    run_id: Strings,
    metric_key: Option<String>,
    max_results: Option<Int>,
}

/// Every point of `metric_key` in each of `run_id` (repeated), runs in id order and each
/// run's points by (timestamp, step, value), at most `max_results` (25,000) in all.
pub(crate) async fn get_history_bulk(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<BulkQuery>,
) -> Result<Response, ApiError> {
    let mut run_ids = q.run_id.0;
    if run_ids.is_empty() {
        return Err(ApiError::invalid(
            "GetMetricHistoryBulk request must specify at least one run_id.",
        ));
    }
    if run_ids.len() > MAX_BULK_RUNS {
        return Err(ApiError::invalid(format!(
            "GetMetricHistoryBulk request cannot specify more than {MAX_BULK_RUNS} run_ids. \
             Received {} run_ids.",
            run_ids.len()
        )));
    }
    let Some(key) = q.metric_key else {
        return Err(ApiError::invalid(
            "GetMetricHistoryBulk request must specify a metric_key.",
        ));
    };
    let max = q
        .max_results
        .map_or(MAX_BULK_POINTS as i64, |m| m.0)
        .clamp(0, MAX_BULK_POINTS as i64) as usize;
    run_ids.sort();
    let mut metrics = Vec::new();
    for run_id in &run_ids {
        if metrics.len() >= max {
            break;
        }
        let mut points = points_or_none(&s, run_id, &key).await?;
        points.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)).then(a.2.total_cmp(&b.2)));
        let room = max - metrics.len();
        metrics.extend(
            points
                .into_iter()
                .take(room)
                .map(|p| metric_json(&key, p, Some(run_id))),
        );
    }
    Ok(axum::Json(json!({ "metrics": metrics })).into_response())
}

/// `metrics/get-history-bulk-interval`.
#[derive(Debug, Deserialize)]
pub(crate) struct IntervalQuery {
    #[serde(default)]
    run_ids: Strings,
    metric_key: Option<String>,
    start_step: Option<Int>,
    end_step: Option<Int>,
    max_results: Option<Int>,
}

/// Each run's points of `metric_key` (in `[start_step, end_step]` when given), sampled to at
/// most `max_results` (default and most 2,500) spread evenly over the run's points, its last
/// point always kept: what MLflow's UI draws a chart from.
pub(crate) async fn get_history_bulk_interval(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<IntervalQuery>,
) -> Result<Response, ApiError> {
    let run_ids = q.run_ids.0;
    if run_ids.is_empty() {
        return Err(ApiError::missing("run_ids"));
    }
    if run_ids.len() > MAX_BULK_RUNS {
        return Err(ApiError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} run_ids. \
             Received {} run_ids.",
            run_ids.len()
        )));
    }
    let Some(key) = q.metric_key.filter(|k| !k.is_empty()) else {
        return Err(ApiError::missing("metric_key"));
    };
    let max = q.max_results.map_or(MAX_INTERVAL_STEPS, |m| m.0);
    if !(1..=MAX_INTERVAL_STEPS).contains(&max) {
        return Err(ApiError::invalid(format!(
            "max_results must be between 1 and {MAX_INTERVAL_STEPS}."
        )));
    }
    let range = match (q.start_step, q.end_step) {
        (Some(a), Some(b)) if a.0 > b.0 => {
            return Err(ApiError::invalid(format!(
                "end_step must be greater than start_step. Found start_step={} and end_step={}.",
                a.0, b.0
            )));
        }
        (Some(a), Some(b)) => Some(a.0..=b.0),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid(
                "If either start step or end step are specified, both must be specified.",
            ));
        }
    };
    let mut metrics = Vec::new();
    for run_id in &run_ids {
        let mut points = points_or_none(&s, run_id, &key).await?;
        if let Some(range) = &range {
            points.retain(|p| range.contains(&p.0));
        }
        points.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        metrics.extend(
            sampled(&points, max as usize)
                .into_iter()
                .map(|p| metric_json(&key, p, Some(run_id))),
        );
    }
    Ok(wire::page("metrics", metrics, None))
}

/// At most `max` of a run's points (ordered by step, timestamp, value), as MLflow's SQL store
/// samples them: the points cut into `max` buckets as even as can be (SQL's `NTILE`, the
/// first buckets one longer when they do not divide evenly), the first point of each, and
/// the last point in place of the last sample, so the curve keeps both its ends. Fewer
/// points than `max`: all of them.
fn sampled(points: &[Point], max: usize) -> Vec<Point> {
    let n = points.len();
    if n <= max {
        return points.to_vec();
    }
    let (q, r) = (n / max, n % max);
    let mut out: Vec<Point> = (0..max).map(|b| points[b * q + b.min(r)]).collect();
    if let (Some(last), Some(kept)) = (points.last(), out.last_mut()) {
        *kept = *last;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(points: &[Point]) -> Vec<i64> {
        points.iter().map(|p| p.0).collect()
    }

    fn run(steps: impl IntoIterator<Item = i64>) -> Vec<Point> {
        steps.into_iter().map(|s| (s, s * 10, s as f64)).collect()
    }

    #[test]
    fn few_points_are_all_kept() {
        assert_eq!(steps(&sampled(&run(5..8), 3)), vec![5, 6, 7]);
        assert_eq!(steps(&sampled(&run(0..0), 3)), Vec::<i64>::new());
    }

    #[test]
    fn many_points_keep_each_buckets_first_and_the_last() {
        // 10 points in 3 buckets of 4, 3, 3: their first points 0, 4, 7; 9 replaces 7.
        assert_eq!(steps(&sampled(&run(0..10), 3)), vec![0, 4, 9]);
        // 1,000 points, 10 buckets of 100.
        assert_eq!(
            steps(&sampled(&run(0..1000), 10)),
            vec![0, 100, 200, 300, 400, 500, 600, 700, 800, 999]
        );
        // One sample: the last point.
        assert_eq!(steps(&sampled(&run(0..10), 1)), vec![9]);
    }

    #[test]
    fn points_logged_at_one_step_are_sampled_as_points() {
        // log_metric without a step logs every point at step 0: sampling by point keeps the
        // answer at `max` points and the curve's shape.
        let same: Vec<Point> = (0..100).map(|i| (0, i, i as f64)).collect();
        let kept = sampled(&same, 4);
        assert_eq!(
            kept.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![0, 25, 50, 99]
        );
    }
}
