//! MLflow runs: create, update (end), get, delete/restore and search.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use runql_core::model::RunStatus;
use runql_core::{Capture, RunId};
use serde::Deserialize;
use serde_json::json;

use super::held::{self, flush_all, flush_if_open, project_of_run, read_record};
use super::page::{page_json, run_info, runs_json};
use super::state::State;
use super::wire::{self, DEFAULT_ID, Int, Tag, page_offset, project_of, run_id_of};
use crate::error::ApiError;
use crate::request::{MlflowJson, MlflowQuery, Read, Write};

/// `runs/create`.
#[derive(Debug, Deserialize)]
pub(crate) struct CreateRun {
    experiment_id: Option<String>,
    run_name: Option<String>,
    user_id: Option<String>,
    start_time: Option<Int>,
    #[serde(default)]
    tags: Vec<Tag>,
}

/// The tag MLflow keeps a run's name in too.
pub(crate) const RUN_NAME_TAG: &str = "mlflow.runName";

/// What the MLflow client's tags say of who ran what code: `runs.username` and the git
/// columns, as runql's own client captures them.
fn source_of(user_id: Option<&str>, tags: &[(String, String)]) -> runql_core::Source {
    let tag = |key: &str| {
        tags.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    runql_core::Source {
        // The client sends `user_id` from the `mlflow.user` tag ("unknown" without one).
        username: user_id
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .or_else(|| tag("mlflow.user")),
        git_commit: tag("mlflow.source.git.commit"),
        git_branch: tag("mlflow.source.git.branch"),
        git_dirty: None,
    }
}

/// The project of an experiment that must exist (the Default one is created on first use,
/// as in MLflow); its creation time.
pub(crate) async fn ensure_project(
    store: &runql_core::Store,
    project: &str,
) -> Result<i64, ApiError> {
    match store.project_record(project).await? {
        Some(p) => Ok(p.created),
        None if project == wire::DEFAULT_PROJECT => {
            Ok(store.create_project(project).await?.created)
        }
        None => Err(ApiError::not_found(format!(
            "No Experiment with id={}",
            wire::experiment_id_of(project)
        ))),
    }
}

pub(crate) async fn create_run(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<CreateRun>,
) -> Result<Response, ApiError> {
    let experiment_id = req.experiment_id.as_deref().unwrap_or(DEFAULT_ID);
    let project = project_of(experiment_id).to_string();
    ensure_project(s.store(), &project).await?;
    let mut tags = wire::pairs(req.tags);
    super::logging::truncate_tags(&mut tags);
    let tagged = tags
        .iter()
        .find(|(k, _)| k == RUN_NAME_TAG)
        .map(|(_, v)| v.clone());
    let given = req.run_name.filter(|n| !n.is_empty());
    if let (Some(given), Some(tagged)) = (&given, &tagged)
        && given != tagged
    {
        return Err(ApiError::invalid(format!(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with \
             different values (run_name='{given}', mlflow.runName='{tagged}')."
        )));
    }
    // As MLflow: the name given, else the tag's, else one made up; the tag is added if absent.
    let name = given
        .or_else(|| tagged.clone().filter(|t| !t.is_empty()))
        .unwrap_or_else(super::names::generate);
    if tagged.is_none() {
        tags.push((RUN_NAME_TAG.to_string(), name.clone()));
    }
    let source = source_of(req.user_id.as_deref(), &tags);
    let started_at = req
        .start_time
        .map(|t| t.0)
        .filter(|t| *t > 0)
        .map(|ms| ms.saturating_mul(1000));
    let parent = tags
        .iter()
        .find(|(k, _)| k == "mlflow.parentRunId")
        .and_then(|(_, v)| v.parse::<RunId>().ok());
    let tags_json = wire::kv_json(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let store = s.store().clone();
    let builder = s.configure(store.project(&project).run().capture(Capture::none()));
    let run = tokio::task::spawn_blocking(move || {
        let mut b = builder.name(name).source(source);
        if let Some(t) = started_at {
            b = b.started_at(t);
        }
        if let Some(p) = parent {
            b = b.parent_id(p);
        }
        for (k, v) in tags {
            b = b.tag(k, v);
        }
        b.start()
    })
    .await??;
    // Its tags are in the buffer and the log: acknowledged once the log has them.
    run.wait_durable().await?;
    let id = run.id().to_string();
    s.runs.remember_project(&id, run.project());
    // The record as stored: what reading it back would give.
    let info = run_info(run.started_record());
    s.runs.touch(&id);
    if let Ok(mut open) = s.runs.open.lock() {
        open.insert(id, Arc::new(run));
    }
    Ok(axum::Json(
        json!({"run": {"info": info, "data": {"metrics": [], "params": [], "tags": tags_json}, "inputs": {}}}),
    )
    .into_response())
}

/// `runs/update`.
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateRun {
    run_id: Option<String>,
    run_uuid: Option<String>,
    status: Option<String>,
    run_name: Option<String>,
    end_time: Option<Int>,
}

pub(crate) async fn update_run(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<UpdateRun>,
) -> Result<Response, ApiError> {
    let run_id = run_id_of(req.run_id, req.run_uuid)?;
    if s.runs.is_deleted(&run_id) || read_record(&s, &run_id).await?.deleted {
        return Err(held::not_active(&run_id));
    }
    // A non-empty name renames the run and its `mlflow.runName` tag, as in MLflow.
    if let Some(name) = req.run_name.filter(|n| !n.is_empty()) {
        rename(&s, &run_id, &name).await?;
    }
    let status = match req.status.as_deref() {
        None | Some("RUNNING") | Some("SCHEDULED") => None,
        Some("FINISHED") => Some(RunStatus::Finished),
        Some("FAILED") => Some(RunStatus::Failed),
        Some("KILLED") => Some(RunStatus::Killed),
        Some(other) => return Err(ApiError::invalid(format!("Invalid run status '{other}'"))),
    };
    let end_us = req.end_time.map(|t| t.0.saturating_mul(1000));
    if let Some(status) = status
        && let Some(record) = held::end(&s, &run_id, status, end_us).await?
    {
        s.compactor.schedule(&record.project);
        return Ok(axum::Json(json!({"run_info": run_info(&record)})).into_response());
    }
    let record = read_record(&s, &run_id).await?;
    Ok(axum::Json(json!({"run_info": run_info(&record)})).into_response())
}

/// `runs/delete` and `runs/restore`.
#[derive(Debug, Deserialize)]
pub(crate) struct RunRef {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

/// Renames a run and sets its `mlflow.runName` tag (MLflow keeps both).
pub(crate) async fn rename(s: &State, run_id: &str, name: &str) -> Result<(), ApiError> {
    held::with_run(s, run_id, |run| {
        run.rename(name)?;
        run.set_tag(RUN_NAME_TAG, name)?;
        Ok(())
    })
    .await
}

async fn set_deleted(s: &State, req: RunRef, deleted: bool) -> Result<Response, ApiError> {
    let run_id = run_id_of(req.run_id, req.run_uuid)?;
    let record = read_record(s, &run_id).await?;
    s.store()
        .set_run_deleted(&record.project, &run_id, deleted)
        .await?;
    s.runs.set_deleted(&run_id, deleted);
    Ok(wire::ok())
}

pub(crate) async fn delete_run(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<RunRef>,
) -> Result<Response, ApiError> {
    set_deleted(&s, req, true).await
}

pub(crate) async fn restore_run(
    Write(s): Write<State>,
    MlflowJson(req): MlflowJson<RunRef>,
) -> Result<Response, ApiError> {
    set_deleted(&s, req, false).await
}

pub(crate) async fn get_run(
    Read(s): Read<State>,
    MlflowQuery(q): MlflowQuery<RunRef>,
) -> Result<Response, ApiError> {
    let run_id = run_id_of(q.run_id, q.run_uuid)?;
    flush_if_open(&s, &run_id).await?;
    // A missing run is RESOURCE_DOES_NOT_EXIST.
    let project = project_of_run(&s, &run_id).await?;
    let run = runs_json(
        &s,
        std::slice::from_ref(&project),
        std::slice::from_ref(&run_id),
    )
    .await?
    .pop()
    .ok_or_else(|| ApiError::not_found(format!("Run with id={run_id} not found")))?;
    Ok(axum::Json(json!({ "run": run })).into_response())
}

/// `runs/search`.
#[derive(Debug, Deserialize)]
pub(crate) struct SearchRuns {
    #[serde(default)]
    experiment_ids: Vec<String>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    order_by: Vec<String>,
    #[serde(default)]
    run_view_type: Option<String>,
    #[serde(default)]
    max_results: Option<Int>,
    #[serde(default)]
    page_token: Option<String>,
}

/// The projects of a request's `experiment_ids`, which must name at least one.
pub(crate) fn projects_of(experiment_ids: &[String]) -> Result<Vec<String>, ApiError> {
    if experiment_ids.is_empty() {
        return Err(ApiError::missing("experiment_ids"));
    }
    Ok(experiment_ids
        .iter()
        .map(|i| project_of(i).to_string())
        .collect())
}

/// `runs/search`: MLflow filter strings, order_by and paging, evaluated by search.rs.
pub(crate) async fn search_runs(
    Read(s): Read<State>,
    MlflowJson(req): MlflowJson<SearchRuns>,
) -> Result<Response, ApiError> {
    let projects = projects_of(&req.experiment_ids)?;
    let deleted = match req.run_view_type.as_deref().unwrap_or("ACTIVE_ONLY") {
        "ACTIVE_ONLY" => Some(false),
        "DELETED_ONLY" => Some(true),
        _ => None,
    };
    // MLflow's bounds, in its words.
    let max_results = match req.max_results.map_or(1000, |m| m.0) {
        n if n <= 0 => {
            return Err(ApiError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be a positive integer"
            )));
        }
        n if n > 50_000 => {
            return Err(ApiError::invalid(format!(
                "Invalid value {n} for parameter 'max_results' supplied. It must be at most 50000"
            )));
        }
        n => n as usize,
    };
    let offset = page_offset(req.page_token.as_deref())?;
    flush_all(&s).await?;
    // One snapshot per project, for the search and the page both.
    let store = s.store();
    let mut snaps = Vec::with_capacity(projects.len());
    for project in &projects {
        snaps.push(store.snapshot(project, None).await?);
    }
    let search = super::search::Request {
        filter: req.filter.as_deref().unwrap_or(""),
        order_by: &req.order_by,
        deleted,
        max_results,
        offset,
    };
    let (ids, more) = super::search::run_ids(store, &snaps, &search).await?;
    let runs = page_json(store, &snaps, &ids).await?;
    Ok(wire::page(
        "runs",
        runs,
        more.then_some(offset + max_results),
    ))
}
