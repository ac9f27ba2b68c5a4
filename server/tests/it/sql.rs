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
