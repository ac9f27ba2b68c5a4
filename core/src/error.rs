//! The error type of `runql-core`: every variant says what failed, with which input, and what
//! to do about it. User mistakes (bad keys, unknown runs, a store written by a newer runql) are
//! kept apart from I/O failures and from `Internal` (a bug in runql).

use std::path::PathBuf;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `runql-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store URL could not be understood or opened.
    #[error("cannot open store {url:?}: {reason}")]
    StoreUrl { url: String, reason: String },

    /// The store was written by a newer runql whose format this build cannot read.
    #[error(
        "store {url:?} has format version {found}, this runql reads up to version {supported}: upgrade runql"
    )]
    NewerStore {
        url: String,
        found: u32,
        supported: u32,
    },

    /// A name (project, metric key, param key, tag key…) is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },

    /// A value is not acceptable (too long, wrong shape…).
    #[error("invalid {what}: {reason}")]
    InvalidValue { what: &'static str, reason: String },

    /// A param was logged twice in one run with different values; params are immutable.
    #[error(
        "param {key:?} of run {run_id} was already logged as {old:?}; it cannot change to {new:?} (log a metric or a tag for values that change)"
    )]
    ParamChanged {
        run_id: String,
        key: String,
        old: String,
        new: String,
    },

    /// An artifact path is absolute or escapes the run with `..`.
    #[error(
        "artifact path {path:?} is not allowed: {reason} (use a relative path inside the run, like \"models/best.pt\")"
    )]
    ArtifactPath { path: String, reason: String },

    /// A local file given to the client could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// No project of that name exists in the store.
    #[error("project {project:?} does not exist in store {store}")]
    ProjectNotFound { project: String, store: String },

    /// No run with that id exists (in that project, when one was given).
    #[error("run {run_id:?} does not exist{}", in_project(project))]
    RunNotFound {
        run_id: String,
        project: Option<String>,
    },

    /// The background writer of a run failed; what was logged after the failure is lost.
    #[error("run {run_id}: the background writer failed: {reason}")]
    Writer { run_id: String, reason: String },

    /// The store cannot be reached by a run's writer: what was logged waits in memory and is
    /// written when the store is back (see `Run::health`).
    #[error(
        "run {run_id}: the store has been unreachable for {secs} s ({reason}); {pending} of logged data waits in memory and is written when the store is back"
    )]
    StoreUnavailable {
        run_id: String,
        secs: u64,
        reason: String,
        pending: String,
    },

    /// The store has been unreachable so long that a run's outage buffer filled up: the value
    /// was not recorded.
    #[error(
        "run {run_id}: the store has been unreachable for {secs} s ({reason}) and the run's outage buffer ({bound}) is full, so this value was not recorded; logging works again once the store is back (a larger buffer: RunBuilder::outage_buffer)"
    )]
    OutageBufferFull {
        run_id: String,
        secs: u64,
        reason: String,
        bound: String,
    },

    /// The run was already finished; nothing more can be logged to it.
    #[error("run {run_id} is already finished")]
    RunFinished { run_id: String },

    /// An object in the store could not be decoded.
    #[error("corrupt object {path} in the store: {reason}")]
    Corrupt { path: String, reason: String },

    /// A storage operation failed.
    #[error("storage error on {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// Arrow encoding or decoding failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Parquet encoding or decoding failed.
    #[error("parquet error on {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// A bug in runql: please report it.
    #[error("internal error (a bug in runql, please report it): {0}")]
    Internal(String),
}

fn in_project(project: &Option<String>) -> String {
    match project {
        Some(p) => format!(" in project {p:?}"),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn storage(path: impl std::fmt::Display, source: object_store::Error) -> Self {
        Error::Storage {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn parquet(
        path: impl std::fmt::Display,
        source: parquet::errors::ParquetError,
    ) -> Self {
        Error::Parquet {
            path: path.to_string(),
            source,
        }
    }

    /// An object of the store that cannot be read as what it should be.
    pub fn corrupt(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    /// True when the error means "this thing does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::ProjectNotFound { .. }
                | Error::RunNotFound { .. }
                | Error::Storage {
                    source: object_store::Error::NotFound { .. },
                    ..
                }
        )
    }
}
