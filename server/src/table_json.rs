//! A query result as one JSON object the dashboard can draw from directly:
//! `{"columns": [{"name": .., "type": ..}], "rows": [[..], ..], "truncated": bool}`.
//!
//! Unlike the row-object form (`application/json`), every column is listed (nulls included, in
//! order), and numbers stay exact: integers beyond 2^53 become strings, and NaN and ±infinity
//! are the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (MLflow's convention).

use std::fmt::Write as _;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, SchemaRef, UInt64Type};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// Rows answered unless the request asks for another bound (`X-Runql-Max-Rows`).
pub(crate) const MAX_ROWS: usize = 100_000;

const SAFE_INT: i64 = 1 << 53;

fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v == f64::INFINITY {
        out.push_str("\"Infinity\"");
    } else if v == f64::NEG_INFINITY {
        out.push_str("\"-Infinity\"");
    } else if v == 0.0 && v.is_sign_negative() {
        out.push_str("-0.0");
    } else {
        // Rust's shortest round-trip form is valid JSON for finite values.
        let _ = write!(out, "{v:?}");
    }
}

fn string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// Appends the value at `row` of `col` as JSON.
fn value(out: &mut String, col: &dyn Array, fmt: &ArrayFormatter<'_>, row: usize) {
    if col.is_null(row) {
        out.push_str("null");
        return;
    }
    match col.data_type() {
        DataType::Float64 => float(out, col.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => float(out, col.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 => {
            let _ = write!(out, "{}", fmt.value(row));
        }
        DataType::UInt16 | DataType::UInt32 => {
            let _ = write!(out, "{}", fmt.value(row));
        }
        DataType::Int64 => {
            let v = col.as_primitive::<Int64Type>().value(row);
            if v.unsigned_abs() <= SAFE_INT as u64 {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "\"{v}\"");
            }
        }
        DataType::UInt64 => {
            let v = col.as_primitive::<UInt64Type>().value(row);
            if v <= SAFE_INT as u64 {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "\"{v}\"");
            }
        }
        DataType::Boolean => out.push_str(if col.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        DataType::Utf8 => string(out, col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => string(out, col.as_string::<i64>().value(row)),
        DataType::Utf8View => string(out, col.as_string_view().value(row)),
        _ => {
            let mut text = String::new();
            if write!(text, "{}", fmt.value(row)).is_err() {
                text = raw(col, row);
            }
            string(out, &text)
        }
    }
}

/// A value Arrow cannot display (a timestamp past the calendar's range, such as
/// `i64::MIN` microseconds), as its stored integer.
fn raw(col: &dyn Array, row: usize) -> String {
    arrow::compute::cast(&col.slice(row, 1), &DataType::Int64)
        .ok()
        .filter(|c| c.is_valid(0))
        .map(|c| c.as_primitive::<Int64Type>().value(0).to_string())
        .unwrap_or_else(|| format!("<{} value out of range>", col.data_type()))
}

/// `batch` with each column that holds values Arrow cannot display (timestamps past the
/// calendar's range) replaced by text: the values it can display as it displays them, the
/// others as their stored integers. Writers that fail on such values (CSV) take this instead.
pub(crate) fn printable(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    // Errors as errors (not written into the text), to find the values to replace.
    let options = FormatOptions::default().with_display_error(false);
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut changed = false;
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let f = ArrayFormatter::try_new(col.as_ref(), &options)?;
        let mut text = String::new();
        let unprintable = (0..col.len()).any(|i| {
            text.clear();
            col.is_valid(i) && write!(text, "{}", f.value(i)).is_err()
        });
        if !unprintable {
            fields.push(field.clone());
            columns.push(col.clone());
            continue;
        }
        changed = true;
        let mut b = arrow::array::StringBuilder::with_capacity(col.len(), col.len() * 24);
        for i in 0..col.len() {
            text.clear();
            if col.is_null(i) {
                b.append_null();
            } else if write!(text, "{}", f.value(i)).is_ok() {
                b.append_value(&text);
            } else {
                b.append_value(raw(col.as_ref(), i));
            }
        }
        fields.push(std::sync::Arc::new(arrow::datatypes::Field::new(
            field.name(),
            DataType::Utf8,
            true,
        )));
        columns.push(std::sync::Arc::new(b.finish()));
    }
    if !changed {
        return Ok(batch.clone());
    }
    RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )
}

/// Encodes `batches` (at most `max_rows` rows of them).
pub(crate) fn encode(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    max_rows: usize,
) -> Result<Vec<u8>, ArrowError> {
    let mut out = String::with_capacity(4096);
    out.push_str("{\"columns\":[");
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        string(&mut out, f.name());
        out.push_str(",\"type\":");
        string(&mut out, &f.data_type().to_string());
        out.push('}');
    }
    out.push_str("],\"rows\":[");
    let options = FormatOptions::default()
        .with_display_error(false)
        .with_null("")
        .with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.6fZ"))
        .with_timestamp_format(Some("%Y-%m-%dT%H:%M:%S%.6f"));
    let mut written = 0usize;
    let mut truncated = false;
    'batches: for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            if written == max_rows {
                truncated = true;
                break 'batches;
            }
            if written > 0 {
                out.push(',');
            }
            out.push('[');
            for (i, (c, f)) in b.columns().iter().zip(&formatters).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value(&mut out, c.as_ref(), f, row);
            }
            out.push(']');
            written += 1;
        }
    }
    let _ = write!(out, "],\"truncated\":{truncated}}}");
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn every_column_in_order_with_exact_numbers() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("i", DataType::Int64, true),
            Field::new("b", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("a\"b"),
                    None,
                    Some("c"),
                    Some("d"),
                ])),
                Arc::new(Float64Array::from(vec![
                    0.1,
                    f64::NAN,
                    f64::NEG_INFINITY,
                    -0.0,
                ])),
                Arc::new(Int64Array::from(vec![
                    Some(1),
                    None,
                    Some(i64::MAX),
                    Some(-7),
                ])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    None,
                    Some(false),
                    None,
                ])),
            ],
        )
        .unwrap();
        let json =
            String::from_utf8(encode(&schema, std::slice::from_ref(&batch), 100).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["columns"][1]["name"], "f");
        assert_eq!(v["columns"][2]["type"], "Int64");
        assert_eq!(
            v["rows"],
            serde_json::json!([
                ["a\"b", 0.1, 1, true],
                [null, "NaN", null, null],
                ["c", "-Infinity", i64::MAX.to_string(), false],
                ["d", -0.0, -7, null],
            ])
        );
        assert_eq!(v["truncated"], false);
        let json = String::from_utf8(encode(&schema, &[batch], 3).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["rows"].as_array().unwrap().len(), 3);
        assert_eq!(v["truncated"], true);
    }
}
