//! The whole pipeline for one test: the orchestrator in-process (SQLite, short timings), the
//! Vivo360 portal stand-in, and real bot agents, in-process or as separate processes (the real
//! binary) for the tests that kill, stop or crash them. Each [`World`] has a RabbitMQ vhost and a
//! database of its own; dropping it stops the in-process parts and removes both.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bot_agent::AgentConfig;
use broker_config::testing::TestVhost;
use broker_config::{BotName, System};
use orchestrator::{Config, Orchestrator};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Waits until `$condition` holds, checking every 50 ms, for 30 s or `$limit`, then fails the
/// test naming `$what`.
#[allow(unused_macros)]
macro_rules! wait_until {
    ($what:expr, $condition:expr) => {
        wait_until!($what, std::time::Duration::from_secs(30), $condition)
    };
    ($what:expr, $limit:expr, $condition:expr) => {{
        let deadline = tokio::time::Instant::now() + $limit;
        while !$condition {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {}", $what);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

/// The orchestrator, the portal and the bots of one test.
pub struct World {
    /// The orchestrator's API, `http://127.0.0.1:PORT`.
    pub api: String,
    /// The Vivo360 portal stand-in.
    pub portal: String,
    /// The test's vhost.
    pub vhost: TestVhost,
    /// A client for both.
    pub http: reqwest::Client,
    stop: CancellationToken,
    bots_stop: CancellationToken,
    db_path: std::path::PathBuf,
}

impl World {
    /// Starts the orchestrator (offers expire after 3 s, sweeps every 250 ms, bots heartbeat
    /// every 500 ms so one silent for 1.5 s is lost, retries after 200 ms) and the portal, whose
    /// every request takes `portal_delay_ms`.
    pub async fn start(portal_delay_ms: u64) -> World {
        World::start_with(portal_delay_ms, |_| {}).await
    }

    /// [`World::start`] with the orchestrator's configuration changed by `configure` first.
    pub async fn start_with(portal_delay_ms: u64, configure: impl FnOnce(&mut Config)) -> World {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let vhost = TestVhost::create("e2e")
            .await
            .expect("RabbitMQ with the management plugin (scripts/services)");
        let db_path =
            std::env::temp_dir().join(format!("botline-e2e-{}.db", uuid::Uuid::new_v4().simple()));
        let mut config = Config::for_database(format!("sqlite://{}?mode=rwc", db_path.display()));
        config.bots.http_bot_networks = orchestrator::config::BotBoundary::loopback_networks();
        config.amqp_url = vhost.amqp_url();
        config.offer_timeout = Duration::from_secs(3);
        config.sweep_interval = Duration::from_millis(250);
        config.heartbeat_interval = Duration::from_millis(500);
        config.retry_base = Duration::from_millis(200);
        configure(&mut config);
        let stop = CancellationToken::new();
        let orchestrator = Orchestrator::start(&config, stop.clone()).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(orchestrator.serve(listener));
        let portal_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let portal = format!("http://{}", portal_listener.local_addr().unwrap());
        let portal_config =
            simulators::vivo360::Vivo360Config { delay_ms: portal_delay_ms, ..Default::default() };
        tokio::spawn(simulators::vivo360::serve(portal_listener, portal_config, stop.clone()));
        World {
            api,
            portal,
            vhost,
            http: reqwest::Client::new(),
            stop,
            bots_stop: CancellationToken::new(),
            db_path,
        }
    }

    /// An in-process bot's configuration: this world's broker, portal and API, heartbeats every
    /// 200 ms, progress every 100 ms.
    pub fn agent_config(&self, name: &str, systems: &[System]) -> AgentConfig {
        let mut config = AgentConfig::new(
            BotName::parse(name).unwrap(),
            systems.to_vec(),
            self.vhost.amqp_url(),
        );
        config.vivo360_url = self.portal.clone();
        config.api_url = self.api.clone();
        config.ip_address = Some("127.0.0.1".into());
        config.heartbeat_interval_ms = 200;
        config.progress_interval_ms = 100;
        config
    }

    /// A bot agent in this process.
    pub fn spawn_bot(&self, config: AgentConfig) {
        let stop = self.bots_stop.clone();
        tokio::spawn(async move { bot_agent::run(config, stop).await.unwrap() });
    }

    /// The command that starts a bot agent as its own process (the real binary), configured as
    /// [`World::agent_config`] does, its output discarded: add to it before spawning.
    pub fn bot_process(&self, name: &str, systems: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bot-agent"));
        command
            .args(["--name", name, "--systems", systems])
            .env("BOTLINE_AMQP_URL", self.vhost.amqp_url())
            .env("BOTLINE_VIVO360_URL", &self.portal)
            .env("BOTLINE_BOT_IP", "127.0.0.1")
            .env("BOTLINE_HEARTBEAT_INTERVAL_MS", "200")
            .env("BOTLINE_PROGRESS_INTERVAL_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// A bot agent as its own process (the real binary), to be killed.
    pub fn spawn_bot_process(&self, name: &str, systems: &str) -> Child {
        self.bot_process(name, systems).spawn().expect("the bot-agent binary starts")
    }

    /// `GET` on the API, as JSON.
    pub async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.api)).send().await.unwrap().json().await.unwrap()
    }

    /// Submits a task (JSON body); its id.
    pub async fn create_task(&self, body: Value) -> String {
        let response =
            self.http.post(format!("{}/api/v1/tasks", self.api)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    /// A task as the API shows it.
    pub async fn task(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/tasks/{id}")).await
    }

    /// Waits (30 s at most) until the task has `status`; the task then.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        wait_until!(format!("task {id} {status}"), self.task(id).await["status"] == status);
        self.task(id).await
    }

    /// A task's history, oldest first, with every field (kind, attempt, bot_id, detail, at).
    pub async fn events(&self, id: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/tasks/{id}/events")).await.as_array().unwrap().clone()
    }

    /// The kinds of a task's history, oldest first.
    pub async fn history(&self, id: &str) -> Vec<String> {
        self.events(id).await.iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
    }

    /// The users the portal holds, and how often each login was submitted.
    pub async fn portal_users(&self) -> Value {
        self.http
            .get(format!("{}/_control/users", self.portal))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
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
