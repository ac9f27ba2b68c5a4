//! Tests of the `runql` binary: one binary, one module per concern.
#![allow(clippy::unwrap_used)]

mod cli;
mod dashboard;
mod mlflow;
mod shell;
mod wrap;
