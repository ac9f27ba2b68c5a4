//! runql's TensorBoard plugin: `events.out.tfevents.*` files into metrics of the run.
//!
//! The file is a TFRecord stream: each record is `u64 length`, `u32 masked CRC-32C of the
//! length`, the bytes, `u32 masked CRC-32C of the bytes` (both checked). Each record is an
//! `Event` protocol buffer; scalars are `Summary.Value`s holding either a `simple_value`
//! (tensorboardX, TF1) or a scalar `TensorProto` (TF2, `torch.utils.tensorboard` with
//! `new_style`) of a tag whose first value carried the `scalars` plugin metadata. Each scalar
//! becomes a point of the metric named after its tag (step, value, wall time); histograms,
//! images, text and graphs are skipped. `tensorboard.tags` lists each tag once.
//!
//! A truncated or corrupt file is an error naming the byte offset; `--option
//! allow_truncated=true` reads the complete records of a file that is still being written.

use std::collections::BTreeMap;
use std::sync::Arc;

use runql_plugin_sdk::arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use runql_plugin_sdk::arrow_schema::{DataType, Field};
use runql_plugin_sdk::{CoreRows, Info, Output, Plugin, Session, Table};

mod proto;

/// CRC-32C (Castagnoli), table-driven.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

pub const TAGS: &str = "tags";

pub fn tags_table() -> Table {
    Table::new(
        TAGS,
        "One scalar tag of a TensorBoard event file: how it was stored and how many points it has",
        vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("tag", DataType::Utf8, false),
            Field::new("display_name", DataType::Utf8, true),
            Field::new("stored_as", DataType::Utf8, false),
            Field::new("points", DataType::Int64, false),
            Field::new("first_step", DataType::Int64, false),
            Field::new("last_step", DataType::Int64, false),
        ],
    )
}

#[derive(Debug, Clone)]
struct TagStats {
    display_name: Option<String>,
    stored_as: String,
    points: i64,
    first_step: i64,
    last_step: i64,
}

/// One event file being read.
#[derive(Debug)]
pub struct EventsSession {
    source: String,
    allow_truncated: bool,
    buf: Vec<u8>,
    /// Offset in the file of `buf[0]`.
    offset: u64,
    records: u64,
    /// Tags whose metadata said `scalars` (later values of a tag carry no metadata).
    scalar_tags: std::collections::HashSet<String>,
    tags: BTreeMap<String, TagStats>,
    core: CoreRows,
}

impl EventsSession {
    fn records(&mut self, out: &mut Output) -> Result<(), String> {
        let mut pos = 0usize;
        loop {
            let rest = &self.buf[pos..];
            if rest.len() < 12 {
                break;
            }
            let len_bytes = &rest[..8];
            let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| "length")?);
            let len_crc = u32::from_le_bytes(rest[8..12].try_into().map_err(|_| "crc")?);
            let at = self.offset + pos as u64;
            if masked_crc(len_bytes) != len_crc {
                return Err(format!(
                    "record {} at byte {at}: the length's CRC does not match (not a TFRecord \
                     file, or corrupt)",
                    self.records + 1
                ));
            }
            if len > (1 << 31) {
                return Err(format!(
                    "record {} at byte {at}: length {len} is implausible",
                    self.records + 1
                ));
            }
            let need = 12 + len as usize + 4;
            if rest.len() < need {
                break;
            }
            let data = &rest[12..12 + len as usize];
            let crc = u32::from_le_bytes(
                rest[12 + len as usize..need]
                    .try_into()
                    .map_err(|_| "crc")?,
            );
            if masked_crc(data) != crc {
                return Err(format!(
                    "record {} at byte {at}: the data's CRC does not match (the file is corrupt)",
                    self.records + 1
                ));
            }
            self.records += 1;
            let event = proto::Event::decode(data)
                .map_err(|e| format!("record {} at byte {at}: not an Event: {e}", self.records))?;
            self.event(event);
            pos += need;
        }
        self.buf.drain(..pos);
        self.offset += pos as u64;
        self.core.flush_into(out)
    }

    fn event(&mut self, e: proto::Event) {
        let time_us = (e.wall_time * 1e6).round() as i64;
        for v in e.values {
            if v.plugin_name.as_deref() == Some("scalars") {
                self.scalar_tags.insert(v.tag.clone());
            }
            let (value, stored_as) = match (v.simple_value, &v.tensor) {
                (Some(x), _) => (x as f64, "simple_value".to_string()),
                (None, Some(t)) if self.scalar_tags.contains(&v.tag) => match t.scalar() {
                    Some((x, dtype)) => (x, format!("tensor:{dtype}")),
                    None => continue,
                },
                _ => continue,
            };
            let stats = self.tags.entry(v.tag.clone()).or_insert_with(|| TagStats {
                display_name: v.display_name.clone(),
                stored_as,
                points: 0,
                first_step: e.step,
                last_step: e.step,
            });
            stats.points += 1;
            stats.first_step = stats.first_step.min(e.step);
            stats.last_step = stats.last_step.max(e.step);
            if stats.display_name.is_none() {
                stats.display_name = v.display_name.clone();
            }
            self.core.metric("", &v.tag, e.step, value, Some(time_us));
        }
    }
}

impl Session for EventsSession {
    fn feed(&mut self, chunk: &[u8], out: &mut Output) -> Result<(), String> {
        self.buf.extend_from_slice(chunk);
        self.records(out)
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), String> {
        self.records(out)?;
        if !self.buf.is_empty() && !self.allow_truncated {
            return Err(format!(
                "truncated at byte {}: the last record is incomplete ({} bytes after record {}); \
                 pass --option allow_truncated=true to read a file that is still being written",
                self.offset,
                self.buf.len(),
                self.records
            ));
        }
        if self.records == 0 {
            return Err("no TFRecord in the file (empty)".into());
        }
        let n = self.tags.len();
        if n > 0 {
            let t = &self.tags;
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![self.source.as_str(); n])),
                Arc::new(StringArray::from_iter_values(t.keys())),
                Arc::new(
                    t.values()
                        .map(|s| s.display_name.as_deref())
                        .collect::<StringArray>(),
                ),
                Arc::new(StringArray::from_iter_values(
                    t.values().map(|s| s.stored_as.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(t.values().map(|s| s.points))),
                Arc::new(Int64Array::from_iter_values(
                    t.values().map(|s| s.first_step),
                )),
                Arc::new(Int64Array::from_iter_values(
                    t.values().map(|s| s.last_step),
                )),
            ];
            let batch =
                RecordBatch::try_new(tags_table().schema, columns).map_err(|e| e.to_string())?;
            out.push(TAGS, batch);
        }
        Ok(())
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Tensorboard;

impl Plugin for Tensorboard {
    type Session = EventsSession;

    fn info() -> Info {
        Info {
            name: "tensorboard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TensorBoard event files: scalars become metrics of the run".into(),
            formats: vec!["TensorBoard events.out.tfevents.* (tensorboardX, torch, TF)".into()],
            tables: vec![tags_table()],
        }
    }

    fn recognize(name: &str, head: &[u8]) -> u8 {
        let framed = head.len() >= 12
            && masked_crc(&head[..8]) == u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        match (framed, name.contains("tfevents")) {
            (true, true) => 100,
            (true, false) => 80,
            (false, true) => 30,
            (false, false) => 0,
        }
    }

    fn open(name: &str, options: &[(String, String)]) -> Result<EventsSession, String> {
        let mut allow_truncated = false;
        for (k, v) in options {
            match k.as_str() {
                "allow_truncated" => {
                    allow_truncated = v
                        .parse()
                        .map_err(|_| format!("allow_truncated={v:?}: use true or false"))?
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} (tensorboard takes allow_truncated)"
                    ));
                }
            }
        }
        Ok(EventsSession {
            source: name.to_string(),
            allow_truncated,
            buf: Vec::new(),
            offset: 0,
            records: 0,
            scalar_tags: Default::default(),
            tags: BTreeMap::new(),
            core: CoreRows::default(),
        })
    }
}

runql_plugin_sdk::export_plugin!(Tensorboard);

#[cfg(test)]
mod tests;
