//! Tests of the `runql` binary: one binary, one module per concern.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "ballista")]
mod ballista;
mod cli;
mod dashboard;
mod durability;
mod flight;
mod hostile;
mod import;
mod mlflow;
mod postgres;
mod shell;
mod wrap;
