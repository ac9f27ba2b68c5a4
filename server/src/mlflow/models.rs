//! MLflow 3's logged models (`/mlflow/logged-models…`, `runs/outputs`, `runs/log-model`), so that
//! `mlflow.<flavor>.log_model` and the autologgers' model logging work against runql.
//!
//! A logged model belongs to a project (its experiment): its record is one JSON object,
//! `projects/<p>/models/<id>/model.json`, and its files are plain objects below
//! `projects/<p>/models/<id>/artifacts/`, where the client uploads them through the artifact
//! proxy (`<experiment>/models/<id>/artifacts/<path>`). Records change (status, tags, params):
//! this server serialises its own read-modify-writes with one lock; two servers writing the same
//! model's tags at once may lose one of the two updates (documented in docs/mlflow.md).

use axum::extract::Path as UrlPath;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::held::{run_tag, with_run};
use super::runs::{ensure_project, projects_of};
use super::state::{Mlflow, State};
use super::wire::{
    self, Int, OUTPUT_ROLE, Tag, experiment_id_of, kv_json, page_offset, project_of,
};
use crate::error::ApiError;
use crate::request::{MlflowJson, MlflowQuery, Read, Write};

/// The stored record of one logged model.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModelRecord {
    model_id: String,
    project: String,
    name: String,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    source_run_id: String,
    /// `LOGGED_MODEL_PENDING`, `LOGGED_MODEL_READY` or `LOGGED_MODEL_UPLOAD_FAILED`.
    status: String,
    #[serde(default)]
    status_message: String,
    created_ms: i64,
    updated_ms: i64,
    #[serde(default)]
    tags: Vec<(String, String)>,
    #[serde(default)]
    params: Vec<(String, String)>,
    #[serde(default)]
    deleted: bool,
}

impl ModelRecord {
    fn to_json(&self) -> Value {
        let kv = |items: &[(String, String)]| {
            kv_json(items.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        };
        let experiment_id = experiment_id_of(&self.project);
        json!({
            "info": {
                "model_id": self.model_id,
                "experiment_id": experiment_id,
                "name": self.name,
                "creation_timestamp_ms": self.created_ms,
                "last_updated_timestamp_ms": self.updated_ms,
                "artifact_uri": format!("mlflow-artifacts:/{experiment_id}/models/{}/artifacts", self.model_id),
                "status": self.status,
                "status_message": self.status_message,
                "model_type": self.model_type,
                "source_run_id": self.source_run_id,
                "tags": kv(&self.tags),
            },
            "data": {"params": kv(&self.params), "metrics": []},
        })
    }
}

const STATUSES: [&str; 3] = [
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn record_path(s: &Mlflow, project: &str, model_id: &str) -> Path {
    s.store()
        .layout()
        .model(project, model_id)
        .join("model.json")
}

/// A model id as runql makes them (`m-` and 32 hex digits): anything else is not one of ours,
/// and is refused before it becomes part of a path.
fn check_id(model_id: &str) -> Result<(), ApiError> {
    let ok = model_id
        .strip_prefix("m-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "Logged model with ID '{model_id}' not found"
        )))
    }
}

async fn write(s: &Mlflow, m: &ModelRecord) -> Result<(), ApiError> {
    let body = serde_json::to_vec(m).map_err(ApiError::internal)?;
    Ok(s.store()
        .put(&record_path(s, &m.project, &m.model_id), Bytes::from(body))
        .await?)
}

/// The project of a model, found by looking in every project once and remembered.
async fn project_of_model(s: &Mlflow, model_id: &str) -> Result<String, ApiError> {
    check_id(model_id)?;
    if let Some(p) = s.models.project_of(model_id) {
        return Ok(p);
    }
    let store = s.store();
    for project in store.list_projects().await? {
        let path = record_path(s, &project, model_id);
        if store.head_opt(&path).await?.is_some() {
            s.models.remember(model_id, &project);
            return Ok(project);
        }
    }
    Err(ApiError::not_found(format!(
        "Logged model with ID '{model_id}' not found"
    )))
}

async fn read(s: &Mlflow, model_id: &str, allow_deleted: bool) -> Result<ModelRecord, ApiError> {
    let project = project_of_model(s, model_id).await?;
    let path = record_path(s, &project, model_id);
    let bytes = s.store().get_opt(&path).await?.ok_or_else(|| {
        ApiError::not_found(format!("Logged model with ID '{model_id}' not found"))
    })?;
    let m: ModelRecord = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::internal(format!("the record of model {model_id} is damaged: {e}"))
    })?;
    if m.deleted && !allow_deleted {
        return Err(ApiError::not_found(format!(
            "Logged model with ID '{model_id}' not found"
        )));
    }
    Ok(m)
}

/// Reads, changes and writes back one model's record under the server's lock.
async fn update(
    s: &Mlflow,
    model_id: &str,
    change: impl FnOnce(&mut ModelRecord) -> Result<(), ApiError>,
) -> Result<ModelRecord, ApiError> {
    let _guard = s.models.writes.lock().await;
    let mut m = read(s, model_id, false).await?;
    change(&mut m)?;
    m.updated_ms = now_ms();
    write(s, &m).await?;
    Ok(m)
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

/// Sets `items` into `into`: a key already there takes the new value.
fn merge(into: &mut Vec<(String, String)>, items: Vec<(String, String)>) {
    for (k, v) in items {
        match into.iter_mut().find(|(key, _)| *key == k) {
            Some(slot) => slot.1 = v,
            None => into.push((k, v)),
        }
    }
}

fn model_json(m: &ModelRecord) -> Response {
    axum::Json(json!({"model": m.to_json()})).into_response()
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
    let id = format!("m-{}", uuid::Uuid::now_v7().simple());
    let now = now_ms();
    let name = match req.name {
        n if n.is_empty() => format!("model-{}", &id[id.len() - 8..]),
        n => n,
    };
    let m = ModelRecord {
        model_id: id.clone(),
        project: project.clone(),
        name,
        model_type: req.model_type,
        source_run_id: req.source_run_id,
        status: "LOGGED_MODEL_PENDING".into(),
        status_message: String::new(),
        created_ms: now,
        updated_ms: now,
        tags: pairs(req.tags, "tag")?,
        params: pairs(req.params, "param")?,
        deleted: false,
    };
    write(&s, &m).await?;
    s.models.remember(&id, &project);
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
        .filter(|st| STATUSES.contains(&st.as_str()))
        .ok_or_else(|| {
            ApiError::invalid(format!("'status' must be one of {}", STATUSES.join(", ")))
        })?;
    let m = update(&s, &model_id, |m| {
        m.status = status;
        Ok(())
    })
    .await?;
    Ok(model_json(&m))
}

pub(crate) async fn delete_model(
    Write(s): Write<State>,
    UrlPath(model_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    update(&s, &model_id, |m| {
        m.deleted = true;
        Ok(())
    })
    .await?;
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
    let tags = pairs(req.tags, "tag")?;
    let m = update(&s, &model_id, |m| {
        merge(&mut m.tags, tags);
        Ok(())
    })
    .await?;
    Ok(model_json(&m))
}

pub(crate) async fn delete_tag(
    Write(s): Write<State>,
    UrlPath((model_id, key)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    update(&s, &model_id, |m| {
        let before = m.tags.len();
        m.tags.retain(|(k, _)| *k != key);
        if m.tags.len() == before {
            return Err(ApiError::not_found(format!(
                "No tag with key '{key}' on logged model '{model_id}'"
            )));
        }
        Ok(())
    })
    .await?;
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
    let params = pairs(req.params, "param")?;
    update(&s, &model_id, |m| {
        merge(&mut m.params, params);
        Ok(())
    })
    .await?;
    Ok(wire::ok())
}

/// Every model of some projects, newest first.
async fn list(s: &Mlflow, projects: &[String]) -> Result<Vec<ModelRecord>, ApiError> {
    let store = s.store();
    let mut out = Vec::new();
    for project in projects {
        let prefix = store.layout().models(project);
        for meta in store.list_all(&prefix).await? {
            if meta.location.filename() != Some("model.json") {
                continue;
            }
            // Only the record directly below models/<id>/, not a file the user logged.
            let depth = meta.location.parts().count() - prefix.parts().count();
            if depth != 2 {
                continue;
            }
            let Some(bytes) = store.get_opt(&meta.location).await? else {
                continue;
            };
            if let Ok(m) = serde_json::from_slice::<ModelRecord>(&bytes) {
                out.push(m);
            }
        }
    }
    out.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
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
    max_results: Option<Int>,
    page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Order {
    #[serde(default)]
    field_name: String,
    ascending: Option<bool>,
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
                    "creation_timestamp" | "creation_time" => Some(m.created_ms.to_string()),
                    "last_updated_timestamp" => Some(m.updated_ms.to_string()),
                    other => {
                        return Err(ApiError::invalid(format!(
                            "Invalid attribute key '{other}' for logged models"
                        )));
                    }
                },
                "tags" => m
                    .tags
                    .iter()
                    .find(|(k, _)| k == c.key())
                    .map(|(_, v)| v.clone()),
                "params" => m
                    .params
                    .iter()
                    .find(|(k, _)| k == c.key())
                    .map(|(_, v)| v.clone()),
                _ => {
                    return Err(ApiError::invalid(
                        "logged models are filtered on attributes, tags and params; metrics are not kept for them by runql",
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
        let key = |m: &ModelRecord| -> String {
            match field {
                "name" => m.name.clone(),
                "model_id" => m.model_id.clone(),
                "creation_timestamp" | "creation_time" => format!("{:020}", m.created_ms),
                "last_updated_timestamp" => format!("{:020}", m.updated_ms),
                _ => String::new(),
            }
        };
        if !matches!(
            field,
            "name" | "model_id" | "creation_timestamp" | "creation_time" | "last_updated_timestamp"
        ) {
            return Err(ApiError::invalid(format!(
                "logged models can be ordered by name, model_id, creation_timestamp or last_updated_timestamp, not {field:?}"
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
        .map(ModelRecord::to_json)
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

/// Where a model file is stored: below the model's `artifacts/` folder.
async fn file_path(
    s: &Mlflow,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
) -> Result<Path, ApiError> {
    let project = project_of_model(s, model_id).await?;
    if experiment_id_of(&project) != experiment_id && project != experiment_id {
        return Err(ApiError::not_found(format!(
            "Logged model '{model_id}' is not in experiment '{experiment_id}'"
        )));
    }
    let mut p = s
        .store()
        .layout()
        .model(&project, model_id)
        .join("artifacts");
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        p = p.join(part);
    }
    Ok(p)
}

/// Stores a model's file (uploaded through the artifact proxy).
pub(crate) async fn put_file(
    s: &Mlflow,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
    bytes: Bytes,
) -> Result<(), ApiError> {
    let at = file_path(s, experiment_id, model_id, rel).await?;
    Ok(s.store().put(&at, bytes).await?)
}

/// A model's file.
pub(crate) async fn get_file(
    s: &Mlflow,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
) -> Result<Bytes, ApiError> {
    let at = file_path(s, experiment_id, model_id, rel).await?;
    s.store()
        .get_opt(&at)
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
    let dir = file_path(s, experiment_id, model_id, rel).await?;
    let depth = dir.parts().count();
    let mut entries: std::collections::BTreeMap<String, Option<u64>> = Default::default();
    for meta in s.store().list_all(&dir).await? {
        let parts: Vec<_> = meta.location.parts().skip(depth).collect();
        match parts.as_slice() {
            [] => {}
            [file] => {
                entries.insert(file.as_ref().to_string(), Some(meta.size));
            }
            [sub, ..] => {
                entries.insert(sub.as_ref().to_string(), None);
            }
        }
    }
    Ok(entries.into_iter().collect())
}
