//! A run finished through the MLflow API is compacted by the server shortly after.

use std::time::{Duration, Instant};

use runql_core::Store;
use runql_query::Engine;
use runql_server::Options;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_are_compacted_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().to_string_lossy()).unwrap();
    let engine = Engine::new(store.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/2.0/mlflow", listener.local_addr().unwrap());
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    let options = Options {
        compact_after: Some(Duration::from_millis(200)),
        ..Options::default()
    };
    tokio::spawn(runql_server::serve(
        listener,
        runql_server::router(engine, options),
        async {
            let _ = rx.await;
        },
    ));
    let c = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let req = c.post(format!("{base}/{path}")).json(&body);
        async move {
            let res = req.send().await.unwrap();
            assert!(res.status().is_success(), "{}", res.text().await.unwrap());
            res.json::<Value>().await.unwrap()
        }
    };
    post("experiments/create", json!({"name": "compacted"})).await;
    let run = post("runs/create", json!({"experiment_id": "compacted"})).await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    post(
        "runs/log-batch",
        json!({"run_id": run_id, "metrics": [{"key": "loss", "value": 0.5, "timestamp": 1, "step": 3}]}),
    )
    .await;
    post(
        "runs/update",
        json!({"run_id": run_id, "status": "FINISHED"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let manifest = store.read_manifest("compacted").await.unwrap();
        if manifest.claims(&run_id).next().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the run was not compacted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still the same run, read from Parquet now.
    let got = c
        .get(format!("{base}/runs/get?run_id={run_id}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(got["run"]["info"]["status"], "FINISHED");
    assert_eq!(got["run"]["data"]["metrics"][0]["value"], 0.5);
}
