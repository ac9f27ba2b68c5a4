//! MLflow 3's logged models (`/mlflow/logged-models…`, `runs/outputs`, `runs/log-model`), so that
//! `mlflow.<flavor>.log_model` and the autologgers' model logging work against runql.
//!
//! A logged model belongs to a project (its experiment): its record is one JSON object,
//! `projects/<p>/models/<id>/model.json`, and its files are plain objects below
//! `projects/<p>/models/<id>/artifacts/`, where the client uploads them through the artifact
//! proxy (`<experiment>/models/<id>/artifacts/<path>`). Records change (status, tags, params):
//! this server serialises its own read-modify-writes with one lock; two servers writing the same
//! model's tags at once may lose one of the two updates (documented in docs/mlflow.md).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::mlflow::{body, experiment_id_of, int, not_found, project_of, store_error};
use crate::{ApiError, Scope, Shared, authorize};

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
        let kv = |items: &[(String, String)]| -> Vec<Value> {
            items
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect()
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

/// Which project holds which model, and the lock of record updates.
#[derive(Debug, Default)]
pub(crate) struct Models {
    projects: std::sync::Mutex<HashMap<String, String>>,
    writes: tokio::sync::Mutex<()>,
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

fn record_path(s: &Shared, project: &str, model_id: &str) -> Path {
    s.engine
        .store()
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
        Err(not_found(format!(
            "Logged model with ID '{model_id}' not found"
        )))
    }
}

async fn write(s: &Shared, m: &ModelRecord) -> Result<(), ApiError> {
    let body = serde_json::to_vec(m).map_err(|e| ApiError::internal(e.to_string()))?;
    s.engine
        .store()
        .put(&record_path(s, &m.project, &m.model_id), Bytes::from(body))
        .await
        .map_err(store_error)
}

/// The project of a model, found by looking in every project once and remembered.
async fn project_of_model(s: &Shared, model_id: &str) -> Result<String, ApiError> {
    check_id(model_id)?;
    if let Some(p) = s
        .models
        .projects
        .lock()
        .ok()
        .and_then(|m| m.get(model_id).cloned())
    {
        return Ok(p);
    }
    let store = s.engine.store();
    for project in store.list_projects().await.map_err(store_error)? {
        let path = record_path(s, &project, model_id);
        if store.head_opt(&path).await.map_err(store_error)?.is_some() {
            if let Ok(mut m) = s.models.projects.lock() {
                m.insert(model_id.to_string(), project.clone());
            }
            return Ok(project);
        }
    }
    Err(not_found(format!(
        "Logged model with ID '{model_id}' not found"
    )))
}

async fn read(s: &Shared, model_id: &str, allow_deleted: bool) -> Result<ModelRecord, ApiError> {
    let project = project_of_model(s, model_id).await?;
    let path = record_path(s, &project, model_id);
    let bytes = s
        .engine
        .store()
        .get_opt(&path)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(format!("Logged model with ID '{model_id}' not found")))?;
    let m: ModelRecord = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::internal(format!("the record of model {model_id} is damaged: {e}"))
    })?;
    if m.deleted && !allow_deleted {
        return Err(not_found(format!(
            "Logged model with ID '{model_id}' not found"
        )));
    }
    Ok(m)
}

/// Reads, changes and writes back one model's record under the server's lock.
async fn update(
    s: &Shared,
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

/// `[{key, value}]` → pairs; a missing value is the empty string.
fn pairs(v: Option<&Value>, what: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Some(items) = v.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|i| {
            let key = i
                .get("key")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| ApiError::invalid(format!("a {what} needs a non-empty 'key'")))?;
            let value = i.get("value").and_then(Value::as_str).unwrap_or("");
            Ok((key.to_string(), value.to_string()))
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

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/logged-models", post(create))
        .route("/logged-models/search", post(search))
        .route(
            "/logged-models/{model_id}",
            get(get_model).patch(finalize).delete(delete_model),
        )
        .route(
            "/logged-models/{model_id}/tags",
            axum::routing::patch(set_tags),
        )
        .route("/logged-models/{model_id}/tags/{key}", delete(delete_tag))
        .route("/logged-models/{model_id}/params", post(log_params))
        .route("/runs/outputs", post(log_outputs))
        .route("/runs/log-model", post(log_model))
}

async fn create(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let experiment_id = req
        .get("experiment_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'experiment_id'"))?;
    let project = project_of(experiment_id).to_string();
    crate::mlflow::ensure_project(s.engine.store(), &project).await?;
    let id = format!("m-{}", uuid::Uuid::now_v7().simple());
    let text = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let now = now_ms();
    let name = match text("name") {
        n if n.is_empty() => format!("model-{}", &id[id.len() - 8..]),
        n => n,
    };
    let m = ModelRecord {
        model_id: id.clone(),
        project: project.clone(),
        name,
        model_type: text("model_type"),
        source_run_id: text("source_run_id"),
        status: "LOGGED_MODEL_PENDING".into(),
        status_message: String::new(),
        created_ms: now,
        updated_ms: now,
        tags: pairs(req.get("tags"), "tag")?,
        params: pairs(req.get("params"), "param")?,
        deleted: false,
    };
    write(&s, &m).await?;
    if let Ok(mut map) = s.models.projects.lock() {
        map.insert(id, project);
    }
    Ok(axum::Json(json!({"model": m.to_json()})).into_response())
}

#[derive(Deserialize)]
struct GetQuery {
    allow_deleted: Option<bool>,
}

async fn get_model(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    UrlPath(model_id): UrlPath<String>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let m = read(&s, &model_id, q.allow_deleted.unwrap_or(false)).await?;
    Ok(axum::Json(json!({"model": m.to_json()})).into_response())
}

async fn finalize(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    UrlPath(model_id): UrlPath<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let status = req
        .get("status")
        .and_then(Value::as_str)
        .filter(|st| STATUSES.contains(st))
        .ok_or_else(|| {
            ApiError::invalid(format!("'status' must be one of {}", STATUSES.join(", ")))
        })?
        .to_string();
    let m = update(&s, &model_id, |m| {
        m.status = status;
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({"model": m.to_json()})).into_response())
}

async fn delete_model(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    UrlPath(model_id): UrlPath<String>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    update(&s, &model_id, |m| {
        m.deleted = true;
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn set_tags(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    UrlPath(model_id): UrlPath<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let tags = pairs(req.get("tags"), "tag")?;
    let m = update(&s, &model_id, |m| {
        merge(&mut m.tags, tags);
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({"model": m.to_json()})).into_response())
}

async fn delete_tag(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    UrlPath((model_id, key)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    update(&s, &model_id, |m| {
        let before = m.tags.len();
        m.tags.retain(|(k, _)| *k != key);
        if m.tags.len() == before {
            return Err(not_found(format!(
                "No tag with key '{key}' on logged model '{model_id}'"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn log_params(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    UrlPath(model_id): UrlPath<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let params = pairs(req.get("params"), "param")?;
    update(&s, &model_id, |m| {
        merge(&mut m.params, params);
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

/// Every model of some projects, newest first.
async fn list(s: &Shared, projects: &[String]) -> Result<Vec<ModelRecord>, ApiError> {
    let store = s.engine.store();
    let mut out = Vec::new();
    for project in projects {
        let prefix = store.layout().models(project);
        for meta in store.list_all(&prefix).await.map_err(store_error)? {
            if meta.location.filename() != Some("model.json") {
                continue;
            }
            // Only the record directly below models/<id>/, not a file the user logged.
            let depth = meta.location.parts().count() - prefix.parts().count();
            if depth != 2 {
                continue;
            }
            let Some(bytes) = store.get_opt(&meta.location).await.map_err(store_error)? else {
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

/// `logged-models/search`: the models of some experiments, filtered on their attributes, tags
/// and params with MLflow's `=`/`!=`/`LIKE` comparisons, ordered and paged.
async fn search(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let req: Value = body(&bytes)?;
    let projects = crate::mlflow::projects_of(&req)?;
    let filter = req.get("filter").and_then(Value::as_str).unwrap_or("");
    let conditions = crate::search::parse_filter(filter)?;
    let mut models: Vec<ModelRecord> = list(&s, &projects)
        .await?
        .into_iter()
        .filter(|m| !m.deleted)
        .collect();
    let mut kept = Vec::with_capacity(models.len());
    for m in models.drain(..) {
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
            kept.push(m);
        }
    }
    let mut models = kept;
    if let Some(orders) = req.get("order_by").and_then(Value::as_array) {
        for o in orders.iter().rev() {
            let field = o.get("field_name").and_then(Value::as_str).unwrap_or("");
            let asc = o.get("ascending").and_then(Value::as_bool).unwrap_or(true);
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
                "name"
                    | "model_id"
                    | "creation_timestamp"
                    | "creation_time"
                    | "last_updated_timestamp"
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
    }
    let max = int(req.get("max_results")).unwrap_or(100).clamp(1, 10_000) as usize;
    let offset = crate::mlflow::page_offset(req.get("page_token").and_then(Value::as_str))?;
    let page: Vec<Value> = models
        .iter()
        .skip(offset)
        .take(max)
        .map(ModelRecord::to_json)
        .collect();
    let mut out = json!({"models": page});
    if models.len() > offset + max {
        out["next_page_token"] = json!((offset + max).to_string());
    }
    Ok(axum::Json(out).into_response())
}

/// `runs/outputs`: the models a run produced, kept as rows of the run's `inputs` table with
/// the role `output` (`uri` = `models:/<id>`, `digest` = the step).
async fn log_outputs(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let run_id = crate::mlflow::run_id_of(&req)?;
    let mut outputs = Vec::new();
    for m in req
        .get("models")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let id = m
            .get("model_id")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid("a model output needs 'model_id'"))?
            .to_string();
        let step = int(m.get("step")).unwrap_or(0);
        let name = read(&s, &id, true).await?.name;
        outputs.push((id, name, step));
    }
    crate::mlflow::with_run(&s, &run_id, |run| {
        for (id, name, step) in &outputs {
            run.log_input(
                runql_core::Input::new(name.clone())
                    .uri(format!("models:/{id}"))
                    .digest(step.to_string())
                    .role(OUTPUT_ROLE),
            )
            .map_err(store_error)?;
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

/// The role of a run's `inputs` row that records a model it produced.
pub(crate) const OUTPUT_ROLE: &str = "output";

/// `runs/log-model` (MLflow 2's model history): appended to the run's
/// `mlflow.log-model.history` tag, a JSON list, as MLflow does.
async fn log_model(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let run_id = crate::mlflow::run_id_of(&req)?;
    let model: Value = req
        .get("model_json")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| ApiError::invalid("'model_json' must be a JSON object"))?;
    const KEY: &str = "mlflow.log-model.history";
    let _guard = s.models.writes.lock().await;
    let mut history: Vec<Value> = crate::mlflow::run_tag(&s, &run_id, KEY)
        .await?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    history.push(model);
    let text = Value::Array(history).to_string();
    crate::mlflow::with_run(&s, &run_id, |run| {
        run.set_tag(KEY, &text).map_err(store_error)
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

/// Where a model artifact is stored.
pub(crate) async fn artifact_path(
    s: &Shared,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
) -> Result<Path, ApiError> {
    let project = project_of_model(s, model_id).await?;
    if experiment_id_of(&project) != experiment_id && project != experiment_id {
        return Err(not_found(format!(
            "Logged model '{model_id}' is not in experiment '{experiment_id}'"
        )));
    }
    let mut p = s
        .engine
        .store()
        .layout()
        .model(&project, model_id)
        .join("artifacts");
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        p = p.join(part);
    }
    Ok(p)
}

/// The files below a model's artifact directory `rel`: (name, size or None for a directory).
pub(crate) async fn list_artifacts(
    s: &Shared,
    experiment_id: &str,
    model_id: &str,
    rel: &str,
) -> Result<Vec<(String, Option<u64>)>, ApiError> {
    let dir = artifact_path(s, experiment_id, model_id, rel).await?;
    let depth = dir.parts().count();
    let mut entries: std::collections::BTreeMap<String, Option<u64>> = Default::default();
    for meta in s.engine.store().list_all(&dir).await.map_err(store_error)? {
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
