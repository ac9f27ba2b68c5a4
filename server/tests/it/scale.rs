//! The scale test: projects of 1,000 and 100,000 runs, on a local disk and on an S3 server
//! (moto, started here when `RUNQL_S3_PYTHON` names a Python that has it). For each, the time
//! and the number of object-store requests to list runs, to run an MLflow search with a filter
//! and an order, and to open one run, each on a fresh server (cold) and again (warm).
//!
//! Ignored by default (generating 100,000 runs takes minutes; they are kept in
//! `~/.cache/runql-scale` for the next time). Run it, in release for meaningful times:
//!
//! ```text
//! RUNQL_S3_PYTHON=~/.cache/runql-s3-venv/bin/python \
//!   cargo test --release -p runql-server --test it scale -- --ignored --nocapture
//! ```
//!
//! `RUNQL_SCALE_RUNS=1000,100000` sets the sizes. It prints a markdown table for
//! docs/benchmarks.md, and fails if opening one run (warm) makes more requests in the largest
//! project than in the smallest (request counts are deterministic; times are not checked).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use runql_core::{Capture, Store};
use runql_query::Engine;
use runql_server::Options;
use serde_json::{Value, json};

const PROJECT: &str = "scale";
const STEPS: i64 = 20;

/// Requests an object store received, by kind.
#[derive(Debug, Default)]
struct Counts {
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
}

impl Counts {
    fn total(&self) -> u64 {
        [&self.get, &self.head, &self.list, &self.put, &self.delete]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn reset(&self) {
        for c in [&self.get, &self.head, &self.list, &self.put, &self.delete] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} GET, {} HEAD, {} LIST)",
            self.total(),
            self.get.load(Ordering::Relaxed),
            self.head.load(Ordering::Relaxed),
            self.list.load(Ordering::Relaxed)
        )
    }
}

/// An object store that counts the requests it forwards (a ranged read is one GET, as on S3;
/// a listing is one LIST per 1,000 objects, S3's page size).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    counts: Arc<Counts>,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.counts.put.fetch_add(1, Ordering::Relaxed);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.counts.put.fetch_add(1, Ordering::Relaxed);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if std::env::var_os("RUNQL_SCALE_TRACE").is_some() {
            eprintln!("GET {location} {:?}", options.range);
        }
        if options.head {
            self.counts.head.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counts.get.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if std::env::var_os("RUNQL_SCALE_TRACE").is_some() {
            eprintln!("GET_RANGES {location} {ranges:?}");
        }
        // What S3 does: one GET per range after coalescing nearby ones.
        let coalesced = object_store::coalesce_ranges(
            ranges,
            |r| {
                self.counts.get.fetch_add(1, Ordering::Relaxed);
                let inner = self.inner.clone();
                let location = location.clone();
                async move {
                    inner
                        .get_opts(
                            &location,
                            GetOptions {
                                range: Some(r.into()),
                                ..Default::default()
                            },
                        )
                        .await?
                        .bytes()
                        .await
                }
            },
            object_store::OBJECT_STORE_COALESCE_DEFAULT,
        )
        .await?;
        Ok(coalesced)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let counts = self.counts.clone();
        self.inner.delete_stream(
            locations
                .inspect(move |_| {
                    counts.delete.fetch_add(1, Ordering::Relaxed);
                })
                .boxed(),
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let counts = self.counts.clone();
        if std::env::var_os("RUNQL_SCALE_TRACE").is_some() {
            eprintln!("LIST {prefix:?}");
        }
        counts.list.fetch_add(1, Ordering::Relaxed);
        let mut seen = 0u64;
        self.inner
            .list(prefix)
            .inspect(move |_| {
                seen += 1;
                if seen.is_multiple_of(1000) {
                    counts.list.fetch_add(1, Ordering::Relaxed);
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        if std::env::var_os("RUNQL_SCALE_TRACE").is_some() {
            eprintln!("LISTDIR {prefix:?}");
        }
        self.counts.list.fetch_add(1, Ordering::Relaxed);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.counts.put.fetch_add(1, Ordering::Relaxed);
        self.inner.copy_opts(from, to, options).await
    }
}

/// A project of `runs` runs (3 params, a tag, 2 metric keys × 20 steps each), compacted; kept
/// under ~/.cache/runql-scale for the next run of the test.
fn generate(runs: usize) -> PathBuf {
    let base = std::env::var_os("RUNQL_SCALE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into()))
                .join(".cache/runql-scale")
        });
    let dir = base.join(format!("store-{runs}"));
    let done = dir.join("scale-complete");
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.to_string_lossy()).unwrap();
    let t = Instant::now();
    let threads = 8;
    std::thread::scope(|s| {
        for th in 0..threads {
            let store = store.clone();
            s.spawn(move || {
                let project = store.project(PROJECT);
                for r in (th..runs).step_by(threads) {
                    let run = project
                        .run()
                        .capture(Capture::none())
                        .name(format!("run-{r:06}"))
                        .flush_interval(Duration::from_secs(3600))
                        .start()
                        .unwrap();
                    let lr = [0.1, 0.01, 0.001, 0.0001][r % 4];
                    run.log_params([
                        ("lr", lr.to_string()),
                        ("batch_size", (32 << (r % 3)).to_string()),
                        ("optimizer", ["adam", "sgd"][r % 2].to_string()),
                    ])
                    .unwrap();
                    run.set_tag("team", ["vision", "nlp", "rl"][r % 3]).unwrap();
                    let floor = 0.2 + 0.8 * ((r * 7919) % 1000) as f64 / 1000.0;
                    for step in 0..STEPS {
                        let loss = floor + 2.0 * (-(step as f64) / 5.0).exp();
                        run.log_metrics(step, [("loss", loss), ("val_loss", loss + 0.05)])
                            .unwrap();
                    }
                    run.finish().unwrap();
                    if r.is_multiple_of(10_000) {
                        eprintln!("generated {r} of {runs} runs in {:?}", t.elapsed());
                    }
                }
            });
        }
    });
    let report = runql_core::block_on(store.compact(PROJECT)).unwrap();
    runql_core::block_on(store.gc(PROJECT, Duration::ZERO)).unwrap();
    eprintln!(
        "{runs} runs logged and compacted ({} runs into {} bytes) in {:?}",
        report.runs,
        report.bytes,
        t.elapsed()
    );
    std::fs::write(&done, b"").unwrap();
    dir
}

/// Copies every object of a local store to `target` (an S3 prefix).
async fn copy_store(from: &Store, to: &Store) {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let source = from.object_store();
    let objects: Vec<_> = source.list(None).try_collect().await.unwrap();
    let n = objects.len();
    let source = &source;
    futures::stream::iter(objects)
        .for_each_concurrent(8, |m| async move {
            let bytes = source
                .get(&m.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            to.object_store()
                .put_opts(
                    &Path::from_iter(to.layout().root().parts().chain(m.location.parts())),
                    bytes.into(),
                    PutOptions::default(),
                )
                .await
                .unwrap();
        })
        .await;
    eprintln!("copied {n} objects to {}", to.url());
}

/// One question asked of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Question {
    List,
    Search,
    OpenRun,
}

impl Question {
    fn label(self) -> &'static str {
        match self {
            Question::List => "list runs (newest 100)",
            Question::Search => {
                "search `params.lr = '0.01' and metrics.val_loss < 0.5`, by val_loss"
            }
            Question::OpenRun => "open one run (get + metric history)",
        }
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_server(store: Store) -> Server {
    let engine = Engine::new(store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = runql_server::Server::new(
        engine,
        Options {
            compact_after: None,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    tokio::spawn(runql_server::serve(listener, server, async {
        let _ = rx.await;
    }));
    Server {
        base: format!("http://{addr}/api/2.0/mlflow"),
        client: reqwest::Client::new(),
        _stop: tx,
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> Value {
        let request = self
            .client
            .post(format!("{}/{path}", self.base))
            .json(&body);
        Self::answer(path, request).await
    }

    async fn get(&self, path: &str) -> Value {
        Self::answer(path, self.client.get(format!("{}/{path}", self.base))).await
    }

    /// The JSON answer of a request, which must succeed.
    async fn answer(path: &str, request: reqwest::RequestBuilder) -> Value {
        let r = request.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {v}");
        v
    }

    async fn experiment_id(&self) -> String {
        let v = self
            .get(&format!(
                "experiments/get-by-name?experiment_name={PROJECT}"
            ))
            .await;
        v["experiment"]["experiment_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Asks `q`; returns how many runs (or points) the answer holds.
    async fn ask(&self, q: Question, experiment: &str, run_id: &str) -> usize {
        match q {
            Question::List => {
                let v = self
                    .post(
                        "runs/search",
                        json!({"experiment_ids": [experiment], "max_results": 100}),
                    )
                    .await;
                v["runs"].as_array().map_or(0, Vec::len)
            }
            Question::Search => {
                let v = self
                    .post(
                        "runs/search",
                        json!({
                            "experiment_ids": [experiment],
                            "filter": "params.lr = '0.01' and metrics.val_loss < 0.5",
                            "order_by": ["metrics.val_loss ASC"],
                            "max_results": 100,
                        }),
                    )
                    .await;
                v["runs"].as_array().map_or(0, Vec::len)
            }
            Question::OpenRun => {
                let run = self.get(&format!("runs/get?run_id={run_id}")).await;
                assert_eq!(run["run"]["info"]["run_id"], run_id);
                let h = self
                    .get(&format!(
                        "metrics/get-history?run_id={run_id}&metric_key=val_loss"
                    ))
                    .await;
                h["metrics"].as_array().map_or(0, Vec::len)
            }
        }
    }
}

struct Measure {
    rows: usize,
    cold: Duration,
    cold_requests: String,
    warm: Duration,
    warm_requests: String,
    warm_total: u64,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Measures every question on `store` (cold: a fresh server each; warm: median of 5 more).
async fn measure(store: &Store) -> BTreeMap<Question, Measure> {
    let counts = Arc::new(Counts::default());
    let run_id = {
        let engine = Engine::new(store.clone()).await.unwrap();
        let b = engine
            .query("SELECT run_id FROM runs WHERE name = 'run-000007'")
            .await
            .unwrap();
        arrow::util::display::array_value_to_string(b[0].column(0), 0).unwrap()
    };
    let mut out = BTreeMap::new();
    for q in [Question::List, Question::Search, Question::OpenRun] {
        let counting = Arc::new(Counting {
            inner: store.object_store(),
            counts: counts.clone(),
        });
        let server = start_server(store.with_object_store(counting)).await;
        let experiment = server.experiment_id().await;
        counts.reset();
        if std::env::var_os("RUNQL_SCALE_TRACE").is_some() {
            eprintln!("== {q:?} on {}", store.url());
        }
        let t = Instant::now();
        let rows = server.ask(q, &experiment, &run_id).await;
        if std::env::var_os("RUNQL_SCALE_TRACE").is_some() {
            eprintln!("== end");
        }
        let cold = t.elapsed();
        let cold_requests = counts.describe();
        let mut times = Vec::new();
        counts.reset();
        for _ in 0..5 {
            let t = Instant::now();
            server.ask(q, &experiment, &run_id).await;
            times.push(t.elapsed());
        }
        times.sort();
        let warm_total = counts.total().div_ceil(5);
        let warm_requests = format!("{:.0}", counts.total() as f64 / 5.0);
        out.insert(
            q,
            Measure {
                rows,
                cold,
                cold_requests,
                warm: times[2],
                warm_requests,
                warm_total,
            },
        );
    }
    out
}

/// A moto server for the S3 half (None: skip it).
fn start_moto() -> Option<(std::process::Child, String)> {
    let python = std::env::var("RUNQL_S3_PYTHON").ok()?;
    let root = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let mut child = std::process::Command::new(python)
        .arg(std::path::Path::new(&root).join("../scripts/s3-server"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    Some((child, line.trim().to_string()))
}

#[test]
#[ignore = "minutes: run it as its doc says"]
fn scale() {
    let sizes: Vec<usize> = std::env::var("RUNQL_SCALE_RUNS")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut moto = start_moto();
    if moto.is_none() {
        eprintln!("RUNQL_S3_PYTHON is not set: local stores only");
    }
    let mut results: Vec<(String, usize, BTreeMap<Question, Measure>)> = Vec::new();
    for &runs in &sizes {
        let dir = generate(runs);
        let local = Store::open(&dir.to_string_lossy()).unwrap();
        results.push(("local disk".into(), runs, rt.block_on(measure(&local))));
        if let Some((_, url)) = &moto {
            let s3 = Store::open_with_options(
                &format!("s3://runql-test/scale-{runs}"),
                [
                    ("aws_endpoint", url.as_str()),
                    ("aws_allow_http", "true"),
                    ("aws_access_key_id", "test"),
                    ("aws_secret_access_key", "test"),
                    ("aws_region", "us-east-1"),
                ],
            )
            .unwrap();
            rt.block_on(copy_store(&local, &s3));
            results.push(("S3 (moto)".into(), runs, rt.block_on(measure(&s3))));
        }
    }
    if let Some((child, _)) = &mut moto {
        let _ = child.kill();
        let _ = child.wait();
    }

    println!(
        "| store | runs | question | answer | cold | requests (cold) | warm | requests (warm) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (kind, runs, m) in &results {
        for (q, r) in m {
            println!(
                "| {kind} | {runs} | {} | {} | {} | {} | {} | {} |",
                q.label(),
                r.rows,
                ms(r.cold),
                r.cold_requests,
                ms(r.warm),
                r.warm_requests
            );
        }
    }

    // Opening one run makes as many requests in the largest project as in the smallest. Warm
    // counts: the cold ones vary by a request or two when concurrent queries of one page both
    // miss a footer cache.
    for kind in ["local disk", "S3 (moto)"] {
        let of_kind: Vec<_> = results.iter().filter(|(k, _, _)| k == kind).collect();
        if let (Some(first), Some(last)) = (of_kind.first(), of_kind.last()) {
            let small = first.2[&Question::OpenRun].warm_total;
            let large = last.2[&Question::OpenRun].warm_total;
            assert!(
                large <= small,
                "{kind}: opening a run takes {large} requests with {} runs but {small} with {}",
                last.1,
                first.1
            );
        }
    }
}
