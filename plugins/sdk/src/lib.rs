//! The runql plugin SDK: what a plugin author writes is a [`Plugin`] (what it is, which inputs
//! it recognises) and a [`Session`] (bytes in, Arrow rows out). [`export_plugin!`] turns that into
//! a WebAssembly component implementing runql's contract (`plugins/wit/plugin.wit`) when the
//! crate is built for `wasm32-wasip2`; built natively, the same code is an ordinary library whose
//! parsing is tested with `cargo test`.
//!
//! Rows go to the plugin's own tables (`<plugin>.<table>` in SQL) or to runql's core targets
//! through [`CoreRows`]: child runs, their params, tags and metrics.
//!
//! docs/plugins.md builds a plugin from nothing with this crate.

use std::sync::Arc;

pub mod text;

pub use arrow_array;
pub use arrow_schema;

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

#[cfg(target_family = "wasm")]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "runql_plugin_sdk::bindings",
    });
}

/// The contract version this SDK implements (the version of the `runql:plugin` WIT package).
pub const CONTRACT_VERSION: &str = "1.0.0";

/// One table a plugin writes.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub doc: String,
    /// The table's columns; the host puts `project` in front, so do not declare it.
    pub schema: SchemaRef,
}

impl Table {
    pub fn new(name: &str, doc: &str, fields: Vec<Field>) -> Table {
        Table {
            name: name.to_string(),
            doc: doc.to_string(),
            schema: Arc::new(Schema::new(fields)),
        }
    }
}

/// What a plugin is.
#[derive(Debug, Clone)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    pub formats: Vec<String>,
    pub tables: Vec<Table>,
}

/// A plugin: its description and the inputs it recognises.
pub trait Plugin {
    type Session: Session;

    fn info() -> Info;

    /// 0 (not this plugin's input) to 100 (certainly), from the file name and its first bytes.
    fn recognize(name: &str, head: &[u8]) -> u8;

    /// Starts parsing one input.
    fn open(name: &str, options: &[(String, String)]) -> Result<Self::Session, String>;
}

/// The parsing of one input: bytes arrive in chunks, in order.
pub trait Session {
    fn feed(&mut self, chunk: &[u8], out: &mut Output) -> Result<(), String>;
    fn finish(&mut self, out: &mut Output) -> Result<(), String>;
}

/// Rows produced by one call, per target table.
#[derive(Debug, Default)]
pub struct Output {
    batches: Vec<(String, RecordBatch)>,
}

impl Output {
    /// Rows for one of the plugin's tables (or a core target, see [`CoreRows`]).
    pub fn push(&mut self, table: &str, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push((table.to_string(), batch));
        }
    }

    /// The rows, in the order they were pushed.
    pub fn batches(&self) -> &[(String, RecordBatch)] {
        &self.batches
    }

    pub fn into_batches(self) -> Vec<(String, RecordBatch)> {
        self.batches
    }

    /// Encodes each table's rows as one Arrow IPC stream, as the contract carries them.
    pub fn encode(self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut order: Vec<String> = Vec::new();
        let mut by_table: std::collections::HashMap<String, Vec<RecordBatch>> = Default::default();
        for (t, b) in self.batches {
            if !by_table.contains_key(&t) {
                order.push(t.clone());
            }
            by_table.entry(t).or_default().push(b);
        }
        order
            .into_iter()
            .map(|t| {
                let batches = by_table.remove(&t).unwrap_or_default();
                let ipc =
                    encode_stream(&batches).map_err(|e| format!("encoding rows of {t}: {e}"))?;
                Ok((t, ipc))
            })
            .collect()
    }
}

/// An Arrow IPC stream of some batches (all of one schema).
pub fn encode_stream(batches: &[RecordBatch]) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, &first.schema())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(buf)
}

/// A schema as an IPC stream with no batch (how the contract carries table schemas).
pub fn encode_schema(schema: &Schema) -> Result<Vec<u8>, arrow_schema::ArrowError> {
    let mut buf = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

/// The names of runql's core targets.
pub mod targets {
    pub const RUNS: &str = "runql.runs";
    pub const PARAMS: &str = "runql.params";
    pub const TAGS: &str = "runql.tags";
    pub const METRICS: &str = "runql.metrics";
}

/// The schema of a core target, as the host checks it.
pub fn core_schema(target: &str) -> Option<SchemaRef> {
    let run = Field::new("run", DataType::Utf8, false);
    let text = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    let fields = match target {
        targets::RUNS => vec![
            run,
            text("name", true),
            text("status", true),
            Field::new("started_us", DataType::Int64, true),
            Field::new("ended_us", DataType::Int64, true),
        ],
        targets::PARAMS | targets::TAGS => vec![run, text("key", false), text("value", false)],
        targets::METRICS => vec![
            run,
            text("key", false),
            Field::new("step", DataType::Int64, false),
            Field::new("value", DataType::Float64, false),
            Field::new("time_us", DataType::Int64, true),
        ],
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

/// A run of the ingest as the host creates it: `""` is the run ingested into, any other key
/// a child run of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRow {
    pub run: String,
    pub name: Option<String>,
    /// `running`, `finished`, `failed`, `killed` (anything else is refused by the host).
    pub status: Option<String>,
    pub started_us: Option<i64>,
    pub ended_us: Option<i64>,
}

/// Rows for runql's core targets, built up and then pushed into an [`Output`].
#[derive(Debug, Default)]
pub struct CoreRows {
    runs: Vec<RunRow>,
    params: (Vec<String>, Vec<String>, Vec<String>),
    tags: (Vec<String>, Vec<String>, Vec<String>),
    metrics: MetricColumns,
}

/// Metric points column by column, appended without an allocation per point (a plugin may
/// emit millions).
#[derive(Debug, Default)]
struct MetricColumns {
    run: StringBuilder,
    key: StringBuilder,
    step: Int64Builder,
    value: Float64Builder,
    time: Int64Builder,
    len: usize,
}

impl CoreRows {
    pub fn run(&mut self, row: RunRow) {
        self.runs.push(row);
    }

    pub fn param(&mut self, run: &str, key: &str, value: &str) {
        self.params.0.push(run.to_string());
        self.params.1.push(key.to_string());
        self.params.2.push(value.to_string());
    }

    pub fn tag(&mut self, run: &str, key: &str, value: &str) {
        self.tags.0.push(run.to_string());
        self.tags.1.push(key.to_string());
        self.tags.2.push(value.to_string());
    }

    pub fn metric(&mut self, run: &str, key: &str, step: i64, value: f64, time_us: Option<i64>) {
        let m = &mut self.metrics;
        m.run.append_value(run);
        m.key.append_value(key);
        m.step.append_value(step);
        m.value.append_value(value);
        m.time.append_option(time_us);
        m.len += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.params.0.is_empty()
            && self.tags.0.is_empty()
            && self.metrics.len == 0
    }

    /// Moves the rows built so far into `out`.
    pub fn flush_into(&mut self, out: &mut Output) -> Result<(), String> {
        let take = std::mem::take(self);
        let batch = |target: &str, columns: Vec<ArrayRef>| -> Result<RecordBatch, String> {
            let schema = core_schema(target).ok_or_else(|| format!("no core target {target}"))?;
            RecordBatch::try_new(schema, columns).map_err(|e| format!("rows of {target}: {e}"))
        };
        if !take.runs.is_empty() {
            let r = &take.runs;
            out.push(
                targets::RUNS,
                batch(
                    targets::RUNS,
                    vec![
                        Arc::new(StringArray::from_iter_values(
                            r.iter().map(|x| x.run.as_str()),
                        )),
                        Arc::new(r.iter().map(|x| x.name.as_deref()).collect::<StringArray>()),
                        Arc::new(
                            r.iter()
                                .map(|x| x.status.as_deref())
                                .collect::<StringArray>(),
                        ),
                        Arc::new(r.iter().map(|x| x.started_us).collect::<Int64Array>()),
                        Arc::new(r.iter().map(|x| x.ended_us).collect::<Int64Array>()),
                    ],
                )?,
            );
        }
        for (target, (run, key, value)) in
            [(targets::PARAMS, take.params), (targets::TAGS, take.tags)]
        {
            if run.is_empty() {
                continue;
            }
            out.push(
                target,
                batch(
                    target,
                    vec![
                        Arc::new(StringArray::from(run)),
                        Arc::new(StringArray::from(key)),
                        Arc::new(StringArray::from(value)),
                    ],
                )?,
            );
        }
        let mut m = take.metrics;
        if m.len > 0 {
            out.push(
                targets::METRICS,
                batch(
                    targets::METRICS,
                    vec![
                        Arc::new(m.run.finish()),
                        Arc::new(m.key.finish()),
                        Arc::new(m.step.finish()),
                        Arc::new(m.value.finish()),
                        Arc::new(m.time.finish()),
                    ],
                )?,
            );
        }
        Ok(())
    }
}

/// Splits chunks into complete lines, keeping the 1-based number of each, so that line-based
/// formats parse the same whatever the chunking. A line may end with `\n` or `\r\n`.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Vec<u8>,
    next_line: u64,
}

impl Lines {
    /// Calls `f(line_number, line)` for every complete line in `pending + chunk`.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut f: impl FnMut(u64, &str) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut start = 0;
        let data: std::borrow::Cow<'_, [u8]> = if self.pending.is_empty() {
            std::borrow::Cow::Borrowed(chunk)
        } else {
            let mut v = std::mem::take(&mut self.pending);
            v.extend_from_slice(chunk);
            std::borrow::Cow::Owned(v)
        };
        while let Some(pos) = data[start..].iter().position(|&b| b == b'\n') {
            let mut line = &data[start..start + pos];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            self.next_line += 1;
            let text = std::str::from_utf8(line)
                .map_err(|e| format!("line {}: not UTF-8 ({e})", self.next_line))?;
            f(self.next_line, text)?;
            start += pos + 1;
        }
        self.pending = data[start..].to_vec();
        Ok(())
    }

    /// The last line, when the input does not end with a newline.
    pub fn finish(
        &mut self,
        mut f: impl FnMut(u64, &str) -> Result<(), String>,
    ) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rest = std::mem::take(&mut self.pending);
        let rest = rest.strip_suffix(b"\r").unwrap_or(&rest);
        self.next_line += 1;
        let text = std::str::from_utf8(rest)
            .map_err(|e| format!("line {}: not UTF-8 ({e})", self.next_line))?;
        f(self.next_line, text)
    }
}

/// Runs a plugin natively over some bytes, fed in chunks of `chunk` bytes, as the host would:
/// for a plugin's own tests (the same code runs in the sandbox).
pub fn run_native<P: Plugin>(
    name: &str,
    options: &[(String, String)],
    bytes: &[u8],
    chunk: usize,
) -> Result<Vec<(String, RecordBatch)>, String> {
    let mut session = P::open(name, options)?;
    let mut out = Output::default();
    for c in bytes.chunks(chunk.max(1)) {
        session.feed(c, &mut out)?;
    }
    session.finish(&mut out)?;
    Ok(out.into_batches())
}

/// The rows of one table out of [`run_native`]'s answer, as one batch.
pub fn rows_of(batches: &[(String, RecordBatch)], table: &str) -> Option<RecordBatch> {
    let mine: Vec<RecordBatch> = batches
        .iter()
        .filter(|(t, _)| t == table)
        .map(|(_, b)| b.clone())
        .collect();
    let schema = mine.first()?.schema();
    arrow_select::concat::concat_batches(&schema, &mine).ok()
}

#[cfg(target_family = "wasm")]
#[doc(hidden)]
pub mod glue {
    //! The component side of [`export_plugin!`]: adapts a [`Plugin`] to the WIT bindings.
    use std::cell::RefCell;

    use super::bindings::exports::runql::plugin::parser as wit;
    use super::{Output, Plugin, Session};

    pub fn info<P: Plugin>() -> wit::Info {
        let i = P::info();
        wit::Info {
            name: i.name,
            version: i.version,
            description: i.description,
            formats: i.formats,
            tables: i
                .tables
                .into_iter()
                .map(|t| super::bindings::runql::plugin::types::Table {
                    schema: super::encode_schema(&t.schema).unwrap_or_default(),
                    name: t.name,
                    doc: t.doc,
                })
                .collect(),
        }
    }

    fn rows(out: Output) -> Result<Vec<wit::Rows>, String> {
        Ok(out
            .encode()?
            .into_iter()
            .map(|(table, ipc)| wit::Rows { table, ipc })
            .collect())
    }

    /// One input's session; the contract's resource methods take `&self`.
    pub struct SessionOf<P: Plugin> {
        inner: RefCell<Result<P::Session, String>>,
    }

    impl<P: Plugin> std::fmt::Debug for SessionOf<P> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SessionOf").finish_non_exhaustive()
        }
    }

    impl<P: Plugin + 'static> wit::GuestSession for SessionOf<P> {
        fn new(name: String, options: Vec<(String, String)>) -> Self {
            SessionOf {
                inner: RefCell::new(P::open(&name, &options)),
            }
        }

        fn feed(&self, chunk: Vec<u8>) -> Result<Vec<wit::Rows>, String> {
            let mut s = self.inner.borrow_mut();
            let session = s.as_mut().map_err(|e| e.clone())?;
            let mut out = Output::default();
            session.feed(&chunk, &mut out)?;
            rows(out)
        }

        fn finish(&self) -> Result<Vec<wit::Rows>, String> {
            let mut s = self.inner.borrow_mut();
            let session = s.as_mut().map_err(|e| e.clone())?;
            let mut out = Output::default();
            session.finish(&mut out)?;
            rows(out)
        }
    }
}

/// Exports a [`Plugin`] as runql's component interface (in the `wasm32-wasip2` build; nothing
/// natively).
///
/// ```ignore
/// struct MyPlugin;
/// impl runql_plugin_sdk::Plugin for MyPlugin { /* … */ }
/// runql_plugin_sdk::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            struct RunqlPluginExport;
            impl $crate::bindings::exports::runql::plugin::parser::Guest for RunqlPluginExport {
                type Session = $crate::glue::SessionOf<$plugin>;
                fn describe() -> $crate::bindings::exports::runql::plugin::parser::Info {
                    $crate::glue::info::<$plugin>()
                }
                fn recognize(name: String, head: Vec<u8>) -> u8 {
                    <$plugin as $crate::Plugin>::recognize(&name, &head).min(100)
                }
            }
    $crate::bindings::export!(RunqlPluginExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_same_whatever_the_chunking() {
        let text = b"a,b\r\n1,2\n3,4\nlast";
        for size in 1..text.len() {
            let mut lines = Lines::default();
            let mut got = Vec::new();
            for chunk in text.chunks(size) {
                lines
                    .feed(chunk, |n, l| {
                        got.push((n, l.to_string()));
                        Ok(())
                    })
                    .unwrap();
            }
            lines
                .finish(|n, l| {
                    got.push((n, l.to_string()));
                    Ok(())
                })
                .unwrap();
            assert_eq!(
                got,
                vec![
                    (1, "a,b".to_string()),
                    (2, "1,2".to_string()),
                    (3, "3,4".to_string()),
                    (4, "last".to_string())
                ],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn core_rows_match_their_schemas() {
        let mut c = CoreRows::default();
        c.run(RunRow {
            run: "t1".into(),
            name: Some("trial 1".into()),
            status: Some("finished".into()),
            ..RunRow::default()
        });
        c.param("t1", "lr", "0.1");
        c.metric("t1", "loss", 0, 0.5, None);
        let mut out = Output::default();
        c.flush_into(&mut out).unwrap();
        let names: Vec<_> = out.batches().iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, [targets::RUNS, targets::PARAMS, targets::METRICS]);
        assert!(c.is_empty());
        let encoded = out.encode().unwrap();
        assert_eq!(encoded.len(), 3);
    }
}
