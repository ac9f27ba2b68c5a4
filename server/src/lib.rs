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
//!
//! ```text
//! lib.rs         Options, router(), serve(): the composition of everything below
//! error.rs       ApiError: the server's one error type, and how store/query errors map to it
//! request.rs     the request layer: Read/Write (authorisation), MlflowJson/MlflowQuery bodies
//! auth.rs        Access: tokens and scopes, loopback-only without tokens
//! state.rs       AppState, the router's state, one guarded part per concern
//! sql.rs         POST /api/sql
//! table_json.rs  the dashboard's answer form of /api/sql
//! events.rs      GET /api/events (server-sent events)
//! ui.rs          the dashboard's files and /api/artifacts
//! compactor.rs   compaction a little after runs end
//! mlflow/        the MLflow tracking API (its own table of modules)
//! ```

mod auth;
mod compactor;
mod error;
mod events;
mod mlflow;
mod request;
mod sql;
mod state;
mod table_json;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use runql_query::Engine;

pub use auth::{Access, Denied, Scope};
pub use error::ApiError;

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

/// The router, ready for [`serve`].
pub fn router(engine: Engine, options: Options) -> Router {
    let store = engine.store().clone();
    let compactor = compactor::Compactor::new(store.clone(), options.compact_after);
    let state = state::AppState {
        gate: Arc::new(request::Gate {
            access: options.access,
        }),
        mlflow: Arc::new(mlflow::Mlflow::new(engine.clone(), compactor)),
        events: Arc::new(events::Events::new(store)),
        engine,
    };
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        .route("/api/sql", post(sql::sql))
        .route("/api/events", get(events::events))
        .route("/api/artifacts/{run_id}/{*path}", get(ui::artifact))
        .route("/", get(ui::index))
        .route("/ui/{*name}", get(ui::file))
        .merge(mlflow::routes())
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::NoEndpoint(format!(
                "runql does not serve {} (docs/mlflow.md lists what it does)",
                uri.path()
            ))
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
