//! An example runql plugin: training logs made of `key=value` lines, such as
//!
//! ```text
//! step=100 loss=0.731 acc=0.62
//! step=200 loss=0.514 acc=0.71 note=warmup-done
//! ```
//!
//! Every numeric value becomes a metric of the run at that line's `step`; every line is kept in
//! the table `kvlog.lines`. docs/plugins.md builds this plugin from nothing; build it with
//! `cargo build --release --target wasm32-wasip2 -p runql-example-plugin` and install the
//! `.wasm` with `runql plugin install`.

use std::sync::Arc;

use runql_plugin_sdk::arrow_array::builder::{Int64Builder, StringBuilder};
use runql_plugin_sdk::arrow_array::{ArrayRef, RecordBatch};
use runql_plugin_sdk::arrow_schema::{DataType, Field};
use runql_plugin_sdk::{CoreRows, Info, Lines, Output, Plugin, Session, Table};

/// The plugin's one table.
fn lines_table() -> Table {
    Table::new(
        "lines",
        "One line of a key=value log",
        vec![
            Field::new("line", DataType::Int64, false),
            Field::new("step", DataType::Int64, true),
            Field::new("text", DataType::Utf8, false),
        ],
    )
}

/// One log being read: complete lines are parsed as they arrive.
#[derive(Debug, Default)]
pub struct KvSession {
    lines: Lines,
    line: Int64Builder,
    step: Int64Builder,
    text: StringBuilder,
    core: CoreRows,
}

impl KvSession {
    fn parse(&mut self, n: u64, text: &str) -> Result<(), String> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let mut step = None;
        let mut values = Vec::new();
        for pair in text.split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("line {n}: {pair:?} is not key=value"))?;
            if k == "step" {
                step = Some(
                    v.parse::<i64>()
                        .map_err(|_| format!("line {n}: step {v:?} is not an integer"))?,
                );
            } else if let Ok(x) = v.parse::<f64>() {
                values.push((k.to_string(), x));
            }
        }
        let at = step.unwrap_or(n as i64);
        for (k, x) in values {
            self.core.metric("", &k, at, x, None);
        }
        self.line.append_value(n as i64);
        self.step.append_option(step);
        self.text.append_value(text);
        Ok(())
    }

    fn flush(&mut self, out: &mut Output) -> Result<(), String> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.line.finish()),
            Arc::new(self.step.finish()),
            Arc::new(self.text.finish()),
        ];
        let batch =
            RecordBatch::try_new(lines_table().schema, columns).map_err(|e| e.to_string())?;
        out.push("lines", batch);
        self.core.flush_into(out)
    }
}

impl Session for KvSession {
    fn feed(&mut self, chunk: &[u8], out: &mut Output) -> Result<(), String> {
        let mut lines = std::mem::take(&mut self.lines);
        let parsed = lines.feed(chunk, |n, l| self.parse(n, l));
        self.lines = lines;
        parsed?;
        self.flush(out)
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), String> {
        let mut lines = std::mem::take(&mut self.lines);
        let parsed = lines.finish(|n, l| self.parse(n, l));
        self.lines = lines;
        parsed?;
        self.flush(out)
    }
}

/// The plugin itself: what it is and which inputs it takes.
#[derive(Debug)]
pub struct KvLog;

impl Plugin for KvLog {
    type Session = KvSession;

    fn info() -> Info {
        Info {
            name: "kvlog".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "key=value training logs: numbers become metrics at each line's step"
                .into(),
            formats: vec!["text lines of key=value pairs (*.kvlog)".into()],
            tables: vec![lines_table()],
        }
    }

    fn recognize(name: &str, head: &[u8]) -> u8 {
        let first = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let text = std::str::from_utf8(first).unwrap_or("");
        let looks = !text.is_empty() && text.split_whitespace().all(|p| p.contains('='));
        match (name.ends_with(".kvlog"), looks) {
            (true, _) => 100,
            (false, true) => 40,
            _ => 0,
        }
    }

    fn open(_name: &str, _options: &[(String, String)]) -> Result<KvSession, String> {
        Ok(KvSession::default())
    }
}

runql_plugin_sdk::export_plugin!(KvLog);

#[cfg(test)]
mod tests {
    use runql_plugin_sdk::{rows_of, run_native, targets};

    use super::*;

    #[test]
    fn numbers_become_metrics_at_their_step() {
        let log = b"step=100 loss=0.731 acc=0.62\nstep=200 loss=0.514 acc=0.71 note=warm\n";
        let out = run_native::<KvLog>("train.kvlog", &[], log, 5).unwrap();
        assert_eq!(rows_of(&out, "lines").unwrap().num_rows(), 2);
        assert_eq!(rows_of(&out, targets::METRICS).unwrap().num_rows(), 4);
        let err = run_native::<KvLog>("x.kvlog", &[], b"step=1 oops\n", 64).unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
