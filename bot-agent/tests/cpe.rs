//! Equipment activation end to end, over real HTTPS and the real broker: the orchestrator
//! (in-process, SQLite, serving HTTPS), the equipment config service stand-in (HTTPS, its own
//! self-signed certificate, which the bots trust through `--equipment-ca`), and real bot agents.
//! Each test has a RabbitMQ vhost, a database and certificates of its own.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use bot_agent::AgentConfig;
use broker_config::https::{HttpsClient, Method};
use broker_config::testing::TestVhost;
use broker_config::{BotName, System};
use orchestrator::{Config, Orchestrator};
use serde_json::{Value, json};
use simulators::equipment::{EquipmentConfig, FailFirst};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long one request may take.
const REQUEST_WAIT: Duration = Duration::from_secs(20);

/// Waits up to `$secs` seconds for `$condition`, checking every 50 ms.
macro_rules! wait_until {
    ($secs:expr, $what:expr, $condition:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs($secs);
        while !$condition {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// The orchestrator, the equipment service and the bots of one test.
struct World {
    /// `https://127.0.0.1:PORT` of the orchestrator.
    api: String,
    /// `https://127.0.0.1:PORT` of the equipment service.
    device: String,
    /// Trusts the orchestrator's certificate.
    api_client: HttpsClient,
    /// Trusts the equipment service's certificate.
    device_client: HttpsClient,
    /// The equipment service's certificate, for `--equipment-ca`.
    device_ca: PathBuf,
    vhost: TestVhost,
    stop: CancellationToken,
    bots_stop: CancellationToken,
    dir: PathBuf,
}

impl World {
    async fn start(device: EquipmentConfig) -> World {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let vhost = TestVhost::create("cpe")
            .await
            .expect("RabbitMQ with the management plugin (scripts/services)");
        let dir =
            std::env::temp_dir().join(format!("botline-cpe-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let api_tls = simulators::tls::self_signed().unwrap();
        std::fs::write(dir.join("api-cert.pem"), &api_tls.cert_pem).unwrap();
        std::fs::write(dir.join("api-key.pem"), &api_tls.key_pem).unwrap();

        let db = dir.join("botline.db");
        let mut config = Config::for_database(format!("sqlite://{}?mode=rwc", db.display()));
        config.bots.http_bot_networks = orchestrator::config::BotBoundary::loopback_networks();
        config.amqp_url = vhost.amqp_url();
        config.offer_timeout = Duration::from_secs(3);
        config.sweep_interval = Duration::from_millis(250);
        config.heartbeat_interval = Duration::from_millis(500);
        config.retry_base = Duration::from_millis(200);
        config.tls_cert = Some(dir.join("api-cert.pem"));
        config.tls_key = Some(dir.join("api-key.pem"));
        let stop = CancellationToken::new();
        let orchestrator = Orchestrator::start(&config, stop.clone()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("https://{}", listener.local_addr().unwrap());
        tokio::spawn(orchestrator.serve(listener));

        let device_tls = simulators::tls::self_signed().unwrap();
        let device_ca = dir.join("device-ca.pem");
        std::fs::write(&device_ca, &device_tls.cert_pem).unwrap();
        let device_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let device_url = format!("https://{}", device_listener.local_addr().unwrap());
        let device_client = HttpsClient::with_ca_pem(device_tls.cert_pem.as_bytes()).unwrap();
        tokio::spawn(simulators::equipment::serve_tls(
            device_listener,
            device,
            device_tls,
            stop.clone(),
        ));
        World {
            api,
            device: device_url,
            api_client: HttpsClient::with_ca_pem(api_tls.cert_pem.as_bytes()).unwrap(),
            device_client,
            device_ca,
            vhost,
            stop,
            bots_stop: CancellationToken::new(),
            dir,
        }
    }

    /// A CPE bot that trusts the equipment service through its certificate.
    fn agent_config(&self, name: &str) -> AgentConfig {
        let mut config = AgentConfig::new(
            BotName::parse(name).unwrap(),
            vec![System::CPE],
            self.vhost.amqp_url(),
        );
        config.equipment_url = self.device.clone();
        config.equipment_ca = Some(self.device_ca.clone());
        config.ip_address = Some("127.0.0.1".into());
        config.heartbeat_interval_ms = 200;
        config
    }

    fn spawn_bot(&self, config: AgentConfig) {
        let stop = self.bots_stop.clone();
        tokio::spawn(async move { bot_agent::run(config, stop).await.unwrap() });
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let url = format!("{}{path}", self.api);
        let response = self.api_client.request(method, &url, body, REQUEST_WAIT).await.unwrap();
        (response.status, serde_json::from_slice(&response.body).unwrap_or(Value::Null))
    }

    /// Starts an activation of `id` with this timeout; its task id.
    async fn activate(&self, id: &str, timeout_in_seconds: u32) -> String {
        let body = json!({"timeoutInSeconds": timeout_in_seconds, "parameters": [{"username": "admin"}, {"password": "admin"}, {"vlan": 534}, {"interfaces": [1, 2, 3, 4]}]});
        let (status, created) =
            self.call(Method::POST, &format!("/api/v1/equipment/cpe/{id}"), Some(body)).await;
        assert_eq!((status, &created["code"]), (200, &json!(200)), "{created}");
        created["taskId"].as_str().unwrap().to_owned()
    }

    async fn status(&self, id: &str, task: &str) -> (u16, Value) {
        self.call(Method::GET, &format!("/api/v1/equipment/cpe/{id}/task/{task}"), None).await
    }

    /// Polls the activation until it is no longer running; its final answer.
    async fn outcome(&self, id: &str, task: &str, secs: u64) -> (u16, Value) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let answer = self.status(id, task).await;
            if answer.1["code"] != 204 {
                return answer;
            }
            assert!(tokio::time::Instant::now() < deadline, "activation {task} still running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn task(&self, task: &str) -> Value {
        self.call(Method::GET, &format!("/api/v1/tasks/{task}"), None).await.1
    }

    async fn history(&self, task: &str) -> Vec<String> {
        let (_, events) =
            self.call(Method::GET, &format!("/api/v1/tasks/{task}/events"), None).await;
        events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
    }

    /// What the equipment service received.
    async fn device_requests(&self) -> Value {
        let url = format!("{}/_control/requests", self.device);
        self.device_client.get(&url, REQUEST_WAIT).await.unwrap().json().unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.bots_stop.cancel();
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn completed() -> (u16, Value) {
    (200, json!({"code": 200, "message": "Completed"}))
}

fn provisioning_failed() -> (u16, Value) {
    (500, json!({"code": 500, "message": "Internal provisioning exception"}))
}

fn quick() -> EquipmentConfig {
    EquipmentConfig { delay_ms: 50, ..EquipmentConfig::default() }
}

#[tokio::test]
async fn an_activation_runs_on_a_bot_and_completes() {
    let world = World::start(quick()).await;
    let task = world.activate("CPE000001", 14).await;
    // No bot yet: the activation waits.
    assert_eq!(
        world.status("CPE000001", &task).await,
        (200, json!({"code": 204, "message": "Task is still running"}))
    );
    world.spawn_bot(world.agent_config("cpe-1"));
    assert_eq!(world.outcome("CPE000001", &task, 30).await, completed());

    let done = world.task(&task).await;
    assert_eq!(done["status"], "COMPLETE");
    assert_eq!(done["result"], json!({"code": 200, "message": "success"}), "the service's answer");
    assert_eq!((&done["attempt"], &done["failures"]), (&json!(1), &json!(0)));
    let history: Vec<String> =
        world.history(&task).await.into_iter().filter(|k| k != "progress").collect();
    assert_eq!(history, ["created", "assigned", "accepted", "completed"]);
    let received = world.device_requests().await;
    assert_eq!(received["counts"], json!({"CPE000001": 1}));
    let request = &received["requests"][0];
    assert_eq!(request["timeoutInSeconds"], 14);
    // Forwarded in the shape the client sent (it used to be rewritten into one object).
    assert_eq!(request["parameters"], original_parameters());
}

/// The original interface's example `parameters`: a list of one-key objects.
fn original_parameters() -> Value {
    json!([{"username": "admin"}, {"password": "admin"}, {"vlan": 534}, {"interfaces": [1, 2, 3, 4]}])
}

/// The original example against a service A that takes only its list shape, with a device
/// slower than the example's `timeoutInSeconds` (as 60 s is to 14 s, scaled down): the timeout
/// is the device's, forwarded as given, and the bot waits for the answer with its own limit, so
/// the device is configured once and the activation completes on its first attempt.
#[tokio::test]
async fn the_original_example_completes_once_against_a_strict_service_and_a_slow_device() {
    let device =
        EquipmentConfig { delay_ms: 2500, strict_parameters: true, ..EquipmentConfig::default() };
    let world = World::start(device).await;
    world.spawn_bot(world.agent_config("cpe-1"));
    let task = world.activate("CPE000014", 1).await;
    assert_eq!(world.outcome("CPE000014", &task, 30).await, completed());
    let done = world.task(&task).await;
    assert_eq!((&done["attempt"], &done["failures"]), (&json!(1), &json!(0)), "{done}");
    let received = world.device_requests().await;
    assert_eq!(received["counts"], json!({"CPE000014": 1}), "service A configured it once");
    let request = &received["requests"][0];
    assert_eq!(request["timeoutInSeconds"], 1, "the device's timeout, as given");
    assert_eq!(request["parameters"], original_parameters(), "the list, as given");
}

#[tokio::test]
async fn equipment_the_service_does_not_know_fails_at_once_without_retries() {
    let world =
        World::start(EquipmentConfig { known_ids: vec!["CPE000001".into()], ..quick() }).await;
    world.spawn_bot(world.agent_config("cpe-1"));
    let task = world.activate("CPE000404", 14).await;
    // Service A's 404 reaches the client as service A said it (it used to be a 500
    // "Internal provisioning exception").
    assert_eq!(
        world.outcome("CPE000404", &task, 30).await,
        (404, json!({"code": 404, "message": "The requested equipment is not found"}))
    );
    let failed = world.task(&task).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!((&failed["attempt"], &failed["failures"]), (&json!(1), &json!(1)), "not retried");
    let error = failed["error"].as_str().unwrap();
    assert!(error.starts_with("404 The requested equipment is not found"), "{error}");
    assert_eq!(world.device_requests().await["counts"], json!({"CPE000404": 1}));
}

#[tokio::test]
async fn a_device_slower_than_the_bot_s_answer_timeout_is_retried_until_the_attempts_run_out() {
    // The device answers after 1.5 s; the bot waits 1 s (its --equipment-answer-timeout; the
    // activation's timeoutInSeconds used to be the wait), and the device's timeout is 1 s too.
    let world =
        World::start(EquipmentConfig { delay_ms: 1500, ..EquipmentConfig::default() }).await;
    let mut config = world.agent_config("cpe-1");
    config.equipment_answer_timeout = 1;
    world.spawn_bot(config);
    let task = world.activate("SLOW00001", 1).await;
    assert_eq!(world.outcome("SLOW00001", &task, 60).await, provisioning_failed());
    let failed = world.task(&task).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(
        (&failed["attempt"], &failed["failures"], &failed["max_attempts"]),
        (&json!(3), &json!(3), &json!(3))
    );
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("did not answer within 1 s"), "{error}");
    let history = world.history(&task).await;
    assert_eq!(history.iter().filter(|k| *k == "failed").count(), 3, "{history:?}");
    assert_eq!(world.device_requests().await["counts"], json!({"SLOW00001": 3}));
}

#[tokio::test]
async fn a_device_that_fails_twice_then_succeeds_completes_on_the_third_attempt() {
    let device = EquipmentConfig {
        fail_first: vec![FailFirst { id: "FLAKY0001".into(), count: 2 }],
        ..quick()
    };
    let world = World::start(device).await;
    // This bot accepts any certificate, as the demo's do.
    let mut config = world.agent_config("cpe-1");
    config.equipment_ca = None;
    config.equipment_insecure = true;
    world.spawn_bot(config);
    let task = world.activate("FLAKY0001", 14).await;
    assert_eq!(world.outcome("FLAKY0001", &task, 30).await, completed());
    let done = world.task(&task).await;
    assert_eq!((&done["attempt"], &done["failures"]), (&json!(3), &json!(2)));
    let history = world.history(&task).await;
    assert_eq!(history.iter().filter(|k| *k == "failed").count(), 2, "{history:?}");
    assert_eq!(history.last().map(String::as_str), Some("completed"));
    let received = world.device_requests().await;
    let codes: Vec<u64> = received["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
}

#[tokio::test]
async fn two_hundred_concurrent_activations_all_complete() {
    const ACTIVATIONS: usize = 200;
    let world = World::start(EquipmentConfig { delay_ms: 20, ..EquipmentConfig::default() }).await;
    for n in 1..=5 {
        world.spawn_bot(world.agent_config(&format!("cpe-{n}")));
    }
    let ids: Vec<String> = (0..ACTIVATIONS).map(|n| format!("CPE{n:06}")).collect();
    let tasks = futures_util::future::join_all(ids.iter().map(|id| world.activate(id, 14))).await;
    let distinct: std::collections::BTreeSet<&String> = tasks.iter().collect();
    assert_eq!(distinct.len(), ACTIVATIONS, "one task per activation");

    let completed_count = || async {
        world.call(Method::GET, "/api/v1/tasks?system=CPE&status=COMPLETE&limit=1", None).await.1["total"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until!(180, "every activation COMPLETE", completed_count().await == ACTIVATIONS as u64);
    let answers = futures_util::future::join_all(
        ids.iter().zip(&tasks).map(|(id, task)| world.status(id, task)),
    )
    .await;
    for (id, answer) in ids.iter().zip(answers) {
        assert_eq!(answer, completed(), "{id}");
    }
    let counts = world.device_requests().await["counts"].clone();
    for id in &ids {
        assert!(counts[id].as_u64().unwrap_or(0) >= 1, "{id} was never configured: {counts}");
    }
}
