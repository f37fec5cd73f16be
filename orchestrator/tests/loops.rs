//! The loops beside the API are watched: one that ends before shutdown (made to, by the
//! failpoint `BOTLINE_END_LOOP`) stops the real binary with an error naming it, against a real
//! broker and database; a shutdown by the token still stops `serve` cleanly.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use broker_config::testing::TestVhost;
use orchestrator::{Config, Orchestrator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a stopped orchestrator may take to exit before the test gives up on it.
const EXIT_WITHIN: Duration = Duration::from_secs(60);

fn sqlite_url(name: &str) -> (String, std::path::PathBuf) {
    let path =
        std::env::temp_dir().join(format!("botline-loops-{name}-{}.db", uuid::Uuid::new_v4()));
    (format!("sqlite://{}?mode=rwc", path.display()), path)
}

/// Runs the orchestrator with `BOTLINE_END_LOOP=end_loop` until it exits (killed after
/// [`EXIT_WITHIN`]): its exit code and what it wrote to stderr.
async fn run_with_a_loop_ended(end_loop: &str) -> (Option<i32>, String) {
    let vhost = TestVhost::create("loops").await.expect("RabbitMQ (scripts/services)");
    let (database, path) = sqlite_url("binary");
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("BOTLINE_")) {
        command.env_remove(name);
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .env("BOTLINE_LISTEN", "127.0.0.1:0")
        .env("BOTLINE_DATABASE_URL", &database)
        .env("BOTLINE_AMQP_URL", vhost.amqp_url())
        .env(orchestrator::failpoint::END_LOOP, end_loop)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + EXIT_WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            panic!("still running {EXIT_WITHIN:?} after the {end_loop} loop ended: {stderr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = child.wait_with_output().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    (status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn a_loop_that_panics_stops_the_orchestrator_with_an_error_naming_it() {
    let (code, stderr) = run_with_a_loop_ended("dispatcher").await;
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "error: the dispatcher loop panicked: failpoint BOTLINE_END_LOOP=dispatcher"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_loop_that_returns_stops_the_orchestrator_too() {
    let (code, stderr) = run_with_a_loop_ended("attendance-etl:return").await;
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the attendance-etl loop returned before shutdown"),
        "{stderr}"
    );
}

/// Without a failpoint every loop runs until the token fires; then `serve` returns `Ok` once
/// they all stopped, and the token it was given is the one that stopped them.
#[tokio::test]
async fn a_shutdown_by_the_token_stops_serve_cleanly() {
    let vhost = TestVhost::create("loops").await.expect("RabbitMQ (scripts/services)");
    let (database, path) = sqlite_url("clean");
    let mut config = Config::for_database(database);
    config.amqp_url = vhost.amqp_url();
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::start(&config, shutdown.clone()).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = tokio::spawn(orchestrator.serve(listener));
    let ready = format!("http://{address}/readyz");
    let mut answered = false;
    for _ in 0..100 {
        if reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the API answers /readyz");
    assert!(!served.is_finished(), "serve runs until the token fires");
    shutdown.cancel();
    let result = tokio::time::timeout(EXIT_WITHIN, served).await.expect("serve stops").unwrap();
    assert!(result.is_ok(), "{result:?}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
