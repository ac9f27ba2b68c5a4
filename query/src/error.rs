//! The query crate's errors: the user's (bad SQL, a refused statement, a store that cannot be
//! read) kept apart from runql's own bugs, which DataFusion reports as internal errors.

use datafusion::error::DataFusionError;

/// What went wrong running SQL over a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened or read (a bad URL, a missing permission, a corrupt file).
    #[error(transparent)]
    Store(#[from] runql_core::Error),
    /// The query is wrong (unknown table or column, a type error, bad syntax) or failed while
    /// running. The message is DataFusion's, which names the culprit.
    #[error("{0}")]
    Query(DataFusionError),
    /// A distributed engine (Ballista) could not be reached or set up; the message says why.
    #[error("{0}")]
    Distributed(String),
    /// A statement that would change something (DDL, DML, `COPY`), on a read-only engine.
    #[error(
        "{statement} is refused: runql's SQL is read-only. Query the store with SELECT (or \
         EXPLAIN, SHOW, DESCRIBE); log runs with the client or the server instead"
    )]
    ReadOnly {
        /// The kind of statement refused, e.g. `CREATE TABLE` or `INSERT`.
        statement: String,
    },
    /// A statement that only changes the session (`SET`, `PREPARE`…), in a session made for
    /// one statement: there is no later statement it could act on.
    #[error(
        "{statement} is refused here: every query runs in a session of its own, so there is no \
         later statement for it to act on. Put settings in the query itself, or use the `runql` \
         shell, whose session lasts"
    )]
    SessionStatement {
        /// The kind of statement refused, e.g. `SET VARIABLE`.
        statement: String,
    },
}

impl Error {
    /// Whether the error is runql's or DataFusion's bug rather than the user's input.
    pub fn is_internal(&self) -> bool {
        match self {
            Error::Query(e) => matches!(e.find_root(), DataFusionError::Internal(_)),
            Error::Store(runql_core::Error::Internal(_)) => true,
            _ => false,
        }
    }
}

impl Error {
    /// Whether the query names a table or schema the engine does not know. The store may have
    /// gained plugin tables since the engine opened it: [`crate::Engine::refresh_tables`] then
    /// finds them. DataFusion reports this as a planning error with no variant of its own, so
    /// its wording is read here, in one place (a test pins it).
    pub fn is_missing_table(&self) -> bool {
        match self {
            Error::Query(e) => match e.find_root() {
                DataFusionError::Plan(m) => {
                    m.contains("not found") && (m.contains("table '") || m.contains("schema '"))
                }
                _ => false,
            },
            _ => false,
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        // A store error raised inside a scan travels as an external error: give it back its type
        // so that callers see "cannot read s3://…" and not "External error: …".
        let is_store = matches!(e.find_root(), DataFusionError::External(inner)
            if inner.downcast_ref::<runql_core::Error>().is_some());
        if !is_store {
            return Error::Query(e);
        }
        match peel(e) {
            DataFusionError::External(inner) => match inner.downcast::<runql_core::Error>() {
                Ok(core) => Error::Store(*core),
                Err(other) => Error::Query(DataFusionError::External(other)),
            },
            other => Error::Query(other),
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Query(e.into())
    }
}

/// The error under any context wrappers.
fn peel(e: DataFusionError) -> DataFusionError {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => peel(*inner),
        DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
            Ok(inner) => peel(inner),
            Err(shared) => DataFusionError::Shared(shared),
        },
        other => other,
    }
}

/// `Result` with the query crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
