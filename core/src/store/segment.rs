//! Live segments: Arrow IPC streams that a run's writer flushes as it goes.
//!
//! A segment holds rows of one table for one run, in the table's segment schema (no `project`
//! or `run_id`, `key` dictionary-encoded). Readers turn them back into the table's full schema.
//! A segment whose tail is torn (a crash mid-write on a backend without atomic visibility)
//! yields every whole batch before the tear.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;

use crate::error::{Error, Result};

use crate::schema::Table;

/// Encodes batches of `table`'s segment schema as one IPC stream.
pub fn encode(table: Table, batches: &[RecordBatch]) -> Result<Bytes> {
    let mut buf = Vec::new();
    encode_into(table, batches, &mut buf)?;
    Ok(Bytes::from(buf))
}

/// Encodes batches as one IPC stream into `buf` (cleared first; its capacity is reused).
pub fn encode_into(table: Table, batches: &[RecordBatch], buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    buf.reserve(
        batches
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum::<usize>()
            + 1024,
    );
    let mut w = StreamWriter::try_new(buf, &table.segment_schema())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(())
}

/// Decodes a segment into batches of the table's full schema. Whole batches before a torn
/// tail are returned; a segment that is not Arrow IPC at all is an error.
pub fn decode(
    table: Table,
    project: &str,
    run_id: &str,
    bytes: Bytes,
    path: &dyn std::fmt::Display,
) -> Result<Vec<RecordBatch>> {
    decode_raw(bytes, path)?
        .iter()
        .map(|b| widen(table, project, run_id, b))
        .collect()
}

/// The batches of a segment as stored ([`Table::segment_schema`]: no project or run column,
/// keys dictionary-encoded). A torn tail is skipped: the whole batches before it are returned.
pub fn decode_raw(bytes: Bytes, path: &dyn std::fmt::Display) -> Result<Vec<RecordBatch>> {
    let reader = match StreamReader::try_new(std::io::Cursor::new(bytes), None) {
        Ok(r) => r,
        Err(e) => {
            // Only a segment torn by a power loss before its writer synced it looks like this
            // (objects are renamed into place whole): it is incomplete, so it is skipped.
            tracing::warn!(%path, error = %e, "skipping an incomplete segment");
            return Ok(Vec::new());
        }
    };
    let mut out = Vec::new();
    for batch in reader {
        match batch {
            Ok(b) => out.push(b),
            Err(e) => {
                tracing::warn!(%path, error = %e, "torn segment tail; reading the whole batches before it");
                break;
            }
        }
    }
    Ok(out)
}

/// Turns a batch of the segment schema into one of the full schema.
pub fn widen(
    table: Table,
    project: &str,
    run_id: &str,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let schema = table.schema();
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let col: ArrayRef = match field.name().as_str() {
            "project" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                project, n,
            ))),
            "run_id" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                run_id, n,
            ))),
            name => {
                let src = batch.column_by_name(name).ok_or_else(|| {
                    Error::corrupt(
                        format!("{table} segment of run {run_id}"),
                        format!("column {name} is missing"),
                    )
                })?;
                if src.data_type() == field.data_type() {
                    src.clone()
                } else {
                    cast(src, field.data_type())?
                }
            }
        };
        columns.push(col);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}
