//! Integration tests of runql-core: one binary, one module per concern.
//!
//! Tests that need another process (crash, concurrency) re-run this binary as a child with
//! `RUNQL_TEST_CHILD` set; see `child.rs`.

// Tests may unwrap: a panic is a test failure with a message.
#![allow(clippy::unwrap_used)]

mod child;
mod compaction;
mod concurrency;
mod crash;
mod extension;
mod gc;
mod outage;
mod records;
mod roundtrip;
mod util;
mod wal;
