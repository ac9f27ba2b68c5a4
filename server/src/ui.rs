//! The web dashboard: a single page (`server/ui/`, plain ES modules, no build step) embedded in
//! the binary and served at `/`, plus what it needs beside `/api/sql` and `/api/events`:
//! artifact contents by run and path (`/api/artifacts/<run>/<path>`).
//!
//! The page asks every question with SQL (`/api/sql`, answered as `application/vnd.runql.table+json`),
//! so what the dashboard shows is what a user can query. `RUNQL_UI_DIR` serves the files from a
//! folder instead, re-read on each request, for working on the page without rebuilding.

use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::mlflow::{self, artifact_bytes};
use crate::request::Read;

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Nothing but this server: scripts, styles, data and images all come from it.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
                   object-src 'none'; base-uri 'none'; frame-ancestors 'self'";

/// The media type of a dashboard file, by its extension (`None`: not a kind the page has).
fn media_type(name: &str) -> Option<&'static str> {
    Some(match name.rsplit_once('.')?.1 {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        _ => return None,
    })
}

fn asset(name: &str) -> Option<Response> {
    let media = media_type(name)?;
    let body = match std::env::var_os("RUNQL_UI_DIR") {
        // Working on the page: any file of the folder, by a plain relative path (no `..`, no
        // root), so that a new module needs no rebuild.
        Some(dir) => {
            let rel = std::path::Path::new(name);
            if !rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                return None;
            }
            std::fs::read(std::path::Path::new(&dir).join(rel)).ok()?
        }
        None => ASSETS
            .iter()
            .find(|(n, _)| *n == name)?
            .1
            .as_bytes()
            .to_vec(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

/// `GET /`: the page (its state lives in the URL's fragment).
pub(crate) async fn index() -> Response {
    asset("index.html").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// `GET /ui/<path>` (modules may sit in folders below `ui/`).
pub(crate) async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    asset(&name).ok_or_else(|| ApiError::NoEndpoint(format!("the dashboard has no file {name:?}")))
}

#[derive(Deserialize)]
pub(crate) struct ArtifactQuery {
    /// `?download=1`: as an attachment, named after the file.
    download: Option<String>,
}

/// `GET /api/artifacts/<run_id>/<path>`: an artifact's bytes, with the media type recorded for
/// it. Served so that a browser never runs it in the dashboard's origin (`nosniff`, and a
/// sandboxing content security policy for anything opened directly).
pub(crate) async fn artifact(
    Read(s): Read<mlflow::State>,
    Path((run_id, path)): Path<(String, String)>,
    Query(q): Query<ArtifactQuery>,
) -> Result<Response, ApiError> {
    let rel = runql_core::model::normalize_artifact_path(&path)?;
    let bytes = artifact_bytes(&s, &run_id, &rel).await?;
    let media = runql_core::model::guess_media_type(&rel).unwrap_or("application/octet-stream");
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(media)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'",
        ),
    );
    if q.download.is_some_and(|d| d != "0") {
        let name = rel.rsplit('/').next().unwrap_or("artifact");
        // Quotes and control characters cannot reach the header: keep the rest of the name.
        let safe: String = name
            .chars()
            .map(|c| {
                if c == '"' || c == '\\' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let value = format!(
            "attachment; filename=\"{}\"",
            safe.chars()
                .map(|c| if c.is_ascii() { c } else { '_' })
                .collect::<String>()
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(r)
}
