//! Systems as data against a real server and a real database (SQLite and PostgreSQL): the
//! built-ins as the migration registers them, registering, changing and deleting a system, and
//! tasks checked against their system's contract and given its defaults.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Backend, TestApp, assert_error};
use serde_json::{Value, json};

fn payroll() -> Value {
    json!({
        "name": "payroll",
        "description": "Payroll entries, one per row",
        "input": {"kind": "csv", "columns": ["Employee", "amount"]},
        "defaults": {"max_attempts": 7, "offer_timeout_seconds": 42, "priority": 5}
    })
}

async fn the_builtins_are_registered_and_editable_not_deletable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, list) = app.get("/api/v1/systems").await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> =
        list["systems"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["CPE", "NOOP", "NOTIFY", "VIVO360"]);
    let (_, vivo) = app.get("/api/v1/systems/vivo360").await;
    assert_eq!(
        vivo["input"],
        json!({"kind": "csv", "columns": ["name", "email", "login", "profile"]})
    );
    assert_eq!(vivo["builtin"], true);
    let (_, cpe) = app.get("/api/v1/systems/CPE").await;
    assert_eq!(cpe["input"]["kind"], "json");

    // Editable like any other: NOOP tasks get a priority of 9 from now on.
    let (status, noop) =
        app.patch("/api/v1/systems/noop", &json!({"defaults": {"priority": 9}})).await;
    assert_eq!(status, 200, "{noop}");
    let (status, task) =
        app.post("/api/v1/tasks", &json!({"description": "d", "system": "noop"})).await;
    assert_eq!((status, &task["priority"]), (201, &json!(9)), "{task}");
    assert_error(&app.delete("/api/v1/systems/NOOP").await, 409, "system_builtin", None);
}

async fn a_registered_system_checks_its_tasks_and_gives_its_defaults(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unknown =
        app.post("/api/v1/tasks", &json!({"description": "d", "system": "payroll"})).await;
    assert_error(&unknown, 422, "invalid_field", Some("system"));
    let message = unknown.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("registered: CPE, NOOP, NOTIFY, VIVO360"), "{message}");

    let (status, created) = app.post("/api/v1/systems", &payroll()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "PAYROLL");
    assert_eq!(created["input"]["columns"], json!(["employee", "amount"]));
    assert_eq!(created["builtin"], false);
    assert_error(&app.post("/api/v1/systems", &payroll()).await, 409, "name_taken", Some("name"));

    let csv = |text: &str| BASE64.encode(text);
    let lacking = app
        .post(
            "/api/v1/tasks",
            &json!({"description": "d", "system": "Payroll", "attachment": csv("employee\nana\n")}),
        )
        .await;
    assert_error(&lacking, 422, "invalid_field", Some("attachment"));
    assert!(lacking.1["error"]["message"].as_str().unwrap().contains("amount"), "{}", lacking.1);
    let no_csv = app.post("/api/v1/tasks", &json!({"description": "d", "system": "PAYROLL"})).await;
    assert_error(&no_csv, 422, "invalid_field", Some("attachment"));

    let (status, task) = app
        .post(
            "/api/v1/tasks",
            &json!({"description": "d", "system": "payroll", "attachment": csv("AMOUNT,employee\n10,ana\n20,bia\n")}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["system"], "PAYROLL");
    assert_eq!(
        (&task["max_attempts"], &task["priority"]),
        (&json!(7), &json!(5)),
        "the system's defaults"
    );
    assert_eq!(task["progress"]["total"], 2);
    // A task's own values win over the system's.
    let (_, own) = app
        .post(
            "/api/v1/tasks",
            &json!({"description": "d", "system": "payroll", "attachment": csv("amount,employee\n1,a\n"), "max_attempts": 2, "priority": 0}),
        )
        .await;
    assert_eq!((&own["max_attempts"], &own["priority"]), (&json!(2), &json!(0)));
    let stored = orchestrator::store::tasks::find_task(
        &app.db,
        task["id"].as_str().unwrap().parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(stored.offer_timeout_seconds, Some(42));

    // A system with unfinished tasks stays; once they are cancelled it may go.
    assert_error(&app.delete("/api/v1/systems/payroll").await, 409, "system_has_tasks", None);
    for id in [&task["id"], &own["id"]] {
        let (status, _) =
            app.post(&format!("/api/v1/tasks/{}/cancel", id.as_str().unwrap()), &json!({})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.delete("/api/v1/systems/payroll").await.0, 204);
    assert_eq!(app.get("/api/v1/systems/PAYROLL").await.0, 404);
    let (_, cancelled) = app.get(&format!("/api/v1/tasks/{}", task["id"].as_str().unwrap())).await;
    assert_eq!(cancelled["system"], "PAYROLL", "finished tasks keep their system's name");
}

async fn a_json_schema_contract_names_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let schema = json!({
        "type": "object",
        "required": ["ticket", "lines"],
        "properties": {
            "ticket": {"type": "string", "pattern": "^T-[0-9]+$"},
            "lines": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer"}}}}
        }
    });
    let (status, _) = app
        .post(
            "/api/v1/systems",
            &json!({"name": "tickets", "input": {"kind": "json", "schema": schema}}),
        )
        .await;
    assert_eq!(status, 201);
    let task =
        |payload: Value| json!({"description": "d", "system": "tickets", "payload": payload});
    let wrong =
        app.post("/api/v1/tasks", &task(json!({"ticket": "T-1", "lines": [{"qty": "two"}]}))).await;
    assert_error(&wrong, 422, "invalid_field", Some("payload.lines[0].qty"));
    let missing =
        app.post("/api/v1/tasks", &json!({"description": "d", "system": "tickets"})).await;
    assert_error(&missing, 422, "invalid_field", Some("payload"));
    assert!(
        missing.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"ticket\" is a required property")
    );
    let (status, _) =
        app.post("/api/v1/tasks", &task(json!({"ticket": "T-9", "lines": [{"qty": 2}]}))).await;
    assert_eq!(status, 201);

    // A bad contract changes nothing.
    let bad = app
        .put(
            "/api/v1/systems/tickets",
            &json!({"input": {"kind": "json", "schema": {"type": "nope"}}}),
        )
        .await;
    assert_error(&bad, 422, "invalid_field", Some("input.schema"));
    let remote = app
        .put(
            "/api/v1/systems/tickets",
            &json!({"input": {"kind": "json", "schema": {"$ref": "http://127.0.0.1:9/x.json"}}}),
        )
        .await;
    assert_error(&remote, 422, "invalid_field", Some("input.schema"));
    let (_, kept) = app.get("/api/v1/systems/tickets").await;
    assert_eq!(kept["input"]["schema"], schema);
    let rename = app.put("/api/v1/systems/tickets", &json!({"name": "other"})).await;
    assert_error(&rename, 422, "invalid_field", Some("name"));
}

async fn bad_system_requests_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (body, field) in [
        (json!({"name": "a b"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "input": {"kind": "xml"}}), "input.kind"),
        (json!({"name": "x", "input": {"kind": "csv", "columns": []}}), "input.columns"),
        (json!({"name": "x", "defaults": {"max_attempts": 0}}), "defaults.max_attempts"),
        (json!({"name": "x", "colour": "red"}), "colour"),
    ] {
        let refused = app.post("/api/v1/systems", &body).await;
        assert_eq!(refused.0, 422, "{body}: {}", refused.1);
        assert_eq!(refused.1["error"]["field"], field, "{body}: {}", refused.1);
    }
    assert_eq!(
        app.get("/api/v1/systems").await.1["systems"].as_array().unwrap().len(),
        4,
        "nothing half-made"
    );
    assert_error(&app.get("/api/v1/systems/a%20b").await, 400, "invalid_parameter", Some("name"));
    assert_error(&app.get("/api/v1/systems/SAP").await, 404, "not_found", None);
}

on_every_backend!(
    the_builtins_are_registered_and_editable_not_deletable,
    a_registered_system_checks_its_tasks_and_gives_its_defaults,
    a_json_schema_contract_names_the_field,
    bad_system_requests_are_refused,
);
