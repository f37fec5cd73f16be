//! `/api/v1/events` streams committed changes as server-sent events.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestApp};
use serde_json::json;

/// Reads the stream until `wanted` appears in it (10 s at most); returns everything read.
async fn read_until(response: &mut reqwest::Response, wanted: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(wanted) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await;
        match chunk {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("stream ended or stalled before {wanted:?} ({other:?}); read: {seen}"),
        }
    }
    seen
}

async fn changes_are_streamed_as_they_are_committed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut stream = app.client.get(app.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    read_until(&mut stream, "event: hello").await;

    let (_, bot) = app
        .post("/api/v1/bots", &json!({"name": "b1", "ip_address": "10.0.0.1", "systems": ["NOOP"], "delivery": "amqp"}))
        .await;
    let bot_id = bot["id"].as_str().unwrap();
    read_until(&mut stream, &format!(r#"data: {{"type":"bot","id":"{bot_id}"}}"#)).await;

    let (_, task) = app.post("/api/v1/tasks", &json!({"description": "x", "system": "NOOP"})).await;
    let task_id = task["id"].as_str().unwrap();
    let seen =
        read_until(&mut stream, &format!(r#"data: {{"type":"task","id":"{task_id}"}}"#)).await;
    assert!(seen.contains("event: change"), "{seen}");

    app.post(&format!("/api/v1/tasks/{task_id}/cancel"), &json!({})).await;
    read_until(&mut stream, &format!(r#"{{"type":"task","id":"{task_id}"}}"#)).await;
}

on_every_backend!(changes_are_streamed_as_they_are_committed);

/// A viewer's open stream ends when the orchestrator stops: the server's graceful shutdown waits
/// for every open request, and a stream that never ended kept a stopped orchestrator running (and
/// its port taken) for as long as a dashboard or a client's `wait()` stayed connected.
#[tokio::test]
async fn an_open_stream_ends_when_the_orchestrator_stops() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut stream = app.client.get(app.url("/api/v1/events")).send().await.unwrap();
    read_until(&mut stream, "event: hello").await;
    app.stop();
    // Bounded: the keep-alive comes every 15 s, so a stream left open fails this after 10 s.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream was still open 10 s after the orchestrator was told to stop"
    );
}
