//! Every MLflow route, request → response, over real HTTP: each test drives a sequence of
//! requests as the `mlflow` client sends them and compares the transcript (run and model ids,
//! and times the server chose, replaced by placeholders) with a reviewed snapshot in
//! `tests/it/snapshots/`. A changed answer is a user-visible change: review it with
//! `cargo insta review` (or `INSTA_UPDATE=always`) and say why in the commit.

use std::collections::HashMap;

use runql_server::Options;
use serde_json::{Map, Value, json};

use crate::util::TestServer;

const API: &str = "/api/2.0/mlflow";

/// Requests and their answers, normalized.
struct Transcript {
    server: TestServer,
    steps: Vec<Value>,
    ids: HashMap<String, String>,
}

impl Transcript {
    async fn new() -> Transcript {
        Transcript {
            server: TestServer::start(Options::default()).await,
            steps: Vec::new(),
            ids: HashMap::new(),
        }
    }

    /// Sends a request and records it; gives the raw answer (ids as the server made them).
    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.server.base);
        let c = &self.server.client;
        let req = match method {
            "GET" => c.get(&url),
            "POST" => c.post(&url),
            "PATCH" => c.patch(&url),
            "DELETE" => c.delete(&url),
            other => panic!("no method {other}"),
        };
        let req = match &body {
            Some(b) => req.json(b),
            None => req,
        };
        let (status, answer) = self.server.send(req).await;
        let mut step = Map::new();
        step.insert(
            "request".into(),
            json!(format!("{method} {}", self.redact_str(path))),
        );
        if let Some(b) = &body {
            step.insert("body".into(), self.redact(b.clone(), None));
        }
        step.insert("status".into(), json!(status));
        step.insert("answer".into(), self.redact(answer.clone(), None));
        self.steps.push(Value::Object(step));
        answer
    }

    async fn post(&mut self, route: &str, body: Value) -> Value {
        self.call("POST", &format!("{API}/{route}"), Some(body))
            .await
    }

    async fn get(&mut self, route: &str) -> Value {
        self.call("GET", &format!("{API}/{route}"), None).await
    }

    /// A stable placeholder for an id the server made.
    fn placeholder(&mut self, id: &str, kind: &str) -> String {
        let n = self.ids.len();
        self.ids
            .entry(id.to_string())
            .or_insert_with(|| format!("[{kind}-{n}]"))
            .clone()
    }

    fn redact_str(&mut self, s: &str) -> String {
        let mut out = s.to_string();
        for (start, len, kind) in hex_ids(s) {
            let id = &s[start..start + len];
            let p = self.placeholder(id, kind);
            out = out.replace(id, &p);
        }
        out
    }

    fn redact(&mut self, v: Value, key: Option<&str>) -> Value {
        const TIMES: [&str; 7] = [
            "start_time",
            "end_time",
            "creation_time",
            "last_update_time",
            "creation_timestamp_ms",
            "last_updated_timestamp_ms",
            "file_size",
        ];
        match v {
            Value::Number(_) if key.is_some_and(|k| TIMES.contains(&k)) => json!("[time]"),
            Value::String(s) => json!(self.redact_str(&s)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|i| self.redact(i, None)).collect())
            }
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| {
                        let v = self.redact(v, Some(&k));
                        (k, v)
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    fn snapshot(self, name: &str) {
        insta::assert_json_snapshot!(name, Value::Array(self.steps));
    }
}

/// Where 32-hex-digit run ids and `m-…` model ids stand in `s`: (start, length, kind).
fn hex_ids(s: &str) -> Vec<(usize, usize, &'static str)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let run = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            .count();
        if run == 32 {
            let model = i >= 2 && &b[i - 2..i] == b"m-";
            if model {
                out.push((i - 2, 34, "model"));
            } else {
                out.push((i, 32, "run"));
            }
            i += run;
        } else {
            i += run.max(1);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment_routes() {
    let mut t = Transcript::new().await;
    // A fresh store lists MLflow's Default experiment.
    t.post("experiments/search", json!({"max_results": 10}))
        .await;
    t.post(
        "experiments/create",
        json!({"name": "remote", "artifact_location": "s3://bucket/remote"}),
    )
    .await;
    t.post(
        "experiments/create",
        json!({"name": "typed", "artifact_location": 9.0}),
    )
    .await;
    t.get("experiments/get-by-name?experiment_name=remote")
        .await;
    t.post(
        "experiments/create",
        json!({"name": "vision", "tags": [{"key": "team", "value": "cv"}]}),
    )
    .await;
    t.post("experiments/create", json!({"name": "vision"}))
        .await;
    t.post("experiments/create", json!({"name": 123})).await;
    t.post("experiments/create", json!({})).await;
    t.get("experiments/get-by-name?experiment_name=vision")
        .await;
    t.get("experiments/get?experiment_id=vision").await;
    t.get("experiments/get?experiment_id=0").await;
    t.get("experiments/get-by-name?experiment_name=nope").await;
    t.post(
        "experiments/set-experiment-tag",
        json!({"experiment_id": "vision", "key": "stage", "value": "dev"}),
    )
    .await;
    t.post(
        "experiments/search",
        json!({"max_results": 10, "filter": "tags.team = 'cv'"}),
    )
    .await;
    t.get("experiments/search?max_results=10&order_by=name%20DESC")
        .await;
    t.post(
        "experiments/delete-experiment-tag",
        json!({"experiment_id": "vision", "key": "stage"}),
    )
    .await;
    t.post(
        "experiments/delete-experiment-tag",
        json!({"experiment_id": "vision", "key": "stage"}),
    )
    .await;
    t.post(
        "experiments/update",
        json!({"experiment_id": "vision", "new_name": "vision"}),
    )
    .await;
    // A rename keeps the id (the project the runs are stored in); the old name is free again.
    t.post(
        "experiments/update",
        json!({"experiment_id": "vision", "new_name": "vision-v2"}),
    )
    .await;
    t.get("experiments/get-by-name?experiment_name=vision-v2")
        .await;
    t.get("experiments/get-by-name?experiment_name=vision")
        .await;
    t.post("experiments/create", json!({"name": "vision"}))
        .await;
    t.get("experiments/get?experiment_id=vision-2").await;
    t.post(
        "experiments/update",
        json!({"experiment_id": "vision-2", "new_name": "vision-v2"}),
    )
    .await;
    t.post(
        "experiments/search",
        json!({"filter": "name LIKE 'vision%'", "order_by": ["name"]}),
    )
    .await;
    t.post("experiments/delete", json!({"experiment_id": "vision"}))
        .await;
    t.post(
        "experiments/search",
        json!({"max_results": 10, "view_type": "DELETED_ONLY"}),
    )
    .await;
    t.post("experiments/restore", json!({"experiment_id": "vision"}))
        .await;
    t.post("experiments/delete", json!({"experiment_id": "0"}))
        .await;
    t.snapshot("experiment_routes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_routes() {
    let mut t = Transcript::new().await;
    t.post("experiments/create", json!({"name": "exp"})).await;
    let created = t
        .post("runs/create", json!({"experiment_id": "exp", "run_name": "baseline", "start_time": 1_700_000_000_000_i64, "tags": [{"key": "mlflow.user", "value": "ada"}]}))
        .await;
    let id = created["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    t.post(
        "runs/log-parameter",
        json!({"run_id": id, "key": "lr", "value": "0.01"}),
    )
    .await;
    t.post(
        "runs/log-parameter",
        json!({"run_id": id, "key": "lr", "value": "0.02"}),
    )
    .await;
    t.post(
        "runs/set-tag",
        json!({"run_id": id, "key": "stage", "value": "dev"}),
    )
    .await;
    t.post(
        "runs/set-tag",
        json!({"run_id": id, "key": "scratch", "value": "x"}),
    )
    .await;
    t.post("runs/delete-tag", json!({"run_id": id, "key": "scratch"}))
        .await;
    t.post("runs/delete-tag", json!({"run_id": id, "key": "scratch"}))
        .await;
    t.post("runs/log-metric", json!({"run_id": id, "key": "loss", "value": 0.5, "timestamp": 1_700_000_000_100_i64, "step": 1})).await;
    t.post("runs/log-metric", json!({"run_id": id, "key": "loss", "value": "NaN", "timestamp": 1_700_000_000_200_i64, "step": "2"})).await;
    t.post(
        "runs/log-batch",
        json!({
            "run_id": id,
            "metrics": [
                {"key": "acc", "value": 0.9, "timestamp": 1_700_000_000_300_i64, "step": 3},
                {"key": "acc", "value": "Infinity", "timestamp": 1_700_000_000_400_i64, "step": 4},
            ],
            "params": [{"key": "batch", "value": "64"}],
            "tags": [{"key": "note", "value": "first"}],
        }),
    )
    .await;
    t.post(
        "runs/log-batch",
        json!({"run_id": id, "metrics": [{"key": "acc", "timestamp": 1, "step": 1}]}),
    )
    .await;
    t.post("runs/log-inputs", json!({"run_id": id, "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "train"}], "dataset": {"name": "cifar", "digest": "c1f4", "source_type": "http", "source": "{\"url\": \"https://data/cifar\"}"}}]})).await;
    t.get(&format!("runs/get?run_id={id}")).await;
    t.get(&format!("metrics/get-history?run_id={id}&metric_key=loss"))
        .await;
    t.get(&format!(
        "metrics/get-history?run_id={id}&metric_key=acc&max_results=1"
    ))
    .await;
    t.post(
        "runs/search",
        json!({"experiment_ids": ["exp"], "filter": "metrics.acc > 0.5", "max_results": 10}),
    )
    .await;
    t.post(
        "runs/search",
        json!({"experiment_ids": ["exp"], "filter": "params.lr = '0.02'"}),
    )
    .await;
    t.post("runs/search", json!({})).await;
    t.post(
        "runs/update",
        json!({"run_id": id, "status": "FINISHED", "end_time": 1_700_000_001_000_i64}),
    )
    .await;
    t.post("runs/update", json!({"run_id": id, "status": "BOGUS"}))
        .await;
    t.post("runs/delete", json!({"run_id": id})).await;
    t.post(
        "runs/search",
        json!({"experiment_ids": ["exp"], "run_view_type": "DELETED_ONLY"}),
    )
    .await;
    t.post("runs/restore", json!({"run_id": id})).await;
    t.get("runs/get?run_id=00000000000000000000000000000000")
        .await;
    t.get("runs/get").await;
    t.snapshot("run_routes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_and_model_routes() {
    let mut t = Transcript::new().await;
    let created = t
        .post(
            "runs/create",
            json!({"experiment_id": "0", "run_name": "with-model"}),
        )
        .await;
    let id = created["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let art = format!("/api/2.0/mlflow-artifacts/artifacts/0/{id}/artifacts");
    let c = t.server.client.clone();
    let put = c
        .put(format!("{}{art}/notes/hello.txt", t.server.base))
        .body("hello");
    assert_eq!(t.server.send(put).await.0, 200);
    t.call(
        "GET",
        &format!("/api/2.0/mlflow-artifacts/artifacts?path=0/{id}/artifacts"),
        None,
    )
    .await;
    t.call(
        "GET",
        &format!("/api/2.0/mlflow-artifacts/artifacts?path=0/{id}/artifacts/notes"),
        None,
    )
    .await;
    let res = c
        .get(format!("{}{art}/notes/hello.txt", t.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "hello");
    t.call("GET", &format!("{art}/missing.txt"), None).await;
    t.call("GET", &format!("{art}/../../etc/passwd"), None)
        .await;

    let model = t
        .post("logged-models", json!({"experiment_id": "0", "name": "clf", "model_type": "sklearn", "source_run_id": id, "params": [{"key": "C", "value": "1"}]}))
        .await;
    let mid = model["model"]["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let put = c
        .put(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/0/models/{mid}/artifacts/MLmodel",
            t.server.base
        ))
        .body("flavors: {}");
    assert_eq!(t.server.send(put).await.0, 200);
    t.call(
        "GET",
        &format!("/api/2.0/mlflow-artifacts/artifacts?path=0/models/{mid}/artifacts"),
        None,
    )
    .await;
    t.get(&format!("logged-models/{mid}")).await;
    t.call(
        "PATCH",
        &format!("{API}/logged-models/{mid}"),
        Some(json!({"status": "LOGGED_MODEL_READY"})),
    )
    .await;
    t.call(
        "PATCH",
        &format!("{API}/logged-models/{mid}/tags"),
        Some(json!({"tags": [{"key": "k", "value": "v"}]})),
    )
    .await;
    t.post(
        &format!("logged-models/{mid}/params"),
        json!({"params": [{"key": "max_iter", "value": "100"}]}),
    )
    .await;
    t.post(
        "logged-models/search",
        json!({"experiment_ids": ["0"], "filter": "params.C = '1'"}),
    )
    .await;
    t.call("DELETE", &format!("{API}/logged-models/{mid}/tags/k"), None)
        .await;
    t.call("DELETE", &format!("{API}/logged-models/{mid}/tags/k"), None)
        .await;
    t.post(
        "runs/outputs",
        json!({"run_id": id, "models": [{"model_id": mid, "step": 3}]}),
    )
    .await;
    t.post(
        "runs/log-model",
        json!({"run_id": id, "model_json": "{\"artifact_path\": \"model\"}"}),
    )
    .await;
    t.get(&format!("runs/get?run_id={id}")).await;
    t.call("DELETE", &format!("{API}/logged-models/{mid}"), None)
        .await;
    t.get(&format!("logged-models/{mid}")).await;
    t.get("logged-models/not-a-model").await;
    t.call("GET", "/api/2.0/mlflow/no/such/route", None).await;
    t.snapshot("artifact_and_model_routes");
}

/// The routes MLflow's own UI reads and writes through: bulk and sampled metric histories,
/// the tracking API's artifact listing, download and upload, dataset summaries, and a logged
/// model's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_routes() {
    let mut t = Transcript::new().await;
    t.post("experiments/create", json!({"name": "ui"})).await;
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let created = t
            .post(
                "runs/create",
                json!({"experiment_id": "ui", "run_name": name}),
            )
            .await;
        ids.push(
            created["run"]["info"]["run_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    // Run a logs steps 0..=9, run b steps 5..=7; a's step 3 twice.
    let mut metrics: Vec<Value> = (0..10)
        .map(|s| json!({"key": "loss", "value": 1.0 / (s as f64 + 1.0), "timestamp": 1_700_000_000_000_i64 + s, "step": s}))
        .collect();
    metrics
        .push(json!({"key": "loss", "value": 0.2, "timestamp": 1_700_000_000_050_i64, "step": 3}));
    t.post("runs/log-batch", json!({"run_id": a, "metrics": metrics}))
        .await;
    let metrics: Vec<Value> = (5..8)
        .map(|s| json!({"key": "loss", "value": s, "timestamp": 1_700_000_000_000_i64 + s, "step": s}))
        .collect();
    t.post("runs/log-batch", json!({"run_id": b, "metrics": metrics}))
        .await;

    let ajax = "/ajax-api/2.0/mlflow";
    t.call(
        "GET",
        &format!(
            "{ajax}/metrics/get-history-bulk?run_id={b}&run_id={a}&metric_key=loss&max_results=5"
        ),
        None,
    )
    .await;
    t.call(
        "GET",
        &format!("{ajax}/metrics/get-history-bulk?metric_key=loss"),
        None,
    )
    .await;
    t.call(
        "GET",
        &format!("{ajax}/metrics/get-history-bulk?run_id={a}"),
        None,
    )
    .await;
    // Served under /ajax-api only, as in MLflow.
    t.get(&format!(
        "metrics/get-history-bulk?run_id={a}&metric_key=loss"
    ))
    .await;
    t.get(&format!(
        "metrics/get-history-bulk-interval?run_ids={a}&run_ids={b}&metric_key=loss&max_results=3"
    ))
    .await;
    t.get(&format!(
        "metrics/get-history-bulk-interval?run_ids={a}&metric_key=loss&start_step=6&end_step=8&max_results=2500"
    ))
    .await;
    t.get(&format!(
        "metrics/get-history-bulk-interval?run_ids={a}&metric_key=loss&start_step=6"
    ))
    .await;
    t.get(&format!(
        "metrics/get-history-bulk-interval?run_ids={a}&metric_key=loss&start_step=6&end_step=2"
    ))
    .await;
    t.get(&format!(
        "metrics/get-history-bulk-interval?run_ids={a}&metric_key=loss&max_results=2501"
    ))
    .await;
    t.get("metrics/get-history-bulk-interval?metric_key=loss")
        .await;

    // Artifacts: uploaded as MLflow's UI uploads, listed and read through the tracking API.
    let c = t.server.client.clone();
    let base = t.server.base.clone();
    let upload = |path: &str, body: &'static str| {
        c.post(format!(
            "{base}{ajax}/upload-artifact?run_uuid={a}&path={path}"
        ))
        .body(body)
    };
    assert_eq!(
        t.server.send(upload("notes/hello.txt", "hello")).await.0,
        200
    );
    assert_eq!(
        t.server
            .send(upload("model/MLmodel", "flavors: {}"))
            .await
            .0,
        200
    );
    assert_eq!(t.server.send(upload("plot.png", "\u{89}PNG")).await.0, 200);
    let (status, answer) = t.server.send(upload("../escape.txt", "x")).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (400, Some("Invalid path"))
    );
    let (status, answer) = t.server.send(upload("empty.txt", "")).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (400, Some("Request must specify data."))
    );
    let big = c
        .post(format!(
            "{base}{ajax}/upload-artifact?run_uuid={a}&path=big.bin"
        ))
        .body(vec![0u8; 10 * 1024 * 1024 + 1]);
    let (status, answer) = t.server.send(big).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (400, Some("Artifact size is too large. Max size is 10MB."))
    );
    t.get(&format!("artifacts/list?run_id={a}")).await;
    t.get(&format!("artifacts/list?run_uuid={a}&path=notes"))
        .await;
    t.get(&format!("artifacts/list?run_id={a}&path=notes/hello.txt"))
        .await;
    t.get(&format!("artifacts/list?run_id={a}&path=../.."))
        .await;
    t.get(&format!("artifacts/list?run_id={b}")).await;

    let res = c
        .get(format!(
            "{base}/get-artifact?path=notes/hello.txt&run_uuid={a}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"hello.txt\"")
    );
    assert_eq!(res.text().await.unwrap(), "hello");
    let res = c
        .get(format!("{base}/get-artifact?path=plot.png&run_id={a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.bytes().await.unwrap().as_ref(), "\u{89}PNG".as_bytes());
    t.call(
        "GET",
        &format!("/get-artifact?path=notes/missing.txt&run_id={a}"),
        None,
    )
    .await;
    t.call("GET", &format!("/get-artifact?path=notes&run_id={a}"), None)
        .await;
    t.call(
        "GET",
        &format!("/get-artifact?path=%2e%2e/x&run_id={a}"),
        None,
    )
    .await;

    // Dataset summaries for the UI's dataset filter.
    for (run, ctx) in [(&a, "train"), (&b, "train"), (&b, "eval")] {
        t.post("runs/log-inputs", json!({"run_id": run, "datasets": [{"tags": [{"key": "mlflow.data.context", "value": ctx}], "dataset": {"name": "mnist", "digest": "d1", "source_type": "local", "source": "{\"uri\": \"/data/mnist\"}"}}]})).await;
    }
    t.call(
        "POST",
        &format!("{ajax}/experiments/search-datasets"),
        Some(json!({"experiment_ids": ["ui", "0"]})),
    )
    .await;
    t.call(
        "POST",
        &format!("{ajax}/experiments/search-datasets"),
        Some(json!({})),
    )
    .await;

    // A logged model's files.
    let model = t
        .post(
            "logged-models",
            json!({"experiment_id": "ui", "name": "clf", "source_run_id": a}),
        )
        .await;
    let mid = model["model"]["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (path, body) in [("MLmodel", "flavors: {}"), ("data/model.pkl", "pickle")] {
        let put = c
            .put(format!(
                "{base}/api/2.0/mlflow-artifacts/artifacts/ui/models/{mid}/artifacts/{path}"
            ))
            .body(body);
        assert_eq!(t.server.send(put).await.0, 200);
    }
    // Metrics of the model: logged to the run and to the model, filtered on by dataset.
    t.post("runs/log-metric", json!({"run_id": a, "key": "f1", "value": 0.8, "timestamp": 1_700_000_000_500_i64, "step": 2, "model_id": mid, "dataset_name": "mnist", "dataset_digest": "d1"})).await;
    t.post("runs/log-batch", json!({"run_id": a, "metrics": [{"key": "f1", "value": 0.6, "timestamp": 1_700_000_000_600_i64, "step": 2, "model_id": mid, "dataset_name": "other"}]})).await;
    t.post("runs/log-metric", json!({"run_id": a, "key": "f1", "value": 0.1, "timestamp": 1, "model_id": "m-00000000000000000000000000000000"})).await;
    t.get(&format!("logged-models/{mid}")).await;
    t.post("logged-models/search", json!({"experiment_ids": ["ui"], "filter": "metrics.f1 > 0.7", "datasets": [{"dataset_name": "other"}]})).await;
    t.post("logged-models/search", json!({"experiment_ids": ["ui"], "filter": "metrics.f1 > 0.7", "datasets": [{"dataset_name": "mnist", "dataset_digest": "d1"}]})).await;
    t.get(&format!("logged-models/{mid}/artifacts/directories"))
        .await;
    t.get(&format!(
        "logged-models/{mid}/artifacts/directories?artifact_directory_path=data"
    ))
    .await;
    let res = c
        .get(format!(
            "{base}{ajax}/logged-models/{mid}/artifacts/files?artifact_file_path=data/model.pkl"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
    assert_eq!(res.text().await.unwrap(), "pickle");
    t.call(
        "GET",
        &format!("{ajax}/logged-models/{mid}/artifacts/files?artifact_file_path=nope"),
        None,
    )
    .await;
    t.snapshot("ui_routes");
}

/// MLflow 3 traces as the `mlflow` client sends them to a server before 3.4: the trace's info,
/// then its spans as `traces.json` through the artifact proxy; read back by id and by search,
/// and as rows of `mlflow.traces` and `mlflow.spans`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_routes() {
    let mut t = Transcript::new().await;
    t.post("experiments/create", json!({"name": "llm"})).await;
    let run = t
        .post(
            "runs/create",
            json!({"experiment_id": "llm", "run_name": "chat"}),
        )
        .await["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v3 = "/api/3.0/mlflow/traces";
    let info = json!({
        "trace_id": "tr-0123456789abcdef0123456789abcdef",
        "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "llm"}},
        "request_preview": "{\"q\": \"hi\"}",
        "response_preview": "\"hello\"",
        "request_time": "2023-11-14T22:13:20.000Z",
        "execution_duration": "0.250s",
        "state": "OK",
        "trace_metadata": {"mlflow.sourceRun": run},
        "tags": {"mlflow.traceName": "chat"},
    });
    t.call("POST", v3, Some(json!({"trace": {"trace_info": info}})))
        .await;
    // Retried: still one trace.
    t.call("POST", v3, Some(json!({"trace": {"trace_info": info}})))
        .await;
    t.call(
        "POST",
        v3,
        Some(json!({"trace": {"trace_info": {"trace_id": "../x", "trace_location": {"mlflow_experiment": {"experiment_id": "llm"}}}}})),
    )
    .await;
    let spans = json!({"spans": [
        {"trace_id": "ASNFZ4mrze8BI0VniavN7w==", "span_id": "AAAAAAAAAAE=", "parent_span_id": null, "name": "chat",
         "kind": "SPAN_KIND_INTERNAL", "start_time_unix_nano": 1_700_000_000_000_000_000i64, "end_time_unix_nano": 1_700_000_000_250_000_000i64,
         "status": {"code": "STATUS_CODE_OK", "message": ""}, "attributes": {"mlflow.spanType": "\"CHAIN\"", "mlflow.spanInputs": "{\"q\": \"hi\"}", "mlflow.spanOutputs": "\"hello\""}},
        {"trace_id": "ASNFZ4mrze8BI0VniavN7w==", "span_id": "AAAAAAAAAAI=", "parent_span_id": "AAAAAAAAAAE=", "name": "llm",
         "kind": "SPAN_KIND_CLIENT", "start_time_unix_nano": 1_700_000_000_010_000_000i64, "end_time_unix_nano": 1_700_000_000_200_000_000i64,
         "status": {"code": "STATUS_CODE_OK", "message": ""}, "attributes": {"mlflow.spanType": "\"LLM\"", "mlflow.spanInputs": "{\"model\": \"gpt-x\"}", "mlflow.chat.tokenUsage": "{\"input_tokens\": 7, \"output_tokens\": 3, \"total_tokens\": 10}"}},
    ]});
    let c = t.server.client.clone();
    let data = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/llm/traces/tr-0123456789abcdef0123456789abcdef/artifacts/traces.json",
        t.server.base
    );
    assert_eq!(t.server.send(c.put(&data).json(&spans)).await.0, 200);
    assert_eq!(t.server.send(c.put(&data).json(&spans)).await.0, 200);
    let back: Value = c.get(&data).send().await.unwrap().json().await.unwrap();
    assert_eq!(back, spans);
    t.call(
        "GET",
        &format!("{v3}/tr-0123456789abcdef0123456789abcdef"),
        None,
    )
    .await;
    t.call("GET", &format!("{v3}/tr-nope"), None).await;
    t.call(
        "POST",
        &format!("{v3}/search"),
        Some(json!({"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "llm"}}], "max_results": 10})),
    )
    .await;
    t.call(
        "POST",
        &format!("{v3}/search"),
        Some(json!({"locations": [{"mlflow_experiment": {"experiment_id": "llm"}}], "filter": "attributes.status = 'OK'"})),
    )
    .await;
    t.call(
        "POST",
        &format!("{v3}/search"),
        Some(json!({"locations": [{"mlflow_experiment": {"experiment_id": "llm"}}], "filter": "metadata.`mlflow.sourceRun` = 'other' AND attributes.execution_time_ms > 100"})),
    )
    .await;
    t.call(
        "POST",
        &format!("{v3}/search"),
        Some(json!({"locations": [{"mlflow_experiment": {"experiment_id": "llm"}}], "filter": "metrics.x > 1"})),
    )
    .await;
    let sql = |q: &str| {
        c.post(format!("{}/api/sql", t.server.base))
            .header("accept", "text/csv")
            .body(q.to_string())
    };
    let rows = sql("SELECT t.trace_id, t.run_id IS NOT NULL AS in_run, t.execution_ms, t.state, s.name, s.span_type, s.parent_span_id, s.duration_ms, s.model, s.total_tokens FROM mlflow.traces t JOIN mlflow.spans s USING (trace_id) ORDER BY s.start_time")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        rows,
        "trace_id,in_run,execution_ms,state,name,span_type,parent_span_id,duration_ms,model,total_tokens\n\
         tr-0123456789abcdef0123456789abcdef,true,250,OK,chat,CHAIN,,250.0,,\n\
         tr-0123456789abcdef0123456789abcdef,true,250,OK,llm,LLM,0000000000000001,190.0,gpt-x,10\n"
    );
    t.snapshot("trace_routes");
}
