//! `POST /api/sql`: read-only SQL over the store, answered as JSON rows, the dashboard's table
//! form, CSV or an Arrow IPC stream, by the request's `Accept` header.
//!
//! Every request gets a session of its own (what it sets or prepares touches nobody else),
//! runs on the server's query threads (a runtime apart from the one answering HTTP, so that a
//! heavy query does not starve other requests), and within limits: a time limit, a memory
//! limit for DataFusion's operators, and a bound on the size of the answer. A query past a
//! limit stops (its tasks are dropped) and the client reads which limit and which flag
//! raises it. If the client goes away, the request is dropped and the query with it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use runql_query::Engine;

use crate::error::ApiError;
use crate::request::Read;
use crate::table_json;

/// The limits of one SQL request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// How long a query may run, answer included.
    pub timeout: Duration,
    /// Memory DataFusion's operators (sorts, joins, aggregations) may hold.
    pub memory: usize,
    /// Largest answer, in bytes of Arrow data.
    pub max_result: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: Duration::from_secs(60),
            memory: 1 << 30,
            max_result: 256 << 20,
        }
    }
}

/// What `/api/sql` works with: the engine, the limits, the query threads.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) engine: Engine,
    pub(crate) limits: SqlLimits,
    runtime: QueryRuntime,
}

impl Sql {
    /// The query threads (the Postgres endpoint runs its connections there).
    pub(crate) fn runtime_handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.handle().cloned()
    }

    pub(crate) fn new(engine: Engine, limits: SqlLimits) -> std::io::Result<Sql> {
        Ok(Sql {
            engine,
            limits,
            runtime: QueryRuntime::new()?,
        })
    }
}

/// A multi-thread runtime of its own for queries; shut down in the background when dropped
/// (a runtime cannot be dropped, blocking, inside another).
#[derive(Debug)]
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn new() -> std::io::Result<QueryRuntime> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("runql-sql")
            .enable_all()
            .build()
            .map(|rt| QueryRuntime(Some(rt)))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle())
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Aborts a task when dropped: the request went away, so does its query.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Plans and runs `text` in a session of its own, within `limits`; the answer's schema and
/// batches.
async fn run_query(
    sql: &Sql,
    text: String,
) -> Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>), ApiError> {
    let limits = sql.limits;
    let session = sql.engine.session(Some(limits.memory))?;
    let work = async move {
        // A listing of the tables is current: tables declared since the server opened the
        // store (a plugin's, the trace tables) are in it.
        if text.to_ascii_lowercase().contains("information_schema") {
            session.refresh_tables().await?;
        }
        let df = match session.sql(&text).await {
            // A plugin may have declared its tables after this server opened the store.
            Err(e) if e.is_missing_table() => {
                session.refresh_tables().await?;
                session.sql(&text).await?
            }
            r => r?,
        };
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df
            .execute_stream()
            .await
            .map_err(runql_query::Error::from)?;
        let (mut batches, mut bytes) = (Vec::new(), 0usize);
        while let Some(b) = stream.next().await {
            let b = b.map_err(runql_query::Error::from)?;
            bytes += b.get_array_memory_size();
            if bytes > limits.max_result {
                return Err(ApiError::TooLarge(format!(
                    "the answer is larger than {} MiB, the server's limit: add a LIMIT or \
                     aggregate (`runql serve --sql-max-result-mb` raises it)",
                    limits.max_result >> 20
                )));
            }
            batches.push(b);
        }
        Ok::<_, ApiError>((schema, batches))
    };
    let task = match sql.runtime.handle() {
        Some(h) => AbortOnDrop(h.spawn(work)),
        None => return Err(ApiError::internal("the query threads are gone")),
    };
    let timed_out = || {
        ApiError::Timeout(format!(
            "the query ran longer than {} s, the server's limit, and was stopped \
             (`runql serve --sql-timeout` raises it)",
            limits.timeout.as_secs()
        ))
    };
    let mut task = task;
    match tokio::time::timeout(limits.timeout, &mut task.0).await {
        Ok(joined) => joined.map_err(ApiError::from)?,
        Err(_) => Err(timed_out()),
    }
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
    Err(ApiError::NotAcceptable(format!(
        "cannot answer {accept:?}: accept application/json, text/csv or {ARROW_STREAM}"
    )))
}

/// `POST /api/sql`: the body is `{"sql": "..."}` or the SQL as plain text.
pub(crate) async fn sql(
    Read((sql, held)): Read<(Arc<Sql>, crate::mlflow::State)>,
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
    // What the server acknowledged is durable in its log; make it visible to the query too.
    crate::mlflow::flush_all(&held).await?;
    let (schema, batches) = run_query(&sql, text).await?;
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
                w.write(&table_json::printable(b).map_err(internal)?)
                    .map_err(internal)?;
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
