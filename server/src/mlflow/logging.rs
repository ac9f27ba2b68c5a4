//! Logging into MLflow runs: `log-batch` (the hot path), `log-metric`, `log-parameter`,
//! `set-tag` and `log-inputs`. Metric requests are remembered by digest, so that a client
//! retrying a request whose answer it lost does not log its points twice.

use axum::response::Response;
use runql_core::Batch;
use runql_core::store::ModelMetric;
use serde::Deserialize;
use serde_json::Value;

use super::held::with_run;
use super::state::{Runs, State};
use super::wire::{self, BatchIn, Int, Num, Tag, quote_non_finite, required, run_id_of};
use crate::error::ApiError;
use crate::request::{JsonBytes, MlflowJson, Write, parse_body};

/// MLflow's limits per `log-batch` request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;
const MAX_ENTITIES: usize = 1000;

/// MLflow's server cuts param values past this many characters (`MLFLOW_TRUNCATE_LONG_VALUES`,
/// on by default) and tag values past [`MAX_TAG_CHARS`], and answers 200.
const MAX_PARAM_CHARS: usize = 6000;
const MAX_TAG_CHARS: usize = 8000;

/// `value` cut to `max` characters, as MLflow's server cuts it (with a warning in its log).
fn truncated<'a>(what: &str, key: &str, value: &'a str, max: usize) -> std::borrow::Cow<'a, str> {
    if value.len() <= max {
        return value.into();
    }
    match value.char_indices().nth(max) {
        None => value.into(),
        Some((end, _)) => {
            tracing::warn!(
                key,
                chars = value.chars().count(),
                "{what} value truncated to {max} characters to meet MLflow's length limit"
            );
            value[..end].to_string().into()
        }
    }
}

/// Run tags cut to MLflow's limit.
pub(crate) fn truncate_tags(tags: &mut [(String, String)]) {
    for (k, v) in tags {
        if let std::borrow::Cow::Owned(t) = truncated("tag", k, v, MAX_TAG_CHARS) {
            *v = t;
        }
    }
}

/// Whether an MLflow metric key is one of MLflow's system metrics (`system/cpu_utilization_percentage`,
/// `system/gpu_0_utilization_percentage`…, or `system/<node>/…`): they are stored in
/// `system_metrics`, under the same key, where the dashboard's System tab and SQL find them.
pub(crate) fn is_system(key: &str) -> bool {
    key.starts_with("system/")
}

/// MLflow's wording for a batch over one of its limits.
fn too_many(limit: usize, what: &str, got: usize) -> ApiError {
    ApiError::invalid(format!(
        "A batch logging request can contain at most {limit} {what}. Got {got} {what}. Please \
         split up {what} across multiple requests and try again."
    ))
}

/// Logs metric points, leaving out those the run was sent already (same key, step, timestamp
/// and value: MLflow keeps one), and `batch`'s params and tags; the points logged are then
/// remembered. Under the run's point lock, so that two requests with the same points store
/// them once.
fn log_new_points(
    s: &State,
    run_id: &str,
    run: &runql_core::Run,
    mut batch: Batch<'_>,
    digest: [u8; 32],
) -> Result<(), ApiError> {
    let points = s.runs.points_of(run_id);
    let mut seen = points.lock().unwrap_or_else(|e| e.into_inner());
    let mut fresh = std::collections::HashSet::with_capacity(batch.metrics.len());
    let keyed: Vec<_> = batch
        .metrics
        .iter()
        .map(|&(k, step, v, ts)| s.runs.point(k, step, ts, v))
        .collect();
    let mut i = 0;
    batch.metrics.retain(|_| {
        let p = keyed[i];
        i += 1;
        !seen.contains(&p) && fresh.insert(p)
    });
    run.log_batch(&batch, Some(digest))?;
    for p in fresh {
        seen.insert(p);
    }
    s.runs.remember(digest);
    Ok(())
}

/// Why a `log-batch` body did not parse, in MLflow's words where MLflow has them (a field of
/// the wrong type: `Invalid value "foo" for parameter 'metrics' supplied: …`).
fn batch_error(text: &str, e: serde_json::Error) -> ApiError {
    /// The shape of a `log-batch` request, owned: only to word what is wrong with one.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        run_id: Option<String>,
        run_uuid: Option<String>,
        #[serde(default)]
        metrics: Vec<MetricShape>,
        #[serde(default)]
        params: Vec<KvShape>,
        #[serde(default)]
        tags: Vec<KvShape>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct MetricShape {
        key: Option<String>,
        value: Option<wire::Num>,
        timestamp: Option<wire::Int>,
        step: Option<wire::Int>,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct KvShape {
        key: Option<String>,
        value: Option<String>,
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value) => match crate::request::typed::<Shape>(value) {
            Err(worded) => worded,
            Ok(_) => ApiError::invalid(format!("the body is not a log-batch request: {e}")),
        },
        Err(_) => ApiError::invalid(format!("malformed request: {e}")),
    }
}

/// `runs/log-batch`: up to 1,000 metrics a request, parsed into typed values without an
/// intermediate JSON tree, and logged under one lock.
pub(crate) async fn log_batch(
    Write(s): Write<State>,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let text =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::invalid("the body is not UTF-8"))?;
    // The fast path takes what MLflow clients send; serde_json the rest, and words the errors.
    let quoted;
    let req: BatchIn<'_> = match super::batch_json::parse(text) {
        Some(req) => req,
        None => {
            quoted = quote_non_finite(text);
            serde_json::from_str(&quoted).map_err(|e| batch_error(&quoted, e))?
        }
    };
    let run_id = req
        .run_id
        .as_deref()
        .or(req.run_uuid.as_deref())
        .ok_or_else(|| ApiError::missing("run_id"))?
        .to_string();
    let digest = Runs::digest("log-batch", &bytes);
    if s.runs.applied(&digest) {
        return Ok(wire::ok());
    }
    let (metrics, params, tags) = (&req.metrics, &req.params, &req.tags);
    if metrics.len() > MAX_METRICS {
        return Err(too_many(MAX_METRICS, "metrics", metrics.len()));
    }
    if params.len() > MAX_PARAMS {
        return Err(too_many(MAX_PARAMS, "params", params.len()));
    }
    if tags.len() > MAX_TAGS {
        return Err(too_many(MAX_TAGS, "tags", tags.len()));
    }
    let entities = metrics.len() + params.len() + tags.len();
    if entities > MAX_ENTITIES {
        return Err(too_many(
            MAX_ENTITIES,
            "metrics, params, and tags",
            entities,
        ));
    }
    // Checked before anything is logged: a bad point rejects the whole request.
    let now_ms = runql_core::model::now_us() / 1000;
    let mut points = Vec::with_capacity(metrics.len());
    let mut system = Vec::new();
    let mut for_models: Vec<(String, ModelMetric)> = Vec::new();
    for m in metrics {
        let key = required(&m.key, "key")?;
        let value = m.value.as_ref().map(|n| n.0).ok_or_else(|| {
            ApiError::invalid(format!("Missing or invalid value for metric '{key}'"))
        })?;
        let ts = m.timestamp.as_ref().map(|t| t.0).unwrap_or(now_ms);
        let step = m.step.as_ref().map(|t| t.0).unwrap_or(0);
        // MLflow's system metrics (`log_system_metrics=True`) are samples of the machine.
        if is_system(key) {
            system.push((key, ts.saturating_mul(1000), value));
        } else {
            points.push((key, step, value, ts.saturating_mul(1000)));
        }
        if let Some(model) = m.model_id.as_deref().filter(|m| !m.is_empty()) {
            for_models.push((
                model.to_string(),
                ModelMetric {
                    key: key.to_string(),
                    value,
                    timestamp_ms: ts,
                    step,
                    run_id: run_id.clone(),
                    dataset_name: m.dataset_name.as_deref().map(String::from),
                    dataset_digest: m.dataset_digest.as_deref().map(String::from),
                },
            ));
        }
    }
    let model_ids = for_models.iter().map(|(m, _)| m.clone()).collect();
    super::models::check_models(&s, model_ids).await?;
    let mut batch = Batch {
        metrics: points,
        system,
        ..Batch::default()
    };
    let mut values = Vec::with_capacity(params.len() + tags.len());
    for p in params {
        let key = required(&p.key, "key")?;
        values.push((
            key,
            truncated(
                "param",
                key,
                p.value.as_deref().unwrap_or(""),
                MAX_PARAM_CHARS,
            ),
        ));
    }
    for t in tags {
        let key = required(&t.key, "key")?;
        values.push((
            key,
            truncated("tag", key, t.value.as_deref().unwrap_or(""), MAX_TAG_CHARS),
        ));
    }
    let (p, t) = values.split_at(params.len());
    batch.params = p.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    batch.tags = t.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    // `mlflow.runName` renames the run too, as in MLflow.
    let renamed = batch
        .tags
        .iter()
        .rev()
        .find(|(k, _)| *k == super::runs::RUN_NAME_TAG)
        .map(|(_, v)| v.to_string());
    // One record in the write-ahead log, with the request's digest: after a crash, a retry of
    // a request that was applied is recognised.
    // Remembered as soon as it is applied, not once durable: if waiting fails (a stop, the
    // log's disk), the rows are still on their way to the store, and a retry must not add them
    // again.
    with_run(&s, &run_id, |run| {
        if let Some(name) = &renamed {
            run.rename(name.as_str())?;
        }
        log_new_points(&s, &run_id, run, batch, digest)
    })
    .await?;
    if !for_models.is_empty() {
        super::models::log_model_metrics(&s, for_models).await?;
    }
    Ok(wire::ok())
}

/// `runs/log-metric`.
#[derive(Debug, Deserialize)]
struct LogMetric {
    run_id: Option<String>,
    run_uuid: Option<String>,
    key: String,
    value: Option<Num>,
    timestamp: Option<Int>,
    step: Option<Int>,
    /// MLflow 3: the logged model the value is of (it is logged to the run too).
    model_id: Option<String>,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

pub(crate) async fn log_metric(
    Write(s): Write<State>,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let req: LogMetric = parse_body(&bytes)?;
    let digest = Runs::digest("log-metric", &bytes);
    if s.runs.applied(&digest) {
        return Ok(wire::ok());
    }
    let value = req.value.map(|v| v.0).ok_or_else(|| {
        ApiError::invalid(format!("Missing or invalid value for metric '{}'", req.key))
    })?;
    let ts = req
        .timestamp
        .map_or_else(|| runql_core::model::now_us() / 1000, |t| t.0);
    let step = req.step.map_or(0, |s| s.0);
    let ts_us = ts.saturating_mul(1000);
    let batch = if is_system(&req.key) {
        Batch {
            system: vec![(req.key.as_str(), ts_us, value)],
            ..Batch::default()
        }
    } else {
        Batch {
            metrics: vec![(req.key.as_str(), step, value, ts_us)],
            ..Batch::default()
        }
    };
    let run_id = run_id_of(req.run_id, req.run_uuid)?;
    let model = req.model_id.filter(|m| !m.is_empty());
    if let Some(m) = &model {
        super::models::check_models(&s, vec![m.clone()]).await?;
    }
    with_run(&s, &run_id, |run| {
        log_new_points(&s, &run_id, run, batch, digest)
    })
    .await?;
    if let Some(m) = model {
        let metric = ModelMetric {
            key: req.key.clone(),
            value,
            timestamp_ms: ts,
            step,
            run_id: run_id.clone(),
            dataset_name: req.dataset_name,
            dataset_digest: req.dataset_digest,
        };
        super::models::log_model_metrics(&s, vec![(m, metric)]).await?;
    }
    Ok(wire::ok())
}

/// `runs/log-parameter` and `runs/set-tag`: a key and a value. MLflow's clients send values
/// as strings; another JSON value is kept as its JSON text.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyValue {
    run_id: Option<String>,
    run_uuid: Option<String>,
    key: String,
    #[serde(default)]
    value: Value,
}

impl KeyValue {
    fn value(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

pub(crate) async fn log_param(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<KeyValue>,
) -> Result<Response, ApiError> {
    let value = req.value();
    let value = truncated("param", &req.key, &value, MAX_PARAM_CHARS);
    with_run(&s, &run_id_of(req.run_id, req.run_uuid)?, |run| {
        Ok(run.log_param(&req.key, value)?)
    })
    .await?;
    Ok(wire::ok())
}

pub(crate) async fn set_tag(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<KeyValue>,
) -> Result<Response, ApiError> {
    let value = req.value();
    let value = truncated("tag", &req.key, &value, MAX_TAG_CHARS).into_owned();
    with_run(&s, &run_id_of(req.run_id, req.run_uuid)?, |run| {
        // `mlflow.runName` renames the run too, as in MLflow.
        if req.key == super::runs::RUN_NAME_TAG {
            run.rename(value.as_str())?;
        }
        Ok(run.set_tag(&req.key, value)?)
    })
    .await?;
    Ok(wire::ok())
}

/// `runs/log-inputs`.
#[derive(Debug, Deserialize)]
pub(crate) struct LogInputs {
    run_id: Option<String>,
    run_uuid: Option<String>,
    #[serde(default)]
    datasets: Vec<DatasetInput>,
}

#[derive(Debug, Deserialize)]
struct DatasetInput {
    dataset: Option<Dataset>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Dataset {
    name: Option<String>,
    digest: Option<String>,
    source: Option<String>,
    source_type: Option<String>,
    schema: Option<String>,
    profile: Option<String>,
}

/// `runs/log-inputs`: MLflow datasets become rows of `inputs` (name, source as uri, digest, and
/// the `mlflow.data.context` tag as role).
pub(crate) async fn log_inputs(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<LogInputs>,
) -> Result<Response, ApiError> {
    let mut inputs = Vec::new();
    // What `inputs` has no column for (source type, schema, profile): kept per dataset.
    let mut descriptions = Vec::new();
    for d in req.datasets {
        let Some(ds) = d.dataset else { continue };
        let name = ds.name.clone().unwrap_or_else(|| "dataset".into());
        if ds.source_type.is_some() || ds.schema.is_some() || ds.profile.is_some() {
            let mut desc = serde_json::Map::new();
            for (k, v) in [
                ("source_type", &ds.source_type),
                ("source", &ds.source),
                ("schema", &ds.schema),
                ("profile", &ds.profile),
            ] {
                if let Some(v) = v {
                    desc.insert(k.into(), Value::String(v.clone()));
                }
            }
            descriptions.push((name.clone(), ds.digest.clone(), Value::Object(desc)));
        }
        let mut input = runql_core::Input::new(name);
        if let Some(src) = ds.source {
            // MLflow sends the source as JSON text, e.g. {"uri": "s3://…"} or {"url": …}.
            let uri = serde_json::from_str::<Value>(&src)
                .ok()
                .and_then(|v| {
                    ["uri", "url", "path"]
                        .iter()
                        .find_map(|k| v.get(k).and_then(Value::as_str).map(String::from))
                })
                .unwrap_or(src);
            input = input.uri(uri);
        }
        if let Some(digest) = ds.digest {
            input = input.digest(digest);
        }
        let context = d
            .tags
            .into_iter()
            .map(Tag::pair)
            .find(|(k, _)| k == "mlflow.data.context")
            .map(|(_, v)| v);
        if let Some(role) = context {
            input = input.role(role);
        }
        inputs.push(input);
    }
    let run_id = run_id_of(req.run_id, req.run_uuid)?;
    with_run(&s, &run_id, |run| {
        for input in inputs {
            run.log_input(input)?;
        }
        Ok(())
    })
    .await?;
    if !descriptions.is_empty() {
        let project = super::held::project_of_run(&s, &run_id).await?;
        for (name, digest, desc) in descriptions {
            s.store()
                .put_dataset(
                    &project,
                    &name,
                    digest.as_deref(),
                    axum::body::Bytes::from(desc.to_string()),
                )
                .await?;
        }
    }
    Ok(wire::ok())
}

/// `runs/delete-tag`.
#[derive(Debug, Deserialize)]
pub(crate) struct DeleteTag {
    run_id: Option<String>,
    run_uuid: Option<String>,
    key: String,
}

/// Deletes a run's tag, as MLflow does: the run must exist and be active, and have the tag.
pub(crate) async fn delete_tag(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<DeleteTag>,
) -> Result<Response, ApiError> {
    let run_id = run_id_of(req.run_id, req.run_uuid)?;
    if s.runs.is_deleted(&run_id) || super::held::read_record(&s, &run_id).await?.deleted {
        return Err(super::held::not_active(&run_id));
    }
    if super::held::run_tag(&s, &run_id, &req.key).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "No tag with name: {} in run with id {run_id}",
            req.key
        )));
    }
    with_run(&s, &run_id, |run| Ok(run.delete_tag(&req.key)?)).await?;
    Ok(wire::ok())
}
