//! Regressions from fuzzing the API (`scripts/fuzz-api`, Schemathesis on the OpenAPI document):
//! each case it found, against a real server and a real database (SQLite and PostgreSQL).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp, assert_error};
use serde_json::{Value, json};

const LISTS: [&str; 4] =
    ["/api/v1/bots", "/api/v1/tasks", "/api/v1/incidents", "/api/v1/incidents/unclassified"];

/// `?offset=9223372036854775808` made the SQLite driver panic (the connection closed without an
/// answer): offsets beyond a signed 64-bit number are refused as a bad parameter.
async fn an_offset_beyond_the_databases_range_is_a_bad_parameter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for list in LISTS {
        let too_far = app.get(&format!("{list}?offset=9223372036854775808")).await;
        assert_error(&too_far, 400, "invalid_parameter", Some("offset"));
        let (status, page) = app.get(&format!("{list}?offset=9223372036854775807")).await;
        assert_eq!(status, 200, "{list}: {page}");
        assert_eq!(page["items"], serde_json::json!([]), "{list}");
    }
}

/// A NUL character reached PostgreSQL, which refuses it in text: a 500 there (SQLite stored it).
/// Found by tests/properties.rs (reports) and confirmed on every route that stores text.
async fn a_nul_character_is_refused_naming_its_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let task = json!({"description": "a\u{0}b", "system": "NOOP"});
    assert_error(
        &app.post("/api/v1/tasks", &task).await,
        422,
        "invalid_field",
        Some("description"),
    );

    let form =
        reqwest::multipart::Form::new().text("description", "a\u{0}b").text("system", "NOOP");
    let response = app.client.post(app.url("/api/v1/tasks")).multipart(form).send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_error(&(status, body), 422, "invalid_field", Some("description"));

    let filter = app.get("/api/v1/bots?name=a%00b").await;
    assert_error(&filter, 400, "invalid_parameter", Some("name"));

    let report = json!({"triggers": [{"service": "login", "status": "503"}, {"service": "a\u{0}", "status": "503"}]});
    let refused = app.post("/api/v1/incidents/triggers", &report).await;
    assert_error(&refused, 422, "invalid_field", Some("triggers[1].service"));

    // Nothing was stored by the refused requests.
    assert_eq!(app.total("/api/v1/tasks").await, 0);
    assert_eq!(app.total("/api/v1/incidents/unclassified").await, 0);
}

/// A return code of 64 'ß' is 64 characters, but 128 once uppercased ("SS"), which is what the
/// 64-character column holds: PostgreSQL refused it with a 500. Lengths are now checked after
/// normalising (found by tests/properties.rs).
async fn a_report_too_long_once_normalised_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (json!({"service": "login", "status": "ß".repeat(64)}), "triggers[0].status"),
        (json!({"service": "İ".repeat(60), "status": "503"}), "triggers[0].service"),
    ];
    for (report, field) in cases {
        let refused = app.post("/api/v1/incidents/triggers", &json!({"triggers": [report]})).await;
        assert_error(&refused, 400, "malformed_body", None);
        let message = refused.1["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    assert_eq!(app.total("/api/v1/incidents/unclassified").await, 0);
}

/// A payload number next to f64::MAX was stored by PostgreSQL, which writes it back in 309 digits
/// that serde_json reads as out of range: the create answered 500 (found by scripts/fuzz-api with
/// FUZZ_API_DATABASE=postgres). Numbers beyond ±1e308 are refused, naming the field; 1e300 is
/// stored and read back.
async fn a_number_the_database_cannot_give_back_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let task = |x: Value| json!({"description": "d", "system": "NOOP", "payload": {"x": [1, x]}});
    let huge = serde_json::from_str::<Value>("-1.7976931348623155e308").unwrap();
    let refused = app.post("/api/v1/tasks", &task(huge)).await;
    assert_error(&refused, 422, "invalid_field", Some("payload.x[1]"));
    assert_eq!(app.total("/api/v1/tasks").await, 0);

    let (status, created) = app.post("/api/v1/tasks", &task(json!(1e300))).await;
    assert_eq!(status, 201, "{created}");
    let (status, read) =
        app.get(&format!("/api/v1/tasks/{}", created["id"].as_str().unwrap())).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["payload"]["x"][1].as_f64(), Some(1e300));
}

on_every_backend!(
    an_offset_beyond_the_databases_range_is_a_bad_parameter,
    a_number_the_database_cannot_give_back_is_refused,
    a_nul_character_is_refused_naming_its_field,
    a_report_too_long_once_normalised_is_refused,
);

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(target)) => out.push(target),
                    _ => refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

/// The document listed none of the API's refusals but 409 and 422 here and there, so every 400
/// (a bad id), 413 and 415 was "undocumented"; and the lists' `order` parameter pointed at a
/// schema the document did not hold.
#[tokio::test]
async fn the_openapi_document_lists_every_refusal_and_resolves_every_reference() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (status, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);

    let mut targets = Vec::new();
    refs(&doc, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        let name = target.strip_prefix("#/components/schemas/").unwrap_or(target);
        assert!(doc["components"]["schemas"].get(name).is_some(), "unresolved $ref {target}");
    }

    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths.iter().filter(|(path, _)| path.starts_with("/api/v1/")) {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let documents = |status: &str| responses.contains_key(status);
            let route = format!("{method} {path}");
            for status in ["401", "403", "503"] {
                assert!(documents(status), "{route} does not document {status}");
            }
            if path.contains('{') {
                assert!(documents("400") && documents("404"), "{route}: 400 and 404");
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        documents(status),
                        "{route} takes a body but does not document {status}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 25, "only {checked} operations");
}
