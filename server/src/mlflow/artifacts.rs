//! The `mlflow-artifacts` proxy: uploads, downloads and listings of a run's artifacts
//! (content-addressed blobs, rows of the run's `artifacts` table) and of a logged model's files.
//! Paths are `<experiment>/<run>/artifacts/<path>`,
//! `<experiment>/models/<model>/artifacts/<path>` (MLflow 3's logged models) or
//! `<experiment>/traces/<trace>/artifacts/traces.json` (MLflow 3's traces).

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
    /// `<experiment>/traces/<trace>/artifacts/<path>` (MLflow 3's traces: `traces.json`).
    Trace {
        experiment_id: String,
        trace_id: String,
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
        (Some(exp), Some("traces"), Some(trace_id)) if !trace_id.is_empty() => {
            let mut inner = rest.unwrap_or("").splitn(2, '/');
            if inner.next() != Some("artifacts") {
                return Err(ApiError::invalid(format!(
                    "artifact path {path:?} is not <experiment>/traces/<trace>/artifacts/<path>"
                )));
            }
            Ok(Location::Trace {
                experiment_id: exp.to_string(),
                trace_id: trace_id.to_string(),
                rel: normalize(inner.next())?,
            })
        }
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
        Location::Trace {
            experiment_id,
            trace_id,
            rel,
        } => {
            super::traces::put_data(&s, &experiment_id, &trace_id, &rel, bytes).await?;
            return Ok(wire::ok());
        }
        Location::Run { run_id, rel } => (run_id, rel),
    };
    if rel.is_empty() {
        return Err(ApiError::invalid("an artifact needs a file name"));
    }
    put_run_artifact(&s, &run_id, rel, bytes).await?;
    Ok(wire::ok())
}

/// Stores `bytes` as the run's artifact `rel`, durable when this returns.
async fn put_run_artifact(
    s: &Mlflow,
    run_id: &str,
    rel: String,
    bytes: Bytes,
) -> Result<(), ApiError> {
    // Blob writes block (hashing, fsync): off the async threads.
    let run = hold(s, run_id).await?;
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
    closed
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
        Location::Trace {
            experiment_id,
            trace_id,
            rel,
        } => super::traces::get_data(&s, &experiment_id, &trace_id, &rel).await?,
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
        Location::Trace {
            experiment_id,
            trace_id,
            rel,
        } => {
            let entries = super::traces::list_data(&s, &experiment_id, &trace_id, &rel).await?;
            return Ok(files_json(entries));
        }
        Location::Run { run_id, rel } => (run_id, rel),
    };
    Ok(files_json(entries_below(of_run(&s, &run_id).await?, &dir)))
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

/// A client's artifact path checked as MLflow's `validate_path_is_safe` checks it, then
/// normalized (`a//b/` is `a/b`, the root is empty): 400 `Invalid path` for a `#`, a
/// backslash, a `..` part or an absolute path, also once percent-decoded (`%2e%2e`).
pub(crate) fn safe_path(path: &str) -> Result<String, ApiError> {
    let mut decoded = path.to_string();
    loop {
        let next = percent_decoded(&decoded);
        if next == decoded {
            break;
        }
        decoded = next;
    }
    for p in [path, decoded.as_str()] {
        let absolute = p.starts_with('/') || p.as_bytes().get(1) == Some(&b':');
        if p.contains(['#', '\\', '\0']) || absolute || p.split('/').any(|part| part == "..") {
            return Err(ApiError::invalid("Invalid path"));
        }
    }
    Ok(path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/"))
}

/// `s` with its `%XX` escapes decoded (bytes that do not form UTF-8 are kept as they were).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// The artifact root MLflow names for a run (its `info.artifact_uri`).
pub(crate) fn run_root(experiment_id: &str, run_id: &str) -> String {
    format!("mlflow-artifacts:/{experiment_id}/{run_id}/artifacts")
}

/// The entries directly below `dir` among a run's artifact paths: (name, size, or `None` for
/// a directory), by name.
fn entries_below(paths: Vec<(String, String, u64)>, dir: &str) -> BTreeMap<String, Option<u64>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries = BTreeMap::new();
    for (path, _, size) in paths {
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
    entries
}

/// `artifacts/list` (the tracking API's listing, which `MlflowClient.list_artifacts` of a
/// run with a non-proxied root and MLflow's UI use).
#[derive(Debug, Deserialize)]
pub(crate) struct TrackingListQuery {
    run_id: Option<String>,
    run_uuid: Option<String>,
    path: Option<String>,
}

/// `{root_uri, files}`: the entries below `path`, each named by its path in the run (not by
/// its name in the directory, as the proxy's listing names them). A file or a missing path
/// lists nothing.
pub(crate) async fn tracking_list(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<TrackingListQuery>,
) -> Result<Response, ApiError> {
    let dir = match q.path.as_deref() {
        Some(p) => safe_path(p)?,
        None => String::new(),
    };
    let run_id = wire::run_id_of(q.run_id, q.run_uuid)?;
    let record = read_record(&s, &run_id).await?;
    let entries = entries_below(of_run(&s, &run_id).await?, &dir);
    let files = listing_json(entries, &dir);
    let mut out = json!({"root_uri": run_root(&wire::experiment_id_of(&record.project), &run_id)});
    if !files.is_empty() {
        out["files"] = Value::Array(files);
    }
    Ok(axum::Json(out).into_response())
}

/// A listing's entries as MLflow's `FileInfo`s, each path joined to `dir`.
fn listing_json(entries: impl IntoIterator<Item = (String, Option<u64>)>, dir: &str) -> Vec<Value> {
    entries
        .into_iter()
        .map(|(name, size)| {
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            match size {
                Some(n) => json!({"path": path, "is_dir": false, "file_size": n}),
                None => json!({"path": path, "is_dir": true}),
            }
        })
        .collect()
}

/// `GET /get-artifact` (MLflow's UI reads a run's files from there).
#[derive(Debug, Deserialize)]
pub(crate) struct GetArtifactQuery {
    run_id: Option<String>,
    run_uuid: Option<String>,
    path: Option<String>,
}

/// A run's artifact, sent as a download (never shown inline on the server's origin).
pub(crate) async fn get_artifact(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<GetArtifactQuery>,
) -> Result<Response, ApiError> {
    let run_id = wire::run_id_of(q.run_id, q.run_uuid)?;
    let rel = safe_path(q.path.as_deref().ok_or_else(|| ApiError::missing("path"))?)?;
    let record = read_record(&s, &run_id).await?;
    let rows = of_run(&s, &run_id).await?;
    let exp = wire::experiment_id_of(&record.project);
    match rows.iter().find(|(p, _, _)| *p == rel) {
        Some((_, digest, _)) => Ok(attachment(&rel, s.store().get_blob(digest).await?)),
        None if !rel.is_empty()
            && rows
                .iter()
                .any(|(p, _, _)| p.starts_with(&format!("{rel}/"))) =>
        {
            Err(ApiError::invalid(format!(
                "'{rel}' is a directory of run {run_id}'s artifacts: name a file in it"
            )))
        }
        None => Err(ApiError::not_found(format!(
            "No such artifact: '{exp}/{run_id}/artifacts/{rel}'"
        ))),
    }
}

/// A file's bytes as MLflow's server sends an artifact: an attachment named after the file,
/// `text/plain` for its text extensions, the type the extension names otherwise, and
/// `nosniff`, so that a browser never renders an uploaded page on the server's origin.
fn attachment(path: &str, bytes: Bytes) -> Response {
    use axum::http::{HeaderValue, header};
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(mime_of(name)),
    );
    // The name quoted, its quotes and non-ASCII escaped (RFC 6266's `filename*` for the rest).
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The content type MLflow's server gives a file of this name.
fn mime_of(name: &str) -> &'static str {
    // MLflow's `_TEXT_EXTENSIONS`, sent as text/plain.
    const TEXT: [&str; 25] = [
        "txt",
        "log",
        "err",
        "cfg",
        "conf",
        "cnf",
        "cf",
        "ini",
        "properties",
        "prop",
        "hocon",
        "toml",
        "yaml",
        "yml",
        "xml",
        "json",
        "js",
        "py",
        "py3",
        "csv",
        "tsv",
        "md",
        "rst",
        "MLmodel",
        "MLproject",
    ];
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) => ext,
        None => name,
    };
    if TEXT.contains(&ext) {
        return "text/plain";
    }
    match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "pdf" => "application/pdf",
        "html" | "htm" => "text/html",
        "mp3" => "audio/mpeg",
        "wav" => "audio/x-wav",
        "mp4" => "video/mp4",
        "gz" => "application/gzip",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// Largest file `upload-artifact` (MLflow UI's upload) takes: MLflow's 10 MB.
const MAX_UI_UPLOAD: usize = 10 * 1024 * 1024;
/// How much of a body over `MAX_UI_UPLOAD` is read before it is refused.
const MAX_UI_DRAIN: usize = 4 * MAX_UI_UPLOAD;

/// `POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=…&path=…` (MLflow's UI uploads a file
/// to a run there; the body is the file).
#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    run_uuid: Option<String>,
    path: Option<String>,
}

/// Stores the body as the run's artifact `path`; MLflow's checks in its order and words.
pub(crate) async fn ui_upload(
    Write(s): Write<State>,
    MlflowQuery(q): MlflowQuery<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let run_id = q
        .run_uuid
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::invalid("Request must specify run_uuid."))?;
    let path = q
        .path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::invalid("Request must specify path."))?;
    let rel = safe_path(&path)?;
    let too_large = || ApiError::invalid("Artifact size is too large. Max size is 10MB.");
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_UI_DRAIN as u64) {
        return Err(too_large());
    }
    // A body somewhat over the limit is read to its end before the refusal, so that the
    // client, still sending, reads the answer rather than a reset connection.
    let mut stream = body.into_data_stream();
    let (mut bytes, mut total) = (Vec::new(), 0usize);
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk =
            chunk.map_err(|e| ApiError::invalid(format!("cannot read the request body: {e}")))?;
        total += chunk.len();
        if total > MAX_UI_DRAIN {
            break;
        }
        if total <= MAX_UI_UPLOAD {
            bytes.extend_from_slice(&chunk);
        }
    }
    if total > MAX_UI_UPLOAD {
        return Err(too_large());
    }
    let bytes = Bytes::from(bytes);
    if bytes.is_empty() {
        return Err(ApiError::invalid("Request must specify data."));
    }
    if rel.is_empty() {
        return Err(ApiError::invalid("Invalid path"));
    }
    read_record(&s, &run_id).await?;
    put_run_artifact(&s, &run_id, rel, bytes).await?;
    let mut response = Response::default();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `logged-models/{model_id}/artifacts/directories`.
#[derive(Debug, Deserialize)]
pub(crate) struct ModelListQuery {
    artifact_directory_path: Option<String>,
}

/// `{root_uri, files}` of a logged model: the entries below `artifact_directory_path`, each
/// named by its path in the model.
pub(crate) async fn model_directories(
    Read(s): Read<State>,
    Path(model_id): Path<String>,
    MlflowQuery(q): MlflowQuery<ModelListQuery>,
) -> Result<Response, ApiError> {
    let dir = match q.artifact_directory_path.as_deref() {
        Some(p) => safe_path(p)?,
        None => String::new(),
    };
    let (experiment_id, entries) = super::models::files_below(&s, &model_id, &dir).await?;
    let files = listing_json(entries, &dir);
    let mut out = json!({
        "root_uri": format!("mlflow-artifacts:/{experiment_id}/models/{model_id}/artifacts"),
    });
    if !files.is_empty() {
        out["files"] = Value::Array(files);
    }
    Ok(axum::Json(out).into_response())
}

/// `logged-models/{model_id}/artifacts/files` (MLflow serves it under `/ajax-api` only).
#[derive(Debug, Deserialize)]
pub(crate) struct ModelFileQuery {
    artifact_file_path: Option<String>,
}

/// A logged model's file, sent as a download.
pub(crate) async fn model_file(
    Read(s): Read<State>,
    Path(model_id): Path<String>,
    MlflowQuery(q): MlflowQuery<ModelFileQuery>,
) -> Result<Response, ApiError> {
    let rel = safe_path(
        q.artifact_file_path
            .as_deref()
            .ok_or_else(|| ApiError::missing("artifact_file_path"))?,
    )?;
    let bytes = super::models::file_of(&s, &model_id, &rel).await?;
    Ok(attachment(&rel, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused_as_mlflow_refuses_them() {
        for bad in [
            "../x",
            "a/../../b",
            "/etc/passwd",
            "C:/x",
            "a\\b",
            "a#b",
            "%2e%2e/x",
            "%252e%252e/x",
        ] {
            let e = safe_path(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} passed"));
            assert_eq!(e.to_string(), "Invalid path", "{bad}");
        }
        assert_eq!(safe_path("a//b/").ok().as_deref(), Some("a/b"));
        assert_eq!(safe_path("").ok().as_deref(), Some(""));
        assert_eq!(safe_path("./x.txt").ok().as_deref(), Some("x.txt"));
    }

    #[test]
    fn text_files_are_plain_text_and_everything_is_an_attachment() {
        assert_eq!(mime_of("MLmodel"), "text/plain");
        assert_eq!(mime_of("conda.yaml"), "text/plain");
        assert_eq!(mime_of("plot.PNG"), "image/png");
        assert_eq!(mime_of("model.pkl"), "application/octet-stream");
        let r = attachment("dir/résumé \"1\".html", Bytes::from_static(b"<b>"));
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let cd = h["content-disposition"].to_str().unwrap_or_default();
        assert!(
            cd.starts_with("attachment; filename=\"r_sum_ _1_.html\""),
            "{cd}"
        );
        assert!(
            cd.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.html"),
            "{cd}"
        );
    }
}
