//! A `runql serve` router on a loopback port over a fresh store, for the tests of this crate.

use runql_core::Store;
use runql_query::Engine;
use runql_server::Options;
use serde_json::Value;

/// A server on `127.0.0.1:<free port>`; stopped when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub store: Store,
    pub client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server over a new temporary store.
    pub async fn start(options: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().to_string_lossy()).unwrap();
        let mut s = TestServer::on(store, options).await;
        s._dir = Some(dir);
        s
    }

    /// A server over `store`.
    pub async fn on(store: Store, options: Options) -> TestServer {
        let engine = Engine::new(store.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let server = runql_server::Server::new(engine, options).await.unwrap();
        tokio::spawn(runql_server::serve(listener, server, async {
            let _ = rx.await;
        }));
        TestServer {
            base,
            store,
            client: reqwest::Client::new(),
            _stop: stop,
            _dir: None,
        }
    }

    /// `POST <path>` with a JSON body: (status, JSON answer or `null`).
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        answer(self.client.post(format!("{}{path}", self.base)).json(&body)).await
    }

    /// `GET <path>`: (status, JSON answer or `null`).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.client.get(format!("{}{path}", self.base))).await
    }

    /// Any request: (status, JSON answer or `null`).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        answer(request).await
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let res = request.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
