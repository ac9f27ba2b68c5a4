//! Arrow encoding of a chunk: one segment-schema batch per table it has rows for, columns in
//! the order `schema.rs` defines them ([`Table::segment_schema`]); metric points encoded
//! without copying, their vectors handed back for reuse; keys as dictionaries.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::Int32Type;
use bytes::Bytes;

use super::buffer::{Chunk, MetricCols};
use crate::error::Result;
use crate::model::param_value_num;
use crate::schema::Table;
use crate::store::segment;

/// The segment-schema batches of a chunk, one per table with rows.
pub(super) fn chunk_batches(chunk: Chunk) -> Result<Vec<(Table, RecordBatch)>> {
    // Metrics are encoded by `encode_metrics`, which recycles their vectors.
    let mut out = Vec::new();
    let ts_array =
        |v: Vec<i64>| Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let utf8 = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let opt_utf8 = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let dict = |keys: Vec<i32>, names: &[String]| -> Result<ArrayRef> {
        let values = Arc::new(StringArray::from_iter_values(names.iter()));
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(keys),
            values,
        )?))
    };
    let batch =
        |table: Table, cols: Vec<ArrayRef>| RecordBatch::try_new(table.segment_schema(), cols);

    if !chunk.params.is_empty() {
        let nums: Vec<Option<f64>> = chunk
            .params
            .iter()
            .map(|(_, v)| param_value_num(v))
            .collect();
        let (keys, values): (Vec<String>, Vec<String>) = chunk.params.into_iter().unzip();
        let (ids, names) = dictionary_of(keys);
        out.push((
            Table::Params,
            batch(
                Table::Params,
                vec![
                    dict(ids, &names)?,
                    utf8(values),
                    Arc::new(Float64Array::from(nums)),
                ],
            )?,
        ));
    }
    if !chunk.tags.is_empty() {
        let (keys, values): (Vec<String>, Vec<String>) = chunk.tags.into_iter().unzip();
        let (ids, names) = dictionary_of(keys);
        out.push((
            Table::Tags,
            batch(Table::Tags, vec![dict(ids, &names)?, utf8(values)])?,
        ));
    }
    if !chunk.system.is_empty() {
        let mut keys = Vec::new();
        let mut ts = Vec::new();
        let mut vals = Vec::new();
        for (k, t, v) in chunk.system {
            keys.push(k);
            ts.push(t);
            vals.push(v);
        }
        let (ids, names) = dictionary_of(keys);
        out.push((
            Table::SystemMetrics,
            batch(
                Table::SystemMetrics,
                vec![
                    dict(ids, &names)?,
                    ts_array(ts),
                    Arc::new(Float64Array::from(vals)),
                ],
            )?,
        ));
    }
    if !chunk.artifacts.is_empty() {
        let a = chunk.artifacts;
        out.push((
            Table::Artifacts,
            batch(
                Table::Artifacts,
                vec![
                    utf8(a.iter().map(|x| x.path.clone()).collect()),
                    utf8(a.iter().map(|x| x.digest.clone()).collect()),
                    Arc::new(Int64Array::from_iter_values(
                        a.iter().map(|x| x.size as i64),
                    )),
                    opt_utf8(a.iter().map(|x| x.media_type.clone()).collect()),
                    ts_array(a.iter().map(|x| x.created).collect()),
                ],
            )?,
        ));
    }
    if !chunk.logs.is_empty() {
        let mut ts = Vec::new();
        let mut streams = Vec::new();
        let mut lines = Vec::new();
        for (t, s, l) in chunk.logs {
            ts.push(t);
            streams.push(s);
            lines.push(l);
        }
        out.push((
            Table::Logs,
            batch(Table::Logs, vec![ts_array(ts), utf8(streams), utf8(lines)])?,
        ));
    }
    if !chunk.inputs.is_empty() {
        let i = chunk.inputs;
        out.push((
            Table::Inputs,
            batch(
                Table::Inputs,
                vec![
                    utf8(i.iter().map(|(x, _)| x.name.clone()).collect()),
                    opt_utf8(i.iter().map(|(x, _)| x.uri.clone()).collect()),
                    opt_utf8(i.iter().map(|(x, _)| x.digest.clone()).collect()),
                    opt_utf8(i.iter().map(|(x, _)| x.role.clone()).collect()),
                    ts_array(i.iter().map(|(_, t)| *t).collect()),
                ],
            )?,
        ));
    }
    Ok(out)
}

/// Encodes metric columns as a segment without copying them, then takes the vectors back out
/// of the Arrow arrays (when nothing else holds them) so the logging side can reuse them.
pub(super) fn encode_metrics(
    cols: MetricCols,
    key_names: &[String],
    mut buf: Vec<u8>,
) -> Result<(Bytes, Option<MetricCols>)> {
    let keys = Int32Array::from(cols.key);
    let step = Int64Array::from(cols.step);
    let ts = TimestampMicrosecondArray::from(cols.ts).with_timezone("UTC");
    let value = Float64Array::from(cols.value);
    {
        let names = Arc::new(StringArray::from_iter_values(key_names.iter()));
        let dict = DictionaryArray::<Int32Type>::try_new(keys.clone(), names)?;
        let batch = RecordBatch::try_new(
            Table::Metrics.segment_schema(),
            vec![
                Arc::new(dict),
                Arc::new(step.clone()),
                Arc::new(ts.clone()),
                Arc::new(value.clone()),
            ],
        )?;
        segment::encode_into(Table::Metrics, &[batch], &mut buf)?;
    }
    fn back<T: arrow::datatypes::ArrowPrimitiveType>(
        a: arrow::array::PrimitiveArray<T>,
    ) -> Option<Vec<T::Native>> {
        let mut v = a.into_parts().1.into_inner().into_vec::<T::Native>().ok()?;
        v.clear();
        Some(v)
    }
    let cols = (|| {
        Some(MetricCols {
            key: back(keys)?,
            step: back(step)?,
            ts: back(ts)?,
            value: back(value)?,
        })
    })();
    Ok((Bytes::from(buf), cols))
}

fn dictionary_of(keys: Vec<String>) -> (Vec<i32>, Vec<String>) {
    let mut index: HashMap<String, i32> = HashMap::new();
    let mut names = Vec::new();
    let ids = keys
        .into_iter()
        .map(|k| {
            *index.entry(k).or_insert_with_key(|k| {
                names.push(k.clone());
                names.len() as i32 - 1
            })
        })
        .collect();
    (ids, names)
}
