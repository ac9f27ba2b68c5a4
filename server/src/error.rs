//! The server's one error type. Every route answers errors in MLflow's shape,
//! `{"error_code": "...", "message": "..."}`, so that one client-side handler serves both APIs;
//! the variant decides the HTTP status and the code. Store and query errors are mapped here
//! once, by their variant, never by their text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth::Denied;

/// What went wrong with a request, as the client will read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong: a missing or mistyped field, a bad value (400,
    /// `INVALID_PARAMETER_VALUE`).
    #[error("{0}")]
    Invalid(String),
    /// What the request creates exists already (400, `RESOURCE_ALREADY_EXISTS`).
    #[error("{0}")]
    AlreadyExists(String),
    /// What the request names does not exist (404, `RESOURCE_DOES_NOT_EXIST`).
    #[error("{0}")]
    NotFound(String),
    /// No route answers this path (404, `ENDPOINT_NOT_FOUND`).
    #[error("{0}")]
    NoEndpoint(String),
    /// No or unknown credentials (401, `UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// Known credentials, not allowed to do this — or a request from another site's page
    /// (403, `PERMISSION_DENIED`).
    #[error("{0}")]
    Forbidden(String),
    /// The client accepts no format the route answers in (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The body is not of a content type the route takes (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request or its answer is larger than a limit of the server (413,
    /// `RESOURCE_LIMIT_EXCEEDED`).
    #[error("{0}")]
    TooLarge(String),
    /// A query ran past the server's time limit (504, `DEADLINE_EXCEEDED`).
    #[error("{0}")]
    Timeout(String),
    /// The store cannot be reached right now; the client should retry (503,
    /// `TEMPORARILY_UNAVAILABLE`, which MLflow clients retry with backoff).
    #[error("{0}")]
    Unavailable(String),
    /// A bug in runql, or a store that broke its own rules (500, `INTERNAL_ERROR`).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// `ApiError::Invalid` from anything that displays.
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid(message.into())
    }

    /// `ApiError::Internal` from anything that displays.
    pub(crate) fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(message.to_string())
    }

    /// `ApiError::NotFound`.
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(message.into())
    }

    /// MLflow's wording for a required parameter that is missing (or empty).
    pub(crate) fn missing(param: &str) -> ApiError {
        ApiError::Invalid(format!(
            "Missing value for required parameter '{param}'. {SEE_DOCS}"
        ))
    }

    /// MLflow's wording for a parameter of the wrong type.
    pub(crate) fn mistyped(param: &str, given: &serde_json::Value) -> ApiError {
        ApiError::Invalid(format!(
            "Invalid value {} for parameter '{param}' supplied:  Hint: Value was of type '{}'. {SEE_DOCS}",
            short(given),
            python_type(given)
        ))
    }

    /// The HTTP status and MLflow error code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE"),
            ApiError::AlreadyExists(_) => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
            ApiError::NoEndpoint(_) => (StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            ApiError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "INVALID_PARAMETER_VALUE"),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_PARAMETER_VALUE",
            ),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_LIMIT_EXCEEDED"),
            // Not 408: browsers retry a 408 by themselves, and would run a hostile query twice.
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
            ApiError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }
}

/// MLflow's closing words on a request parameter error.
pub(crate) const SEE_DOCS: &str = "See the API docs for more information about request parameters.";

/// The name Python gives the type of a JSON value (MLflow's errors say it).
fn python_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "NoneType",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_f64() => "float",
        serde_json::Value::Number(_) => "int",
        serde_json::Value::String(_) => "str",
        serde_json::Value::Array(_) => "list",
        serde_json::Value::Object(_) => "dict",
    }
}

/// A value as MLflow quotes it in errors, cut short.
fn short(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code, message = %self, "request failed");
        }
        let body = serde_json::json!({"error_code": code, "message": self.to_string()});
        (status, axum::Json(body)).into_response()
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        match d {
            Denied::Unauthenticated(m) => ApiError::Unauthenticated(m),
            Denied::Forbidden(m) => ApiError::Forbidden(m),
        }
    }
}

impl From<runql_core::Error> for ApiError {
    fn from(e: runql_core::Error) -> ApiError {
        use runql_core::Error as E;
        match e {
            // MLflow's wording: clients and tests match it.
            E::RunNotFound { run_id, .. } => {
                ApiError::NotFound(format!("Run '{run_id}' not found"))
            }
            E::ProjectNotFound { .. } => ApiError::NotFound(e.to_string()),
            E::InvalidName { .. }
            | E::InvalidValue { .. }
            | E::ParamChanged { .. }
            | E::ArtifactPath { .. }
            | E::RunFinished { .. } => ApiError::Invalid(e.to_string()),
            // The store is unreachable: the MLflow client retries 503s with backoff.
            E::StoreUnavailable { .. } | E::OutageBufferFull { .. } => {
                ApiError::Unavailable(e.to_string())
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<runql_query::Error> for ApiError {
    fn from(e: runql_query::Error) -> ApiError {
        if e.is_internal() {
            return ApiError::Internal(e.to_string());
        }
        match e {
            // A store error met while answering SQL means what it means on the MLflow routes.
            runql_query::Error::Store(core) => ApiError::from(core),
            other => ApiError::Invalid(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::Internal(format!("a server task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_a_503_on_every_route_kind() {
        let outage = || runql_core::Error::StoreUnavailable {
            run_id: "r".into(),
            secs: 3,
            reason: "connection refused".into(),
            pending: "1 KiB".into(),
        };
        let from_core = ApiError::from(outage());
        let from_sql = ApiError::from(runql_query::Error::Store(outage()));
        for e in [from_core, from_sql] {
            assert_eq!(
                e.status_and_code(),
                (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE")
            );
        }
    }

    #[test]
    fn a_missing_run_is_worded_as_mlflow_words_it() {
        let e = ApiError::from(runql_core::Error::RunNotFound {
            run_id: "abc".into(),
            project: None,
        });
        assert_eq!(e, ApiError::NotFound("Run 'abc' not found".into()));
    }
}
