//! runql-server over real HTTP: a server on a loopback port, a reqwest client.
#![allow(clippy::unwrap_used)]

mod compaction;
mod events;
mod hostile;
mod mlflow_parity;
mod mlflow_routes;
mod scale;
mod security;
mod sql;
mod util;
