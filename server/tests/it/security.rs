//! Who may write: tokens and scopes on the MLflow routes, over real HTTP.

use runql_server::{Access, Options, Scope};

use crate::util::TestServer;

#[tokio::test]
async fn writes_need_a_write_token_and_reads_a_read_token() {
    let (read, write) = ("r".repeat(20), "w".repeat(20));
    let server = TestServer::start(Options {
        access: Access::loopback_only()
            .token(read.clone(), Scope::Read)
            .token(write.clone(), Scope::Write),
        ..Options::default()
    })
    .await;
    let base = server.base.clone();
    let c = reqwest::Client::new();
    let create = |token: Option<&str>| {
        let mut r = c
            .post(format!("{base}/api/2.0/mlflow/experiments/create"))
            .json(&serde_json::json!({"name": "secure"}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let res = create(None).await.unwrap();
    assert_eq!(res.status(), 401);
    let e: serde_json::Value = res.json().await.unwrap();
    assert_eq!(e["error_code"], "UNAUTHENTICATED");
    let res = create(Some(&read)).await.unwrap();
    assert_eq!(res.status(), 403);
    let e: serde_json::Value = res.json().await.unwrap();
    assert_eq!(e["error_code"], "PERMISSION_DENIED");
    assert_eq!(create(Some(&write)).await.unwrap().status(), 200);

    // Reading works with either token, not without one.
    let get = |token: Option<&str>| {
        let mut r = c.get(format!(
            "{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=secure"
        ));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get(Some(&read)).await.unwrap().status(), 200);
    assert_eq!(get(Some(&write)).await.unwrap().status(), 200);
    assert_eq!(get(None).await.unwrap().status(), 401);

    // An artifact upload is a write.
    let res = c
        .put(format!(
            "{base}/api/2.0/mlflow-artifacts/artifacts/secure/0123/artifacts/a.txt"
        ))
        .bearer_auth(&read)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Unknown endpoints answer MLflow-shaped 404s.
    let res = c
        .get(format!("{base}/api/2.0/mlflow/nope"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let e: serde_json::Value = res.json().await.unwrap();
    assert_eq!(e["error_code"], "ENDPOINT_NOT_FOUND");
}
