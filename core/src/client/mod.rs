//! The Rust client: log runs from a training loop.
//!
//! Logging never waits on I/O. Values go into an in-memory buffer under a short lock; a
//! background writer thread per run flushes the buffer to a live segment at least every
//! `flush_interval` (1 s by default), or as soon as it holds [`CHUNK_POINTS`] metric points.
//! Memory is bounded: when the writer falls [`MAX_PENDING_CHUNKS`] chunks behind, logging
//! waits for it (backpressure) instead of growing without limit.
//!
//! ```no_run
//! # fn main() -> runql_core::Result<()> {
//! let store = runql_core::Store::open("/tmp/runql-demo")?;
//! let run = store.project("mnist").run().name("baseline").start()?;
//! run.log_params([("lr", "0.01"), ("batch", "64")])?;
//! for step in 0..100 {
//!     run.log_metric("train/loss", step, 1.0 / (step as f64 + 1.0))?;
//! }
//! run.finish()?;
//! # Ok(()) }
//! ```
//!
//! When the store is unreachable (an object store's outage, a full disk), the writer keeps
//! what was logged in memory, retries with backoff and says so ([`Run::health`], a warning in
//! the log, an error from [`Run::flush`]); nothing is lost once the store is back, as long as
//! the buffer stays under its bound ([`RunBuilder::outage_buffer`], 256 MiB by default). Past
//! the bound, logging calls fail with [`Error::OutageBufferFull`](crate::Error::OutageBufferFull)
//! (the values are not kept) until the store is back. [`Run::finish`] waits for the store up to
//! [`RunBuilder::finish_timeout`].
//!
//! A run dropped without [`Run::finish`] is marked `failed` when the thread is panicking and
//! `killed` otherwise; a process that dies without dropping it stops sending heartbeats, and
//! readers mark the run `crashed` once its heartbeat is stale.
//!
//! One module per concern: `builder` configures and starts a run (or resumes one), `run` is the
//! handle loggers call, `buffer` is the hot path those calls fill, `writer` is the thread that
//! writes it to the store (and waits out outages), `encode` turns a chunk into segment
//! batches, and `sampler` takes system metrics in the background.

mod buffer;
mod builder;
mod encode;
mod run;
mod sampler;
mod values;
mod wal;
mod writer;

pub use buffer::{CHUNK_POINTS, MAX_PENDING_CHUNKS};
pub use builder::{DEFAULT_FINISH_TIMEOUT, DEFAULT_OUTAGE_BUFFER, Project, RunBuilder, Source};
pub use run::{MetricKey, NOTE_TAG, Run};
pub use values::{Artifact, Batch, Input, RunHealth};
pub use wal::{Lsn, Recovered, Wal};
