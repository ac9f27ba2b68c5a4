//! What a project has beside its runs: tags and whether it is deleted (MLflow's experiment
//! tags and `experiments/delete`). Every change is an immutable record,
//! `projects/<p>/meta/<uuid7>.json`, and a project's state is its records folded in the order
//! of their names (time-ordered UUIDv7s): writers never rewrite each other's objects, so
//! several servers can share a store.
//!
//! Stores written before these records kept one object per tag (`tags/<key>`, rewritten in
//! place) and a `project.deleted` marker: they are read as the state before the first record.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Store;
use super::layout::decode_name;
use crate::error::{Error, Result};
use crate::model::{now_us, validate_key};

/// A project's metadata, folded from its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectMeta {
    pub name: String,
    /// When the project was created (µs since the Unix epoch).
    pub created: i64,
    /// When its metadata last changed (µs); `created` when it never did.
    pub updated: i64,
    pub deleted: bool,
    pub tags: BTreeMap<String, String>,
    /// Where its creator asked its artifacts to go (MLflow's `artifact_location`), kept as
    /// given; runql stores the artifacts in the store whatever it says.
    pub artifact_location: Option<String>,
    /// The name it was renamed to (MLflow's `experiments/update`); its id, the project's
    /// `name` above, under which its runs are stored and queried, stays.
    pub display_name: Option<String>,
}

/// One change of a project's metadata; what it does not name stays as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectChange {
    /// Tags to set (a key set twice takes the later value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_tags: Vec<(String, String)>,
    /// Tags to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete_tags: Vec<String>,
    /// Deleted (`true`) or restored (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// The artifact location to record (MLflow's `artifact_location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_location: Option<String>,
    /// A new name to show the project under (its id stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A stored record: the change and when it was made.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    at: i64,
    #[serde(flatten)]
    change: ProjectChange,
}

/// Longest experiment tag key and value (MLflow's limits).
pub const MAX_TAG_KEY: usize = 250;
pub const MAX_TAG_VALUE: usize = 20_000;

impl ProjectChange {
    fn check(&self) -> Result<()> {
        if let Some(n) = &self.display_name
            && (n.trim().is_empty()
                || n.chars().count() > crate::model::MAX_PROJECT_LEN
                || n.chars().any(char::is_control))
        {
            return Err(Error::InvalidValue {
                what: "project name",
                reason: format!(
                    "{n:?} must be 1 to {} characters without control characters",
                    crate::model::MAX_PROJECT_LEN
                ),
            });
        }
        if let Some(l) = &self.artifact_location
            && (l.chars().count() > MAX_TAG_VALUE || l.chars().any(char::is_control))
        {
            return Err(Error::InvalidValue {
                what: "artifact location",
                reason: format!(
                    "it must be at most {MAX_TAG_VALUE} characters without control characters"
                ),
            });
        }
        for (k, v) in &self.set_tags {
            validate_key("project tag key", k)?;
            if k.chars().count() > MAX_TAG_KEY {
                return Err(Error::InvalidValue {
                    what: "project tag key",
                    reason: format!("{k:?} is longer than {MAX_TAG_KEY} characters"),
                });
            }
            if v.chars().count() > MAX_TAG_VALUE {
                return Err(Error::InvalidValue {
                    what: "project tag value",
                    reason: format!("the value of {k:?} is longer than {MAX_TAG_VALUE} characters"),
                });
            }
        }
        Ok(())
    }

    fn apply(&self, meta: &mut ProjectMeta) {
        for (k, v) in &self.set_tags {
            meta.tags.insert(k.clone(), v.clone());
        }
        for k in &self.delete_tags {
            meta.tags.remove(k);
        }
        if let Some(d) = self.deleted {
            meta.deleted = d;
        }
        if let Some(l) = &self.artifact_location {
            meta.artifact_location = Some(l.clone());
        }
        if let Some(n) = &self.display_name {
            // Renamed back to its id: no rename.
            meta.display_name = (*n != meta.name).then(|| n.clone());
        }
    }
}

impl Store {
    /// A project's metadata; `None` when the project does not exist.
    pub async fn project_meta(&self, project: &str) -> Result<Option<ProjectMeta>> {
        let Some(record) = self.project_record(project).await? else {
            return Ok(None);
        };
        let mut meta = ProjectMeta {
            name: record.name,
            created: record.created,
            updated: record.created,
            deleted: false,
            tags: BTreeMap::new(),
            artifact_location: None,
            display_name: None,
        };
        self.legacy_project_meta(project, &mut meta).await?;
        let mut records = self.list_all(&self.layout().project_meta(project)).await?;
        // UUIDv7 names sort by time.
        records.sort_by(|a, b| a.location.cmp(&b.location));
        for m in records {
            let Some(bytes) = self.get_opt(&m.location).await? else {
                continue;
            };
            let r: Record =
                serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&m.location, e))?;
            r.change.apply(&mut meta);
            meta.updated = meta.updated.max(r.at);
        }
        Ok(Some(meta))
    }

    /// Records a change of a project's metadata (the project must exist).
    pub async fn change_project(&self, project: &str, change: &ProjectChange) -> Result<()> {
        change.check()?;
        if self.project_record(project).await?.is_none() {
            return Err(Error::ProjectNotFound {
                project: project.to_string(),
                store: self.url().to_string(),
            });
        }
        self.ensure_writable().await?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let record = Record {
            at: now_us(),
            change: change.clone(),
        };
        let body = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        self.put(
            &self.layout().project_meta_record(project, &id),
            Bytes::from(body),
        )
        .await
    }

    /// What stores before the records kept: `tags/<key>` objects and a `project.deleted`
    /// marker.
    async fn legacy_project_meta(&self, project: &str, meta: &mut ProjectMeta) -> Result<()> {
        let layout = self.layout();
        let at = |m: &object_store::ObjectMeta| m.last_modified.timestamp_micros();
        if let Some(m) = self
            .head_opt(&layout.project_deleted_marker(project))
            .await?
        {
            meta.deleted = true;
            meta.updated = meta.updated.max(at(&m));
        }
        for m in self.list_all(&layout.project_tags(project)).await? {
            let Some(key) = m.location.filename().and_then(decode_name) else {
                continue;
            };
            if let Some(value) = self.get_opt(&m.location).await? {
                meta.updated = meta.updated.max(at(&m));
                meta.tags
                    .insert(key, String::from_utf8_lossy(&value).into_owned());
            }
        }
        Ok(())
    }
}
