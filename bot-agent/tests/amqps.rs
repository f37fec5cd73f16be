//! End to end over AMQP with TLS: the orchestrator (in-process, its CA given as its flag would)
//! and a bot agent (the real binary, configured by environment) both reach RabbitMQ through its
//! TLS listener (127.0.0.1:5671, set up by `scripts/services`) and complete a NOOP task.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[macro_use]
mod common;

use std::process::Stdio;

use std::time::Duration;

use bot_agent::AgentConfig;
use broker_config::testing::{amqp_server, amqps_server, test_ca, tls_dir};
use broker_config::{BotName, System};
use common::world::World;
use serde_json::json;

#[tokio::test]
async fn the_orchestrator_and_a_bot_complete_a_task_over_amqps() {
    let world = World::start_with(0, |config| {
        // The same vhost, through the TLS listener, verified against the test CA.
        config.amqp_url = config.amqp_url.replacen(&amqp_server(), &amqps_server(), 1);
        config.amqp_tls = test_ca();
    })
    .await;

    let plain = world.vhost.amqp_url();
    let amqps = plain.replacen(&amqp_server(), &amqps_server(), 1);
    assert!(amqps.starts_with("amqps://"), "{amqps}");
    let mut bot = world
        .bot_process("tls-bot", "noop")
        .env("BOTLINE_AMQP_URL", &amqps)
        .env("BOTLINE_AMQP_CA_FILE", tls_dir().join("ca.pem"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("the bot-agent binary starts");

    let id = world
        .create_task(json!({"description": "nap over TLS", "system": "NOOP", "payload": {"duration_ms": 10}}))
        .await;
    let task = world.wait_status(&id, "COMPLETE").await;
    assert!(task["bot_id"].is_string(), "{task}");

    // Every connection to the vhost is TLS, the bot's among them (the management API lists a
    // new connection a few seconds late).
    wait_until!("the bot's connection listed", {
        let listed = world.vhost.connections().await.unwrap();
        for connection in &listed {
            assert_eq!(connection["ssl"], true, "a plain connection: {connection}");
        }
        listed.iter().any(|c| {
            c["client_properties"]["connection_name"].as_str() == Some("bot-agent tls-bot")
        })
    });

    let _ = bot.kill();
    let output = bot.wait_with_output().unwrap();
    let logged = String::from_utf8_lossy(&output.stderr);
    assert!(!logged.contains("guest:guest"), "the broker password in the bot's logs: {logged}");
}

#[tokio::test]
async fn a_bot_whose_ca_file_is_missing_stops_at_once_saying_which() {
    let mut config = AgentConfig::new(
        BotName::parse("tls-no-ca").unwrap(),
        vec![System::NOOP],
        "amqps://guest:s3cret@127.0.0.1:5671/%2f",
    );
    config.amqp_tls.amqp_ca_file = Some("/nonexistent/botline-ca.pem".into());
    let stop = tokio_util::sync::CancellationToken::new();
    let ran = tokio::time::timeout(Duration::from_secs(30), bot_agent::run(config, stop)).await;
    let error =
        ran.expect("the agent stops instead of retrying").expect_err("no CA file").to_string();
    assert!(error.contains("/nonexistent/botline-ca.pem"), "{error}");
    assert!(!error.contains("s3cret"), "{error}");
}
