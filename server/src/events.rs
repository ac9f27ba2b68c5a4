//! `GET /api/events`: server-sent events for live views. One poller per server watches the
//! store (a LIST of each project's live area per tick, no data read) and tells every subscriber
//! when a live run changes: new data flushed, a new status (running, finished, crashed…).
//! It sees runs logged by any writer — the Rust client, `runql run`, this server's MLflow API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use runql_core::Store;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::request::Read;

/// How often the store is looked at.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// One change of one live run, as sent (`event: run`, JSON data).
#[derive(Debug, Clone)]
pub(crate) struct RunEvent {
    project: String,
    data: String,
}

/// The poller, started by the first subscriber.
pub(crate) struct Events {
    store: Store,
    tx: std::sync::OnceLock<broadcast::Sender<RunEvent>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(store: Store) -> Events {
        Events {
            store,
            tx: Default::default(),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.tx
            .get_or_init(|| {
                let (tx, _) = broadcast::channel(1024);
                tokio::spawn(poll(self.store.clone(), tx.clone()));
                tx
            })
            .subscribe()
    }
}

/// Watches every project's live runs; sends an event whenever one's status or newest object
/// changes. Stops when nobody listens any more.
async fn poll(store: Store, tx: broadcast::Sender<RunEvent>) {
    let mut last: HashMap<(String, String), (String, i64)> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        if tx.receiver_count() == 0 {
            // Keep the sender (subscribers may come back) but do no work meanwhile.
            continue;
        }
        let Ok(projects) = store.list_projects().await else {
            continue;
        };
        let mut seen = HashMap::new();
        for project in projects {
            let Ok(snap) = store.snapshot(&project, None).await else {
                continue;
            };
            for run in snap.live.values() {
                let Some(record) = run.effective_record(store.stale_after()) else {
                    continue;
                };
                let key = (project.clone(), run.run_id.clone());
                let state = (record.status.as_str().to_string(), run.last_modified);
                if last.get(&key) != Some(&state) {
                    let data = json!({
                        "project": project,
                        "run_id": run.run_id,
                        "name": record.name,
                        "status": state.0,
                        "updated": run.last_modified,
                    })
                    .to_string();
                    let _ = tx.send(RunEvent {
                        project: project.clone(),
                        data,
                    });
                }
                seen.insert(key, state);
            }
        }
        last = seen;
    }
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    project: Option<String>,
}

/// `GET /api/events[?project=P]`.
pub(crate) async fn events(
    Read(events): Read<Arc<Events>>,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = events.subscribe();
    let project = q.project.map(Arc::new);
    let stream = futures::stream::unfold(rx, move |mut rx| {
        let project = project.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if project.as_deref().is_some_and(|p| *p != ev.project) {
                            continue;
                        }
                        return Some((Ok(Event::default().event("run").data(ev.data)), rx));
                    }
                    // A slow client missed events: tell it to reload rather than drop silently.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Some((
                            Ok(Event::default().event("lagged").data(n.to_string())),
                            rx,
                        ));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
