//! The dead-letter queue read and settled over AMQP (`broker_config::dead_letters`) against a real
//! RabbitMQ, in a vhost of its own: a look leaves every message in its place, a discard removes
//! only what was named, and a replay reaches the queue the message failed on as its publisher's.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use broker_config::access::Permissions;
use broker_config::amqp::{Message, Publisher, consume_batches};
use broker_config::dead_letters::{DeadLetterQueue, DeadLetters, Refusal, Settle};
use broker_config::testing::TestVhost;
use broker_config::topology::{DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, ORCHESTRATOR_EVENTS_QUEUE};
use broker_config::{ConsumerSpec, Decision, Topology};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The orchestrator's events queue, consumed as the orchestrator would (the vhost's user, which
/// the dead-letter queue's reader also is).
fn spec(vhost: &TestVhost) -> ConsumerSpec {
    ConsumerSpec {
        url: vhost.amqp_url(),
        name: "test-dead-letters".into(),
        queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
        topology: Topology::core(),
        prefetch: 10,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    }
}

/// Consumes the events queue with `decide` until `n` messages were handled, then stops; answers
/// them as the handler saw them.
async fn consume(
    vhost: &TestVhost,
    n: usize,
    decide: impl Fn(&Message) -> Decision + Send + Sync + Clone + 'static,
) -> Vec<Message> {
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = tokio::spawn(consume_batches(
        spec(vhost),
        10,
        Duration::ZERO,
        shutdown.clone(),
        move |messages| {
            let decisions: Vec<Decision> = messages.iter().map(&decide).collect();
            for message in messages {
                let _ = tx.send(message.clone());
            }
            async move { decisions }
        },
    ));
    let mut seen = Vec::new();
    while seen.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a message within 20 s")
            .unwrap();
        seen.push(message);
    }
    // Dead letters are confirmed before their messages are acked: once the consumer stops, they
    // are in the dead-letter queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    consumer.await.unwrap();
    seen
}

fn bodies(letters: &DeadLetters) -> Vec<&str> {
    letters.items.iter().map(|letter| letter.body_preview.as_str()).collect()
}

#[tokio::test]
async fn dead_letters_are_read_in_place_discarded_or_replayed_as_their_publisher() {
    let vhost = TestVhost::create("dead-letters").await.unwrap();
    let shutdown = CancellationToken::new();
    // Published by a user of its own, as a bot's events are: a replay must keep it.
    let user = format!("{}-pub", vhost.name());
    let all = Permissions { configure: ".*".into(), write: ".*".into(), read: ".*".into() };
    vhost.create_user(&user, "secret", &all).await.unwrap();
    let publisher = Publisher::new(
        vhost.amqp_url_as(&user, "secret"),
        "test-publisher",
        Topology::core(),
        Duration::from_secs(20),
        shutdown.clone(),
    );
    for body in ["first", "second", "third"] {
        publisher.publish(EVENTS_EXCHANGE, "task.status", body.as_bytes(), true).await.unwrap();
    }
    let refused = consume(&vhost, 3, |m| {
        Decision::DeadLetter(format!("refused {}", String::from_utf8_lossy(&m.data)))
    })
    .await;
    assert_eq!(refused.len(), 3);

    let queue = DeadLetterQueue::new(vhost.amqp_url(), "test-dead-letter-queue");
    let seen = queue.peek(10).await.unwrap();
    assert_eq!((seen.total, bodies(&seen)), (3, vec!["first", "second", "third"]));
    let first = &seen.items[0];
    assert_eq!(first.queue.as_deref(), Some(ORCHESTRATOR_EVENTS_QUEUE));
    assert_eq!(first.reason.as_deref(), Some("refused first"));
    assert_eq!(first.routing_key, "task.status");
    assert_eq!(first.publisher.as_deref(), Some(user.as_str()));
    assert_eq!((first.body_bytes, first.copies, first.replayable), (5, 1, true));
    assert!(first.dead_lettered_at.is_some());
    // A look puts everything back where it was, under the same ids; a smaller look sees the head.
    assert_eq!(queue.peek(10).await.unwrap(), seen);
    let head = queue.peek(1).await.unwrap();
    assert_eq!((head.total, bodies(&head)), (3, vec!["first"]));
    assert_eq!(queue.count().await.unwrap(), 3);

    // A discard removes what it names and nothing else; an id not there is said so.
    let ids = [seen.items[0].id.clone(), "0".repeat(32)];
    let discarded = queue.settle(&ids, Settle::Discard).await.unwrap();
    assert_eq!(discarded[&ids[0]], Ok(()));
    assert_eq!(discarded[&ids[1]], Err(Refusal::NotFound));
    let left = queue.peek(10).await.unwrap();
    assert_eq!((left.total, bodies(&left)), (2, vec!["second", "third"]));

    // A replay puts the message at the end of its queue, and its consumer sees it as the
    // original publisher's, with its routing key.
    let replayed =
        queue.settle(std::slice::from_ref(&seen.items[2].id), Settle::Replay).await.unwrap();
    assert_eq!(replayed[&seen.items[2].id], Ok(()));
    let left = queue.peek(10).await.unwrap();
    assert_eq!((left.total, bodies(&left)), (1, vec!["second"]));
    let again = consume(&vhost, 1, |_| Decision::Ack).await;
    assert_eq!(again[0].data, b"third");
    assert_eq!(again[0].user_id.as_deref(), Some(user.as_str()));
    assert_eq!(again[0].routing_key, "task.status");

    // A dead letter that does not say where it came from stays, and says why.
    publisher.publish(DEAD_LETTER_EXCHANGE, "x", b"from nowhere", false).await.unwrap();
    let seen = queue.peek(10).await.unwrap();
    assert_eq!(bodies(&seen), ["second", "from nowhere"]);
    let stray = seen.items[1].clone();
    assert!(!stray.replayable);
    let refused = queue.settle(std::slice::from_ref(&stray.id), Settle::Replay).await.unwrap();
    assert_eq!(refused[&stray.id], Err(Refusal::NoSource));
    assert_eq!(queue.peek(10).await.unwrap().total, 2);

    shutdown.cancel();
    vhost.delete().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_is_an_error_not_an_empty_queue() {
    let queue = DeadLetterQueue::new("amqp://guest:guest@127.0.0.1:1/%2f", "test-unreachable");
    let err = queue.peek(10).await.unwrap_err();
    assert!(err.to_string().contains("connecting"), "{err}");
    assert!(queue.count().await.is_err());
}

/// A message a user publishes straight to the dead-letter exchange, with `headers`.
async fn forge(url: &str, user: &str, body: &[u8], headers: FieldTable) {
    let connection = broker_config::amqp::connect(url, "test-forger").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let properties =
        lapin::BasicProperties::default().with_user_id(user.into()).with_headers(headers);
    let confirm = channel
        .basic_publish(
            DEAD_LETTER_EXCHANGE.into(),
            "task.status".into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap();
    confirm.await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// Whoever may write the dead-letter exchange (every bot may) can put Botline's headers on a
/// message there: they are not believed. The message can be replayed only as its own author's
/// (what RabbitMQ checked), into the orchestrator's queues only.
#[tokio::test]
async fn a_forged_dead_letter_cannot_speak_for_another_publisher() {
    let vhost = TestVhost::create("dead-forged").await.unwrap();
    let forger = format!("{}-forger", vhost.name());
    let all = Permissions { configure: ".*".into(), write: ".*".into(), read: ".*".into() };
    vhost.create_user(&forger, "secret", &all).await.unwrap();
    let url = vhost.amqp_url_as(&forger, "secret");
    // The topology exists (the reader declares nothing).
    let shutdown = CancellationToken::new();
    Publisher::new(
        vhost.amqp_url(),
        "test-topology",
        Topology::core(),
        Duration::from_secs(20),
        shutdown.clone(),
    )
    .connect()
    .await
    .unwrap();

    // Botline's headers, naming a victim as the publisher and the events queue as the source.
    let mut headers = FieldTable::default();
    headers.insert("x-botline-queue".into(), text(ORCHESTRATOR_EVENTS_QUEUE));
    headers.insert("x-botline-user-id".into(), text("bot-victim"));
    headers.insert("x-botline-reason".into(), text("looks real"));
    forge(&url, &forger, b"botline headers", headers).await;
    // RabbitMQ's own record, naming the events queue: believed for the queue, but the publisher
    // is who RabbitMQ says published it.
    let mut death = FieldTable::default();
    death.insert("queue".into(), text(ORCHESTRATOR_EVENTS_QUEUE));
    death.insert("reason".into(), text("rejected"));
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    headers.insert("x-botline-user-id".into(), text("bot-victim"));
    forge(&url, &forger, b"x-death", headers).await;

    let queue = DeadLetterQueue::new(vhost.amqp_url(), "test-dead-letter-queue");
    let seen = queue.peek(10).await.unwrap();
    assert_eq!(bodies(&seen), ["botline headers", "x-death"]);
    let (botline, death) = (&seen.items[0], &seen.items[1]);
    assert_eq!((botline.queue.as_deref(), botline.reason.as_deref()), (None, None));
    assert_eq!(botline.publisher.as_deref(), Some(forger.as_str()));
    assert!(!botline.replayable);
    let refused = queue.settle(std::slice::from_ref(&botline.id), Settle::Replay).await.unwrap();
    assert_eq!(refused[&botline.id], Err(Refusal::NoSource));

    assert_eq!(death.queue.as_deref(), Some(ORCHESTRATOR_EVENTS_QUEUE));
    assert_eq!(death.publisher.as_deref(), Some(forger.as_str()));
    let replayed = queue.settle(std::slice::from_ref(&death.id), Settle::Replay).await.unwrap();
    assert_eq!(replayed[&death.id], Ok(()));
    let again = consume(&vhost, 1, |_| Decision::Ack).await;
    assert_eq!(again[0].data, b"x-death");
    assert_eq!(again[0].user_id.as_deref(), Some(forger.as_str()), "the forger, not its victim");

    shutdown.cancel();
    vhost.delete().await.unwrap();
}
