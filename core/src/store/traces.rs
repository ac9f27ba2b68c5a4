//! MLflow 3 traces: what a trace's client sends (its trace info, and its span data as the file
//! `traces.json`) kept as objects of the project, `traces/<trace id>/<file>`, each written
//! whole (a put is atomic), readable without runql. The rows SQL sees are in the `mlflow.traces`
//! and `mlflow.spans` extension tables, which the server appends as the files arrive.

use bytes::Bytes;

use super::Store;
use crate::error::{Error, Result};

/// The files a trace keeps.
pub const TRACE_FILES: [&str; 2] = ["info.json", "traces.json"];

/// Whether `id` is a trace id runql keeps: MLflow's `tr-` and hex digits, or an id of letters,
/// digits, `-` and `_` (at most 128 characters), so that it is one safe path segment.
pub fn is_trace_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn check(trace_id: &str, file: &str) -> Result<()> {
    if !is_trace_id(trace_id) {
        return Err(Error::InvalidName {
            what: "trace id",
            value: trace_id.chars().take(64).collect(),
            reason: "trace ids are letters, digits, `-` and `_`, at most 128".into(),
        });
    }
    if !TRACE_FILES.contains(&file) {
        return Err(Error::InvalidName {
            what: "trace file",
            value: file.chars().take(64).collect(),
            reason: format!("a trace keeps {}", TRACE_FILES.join(" and ")),
        });
    }
    Ok(())
}

impl Store {
    /// Stores a file of a trace (`info.json` or `traces.json`) of `project` (which must exist),
    /// replacing it whole.
    pub async fn put_trace_file(
        &self,
        project: &str,
        trace_id: &str,
        file: &str,
        bytes: Bytes,
    ) -> Result<()> {
        check(trace_id, file)?;
        self.ensure_writable().await?;
        self.put(&self.layout().trace_file(project, trace_id, file), bytes)
            .await
    }

    /// A file of a trace; `None` when the trace has none (yet).
    pub async fn trace_file(
        &self,
        project: &str,
        trace_id: &str,
        file: &str,
    ) -> Result<Option<Bytes>> {
        check(trace_id, file)?;
        self.get_opt(&self.layout().trace_file(project, trace_id, file))
            .await
    }

    /// The ids of a project's traces, in id order.
    pub async fn list_traces(&self, project: &str) -> Result<Vec<String>> {
        let dir = self.layout().traces(project);
        let listing = self.list_with_delimiter(&dir).await?;
        let mut ids: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(String::from))
            .filter(|id| is_trace_id(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The project that holds trace `trace_id` (looked for in every project).
    pub async fn find_trace(&self, trace_id: &str) -> Result<Option<String>> {
        if !is_trace_id(trace_id) {
            return Ok(None);
        }
        for project in self.list_projects().await? {
            let path = self.layout().trace_file(&project, trace_id, "info.json");
            if self.head_opt(&path).await?.is_some() {
                return Ok(Some(project));
            }
        }
        Ok(None)
    }
}
