//! The Arrow schema of every table, defined once.
//!
//! Each table is a [`Table`] variant with a list of [`Column`]s (name, type, nullability and a
//! one-line meaning). Everything else derives from that list: the Arrow [`Schema`] that readers
//! return and Parquet files carry, the narrower schema of live segments (which leave out the
//! `project` and `run_id` columns their path already names), and the SQL reference in `docs/`.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Version of the on-store format written by this build. A store records the version it was
/// created with; this build reads every version up to this one. Version 2: a run's live objects
/// sit side by side in its folder (`live/<run>/meta.<id>.json`, `live/<run>/<table>.<writer>-<seq>.arrow`)
/// instead of in a sub-folder per kind.
pub const FORMAT_VERSION: u32 = 2;

/// A column of a table: its name, Arrow type, nullability and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
    pub doc: &'static str,
}

/// The logical types used by runql tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Utf8,
    Int64,
    Float64,
    Boolean,
    /// Microseconds since the Unix epoch, UTC.
    Timestamp,
}

impl Kind {
    /// The Arrow type of the column as readers return it.
    pub fn data_type(self) -> DataType {
        match self {
            Kind::Utf8 => DataType::Utf8,
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Boolean => DataType::Boolean,
            Kind::Timestamp => timestamp_type(),
        }
    }
}

/// `Timestamp(Microsecond, "UTC")`, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

const fn col(name: &'static str, kind: Kind, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        kind,
        nullable,
        doc,
    }
}

use Kind::*;

const PROJECT: Column = col("project", Utf8, false, "Project the run belongs to.");
const RUN_ID: Column = col(
    "run_id",
    Utf8,
    false,
    "Run id: a UUIDv7 as 32 lowercase hex digits (MLflow's run id form).",
);

const RUNS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col("name", Utf8, true, "Human-readable run name."),
    col(
        "status",
        Utf8,
        false,
        "running, finished, failed, killed, or crashed (writer stopped sending heartbeats).",
    ),
    col(
        "parent_run_id",
        Utf8,
        true,
        "Parent run (a sweep's trials are child runs of the sweep).",
    ),
    col(
        "run_group",
        Utf8,
        true,
        "Group the run belongs to (e.g. one per seed set or experiment).",
    ),
    col("username", Utf8, true, "User who started the run."),
    col("hostname", Utf8, true, "Host the run was started on."),
    col(
        "command",
        Utf8,
        true,
        "Command line of the process that logged the run.",
    ),
    col(
        "git_commit",
        Utf8,
        true,
        "Git commit (HEAD) of the working directory.",
    ),
    col("git_branch", Utf8, true, "Git branch, when HEAD is on one."),
    col(
        "git_dirty",
        Boolean,
        true,
        "Whether the working tree had uncommitted changes.",
    ),
    col("created", Timestamp, false, "When the run was created."),
    col("started", Timestamp, true, "When the run started."),
    col(
        "ended",
        Timestamp,
        true,
        "When the run ended (null while running or crashed).",
    ),
    col(
        "heartbeat",
        Timestamp,
        true,
        "Last sign of life from the run's writer.",
    ),
    col(
        "deleted",
        Boolean,
        false,
        "Soft-deleted (MLflow's delete_run); restorable.",
    ),
];

const PARAMS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col("key", Utf8, false, "Parameter name."),
    col("value", Utf8, false, "Value exactly as logged."),
    col(
        "value_num",
        Float64,
        true,
        "The value as a number, when it parses as one.",
    ),
];

const TAGS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col("key", Utf8, false, "Tag name."),
    col("value", Utf8, false, "Tag value (the latest one set)."),
];

const METRICS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col("key", Utf8, false, "Metric name, e.g. train/loss."),
    col(
        "step",
        Int64,
        false,
        "Training step (0 when none was given).",
    ),
    col("ts", Timestamp, false, "When the value was logged."),
    col(
        "value",
        Float64,
        false,
        "The value; NaN, ±inf and -0.0 are kept exactly.",
    ),
];

const SYSTEM_METRICS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col(
        "key",
        Utf8,
        false,
        "cpu.util, mem.rss, disk.read_bytes, net.rx_bytes, gpu.0.util, …",
    ),
    col("ts", Timestamp, false, "When the sample was taken."),
    col(
        "value",
        Float64,
        false,
        "The sampled value (see docs/sql.md for units).",
    ),
];

const ARTIFACTS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col(
        "path",
        Utf8,
        false,
        "Path of the artifact inside the run (relative, no `..`).",
    ),
    col(
        "digest",
        Utf8,
        false,
        "sha256 of the content, lowercase hex; the blob's address.",
    ),
    col("size", Int64, false, "Size in bytes."),
    col(
        "media_type",
        Utf8,
        true,
        "Media type guessed from the file name.",
    ),
    col("created", Timestamp, false, "When the artifact was logged."),
];

const LOGS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col("ts", Timestamp, false, "When the line was written."),
    col("stream", Utf8, false, "stdout or stderr."),
    col(
        "line",
        Utf8,
        false,
        "The line, without its trailing newline.",
    ),
];

const INPUTS: &[Column] = &[
    PROJECT,
    RUN_ID,
    col("name", Utf8, false, "Dataset name."),
    col("uri", Utf8, true, "Where the dataset lives."),
    col(
        "digest",
        Utf8,
        true,
        "Digest identifying the dataset's version.",
    ),
    col("role", Utf8, true, "train, eval, test, or another context."),
    col("ts", Timestamp, false, "When the input was logged."),
];

const METRIC_SUMMARY: &[Column] = &[
    PROJECT,
    RUN_ID,
    col("key", Utf8, false, "Metric name."),
    col("count", Int64, false, "Number of points."),
    col(
        "min",
        Float64,
        true,
        "Smallest value, NaN ignored (null when every value is NaN).",
    ),
    col(
        "max",
        Float64,
        true,
        "Largest value, NaN ignored (null when every value is NaN).",
    ),
    col("first_step", Int64, false, "Smallest step."),
    col("last_step", Int64, false, "Largest step."),
    col(
        "last_value",
        Float64,
        false,
        "Value at the largest step (the latest logged one there).",
    ),
    col(
        "last_ts",
        Timestamp,
        false,
        "When the last value was logged.",
    ),
];

/// A table of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Runs,
    Params,
    Tags,
    Metrics,
    SystemMetrics,
    Artifacts,
    Logs,
    Inputs,
    /// Per run and metric key: count, min, max, last. Written by compaction for compacted
    /// runs; readers merge it with live data.
    MetricSummary,
}

impl Table {
    /// Every table, in a stable order.
    pub const ALL: [Table; 9] = [
        Table::Runs,
        Table::Params,
        Table::Tags,
        Table::Metrics,
        Table::SystemMetrics,
        Table::Artifacts,
        Table::Logs,
        Table::Inputs,
        Table::MetricSummary,
    ];

    /// Tables that a run writes rows to as it goes (everything but `runs` and the summary).
    pub const LOGGED: [Table; 7] = [
        Table::Params,
        Table::Tags,
        Table::Metrics,
        Table::SystemMetrics,
        Table::Artifacts,
        Table::Logs,
        Table::Inputs,
    ];

    /// The SQL name of the table.
    pub fn name(self) -> &'static str {
        match self {
            Table::Runs => "runs",
            Table::Params => "params",
            Table::Tags => "tags",
            Table::Metrics => "metrics",
            Table::SystemMetrics => "system_metrics",
            Table::Artifacts => "artifacts",
            Table::Logs => "logs",
            Table::Inputs => "inputs",
            Table::MetricSummary => "metric_summary",
        }
    }

    /// One line saying what a row is.
    pub fn doc(self) -> &'static str {
        match self {
            Table::Runs => "One row per run.",
            Table::Params => "One row per run and parameter.",
            Table::Tags => "One row per run and tag.",
            Table::Metrics => "One row per logged metric point.",
            Table::SystemMetrics => "One row per system metric sample.",
            Table::Artifacts => "One row per artifact file.",
            Table::Logs => "One row per captured output line.",
            Table::Inputs => "One row per dataset a run used.",
            Table::MetricSummary => {
                "One row per run and metric key: count, min, max and last value."
            }
        }
    }

    /// Looks a table up by its SQL name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The columns of the table.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Runs => RUNS,
            Table::Params => PARAMS,
            Table::Tags => TAGS,
            Table::Metrics => METRICS,
            Table::SystemMetrics => SYSTEM_METRICS,
            Table::Artifacts => ARTIFACTS,
            Table::Logs => LOGS,
            Table::Inputs => INPUTS,
            Table::MetricSummary => METRIC_SUMMARY,
        }
    }

    /// The Arrow schema readers return and compacted Parquet files carry.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<Vec<SchemaRef>> = LazyLock::new(|| {
            Table::ALL
                .iter()
                .map(|t| {
                    Arc::new(Schema::new(
                        t.columns()
                            .iter()
                            .map(|c| Field::new(c.name, c.kind.data_type(), c.nullable))
                            .collect::<Vec<_>>(),
                    ))
                })
                .collect()
        });
        SCHEMAS[self.index()].clone()
    }

    /// The schema of a live segment of this table: the same columns without `project` and
    /// `run_id` (the segment's path names them), with `key` dictionary-encoded.
    pub fn segment_schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<Vec<SchemaRef>> = LazyLock::new(|| {
            Table::ALL
                .iter()
                .map(|t| {
                    Arc::new(Schema::new(
                        t.columns()
                            .iter()
                            .filter(|c| c.name != "project" && c.name != "run_id")
                            .map(|c| {
                                let ty = if c.name == "key" {
                                    key_dictionary_type()
                                } else {
                                    c.kind.data_type()
                                };
                                Field::new(c.name, ty, c.nullable)
                            })
                            .collect::<Vec<_>>(),
                    ))
                })
                .collect()
        });
        SCHEMAS[self.index()].clone()
    }

    fn index(self) -> usize {
        Table::ALL
            .iter()
            .position(|t| *t == self)
            .unwrap_or_default()
    }
}

/// `Dictionary(Int32, Utf8)`: how `key` columns travel in live segments.
pub fn key_dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_leads_with_project_and_run_id() {
        for t in Table::ALL {
            let s = t.schema();
            assert_eq!(s.field(0).name(), "project", "{t}");
            assert_eq!(s.field(1).name(), "run_id", "{t}");
            assert_eq!(t.segment_schema().fields().len() + 2, s.fields().len());
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
    }
}
