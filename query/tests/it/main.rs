//! runql-query's integration tests: one binary, one module per concern.
#![allow(clippy::unwrap_used)]

mod deleted;
mod docs;
mod errors;
mod extension_compaction;
mod fixture;
mod projects;
mod pruning;
mod slt;
