//! `consume_batches` against a real RabbitMQ, in a vhost of its own: batches are bounded, and each
//! message's decision is applied (acked, requeued, dead-lettered with its reason).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use broker_config::amqp::{self, Publisher, consume_batches};
use broker_config::testing::TestVhost;
use broker_config::topology::{self, DEAD_LETTER_QUEUE, TASKS_EXCHANGE};
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
