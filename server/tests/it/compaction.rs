//! A run finished through the MLflow API is compacted by the server shortly after.

use std::time::{Duration, Instant};

use runql_server::Options;
use serde_json::{Value, json};

use crate::util::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_runs_are_compacted_by_the_server() {
    let server = TestServer::start(Options {
        compact_after: Some(Duration::from_millis(200)),
        ..Options::default()
    })
    .await;
    let store = server.store.clone();
    let post = |path: &str, body: Value| {
        let path = format!("/api/2.0/mlflow/{path}");
        let server = &server;
        async move {
            let (status, answer) = server.post(&path, body).await;
            assert_eq!(status, 200, "{answer}");
            answer
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
    let (_, got) = server
        .get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"))
        .await;
    assert_eq!(got["run"]["info"]["status"], "FINISHED");
    assert_eq!(got["run"]["data"]["metrics"][0]["value"], 0.5);
}
