//! Pivot tables: one row per run, one column per param key (`params_wide`) or per metric key
//! holding its last value (`metrics_wide`). Their columns depend on the keys in the store, so
//! they are computed when a query names them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::Result as DFResult;
use runql_core::Store;
use runql_core::schema::Table;
use runql_core::store::Scan;

use crate::table::external;

/// The pivot tables, with what each holds.
pub(crate) const WIDE_TABLES: &[(&str, &str)] = &[
    (
        "params_wide",
        "one row per run with params, one column per param key: DOUBLE when every value of \
         that key is a number, else VARCHAR",
    ),
    (
        "metrics_wide",
        "one row per run with metrics, one column per metric key: its last value (highest \
         step, then latest time)",
    ),
];

/// Computes a pivot table from the store as it is now.
pub(crate) async fn wide_table(store: &Store, name: &str) -> DFResult<Arc<dyn TableProvider>> {
    let (table, value) = match name {
        "params_wide" => (Table::Params, "value"),
        _ => (Table::MetricSummary, "last_value"),
    };
    let rows = store.scan(table, &Scan::all()).await.map_err(external)?;
    let batch = pivot(&rows, value)?;
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

/// A value: a number, its text (params), or both.
struct Cell {
    number: Option<f64>,
    text: Option<String>,
}

/// One row per (project, run_id), one column per key.
fn pivot(rows: &[RecordBatch], value: &str) -> DFResult<RecordBatch> {
    let mut runs: BTreeMap<(String, String), BTreeMap<String, Cell>> = BTreeMap::new();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let mut text_keys: BTreeSet<String> = BTreeSet::new();
    for b in rows {
        let s = |n: &str| -> DFResult<&StringArray> {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal(format!(
                        "{n} is not a string column"
                    ))
                })
        };
        let (project, run, key) = (s("project")?, s("run_id")?, s("key")?);
        let numbers = b
            .column_by_name(if value == "value" { "value_num" } else { value })
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>());
        let texts = b
            .column_by_name(value)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>());
        for i in 0..b.num_rows() {
            let k = key.value(i).to_string();
            let cell = Cell {
                number: numbers.filter(|n| n.is_valid(i)).map(|n| n.value(i)),
                text: texts
                    .filter(|t| t.is_valid(i))
                    .map(|t| t.value(i).to_string()),
            };
            if cell.number.is_none() {
                if cell.text.is_none() {
                    continue;
                }
                text_keys.insert(k.clone());
            }
            keys.insert(k.clone());
            runs.entry((project.value(i).to_string(), run.value(i).to_string()))
                .or_default()
                .insert(k, cell);
        }
    }
    let mut fields = vec![
        Field::new("project", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            runs.keys().map(|k| k.0.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            runs.keys().map(|k| k.1.as_str()),
        )),
    ];
    for key in &keys {
        let name = if key == "project" || key == "run_id" {
            format!("{key} (key)")
        } else {
            key.clone()
        };
        if text_keys.contains(key) {
            let mut b = StringBuilder::new();
            for cells in runs.values() {
                match cells.get(key) {
                    Some(Cell { text: Some(t), .. }) => b.append_value(t),
                    Some(Cell {
                        number: Some(n), ..
                    }) => b.append_value(n.to_string()),
                    _ => b.append_null(),
                }
            }
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(Arc::new(b.finish()));
        } else {
            let mut b = Float64Builder::new();
            for cells in runs.values() {
                b.append_option(cells.get(key).and_then(|c| c.number));
            }
            fields.push(Field::new(name, DataType::Float64, true));
            columns.push(Arc::new(b.finish()));
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
