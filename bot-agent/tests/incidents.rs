//! Incident communications end to end: the orchestrator (in-process, SQLite), real bot agents
//! running NOTIFY and NOOP, and the notification sink, each with a RabbitMQ vhost and a database
//! of its own. Every communication reaches the sink exactly once, and a burst of failing tasks
//! escalates like a monitored service.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bot_agent::AgentConfig;
use broker_config::testing::TestVhost;
use broker_config::{BotName, System};
use orchestrator::{Config, Orchestrator};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

macro_rules! wait_until {
    ($what:expr, $condition:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !$condition {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// The orchestrator, the notification sink and the bots of one test.
struct World {
    api: String,
    sink: String,
    vhost: TestVhost,
    http: reqwest::Client,
    stop: CancellationToken,
    bots_stop: CancellationToken,
    db_path: std::path::PathBuf,
}

impl World {
    async fn start() -> World {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let vhost = TestVhost::create("incidents")
            .await
            .expect("RabbitMQ with the management plugin (scripts/services)");
        let db_path = std::env::temp_dir()
            .join(format!("botline-incidents-{}.db", uuid::Uuid::new_v4().simple()));
        let mut config = Config::for_database(format!("sqlite://{}?mode=rwc", db_path.display()));
        config.bots.http_bot_networks = orchestrator::config::BotBoundary::loopback_networks();
        config.amqp_url = vhost.amqp_url();
        config.sweep_interval = Duration::from_millis(250);
        config.heartbeat_interval = Duration::from_millis(500);
        // The test drives escalation by volume; the timer stays out of the way.
        config.incident_check_interval = Duration::from_secs(3600);
        let stop = CancellationToken::new();
        let orchestrator = Orchestrator::start(&config, stop.clone()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(orchestrator.serve(listener));
        let sink_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = format!("http://{}", sink_listener.local_addr().unwrap());
        tokio::spawn(simulators::notify::serve(sink_listener, Default::default(), stop.clone()));
        World {
            api,
            sink,
            vhost,
            http: reqwest::Client::new(),
            stop,
            bots_stop: CancellationToken::new(),
            db_path,
        }
    }

    fn spawn_bot(&self, name: &str, systems: &[System]) {
        let mut config = AgentConfig::new(
            BotName::parse(name).unwrap(),
            systems.to_vec(),
            self.vhost.amqp_url(),
        );
        config.notify_url = self.sink.clone();
        config.ip_address = Some("127.0.0.1".into());
        config.heartbeat_interval_ms = 200;
        let stop = self.bots_stop.clone();
        tokio::spawn(async move { bot_agent::run(config, stop).await.unwrap() });
    }

    async fn get(&self, url: &str) -> Value {
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let response =
            self.http.post(format!("{}{path}", self.api)).json(body).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// What the sink recorded, oldest first.
    async fn received(&self) -> Vec<Value> {
        self.get(&format!("{}/_control/received", self.sink)).await.as_array().unwrap().clone()
    }

    /// How many NOTIFY tasks are in `status`.
    async fn notify_tasks(&self, status: &str) -> u64 {
        let page =
            self.get(&format!("{}/api/v1/tasks?system=NOTIFY&status={status}", self.api)).await;
        page["total"].as_u64().unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.bots_stop.cancel();
        self.stop.cancel();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db_path.display()));
        }
    }
}

#[tokio::test]
async fn every_communication_reaches_the_sink_exactly_once() {
    let world = World::start().await;
    world.spawn_bot("notifier-1", &[System::NOTIFY]);
    world.spawn_bot("notifier-2", &[System::NOTIFY, System::NOOP]);
    let sample = json!({
        "name": "Login unavailable", "code": "LOGIN_UNAVAILABLE", "customers_group": "All app users",
        "triggers": [{"service": "login", "status": "503"}, {"service": "login", "status": "404"}],
        "external": {"min_occurrences": 5, "channel": "Push",
                     "message": "Our app is unavailable, we will let you know when it is back"},
        "levels": [{"volume": 10, "minutes": 5, "who": "Analyst N1"},
                   {"volume": 50, "minutes": 20, "who": "Analyst N2"},
                   {"minutes": 60, "who": "Coordination"}]
    });
    world.post("/api/v1/actions", &sample).await;
    // Twelve report requests in the original shape, each listing both pairs (one occurrence
    // each; twelve reports in one request used to be twelve): the push (5th) and N1 (10th),
    // once each.
    let request = json!({"gatilhos": [{"servico": "login", "retorno": "503"},
                                      {"servico": "login", "retorno": "404"}]});
    let mut incident_id = String::new();
    for n in 1..=12 {
        let answer = world.post("/api/v1/incidents/triggers", &request).await;
        assert_eq!(answer["results"][0]["occurrences"], n, "{answer}");
        incident_id = answer["results"][0]["incident_id"].as_str().unwrap().to_owned();
    }
    wait_until!("two deliveries", world.notify_tasks("COMPLETE").await == 2);
    // Resolving tells the customers it is back: one more delivery.
    world.post(&format!("/api/v1/incidents/{incident_id}/resolve"), &json!({})).await;
    wait_until!("three deliveries", world.notify_tasks("COMPLETE").await == 3);

    let incident = world.get(&format!("{}/api/v1/incidents/{incident_id}", world.api)).await;
    let communications = incident["communications"].as_array().unwrap();
    assert_eq!(communications.len(), 3, "{incident}");
    let received = world.received().await;
    assert_eq!(received.len(), 3, "each communication once: {received:#?}");
    for communication in communications {
        let id = communication["id"].as_str().unwrap();
        let deliveries: Vec<&Value> =
            received.iter().filter(|r| r["headers"]["idempotency-key"] == id).collect();
        assert_eq!(deliveries.len(), 1, "communication {id} delivered once");
        let body = &deliveries[0]["body"];
        assert_eq!(body["message"], communication["message"]);
        assert_eq!(body["to"], communication["recipient"]);
        assert_eq!(body["incident_id"], json!(incident_id));
        let channel = communication["channel"].as_str().unwrap().to_lowercase();
        assert_eq!(deliveries[0]["channel"], json!(channel));
    }
    let channels: Vec<&str> = received.iter().map(|r| r["channel"].as_str().unwrap()).collect();
    let mut sorted = channels.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["internal", "push", "push"]);
    let kinds: Vec<&str> = received.iter().map(|r| r["body"]["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"restored"), "{kinds:?}");
    assert_eq!(world.notify_tasks("FAILED").await, 0);
}

#[tokio::test]
async fn a_burst_of_failing_tasks_escalates_like_a_monitored_service() {
    let world = World::start().await;
    world.spawn_bot("worker-1", &[System::NOOP, System::NOTIFY]);
    let action = json!({
        "name": "NOOP failing", "code": "NOOP_FAILING", "customers_group": "nobody outside",
        "triggers": [{"service": "noop", "status": "FAILED"}],
        "levels": [{"volume": 3, "who": "Bot team"}]
    });
    world.post("/api/v1/actions", &action).await;
    for n in 0..3 {
        let task = json!({"description": format!("doomed {n}"), "system": "NOOP",
                          "payload": {"fail": "fatal"}, "max_attempts": 1});
        world.post("/api/v1/tasks", &task).await;
    }
    wait_until!("the alert delivered", world.notify_tasks("COMPLETE").await == 1);
    let page = world.get(&format!("{}/api/v1/incidents", world.api)).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["occurrences"], 3);
    assert_eq!(page["items"][0]["action_code"], "NOOP_FAILING");
    let received = world.received().await;
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0]["channel"], "internal");
    assert_eq!(received[0]["body"]["to"], "Bot team");
}

/// The NOTIFY automation alone against the sink: delivered (once per idempotency key), a sink
/// that is down fails retryably, a refusal (4xx) fails for good.
#[tokio::test]
async fn the_notify_automation_classifies_the_webhook_s_answers() {
    use bot_agent::Outcome;
    use bot_agent::automations::notify::Notify;
    use broker_config::{Assignment, TaskRef};

    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(simulators::notify::serve(listener, Default::default(), stop.clone()));
    let http = reqwest::Client::new();
    let assignment = Assignment {
        task: TaskRef { task_id: uuid::Uuid::now_v7(), attempt: 1 },
        system: System::NOTIFY,
        description: "notify".into(),
        attachment: None,
        payload: Some(json!({"channel": "SMS", "to": "Analyst N1", "message": "login is down",
                             "incident_id": "i-1", "communication_id": "c-1"})),
        resume_after_row: 0,
        offer_expires_at: chrono::Utc::now(),
    };
    let cancel = CancellationToken::new();
    let notify = Notify::new(&sink).unwrap();
    for _ in 0..2 {
        let outcome = notify.run(&assignment, &cancel).await;
        assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");
    }
    let received: Value =
        http.get(format!("{sink}/_control/received")).send().await.unwrap().json().await.unwrap();
    assert_eq!(received.as_array().unwrap().len(), 1, "a retried delivery is recorded once");
    assert_eq!(received[0]["channel"], "sms");
    assert_eq!(received[0]["headers"]["idempotency-key"], "c-1");

    http.put(format!("{sink}/_control")).json(&json!({"down": true})).send().await.unwrap();
    let down = notify.run(&assignment, &cancel).await;
    assert!(matches!(down, Outcome::Failed { retryable: true, .. }), "{down:?}");
    let refused = Notify::new(&format!("{sink}/no-such-prefix")).unwrap();
    http.put(format!("{sink}/_control")).json(&json!({"down": false})).send().await.unwrap();
    let outcome = refused.run(&assignment, &cancel).await;
    assert!(matches!(outcome, Outcome::Failed { retryable: false, .. }), "{outcome:?}");
    let mut bad = assignment.clone();
    bad.payload = Some(json!({"channel": "SMS"}));
    assert!(matches!(notify.run(&bad, &cancel).await, Outcome::Failed { retryable: false, .. }));
    stop.cancel();
}
