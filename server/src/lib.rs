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
//! origin.rs      browser safety: cross-site requests and foreign Host names refused
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
mod flight;
mod mlflow;
mod origin;
mod pg;
mod request;
mod sql;
mod state;
mod table_json;
mod ui;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use runql_core::Wal;
use runql_query::Engine;

pub use auth::{Access, Denied, Scope};
pub use error::ApiError;
pub use flight::{FlightOptions, FlightSqlEndpoint};
pub use pg::{PgEndpoint, PgOptions};
pub use sql::SqlLimits;

/// Request bodies larger than this are refused unless configured otherwise (32 MiB).
pub const DEFAULT_MAX_BODY: usize = 32 << 20;

/// How long after a run finishes its project is compacted, unless configured otherwise.
pub const DEFAULT_COMPACT_AFTER: Duration = Duration::from_secs(5);

/// How long a client logging through the server may be silent before its run reads
/// `crashed`, unless configured otherwise (it reads `running` again when the client logs).
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(600);

/// How long a stopping server lets requests in flight finish, then makes what it holds
/// durable, in all.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub access: Access,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Compact a project this long after a run of it finishes through the server (`None`:
    /// never; `runql compact` then does it).
    pub compact_after: Option<Duration>,
    /// Where the write-ahead log of acknowledged writes lives (`None`: beside the store,
    /// `<store>/wal/`, for a local store; `$XDG_STATE_HOME/runql/wal/<store hash>/` —
    /// `~/.local/state/…` — for an object store).
    pub wal_dir: Option<PathBuf>,
    /// How long a client may be silent before its run reads `crashed`.
    pub silent_after: Duration,
    /// The limits of every `/api/sql` query.
    pub sql: SqlLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access: Access::loopback_only(),
            max_body: DEFAULT_MAX_BODY,
            compact_after: Some(DEFAULT_COMPACT_AFTER),
            wal_dir: None,
            silent_after: DEFAULT_SILENT_AFTER,
            sql: SqlLimits::default(),
        }
    }
}

/// Where the write-ahead log of a server over `store` lives by default.
pub fn default_wal_dir(store: &runql_core::Store) -> PathBuf {
    if let Some(root) = store.local_root() {
        return root.join("wal");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    let hash = blake3::hash(store.url().as_bytes()).to_hex();
    state.join("runql").join("wal").join(&hash[..16])
}

/// A server ready to [`serve`]: its router, and what it holds (runs being logged, its
/// write-ahead log) until [`Server::close`].
#[derive(Debug)]
pub struct Server {
    state: state::AppState,
    router: Router,
    wal_dir: PathBuf,
}

/// Where a server that stopped cleanly leaves the digests of the requests it applied last, for
/// the next one (a client may retry, against it, a request whose answer the stop cut off).
const RECENT_REQUESTS: &str = "recent-requests";

impl Server {
    /// Opens the server's write-ahead log, first recovering what a server that died left in
    /// logs of the same folder (nothing it acknowledged is lost), and builds the router.
    pub async fn new(engine: Engine, options: Options) -> Result<Server, ApiError> {
        let store = engine.store().clone();
        let wal_dir = options
            .wal_dir
            .clone()
            .unwrap_or_else(|| default_wal_dir(&store));
        let (wal, dead) = Wal::open(&wal_dir)?;
        let recovered = wal.adopt(&store, &dead).await?;
        if recovered.files > 0 {
            tracing::info!(
                logs = dead.len(),
                records = recovered.records,
                segments = recovered.segments,
                "recovered what a server that stopped had acknowledged"
            );
        }
        let compactor = compactor::Compactor::new(store.clone(), options.compact_after);
        let mlflow = Arc::new(mlflow::Mlflow::new(
            engine.clone(),
            compactor,
            wal,
            options.silent_after,
        ));
        // What the last server to stop cleanly had applied, then what the dead ones had.
        if let Ok(bytes) = std::fs::read(wal_dir.join(RECENT_REQUESTS)) {
            for d in bytes.chunks_exact(32) {
                mlflow.runs.remember(d.try_into().unwrap_or([0; 32]));
            }
        }
        for ack in recovered.acks {
            mlflow.runs.remember(ack);
        }
        mlflow::spawn_idle_release(&mlflow);
        let sql = sql::Sql::new(engine, options.sql)
            .map_err(|e| ApiError::internal(format!("cannot start the query threads: {e}")))?;
        let state = state::AppState {
            gate: Arc::new(request::Gate {
                access: options.access,
            }),
            mlflow,
            events: Arc::new(events::Events::new(store)),
            sql: Arc::new(sql),
        };
        let router = router(state.clone(), options.max_body);
        Ok(Server {
            state,
            router,
            wal_dir,
        })
    }

    /// Starts the PostgreSQL wire endpoint beside the HTTP one (see the `pg` module): same
    /// tokens, read-only, a session per connection, the SQL limits of `/api/sql`. It stops
    /// accepting when the returned endpoint is dropped.
    pub async fn serve_postgres(&self, options: &PgOptions) -> std::io::Result<PgEndpoint> {
        pg::start(&self.state, options).await
    }

    /// Starts the Arrow Flight SQL endpoint beside the HTTP one (see the `flight` module): same
    /// tokens, read-only, a session per statement, the SQL limits of `/api/sql`. It stops
    /// serving when the returned endpoint is dropped.
    pub async fn serve_flight_sql(
        &self,
        options: &FlightOptions,
    ) -> std::io::Result<FlightSqlEndpoint> {
        flight::start(&self.state, options).await
    }

    /// The router (clone it to serve it several times).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Makes everything the server holds durable and lets go of it: every run it is logging
    /// is written, synced and released — still `running`, as its client left it — and the
    /// write-ahead log is closed (and removed once nothing in it is needed).
    pub async fn close(self) -> Result<(), ApiError> {
        self.state.mlflow.close().await?;
        // The digests outlive the log: a retry of a request this stop cut off is recognised by
        // the next server. Written whole (a temporary file renamed), kept until the next clean
        // stop replaces it, so a server killed in between still finds them.
        let digests: Vec<u8> = self.state.mlflow.runs.recent().concat();
        let tmp = self.wal_dir.join(format!("{RECENT_REQUESTS}.tmp"));
        let written = std::fs::create_dir_all(&self.wal_dir)
            .and_then(|()| std::fs::write(&tmp, &digests))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, self.wal_dir.join(RECENT_REQUESTS)));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot keep the digests of recent requests");
        }
        Ok(())
    }
}

/// `GET /version`: the MLflow release whose tracking API the server speaks, as `mlflow server`
/// answers its own (the `mlflow` client turns features on by it: its live span export needs
/// 3.4), and runql's own version in the `x-runql-version` header.
async fn version() -> impl IntoResponse {
    (
        [(
            axum::http::HeaderName::from_static("x-runql-version"),
            env!("CARGO_PKG_VERSION"),
        )],
        mlflow::MLFLOW_VERSION,
    )
}

/// Every route of the server.
fn router(state: state::AppState, max_body: usize) -> Router {
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/version", get(version))
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
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(catch_panic))
        .with_state(state)
}

/// A handler that panics answers 500 with an error id (the same id is in the server's log,
/// with the panic's message) instead of dropping the connection; the server goes on.
async fn catch_panic(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures::FutureExt;
    let route = format!("{} {}", request.method(), request.uri().path());
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let id = uuid::Uuid::now_v7().simple().to_string();
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            tracing::error!(error_id = %id, %route, panic = %what, "a request handler panicked");
            eprintln!("runql: error {id}: {route} panicked: {what}");
            axum::response::IntoResponse::into_response(ApiError::internal(format!(
                "runql failed on this request (error id {id}; the server's log has the \
                 details): please report it with the request that caused it"
            )))
        }
    }
}

/// Serves `server` on `listener` until `shutdown` completes; then lets the requests in
/// flight finish and closes the server (see [`Server::close`]), within
/// [`SHUTDOWN_DEADLINE`] in all. What is not durable in the store by then is in the
/// write-ahead log, which the next server over the store recovers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    server: Server,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let serving = axum::serve(
        listener,
        server
            .router()
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal)
    .into_future();
    tokio::pin!(serving);
    // Until the signal: serve. After it: requests in flight get most of the deadline.
    let served = tokio::select! {
        r = &mut serving => Some(r),
        _ = stopped => None,
    };
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
    let result = match served {
        Some(r) => r,
        None => {
            let drain = SHUTDOWN_DEADLINE.mul_f32(0.6);
            match tokio::time::timeout(drain, &mut serving).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("requests still in flight at shutdown were cut off");
                    Ok(())
                }
            }
        }
    };
    match tokio::time::timeout_at(deadline, server.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "closing the server"),
        Err(_) => tracing::warn!(
            "the store was too slow at shutdown: what was not written is in the write-ahead log"
        ),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> &'static str {
        let n: i64 = std::hint::black_box(i64::MIN);
        if n < 0 {
            panic!("boom at the end of a range");
        }
        "unreachable"
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_an_error_id() {
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(catch_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, app).into_future());
        let res = reqwest::get(format!("{base}/boom")).await.unwrap();
        assert_eq!(res.status().as_u16(), 500);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], "INTERNAL_ERROR", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("error id "),
            "{body}"
        );
        // The server goes on.
        let res = reqwest::get(format!("{base}/fine")).await.unwrap();
        assert_eq!(res.text().await.unwrap(), "fine");
    }
}
