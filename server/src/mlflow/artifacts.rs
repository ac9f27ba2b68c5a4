//! The `mlflow-artifacts` proxy: uploads, downloads and listings of a run's artifacts
//! (content-addressed blobs, rows of the run's `artifacts` table) and of a logged model's files.
//! Paths are `<experiment>/<run>/artifacts/<path>` or
//! `<experiment>/models/<model>/artifacts/<path>` (MLflow 3's logged models).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use runql_core::store::{i64_column, string_column};
use runql_core::{Scan, Table};
use serde::Deserialize;
use serde_json::{Value, json};

use super::held::{Held, flush_if_open, hold, read_record};
use super::state::{Mlflow, State};
use super::wire;
use crate::error::ApiError;
use crate::request::{MlflowQuery, Read, Write};

/// Largest artifact accepted in one upload (1 GiB; bodies are held in memory for now).
pub(crate) const MAX_ARTIFACT: usize = 1 << 30;

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

fn location(path: &str) -> Result<Location, ApiError> {
    let mut parts = path.trim_start_matches('/').splitn(4, '/');
    let (exp, run, marker, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
    let normalize = |rest: Option<&str>| -> Result<String, ApiError> {
        match rest.unwrap_or("") {
            "" => Ok(String::new()),
            rest => Ok(runql_core::model::normalize_artifact_path(rest)?),
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

pub(crate) async fn upload(
    Write(s): Write<State>,
    Path(path): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let (run_id, rel) = match location(&path)? {
        Location::Model {
            experiment_id,
            model_id,
            rel,
        } => {
            if rel.is_empty() {
                return Err(ApiError::invalid("an artifact needs a file name"));
            }
            super::models::put_file(&s, &experiment_id, &model_id, &rel, bytes).await?;
            return Ok(wire::ok());
        }
        Location::Run { run_id, rel } => (run_id, rel),
    };
    if rel.is_empty() {
        return Err(ApiError::invalid("an artifact needs a file name"));
    }
    // Blob writes block (hashing, fsync): off the async threads.
    let run = hold(&s, &run_id).await?;
    let (run, result) = tokio::task::spawn_blocking(move || {
        let r = run.log_artifact_bytes(&rel, bytes).map(|_| ());
        (run, r)
    })
    .await?;
    // The blob is synced before log_artifact_bytes returns; its row is in the log.
    let durable = match (&result, &run) {
        (Ok(()), Held::Open(r)) => r.wait_durable().await.map_err(ApiError::from),
        _ => Ok(()),
    };
    let closed = run.close().await;
    result?;
    durable?;
    closed?;
    Ok(wire::ok())
}

/// The artifacts rows of a run (path, digest, size), the server's writes flushed first; a
/// path logged twice is its last upload.
pub(crate) async fn of_run(
    s: &Mlflow,
    run_id: &str,
) -> Result<Vec<(String, String, u64)>, ApiError> {
    flush_if_open(s, run_id).await?;
    let record = read_record(s, run_id).await?;
    let scan = Scan::project(&record.project).runs([run_id]);
    let mut out = Vec::new();
    for b in s.store().scan(Table::Artifacts, &scan).await? {
        let (p, d, n) = (
            string_column(&b, "path")?,
            string_column(&b, "digest")?,
            i64_column(&b, "size")?,
        );
        for i in 0..b.num_rows() {
            out.push((
                p.value(i).to_string(),
                d.value(i).to_string(),
                n.value(i).max(0) as u64,
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.reverse();
    out.retain(|(p, _, _)| seen.insert(p.clone()));
    out.reverse();
    Ok(out)
}

pub(crate) async fn download(
    Read(s): Read<State>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = match location(&path)? {
        Location::Model {
            experiment_id,
            model_id,
            rel,
        } => super::models::get_file(&s, &experiment_id, &model_id, &rel).await?,
        Location::Run { run_id, rel } => bytes_of(&s, &run_id, &rel).await?,
    };
    Ok(octet_stream(bytes))
}

/// The content of a run's artifact at `rel` (its latest upload).
pub(crate) async fn bytes_of(s: &Mlflow, run_id: &str, rel: &str) -> Result<Bytes, ApiError> {
    let (_, digest, _) = of_run(s, run_id)
        .await?
        .into_iter()
        .find(|(p, _, _)| p == rel)
        .ok_or_else(|| ApiError::not_found(format!("No artifact {rel:?} in run {run_id}")))?;
    Ok(s.store().get_blob(&digest).await?)
}

fn octet_stream(bytes: Bytes) -> Response {
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    path: Option<String>,
}

pub(crate) async fn list(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (run_id, dir) = match location(q.path.as_deref().unwrap_or(""))? {
        Location::Model {
            experiment_id,
            model_id,
            rel,
        } => {
            let entries = super::models::list_files(&s, &experiment_id, &model_id, &rel).await?;
            return Ok(files_json(entries));
        }
        Location::Run { run_id, rel } => (run_id, rel),
    };
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for (path, _, size) in of_run(&s, &run_id).await? {
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
