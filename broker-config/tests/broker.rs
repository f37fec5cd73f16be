//! The topology, publisher and consumer against a real RabbitMQ, each test in its own vhost.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use broker_config::amqp::{self, Hearing, Publisher};
use broker_config::testing::TestVhost;
use broker_config::topology::{self, DEAD_LETTER_QUEUE, QueueType, TASKS_EXCHANGE};
use broker_config::{BotName, ConsumerSpec, Decision, Published, Topology, consume};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn bot() -> BotName {
    BotName::parse("bot-1").unwrap()
}

fn publisher(vhost: &TestVhost, shutdown: &CancellationToken) -> Publisher {
    Publisher::new(
        vhost.amqp_url(),
        "test-publisher",
        Topology::core().merge(Topology::bot(&bot())),
        Duration::from_secs(20),
        shutdown.clone(),
    )
}

/// Starts a consumer of the bot's queue that forwards every body and answers `decision`.
fn spawn_consumer(
    vhost: &TestVhost,
    shutdown: &CancellationToken,
    decision: Decision,
) -> mpsc::UnboundedReceiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        url: vhost.amqp_url(),
        name: "test-consumer".into(),
        queue: topology::bot_queue(&bot()),
        topology: Topology::bot(&bot()),
        prefetch: 10,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    };
    tokio::spawn(consume(spec, shutdown.clone(), move |message| {
        let _ = tx.send((message.data, message.redelivered));
        let decision = decision.clone();
        async move { decision }
    }));
    rx
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<(Vec<u8>, bool)>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a message within 20 s")
        .unwrap()
        .0
}

#[tokio::test]
async fn topology_is_declared_idempotently() {
    let vhost = TestVhost::create("topology").await.unwrap();
    let shutdown = CancellationToken::new();
    let connection = amqp::connect(&vhost.amqp_url(), "declarer").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let full = Topology::core().merge(Topology::bot(&bot()));
    full.declare(&channel).await.unwrap();
    full.declare(&channel).await.expect("declaring again changes nothing and does not fail");
    let mut queues = vhost.queue_names().await.unwrap();
    queues.sort();
    assert_eq!(
        queues,
        [
            "botline.attendance.etl",
            "botline.bot.bot-1",
            "botline.dead",
            "botline.monitoring.incidents",
            "botline.orchestrator.events"
        ]
    );
    let events = vhost.queue("botline.orchestrator.events").await.unwrap();
    assert_eq!(events["durable"], true);
    assert_eq!(events["arguments"]["x-dead-letter-exchange"], "botline.dlx");
    shutdown.cancel();
}

#[tokio::test]
async fn confirmed_publishes_reach_the_consumer_and_unroutable_ones_are_reported() {
    let vhost = TestVhost::create("confirm").await.unwrap();
    let shutdown = CancellationToken::new();
    let publisher = publisher(&vhost, &shutdown);
    publisher.connect().await.unwrap();
    let mut received = spawn_consumer(&vhost, &shutdown, Decision::Ack);
    assert_eq!(
        publisher.publish(TASKS_EXCHANGE, "bot-1", b"hello", true).await.unwrap(),
        Published::Delivered
    );
    assert_eq!(receive(&mut received).await, b"hello");
    assert_eq!(
        publisher.publish(TASKS_EXCHANGE, "no-such-bot", b"lost", true).await.unwrap(),
        Published::Unroutable,
        "a mandatory publish nobody can receive comes back"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn both_sides_recover_when_the_broker_closes_every_connection() {
    let vhost = TestVhost::create("recover").await.unwrap();
    let shutdown = CancellationToken::new();
    let publisher = publisher(&vhost, &shutdown);
    publisher.connect().await.unwrap();
    let mut received = spawn_consumer(&vhost, &shutdown, Decision::Ack);
    for i in 0..3 {
        publisher
            .publish(TASKS_EXCHANGE, "bot-1", format!("before-{i}").as_bytes(), true)
            .await
            .unwrap();
    }
    for i in 0..3 {
        assert_eq!(receive(&mut received).await, format!("before-{i}").as_bytes());
    }

    let closed = vhost.close_connections(2).await.unwrap();
    assert!(closed >= 2, "the publisher's and the consumer's connections were closed ({closed})");
    for i in 0..3 {
        // Each publish finds its channel dead, reconnects, re-declares and is confirmed.
        publisher
            .publish(TASKS_EXCHANGE, "bot-1", format!("after-{i}").as_bytes(), true)
            .await
            .unwrap();
    }
    let mut after = Vec::new();
    while after.len() < 3 {
        let body = String::from_utf8(receive(&mut received).await).unwrap();
        if !after.contains(&body) {
            after.push(body);
        }
    }
    assert_eq!(
        after,
        ["after-0", "after-1", "after-2"],
        "the consumer reconnected and lost nothing"
    );
    assert!(publisher.is_connected().await);
    shutdown.cancel();
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_their_reason() {
    let vhost = TestVhost::create("deadletter").await.unwrap();
    let shutdown = CancellationToken::new();
    let publisher = publisher(&vhost, &shutdown);
    publisher.connect().await.unwrap();
    let mut received = spawn_consumer(
        &vhost,
        &shutdown,
        Decision::DeadLetter("malformed message: expected value".into()),
    );
    publisher.publish(TASKS_EXCHANGE, "bot-1", b"{not json", true).await.unwrap();
    assert_eq!(receive(&mut received).await, b"{not json");

    let connection = amqp::connect(&vhost.amqp_url(), "inspector").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(message) = channel
                .basic_get(
                    DEAD_LETTER_QUEUE.into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap()
            {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the message reaches botline.dead");
    assert_eq!(dead.delivery.data, b"{not json");
    let headers = dead.delivery.properties.headers().clone().unwrap();
    let reason = headers.inner().get("x-botline-reason").unwrap();
    assert_eq!(
        format!("{reason:?}"),
        format!(
            "{:?}",
            lapin::types::AMQPValue::LongString("malformed message: expected value".into())
        )
    );
    shutdown.cancel();
}

#[tokio::test]
async fn quorum_queues_carry_offers_and_dead_letter_like_classic_ones() {
    let vhost = TestVhost::create("quorum").await.unwrap();
    let shutdown = CancellationToken::new();
    let quorum = |t: Topology| t.with_queue_type(QueueType::Quorum);
    let publisher = Publisher::new(
        vhost.amqp_url(),
        "test-publisher",
        quorum(Topology::core().merge(Topology::bot(&bot()))),
        Duration::from_secs(20),
        shutdown.clone(),
    );
    publisher.connect().await.unwrap();
    for queue in ["botline.bot.bot-1", "botline.orchestrator.events", "botline.dead"] {
        assert_eq!(vhost.queue(queue).await.unwrap()["type"], "quorum", "{queue}");
    }
    // Every program of a deployment must agree: RabbitMQ refuses the other type.
    let connection = amqp::connect(&vhost.amqp_url(), "classic-declarer").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let refused = Topology::bot(&bot()).declare(&channel).await.unwrap_err().to_string();
    assert!(refused.contains("x-queue-type"), "{refused}");

    let (tx, mut received) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        url: vhost.amqp_url(),
        name: "test-consumer".into(),
        queue: topology::bot_queue(&bot()),
        topology: quorum(Topology::bot(&bot())),
        prefetch: 10,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    };
    tokio::spawn(consume(spec, shutdown.clone(), move |message| {
        let _ = tx.send(message.data.clone());
        let decision = match message.data.as_slice() {
            b"poison" => Decision::DeadLetter("poison, as told".into()),
            _ => Decision::Ack,
        };
        async move { decision }
    }));
    for body in [&b"offer"[..], b"poison"] {
        let published = publisher.publish(TASKS_EXCHANGE, "bot-1", body, true).await.unwrap();
        assert_eq!(published, Published::Delivered);
        let got = tokio::time::timeout(Duration::from_secs(20), received.recv()).await.unwrap();
        assert_eq!(got.unwrap(), body);
    }
    let dead = vhost.dead_letters(1).await.unwrap();
    assert_eq!(dead[0].reason.as_deref(), Some("poison, as told"), "{dead:?}");
    shutdown.cancel();
}

#[test]
fn the_committed_definitions_file_matches_the_code() {
    let committed: serde_json::Value = serde_json::from_str(include_str!("../definitions.json"))
        .expect("definitions.json is JSON");
    let generated = Topology::core().to_definitions("/");
    assert_eq!(
        committed, generated,
        "broker-config/definitions.json is stale: run `cargo run -p broker-config > broker-config/definitions.json`"
    );
}

/// Waits (20 s at most) until `hearing` says what `wanted` accepts; what it said last.
async fn until_hearing(
    hearing: &Hearing,
    wanted: impl Fn(Option<chrono::DateTime<chrono::Utc>>) -> bool,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = hearing.heard_since();
        if wanted(now) {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "hearing still says {now:?} after 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_consumer_is_deaf_without_a_subscription_and_hears_from_each_one() {
    let vhost = TestVhost::create("hearing").await.unwrap();
    let shutdown = CancellationToken::new();
    let began = chrono::Utc::now();
    let spec = |url: String, hearing: &Hearing| ConsumerSpec {
        url,
        name: "test-hearing".into(),
        queue: topology::bot_queue(&bot()),
        topology: Topology::bot(&bot()),
        prefetch: 10,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: Some(hearing.clone()),
    };
    let ack = |_| async { Decision::Ack };

    // Nothing listens on port 1: it never subscribes, and is deaf from its first attempt.
    let unreachable = Hearing::since(began);
    let url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned();
    tokio::spawn(consume(spec(url, &unreachable), shutdown.clone(), ack));
    until_hearing(&unreachable, |since| since.is_none()).await;

    let hearing = Hearing::since(began - chrono::Duration::hours(1));
    tokio::spawn(consume(spec(vhost.amqp_url(), &hearing), shutdown.clone(), ack));
    let first = until_hearing(&hearing, |since| since.is_some_and(|at| at >= began)).await;
    let first = first.unwrap();
    let closed_at = chrono::Utc::now();
    assert!(vhost.close_connections(1).await.unwrap() >= 1);
    // Subscribed again: it hears from then, not from its first subscription.
    let again = until_hearing(&hearing, |since| since.is_some_and(|at| at > first)).await;
    assert!(again.unwrap() >= closed_at, "{again:?} is after the connection was closed");
    shutdown.cancel();
}
