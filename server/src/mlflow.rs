//! The MLflow tracking REST API (`/api/2.0/mlflow/…` and its `/ajax-api/…` twin), so that the
//! official `mlflow` client logs into a runql store unchanged.
//!
//! Mapping: an MLflow experiment is the runql project of the same name, and its experiment id
//! is that name (`"0"` is MLflow's Default experiment: the project `Default`). MLflow run ids
//! are runql run ids. The server keeps a [`Run`] handle per run being logged; a run it does not
//! hold (after a restart, or logged into after it ended) is reopened with `Project::resume`.
//! Reads of a run the server is writing flush it first, so the client reads what it wrote.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runql_core::model::RunStatus;
use runql_core::{Capture, Run, RunId, RunRecord, Scan, Store, Table};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, Scope, Shared, authorize, experiments};

/// MLflow's limits per `log-batch` request.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;
/// MLflow's Default experiment.
const DEFAULT_ID: &str = "0";
pub(crate) const DEFAULT_PROJECT: &str = "Default";

/// Run handles the server is writing through.
#[derive(Default)]
pub(crate) struct Runs {
    open: std::sync::Mutex<HashMap<String, Arc<Run>>>,
    /// Digests of recent metric-logging requests: a client retrying a request whose answer it
    /// lost (the mlflow client retries up to 7 times) must not log the points twice.
    recent: std::sync::Mutex<Recent>,
    /// The project of each run this server created or looked up (a run never changes
    /// project): reading a run's record is then one listing of its folder, not a search of
    /// every project.
    projects: std::sync::Mutex<HashMap<String, String>>,
}

/// Run projects remembered at most (the memory starts over past this).
const KNOWN_PROJECTS: usize = 100_000;

/// The last [`RECENT`] request digests, oldest first.
#[derive(Default)]
struct Recent {
    order: std::collections::VecDeque<[u8; 32]>,
    seen: std::collections::HashSet<[u8; 32]>,
}

const RECENT: usize = 4096;

impl Runs {
    fn project_of(&self, run_id: &str) -> Option<String> {
        self.projects.lock().ok()?.get(run_id).cloned()
    }

    fn remember_project(&self, run_id: &str, project: &str) {
        if let Ok(mut p) = self.projects.lock() {
            if p.len() >= KNOWN_PROJECTS {
                p.clear();
            }
            p.insert(run_id.to_string(), project.to_string());
        }
    }

    /// BLAKE3 of the request: collision-resistant like SHA-256 (a retry must never be mistaken
    /// for another request) at several times its speed on a 100 KB log-batch body.
    fn digest(path: &str, body: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(path.as_bytes());
        h.update(&[0]);
        h.update(body);
        h.finalize().into()
    }

    /// Whether this exact request was applied recently.
    fn applied(&self, path: &str, body: &[u8]) -> bool {
        self.applied_digest(&Runs::digest(path, body))
    }

    fn applied_digest(&self, d: &[u8; 32]) -> bool {
        self.recent.lock().is_ok_and(|r| r.seen.contains(d))
    }

    /// Remembers a request that was applied (a failed one may be retried and applied later).
    fn remember(&self, path: &str, body: &[u8]) {
        self.remember_digest(Runs::digest(path, body));
    }

    fn remember_digest(&self, d: [u8; 32]) {
        let Ok(mut r) = self.recent.lock() else {
            return;
        };
        if !r.seen.insert(d) {
            return;
        }
        r.order.push_back(d);
        if r.order.len() > RECENT
            && let Some(old) = r.order.pop_front()
        {
            r.seen.remove(&old);
        }
    }
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").finish_non_exhaustive()
    }
}

pub(crate) fn project_of(experiment_id: &str) -> &str {
    if experiment_id == DEFAULT_ID {
        DEFAULT_PROJECT
    } else {
        experiment_id
    }
}

pub(crate) fn experiment_id_of(project: &str) -> &str {
    if project == DEFAULT_PROJECT {
        DEFAULT_ID
    } else {
        project
    }
}

pub(crate) fn not_found(what: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", what)
}

pub(crate) fn store_error(e: runql_core::Error) -> ApiError {
    match e {
        runql_core::Error::RunNotFound { run_id, .. } => {
            not_found(format!("Run '{run_id}' not found"))
        }
        runql_core::Error::InvalidName { .. }
        | runql_core::Error::InvalidValue { .. }
        | runql_core::Error::ParamChanged { .. } => ApiError::invalid(e.to_string()),
        // The store is unreachable: the MLflow client retries 503s with backoff.
        runql_core::Error::StoreUnavailable { .. } | runql_core::Error::OutageBufferFull { .. } => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                e.to_string(),
            )
        }
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            other.to_string(),
        ),
    }
}

fn join_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_ERROR",
        e.to_string(),
    )
}

/// The MLflow routes, under both prefixes.
pub(crate) fn routes() -> Router<Shared> {
    let api = Router::new()
        .route("/experiments/create", post(experiments::create_experiment))
        .route(
            "/experiments/get-by-name",
            get(experiments::get_experiment_by_name),
        )
        .route("/experiments/get", get(experiments::get_experiment))
        .route(
            "/experiments/search",
            post(experiments::search_experiments).get(experiments::search_experiments),
        )
        .route("/runs/create", post(create_run))
        .route("/runs/update", post(update_run))
        .route("/runs/get", get(get_run))
        .route("/runs/search", post(search_runs))
        .route("/runs/log-batch", post(log_batch))
        .route("/runs/log-metric", post(log_metric))
        .route("/runs/log-parameter", post(log_param))
        .route("/runs/set-tag", post(set_tag))
        .route("/runs/log-inputs", post(log_inputs))
        .route("/runs/delete", post(delete_run))
        .route("/runs/restore", post(restore_run))
        .route("/metrics/get-history", get(get_history))
        .route("/experiments/delete", post(experiments::delete_experiment))
        .route(
            "/experiments/restore",
            post(experiments::restore_experiment),
        )
        .route("/experiments/update", post(experiments::update_experiment))
        .route(
            "/experiments/set-experiment-tag",
            post(experiments::set_experiment_tag),
        )
        .route(
            "/experiments/delete-experiment-tag",
            post(experiments::delete_experiment_tag),
        )
        .merge(crate::models::routes());
    let artifacts = Router::new()
        .route("/artifacts", get(list_artifacts))
        .route(
            "/artifacts/{*path}",
            get(download_artifact)
                .put(upload_artifact)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_ARTIFACT)),
        );
    Router::new()
        .nest("/api/2.0/mlflow", api.clone())
        .nest("/ajax-api/2.0/mlflow", api)
        .nest("/api/2.0/mlflow-artifacts", artifacts.clone())
        .nest("/ajax-api/2.0/mlflow-artifacts", artifacts)
}

/// Largest artifact accepted in one upload (1 GiB; bodies are held in memory for now).
const MAX_ARTIFACT: usize = 1 << 30;

/// Where an artifact path of the proxy points: a run's artifact or a logged model's file.
enum Location {
    /// `<experiment>/<run>/artifacts/<path>`.
    Run { run_id: String, rel: String },
    /// `<experiment>/models/<model>/artifacts/<path>` (MLflow 3's logged models).
    Model {
        experiment_id: String,
        model_id: String,
        rel: String,
    },
}

fn artifact_location(path: &str) -> Result<Location, ApiError> {
    let mut parts = path.trim_start_matches('/').splitn(4, '/');
    let (exp, run, marker, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
    let normalize = |rest: Option<&str>| -> Result<String, ApiError> {
        match rest.unwrap_or("") {
            "" => Ok(String::new()),
            rest => runql_core::model::normalize_artifact_path(rest)
                .map_err(|e| ApiError::invalid(e.to_string())),
        }
    };
    match (exp, run, marker) {
        (Some(exp), Some("models"), Some(model_id)) if !model_id.is_empty() => {
            let mut inner = rest.unwrap_or("").splitn(2, '/');
            if inner.next() != Some("artifacts") {
                return Err(ApiError::invalid(format!(
                    "artifact path {path:?} is not <experiment>/models/<model>/artifacts/<path>"
                )));
            }
            Ok(Location::Model {
                experiment_id: exp.to_string(),
                model_id: model_id.to_string(),
                rel: normalize(inner.next())?,
            })
        }
        (_, Some(run), Some("artifacts")) if !run.is_empty() => Ok(Location::Run {
            run_id: run.to_string(),
            rel: normalize(rest)?,
        }),
        _ => Err(ApiError::invalid(format!(
            "artifact path {path:?} is not <experiment>/<run>/artifacts/<path>"
        ))),
    }
}

async fn upload_artifact(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(path): axum::extract::Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let (run_id, rel) = match artifact_location(&path)? {
        Location::Model {
            experiment_id,
            model_id,
            rel,
        } => {
            if rel.is_empty() {
                return Err(ApiError::invalid("an artifact needs a file name"));
            }
            let at = crate::models::artifact_path(&s, &experiment_id, &model_id, &rel).await?;
            s.engine
                .store()
                .put(&at, bytes)
                .await
                .map_err(store_error)?;
            return Ok(axum::Json(json!({})).into_response());
        }
        Location::Run { run_id, rel } => (run_id, rel),
    };
    if rel.is_empty() {
        return Err(ApiError::invalid("an artifact needs a file name"));
    }
    // Blob writes block (hashing, fsync): off the async threads.
    let run = handle(&s, &run_id).await?;
    let (run, result) = tokio::task::spawn_blocking(move || {
        let r = run
            .log_artifact_bytes(&rel, bytes)
            .map(|_| ())
            .map_err(store_error);
        (run, r)
    })
    .await
    .map_err(join_error)?;
    let closed = run.close().await;
    result.and(closed)?;
    Ok(axum::Json(json!({})).into_response())
}

/// The artifacts rows of a run (path, digest, size), the server's writes flushed first.
pub(crate) async fn artifacts_of(
    s: &Shared,
    run_id: &str,
) -> Result<Vec<(String, String, u64)>, ApiError> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    flush_if_open(s, run_id).await?;
    let record = read_record(s, run_id).await?;
    let scan = Scan::project(&record.project).runs([run_id]);
    let mut out = Vec::new();
    for b in s
        .engine
        .store()
        .scan(Table::Artifacts, &scan)
        .await
        .map_err(store_error)?
    {
        let (Some(p), Some(d), Some(n)) = (
            b.column_by_name("path"),
            b.column_by_name("digest"),
            b.column_by_name("size"),
        ) else {
            continue;
        };
        let (p, d, n) = (
            p.as_string::<i32>(),
            d.as_string::<i32>(),
            n.as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            out.push((
                p.value(i).to_string(),
                d.value(i).to_string(),
                n.value(i).max(0) as u64,
            ));
        }
    }
    // A path logged twice: the last upload wins.
    let mut seen = std::collections::HashSet::new();
    out.reverse();
    out.retain(|(p, _, _)| seen.insert(p.clone()));
    out.reverse();
    Ok(out)
}

async fn download_artifact(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let (run_id, rel) = match artifact_location(&path)? {
        Location::Model {
            experiment_id,
            model_id,
            rel,
        } => {
            let at = crate::models::artifact_path(&s, &experiment_id, &model_id, &rel).await?;
            let bytes = s
                .engine
                .store()
                .get_opt(&at)
                .await
                .map_err(store_error)?
                .ok_or_else(|| not_found(format!("No artifact {rel:?} in model {model_id}")))?;
            return Ok(octet_stream(bytes));
        }
        Location::Run { run_id, rel } => (run_id, rel),
    };
    Ok(octet_stream(artifact_bytes(&s, &run_id, &rel).await?))
}

/// The content of a run's artifact at `rel` (its latest upload).
pub(crate) async fn artifact_bytes(
    s: &Shared,
    run_id: &str,
    rel: &str,
) -> Result<bytes::Bytes, ApiError> {
    let (_, digest, _) = artifacts_of(s, run_id)
        .await?
        .into_iter()
        .find(|(p, _, _)| p == rel)
        .ok_or_else(|| not_found(format!("No artifact {rel:?} in run {run_id}")))?;
    s.engine
        .store()
        .get_blob(&digest)
        .await
        .map_err(store_error)
}

fn octet_stream(bytes: bytes::Bytes) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

#[derive(Deserialize)]
struct ListQuery {
    path: Option<String>,
}

async fn list_artifacts(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let (run_id, dir) = match artifact_location(q.path.as_deref().unwrap_or(""))? {
        Location::Model {
            experiment_id,
            model_id,
            rel,
        } => {
            let entries =
                crate::models::list_artifacts(&s, &experiment_id, &model_id, &rel).await?;
            return Ok(files_json(entries));
        }
        Location::Run { run_id, rel } => (run_id, rel),
    };
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries: std::collections::BTreeMap<String, Option<u64>> = Default::default();
    for (path, _, size) in artifacts_of(&s, &run_id).await? {
        let Some(rest) = path.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((sub, _)) => {
                entries.insert(sub.to_string(), None);
            }
            None => {
                entries.insert(rest.to_string(), Some(size));
            }
        }
    }
    Ok(files_json(entries))
}

/// An artifact listing as MLflow answers it: (name, size, or `None` for a directory).
fn files_json(entries: impl IntoIterator<Item = (String, Option<u64>)>) -> Response {
    let files: Vec<Value> = entries
        .into_iter()
        .map(|(name, size)| match size {
            Some(n) => json!({"path": name, "is_dir": false, "file_size": n}),
            None => json!({"path": name, "is_dir": true}),
        })
        .collect();
    axum::Json(json!({"files": files})).into_response()
}

/// The offset a page token stands for (the tokens runql hands out are offsets); none: 0.
pub(crate) fn page_offset(token: Option<&str>) -> Result<usize, ApiError> {
    match token.filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid(format!("Invalid page token {t:?}"))),
        None => Ok(0),
    }
}

/// The projects of a request's `experiment_ids`, which must name at least one.
pub(crate) fn projects_of(req: &Value) -> Result<Vec<String>, ApiError> {
    let projects: Vec<String> = req
        .get("experiment_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(|i| project_of(i).to_string())
                .collect()
        })
        .unwrap_or_default();
    if projects.is_empty() {
        return Err(ApiError::invalid(
            "Missing value for required parameter 'experiment_ids'",
        ));
    }
    Ok(projects)
}

/// Parses a request body, accepting the bare `NaN` / `Infinity` tokens Python's `json` writes.
pub(crate) fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ApiError::invalid("the body is not UTF-8"))?;
    let fixed = quote_non_finite(text);
    serde_json::from_str(&fixed).map_err(|e| ApiError::invalid(format!("malformed request: {e}")))
}

/// Rewrites bare `NaN`, `Infinity` and `-Infinity` outside strings as JSON strings.
pub(crate) fn quote_non_finite(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        match token {
            Some(t) => {
                out.push('"');
                out.push_str(t);
                out.push('"');
                rest = &rest[t.len()..];
            }
            None => {
                if c == '"' {
                    in_string = true;
                }
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A double as MLflow clients send it: a number, or "NaN" / "Infinity" / "-Infinity".
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_double(s),
        _ => None,
    }
}

/// A double sent as a string: "NaN", "Infinity", "-Infinity", or a number.
pub(crate) fn parse_double(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// An int64 sent as a string, as protobuf's JSON writes them.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    s.parse().ok()
}

/// A double as protobuf JSON writes it (non-finite values as strings).
fn to_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

pub(crate) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "RUNNING",
        RunStatus::Finished => "FINISHED",
        RunStatus::Failed | RunStatus::Crashed => "FAILED",
        RunStatus::Killed => "KILLED",
    }
}

fn run_info(r: &RunRecord) -> Value {
    json!({
        "run_id": r.run_id,
        "run_uuid": r.run_id,
        "run_name": r.name.clone().unwrap_or_default(),
        "experiment_id": experiment_id_of(&r.project),
        "user_id": r.username.clone().unwrap_or_default(),
        "status": status_name(r.status),
        "start_time": r.started.unwrap_or(r.created) / 1000,
        "end_time": r.ended.map(|e| e / 1000),
        "artifact_uri": format!("mlflow-artifacts:/{}/{}/artifacts", experiment_id_of(&r.project), r.run_id),
        "lifecycle_stage": if r.deleted { "deleted" } else { "active" },
    })
}

pub(crate) async fn ensure_project(store: &Store, project: &str) -> Result<i64, ApiError> {
    match store.project_record(project).await.map_err(store_error)? {
        Some(p) => Ok(p.created),
        None if project == DEFAULT_PROJECT => Ok(store
            .create_project(project)
            .await
            .map_err(store_error)?
            .created),
        None => Err(not_found(format!(
            "No Experiment with id={}",
            experiment_id_of(project)
        ))),
    }
}

pub(crate) fn tags_of(req: &Value) -> Vec<(String, String)> {
    req.get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| {
                    Some((
                        t.get("key")?.as_str()?.to_string(),
                        t.get("value")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn create_run(
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
        .unwrap_or(DEFAULT_ID)
        .to_string();
    let project = project_of(&experiment_id).to_string();
    ensure_project(s.engine.store(), &project).await?;
    let tags = tags_of(&req);
    let name = req
        .get("run_name")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| {
            tags.iter()
                .find(|(k, _)| k == "mlflow.runName")
                .map(|(_, v)| v.clone())
        });
    let parent = tags
        .iter()
        .find(|(k, _)| k == "mlflow.parentRunId")
        .and_then(|(_, v)| v.parse::<RunId>().ok());
    let store = s.engine.store().clone();
    let runtime = tokio::runtime::Handle::current();
    let run = tokio::task::spawn_blocking(move || {
        let mut b = store
            .project(&project)
            .run()
            .capture(Capture::none())
            .runtime(runtime);
        if let Some(n) = name {
            b = b.name(n);
        }
        if let Some(p) = parent {
            b = b.parent_id(p);
        }
        for (k, v) in tags {
            b = b.tag(k, v);
        }
        b.start()
    })
    .await
    .map_err(join_error)?
    .map_err(store_error)?;
    let id = run.id().to_string();
    s.runs.remember_project(&id, run.project());
    // The record as stored: what reading it back would give.
    let info = run_info(run.started_record());
    let run = Arc::new(run);
    if let Ok(mut open) = s.runs.open.lock() {
        open.insert(id.clone(), run);
    }
    Ok(axum::Json(
        json!({"run": {"info": info, "data": {"metrics": [], "params": [], "tags": []}}}),
    )
    .into_response())
}

/// A run to log into: one the server holds open, or one reopened for this request only.
enum Handle {
    Open(Arc<Run>),
    /// A run that had ended: it is finished again, with its old status, after the request.
    Reopened(Run, RunStatus),
}

impl std::ops::Deref for Handle {
    type Target = Run;
    fn deref(&self) -> &Run {
        match self {
            Handle::Open(r) => r,
            Handle::Reopened(r, _) => r,
        }
    }
}

impl Handle {
    /// Ends a reopened run again (whatever the request's outcome).
    async fn close(self) -> Result<(), ApiError> {
        if let Handle::Reopened(run, status) = self {
            tokio::task::spawn_blocking(move || run.finish_with(status))
                .await
                .map_err(join_error)?
                .map_err(store_error)?;
        }
        Ok(())
    }
}

/// The server's handle on a run. A run it does not hold is reopened: kept open when it is still
/// running (this server restarted), reopened for this request only when it had ended (MLflow
/// lets clients log into finished runs, which stay finished).
async fn handle(s: &Shared, run_id: &str) -> Result<Handle, ApiError> {
    if let Some(r) = s.runs.open.lock().ok().and_then(|o| o.get(run_id).cloned()) {
        return Ok(Handle::Open(r));
    }
    let id: RunId = run_id
        .parse()
        .map_err(|_| not_found(format!("Run '{run_id}' not found")))?;
    let record = read_record(s, run_id).await?;
    let builder = s
        .engine
        .store()
        .project(&record.project)
        .resume(id)
        .await
        .map_err(store_error)?
        .runtime(tokio::runtime::Handle::current());
    let run = tokio::task::spawn_blocking(move || builder.start())
        .await
        .map_err(join_error)?
        .map_err(store_error)?;
    if record.status != RunStatus::Running {
        return Ok(Handle::Reopened(run, record.status));
    }
    let run = Arc::new(run);
    match s.runs.open.lock() {
        Ok(mut open) => Ok(Handle::Open(
            open.entry(run_id.to_string()).or_insert(run).clone(),
        )),
        Err(_) => Ok(Handle::Open(run)),
    }
}

/// Runs `f` with the run's handle, closing a reopened run afterwards whatever happened.
pub(crate) async fn with_run(
    s: &Shared,
    run_id: &str,
    f: impl FnOnce(&Run) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let run = handle(s, run_id).await?;
    let result = f(&run);
    let closed = run.close().await;
    result.and(closed)
}

/// A run's record (`RESOURCE_DOES_NOT_EXIST` when there is no such run).
async fn read_record(s: &Shared, run_id: &str) -> Result<RunRecord, ApiError> {
    let store = s.engine.store();
    if let Some(project) = s.runs.project_of(run_id) {
        let scan = Scan::project(&project).runs([run_id]);
        for b in store.scan(Table::Runs, &scan).await.map_err(store_error)? {
            if let Some(r) = runql_core::store::records_from_batch(&b)
                .map_err(store_error)?
                .into_iter()
                .next()
            {
                return Ok(r);
            }
        }
    }
    let record = store.find_run(run_id).await.map_err(store_error)?;
    s.runs.remember_project(run_id, &record.project);
    Ok(record)
}

/// The value of one tag of a run (its latest), the server's writes flushed first.
pub(crate) async fn run_tag(
    s: &Shared,
    run_id: &str,
    key: &str,
) -> Result<Option<String>, ApiError> {
    use arrow::array::AsArray;
    flush_if_open(s, run_id).await?;
    let q = |v: &str| v.replace('\'', "''");
    let sql = format!(
        "SELECT value FROM tags WHERE run_id = '{}' AND key = '{}'",
        q(run_id),
        q(key)
    );
    let mut value = None;
    for b in query(s, &sql).await? {
        let c = b.column(0).as_string::<i32>();
        if b.num_rows() > 0 {
            value = Some(c.value(b.num_rows() - 1).to_string());
        }
    }
    Ok(value)
}

pub(crate) fn run_id_of(req: &Value) -> Result<String, ApiError> {
    req.get("run_id")
        .or_else(|| req.get("run_uuid"))
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'run_id'"))
}

async fn update_run(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let run_id = run_id_of(&req)?;
    let status = match req.get("status").and_then(Value::as_str) {
        None | Some("RUNNING") | Some("SCHEDULED") => None,
        Some("FINISHED") => Some(RunStatus::Finished),
        Some("FAILED") => Some(RunStatus::Failed),
        Some("KILLED") => Some(RunStatus::Killed),
        Some(other) => return Err(ApiError::invalid(format!("Invalid run status '{other}'"))),
    };
    if let Some(status) = status {
        // The final record as the run's writer stored it, when this server ended the run.
        let mut ended = None;
        // Make sure the run exists (and reopen it if this server does not hold it).
        if let Handle::Reopened(run, _) = handle(&s, &run_id).await? {
            ended = Some(
                tokio::task::spawn_blocking(move || run.finish_with_record(status))
                    .await
                    .map_err(join_error)?
                    .map_err(store_error)?,
            );
        }
        let owned = s.runs.open.lock().ok().and_then(|mut o| o.remove(&run_id));
        if let Some(run) = owned {
            ended = Some(
                tokio::task::spawn_blocking(move || {
                    // Other requests may still hold the handle for a moment; wait for them.
                    let mut run = run;
                    loop {
                        match Arc::try_unwrap(run) {
                            Ok(r) => return r.finish_with_record(status),
                            Err(shared) => {
                                run = shared;
                                std::thread::sleep(std::time::Duration::from_millis(5));
                            }
                        }
                    }
                })
                .await
                .map_err(join_error)?
                .map_err(store_error)?,
            );
        }
        if let Some(record) = ended {
            crate::compactor::schedule(&s, &record.project);
            return Ok(axum::Json(json!({"run_info": run_info(&record)})).into_response());
        }
    }
    let record = read_record(&s, &run_id).await?;
    Ok(axum::Json(json!({"run_info": run_info(&record)})).into_response())
}

fn log_metric_value(run: &Run, m: &Value) -> Result<(), ApiError> {
    let key = m
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'key'"))?;
    let value = m
        .get("value")
        .and_then(number)
        .ok_or_else(|| ApiError::invalid(format!("Missing or invalid value for metric '{key}'")))?;
    let ts = int(m.get("timestamp")).unwrap_or_else(|| runql_core::model::now_us() / 1000);
    let step = int(m.get("step")).unwrap_or(0);
    run.log_metric_at(key, step, value, ts.saturating_mul(1000))
        .map_err(store_error)
}

fn kv<'a>(v: &'a Value, what: &str) -> Result<(&'a str, String), ApiError> {
    let key = v.get("key").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(format!("Missing value for required parameter '{what} key'"))
    })?;
    let value = match v.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    Ok((key, value))
}

/// A metric value as MLflow clients send it: a number, or `"NaN"` / `"Infinity"` /
/// `"-Infinity"` (or a number in a string).
pub(crate) struct Num(pub(crate) f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or \"NaN\" / \"Infinity\" / \"-Infinity\"")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Num, E> {
                parse_double(v)
                    .map(Num)
                    .ok_or_else(|| E::custom(format!("{v:?} is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An int64 as protobuf's JSON writes it: a number or a string of digits.
pub(crate) struct Int(pub(crate) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Int, E> {
                if v.fract() == 0.0 && v.abs() < 9.2e18 {
                    Ok(Int(v as i64))
                } else {
                    Err(E::custom(format!("{v} is not an integer")))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Int, E> {
                parse_int(v)
                    .map(Int)
                    .ok_or_else(|| E::custom(format!("{v:?} is not an integer")))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
pub(crate) struct MetricIn<'a> {
    #[serde(borrow)]
    pub(crate) key: Option<std::borrow::Cow<'a, str>>,
    pub(crate) value: Option<Num>,
    pub(crate) timestamp: Option<Int>,
    pub(crate) step: Option<Int>,
}

#[derive(Deserialize)]
pub(crate) struct KvIn<'a> {
    #[serde(borrow)]
    pub(crate) key: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) value: Option<std::borrow::Cow<'a, str>>,
}

/// A `log-batch` request, parsed in place (strings borrowed from the body).
#[derive(Deserialize)]
pub(crate) struct BatchIn<'a> {
    #[serde(borrow)]
    pub(crate) run_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) run_uuid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) metrics: Vec<MetricIn<'a>>,
    #[serde(default, borrow)]
    pub(crate) params: Vec<KvIn<'a>>,
    #[serde(default, borrow)]
    pub(crate) tags: Vec<KvIn<'a>>,
}

fn required<'a>(v: &'a Option<std::borrow::Cow<'a, str>>, what: &str) -> Result<&'a str, ApiError> {
    v.as_deref()
        .ok_or_else(|| ApiError::invalid(format!("Missing value for required parameter '{what}'")))
}

/// `runs/log-batch`: the hot path of MLflow logging (up to 1,000 metrics a request), parsed
/// into typed values without an intermediate JSON tree, and logged under one lock.
async fn log_batch(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::invalid("the body is not UTF-8"))?;
    // The fast path takes what MLflow clients send; serde_json the rest, and words the errors.
    let quoted;
    let req: BatchIn<'_> = match crate::batch_json::parse(text) {
        Some(req) => req,
        None => {
            quoted = quote_non_finite(text);
            serde_json::from_str(&quoted).map_err(|e| {
                ApiError::invalid(format!("the body is not a log-batch request: {e}"))
            })?
        }
    };
    let run_id = req
        .run_id
        .as_deref()
        .or(req.run_uuid.as_deref())
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'run_id'"))?
        .to_string();
    let digest = Runs::digest("log-batch", &bytes);
    if s.runs.applied_digest(&digest) {
        return Ok(axum::Json(json!({})).into_response());
    }
    let (metrics, params, tags) = (&req.metrics, &req.params, &req.tags);
    if metrics.len() > MAX_METRICS || params.len() > MAX_PARAMS || tags.len() > MAX_TAGS {
        return Err(ApiError::invalid(format!(
            "A batch logging request can contain at most {MAX_METRICS} metrics, {MAX_PARAMS} \
             params and {MAX_TAGS} tags; got {} metrics, {} params and {} tags",
            metrics.len(),
            params.len(),
            tags.len()
        )));
    }
    // Checked before anything is logged: a bad point rejects the whole request.
    let now_ms = runql_core::model::now_us() / 1000;
    let mut points = Vec::with_capacity(metrics.len());
    for m in metrics {
        let key = required(&m.key, "key")?;
        let value = m.value.as_ref().map(|n| n.0).ok_or_else(|| {
            ApiError::invalid(format!("Missing or invalid value for metric '{key}'"))
        })?;
        let ts = m.timestamp.as_ref().map(|t| t.0).unwrap_or(now_ms);
        let step = m.step.as_ref().map(|t| t.0).unwrap_or(0);
        points.push((key, step, value, ts.saturating_mul(1000)));
    }
    with_run(&s, &run_id, |run| {
        for p in params {
            let key = required(&p.key, "key")?;
            run.log_param(key, p.value.as_deref().unwrap_or(""))
                .map_err(store_error)?;
        }
        for t in tags {
            let key = required(&t.key, "key")?;
            run.set_tag(key, t.value.as_deref().unwrap_or(""))
                .map_err(store_error)?;
        }
        run.log_points(points.iter().copied()).map_err(store_error)
    })
    .await?;
    s.runs.remember_digest(digest);
    Ok(axum::Json(json!({})).into_response())
}

async fn log_metric(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    if s.runs.applied("log-metric", &bytes) {
        return Ok(axum::Json(json!({})).into_response());
    }
    with_run(&s, &run_id_of(&req)?, |run| log_metric_value(run, &req)).await?;
    s.runs.remember("log-metric", &bytes);
    Ok(axum::Json(json!({})).into_response())
}

async fn log_param(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    with_run(&s, &run_id_of(&req)?, |run| {
        let (k, v) = kv(&req, "param")?;
        run.log_param(k, v).map_err(store_error)
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn set_tag(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    with_run(&s, &run_id_of(&req)?, |run| {
        let (k, v) = kv(&req, "tag")?;
        run.set_tag(k, v).map_err(store_error)
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

/// `runs/log-inputs`: MLflow datasets become rows of `inputs` (name, source as uri, digest, and
/// the `mlflow.data.context` tag as role).
async fn log_inputs(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    let req: Value = body(&bytes)?;
    let datasets = req
        .get("datasets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    with_run(&s, &run_id_of(&req)?, |run| {
        for d in &datasets {
            let Some(ds) = d.get("dataset") else { continue };
            let text = |k: &str| ds.get(k).and_then(Value::as_str).map(String::from);
            let name = text("name").unwrap_or_else(|| "dataset".into());
            let mut input = runql_core::Input::new(name);
            if let Some(src) = text("source") {
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
            if let Some(digest) = text("digest") {
                input = input.digest(digest);
            }
            let context = tags_of(d)
                .into_iter()
                .find(|(k, _)| k == "mlflow.data.context")
                .map(|(_, v)| v);
            if let Some(role) = context {
                input = input.role(role);
            }
            run.log_input(input).map_err(store_error)?;
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn set_deleted(s: &Shared, bytes: &[u8], deleted: bool) -> Result<Response, ApiError> {
    let req: Value = body(bytes)?;
    let run_id = run_id_of(&req)?;
    let record = read_record(s, &run_id).await?;
    s.engine
        .store()
        .set_run_deleted(&record.project, &run_id, deleted)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(json!({})).into_response())
}

async fn delete_run(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    set_deleted(&s, &bytes, true).await
}

async fn restore_run(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Write)?;
    set_deleted(&s, &bytes, false).await
}

/// Makes what the server logged for `run_id` visible to readers.
async fn flush_if_open(s: &Shared, run_id: &str) -> Result<(), ApiError> {
    let open = s.runs.open.lock().ok().and_then(|o| o.get(run_id).cloned());
    if let Some(run) = open {
        tokio::task::spawn_blocking(move || run.flush())
            .await
            .map_err(join_error)?
            .map_err(store_error)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct RunQuery {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

async fn get_run(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<RunQuery>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let run_id = q
        .run_id
        .or(q.run_uuid)
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'run_id'"))?;
    flush_if_open(&s, &run_id).await?;
    // A missing run is RESOURCE_DOES_NOT_EXIST.
    let project = match s.runs.project_of(&run_id) {
        Some(p) => p,
        None => read_record(&s, &run_id).await?.project,
    };
    let run = runs_json(
        &s,
        std::slice::from_ref(&project),
        std::slice::from_ref(&run_id),
    )
    .await?
    .pop()
    .ok_or_else(|| not_found(format!("Run '{run_id}' not found")))?;
    Ok(axum::Json(json!({ "run": run })).into_response())
}

/// Every run the server holds, flushed: searches see what clients just logged.
async fn flush_all(s: &Shared) -> Result<(), ApiError> {
    let open: Vec<Arc<Run>> = s
        .runs
        .open
        .lock()
        .map(|o| o.values().cloned().collect())
        .unwrap_or_default();
    tokio::task::spawn_blocking(move || open.iter().try_for_each(|r| r.flush()))
        .await
        .map_err(join_error)?
        .map_err(store_error)
}

async fn query(s: &Shared, sql: &str) -> Result<Vec<arrow::array::RecordBatch>, ApiError> {
    Ok(s.engine.query(sql).await?)
}

/// The runs with these ids, in this order, as MLflow's `Run` objects.
async fn runs_json(
    s: &Shared,
    projects: &[String],
    ids: &[String],
) -> Result<Vec<Value>, ApiError> {
    if ids.is_empty() || projects.is_empty() {
        return Ok(Vec::new());
    }
    // One snapshot per project: one listing of the manifest and of the runs' live folders.
    let store = s.engine.store();
    let mut snaps = Vec::with_capacity(projects.len());
    for project in projects {
        snaps.push(
            store
                .snapshot(project, Some(ids))
                .await
                .map_err(store_error)?,
        );
    }
    page_json(store, &snaps, ids).await
}

/// The runs with these ids, in this order, as MLflow's `Run` objects, read out of snapshots.
async fn page_json(
    store: &Store,
    snaps: &[runql_core::store::ProjectSnapshot],
    ids: &[String],
) -> Result<Vec<Value>, ApiError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // The five tables read out of each snapshot at once: a page is one round of requests.
    let (mut runs, mut params, mut tags, mut summaries, mut inputs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for snap in snaps {
        let scan = Scan::project(&snap.project).runs(ids.iter().map(String::as_str));
        let read = |table: Table| {
            let scan = &scan;
            async move {
                runql_core::store::resolve(table, store.read_snapshot(snap, table, scan).await?)
            }
        };
        let (r, p, t, m, i) = tokio::try_join!(
            read(Table::Runs),
            read(Table::Params),
            read(Table::Tags),
            read(Table::MetricSummary),
            read(Table::Inputs),
        )
        .map_err(store_error)?;
        runs.extend(r);
        params.extend(p);
        tags.extend(t);
        summaries.extend(m);
        inputs.extend(i);
    }
    let column =
        |b: &arrow::array::RecordBatch, name: &str| -> Result<arrow::array::ArrayRef, ApiError> {
            b.column_by_name(name).cloned().ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    format!("column {name} missing"),
                )
            })
        };
    // Per run: its record, params, tags and latest metrics.
    type Parts = (RunRecord, Vec<Value>, Vec<Value>, Vec<Value>);
    let mut by_id: HashMap<String, Parts> = HashMap::new();
    for b in runs {
        for r in runql_core::store::records_from_batch(&b).map_err(store_error)? {
            by_id.insert(r.run_id.clone(), (r, Vec::new(), Vec::new(), Vec::new()));
        }
    }
    for (batches, slot) in [(params, 1), (tags, 2)] {
        for b in batches {
            let (id, k, v) = (
                column(&b, "run_id")?,
                column(&b, "key")?,
                column(&b, "value")?,
            );
            let (id, k, v) = (
                id.as_string::<i32>(),
                k.as_string::<i32>(),
                v.as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                if let Some(e) = by_id.get_mut(id.value(i)) {
                    let kv = json!({"key": k.value(i), "value": v.value(i)});
                    if slot == 1 {
                        e.1.push(kv)
                    } else {
                        e.2.push(kv)
                    }
                }
            }
        }
    }
    for b in summaries {
        let (id, k, v, step, ts) = (
            column(&b, "run_id")?,
            column(&b, "key")?,
            column(&b, "last_value")?,
            column(&b, "last_step")?,
            column(&b, "last_ts")?,
        );
        let id = id.as_string::<i32>();
        let k = k.as_string::<i32>();
        let v = v.as_primitive::<Float64Type>();
        let step = step.as_primitive::<Int64Type>();
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            if let Some(e) = by_id.get_mut(id.value(i)) {
                e.3.push(json!({"key": k.value(i), "value": to_json(v.value(i)), "step": step.value(i), "timestamp": ts.value(i) / 1000}));
            }
        }
    }
    // Datasets the run used and models it produced (`runs/outputs` rows have the role
    // `output`, see models.rs).
    let mut io: HashMap<String, (Vec<Value>, Vec<Value>)> = HashMap::new();
    for b in inputs {
        let cols = ["run_id", "name", "uri", "digest", "role"]
            .map(|name| column(&b, name))
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let col = |i: usize| cols[i].as_string::<i32>();
        let (id, name, uri, digest, role) = (col(0), col(1), col(2), col(3), col(4));
        fn text(c: &arrow::array::StringArray, i: usize) -> &str {
            if arrow::array::Array::is_null(c, i) {
                ""
            } else {
                c.value(i)
            }
        }
        for i in 0..b.num_rows() {
            let slot = io.entry(id.value(i).to_string()).or_default();
            let (uri, digest, role) = (text(uri, i), text(digest, i), text(role, i));
            if role == crate::models::OUTPUT_ROLE {
                if let Some(model_id) = uri.strip_prefix("models:/") {
                    let step: i64 = digest.parse().unwrap_or(0);
                    slot.1.push(json!({"model_id": model_id, "step": step}));
                }
                continue;
            }
            // MLflow sends a dataset's source as JSON text; runql kept its URI.
            let source = if uri.starts_with('{') {
                uri.to_string()
            } else {
                json!({"uri": uri}).to_string()
            };
            let mut tags = Vec::new();
            if !role.is_empty() {
                tags.push(json!({"key": "mlflow.data.context", "value": role}));
            }
            slot.0.push(json!({
                "tags": tags,
                "dataset": {"name": name.value(i), "digest": digest, "source_type": if uri.starts_with('{') { "code" } else { "external" }, "source": source},
            }));
        }
    }
    Ok(ids
        .iter()
        .filter_map(|id| by_id.remove(id))
        .map(|(r, params, tags, metrics)| {
            let (datasets, models) = io.remove(&r.run_id).unwrap_or_default();
            json!({
                "info": run_info(&r),
                "data": {"metrics": metrics, "params": params, "tags": tags},
                "inputs": {"dataset_inputs": datasets},
                "outputs": {"model_outputs": models},
            })
        })
        .collect())
}

/// `runs/search`: MLflow filter strings, order_by and paging, evaluated by search.rs.
async fn search_runs(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let req: Value = body(&bytes)?;
    let projects = projects_of(&req)?;
    let filter = req.get("filter").and_then(Value::as_str).unwrap_or("");
    let order_by: Vec<String> = req
        .get("order_by")
        .and_then(Value::as_array)
        .map(|o| {
            o.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let deleted = match req
        .get("run_view_type")
        .and_then(Value::as_str)
        .unwrap_or("ACTIVE_ONLY")
    {
        "ACTIVE_ONLY" => Some(false),
        "DELETED_ONLY" => Some(true),
        _ => None,
    };
    let max_results = int(req.get("max_results")).unwrap_or(1000).clamp(1, 50_000) as usize;
    let offset = page_offset(req.get("page_token").and_then(Value::as_str))?;
    flush_all(&s).await?;
    // One snapshot per project, for the search and the page both.
    let store = s.engine.store();
    let mut snaps = Vec::with_capacity(projects.len());
    for project in &projects {
        snaps.push(store.snapshot(project, None).await.map_err(store_error)?);
    }
    let search = crate::search::Request {
        filter,
        order_by: &order_by,
        deleted,
        max_results,
        offset,
    };
    let (ids, more) = crate::search::run_ids(store, &snaps, &search).await?;
    let mut out = json!({"runs": page_json(store, &snaps, &ids).await?});
    if more {
        out["next_page_token"] = json!((offset + max_results).to_string());
    }
    Ok(axum::Json(out).into_response())
}

#[derive(Deserialize)]
struct HistoryQuery {
    run_id: Option<String>,
    run_uuid: Option<String>,
    metric_key: String,
    max_results: Option<usize>,
    page_token: Option<String>,
}

async fn get_history(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    authorize(&s, peer, &headers, Scope::Read)?;
    let run_id = q
        .run_id
        .or(q.run_uuid)
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'run_id'"))?;
    flush_if_open(&s, &run_id).await?;
    let record = read_record(&s, &run_id).await?;
    let scan = Scan::project(&record.project)
        .runs([run_id.as_str()])
        .keys([q.metric_key.as_str()]);
    let mut points: Vec<(i64, i64, f64)> = Vec::new();
    for b in s
        .engine
        .store()
        .scan(Table::Metrics, &scan)
        .await
        .map_err(store_error)?
    {
        use arrow::array::AsArray;
        use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
        let (Some(step), Some(ts), Some(v)) = (
            b.column_by_name("step"),
            b.column_by_name("ts"),
            b.column_by_name("value"),
        ) else {
            continue;
        };
        let (step, ts, v) = (
            step.as_primitive::<Int64Type>(),
            ts.as_primitive::<TimestampMicrosecondType>(),
            v.as_primitive::<Float64Type>(),
        );
        for i in 0..b.num_rows() {
            points.push((step.value(i), ts.value(i), v.value(i)));
        }
    }
    points.sort_by_key(|p| (p.0, p.1));
    let start = page_offset(q.page_token.as_deref())?;
    let limit = q.max_results.unwrap_or(25_000).clamp(1, 25_000);
    let page: Vec<Value> = points
        .iter()
        .skip(start)
        .take(limit)
        .map(|(step, ts, v)| {
            json!({"key": q.metric_key, "value": to_json(*v), "step": step, "timestamp": ts / 1000})
        })
        .collect();
    let mut out = json!({"metrics": page});
    if start + limit < points.len() {
        out["next_page_token"] = json!((start + limit).to_string());
    }
    Ok(axum::Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_non_finite_tokens_become_strings_outside_strings_only() {
        let fixed = quote_non_finite(
            r#"{"a": NaN, "b": -Infinity, "c": "NaN and Infinity", "d": [Infinity]}"#,
        );
        let v: Value = serde_json::from_str(&fixed).unwrap_or_else(|e| panic!("{e}: {fixed}"));
        assert!(number(&v["a"]).is_some_and(f64::is_nan));
        assert_eq!(number(&v["b"]), Some(f64::NEG_INFINITY));
        assert_eq!(v["c"], "NaN and Infinity");
        assert_eq!(number(&v["d"][0]), Some(f64::INFINITY));
    }
}
