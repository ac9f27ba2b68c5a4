//! Running SQL for the commands and the shell: one statement to batches, a run id from its
//! prefix, SQL literals, and the terminal's width. A leaf module: the commands and the shell
//! both use it, and it uses neither.

use std::io::IsTerminal;

use anyhow::{Result, bail};
use arrow::array::{Array, RecordBatch};
use runql_query::Engine;
use tokio::runtime::Runtime;

/// A SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Plans and runs one statement.
pub async fn collect(
    engine: &Engine,
    sql: &str,
) -> Result<(arrow::datatypes::SchemaRef, Vec<RecordBatch>)> {
    let df = engine.sql(sql).await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(runql_query::Error::from)?;
    Ok((schema, batches))
}

/// The one run id that starts with `prefix`.
pub fn resolve_run(rt: &Runtime, engine: &Engine, prefix: &str) -> Result<String> {
    let (_, found) = rt.block_on(collect(
        engine,
        &format!(
            "SELECT run_id FROM runs WHERE starts_with(run_id, {}) ORDER BY run_id",
            quote(prefix)
        ),
    ))?;
    let ids: Vec<String> = found
        .iter()
        .flat_map(|b| {
            let c = arrow::array::AsArray::as_string::<i32>(b.column(0));
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    match ids.as_slice() {
        [] => bail!("no run id starts with {prefix:?}; `runql runs` lists them"),
        [one] => Ok(one.clone()),
        many => bail!(
            "{} runs start with {prefix:?} ({}…): give more of the id",
            many.len(),
            many.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

pub fn strings(batches: &[RecordBatch], col: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow::array::AsArray::as_string::<i32>(b.column(col));
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The last `n` characters of an id (UUIDv7s share their leading, time-ordered digits).
pub fn tail(id: &str, n: usize) -> String {
    let chars: Vec<char> = id.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// The terminal's width, when standard output is one.
pub fn terminal_width() -> Option<u16> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .or_else(|| comfy_table::Table::new().width())
}
