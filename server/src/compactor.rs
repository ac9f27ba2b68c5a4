//! Compaction from the server: when runs of a project finish, the project is compacted a little
//! later, so that searches and SQL read a few Parquet files instead of every finished run's
//! live folder. Runs finishing within the delay are compacted together (one request per project
//! is pending at a time); `Options::compact_after = None` turns it off.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runql_core::Store;

/// Compacts projects a while after their runs finish.
#[derive(Debug, Clone)]
pub(crate) struct Compactor {
    store: Store,
    /// `None`: never (`runql compact` then does it).
    after: Option<Duration>,
    /// The projects waiting for a compaction.
    pending: Arc<Mutex<HashSet<String>>>,
}

impl Compactor {
    pub(crate) fn new(store: Store, after: Option<Duration>) -> Compactor {
        Compactor {
            store,
            after,
            pending: Arc::default(),
        }
    }

    /// Compacts `project` after the delay, unless a compaction is already waiting for it.
    pub(crate) fn schedule(&self, project: &str) {
        let Some(delay) = self.after else {
            return;
        };
        let fresh = self
            .pending
            .lock()
            .is_ok_and(|mut p| p.insert(project.to_string()));
        if !fresh {
            return;
        }
        let (this, project) = (self.clone(), project.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(mut p) = this.pending.lock() {
                p.remove(&project);
            }
            match this.store.compact(&project).await {
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
}
