//! MLflow experiments: create, get, get-by-name, search (filter, order_by, view type, paging),
//! delete/restore and experiment tags. An experiment is the runql project of the same name;
//! its id is that name (`"0"` is MLflow's Default experiment, the project `Default`).
//!
//! What MLflow keeps in its experiments table, runql keeps beside the project record, one
//! object each, so concurrent writers never rewrite each other's state: `project.deleted`
//! marks an experiment deleted (its runs are marked deleted with it, as in MLflow), `tags/<key>`
//! holds one tag.

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use runql_core::Store;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::mlflow::{
    DEFAULT_PROJECT, body, ensure_project, experiment_id_of, int, not_found, project_of,
    store_error, tags_of,
};
use crate::{ApiError, Scope, Shared, authorize};

/// What MLflow shows of an experiment.
#[derive(Debug, Clone)]
struct Experiment {
    name: String,
    created_ms: i64,
    updated_ms: i64,
    deleted: bool,
    tags: Vec<(String, String)>,
}

impl Experiment {
    fn to_json(&self) -> Value {
        let id = experiment_id_of(&self.name);
        json!({
            "experiment_id": id,
            "name": self.name,
            "artifact_location": format!("mlflow-artifacts:/{id}"),
            "lifecycle_stage": if self.deleted { "deleted" } else { "active" },
            "creation_time": self.created_ms,
            "last_update_time": self.updated_ms,
            "tags": self.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        })
    }
}

/// Reads an experiment; `None` when the project does not exist.
async fn load(store: &Store, project: &str) -> Result<Option<Experiment>, ApiError> {
    let Some(record) = store.project_record(project).await.map_err(store_error)? else {
        return Ok(None);
    };
    let layout = store.layout();
    let created_ms = record.created / 1000;
    let mut updated_ms = created_ms;
    let deleted = match store
        .head_opt(&layout.project_deleted_marker(project))
        .await
        .map_err(store_error)?
    {
        Some(meta) => {
            updated_ms = updated_ms.max(meta.last_modified.timestamp_millis());
            true
        }
        None => false,
    };
    let mut tags = Vec::new();
    let prefix = layout.project_tags(project);
    for meta in store.list_all(&prefix).await.map_err(store_error)? {
        let Some(key) = meta
            .location
            .filename()
            .and_then(runql_core::store::layout::decode_name)
        else {
            continue;
        };
        if let Some(value) = store.get_opt(&meta.location).await.map_err(store_error)? {
            updated_ms = updated_ms.max(meta.last_modified.timestamp_millis());
            tags.push((key, String::from_utf8_lossy(&value).into_owned()));
        }
    }
    tags.sort();
    Ok(Some(Experiment {
        name: record.name,
        created_ms,
        updated_ms,
        deleted,
        tags,
    }))
}

/// An experiment that must exist (the Default one is created on first use, as in MLflow).
async fn existing(store: &Store, project: &str) -> Result<Experiment, ApiError> {
    ensure_project(store, project).await?;
    load(store, project).await?.ok_or_else(|| {
        not_found(format!(
            "No Experiment with id={}",
            experiment_id_of(project)
        ))
    })
}

async fn set_tag(store: &Store, project: &str, key: &str, value: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::invalid(
            "an experiment tag needs a non-empty 'key'",
        ));
    }
    store
        .put(
            &store.layout().project_tag(project, key),
            Bytes::from(value.to_string()),
        )
        .await
        .map_err(store_error)
}

pub(crate) async fn create_experiment(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let name = req
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'name'"))?;
    let store = s.engine.store();
    if let Some(e) = load(store, name).await? {
        let state = if e.deleted { " in deleted state" } else { "" };
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "RESOURCE_ALREADY_EXISTS",
            format!("Experiment '{name}' already exists{state}."),
        ));
    }
    store.create_project(name).await.map_err(store_error)?;
    for (k, v) in tags_of(&req) {
        set_tag(store, name, &k, &v).await?;
    }
    Ok(axum::Json(json!({"experiment_id": experiment_id_of(name)})).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ByName {
    experiment_name: String,
}

pub(crate) async fn get_experiment_by_name(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ByName>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let store = s.engine.store();
    let found = match load(store, &q.experiment_name).await? {
        Some(e) => e,
        None if q.experiment_name == DEFAULT_PROJECT => existing(store, DEFAULT_PROJECT).await?,
        None => {
            return Err(not_found(format!(
                "Could not find experiment with name '{}'",
                q.experiment_name
            )));
        }
    };
    Ok(axum::Json(json!({"experiment": found.to_json()})).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ById {
    experiment_id: String,
}

pub(crate) async fn get_experiment(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ById>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let e = existing(s.engine.store(), project_of(&q.experiment_id)).await?;
    Ok(axum::Json(json!({"experiment": e.to_json()})).into_response())
}

/// The experiment id of a request body (`experiment_id`), required.
fn experiment_of(req: &Value) -> Result<String, ApiError> {
    req.get("experiment_id")
        .and_then(Value::as_str)
        .map(|id| project_of(id).to_string())
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'experiment_id'"))
}

async fn set_deleted(s: &Shared, bytes: &[u8], deleted: bool) -> Result<Response, ApiError> {
    let req: Value = body(bytes)?;
    let project = experiment_of(&req)?;
    let store = s.engine.store();
    let e = existing(store, &project).await?;
    if project == DEFAULT_PROJECT && deleted {
        return Err(ApiError::invalid(
            "Cannot delete the default experiment '0'.",
        ));
    }
    if e.deleted == deleted {
        // MLflow looks a deleted experiment up among active ones (and the reverse): not found.
        return Err(not_found(format!(
            "No Experiment with id={} exists",
            experiment_id_of(&project)
        )));
    }
    // As in MLflow, the experiment's runs are deleted (restored) with it.
    for run in store.list_runs(Some(&project)).await.map_err(store_error)? {
        store
            .set_run_deleted(&project, &run.run_id, deleted)
            .await
            .map_err(store_error)?;
    }
    let marker = store.layout().project_deleted_marker(&project);
    if deleted {
        store
            .put(&marker, Bytes::from_static(b"{}"))
            .await
            .map_err(store_error)?;
    } else {
        store.delete_all([marker]).await.map_err(store_error)?;
    }
    Ok(axum::Json(json!({})).into_response())
}

pub(crate) async fn delete_experiment(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    set_deleted(&s, &bytes, true).await
}

pub(crate) async fn restore_experiment(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    set_deleted(&s, &bytes, false).await
}

/// Renaming: an experiment's id is its name in runql, and every object of the project is
/// stored under it, so a rename is refused with an explanation rather than half-done.
pub(crate) async fn update_experiment(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let project = experiment_of(&req)?;
    existing(s.engine.store(), &project).await?;
    match req.get("new_name").and_then(Value::as_str) {
        Some(new) if new != project => Err(ApiError::invalid(format!(
            "runql cannot rename experiment '{project}' to '{new}': an experiment's id is its name, \
             and its runs are stored under it. Log new runs to '{new}' instead \
             (docs/mlflow.md, Differences)."
        ))),
        _ => Ok(axum::Json(json!({})).into_response()),
    }
}

pub(crate) async fn set_experiment_tag(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let project = experiment_of(&req)?;
    let store = s.engine.store();
    existing(store, &project).await?;
    let key = req
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'key'"))?;
    let value = req.get("value").and_then(Value::as_str).unwrap_or("");
    set_tag(store, &project, key, value).await?;
    Ok(axum::Json(json!({})).into_response())
}

pub(crate) async fn delete_experiment_tag(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let project = experiment_of(&req)?;
    let store = s.engine.store();
    let e = existing(store, &project).await?;
    let key = req
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'key'"))?;
    if !e.tags.iter().any(|(k, _)| k == key) {
        return Err(not_found(format!(
            "No tag with name: {key} in experiment with id {}",
            experiment_id_of(&project)
        )));
    }
    store
        .delete_all([store.layout().project_tag(&project, key)])
        .await
        .map_err(store_error)?;
    Ok(axum::Json(json!({})).into_response())
}

/// The request of `experiments/search`, by POST body or GET query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchRequest {
    #[serde(default)]
    max_results: Option<Value>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    order_by: Option<Value>,
    #[serde(default)]
    view_type: Option<String>,
}

pub(crate) async fn search_experiments(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let req: SearchRequest = if bytes.is_empty() {
        // GET: the same fields in the query string (order_by may repeat).
        let mut r = SearchRequest::default();
        let mut orders = Vec::new();
        for (k, v) in query {
            match k.as_str() {
                "max_results" => r.max_results = Some(json!(v)),
                "page_token" => r.page_token = Some(v),
                "filter" => r.filter = Some(v),
                "view_type" => r.view_type = Some(v),
                "order_by" => orders.push(Value::String(v)),
                _ => {}
            }
        }
        r.order_by = Some(Value::Array(orders));
        r
    } else {
        body(&bytes)?
    };
    let view = req.view_type.as_deref().unwrap_or("ACTIVE_ONLY");
    let keep = |deleted: bool| match view {
        "DELETED_ONLY" => deleted,
        "ALL" => true,
        _ => !deleted,
    };
    let conditions = crate::search::parse_filter(req.filter.as_deref().unwrap_or(""))?;
    let store = s.engine.store();
    let mut found = Vec::new();
    for p in store.list_projects().await.map_err(store_error)? {
        let Some(e) = load(store, &p).await? else {
            continue;
        };
        if !keep(e.deleted) {
            continue;
        }
        let mut ok = true;
        for c in &conditions {
            let actual = match (c.entity_name(), c.key()) {
                ("attributes", "name") => Some(e.name.clone()),
                ("attributes", "experiment_id") => Some(experiment_id_of(&e.name).to_string()),
                ("attributes", "creation_time") => Some(e.created_ms.to_string()),
                ("attributes", "last_update_time") => Some(e.updated_ms.to_string()),
                ("tags", key) => e
                    .tags
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone()),
                (entity, key) => {
                    return Err(ApiError::invalid(format!(
                        "Invalid attribute key '{key}' in an experiment filter ({entity}): \
                         use name, creation_time, last_update_time or tags.<key>"
                    )));
                }
            };
            ok &= c.matches(actual.as_deref());
        }
        if ok {
            found.push(e);
        }
    }
    // MLflow's default order: newest first, then id.
    found.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| a.name.cmp(&b.name))
    });
    let orders: Vec<String> = match &req.order_by {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    for clause in orders.iter().rev() {
        let mut words = clause.split_whitespace();
        let field = words.next().unwrap_or("");
        let field = field.strip_prefix("attributes.").unwrap_or(field);
        let desc = match words.next().map(str::to_ascii_uppercase).as_deref() {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid order_by clause {clause:?}: {other:?} is neither ASC nor DESC"
                )));
            }
        };
        let key = |e: &Experiment| -> String {
            match field {
                "name" | "experiment_id" => e.name.clone(),
                "creation_time" => format!("{:020}", e.created_ms),
                _ => format!("{:020}", e.updated_ms),
            }
        };
        if !matches!(
            field,
            "name" | "experiment_id" | "creation_time" | "last_update_time"
        ) {
            return Err(ApiError::invalid(format!(
                "Invalid order_by clause {clause:?}: experiments are ordered by name, \
                 experiment_id, creation_time or last_update_time"
            )));
        }
        found.sort_by(|a, b| {
            let o = key(a).cmp(&key(b));
            if desc { o.reverse() } else { o }
        });
    }
    let max = int(req.max_results.as_ref())
        .unwrap_or(1000)
        .clamp(1, 50_000) as usize;
    let offset = crate::mlflow::page_offset(req.page_token.as_deref())?;
    let page: Vec<Value> = found
        .iter()
        .skip(offset)
        .take(max)
        .map(Experiment::to_json)
        .collect();
    let mut out = json!({"experiments": page});
    if found.len() > offset + max {
        out["next_page_token"] = json!((offset + max).to_string());
    }
    Ok(axum::Json(out).into_response())
}
