//! Calls written with openai's own pydantic types and spans exported by the OpenTelemetry SDK
//! (plugins/fixtures/llm), checked against the values taken from those objects.

use runql_plugin_sdk::arrow_array::Array;
use runql_plugin_sdk::arrow_array::cast::AsArray;
use runql_plugin_sdk::arrow_array::types::{Float64Type, Int64Type};
use runql_plugin_sdk::{Plugin, rows_of, run_native};

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../fixtures/llm/{name}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn expected() -> Value {
    serde_json::from_slice(&fixture("expected_llm.json")).unwrap()
}

fn calls(file: &str, chunk: usize) -> RecordBatch {
    let bytes = fixture(file);
    assert!(Llm::recognize(file, &bytes) >= 90, "{file} recognised");
    let out = run_native::<Llm>(file, &[], &bytes, chunk).unwrap_or_else(|e| panic!("{file}: {e}"));
    rows_of(&out, "calls").expect("calls")
}

fn text(b: &RecordBatch, col: &str, i: usize) -> Value {
    let c = b.column_by_name(col).unwrap().as_string::<i32>();
    if c.is_null(i) {
        Value::Null
    } else {
        Value::from(c.value(i))
    }
}

fn int(b: &RecordBatch, col: &str, i: usize) -> Value {
    let c = b.column_by_name(col).unwrap().as_primitive::<Int64Type>();
    if c.is_null(i) {
        Value::Null
    } else {
        Value::from(c.value(i))
    }
}

fn check(b: &RecordBatch, want: &[Value], fields: &[&str], ctx: &str) {
    assert_eq!(b.num_rows(), want.len(), "{ctx}: number of calls");
    for (i, w) in want.iter().enumerate() {
        for f in fields {
            let ours = match *f {
                "tokens_in" | "tokens_out" | "total_tokens" | "status_code" => int(b, f, i),
                "latency_ms" => {
                    let c = b.column_by_name(f).unwrap().as_primitive::<Float64Type>();
                    if c.is_null(i) {
                        Value::Null
                    } else {
                        Value::from(c.value(i))
                    }
                }
                _ => text(b, f, i),
            };
            let theirs = &w[*f];
            let same = match (ours.as_f64(), theirs.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => ours == *theirs,
            };
            assert!(same, "{ctx} call {i} {f}: ours {ours} vs {theirs}");
        }
    }
}

const CHAT: [&str; 9] = [
    "model",
    "provider",
    "response",
    "refusal",
    "tokens_in",
    "tokens_out",
    "total_tokens",
    "finish_reason",
    "error",
];

#[test]
fn chat_completions_match_openais_objects() {
    let exp = expected();
    for (file, chunk) in [("chat.json", 64), ("chat.jsonl", 7)] {
        let want: Vec<Value> = match &exp[file] {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        let b = calls(file, chunk);
        check(&b, &want, &CHAT, file);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(text(&b, "call_id", i), w["source_id"], "{file} {i}");
            let tools = text(&b, "tool_calls", i);
            let n = tools
                .as_str()
                .map(|t| {
                    serde_json::from_str::<Value>(t)
                        .unwrap()
                        .as_array()
                        .unwrap()
                        .len()
                })
                .unwrap_or(0);
            assert_eq!(
                n,
                w["tool_calls"].as_array().map(|a| a.len()).unwrap_or(0),
                "{file} {i} tool calls"
            );
        }
    }
}

#[test]
fn batch_output_matches_and_prompts_join_from_the_input() {
    let exp = expected();
    let want = exp["batch_output.jsonl"].as_array().unwrap();
    let b = calls("batch_output.jsonl", 50);
    let fields = [
        "response",
        "tokens_in",
        "tokens_out",
        "finish_reason",
        "status_code",
        "request_id",
        "custom_id",
    ];
    check(&b, want, &fields, "batch_output.jsonl");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(
            text(&b, "error", i).is_null(),
            w["error"].is_null(),
            "call {i} error"
        );
        if w["status_code"] == 200 {
            assert_eq!(text(&b, "model", i), w["model"]);
        }
    }
    // The prompt: the last user message of the request with the same custom_id.
    let input = fixture("batch_input.jsonl");
    let out = run_native::<Llm>("batch_input.jsonl", &[], &input, 100).unwrap();
    let msgs = rows_of(&out, "messages").unwrap();
    for (i, w) in want.iter().enumerate() {
        let custom = text(&b, "custom_id", i);
        let prompt = (0..msgs.num_rows())
            .filter(|&k| text(&msgs, "custom_id", k) == custom && text(&msgs, "role", k) == "user")
            .map(|k| text(&msgs, "content", k))
            .next_back()
            .unwrap_or(Value::Null);
        assert_eq!(prompt, w["prompt"], "call {i} prompt");
    }
}

#[test]
fn otel_genai_spans_match_the_sdks_spans() {
    let exp = expected();
    let want: Vec<Value> = exp["otel_spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["is_genai"] == true)
        .cloned()
        .collect();
    let fields = [
        "model",
        "provider",
        "operation",
        "prompt",
        "response",
        "tokens_in",
        "tokens_out",
        "latency_ms",
        "finish_reason",
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "service",
    ];
    for (file, chunk) in [
        ("otel_spans.json", 1000),
        ("otel_spans.jsonl", 333),
        ("otel_spans.protojson.json", 4096),
    ] {
        let b = calls(file, chunk);
        check(&b, &want, &fields, file);
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                text(&b, "error", i).is_null(),
                w["error"].is_null(),
                "{file} span {i} error"
            );
        }
    }
}

#[test]
fn malformed_inputs_are_clear_errors() {
    let err = run_native::<Llm>(
        "x.jsonl",
        &[],
        b"{\"object\": \"chat.completion\"}\n{\"object\": \n",
        5,
    )
    .unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    let err = run_native::<Llm>("x.json", &[], b"{\"hello\": 1}\n", 5).unwrap_err();
    assert!(err.contains("neither"), "{err}");
    let err = run_native::<Llm>("x.bin", &[], b"\x00\x01\x02 garbage", 5).unwrap_err();
    assert!(err.contains("not JSON"), "{err}");
    assert_eq!(Llm::recognize("x.bin", b"\x00\x01\x02"), 0);
}
