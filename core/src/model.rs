//! The data model: run ids, statuses, the run record, and the rules names and paths follow.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest accepted key (metric, param, tag), in bytes: MLflow's limit.
pub const MAX_KEY_LEN: usize = 250;
/// Longest accepted project name, in characters: MLflow's limit for experiment names.
pub const MAX_PROJECT_LEN: usize = 500;
/// Longest accepted param value, in bytes (MLflow accepts 6,000; we allow more).
pub const MAX_PARAM_VALUE_LEN: usize = 64 * 1024;
/// Longest accepted tag value, in bytes.
pub const MAX_TAG_VALUE_LEN: usize = 1024 * 1024;
/// The value a `tags` row has when it records that the tag was deleted (`Run::delete_tag`):
/// readers resolve it away, so no table shows it, and no tag can be set to it.
pub const TAG_TOMBSTONE: &str = "\u{0}runql:deleted";
/// Most distinct params one run may have (a flattened config of thousands fits; a key per
/// step does not: that is a metric).
pub const MAX_PARAMS_PER_RUN: usize = 10_000;
/// Most distinct tags one run may have.
pub const MAX_TAGS_PER_RUN: usize = 10_000;

/// A run id: a UUIDv7 (time-ordered, made on any machine without coordination), written as 32
/// lowercase hex digits, the form MLflow uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(uuid::Uuid);

impl RunId {
    /// A fresh id.
    pub fn new() -> Self {
        RunId(uuid::Uuid::now_v7())
    }

    /// The id as 32 lowercase hex digits.
    pub fn as_hex(&self) -> String {
        self.0.simple().to_string()
    }

    /// Milliseconds since the Unix epoch when the id was made (UUIDv7 carry it).
    pub fn created_ms(&self) -> Option<u64> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(secs * 1000 + u64::from(nanos) / 1_000_000)
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.0.simple())
    }
}

impl FromStr for RunId {
    type Err = Error;

    /// Accepts 32 hex digits, or the hyphenated UUID form.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidName {
            what: "run id",
            value: s.to_string(),
            reason: reason.to_string(),
        };
        if s.len() != 32 && s.len() != 36 {
            return Err(bad("a run id is 32 hex digits"));
        }
        uuid::Uuid::try_parse(s)
            .map(RunId)
            .map_err(|_| bad("a run id is 32 hex digits"))
    }
}

/// The status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Its writer is alive and logging.
    Running,
    /// Finished normally.
    Finished,
    /// The program failed (a panic, a non-zero exit).
    Failed,
    /// Stopped on purpose (dropped without finishing, a signal, a user's kill).
    Killed,
    /// Its writer died without saying so: the heartbeat went stale. Only readers infer it.
    Crashed,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Finished,
        RunStatus::Failed,
        RunStatus::Killed,
        RunStatus::Crashed,
    ];

    /// The lowercase name used in the `runs.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
            RunStatus::Killed => "killed",
            RunStatus::Crashed => "crashed",
        }
    }

    /// Whether the run will not log anything more.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Running)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::InvalidName {
                what: "run status",
                value: s.to_string(),
                reason: "expected running, finished, failed, killed or crashed".into(),
            })
    }
}

/// Everything the `runs` table says about one run. Written as a whole snapshot each time it
/// changes; the newest snapshot wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub project: String,
    pub run_id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub status: RunStatus,
    #[serde(default)]
    pub parent_run_id: Option<String>,
    #[serde(default)]
    pub run_group: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub git_branch: Option<String>,
    #[serde(default)]
    pub git_dirty: Option<bool>,
    /// Microseconds since the Unix epoch.
    pub created: i64,
    #[serde(default)]
    pub started: Option<i64>,
    #[serde(default)]
    pub ended: Option<i64>,
    #[serde(default)]
    pub heartbeat: Option<i64>,
    #[serde(default)]
    pub deleted: bool,
    /// How long (seconds) the run's writer may be silent before readers call it `crashed`,
    /// when it is not the store's default: a run logged through a server is alive while its
    /// client logs, and clients may log once an epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_after: Option<u64>,
}

impl RunRecord {
    /// A fresh record for a run that starts now.
    pub fn new(project: &str, run_id: RunId, now_us: i64) -> Self {
        RunRecord {
            project: project.to_string(),
            run_id: run_id.as_hex(),
            name: None,
            status: RunStatus::Running,
            parent_run_id: None,
            run_group: None,
            username: None,
            hostname: None,
            command: None,
            git_commit: None,
            git_branch: None,
            git_dirty: None,
            created: now_us,
            started: Some(now_us),
            ended: None,
            heartbeat: Some(now_us),
            deleted: false,
            silent_after: None,
        }
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// Checks a metric, param or tag key: non-empty, at most [`MAX_KEY_LEN`] bytes, no control
/// characters.
pub fn validate_key(what: &'static str, key: &str) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidName {
            what,
            value: truncate_for_message(key),
            reason,
        })
    };
    if key.is_empty() {
        return bad("it is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return bad(format!(
            "it is {} bytes long, the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return bad("it contains a control character".into());
    }
    Ok(())
}

/// Checks a project name: non-empty, at most [`MAX_PROJECT_LEN`] characters, no control characters,
/// not `.` or `..`. Slashes and spaces are allowed (MLflow experiment names often have them).
pub fn validate_project(name: &str) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidName {
            what: "project name",
            value: truncate_for_message(name),
            reason,
        })
    };
    if name.trim().is_empty() {
        return bad("it is empty".into());
    }
    let chars = name.chars().count();
    if chars > MAX_PROJECT_LEN {
        return bad(format!(
            "it is {chars} characters long, the limit is {MAX_PROJECT_LEN}"
        ));
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are reserved".into());
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character".into());
    }
    Ok(())
}

/// Checks and normalises an artifact path: relative, `/`-separated, no `..`, no empty or `.`
/// parts. Returns the normalised path.
pub fn normalize_artifact_path(path: &str) -> Result<String> {
    let bad = |reason: &str| {
        Err(Error::ArtifactPath {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return bad("it is empty");
    }
    let unified = path.replace('\\', "/");
    if unified.starts_with('/') || (unified.len() > 1 && unified.as_bytes()[1] == b':') {
        return bad("it is absolute");
    }
    if unified.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => continue,
            ".." => return bad("it contains `..`"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return bad("it names no file");
    }
    Ok(parts.join("/"))
}

fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses a param value as a number, the way `params.value_num` is filled: integers and
/// decimals (`1`, `-0.5`, `1e-3`), `nan`, `inf`; not booleans or empty strings.
pub fn param_value_num(value: &str) -> Option<f64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    v.parse::<f64>().ok()
}

/// A media type guessed from a file name, for the `artifacts.media_type` column.
pub fn guess_media_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "log" | "out" => "text/plain",
        "md" => "text/markdown",
        "json" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "yaml" | "yml" => "application/yaml",
        "toml" | "lock" => "application/toml",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "patch" | "diff" => "text/x-diff",
        "py" => "text/x-python",
        "rs" => "text/x-rust",
        "parquet" => "application/vnd.apache.parquet",
        "arrow" | "feather" => "application/vnd.apache.arrow.file",
        "npy" | "npz" | "pt" | "pth" | "bin" | "safetensors" | "onnx" | "pkl" | "ckpt" | "h5" => {
            "application/octet-stream"
        }
        "gz" | "tgz" => "application/gzip",
        "zip" => "application/zip",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_round_trip_and_sort_by_time() {
        let a = RunId::new();
        let b = RunId::new();
        assert!(a < b);
        assert_eq!(a.as_hex().len(), 32);
        assert_eq!(a.as_hex().parse::<RunId>().ok(), Some(a));
        assert!("xyz".parse::<RunId>().is_err());
    }

    #[test]
    fn artifact_paths_are_normalised_or_refused() {
        assert_eq!(
            normalize_artifact_path("a/./b//c.txt").ok().as_deref(),
            Some("a/b/c.txt")
        );
        assert!(normalize_artifact_path("../etc/passwd").is_err());
        assert!(normalize_artifact_path("a/../../b").is_err());
        assert!(normalize_artifact_path("/etc/passwd").is_err());
        assert!(normalize_artifact_path("C:\\x").is_err());
        assert!(normalize_artifact_path("").is_err());
        assert!(normalize_artifact_path("./").is_err());
    }

    #[test]
    fn keys_are_checked() {
        assert!(validate_key("metric key", "train/loss").is_ok());
        assert!(validate_key("metric key", "損失").is_ok());
        assert!(validate_key("metric key", "").is_err());
        assert!(validate_key("metric key", &"x".repeat(251)).is_err());
        assert!(validate_key("metric key", "a\nb").is_err());
        assert!(validate_project("team/vision exp").is_ok());
        assert!(validate_project("..").is_err());
    }

    #[test]
    fn param_numbers() {
        assert_eq!(param_value_num("0.01"), Some(0.01));
        assert_eq!(param_value_num("64"), Some(64.0));
        assert_eq!(param_value_num("adam"), None);
        assert_eq!(param_value_num("true"), None);
    }
}
