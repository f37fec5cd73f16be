//! The notification sink over HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use simulators::notify::{self, NotifyConfig};

async fn sink() -> Server {
    sink_with(NotifyConfig::default()).await
}

async fn sink_with(config: NotifyConfig) -> Server {
    Server::start(|listener, shutdown| notify::serve(listener, config, shutdown)).await
}

/// Posts `body` to the channel's webhook; returns the status and JSON answer.
async fn deliver(
    sink: &Server,
    channel: &str,
    body: Value,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = sink.client.post(sink.url(&format!("/webhooks/{channel}"))).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn received(sink: &Server, query: &str) -> Vec<Value> {
    let response =
        sink.client.get(sink.url(&format!("/_control/received{query}"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn put_control(sink: &Server, body: Value) -> (StatusCode, Value) {
    let response = sink.client.put(sink.url("/_control")).json(&body).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_delivery_is_recorded() {
    let sink = sink().await;
    let body = json!({"incident": 42, "text": "Service X is degraded"});
    let (status, answer) = deliver(&sink, "customers", body.clone(), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = answer["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(answer.as_object().unwrap().len(), 1);

    let (status, second) = deliver(&sink, "ops-team", json!([1, 2]), Some("k-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let records = received(&sink, "").await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["id"], id);
    assert_eq!(records[0]["channel"], "customers");
    assert_eq!(records[0]["body"], body);
    assert_eq!(records[0]["headers"], json!({}));
    let at = records[0]["at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    assert_eq!(records[1]["id"], second["id"]);
    assert_eq!(records[1]["channel"], "ops-team");
    assert_eq!(records[1]["body"], json!([1, 2]));
    assert_eq!(records[1]["headers"], json!({"idempotency-key": "k-1"}));
}

#[tokio::test]
async fn a_repeated_idempotency_key_is_recorded_once() {
    let sink = sink().await;
    let (status, first) = deliver(&sink, "customers", json!({"n": 1}), Some("abc")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, again) = deliver(&sink, "customers", json!({"n": 2}), Some("abc")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, json!({"id": first["id"], "duplicate": true}));
    let (status, other) = deliver(&sink, "customers", json!({"n": 3}), Some("abd")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(other["id"], first["id"]);

    let bodies: Vec<Value> =
        received(&sink, "").await.into_iter().map(|record| record["body"].clone()).collect();
    assert_eq!(bodies, [json!({"n": 1}), json!({"n": 3})]);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused() {
    let sink = sink().await;
    for body in ["", "hello", "{\"open\": "] {
        let response = sink
            .client
            .post(sink.url("/webhooks/customers"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body:?}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["message"].as_str().unwrap().contains("not JSON"));
    }
    assert!(received(&sink, "").await.is_empty());
}

#[tokio::test]
async fn records_can_be_filtered_by_channel_and_forgotten() {
    let sink = sink().await;
    deliver(&sink, "a", json!(1), None).await;
    deliver(&sink, "b", json!(2), Some("k")).await;
    deliver(&sink, "a", json!(3), None).await;
    let bodies = |records: Vec<Value>| -> Vec<Value> {
        records.into_iter().map(|r| r["body"].clone()).collect()
    };
    assert_eq!(bodies(received(&sink, "?channel=a").await), [json!(1), json!(3)]);
    assert_eq!(bodies(received(&sink, "?channel=b").await), [json!(2)]);
    assert!(received(&sink, "?channel=c").await.is_empty());

    let response = sink.client.delete(sink.url("/_control/received")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(received(&sink, "").await.is_empty());
    // Forgetting the records forgets their idempotency keys too.
    let (status, _) = deliver(&sink, "b", json!(2), Some("k")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_down_sink_answers_503_until_brought_back() {
    let sink = sink_with(NotifyConfig { down: true, ..NotifyConfig::default() }).await;
    let (status, answer) = deliver(&sink, "customers", json!({}), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer["message"].is_string());
    assert!(received(&sink, "").await.is_empty());

    let response = sink.client.get(sink.url("/_control")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let settings: Value = response.json().await.unwrap();
    assert_eq!(settings, json!({"down": true, "delay_ms": 0}));

    let (status, settings) = put_control(&sink, json!({"down": false, "delay_ms": 10})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings, json!({"down": false, "delay_ms": 10}));
    // Still correct while slow.
    let (status, _) = deliver(&sink, "customers", json!({}), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(received(&sink, "").await.len(), 1);

    let (status, _) = put_control(&sink, json!({"down": "no"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = put_control(&sink, json!({"fail_rate": 1.0})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
