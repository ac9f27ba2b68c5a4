//! OpenTelemetry spans (OTLP/JSON) into calls. Both encodings met in files are read: the
//! spec's (hex ids, integer enums, int64 as strings) and protobuf's plain JSON mapping (base64
//! ids, enum names).

use serde_json::Value;

use crate::{Call, text_of};

/// An attribute's value as JSON (`{"stringValue": …}`, `{"intValue": "3"}`, arrays…).
fn any_value(v: &Value) -> Value {
    if let Some(s) = v.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = v.get("intValue") {
        return i
            .as_i64()
            .or_else(|| i.as_str()?.parse().ok())
            .map(Value::from)
            .unwrap_or(Value::Null);
    }
    if let Some(d) = v.get("doubleValue") {
        return d.clone();
    }
    if let Some(b) = v.get("boolValue") {
        return b.clone();
    }
    if let Some(a) = v.get("arrayValue") {
        return Value::Array(
            a.get("values")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().map(any_value).collect())
                .unwrap_or_default(),
        );
    }
    Value::Null
}

fn attributes(v: Option<&Value>) -> serde_json::Map<String, Value> {
    v.and_then(Value::as_array)
        .map(|attrs| {
            attrs
                .iter()
                .filter_map(|a| {
                    Some((
                        a.get("key")?.as_str()?.to_string(),
                        any_value(a.get("value")?),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Lowercase hex of an id written as hex (OTLP/JSON) or base64 (protobuf's JSON).
fn id(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?;
    if s.is_empty() {
        return None;
    }
    if s.len() % 2 == 0
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && (s.len() == 16 || s.len() == 32)
    {
        return Some(s.to_ascii_lowercase());
    }
    base64(s).map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn nanos(v: Option<&Value>) -> Option<i64> {
    v.and_then(|x| x.as_i64().or_else(|| x.as_str()?.parse().ok()))
}

fn status_is_error(status: Option<&Value>) -> bool {
    match status.and_then(|s| s.get("code")) {
        Some(Value::Number(n)) => n.as_i64() == Some(2),
        Some(Value::String(s)) => s == "STATUS_CODE_ERROR" || s == "ERROR",
        _ => false,
    }
}

fn string(attrs: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| attrs.get(*k).and_then(Value::as_str).map(String::from))
}

fn int(attrs: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<i64> {
    keys.iter()
        .find_map(|k| attrs.get(*k).and_then(Value::as_i64))
}

/// Messages in the GenAI "parts" format (`[{"role": …, "parts": [{"type": "text", "content":
/// …}]}]`) or the older `[{"role": …, "content": …}]`, given as a JSON string.
fn messages(text: &str) -> Vec<(String, String)> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|m| {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("user")
                .to_string();
            let content = m
                .get("parts")
                .and_then(text_of)
                .or_else(|| m.get("content").and_then(text_of))?;
            Some((role, content))
        })
        .collect()
}

/// OpenLLMetry's indexed attributes: `gen_ai.prompt.0.role`, `gen_ai.prompt.0.content`…
fn indexed(attrs: &serde_json::Map<String, Value>, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in 0.. {
        let Some(content) = attrs
            .get(&format!("{prefix}.{n}.content"))
            .and_then(Value::as_str)
        else {
            break;
        };
        let role = attrs
            .get(&format!("{prefix}.{n}.role"))
            .and_then(Value::as_str)
            .unwrap_or(if prefix.ends_with("prompt") {
                "user"
            } else {
                "assistant"
            });
        out.push((role.to_string(), content.to_string()));
    }
    out
}

fn last_user(msgs: &[(String, String)]) -> Option<String> {
    msgs.iter()
        .rev()
        .find(|(r, _)| r == "user")
        .or_else(|| msgs.last())
        .map(|(_, t)| t.clone())
}

/// Every GenAI span of one export request.
pub fn spans(request: &Value, calls: &mut Vec<Call>) {
    for rs in request
        .get("resourceSpans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let resource = attributes(rs.get("resource").and_then(|r| r.get("attributes")));
        let service = string(&resource, &["service.name"]);
        for ss in rs
            .get("scopeSpans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for span in ss
                .get("spans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let attrs = attributes(span.get("attributes"));
                let events: Vec<(String, serde_json::Map<String, Value>)> = span
                    .get("events")
                    .and_then(Value::as_array)
                    .map(|es| {
                        es.iter()
                            .map(|e| {
                                (
                                    e.get("name")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                        .to_string(),
                                    attributes(e.get("attributes")),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let genai = attrs.keys().any(|k| k.starts_with("gen_ai."))
                    || events.iter().any(|(n, _)| n.starts_with("gen_ai."));
                if !genai {
                    continue;
                }
                let mut inputs = string(&attrs, &["gen_ai.input.messages"])
                    .map(|t| messages(&t))
                    .unwrap_or_default();
                if inputs.is_empty() {
                    inputs = indexed(&attrs, "gen_ai.prompt");
                }
                if inputs.is_empty()
                    && let Some(p) = string(&attrs, &["gen_ai.prompt"])
                {
                    inputs = messages(&p);
                    if inputs.is_empty() {
                        inputs = vec![("user".into(), p)];
                    }
                }
                let mut outputs = string(&attrs, &["gen_ai.output.messages"])
                    .map(|t| messages(&t))
                    .unwrap_or_default();
                if outputs.is_empty() {
                    outputs = indexed(&attrs, "gen_ai.completion");
                }
                if outputs.is_empty()
                    && let Some(c) = string(&attrs, &["gen_ai.completion"])
                {
                    outputs = messages(&c);
                    if outputs.is_empty() {
                        outputs = vec![("assistant".into(), c)];
                    }
                }
                for (name, ea) in &events {
                    if name == "gen_ai.content.prompt"
                        && inputs.is_empty()
                        && let Some(p) = string(ea, &["gen_ai.prompt"])
                    {
                        inputs = messages(&p);
                        if inputs.is_empty() {
                            inputs = vec![("user".into(), p)];
                        }
                    }
                    if name == "gen_ai.content.completion"
                        && outputs.is_empty()
                        && let Some(c) = string(ea, &["gen_ai.completion"])
                    {
                        outputs = messages(&c);
                        if outputs.is_empty() {
                            outputs = vec![("assistant".into(), c)];
                        }
                    }
                }
                let mut finish_reasons: Vec<String> = attrs
                    .get("gen_ai.response.finish_reasons")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                // OpenLLMetry: `gen_ai.completion.N.finish_reason`.
                if finish_reasons.is_empty() {
                    finish_reasons = (0..)
                        .map_while(|n| {
                            string(&attrs, &[&format!("gen_ai.completion.{n}.finish_reason")])
                        })
                        .collect();
                }
                let error = if status_is_error(span.get("status")) {
                    span.get("status")
                        .and_then(|s| s.get("message"))
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .map(String::from)
                        .or_else(|| {
                            events
                                .iter()
                                .find(|(n, _)| n == "exception")
                                .and_then(|(_, a)| {
                                    string(a, &["exception.message", "exception.type"])
                                })
                        })
                        .or_else(|| string(&attrs, &["error.type"]))
                        .or_else(|| Some("error".into()))
                } else {
                    None
                };
                let start = nanos(span.get("startTimeUnixNano"));
                let end = nanos(span.get("endTimeUnixNano"));
                let mut call = Call {
                    format: "otel",
                    trace_id: id(span.get("traceId")),
                    span_id: id(span.get("spanId")),
                    parent_span_id: id(span.get("parentSpanId")),
                    name: span.get("name").and_then(Value::as_str).map(String::from),
                    service: service.clone(),
                    operation: string(&attrs, &["gen_ai.operation.name"]),
                    provider: string(&attrs, &["gen_ai.provider.name", "gen_ai.system"]),
                    model: string(&attrs, &["gen_ai.response.model", "gen_ai.request.model"]),
                    tokens_in: int(
                        &attrs,
                        &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"],
                    ),
                    tokens_out: int(
                        &attrs,
                        &[
                            "gen_ai.usage.output_tokens",
                            "gen_ai.usage.completion_tokens",
                        ],
                    ),
                    start_us: start.map(|n| n / 1000),
                    latency_ms: match (start, end) {
                        (Some(a), Some(b)) => Some((b - a) as f64 / 1e6),
                        _ => None,
                    },
                    finish_reason: finish_reasons.first().cloned(),
                    prompt: last_user(&inputs),
                    response: outputs
                        .iter()
                        .rev()
                        .find(|(r, _)| r == "assistant")
                        .or(outputs.last())
                        .map(|(_, t)| t.clone()),
                    error,
                    ..Call::default()
                };
                call.call_id = call.span_id.clone();
                call.total_tokens = match (call.tokens_in, call.tokens_out) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
                call.messages = inputs
                    .into_iter()
                    .map(|(r, t)| (r, t, "input"))
                    .chain(outputs.into_iter().map(|(r, t)| (r, t, "output")))
                    .collect();
                calls.push(call);
            }
        }
    }
}
