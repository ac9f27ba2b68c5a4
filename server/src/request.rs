//! The request layer: what every route gets before its handler runs.
//!
//! - [`Read`] and [`Write`] are the only way a handler reaches the server's state: extracting
//!   one checks the caller's credentials for that scope (and, from a browser, that the request
//!   comes from the dashboard's own origin), so a route cannot forget authorisation. The
//!   state is wrapped in [`Guarded`], whose content nothing outside this module can read.
//! - [`MlflowJson`] and [`MlflowQuery`] parse a request body or query string into a typed
//!   request: UTF-8 checked, bare `NaN` / `Infinity` read as Python's `json` writes them,
//!   errors worded as MLflow words them ("Missing value for required parameter 'run_id'",
//!   "Invalid value … for parameter '…' supplied").

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::{Access, Scope};
use crate::error::ApiError;

/// Server state that only [`Read`] and [`Write`] hand out. The router's state implements
/// `FromRef` for `Guarded<T>` of each part a handler may need.
#[derive(Debug, Clone)]
pub(crate) struct Guarded<T>(T);

impl<T> Guarded<T> {
    pub(crate) fn new(inner: T) -> Guarded<T> {
        Guarded(inner)
    }
}

/// Who may call the server, checked on every request.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) access: Access,
}

impl Gate {
    /// Whether the request in `parts` may do what `scope` allows.
    fn check(&self, parts: &Parts, scope: Scope) -> Result<(), ApiError> {
        crate::origin::check(parts, &self.access)?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(self.access.check(peer, auth, scope)?)
    }
}

/// A request allowed to read; `T` is the part of the state the handler works with.
#[derive(Debug)]
pub(crate) struct Read<T>(pub(crate) T);

/// A request allowed to write (and read); `T` is the part of the state the handler works with.
#[derive(Debug)]
pub(crate) struct Write<T>(pub(crate) T);

fn guarded<S, T>(parts: &Parts, state: &S, scope: Scope) -> Result<T, ApiError>
where
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<T>: FromRef<S>,
{
    Guarded::<Arc<Gate>>::from_ref(state)
        .0
        .check(parts, scope)?;
    Ok(Guarded::<T>::from_ref(state).0)
}

impl<S, T> FromRequestParts<S> for Read<T>
where
    S: Send + Sync,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<T>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        guarded(parts, state, Scope::Read).map(Read)
    }
}

impl<S, T> FromRequestParts<S> for Write<T>
where
    S: Send + Sync,
    Guarded<Arc<Gate>>: FromRef<S>,
    Guarded<T>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        guarded(parts, state, Scope::Write).map(Write)
    }
}

/// A JSON request body parsed into `T` with MLflow's wording for what is wrong with it.
#[derive(Debug)]
pub(crate) struct MlflowJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for MlflowJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_body(&bytes).map(MlflowJson)
    }
}

/// The raw body of an MLflow JSON route, for handlers that parse it themselves: a POST, PUT or
/// PATCH must say `Content-Type: application/json`, as MLflow's server requires (which also
/// keeps pages of other sites from sending one: no form or `no-cors` fetch can).
#[derive(Debug)]
pub(crate) struct JsonBytes(pub(crate) axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        json_content_type(req.method(), req.headers())?;
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text()))?;
        Ok(JsonBytes(bytes))
    }
}

/// MLflow's check of a body's content type (and its wording).
fn json_content_type(
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    use axum::http::Method;
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::invalid(
            "Bad Request. Content-Type header is missing.",
        ));
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "Bad Request. Content-Type must be one of ['application/json'].",
        ))
    }
}

/// What reading a body failed with (too large, cut off), as an [`ApiError`].
fn body_error(status: axum::http::StatusCode, text: String) -> ApiError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(format!(
            "the request body is larger than the server accepts ({text}); `runql serve --max-body` raises the limit"
        ))
    } else {
        ApiError::invalid(format!("cannot read the request body: {text}"))
    }
}

/// A query string parsed into `T` (through the same JSON rules as a body, every value a
/// string, repeated keys a list), for MLflow's GET routes.
#[derive(Debug)]
pub(crate) struct MlflowQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for MlflowQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::invalid(format!("malformed query string: {e}")))?;
        typed(query_object(pairs)).map(MlflowQuery)
    }
}

/// Query pairs as a JSON object: a key given once is a string, a repeated key a list.
pub(crate) fn query_object(pairs: Vec<(String, String)>) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        match map.get_mut(&k) {
            None => {
                map.insert(k, Value::String(v));
            }
            Some(Value::Array(items)) => items.push(Value::String(v)),
            Some(first) => {
                let first = first.take();
                map.insert(k, Value::Array(vec![first, Value::String(v)]));
            }
        }
    }
    Value::Object(map)
}

/// Parses a request body: UTF-8, JSON with Python's bare non-finite numbers, then `T`.
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ApiError::invalid("the body is not UTF-8"))?;
    // An empty body is an empty request (MLflow's clients send `{}` or nothing for GET-like
    // POSTs).
    let value: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        let fixed = crate::mlflow::wire::quote_non_finite(text);
        serde_json::from_str(&fixed)
            .map_err(|e| ApiError::invalid(format!("malformed request: {e}")))?
    };
    typed(value)
}

/// Turns a parsed JSON value into `T`, naming the field that is missing or mistyped.
pub(crate) fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid(format!(
            "malformed request: the body must be a JSON object, not {}",
            describe(&value)
        )));
    }
    match serde_path_to_error::deserialize::<_, T>(&value) {
        Ok(t) => Ok(t),
        Err(e) => Err(wording(&value, &e)),
    }
}

/// MLflow's wording for a request that does not fit its message type.
fn wording(value: &Value, e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner().to_string();
    let path = e.path().to_string();
    // serde's "missing field `name`" carries the field; the path is that of its object.
    if let Some(field) = inner
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        let full = if path == "." || path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return ApiError::missing(&full);
    }
    match lookup(value, &path) {
        Some(given) => ApiError::mistyped(&path, given),
        None => ApiError::invalid(format!(
            "Invalid value for parameter '{path}' supplied: {}. {}",
            inner.split(" at line").next().unwrap_or(&inner),
            crate::error::SEE_DOCS
        )),
    }
}

/// The value at a serde_path_to_error path (`a.b[2].c`).
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            v = v.get(name)?;
        }
        for index in rest.split('[') {
            let index = index.trim_end_matches(']');
            if !index.is_empty() {
                v = v.get(index.parse::<usize>().ok()?)?;
            }
        }
    }
    Some(v)
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Create {
        name: String,
        #[serde(default)]
        tags: Vec<Tag>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Tag {
        key: String,
        value: Option<String>,
    }

    fn err(body: &str) -> String {
        match parse_body::<Create>(body.as_bytes()) {
            Err(ApiError::Invalid(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn mistyped_and_missing_fields_are_worded_as_mlflow_words_them() {
        let docs = "See the API docs for more information about request parameters.";
        assert_eq!(
            err(r#"{"name": 123}"#),
            format!(
                "Invalid value 123 for parameter 'name' supplied:  Hint: Value was of type 'int'. {docs}"
            )
        );
        assert!(err(r#"{"name": "x", "tags": "5"}"#).starts_with(
            "Invalid value \"5\" for parameter 'tags' supplied:  Hint: Value was of type 'str'."
        ));
        assert!(err(r#"{"name": "x", "tags": {"a": 1}}"#).starts_with(
            "Invalid value {\"a\":1} for parameter 'tags' supplied:  Hint: Value was of type 'dict'."
        ));
        assert!(
            err(r#"{"name": "x", "tags": [{"key": 1.5}]}"#)
                .starts_with("Invalid value 1.5 for parameter 'tags[0].key' supplied")
        );
        assert_eq!(
            err(r#"{}"#),
            format!("Missing value for required parameter 'name'. {docs}")
        );
        assert!(
            err(r#"{"name": "x", "tags": [{}]}"#)
                .starts_with("Missing value for required parameter 'tags[0].key'.")
        );
        assert_eq!(
            err("[1]"),
            "malformed request: the body must be a JSON object, not a list"
        );
        assert_eq!(
            err("\u{0}"),
            "malformed request: expected value at line 1 column 1"
        );
    }

    #[test]
    fn query_strings_repeat_into_lists() {
        let v = query_object(vec![
            ("a".into(), "1".into()),
            ("b".into(), "x".into()),
            ("b".into(), "y".into()),
        ]);
        assert_eq!(v, serde_json::json!({"a": "1", "b": ["x", "y"]}));
    }
}
