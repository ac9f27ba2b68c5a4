//! runql's plugin host: WebAssembly components (the contract is `plugins/wit/plugin.wit`) run
//! by wasmtime in a sandbox, kept in the store, and used to ingest files into it.
//!
//! - [`sandbox`]: the engine, the limits (memory, CPU time, output size), a WASI context that
//!   grants nothing, compiled-component caching, and one call into a plugin.
//! - [`registry`]: installed plugins (in the store, pinned by sha256) and the first-party ones
//!   that ship inside runql.
//! - [`ingest`]: a file through a plugin into the store: plugin tables as extension tables,
//!   core rows as runs, all or nothing, and never twice for the same file.

pub mod ingest;
pub mod registry;
pub mod sandbox;

pub use ingest::{IngestReport, Ingester};
pub use registry::{InstalledPlugin, Registry};
pub use sandbox::{Limits, PluginInfo, Sandbox, TableInfo};

/// What went wrong with a plugin or an ingest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plugin broke a sandbox limit (CPU time, memory, output size).
    #[error(
        "plugin {plugin}: {limit} limit exceeded ({detail}); raise it with {flag} if the input is legitimately this large"
    )]
    Limit {
        plugin: String,
        limit: &'static str,
        detail: String,
        flag: &'static str,
    },
    /// The plugin trapped (a panic, an out-of-bounds access…).
    #[error("plugin {plugin} crashed: {message}")]
    Trap { plugin: String, message: String },
    /// The plugin refused the input (its own error message: file and position).
    #[error("{file}: {message} (plugin {plugin})")]
    Input {
        plugin: String,
        file: String,
        message: String,
    },
    /// The plugin answered something the contract does not allow.
    #[error("plugin {plugin} broke the contract: {message}")]
    Contract { plugin: String, message: String },
    /// The file is not a component runql can load (or asks for more than runql grants).
    #[error("{what} is not a usable runql plugin: {message}")]
    Invalid { what: String, message: String },
    /// No plugin by that name.
    #[error("no plugin named {name:?} (runql plugin list shows the installed ones)")]
    Unknown { name: String },
    /// Reading an input file.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] runql_core::Error),
    /// A bug in runql, not in the plugin or the input.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
