//! The demo end to end, in-process: its own RabbitMQ vhost and SQLite file, the API on a free
//! port. Every sample task must complete, through the real bots and stand-ins.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use botline_demo::{DemoAddresses, StandInPorts, run_demo};
use broker_config::https::HttpsClient;
use broker_config::testing::TestVhost;
use orchestrator::Config;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How long the samples may take to finish (they take seconds: NOOP naps of 1.5 to 6 s, an
/// equipment configuration of 3 s) before the test gives up.
const PATIENCE: Duration = Duration::from_secs(120);

async fn get(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_demo_runs_every_sample_task_to_completion_and_stops() {
    let vhost = TestVhost::create("demo")
        .await
        .expect("RabbitMQ with the management plugin (scripts/services)");
    let db =
        std::env::temp_dir().join(format!("botline-demo-{}.db", uuid::Uuid::new_v4().simple()));
    let mut config = Config::for_database(format!("sqlite://{}?mode=rwc", db.display()));
    config.amqp_url = vhost.amqp_url();
    config.listen = "127.0.0.1:0".parse().unwrap();

    // Any free ports: the usual ones may be taken by a demo someone runs.
    let ports = StandInPorts { portal_port: 0, equipment_port: 0, sink_port: 0 };
    let shutdown = CancellationToken::new();
    let (ready, addresses) = tokio::sync::oneshot::channel::<DemoAddresses>();
    let demo = tokio::spawn(run_demo(
        config.clone(),
        ports,
        shutdown.clone(),
        move |at: &DemoAddresses| {
            let _ = ready.send(at.clone());
        },
    ));
    let at = addresses.await.expect("the demo starts (or its error is in the join below)");
    assert!(at.seeded, "a new database gets the samples");
    let api = format!("http://{}", at.api);
    let http = reqwest::Client::new();

    // Every sample task ends, and ends COMPLETE.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let tasks = loop {
        let page = get(&http, &format!("{api}/api/v1/tasks?order=oldest&limit=100")).await;
        let tasks = page["items"].as_array().unwrap().clone();
        let ended =
            |t: &Value| matches!(t["status"].as_str(), Some("COMPLETE" | "FAILED" | "CANCELLED"));
        if !tasks.is_empty() && tasks.iter().all(ended) {
            break tasks;
        }
        assert!(tokio::time::Instant::now() < deadline, "samples still running: {tasks:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(tasks.len(), 7, "{tasks:#?}");
    for task in &tasks {
        assert_eq!(task["status"], "COMPLETE", "{task:#}");
    }

    // The bots really went through the stand-ins: users in the portal, a configured device.
    let users = get(&http, &format!("http://{}/_control/users", at.portal)).await;
    let logins: Vec<&str> =
        users["users"].as_array().unwrap().iter().filter_map(|u| u["login"].as_str()).collect();
    // The March hires, and the one April hire the portal accepts (the others it refuses).
    assert!(logins.contains(&"ana.souza") && logins.contains(&"fabio.nunes"), "{logins:?}");
    assert!(!logins.contains(&"hugo.alves"), "an unknown profile is refused: {logins:?}");
    let equipment = HttpsClient::insecure().unwrap();
    let requests = equipment
        .get(&format!("https://{}/_control/requests", at.equipment), Duration::from_secs(10))
        .await
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(requests["counts"]["DEMO000001"], 1, "{requests:#}");
    // The classic incident action is loaded.
    let actions = get(&http, &format!("{api}/api/v1/actions")).await;
    assert!(actions.to_string().contains("LOGIN_UNAVAILABLE"), "{actions:#}");

    shutdown.cancel();
    demo.await.unwrap().unwrap();

    // A second run on the same database does not add the samples again.
    let shutdown = CancellationToken::new();
    let (ready, addresses) = tokio::sync::oneshot::channel::<DemoAddresses>();
    let again =
        tokio::spawn(run_demo(config, ports, shutdown.clone(), move |at: &DemoAddresses| {
            let _ = ready.send(at.clone());
        }));
    let at = addresses.await.expect("the demo starts again");
    assert!(!at.seeded, "the samples are there already");
    let page = get(&http, &format!("http://{}/api/v1/tasks?limit=100", at.api)).await;
    assert_eq!(page["total"], 7, "no duplicate samples: {page:#}");
    shutdown.cancel();
    again.await.unwrap().unwrap();
    let _ = std::fs::remove_file(&db);
    vhost.delete().await.unwrap();
}
