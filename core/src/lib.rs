//! runql-core: the data model, the Arrow schema of every table, the crash-safe store over
//! `object_store`, and the Rust client that logs runs into it.
//!
//! ```text
//! client (Run) ──segments──▶ store (object_store: local, s3, gs, az, memory)
//!                                │  compaction: segments ─▶ Parquet + manifest
//! readers (scan, list_runs) ◀────┘
//! ```
//!
//! Start with [`Store::open`], [`Store::project`] and [`Project::run`]; read back with
//! [`Store::list_runs`], [`Store::read_run`] and [`Store::scan`].

pub mod capture;
pub mod client;
pub mod error;
pub mod model;
pub mod schema;
pub mod store;
pub mod sysmetrics;

pub use capture::Capture;
pub use client::{
    Artifact, Batch, Input, MetricKey, Project, Run, RunBuilder, RunHealth, Source, Wal,
};
pub use error::{Error, Result};
pub use model::{RunId, RunRecord, RunStatus};
pub use schema::Table;
pub use store::{Scan, Store};

/// Runs a future to completion on a small runtime of its own: the bridge from synchronous
/// code (examples, scripts, tests) to the store's async reading API. Do not call it from
/// inside an async runtime.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        // Building a current-thread runtime only fails when the OS refuses resources.
        Err(e) => panic!("cannot start a tokio runtime: {e}"),
    }
}
