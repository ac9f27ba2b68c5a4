//! `runql serve`: the store over HTTP.
//!
//! `GET /health`, `GET /version`, `POST /api/sql` (read-only SQL, answered as JSON,
//! CSV or an Arrow IPC stream by the `Accept` header), behind bearer tokens with read and write
//! scopes (loopback-only without tokens) and a request size limit; `GET /api/events` (live run
//! updates as server-sent events, `events`); and the MLflow tracking REST API (`mlflow`:
//! runs and artifacts, `experiments`, `models` for MLflow 3's logged models, `search` for
//! filter strings).
//!
//! Errors are MLflow's shape, `{"error_code": "...", "message": "..."}`, so one client-side
//! handler serves both APIs.

mod auth;
mod batch_json;
mod compactor;
mod events;
mod experiments;
mod mlflow;
mod models;
mod search;
mod table_json;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runql_query::Engine;

pub use auth::{Access, Denied, Scope};

/// Request bodies larger than this are refused unless configured otherwise (32 MiB).
pub const DEFAULT_MAX_BODY: usize = 32 << 20;

/// How long after a run finishes its project is compacted, unless configured otherwise.
pub const DEFAULT_COMPACT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub access: Access,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Compact a project this long after a run of it finishes through the server (`None`:
    /// never; `runql compact` then does it).
    pub compact_after: Option<std::time::Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access: Access::loopback_only(),
            max_body: DEFAULT_MAX_BODY,
            compact_after: Some(DEFAULT_COMPACT_AFTER),
        }
    }
}

struct AppState {
    engine: Engine,
    access: Access,
    runs: mlflow::Runs,
    models: models::Models,
    compactor: compactor::Compactor,
    compact_after: Option<std::time::Duration>,
    events: events::Events,
}

type Shared = Arc<AppState>;

/// An error answered in MLflow's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error_code": self.code, "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Unauthenticated(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m)
            }
            Denied::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", m),
        }
    }
}

impl From<runql_query::Error> for ApiError {
    fn from(e: runql_query::Error) -> ApiError {
        if e.is_internal() {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                e.to_string(),
            );
        }
        match e {
            runql_query::Error::Store(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                e.to_string(),
            ),
            _ => ApiError::invalid(e.to_string()),
        }
    }
}

fn authorize(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<(), ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(state.access.check(Some(peer), auth, scope)?)
}

/// The router, ready for [`serve`].
pub fn router(engine: Engine, options: Options) -> Router {
    let state = Arc::new(AppState {
        engine,
        access: options.access,
        runs: mlflow::Runs::default(),
        models: models::Models::default(),
        compactor: compactor::Compactor::default(),
        compact_after: options.compact_after,
        events: events::Events::default(),
    });
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        .route("/api/sql", post(sql))
        .route("/api/events", get(events::events))
        .route("/api/artifacts/{run_id}/{*path}", get(ui::artifact))
        .route("/", get(ui::index))
        .route("/ui/{*name}", get(ui::file))
        .merge(mlflow::routes())
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ENDPOINT_NOT_FOUND",
                format!(
                    "runql does not serve {} (docs/mlflow.md lists what it does)",
                    uri.path()
                ),
            )
        })
        .layer(DefaultBodyLimit::max(options.max_body))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The result formats of `/api/sql`, by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Json,
    /// `{"columns": [{"name", "type"}], "rows": [[...]], "truncated"}`: the dashboard's form.
    Table,
    Csv,
    Arrow,
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
const TABLE_JSON: &str = "application/vnd.runql.table+json";

fn answer_for(headers: &HeaderMap) -> Result<Answer, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Answer::Json);
    };
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or("").trim();
        match media {
            "application/json" | "*/*" | "application/*" | "" => return Ok(Answer::Json),
            "text/csv" | "text/*" => return Ok(Answer::Csv),
            ARROW_STREAM => return Ok(Answer::Arrow),
            TABLE_JSON => return Ok(Answer::Table),
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "INVALID_PARAMETER_VALUE",
        format!("cannot answer {accept:?}: accept application/json, text/csv or {ARROW_STREAM}"),
    ))
}

/// `POST /api/sql`: the body is `{"sql": "..."}` or the SQL as plain text.
async fn sql(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, peer, &headers, Scope::Read)?;
    let answer = answer_for(&headers)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let text = if is_json {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?;
        v.get("sql")
            .and_then(|s| s.as_str())
            .ok_or_else(|| ApiError::invalid("the JSON body needs a string field \"sql\""))?
            .to_string()
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::invalid("the SQL is not UTF-8"))?
    };
    if text.trim().is_empty() {
        return Err(ApiError::invalid("no SQL given"));
    }
    let df = match state.engine.sql(&text).await {
        // A plugin may have declared its tables after this server opened the store.
        Err(e) if e.to_string().contains("not found") => {
            state.engine.refresh_tables().await?;
            state.engine.sql(&text).await?
        }
        r => r?,
    };
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(runql_query::Error::from)?;
    let internal = |e: arrow::error::ArrowError| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            e.to_string(),
        )
    };
    let mut buf = Vec::new();
    let content_type = match answer {
        Answer::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut buf);
            for b in &batches {
                w.write(b).map_err(internal)?;
            }
            w.finish().map_err(internal)?;
            drop(w);
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
            "application/json"
        }
        Answer::Table => {
            let max_rows = headers
                .get("x-runql-max-rows")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(table_json::MAX_ROWS);
            buf = table_json::encode(&schema, &batches, max_rows).map_err(internal)?;
            TABLE_JSON
        }
        Answer::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            if batches.is_empty() {
                w.write(&arrow::array::RecordBatch::new_empty(schema.clone()))
                    .map_err(internal)?;
            }
            for b in &batches {
                w.write(b).map_err(internal)?;
            }
            drop(w);
            "text/csv; charset=utf-8"
        }
        Answer::Arrow => {
            let mut w =
                arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).map_err(internal)?;
            for b in &batches {
                w.write(b).map_err(internal)?;
            }
            w.finish().map_err(internal)?;
            drop(w);
            ARROW_STREAM
        }
    };
    let mut response = buf.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
