//! The MLflow tracking REST API (`/api/2.0/mlflow/…` and its `/ajax-api/…` twin) and the
//! `mlflow-artifacts` proxy, so that the official `mlflow` client logs into a runql store
//! unchanged.
//!
//! Mapping: an MLflow experiment is the runql project of the same name, and its experiment id
//! is that name (`"0"` is MLflow's Default experiment: the project `Default`). MLflow run ids
//! are runql run ids.
//!
//! ```text
//! mod.rs          the route table (this file): every endpoint once, under both prefixes
//! wire.rs         MLflow's wire forms (numbers, key/values, statuses, ids, pages): a leaf
//! state.rs        what the routes share: run handles held, request digests, model index
//! held.rs         the runs the server writes through (open, reopen, end, flush)
//! runs.rs         create, update, get, delete/restore, search
//! history.rs      metric histories: one run paged, many runs in bulk, sampled steps
//! logging.rs      log-batch, log-metric, log-parameter, set-tag, delete-tag, log-inputs
//! page.rs         MLflow `Run` objects rendered from store snapshots
//! artifacts.rs    the artifact proxy, and the tracking API's artifact listing, download
//!                 and upload (runs' artifacts, logged models' files)
//! experiments.rs  experiments
//! models.rs       MLflow 3 logged models
//! traces.rs       MLflow 3 traces: their info and span data, rows of mlflow.traces / spans
//! trace_edits.rs  a trace's tags, assessments and deletes after it was logged
//! otlp.rs         OTLP/HTTP span export (`/v1/traces`, protobuf or JSON) into the same tables
//! search.rs       filter strings and order_by
//! batch_json.rs   the one-pass parser of log-batch bodies
//! ```

mod artifacts;
mod batch_json;
mod experiments;
mod held;
mod history;
mod logging;
mod models;
mod names;
mod otlp;
mod page;
mod runs;
mod search;
pub(crate) mod state;
mod trace_edits;
mod traces;
pub(crate) mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

pub(crate) use artifacts::bytes_of as artifact_bytes;

/// The MLflow release whose tracking API runql serves, answered by `GET /version` as
/// `mlflow server` answers its own: clients gate features on it (the `mlflow` client exports
/// spans live only to servers of 3.4 or newer). The oldest release with everything runql
/// serves, so that no client takes a path that needs more.
pub(crate) const MLFLOW_VERSION: &str = "3.4.0";
pub(crate) use held::flush_all;
pub(crate) use state::{Mlflow, State};

/// Releases, now and then, the runs whose clients have been silent past the server's window:
/// their handles (a writer thread each) go; the runs read `crashed` until their clients log
/// again, when they are reopened.
pub(crate) fn spawn_idle_release(s: &State) {
    let weak = Arc::downgrade(s);
    let every = (s.silent_after / 2).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(60),
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(s) = weak.upgrade() else { return };
            for run in s.runs.take_idle(s.silent_after) {
                let id = run.id();
                match tokio::task::spawn_blocking(move || state::release(run)).await {
                    Ok(Ok(())) => {
                        tracing::info!(run_id = %id, "released a run whose client went silent")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(run_id = %id, error = %e, "could not release a silent run")
                    }
                    Err(e) => {
                        tracing::warn!(run_id = %id, error = %e, "could not release a silent run")
                    }
                }
            }
        }
    });
}

use crate::request::{Gate, Guarded};

/// The endpoints below `/api/2.0/mlflow` (and `/ajax-api/2.0/mlflow`).
fn api<S>() -> Endpoints<S>
where
    S: Clone + Send + Sync + 'static,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<State>: FromRef<S>,
{
    Endpoints::default()
        .at(
            Method::POST,
            "/experiments/create",
            experiments::create_experiment,
        )
        .at(
            Method::GET,
            "/experiments/get-by-name",
            experiments::get_experiment_by_name,
        )
        .at(Method::GET, "/experiments/get", experiments::get_experiment)
        .at(
            Method::POST,
            "/experiments/search",
            experiments::search_experiments,
        )
        .at(
            Method::GET,
            "/experiments/search",
            experiments::search_experiments,
        )
        .at(
            Method::POST,
            "/experiments/delete",
            experiments::delete_experiment,
        )
        .at(
            Method::POST,
            "/experiments/restore",
            experiments::restore_experiment,
        )
        .at(
            Method::POST,
            "/experiments/update",
            experiments::update_experiment,
        )
        .at(
            Method::POST,
            "/experiments/set-experiment-tag",
            experiments::set_experiment_tag,
        )
        .at(
            Method::POST,
            "/experiments/delete-experiment-tag",
            experiments::delete_experiment_tag,
        )
        .at(Method::POST, "/runs/create", runs::create_run)
        .at(Method::POST, "/runs/update", runs::update_run)
        .at(Method::GET, "/runs/get", runs::get_run)
        .at(Method::POST, "/runs/search", runs::search_runs)
        .at(Method::POST, "/runs/delete", runs::delete_run)
        .at(Method::POST, "/runs/restore", runs::restore_run)
        .at(Method::POST, "/runs/log-batch", logging::log_batch)
        .at(Method::POST, "/runs/log-metric", logging::log_metric)
        .at(Method::POST, "/runs/log-parameter", logging::log_param)
        .at(Method::POST, "/runs/set-tag", logging::set_tag)
        .at(Method::POST, "/runs/delete-tag", logging::delete_tag)
        .at(
            Method::PATCH,
            "/traces/{trace_id}/tags",
            trace_edits::set_tag,
        )
        .at(
            Method::DELETE,
            "/traces/{trace_id}/tags",
            trace_edits::delete_tag,
        )
        .at(
            Method::POST,
            "/traces/delete-traces",
            trace_edits::delete_traces,
        )
        .at(Method::POST, "/runs/log-inputs", logging::log_inputs)
        .at(Method::POST, "/runs/outputs", models::log_outputs)
        .at(Method::POST, "/runs/log-model", models::log_model)
        .at(Method::GET, "/metrics/get-history", history::get_history)
        .at(
            Method::GET,
            "/metrics/get-history-bulk-interval",
            history::get_history_bulk_interval,
        )
        .at(Method::GET, "/artifacts/list", artifacts::tracking_list)
        .at(Method::POST, "/logged-models", models::create)
        .at(Method::POST, "/logged-models/search", models::search)
        .at(Method::GET, "/logged-models/{model_id}", models::get_model)
        .at(Method::PATCH, "/logged-models/{model_id}", models::finalize)
        .at(
            Method::DELETE,
            "/logged-models/{model_id}",
            models::delete_model,
        )
        .at(
            Method::PATCH,
            "/logged-models/{model_id}/tags",
            models::set_tags,
        )
        .at(
            Method::DELETE,
            "/logged-models/{model_id}/tags/{key}",
            models::delete_tag,
        )
        .at(
            Method::POST,
            "/logged-models/{model_id}/params",
            models::log_params,
        )
        .at(
            Method::GET,
            "/logged-models/{model_id}/artifacts/directories",
            artifacts::model_directories,
        )
}

/// The endpoints MLflow serves below `/ajax-api/2.0/mlflow` only (its UI's).
fn ajax_api<S>() -> Endpoints<S>
where
    S: Clone + Send + Sync + 'static,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<State>: FromRef<S>,
{
    Endpoints::default()
        .at(
            Method::GET,
            "/metrics/get-history-bulk",
            history::get_history_bulk,
        )
        .at(
            Method::POST,
            "/experiments/search-datasets",
            experiments::search_datasets,
        )
        .at(Method::POST, "/upload-artifact", artifacts::ui_upload)
        .at(
            Method::GET,
            "/logged-models/{model_id}/artifacts/files",
            artifacts::model_file,
        )
}

/// The endpoints below `/api/3.0/mlflow` (and `/ajax-api/3.0/mlflow`): MLflow 3's traces.
fn api_v3<S>() -> Endpoints<S>
where
    S: Clone + Send + Sync + 'static,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<State>: FromRef<S>,
{
    Endpoints::default()
        .at(Method::POST, "/traces", traces::start_trace)
        .at(Method::POST, "/traces/search", traces::search_traces)
        .at(Method::GET, "/traces/{trace_id}", traces::get_trace_info)
        .at(
            Method::POST,
            "/traces/delete-traces",
            trace_edits::delete_traces,
        )
        .at(
            Method::POST,
            "/traces/{trace_id}/assessments",
            trace_edits::create,
        )
        .at(
            Method::GET,
            "/traces/{trace_id}/assessments/{assessment_id}",
            trace_edits::get,
        )
        .at(
            Method::PATCH,
            "/traces/{trace_id}/assessments/{assessment_id}",
            trace_edits::update,
        )
        .at(
            Method::DELETE,
            "/traces/{trace_id}/assessments/{assessment_id}",
            trace_edits::delete,
        )
}

/// The endpoints MLflow serves at the root of the server.
fn root<S>() -> Endpoints<S>
where
    S: Clone + Send + Sync + 'static,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<State>: FromRef<S>,
{
    Endpoints::default()
        .at(Method::GET, "/get-artifact", artifacts::get_artifact)
        .at(Method::POST, "/v1/traces", otlp::export)
}

/// The endpoints below `/api/2.0/mlflow-artifacts` (and its `/ajax-api` twin).
fn artifact_api<S>() -> Endpoints<S>
where
    S: Clone + Send + Sync + 'static,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<State>: FromRef<S>,
{
    Endpoints::default()
        .at(Method::GET, "/artifacts", artifacts::list)
        .at(Method::GET, "/artifacts/{*path}", artifacts::download)
        .at(Method::PUT, "/artifacts/{*path}", artifacts::upload)
}

/// The prefixes the two tables are served under.
const API_PREFIXES: [&str; 2] = ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"];
const AJAX_PREFIX: &str = "/ajax-api/2.0/mlflow";
const V3_PREFIXES: [&str; 2] = ["/api/3.0/mlflow", "/ajax-api/3.0/mlflow"];
const ARTIFACT_PREFIXES: [&str; 2] = [
    "/api/2.0/mlflow-artifacts",
    "/ajax-api/2.0/mlflow-artifacts",
];

/// The MLflow routes, under both prefixes.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<State>: FromRef<S>,
{
    let api = api::<S>().router();
    let artifacts = artifact_api::<S>()
        .router()
        .layer(axum::extract::DefaultBodyLimit::max(
            artifacts::MAX_ARTIFACT,
        ));
    let mut router = Router::new();
    for prefix in API_PREFIXES {
        router = router.nest(prefix, api.clone());
    }
    for prefix in ARTIFACT_PREFIXES {
        router = router.nest(prefix, artifacts.clone());
    }
    let v3 = api_v3::<S>().router();
    for prefix in V3_PREFIXES {
        router = router.nest(prefix, v3.clone());
    }
    router.nest(AJAX_PREFIX, ajax_api::<S>().router()).merge(
        root::<S>()
            .router()
            .layer(axum::extract::DefaultBodyLimit::max(otlp::MAX_EXPORT)),
    )
}

/// Every MLflow endpoint served, as `(method, full path)`, in table order (docs/mlflow.md's
/// table is checked against it).
#[cfg(test)]
pub(crate) fn endpoints<S>() -> Vec<(Method, String)>
where
    S: Clone + Send + Sync + 'static,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<State>: FromRef<S>,
{
    let mut out = Vec::new();
    for (prefixes, table) in [
        (API_PREFIXES.to_vec(), api::<S>()),
        (ARTIFACT_PREFIXES.to_vec(), artifact_api::<S>()),
        (vec![AJAX_PREFIX], ajax_api::<S>()),
        (V3_PREFIXES.to_vec(), api_v3::<S>()),
        (vec![""], root::<S>()),
    ] {
        for prefix in prefixes {
            for (method, path) in table.list() {
                out.push((method.clone(), format!("{prefix}{path}")));
            }
        }
    }
    out
}

/// A route table: each path once, with the handlers of its methods.
struct Endpoints<S> {
    routes: Vec<(&'static str, Vec<Method>, MethodRouter<S>)>,
}

impl<S> Default for Endpoints<S> {
    fn default() -> Self {
        Endpoints { routes: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Endpoints<S> {
    /// Adds `handler` for `method` at `path`.
    fn at<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| unreachable!("the table uses standard methods only"));
        let route = on(filter, handler);
        match self.routes.iter_mut().find(|(p, _, _)| *p == path) {
            Some((_, methods, existing)) => {
                methods.push(method);
                let merged = std::mem::take(existing).merge(route);
                *existing = merged;
            }
            None => self.routes.push((path, vec![method], route)),
        }
        self
    }

    #[cfg(test)]
    fn list(&self) -> Vec<(&Method, &'static str)> {
        self.routes
            .iter()
            .flat_map(|(path, methods, _)| methods.iter().map(move |m| (m, *path)))
            .collect()
    }

    fn router(self) -> Router<S> {
        self.routes
            .into_iter()
            .fold(Router::new(), |r, (path, _, route)| r.route(path, route))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/mlflow.md's endpoint table lists exactly what the router serves under
    /// `/api/…` (each also under `/ajax-api/…`).
    #[test]
    fn the_docs_list_every_endpoint_served() {
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let docs = std::fs::read_to_string(format!("{dir}/../docs/mlflow.md"))
            .unwrap_or_else(|e| panic!("docs/mlflow.md: {e}"));
        let listed: std::collections::BTreeSet<(String, String)> = docs
            .lines()
            .filter(|l| l.ends_with("| served |"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
                Some((cells.get(1)?.to_string(), cells.get(2)?.to_string()))
            })
            .collect();
        let all: Vec<(String, String)> = endpoints::<crate::state::AppState>()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p))
            .collect();
        // An `/ajax-api/…` route is listed by its `/api/…` twin when it has one.
        let served: std::collections::BTreeSet<(String, String)> = all
            .iter()
            .filter(|(m, p)| match p.strip_prefix("/ajax-api/") {
                Some(rest) => !all.contains(&(m.clone(), format!("/api/{rest}"))),
                None => true,
            })
            .cloned()
            .collect();
        let missing: Vec<_> = served.difference(&listed).collect();
        let stale: Vec<_> = listed.difference(&served).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/mlflow.md's endpoint table is out of date: not listed {missing:?}; listed but not served {stale:?}"
        );
        assert!(
            endpoints::<crate::state::AppState>()
                .iter()
                .any(|(_, p)| p == "/ajax-api/2.0/mlflow/runs/log-batch")
        );
    }
}
