//! The rows of runs that are not compacted yet, read from their live segments while the query
//! runs (not while it is planned), one DataFusion partition per group of runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt, stream};
use runql_core::Store;
use runql_core::schema::Table;
use runql_core::store::{LiveRun, summarize_metrics};

/// One live run of one project.
#[derive(Debug, Clone)]
pub(crate) struct LiveItem {
    pub project: String,
    pub run: Arc<LiveRun>,
}

impl LiveItem {
    /// Bytes of segments this item will read for `table`.
    pub fn bytes(&self, table: Table) -> u64 {
        self.run
            .segments
            .get(&source_table(table))
            .map(|s| s.iter().map(|(_, m)| m.size).sum())
            .unwrap_or(0)
    }
}

/// The table whose segments hold a table's rows (`metric_summary` is computed from `metrics`).
pub(crate) fn source_table(table: Table) -> Table {
    match table {
        Table::MetricSummary => Table::Metrics,
        t => t,
    }
}

/// A partition of a live scan: some runs whose segments it decodes.
#[derive(Debug)]
pub(crate) struct LivePartition {
    pub store: Store,
    pub table: Table,
    pub schema: SchemaRef,
    pub items: Vec<LiveItem>,
    pub keys: Option<Arc<BTreeSet<String>>>,
}

impl PartitionStream for LivePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let store = self.store.clone();
        let table = self.table;
        let keys = self.keys.clone();
        let items = self.items.clone();
        let batches = stream::iter(items)
            .then(move |item| {
                let store = store.clone();
                let keys = keys.clone();
                async move {
                    let rows = store
                        .read_segments(&item.project, &item.run, source_table(table))
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    // One item is one run's rows in write order: apply "first param, last
                    // tag" here (a live run may set a tag twice, or log its params again when
                    // a second process resumes it).
                    let rows = runql_core::store::resolve(table, rows)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    let mut rows = filter_keys(rows, keys.as_deref())?;
                    if table == Table::MetricSummary && !rows.is_empty() {
                        rows = vec![
                            summarize_metrics(&rows)
                                .map_err(|e| DataFusionError::External(Box::new(e)))?,
                        ];
                    }
                    Ok::<_, DataFusionError>(stream::iter(rows.into_iter().map(Ok)))
                }
            })
            .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

/// Splits live runs into at most `n` partitions of about equal bytes.
pub(crate) fn partition(items: Vec<LiveItem>, table: Table, n: usize) -> Vec<Vec<LiveItem>> {
    let n = n.clamp(1, items.len().max(1));
    let mut items: Vec<(u64, LiveItem)> = items.into_iter().map(|i| (i.bytes(table), i)).collect();
    items.sort_by_key(|i| std::cmp::Reverse(i.0));
    let mut parts: Vec<(u64, Vec<LiveItem>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for (bytes, item) in items {
        if let Some(lightest) = parts.iter_mut().min_by_key(|p| p.0) {
            lightest.0 += bytes;
            lightest.1.push(item);
        }
    }
    parts
        .into_iter()
        .map(|p| p.1)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Keeps the rows whose `key` is in `keys` (all rows when `keys` is `None` or there is no `key`).
pub(crate) fn filter_keys(
    batches: Vec<RecordBatch>,
    keys: Option<&BTreeSet<String>>,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let Some(keys) = keys else {
        return Ok(batches);
    };
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let Some(col) = b
            .column_by_name("key")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        else {
            out.push(b);
            continue;
        };
        let mask: BooleanArray = (0..col.len())
            .map(|i| Some(col.is_valid(i) && keys.contains(col.value(i))))
            .collect();
        let kept = filter_record_batch(&b, &mask)?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
    }
    Ok(out)
}
