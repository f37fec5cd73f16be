//! The bots API against a real server and a real database (SQLite and PostgreSQL).
#![allow(clippy::unwrap_used)]

mod common;

use broker_config::TaskStatus;
use common::{Backend, ErrorCase, TestApp, assert_error};
use orchestrator::entity::task;
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, Set};
use serde_json::{Value, json};

fn bot(name: &str, ip: &str) -> Value {
    json!({"name": name, "ip_address": ip, "systems": ["VIVO360", "NOOP"], "delivery": "amqp"})
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.post("/api/v1/bots", &body).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn bot_crud_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = create(&app, bot("bot-1", "127.0.0.1")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "bot-1");
    assert_eq!(created["status"], "UNAVAILABLE", "a new bot waits to come online");
    assert_eq!(created["systems"], json!(["NOOP", "VIVO360"]), "sorted by name");
    assert_eq!(created["delivery"], "amqp");

    let (status, fetched) = app.get(&format!("/api/v1/bots/{id}")).await;
    assert_eq!((status, &fetched), (200, &created));

    let (status, replaced) = app
        .put(
            &format!("/api/v1/bots/{id}"),
            &json!({"name": "bot-1b", "ip_address": "127.0.0.2", "systems": ["CPE"],
                    "delivery": "http", "http_port": 9001, "status": "AVAILABLE"}),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        (&replaced["name"], &replaced["systems"], &replaced["http_port"], &replaced["status"]),
        (&json!("bot-1b"), &json!(["CPE"]), &json!(9001), &json!("AVAILABLE"))
    );

    let (status, patched) =
        app.patch(&format!("/api/v1/bots/{id}"), &json!({"status": "UNAVAILABLE"})).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!((&patched["status"], &patched["name"]), (&json!("UNAVAILABLE"), &json!("bot-1b")));

    let (status, listed) = app.get("/api/v1/bots").await;
    assert_eq!(status, 200);
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], id.as_str());

    let (status, _) = app.delete(&format!("/api/v1/bots/{id}")).await;
    assert_eq!(status, 204);
    assert_error(&app.get(&format!("/api/v1/bots/{id}")).await, 404, "not_found", None);
    assert_error(&app.delete(&format!("/api/v1/bots/{id}")).await, 404, "not_found", None);
}

async fn bot_list_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    create(
        &app,
        json!({"name": "a", "ip_address": "127.0.0.1", "systems": ["NOOP"], "status": "AVAILABLE"}),
    )
    .await;
    create(&app, json!({"name": "b", "ip_address": "127.0.0.2", "systems": ["CPE", "NOTIFY"]}))
        .await;
    create(&app, json!({"name": "c", "ip_address": "127.0.0.3", "systems": ["VIVO360"], "delivery": "http", "http_port": 8000})).await;

    let names = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&app.get("/api/v1/bots").await.1), ["c", "b", "a"], "newest first by default");
    assert_eq!(names(&app.get("/api/v1/bots?order=oldest").await.1), ["a", "b", "c"]);
    assert_eq!(names(&app.get("/api/v1/bots?status=available").await.1), ["a"]);
    assert_eq!(names(&app.get("/api/v1/bots?system=NOTIFY").await.1), ["b"]);
    // "CPE" must not match inside other names, and lists are OR-ed.
    assert_eq!(names(&app.get("/api/v1/bots?system=CPE,VIVO360&order=oldest").await.1), ["b", "c"]);
    assert_eq!(names(&app.get("/api/v1/bots?ip_address=127.0.0.3").await.1), ["c"]);
    assert_eq!(names(&app.get("/api/v1/bots?name=b").await.1), ["b"]);

    let (_, first) = app.get("/api/v1/bots?limit=2&order=oldest").await;
    assert_eq!((names(&first), &first["total"]), (vec!["a".to_owned(), "b".to_owned()], &json!(3)));
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app.get(&format!("/api/v1/bots?limit=2&order=oldest&cursor={cursor}")).await;
    assert_eq!(names(&second), ["c"]);
    assert!(second["next_cursor"].is_null(), "last page has no cursor");
    assert_eq!(names(&app.get("/api/v1/bots?limit=1&offset=1").await.1), ["b"]);

    assert_error(
        &app.get("/api/v1/bots?status=SLEEPING").await,
        400,
        "invalid_parameter",
        Some("status"),
    );
    assert_error(
        &app.get("/api/v1/bots?system=f@x").await,
        400,
        "invalid_parameter",
        Some("system"),
    );
    assert_error(&app.get("/api/v1/bots?limit=0").await, 400, "invalid_parameter", Some("limit"));
    assert_error(
        &app.get("/api/v1/bots?cursor=zzz").await,
        400,
        "invalid_parameter",
        Some("cursor"),
    );
    assert_error(&app.get("/api/v1/bots?colour=red").await, 400, "invalid_parameter", None);
}

async fn bad_bot_input_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let existing = create(&app, bot("bot-1", "127.0.0.1")).await;
    let id = existing["id"].as_str().unwrap();
    let path = "/api/v1/bots";

    let cases: Vec<ErrorCase> = vec![
        (app.post(path, &json!({"name": "x", "ip_address": "127.0.0.9", "systems": ["f@x"]})).await, 422, "invalid_field", Some("systems[0]")),
        (app.post(path, &json!({"name": "Bad Name", "ip_address": "127.0.0.9", "systems": ["NOOP"]})).await, 422, "invalid_field", Some("name")),
        (app.post(path, &json!({"name": "x", "ip_address": "999.1.1.1", "systems": ["NOOP"]})).await, 422, "invalid_field", Some("ip_address")),
        (app.post(path, &json!({"name": "x", "ip_address": "127.0.0.9", "systems": []})).await, 422, "invalid_field", Some("systems")),
        (app.post(path, &json!({"name": "x", "ip_address": "127.0.0.9", "systems": ["NOOP"], "status": "ASLEEP"})).await, 422, "invalid_field", Some("status")),
        (app.post(path, &json!({"name": "x", "ip_address": "127.0.0.9", "systems": ["NOOP"], "colour": "red"})).await, 422, "invalid_field", Some("colour")),
        (app.post(path, &json!({"ip_address": "127.0.0.9", "systems": ["NOOP"]})).await, 422, "invalid_field", None),
        (app.post_raw(path, "application/json", b"{\"name\": \"x\",".to_vec()).await, 400, "malformed_body", None),
        (app.post_raw(path, "text/plain", b"name=x".to_vec()).await, 415, "unsupported_media_type", None),
        (app.post(path, &bot("bot-1", "127.0.0.9")).await, 409, "name_taken", Some("name")),
        (app.patch(&format!("{path}/{id}"), &json!({"systems": ["f@x"]})).await, 422, "invalid_field", Some("systems[0]")),
        (app.patch(&format!("{path}/{id}"), &json!({"delivery": "http"})).await, 422, "invalid_field", Some("http_port")),
        (app.put(&format!("{path}/{id}"), &json!({"id": "01234567-89ab-7def-8123-456789abcdef", "name": "bot-2"})).await, 422, "invalid_field", Some("id")),
        (app.patch(&format!("{path}/{id}"), &json!({"status": "BUSY"})).await, 409, "bot_holds_no_task", Some("status")),
        (app.get(&format!("{path}/not-a-uuid")).await, 400, "invalid_parameter", Some("id")),
    ];
    for (response, status, code, field) in &cases {
        assert_error(response, *status, code, *field);
    }
    assert_eq!(app.total(path).await, 1, "no bad request created a bot");
    let (_, after) = app.get(&format!("{path}/{id}")).await;
    assert_eq!(after, existing, "no bad request changed the bot");

    // Same address is fine for a second AMQP bot on the same host (the demo runs three), but not
    // for a second HTTP bot on the same port.
    create(&app, bot("bot-2", "127.0.0.1")).await;
    create(&app, json!({"name": "web-1", "ip_address": "127.0.0.5", "systems": ["NOOP"], "delivery": "http", "http_port": 8000})).await;
    let clash = app.post(path, &json!({"name": "web-2", "ip_address": "127.0.0.5", "systems": ["NOOP"], "delivery": "http", "http_port": 8000})).await;
    assert_error(&clash, 409, "ip_address_taken", Some("ip_address"));
    assert_eq!(app.total(path).await, 3);
}

async fn a_bot_running_a_task_cannot_be_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bot = create(&app, bot("bot-1", "127.0.0.1")).await;
    let bot_id: uuid::Uuid = bot["id"].as_str().unwrap().parse().unwrap();
    let (_, made) =
        app.post("/api/v1/tasks", &json!({"description": "wait", "system": "NOOP"})).await;
    let task_id: uuid::Uuid = made["id"].as_str().unwrap().parse().unwrap();

    // The dispatcher is what puts a task in a bot's hands; here the test does it directly.
    let hold = |status: TaskStatus| {
        let db = app.db.clone();
        async move {
            let row = task::Entity::find_by_id(task_id).one(&db).await.unwrap().unwrap();
            let mut row: task::ActiveModel = row.into();
            row.status = Set(status);
            row.bot_id = Set(Some(bot_id));
            row.attempt = Set(1);
            row.update(&db).await.unwrap();
        }
    };
    hold(TaskStatus::Running).await;
    let refused = app.delete(&format!("/api/v1/bots/{bot_id}")).await;
    assert_error(&refused, 409, "bot_running_task", None);
    assert_eq!(app.get(&format!("/api/v1/bots/{bot_id}")).await.0, 200, "the bot is still there");

    // A task merely offered goes back to WAITING when its bot is deleted.
    hold(TaskStatus::Assigned).await;
    assert_eq!(app.delete(&format!("/api/v1/bots/{bot_id}")).await.0, 204);
    let (_, task) = app.get(&format!("/api/v1/tasks/{task_id}")).await;
    assert_eq!((&task["status"], &task["bot_id"]), (&json!("WAITING"), &Value::Null));
    let (_, events) = app.get(&format!("/api/v1/tasks/{task_id}/events")).await;
    let kinds: Vec<&str> =
        events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "offer_withdrawn"]);
}

async fn probes_and_openapi(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.get("/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(
        app.get("/readyz").await,
        (200, json!({"status": "ready", "database": "ok", "broker": "ok"}))
    );
    let (status, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/bots",
        "/api/v1/bots/{id}",
        "/api/v1/tasks",
        "/api/v1/tasks/{id}",
        "/api/v1/tasks/{id}/attachment",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    assert!(
        doc["paths"]["/api/v1/tasks"]["post"]["requestBody"]["content"]["multipart/form-data"]
            .is_object()
    );
    assert!(doc["components"]["schemas"]["Task"]["properties"]["status"].is_object());
    assert_error(&app.get("/api/v1/nothing-here").await, 404, "not_found", None);
    assert_error(
        &app.send(reqwest::Method::PATCH, "/api/v1/bots", &json!({})).await,
        405,
        "method_not_allowed",
        None,
    );
}

on_every_backend!(
    bot_crud_round_trip,
    bot_list_filters_and_pages,
    bad_bot_input_changes_nothing,
    a_bot_running_a_task_cannot_be_deleted,
    probes_and_openapi,
);
