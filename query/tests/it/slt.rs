//! Runs the sqllogictest files in `query/tests/slt/` against fixture stores.
//!
//! A file whose first line is `# store: empty` runs on an empty store; every other file on the
//! demo store (tests/it/fixture.rs). `RUNQL_SLT_COMPLETE=1 cargo test -p runql-query --test it
//! slt` rewrites the expected results from what the engine returns: review the diff.

use std::path::PathBuf;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use runql_core::Store;
use runql_query::Engine;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::fixture;

struct Db {
    engine: Engine,
}

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = runql_query::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, runql_query::Error> {
        let df = self.engine.sql(sql).await?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        Ok(DBOutput::Rows {
            types,
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "runql"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn column_type(t: &DataType) -> DefaultColumnType {
    if t.is_integer() {
        DefaultColumnType::Integer
    } else if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, runql_query::Error> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| runql_query::Error::Query(e.into()))?;
        for row in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(row).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

fn wants_empty(path: &PathBuf) -> bool {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .is_some_and(|l| l.trim() == "# store: empty")
}

#[test]
fn slt() {
    let demo = fixture::demo();
    let empty = fixture::empty();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let complete = std::env::var_os("RUNQL_SLT_COMPLETE").is_some();
    let mut failures = Vec::new();
    for file in slt_files() {
        let store: Store = if wants_empty(&file) {
            empty.store.clone()
        } else {
            demo.store.clone()
        };
        let result = rt.block_on(async {
            let make = || {
                let store = store.clone();
                async move {
                    Ok::<_, runql_query::Error>(Db {
                        engine: Engine::new(store).await?,
                    })
                }
            };
            let mut runner = sqllogictest::Runner::new(make);
            if complete {
                runner
                    .update_test_file(
                        &file,
                        " ",
                        sqllogictest::default_validator,
                        sqllogictest::default_normalizer,
                        sqllogictest::default_column_validator,
                    )
                    .await
                    .map_err(|e| e.to_string())
            } else {
                runner
                    .run_file_async(&file)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        if let Err(e) = result {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
