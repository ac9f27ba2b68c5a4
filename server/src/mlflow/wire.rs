//! MLflow's wire forms, a leaf module every MLflow route uses and that uses none of them:
//! numbers as protobuf's JSON writes them (int64 as strings, doubles as `"NaN"` /
//! `"Infinity"`, or Python's bare `NaN`), key/value lists, run statuses, experiment ids and
//! page tokens.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use runql_core::model::RunStatus;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// MLflow's Default experiment.
pub(crate) const DEFAULT_ID: &str = "0";
/// The project that holds MLflow's Default experiment.
pub(crate) const DEFAULT_PROJECT: &str = "Default";

/// The role of a run's `inputs` row that records a model it produced (`runs/outputs`).
pub(crate) const OUTPUT_ROLE: &str = "output";

/// The project of an experiment id (`"0"` is `Default`, `~<hex>` an encoded name, see
/// [`experiment_id_of`]; other ids are project names).
pub(crate) fn project_of(experiment_id: &str) -> Cow<'_, str> {
    if experiment_id == DEFAULT_ID {
        return Cow::Borrowed(DEFAULT_PROJECT);
    }
    if let Some(hex) = experiment_id.strip_prefix(ENCODED)
        && let Some(name) = decode_hex(hex)
    {
        return Cow::Owned(name);
    }
    Cow::Borrowed(experiment_id)
}

/// The experiment id of a project: its name, except `0` for Default and `~` + the name's UTF-8
/// in hex for a name with a `.` (the `mlflow` client takes an id with a dot for a Unity Catalog
/// location and refuses it in `search_traces`) or that starts with `~` itself. An id a client
/// kept from before (the bare name) still finds the project.
pub(crate) fn experiment_id_of(project: &str) -> Cow<'_, str> {
    if project == DEFAULT_PROJECT {
        return Cow::Borrowed(DEFAULT_ID);
    }
    if project.contains('.') || project.starts_with(ENCODED) {
        let mut id = String::from(ENCODED);
        for b in project.bytes() {
            id.push_str(&format!("{b:02x}"));
        }
        return Cow::Owned(id);
    }
    Cow::Borrowed(project)
}

/// What starts an encoded experiment id.
const ENCODED: &str = "~";

fn decode_hex(hex: &str) -> Option<String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// `{}`: what MLflow answers a write that returns nothing.
pub(crate) fn ok() -> Response {
    axum::Json(json!({})).into_response()
}

/// MLflow's upper-case name of a run status (`crashed` has no MLflow twin: `FAILED`).
pub(crate) fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "RUNNING",
        RunStatus::Finished => "FINISHED",
        RunStatus::Failed | RunStatus::Crashed => "FAILED",
        RunStatus::Killed => "KILLED",
    }
}

/// The offset a page token stands for (the tokens runql hands out are offsets); none: 0.
pub(crate) fn page_offset(token: Option<&str>) -> Result<usize, ApiError> {
    match token.filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid(format!("Invalid page token {t:?}"))),
        None => Ok(0),
    }
}

/// The JSON answer of a page: `{field: items}`, plus `next_page_token` when more follow.
pub(crate) fn page(field: &str, items: Vec<Value>, next: Option<usize>) -> Response {
    let mut out = json!({ field: items });
    if let Some(next) = next {
        out["next_page_token"] = json!(next.to_string());
    }
    axum::Json(out).into_response()
}

pub(crate) use runql_plugin_sdk::text::quote_non_finite;

/// A double sent as a string: "NaN", "Infinity", "-Infinity", or a number.
pub(crate) fn parse_double(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" | "inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// An int64 sent as a string, as protobuf's JSON writes them.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    s.parse().ok()
}

/// A double as protobuf JSON writes it (non-finite values as strings).
pub(crate) fn double(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

/// A metric value as MLflow clients send it: a number, or `"NaN"` / `"Infinity"` /
/// `"-Infinity"` (or a number in a string).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Num(pub(crate) f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or \"NaN\" / \"Infinity\" / \"-Infinity\"")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Num, E> {
                parse_double(v)
                    .map(Num)
                    .ok_or_else(|| E::custom(format!("{v:?} is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An int64 as protobuf's JSON writes it: a number or a string of digits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int(pub(crate) i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Int, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Int, E> {
                if v.fract() == 0.0 && v.abs() < 9.2e18 {
                    Ok(Int(v as i64))
                } else {
                    Err(E::custom(format!("{v} is not an integer")))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Int, E> {
                parse_int(v)
                    .map(Int)
                    .ok_or_else(|| E::custom(format!("{v:?} is not an integer")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A repeated query parameter (`?run_id=a&run_id=b`): one value is a string, several a list.
#[derive(Debug, Default, Clone)]
pub(crate) struct Strings(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strings, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(Strings(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }))
    }
}

/// A metric as MLflow sends it (borrowing its key from the body where it can).
#[derive(Debug, Deserialize)]
pub(crate) struct MetricIn<'a> {
    #[serde(borrow)]
    pub(crate) key: Option<Cow<'a, str>>,
    pub(crate) value: Option<Num>,
    pub(crate) timestamp: Option<Int>,
    pub(crate) step: Option<Int>,
    /// MLflow 3: the logged model the value is of (also logged to the run), and the dataset
    /// it was measured on.
    #[serde(borrow, default)]
    pub(crate) model_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) dataset_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) dataset_digest: Option<Cow<'a, str>>,
}

/// A param or tag as MLflow sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct KvIn<'a> {
    #[serde(borrow)]
    pub(crate) key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) value: Option<Cow<'a, str>>,
}

/// A `log-batch` request, parsed in place (strings borrowed from the body).
#[derive(Debug, Deserialize)]
pub(crate) struct BatchIn<'a> {
    #[serde(borrow)]
    pub(crate) run_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) run_uuid: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) metrics: Vec<MetricIn<'a>>,
    #[serde(default, borrow)]
    pub(crate) params: Vec<KvIn<'a>>,
    #[serde(default, borrow)]
    pub(crate) tags: Vec<KvIn<'a>>,
}

/// A value that is required: MLflow's wording when it is missing.
pub(crate) fn required<'a>(v: &'a Option<Cow<'a, str>>, what: &str) -> Result<&'a str, ApiError> {
    v.as_deref().ok_or_else(|| ApiError::missing(what))
}

/// An owned key/value pair of a request (a tag, a param); a missing value is `""`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Tag {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: Option<String>,
}

impl Tag {
    pub(crate) fn pair(self) -> (String, String) {
        (self.key, self.value.unwrap_or_default())
    }
}

/// A list of tags as `(key, value)` pairs.
pub(crate) fn pairs(tags: Vec<Tag>) -> Vec<(String, String)> {
    tags.into_iter().map(Tag::pair).collect()
}

/// `[{key, value}]` as MLflow answers it.
pub(crate) fn kv_json<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<Value> {
    items
        .into_iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

/// `run_id`, or the older `run_uuid`, whichever the client sent.
pub(crate) fn run_id_of(
    run_id: Option<String>,
    run_uuid: Option<String>,
) -> Result<String, ApiError> {
    run_id
        .or(run_uuid)
        .ok_or_else(|| ApiError::missing("run_id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => parse_double(s),
            _ => None,
        }
    }

    #[test]
    fn bare_non_finite_tokens_become_strings_outside_strings_only() {
        let fixed = quote_non_finite(
            r#"{"a": NaN, "b": -Infinity, "c": "NaN and Infinity", "d": [Infinity]}"#,
        );
        let v: Value = serde_json::from_str(&fixed).unwrap_or_else(|e| panic!("{e}: {fixed}"));
        assert!(number(&v["a"]).is_some_and(f64::is_nan));
        assert_eq!(number(&v["b"]), Some(f64::NEG_INFINITY));
        assert_eq!(v["c"], "NaN and Infinity");
        assert_eq!(number(&v["d"][0]), Some(f64::INFINITY));
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    #[test]
    fn experiment_ids_round_trip_and_never_hold_a_dot() {
        for project in [
            "Default",
            "mnist",
            "bert-v1.5",
            "~tilde",
            "视觉.v2",
            "a.b.c",
        ] {
            let id = experiment_id_of(project);
            assert!(!id.contains('.'), "{id}");
            assert_eq!(project_of(&id), project, "{id}");
        }
        assert_eq!(experiment_id_of("mnist"), "mnist");
        assert_eq!(experiment_id_of("Default"), "0");
        // Ids handed out before (the bare name) still find their project.
        assert_eq!(project_of("bert-v1.5"), "bert-v1.5");
        // Not an encoding: taken as it is.
        assert_eq!(project_of("~zz"), "~zz");
    }
}
