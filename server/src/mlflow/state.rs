//! What the MLflow routes share: the engine (and its store), the run handles the server is
//! writing through, recent request digests (retries), and where runs and models live.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runql_core::{Run, RunBuilder, Store, Wal};
use runql_query::Engine;

use crate::compactor::Compactor;
use crate::error::ApiError;

/// The MLflow routes' part of the server state.
#[derive(Debug)]
pub(crate) struct Mlflow {
    pub(crate) engine: Engine,
    pub(crate) runs: Runs,
    /// Which project holds which logged model.
    pub(crate) models: ModelIndex,
    pub(crate) compactor: Compactor,
    /// Every run the server logs into writes ahead into this log: a request is answered
    /// once what it logged is durable there.
    pub(crate) wal: Wal,
    /// How long a client may be silent before its run reads `crashed`.
    pub(crate) silent_after: Duration,
}

impl Mlflow {
    pub(crate) fn new(
        engine: Engine,
        compactor: Compactor,
        wal: Wal,
        silent_after: Duration,
    ) -> Mlflow {
        Mlflow {
            engine,
            runs: Runs::default(),
            models: ModelIndex::default(),
            compactor,
            wal,
            silent_after,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        self.engine.store()
    }

    /// How every run the server writes for a client is set up: written ahead into the log,
    /// on the server's runtime, alive while its client logs.
    pub(crate) fn configure(&self, builder: RunBuilder) -> RunBuilder {
        builder
            .runtime(tokio::runtime::Handle::current())
            .wal(self.wal.clone())
            .owned_elsewhere(self.silent_after)
    }

    /// Releases every run the server holds (written, synced, still `running`) and closes the
    /// log.
    pub(crate) async fn close(&self) -> Result<(), ApiError> {
        let open: Vec<(String, Arc<Run>)> = self
            .runs
            .open
            .lock()
            .map(|mut o| o.drain().collect())
            .unwrap_or_default();
        let mut releases = tokio::task::JoinSet::new();
        for (_, run) in open {
            releases.spawn_blocking(move || release(run));
        }
        while let Some(r) = releases.join_next().await {
            if let Err(e) = r? {
                tracing::warn!(error = %e, "could not release a run at shutdown");
            }
        }
        Ok(self.wal.clone().close()?)
    }
}

/// Releases a run once the requests still holding its handle let go of it.
pub(crate) fn release(run: Arc<Run>) -> runql_core::Result<()> {
    let mut run = run;
    loop {
        match Arc::try_unwrap(run) {
            Ok(r) => return r.release(),
            Err(shared) => {
                run = shared;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The handle to the MLflow routes' state a handler gets from `Read` / `Write`.
pub(crate) type State = Arc<Mlflow>;

/// Run handles the server is writing through, and what it remembers about runs.
#[derive(Default)]
pub(crate) struct Runs {
    pub(crate) open: Mutex<HashMap<String, Arc<Run>>>,
    /// Digests of recent metric-logging requests: a client retrying a request whose answer it
    /// lost (the mlflow client retries up to 7 times) must not log the points twice.
    recent: Mutex<Recent>,
    /// The project of each run this server created or looked up (a run never changes
    /// project): reading a run's record is then one listing of its folder, not a search of
    /// every project.
    projects: Mutex<HashMap<String, String>>,
    /// When each open run's client last wrote.
    seen: Mutex<HashMap<String, Instant>>,
    /// The points each open run was sent recently: one sent again identically is kept once.
    points: Mutex<HashMap<String, Arc<Mutex<Points>>>>,
    /// Runs deleted through this server (a run it reopens has its deletion in its record).
    deleted: Mutex<HashSet<String>>,
    keys: std::hash::RandomState,
}

/// Points remembered per run: between this many and twice as many of its latest.
const POINT_WINDOW: usize = 1 << 16;

/// A metric point as MLflow's SQL store keys it: (key's hash, step, timestamp, value), with
/// every NaN one value and -0 equal to 0.
pub(crate) type Point = (u64, i64, i64, u64);

/// The points logged into a run recently through this server (its latest
/// [`POINT_WINDOW`]–2×[`POINT_WINDOW`]), so that a point sent again with the same key, step,
/// timestamp and value — xgboost's and lightgbm's autologging do — is stored once, as
/// MLflow's server stores it. A point older than the window, or sent again after a restart of
/// the server, is stored again.
#[derive(Default)]
pub(crate) struct Points {
    current: HashSet<Point>,
    previous: HashSet<Point>,
}

impl Points {
    pub(crate) fn contains(&self, p: &Point) -> bool {
        self.current.contains(p) || self.previous.contains(p)
    }

    pub(crate) fn insert(&mut self, p: Point) {
        if self.previous.contains(&p) || !self.current.insert(p) {
            return;
        }
        if self.current.len() >= POINT_WINDOW {
            self.previous = std::mem::take(&mut self.current);
        }
    }
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs").finish_non_exhaustive()
    }
}

/// Run projects remembered at most (the memory starts over past this).
const KNOWN_PROJECTS: usize = 100_000;

/// Request digests remembered at most, oldest forgotten first.
const RECENT: usize = 4096;

/// The last [`RECENT`] request digests, oldest first.
#[derive(Default)]
struct Recent {
    order: VecDeque<[u8; 32]>,
    seen: HashSet<[u8; 32]>,
}

impl Runs {
    /// The handle of a run this server holds open.
    pub(crate) fn open_run(&self, run_id: &str) -> Option<Arc<Run>> {
        self.open.lock().ok()?.get(run_id).cloned()
    }

    /// Notes that a run's client wrote now.
    pub(crate) fn touch(&self, run_id: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(run_id.to_string(), Instant::now());
        }
    }

    /// Takes out the open runs whose clients have been silent for `idle`.
    pub(crate) fn take_idle(&self, idle: Duration) -> Vec<Arc<Run>> {
        let (Ok(mut open), Ok(mut seen)) = (self.open.lock(), self.seen.lock()) else {
            return Vec::new();
        };
        let quiet: Vec<String> = open
            .keys()
            .filter(|id| seen.get(*id).is_none_or(|t| t.elapsed() >= idle))
            .cloned()
            .collect();
        quiet
            .into_iter()
            .filter_map(|id| {
                seen.remove(&id);
                self.forget(&id);
                open.remove(&id)
            })
            .collect()
    }

    /// The points recently logged into a run.
    pub(crate) fn points_of(&self, run_id: &str) -> Arc<Mutex<Points>> {
        let mut all = self.points.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(run_id.to_string()).or_default().clone()
    }

    /// A point as [`Points`] remembers it.
    pub(crate) fn point(&self, key: &str, step: i64, ts: i64, value: f64) -> Point {
        use std::hash::BuildHasher;
        let bits = if value.is_nan() {
            f64::NAN.to_bits()
        } else if value == 0.0 {
            0
        } else {
            value.to_bits()
        };
        (self.keys.hash_one(key), step, ts, bits)
    }

    /// Forgets what the server remembers of a run it no longer holds.
    pub(crate) fn forget(&self, run_id: &str) {
        if let Ok(mut p) = self.points.lock() {
            p.remove(run_id);
        }
    }

    /// Notes that a run was deleted (or restored) through this server.
    pub(crate) fn set_deleted(&self, run_id: &str, deleted: bool) {
        let mut d = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
        if deleted {
            d.insert(run_id.to_string());
        } else {
            d.remove(run_id);
        }
    }

    pub(crate) fn is_deleted(&self, run_id: &str) -> bool {
        self.deleted.lock().is_ok_and(|d| d.contains(run_id))
    }

    /// Every run this server holds open.
    pub(crate) fn all_open(&self) -> Vec<Arc<Run>> {
        self.open
            .lock()
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn project_of(&self, run_id: &str) -> Option<String> {
        self.projects.lock().ok()?.get(run_id).cloned()
    }

    pub(crate) fn remember_project(&self, run_id: &str, project: &str) {
        if let Ok(mut p) = self.projects.lock() {
            if p.len() >= KNOWN_PROJECTS {
                p.clear();
            }
            p.insert(run_id.to_string(), project.to_string());
        }
    }

    /// BLAKE3 of the request: collision-resistant like SHA-256 (a retry must never be mistaken
    /// for another request) at several times its speed on a 100 KB log-batch body.
    pub(crate) fn digest(path: &str, body: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(path.as_bytes());
        h.update(&[0]);
        h.update(body);
        h.finalize().into()
    }

    /// Whether the request with this digest was applied recently.
    pub(crate) fn applied(&self, d: &[u8; 32]) -> bool {
        self.recent.lock().is_ok_and(|r| r.seen.contains(d))
    }

    /// The remembered digests, oldest first.
    pub(crate) fn recent(&self) -> Vec<[u8; 32]> {
        self.recent
            .lock()
            .map(|r| r.order.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Remembers a request that was applied (a failed one may be retried and applied later).
    pub(crate) fn remember(&self, d: [u8; 32]) {
        let Ok(mut r) = self.recent.lock() else {
            return;
        };
        if !r.seen.insert(d) {
            return;
        }
        r.order.push_back(d);
        if r.order.len() > RECENT
            && let Some(old) = r.order.pop_front()
        {
            r.seen.remove(&old);
        }
    }
}

/// Which project holds which logged model, as found (a model never changes project).
#[derive(Debug, Default)]
pub(crate) struct ModelIndex {
    projects: Mutex<HashMap<String, String>>,
    /// Serialises this server's read-modify-writes of model records and run tag histories.
    pub(crate) writes: tokio::sync::Mutex<()>,
}

impl ModelIndex {
    pub(crate) fn project_of(&self, model_id: &str) -> Option<String> {
        self.projects.lock().ok()?.get(model_id).cloned()
    }

    pub(crate) fn remember(&self, model_id: &str, project: &str) {
        if let Ok(mut m) = self.projects.lock() {
            if m.len() >= KNOWN_PROJECTS {
                m.clear();
            }
            m.insert(model_id.to_string(), project.to_string());
        }
    }
}
