//! What a hostile or careless caller sends, over real HTTP: pages of other sites, foreign
//! `Host` names, bodies of the wrong type, names and values at the ends of their ranges.
//! (The same with a real browser and a real `runql serve`: the shell's `hostile` test.)

use runql_server::Options;
use serde_json::{Value, json};

use crate::util::TestServer;

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn pages_of_other_sites_cannot_write_or_read() {
    let s = TestServer::start(Options::default()).await;
    let create = |origin: Option<&str>, site: Option<&str>, ctype: &str| {
        let mut r = s
            .client
            .post(format!("{}/api/2.0/mlflow/experiments/create", s.base))
            .header("content-type", ctype)
            .body(r#"{"name": "pwned"}"#);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(site) = site {
            r = r
                .header("sec-fetch-site", site)
                .header("sec-fetch-mode", "no-cors");
        }
        r
    };
    // A no-cors fetch from another site, and a text/plain form with no JavaScript.
    let (code, body) = s
        .send(create(
            Some("http://evil.example"),
            Some("cross-site"),
            "text/plain",
        ))
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(message(&body).contains("http://evil.example"), "{body}");
    let (code, _) = s
        .send(create(Some("http://evil.example"), None, "text/plain"))
        .await;
    assert_eq!(code, 403);
    // Even with the right content type (which a page can only send after a preflight).
    let (code, _) = s
        .send(create(
            Some("http://evil.example"),
            None,
            "application/json",
        ))
        .await;
    assert_eq!(code, 403);
    // Without an Origin (an old browser's form), the content type stops it, worded as
    // MLflow words it.
    let (code, body) = s.send(create(None, None, "text/plain")).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        message(&body),
        "Bad Request. Content-Type must be one of ['application/json']."
    );
    let (code, body) = s
        .send(
            s.client
                .post(format!("{}/api/2.0/mlflow/runs/log-batch", s.base))
                .body("{}"),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        message(&body),
        "Bad Request. Content-Type header is missing."
    );
    // Nothing was created.
    let (_, got) = s
        .get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=pwned")
        .await;
    assert_eq!(got["error_code"], "RESOURCE_DOES_NOT_EXIST", "{got}");

    // A cross-site page cannot run SQL either, not even in a no-cors fetch.
    let (code, _) = s
        .send(
            s.client
                .post(format!("{}/api/sql", s.base))
                .header("origin", "http://evil.example")
                .header("sec-fetch-site", "cross-site")
                .body("SELECT 1"),
        )
        .await;
    assert_eq!(code, 403);
    // The dashboard itself can (same origin), and so can curl (no browser headers).
    let host = s.base.trim_start_matches("http://").to_string();
    let (code, body) = s
        .send(
            s.client
                .post(format!("{}/api/sql", s.base))
                .header("origin", format!("http://{host}"))
                .header("sec-fetch-site", "same-origin")
                .body("SELECT 1 AS one"),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = s
        .send(
            s.client
                .post(format!("{}/api/sql", s.base))
                .body("SELECT 1"),
        )
        .await;
    assert_eq!(code, 200);
    // Following a link to an artifact or the dashboard from another site is a navigation.
    let (code, _) = s
        .send(
            s.client
                .get(format!("{}/health", s.base))
                .header("sec-fetch-site", "cross-site")
                .header("sec-fetch-mode", "navigate"),
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_tokenless_server_refuses_foreign_host_names() {
    let s = TestServer::start(Options::default()).await;
    let (code, body) = s
        .send(
            s.client
                .post(format!("{}/api/sql", s.base))
                .header("host", "rebind.evil.example:5000")
                .body("SELECT 1"),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        message(&body).contains("--allowed-host rebind.evil.example"),
        "{body}"
    );
    let (code, _) = s
        .send(
            s.client
                .get(format!("{}/api/2.0/mlflow/experiments/search", s.base))
                .header("host", "localhost"),
        )
        .await;
    assert_eq!(code, 200);

    let named = TestServer::start(Options {
        access: runql_server::Access::loopback_only().allow_host("gpu-box"),
        ..Options::default()
    })
    .await;
    let (code, _) = named
        .send(
            named
                .client
                .post(format!("{}/api/sql", named.base))
                .header("host", "gpu-box:5000")
                .body("SELECT 1"),
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn long_and_unicode_experiment_names() {
    let s = TestServer::start(Options::default()).await;
    // 34 Chinese characters: 102 bytes, 306 once encoded as a path part.
    let chinese = "实验".repeat(17);
    let (code, body) = s
        .post(
            "/api/2.0/mlflow/experiments/create",
            json!({"name": chinese}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let id = body["experiment_id"].as_str().unwrap().to_string();
    let (code, run) = s
        .post(
            "/api/2.0/mlflow/runs/create",
            json!({"experiment_id": id, "run_name": "r"}),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let (code, body) = s
        .post(
            "/api/2.0/mlflow/runs/log-metric",
            json!({"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (_, got) = s
        .get(&format!(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
            urlencode(&chinese)
        ))
        .await;
    assert_eq!(got["experiment"]["name"], chinese.as_str(), "{got}");
    let (_, found) = s
        .post("/api/2.0/mlflow/experiments/search", json!({}))
        .await;
    let names: Vec<&str> = found["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&chinese.as_str()), "{names:?} {found}");
    assert!(s.store.list_projects().await.unwrap().contains(&chinese));

    // 501 characters: MLflow's limit, MLflow's wording.
    let (code, body) = s
        .post(
            "/api/2.0/mlflow/experiments/create",
            json!({"name": "x".repeat(501)}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        message(&body),
        "'name' exceeds the maximum length of 500 characters"
    );
    let (code, body) = s
        .post(
            "/api/2.0/mlflow/experiments/create",
            json!({"name": "x".repeat(10 << 10)}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    // 500 characters of four bytes each are a name like any other.
    let (code, body) = s
        .post(
            "/api/2.0/mlflow/experiments/create",
            json!({"name": "🧪".repeat(500)}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn steps_and_timestamps_at_the_ends_of_their_range() {
    let s = TestServer::start(Options::default()).await;
    let run_id = new_run(&s, "ends").await;
    let metrics: Vec<Value> = [
        (i64::MIN, i64::MIN),
        (i64::MAX, i64::MAX),
        (0, i64::MAX),
        (-1, i64::MIN),
    ]
    .iter()
    .enumerate()
    .map(|(i, (step, ts))| json!({"key": format!("m{i}"), "value": 1.0, "timestamp": ts, "step": step}))
    .collect();
    let (code, body) = s
        .post(
            "/api/2.0/mlflow/runs/log-batch",
            json!({"run_id": run_id, "metrics": metrics}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let sql = "SELECT key, step, ts FROM metrics ORDER BY key";
    for accept in [
        "application/json",
        "text/csv",
        "application/vnd.runql.table+json",
        "application/vnd.apache.arrow.stream",
    ] {
        let res = s
            .client
            .post(format!("{}/api/sql", s.base))
            .header("accept", accept)
            .body(sql)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{accept}: {e}"));
        let code = res.status().as_u16();
        let text = res
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{accept}: the answer was cut off: {e}"));
        assert_eq!(code, 200, "{accept}: {}", String::from_utf8_lossy(&text));
        if accept == "text/csv" {
            let text = String::from_utf8_lossy(&text);
            assert_eq!(text.lines().count(), 5, "{text}");
            assert!(text.contains(&i64::MIN.to_string()), "{text}");
        }
        if accept == "application/vnd.runql.table+json" {
            let v: Value = serde_json::from_slice(&text).unwrap();
            // Beyond 2^53 integers are strings; a timestamp past the calendar its integer.
            assert_eq!(
                v["rows"][0],
                json!(["m0", i64::MIN.to_string(), i64::MIN.to_string()]),
                "{v}"
            );
            assert_eq!(v["rows"][2][2], i64::MAX.to_string(), "{v}");
        }
    }
    // The run's history answers too.
    let (code, body) = s
        .get(&format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=m1"
        ))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metrics"][0]["step"], i64::MAX, "{body}");
}

/// A run named `r` in a new experiment `experiment`: its id.
async fn new_run(s: &TestServer, experiment: &str) -> String {
    let (_, exp) = s
        .post(
            "/api/2.0/mlflow/experiments/create",
            json!({"name": experiment}),
        )
        .await;
    let (_, run) = s
        .post(
            "/api/2.0/mlflow/runs/create",
            json!({"experiment_id": exp["experiment_id"], "run_name": "r"}),
        )
        .await;
    run["run"]["info"]["run_id"].as_str().unwrap().to_string()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_silent_client_reads_crashed_then_running_when_it_logs_again() {
    let s = TestServer::start(Options {
        silent_after: std::time::Duration::from_secs(1),
        compact_after: None,
        ..Options::default()
    })
    .await;
    let run_id = new_run(&s, "silent").await;
    let log = |step: i64| json!({"run_id": run_id, "key": "loss", "value": 1.0, "timestamp": 1, "step": step});
    let status = || async {
        let (_, got) = s
            .get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"))
            .await;
        got["run"]["info"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        s.post("/api/2.0/mlflow/runs/log-metric", log(0)).await.0,
        200
    );
    assert_eq!(status().await, "RUNNING");
    // Silent past the window (the server lets go of the run meanwhile): crashed.
    let mut waited = 0;
    while status().await != "FAILED" {
        waited += 1;
        assert!(waited < 100, "the silent run never read crashed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Its client speaks again: running again, and what it logs is kept.
    let (code, body) = s.post("/api/2.0/mlflow/runs/log-metric", log(1)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status().await, "RUNNING");
    let (_, hist) = s
        .get(&format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss"
        ))
        .await;
    assert_eq!(hist["metrics"].as_array().map(Vec::len), Some(2), "{hist}");
    // And it ends as its client ends it.
    let (code, _) = s
        .post(
            "/api/2.0/mlflow/runs/update",
            json!({"run_id": run_id, "status": "FINISHED"}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(status().await, "FINISHED");
}
