//! runql's SQL functions: `curves(points)`, learning curves downsampled for plotting.
//!
//! `SELECT * FROM curves(500) WHERE run_id IN (…) AND key = 'val_loss'` returns the `metrics`
//! rows of each (run, key) series, at most `points` of them per series: the first, last, lowest
//! and highest point of each of `points / 4` step buckets (the M4 selection, which keeps the
//! shape a chart of that width would draw, spikes included). Series with fewer points come back
//! whole. Filters on the call's output are applied before downsampling and prune what is read.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{Float64Type, Int64Type, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, Result as DFResult, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use futures::stream;
use runql_core::Store;
use runql_core::schema::Table;

use crate::table::StoreTable;

/// runql's functions with what they do, for the SQL reference.
pub(crate) const FUNCTIONS: &[(&str, &str)] = &[
    (
        "sparkline(step, value [, width])",
        "Aggregate: draws the series as `width` (default 20) block characters `▁▂▃▄▅▆▇█`, each \
         the mean of a bucket of steps, scaled between the series' lowest and highest mean \
         (NaN and ±inf left out; NULL when nothing is left). A learning curve in a table cell: \
         `SELECT run_id, sparkline(step, value) FROM metrics WHERE key = 'loss' GROUP BY run_id`.",
    ),
    (
        "curves([points])",
        "Table function: the `metrics` rows of each (project, run, key) series, at most `points` \
     (default 1000, at least 4) per series: the first, last, lowest and highest point of each of \
     `points / 4` step buckets (M4 downsampling, which keeps the shape a chart draws, spikes \
     included). Shorter series come back whole. `WHERE` filters on its columns apply before \
     downsampling and prune what is read: `SELECT * FROM curves(500) WHERE run_id IN (…) AND key \
     = 'val_loss'`.",
    ),
];

/// Points per series when `curves()` is called without an argument.
pub const DEFAULT_CURVE_POINTS: i64 = 1000;

/// Registers runql's functions on a session.
pub(crate) fn register(ctx: &SessionContext, store: &Store, objects: &ObjectStoreUrl) {
    let metrics = Arc::new(StoreTable::new(
        store.clone(),
        Table::Metrics,
        objects.clone(),
    ));
    ctx.register_udtf("curves", Arc::new(Curves { metrics }));
    ctx.register_udaf(datafusion::logical_expr::AggregateUDF::from(
        crate::sparkline::Sparkline::new(),
    ));
}

#[derive(Debug)]
struct Curves {
    metrics: Arc<StoreTable>,
}

impl TableFunctionImpl for Curves {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> DFResult<Arc<dyn TableProvider>> {
        let points = match args.exprs() {
            [] => DEFAULT_CURVE_POINTS,
            [Expr::Literal(v, _)] => match v {
                ScalarValue::Int64(Some(n)) => *n,
                ScalarValue::Int32(Some(n)) => i64::from(*n),
                ScalarValue::UInt64(Some(n)) => i64::try_from(*n).unwrap_or(i64::MAX),
                other => {
                    return plan_err!(
                        "curves(points) takes a whole number of points per series, not {other}"
                    );
                }
            },
            _ => {
                return plan_err!(
                    "curves(points) takes one argument, the number of points per series \
                     (e.g. curves(500)); filter runs and keys with WHERE"
                );
            }
        };
        if points < 4 {
            return plan_err!("curves(points): points must be at least 4, got {points}");
        }
        Ok(Arc::new(CurvesTable {
            metrics: self.metrics.clone(),
            points: points as usize,
        }))
    }
}

#[derive(Debug)]
struct CurvesTable {
    metrics: Arc<StoreTable>,
    points: usize,
}

#[async_trait]
impl TableProvider for CurvesTable {
    fn schema(&self) -> SchemaRef {
        self.metrics.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        crate::pushdown::inexact(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let schema = self.metrics.schema();
        let mut input = self.metrics.scan(state, None, filters, None).await?;
        // Downsample what the filters select, not more: apply them exactly first.
        if let Some(predicate) = conjunction(filters.to_vec()) {
            let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
            let predicate = state.create_physical_expr(predicate, &df_schema)?;
            input = Arc::new(FilterExec::try_new(predicate, input)?);
        }
        let part = Arc::new(Downsample {
            schema: schema.clone(),
            input,
            points: self.points,
        });
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![part],
            projection,
            Vec::new(),
            false,
            None,
        )?))
    }
}

#[derive(Debug)]
struct Downsample {
    schema: SchemaRef,
    input: Arc<dyn ExecutionPlan>,
    points: usize,
}

impl PartitionStream for Downsample {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let input = self.input.clone();
        let schema = self.schema.clone();
        let points = self.points;
        let out = stream::once(async move {
            let batches = collect(input, ctx).await?;
            downsample(&schema, &batches, points)
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), out))
    }
}

/// At most `points` rows per (project, run_id, key) series of `metrics` rows, in step order.
fn downsample(schema: &SchemaRef, batches: &[RecordBatch], points: usize) -> DFResult<RecordBatch> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() == 0 {
        return Ok(all);
    }
    let sort: Vec<SortColumn> = ["project", "run_id", "key", "step", "ts"]
        .iter()
        .filter_map(|c| all.column_by_name(c))
        .map(|c| SortColumn {
            values: c.clone(),
            options: None,
        })
        .collect();
    let all = take_record_batch(&all, &lexsort_to_indices(&sort, None)?)?;
    let col = |name: &str| {
        all.column_by_name(name).ok_or_else(|| {
            datafusion::error::DataFusionError::Internal(format!("metrics.{name} missing"))
        })
    };
    let (project, run, key) = (
        col("project")?.as_string::<i32>(),
        col("run_id")?.as_string::<i32>(),
        col("key")?.as_string::<i32>(),
    );
    let step = col("step")?.as_primitive::<Int64Type>();
    let value = col("value")?.as_primitive::<Float64Type>();

    let mut keep: Vec<u32> = Vec::new();
    let n = all.num_rows();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n
            && run.value(end) == run.value(start)
            && key.value(end) == key.value(start)
            && project.value(end) == project.value(start)
        {
            end += 1;
        }
        m4(step, value, start, end, points, &mut keep);
        start = end;
    }
    Ok(take_record_batch(&all, &UInt32Array::from(keep))?)
}

/// Appends the rows of `start..end` (one series, sorted by step) that M4 keeps.
fn m4(
    step: &arrow::array::Int64Array,
    value: &arrow::array::Float64Array,
    start: usize,
    end: usize,
    points: usize,
    keep: &mut Vec<u32>,
) {
    if end - start <= points {
        keep.extend((start..end).map(|i| i as u32));
        return;
    }
    let buckets = (points / 4).max(1) as i128;
    let lo = step.value(start) as i128;
    let span = step.value(end - 1) as i128 - lo + 1;
    let bucket_of = |i: usize| ((step.value(i) as i128 - lo) * buckets / span) as i64;
    let mut i = start;
    while i < end {
        let b = bucket_of(i);
        let first = i;
        let (mut min, mut max) = (None::<usize>, None::<usize>);
        while i < end && bucket_of(i) == b {
            let v = value.value(i);
            if value.is_valid(i) && !v.is_nan() {
                if min.is_none_or(|m| v < value.value(m)) {
                    min = Some(i);
                }
                if max.is_none_or(|m| v > value.value(m)) {
                    max = Some(i);
                }
            }
            i += 1;
        }
        let mut picked = vec![first, i - 1];
        picked.extend(min);
        picked.extend(max);
        picked.sort_unstable();
        picked.dedup();
        keep.extend(picked.into_iter().map(|p| p as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};

    #[test]
    fn m4_keeps_extremes_and_ends_of_each_bucket() {
        let steps = Int64Array::from_iter_values(0..1000);
        let values = Float64Array::from_iter_values(
            (0..1000).map(|i| if i == 500 { 100.0 } else { (i % 7) as f64 }),
        );
        let mut keep = Vec::new();
        m4(&steps, &values, 0, 1000, 40, &mut keep);
        assert!(keep.len() <= 40, "{} points", keep.len());
        assert!(keep.contains(&0) && keep.contains(&999) && keep.contains(&500));
        assert!(keep.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn short_series_come_back_whole() {
        let steps = Int64Array::from_iter_values(0..10);
        let values = Float64Array::from_iter_values((0..10).map(f64::from));
        let mut keep = Vec::new();
        m4(&steps, &values, 0, 10, 40, &mut keep);
        assert_eq!(keep, (0..10).collect::<Vec<u32>>());
    }
}
