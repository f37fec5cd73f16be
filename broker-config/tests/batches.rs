//! `consume_batches` against a real RabbitMQ, in a vhost of its own: batches are bounded, and each
//! message's decision is applied (acked, requeued, dead-lettered with its reason).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use broker_config::amqp::{self, Publisher, consume_batches};
use broker_config::testing::TestVhost;
use broker_config::topology::{self, DEAD_LETTER_QUEUE, QueueType, TASKS_EXCHANGE};
use broker_config::{BotName, ConsumerSpec, Decision, Topology};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn bot() -> BotName {
    BotName::parse("batcher").unwrap()
}

fn spec(vhost: &TestVhost) -> ConsumerSpec {
    ConsumerSpec {
        url: vhost.amqp_url(),
        name: "test-batches".into(),
        queue: topology::bot_queue(&bot()),
        topology: Topology::bot(&bot()),
        prefetch: 50,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    }
}

async fn publish_all(vhost: &TestVhost, shutdown: &CancellationToken, bodies: &[String]) {
    let publisher = Publisher::new(
        vhost.amqp_url(),
        "test-publisher",
        Topology::core().merge(Topology::bot(&bot())),
        Duration::from_secs(20),
        shutdown.clone(),
    );
    for body in bodies {
        publisher.publish(TASKS_EXCHANGE, "batcher", body.as_bytes(), true).await.unwrap();
    }
}

/// Messages ready (not held by a consumer) in `queue`.
async fn ready(channel: &lapin::Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

#[tokio::test]
async fn batches_are_bounded_and_every_message_is_handled_once() {
    let vhost = TestVhost::create("batches").await.unwrap();
    let shutdown = CancellationToken::new();
    let bodies: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    // Published before the consumer starts, so the first batches can fill.
    publish_all(&vhost, &shutdown, &bodies).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = tokio::spawn(consume_batches(
        spec(&vhost),
        10,
        Duration::from_millis(300),
        shutdown.clone(),
        {
            move |messages| {
                let _ = tx.send(messages.iter().map(|m| m.data.clone()).collect::<Vec<_>>());
                let decisions = vec![Decision::Ack; messages.len()];
                async move { decisions }
            }
        },
    ));
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    while seen.len() < bodies.len() {
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a batch within 20 s")
            .unwrap();
        sizes.push(batch.len());
        seen.extend(batch);
    }
    assert!(sizes.iter().all(|s| (1..=10).contains(s)), "batch sizes {sizes:?}");
    assert!(sizes.len() >= 3, "25 messages in batches of at most 10: {sizes:?}");
    let expected: Vec<Vec<u8>> = bodies.iter().map(|b| b.clone().into_bytes()).collect();
    assert_eq!(seen, expected, "in order, each once");
    shutdown.cancel();
    consumer.await.unwrap();
    let connection = amqp::connect(&vhost.amqp_url(), "inspector").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    assert_eq!(ready(&channel, &topology::bot_queue(&bot())).await, 0, "every message was acked");
}

#[tokio::test]
async fn decisions_apply_per_message_requeue_dead_letter_and_ack() {
    let vhost = TestVhost::create("decisions").await.unwrap();
    let shutdown = CancellationToken::new();
    let bodies: Vec<String> = ["ok-1", "requeue", "dead", "ok-2"].map(String::from).to_vec();
    publish_all(&vhost, &shutdown, &bodies).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = tokio::spawn(consume_batches(
        spec(&vhost),
        10,
        Duration::from_millis(300),
        shutdown.clone(),
        {
            move |messages| {
                let mut decisions = messages
                    .iter()
                    .map(|m| {
                        let _ = tx.send((m.data.clone(), m.redelivered));
                        match (m.data.as_slice(), m.redelivered) {
                            (b"requeue", false) => Decision::Requeue,
                            (b"dead", _) => Decision::DeadLetter("a reason; another".into()),
                            _ => Decision::Ack,
                        }
                    })
                    .collect::<Vec<_>>();
                // One decision short when ok-2 comes first: a missing decision is a requeue.
                if messages.last().is_some_and(|m| m.data == b"ok-2" && !m.redelivered) {
                    decisions.pop();
                }
                async move { decisions }
            }
        },
    ));
    let mut seen = Vec::new();
    // ok-1, requeue, dead, ok-2 (no decision: requeued), then requeue and ok-2 again, redelivered.
    while seen.len() < 6 {
        let message = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a message within 20 s")
            .unwrap();
        seen.push(message);
    }
    let mut redelivered: Vec<&[u8]> =
        seen.iter().filter(|(_, again)| *again).map(|(data, _)| data.as_slice()).collect();
    redelivered.sort();
    assert_eq!(redelivered, [b"ok-2".as_slice(), b"requeue".as_slice()]);

    let connection = amqp::connect(&vhost.amqp_url(), "inspector").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let options = BasicGetOptions { no_ack: true };
            if let Some(message) =
                channel.basic_get(DEAD_LETTER_QUEUE.into(), options).await.unwrap()
            {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the dead letter reaches botline.dead");
    assert_eq!(dead.delivery.data, b"dead");
    let headers = dead.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get("x-botline-reason"),
        Some(&AMQPValue::LongString("a reason; another".into()))
    );
    shutdown.cancel();
    consumer.await.unwrap();
    assert_eq!(ready(&channel, &topology::bot_queue(&bot())).await, 0, "nothing left behind");
    let options = BasicGetOptions { no_ack: true };
    assert!(
        channel.basic_get(DEAD_LETTER_QUEUE.into(), options).await.unwrap().is_none(),
        "only the one dead letter"
    );
}

/// A consumer of the bot queue of type `queue_type` that fails after `max_failures` failures,
/// and a publisher that declares the same queue.
fn retry_spec(vhost: &TestVhost, queue_type: QueueType, max_failures: u32) -> ConsumerSpec {
    ConsumerSpec {
        topology: Topology::bot(&bot()).with_queue_type(queue_type),
        max_failures,
        ..spec(vhost)
    }
}

async fn publish_to(
    vhost: &TestVhost,
    queue_type: QueueType,
    shutdown: &CancellationToken,
    bodies: &[&str],
) {
    let publisher = Publisher::new(
        vhost.amqp_url(),
        "test-publisher",
        Topology::core().merge(Topology::bot(&bot())).with_queue_type(queue_type),
        Duration::from_secs(20),
        shutdown.clone(),
    );
    for body in bodies {
        publisher.publish(TASKS_EXCHANGE, "batcher", body.as_bytes(), true).await.unwrap();
    }
}

/// What a handler saw of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    data: String,
    failures: u32,
    routing_key: String,
    message_id: Option<String>,
}

impl Seen {
    fn of(message: &broker_config::Message) -> Seen {
        Seen {
            data: String::from_utf8_lossy(&message.data).into_owned(),
            failures: message.failures,
            routing_key: message.routing_key.clone(),
            message_id: message.message_id.clone(),
        }
    }
}

/// A message whose handling keeps failing ([`Decision::Retry`]) is handled exactly
/// `max_failures` times, each retry counted and put behind what was queued, then dead-lettered
/// with the count and the last reason, its routing key and message id kept; the messages
/// published after it are handled meanwhile, and nothing is left in the queue.
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_limit(queue_type: QueueType) {
    let vhost = TestVhost::create("retries").await.unwrap();
    let shutdown = CancellationToken::new();
    publish_to(&vhost, queue_type, &shutdown, &["poison", "ok-1", "ok-2"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = tokio::spawn(consume_batches(
        retry_spec(&vhost, queue_type, 3),
        10,
        Duration::from_millis(300),
        shutdown.clone(),
        move |messages| {
            let decisions: Vec<Decision> = messages
                .iter()
                .map(|m| {
                    let _ = tx.send(Seen::of(m));
                    if m.data == b"poison" {
                        Decision::Retry(format!("poisoned, try {}", m.failures + 1))
                    } else {
                        Decision::Ack
                    }
                })
                .collect();
            async move { decisions }
        },
    ));
    let dead = vhost.dead_letters(1).await.unwrap();
    shutdown.cancel();
    consumer.await.unwrap();
    let mut seen = Vec::new();
    while let Ok(message) = rx.try_recv() {
        seen.push(message);
    }
    let poison: Vec<&Seen> = seen.iter().filter(|s| s.data == "poison").collect();
    assert_eq!(
        poison.iter().map(|s| s.failures).collect::<Vec<_>>(),
        [0, 1, 2],
        "handled 3 times, counted: {seen:?}"
    );
    assert!(
        poison.iter().all(|s| s.routing_key == "batcher" && s.message_id == poison[0].message_id),
        "every copy has the message's routing key and id: {seen:?}"
    );
    let position = |data: &str, failures: u32| {
        seen.iter().position(|s| s.data == data && s.failures == failures).unwrap()
    };
    assert!(position("ok-2", 0) < position("poison", 1), "a retry goes behind: {seen:?}");
    assert_eq!(seen.len(), 5, "ok-1 and ok-2 once each: {seen:?}");
    assert_eq!(dead[0].data, b"poison");
    assert_eq!(dead[0].reason.as_deref(), Some("failed 3 times: poisoned, try 3"));
    assert_eq!(dead[0].failures, Some(3));
    assert_eq!(dead[0].routing_key, "batcher");
    assert_eq!(dead[0].message_id, poison[0].message_id);
    let connection = amqp::connect(&vhost.amqp_url(), "inspector").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    assert_eq!(ready(&channel, &topology::bot_queue(&bot())).await, 0, "nothing left behind");
    assert_eq!(ready(&channel, DEAD_LETTER_QUEUE).await, 0, "one dead letter, taken");
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_limit_on_a_classic_queue() {
    a_message_that_keeps_failing_is_dead_lettered_after_the_limit(QueueType::Classic).await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_after_the_limit_on_a_quorum_queue() {
    a_message_that_keeps_failing_is_dead_lettered_after_the_limit(QueueType::Quorum).await;
}

/// [`Decision::Requeue`] (the database is down) is not a failure: a message requeued more times
/// than the limit is handled once it can be, never dead-lettered.
#[tokio::test]
async fn requeued_messages_are_not_counted_as_failures() {
    let vhost = TestVhost::create("requeues").await.unwrap();
    let shutdown = CancellationToken::new();
    publish_to(&vhost, QueueType::Classic, &shutdown, &["flaky"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut deliveries = 0;
    let consumer = tokio::spawn(consume_batches(
        retry_spec(&vhost, QueueType::Classic, 2),
        10,
        Duration::ZERO,
        shutdown.clone(),
        move |messages| {
            deliveries += 1;
            let _ = tx.send(messages.iter().map(Seen::of).collect::<Vec<_>>());
            let decision = if deliveries <= 4 { Decision::Requeue } else { Decision::Ack };
            let decisions = vec![decision; messages.len()];
            async move { decisions }
        },
    ));
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let batch = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a delivery within 20 s")
            .unwrap();
        seen.extend(batch);
    }
    shutdown.cancel();
    consumer.await.unwrap();
    assert!(seen.iter().all(|s| s.data == "flaky" && s.failures == 0), "{seen:?}");
    let connection = amqp::connect(&vhost.amqp_url(), "inspector").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    assert_eq!(ready(&channel, DEAD_LETTER_QUEUE).await, 0, "never dead-lettered");
    assert_eq!(ready(&channel, &topology::bot_queue(&bot())).await, 0, "acked at last");
}

/// A handler that panics fails its message as [`Decision::Retry`] would (dead-lettered after the
/// limit with the panic's message) and the consumer goes on with the next message.
#[tokio::test]
async fn a_handler_that_panics_fails_its_message_and_the_consumer_goes_on() {
    let vhost = TestVhost::create("panics").await.unwrap();
    let shutdown = CancellationToken::new();
    publish_to(&vhost, QueueType::Classic, &shutdown, &["boom", "after"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(broker_config::consume(
        retry_spec(&vhost, QueueType::Classic, 2),
        shutdown.clone(),
        move |message| {
            let tx = tx.clone();
            async move {
                assert!(message.data != b"boom", "cannot handle boom");
                let _ = tx.send(message.data);
                Decision::Ack
            }
        },
    ));
    let dead = vhost.dead_letters(1).await.unwrap();
    assert_eq!(dead[0].data, b"boom");
    let reason = dead[0].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("failed 2 times: the handler panicked: cannot handle boom"),
        "{reason}"
    );
    let after = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap();
    assert_eq!(after.as_deref(), Some(&b"after"[..]));
    shutdown.cancel();
}
