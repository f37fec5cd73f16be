//! AMQP over TLS against RabbitMQ's real TLS listener (127.0.0.1:5671, set up with a test CA by
//! `scripts/services`), each test in its own vhost.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use broker_config::amqp::{self, Publisher};
use broker_config::testing::{TestVhost, test_ca, tls_dir};
use broker_config::tls::AmqpTlsArgs;
use broker_config::topology::{self, TASKS_EXCHANGE};
use broker_config::{BotName, ConsumerSpec, Decision, Published, Topology, consume};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn bot() -> BotName {
    BotName::parse("bot-tls").unwrap()
}

/// The management API's view of the connection named `name`, once it lists it (30 s at most).
async fn connection(vhost: &TestVhost, name: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = vhost.connections().await.unwrap();
        let found = listed.into_iter().find(|c| {
            c["client_properties"]["connection_name"].as_str() == Some(name) && !c["ssl"].is_null()
        });
        if let Some(found) = found {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "connection {name} never listed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_publisher_and_a_consumer_round_trip_a_message_over_amqps() {
    let vhost = TestVhost::create("tls").await.unwrap();
    let url = vhost.amqps_url(&test_ca());
    assert!(url.starts_with("amqps://"), "{url}");
    let shutdown = CancellationToken::new();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        url: url.clone(),
        name: "test-tls-consumer".into(),
        queue: topology::bot_queue(&bot()),
        topology: Topology::bot(&bot()),
        prefetch: 1,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    };
    tokio::spawn(consume(spec, shutdown.clone(), move |message| {
        let _ = tx.send(message.data);
        async { Decision::Ack }
    }));
    let publisher = Publisher::new(
        url,
        "test-tls-publisher",
        Topology::core().merge(Topology::bot(&bot())),
        Duration::from_secs(20),
        shutdown.clone(),
    );
    publisher.connect().await.expect("a TLS connection trusting the test CA");

    let published =
        publisher.publish(TASKS_EXCHANGE, bot().as_str(), b"over TLS", true).await.unwrap();
    assert_eq!(published, Published::Delivered);
    let received = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    assert_eq!(received.expect("the message within 20 s").unwrap(), b"over TLS");

    // RabbitMQ itself says the connections are TLS, not only our URL.
    for name in ["test-tls-publisher", "test-tls-consumer"] {
        let described = connection(&vhost, name).await;
        assert_eq!(described["ssl"], true, "{name}: {described}");
        assert_eq!(described["port"], 5671, "{name}: {described}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let vhost = TestVhost::create("tls-wrong-ca").await.unwrap();
    let other_ca =
        AmqpTlsArgs { amqp_ca_file: Some(tls_dir().join("other-ca.pem")), ..Default::default() };
    // The test CA is in no system store either: without a CA file the server is refused too.
    for tls in [other_ca, AmqpTlsArgs::default()] {
        let url = vhost.amqps_url(&tls);
        let error = amqp::connect(&url, "test-tls-refused").await.expect_err(&url).to_string();
        assert!(error.contains("TLS handshake"), "{url}: {error}");
        assert!(error.contains("certificate"), "{url}: {error}");
        assert!(!error.contains("guest:guest"), "{url}: {error}");
    }
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_rabbitmq() {
    let vhost = TestVhost::create("tls-client").await.unwrap();
    let tls = AmqpTlsArgs {
        amqp_cert_file: Some(tls_dir().join("client.pem")),
        amqp_key_file: Some(tls_dir().join("client-key.pem")),
        ..test_ca()
    };
    let connection =
        amqp::connect(&vhost.amqps_url(&tls), "test-tls-client-cert").await.expect("connected");
    let described = self::connection(&vhost, "test-tls-client-cert").await;
    let subject = described["peer_cert_subject"].as_str().unwrap_or_default();
    assert!(subject.contains("botline-test-client"), "{described}");
    let _ = connection.close(200, "done".into()).await;

    // A key that is not the certificate's is refused before anything is sent.
    let mismatched = AmqpTlsArgs {
        amqp_cert_file: Some(tls_dir().join("server.pem")),
        amqp_key_file: Some(tls_dir().join("client-key.pem")),
        ..test_ca()
    };
    let error = amqp::connect(&vhost.amqps_url(&mismatched), "test-tls-mismatch")
        .await
        .expect_err("a key that does not fit the certificate")
        .to_string();
    assert!(error.contains("AMQP TLS configuration"), "{error}");
}

#[tokio::test]
async fn amqps_against_the_plain_listener_fails_with_a_tls_error() {
    let vhost = TestVhost::create("tls-plain-port").await.unwrap();
    let url = vhost.amqps_url(&test_ca()).replace(":5671", ":5672");
    let error = amqp::connect(&url, "test-tls-plain-port").await.expect_err(&url).to_string();
    assert!(error.contains("TLS handshake"), "{error}");
}
