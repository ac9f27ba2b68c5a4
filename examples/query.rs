//! Embedding runql's SQL engine in a Rust program.
//!
//! ```sh
//! cargo run --example query                 # a small in-memory store, filled by this example
//! cargo run --example query -- ~/.runql     # your own store (after `cargo run --example train`)
//! ```
//!
//! Shows the three ways in: SQL returning Arrow batches, a DataFusion DataFrame, and a table of
//! your own registered beside runql's and joined with them.

use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::pretty::print_batches;
use runql_core::{Capture, Store};
use runql_query::Engine;
use runql_query::datafusion::datasource::MemTable;
use runql_query::datafusion::prelude::{col, lit};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = match std::env::args().nth(1) {
        Some(url) => Store::open(&url)?,
        None => demo_store()?,
    };
    let engine = Engine::new(store).await?;

    // 1. SQL in, Arrow batches out.
    println!("Final val/loss of every run, best first:");
    let best = engine
        .query(
            "SELECT r.project, r.name, s.last_value AS final, s.min AS best, s.count AS points
             FROM metric_summary s JOIN runs r USING (project, run_id)
             WHERE s.key = 'val/loss'
             ORDER BY s.last_value LIMIT 5",
        )
        .await?;
    print_batches(&best)?;

    // 2. A DataFrame: compose the query with DataFusion's API instead of a string.
    println!("\nParams of runs with a learning rate above 0.01:");
    let df = engine
        .sql("SELECT run_id, key, value, value_num FROM params")
        .await?
        .filter(col("key").eq(lit("lr")).and(col("value_num").gt(lit(0.01))))?
        .sort(vec![col("value_num").sort(false, true)])?;
    df.show().await?;

    // 3. Your own table beside runql's: loss targets per metric key.
    let targets = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("target", DataType::Float64, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["val/loss", "train/loss"])),
            Arc::new(Float64Array::from(vec![0.45, 0.4])),
        ],
    )?;
    engine.register_table(
        "targets",
        Arc::new(MemTable::try_new(targets.schema(), vec![vec![targets]])?),
    )?;
    println!("\nRuns that met their target:");
    let met = engine
        .query(
            "SELECT s.run_id, s.key, s.last_value, t.target
             FROM metric_summary s JOIN targets t ON s.key = t.key
             WHERE s.last_value <= t.target ORDER BY s.run_id, s.key",
        )
        .await?;
    print_batches(&met)?;
    Ok(())
}

/// An in-memory store with a three-run learning-rate sweep.
fn demo_store() -> Result<Store, Box<dyn std::error::Error>> {
    let store = Store::open("memory://")?;
    let project = store.project("demo");
    for lr in [0.003f64, 0.03, 0.3] {
        let run = project
            .run()
            .name(format!("lr={lr}"))
            .capture(Capture::none())
            .start()?;
        run.log_param("lr", lr)?;
        for step in 0..100 {
            let x = step as f64;
            let loss: f64 = 0.3 + (1.0 - lr) * (1.0 - lr) * (-x * lr * 2.0).exp();
            run.log_metric("train/loss", step, loss)?;
            run.log_metric("val/loss", step, loss + 0.05)?;
        }
        run.finish()?;
    }
    Ok(store)
}
