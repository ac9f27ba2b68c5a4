//! OTLP/HTTP trace export (`POST /v1/traces`, protobuf or JSON): any OpenTelemetry SDK's
//! spans (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=<server>/v1/traces`) land in `mlflow.spans`, and
//! each trace's root span makes its `mlflow.traces` row. The project is the experiment named
//! by MLflow's `x-mlflow-experiment-id` header (made when it does not exist yet), else
//! `Default`.
//!
//! The `mlflow` client (3.4 and newer) also sends its spans here, live, as they end (its
//! `log_spans`), and then the whole trace again: its info to `start_trace` and its span data
//! as `traces.json`, because runql never tells it the spans are kept in the tracking store.
//! Those live copies (spans that carry MLflow's `mlflow.traceRequestId`, sent by the
//! `mlflow-python-client`) are answered and not added, so that each span is kept once, from
//! `traces.json`, with the run its trace belongs to (which only the trace info names).
//!
//! The protobuf messages (opentelemetry-proto's `ExportTraceServiceRequest` and what it
//! holds) are read by a small decoder of the wire format: the few fields a span row needs,
//! every other field skipped, a malformed body refused with where it broke.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::state::State;
use super::traces::{Span, append_spans, append_trace_of_root};
use super::wire::project_of;
use crate::error::ApiError;
use crate::request::Write;

/// The header MLflow's client names the experiment of exported spans with.
const EXPERIMENT_HEADER: &str = "x-mlflow-experiment-id";
/// Largest export request taken (OTLP exporters batch 512 spans by default).
pub(crate) const MAX_EXPORT: usize = 64 << 20;

pub(crate) async fn export(
    Write(s): Write<State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf")
        .to_ascii_lowercase();
    let json_body = content_type.starts_with("application/json");
    if !json_body && !content_type.starts_with("application/x-protobuf") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "OTLP traces are application/x-protobuf or application/json, not {content_type}"
        )));
    }
    let spans = if json_body {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the OTLP JSON body is not JSON: {e}")))?;
        spans_of_json(&v)?
    } else {
        spans_of_protobuf(&body)?
    };
    let experiment_id = headers
        .get(EXPERIMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(super::wire::DEFAULT_ID)
        .to_string();
    let from_mlflow_client = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("mlflow-python-client"));
    let spans: Vec<Span> = if from_mlflow_client {
        spans
            .into_iter()
            .filter(|sp| sp.attr("mlflow.traceRequestId").is_none())
            .collect()
    } else {
        spans
    };
    let project = project_of(&experiment_id).to_string();
    // An OpenTelemetry SDK has no way to create an experiment first: the project is made.
    s.store().create_project(&project).await?;
    // One append per trace, so that each trace's rows carry its MLflow trace id.
    let mut by_trace: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for span in spans {
        by_trace
            .entry(span.mlflow_trace_id())
            .or_default()
            .push(span);
    }
    for (trace_id, spans) in by_trace {
        append_spans(&s, &project, &trace_id, None, &spans).await?;
        for root in spans.iter().filter(|sp| sp.parent.is_none()) {
            append_trace_of_root(&s, &project, &trace_id, root).await?;
        }
    }
    // An empty ExportTraceServiceResponse, in the request's encoding.
    let mut response = if json_body {
        axum::Json(json!({})).into_response()
    } else {
        Bytes::new().into_response()
    };
    if !json_body {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
    }
    Ok(response)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of an OTLP JSON export (`resourceSpans[].scopeSpans[].spans[]`; ids in hex,
/// times as strings of nanoseconds, attribute values as `{stringValue: …}` and kin).
fn spans_of_json(v: &Value) -> Result<Vec<Span>, ApiError> {
    let list = |v: &Value, k1: &str, k2: &str| -> Vec<Value> {
        v.get(k1)
            .or_else(|| v.get(k2))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for rs in list(v, "resourceSpans", "resource_spans") {
        for ss in list(&rs, "scopeSpans", "scope_spans") {
            for (i, sp) in list(&ss, "spans", "spans").into_iter().enumerate() {
                let id = |k1: &str, k2: &str| {
                    sp.get(k1)
                        .or_else(|| sp.get(k2))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                };
                let span_id = id("spanId", "span_id")
                    .ok_or_else(|| ApiError::invalid(format!("OTLP span {i} has no spanId")))?;
                let nanos = |k1: &str, k2: &str| {
                    sp.get(k1).or_else(|| sp.get(k2)).and_then(|v| {
                        v.as_i64()
                            .or_else(|| v.as_u64().map(|u| u as i64))
                            .or_else(|| v.as_str()?.parse().ok())
                    })
                };
                let mut attributes = Map::new();
                for kv in list(&sp, "attributes", "attributes") {
                    if let Some(k) = kv.get("key").and_then(Value::as_str) {
                        attributes.insert(k.to_string(), json_any(kv.get("value")));
                    }
                }
                let status = sp.get("status");
                let code = status.and_then(|s| s.get("code"));
                let code = match code {
                    Some(Value::Number(n)) => status_name(n.as_i64().unwrap_or(0)),
                    Some(Value::String(s)) => s.trim_start_matches("STATUS_CODE_").to_string(),
                    _ => "UNSET".to_string(),
                };
                let kind = match sp.get("kind") {
                    Some(Value::Number(n)) => kind_name(n.as_i64().unwrap_or(0)),
                    Some(Value::String(s)) => s.trim_start_matches("SPAN_KIND_").to_string(),
                    _ => kind_name(0),
                };
                out.push(Span {
                    otel_trace_id: id("traceId", "trace_id"),
                    span_id,
                    parent: id("parentSpanId", "parent_span_id"),
                    name: sp.get("name").and_then(Value::as_str).map(String::from),
                    kind: Some(kind),
                    start_ns: nanos("startTimeUnixNano", "start_time_unix_nano"),
                    end_ns: nanos("endTimeUnixNano", "end_time_unix_nano"),
                    status: Some(code),
                    status_message: status
                        .and_then(|s| s.get("message"))
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .map(String::from),
                    attributes,
                });
            }
        }
    }
    Ok(out)
}

/// An OTLP JSON `AnyValue` as plain JSON (strings stay strings: MLflow's attributes are JSON
/// text, which the span columns decode).
fn json_any(v: Option<&Value>) -> Value {
    let Some(Value::Object(m)) = v else {
        return Value::Null;
    };
    if let Some(s) = m.get("stringValue").and_then(Value::as_str) {
        return json!(s);
    }
    if let Some(b) = m.get("boolValue") {
        return b.clone();
    }
    if let Some(i) = m.get("intValue") {
        return match i {
            Value::String(s) => s.parse::<i64>().map_or(json!(s), |n| json!(n)),
            other => other.clone(),
        };
    }
    if let Some(d) = m.get("doubleValue") {
        return d.clone();
    }
    if let Some(a) = m.get("arrayValue") {
        let values = a
            .get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        return Value::Array(values.iter().map(|v| json_any(Some(v))).collect());
    }
    if let Some(kv) = m.get("kvlistValue") {
        let mut out = Map::new();
        for e in kv
            .get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(k) = e.get("key").and_then(Value::as_str) {
                out.insert(k.to_string(), json_any(e.get("value")));
            }
        }
        return Value::Object(out);
    }
    Value::Null
}

fn status_name(code: i64) -> String {
    match code {
        1 => "OK",
        2 => "ERROR",
        _ => "UNSET",
    }
    .to_string()
}

fn kind_name(kind: i64) -> String {
    match kind {
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    }
    .to_string()
}

/// A protobuf wire-format reader over one message.
struct Wire<'a> {
    b: &'a [u8],
    i: usize,
    what: &'static str,
}

/// One field: its number and value.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// A 32-bit field (span flags): skipped.
    Fixed32,
}

impl<'a> Wire<'a> {
    fn new(b: &'a [u8], what: &'static str) -> Self {
        Wire { b, i: 0, what }
    }

    fn bad(&self, why: &str) -> ApiError {
        ApiError::invalid(format!(
            "malformed OTLP protobuf body: {why} in {} at byte {}",
            self.what, self.i
        ))
    }

    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or_else(|| self.bad("a cut varint"))?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("a varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        let end = self.i.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| self.bad("a field longer than the message"))?;
        let out = &self.b[self.i..end];
        self.i = end;
        Ok(out)
    }

    /// The next field, or `None` at the end of the message.
    fn next(&mut self) -> Result<Option<(u64, Field<'a>)>, ApiError> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?
                    .try_into()
                    .map_err(|_| self.bad("a cut fixed64"))?,
            )),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| self.bad("a huge length"))?;
                Field::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            other => return Err(self.bad(&format!("wire type {other}"))),
        };
        Ok(Some((number, field)))
    }
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The spans of an `ExportTraceServiceRequest`.
fn spans_of_protobuf(body: &[u8]) -> Result<Vec<Span>, ApiError> {
    let mut out = Vec::new();
    let mut req = Wire::new(body, "ExportTraceServiceRequest");
    while let Some((n, f)) = req.next()? {
        let (1, Field::Bytes(rs)) = (n, f) else {
            continue;
        };
        let mut rs = Wire::new(rs, "ResourceSpans");
        while let Some((n, f)) = rs.next()? {
            let (2, Field::Bytes(ss)) = (n, f) else {
                continue;
            };
            let mut ss = Wire::new(ss, "ScopeSpans");
            while let Some((n, f)) = ss.next()? {
                let (2, Field::Bytes(span)) = (n, f) else {
                    continue;
                };
                out.push(span_of_protobuf(span)?);
            }
        }
    }
    Ok(out)
}

fn span_of_protobuf(b: &[u8]) -> Result<Span, ApiError> {
    let mut w = Wire::new(b, "Span");
    let mut span = Span::default();
    let mut kind = 0i64;
    let mut code = 0i64;
    while let Some((n, f)) = w.next()? {
        match (n, f) {
            (1, Field::Bytes(v)) if !v.is_empty() => span.otel_trace_id = Some(hex(v)),
            (2, Field::Bytes(v)) => span.span_id = hex(v),
            (4, Field::Bytes(v)) if !v.is_empty() => span.parent = Some(hex(v)),
            (5, Field::Bytes(v)) => span.name = Some(utf8(v)),
            (6, Field::Varint(v)) => kind = v as i64,
            (7, Field::Fixed64(v)) => span.start_ns = Some(v as i64),
            (8, Field::Fixed64(v)) => span.end_ns = Some(v as i64),
            (9, Field::Bytes(kv)) => {
                let (k, v) = key_value(kv, 0)?;
                span.attributes.insert(k, v);
            }
            (15, Field::Bytes(st)) => {
                let mut st = Wire::new(st, "Status");
                while let Some((n, f)) = st.next()? {
                    match (n, f) {
                        (2, Field::Bytes(m)) if !m.is_empty() => {
                            span.status_message = Some(utf8(m));
                        }
                        (3, Field::Varint(c)) => code = c as i64,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if span.span_id.is_empty() {
        return Err(w.bad("a span without span_id"));
    }
    span.kind = Some(kind_name(kind));
    span.status = Some(status_name(code));
    Ok(span)
}

/// How deep attribute values may nest (arrays and key/value lists in each other): a hostile
/// body nesting them millions deep is refused, not decoded until the stack runs out.
const MAX_DEPTH: usize = 32;

fn key_value(b: &[u8], depth: usize) -> Result<(String, Value), ApiError> {
    let mut w = Wire::new(b, "KeyValue");
    if depth > MAX_DEPTH {
        return Err(w.bad(&format!("attribute values nested deeper than {MAX_DEPTH}")));
    }
    let (mut key, mut value) = (String::new(), Value::Null);
    while let Some((n, f)) = w.next()? {
        match (n, f) {
            (1, Field::Bytes(k)) => key = utf8(k),
            (2, Field::Bytes(v)) => value = any_value(v, depth + 1)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn any_value(b: &[u8], depth: usize) -> Result<Value, ApiError> {
    let mut w = Wire::new(b, "AnyValue");
    if depth > MAX_DEPTH {
        return Err(w.bad(&format!("attribute values nested deeper than {MAX_DEPTH}")));
    }
    let mut out = Value::Null;
    while let Some((n, f)) = w.next()? {
        out = match (n, f) {
            (1, Field::Bytes(s)) => json!(utf8(s)),
            (2, Field::Varint(v)) => json!(v != 0),
            (3, Field::Varint(v)) => json!(v as i64),
            (4, Field::Fixed64(v)) => {
                serde_json::Number::from_f64(f64::from_bits(v)).map_or(Value::Null, Value::Number)
            }
            (5, Field::Bytes(arr)) => {
                let mut a = Wire::new(arr, "ArrayValue");
                let mut items = Vec::new();
                while let Some((n, f)) = a.next()? {
                    if let (1, Field::Bytes(v)) = (n, f) {
                        items.push(any_value(v, depth + 1)?);
                    }
                }
                Value::Array(items)
            }
            (6, Field::Bytes(kvs)) => {
                let mut l = Wire::new(kvs, "KeyValueList");
                let mut m = Map::new();
                while let Some((n, f)) = l.next()? {
                    if let (1, Field::Bytes(kv)) = (n, f) {
                        let (k, v) = key_value(kv, depth + 1)?;
                        m.insert(k, v);
                    }
                }
                Value::Object(m)
            }
            (7, Field::Bytes(bytes)) => json!(hex(bytes)),
            _ => out,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf field: key and payload.
    fn field(number: u64, wire: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = varint((number << 3) | wire);
        if wire == 2 {
            out.extend(varint(payload.len() as u64));
        }
        out.extend_from_slice(payload);
        out
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    #[test]
    fn a_protobuf_export_decodes_to_spans() {
        let attr = |k: &str, v: Vec<u8>| {
            field(9, 2, &[field(1, 2, k.as_bytes()), field(2, 2, &v)].concat())
        };
        let span = [
            field(1, 2, &[0xab; 16]),
            field(2, 2, &[1, 2, 3, 4, 5, 6, 7, 8]),
            field(5, 2, b"chat"),
            field(6, 0, &varint(3)),
            field(7, 1, &1_000_000_000u64.to_le_bytes()),
            field(8, 1, &1_500_000_000u64.to_le_bytes()),
            attr("gen_ai.request.model", field(1, 2, b"gpt-x")),
            attr("n", field(3, 0, &varint(42))),
            field(15, 2, &field(3, 0, &varint(2))),
        ]
        .concat();
        let body = field(1, 2, &field(2, 2, &field(2, 2, &span)));
        let spans = spans_of_protobuf(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.span_id, "0102030405060708");
        assert_eq!(
            s.otel_trace_id.as_deref(),
            Some("abababababababababababababababab")
        );
        assert_eq!(s.name.as_deref(), Some("chat"));
        assert_eq!(s.kind.as_deref(), Some("CLIENT"));
        assert_eq!(s.status.as_deref(), Some("ERROR"));
        assert_eq!(
            (s.start_ns, s.end_ns),
            (Some(1_000_000_000), Some(1_500_000_000))
        );
        assert_eq!(s.attributes["gen_ai.request.model"], json!("gpt-x"));
        assert_eq!(s.attributes["n"], json!(42));
        assert_eq!(s.mlflow_trace_id(), "tr-abababababababababababababababab");
        // Cut anywhere: an error naming where, never a panic.
        for cut in 0..body.len() {
            let _ = spans_of_protobuf(&body[..cut]);
        }
        assert!(spans_of_protobuf(&[0x0a, 0xff]).is_err());
        // Attribute values nested far deeper than the limit: refused, the stack intact.
        let mut v = field(1, 2, b"x");
        for _ in 0..1_000 {
            v = field(5, 2, &field(1, 2, &v));
        }
        let deep = [field(2, 2, &[1; 8]), attr("deep", v)].concat();
        let body = field(1, 2, &field(2, 2, &field(2, 2, &deep)));
        let err = spans_of_protobuf(&body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn a_json_export_decodes_to_spans() {
        let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173", "name": "tool", "kind": 1,
            "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661000000000",
            "attributes": [{"key": "mlflow.traceRequestId", "value": {"stringValue": "\"tr-1\""}},
                           {"key": "k", "value": {"intValue": "7"}}],
            "status": {"code": "STATUS_CODE_OK"}
        }]}]}]});
        let spans = spans_of_json(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spans[0].parent.as_deref(), Some("eee19b7ec3c1b173"));
        assert_eq!(spans[0].attributes["k"], json!(7));
        assert_eq!(spans[0].status.as_deref(), Some("OK"));
        assert_eq!(spans[0].mlflow_trace_id(), "tr-1");
    }
}
