//! `/api/sql`, `/health`, auth and limits.

use runql_core::Capture;
use runql_server::{Access, Options, Scope};

use crate::util::TestServer;

/// A server over a store holding one finished run with ten points of `loss` and a NaN.
async fn start(options: Options) -> TestServer {
    let server = TestServer::start(options).await;
    let s = server.store.clone();
    tokio::task::spawn_blocking(move || {
        let run = s
            .project("p")
            .run()
            .name("r1")
            .capture(Capture::none())
            .start()
            .unwrap();
        for step in 0..10 {
            run.log_metric("loss", step, 1.0 / (step as f64 + 1.0))
                .unwrap();
        }
        run.log_metric("edge", 0, f64::NAN).unwrap();
        run.finish().unwrap();
    })
    .await
    .unwrap();
    server
}

fn url(r: &TestServer, path: &str) -> String {
    format!("{}{path}", r.base)
}

#[tokio::test]
async fn sql_answers_json_csv_and_arrow() {
    let r = start(Options::default()).await;
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(url(&r, "/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "OK"
    );

    let q = "SELECT key, count FROM metric_summary ORDER BY key";
    let res = c
        .post(url(&r, "/api/sql"))
        .json(&serde_json::json!({"sql": q}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let rows: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"key": "edge", "count": 1}, {"key": "loss", "count": 10}])
    );

    let res = c
        .post(url(&r, "/api/sql"))
        .header("accept", "text/csv")
        .body(q)
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "key,count\nedge,1\nloss,10\n");

    let res = c
        .post(url(&r, "/api/sql"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .body("SELECT value FROM metrics WHERE key = 'edge'")
        .send()
        .await
        .unwrap();
    let bytes = res.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let v =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(batches[0].column(0));
    assert!(v.value(0).is_nan(), "NaN survives the Arrow answer");
}

#[tokio::test]
async fn sql_errors_are_mlflow_shaped_and_writes_are_refused() {
    let r = start(Options::default()).await;
    let c = reqwest::Client::new();
    for (sql, needle) in [
        ("DROP TABLE runs", "read-only"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "read-only"),
        ("SELECT * FROM nope", "not found"),
        ("", "no SQL"),
    ] {
        let res = c.post(url(&r, "/api/sql")).body(sql).send().await.unwrap();
        assert_eq!(res.status(), 400, "{sql}");
        let e: serde_json::Value = res.json().await.unwrap();
        assert_eq!(e["error_code"], "INVALID_PARAMETER_VALUE");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{sql}: {e}"
        );
    }
    let res = c
        .post(url(&r, "/api/sql"))
        .header("accept", "image/png")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 406);
}

#[tokio::test]
async fn tokens_and_body_limits_are_enforced() {
    let read = "r".repeat(24);
    let options = Options {
        access: Access::loopback_only().token(read.clone(), Scope::Read),
        max_body: 1024,
        ..Options::default()
    };
    let r = start(options).await;
    let c = reqwest::Client::new();
    let res = c
        .post(url(&r, "/api/sql"))
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "a token is needed once tokens are configured"
    );
    let res = c
        .post(url(&r, "/api/sql"))
        .bearer_auth("wrong-token-wrong-token")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .post(url(&r, "/api/sql"))
        .bearer_auth(&read)
        .body("SELECT 1 AS one")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let big = format!("SELECT '{}'", "x".repeat(4096));
    let res = c
        .post(url(&r, "/api/sql"))
        .bearer_auth(&read)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

/// `POST /api/sql` of `sql` as text: (status, message or body).
async fn ask(r: &TestServer, sql: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(url(r, "/api/sql"))
        .body(sql.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    (status, message)
}

#[tokio::test]
async fn each_request_has_its_own_session() {
    let r = start(Options::default()).await;
    // A reader cannot change the session of later readers ...
    let (code, msg) = ask(&r, "SET datafusion.catalog.default_schema = 'pwned'").await;
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("SET"), "{msg}");
    let (code, msg) = ask(&r, "PREPARE q AS SELECT $1").await;
    assert_eq!(code, 400, "{msg}");
    // ... nor leave statements or tables behind.
    let (code, msg) = ask(&r, "EXECUTE q(1)").await;
    assert_ne!(code, 200, "{msg}");
    let (code, msg) = ask(&r, "CREATE TABLE t AS SELECT 1").await;
    assert_eq!(code, 400, "{msg}");
    let (code, msg) = ask(
        &r,
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'",
    )
    .await;
    assert_eq!(code, 400, "{msg}");
    let (code, msg) = ask(&r, "COPY (SELECT 1) TO '/tmp/runql-copy.csv'").await;
    assert_eq!(code, 400, "{msg}");
    assert!(!std::path::Path::new("/tmp/runql-copy.csv").exists());
    let (code, msg) = ask(&r, "SELECT * FROM '/etc/passwd'").await;
    assert_ne!(code, 200, "a file outside the store was read: {msg}");
    let (code, msg) = ask(&r, "SELECT count(*) AS n FROM runs").await;
    assert_eq!(code, 200, "the default schema changed: {msg}");
}

#[tokio::test]
async fn queries_are_bounded_in_time_memory_and_answer() {
    let r = start(Options {
        sql: runql_server::SqlLimits {
            timeout: std::time::Duration::from_secs(2),
            memory: 64 << 20,
            max_result: 8 << 20,
        },
        ..Options::default()
    })
    .await;
    let (code, msg) = ask(
        &r,
        "SELECT count(*), max(a.value * b.value) FROM generate_series(1, 200000) a, \
         generate_series(1, 200000) b",
    )
    .await;
    assert_eq!(code, 504, "{msg}");
    assert!(msg.contains("--sql-timeout"), "{msg}");
    let (code, msg) = ask(&r, "SELECT count(*) AS n FROM runs").await;
    assert_eq!(code, 200, "{msg}");

    // Memory and answer size, with time enough for a debug build.
    let r = start(Options {
        sql: runql_server::SqlLimits {
            timeout: std::time::Duration::from_secs(120),
            memory: 64 << 20,
            max_result: 8 << 20,
        },
        ..Options::default()
    })
    .await;
    let (code, msg) = ask(&r, "SELECT value FROM generate_series(1, 400000000)").await;
    assert_eq!(code, 413, "{msg}");
    assert!(msg.contains("--sql-max-result-mb"), "{msg}");
    let (code, msg) = ask(
        &r,
        "SELECT count(*) FROM generate_series(1, 5000000) a \
         JOIN generate_series(1, 5000000) b ON a.value = b.value",
    )
    .await;
    assert!(code >= 400, "{code} {msg}");
    assert!(
        msg.to_lowercase().contains("memory") || msg.contains("resources"),
        "{msg}"
    );
    // The server goes on answering.
    let (code, msg) = ask(&r, "SELECT count(*) AS n FROM runs").await;
    assert_eq!(code, 200, "{msg}");
}
