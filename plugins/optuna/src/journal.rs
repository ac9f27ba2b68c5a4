//! Replaying an Optuna `JournalStorage` log the way Optuna's `JournalStorageReplayResult`
//! does (optuna/storages/journal/_storage.py):
//!
//! - Study ids count the `CREATE_STUDY` records that created a study; a second record with a
//!   name in use is ignored (`load_if_exists=True` writes one). Deleted studies keep their id.
//! - Trial ids are global: the n-th trial created in the file, whatever its study; `number` is
//!   the trial's position in its study.
//! - A record that touches a deleted study, a missing trial or a finished trial (COMPLETE,
//!   PRUNED, FAIL) is ignored; `RUNNING` only replaces `WAITING`.
//! - Template trials (`add_trial`, `enqueue_trial`) carry their state, values, params (in
//!   internal form), distributions and attributes in `CREATE_TRIAL`.
//! - Params are stored in internal form: a categorical's index into its choices, an int as a
//!   float; they are turned back into the values the user saw.
//! - Python writes non-finite floats as the bare tokens `NaN`, `Infinity`, `-Infinity`.
//! - `DISCARD_TRIALS` (10) is skipped, as Optuna does.

use std::collections::{BTreeMap, HashMap};

use runql_plugin_sdk::text::quote_non_finite;
use serde_json::Value;

use crate::{Study, Trial, number, parse_datetime};

const STATES: [&str; 5] = ["RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"];

fn direction(code: &Value) -> String {
    match code.as_i64() {
        Some(1) => "MINIMIZE",
        Some(2) => "MAXIMIZE",
        _ => "NOT_SET",
    }
    .to_string()
}

fn finished(state: &str) -> bool {
    matches!(state, "COMPLETE" | "PRUNED" | "FAIL")
}

/// A distribution (`{"name": …, "attributes": {…}}`) and a value in internal form → the
/// value the user sees.
fn external(dist: &Value, internal: &Value) -> Value {
    let name = dist.get("name").and_then(Value::as_str).unwrap_or("");
    let attrs = dist.get("attributes").cloned().unwrap_or(Value::Null);
    match name {
        "CategoricalDistribution" => {
            let idx = number(internal).map(|f| f as usize);
            attrs
                .get("choices")
                .and_then(Value::as_array)
                .and_then(|c| c.get(idx?))
                .cloned()
                .unwrap_or(Value::Null)
        }
        "IntDistribution" | "IntUniformDistribution" | "IntLogUniformDistribution" => {
            number(internal)
                .map(|f| Value::from(f.round() as i64))
                .unwrap_or(Value::Null)
        }
        _ => internal.clone(),
    }
}

/// A distribution as JSON: Optuna stores it as JSON text inside the JSON.
fn distribution(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Object(_) => Some(v.clone()),
        _ => None,
    }
}

fn values_of(v: &Value) -> Option<Vec<f64>> {
    match v {
        Value::Array(a) => a.iter().map(number).collect(),
        Value::Null => None,
        other => number(other).map(|x| vec![x]),
    }
}

fn one_key(v: Option<&Value>) -> Option<(String, Value)> {
    let m = v?.as_object()?;
    let (k, v) = m.iter().next()?;
    Some((k.clone(), v.clone()))
}

/// The state of a replay.
#[derive(Debug, Default)]
pub struct Replay {
    studies: BTreeMap<i64, Study>,
    deleted: std::collections::HashSet<i64>,
    next_study_id: i64,
    /// trial id → (study id, index in its study's trials).
    trials: Vec<(i64, usize)>,
    names: HashMap<String, i64>,
}

impl Replay {
    fn trial(&mut self, id: &Value) -> Option<&mut Trial> {
        let id = id.as_i64()?;
        let (study, idx) = *self.trials.get(usize::try_from(id).ok()?)?;
        if self.deleted.contains(&study) {
            return None;
        }
        self.studies.get_mut(&study)?.trials.get_mut(idx)
    }

    fn updatable(&mut self, id: &Value) -> Option<&mut Trial> {
        self.trial(id).filter(|t| !finished(&t.state))
    }

    /// Applies one line of the journal.
    pub fn apply(&mut self, n: u64, line: &str) -> Result<(), String> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let text = quote_non_finite(line);
        let op: Value = serde_json::from_str(&text)
            .map_err(|e| format!("line {n}: not a journal record (JSON): {e}"))?;
        let code = op
            .get("op_code")
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("line {n}: a journal record without \"op_code\""))?;
        match code {
            0 => {
                let name = op
                    .get("study_name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("line {n}: CREATE_STUDY without study_name"))?;
                if self.names.contains_key(name) {
                    return Ok(());
                }
                let id = self.next_study_id;
                self.next_study_id += 1;
                self.names.insert(name.to_string(), id);
                let directions = op
                    .get("directions")
                    .and_then(Value::as_array)
                    .map(|d| d.iter().map(direction).collect())
                    .unwrap_or_default();
                self.studies.insert(
                    id,
                    Study {
                        study_id: Some(id),
                        name: name.to_string(),
                        directions,
                        ..Study::default()
                    },
                );
            }
            1 => {
                if let Some(id) = op.get("study_id").and_then(Value::as_i64)
                    && let Some(s) = self.studies.get(&id)
                    && !self.deleted.contains(&id)
                {
                    self.names.remove(&s.name);
                    self.deleted.insert(id);
                }
            }
            2 | 3 => {
                let Some(id) = op.get("study_id").and_then(Value::as_i64) else {
                    return Ok(());
                };
                if self.deleted.contains(&id) {
                    return Ok(());
                }
                let field = if code == 2 {
                    "user_attr"
                } else {
                    "system_attr"
                };
                if let (Some(s), Some((k, v))) = (self.studies.get_mut(&id), one_key(op.get(field)))
                {
                    if code == 2 {
                        s.user_attrs.insert(k, v);
                    } else {
                        s.system_attrs.insert(k, v);
                    }
                }
            }
            4 => self.create_trial(&op),
            5 => {
                let name = op
                    .get("param_name")
                    .and_then(Value::as_str)
                    .map(String::from);
                let dist = op.get("distribution").and_then(distribution);
                let internal = op
                    .get("param_value_internal")
                    .cloned()
                    .unwrap_or(Value::Null);
                if let (Some(t), Some(name), Some(dist)) = (
                    self.updatable(op.get("trial_id").unwrap_or(&Value::Null)),
                    name,
                    dist,
                ) {
                    t.params
                        .insert(name, (external(&dist, &internal), Some(dist)));
                }
            }
            6 => {
                let state = op
                    .get("state")
                    .and_then(Value::as_u64)
                    .and_then(|s| STATES.get(s as usize))
                    .ok_or_else(|| {
                        format!("line {n}: SET_TRIAL_STATE_VALUES with an unknown state")
                    })?;
                if let Some(t) = self.updatable(op.get("trial_id").unwrap_or(&Value::Null)) {
                    if *state == "RUNNING" && t.state != "WAITING" {
                        return Ok(());
                    }
                    t.state = state.to_string();
                    if let Some(v) = op.get("values").and_then(values_of) {
                        t.values = Some(v);
                    }
                    if *state == "RUNNING" {
                        t.start_us = op
                            .get("datetime_start")
                            .and_then(Value::as_str)
                            .and_then(parse_datetime);
                    }
                    if finished(state) {
                        t.complete_us = op
                            .get("datetime_complete")
                            .and_then(Value::as_str)
                            .and_then(parse_datetime);
                    }
                }
            }
            7 => {
                let step = op.get("step").and_then(Value::as_i64);
                let value = op.get("intermediate_value").and_then(number);
                if let (Some(t), Some(step), Some(value)) = (
                    self.updatable(op.get("trial_id").unwrap_or(&Value::Null)),
                    step,
                    value,
                ) {
                    t.intermediate.insert(step, value);
                }
            }
            8 | 9 => {
                let field = if code == 8 {
                    "user_attr"
                } else {
                    "system_attr"
                };
                let kv = one_key(op.get(field));
                if let (Some(t), Some((k, v))) = (
                    self.updatable(op.get("trial_id").unwrap_or(&Value::Null)),
                    kv,
                ) {
                    if code == 8 {
                        t.user_attrs.insert(k, v);
                    } else {
                        t.system_attrs.insert(k, v);
                    }
                }
            }
            10 => {}
            other => {
                return Err(format!(
                    "line {n}: unknown journal operation {other} (a newer Optuna? this plugin \
                     knows 0-10)"
                ));
            }
        }
        Ok(())
    }

    fn create_trial(&mut self, op: &Value) {
        let Some(study_id) = op.get("study_id").and_then(Value::as_i64) else {
            return;
        };
        if self.deleted.contains(&study_id) {
            return;
        }
        let Some(study) = self.studies.get_mut(&study_id) else {
            return;
        };
        let trial_id = self.trials.len() as i64;
        let position = study.trials.len() as i64;
        let state = op
            .get("state")
            .and_then(Value::as_u64)
            .and_then(|s| STATES.get(s as usize))
            .copied()
            .unwrap_or("RUNNING");
        let mut t = Trial {
            trial_id: Some(trial_id),
            number: position,
            state: state.to_string(),
            start_us: op
                .get("datetime_start")
                .and_then(Value::as_str)
                .and_then(parse_datetime),
            complete_us: op
                .get("datetime_complete")
                .and_then(Value::as_str)
                .and_then(parse_datetime),
            ..Trial::default()
        };
        // Templates: `value` for one objective, `values` for several.
        t.values = op
            .get("values")
            .and_then(values_of)
            .or_else(|| op.get("value").and_then(number).map(|v| vec![v]));
        let dists: BTreeMap<String, Value> = op
            .get("distributions")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), distribution(v)?)))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(params) = op.get("params").and_then(Value::as_object) {
            for (k, internal) in params {
                let dist = dists.get(k).cloned();
                let value = dist
                    .as_ref()
                    .map(|d| external(d, internal))
                    .unwrap_or_else(|| internal.clone());
                t.params.insert(k.clone(), (value, dist));
            }
        }
        for (field, into) in [("user_attrs", 0), ("system_attrs", 1)] {
            if let Some(m) = op.get(field).and_then(Value::as_object) {
                for (k, v) in m {
                    if into == 0 {
                        t.user_attrs.insert(k.clone(), v.clone());
                    } else {
                        t.system_attrs.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if let Some(m) = op.get("intermediate_values").and_then(Value::as_object) {
            for (k, v) in m {
                if let (Ok(step), Some(v)) = (k.parse::<i64>(), number(v)) {
                    t.intermediate.insert(step, v);
                }
            }
        }
        study.trials.push(t);
        self.trials.push((study_id, position as usize));
    }

    /// The studies that were not deleted, by id.
    pub fn studies(&self) -> Vec<Study> {
        self.studies
            .iter()
            .filter(|(id, _)| !self.deleted.contains(id))
            .map(|(_, s)| s.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_utc_micros() {
        assert_eq!(
            parse_datetime("1970-01-01T00:00:01.5+00:00"),
            Some(1_500_000)
        );
        assert_eq!(
            parse_datetime("2026-11-27T15:31:10.429030+00:00"),
            Some(1_795_793_470_429_030)
        );
        assert_eq!(
            parse_datetime("2026-11-27 15:31:10.429030"),
            Some(1_795_793_470_429_030)
        );
        assert_eq!(parse_datetime("not a date"), None);
    }
}
