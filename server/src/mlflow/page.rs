//! MLflow's `Run` objects, rendered from the store: a run's info, and pages of runs (params,
//! tags, latest metrics, dataset inputs, model outputs) read out of project snapshots — the
//! same reads and resolution rules the SQL tables use, so both show the same runs.

use std::collections::HashMap;

use arrow::array::{Array, RecordBatch, StringArray};
use runql_core::store::{
    ProjectSnapshot, f64_column, i64_column, records_from_batch, resolve, string_column,
    timestamp_column,
};
use runql_core::{RunRecord, Scan, Store, Table};
use serde_json::{Value, json};

use super::state::Mlflow;
use super::wire::{OUTPUT_ROLE, double, experiment_id_of, status_name};
use crate::error::ApiError;

/// MLflow's `RunInfo` of a run record.
pub(crate) fn run_info(r: &RunRecord) -> Value {
    let experiment_id = experiment_id_of(&r.project);
    json!({
        "run_id": r.run_id,
        "run_uuid": r.run_id,
        "run_name": r.name.clone().unwrap_or_default(),
        "experiment_id": experiment_id,
        "user_id": r.username.clone().unwrap_or_default(),
        "status": status_name(r.status),
        "start_time": r.started.unwrap_or(r.created) / 1000,
        "end_time": r.ended.map(|e| e / 1000),
        "artifact_uri": format!("mlflow-artifacts:/{experiment_id}/{}/artifacts", r.run_id),
        "lifecycle_stage": if r.deleted { "deleted" } else { "active" },
    })
}

/// The runs with these ids, in this order, as MLflow's `Run` objects.
pub(crate) async fn runs_json(
    s: &Mlflow,
    projects: &[String],
    ids: &[String],
) -> Result<Vec<Value>, ApiError> {
    if ids.is_empty() || projects.is_empty() {
        return Ok(Vec::new());
    }
    // One snapshot per project: one listing of the manifest and of the runs' live folders.
    let store = s.store();
    let mut snaps = Vec::with_capacity(projects.len());
    for project in projects {
        snaps.push(store.snapshot(project, Some(ids)).await?);
    }
    page_json(store, &snaps, ids).await
}

/// A run's parts on a page: its record, params, tags and latest metrics.
type Parts = (RunRecord, Vec<Value>, Vec<Value>, Vec<Value>);

/// The runs with these ids, in this order, as MLflow's `Run` objects, read out of snapshots.
pub(crate) async fn page_json(
    store: &Store,
    snaps: &[ProjectSnapshot],
    ids: &[String],
) -> Result<Vec<Value>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // The six tables read out of each snapshot at once: a page is one round of requests.
    let (mut runs, mut params, mut tags, mut summaries, mut inputs, mut system) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for snap in snaps {
        let scan = Scan::project(&snap.project).runs(ids.iter().map(String::as_str));
        let read = |table: Table| {
            let scan = &scan;
            async move { resolve(table, store.read_snapshot(snap, table, scan).await?) }
        };
        let (r, p, t, m, i, sm) = tokio::try_join!(
            read(Table::Runs),
            read(Table::Params),
            read(Table::Tags),
            read(Table::MetricSummary),
            read(Table::Inputs),
            read(Table::SystemMetrics),
        )?;
        runs.extend(r);
        params.extend(p);
        tags.extend(t);
        summaries.extend(m);
        inputs.extend(i);
        system.extend(sm);
    }
    let mut by_id: HashMap<String, Parts> = HashMap::new();
    for b in &runs {
        for r in records_from_batch(b)? {
            by_id.insert(r.run_id.clone(), (r, Vec::new(), Vec::new(), Vec::new()));
        }
    }
    for (batches, is_param) in [(&params, true), (&tags, false)] {
        for b in batches {
            let (id, k, v) = (
                string_column(b, "run_id")?,
                string_column(b, "key")?,
                string_column(b, "value")?,
            );
            for i in 0..b.num_rows() {
                if let Some(e) = by_id.get_mut(id.value(i)) {
                    let kv = json!({"key": k.value(i), "value": v.value(i)});
                    if is_param { e.1.push(kv) } else { e.2.push(kv) }
                }
            }
        }
    }
    for b in &summaries {
        let id = string_column(b, "run_id")?;
        let k = string_column(b, "key")?;
        let v = f64_column(b, "last_value")?;
        let step = i64_column(b, "last_step")?;
        let ts = timestamp_column(b, "last_ts")?;
        for i in 0..b.num_rows() {
            if let Some(e) = by_id.get_mut(id.value(i)) {
                e.3.push(json!({"key": k.value(i), "value": double(v.value(i)), "step": step.value(i), "timestamp": ts.value(i) / 1000}));
            }
        }
    }
    // MLflow lists the latest sample of each system metric (`system/…`) among a run's metrics.
    for (id, metrics) in super::history::latest_system(&system)? {
        if let Some(e) = by_id.get_mut(&id) {
            e.3.extend(metrics);
        }
    }
    let descriptions = dataset_descriptions(store, &inputs).await?;
    let mut io = inputs_and_outputs(&inputs, &descriptions)?;
    Ok(ids
        .iter()
        .filter_map(|id| by_id.remove(id))
        .map(|(r, params, tags, metrics)| {
            let (datasets, models) = io.remove(&r.run_id).unwrap_or_default();
            json!({
                "info": run_info(&r),
                "data": {"metrics": metrics, "params": params, "tags": tags},
                "inputs": {"dataset_inputs": datasets},
                "outputs": {"model_outputs": models},
            })
        })
        .collect())
}

/// (project, name, digest) of a dataset → what MLflow said of it (source type, source,
/// schema, profile), for the datasets of these `inputs` rows that have one.
type Descriptions = HashMap<(String, String, String), Value>;

async fn dataset_descriptions(
    store: &Store,
    inputs: &[RecordBatch],
) -> Result<Descriptions, ApiError> {
    let mut wanted = std::collections::BTreeSet::new();
    for b in inputs {
        let (project, name, digest, role) = (
            string_column(b, "project")?,
            string_column(b, "name")?,
            string_column(b, "digest")?,
            string_column(b, "role")?,
        );
        for i in 0..b.num_rows() {
            if !role.is_null(i) && role.value(i) == OUTPUT_ROLE {
                continue;
            }
            let digest = if digest.is_null(i) {
                ""
            } else {
                digest.value(i)
            };
            wanted.insert((
                project.value(i).to_string(),
                name.value(i).to_string(),
                digest.to_string(),
            ));
        }
    }
    let mut out = Descriptions::new();
    for (project, name, digest) in wanted {
        let d = (!digest.is_empty()).then_some(digest.as_str());
        if let Some(bytes) = store.dataset(&project, &name, d).await?
            && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
        {
            out.insert((project, name, digest), v);
        }
    }
    Ok(out)
}

/// Per run id: the datasets it used and the models it produced, as MLflow's JSON.
type RunIo = HashMap<String, (Vec<Value>, Vec<Value>)>;

/// Datasets each run used and models it produced (`runs/outputs` rows have the role
/// `output`, see models.rs), by run id.
fn inputs_and_outputs(
    inputs: &[RecordBatch],
    descriptions: &Descriptions,
) -> Result<RunIo, ApiError> {
    fn text(c: &StringArray, i: usize) -> &str {
        if c.is_null(i) { "" } else { c.value(i) }
    }
    let mut io = RunIo::new();
    for b in inputs {
        let project = string_column(b, "project")?;
        let (id, name, uri, digest, role) = (
            string_column(b, "run_id")?,
            string_column(b, "name")?,
            string_column(b, "uri")?,
            string_column(b, "digest")?,
            string_column(b, "role")?,
        );
        for i in 0..b.num_rows() {
            let slot = io.entry(id.value(i).to_string()).or_default();
            let (uri, digest, role) = (text(uri, i), text(digest, i), text(role, i));
            if role == OUTPUT_ROLE {
                if let Some(model_id) = uri.strip_prefix("models:/") {
                    let step: i64 = digest.parse().unwrap_or(0);
                    slot.1.push(json!({"model_id": model_id, "step": step}));
                }
                continue;
            }
            // MLflow sends a dataset's source as JSON text; runql kept its URI.
            let source = if uri.starts_with('{') {
                uri.to_string()
            } else {
                json!({"uri": uri}).to_string()
            };
            let mut tags = Vec::new();
            if !role.is_empty() {
                tags.push(json!({"key": "mlflow.data.context", "value": role}));
            }
            let mut dataset = json!({"name": name.value(i), "digest": digest, "source_type": if uri.starts_with('{') { "code" } else { "external" }, "source": source});
            // What MLflow was told of the dataset, as it was told.
            let key = (
                project.value(i).to_string(),
                name.value(i).to_string(),
                digest.to_string(),
            );
            if let Some(Value::Object(desc)) = descriptions.get(&key) {
                for (k, v) in desc {
                    dataset[k.as_str()] = v.clone();
                }
            }
            slot.0.push(json!({"tags": tags, "dataset": dataset}));
        }
    }
    Ok(io)
}
