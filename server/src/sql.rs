//! `POST /api/sql`: read-only SQL over the store, answered as JSON rows, the dashboard's table
//! form, CSV or an Arrow IPC stream, by the request's `Accept` header.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use runql_query::Engine;

use crate::error::ApiError;
use crate::request::Read;
use crate::table_json;

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
    Err(ApiError::NotAcceptable(format!(
        "cannot answer {accept:?}: accept application/json, text/csv or {ARROW_STREAM}"
    )))
}

/// `POST /api/sql`: the body is `{"sql": "..."}` or the SQL as plain text.
pub(crate) async fn sql(
    Read(engine): Read<Engine>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    let df = match engine.sql(&text).await {
        // A plugin may have declared its tables after this server opened the store.
        Err(e) if e.is_missing_table() => {
            engine.refresh_tables().await?;
            engine.sql(&text).await?
        }
        r => r?,
    };
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(runql_query::Error::from)?;
    let internal = ApiError::internal;
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
