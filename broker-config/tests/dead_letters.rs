//! The dead-letter queue read and settled over AMQP (`broker_config::dead_letters`) against a real
//! RabbitMQ, in a vhost of its own: a look leaves every message in its place, a discard removes
//! only what was named, and a replay reaches the queue the message failed on as its publisher's.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use broker_config::access::Permissions;
use broker_config::amqp::{Message, Publisher, consume_batches};
use broker_config::dead_letters::{DeadLetterQueue, DeadLetters, Refusal, Settle};
use broker_config::testing::TestVhost;
use broker_config::topology::{self, DEAD_LETTER_EXCHANGE, TASKS_EXCHANGE};
use broker_config::{BotName, ConsumerSpec, Decision, Topology};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn bot() -> BotName {
    BotName::parse("lettered").unwrap()
}

fn spec(vhost: &TestVhost) -> ConsumerSpec {
    ConsumerSpec {
        url: vhost.amqp_url(),
        name: "test-dead-letters".into(),
        queue: topology::bot_queue(&bot()),
        topology: Topology::core().merge(Topology::bot(&bot())),
        prefetch: 10,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    }
}

/// Consumes the bot's queue with `decide` until `n` messages were handled, then stops; answers
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
    // Published by a user of its own, as a bot's events are: the replay must keep it.
    let user = format!("{}-pub", vhost.name());
    let all = Permissions { configure: ".*".into(), write: ".*".into(), read: ".*".into() };
    vhost.create_user(&user, "secret", &all).await.unwrap();
    let publisher = Publisher::new(
        vhost.amqp_url_as(&user, "secret"),
        "test-publisher",
        Topology::core().merge(Topology::bot(&bot())),
        Duration::from_secs(20),
        shutdown.clone(),
    );
    for body in ["first", "second", "third"] {
        publisher.publish(TASKS_EXCHANGE, bot().as_str(), body.as_bytes(), true).await.unwrap();
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
    assert_eq!(first.queue.as_deref(), Some(topology::bot_queue(&bot()).as_str()));
    assert_eq!(first.reason.as_deref(), Some("refused first"));
    assert_eq!(first.routing_key, bot().as_str());
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
    assert_eq!(again[0].routing_key, bot().as_str());

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
