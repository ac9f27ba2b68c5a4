//! The runs the server writes through. It keeps one [`Run`] handle per MLflow run being
//! logged; a write to a run it does not hold reopens it with `Project::resume` — kept open when
//! the run is still running (this server restarted), or reopened for that one request and
//! finished again with its old status when it had ended (MLflow lets clients log into finished
//! runs, which stay finished). Reads of a run the server holds flush it first, so that clients
//! read what they just wrote.

use std::sync::Arc;

use runql_core::model::RunStatus;
use runql_core::store::string_column;
use runql_core::{Run, RunId, RunRecord, Scan, Table};

use super::state::Mlflow;
use crate::error::ApiError;

/// A run to log into: one the server holds open, or one reopened for this request only.
pub(crate) enum Held {
    Open(Arc<Run>),
    /// A run that had ended: it is finished again, with its old status and end time, after
    /// the request.
    Reopened(Run, RunStatus, Option<i64>),
}

impl std::ops::Deref for Held {
    type Target = Run;
    fn deref(&self) -> &Run {
        match self {
            Held::Open(r) => r,
            Held::Reopened(r, _, _) => r,
        }
    }
}

impl Held {
    /// Ends a reopened run again (whatever the request's outcome).
    pub(crate) async fn close(self) -> Result<(), ApiError> {
        if let Held::Reopened(run, status, ended) = self {
            tokio::task::spawn_blocking(move || match ended {
                Some(at) => run.finish_at(status, at),
                None => run.finish_with(status),
            })
            .await??;
        }
        Ok(())
    }
}

/// MLflow's refusal of a write to a deleted run.
pub(crate) fn not_active(run_id: &str) -> ApiError {
    ApiError::invalid(format!(
        "The run {run_id} must be in the 'active' state. Current state is deleted."
    ))
}

/// The server's handle on a run to write to (see the module's doc); a deleted run is refused,
/// as MLflow refuses it.
pub(crate) async fn hold(s: &Mlflow, run_id: &str) -> Result<Held, ApiError> {
    if let Some(r) = s.runs.open_run(run_id) {
        if s.runs.is_deleted(run_id) {
            return Err(not_active(run_id));
        }
        s.runs.touch(run_id);
        return Ok(Held::Open(r));
    }
    let id: RunId = run_id
        .parse()
        .map_err(|_| ApiError::not_found(format!("Run with id={run_id} not found")))?;
    let record = read_record(s, run_id).await?;
    if record.deleted {
        return Err(not_active(run_id));
    }
    let builder = s.configure(s.store().project(&record.project).resume(id).await?);
    let run = tokio::task::spawn_blocking(move || builder.start()).await??;
    // A run whose client was silent past its window reads `crashed` without having ended:
    // its client speaking again makes it `running` again.
    let silent = record.status == RunStatus::Crashed
        && record.ended.is_none()
        && record.silent_after.is_some();
    if record.status != RunStatus::Running && !silent {
        return Ok(Held::Reopened(run, record.status, record.ended));
    }
    let run = Arc::new(run);
    s.runs.touch(run_id);
    match s.runs.open.lock() {
        Ok(mut open) => Ok(Held::Open(
            open.entry(run_id.to_string()).or_insert(run).clone(),
        )),
        Err(_) => Ok(Held::Open(run)),
    }
}

/// Runs `f` with the run's handle and returns once what it logged is durable (in the
/// write-ahead log, or stored for a reopened run, which is closed again whatever happened):
/// what a request waits for before it is acknowledged.
pub(crate) async fn with_run(
    s: &Mlflow,
    run_id: &str,
    f: impl FnOnce(&Run) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let run = hold(s, run_id).await?;
    let result = f(&run);
    let durable = match (&result, &run) {
        (Ok(()), Held::Open(r)) => r.wait_durable().await.map_err(ApiError::from),
        _ => Ok(()),
    };
    let closed = run.close().await;
    result.and(durable).and(closed)
}

/// Ends a run with `status` and gives its final record, when this server holds it or had to
/// reopen it; `None` when another writer holds it.
pub(crate) async fn end(
    s: &Mlflow,
    run_id: &str,
    status: RunStatus,
    at: Option<i64>,
) -> Result<Option<RunRecord>, ApiError> {
    let mut ended = None;
    // Make sure the run exists (and reopen it if this server does not hold it).
    s.runs.forget(run_id);
    if let Held::Reopened(run, _, _) = hold(s, run_id).await? {
        ended = Some(tokio::task::spawn_blocking(move || run.end_with_record(status, at)).await??);
    }
    let owned = s.runs.open.lock().ok().and_then(|mut o| o.remove(run_id));
    if let Some(run) = owned {
        ended = Some(
            tokio::task::spawn_blocking(move || {
                // Other requests may still hold the handle for a moment; wait for them.
                let mut run = run;
                loop {
                    match Arc::try_unwrap(run) {
                        Ok(r) => return r.end_with_record(status, at),
                        Err(shared) => {
                            run = shared;
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                    }
                }
            })
            .await??,
        );
    }
    Ok(ended)
}

/// A run's record (`RESOURCE_DOES_NOT_EXIST` when there is no such run).
pub(crate) async fn read_record(s: &Mlflow, run_id: &str) -> Result<RunRecord, ApiError> {
    let store = s.store();
    if let Some(project) = s.runs.project_of(run_id) {
        let scan = Scan::project(&project).runs([run_id]);
        for b in store.scan(Table::Runs, &scan).await? {
            if let Some(r) = runql_core::store::records_from_batch(&b)?
                .into_iter()
                .next()
            {
                return Ok(r);
            }
        }
    }
    let record = store.find_run(run_id).await?;
    s.runs.remember_project(run_id, &record.project);
    Ok(record)
}

/// The project of a run (`RESOURCE_DOES_NOT_EXIST` when there is no such run).
pub(crate) async fn project_of_run(s: &Mlflow, run_id: &str) -> Result<String, ApiError> {
    match s.runs.project_of(run_id) {
        Some(p) => Ok(p),
        None => Ok(read_record(s, run_id).await?.project),
    }
}

/// Makes what the server logged for `run_id` visible to readers.
pub(crate) async fn flush_if_open(s: &Mlflow, run_id: &str) -> Result<(), ApiError> {
    if let Some(run) = s.runs.open_run(run_id) {
        tokio::task::spawn_blocking(move || run.flush()).await??;
    }
    Ok(())
}

/// Every run the server holds, flushed: searches see what clients just logged.
pub(crate) async fn flush_all(s: &Mlflow) -> Result<(), ApiError> {
    let open = s.runs.all_open();
    tokio::task::spawn_blocking(move || open.iter().try_for_each(|r| r.flush())).await??;
    Ok(())
}

/// The value of one tag of a run (its latest), the server's writes flushed first.
pub(crate) async fn run_tag(
    s: &Mlflow,
    run_id: &str,
    key: &str,
) -> Result<Option<String>, ApiError> {
    flush_if_open(s, run_id).await?;
    let project = project_of_run(s, run_id).await?;
    let scan = Scan::project(&project).runs([run_id]).keys([key]);
    let mut value = None;
    for b in s.store().scan(Table::Tags, &scan).await? {
        let (k, v) = (string_column(&b, "key")?, string_column(&b, "value")?);
        for i in 0..b.num_rows() {
            if k.value(i) == key {
                value = Some(v.value(i).to_string());
            }
        }
    }
    Ok(value)
}
