//! runql's LLM plugin: one row per LLM call in `llm.calls` and one per message in
//! `llm.messages`, plus the run's totals as metrics (`llm/calls`, `llm/errors`,
//! `llm/tokens_in`, `llm/tokens_out`).
//!
//! Inputs (one JSON document, or JSON Lines):
//! - OpenAI chat completions (`ChatCompletion` objects, as the SDK's `model_dump_json` writes).
//! - OpenAI Batch input (`{custom_id, method, url, body}`: the requests, into `llm.messages`
//!   under their `custom_id`) and Batch output (`{id, custom_id, response: {status_code,
//!   request_id, body}, error}`, with error lines and `response: null`). A batch call's prompt is
//!   in the input file: ingest both and join on `custom_id`.
//! - OpenTelemetry GenAI spans as OTLP/JSON (`{"resourceSpans": …}`, one request per document
//!   or per line; hex ids as the spec says, or protobuf's base64 ids and enum names), with the
//!   current `gen_ai.*` attribute names and the deprecated ones (`gen_ai.system`,
//!   `gen_ai.usage.prompt_tokens`, `gen_ai.prompt`, indexed `gen_ai.prompt.N.content`, content
//!   events).

use std::sync::Arc;

use runql_plugin_sdk::arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use runql_plugin_sdk::arrow_array::{ArrayRef, RecordBatch};
use runql_plugin_sdk::arrow_schema::{DataType, Field};
use runql_plugin_sdk::{CoreRows, Info, Lines, Output, Plugin, Session, Table};
use serde_json::Value;

mod otel;

/// One LLM call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    pub format: &'static str,
    pub call_id: Option<String>,
    pub custom_id: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub parent_span_id: Option<String>,
    pub name: Option<String>,
    pub service: Option<String>,
    pub operation: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub response: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Option<String>,
    pub n_choices: Option<i64>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub total_tokens: Option<i64>,
    pub start_us: Option<i64>,
    pub latency_ms: Option<f64>,
    pub finish_reason: Option<String>,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    /// (role, content) of the messages in and out, in order.
    pub messages: Vec<(String, String, &'static str)>,
}

fn field(name: &str, t: DataType) -> Field {
    Field::new(name, t, true)
}

pub fn tables() -> Vec<Table> {
    use DataType::{Float64, Int64, Utf8};
    vec![
        Table::new(
            "calls",
            "One LLM call: model, provider, prompt and response, tokens, latency, finish reason, error",
            vec![
                Field::new("source", Utf8, false),
                Field::new("format", Utf8, false),
                field("call_id", Utf8),
                field("custom_id", Utf8),
                field("request_id", Utf8),
                field("trace_id", Utf8),
                field("span_id", Utf8),
                field("parent_span_id", Utf8),
                field("name", Utf8),
                field("service", Utf8),
                field("operation", Utf8),
                field("provider", Utf8),
                field("model", Utf8),
                field("prompt", Utf8),
                field("response", Utf8),
                field("refusal", Utf8),
                field("tool_calls", Utf8),
                field("n_choices", Int64),
                field("tokens_in", Int64),
                field("tokens_out", Int64),
                field("total_tokens", Int64),
                field("start_us", Int64),
                field("latency_ms", Float64),
                field("finish_reason", Utf8),
                field("status_code", Int64),
                field("error", Utf8),
            ],
        ),
        Table::new(
            "messages",
            "One message of an LLM call (or of a Batch request, keyed by custom_id): its role and text",
            vec![
                Field::new("source", Utf8, false),
                field("call_id", Utf8),
                field("custom_id", Utf8),
                Field::new("direction", Utf8, false),
                Field::new("position", Int64, false),
                Field::new("role", Utf8, false),
                Field::new("content", Utf8, false),
            ],
        ),
    ]
}

/// The text of a message's `content`: a string, or the text parts of a list.
pub fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<String> = parts
                .iter()
                .filter_map(|p| {
                    p.get("text")
                        .or_else(|| p.get("content"))
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

fn s(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(String::from)
}

fn i(v: Option<&Value>) -> Option<i64> {
    v.and_then(|x| x.as_i64().or_else(|| x.as_str()?.parse().ok()))
}

/// A `ChatCompletion` object into a call.
fn chat_completion(c: &Value, call: &mut Call) {
    call.call_id = s(c.get("id"));
    call.model = s(c.get("model")).or(call.model.take());
    call.provider = Some("openai".into());
    call.operation = Some("chat".into());
    call.start_us = i(c.get("created")).map(|t| t * 1_000_000);
    let choices = c.get("choices").and_then(Value::as_array);
    call.n_choices = choices.map(|ch| ch.len() as i64);
    if let Some(first) = choices.and_then(|ch| ch.first()) {
        let msg = first.get("message").unwrap_or(&Value::Null);
        call.response = msg.get("content").and_then(text_of);
        call.refusal = s(msg.get("refusal"));
        call.finish_reason = s(first.get("finish_reason"));
        if let Some(tc) = msg.get("tool_calls").and_then(Value::as_array) {
            call.tool_calls = Some(Value::Array(tc.clone()).to_string());
        }
    }
    for ch in choices.into_iter().flatten() {
        if let Some(m) = ch.get("message") {
            let role = s(m.get("role")).unwrap_or_else(|| "assistant".into());
            if let Some(t) = m.get("content").and_then(text_of) {
                call.messages.push((role, t, "output"));
            }
        }
    }
    if let Some(u) = c.get("usage") {
        call.tokens_in = i(u.get("prompt_tokens"));
        call.tokens_out = i(u.get("completion_tokens"));
        call.total_tokens = i(u.get("total_tokens"));
    }
}

/// One JSON document (a line or the whole file) into calls and messages.
fn document(
    v: &Value,
    calls: &mut Vec<Call>,
    requests: &mut Vec<(String, Vec<(String, String)>)>,
) -> Result<(), String> {
    if v.get("resourceSpans").is_some() {
        otel::spans(v, calls);
        return Ok(());
    }
    if v.get("object").and_then(Value::as_str) == Some("chat.completion") {
        let mut call = Call {
            format: "openai-chat",
            ..Call::default()
        };
        chat_completion(v, &mut call);
        calls.push(call);
        return Ok(());
    }
    if let Some(custom_id) = v.get("custom_id").and_then(Value::as_str) {
        // A batch request (input) line: its messages.
        if let Some(body) = v.get("body") {
            let msgs = body
                .get("messages")
                .and_then(Value::as_array)
                .map(|ms| {
                    ms.iter()
                        .filter_map(|m| {
                            Some((s(m.get("role"))?, m.get("content").and_then(text_of)?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            requests.push((custom_id.to_string(), msgs));
            return Ok(());
        }
        // A batch output line.
        let mut call = Call {
            format: "openai-batch",
            custom_id: Some(custom_id.to_string()),
            ..Call::default()
        };
        let line_id = s(v.get("id"));
        match v.get("response").filter(|r| !r.is_null()) {
            Some(r) => {
                call.status_code = i(r.get("status_code"));
                call.request_id = s(r.get("request_id"));
                let body = r.get("body").unwrap_or(&Value::Null);
                if let Some(err) = body.get("error").filter(|e| !e.is_null()) {
                    call.error = s(err.get("message")).or_else(|| Some(err.to_string()));
                    call.provider = Some("openai".into());
                } else {
                    chat_completion(body, &mut call);
                }
            }
            None => {
                call.provider = Some("openai".into());
            }
        }
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let code = s(err.get("code"));
            let msg = s(err.get("message"));
            call.error = match (code, msg) {
                (Some(c), Some(m)) => Some(format!("{c}: {m}")),
                (c, m) => c.or(m),
            };
        }
        if call.call_id.is_none() {
            call.call_id = line_id;
        }
        calls.push(call);
        return Ok(());
    }
    Err("neither a chat completion, an OpenAI Batch line nor OTLP spans".into())
}

/// One input.
#[derive(Debug)]
pub struct LlmSession {
    source: String,
    /// JSON Lines (one document per line) or one document (the whole file).
    lines: Option<Lines>,
    whole: Vec<u8>,
    calls: Vec<Call>,
    requests: Vec<(String, Vec<(String, String)>)>,
    decided: bool,
    head: Vec<u8>,
}

impl LlmSession {
    fn line(&mut self, n: u64, line: &str) -> Result<(), String> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("line {n}: not JSON: {e}"))?;
        document(&v, &mut self.calls, &mut self.requests).map_err(|e| format!("line {n}: {e}"))
    }

    fn emit(&mut self, out: &mut Output) -> Result<(), String> {
        let calls = std::mem::take(&mut self.calls);
        let n = calls.len();
        let str_col = |f: &dyn Fn(&Call) -> Option<String>| -> ArrayRef {
            let mut b = StringBuilder::new();
            for c in &calls {
                b.append_option(f(c));
            }
            Arc::new(b.finish())
        };
        let int_col = |f: &dyn Fn(&Call) -> Option<i64>| -> ArrayRef {
            let mut b = Int64Builder::new();
            for c in &calls {
                b.append_option(f(c));
            }
            Arc::new(b.finish())
        };
        let mut lat = Float64Builder::new();
        for c in &calls {
            lat.append_option(c.latency_ms);
        }
        let src: ArrayRef = Arc::new(runql_plugin_sdk::arrow_array::StringArray::from(
            vec![self.source.as_str(); n],
        ));
        let columns: Vec<ArrayRef> = vec![
            src,
            str_col(&|c| Some(c.format.to_string())),
            str_col(&|c| c.call_id.clone()),
            str_col(&|c| c.custom_id.clone()),
            str_col(&|c| c.request_id.clone()),
            str_col(&|c| c.trace_id.clone()),
            str_col(&|c| c.span_id.clone()),
            str_col(&|c| c.parent_span_id.clone()),
            str_col(&|c| c.name.clone()),
            str_col(&|c| c.service.clone()),
            str_col(&|c| c.operation.clone()),
            str_col(&|c| c.provider.clone()),
            str_col(&|c| c.model.clone()),
            str_col(&|c| c.prompt.clone()),
            str_col(&|c| c.response.clone()),
            str_col(&|c| c.refusal.clone()),
            str_col(&|c| c.tool_calls.clone()),
            int_col(&|c| c.n_choices),
            int_col(&|c| c.tokens_in),
            int_col(&|c| c.tokens_out),
            int_col(&|c| c.total_tokens),
            int_col(&|c| c.start_us),
            Arc::new(lat.finish()),
            str_col(&|c| c.finish_reason.clone()),
            int_col(&|c| c.status_code),
            str_col(&|c| c.error.clone()),
        ];
        let schema = tables()[0].schema.clone();
        if n > 0 {
            out.push(
                "calls",
                RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())?,
            );
        }
        // Messages: of the calls, and of batch requests (by custom_id).
        let (mut m_src, mut m_call, mut m_custom, mut m_dir, mut m_pos, mut m_role, mut m_text) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            Int64Builder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut rows = 0;
        for c in &calls {
            for (pos, (role, text, dir)) in c.messages.iter().enumerate() {
                m_src.append_value(&self.source);
                m_call.append_option(c.call_id.as_deref().or(c.span_id.as_deref()));
                m_custom.append_option(c.custom_id.as_deref());
                m_dir.append_value(dir);
                m_pos.append_value(pos as i64);
                m_role.append_value(role);
                m_text.append_value(text);
                rows += 1;
            }
        }
        for (custom_id, msgs) in std::mem::take(&mut self.requests) {
            for (pos, (role, text)) in msgs.iter().enumerate() {
                m_src.append_value(&self.source);
                m_call.append_null();
                m_custom.append_value(&custom_id);
                m_dir.append_value("input");
                m_pos.append_value(pos as i64);
                m_role.append_value(role);
                m_text.append_value(text);
                rows += 1;
            }
        }
        if rows > 0 {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(m_src.finish()),
                Arc::new(m_call.finish()),
                Arc::new(m_custom.finish()),
                Arc::new(m_dir.finish()),
                Arc::new(m_pos.finish()),
                Arc::new(m_role.finish()),
                Arc::new(m_text.finish()),
            ];
            out.push(
                "messages",
                RecordBatch::try_new(tables()[1].schema.clone(), columns)
                    .map_err(|e| e.to_string())?,
            );
        }
        let mut core = CoreRows::default();
        if n > 0 {
            let sum =
                |f: &dyn Fn(&Call) -> Option<i64>| calls.iter().filter_map(f).sum::<i64>() as f64;
            core.metric("", "llm/calls", 0, n as f64, None);
            core.metric(
                "",
                "llm/errors",
                0,
                calls.iter().filter(|c| c.error.is_some()).count() as f64,
                None,
            );
            core.metric("", "llm/tokens_in", 0, sum(&|c| c.tokens_in), None);
            core.metric("", "llm/tokens_out", 0, sum(&|c| c.tokens_out), None);
        }
        core.flush_into(out)
    }
}

impl Session for LlmSession {
    fn feed(&mut self, chunk: &[u8], _out: &mut Output) -> Result<(), String> {
        if !self.decided {
            // JSON Lines when the first line is a whole JSON document; else one document.
            self.head.extend_from_slice(chunk);
            let Some(end) = self.head.iter().position(|&b| b == b'\n') else {
                return Ok(());
            };
            let one_line_document = std::str::from_utf8(&self.head[..end])
                .ok()
                .and_then(|first| serde_json::from_str::<Value>(first.trim()).ok())
                .is_some_and(|v| v.is_object());
            self.decided = true;
            let head = std::mem::take(&mut self.head);
            if one_line_document {
                self.lines = Some(Lines::default());
            }
            return self.feed(&head, _out);
        }
        match self.lines.take() {
            Some(mut lines) => {
                let r = lines.feed(chunk, |n, l| self.line(n, l));
                self.lines = Some(lines);
                r
            }
            None => {
                self.whole.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    fn finish(&mut self, out: &mut Output) -> Result<(), String> {
        if !self.decided {
            self.decided = true;
            let head = std::mem::take(&mut self.head);
            self.whole = head;
        }
        if let Some(mut lines) = self.lines.take() {
            lines.finish(|n, l| self.line(n, l))?;
        } else {
            if self.whole.iter().all(u8::is_ascii_whitespace) {
                return Err("the file is empty".into());
            }
            let v: Value = serde_json::from_slice(&self.whole)
                .map_err(|e| format!("not JSON (line {}, column {}): {e}", e.line(), e.column()))?;
            let docs = match v {
                Value::Array(items) => items,
                one => vec![one],
            };
            for (k, d) in docs.iter().enumerate() {
                document(d, &mut self.calls, &mut self.requests)
                    .map_err(|e| format!("document {}: {e}", k + 1))?;
            }
        }
        self.emit(out)
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Llm;

fn detect(head: &[u8]) -> u8 {
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    if text.contains("\"resourceSpans\"") && text.contains("gen_ai") {
        100
    } else if text.contains("\"resourceSpans\"") {
        70
    } else if text.contains("\"chat.completion\"") {
        95
    } else if text.contains("\"custom_id\"")
        && (text.contains("\"response\"") || text.contains("\"body\""))
    {
        90
    } else {
        0
    }
}

impl Plugin for Llm {
    type Session = LlmSession;

    fn info() -> Info {
        Info {
            name: "llm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "LLM calls: OpenAI chat completions and Batch files, OpenTelemetry GenAI spans"
                    .into(),
            formats: vec![
                "OpenAI ChatCompletion JSON / JSONL".into(),
                "OpenAI Batch input and output JSONL".into(),
                "OpenTelemetry GenAI spans, OTLP/JSON (file exporter JSONL too)".into(),
            ],
            tables: tables(),
        }
    }

    fn recognize(_name: &str, head: &[u8]) -> u8 {
        detect(head)
    }

    fn open(name: &str, options: &[(String, String)]) -> Result<LlmSession, String> {
        if let Some((k, _)) = options.first() {
            return Err(format!("unknown option {k:?} (llm takes none)"));
        }
        Ok(LlmSession {
            source: name.to_string(),
            lines: None,
            whole: Vec::new(),
            calls: Vec::new(),
            requests: Vec::new(),
            decided: false,
            head: Vec::new(),
        })
    }
}

runql_plugin_sdk::export_plugin!(Llm);

#[cfg(test)]
mod tests;
