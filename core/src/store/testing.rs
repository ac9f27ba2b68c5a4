//! Batches for the store's unit tests: `metrics` rows, metrics segments as stored, and a
//! cell-by-cell view of a batch that compares floats bit for bit.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};

use crate::schema::Table;

/// Points as `metrics` rows of project `p`: (run, key, step, ts, value), in logging order.
pub(super) fn points(rows: &[(&str, &str, i64, i64, f64)]) -> RecordBatch {
    RecordBatch::try_new(
        Table::Metrics.schema(),
        vec![
            Arc::new(arrow::array::StringArray::from(vec!["p"; rows.len()])),
            Arc::new(arrow::array::StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(arrow::array::StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(arrow::array::Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(
                arrow::array::TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(arrow::array::Float64Array::from(
                rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A batch cell by cell, floats bit for bit (NaN and -0.0 included).
pub(super) fn show(b: &RecordBatch) -> Vec<Vec<String>> {
    (0..b.num_rows())
        .map(|i| {
            b.columns()
                .iter()
                .map(|c| match c.data_type() {
                    arrow::datatypes::DataType::Float64 => {
                        let f = c.as_primitive::<Float64Type>();
                        if arrow::array::Array::is_null(f, i) {
                            "null".into()
                        } else {
                            format!("{:x}", f.value(i).to_bits())
                        }
                    }
                    arrow::datatypes::DataType::Timestamp(..) => c
                        .as_primitive::<TimestampMicrosecondType>()
                        .value(i)
                        .to_string(),
                    _ => arrow::util::display::array_value_to_string(c, i)
                        .unwrap_or_else(|e| panic!("{e}")),
                })
                .collect()
        })
        .collect()
}

/// A metrics segment batch as stored: keys coded against `dictionary` (in that order).
pub(super) fn stored(dictionary: &[&str], rows: &[(&str, i64, i64, f64)]) -> RecordBatch {
    let codes: Vec<i32> = rows
        .iter()
        .map(|r| {
            dictionary
                .iter()
                .position(|k| *k == r.0)
                .unwrap_or_else(|| panic!("{} not in the dictionary", r.0)) as i32
        })
        .collect();
    let keys = arrow::array::DictionaryArray::<arrow::datatypes::Int32Type>::try_new(
        arrow::array::Int32Array::from(codes),
        Arc::new(arrow::array::StringArray::from(dictionary.to_vec())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let schema = Table::Metrics.segment_schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "key" => Arc::new(keys.clone()),
                "step" => Arc::new(arrow::array::Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                "ts" => Arc::new(
                    arrow::array::TimestampMicrosecondArray::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                "value" => Arc::new(arrow::array::Float64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
                other => panic!("unexpected segment column {other}"),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap_or_else(|e| panic!("{e}"))
}
