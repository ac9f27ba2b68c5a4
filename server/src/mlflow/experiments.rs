//! MLflow experiments: create, get, get-by-name, search (filter, order_by, view type, paging),
//! delete/restore and experiment tags. An experiment is the runql project of the same name;
//! its id is that name (`"0"` is MLflow's Default experiment, the project `Default`).
//!
//! What MLflow keeps in its experiments table is the project's metadata in core (tags and
//! deletion, immutable records: `Store::project_meta`, `Store::change_project`); deleting an
//! experiment deletes its runs with it, as in MLflow.

use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use runql_core::Store;
use runql_core::store::ProjectChange;
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::ensure_project;
use super::state::State;
use super::wire::{self, DEFAULT_PROJECT, Int, Tag, experiment_id_of, kv_json, project_of};
use crate::error::ApiError;
use crate::request::{JsonBytes, MlflowJson, MlflowQuery, Read, Write, parse_body};

/// What MLflow shows of an experiment.
#[derive(Debug, Clone)]
struct Experiment {
    /// The project: the experiment's id (`experiment_id_of`), where its runs are stored.
    id: String,
    /// Its name: the project's, or the one it was renamed to.
    name: String,
    created_ms: i64,
    updated_ms: i64,
    deleted: bool,
    tags: Vec<(String, String)>,
    /// The `artifact_location` it was created with, if any.
    artifact_location: Option<String>,
}

impl Experiment {
    fn to_json(&self) -> Value {
        let id = experiment_id_of(&self.id);
        json!({
            "experiment_id": id,
            "name": self.name,
            "artifact_location": self.artifact_location.clone().unwrap_or_else(|| format!("mlflow-artifacts:/{id}")),
            "lifecycle_stage": if self.deleted { "deleted" } else { "active" },
            "creation_time": self.created_ms,
            "last_update_time": self.updated_ms,
            "tags": kv_json(self.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        })
    }
}

/// Reads an experiment; `None` when the project does not exist.
async fn load(store: &Store, project: &str) -> Result<Option<Experiment>, ApiError> {
    Ok(store.project_meta(project).await?.map(|m| Experiment {
        name: m.display_name.unwrap_or_else(|| m.name.clone()),
        id: m.name,
        created_ms: m.created / 1000,
        updated_ms: m.updated / 1000,
        deleted: m.deleted,
        tags: m.tags.into_iter().collect(),
        artifact_location: m.artifact_location,
    }))
}

/// The experiment named `name` (renamed ones by their new name), deleted ones included.
async fn by_name(store: &Store, name: &str) -> Result<Option<Experiment>, ApiError> {
    // Most experiments keep the name they were created with, which is their project's.
    if let Some(e) = load(store, name).await?
        && e.name == name
    {
        return Ok(Some(e));
    }
    for p in store.list_projects().await? {
        if p == name {
            continue;
        }
        if let Some(e) = load(store, &p).await?
            && e.name == name
        {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// An experiment that must exist (the Default one is created on first use, as in MLflow).
async fn existing(store: &Store, project: &str) -> Result<Experiment, ApiError> {
    ensure_project(store, project).await?;
    load(store, project).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "No Experiment with id={}",
            experiment_id_of(project)
        ))
    })
}

/// Sets experiment tags (the project exists).
async fn set_tags(
    store: &Store,
    project: &str,
    tags: Vec<(String, String)>,
) -> Result<(), ApiError> {
    if tags.iter().any(|(k, _)| k.is_empty()) {
        return Err(ApiError::invalid(
            "an experiment tag needs a non-empty 'key'",
        ));
    }
    let change = ProjectChange {
        set_tags: tags,
        ..ProjectChange::default()
    };
    Ok(store.change_project(project, &change).await?)
}

/// `experiments/create`.
#[derive(Debug, Deserialize)]
pub(crate) struct Create {
    name: String,
    /// Kept and returned as given; runs' artifacts still go to the store (through the
    /// artifact proxy), so the client never writes past the server.
    artifact_location: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

pub(crate) async fn create_experiment(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<Create>,
) -> Result<Response, ApiError> {
    let name = req.name.as_str();
    if name.trim().is_empty() {
        return Err(ApiError::missing("name"));
    }
    if name.chars().count() > runql_core::model::MAX_PROJECT_LEN {
        return Err(ApiError::invalid(format!(
            "'name' exceeds the maximum length of {} characters",
            runql_core::model::MAX_PROJECT_LEN
        )));
    }
    let store = s.store();
    if let Some(e) = by_name(store, name).await? {
        let state = if e.deleted { " in deleted state" } else { "" };
        return Err(ApiError::AlreadyExists(format!(
            "Experiment '{name}' already exists{state}."
        )));
    }
    // The project is the name, unless an experiment renamed away from it still holds that
    // project: then the first free `<name>-2`, `<name>-3`…, named `name`.
    let mut project = name.to_string();
    let mut n = 1;
    while store.project_record(&project).await?.is_some() {
        n += 1;
        project = format!("{name}-{n}");
    }
    let project = project.as_str();
    store.create_project(project).await?;
    if project != name {
        let change = ProjectChange {
            display_name: Some(name.to_string()),
            ..ProjectChange::default()
        };
        store.change_project(project, &change).await?;
    }
    let name = project;
    let tags = wire::pairs(req.tags);
    if !tags.is_empty() {
        set_tags(store, name, tags).await?;
    }
    if let Some(location) = req.artifact_location.filter(|l| !l.is_empty()) {
        let change = ProjectChange {
            artifact_location: Some(location),
            ..ProjectChange::default()
        };
        store.change_project(name, &change).await?;
    }
    Ok(axum::Json(json!({"experiment_id": experiment_id_of(name)})).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ByName {
    experiment_name: String,
}

pub(crate) async fn get_experiment_by_name(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<ByName>,
) -> Result<Response, ApiError> {
    let store = s.store();
    let found = match by_name(store, &q.experiment_name).await? {
        Some(e) => e,
        None if q.experiment_name == DEFAULT_PROJECT => existing(store, DEFAULT_PROJECT).await?,
        None => {
            return Err(ApiError::not_found(format!(
                "Could not find experiment with name '{}'",
                q.experiment_name
            )));
        }
    };
    Ok(axum::Json(json!({"experiment": found.to_json()})).into_response())
}

/// A request naming one experiment by id.
#[derive(Debug, Deserialize)]
pub(crate) struct ById {
    experiment_id: String,
}

pub(crate) async fn get_experiment(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<ById>,
) -> Result<Response, ApiError> {
    let e = existing(s.store(), &project_of(&q.experiment_id)).await?;
    Ok(axum::Json(json!({"experiment": e.to_json()})).into_response())
}

async fn set_deleted(s: &State, experiment_id: &str, deleted: bool) -> Result<Response, ApiError> {
    let project = project_of(experiment_id).to_string();
    let store = s.store();
    let e = existing(store, &project).await?;
    if project == DEFAULT_PROJECT && deleted {
        return Err(ApiError::invalid(
            "Cannot delete the default experiment '0'.",
        ));
    }
    if e.deleted == deleted {
        // MLflow looks a deleted experiment up among active ones (and the reverse): not found.
        return Err(ApiError::not_found(format!(
            "No Experiment with id={} exists",
            experiment_id_of(&project)
        )));
    }
    // As in MLflow, the experiment's runs are deleted (restored) with it.
    for run in store.list_runs(Some(&project)).await? {
        store
            .set_run_deleted(&project, &run.run_id, deleted)
            .await?;
        s.runs.set_deleted(&run.run_id, deleted);
    }
    let change = ProjectChange {
        deleted: Some(deleted),
        ..ProjectChange::default()
    };
    store.change_project(&project, &change).await?;
    Ok(wire::ok())
}

pub(crate) async fn delete_experiment(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<ById>,
) -> Result<Response, ApiError> {
    set_deleted(&s, &req.experiment_id, true).await
}

pub(crate) async fn restore_experiment(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<ById>,
) -> Result<Response, ApiError> {
    set_deleted(&s, &req.experiment_id, false).await
}

/// `experiments/update`.
#[derive(Debug, Deserialize)]
pub(crate) struct Update {
    experiment_id: String,
    new_name: Option<String>,
}

/// Renaming, as MLflow renames: the experiment keeps its id (its project, where its runs are
/// stored and what SQL's `project` column says); its name is the new one.
pub(crate) async fn update_experiment(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<Update>,
) -> Result<Response, ApiError> {
    let project = project_of(&req.experiment_id).to_string();
    let store = s.store();
    let e = existing(store, &project).await?;
    let Some(new) = req.new_name.filter(|n| *n != e.name) else {
        return Ok(wire::ok());
    };
    if new.trim().is_empty() {
        return Err(ApiError::missing("new_name"));
    }
    if e.deleted {
        return Err(ApiError::invalid("Cannot rename a non-active experiment."));
    }
    if by_name(store, &new).await?.is_some() {
        return Err(ApiError::AlreadyExists(format!(
            "Experiment '{new}' already exists."
        )));
    }
    let change = ProjectChange {
        display_name: Some(new),
        ..ProjectChange::default()
    };
    store.change_project(&project, &change).await?;
    Ok(wire::ok())
}

/// `experiments/set-experiment-tag` and `experiments/delete-experiment-tag`.
#[derive(Debug, Deserialize)]
pub(crate) struct ExperimentTag {
    experiment_id: String,
    key: String,
    #[serde(default)]
    value: Option<String>,
}

pub(crate) async fn set_experiment_tag(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<ExperimentTag>,
) -> Result<Response, ApiError> {
    let project = &*project_of(&req.experiment_id);
    let store = s.store();
    existing(store, project).await?;
    let value = req.value.unwrap_or_default();
    set_tags(store, project, vec![(req.key, value)]).await?;
    Ok(wire::ok())
}

pub(crate) async fn delete_experiment_tag(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<ExperimentTag>,
) -> Result<Response, ApiError> {
    let project = &*project_of(&req.experiment_id);
    let store = s.store();
    let e = existing(store, project).await?;
    let key = req.key.as_str();
    if !e.tags.iter().any(|(k, _)| k == key) {
        return Err(ApiError::not_found(format!(
            "No tag with name: {key} in experiment with id {}",
            experiment_id_of(project)
        )));
    }
    let change = ProjectChange {
        delete_tags: vec![key.to_string()],
        ..ProjectChange::default()
    };
    store.change_project(project, &change).await?;
    Ok(wire::ok())
}

/// The request of `experiments/search`, by POST body or GET query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchRequest {
    #[serde(default)]
    max_results: Option<Int>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    order_by: Option<Value>,
    #[serde(default)]
    view_type: Option<String>,
}

pub(crate) async fn search_experiments(
    Read(s): Read<State>,
    Query(query): Query<Vec<(String, String)>>,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let req: SearchRequest = if bytes.is_empty() {
        // GET: the same fields in the query string (order_by may repeat).
        crate::request::typed(crate::request::query_object(query))?
    } else {
        parse_body(&bytes)?
    };
    let view = req.view_type.as_deref().unwrap_or("ACTIVE_ONLY");
    let keep = |deleted: bool| match view {
        "DELETED_ONLY" => deleted,
        "ALL" => true,
        _ => !deleted,
    };
    let conditions = super::search::parse_filter(req.filter.as_deref().unwrap_or(""))?;
    let store = s.store();
    let mut found = Vec::new();
    let mut projects = store.list_projects().await?;
    // MLflow's store always has its Default experiment; runql makes the project on first use,
    // and lists it before that.
    let fresh_default = !projects.iter().any(|p| p == DEFAULT_PROJECT);
    if fresh_default {
        projects.insert(0, DEFAULT_PROJECT.to_string());
    }
    for p in projects {
        let loaded = match load(store, &p).await? {
            None if p == DEFAULT_PROJECT && fresh_default => Some(Experiment {
                id: p.clone(),
                name: p.clone(),
                created_ms: 0,
                updated_ms: 0,
                deleted: false,
                tags: Vec::new(),
                artifact_location: None,
            }),
            other => other,
        };
        let Some(e) = loaded else {
            continue;
        };
        if !keep(e.deleted) {
            continue;
        }
        let mut ok = true;
        for c in &conditions {
            let actual = match (c.entity_name(), c.key()) {
                ("attributes", "name") => Some(e.name.clone()),
                ("attributes", "experiment_id") => Some(experiment_id_of(&e.id).to_string()),
                ("attributes", "creation_time") => Some(e.created_ms.to_string()),
                ("attributes", "last_update_time") => Some(e.updated_ms.to_string()),
                ("tags", key) => e
                    .tags
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone()),
                (entity, key) => {
                    return Err(ApiError::invalid(format!(
                        "Invalid attribute key '{key}' in an experiment filter ({entity}): \
                         use name, creation_time, last_update_time or tags.<key>"
                    )));
                }
            };
            ok &= c.matches(actual.as_deref());
        }
        if ok {
            found.push(e);
        }
    }
    // MLflow's default order: newest first, then id.
    found.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    let orders: Vec<String> = match &req.order_by {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    for clause in orders.iter().rev() {
        let mut words = clause.split_whitespace();
        let field = words.next().unwrap_or("");
        let field = field.strip_prefix("attributes.").unwrap_or(field);
        let desc = match words.next().map(str::to_ascii_uppercase).as_deref() {
            None | Some("ASC") => false,
            Some("DESC") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid order_by clause {clause:?}: {other:?} is neither ASC nor DESC"
                )));
            }
        };
        let key = |e: &Experiment| -> String {
            match field {
                "name" => e.name.clone(),
                "experiment_id" => experiment_id_of(&e.id).to_string(),
                "creation_time" => format!("{:020}", e.created_ms),
                _ => format!("{:020}", e.updated_ms),
            }
        };
        if !matches!(
            field,
            "name" | "experiment_id" | "creation_time" | "last_update_time"
        ) {
            return Err(ApiError::invalid(format!(
                "Invalid order_by clause {clause:?}: experiments are ordered by name, \
                 experiment_id, creation_time or last_update_time"
            )));
        }
        found.sort_by(|a, b| {
            let o = key(a).cmp(&key(b));
            if desc { o.reverse() } else { o }
        });
    }
    let max = req.max_results.map_or(1000, |m| m.0).clamp(1, 50_000) as usize;
    let offset = wire::page_offset(req.page_token.as_deref())?;
    let page: Vec<Value> = found
        .iter()
        .skip(offset)
        .take(max)
        .map(Experiment::to_json)
        .collect();
    let more = found.len() > offset + max;
    Ok(wire::page(
        "experiments",
        page,
        more.then_some(offset + max),
    ))
}

/// `experiments/search-datasets` (MLflow serves it under `/ajax-api` only; its UI fills the
/// dataset filter from it).
#[derive(Debug, Deserialize)]
pub(crate) struct SearchDatasets {
    #[serde(default)]
    experiment_ids: Vec<String>,
}

/// Most experiments one `search-datasets` names (MLflow's bound).
const MAX_DATASET_EXPERIMENTS: usize = 20;
/// Most summaries one `search-datasets` answers with (MLflow's bound).
const MAX_DATASET_SUMMARIES: usize = 1000;

/// Each distinct (experiment, name, digest, context) of the datasets the experiments' runs
/// used, by experiment (in the order asked) then name, digest and context.
pub(crate) async fn search_datasets(
    Read(s): Read<State>,
    MlflowJson(req): MlflowJson<SearchDatasets>,
) -> Result<Response, ApiError> {
    let ids = req.experiment_ids;
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "SearchDatasets request must specify at least one experiment_id.",
        ));
    }
    if ids.len() > MAX_DATASET_EXPERIMENTS {
        return Err(ApiError::invalid(format!(
            "SearchDatasets request cannot specify more than {MAX_DATASET_EXPERIMENTS} \
             experiment_ids. Received {} experiment_ids.",
            ids.len()
        )));
    }
    super::held::flush_all(&s).await?;
    let mut summaries = Vec::new();
    let mut seen_experiments = std::collections::HashSet::new();
    for id in &ids {
        if !seen_experiments.insert(id.as_str()) {
            continue;
        }
        let project = &*project_of(id);
        let batches = match s
            .store()
            .scan(
                runql_core::Table::Inputs,
                &runql_core::Scan::project(project),
            )
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let mut distinct = std::collections::BTreeSet::new();
        for b in &batches {
            use runql_core::store::string_column;
            let (name, digest, role) = (
                string_column(b, "name")?,
                string_column(b, "digest")?,
                string_column(b, "role")?,
            );
            let opt = |a: &arrow::array::StringArray, i: usize| {
                arrow::array::Array::is_valid(a, i).then(|| a.value(i).to_string())
            };
            for i in 0..b.num_rows() {
                let role = opt(role, i);
                // The models a run produced are rows with role 'output': not datasets.
                if role.as_deref() == Some(wire::OUTPUT_ROLE) {
                    continue;
                }
                distinct.insert((name.value(i).to_string(), opt(digest, i), role));
            }
        }
        for (name, digest, context) in distinct {
            let mut summary = json!({"experiment_id": experiment_id_of(project), "name": name});
            if let Some(d) = digest {
                summary["digest"] = json!(d);
            }
            if let Some(c) = context.filter(|c| !c.is_empty()) {
                summary["context"] = json!(c);
            }
            summaries.push(summary);
        }
    }
    summaries.truncate(MAX_DATASET_SUMMARIES);
    let mut out = json!({});
    if !summaries.is_empty() {
        out["dataset_summaries"] = Value::Array(summaries);
    }
    Ok(axum::Json(out).into_response())
}
