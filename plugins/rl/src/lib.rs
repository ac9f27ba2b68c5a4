//! runql's reinforcement-learning plugin: episode logs into `rl.episodes`, plus the run's
//! environment steps per second as a metric. With `--option episode_metrics=true`, each
//! episode's return and length are also metrics of the run (step = cumulative environment
//! steps), for tools that only read metrics.
//!
//! Inputs:
//! - Stable-Baselines3 `Monitor` CSV (`*.monitor.csv`): a `#{"t_start": …, "env_id": …}` line,
//!   a header `r,l,t[,info keys…]`, one row per episode. A vectorised env writes one file per
//!   sub-environment (`0.monitor.csv`, `1.monitor.csv`…): the number is kept as `env_index`.
//! - Gymnasium `RecordEpisodeStatistics`-style JSONL: one object per episode with `r`, `l`, `t`
//!   (or the same under `"episode"`), and optionally `global_step`.
//! - Ray Tune / RLlib `progress.csv`: one row per training iteration; the mean episode return
//!   and length become the episode row, every numeric column a metric at that iteration.

use std::sync::Arc;

use runql_plugin_sdk::arrow_array::RecordBatch;
use runql_plugin_sdk::arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use runql_plugin_sdk::arrow_schema::{DataType, Field};
use runql_plugin_sdk::text::csv_fields;
use runql_plugin_sdk::{CoreRows, Info, Lines, Output, Plugin, Session, Table};

pub const EPISODES: &str = "episodes";

/// The columns of `rl.episodes`.
pub fn episodes_table() -> Table {
    Table::new(
        EPISODES,
        "One episode of an RL environment (or one training iteration's mean episode, from Ray Tune)",
        vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("format", DataType::Utf8, false),
            Field::new("env", DataType::Utf8, true),
            Field::new("env_index", DataType::Int64, true),
            Field::new("episode", DataType::Int64, false),
            Field::new("return", DataType::Float64, true),
            Field::new("length", DataType::Int64, true),
            Field::new("time_s", DataType::Float64, true),
            Field::new("wall_time_us", DataType::Int64, true),
            Field::new("cumulative_steps", DataType::Int64, true),
            Field::new("info", DataType::Utf8, true),
        ],
    )
}

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Monitor,
    Jsonl,
    RayProgress,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Monitor => "sb3-monitor",
            Format::Jsonl => "episode-jsonl",
            Format::RayProgress => "ray-progress",
        }
    }
}

fn first_line(head: &[u8]) -> &str {
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    std::str::from_utf8(&head[..end])
        .unwrap_or("")
        .trim_end_matches('\r')
}

/// Which format an input is in, from its name and first bytes.
pub fn detect(name: &str, head: &[u8]) -> Option<(Format, u8)> {
    let line = first_line(head);
    if line.starts_with("#{") && line.contains("t_start") {
        return Some((Format::Monitor, 100));
    }
    if line.contains("training_iteration")
        && (line.contains("episode_reward_mean") || line.contains("episode_return_mean"))
    {
        return Some((Format::RayProgress, 95));
    }
    if line.starts_with('{')
        && let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(line)
    {
        let ep = o.get("episode").and_then(|e| e.as_object()).unwrap_or(&o);
        if ep.contains_key("r") && ep.contains_key("l") {
            return Some((Format::Jsonl, 90));
        }
    }
    if name.ends_with("monitor.csv") {
        return Some((Format::Monitor, 60));
    }
    None
}

/// `0.monitor.csv` → 0.
fn env_index(name: &str) -> Option<i64> {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.strip_suffix(".monitor.csv")?.parse().ok()
}

/// Builds `rl.episodes` rows and the run's metrics.
#[derive(Debug)]
struct Episodes {
    source: String,
    format: Format,
    env_index: Option<i64>,
    b_env: StringBuilder,
    b_env_index: Int64Builder,
    b_episode: Int64Builder,
    b_return: Float64Builder,
    b_length: Int64Builder,
    b_time: Float64Builder,
    b_wall: Int64Builder,
    b_steps: Int64Builder,
    b_info: StringBuilder,
    rows: usize,
    core: CoreRows,
    /// The last (cumulative steps, time) seen: the run's steps per second at the end.
    last: Option<(i64, f64)>,
    /// The metric keys of the last env index seen (built once, not per episode).
    keys: Option<(Option<i64>, String, String)>,
    /// Also log each episode's return and length as metrics (`--option episode_metrics=true`).
    episode_metrics: bool,
}

impl Episodes {
    fn new(source: &str, format: Format) -> Episodes {
        Episodes {
            source: source.to_string(),
            format,
            env_index: env_index(source),
            b_env: StringBuilder::new(),
            b_env_index: Int64Builder::new(),
            b_episode: Int64Builder::new(),
            b_return: Float64Builder::new(),
            b_length: Int64Builder::new(),
            b_time: Float64Builder::new(),
            b_wall: Int64Builder::new(),
            b_steps: Int64Builder::new(),
            b_info: StringBuilder::new(),
            rows: 0,
            core: CoreRows::default(),
            last: None,
            keys: None,
            episode_metrics: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        env: Option<&str>,
        env_index: Option<i64>,
        episode: i64,
        ret: Option<f64>,
        length: Option<i64>,
        time_s: Option<f64>,
        wall_us: Option<i64>,
        steps: Option<i64>,
        info: Option<&str>,
    ) {
        self.b_env.append_option(env);
        let env_index = env_index.or(self.env_index);
        self.b_env_index.append_option(env_index);
        self.b_episode.append_value(episode);
        self.b_return.append_option(ret);
        self.b_length.append_option(length);
        self.b_time.append_option(time_s);
        self.b_wall.append_option(wall_us);
        self.b_steps.append_option(steps);
        self.b_info.append_option(info);
        self.rows += 1;
        if let (Some(s), Some(t)) = (steps, time_s) {
            self.last = Some((s, t));
        }
        if !self.episode_metrics {
            return;
        }
        let step = steps.unwrap_or(episode);
        if self.keys.as_ref().is_none_or(|k| k.0 != env_index) {
            let prefix = match env_index {
                Some(i) => format!("rl/env{i}/"),
                None => "rl/".to_string(),
            };
            self.keys = Some((
                env_index,
                format!("{prefix}episode_return"),
                format!("{prefix}episode_length"),
            ));
        }
        if let Some((_, return_key, length_key)) = &self.keys {
            if let Some(r) = ret {
                self.core.metric("", return_key, step, r, wall_us);
            }
            if let Some(l) = length {
                self.core.metric("", length_key, step, l as f64, wall_us);
            }
        }
    }

    fn flush(&mut self, out: &mut Output) -> Result<(), String> {
        if self.rows > 0 {
            let n = self.rows;
            let schema = episodes_table().schema;
            let columns: Vec<runql_plugin_sdk::arrow_array::ArrayRef> = vec![
                Arc::new(runql_plugin_sdk::arrow_array::StringArray::from(vec![
                    self.source.as_str();
                    n
                ])),
                Arc::new(runql_plugin_sdk::arrow_array::StringArray::from(vec![
                    self.format.name();
                    n
                ])),
                Arc::new(self.b_env.finish()),
                Arc::new(self.b_env_index.finish()),
                Arc::new(self.b_episode.finish()),
                Arc::new(self.b_return.finish()),
                Arc::new(self.b_length.finish()),
                Arc::new(self.b_time.finish()),
                Arc::new(self.b_wall.finish()),
                Arc::new(self.b_steps.finish()),
                Arc::new(self.b_info.finish()),
            ];
            let batch = RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())?;
            out.push(EPISODES, batch);
            self.rows = 0;
        }
        self.core.flush_into(out)
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), String> {
        if let Some((steps, t)) = self.last
            && t > 0.0
        {
            let key = match self.env_index {
                Some(i) => format!("rl/env{i}/steps_per_s"),
                None => "rl/steps_per_s".to_string(),
            };
            self.core.metric("", &key, steps, steps as f64 / t, None);
        }
        self.flush(out)
    }
}

fn number<T: std::str::FromStr>(field: &str, what: &str, line: u64) -> Result<Option<T>, String> {
    let f = field.trim();
    if f.is_empty() || f.eq_ignore_ascii_case("nan") && what == "length" {
        return Ok(None);
    }
    f.parse::<T>()
        .map(Some)
        .map_err(|_| format!("line {line}: {what} {f:?} is not a number"))
}

/// The state of one input.
#[derive(Debug)]
pub struct RlSession {
    /// Forced by `--option format=…`, else read off the first line.
    format: Option<Format>,
    lines: Lines,
    episodes: Episodes,
    /// Monitor: the header's env id and start time; the column names.
    env: Option<String>,
    t_start_us: Option<i64>,
    columns: Vec<String>,
    episode: i64,
    cumulative: i64,
    /// The current row's extra columns as a JSON object (reused: no allocation per row).
    info: String,
}

impl RlSession {
    pub fn new(name: &str, format: Option<Format>) -> RlSession {
        RlSession {
            format,
            lines: Lines::default(),
            episodes: Episodes::new(name, format.unwrap_or(Format::Monitor)),
            env: None,
            t_start_us: None,
            columns: Vec::new(),
            episode: 0,
            cumulative: 0,
            info: String::new(),
        }
    }

    fn line(&mut self, n: u64, line: &str) -> Result<(), String> {
        let format = match self.format {
            Some(f) => f,
            None => {
                let f = detect(&self.episodes.source, line.as_bytes())
                    .map(|(f, _)| f)
                    .ok_or_else(|| {
                        format!(
                            "line 1: not a Stable-Baselines3 Monitor CSV, episode JSONL or Ray \
                             progress.csv (it starts {:?})",
                            trunc(line)
                        )
                    })?;
                self.format = Some(f);
                self.episodes.format = f;
                f
            }
        };
        match format {
            Format::Monitor => self.monitor_line(n, line),
            Format::Jsonl => self.jsonl_line(n, line),
            Format::RayProgress => self.ray_line(n, line),
        }
    }

    fn monitor_line(&mut self, n: u64, line: &str) -> Result<(), String> {
        if n == 1 {
            let json = line.strip_prefix('#').ok_or_else(|| {
                format!(
                    "line 1: a Monitor file starts with #{{\"t_start\": …}}, found {:?}",
                    trunc(line)
                )
            })?;
            let header: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| format!("line 1: the Monitor header is not JSON: {e}"))?;
            self.t_start_us = header
                .get("t_start")
                .and_then(|v| v.as_f64())
                .map(|t| (t * 1e6) as i64);
            self.env = header
                .get("env_id")
                .and_then(|v| v.as_str())
                .map(String::from);
            return Ok(());
        }
        if n == 2 {
            self.columns = line.split(',').map(|c| c.trim().to_string()).collect();
            for required in ["r", "l", "t"] {
                if !self.columns.iter().any(|c| c == required) {
                    return Err(format!(
                        "line 2: the Monitor header {line:?} has no column {required:?}"
                    ));
                }
            }
            return Ok(());
        }
        if line.is_empty() {
            return Ok(());
        }
        // Fields without quotes (all SB3 writes) are split in place; quoted ones go the slow way.
        let owned;
        let fields: Vec<&str> = if line.contains('"') {
            owned = csv_fields(line);
            owned.iter().map(String::as_str).collect()
        } else {
            line.split(',').collect()
        };
        if fields.len() != self.columns.len() {
            return Err(format!(
                "line {n}: {} fields, but the header has {} ({})",
                fields.len(),
                self.columns.len(),
                self.columns.join(",")
            ));
        }
        let (mut r, mut l, mut t) = (None, None, None);
        self.info.clear();
        for (c, f) in self.columns.iter().zip(&fields) {
            match c.as_str() {
                "r" => r = number::<f64>(f, "return", n)?,
                "l" => l = number::<i64>(f, "length", n)?,
                "t" => t = number::<f64>(f, "time", n)?,
                other => push_info(&mut self.info, other, f),
            }
        }
        if !self.info.is_empty() {
            self.info.push('}');
        }
        self.cumulative += l.unwrap_or(0);
        let wall = match (self.t_start_us, t) {
            (Some(s), Some(t)) => Some(s + (t * 1e6) as i64),
            _ => None,
        };
        let info = (!self.info.is_empty()).then_some(self.info.as_str());
        self.episodes.push(
            self.env.as_deref(),
            None,
            self.episode,
            r,
            l,
            t,
            wall,
            Some(self.cumulative),
            info,
        );
        self.episode += 1;
        Ok(())
    }

    fn jsonl_line(&mut self, n: u64, line: &str) -> Result<(), String> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {n}: not JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("line {n}: expected a JSON object"))?;
        let ep = obj
            .get("episode")
            .and_then(|e| e.as_object())
            .unwrap_or(obj);
        let f = |k: &str| ep.get(k).and_then(scalar);
        let r = f("r");
        let l = f("l").map(|x| x as i64);
        let t = f("t");
        if r.is_none() && l.is_none() {
            return Err(format!("line {n}: no episode return \"r\" or length \"l\""));
        }
        self.cumulative += l.unwrap_or(0);
        let steps = obj
            .get("global_step")
            .and_then(scalar)
            .map(|s| s as i64)
            .unwrap_or(self.cumulative);
        let env = obj
            .get("env_id")
            .or_else(|| obj.get("env"))
            .and_then(|e| e.as_str())
            .map(String::from);
        // CleanRL-style logs of a vector env name the sub-environment by number.
        let env_index = obj.get("env").and_then(|e| e.as_i64());
        let mut info = serde_json::Map::new();
        for (k, v) in obj {
            if !["episode", "r", "l", "t", "global_step", "env_id", "env"].contains(&k.as_str()) {
                info.insert(k.clone(), v.clone());
            }
        }
        let info = (!info.is_empty()).then(|| serde_json::Value::Object(info).to_string());
        self.episodes.push(
            env.as_deref(),
            env_index,
            self.episode,
            r,
            l,
            t,
            None,
            Some(steps),
            info.as_deref(),
        );
        self.episode += 1;
        Ok(())
    }

    fn ray_line(&mut self, n: u64, line: &str) -> Result<(), String> {
        if n == 1 {
            self.columns = csv_fields(line);
            return Ok(());
        }
        if line.is_empty() {
            return Ok(());
        }
        let fields = csv_fields(line);
        if fields.len() != self.columns.len() {
            return Err(format!(
                "line {n}: {} fields, but the header has {}",
                fields.len(),
                self.columns.len()
            ));
        }
        let get = |names: &[&str]| -> Option<&str> {
            names.iter().find_map(|name| {
                self.columns
                    .iter()
                    .position(|c| c == name)
                    .map(|i| fields[i].as_str())
                    .filter(|v| !v.is_empty())
            })
        };
        let iteration = get(&["training_iteration"])
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| format!("line {n}: no training_iteration"))?;
        let ret = get(&["episode_reward_mean", "env_runners/episode_return_mean"])
            .and_then(|v| v.parse::<f64>().ok());
        let length = get(&["episode_len_mean", "env_runners/episode_len_mean"])
            .and_then(|v| v.parse::<f64>().ok())
            .map(|l| l.round() as i64);
        let time = get(&["time_total_s"]).and_then(|v| v.parse::<f64>().ok());
        let steps = get(&[
            "timesteps_total",
            "num_env_steps_sampled_lifetime",
            "num_env_steps_sampled",
        ])
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| s as i64);
        let wall = get(&["timestamp"])
            .and_then(|v| v.parse::<f64>().ok())
            .map(|t| (t * 1e6) as i64);
        let trial = get(&["trial_id"]).map(String::from);
        let info = trial.map(|t| serde_json::json!({"trial_id": t}).to_string());
        self.episodes.push(
            None,
            None,
            iteration,
            ret,
            length,
            time,
            wall,
            steps,
            info.as_deref(),
        );
        // Every numeric column is a metric of the run at this iteration.
        for (c, f) in self.columns.iter().zip(&fields) {
            if ["training_iteration", "timestamp", "pid", "done"].contains(&c.as_str()) {
                continue;
            }
            if let Ok(v) = f.parse::<f64>() {
                self.episodes.core.metric("", c, iteration, v, wall);
            }
        }
        Ok(())
    }
}

/// Appends `"key":value` to a JSON object being written (`{` opened on the first field): a
/// number, a boolean (Python's `True`/`False`), or text.
fn push_info(out: &mut String, key: &str, field: &str) {
    out.push(if out.is_empty() { '{' } else { ',' });
    out.push_str(&serde_json::Value::from(key).to_string());
    out.push(':');
    match field {
        "True" | "true" => out.push_str("true"),
        "False" | "false" => out.push_str("false"),
        _ => match field.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                use std::fmt::Write;
                let _ = write!(out, "{v}");
            }
            _ => out.push_str(&serde_json::Value::from(field).to_string()),
        },
    }
}

fn scalar(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Array(a) if a.len() == 1 => scalar(&a[0]),
        _ => None,
    }
}

fn trunc(s: &str) -> String {
    s.chars().take(60).collect()
}

impl Session for RlSession {
    fn feed(&mut self, chunk: &[u8], out: &mut Output) -> Result<(), String> {
        let mut lines = std::mem::take(&mut self.lines);
        let r = lines.feed(chunk, |n, l| self.line(n, l));
        self.lines = lines;
        r?;
        self.episodes.flush(out)
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), String> {
        let mut lines = std::mem::take(&mut self.lines);
        let r = lines.finish(|n, l| self.line(n, l));
        self.lines = lines;
        r?;
        if self.format == Some(Format::Monitor) && self.columns.is_empty() {
            return Err("the file ends before the Monitor header (line 2)".into());
        }
        self.episodes.finish(out)
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Rl;

impl Plugin for Rl {
    type Session = RlSession;

    fn info() -> Info {
        Info {
            name: "rl".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Reinforcement-learning episodes: Stable-Baselines3 Monitor CSV, \
                          Gymnasium episode statistics JSONL, Ray Tune/RLlib progress.csv"
                .into(),
            formats: vec![
                "Stable-Baselines3 Monitor CSV (*.monitor.csv)".into(),
                "Gymnasium RecordEpisodeStatistics JSONL (one {r, l, t} object per episode)".into(),
                "Ray Tune / RLlib progress.csv".into(),
            ],
            tables: vec![episodes_table()],
        }
    }

    fn recognize(name: &str, head: &[u8]) -> u8 {
        detect(name, head).map(|(_, s)| s).unwrap_or(0)
    }

    fn open(name: &str, options: &[(String, String)]) -> Result<RlSession, String> {
        let mut forced = None;
        let mut episode_metrics = false;
        for (k, v) in options {
            match k.as_str() {
                "format" => forced = Some(v.as_str()),
                "episode_metrics" => {
                    episode_metrics = v
                        .parse()
                        .map_err(|_| format!("episode_metrics={v:?}: use true or false"))?
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?} (rl takes format and episode_metrics)"
                    ));
                }
            }
        }
        let format = match forced {
            Some("sb3-monitor") | Some("monitor") => Some(Format::Monitor),
            Some("episode-jsonl") | Some("jsonl") => Some(Format::Jsonl),
            Some("ray-progress") | Some("ray") => Some(Format::RayProgress),
            Some(other) => {
                return Err(format!(
                    "unknown format {other:?}: use sb3-monitor, episode-jsonl or ray-progress"
                ));
            }
            None => None,
        };
        let mut session = RlSession::new(name, format);
        session.episodes.episode_metrics = episode_metrics;
        Ok(session)
    }
}

runql_plugin_sdk::export_plugin!(Rl);

#[cfg(test)]
mod tests;
