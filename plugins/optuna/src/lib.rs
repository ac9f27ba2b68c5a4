//! runql's Optuna plugin: studies into `optuna.studies`, `optuna.trials`, `optuna.trial_params`
//! and `optuna.intermediate_values`, and every trial that ran into a child run of the run
//! ingested into (its params, its objective(s) as metrics, its intermediate values as the
//! `intermediate_value` metric, its state as the run's status).
//!
//! Inputs:
//! - A `JournalStorage` log (`JournalFileBackend`): one JSON operation per line, replayed with
//!   Optuna's own rules (see [`journal`]).
//! - `study.trials_dataframe().to_csv()` (see [`csv`]); its study is named by `--option
//!   study=NAME`, else after the file.

use std::collections::BTreeMap;
use std::sync::Arc;

use runql_plugin_sdk::arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use runql_plugin_sdk::arrow_array::{ArrayRef, RecordBatch};
use runql_plugin_sdk::arrow_schema::{DataType, Field};
use runql_plugin_sdk::{CoreRows, Info, Lines, Output, Plugin, RunRow, Session, Table};
use serde_json::Value;

pub mod csv;
pub mod journal;

/// One trial as Optuna's readers show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trial {
    pub trial_id: Option<i64>,
    pub number: i64,
    /// `RUNNING`, `COMPLETE`, `PRUNED`, `FAIL` or `WAITING`.
    pub state: String,
    pub values: Option<Vec<f64>>,
    /// name → (external value, distribution JSON when known).
    pub params: BTreeMap<String, (Value, Option<Value>)>,
    pub intermediate: BTreeMap<i64, f64>,
    pub user_attrs: serde_json::Map<String, Value>,
    pub system_attrs: serde_json::Map<String, Value>,
    pub start_us: Option<i64>,
    pub complete_us: Option<i64>,
}

impl Trial {
    /// Constraint values (`trial.set_constraint`, or a constraints function's list): a trial is
    /// feasible when all are ≤ 0.
    pub fn constraints(&self) -> Vec<f64> {
        let mut out: Vec<f64> = self
            .system_attrs
            .iter()
            .filter(|(k, _)| k.starts_with("constraints:"))
            .filter_map(|(_, v)| number(v))
            .collect();
        if let Some(list) = self
            .system_attrs
            .get("constraints")
            .and_then(Value::as_array)
        {
            out.extend(list.iter().filter_map(number));
        }
        out
    }
}

/// One study.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Study {
    pub study_id: Option<i64>,
    pub name: String,
    /// `MINIMIZE` / `MAXIMIZE` / `NOT_SET` per objective.
    pub directions: Vec<String>,
    pub user_attrs: serde_json::Map<String, Value>,
    pub system_attrs: serde_json::Map<String, Value>,
    pub trials: Vec<Trial>,
}

impl Study {
    /// The names of the objectives (`study:metric_names`, else `value` / `value_<i>`).
    pub fn metric_names(&self) -> Option<Vec<String>> {
        self.system_attrs
            .get("study:metric_names")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
    }

    fn objective_names(&self, n: usize) -> Vec<String> {
        match self.metric_names() {
            Some(names) if names.len() == n => names,
            _ if n == 1 => vec!["value".to_string()],
            _ => (0..n).map(|i| format!("value_{i}")).collect(),
        }
    }

    /// Optuna's `best_trial` for one objective: the COMPLETE trial with the best value
    /// (first one on ties).
    pub fn best_trial(&self) -> Option<&Trial> {
        if self.directions.len() != 1 {
            return None;
        }
        let best = self.best_of(|_| true)?;
        // As Optuna: when the best trial breaks a constraint, the best feasible one instead.
        if best.constraints().iter().any(|c| *c > 0.0) {
            return self.best_of(|t| t.constraints().iter().all(|c| *c <= 0.0));
        }
        Some(best)
    }

    fn best_of(&self, keep: impl Fn(&Trial) -> bool) -> Option<&Trial> {
        let maximize = self.directions.first().is_some_and(|d| d == "MAXIMIZE");
        let mut best: Option<&Trial> = None;
        for t in self
            .trials
            .iter()
            .filter(|t| t.state == "COMPLETE" && keep(t))
        {
            let Some(v) = t.values.as_ref().and_then(|v| v.first()).copied() else {
                continue;
            };
            if v.is_nan() {
                continue;
            }
            let better = match best.and_then(|b| b.values.as_ref()?.first().copied()) {
                None => true,
                Some(b) => {
                    if maximize {
                        v > b
                    } else {
                        v < b
                    }
                }
            };
            if better {
                best = Some(t);
            }
        }
        best
    }
}

fn json_or_null(m: &serde_json::Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

/// A JSON number, or the strings Optuna's non-finite tokens become (`"NaN"`, `"Infinity"`).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn table(name: &str, doc: &str, fields: Vec<Field>) -> Table {
    Table::new(name, doc, fields)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn int(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}

fn float(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}

pub fn tables() -> Vec<Table> {
    vec![
        table(
            "studies",
            "One Optuna study: its directions, objective names, attributes and best trial",
            vec![
                text("source", false),
                int("study_id", true),
                text("study_name", false),
                text("directions", false),
                text("metric_names", true),
                text("user_attrs", false),
                text("system_attrs", false),
                int("n_trials", false),
                int("best_trial", true),
                float("best_value", true),
            ],
        ),
        table(
            "trials",
            "One trial of a study: state, objective value(s), times, attributes, and its child run (run_key)",
            vec![
                text("study_name", false),
                int("trial_id", true),
                int("number", false),
                text("state", false),
                float("value", true),
                text("values", true),
                int("datetime_start_us", true),
                int("datetime_complete_us", true),
                float("duration_s", true),
                text("user_attrs", false),
                text("system_attrs", false),
                text("run_key", true),
            ],
        ),
        table(
            "trial_params",
            "One parameter of a trial: its value (JSON), as a number when it is one, and its distribution",
            vec![
                text("study_name", false),
                int("number", false),
                text("param", false),
                text("value", true),
                float("value_num", true),
                text("distribution", true),
            ],
        ),
        table(
            "intermediate_values",
            "One intermediate value a trial reported (trial.report)",
            vec![
                text("study_name", false),
                int("number", false),
                int("step", false),
                float("value", false),
            ],
        ),
    ]
}

fn batch(name: &str, columns: Vec<ArrayRef>) -> Result<RecordBatch, String> {
    let t = tables()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("no table {name}"))?;
    RecordBatch::try_new(t.schema, columns).map_err(|e| format!("{name}: {e}"))
}

/// Writes studies as rows and child runs.
pub fn emit(studies: &[Study], source: &str, out: &mut Output) -> Result<(), String> {
    let (mut s_src, mut s_id, mut s_name, mut s_dir, mut s_metric, mut s_user, mut s_sys) = (
        StringBuilder::new(),
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut s_n, mut s_best, mut s_best_v) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Float64Builder::new(),
    );
    let mut t_cols = (
        StringBuilder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        StringBuilder::new(),
        Float64Builder::new(),
        StringBuilder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Float64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut p_cols = (
        StringBuilder::new(),
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Float64Builder::new(),
        StringBuilder::new(),
    );
    let mut i_cols = (
        StringBuilder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        Float64Builder::new(),
    );
    let mut core = CoreRows::default();
    for s in studies {
        s_src.append_value(source);
        s_id.append_option(s.study_id);
        s_name.append_value(&s.name);
        s_dir.append_value(s.directions.join(","));
        s_metric.append_option(s.metric_names().map(|m| Value::from(m).to_string()));
        s_user.append_value(json_or_null(&s.user_attrs));
        s_sys.append_value(json_or_null(&s.system_attrs));
        s_n.append_value(s.trials.len() as i64);
        let best = s.best_trial();
        s_best.append_option(best.map(|t| t.number));
        s_best_v.append_option(best.and_then(|t| t.values.as_ref()?.first().copied()));
        for t in &s.trials {
            // A trial that never ran (enqueued, still WAITING) is no run.
            let run_key = (t.state != "WAITING").then(|| format!("{}/{}", s.name, t.number));
            t_cols.0.append_value(&s.name);
            t_cols.1.append_option(t.trial_id);
            t_cols.2.append_value(t.number);
            t_cols.3.append_value(&t.state);
            t_cols
                .4
                .append_option(t.values.as_ref().and_then(|v| v.first().copied()));
            t_cols.5.append_option(
                t.values
                    .as_ref()
                    .map(|v| Value::Array(v.iter().map(|x| float_json(*x)).collect()).to_string()),
            );
            t_cols.6.append_option(t.start_us);
            t_cols.7.append_option(t.complete_us);
            t_cols.8.append_option(match (t.start_us, t.complete_us) {
                (Some(a), Some(b)) => Some((b - a) as f64 / 1e6),
                _ => None,
            });
            t_cols.9.append_value(json_or_null(&t.user_attrs));
            t_cols.10.append_value(json_or_null(&t.system_attrs));
            t_cols.11.append_option(run_key.as_deref());
            for (name, (value, dist)) in &t.params {
                p_cols.0.append_value(&s.name);
                p_cols.1.append_value(t.number);
                p_cols.2.append_value(name);
                p_cols.3.append_value(value.to_string());
                p_cols.4.append_option(match value {
                    Value::Number(n) => n.as_f64(),
                    Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    _ => None,
                });
                p_cols.5.append_option(dist.as_ref().map(|d| d.to_string()));
            }
            for (step, v) in &t.intermediate {
                i_cols.0.append_value(&s.name);
                i_cols.1.append_value(t.number);
                i_cols.2.append_value(*step);
                i_cols.3.append_value(*v);
            }
            let Some(key) = run_key else { continue };
            core.run(RunRow {
                run: key.clone(),
                name: Some(format!("{} #{}", s.name, t.number)),
                status: Some(
                    match t.state.as_str() {
                        "COMPLETE" => "finished",
                        "FAIL" => "failed",
                        "PRUNED" => "killed",
                        _ => "running",
                    }
                    .into(),
                ),
                started_us: t.start_us,
                ended_us: t.complete_us,
            });
            core.tag(&key, "optuna.study", &s.name);
            core.tag(&key, "optuna.trial_number", &t.number.to_string());
            core.tag(&key, "optuna.state", &t.state);
            for (name, (value, _)) in &t.params {
                let v = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                core.param(&key, name, &v);
            }
            if let Some(values) = &t.values {
                let last_step = t.intermediate.keys().next_back().copied().unwrap_or(0);
                for (name, v) in s.objective_names(values.len()).iter().zip(values) {
                    core.metric(&key, name, last_step, *v, t.complete_us);
                }
            }
            for (step, v) in &t.intermediate {
                core.metric(&key, "intermediate_value", *step, *v, None);
            }
        }
    }
    out.push(
        "studies",
        batch(
            "studies",
            vec![
                Arc::new(s_src.finish()),
                Arc::new(s_id.finish()),
                Arc::new(s_name.finish()),
                Arc::new(s_dir.finish()),
                Arc::new(s_metric.finish()),
                Arc::new(s_user.finish()),
                Arc::new(s_sys.finish()),
                Arc::new(s_n.finish()),
                Arc::new(s_best.finish()),
                Arc::new(s_best_v.finish()),
            ],
        )?,
    );
    out.push(
        "trials",
        batch(
            "trials",
            vec![
                Arc::new(t_cols.0.finish()),
                Arc::new(t_cols.1.finish()),
                Arc::new(t_cols.2.finish()),
                Arc::new(t_cols.3.finish()),
                Arc::new(t_cols.4.finish()),
                Arc::new(t_cols.5.finish()),
                Arc::new(t_cols.6.finish()),
                Arc::new(t_cols.7.finish()),
                Arc::new(t_cols.8.finish()),
                Arc::new(t_cols.9.finish()),
                Arc::new(t_cols.10.finish()),
                Arc::new(t_cols.11.finish()),
            ],
        )?,
    );
    out.push(
        "trial_params",
        batch(
            "trial_params",
            vec![
                Arc::new(p_cols.0.finish()),
                Arc::new(p_cols.1.finish()),
                Arc::new(p_cols.2.finish()),
                Arc::new(p_cols.3.finish()),
                Arc::new(p_cols.4.finish()),
                Arc::new(p_cols.5.finish()),
            ],
        )?,
    );
    out.push(
        "intermediate_values",
        batch(
            "intermediate_values",
            vec![
                Arc::new(i_cols.0.finish()),
                Arc::new(i_cols.1.finish()),
                Arc::new(i_cols.2.finish()),
                Arc::new(i_cols.3.finish()),
            ],
        )?,
    );
    core.flush_into(out)
}

fn float_json(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or_else(|| {
            Value::String(
                if x.is_nan() {
                    "NaN"
                } else if x > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                }
                .into(),
            )
        })
}

/// `2026-11-27T15:31:10.429030+00:00` (or a space for `T`, `Z`, no fraction, no offset =
/// UTC) → µs since the epoch.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_at(s.find(['T', ' '])?);
    let rest = &rest[1..];
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (time, offset_s) = match rest.find(['+', 'Z']).or_else(|| rest.rfind('-')) {
        Some(i) => {
            let off = &rest[i..];
            let secs = if off == "Z" {
                0
            } else {
                let sign = if off.starts_with('-') { -1 } else { 1 };
                let hm = &off[1..];
                let (h, mm) = hm.split_once(':').unwrap_or((hm, "0"));
                sign * (h.parse::<i64>().ok()? * 3600 + mm.parse::<i64>().ok()? * 60)
            };
            (&rest[..i], secs)
        }
        None => (rest, 0),
    };
    let mut t = time.split(':');
    let (hh, mi): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec = t.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let ss: i64 = whole.parse().ok()?;
    let mut micros: i64 = 0;
    for (i, c) in frac.chars().take(6).enumerate() {
        micros += i64::from(c.to_digit(10)?) * 10i64.pow(5 - i as u32);
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mi * 60 + ss - offset_s) * 1_000_000) + micros)
}

/// Which input this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Journal,
    Csv,
}

fn detect(head: &[u8]) -> Option<Format> {
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..end])
        .ok()?
        .trim_end_matches('\r');
    if line.starts_with('{') && line.contains("\"op_code\"") && line.contains("\"worker_id\"") {
        return Some(Format::Journal);
    }
    let cols: Vec<&str> = line.split(',').collect();
    if cols.first() == Some(&"number")
        && cols.contains(&"state")
        && cols.iter().any(|c| c.starts_with("value"))
    {
        return Some(Format::Csv);
    }
    None
}

/// One Optuna input.
#[derive(Debug)]
pub struct OptunaSession {
    name: String,
    study: Option<String>,
    format: Option<Format>,
    bytes: Vec<u8>,
    journal: journal::Replay,
    lines: Lines,
}

impl Session for OptunaSession {
    fn feed(&mut self, chunk: &[u8], _out: &mut Output) -> Result<(), String> {
        if self.format.is_none() {
            self.bytes.extend_from_slice(chunk);
            if !self.bytes.contains(&b'\n') {
                return Ok(());
            }
            self.format = Some(detect(&self.bytes).ok_or_else(|| {
                "line 1: neither an Optuna journal (JSON operations) nor a trials_dataframe CSV"
                    .to_string()
            })?);
            let head = std::mem::take(&mut self.bytes);
            return self.feed(&head, _out);
        }
        match self.format {
            Some(Format::Journal) => {
                let mut lines = std::mem::take(&mut self.lines);
                let r = lines.feed(chunk, |n, l| self.journal.apply(n, l));
                self.lines = lines;
                r
            }
            _ => {
                self.bytes.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), String> {
        if self.format.is_none() {
            self.format = Some(detect(&self.bytes).ok_or_else(|| {
                "line 1: neither an Optuna journal (JSON operations) nor a trials_dataframe CSV"
                    .to_string()
            })?);
            let head = std::mem::take(&mut self.bytes);
            self.feed(&head, out)?;
        }
        let (studies, source) = match self.format {
            Some(Format::Journal) => {
                // Optuna ignores a last line without its newline: a write in progress.
                let _torn = std::mem::take(&mut self.lines);
                (self.journal.studies(), "journal")
            }
            _ => {
                let text =
                    std::str::from_utf8(&self.bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
                let study = self.study.clone().unwrap_or_else(|| {
                    self.name
                        .rsplit('/')
                        .next()
                        .unwrap_or(&self.name)
                        .trim_end_matches(".csv")
                        .to_string()
                });
                (vec![csv::parse(text, &study)?], "csv")
            }
        };
        emit(&studies, source, out)
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Optuna;

impl Plugin for Optuna {
    type Session = OptunaSession;

    fn info() -> Info {
        Info {
            name: "optuna".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Optuna studies: every trial a child run, with its params, objective \
                          and intermediate values"
                .into(),
            formats: vec![
                "Optuna JournalStorage log (JournalFileBackend)".into(),
                "study.trials_dataframe() CSV (--option study=NAME)".into(),
            ],
            tables: tables(),
        }
    }

    fn recognize(_name: &str, head: &[u8]) -> u8 {
        match detect(head) {
            Some(Format::Journal) => 100,
            Some(Format::Csv) => 90,
            None => 0,
        }
    }

    fn open(name: &str, options: &[(String, String)]) -> Result<OptunaSession, String> {
        let mut study = None;
        for (k, v) in options {
            match k.as_str() {
                "study" => study = Some(v.clone()),
                other => return Err(format!("unknown option {other:?} (optuna takes study)")),
            }
        }
        Ok(OptunaSession {
            name: name.to_string(),
            study,
            format: None,
            bytes: Vec::new(),
            journal: journal::Replay::default(),
            lines: Lines::default(),
        })
    }
}

runql_plugin_sdk::export_plugin!(Optuna);

#[cfg(test)]
mod tests;
