//! Logged models (MLflow 3's `LoggedModel`): a model a run produced, with its own name, type,
//! status, tags, params and files. Like runs, a model is written as immutable records — its
//! creation and every later change, `projects/<p>/models/<id>.<uuid7>.json` — folded in the
//! order of their names (time-ordered UUIDv7s); its files are objects below
//! `projects/<p>/models/<id>/artifacts/`. Writers never rewrite each other's objects, so two
//! servers updating one model both keep their changes.
//!
//! Stores written before these records held one `models/<id>/model.json`, rewritten in place:
//! it is read as the model's state before its first record.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::model::{normalize_artifact_path, now_us, validate_key};

/// Statuses of a logged model.
pub const MODEL_STATUSES: [&str; 3] = [
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
];

/// A logged model, folded from its records.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModel {
    /// `m-` and 32 hex digits.
    pub model_id: String,
    pub project: String,
    pub name: String,
    pub model_type: String,
    pub source_run_id: String,
    /// One of [`MODEL_STATUSES`].
    pub status: String,
    pub status_message: String,
    /// µs since the Unix epoch.
    pub created: i64,
    pub updated: i64,
    pub tags: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
    pub deleted: bool,
    /// Metrics logged for the model (MLflow's `log_metric(…, model_id=…)`), in log order.
    pub metrics: Vec<ModelMetric>,
}

/// A metric value logged for a model: by which run, at which step, on which dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetric {
    pub key: String,
    /// NaN and ±inf kept (stored as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`).
    #[serde(with = "finite_or_text")]
    pub value: f64,
    /// Milliseconds since the Unix epoch, as the client sent it.
    pub timestamp_ms: i64,
    pub step: i64,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
}

/// An `f64` in JSON: a number when finite, `"NaN"` / `"Infinity"` / `"-Infinity"` otherwise.
mod finite_or_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            N(f64),
            S(String),
        }
        match V::deserialize(d)? {
            V::N(n) => Ok(n),
            V::S(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?} is not a number"
                ))),
            },
        }
    }
}

/// What a new model starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewModel {
    pub name: String,
    #[serde(default)]
    pub model_type: String,
    #[serde(default)]
    pub source_run_id: String,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub params: Vec<(String, String)>,
}

/// One change of a model; what it does not name stays as it was.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// Metric values to add.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<ModelMetric>,
}

/// A stored record: the model's creation, or a change.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    create: Option<NewModel>,
    #[serde(flatten)]
    change: ModelChange,
}

/// The record of a store written before model records (one JSON object, rewritten in place).
#[derive(Debug, Deserialize)]
struct Legacy {
    name: String,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    source_run_id: String,
    status: String,
    #[serde(default)]
    status_message: String,
    created_ms: i64,
    updated_ms: i64,
    #[serde(default)]
    tags: Vec<(String, String)>,
    #[serde(default)]
    params: Vec<(String, String)>,
    #[serde(default)]
    deleted: bool,
}

/// Whether `id` is a model id as runql makes them (`m-` and 32 hex digits): anything else is
/// refused before it becomes part of a path.
pub fn is_model_id(id: &str) -> bool {
    id.strip_prefix("m-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_id(id: &str) -> Result<()> {
    if is_model_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what: "model id",
            value: id.chars().take(64).collect(),
            reason: "model ids are `m-` and 32 hex digits".into(),
        })
    }
}

fn check_pairs(what: &'static str, pairs: &[(String, String)]) -> Result<()> {
    pairs.iter().try_for_each(|(k, _)| validate_key(what, k))
}

impl ModelChange {
    fn check(&self) -> Result<()> {
        if let Some(s) = &self.status
            && !MODEL_STATUSES.contains(&s.as_str())
        {
            return Err(Error::InvalidValue {
                what: "model status",
                reason: format!("{s:?} is not one of {}", MODEL_STATUSES.join(", ")),
            });
        }
        check_pairs("model tag key", &self.set_tags)?;
        check_pairs("model param key", &self.params)?;
        for metric in &self.metrics {
            validate_key("model metric key", &metric.key)?;
        }
        Ok(())
    }

    fn apply(&self, m: &mut LoggedModel) {
        if let Some(s) = &self.status {
            m.status = s.clone();
        }
        if let Some(s) = &self.status_message {
            m.status_message = s.clone();
        }
        for (k, v) in &self.set_tags {
            m.tags.insert(k.clone(), v.clone());
        }
        for k in &self.delete_tags {
            m.tags.remove(k);
        }
        for (k, v) in &self.params {
            m.params.insert(k.clone(), v.clone());
        }
        if let Some(d) = self.deleted {
            m.deleted = d;
        }
        m.metrics.extend(self.metrics.iter().cloned());
    }
}

impl Store {
    /// Creates a logged model in `project` (which must exist).
    pub async fn create_model(&self, project: &str, new: NewModel) -> Result<LoggedModel> {
        check_pairs("model tag key", &new.tags)?;
        check_pairs("model param key", &new.params)?;
        if self.project_record(project).await?.is_none() {
            return Err(Error::ProjectNotFound {
                project: project.to_string(),
                store: self.url().to_string(),
            });
        }
        let id = format!("m-{}", uuid::Uuid::now_v7().simple());
        let mut new = new;
        if new.name.is_empty() {
            new.name = format!("model-{}", &id[id.len() - 8..]);
        }
        self.write_model_record(project, &id, Some(new), ModelChange::default())
            .await?;
        self.model(project, &id)
            .await?
            .ok_or_else(|| Error::Internal(format!("model {id} vanished after it was written")))
    }

    /// Records a change of a model and gives the model as it is then.
    pub async fn change_model(
        &self,
        project: &str,
        model_id: &str,
        change: ModelChange,
    ) -> Result<LoggedModel> {
        change.check()?;
        check_id(model_id)?;
        self.write_model_record(project, model_id, None, change)
            .await?;
        self.model(project, model_id).await?.ok_or_else(|| {
            Error::Internal(format!("model {model_id} vanished after it was changed"))
        })
    }

    async fn write_model_record(
        &self,
        project: &str,
        model_id: &str,
        create: Option<NewModel>,
        change: ModelChange,
    ) -> Result<()> {
        self.ensure_writable().await?;
        let record = Record {
            at: now_us(),
            create,
            change,
        };
        let body = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        self.put(
            &self.layout().model_record(project, model_id, &id),
            Bytes::from(body),
        )
        .await
    }

    /// One model of `project`; `None` when it has none of that id.
    pub async fn model(&self, project: &str, model_id: &str) -> Result<Option<LoggedModel>> {
        if !is_model_id(model_id) {
            return Ok(None);
        }
        Ok(self
            .fold_models(project, Some(model_id))
            .await?
            .into_iter()
            .next())
    }

    /// Every model of `project`, newest first (deleted ones included).
    pub async fn models(&self, project: &str) -> Result<Vec<LoggedModel>> {
        let mut out = self.fold_models(project, None).await?;
        out.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| b.model_id.cmp(&a.model_id))
        });
        Ok(out)
    }

    /// The project holding model `model_id`, looked for in every project.
    pub async fn find_model(&self, model_id: &str) -> Result<Option<LoggedModel>> {
        if !is_model_id(model_id) {
            return Ok(None);
        }
        for project in self.list_projects().await? {
            if let Some(m) = self.model(&project, model_id).await? {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// The models of a project (or just `only`), from one listing of its models folder.
    async fn fold_models(&self, project: &str, only: Option<&str>) -> Result<Vec<LoggedModel>> {
        let layout = self.layout();
        let dir = layout.models(project);
        let listing = self.list_with_delimiter(&dir).await?;
        // Records by model, in name (= time) order.
        let mut records: BTreeMap<String, Vec<object_store::path::Path>> = BTreeMap::new();
        for m in &listing.objects {
            let Some((id, _)) = m.location.filename().and_then(|f| f.split_once('.')) else {
                continue;
            };
            if is_model_id(id) && only.is_none_or(|o| o == id) {
                records
                    .entry(id.to_string())
                    .or_default()
                    .push(m.location.clone());
            }
        }
        // Models of older stores: a folder with a model.json.
        let mut legacy = Vec::new();
        for p in &listing.common_prefixes {
            if let Some(id) = p.filename()
                && is_model_id(id)
                && only.is_none_or(|o| o == id)
            {
                legacy.push(id.to_string());
                records.entry(id.to_string()).or_default();
            }
        }
        let mut out = Vec::new();
        for (id, mut paths) in records {
            paths.sort();
            let mut model: Option<LoggedModel> = None;
            if legacy.contains(&id) {
                let path = layout.legacy_model_record(project, &id);
                if let Some(bytes) = self.get_opt(&path).await? {
                    let l: Legacy =
                        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?;
                    model = Some(LoggedModel {
                        model_id: id.clone(),
                        project: project.to_string(),
                        name: l.name,
                        model_type: l.model_type,
                        source_run_id: l.source_run_id,
                        status: l.status,
                        status_message: l.status_message,
                        created: l.created_ms * 1000,
                        updated: l.updated_ms * 1000,
                        tags: l.tags.into_iter().collect(),
                        params: l.params.into_iter().collect(),
                        deleted: l.deleted,
                        metrics: Vec::new(),
                    });
                }
            }
            for path in paths {
                let Some(bytes) = self.get_opt(&path).await? else {
                    continue;
                };
                let r: Record =
                    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e))?;
                if let Some(new) = r.create {
                    model.get_or_insert(LoggedModel {
                        model_id: id.clone(),
                        project: project.to_string(),
                        name: new.name,
                        model_type: new.model_type,
                        source_run_id: new.source_run_id,
                        status: MODEL_STATUSES[0].to_string(),
                        status_message: String::new(),
                        created: r.at,
                        updated: r.at,
                        tags: new.tags.into_iter().collect(),
                        params: new.params.into_iter().collect(),
                        deleted: false,
                        metrics: Vec::new(),
                    });
                }
                // A change whose creation is not visible (yet) has nothing to apply to.
                if let Some(m) = model.as_mut() {
                    r.change.apply(m);
                    m.updated = m.updated.max(r.at);
                }
            }
            out.extend(model);
        }
        Ok(out)
    }

    /// Stores a file of a model, at `rel` below its artifacts folder.
    pub async fn put_model_file(
        &self,
        project: &str,
        model_id: &str,
        rel: &str,
        bytes: Bytes,
    ) -> Result<()> {
        check_id(model_id)?;
        let rel = normalize_artifact_path(rel)?;
        self.ensure_writable().await?;
        self.put(&self.layout().model_file(project, model_id, &rel), bytes)
            .await
    }

    /// A file of a model; `None` when it has none at `rel`.
    pub async fn model_file(
        &self,
        project: &str,
        model_id: &str,
        rel: &str,
    ) -> Result<Option<Bytes>> {
        check_id(model_id)?;
        let rel = normalize_artifact_path(rel)?;
        self.get_contained(&self.layout().model_file(project, model_id, &rel))
            .await
    }

    /// The entries of a model's artifact folder `dir` (`""`: its top): name, and the size of
    /// a file or `None` for a folder, by name.
    pub async fn model_files(
        &self,
        project: &str,
        model_id: &str,
        dir: &str,
    ) -> Result<Vec<(String, Option<u64>)>> {
        check_id(model_id)?;
        let dir = match dir.trim_matches('/') {
            "" => String::new(),
            d => normalize_artifact_path(d)?,
        };
        let base = self.layout().model_file(project, model_id, &dir);
        let depth = base.parts().count();
        let mut entries: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for meta in self.list_all(&base).await? {
            let parts: Vec<_> = meta.location.parts().skip(depth).collect();
            match parts.as_slice() {
                [] => {}
                [file] => {
                    entries.insert(file.as_ref().to_string(), Some(meta.size));
                }
                [sub, ..] => {
                    entries.insert(sub.as_ref().to_string(), None);
                }
            }
        }
        Ok(entries.into_iter().collect())
    }
}
