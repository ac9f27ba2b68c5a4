//! `GET /api/events` tells subscribers about runs logged by any writer.

use std::time::{Duration, Instant};

use runql_core::Capture;
use runql_server::Options;

use crate::util::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_logged_by_another_writer_shows_up_as_events() {
    let server = TestServer::start(Options::default()).await;
    let (store, base) = (server.store.clone(), server.base.clone());
    let mut res = reqwest::Client::new()
        .get(format!("{base}/api/events?project=live"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");

    // Another writer (the Rust client) starts a run, logs, and finishes it.
    let s = store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let run = s
            .project("live")
            .run()
            .name("watched")
            .capture(Capture::none())
            .start()
            .unwrap();
        run.log_metric("loss", 0, 1.0).unwrap();
        run.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2500));
        run.finish().unwrap();
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(text.contains("\"status\":\"running\"") && text.contains("\"status\":\"finished\"")) {
        assert!(Instant::now() < deadline, "no events for the run: {text}");
        let chunk = tokio::time::timeout(Duration::from_secs(30), res.chunk())
            .await
            .unwrap()
            .unwrap();
        match chunk {
            Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
            None => panic!("the event stream ended: {text}"),
        }
    }
    writer.await.unwrap();
    assert!(text.contains("event: run"), "{text}");
    assert!(text.contains("\"name\":\"watched\""), "{text}");
}
