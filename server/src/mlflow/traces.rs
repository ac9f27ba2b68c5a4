//! MLflow 3 tracing (`@mlflow.trace`, `mlflow.start_span`, the autologgers' LLM spans), as the
//! `mlflow` client sends traces to a server older than 3.4: `StartTraceV3`
//! (`POST /api/3.0/mlflow/traces`, the trace's info, sent when the trace ends), then its span
//! data as the file `traces.json` through the artifact proxy, at the location the answer names
//! (`<experiment>/traces/<trace id>/artifacts`).
//!
//! Both files are kept as the client sent them (store/traces.rs), so `mlflow.get_trace` and
//! `mlflow.search_traces` read them back; and each becomes rows of the extension tables
//! `mlflow.traces` (one per trace) and `mlflow.spans` (one per span), which SQL joins to
//! `runs` by `run_id` and to `llm.calls` by `otel_trace_id` and `span_id`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use runql_core::schema::timestamp_type;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::runs::ensure_project;
use super::state::{Mlflow, State};
use super::wire::{self, Int, experiment_id_of, project_of};
use crate::error::ApiError;
use crate::request::{MlflowJson, Read, Write};

/// The SQL schema the trace tables are in.
pub(crate) const NAMESPACE: &str = "mlflow";
/// The span data file of a trace, as MLflow names it.
pub(crate) const TRACE_DATA: &str = "traces.json";
pub(crate) const TRACE_INFO: &str = "info.json";

/// `mlflow.traces`: one row per trace.
fn traces_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("project", DataType::Utf8, false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("request_time", timestamp_type(), true),
        Field::new("execution_ms", DataType::Int64, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("request_preview", DataType::Utf8, true),
        Field::new("response_preview", DataType::Utf8, true),
        Field::new("tags", DataType::Utf8, true),
        Field::new("metadata", DataType::Utf8, true),
    ]))
}

/// `mlflow.spans`: one row per span.
fn spans_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("project", DataType::Utf8, false),
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, true),
        Field::new("otel_trace_id", DataType::Utf8, true),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("parent_span_id", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("span_type", DataType::Utf8, true),
        Field::new("kind", DataType::Utf8, true),
        Field::new("start_time", timestamp_type(), true),
        Field::new("end_time", timestamp_type(), true),
        Field::new("duration_ms", DataType::Float64, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("status_message", DataType::Utf8, true),
        Field::new("model", DataType::Utf8, true),
        Field::new("input_tokens", DataType::Int64, true),
        Field::new("output_tokens", DataType::Int64, true),
        Field::new("total_tokens", DataType::Int64, true),
        Field::new("inputs", DataType::Utf8, true),
        Field::new("outputs", DataType::Utf8, true),
        Field::new("attributes", DataType::Utf8, true),
    ]))
}

/// `StartTraceV3`'s body.
#[derive(Debug, Deserialize)]
pub(crate) struct StartTrace {
    trace: TraceIn,
}

#[derive(Debug, Deserialize)]
struct TraceIn {
    trace_info: Map<String, Value>,
}

/// The experiment a trace info names (`trace_location.mlflow_experiment.experiment_id`).
fn experiment_of(info: &Map<String, Value>) -> Option<&str> {
    info.get("trace_location")?
        .get("mlflow_experiment")?
        .get("experiment_id")?
        .as_str()
}

/// Where the client puts a trace's span data: the artifact proxy's trace folder.
fn location_of(experiment_id: &str, trace_id: &str) -> String {
    format!("mlflow-artifacts:/{experiment_id}/traces/{trace_id}/artifacts")
}

/// `POST /api/3.0/mlflow/traces`: keeps the trace's info, adds its row to `mlflow.traces`,
/// and answers the info with the artifact location its span data goes to.
pub(crate) async fn start_trace(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<StartTrace>,
) -> Result<Response, ApiError> {
    let mut info = req.trace.trace_info;
    let trace_id = info
        .get("trace_id")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::missing("trace.trace_info.trace_id"))?
        .to_string();
    if !runql_core::store::is_trace_id(&trace_id) {
        return Err(ApiError::invalid(format!(
            "Invalid trace id {trace_id:?}: trace ids are letters, digits, '-' and '_'"
        )));
    }
    let experiment_id = experiment_of(&info)
        .ok_or_else(|| {
            ApiError::missing("trace.trace_info.trace_location.mlflow_experiment.experiment_id")
        })?
        .to_string();
    let project = project_of(&experiment_id).to_string();
    let store = s.store();
    ensure_project(store, &project).await?;
    let tags = info
        .entry("tags")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(tags) = tags {
        tags.insert(
            "mlflow.artifactLocation".into(),
            json!(location_of(&experiment_id_of(&project), &trace_id)),
        );
    }
    let body = Value::Object(info.clone());
    let known = store
        .trace_file(&project, &trace_id, TRACE_INFO)
        .await?
        .is_some();
    store
        .put_trace_file(
            &project,
            &trace_id,
            TRACE_INFO,
            Bytes::from(body.to_string()),
        )
        .await?;
    // A retried request (the client retries on failure) adds no second row.
    if !known {
        let batch = trace_row(&project, &trace_id, &info)?;
        append(&s, &project, "traces", traces_schema(), batch).await?;
    }
    Ok(axum::Json(json!({"trace": {"trace_info": body}})).into_response())
}

pub(crate) async fn append(
    s: &Mlflow,
    project: &str,
    table: &str,
    schema: SchemaRef,
    batch: RecordBatch,
) -> Result<(), ApiError> {
    let store = s.store();
    store.define_table(NAMESPACE, table, schema).await?;
    store
        .append_rows(project, NAMESPACE, table, &[batch])
        .await?;
    // One file per trace: a compaction a little later merges them (once there are enough).
    s.compactor.schedule(project);
    Ok(())
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// The `mlflow.traces` row of a trace info.
fn trace_row(
    project: &str,
    trace_id: &str,
    info: &Map<String, Value>,
) -> Result<RecordBatch, ApiError> {
    let metadata = info.get("trace_metadata");
    let run_id = metadata
        .and_then(|m| m.get("mlflow.sourceRun"))
        .and_then(Value::as_str)
        .map(String::from);
    let request_time = request_time_us(info.get("request_time"));
    let execution_ms = execution_ms(info.get("execution_duration"));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![project])),
        Arc::new(StringArray::from(vec![trace_id])),
        Arc::new(StringArray::from(vec![run_id])),
        Arc::new(TimestampMicrosecondArray::from(vec![request_time]).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![execution_ms])),
        Arc::new(StringArray::from(vec![text(info.get("state"))])),
        Arc::new(StringArray::from(vec![text(info.get("request_preview"))])),
        Arc::new(StringArray::from(vec![text(info.get("response_preview"))])),
        Arc::new(StringArray::from(vec![
            info.get("tags").map(Value::to_string),
        ])),
        Arc::new(StringArray::from(vec![metadata.map(Value::to_string)])),
    ];
    RecordBatch::try_new(traces_schema(), columns).map_err(ApiError::internal)
}

/// Stores a trace's span data (`traces.json`, uploaded through the artifact proxy) and adds
/// its spans to `mlflow.spans` the first time it arrives.
pub(crate) async fn put_data(
    s: &Mlflow,
    experiment_id: &str,
    trace_id: &str,
    rel: &str,
    bytes: Bytes,
) -> Result<(), ApiError> {
    if rel != TRACE_DATA {
        return Err(ApiError::invalid(format!(
            "a trace keeps its span data as {TRACE_DATA}, not {rel:?}"
        )));
    }
    let project = project_in(s, experiment_id, trace_id).await?;
    let data: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(format!("{TRACE_DATA} of trace {trace_id} is not JSON: {e}"))
    })?;
    let info: Value = match s.store().trace_file(&project, trace_id, TRACE_INFO).await? {
        Some(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        None => Value::Null,
    };
    let run_id = info
        .get("trace_metadata")
        .and_then(|m| m.get("mlflow.sourceRun"))
        .and_then(Value::as_str);
    let spans = spans_of_data(&data)?;
    let store = s.store();
    let known = store
        .trace_file(&project, trace_id, TRACE_DATA)
        .await?
        .is_some();
    store
        .put_trace_file(&project, trace_id, TRACE_DATA, bytes)
        .await?;
    if !known {
        append_spans(s, &project, trace_id, run_id, &spans).await?;
    }
    Ok(())
}

/// A trace's file (`traces.json`), for the artifact proxy.
pub(crate) async fn get_data(
    s: &Mlflow,
    experiment_id: &str,
    trace_id: &str,
    rel: &str,
) -> Result<Bytes, ApiError> {
    let project = project_in(s, experiment_id, trace_id).await?;
    let missing = || {
        ApiError::not_found(format!(
            "No such artifact: '{experiment_id}/traces/{trace_id}/artifacts/{rel}'"
        ))
    };
    if rel != TRACE_DATA {
        return Err(missing());
    }
    s.store()
        .trace_file(&project, trace_id, TRACE_DATA)
        .await?
        .ok_or_else(missing)
}

/// The files of a trace's artifact folder, for the artifact proxy's listing.
pub(crate) async fn list_data(
    s: &Mlflow,
    experiment_id: &str,
    trace_id: &str,
    dir: &str,
) -> Result<Vec<(String, Option<u64>)>, ApiError> {
    let project = project_in(s, experiment_id, trace_id).await?;
    if !dir.is_empty() {
        return Ok(Vec::new());
    }
    Ok(s.store()
        .trace_file(&project, trace_id, TRACE_DATA)
        .await?
        .map(|b| vec![(TRACE_DATA.to_string(), Some(b.len() as u64))])
        .unwrap_or_default())
}

/// The project of a trace of experiment `experiment_id` (404 when it has no such trace).
async fn project_in(s: &Mlflow, experiment_id: &str, trace_id: &str) -> Result<String, ApiError> {
    let project = project_of(experiment_id).to_string();
    match s.store().trace_file(&project, trace_id, TRACE_INFO).await? {
        Some(_) => Ok(project),
        None => Err(no_trace(trace_id)),
    }
}

fn no_trace(trace_id: &str) -> ApiError {
    ApiError::not_found(format!("Trace with ID {trace_id} is not found."))
}

/// `GET /api/3.0/mlflow/traces/{trace_id}`: the trace's info.
pub(crate) async fn get_trace_info(
    Read(s): Read<State>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let store = s.store();
    let project = store
        .find_trace(&trace_id)
        .await?
        .ok_or_else(|| no_trace(&trace_id))?;
    let info = store
        .trace_file(&project, &trace_id, TRACE_INFO)
        .await?
        .ok_or_else(|| no_trace(&trace_id))?;
    let mut info: Value = serde_json::from_slice(&info)
        .map_err(|e| ApiError::internal(format!("the info of trace {trace_id}: {e}")))?;
    // Tags, assessments and deletes made since it was logged.
    if let Some(e) = super::trace_edits::edits(&s, &project)
        .await?
        .remove(&trace_id)
    {
        if e.deleted {
            return Err(no_trace(&trace_id));
        }
        e.apply(&mut info);
    }
    Ok(axum::Json(json!({"trace": {"trace_info": info}})).into_response())
}

/// `POST /api/3.0/mlflow/traces/search`.
#[derive(Debug, Deserialize)]
pub(crate) struct SearchTraces {
    #[serde(default)]
    locations: Vec<Value>,
    #[serde(default)]
    experiment_ids: Vec<String>,
    filter: Option<String>,
    max_results: Option<Int>,
    #[serde(default)]
    order_by: Vec<String>,
    page_token: Option<String>,
}

/// The traces of some experiments that pass the filter (MLflow's trace filter strings:
/// `attributes.run_id`, `status`, `timestamp_ms`, `execution_time_ms`, `name`, `trace_id`,
/// `tags.<key>`, `metadata.<key>`, `span.name|type|status|attributes.<key>` (some span of
/// the trace), `feedback.<name>` and `expectation.<name>`, joined by AND), in `order_by`'s
/// order (newest first by default), paged. Deleted traces are left out; tags and
/// assessments are as they stand now.
pub(crate) async fn search_traces(
    Read(s): Read<State>,
    MlflowJson(req): MlflowJson<SearchTraces>,
) -> Result<Response, ApiError> {
    use futures::stream::{self, StreamExt, TryStreamExt};
    let conditions = super::search::parse_trace_filter(req.filter.as_deref().unwrap_or(""))?;
    let order = trace_order(&req.order_by)?;
    let mut experiments: Vec<String> = req
        .locations
        .iter()
        .filter_map(|l| {
            l.get("mlflow_experiment")?
                .get("experiment_id")?
                .as_str()
                .map(String::from)
        })
        .collect();
    experiments.extend(req.experiment_ids);
    if experiments.is_empty() {
        return Err(ApiError::missing("locations"));
    }
    let store = s.store();
    let with_spans = conditions.iter().any(|c| c.entity_name() == "span");
    let mut infos: Vec<Value> = Vec::new();
    for exp in &experiments {
        let project = &*project_of(exp);
        let mut edits = super::trace_edits::edits(&s, project).await?;
        let spans = if with_spans {
            span_values(store, project).await?
        } else {
            HashMap::new()
        };
        let ids: Vec<String> = store
            .list_traces(project)
            .await?
            .into_iter()
            .filter(|id| !edits.get(id).is_some_and(|e| e.deleted))
            .collect();
        // The infos, several read at once (one object each).
        let read: Vec<(String, Option<Bytes>)> = stream::iter(ids)
            .map(|id| async move {
                let b = store.trace_file(project, &id, TRACE_INFO).await?;
                Ok::<_, runql_core::Error>((id, b))
            })
            .buffered(16)
            .try_collect()
            .await?;
        for (id, bytes) in read {
            let Some(mut v) = bytes.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else {
                continue;
            };
            let e = edits.remove(&id).unwrap_or_default();
            e.apply(&mut v);
            let no_spans = Vec::new();
            let trace_spans = spans.get(&id).unwrap_or(&no_spans);
            if !passes(&conditions, &v, &e, trace_spans)? {
                continue;
            }
            infos.push(v);
        }
    }
    infos.sort_by(|a, b| {
        for (key, desc) in &order {
            let ord = order_value(a, key).cmp(&order_value(b, key));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        order_value(a, "trace_id").cmp(&order_value(b, "trace_id"))
    });
    let max = req.max_results.map_or(100, |m| m.0).clamp(1, 50_000) as usize;
    let offset = wire::page_offset(req.page_token.as_deref())?;
    let page: Vec<Value> = infos.into_iter().skip(offset).take(max + 1).collect();
    let more = page.len() > max;
    let page = page.into_iter().take(max).collect();
    Ok(wire::page("traces", page, more.then_some(offset + max)))
}

/// A sort key of a trace info: numbers sort as numbers, text as text, absent first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OrderValue {
    Absent,
    Number(i64),
    Text(String),
}

fn order_value(info: &Value, key: &str) -> OrderValue {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
    let value = match key {
        "timestamp_ms" | "timestamp" => {
            return request_time_us(info.get("request_time"))
                .map_or(OrderValue::Absent, OrderValue::Number);
        }
        "execution_time_ms" | "execution_time" => {
            return execution_ms(info.get("execution_duration"))
                .map_or(OrderValue::Absent, OrderValue::Number);
        }
        "end_time_ms" | "end_time" => {
            let start = request_time_us(info.get("request_time"));
            let took = execution_ms(info.get("execution_duration"));
            return match (start, took) {
                (Some(s), Some(t)) => OrderValue::Number(s + t * 1000),
                _ => OrderValue::Absent,
            };
        }
        "status" | "state" => text(info.get("state")),
        "name" => text(info.get("tags").and_then(|t| t.get("mlflow.traceName"))),
        "run_id" => text(
            info.get("trace_metadata")
                .and_then(|t| t.get("mlflow.sourceRun")),
        ),
        "experiment_id" => text(
            info.get("trace_location")
                .and_then(|l| l.get("mlflow_experiment"))
                .and_then(|m| m.get("experiment_id")),
        ),
        _ => text(info.get("trace_id")),
    };
    value.map_or(OrderValue::Absent, OrderValue::Text)
}

/// `order_by` clauses of a trace search (`timestamp_ms DESC`, `attributes.name ASC`): keys
/// and whether descending; none: newest first.
fn trace_order(order_by: &[String]) -> Result<Vec<(String, bool)>, ApiError> {
    const KEYS: [&str; 14] = [
        "experiment_id",
        "timestamp",
        "timestamp_ms",
        "execution_time",
        "execution_time_ms",
        "end_time",
        "end_time_ms",
        "status",
        "state",
        "request_id",
        "trace_id",
        "name",
        "run_id",
        "request_time",
    ];
    if order_by.is_empty() {
        return Ok(vec![("timestamp_ms".into(), true)]);
    }
    order_by
        .iter()
        .map(|clause| {
            let mut words = clause.split_whitespace();
            let key = words.next().unwrap_or("");
            let key = key
                .strip_prefix("attributes.")
                .or_else(|| key.strip_prefix("attribute."))
                .or_else(|| key.strip_prefix("trace."))
                .unwrap_or(key);
            let desc = match words.next().map(str::to_uppercase).as_deref() {
                None | Some("ASC") => false,
                Some("DESC") => true,
                Some(other) => {
                    return Err(ApiError::invalid(format!(
                        "Invalid order_by clause '{clause}': {other} is not ASC or DESC"
                    )));
                }
            };
            if !KEYS.contains(&key) || words.next().is_some() {
                return Err(ApiError::invalid(format!(
                    "Invalid order_by clause '{clause}': traces are ordered by {}",
                    KEYS.join(", ")
                )));
            }
            let key = match key {
                "request_time" => "timestamp_ms",
                "request_id" => "trace_id",
                k => k,
            };
            Ok((key.to_string(), desc))
        })
        .collect()
}

/// A span's values that trace filters compare: name, type, status, attributes.
#[derive(Debug, Default)]
struct SpanValues {
    name: Option<String>,
    span_type: Option<String>,
    status: Option<String>,
    attributes: Option<Map<String, Value>>,
}

/// The spans of each trace of a project, from `mlflow.spans`.
async fn span_values(
    store: &runql_core::Store,
    project: &str,
) -> Result<HashMap<String, Vec<SpanValues>>, ApiError> {
    let mut out: HashMap<String, Vec<SpanValues>> = HashMap::new();
    for b in store.table_rows(project, NAMESPACE, "spans").await? {
        let col = |n: &str| runql_core::store::string_column(&b, n).cloned();
        let (id, name, ty, status, attrs) = (
            col("trace_id")?,
            col("name")?,
            col("span_type")?,
            col("status")?,
            col("attributes")?,
        );
        let opt = |a: &StringArray, i: usize| {
            arrow::array::Array::is_valid(a, i).then(|| a.value(i).to_string())
        };
        for i in 0..b.num_rows() {
            out.entry(id.value(i).to_string())
                .or_default()
                .push(SpanValues {
                    name: opt(&name, i),
                    span_type: opt(&ty, i),
                    status: opt(&status, i),
                    attributes: opt(&attrs, i).and_then(|a| serde_json::from_str(&a).ok()),
                });
        }
    }
    Ok(out)
}

/// A span, from MLflow's span data or from an OTLP export: OpenTelemetry ids in hex, times in
/// ns, status and kind by name (`OK`, `CLIENT`), attribute values as sent (MLflow's are JSON
/// text, decoded where a column wants the value).
#[derive(Debug, Clone, Default)]
pub(crate) struct Span {
    pub(crate) otel_trace_id: Option<String>,
    pub(crate) span_id: String,
    pub(crate) parent: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) kind: Option<String>,
    pub(crate) start_ns: Option<i64>,
    pub(crate) end_ns: Option<i64>,
    pub(crate) status: Option<String>,
    pub(crate) status_message: Option<String>,
    pub(crate) attributes: Map<String, Value>,
}

impl Span {
    /// An attribute's value, JSON text decoded.
    pub(crate) fn attr(&self, k: &str) -> Option<Value> {
        match self.attributes.get(k)? {
            Value::String(s) => serde_json::from_str(s)
                .ok()
                .or_else(|| Some(Value::String(s.clone()))),
            Value::Null => None,
            other => Some(other.clone()),
        }
    }

    /// The MLflow trace id of the span: MLflow's `mlflow.traceRequestId` attribute, else `tr-`
    /// and its OpenTelemetry trace id (MLflow's form of ids it makes from OTel traces).
    pub(crate) fn mlflow_trace_id(&self) -> String {
        match self.attr("mlflow.traceRequestId") {
            Some(Value::String(id)) if runql_core::store::is_trace_id(&id) => id,
            _ => format!(
                "tr-{}",
                self.otel_trace_id.as_deref().unwrap_or("0000000000000000")
            ),
        }
    }

    fn duration_ms(&self) -> Option<f64> {
        Some((self.end_ns? - self.start_ns?) as f64 / 1e6)
    }

    fn inputs(&self) -> Option<Value> {
        self.attr("mlflow.spanInputs")
            .or_else(|| self.attr("gen_ai.prompt"))
            .or_else(|| self.attr("input.value"))
    }

    fn outputs(&self) -> Option<Value> {
        self.attr("mlflow.spanOutputs")
            .or_else(|| self.attr("gen_ai.completion"))
            .or_else(|| self.attr("output.value"))
    }
}

/// A span of MLflow's span data (`Span.to_dict()`: ids in base64, `STATUS_CODE_OK`).
fn span_of_mlflow(i: usize, span: &Value) -> Result<Span, ApiError> {
    let id = span
        .get("span_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("span {i} of {TRACE_DATA} has no span_id")))?;
    let ns = |k: &str| {
        span.get(k)
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
    };
    let status = span.get("status");
    Ok(Span {
        otel_trace_id: span.get("trace_id").and_then(Value::as_str).map(otel_id),
        span_id: otel_id(id),
        parent: span
            .get("parent_span_id")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(otel_id),
        name: text(span.get("name")),
        kind: text(span.get("kind")).map(|k| k.trim_start_matches("SPAN_KIND_").to_string()),
        start_ns: ns("start_time_unix_nano"),
        end_ns: ns("end_time_unix_nano"),
        status: text(status.and_then(|s| s.get("code")))
            .map(|k| k.trim_start_matches("STATUS_CODE_").to_string()),
        status_message: text(status.and_then(|s| s.get("message"))).filter(|m| !m.is_empty()),
        attributes: span
            .get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    })
}

/// The spans of a trace's span data (`{"spans": [...]}`).
fn spans_of_data(data: &Value) -> Result<Vec<Span>, ApiError> {
    data.get("spans")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid(format!("{TRACE_DATA} has no \"spans\" list")))?
        .iter()
        .enumerate()
        .map(|(i, s)| span_of_mlflow(i, s))
        .collect()
}

/// Adds spans of trace `trace_id` to `mlflow.spans`.
pub(crate) async fn append_spans(
    s: &Mlflow,
    project: &str,
    trace_id: &str,
    run_id: Option<&str>,
    spans: &[Span],
) -> Result<(), ApiError> {
    if spans.is_empty() {
        return Ok(());
    }
    let batch = span_rows(project, trace_id, run_id, spans)?;
    append(s, project, "spans", spans_schema(), batch).await
}

/// Adds the `mlflow.traces` row of a trace known by its root span (an OTLP export, which
/// sends no trace info): its times, status, and its inputs and outputs as the previews.
pub(crate) async fn append_trace_of_root(
    s: &Mlflow,
    project: &str,
    trace_id: &str,
    root: &Span,
) -> Result<(), ApiError> {
    let preview = |v: Option<Value>| {
        v.map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .map(|t| t.chars().take(1000).collect::<String>())
    };
    let state = match root.status.as_deref() {
        Some("ERROR") => "ERROR",
        _ if root.end_ns.is_some() => "OK",
        _ => "IN_PROGRESS",
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![project])),
        Arc::new(StringArray::from(vec![trace_id])),
        Arc::new(StringArray::from(vec![
            root.attr("mlflow.sourceRun")
                .and_then(|v| v.as_str().map(String::from)),
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![root.start_ns.map(|n| n / 1000)])
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(vec![
            root.duration_ms().map(|d| d.round() as i64),
        ])),
        Arc::new(StringArray::from(vec![Some(state)])),
        Arc::new(StringArray::from(vec![preview(root.inputs())])),
        Arc::new(StringArray::from(vec![preview(root.outputs())])),
        Arc::new(StringArray::from(vec![None::<String>])),
        Arc::new(StringArray::from(vec![None::<String>])),
    ];
    let batch = RecordBatch::try_new(traces_schema(), columns).map_err(ApiError::internal)?;
    append(s, project, "traces", traces_schema(), batch).await
}

/// Whether a trace satisfies every condition of a trace filter: its info (tags and
/// assessments as they stand), and its spans for `span.…` conditions.
fn passes(
    conditions: &[super::search::Condition],
    info: &Value,
    edits: &super::trace_edits::Edits,
    spans: &[SpanValues],
) -> Result<bool, ApiError> {
    let map_get = |field: &str, key: &str| -> Option<String> { text(info.get(field)?.get(key)) };
    for c in conditions {
        let actual = match (c.entity_name(), c.key()) {
            ("attributes", "run_id") => map_get("trace_metadata", "mlflow.sourceRun"),
            ("attributes", "status" | "state") => text(info.get("state")),
            ("attributes", "trace_id" | "request_id") => text(info.get("trace_id")),
            ("attributes", "client_request_id") => text(info.get("client_request_id")),
            ("attributes", "name") => map_get("tags", "mlflow.traceName"),
            ("attributes", "timestamp_ms" | "timestamp") => {
                request_time_us(info.get("request_time")).map(|us| (us / 1000).to_string())
            }
            ("attributes", "execution_time_ms" | "execution_time") => {
                execution_ms(info.get("execution_duration")).map(|ms| ms.to_string())
            }
            ("tags", key) => map_get("tags", key),
            ("metadata", key) => map_get("trace_metadata", key),
            ("feedback", name) => edits.assessment_value("feedback", name),
            ("expectation", name) => edits.assessment_value("expectation", name),
            ("span", key) => {
                // Some span of the trace satisfies it.
                let attribute = key
                    .strip_prefix("attributes.")
                    .or_else(|| key.strip_prefix("attribute."));
                if attribute.is_none() && !matches!(key, "name" | "type" | "status") {
                    return Err(ApiError::invalid(format!(
                        "Invalid span filter key 'span.{key}': spans are filtered on \
                         span.name, span.type, span.status and span.attributes.<key>"
                    )));
                }
                let any = spans.iter().any(|sp| {
                    let v = match (key, attribute) {
                        ("name", _) => sp.name.clone(),
                        ("type", _) => sp.span_type.clone(),
                        ("status", _) => sp.status.clone(),
                        (_, Some(a)) => sp.attributes.as_ref().and_then(|m| {
                            // MLflow's attribute values are JSON text: `"LLM"` compares as LLM.
                            m.get(a).map(|v| match v {
                                Value::String(s) => serde_json::from_str::<Value>(s)
                                    .ok()
                                    .and_then(|d| d.as_str().map(String::from))
                                    .unwrap_or_else(|| s.clone()),
                                other => other.to_string(),
                            })
                        }),
                        _ => None,
                    };
                    c.matches(v.as_deref())
                });
                if !any {
                    return Ok(false);
                }
                continue;
            }
            (entity, key) => {
                return Err(ApiError::invalid(format!(
                    "Invalid trace filter on {entity}.{key}: traces are filtered on \
                     attributes (run_id, status, timestamp_ms, execution_time_ms, name, \
                     trace_id, client_request_id), tags.<key>, metadata.<key>, \
                     span.<name|type|status|attributes.key>, feedback.<name> and \
                     expectation.<name>; SQL has the rest (SELECT … FROM mlflow.traces / \
                     mlflow.spans / mlflow.assessments)"
                )));
            }
        };
        if !c.matches(actual.as_deref()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The `mlflow.spans` rows of spans of one trace.
fn span_rows(
    project: &str,
    trace_id: &str,
    run_id: Option<&str>,
    spans: &[Span],
) -> Result<RecordBatch, ApiError> {
    let as_text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let n = spans.len();
    let strings = |f: &dyn Fn(&Span) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(spans.iter().map(f).collect::<Vec<_>>()))
    };
    let ints = |f: &dyn Fn(&Span) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from(spans.iter().map(f).collect::<Vec<_>>()))
    };
    let times = |f: &dyn Fn(&Span) -> Option<i64>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(spans.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    let usage = |s: &Span, key: &str| -> Option<i64> {
        let u = s.attr("mlflow.chat.tokenUsage");
        u.as_ref()
            .and_then(|u| u.get(key))
            .and_then(Value::as_i64)
            .or_else(|| {
                let otel = match key {
                    "input_tokens" => "gen_ai.usage.input_tokens",
                    "output_tokens" => "gen_ai.usage.output_tokens",
                    _ => "llm.usage.total_tokens",
                };
                s.attr(otel).and_then(|v| v.as_i64())
            })
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![project; n])),
        Arc::new(StringArray::from(vec![trace_id; n])),
        Arc::new(StringArray::from(vec![run_id; n])),
        strings(&|s| s.otel_trace_id.clone()),
        strings(&|s| Some(s.span_id.clone())),
        strings(&|s| s.parent.clone()),
        strings(&|s| s.name.clone()),
        strings(&|s| s.attr("mlflow.spanType").map(as_text)),
        strings(&|s| s.kind.clone()),
        times(&|s| s.start_ns.map(|n| n / 1000)),
        times(&|s| s.end_ns.map(|n| n / 1000)),
        Arc::new(Float64Array::from(
            spans.iter().map(Span::duration_ms).collect::<Vec<_>>(),
        )),
        strings(&|s| s.status.clone()),
        strings(&|s| s.status_message.clone()),
        strings(&|s| {
            [
                "mlflow.llm.model",
                "gen_ai.request.model",
                "gen_ai.response.model",
            ]
            .iter()
            .find_map(|k| s.attr(k))
            .or_else(|| s.inputs()?.get("model").cloned())
            .map(as_text)
        }),
        ints(&|s| usage(s, "input_tokens")),
        ints(&|s| usage(s, "output_tokens")),
        ints(&|s| {
            usage(s, "total_tokens")
                .or_else(|| Some(usage(s, "input_tokens")? + usage(s, "output_tokens")?))
        }),
        strings(&|s| s.inputs().map(|v| v.to_string())),
        strings(&|s| s.outputs().map(|v| v.to_string())),
        strings(&|s| Some(Value::Object(s.attributes.clone()).to_string())),
    ];
    RecordBatch::try_new(spans_schema(), columns).map_err(ApiError::internal)
}

/// An OpenTelemetry id as hex: MLflow writes them in base64 (`llm.calls` and OTLP tools use
/// hex); one that is not base64 is kept as it is.
fn otel_id(id: &str) -> String {
    match base64_decode(id) {
        Some(bytes) if bytes.len() == 8 || bytes.len() == 16 => {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        _ => id.to_string(),
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Microseconds since the epoch of an RFC 3339 time in UTC (`2025-01-02T03:04:05.678Z`, as
/// protobuf's JSON writes a Timestamp).
pub(crate) fn parse_rfc3339_us(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time = time.strip_suffix('Z')?;
    let mut t = time.split(':');
    let (h, min): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec = t.next()?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole: i64 = whole.parse().ok()?;
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000_000 + whole * 1_000_000 + micros)
}

/// µs since the Unix epoch as protobuf JSON writes a Timestamp in UTC, to the millisecond
/// (`2026-12-04T21:12:31.519Z`).
pub(crate) fn format_rfc3339_ms(us: i64) -> String {
    let (days, rem) = (us.div_euclid(86_400_000_000), us.rem_euclid(86_400_000_000));
    // The civil date of a day number (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let ms = rem / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// µs since the epoch of a trace info's `request_time` (a protobuf JSON Timestamp).
pub(crate) fn request_time_us(v: Option<&Value>) -> Option<i64> {
    v?.as_str().and_then(parse_rfc3339_us)
}

/// Milliseconds of a trace info's `execution_duration` (a protobuf JSON Duration).
fn execution_ms(v: Option<&Value>) -> Option<i64> {
    v?.as_str().and_then(parse_duration_ms)
}

/// Milliseconds of a protobuf JSON Duration (`"1.5s"`).
fn parse_duration_ms(s: &str) -> Option<i64> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    Some((secs * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_times_and_otel_ids_parse() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_us("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(parse_rfc3339_us("2023-11-14 22:13:20"), None);
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_500_000),
            "2023-11-14T22:13:20.500Z"
        );
        assert_eq!(
            format_rfc3339_ms(951_782_400_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        for us in [0, 1_700_000_000_512_000, 4_102_444_799_999_000] {
            assert_eq!(parse_rfc3339_us(&format_rfc3339_ms(us)), Some(us));
        }
        assert_eq!(parse_duration_ms("1.2345s"), Some(1235));
        // 8 bytes 0x0102030405060708 in base64.
        assert_eq!(otel_id("AQIDBAUGBwg="), "0102030405060708");
        assert_eq!(otel_id("not base64!"), "not base64!");
    }

    #[test]
    fn spans_become_rows() {
        let data = json!({"spans": [
            {"trace_id": "AAAAAAAAAAAAAAAAAAAAAQ==", "span_id": "AAAAAAAAAAE=", "parent_span_id": null,
             "name": "chat", "kind": "SPAN_KIND_INTERNAL", "start_time_unix_nano": 1_000_000_000i64,
             "end_time_unix_nano": 1_250_000_000i64, "status": {"code": "STATUS_CODE_OK", "message": ""},
             "attributes": {"mlflow.spanType": "\"LLM\"", "mlflow.spanInputs": "{\"model\": \"gpt-x\", \"messages\": []}",
                            "mlflow.spanOutputs": "\"hi\"", "mlflow.chat.tokenUsage": "{\"input_tokens\": 3, \"output_tokens\": 2, \"total_tokens\": 5}"}},
        ]});
        let spans = spans_of_data(&data).unwrap_or_else(|e| panic!("{e}"));
        let b = span_rows("p", "tr-1", Some("r1"), &spans).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.num_rows(), 1);
        let col = |n: &str| {
            arrow::util::display::array_value_to_string(
                b.column_by_name(n).unwrap_or_else(|| panic!("{n}")),
                0,
            )
            .unwrap_or_default()
        };
        assert_eq!(col("span_id"), "0000000000000001");
        assert_eq!(col("otel_trace_id"), "00000000000000000000000000000001");
        assert_eq!(col("span_type"), "LLM");
        assert_eq!(col("model"), "gpt-x");
        assert_eq!(col("total_tokens"), "5");
        assert_eq!(col("duration_ms"), "250.0");
        assert_eq!(col("status"), "OK");
        assert_eq!(col("kind"), "INTERNAL");
        assert_eq!(col("outputs"), "\"hi\"");
    }
}
