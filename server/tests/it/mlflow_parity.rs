//! Behaviours of MLflow's own server that its clients and autologgers rely on, asserted one by
//! one over HTTP (the Python suite, shell/tests/python/mlflow_client.py, drives the same through
//! the real `mlflow` client): run names, renames, deleted runs, points sent twice, long values.

use runql_server::Options;
use serde_json::{Value, json};

use crate::util::TestServer;

const API: &str = "/api/2.0/mlflow";

async fn post(s: &TestServer, route: &str, body: Value) -> (u16, Value) {
    s.post(&format!("{API}/{route}"), body).await
}

async fn get(s: &TestServer, route: &str) -> (u16, Value) {
    s.get(&format!("{API}/{route}")).await
}

async fn create(s: &TestServer, body: Value) -> (u16, Value) {
    post(s, "runs/create", body).await
}

async fn run_of(s: &TestServer, id: &str) -> Value {
    let (status, body) = get(s, &format!("runs/get?run_id={id}")).await;
    assert_eq!(status, 200, "{body}");
    body["run"].clone()
}

fn tag<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str())
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn run_names_are_made_up_kept_in_a_tag_and_renamed_as_in_mlflow() {
    let s = TestServer::start(Options::default()).await;
    // No name: one is made up, `<adjective>-<animal>-<n>`, and kept in `mlflow.runName`.
    let (status, body) = create(&s, json!({"experiment_id": "0"})).await;
    assert_eq!(status, 200, "{body}");
    let info = &body["run"]["info"];
    let name = info["run_name"].as_str().unwrap().to_string();
    assert_eq!(name.split('-').count(), 3, "{name}");
    assert!(name.len() <= 20, "{name}");
    assert_eq!(tag(&body["run"], "mlflow.runName"), Some(name.as_str()));
    let id = info["run_id"].as_str().unwrap().to_string();

    // runs/update with run_name renames the run and its tag.
    let (status, body) = post(
        &s,
        "runs/update",
        json!({"run_id": id, "run_name": "renamed", "status": "RUNNING"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_info"]["run_name"], "renamed");
    let run = run_of(&s, &id).await;
    assert_eq!(run["info"]["run_name"], "renamed");
    assert_eq!(tag(&run, "mlflow.runName"), Some("renamed"));

    // set-tag mlflow.runName renames too, and so does a log-batch tag.
    let (status, _) = post(
        &s,
        "runs/set-tag",
        json!({"run_id": id, "key": "mlflow.runName", "value": "by-tag"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(run_of(&s, &id).await["info"]["run_name"], "by-tag");
    let (status, _) = post(
        &s,
        "runs/log-batch",
        json!({"run_id": id, "tags": [{"key": "mlflow.runName", "value": "by-batch"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(run_of(&s, &id).await["info"]["run_name"], "by-batch");

    // A name and a tag that disagree are refused with MLflow's words; agreeing ones are fine.
    let (status, body) = create(
        &s,
        json!({"experiment_id": "0", "run_name": "a", "tags": [{"key": "mlflow.runName", "value": "b"}]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        message(&body),
        "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different \
         values (run_name='a', mlflow.runName='b')."
    );
    let (status, body) = create(
        &s,
        json!({"experiment_id": "0", "tags": [{"key": "mlflow.runName", "value": "from-tag"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["info"]["run_name"], "from-tag");
}

#[tokio::test]
async fn the_clients_user_and_git_tags_fill_the_runs_columns() {
    let s = TestServer::start(Options::default()).await;
    let (status, body) = create(
        &s,
        json!({"experiment_id": "0", "user_id": "ada", "start_time": 1_700_000_000_123i64, "tags": [
            {"key": "mlflow.user", "value": "ada"},
            {"key": "mlflow.source.git.commit", "value": "0123abcd"},
            {"key": "mlflow.source.git.branch", "value": "main"},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let info = &body["run"]["info"];
    assert_eq!(info["user_id"], "ada");
    // The start time the client gave, not the server's clock.
    assert_eq!(info["start_time"], 1_700_000_000_123i64);
    let id = info["run_id"].as_str().unwrap();
    let (status, body) = s
        .post(
            "/api/sql",
            json!({"sql": format!("SELECT username, git_commit, git_branch FROM runs WHERE run_id = '{id}'")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    for want in ["ada", "0123abcd", "main"] {
        assert!(text.contains(want), "{want} in {text}");
    }
    // The `attributes.user_id` filter finds it.
    let (status, body) = post(
        &s,
        "runs/search",
        json!({"experiment_ids": ["0"], "filter": "attributes.user_id = 'ada'"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test]
async fn a_deleted_run_refuses_writes_until_it_is_restored() {
    let s = TestServer::start(Options::default()).await;
    let (_, body) = create(&s, json!({"experiment_id": "0", "run_name": "gone"})).await;
    let id = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let point = json!({"run_id": id, "key": "loss", "value": 1.0, "timestamp": 5, "step": 0});
    assert_eq!(post(&s, "runs/log-metric", point.clone()).await.0, 200);
    assert_eq!(post(&s, "runs/delete", json!({"run_id": id})).await.0, 200);
    let refused = format!("The run {id} must be in the 'active' state. Current state is deleted.");
    // (The same body again would be a retry of a request that was applied: answered 200.)
    let mut later = point.clone();
    later["timestamp"] = json!(6);
    for (route, body) in [
        ("runs/log-metric", later),
        (
            "runs/log-batch",
            json!({"run_id": id, "params": [{"key": "p", "value": "1"}]}),
        ),
        (
            "runs/log-parameter",
            json!({"run_id": id, "key": "p", "value": "1"}),
        ),
        (
            "runs/set-tag",
            json!({"run_id": id, "key": "t", "value": "1"}),
        ),
        (
            "runs/update",
            json!({"run_id": id, "status": "FINISHED", "end_time": 9}),
        ),
    ] {
        let (status, answer) = post(&s, route, body).await;
        assert_eq!(status, 400, "{route}: {answer}");
        assert_eq!(answer["error_code"], "INVALID_PARAMETER_VALUE", "{route}");
        assert_eq!(message(&answer), refused, "{route}");
    }
    // Still readable, as deleted.
    assert_eq!(run_of(&s, &id).await["info"]["lifecycle_stage"], "deleted");
    // Restored, it takes writes again and reads active — also after the server wrote to it.
    assert_eq!(post(&s, "runs/restore", json!({"run_id": id})).await.0, 200);
    let mut second = point.clone();
    second["step"] = json!(1);
    assert_eq!(post(&s, "runs/log-metric", second).await.0, 200);
    assert_eq!(post(&s, "runs/delete", json!({"run_id": id})).await.0, 200);
    assert_eq!(post(&s, "runs/restore", json!({"run_id": id})).await.0, 200);
    let run = run_of(&s, &id).await;
    assert_eq!(run["info"]["lifecycle_stage"], "active", "{run}");
    let (status, body) = post(
        &s,
        "runs/search",
        json!({"experiment_ids": ["0"], "filter": "attributes.run_name = 'gone'"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test]
async fn a_point_sent_again_identically_is_stored_once() {
    let s = TestServer::start(Options::default()).await;
    let (_, body) = create(&s, json!({"experiment_id": "0"})).await;
    let id = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let m = |value: Value, step: i64| json!({"key": "dup", "value": value, "timestamp": 100, "step": step});
    // Twice through log-metric (different bodies: not a retry), then a batch repeating points
    // inside itself and across requests; NaN twice; a different value at the same step stays.
    for body in [
        json!({"run_id": id, "key": "dup", "value": 2.5, "timestamp": 100, "step": 1}),
        json!({"key": "dup", "run_id": id, "value": 2.5, "timestamp": 100, "step": 1}),
    ] {
        assert_eq!(post(&s, "runs/log-metric", body).await.0, 200);
    }
    let batch = json!({"run_id": id, "metrics": [
        m(json!(2.5), 1), m(json!(2.5), 1), m(json!(3.5), 1), m(json!("NaN"), 1), m(json!("NaN"), 1),
        m(json!(0.0), 2), m(json!(-0.0), 2),
    ]});
    let (status, body) = post(&s, "runs/log-batch", batch).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(
        &s,
        &format!("metrics/get-history?run_id={id}&metric_key=dup"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let values: Vec<String> = body["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}@{}", p["value"], p["step"]))
        .collect();
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["\"NaN\"@1", "0.0@2", "2.5@1", "3.5@1"],
        "{values:?}"
    );
}

#[tokio::test]
async fn long_values_are_cut_to_mlflows_limits_and_batches_worded_as_mlflow() {
    let s = TestServer::start(Options::default()).await;
    let (_, body) = create(&s, json!({"experiment_id": "0"})).await;
    let id = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
    // MLflow's server cuts (MLFLOW_TRUNCATE_LONG_VALUES defaults to true) and answers 200.
    let long = "é".repeat(7000);
    let (status, body) = post(
        &s,
        "runs/log-parameter",
        json!({"run_id": id, "key": "long", "value": long}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(
        &s,
        "runs/set-tag",
        json!({"run_id": id, "key": "long", "value": "t".repeat(9000)}),
    )
    .await;
    assert_eq!(status, 200);
    let run = run_of(&s, &id).await;
    let param = run["data"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"] == "long")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(param.chars().count(), 6000);
    assert_eq!(tag(&run, "long").map(|t| t.len()), Some(8000));
    // The same long value again is the same param: no "changing param values" error.
    let (status, body) = post(
        &s,
        "runs/log-batch",
        json!({"run_id": id, "params": [{"key": "long", "value": "é".repeat(7000)}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let metrics: Vec<Value> = (0..1001)
        .map(|i| json!({"key": "m", "value": 1.0, "timestamp": 1, "step": i}))
        .collect();
    let (status, body) = post(
        &s,
        "runs/log-batch",
        json!({"run_id": id, "metrics": metrics}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        message(&body),
        "A batch logging request can contain at most 1000 metrics. Got 1001 metrics. Please \
         split up metrics across multiple requests and try again."
    );
    let metrics: Vec<Value> = (0..950)
        .map(|i| json!({"key": "m", "value": 1.0, "timestamp": 1, "step": i}))
        .collect();
    let params: Vec<Value> = (0..60)
        .map(|i| json!({"key": format!("p{i}"), "value": "1"}))
        .collect();
    let (status, body) = post(
        &s,
        "runs/log-batch",
        json!({"run_id": id, "metrics": metrics, "params": params}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        message(&body),
        "A batch logging request can contain at most 1000 metrics, params, and tags. Got 1010 \
         metrics, params, and tags. Please split up metrics, params, and tags across multiple \
         requests and try again."
    );
}

#[tokio::test]
async fn logging_into_a_finished_run_keeps_its_end_time() {
    let s = TestServer::start(Options::default()).await;
    let (_, body) = create(&s, json!({"experiment_id": "0", "start_time": 1000})).await;
    let id = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let (status, body) = post(
        &s,
        "runs/update",
        json!({"run_id": id, "status": "FINISHED", "end_time": 5000}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_info"]["end_time"], 5000);
    let (status, _) = post(
        &s,
        "runs/log-metric",
        json!({"run_id": id, "key": "late", "value": 1.0, "timestamp": 6000, "step": 0}),
    )
    .await;
    assert_eq!(status, 200);
    let run = run_of(&s, &id).await;
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(run["info"]["end_time"], 5000, "{run}");
    assert_eq!(run["data"]["metrics"][0]["key"], "late");
}
