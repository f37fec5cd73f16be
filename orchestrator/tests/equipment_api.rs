//! The equipment-activation API, served over real HTTPS (the orchestrator given a certificate and
//! key), against a real database (SQLite and PostgreSQL) and broker. Completion by real bots is
//! in bot-agent's `cpe` tests; here a task's end is set directly, as the pipeline would.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use broker_config::TaskStatus;
use broker_config::https::TlsMaterial;
use broker_config::https::{HttpsClient, Method};
use clap::Parser as _;
use common::{Backend, TestApp};
use orchestrator::entity::task;
use orchestrator::{Config, Orchestrator, StartError};
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, Set};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// PEM files in a directory of their own, removed on drop.
struct PemFiles {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl PemFiles {
    fn write(material: &TlsMaterial) -> PemFiles {
        let dir =
            std::env::temp_dir().join(format!("botline-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &material.cert_pem).unwrap();
        std::fs::write(&key, &material.key_pem).unwrap();
        PemFiles { dir, cert, key }
    }
}

impl Drop for PemFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The orchestrator over HTTPS and a client that trusts its certificate.
struct Api {
    app: TestApp,
    client: HttpsClient,
}

impl Api {
    async fn spawn(backend: Backend) -> Api {
        let material = simulators::tls::self_signed().unwrap();
        let files = PemFiles::write(&material);
        let app = TestApp::spawn_with(backend, |config| {
            config.tls_cert = Some(files.cert.clone());
            config.tls_key = Some(files.key.clone());
        })
        .await;
        let client = HttpsClient::with_ca_pem(material.cert_pem.as_bytes()).unwrap();
        Api { app, client }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        let url = format!("https://{}{path}", self.app.addr);
        let response =
            self.client.request(method, &url, body.map(<[u8]>::to_vec), WAIT).await.unwrap();
        let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, json)
    }

    async fn activate_raw(&self, id: &str, body: &[u8]) -> (u16, Value) {
        self.call(Method::POST, &format!("/api/v1/equipment/cpe/{id}"), Some(body)).await
    }

    async fn activate(&self, id: &str, body: &Value) -> (u16, Value) {
        self.activate_raw(id, &serde_json::to_vec(body).unwrap()).await
    }

    /// Starts an activation that must be accepted; its task id.
    async fn started(&self, id: &str) -> String {
        let (status, created) = self.activate(id, &activation()).await;
        assert_eq!(status, 200, "{created}");
        created["taskId"].as_str().unwrap().to_owned()
    }

    async fn status(&self, id: &str, task: &str) -> (u16, Value) {
        self.call(Method::GET, &format!("/api/v1/equipment/cpe/{id}/task/{task}"), None).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    /// Sets a task's error directly, as the pipeline stores a bot's report.
    async fn force_error(&self, id: &str, error: &str) {
        let row = task::Entity::find_by_id(id.parse::<uuid::Uuid>().unwrap())
            .one(&self.app.db)
            .await
            .unwrap()
            .unwrap();
        let mut row: task::ActiveModel = row.into();
        row.error = Set(Some(error.to_owned()));
        row.update(&self.app.db).await.unwrap();
    }

    /// Moves a task to `status` directly, as the pipeline would.
    async fn force_status(&self, id: &str, status: TaskStatus) {
        let row = task::Entity::find_by_id(id.parse::<uuid::Uuid>().unwrap())
            .one(&self.app.db)
            .await
            .unwrap()
            .unwrap();
        let mut row: task::ActiveModel = row.into();
        row.status = Set(status);
        row.update(&self.app.db).await.unwrap();
    }
}

fn activation() -> Value {
    json!({"timeoutInSeconds": 14, "parameters": {"username": "admin", "password": "admin", "vlan": 534, "interfaces": [1, 2, 3, 4]}})
}

fn equipment_not_found() -> (u16, Value) {
    (404, json!({"code": 404, "message": "The requested equipment is not found"}))
}

fn task_not_found() -> (u16, Value) {
    (404, json!({"code": 404, "message": "The requested task is not found"}))
}

fn still_running() -> (u16, Value) {
    (200, json!({"code": 204, "message": "Task is still running"}))
}

async fn an_activation_is_a_waiting_cpe_task_reported_as_running(backend: Backend) {
    let api = Api::spawn(backend).await;
    let (status, created) = api.activate("CPE000001", &activation()).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["code"], 200);
    assert_eq!(created.as_object().unwrap().len(), 2, "{created}");
    let task_id = created["taskId"].as_str().unwrap().to_owned();

    let (status, task) = api.get(&format!("/api/v1/tasks/{task_id}")).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!((&task["system"], &task["status"]), (&json!("CPE"), &json!("WAITING")));
    assert_eq!(task["max_attempts"], 3);
    assert_eq!(task["description"], "Activate CPE CPE000001");
    let mut payload = activation();
    payload["equipment_id"] = json!("CPE000001");
    assert_eq!(task["payload"], payload);
    assert_eq!(api.status("CPE000001", &task_id).await, still_running());

    // The original example's shape: parameters as a list of one-key objects, stored as a list
    // (it used to be rewritten into one object), in its order, to be forwarded as sent.
    let listed =
        json!({"timeoutInSeconds": 30, "parameters": [{"vlan": 534}, {"username": "admin"}]});
    let (status, second) = api.activate("a1b2c3d4", &listed).await;
    assert_eq!(status, 200, "{second}");
    let (_, task) = api.get(&format!("/api/v1/tasks/{}", second["taskId"].as_str().unwrap())).await;
    assert_eq!(
        task["payload"],
        json!({"equipment_id": "a1b2c3d4", "timeoutInSeconds": 30, "parameters": [{"vlan": 534}, {"username": "admin"}]})
    );
    assert_ne!(second["taskId"], created["taskId"]);
}

async fn ended_activations_answer_completed_failed_or_cancelled(backend: Backend) {
    let api = Api::spawn(backend).await;
    let task = api.started("CPE000001").await;
    for status in [TaskStatus::Assigned, TaskStatus::Running] {
        api.force_status(&task, status).await;
        assert_eq!(api.status("CPE000001", &task).await, still_running(), "{status}");
    }
    api.force_status(&task, TaskStatus::Complete).await;
    assert_eq!(
        api.status("CPE000001", &task).await,
        (200, json!({"code": 200, "message": "Completed"}))
    );
    api.force_status(&task, TaskStatus::Failed).await;
    assert_eq!(
        api.status("CPE000001", &task).await,
        (500, json!({"code": 500, "message": "Internal provisioning exception"}))
    );
    // Failed with service A's own answers, as a bot writes them.
    api.force_error(&task, "500 Internal provisioning exception (equipment config service)").await;
    assert_eq!(
        api.status("CPE000001", &task).await,
        (500, json!({"code": 500, "message": "Internal provisioning exception"}))
    );
    api.force_error(&task, "404 The requested equipment is not found (equipment config service)")
        .await;
    assert_eq!(api.status("CPE000001", &task).await, equipment_not_found(), "service A's 404");
    // A 404 that was not service A's answer (a wrong URL, a proxy) is no "not found".
    api.force_error(&task, "equipment config service answered HTTP 404: <html>").await;
    assert_eq!(api.status("CPE000001", &task).await.0, 500);

    let cancelled = api.started("CPE000002").await;
    let (status, _) =
        api.call(Method::POST, &format!("/api/v1/tasks/{cancelled}/cancel"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        api.status("CPE000002", &cancelled).await,
        (410, json!({"code": 410, "message": "The task was cancelled"}))
    );
}

async fn malformed_equipment_ids_are_not_found(backend: Backend) {
    let api = Api::spawn(backend).await;
    let task = api.started("CPE000001").await;
    let long = "A".repeat(65);
    for id in ["abc12", "CPE-00001", "CPE%20001", "%C3%A7pe0001", long.as_str()] {
        assert_eq!(api.activate(id, &activation()).await, equipment_not_found(), "{id}");
        assert_eq!(api.status(id, &task).await, equipment_not_found(), "{id}");
    }
    // The id is checked before the body.
    assert_eq!(api.activate_raw("abc", b"not json").await, equipment_not_found());
    let (status, tasks) = api.get("/api/v1/tasks?system=CPE").await;
    assert_eq!((status, &tasks["total"]), (200, &json!(1)), "nothing stored for them");
}

async fn bodies_that_are_not_activations_are_bad_requests(backend: Backend) {
    let api = Api::spawn(backend).await;
    let cases: [(&[u8], &str); 9] = [
        (b"", "the body must be JSON"),
        (b"{\"timeoutInSeconds\": 14", "malformed JSON"),
        (b"{\"parameters\": {\"vlan\": 1}}", "missing field `timeoutInSeconds`"),
        (b"{\"timeoutInSeconds\": 14}", "missing field `parameters`"),
        (b"{\"timeoutInSeconds\": \"14\", \"parameters\": {}}", "timeoutInSeconds: invalid type"),
        (b"{\"timeoutInSeconds\": 0, \"parameters\": {}}", "from 1 to 3600"),
        (b"{\"timeoutInSeconds\": 14, \"parameters\": \"vlan=534\"}", "parameters: invalid type"),
        (b"{\"timeoutInSeconds\": 14, \"parameters\": [{\"a\": 1, \"b\": 2}]}", "exactly one key"),
        (b"[14, {}]", "invalid type: sequence"),
    ];
    for (body, reason) in cases {
        let (status, answer) = api.activate_raw("CPE000001", body).await;
        assert_eq!((status, &answer["code"]), (400, &json!(400)), "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message:?} should say {reason:?}");
        assert_eq!(answer.as_object().unwrap().len(), 2, "the original shape: {answer}");
    }
    let (status, tasks) = api.get("/api/v1/tasks?system=CPE").await;
    assert_eq!((status, &tasks["total"]), (200, &json!(0)), "nothing stored");
}

async fn tasks_of_other_equipment_or_systems_are_not_found(backend: Backend) {
    let api = Api::spawn(backend).await;
    let task = api.started("CPE000001").await;
    assert_eq!(api.status("CPE000002", &task).await, task_not_found(), "another equipment's");
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(api.status("CPE000001", &unknown).await, task_not_found());
    assert_eq!(api.status("CPE000001", "not-a-task").await, task_not_found());
    let noop = serde_json::to_vec(&json!({"description": "nap", "system": "NOOP"})).unwrap();
    let (status, created) = api.call(Method::POST, "/api/v1/tasks", Some(&noop)).await;
    assert_eq!(status, 201, "{created}");
    let noop_id = created["id"].as_str().unwrap();
    assert_eq!(api.status("CPE000001", noop_id).await, task_not_found(), "not an activation");
    assert_eq!(api.status("CPE000001", &task).await, still_running());
}

async fn the_openapi_document_lists_the_equipment_routes(backend: Backend) {
    let api = Api::spawn(backend).await;
    let (status, document) = api.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let paths = &document["paths"];
    assert!(paths["/api/v1/equipment/cpe/{id}"]["post"].is_object(), "{paths}");
    assert!(paths["/api/v1/equipment/cpe/{id}/task/{task}"]["get"].is_object(), "{paths}");
    assert!(document["components"]["schemas"]["CpeRequest"].is_object());
}

async fn the_health_route_answers_where_such_services_keep_it(backend: Backend) {
    let api = Api::spawn(backend).await;
    let (status, health) = api.get("/api/v1/health").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    assert_eq!(api.get("/healthz").await, (status, health), "the same probe");
}

on_every_backend!(
    an_activation_is_a_waiting_cpe_task_reported_as_running,
    ended_activations_answer_completed_failed_or_cancelled,
    malformed_equipment_ids_are_not_found,
    bodies_that_are_not_activations_are_bad_requests,
    tasks_of_other_equipment_or_systems_are_not_found,
    the_openapi_document_lists_the_equipment_routes,
    the_health_route_answers_where_such_services_keep_it,
);

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[test]
fn https_needs_both_a_certificate_and_a_key() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["orchestrator"][..], args].concat());
    let both = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap().config;
    assert_eq!(
        both.tls_files().map(|(c, k)| (c.to_owned(), k.to_owned())),
        Some(("c.pem".into(), "k.pem".into()))
    );
    assert!(parse(&["--tls-cert", "c.pem"]).is_err());
    assert!(parse(&["--tls-key", "k.pem"]).is_err());
    assert_eq!(parse(&[]).unwrap().config.tls_files(), None);
}

#[tokio::test]
async fn a_certificate_that_cannot_serve_stops_the_start_at_once() {
    let material = simulators::tls::self_signed().unwrap();
    let other = simulators::tls::self_signed().unwrap();
    let mismatched = TlsMaterial { key_pem: other.key_pem, ..material };
    let files = PemFiles::write(&mismatched);
    // Neither the database nor the broker is reached: the certificate is checked first.
    let mut config = Config::for_database("postgres://nobody@127.0.0.1:1/none");
    config.bots.http_bot_networks = orchestrator::config::BotBoundary::loopback_networks();
    config.amqp_url = "amqp://nobody@127.0.0.1:1/%2f".into();
    config.tls_cert = Some(files.cert.clone());
    config.tls_key = Some(files.key.clone());
    let started =
        tokio::time::timeout(WAIT, Orchestrator::start(&config, CancellationToken::new()))
            .await
            .unwrap();
    assert!(matches!(started, Err(StartError::Tls { .. })), "{:?}", started.err());
    config.tls_key = Some(files.dir.join("missing.pem"));
    let started =
        tokio::time::timeout(WAIT, Orchestrator::start(&config, CancellationToken::new()))
            .await
            .unwrap();
    assert!(
        matches!(started, Err(StartError::Tls { ref reason, .. }) if reason.contains("cannot read"))
    );
}
