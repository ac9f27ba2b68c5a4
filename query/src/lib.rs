//! SQL over every run of a runql store, with Apache DataFusion.
//!
//! [`Engine::open`] gives a DataFusion session whose default schema holds the store's tables
//! (`runs`, `params`, `tags`, `metrics`, `system_metrics`, `artifacts`, `logs`, `inputs`,
//! `metric_summary`) over every project, live segments and compacted Parquet together, plus the
//! pivot tables `params_wide` and `metrics_wide`, the table function `curves(points)` and the
//! aggregate `sparkline(step, value)`.
//! Filters on `project`, `run_id` and `key` prune what is read before any file is opened.
//! With the `ballista` feature, [`Engine::ballista`] runs the same SQL on an Apache DataFusion
//! Ballista cluster over the store's compacted Parquet.
//! docs/sql.md lists every table, column and function, with worked examples.

mod catalog;
mod coop;
#[cfg(feature = "ballista")]
mod distributed;
mod engine;
mod error;
mod functions;
mod live;
mod projects;
mod pushdown;
pub mod reference;
mod sparkline;
mod table;
mod wide;

#[cfg(feature = "ballista")]
pub use distributed::{BallistaNotes, ballista_url};
pub use engine::{CATALOG, Engine, EngineBuilder, SCHEMA};
pub use error::{Error, Result};
pub use pushdown::Pushdown;
pub use table::{ExtensionTable, StoreTable};

/// DataFusion, as this crate uses it: build on the same version.
pub use datafusion;
