//! Incidents through the real API, database and broker: the classic scenario step by step (the
//! timer's clock injected), unclassified reports, both input shapes, reports from the broker,
//! bad input that counts nothing, exact counting under concurrency, resolution, actions' CRUD
//! and validation, and pipeline failures fed to the engine.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use broker_config::Topology;
use broker_config::amqp::Publisher;
use broker_config::topology::MONITORING_EXCHANGE;
use chrono::{DateTime, Utc};
use common::{Backend, TestApp, assert_error};
use orchestrator::entity::task;
use orchestrator::incidents::{CheckSummary, Source};
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, Set};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Polls until the condition holds (15 s at most): the broker is asynchronous by nature.
macro_rules! wait_until {
    ($what:expr, $condition:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !$condition {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// An orchestrator whose own timer stays out of the way (the tests call the check with their
/// clock) and whose incidents never go quiet unless a test says so.
async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        config.incident_check_interval = Duration::from_secs(3600);
        config.incident_quiet_period = Duration::from_secs(4 * 3600);
    })
    .await
}

fn classic_action() -> Value {
    json!({
        "name": "Login unavailable",
        "code": "LOGIN_UNAVAILABLE",
        "triggers": [{"service": "login", "status": "503"}, {"servico": "login", "retorno": "404"}],
        "customers_group": "All app users",
        "external": {
            "min_occurrences": 5,
            "channel": "Push",
            "message": "Our app is unavailable, we will let you know when it is back"
        },
        "levels": [
            {"volume": 10, "minutes": 5, "who": "Analyst N1"},
            {"volume": 50, "minutes": 20, "who": "Analyst N2"},
            {"minutes": 60, "who": "Coordination"}
        ]
    })
}

async fn create_action(app: &TestApp, body: &Value) -> Value {
    let (status, action) = app.post("/api/v1/actions", body).await;
    assert_eq!(status, 201, "{action}");
    action
}

async fn report(app: &TestApp, service: &str, code: &str) -> Value {
    let body = json!({"triggers": [{"service": service, "status": code}]});
    let (status, answer) = app.post("/api/v1/incidents/triggers", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["results"][0].clone()
}

/// `(kind, recipient)` of each communication sent.
fn sent(communications: &Value) -> Vec<(String, String)> {
    communications
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap().into(), c["recipient"].as_str().unwrap().into()))
        .collect()
}

fn pair(kind: &str, recipient: &str) -> (String, String) {
    (kind.to_owned(), recipient.to_owned())
}

async fn incident(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

async fn classic_scenario_step_by_step(backend: Backend) {
    let app = spawn(backend).await;
    let action = create_action(&app, &classic_action()).await;
    assert_eq!(
        action["triggers"],
        json!([{"service": "login", "status": "404"}, {"service": "login", "status": "503"}])
    );

    let first = report(&app, "login", "503").await;
    assert_eq!(first["result"], "opened", "{first}");
    assert_eq!(first["action"]["code"], "LOGIN_UNAVAILABLE");
    let id = first["incident_id"].as_str().unwrap().to_owned();
    for n in 2..=4 {
        let answer = report(&app, "login", if n % 2 == 0 { "404" } else { "503" }).await;
        assert_eq!(
            (answer["result"].as_str(), answer["occurrences"].as_u64()),
            (Some("counted"), Some(n))
        );
        assert_eq!(answer["communications"], json!([]), "report {n} sends nothing");
    }
    let fifth = report(&app, "login", "503").await;
    assert_eq!(sent(&fifth["communications"]), [pair("external", "All app users")], "5th: push");
    assert_eq!(fifth["communications"][0]["channel"], "Push");
    for n in 6..=9 {
        let answer = report(&app, "login", "503").await;
        assert_eq!(answer["communications"], json!([]), "report {n}: the push went once");
    }
    let tenth = report(&app, "login", "503").await;
    assert_eq!(sent(&tenth["communications"]), [pair("internal", "Analyst N1")], "10th: N1");
    assert_eq!(tenth["communications"][0]["channel"], "internal");

    // No more reports: the clock moves, the check runs.
    let opened_at = time(&incident(&app, &id).await["opened_at"]);
    let minutes = |m: i64| opened_at + chrono::Duration::minutes(m);
    let incidents = &app.pipeline.incidents;
    assert_eq!(incidents.check_incidents(minutes(19)).await.unwrap(), CheckSummary::default());
    let n2 = incidents.check_incidents(minutes(21)).await.unwrap();
    assert_eq!(n2, CheckSummary { communications: 1, resolved: 0 }, "20 minutes: N2");
    assert_eq!(incidents.check_incidents(minutes(22)).await.unwrap(), CheckSummary::default());
    let coordination = incidents.check_incidents(minutes(61)).await.unwrap();
    assert_eq!(coordination.communications, 1, "60 minutes: Coordination");
    assert_eq!(incidents.check_incidents(minutes(90)).await.unwrap(), CheckSummary::default());

    let detail = incident(&app, &id).await;
    assert_eq!(detail["status"], "OPEN");
    assert_eq!(detail["occurrences"], 10);
    assert_eq!(detail["levels_notified"], json!([0, 1, 2]));
    assert!(detail["external_sent_at"].is_string());
    assert_eq!(
        sent(&detail["communications"]),
        [
            pair("external", "All app users"),
            pair("internal", "Analyst N1"),
            pair("internal", "Analyst N2"),
            pair("internal", "Coordination"),
        ]
    );
    // Each communication is a NOTIFY task carrying what the bot delivers.
    for communication in detail["communications"].as_array().unwrap() {
        let (status, task) =
            app.get(&format!("/api/v1/tasks/{}", communication["task_id"].as_str().unwrap())).await;
        assert_eq!(status, 200);
        assert_eq!(task["system"], "NOTIFY");
        assert_eq!(task["payload"]["communication_id"], communication["id"]);
        assert_eq!(task["payload"]["incident_id"], json!(id));
        assert_eq!(task["payload"]["to"], communication["recipient"]);
        assert_eq!(task["payload"]["message"], communication["message"]);
    }
    assert_eq!(app.total("/api/v1/tasks?system=NOTIFY").await, 4);

    // Resolved on request: customers, who were told, hear it is back; once.
    let (status, resolved) = app.post(&format!("/api/v1/incidents/{id}/resolve"), &json!({})).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "RESOLVED");
    // (Listed by time sent: the checks above ran on a clock an hour ahead of this one.)
    let restored: Vec<&Value> = resolved["communications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "restored")
        .collect();
    assert_eq!(restored.len(), 1, "{resolved}");
    assert_eq!(restored[0]["channel"], "Push");
    assert_eq!(restored[0]["recipient"], "All app users");
    let again = app.post(&format!("/api/v1/incidents/{id}/resolve"), &json!({})).await;
    assert_error(&again, 409, "incident_resolved", Some("status"));
    assert_eq!(app.total("/api/v1/tasks?system=NOTIFY").await, 5);
    assert_eq!(app.total("/api/v1/incidents?status=OPEN").await, 0);

    // The next report opens a new incident.
    let next = report(&app, "login", "404").await;
    assert_eq!(next["result"], "opened");
    assert_ne!(next["incident_id"], json!(id));
    assert_eq!(app.total("/api/v1/incidents").await, 2);
}

async fn quiet_incidents_resolve_by_themselves(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.incident_check_interval = Duration::from_secs(3600);
        config.incident_quiet_period = Duration::from_secs(30 * 60);
    })
    .await;
    create_action(&app, &classic_action()).await;
    let mut id = String::new();
    for _ in 0..5 {
        id = report(&app, "login", "503").await["incident_id"].as_str().unwrap().to_owned();
    }
    let last = time(&incident(&app, &id).await["last_occurrence_at"]);
    let incidents = &app.pipeline.incidents;
    // At 29 minutes without a report: still OPEN; N1 (5 minutes) and N2 (20) are due.
    let early = incidents.check_incidents(last + chrono::Duration::minutes(29)).await.unwrap();
    assert_eq!(early, CheckSummary { communications: 2, resolved: 0 });
    // Checked late (at 2 hours): it went quiet at 30 minutes, so Coordination (60) is not due;
    // it is resolved and customers hear the service is back.
    let late = incidents.check_incidents(last + chrono::Duration::minutes(120)).await.unwrap();
    assert_eq!(late, CheckSummary { communications: 1, resolved: 1 });
    let detail = incident(&app, &id).await;
    assert_eq!(detail["status"], "RESOLVED");
    assert_eq!(
        sent(&detail["communications"]),
        [
            pair("external", "All app users"),
            pair("internal", "Analyst N1"),
            pair("internal", "Analyst N2"),
            pair("restored", "All app users"),
        ]
    );
    assert_eq!(
        incidents.check_incidents(last + chrono::Duration::minutes(500)).await.unwrap(),
        CheckSummary::default()
    );
}

async fn unclassified_reports_ask_for_an_action(backend: Backend) {
    let app = spawn(backend).await;
    create_action(&app, &classic_action()).await;
    let answer = report(&app, "payments", "500").await;
    assert_eq!(answer["result"], "unclassified");
    assert!(answer["message"].as_str().unwrap().contains("register a new action"), "{answer}");
    assert!(answer["incident_id"].is_null());
    let (status, page) = app.get("/api/v1/incidents/unclassified").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["service"], "payments");
    assert_eq!(page["items"][0]["status"], "500");
    assert_eq!(page["items"][0]["source"], "api");
    assert_eq!(app.total("/api/v1/incidents").await, 0);
}

async fn both_input_shapes_count_alike(backend: Backend) {
    let app = spawn(backend).await;
    create_action(&app, &classic_action()).await;
    let original = json!({"gatilhos": [{"servico": "login", "retorno": "503"}, {"servico": "Login", "retorno": 404}]});
    let (status, answer) = app.post("/api/v1/incidents/triggers", &original).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    // One request, one occurrence (each pair used to count): the second report shares the
    // first one's outcome.
    assert_eq!(
        (results[0]["result"].as_str(), results[1]["result"].as_str()),
        (Some("opened"), Some("opened"))
    );
    assert_eq!(
        (&results[0]["counted_with"], &results[1]["counted_with"]),
        (&Value::Null, &json!(0))
    );
    assert_eq!((&results[0]["occurrences"], &results[1]["occurrences"]), (&json!(1), &json!(1)));
    assert_eq!(results[1]["service"], "login");
    assert_eq!(results[1]["status"], "404");
    let english = json!({"triggers": [{"service": "login", "status": "503"}, {"service": "search", "status": "503"}]});
    let (status, answer) = app.post("/api/v1/incidents/triggers", &english).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["occurrences"], 2);
    assert_eq!(answer["results"][1]["result"], "unclassified");
    assert_eq!(app.total("/api/v1/incidents").await, 1);
}

async fn bad_input_is_refused_and_counts_nothing(backend: Backend) {
    let app = spawn(backend).await;
    create_action(&app, &classic_action()).await;
    let path = "/api/v1/incidents/triggers";
    for body in [
        json!({"triggers": []}),
        json!({"gatilhos": []}),
        json!({}),
        json!([{"service": "login", "status": "503"}]),
        json!({"triggers": [{"service": "login", "status": "503"}, {"service": "login"}]}),
        json!({"gatilhos": [{"servico": "login", "retorno": "503"}, {"retorno": "503"}]}),
        json!({"triggers": [{"service": "login", "status": "503"}, {"service": " ", "status": "503"}]}),
        json!({"triggers": [{"service": "login", "status": "503"}, {"service": "login", "status": null}]}),
    ] {
        let response = app.post(path, &body).await;
        assert_error(&response, 400, "malformed_body", None);
    }
    let broken = app.post_raw(path, "application/json", b"{\"triggers\":[".to_vec()).await;
    assert_error(&broken, 400, "malformed_body", None);
    let text = app.post_raw(path, "text/plain", b"login 503".to_vec()).await;
    assert_error(&text, 415, "unsupported_media_type", None);
    assert_eq!(app.total("/api/v1/incidents").await, 0, "nothing was counted");
    assert_eq!(app.total("/api/v1/incidents/unclassified").await, 0);
}

async fn concurrent_reports_are_counted_exactly(backend: Backend) {
    let app = spawn(backend).await;
    create_action(&app, &classic_action()).await;
    let url = app.url("/api/v1/incidents/triggers");
    let posts = (0..100).map(|n| {
        let client = app.client.clone();
        let url = url.clone();
        let code = if n % 2 == 0 { "503" } else { "404" };
        tokio::spawn(async move {
            let body = json!({"triggers": [{"service": "login", "status": code}]});
            client.post(url).json(&body).send().await.unwrap().status().as_u16()
        })
    });
    for post in futures_util::future::join_all(posts).await {
        assert_eq!(post.unwrap(), 200);
    }
    let (status, page) = app.get("/api/v1/incidents").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 1, "one incident: {page}");
    assert_eq!(page["items"][0]["occurrences"], 100);
    let detail = incident(&app, page["items"][0]["id"].as_str().unwrap()).await;
    // Sorted: concurrent requests take their time before they take the lock, so the order of
    // sending is not the order of the times.
    let mut communications = sent(&detail["communications"]);
    communications.sort();
    assert_eq!(
        communications,
        [
            pair("external", "All app users"),
            pair("internal", "Analyst N1"),
            pair("internal", "Analyst N2"),
        ],
        "each communication once"
    );
    assert_eq!(app.total("/api/v1/tasks?system=NOTIFY").await, 3);
}

async fn reports_arrive_from_the_broker(backend: Backend) {
    let app = spawn(backend).await;
    create_action(&app, &classic_action()).await;
    let shutdown = CancellationToken::new();
    let monitoring = Publisher::new(
        app.vhost.amqp_url(),
        "monitoring-platform",
        Topology::core(),
        Duration::from_secs(10),
        shutdown.clone(),
    );
    for body in [
        br#"{"servico":"login","retorno":"503"}"#.as_slice(),
        br#"{"service":"login","status":404}"#,
        br#"{"service":"checkout","status":"500"}"#,
        b"login is down",
        br#"{"servico":"login"}"#,
    ] {
        monitoring.publish(MONITORING_EXCHANGE, "login.down", body, true).await.unwrap();
    }
    wait_until!("two occurrences and one unclassified", {
        let (_, page) = app.get("/api/v1/incidents").await;
        page["items"][0]["occurrences"] == 2
            && app.total("/api/v1/incidents/unclassified").await == 1
    });
    let (_, page) = app.get("/api/v1/incidents/unclassified").await;
    assert_eq!(page["items"][0]["source"], "broker");
    let reasons = app.dead_letter_reasons(2).await;
    assert!(reasons[0].contains("expected"), "{reasons:?}");
    assert!(reasons[1].contains("report.status"), "{reasons:?}");
    shutdown.cancel();
}

async fn actions_are_validated_and_managed(backend: Backend) {
    let app = spawn(backend).await;
    // The original gave N2 a volume of 5, below N1's 10: refused.
    let mut original = classic_action();
    original["levels"][1]["volume"] = json!(5);
    let refused = app.post("/api/v1/actions", &original).await;
    assert_error(&refused, 422, "invalid_field", Some("levels[1].volume"));
    let mut no_threshold = classic_action();
    no_threshold["levels"][2] = json!({"who": "Coordination"});
    assert_error(
        &app.post("/api/v1/actions", &no_threshold).await,
        422,
        "invalid_field",
        Some("levels[2]"),
    );
    let mut no_triggers = classic_action();
    no_triggers["triggers"] = json!([]);
    assert_error(
        &app.post("/api/v1/actions", &no_triggers).await,
        422,
        "invalid_field",
        Some("triggers"),
    );
    let mut bad_trigger = classic_action();
    bad_trigger["triggers"][1] = json!({"service": "login"});
    assert_error(
        &app.post("/api/v1/actions", &bad_trigger).await,
        422,
        "invalid_field",
        Some("triggers[1].status"),
    );
    let mut bad_channel = classic_action();
    bad_channel["external"]["channel"] = json!("push/../x");
    assert_error(
        &app.post("/api/v1/actions", &bad_channel).await,
        422,
        "invalid_field",
        Some("external.channel"),
    );
    assert_eq!(app.get("/api/v1/actions").await.1, json!([]), "nothing stored");

    let action = create_action(&app, &classic_action()).await;
    let id = action["id"].as_str().unwrap();
    let mut same_trigger = classic_action();
    same_trigger["name"] = json!("Another");
    same_trigger["code"] = json!("ANOTHER");
    same_trigger["triggers"] = json!([{"service": "LOGIN", "status": "503"}]);
    assert_error(
        &app.post("/api/v1/actions", &same_trigger).await,
        409,
        "trigger_taken",
        Some("triggers[0]"),
    );
    assert_error(
        &app.post("/api/v1/actions", &classic_action()).await,
        409,
        "action_taken",
        Some("name"),
    );

    let mut changed = classic_action();
    changed["triggers"] = json!([{"service": "login", "status": "500"}]);
    changed["external"] = Value::Null;
    let (status, replaced) = app.put(&format!("/api/v1/actions/{id}"), &changed).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["triggers"], json!([{"service": "login", "status": "500"}]));
    assert!(replaced["external"].is_null());
    assert_eq!(
        report(&app, "login", "503").await["result"],
        "unclassified",
        "503 is no longer its"
    );
    let opened = report(&app, "login", "500").await;
    assert_eq!(opened["result"], "opened");
    let (status, listed) = app.get("/api/v1/actions").await;
    assert_eq!((status, listed.as_array().unwrap().len()), (200, 1));

    assert_error(&app.delete(&format!("/api/v1/actions/{id}")).await, 409, "incident_open", None);
    let incident_id = opened["incident_id"].as_str().unwrap();
    let (status, resolved) =
        app.post(&format!("/api/v1/incidents/{incident_id}/resolve"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        resolved["communications"],
        json!([]),
        "no customers were told: no restored message"
    );
    let (status, _) = app.delete(&format!("/api/v1/actions/{id}")).await;
    assert_eq!(status, 204);
    assert_error(&app.get(&format!("/api/v1/actions/{id}")).await, 404, "not_found", None);
    assert_eq!(app.total("/api/v1/incidents").await, 0, "its incidents went with it");
    assert_error(&app.get("/api/v1/incidents/nope").await, 400, "invalid_parameter", Some("id"));
    assert_error(
        &app.get("/api/v1/incidents?status=CLOSED").await,
        400,
        "invalid_parameter",
        Some("status"),
    );
}

async fn failed_tasks_feed_incidents_but_notify_tasks_do_not(backend: Backend) {
    let app = spawn(backend).await;
    let action = json!({
        "name": "Bots failing", "code": "BOTS_FAILING", "customers_group": "nobody outside",
        "triggers": [{"service": "noop", "status": "FAILED"}, {"service": "notify", "status": "FAILED"}],
        "levels": [{"volume": 2, "who": "Bot team"}]
    });
    create_action(&app, &action).await;
    let mut failed = Vec::new();
    for system in ["NOOP", "NOOP", "NOTIFY"] {
        let payload =
            json!({"channel": "sms", "to": "+55", "message": "m", "communication_id": "c1"});
        let body = json!({"description": "will fail", "system": system, "payload": payload});
        let (status, task) = app.post("/api/v1/tasks", &body).await;
        assert_eq!(status, 201, "{task}");
        let id: uuid::Uuid = task["id"].as_str().unwrap().parse().unwrap();
        // As the pipeline leaves a task that failed for good.
        let row = task::Entity::find_by_id(id).one(&app.db).await.unwrap().unwrap();
        let mut row: task::ActiveModel = row.into();
        row.status = Set(broker_config::TaskStatus::Failed);
        row.error = Set(Some(format!("{system} told to fail")));
        row.update(&app.db).await.unwrap();
        failed.push(id);
    }
    app.pipeline.incidents.report_failed_tasks(&failed, Utc::now()).await;
    let (_, page) = app.get("/api/v1/incidents").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["occurrences"], 2, "the NOTIFY task did not count");
    let detail = incident(&app, page["items"][0]["id"].as_str().unwrap()).await;
    assert_eq!(sent(&detail["communications"]), [pair("internal", "Bot team")]);
    // A report from the pipeline that matches nothing is kept as unclassified too.
    let direct =
        orchestrator::incidents::report::Trigger::of_failed_task("CPE", Some("TIMEOUT after 14 s"));
    let outcome =
        app.pipeline.incidents.report_one(&direct, Source::Pipeline, Utc::now()).await.unwrap();
    assert_eq!(outcome.trigger.to_string(), "cpe/TIMEOUT");
    let (_, unclassified) = app.get("/api/v1/incidents/unclassified").await;
    assert_eq!(unclassified["items"][0]["source"], "pipeline");
}

async fn the_openapi_document_lists_the_incident_routes(backend: Backend) {
    let app = spawn(backend).await;
    let (status, document) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/api/v1/actions",
        "/api/v1/actions/{id}",
        "/api/v1/incidents",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/{id}/resolve",
        "/api/v1/incidents/triggers",
    ] {
        assert!(document["paths"][path].is_object(), "{path} missing");
    }
}

/// The original's report request: both login pairs together, as its sample sends them.
fn original_request() -> Value {
    json!({"gatilhos": [{"servico": "login", "retorno": "503"}, {"servico": "login", "retorno": "404"}]})
}

/// POSTs `body` to the triggers route; the whole answer.
async fn report_request(app: &TestApp, body: &Value) -> Value {
    let (status, answer) = app.post("/api/v1/incidents/triggers", body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// `(channel, to)` of a communication in a request's summary.
type Sent = (String, String);

/// `(channel, to)` of each item of a summary list.
fn summary(items: &Value) -> Vec<Sent> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["channel"].as_str().unwrap().into(), i["to"].as_str().unwrap().into()))
        .collect()
}

async fn the_original_sample_counts_one_occurrence_per_request(backend: Backend) {
    let app = spawn(backend).await;
    // The sample the demo loads, as the original's final version has it.
    orchestrator::incidents::sample::ensure_sample_action(&app.db, Utc::now()).await.unwrap();
    let (_, actions) = app.get("/api/v1/actions").await;
    assert_eq!(
        actions[0]["levels"],
        json!([
            {"volume": 10, "minutes": 5, "who": "Analyst N1"},
            {"volume": 20, "minutes": 20, "who": "Analyst N2"},
            {"minutes": 60, "who": "Coordination"}
        ])
    );
    let mut incident_id = Value::Null;
    for n in 1..=20u64 {
        let answer = report_request(&app, &original_request()).await;
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 2, "one outcome per report");
        assert_eq!(results[0]["occurrences"], n, "request {n} is one occurrence");
        assert_eq!(results[1]["counted_with"], 0);
        assert_eq!(results[1]["communications"], json!([]));
        incident_id = results[0]["incident_id"].clone();
        let (external, internal) =
            (summary(&answer["summary"]["external"]), summary(&answer["summary"]["internal"]));
        let expected: (Vec<Sent>, Vec<Sent>) = match n {
            // Customers on the 5th request (not the 3rd), N1 on the 10th (not the 5th).
            5 => (vec![("Push".into(), "All app users".into())], vec![]),
            10 => (vec![], vec![("internal".into(), "Analyst N1".into())]),
            20 => (vec![], vec![("internal".into(), "Analyst N2".into())]),
            _ => (vec![], vec![]),
        };
        assert_eq!((external, internal), expected, "request {n}");
    }
    let detail = incident(&app, incident_id.as_str().unwrap()).await;
    assert_eq!(detail["occurrences"], 20);
    assert_eq!(
        sent(&detail["communications"]),
        [
            pair("external", "All app users"),
            pair("internal", "Analyst N1"),
            pair("internal", "Analyst N2"),
        ]
    );
    let answer = report_request(&app, &original_request()).await;
    assert_eq!(answer["summary"], json!({"external": [], "internal": []}), "nothing more due");
    let item = &report_request(&app, &json!({"triggers": [{"service": "x", "status": "1"}]})).await;
    assert_eq!(item["summary"], json!({"external": [], "internal": []}));
}

async fn a_request_that_repeats_a_pair_counts_it_once(backend: Backend) {
    let app = spawn(backend).await;
    create_action(&app, &classic_action()).await;
    let mut other = classic_action();
    other["name"] = json!("Search down");
    other["code"] = json!("SEARCH_DOWN");
    other["triggers"] = json!([{"service": "search", "status": "503"}]);
    create_action(&app, &other).await;
    let repeated = json!({"triggers": [
        {"service": "login", "status": "503"},
        {"service": "search", "status": "503"},
        {"service": "Login", "status": "503"},
        {"service": "pay", "status": "500"},
        {"servico": "login", "retorno": 503},
        {"service": "pay", "status": "500"}
    ]});
    let answer = report_request(&app, &repeated).await;
    let results = answer["results"].as_array().unwrap();
    let counted_with: Vec<&Value> = results.iter().map(|r| &r["counted_with"]).collect();
    assert_eq!(
        counted_with,
        [&Value::Null, &Value::Null, &json!(0), &Value::Null, &json!(0), &json!(3)],
        "{answer}"
    );
    let occurrences: Vec<&Value> = results.iter().map(|r| &r["occurrences"]).collect();
    assert_eq!(
        occurrences,
        [&json!(1), &json!(1), &json!(1), &Value::Null, &json!(1), &Value::Null]
    );
    let (_, page) = app.get("/api/v1/incidents?order=oldest").await;
    assert_eq!(page["total"], 2, "one incident per action");
    for item in page["items"].as_array().unwrap() {
        assert_eq!(item["occurrences"], 1, "{item}");
    }
    assert_eq!(app.total("/api/v1/incidents/unclassified").await, 1, "pay/500 recorded once");
    // The next request counts again: once per request, not once ever.
    let again = report_request(&app, &repeated).await;
    assert_eq!(again["results"][0]["occurrences"], 2);
    assert_eq!(again["results"][1]["occurrences"], 2);
    assert_eq!(app.total("/api/v1/incidents/unclassified").await, 2);
}

async fn a_level_alerts_every_team_it_lists(backend: Backend) {
    let app = spawn(backend).await;
    let mut action = classic_action();
    action["external"] = Value::Null;
    action["levels"] = json!([
        {"volume": 2, "who": ["Analyst N1", "Infrastructure"]},
        {"volume": 3, "who": "Analyst N2"}
    ]);
    let created = create_action(&app, &action).await;
    assert_eq!(created["levels"], action["levels"], "written back as given");
    report(&app, "login", "503").await;
    let answer = report_request(&app, &original_request()).await;
    assert_eq!(
        summary(&answer["summary"]["internal"]),
        [
            ("internal".to_owned(), "Analyst N1".to_owned()),
            ("internal".to_owned(), "Infrastructure".to_owned())
        ]
    );
    assert_eq!(answer["summary"]["external"], json!([]));
    let third = report_request(&app, &original_request()).await;
    assert_eq!(
        summary(&third["summary"]["internal"]),
        [("internal".to_owned(), "Analyst N2".to_owned())]
    );
    let id = answer["results"][0]["incident_id"].as_str().unwrap();
    let detail = incident(&app, id).await;
    assert_eq!(detail["levels_notified"], json!([0, 1]));
    assert_eq!(app.total("/api/v1/tasks?system=NOTIFY").await, 3, "one delivery per team");

    let mut refused = action.clone();
    refused["name"] = json!("Other");
    refused["code"] = json!("OTHER");
    refused["triggers"] = json!([{"service": "other", "status": "1"}]);
    for (levels, field) in [
        (json!([{"volume": 2, "who": []}]), "levels[0].who"),
        (json!([{"volume": 2, "who": ["N1", " "]}]), "levels[0].who[1]"),
        (json!([{"volume": 2, "who": ["N1", "N1"]}]), "levels[0].who[1]"),
        (json!([{"volume": 2, "who": "N1"}, {"volume": 2, "who": "Infra"}]), "levels[1].volume"),
    ] {
        refused["levels"] = levels;
        assert_error(
            &app.post("/api/v1/actions", &refused).await,
            422,
            "invalid_field",
            Some(field),
        );
    }
}

async fn service_restored_follows_the_action_s_language(backend: Backend) {
    let app = spawn(backend).await;
    let portuguese = json!({
        "name": "Login fora do ar", "code": "LOGIN_FORA", "customers_group": "Todos",
        "triggers": [{"servico": "login", "retorno": "503"}],
        "external": {"min_occurrences": 1, "channel": "Push", "language": "pt-BR",
                     "message": "Nosso app está indisponível"}
    });
    let created = create_action(&app, &portuguese).await;
    assert_eq!(created["external"]["language"], "pt-BR");
    let id = report(&app, "login", "503").await["incident_id"].as_str().unwrap().to_owned();
    let (status, resolved) = app.post(&format!("/api/v1/incidents/{id}/resolve"), &json!({})).await;
    assert_eq!(status, 200, "{resolved}");
    let restored: Vec<&Value> = resolved["communications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "restored")
        .collect();
    assert_eq!(restored[0]["message"], "Nosso serviço voltou ao normal. Obrigado pela paciência.");

    // An action that names no language (as every action stored before) reads English.
    let english = json!({
        "name": "Search down", "code": "SEARCH_DOWN", "customers_group": "All",
        "triggers": [{"service": "search", "status": "503"}],
        "external": {"min_occurrences": 1, "channel": "Push", "message": "Search is down"}
    });
    create_action(&app, &english).await;
    let id = report(&app, "search", "503").await["incident_id"].as_str().unwrap().to_owned();
    let (_, resolved) = app.post(&format!("/api/v1/incidents/{id}/resolve"), &json!({})).await;
    let last = resolved["communications"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["message"], "Our service is back to normal. Thank you for your patience.");

    // Customers told in a language with no default sentence: the action must give one.
    let mut spanish = english.clone();
    spanish["name"] = json!("Pago caído");
    spanish["code"] = json!("PAGO");
    spanish["triggers"] = json!([{"service": "pago", "status": "500"}]);
    spanish["external"]["language"] = json!("es");
    assert_error(
        &app.post("/api/v1/actions", &spanish).await,
        422,
        "invalid_field",
        Some("external.restored_message"),
    );
    spanish["external"]["restored_message"] = json!("El servicio volvió");
    create_action(&app, &spanish).await;
    spanish["external"]["language"] = json!("pt/../x");
    spanish["code"] = json!("PAGO2");
    spanish["name"] = json!("Pago 2");
    spanish["triggers"] = json!([{"service": "pago", "status": "501"}]);
    assert_error(
        &app.post("/api/v1/actions", &spanish).await,
        422,
        "invalid_field",
        Some("external.language"),
    );
}

on_every_backend!(
    classic_scenario_step_by_step,
    quiet_incidents_resolve_by_themselves,
    unclassified_reports_ask_for_an_action,
    both_input_shapes_count_alike,
    bad_input_is_refused_and_counts_nothing,
    concurrent_reports_are_counted_exactly,
    reports_arrive_from_the_broker,
    actions_are_validated_and_managed,
    failed_tasks_feed_incidents_but_notify_tasks_do_not,
    the_openapi_document_lists_the_incident_routes,
    the_original_sample_counts_one_occurrence_per_request,
    a_request_that_repeats_a_pair_counts_it_once,
    a_level_alerts_every_team_it_lists,
    service_restored_follows_the_action_s_language,
);
