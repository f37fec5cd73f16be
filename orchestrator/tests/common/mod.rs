//! Test harness: the real orchestrator on a random port, against a fresh database of its own.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use broker_config::testing::TestVhost;
use orchestrator::{Config, Orchestrator};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// PostgreSQL server URL used to create one database per test (trust auth on this machine).
fn postgres_admin_url() -> String {
    std::env::var("BOTLINE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A running orchestrator; dropping it stops the server and deletes its database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: DatabaseConnection,
    pub pipeline: std::sync::Arc<orchestrator::pipeline::Pipeline>,
    /// The test's own RabbitMQ vhost (deleted on drop).
    pub vhost: TestVhost,
    shutdown: CancellationToken,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Database(String),
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tune: impl FnOnce(&mut Config)) -> TestApp {
        // RUST_LOG=info shows the orchestrator's log under the failing test.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (url, cleanup) = match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("botline-test-{unique}.db"));
                (format!("sqlite://{}?mode=rwc", path.display()), Cleanup::File(path))
            }
            Backend::Postgres => {
                let name = format!("botline_test_{unique}");
                let admin = migrations::connect(&postgres_admin_url())
                    .await
                    .expect("PostgreSQL must be running for the postgres tests (see README)");
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
                admin.close().await.unwrap();
                let base = postgres_admin_url();
                let server = base.rsplit_once('/').map(|(server, _)| server).unwrap();
                (format!("{server}/{name}"), Cleanup::Database(name))
            }
        };
        let vhost = TestVhost::create("orch")
            .await
            .expect("RabbitMQ with its management plugin must be running (scripts/services)");
        let mut config = Config::for_database(url);
        config.bots.http_bot_networks = orchestrator::config::BotBoundary::loopback_networks();
        config.amqp_url = vhost.amqp_url();
        tune(&mut config);
        let shutdown = CancellationToken::new();
        let app =
            Orchestrator::start(&config, shutdown.clone()).await.expect("orchestrator starts");
        let db = app.db().clone();
        let pipeline = app.pipeline().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(app.serve(listener));
        TestApp { addr, client: reqwest::Client::new(), db, pipeline, vhost, shutdown, cleanup }
    }

    /// Stops the orchestrator, as a signal does (its database stays until the drop).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Why each of the next `n` dead letters was dead-lettered, in order.
    pub async fn dead_letter_reasons(&self, n: usize) -> Vec<String> {
        let dead = self.vhost.dead_letters(n).await.unwrap();
        dead.into_iter().map(|dead| dead.reason.expect("every dead letter says why")).collect()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        read(response).await
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let response = self.client.request(method, self.url(path)).json(body).send().await.unwrap();
        read(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, body).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self.client.delete(self.url(path)).send().await.unwrap();
        read(response).await
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// The number of rows a list endpoint reports.
    pub async fn total(&self, path: &str) -> u64 {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{body}");
        body["total"].as_u64().unwrap()
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Asserts an error response: status, code and field.
#[track_caller]
pub fn assert_error(response: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (actual, body) = response;
    assert_eq!(*actual, status, "unexpected status, body: {body}");
    assert_eq!(body["error"]["code"], code, "unexpected code, body: {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "unexpected field, body: {body}"),
        None => assert!(body["error"]["field"].is_null(), "unexpected field, body: {body}"),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Database(name) => {
                // Drop runs outside async context (and during panics): use a runtime of its own.
                // WITH (FORCE) ends the test's own pooled connections too.
                let name = name.clone();
                let _ = std::thread::spawn(move || {
                    let runtime =
                        tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async move {
                        if let Ok(admin) = migrations::connect(&postgres_admin_url()).await {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await;
                        }
                    });
                    Ok::<_, std::io::Error>(())
                })
                .join();
            }
        }
    }
}

/// Runs each named async test function once per backend: `mod sqlite { … }` and
/// `mod postgres { … }`, so the whole suite proves both databases.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $test() { super::$test($crate::common::Backend::Sqlite).await })+
        }
        mod postgres {
            $(#[tokio::test] async fn $test() { super::$test($crate::common::Backend::Postgres).await })+
        }
    };
}

/// A response and the error it must be: status, code, field.
pub type ErrorCase<'a> = ((u16, Value), u16, &'a str, Option<&'a str>);
