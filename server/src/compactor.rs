//! Compaction from the server: when runs of a project finish, the project is compacted a little
//! later, so that searches and SQL read a few Parquet files instead of every finished run's
//! live folder. Runs finishing within the delay are compacted together (one request per project
//! is pending at a time); `Options::compact_after = None` turns it off.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::Shared;

/// The projects waiting for a compaction.
#[derive(Debug, Default)]
pub(crate) struct Compactor {
    pending: Mutex<HashSet<String>>,
}

/// Compacts `project` after the server's delay, unless a compaction is already waiting for it.
pub(crate) fn schedule(s: &Shared, project: &str) {
    let Some(delay) = s.compact_after else {
        return;
    };
    let fresh = s
        .compactor
        .pending
        .lock()
        .is_ok_and(|mut p| p.insert(project.to_string()));
    if !fresh {
        return;
    }
    let (s, project) = (s.clone(), project.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Ok(mut p) = s.compactor.pending.lock() {
            p.remove(&project);
        }
        match s.engine.store().compact(&project).await {
            Ok(r) if r.runs > 0 => {
                tracing::info!(project, runs = r.runs, "compacted finished runs")
            }
            Ok(_) => {}
            // Compaction is an optimisation: the runs stay readable from their live folders,
            // and `runql compact` can be run by hand.
            Err(e) => tracing::warn!(project, error = %e, "compaction failed"),
        }
    });
}
