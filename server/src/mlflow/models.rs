//! MLflow 3's logged models (`/mlflow/logged-models…`, `runs/outputs`, `runs/log-model`), so that
//! `mlflow.<flavor>.log_model` and the autologgers' model logging work against runql.
//!
//! A logged model belongs to a project (its experiment). Core stores it as immutable records
//! (its creation and each change, folded: `Store::create_model`, `Store::change_model`) and its
//! files below the model, where the client uploads them through the artifact proxy
//! (`<experiment>/models/<id>/artifacts/<path>`); two servers changing one model both keep
//! their changes.

use axum::extract::Path as UrlPath;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use runql_core::store::{
    LoggedModel, MODEL_STATUSES, ModelChange, ModelMetric, NewModel, is_model_id,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::held::{run_tag, with_run};
use super::runs::{ensure_project, projects_of};
use super::state::{Mlflow, State};
use super::wire::{
    self, Int, OUTPUT_ROLE, Tag, experiment_id_of, kv_json, page_offset, project_of,
};
use crate::error::ApiError;
use crate::request::{MlflowJson, MlflowQuery, Read, Write};

/// MLflow's `LoggedModel` of a model.
fn model_value(m: &LoggedModel) -> Value {
    let kv = |items: &std::collections::BTreeMap<String, String>| {
        kv_json(items.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    let experiment_id = experiment_id_of(&m.project);
    json!({
        "info": {
            "model_id": m.model_id,
            "experiment_id": experiment_id,
            "name": m.name,
            "creation_timestamp_ms": m.created / 1000,
            "last_updated_timestamp_ms": m.updated / 1000,
            "artifact_uri": format!("mlflow-artifacts:/{experiment_id}/models/{}/artifacts", m.model_id),
            "status": m.status,
            "status_message": m.status_message,
            "model_type": m.model_type,
            "source_run_id": m.source_run_id,
            "tags": kv(&m.tags),
        },
        "data": {"params": kv(&m.params), "metrics": m.metrics.iter().map(|x| metric_json(&m.model_id, x)).collect::<Vec<_>>()},
    })
}

/// MLflow's `Metric` of a model's metric value.
fn metric_json(model_id: &str, m: &ModelMetric) -> Value {
    let mut out = json!({
        "key": m.key,
        "value": wire::double(m.value),
        "timestamp": m.timestamp_ms,
        "step": m.step,
        "model_id": model_id,
        "run_id": m.run_id,
    });
    if let Some(d) = &m.dataset_name {
        out["dataset_name"] = json!(d);
    }
    if let Some(d) = &m.dataset_digest {
        out["dataset_digest"] = json!(d);
    }
    out
}

/// Checks that each model `metrics` name exists (and is not deleted), before anything is
/// logged.
pub(crate) async fn check_models(s: &Mlflow, model_ids: Vec<String>) -> Result<(), ApiError> {
    let ids: std::collections::BTreeSet<String> = model_ids.into_iter().collect();
    for id in &ids {
        read(s, id, false).await?;
    }
    Ok(())
}

/// Adds metric values to models (`log_metric(…, model_id=…)`), one record per model.
pub(crate) async fn log_model_metrics(
    s: &Mlflow,
    metrics: Vec<(String, ModelMetric)>,
) -> Result<(), ApiError> {
    let mut by_model: std::collections::BTreeMap<String, Vec<ModelMetric>> = Default::default();
    for (id, m) in metrics {
        by_model.entry(id).or_default().push(m);
    }
    for (id, metrics) in by_model {
        let change = ModelChange {
            metrics,
            ..ModelChange::default()
        };
        update(s, &id, change).await?;
    }
    Ok(())
}

fn no_model(model_id: &str) -> ApiError {
    ApiError::not_found(format!("Logged model with ID '{model_id}' not found"))
}

/// The project of a model, found by looking in every project once and remembered.
async fn project_of_model(s: &Mlflow, model_id: &str) -> Result<String, ApiError> {
    if !is_model_id(model_id) {
        return Err(no_model(model_id));
    }
    if let Some(p) = s.models.project_of(model_id) {
        return Ok(p);
    }
    let m = s
        .store()
        .find_model(model_id)
        .await?
        .ok_or_else(|| no_model(model_id))?;
    s.models.remember(model_id, &m.project);
    Ok(m.project)
}

async fn read(s: &Mlflow, model_id: &str, allow_deleted: bool) -> Result<LoggedModel, ApiError> {
    let project = project_of_model(s, model_id).await?;
    match s.store().model(&project, model_id).await? {
        Some(m) if allow_deleted || !m.deleted => Ok(m),
        _ => Err(no_model(model_id)),
    }
}

/// Records a change of a model that exists and is not deleted.
async fn update(s: &Mlflow, model_id: &str, change: ModelChange) -> Result<LoggedModel, ApiError> {
    let m = read(s, model_id, false).await?;
    Ok(s.store().change_model(&m.project, model_id, change).await?)
}

/// Tags or params of a request: pairs with a non-empty key (a missing value is `""`).
fn pairs(items: Vec<Tag>, what: &str) -> Result<Vec<(String, String)>, ApiError> {
    items
        .into_iter()
        .map(|t| {
            if t.key.is_empty() {
                return Err(ApiError::invalid(format!(
                    "a {what} needs a non-empty 'key'"
                )));
            }
            Ok(t.pair())
        })
        .collect()
}

fn model_json(m: &LoggedModel) -> Response {
    axum::Json(json!({"model": model_value(m)})).into_response()
}

/// `logged-models` (create).
#[derive(Debug, Deserialize)]
pub(crate) struct Create {
    experiment_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    source_run_id: String,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    params: Vec<Tag>,
}

pub(crate) async fn create(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<Create>,
) -> Result<Response, ApiError> {
    let project = project_of(&req.experiment_id).to_string();
    ensure_project(s.store(), &project).await?;
    let new = NewModel {
        name: req.name,
        model_type: req.model_type,
        source_run_id: req.source_run_id,
        tags: pairs(req.tags, "tag")?,
        params: pairs(req.params, "param")?,
    };
    let m = s.store().create_model(&project, new).await?;
    s.models.remember(&m.model_id, &project);
    Ok(model_json(&m))
}

#[derive(Debug, Deserialize)]
pub(crate) struct GetQuery {
    allow_deleted: Option<String>,
}

pub(crate) async fn get_model(
    Read(s): Read<State>,
    UrlPath(model_id): UrlPath<String>,
    MlflowQuery(q): MlflowQuery<GetQuery>,
) -> Result<Response, ApiError> {
    let allow_deleted = matches!(q.allow_deleted.as_deref(), Some("true" | "True" | "1"));
    Ok(model_json(&read(&s, &model_id, allow_deleted).await?))
}

/// `logged-models/<id>` (PATCH: finalize).
#[derive(Debug, Deserialize)]
pub(crate) struct Finalize {
    status: Option<String>,
}

pub(crate) async fn finalize(
    Write(s): Write<State>,
    UrlPath(model_id): UrlPath<String>,
    MlflowJson(req): MlflowJson<Finalize>,
) -> Result<Response, ApiError> {
    let status = req
        .status
        .filter(|st| MODEL_STATUSES.contains(&st.as_str()))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "'status' must be one of {}",
                MODEL_STATUSES.join(", ")
            ))
        })?;
    let change = ModelChange {
        status: Some(status),
        ..ModelChange::default()
    };
    let m = update(&s, &model_id, change).await?;
    Ok(model_json(&m))
}

pub(crate) async fn delete_model(
    Write(s): Write<State>,
    UrlPath(model_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let change = ModelChange {
        deleted: Some(true),
        ..ModelChange::default()
    };
    update(&s, &model_id, change).await?;
    Ok(wire::ok())
}

#[derive(Debug, Deserialize)]
pub(crate) struct SetTags {
    #[serde(default)]
    tags: Vec<Tag>,
}

pub(crate) async fn set_tags(
    Write(s): Write<State>,
    UrlPath(model_id): UrlPath<String>,
    MlflowJson(req): MlflowJson<SetTags>,
) -> Result<Response, ApiError> {
    let change = ModelChange {
        set_tags: pairs(req.tags, "tag")?,
        ..ModelChange::default()
    };
    let m = update(&s, &model_id, change).await?;
    Ok(model_json(&m))
}

pub(crate) async fn delete_tag(
    Write(s): Write<State>,
    UrlPath((model_id, key)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    if !read(&s, &model_id, false).await?.tags.contains_key(&key) {
        return Err(ApiError::not_found(format!(
            "No tag with key '{key}' on logged model '{model_id}'"
        )));
    }
    let change = ModelChange {
        delete_tags: vec![key],
        ..ModelChange::default()
    };
    update(&s, &model_id, change).await?;
    Ok(wire::ok())
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogParams {
    #[serde(default)]
    params: Vec<Tag>,
}

pub(crate) async fn log_params(
    Write(s): Write<State>,
    UrlPath(model_id): UrlPath<String>,
    MlflowJson(req): MlflowJson<LogParams>,
) -> Result<Response, ApiError> {
    let change = ModelChange {
        params: pairs(req.params, "param")?,
        ..ModelChange::default()
    };
    update(&s, &model_id, change).await?;
    Ok(wire::ok())
}

/// Every model of some projects, newest first.
async fn list(s: &Mlflow, projects: &[String]) -> Result<Vec<LoggedModel>, ApiError> {
    let mut out = Vec::new();
    for project in projects {
        out.extend(s.store().models(project).await?);
    }
    out.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then_with(|| b.model_id.cmp(&a.model_id))
    });
    Ok(out)
}

/// `logged-models/search`.
#[derive(Debug, Deserialize)]
pub(crate) struct Search {
    #[serde(default)]
    experiment_ids: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    order_by: Vec<Order>,
    /// Restricts `metrics.` filters to values measured on these datasets.
    #[serde(default)]
    datasets: Vec<DatasetFilter>,
    max_results: Option<Int>,
    page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Order {
    #[serde(default)]
    field_name: String,
    ascending: Option<bool>,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DatasetFilter {
    dataset_name: String,
    dataset_digest: Option<String>,
}

impl DatasetFilter {
    fn admits(&self, m: &ModelMetric) -> bool {
        m.dataset_name.as_deref() == Some(self.dataset_name.as_str())
            && self
                .dataset_digest
                .as_ref()
                .is_none_or(|d| m.dataset_digest.as_ref() == Some(d))
    }
}

/// `logged-models/search`: the models of some experiments, filtered on their attributes, tags
/// and params with MLflow's `=`/`!=`/`LIKE` comparisons, ordered and paged.
pub(crate) async fn search(
    Read(s): Read<State>,
    MlflowJson(req): MlflowJson<Search>,
) -> Result<Response, ApiError> {
    let projects = projects_of(&req.experiment_ids)?;
    let conditions = super::search::parse_filter(req.filter.as_deref().unwrap_or(""))?;
    let mut models = Vec::new();
    for m in list(&s, &projects)
        .await?
        .into_iter()
        .filter(|m| !m.deleted)
    {
        let mut ok = true;
        for c in &conditions {
            let actual = match c.entity_name() {
                "attributes" => match c.key() {
                    "name" => Some(m.name.clone()),
                    "model_id" => Some(m.model_id.clone()),
                    "model_type" => Some(m.model_type.clone()),
                    "status" => Some(m.status.clone()),
                    "source_run_id" => Some(m.source_run_id.clone()),
                    "creation_timestamp" | "creation_time" => Some((m.created / 1000).to_string()),
                    "last_updated_timestamp" => Some((m.updated / 1000).to_string()),
                    other => {
                        return Err(ApiError::invalid(format!(
                            "Invalid attribute key '{other}' for logged models"
                        )));
                    }
                },
                "tags" => m.tags.get(c.key()).cloned(),
                "params" => m.params.get(c.key()).cloned(),
                "metrics" => {
                    // Some value of the metric (on one of `datasets`, when given) satisfies it.
                    ok &= m
                        .metrics
                        .iter()
                        .filter(|x| x.key == c.key())
                        .filter(|x| {
                            req.datasets.is_empty() || req.datasets.iter().any(|d| d.admits(x))
                        })
                        .any(|x| c.matches(Some(&x.value.to_string())));
                    continue;
                }
                _ => {
                    return Err(ApiError::invalid(
                        "logged models are filtered on attributes, metrics, tags and params",
                    ));
                }
            };
            ok &= c.matches(actual.as_deref());
        }
        if ok {
            models.push(m);
        }
    }
    for o in req.order_by.iter().rev() {
        let field = o.field_name.as_str();
        let asc = o.ascending.unwrap_or(true);
        if let Some(metric) = field.strip_prefix("metrics.") {
            // By the metric's latest value (on the order's dataset, when it names one); models
            // without it last, as MLflow orders them.
            let value = |m: &LoggedModel| -> Option<f64> {
                m.metrics
                    .iter()
                    .filter(|x| x.key == metric)
                    .filter(|x| {
                        o.dataset_name
                            .as_ref()
                            .is_none_or(|d| x.dataset_name.as_ref() == Some(d))
                            && o.dataset_digest
                                .as_ref()
                                .is_none_or(|d| x.dataset_digest.as_ref() == Some(d))
                    })
                    .max_by_key(|x| (x.timestamp_ms, x.step))
                    .map(|x| x.value)
            };
            models.sort_by(|a, b| match (value(a), value(b)) {
                (Some(x), Some(y)) => {
                    let ord = x.total_cmp(&y);
                    if asc { ord } else { ord.reverse() }
                }
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
            continue;
        }
        let key = |m: &LoggedModel| -> String {
            match field {
                "name" => m.name.clone(),
                "model_id" => m.model_id.clone(),
                "creation_timestamp" | "creation_time" => format!("{:020}", m.created),
                "last_updated_timestamp" => format!("{:020}", m.updated),
                _ => String::new(),
            }
        };
        if !matches!(
            field,
            "name" | "model_id" | "creation_timestamp" | "creation_time" | "last_updated_timestamp"
        ) {
            return Err(ApiError::invalid(format!(
                "logged models can be ordered by name, model_id, creation_timestamp, last_updated_timestamp or metrics.<key>, not {field:?}"
            )));
        }
        models.sort_by(|a, b| {
            let ord = key(a).cmp(&key(b));
            if asc { ord } else { ord.reverse() }
        });
    }
    let max = req.max_results.map_or(100, |m| m.0).clamp(1, 10_000) as usize;
    let offset = page_offset(req.page_token.as_deref())?;
    let page: Vec<Value> = models
        .iter()
        .skip(offset)
        .take(max)
        .map(model_value)
        .collect();
    let more = models.len() > offset + max;
    Ok(wire::page("models", page, more.then_some(offset + max)))
}

/// `runs/outputs`.
#[derive(Debug, Deserialize)]
pub(crate) struct LogOutputs {
    run_id: Option<String>,
    run_uuid: Option<String>,
    #[serde(default)]
    models: Vec<ModelOutput>,
}

#[derive(Debug, Deserialize)]
struct ModelOutput {
    model_id: String,
    step: Option<Int>,
}

/// `runs/outputs`: the models a run produced, kept as rows of the run's `inputs` table with
/// the role `output` (`uri` = `models:/<id>`, `digest` = the step).
pub(crate) async fn log_outputs(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<LogOutputs>,
) -> Result<Response, ApiError> {
    let run_id = wire::run_id_of(req.run_id, req.run_uuid)?;
    let mut outputs = Vec::new();
    for m in req.models {
        let step = m.step.map_or(0, |s| s.0);
        let name = read(&s, &m.model_id, true).await?.name;
        outputs.push((m.model_id, name, step));
    }
    with_run(&s, &run_id, |run| {
        for (id, name, step) in &outputs {
            run.log_input(
                runql_core::Input::new(name.clone())
                    .uri(format!("models:/{id}"))
                    .digest(step.to_string())
                    .role(OUTPUT_ROLE),
            )?;
        }
        Ok(())
    })
    .await?;
    Ok(wire::ok())
}

/// `runs/log-model`.
#[derive(Debug, Deserialize)]
pub(crate) struct LogModel {
    run_id: Option<String>,
    run_uuid: Option<String>,
    model_json: Option<String>,
}

/// `runs/log-model` (MLflow 2's model history): appended to the run's
/// `mlflow.log-model.history` tag, a JSON list, as MLflow does.
pub(crate) async fn log_model(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<LogModel>,
) -> Result<Response, ApiError> {
    let run_id = wire::run_id_of(req.run_id, req.run_uuid)?;
    let model: Value = req
        .model_json
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| ApiError::invalid("'model_json' must be a JSON object"))?;
    const KEY: &str = "mlflow.log-model.history";
    let _guard = s.models.writes.lock().await;
    let mut history: Vec<Value> = run_tag(&s, &run_id, KEY)
        .await?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    history.push(model);
    let text = Value::Array(history).to_string();
    with_run(&s, &run_id, |run| Ok(run.set_tag(KEY, &text)?)).await?;
    Ok(wire::ok())
}

/// The project of a model named by an artifact path's experiment.
async fn project_in(s: &Mlflow, experiment_id: &str, model_id: &str) -> Result<String, ApiError> {
    let project = project_of_model(s, model_id).await?;
    if experiment_id_of(&project) != experiment_id && project != experiment_id {
        return Err(ApiError::not_found(format!(
            "Logged model '{model_id}' is not in experiment '{experiment_id}'"
        )));
    }
    Ok(project)
}

/// Stores a model's file (uploaded through the artifact proxy).
pub(crate) async fn put_file(
    s: &Mlflow,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
    bytes: Bytes,
) -> Result<(), ApiError> {
    let project = project_in(s, experiment_id, model_id).await?;
    Ok(s.store()
        .put_model_file(&project, model_id, rel, bytes)
        .await?)
}

/// A model's file.
pub(crate) async fn get_file(
    s: &Mlflow,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
) -> Result<Bytes, ApiError> {
    let project = project_in(s, experiment_id, model_id).await?;
    s.store()
        .model_file(&project, model_id, rel)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No artifact {rel:?} in model {model_id}")))
}

/// The files below a model's artifact directory `rel`: (name, size or None for a directory).
pub(crate) async fn list_files(
    s: &Mlflow,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
) -> Result<Vec<(String, Option<u64>)>, ApiError> {
    let project = project_in(s, experiment_id, model_id).await?;
    Ok(s.store().model_files(&project, model_id, rel).await?)
}

/// The experiment of a model and the files below its artifact directory `dir` (name, size
/// or None for a directory).
pub(crate) async fn files_below(
    s: &Mlflow,
    model_id: &str,
    dir: &str,
) -> Result<(String, Vec<(String, Option<u64>)>), ApiError> {
    let project = read(s, model_id, false).await?.project;
    let files = s.store().model_files(&project, model_id, dir).await?;
    Ok((experiment_id_of(&project).to_string(), files))
}

/// A model's file at `rel` (404 naming it when there is none).
pub(crate) async fn file_of(s: &Mlflow, model_id: &str, rel: &str) -> Result<Bytes, ApiError> {
    let project = read(s, model_id, false).await?.project;
    s.store()
        .model_file(&project, model_id, rel)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "No such artifact: '{}/models/{model_id}/artifacts/{rel}'",
                experiment_id_of(&project)
            ))
        })
}
