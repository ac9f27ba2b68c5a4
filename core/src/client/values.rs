//! Plain values a run takes or gives, shared by the run API, its buffer and its writer (a
//! leaf: it imports none of them): a dataset it used, an artifact it logged, and how its
//! writer is doing with the store.

use std::time::Duration;

/// A dataset a run used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub name: String,
    pub uri: Option<String>,
    pub digest: Option<String>,
    /// train, eval, test…
    pub role: Option<String>,
}

impl Input {
    pub fn new(name: impl Into<String>) -> Self {
        Input {
            name: name.into(),
            ..Input::default()
        }
    }
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }
    pub fn digest(mut self, digest: impl Into<String>) -> Self {
        self.digest = Some(digest.into());
        self
    }
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }
}

/// An artifact as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub path: String,
    pub digest: String,
    pub size: u64,
    pub media_type: Option<String>,
    pub created: i64,
}

/// How a run's writer is doing with the store: see [`Run::health`](super::Run::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunHealth {
    /// How long the store has been unreachable; `None` when the last write went through.
    pub unreachable_for: Option<Duration>,
    /// The last error the store gave, while it is unreachable.
    pub last_error: Option<String>,
    /// Bytes of logged data waiting in memory for the store.
    pub pending_bytes: u64,
    /// The bound on `pending_bytes`
    /// ([`RunBuilder::outage_buffer`](super::RunBuilder::outage_buffer)).
    pub outage_buffer: u64,
}

impl RunHealth {
    /// True when everything handed to the writer has reached the store.
    pub fn is_ok(&self) -> bool {
        self.unreachable_for.is_none() && self.pending_bytes == 0
    }
}

/// What one request logs into a run at once ([`Run::log_batch`](super::Run::log_batch)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch<'a> {
    /// `(key, step, value, ts µs)`.
    pub metrics: Vec<(&'a str, i64, f64, i64)>,
    pub params: Vec<(&'a str, &'a str)>,
    pub tags: Vec<(&'a str, &'a str)>,
    /// System metric samples another process took: `(key, ts µs, value)`.
    pub system: Vec<(&'a str, i64, f64)>,
}
