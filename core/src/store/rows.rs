//! Rows of the core tables as Arrow: checked column accessors (an error that names the column
//! and the table, not a panic, when a column is missing or of another type), run records to
//! and from `runs` rows,
//! and the tables' "later event wins" rules ([`resolve`]). A leaf module: it uses no other
//! module of the store, so that every reader and writer of rows can use it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Int64Array, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Schema;

use crate::error::{Error, Result};
use crate::model::{RunRecord, TAG_TOMBSTONE};
use crate::schema::Table;

/// Applies the table's "later event wins" rules to rows read in write order: one row per run
/// and key in `tags` (the last set; none when that was a deletion, [`TAG_TOMBSTONE`]) and
/// `params` (the first logged), and one row per run in `runs` (the newest record: compacted
/// files come in manifest order, live records last).
pub fn resolve(table: Table, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    resolve_keeping(table, batches, |_| false)
}

/// [`resolve`], keeping the deletions of the runs `keep_deletions` names: a compaction writes
/// those of runs whose older rows sit in files compacted before, so that they stay hidden.
pub(crate) fn resolve_keeping(
    table: Table,
    batches: Vec<RecordBatch>,
    keep_deletions: impl Fn(&str) -> bool,
) -> Result<Vec<RecordBatch>> {
    let (keep_last, by_key) = match table {
        Table::Runs => (true, false),
        Table::Tags => (true, true),
        Table::Params => (false, true),
        _ => return Ok(batches),
    };
    let mut winner: HashMap<(String, String), (usize, usize)> = HashMap::new();
    for (bi, b) in batches.iter().enumerate() {
        let runs = string_column(b, "run_id")?;
        let keys = if by_key {
            Some(string_column(b, "key")?)
        } else {
            None
        };
        for row in 0..b.num_rows() {
            let key = keys.map(|k| k.value(row).to_string()).unwrap_or_default();
            let k = (runs.value(row).to_string(), key);
            if keep_last {
                winner.insert(k, (bi, row));
            } else {
                winner.entry(k).or_insert((bi, row));
            }
        }
    }
    let mut keep: Vec<Vec<bool>> = batches.iter().map(|b| vec![false; b.num_rows()]).collect();
    let values = match table {
        Table::Tags => Some(
            batches
                .iter()
                .map(|b| string_column(b, "value"))
                .collect::<Result<Vec<_>>>()?,
        ),
        _ => None,
    };
    for ((run, _), (bi, row)) in winner {
        let deleted = values
            .as_ref()
            .is_some_and(|v| v[bi].value(row) == TAG_TOMBSTONE);
        keep[bi][row] = !deleted || keep_deletions(&run);
    }
    batches
        .iter()
        .zip(keep)
        .map(|(b, m)| Ok(filter_record_batch(b, &BooleanArray::from(m))?))
        .filter(|b: &Result<RecordBatch>| b.as_ref().map_or(true, |b| b.num_rows() > 0))
        .collect()
}

/// The `Utf8` column `name` of `batch`; an internal error naming the column and the table when
/// it is missing or of another type.
pub fn string_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column(batch, name, "Utf8")
}

/// The `Int64` column `name` of `batch` (checked like [`string_column`]).
pub fn i64_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    column(batch, name, "Int64")
}

/// The `Float64` column `name` of `batch` (checked like [`string_column`]).
pub fn f64_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float64Array> {
    column(batch, name, "Float64")
}

/// The timestamp column `name` of `batch`, microseconds since the epoch (checked like
/// [`string_column`]).
pub fn timestamp_column<'a>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a TimestampMicrosecondArray> {
    column(batch, name, "Timestamp(µs)")
}

/// The `Boolean` column `name` of `batch` (checked like [`string_column`]).
pub fn boolean_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray> {
    column(batch, name, "Boolean")
}

/// The column `name` of `batch` as the array type `A` (`expected` names its Arrow type).
fn column<'a, A: Array + 'static>(
    batch: &'a RecordBatch,
    name: &str,
    expected: &str,
) -> Result<&'a A> {
    let Some(col) = batch.column_by_name(name) else {
        return Err(Error::Internal(format!(
            "column {name:?} of {} is missing",
            rows_of(batch)
        )));
    };
    col.as_any().downcast_ref::<A>().ok_or_else(|| {
        Error::Internal(format!(
            "column {name:?} of {} is {}, not {expected}",
            rows_of(batch),
            col.data_type()
        ))
    })
}

/// What `batch` holds, for an error: the core table whose columns (as readers return them, or
/// as a live segment stores them) are the batch's, or else the batch's columns.
fn rows_of(batch: &RecordBatch) -> String {
    let names =
        |s: &Schema| -> Vec<String> { s.fields().iter().map(|f| f.name().clone()).collect() };
    let ours = names(batch.schema_ref());
    for table in Table::ALL {
        if names(&table.schema()) == ours {
            return format!("table {table}");
        }
        if names(&table.segment_schema()) == ours {
            return format!("a live segment of table {table}");
        }
    }
    format!("a batch of columns ({})", ours.join(", "))
}

/// The `runs` table rows of some records.
pub fn records_to_batch(records: &[RunRecord]) -> Result<RecordBatch> {
    let schema = Table::Runs.schema();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let name = field.name().as_str();
        let col: ArrayRef = match name {
            "git_dirty" | "deleted" => {
                let mut b = BooleanBuilder::with_capacity(records.len());
                for r in records {
                    b.append_option(if name == "deleted" {
                        Some(r.deleted)
                    } else {
                        r.git_dirty
                    });
                }
                Arc::new(b.finish())
            }
            "created" | "started" | "ended" | "heartbeat" => {
                let mut b =
                    TimestampMicrosecondBuilder::with_capacity(records.len()).with_timezone("UTC");
                for r in records {
                    b.append_option(match name {
                        "created" => Some(r.created),
                        "started" => r.started,
                        "ended" => r.ended,
                        _ => r.heartbeat,
                    });
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::new();
                for r in records {
                    let v: Option<&str> = match name {
                        "project" => Some(&r.project),
                        "run_id" => Some(&r.run_id),
                        "name" => r.name.as_deref(),
                        "status" => Some(r.status.as_str()),
                        "parent_run_id" => r.parent_run_id.as_deref(),
                        "run_group" => r.run_group.as_deref(),
                        "username" => r.username.as_deref(),
                        "hostname" => r.hostname.as_deref(),
                        "command" => r.command.as_deref(),
                        "git_commit" => r.git_commit.as_deref(),
                        "git_branch" => r.git_branch.as_deref(),
                        other => {
                            return Err(Error::Internal(format!(
                                "runs column {other} has no source"
                            )));
                        }
                    };
                    b.append_option(v);
                }
                Arc::new(b.finish())
            }
        };
        columns.push(col);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Run records out of a batch of the `runs` table.
pub fn records_from_batch(batch: &RecordBatch) -> Result<Vec<RunRecord>> {
    let s = |name: &str| string_column(batch, name);
    let ts = |name: &str| timestamp_column(batch, name);
    let b = |name: &str| boolean_column(batch, name);
    let (project, run_id, name, status, parent, group) = (
        s("project")?,
        s("run_id")?,
        s("name")?,
        s("status")?,
        s("parent_run_id")?,
        s("run_group")?,
    );
    let (user, host, command, commit, branch) = (
        s("username")?,
        s("hostname")?,
        s("command")?,
        s("git_commit")?,
        s("git_branch")?,
    );
    let (created, started, ended, heartbeat) = (
        ts("created")?,
        ts("started")?,
        ts("ended")?,
        ts("heartbeat")?,
    );
    let (dirty, deleted) = (b("git_dirty")?, b("deleted")?);
    let opt_s = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let opt_t = |a: &TimestampMicrosecondArray, i: usize| a.is_valid(i).then(|| a.value(i));
    (0..batch.num_rows())
        .map(|i| {
            Ok(RunRecord {
                project: project.value(i).to_string(),
                run_id: run_id.value(i).to_string(),
                name: opt_s(name, i),
                status: status.value(i).parse()?,
                parent_run_id: opt_s(parent, i),
                run_group: opt_s(group, i),
                username: opt_s(user, i),
                hostname: opt_s(host, i),
                command: opt_s(command, i),
                git_commit: opt_s(commit, i),
                git_branch: opt_s(branch, i),
                git_dirty: dirty.is_valid(i).then(|| dirty.value(i)),
                created: created.value(i),
                started: opt_t(started, i),
                ended: opt_t(ended, i),
                heartbeat: opt_t(heartbeat, i),
                deleted: deleted.is_valid(i) && deleted.value(i),
                // Not a column: readers applied it already (the status is the effective one).
                silent_after: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_accessors_name_the_column_and_table_they_miss() {
        let record = RunRecord::new("p", crate::model::RunId::new(), 7);
        let runs = records_to_batch(&[record]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            string_column(&runs, "project")
                .unwrap_or_else(|e| panic!("{e}"))
                .value(0),
            "p"
        );
        assert_eq!(
            timestamp_column(&runs, "created")
                .unwrap_or_else(|e| panic!("{e}"))
                .value(0),
            7
        );
        let missing = i64_column(&runs, "step")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains(r#"column "step" of table runs is missing"#),
            "{missing}"
        );
        let wrong = f64_column(&runs, "name")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains(r#"column "name" of table runs is Utf8, not Float64"#),
            "{wrong}"
        );
        let wrong = string_column(&runs, "deleted")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("is Boolean, not Utf8"), "{wrong}");
        let part = runs.project(&[0, 1]).unwrap_or_else(|e| panic!("{e}"));
        let other = boolean_column(&part, "deleted")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            other.contains("of a batch of columns (project, run_id) is missing"),
            "{other}"
        );
    }
}
