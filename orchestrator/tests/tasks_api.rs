//! The tasks API against a real server and a real database (SQLite and PostgreSQL).
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use broker_config::TaskStatus;
use common::{Backend, ErrorCase, TestApp, assert_error};
use orchestrator::entity::{task, task_event};
use orchestrator::store::history::History;
use orchestrator::tasks::EventKind;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    Set, TransactionTrait as _,
};
use serde_json::{Value, json};

const USERS: &str = "name,email,login,profile\nAna Souza,ana@example.com,ana.souza,agent\nBruno Lima,bruno@example.com,bruno.lima,supervisor\n";

fn vivo_task(description: &str) -> Value {
    json!({"description": description, "system": "VIVO360", "attachment": BASE64.encode(USERS)})
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, created) = app.post("/api/v1/tasks", &body).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// Moves a task to `status` directly, as the pipeline would.
async fn force_status(app: &TestApp, id: &str, status: TaskStatus) {
    let row = task::Entity::find_by_id(id.parse::<uuid::Uuid>().unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut row: task::ActiveModel = row.into();
    row.status = Set(status);
    row.update(&app.db).await.unwrap();
}

async fn task_crud_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = create(&app, vivo_task("March hires")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "WAITING");
    assert_eq!(created["has_attachment"], true);
    assert_eq!(created["progress"], json!({"done": 0, "total": 2}));
    assert_eq!(
        (&created["attempt"], &created["max_attempts"], &created["priority"]),
        (&json!(0), &json!(3), &json!(0))
    );
    assert!(created.get("attachment").is_none(), "the CSV is served on its own route");

    assert_eq!(app.get(&format!("/api/v1/tasks/{id}")).await, (200, created.clone()));
    let csv =
        app.client.get(app.url(&format!("/api/v1/tasks/{id}/attachment"))).send().await.unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(csv.text().await.unwrap(), USERS);

    let three = format!("{USERS}Carla Dias,carla@example.com,carla.dias,agent\n");
    let (status, replaced) = app
        .put(
            &format!("/api/v1/tasks/{id}"),
            &json!({"description": "March hires, v2", "system": "VIVO360",
            "attachment": BASE64.encode(&three), "priority": 5, "max_attempts": 4}),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(
        (&replaced["description"], &replaced["priority"], &replaced["max_attempts"]),
        (&json!("March hires, v2"), &json!(5), &json!(4))
    );
    assert_eq!(replaced["progress"]["total"], 3);

    let (status, patched) =
        app.patch(&format!("/api/v1/tasks/{id}"), &json!({"priority": -1})).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (&patched["priority"], &patched["description"]),
        (&json!(-1), &json!("March hires, v2"))
    );
    let csv =
        app.client.get(app.url(&format!("/api/v1/tasks/{id}/attachment"))).send().await.unwrap();
    assert_eq!(csv.text().await.unwrap(), three, "a patch keeps the attachment");

    let (_, events) = app.get(&format!("/api/v1/tasks/{id}/events")).await;
    let kinds: Vec<&str> =
        events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "updated", "updated"]);
    assert_eq!(
        events[1]["detail"]["fields"],
        json!(["description", "attachment", "priority", "max_attempts"])
    );

    assert_eq!(app.delete(&format!("/api/v1/tasks/{id}")).await.0, 204);
    assert_error(&app.get(&format!("/api/v1/tasks/{id}")).await, 404, "not_found", None);
    assert_error(&app.get(&format!("/api/v1/tasks/{id}/events")).await, 404, "not_found", None);

    let noop = create(
        &app,
        json!({"description": "nap", "system": "NOOP", "payload": {"duration_ms": 10}}),
    )
    .await;
    assert_eq!(
        (&noop["has_attachment"], &noop["payload"]),
        (&json!(false), &json!({"duration_ms": 10}))
    );
    let noop_id = noop["id"].as_str().unwrap();
    assert_error(
        &app.get(&format!("/api/v1/tasks/{noop_id}/attachment")).await,
        404,
        "not_found",
        None,
    );
}

async fn csv_upload_as_multipart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let form = reqwest::multipart::Form::new()
        .text("description", "uploaded")
        .text("system", "vivo360")
        .text("priority", "2")
        .part(
            "attachment",
            reqwest::multipart::Part::bytes(USERS.as_bytes().to_vec())
                .file_name("users.csv")
                .mime_str("text/csv")
                .unwrap(),
        );
    let response = app.client.post(app.url("/api/v1/tasks")).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        (&created["system"], &created["priority"], &created["progress"]["total"]),
        (&json!("VIVO360"), &json!(2), &json!(2))
    );
    let id = created["id"].as_str().unwrap();
    let csv =
        app.client.get(app.url(&format!("/api/v1/tasks/{id}/attachment"))).send().await.unwrap();
    assert_eq!(csv.text().await.unwrap(), USERS, "the server stored exactly the uploaded file");

    let bad_columns = reqwest::multipart::Form::new()
        .text("description", "uploaded")
        .text("system", "VIVO360")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"name,mail\nAna,a@b.c\n".to_vec()).file_name("x.csv"),
        );
    let response =
        app.client.post(app.url("/api/v1/tasks")).multipart(bad_columns).send().await.unwrap();
    let status = response.status().as_u16();
    assert_error(
        &(status, response.json().await.unwrap()),
        422,
        "invalid_field",
        Some("attachment"),
    );
    let unknown_part = reqwest::multipart::Form::new()
        .text("description", "x")
        .text("system", "NOOP")
        .text("colour", "red");
    let response =
        app.client.post(app.url("/api/v1/tasks")).multipart(unknown_part).send().await.unwrap();
    let status = response.status().as_u16();
    assert_error(&(status, response.json().await.unwrap()), 422, "invalid_field", Some("colour"));
    assert_eq!(app.total("/api/v1/tasks").await, 1);
}

async fn bad_task_input_changes_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.max_attachment_bytes = 1024).await;
    let existing = create(&app, vivo_task("keep me")).await;
    let id = existing["id"].as_str().unwrap().to_owned();
    let path = "/api/v1/tasks";
    let big = format!("{USERS}{}", "Zé,z@example.com,z,agent\n".repeat(60));
    let cases: Vec<ErrorCase> = vec![
        (app.post(path, &json!({"description": "x", "system": "FAX"})).await, 422, "invalid_field", Some("system")),
        (app.post(path, &json!({"description": "x", "system": "VIVO360", "attachment": "%%% not base64"})).await, 422, "invalid_field", Some("attachment")),
        (app.post(path, &json!({"description": "x", "system": "VIVO360", "attachment": BASE64.encode([0xff, 0xfe, 0x00])})).await, 422, "invalid_field", Some("attachment")),
        (app.post(path, &json!({"description": "x", "system": "VIVO360", "attachment": BASE64.encode("name,mail\nAna,a@b.c\n")})).await, 422, "invalid_field", Some("attachment")),
        (app.post(path, &json!({"description": "x", "system": "VIVO360", "attachment": BASE64.encode("name,email,login,profile\nAna,a@b.c\n")})).await, 422, "invalid_field", Some("attachment")),
        (app.post(path, &json!({"description": "x", "system": "VIVO360"})).await, 422, "invalid_field", Some("attachment")),
        (app.post(path, &json!({"description": "x", "system": "VIVO360", "attachment": BASE64.encode(&big)})).await, 413, "too_large", Some("attachment")),
        (app.post_raw(path, "application/json", vec![b'{'; 70_000]).await, 413, "too_large", None),
        (app.post(path, &json!({"description": "", "system": "NOOP"})).await, 422, "invalid_field", Some("description")),
        (app.post(path, &json!({"description": "x", "system": "NOOP", "payload": [1, 2]})).await, 422, "invalid_field", Some("payload")),
        (app.post(path, &json!({"description": "x", "system": "NOOP", "max_attempts": 0})).await, 422, "invalid_field", Some("max_attempts")),
        (app.post(path, &json!({"description": "x", "system": "NOOP", "status": "RUNNING"})).await, 422, "invalid_field", Some("status")),
        (app.post(path, &json!({"description": "x", "system": "NOOP", "status": "DONE"})).await, 422, "invalid_field", Some("status")),
        (app.post(path, &json!({"description": "x", "system": "NOOP", "colour": "red"})).await, 422, "invalid_field", Some("colour")),
        (app.post_raw(path, "application/json", b"{\"description\": ".to_vec()).await, 400, "malformed_body", None),
        (app.post_raw(path, "text/csv", USERS.as_bytes().to_vec()).await, 415, "unsupported_media_type", None),
        (app.patch(&format!("{path}/{id}"), &json!({"system": "FAX"})).await, 422, "invalid_field", Some("system")),
        (app.patch(&format!("{path}/{id}"), &json!({"attachment": BASE64.encode("a,b\n1,2\n")})).await, 422, "invalid_field", Some("attachment")),
        (app.patch(&format!("{path}/{id}"), &json!({"status": "COMPLETE"})).await, 409, "task_not_held", Some("status")),
        (app.put(&format!("{path}/{id}"), &json!({"description": "x", "system": "VIVO360", "attachment": BASE64.encode("a,b\n1,2\n")})).await, 422, "invalid_field", Some("attachment")),
        (app.put(&format!("{path}/{id}"), &json!({"id": "01234567-89ab-7def-8123-456789abcdef", "description": "y"})).await, 422, "invalid_field", Some("id")),
        (app.put(&format!("{path}/{id}"), &json!({"created_at": "2020-01-01T00:00:00Z"})).await, 422, "invalid_field", Some("created_at")),
        (app.get(&format!("{path}?status=DONE")).await, 400, "invalid_parameter", Some("status")),
        (app.get(&format!("{path}?system=f@x")).await, 400, "invalid_parameter", Some("system")),
        (app.get(&format!("{path}?bot_id=42")).await, 400, "invalid_parameter", Some("bot_id")),
    ];
    for (response, status, code, field) in &cases {
        assert_error(response, *status, code, *field);
    }
    assert_eq!(app.total(path).await, 1, "no bad request created a task");
    assert_eq!(
        app.get(&format!("{path}/{id}")).await,
        (200, existing),
        "no bad request changed the task"
    );
    let (_, events) = app.get(&format!("{path}/{id}/events")).await;
    assert_eq!(events.as_array().unwrap().len(), 1, "no bad request left history: {events}");
}

async fn bulk_create_keeps_the_order_and_is_all_or_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.max_attachment_bytes = 1024).await;
    let path = "/api/v1/tasks/bulk";
    let noop = |n: usize| json!({"description": format!("noop {n}"), "system": "NOOP"});
    let (status, created) =
        app.post(path, &json!({"tasks": [noop(0), vivo_task("hires"), noop(2)]})).await;
    assert_eq!(status, 201, "{created}");
    let created = created["tasks"].as_array().unwrap().clone();
    let descriptions: Vec<&str> =
        created.iter().map(|t| t["description"].as_str().unwrap()).collect();
    assert_eq!(descriptions, ["noop 0", "hires", "noop 2"]);
    assert_eq!(created[1]["progress"], json!({"done": 0, "total": 2}));
    for task in &created {
        let id = task["id"].as_str().unwrap();
        assert_eq!(app.get(&format!("/api/v1/tasks/{id}")).await, (200, task.clone()));
        let (_, events) = app.get(&format!("/api/v1/tasks/{id}/events")).await;
        let kinds: Vec<&str> =
            events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["created"], "{events}");
    }
    let (_, oldest) = app.get("/api/v1/tasks?order=oldest").await;
    let listed: Vec<&Value> =
        oldest["items"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
    let given: Vec<&Value> = created.iter().map(|t| &t["id"]).collect();
    assert_eq!(listed, given, "the order given is the order kept");

    let minimal = json!({"description": "x", "system": "NOOP"});
    let big = format!("{USERS}{}", "Zé,z@example.com,z,agent\n".repeat(60));
    let cases: Vec<ErrorCase> = vec![
        (app.post(path, &json!({"tasks": []})).await, 422, "invalid_field", Some("tasks")),
        (app.post(path, &json!({"tasks": vec![minimal.clone(); 1001]})).await, 422, "invalid_field", Some("tasks")),
        (app.post(path, &json!({"tasks": [noop(0), {"description": "x", "system": "CPE"}]})).await, 422, "invalid_field", Some("tasks[1].payload")),
        (app.post(path, &json!({"tasks": [noop(0), {"description": "x", "system": "NOOP", "status": "RUNNING"}]})).await, 422, "invalid_field", Some("tasks[1].status")),
        (app.post(path, &json!({"tasks": [noop(0), {"description": "x", "system": "FAX"}]})).await, 422, "invalid_field", Some("tasks[1].system")),
        (app.post(path, &json!({"tasks": [{"description": " ", "system": "NOOP"}]})).await, 422, "invalid_field", Some("tasks[0].description")),
        (app.post(path, &json!({"tasks": [{"description": "x", "system": "VIVO360", "attachment": BASE64.encode(&big)}]})).await, 413, "too_large", Some("tasks[0].attachment")),
        (app.post(path, &json!({"task": [noop(0)]})).await, 422, "invalid_field", Some("task")),
        (app.post(path, &json!([noop(0)])).await, 422, "invalid_field", None),
        (app.post_raw(path, "application/json", b"{\"tasks\": [".to_vec()).await, 400, "malformed_body", None),
        (app.post_raw(path, "text/csv", USERS.as_bytes().to_vec()).await, 415, "unsupported_media_type", None),
    ];
    for (response, status, code, field) in &cases {
        assert_error(response, *status, code, *field);
    }
    let (_, list) = app.post(path, &json!([noop(0)])).await;
    assert!(list["error"]["message"].as_str().unwrap().contains("not a list"), "{list}");
    assert_eq!(app.total("/api/v1/tasks").await, 3, "no bad request created a task");
}

/// A transaction's history goes in as few statements as it can (a thousand entries each):
/// every entry arrives, in the order pushed, and nothing before the write.
async fn history_written_together_keeps_every_entry_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id: uuid::Uuid = create(&app, json!({"description": "x", "system": "NOOP"})).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let txn = app.db.begin().await.unwrap();
    let mut history = History::default();
    let now = orchestrator::clock::now();
    for attempt in 0..2345 {
        history.push(id, None, attempt, EventKind::Progress, Some(json!({"n": attempt})), now);
    }
    history.write(&txn).await.unwrap();
    history.write(&txn).await.unwrap(); // Written once: the second write has nothing left.
    txn.commit().await.unwrap();
    let rows = task_event::Entity::find()
        .filter(task_event::Column::TaskId.eq(id))
        .filter(task_event::Column::Kind.eq("progress"))
        .order_by_asc(task_event::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    let attempts: Vec<i32> = rows.iter().filter_map(|r| r.attempt).collect();
    assert_eq!(attempts, (0..2345).collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r.detail == Some(json!({"n": r.attempt}))));
}

async fn task_list_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = if i % 2 == 0 {
            vivo_task(&format!("t{i}"))
        } else {
            json!({"description": format!("t{i}"), "system": "NOOP"})
        };
        ids.push(create(&app, body).await["id"].as_str().unwrap().to_owned());
    }
    let listed = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed(&app.get("/api/v1/tasks").await.1), newest_first);
    assert_eq!(listed(&app.get("/api/v1/tasks?order=oldest").await.1), ids);

    // Walking with a cursor visits every task once, in order, even with a task added meanwhile.
    let mut walked = Vec::new();
    let mut next = app.get("/api/v1/tasks?limit=2").await.1;
    walked.extend(listed(&next));
    create(&app, vivo_task("added while paging")).await;
    while let Some(cursor) = next["next_cursor"].as_str().map(str::to_owned) {
        next = app.get(&format!("/api/v1/tasks?limit=2&cursor={cursor}")).await.1;
        walked.extend(listed(&next));
    }
    assert_eq!(walked, newest_first);

    assert_eq!(app.total("/api/v1/tasks?system=NOOP").await, 2);
    assert_eq!(app.total("/api/v1/tasks?system=vivo360,noop").await, 6);
    force_status(&app, &ids[1], TaskStatus::Running).await;
    force_status(&app, &ids[2], TaskStatus::Complete).await;
    assert_eq!(
        listed(&app.get("/api/v1/tasks?status=RUNNING,COMPLETE&order=oldest").await.1),
        [ids[1].clone(), ids[2].clone()]
    );
    assert_eq!(
        listed(&app.get("/api/v1/tasks?offset=4&limit=1&order=oldest").await.1),
        [ids[4].clone()]
    );
    let bot = app
        .post("/api/v1/bots", &json!({"name": "b1", "ip_address": "10.0.0.1", "systems": ["NOOP"], "delivery": "amqp"}))
        .await
        .1;
    let bot_id = bot["id"].as_str().unwrap();
    let row = task::Entity::find_by_id(ids[3].parse::<uuid::Uuid>().unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut row: task::ActiveModel = row.into();
    row.bot_id = Set(Some(bot_id.parse().unwrap()));
    row.update(&app.db).await.unwrap();
    assert_eq!(
        listed(&app.get(&format!("/api/v1/tasks?bot_id={bot_id}")).await.1),
        [ids[3].clone()]
    );
}

async fn cancel_retry_and_held_tasks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = create(&app, vivo_task("lifecycle")).await["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/tasks/{id}");

    let (status, cancelled) = app.patch(&path, &json!({"status": "CANCELLED"})).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("CANCELLED")));
    assert!(cancelled["finished_at"].is_string());
    let (status, retried) = app.patch(&path, &json!({"status": "WAITING"})).await;
    assert_eq!(
        (status, &retried["status"], &retried["finished_at"]),
        (200, &json!("WAITING"), &Value::Null)
    );

    force_status(&app, &id, TaskStatus::Running).await;
    let before = app.get(&path).await.1;
    assert_error(
        &app.patch(&path, &json!({"description": "edited while running"})).await,
        409,
        "task_not_editable",
        Some("description"),
    );
    assert_error(&app.delete(&path).await, 409, "task_held", Some("status"));
    assert_eq!(app.get(&path).await.1, before, "refused edits change nothing");
    // Asking for what it already is, with its own content, is not an edit.
    let (status, _) = app.patch(&path, &json!({"status": "RUNNING", "priority": 0})).await;
    assert_eq!(status, 200);

    force_status(&app, &id, TaskStatus::Complete).await;
    assert_error(
        &app.patch(&path, &json!({"status": "CANCELLED"})).await,
        409,
        "invalid_transition",
        Some("status"),
    );
    assert_error(
        &app.patch(&path, &json!({"status": "WAITING"})).await,
        409,
        "invalid_transition",
        Some("status"),
    );

    let (_, events) = app.get(&format!("{path}/events")).await;
    let kinds: Vec<&str> =
        events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "cancelled", "retried"]);
}

on_every_backend!(
    task_crud_round_trip,
    csv_upload_as_multipart,
    bad_task_input_changes_nothing,
    bulk_create_keeps_the_order_and_is_all_or_nothing,
    history_written_together_keeps_every_entry_in_order,
    task_list_filters_and_pages,
    cancel_retry_and_held_tasks,
);
