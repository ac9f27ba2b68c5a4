//! What happens to a trace after it is logged: tags set and deleted (`set_trace_tag`,
//! `delete_trace_tag`), assessments (`log_feedback`, `log_expectation`, `update_assessment`,
//! `override_feedback`, `delete_assessment`) and deletes (`delete_traces`).
//!
//! A trace's files are kept as its client sent them; every change is a row appended to an
//! extension table — `mlflow.trace_changes` (tags, deletes) and `mlflow.assessments` (each
//! version of each assessment) — so nothing is rewritten, several servers can share a store,
//! SQL sees the whole history, and a trace's state is its rows folded in order
//! ([`edits`]). A deleted trace's files stay in the store: MLflow's API no longer shows it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use runql_core::schema::timestamp_type;
use runql_core::store::string_column;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::state::{Mlflow, State};
use super::traces::{NAMESPACE, TRACE_INFO, format_rfc3339_ms};
use super::wire::{self, Int, project_of};
use crate::error::ApiError;
use crate::request::{MlflowJson, Write};

const CHANGES: &str = "trace_changes";
const ASSESSMENTS: &str = "assessments";

/// `mlflow.trace_changes`: one row per change of a trace after it was logged.
fn changes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("project", DataType::Utf8, false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("at", timestamp_type(), false),
        // `set_tag`, `delete_tag` or `delete`.
        Field::new("change", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
    ]))
}

/// `mlflow.assessments`: one row per version of an assessment (created, updated, overridden,
/// deleted); the latest row of an `assessment_id` is its state.
fn assessments_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("project", DataType::Utf8, false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("assessment_id", DataType::Utf8, false),
        Field::new("at", timestamp_type(), false),
        Field::new("name", DataType::Utf8, true),
        // `feedback` or `expectation`.
        Field::new("kind", DataType::Utf8, true),
        // The value as JSON text (`0.9`, `"A"`, `true`).
        Field::new("value", DataType::Utf8, true),
        // The value when it is a number or a boolean (1/0).
        Field::new("value_num", DataType::Float64, true),
        Field::new("rationale", DataType::Utf8, true),
        Field::new("source_type", DataType::Utf8, true),
        Field::new("source_id", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("valid", DataType::Boolean, true),
        Field::new("deleted", DataType::Boolean, false),
        // The assessment as MLflow answers it.
        Field::new("assessment", DataType::Utf8, false),
    ]))
}

/// A trace's changes, folded.
#[derive(Debug, Default, Clone)]
pub(crate) struct Edits {
    pub(crate) deleted: bool,
    /// Tags set (`Some`) or deleted (`None`) after the trace was logged.
    tags: BTreeMap<String, Option<String>>,
    /// Its assessments by id, in the order they were created; `None`: deleted.
    assessments: Vec<(String, Option<Value>)>,
}

impl Edits {
    fn assessment(&self, id: &str) -> Option<&Value> {
        self.assessments
            .iter()
            .find(|(a, _)| a == id)
            .and_then(|(_, v)| v.as_ref())
    }

    fn put_assessment(&mut self, id: &str, v: Option<Value>) {
        match self.assessments.iter_mut().find(|(a, _)| a == id) {
            Some(slot) => slot.1 = v,
            None => self.assessments.push((id.to_string(), v)),
        }
    }

    /// The assessments that stand (not deleted), as MLflow lists them on a trace.
    pub(crate) fn live_assessments(&self) -> impl Iterator<Item = &Value> {
        self.assessments.iter().filter_map(|(_, v)| v.as_ref())
    }

    /// The trace info as it stands: tags changed, assessments listed.
    pub(crate) fn apply(&self, info: &mut Value) {
        if let Some(obj) = info.as_object_mut() {
            if !self.tags.is_empty() {
                let tags = obj
                    .entry("tags")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(tags) = tags {
                    for (k, v) in &self.tags {
                        match v {
                            Some(v) => {
                                tags.insert(k.clone(), json!(v));
                            }
                            None => {
                                tags.remove(k);
                            }
                        }
                    }
                }
            }
            let list: Vec<Value> = self.live_assessments().cloned().collect();
            if !list.is_empty() {
                obj.insert("assessments".into(), Value::Array(list));
            }
        }
    }

    /// The value of the newest valid assessment of a kind and name, as text (`0.9`, `A`).
    pub(crate) fn assessment_value(&self, kind: &str, name: &str) -> Option<String> {
        self.live_assessments()
            .filter(|a| {
                a.get("assessment_name").and_then(Value::as_str) == Some(name)
                    && a.get(kind).is_some()
                    && a.get("valid").and_then(Value::as_bool) != Some(false)
            })
            .last()
            .and_then(|a| a.get(kind)?.get("value"))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    }
}

/// The changes of every trace of a project that has any, folded in the order they were made.
pub(crate) async fn edits(s: &Mlflow, project: &str) -> Result<HashMap<String, Edits>, ApiError> {
    let store = s.store();
    let (changes, assessments) = tokio::try_join!(
        store.table_rows(project, NAMESPACE, CHANGES),
        store.table_rows(project, NAMESPACE, ASSESSMENTS),
    )?;
    let mut out: HashMap<String, Edits> = HashMap::new();
    for b in &changes {
        let (id, change, key, value) = (
            string_column(b, "trace_id")?,
            string_column(b, "change")?,
            string_column(b, "key")?,
            string_column(b, "value")?,
        );
        for i in 0..b.num_rows() {
            let e = out.entry(id.value(i).to_string()).or_default();
            let key = key.is_valid(i).then(|| key.value(i).to_string());
            match (change.value(i), key) {
                ("set_tag", Some(k)) => {
                    let v = value.is_valid(i).then(|| value.value(i).to_string());
                    e.tags.insert(k, Some(v.unwrap_or_default()));
                }
                ("delete_tag", Some(k)) => {
                    e.tags.insert(k, None);
                }
                ("delete", _) => e.deleted = true,
                _ => {}
            }
        }
    }
    for b in &assessments {
        let (id, aid, deleted, body) = (
            string_column(b, "trace_id")?,
            string_column(b, "assessment_id")?,
            b.column_by_name("deleted")
                .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
                .ok_or_else(|| ApiError::internal("mlflow.assessments has no deleted column"))?,
            string_column(b, "assessment")?,
        );
        for i in 0..b.num_rows() {
            let e = out.entry(id.value(i).to_string()).or_default();
            let v = if deleted.value(i) {
                None
            } else {
                serde_json::from_str(body.value(i)).ok()
            };
            e.put_assessment(aid.value(i), v);
        }
    }
    Ok(out)
}

/// The project of a trace that exists and is not deleted, with its changes (404 otherwise).
async fn live_trace(s: &Mlflow, trace_id: &str) -> Result<(String, Edits), ApiError> {
    let store = s.store();
    let project = store
        .find_trace(trace_id)
        .await?
        .ok_or_else(|| no_trace(trace_id))?;
    let e = edits(s, &project)
        .await?
        .remove(trace_id)
        .unwrap_or_default();
    if e.deleted {
        return Err(no_trace(trace_id));
    }
    Ok((project, e))
}

fn no_trace(trace_id: &str) -> ApiError {
    ApiError::not_found(format!("Trace with ID {trace_id} is not found."))
}

async fn append_change(
    s: &Mlflow,
    project: &str,
    trace_id: &str,
    change: &str,
    key: Option<&str>,
    value: Option<&str>,
) -> Result<(), ApiError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![project])),
        Arc::new(StringArray::from(vec![trace_id])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![runql_core::model::now_us()]).with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(vec![change])),
        Arc::new(StringArray::from(vec![key])),
        Arc::new(StringArray::from(vec![value])),
    ];
    let batch = RecordBatch::try_new(changes_schema(), columns).map_err(ApiError::internal)?;
    super::traces::append(s, project, CHANGES, changes_schema(), batch).await
}

async fn append_assessment(
    s: &Mlflow,
    project: &str,
    trace_id: &str,
    a: &Value,
    deleted: bool,
) -> Result<(), ApiError> {
    let text = |k: &str| a.get(k).and_then(Value::as_str).map(String::from);
    let (kind, value) = match (a.get("feedback"), a.get("expectation")) {
        (Some(f), _) => (Some("feedback"), f.get("value")),
        (None, Some(x)) => (Some("expectation"), x.get("value")),
        _ => (None, None),
    };
    let value_num = match value {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::Bool(b)) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    let source = |k: &str| {
        a.get("source")
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![project])),
        Arc::new(StringArray::from(vec![trace_id])),
        Arc::new(StringArray::from(vec![text("assessment_id")])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![runql_core::model::now_us()]).with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(vec![text("assessment_name")])),
        Arc::new(StringArray::from(vec![kind])),
        Arc::new(StringArray::from(vec![value.map(Value::to_string)])),
        Arc::new(Float64Array::from(vec![value_num])),
        Arc::new(StringArray::from(vec![text("rationale")])),
        Arc::new(StringArray::from(vec![source("source_type")])),
        Arc::new(StringArray::from(vec![source("source_id")])),
        Arc::new(StringArray::from(vec![text("run_id")])),
        Arc::new(BooleanArray::from(vec![
            a.get("valid").and_then(Value::as_bool),
        ])),
        Arc::new(BooleanArray::from(vec![deleted])),
        Arc::new(StringArray::from(vec![a.to_string()])),
    ];
    let batch = RecordBatch::try_new(assessments_schema(), columns).map_err(ApiError::internal)?;
    super::traces::append(s, project, ASSESSMENTS, assessments_schema(), batch).await
}

/// `SetTraceTag` / `DeleteTraceTag`'s body.
#[derive(Debug, Deserialize)]
pub(crate) struct TraceTag {
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

fn tag_key(key: Option<String>) -> Result<String, ApiError> {
    let key = key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::missing("key"))?;
    if key.chars().count() > 250 {
        return Err(ApiError::invalid(format!(
            "Trace tag key '{}…' is longer than 250 characters",
            key.chars().take(40).collect::<String>()
        )));
    }
    Ok(key)
}

/// `PATCH /api/2.0/mlflow/traces/{trace_id}/tags`.
pub(crate) async fn set_tag(
    Write(s): Write<State>,
    Path(trace_id): Path<String>,
    MlflowJson(req): MlflowJson<TraceTag>,
) -> Result<Response, ApiError> {
    let key = tag_key(req.key)?;
    let value = req.value.unwrap_or_default();
    if value.chars().count() > 8000 {
        return Err(ApiError::invalid(format!(
            "Trace tag '{key}' has a value longer than 8000 characters"
        )));
    }
    let (project, _) = live_trace(&s, &trace_id).await?;
    append_change(&s, &project, &trace_id, "set_tag", Some(&key), Some(&value)).await?;
    Ok(wire::ok())
}

/// `DELETE /api/2.0/mlflow/traces/{trace_id}/tags`.
pub(crate) async fn delete_tag(
    Write(s): Write<State>,
    Path(trace_id): Path<String>,
    MlflowJson(req): MlflowJson<TraceTag>,
) -> Result<Response, ApiError> {
    let key = tag_key(req.key)?;
    let (project, e) = live_trace(&s, &trace_id).await?;
    let mut info = trace_info(&s, &project, &trace_id).await?;
    e.apply(&mut info);
    if info.get("tags").and_then(|t| t.get(&key)).is_none() {
        return Err(ApiError::not_found(format!(
            "No trace tag with key '{key}' for trace with ID '{trace_id}'"
        )));
    }
    append_change(&s, &project, &trace_id, "delete_tag", Some(&key), None).await?;
    Ok(wire::ok())
}

async fn trace_info(s: &Mlflow, project: &str, trace_id: &str) -> Result<Value, ApiError> {
    let bytes = s
        .store()
        .trace_file(project, trace_id, TRACE_INFO)
        .await?
        .ok_or_else(|| no_trace(trace_id))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal(format!("the info of trace {trace_id}: {e}")))
}

/// `DeleteTraces`' body.
#[derive(Debug, Deserialize)]
pub(crate) struct DeleteTraces {
    experiment_id: Option<String>,
    max_timestamp_millis: Option<Int>,
    max_traces: Option<Int>,
    #[serde(default)]
    request_ids: Vec<String>,
    #[serde(default)]
    trace_ids: Vec<String>,
}

/// `POST /api/2.0/mlflow/traces/delete-traces` (and its 3.0 twin): the traces named, or
/// those that started before a time (the oldest first, at most `max_traces`).
pub(crate) async fn delete_traces(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<DeleteTraces>,
) -> Result<Response, ApiError> {
    let experiment_id = req
        .experiment_id
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::missing("experiment_id"))?;
    let mut ids = req.request_ids;
    ids.extend(req.trace_ids);
    let max_ts = req.max_timestamp_millis.map(|m| m.0);
    match (max_ts.is_some(), ids.is_empty()) {
        (true, false) => {
            return Err(ApiError::invalid(
                "Only one of `max_timestamp_millis` and `request_ids` can be specified.",
            ));
        }
        (false, true) => {
            return Err(ApiError::invalid(
                "Either `max_timestamp_millis` or `request_ids` must be specified.",
            ));
        }
        _ => {}
    }
    let project = project_of(&experiment_id).to_string();
    let store = s.store();
    let e = edits(&s, &project).await?;
    let live = |id: &str| !e.get(id).is_some_and(|e| e.deleted);
    let mut doomed: Vec<String> = Vec::new();
    if let Some(max_ts) = max_ts {
        let mut old: Vec<(i64, String)> = Vec::new();
        for id in store.list_traces(&project).await? {
            if !live(&id) {
                continue;
            }
            let Ok(info) = trace_info(&s, &project, &id).await else {
                continue;
            };
            let at = super::traces::request_time_us(info.get("request_time")).map(|us| us / 1000);
            if let Some(at) = at.filter(|at| *at <= max_ts) {
                old.push((at, id));
            }
        }
        old.sort();
        let max = req.max_traces.map_or(usize::MAX, |m| m.0.max(0) as usize);
        doomed.extend(old.into_iter().take(max).map(|(_, id)| id));
    } else {
        for id in ids {
            let exists = runql_core::store::is_trace_id(&id)
                && store.trace_file(&project, &id, TRACE_INFO).await?.is_some();
            if exists && live(&id) && !doomed.contains(&id) {
                doomed.push(id);
            }
        }
    }
    for id in &doomed {
        append_change(&s, &project, id, "delete", None, None).await?;
    }
    Ok(axum::Json(json!({"traces_deleted": doomed.len()})).into_response())
}

/// `CreateAssessment`'s body.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateAssessment {
    assessment: Option<Map<String, Value>>,
}

fn now_text() -> String {
    format_rfc3339_ms(runql_core::model::now_us())
}

/// `POST /api/3.0/mlflow/traces/{trace_id}/assessments`.
pub(crate) async fn create(
    Write(s): Write<State>,
    Path(trace_id): Path<String>,
    MlflowJson(req): MlflowJson<CreateAssessment>,
) -> Result<Response, ApiError> {
    let mut a = req
        .assessment
        .ok_or_else(|| ApiError::missing("assessment"))?;
    let name = a
        .get("assessment_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::missing("assessment.assessment_name"))?
        .to_string();
    if a.contains_key("feedback") == a.contains_key("expectation") {
        return Err(ApiError::invalid(format!(
            "Assessment '{name}' must have exactly one of `feedback` or `expectation`"
        )));
    }
    let (project, e) = live_trace(&s, &trace_id).await?;
    let id = format!("a-{}", uuid::Uuid::new_v4().simple());
    let now = now_text();
    a.insert("assessment_id".into(), json!(id));
    a.insert("trace_id".into(), json!(trace_id));
    a.entry("create_time").or_insert_with(|| json!(now));
    a.entry("last_update_time").or_insert_with(|| json!(now));
    a.entry("valid").or_insert(json!(true));
    // An override (`override_feedback`) makes the assessment it replaces invalid.
    if let Some(old_id) = a.get("overrides").and_then(Value::as_str) {
        let mut old = e
            .assessment(old_id)
            .cloned()
            .ok_or_else(|| no_assessment(&trace_id, old_id))?;
        old["valid"] = json!(false);
        old["last_update_time"] = json!(now);
        append_assessment(&s, &project, &trace_id, &old, false).await?;
    }
    let a = Value::Object(a);
    append_assessment(&s, &project, &trace_id, &a, false).await?;
    Ok(axum::Json(json!({"assessment": a})).into_response())
}

fn no_assessment(trace_id: &str, id: &str) -> ApiError {
    ApiError::not_found(format!(
        "Assessment with ID '{id}' not found for trace '{trace_id}'"
    ))
}

/// `GET /api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`.
pub(crate) async fn get(
    crate::request::Read(s): crate::request::Read<State>,
    Path((trace_id, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, e) = live_trace(&s, &trace_id).await?;
    let a = e
        .assessment(&id)
        .cloned()
        .ok_or_else(|| no_assessment(&trace_id, &id))?;
    Ok(axum::Json(json!({"assessment": a})).into_response())
}

/// `UpdateAssessment`'s body.
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateAssessment {
    assessment: Option<Map<String, Value>>,
    /// A protobuf FieldMask: `"assessmentName,feedback"` (JSON) or `{"paths": […]}`.
    update_mask: Option<Value>,
}

/// `PATCH /api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`: the fields the
/// mask names, from the body.
pub(crate) async fn update(
    Write(s): Write<State>,
    Path((trace_id, id)): Path<(String, String)>,
    MlflowJson(req): MlflowJson<UpdateAssessment>,
) -> Result<Response, ApiError> {
    let given = req.assessment.unwrap_or_default();
    let paths: Vec<String> = match req.update_mask {
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Object(m)) => m
            .get("paths")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        _ => given.keys().cloned().collect(),
    };
    let (project, e) = live_trace(&s, &trace_id).await?;
    let mut a = e
        .assessment(&id)
        .cloned()
        .ok_or_else(|| no_assessment(&trace_id, &id))?;
    for path in paths.iter().filter(|p| !p.is_empty()) {
        let field = snake(path);
        match field.as_str() {
            "assessment_name" | "feedback" | "expectation" | "rationale" | "metadata" => {}
            other => {
                return Err(ApiError::invalid(format!(
                    "Invalid update mask path '{other}': an assessment's assessment_name, \
                     feedback, expectation, rationale and metadata can be updated"
                )));
            }
        }
        match given.get(&field) {
            Some(v) => {
                // One value at a time: feedback replaces an expectation and the reverse.
                if field == "feedback" {
                    a.as_object_mut().map(|o| o.remove("expectation"));
                }
                if field == "expectation" {
                    a.as_object_mut().map(|o| o.remove("feedback"));
                }
                if field == "metadata"
                    && let (Some(Value::Object(old)), Value::Object(new)) =
                        (a.get_mut("metadata"), v)
                {
                    old.extend(new.clone());
                    continue;
                }
                a[field.as_str()] = v.clone();
            }
            None => {
                a.as_object_mut().map(|o| o.remove(&field));
            }
        }
    }
    a["last_update_time"] = json!(now_text());
    append_assessment(&s, &project, &trace_id, &a, false).await?;
    Ok(axum::Json(json!({"assessment": a})).into_response())
}

/// `assessmentName` → `assessment_name`.
fn snake(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `DELETE /api/3.0/mlflow/traces/{trace_id}/assessments/{assessment_id}`. An override that
/// is deleted makes the assessment it replaced valid again, as in MLflow.
pub(crate) async fn delete(
    Write(s): Write<State>,
    Path((trace_id, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (project, e) = live_trace(&s, &trace_id).await?;
    let Some(a) = e.assessment(&id).cloned() else {
        // MLflow answers a delete of what is not there with success.
        return Ok(wire::ok());
    };
    if let Some(old) = a
        .get("overrides")
        .and_then(Value::as_str)
        .and_then(|o| e.assessment(o))
    {
        let mut old = old.clone();
        old["valid"] = json!(true);
        old["last_update_time"] = json!(now_text());
        append_assessment(&s, &project, &trace_id, &old, false).await?;
    }
    append_assessment(&s, &project, &trace_id, &a, true).await?;
    Ok(wire::ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_mask_paths_become_field_names() {
        assert_eq!(snake("assessmentName"), "assessment_name");
        assert_eq!(snake("feedback"), "feedback");
        assert_eq!(snake("rationale"), "rationale");
    }

    #[test]
    fn edits_apply_tags_and_list_live_assessments() {
        let mut e = Edits::default();
        e.tags.insert("color".into(), Some("red".into()));
        e.tags.insert("gone".into(), None);
        e.put_assessment(
            "a-1",
            Some(json!({"assessment_name": "q", "feedback": {"value": 0.5}})),
        );
        e.put_assessment(
            "a-2",
            Some(json!({"assessment_name": "x", "expectation": {"value": "A"}})),
        );
        e.put_assessment(
            "a-1",
            Some(json!({"assessment_name": "q", "feedback": {"value": 0.9}})),
        );
        e.put_assessment("a-2", None);
        let mut info = json!({"tags": {"gone": "1", "kept": "2"}});
        e.apply(&mut info);
        assert_eq!(info["tags"], json!({"color": "red", "kept": "2"}));
        assert_eq!(info["assessments"].as_array().map(Vec::len), Some(1));
        assert_eq!(e.assessment_value("feedback", "q").as_deref(), Some("0.9"));
        assert_eq!(e.assessment_value("expectation", "x"), None);
    }
}
