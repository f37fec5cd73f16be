//! The dead-letter queue ([`DEAD_LETTER_QUEUE`]) read and settled over AMQP, for whoever looks
//! after it (the orchestrator's `/api/v1/dead-letters`): no management API needed.
//!
//! - [`DeadLetterQueue::peek`] takes messages from the head of the queue without acknowledging
//!   them and closes its channel, which puts every one back where it was.
//! - [`DeadLetterQueue::settle`] walks the queue the same way, and for each message whose id was
//!   asked for, puts a copy at the end of the queue it failed on ([`Settle::Replay`], confirmed by
//!   the broker before the dead letter is acknowledged) or acknowledges it alone
//!   ([`Settle::Discard`]). The rest go back untouched.
//!
//! A message's id is a digest of what it carries (body, routing key, message id, reason, source
//! queue): the same while it stays in the queue, whoever reads it. Identical messages share an id,
//! and an action on it acts on every copy.
//!
//! What a dead letter says of itself is trusted only as far as its author is: anyone who may
//! write the dead-letter exchange (every bot may) can put any headers there.
//! - Botline's headers (`x-botline-queue`, `-routing-key`, `-user-id`) count only in a dead
//!   letter published by this connection's user, which is the user that consumes the
//!   orchestrator's queues and dead-letters their messages (RabbitMQ checks a `user-id`).
//! - Otherwise the source queue is RabbitMQ's `x-death` record, and the publisher the message's
//!   own `user-id`, which RabbitMQ checked when it was published: a forger can only name itself.
//! - A replay goes only to the orchestrator's own queues ([`replayable_queues`]), never to a
//!   bot's: an old offer replayed into a bot's queue would be a command from nobody.
//!
//! A replayed copy is published by this connection's user, with the publisher and routing key
//! so established in headers and a replay mark, which a consumer of the same user trusts as it
//! trusts its own retried copies (see `amqp::receive`): a bot's event replayed is still that
//! bot's, and no one else's.
//!
//! One look or action at a time per process (a look holds the messages it reads until it closes
//! its channel, so an action meanwhile would not find them); orchestrators of a cluster can
//! still cross, and an action then answers "not found" for what the other held.
//!
//! On a quorum `botline.dead`, RabbitMQ may count each message a look returns towards the
//! queue's delivery limit (20 by default in RabbitMQ 4), past which it drops the message: look
//! on demand, not in a loop (the dashboard polls the count, and reads the list when it changes).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use sha2::Digest as _;

use crate::amqp::{
    BROKER_TIMEOUT, FAILURES_HEADER, QUEUE_HEADER, REASON_HEADER, REPLAYED_HEADER,
    ROUTING_KEY_HEADER, USER_ID_HEADER, connect,
};
use crate::topology::DEAD_LETTER_QUEUE;

/// How much of a body [`DeadLetter::body_preview`] shows, in characters.
pub const PREVIEW_CHARS: usize = 500;

/// The most messages one walk of the queue takes: a settle looks no further (a bigger queue is
/// worked through by repeated actions).
pub const MAX_WALK: u32 = 10_000;

/// How long one walk of the queue may take: what it has not reached by then is answered "not
/// found", and what it did stays done.
pub const WALK_DEADLINE: Duration = Duration::from_secs(60);

/// The queues a dead letter may be replayed into: those of the core topology that dead-letter
/// (the orchestrator consumes them all).
pub fn replayable_queues() -> Vec<String> {
    crate::topology::Topology::core()
        .queues
        .into_iter()
        .filter(|queue| queue.dead_letters)
        .map(|queue| queue.name)
        .collect()
}

/// A message in the dead-letter queue, as whoever looks after it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// A digest of what it carries: the same while it stays in the queue.
    pub id: String,
    /// Identical messages in the part of the queue read (one entry for them all).
    pub copies: u32,
    /// The queue it failed on; absent when the message does not say.
    pub queue: Option<String>,
    /// Why it was dead-lettered.
    pub reason: Option<String>,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The AMQP user that published it, when known.
    pub publisher: Option<String>,
    /// Its publisher's id for it.
    pub message_id: Option<String>,
    /// How many times handling it failed before it was dead-lettered, when it was retried.
    pub failures: Option<u32>,
    /// When it was dead-lettered (the message's timestamp, to the second), when it says.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// Its body's size in bytes.
    pub body_bytes: usize,
    /// The start of its body as text (invalid UTF-8 replaced), [`PREVIEW_CHARS`] at most.
    pub body_preview: String,
    /// Whether it can be replayed: its source queue is known and one of the orchestrator's.
    pub replayable: bool,
}

/// What [`DeadLetterQueue::peek`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetters {
    /// Messages in the queue.
    pub total: u32,
    /// The first of them, from the head, identical ones counted as copies of one.
    pub items: Vec<DeadLetter>,
}

/// What to do with the dead letters asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Put a copy at the end of the queue it failed on, then remove it.
    Replay,
    /// Remove it for good.
    Discard,
}

/// Why a dead letter could not be settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No message with this id in the part of the queue walked.
    NotFound,
    /// A replay of a message whose source queue is unknown, or not one a replay may reach.
    NoSource,
    /// The broker did not take the replayed copy (no such queue, or a refusal).
    NotTaken(String),
}

/// The dead-letter queue of the broker at a URL; each call opens a connection of its own and
/// closes it (these are an operator's occasional actions).
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    url: String,
    name: String,
    /// The URL's user: the `user-id` of replayed copies, and the only author whose Botline
    /// headers are trusted.
    user: Option<String>,
    /// One look or action at a time.
    busy: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A failure to reach or use the broker, with what was being done.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(String);

fn broker_error(doing: &str) -> impl Fn(lapin::Error) -> BrokerError + '_ {
    move |err| BrokerError(format!("{doing}: {err}"))
}

/// Waits at most [`BROKER_TIMEOUT`] for the broker.
async fn bounded<T>(
    doing: &str,
    work: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(BROKER_TIMEOUT, work).await {
        Ok(result) => result.map_err(broker_error(doing)),
        Err(_) => Err(BrokerError(format!("{doing}: no answer within {BROKER_TIMEOUT:?}"))),
    }
}

impl DeadLetterQueue {
    /// The dead-letter queue reached at `url`, with connections named `name`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> DeadLetterQueue {
        let url = url.into();
        DeadLetterQueue {
            user: crate::access::url_user(&url),
            url,
            name: name.into(),
            busy: Default::default(),
        }
    }

    async fn open(&self) -> Result<(Connection, Channel), BrokerError> {
        let connection =
            connect(&self.url, &self.name).await.map_err(broker_error("connecting"))?;
        let channel = bounded("opening a channel", connection.create_channel()).await?;
        Ok((connection, channel))
    }

    /// How many messages the queue holds.
    pub async fn count(&self) -> Result<u32, BrokerError> {
        let (connection, channel) = self.open().await?;
        let declared = bounded(
            "reading the dead-letter queue",
            channel.queue_declare(
                DEAD_LETTER_QUEUE.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await;
        close(connection).await;
        Ok(declared?.message_count())
    }

    /// The first `limit` messages from the head (fewer if the queue holds fewer), all put back.
    pub async fn peek(&self, limit: u32) -> Result<DeadLetters, BrokerError> {
        let _one_at_a_time = self.busy.lock().await;
        let (connection, channel) = self.open().await?;
        let mut items: Vec<DeadLetter> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        // Each message is described as it comes and let go: no body is kept.
        let walked = walk(&channel, limit, |message| {
            let letter = describe(&message, self.user.as_deref());
            match index.get(&letter.id) {
                Some(&at) => items[at].copies += 1,
                None => {
                    index.insert(letter.id.clone(), items.len());
                    items.push(letter);
                }
            }
            std::future::ready(Ok(()))
        })
        .await;
        // Closing the channel returns every message it took, unacknowledged, to its place.
        close(connection).await;
        Ok(DeadLetters { total: walked?, items })
    }

    /// Replays or discards every message whose id is in `ids`, looking through the first
    /// [`MAX_WALK`] messages for [`WALK_DEADLINE`] at most. Answers, for each id, whether it was
    /// settled (every copy of it) or why not; what is not asked for goes back untouched. Each
    /// message is logged as it is settled, so an error midway leaves a record of what was done.
    pub async fn settle(
        &self,
        ids: &[String],
        action: Settle,
    ) -> Result<BTreeMap<String, Result<(), Refusal>>, BrokerError> {
        let _one_at_a_time = self.busy.lock().await;
        let (connection, channel) = self.open().await?;
        let settled = self.settle_on(&channel, ids, action).await;
        close(connection).await;
        settled
    }

    async fn settle_on(
        &self,
        channel: &Channel,
        ids: &[String],
        action: Settle,
    ) -> Result<BTreeMap<String, Result<(), Refusal>>, BrokerError> {
        bounded("asking for confirms", channel.confirm_select(ConfirmSelectOptions::default()))
            .await?;
        // Locked only between awaits, never across one.
        let outcome: std::sync::Mutex<BTreeMap<String, Result<(), Refusal>>> =
            std::sync::Mutex::new(
                ids.iter().map(|id| (id.clone(), Err(Refusal::NotFound))).collect(),
            );
        let record = |id: String, result| {
            outcome.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, result);
        };
        // Each message is decided on as it comes and let go: nothing but the ids is kept.
        walk(channel, MAX_WALK, |message| {
            let (outcome, record) = (&outcome, &record);
            async move {
                let facts = Facts::of(&message, self.user.as_deref());
                let id = digest(&message, &facts);
                let earlier = outcome
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&id)
                    .cloned();
                match earlier {
                    // Not asked for: it goes back when the channel closes.
                    None => return Ok(()),
                    // An earlier copy was refused: its twins stay too, as one entry.
                    Some(Err(Refusal::NoSource | Refusal::NotTaken(_))) => return Ok(()),
                    Some(_) => {}
                }
                if action == Settle::Replay
                    && let Err(refusal) = self.replay(channel, &message, &facts).await?
                {
                    record(id, Err(refusal));
                    return Ok(());
                }
                bounded(
                    "acknowledging a dead letter",
                    message.delivery.acker.ack(BasicAckOptions::default()),
                )
                .await?;
                let verb = match action {
                    Settle::Replay => "replayed",
                    Settle::Discard => "discarded",
                };
                tracing::info!(%id, queue = ?facts.queue, reason = ?facts.reason, "dead letter {verb}");
                record(id, Ok(()));
                Ok(())
            }
        })
        .await?;
        Ok(outcome.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Publishes `message`'s copy to the end of its source queue and waits for the broker to
    /// take it; `Ok(Err(_))` when it may not go there or the broker did not take it (the dead
    /// letter then stays).
    async fn replay(
        &self,
        channel: &Channel,
        message: &lapin::message::BasicGetMessage,
        facts: &Facts,
    ) -> Result<Result<(), Refusal>, BrokerError> {
        let Some(queue) = facts.queue.clone().filter(|_| facts.replayable()) else {
            return Ok(Err(Refusal::NoSource));
        };
        let properties =
            replay_properties(&message.delivery.properties, facts, self.user.as_deref());
        let confirm = bounded(
            "replaying a dead letter",
            channel.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &message.delivery.data,
                properties,
            ),
        )
        .await?;
        match bounded("replaying a dead letter", confirm).await? {
            Confirmation::Ack(None) => Ok(Ok(())),
            Confirmation::Ack(Some(_)) => {
                Ok(Err(Refusal::NotTaken(format!("no queue named {queue} took the copy"))))
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Ok(Err(Refusal::NotTaken(format!("the broker refused the copy for {queue}"))))
            }
        }
    }
}

async fn close(connection: Connection) {
    let closing = connection.close(200, "done".into());
    if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(5), closing).await {
        tracing::debug!(%err, "closing the dead-letter connection");
    }
}

/// Takes up to `limit` messages from the head of the queue, unacknowledged, handing each to
/// `each` as it comes, for [`WALK_DEADLINE`] at most; answers how many the queue held.
async fn walk<F, Fut>(channel: &Channel, limit: u32, mut each: F) -> Result<u32, BrokerError>
where
    F: FnMut(lapin::message::BasicGetMessage) -> Fut,
    Fut: Future<Output = Result<(), BrokerError>>,
{
    let give_up = tokio::time::Instant::now() + WALK_DEADLINE;
    let mut taken = 0;
    let mut total = None;
    // Bounded by `limit`, by the count the first message came with (what arrives after the walk
    // began is left for the next one), and by the deadline.
    while taken < limit.min(total.unwrap_or(u32::MAX)) {
        if tokio::time::Instant::now() >= give_up {
            tracing::warn!(
                taken,
                "stopped walking the dead-letter queue at its deadline ({WALK_DEADLINE:?})"
            );
            break;
        }
        let options = BasicGetOptions { no_ack: false };
        let got = bounded(
            "reading the dead-letter queue",
            channel.basic_get(DEAD_LETTER_QUEUE.into(), options),
        )
        .await?;
        let Some(message) = got else {
            break;
        };
        // `message_count` is what remains after this one.
        total.get_or_insert(message.message_count.saturating_add(1));
        taken += 1;
        each(message).await?;
    }
    Ok(total.unwrap_or(0))
}

/// What a dead letter says of itself, as far as it is trusted (see the module's notes): Botline's
/// headers in `own_user`'s dead letters; else RabbitMQ's own `x-death` record (a message the
/// broker dead-lettered: rejected, expired, over a delivery limit) and the message's `user-id`.
#[derive(Debug, Clone, Default)]
struct Facts {
    queue: Option<String>,
    reason: Option<String>,
    routing_key: String,
    publisher: Option<String>,
    failures: Option<u32>,
}

impl Facts {
    fn of(message: &lapin::message::BasicGetMessage, own_user: Option<&str>) -> Facts {
        let properties = &message.delivery.properties;
        let headers = properties.headers().as_ref();
        let author = properties.user_id().as_ref().map(|u| u.to_string());
        let routing_key = message.delivery.routing_key.to_string();
        if own_user.is_some() && author.as_deref() == own_user {
            let text = |name| headers.and_then(|h| header_text(h, name));
            return Facts {
                queue: text(QUEUE_HEADER),
                reason: text(REASON_HEADER),
                routing_key: text(ROUTING_KEY_HEADER).unwrap_or(routing_key),
                publisher: text(USER_ID_HEADER),
                failures: headers.and_then(|h| crate::amqp::header_count(h, FAILURES_HEADER)),
            };
        }
        let death = headers.and_then(latest_death);
        let death_text = |name: &str| death.as_ref().and_then(|d| header_text(d, name));
        Facts {
            queue: death_text("queue"),
            reason: death_text("reason"),
            routing_key,
            publisher: author,
            failures: None,
        }
    }

    /// Whether a replay may put it back: its queue is one of the orchestrator's.
    fn replayable(&self) -> bool {
        self.queue.as_ref().is_some_and(|queue| replayable_queues().contains(queue))
    }
}

/// The latest entry of RabbitMQ's `x-death` header.
fn latest_death(headers: &FieldTable) -> Option<FieldTable> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// The id of a dead letter: 16 bytes of SHA-256 over what it carries, in hex.
fn digest(message: &lapin::message::BasicGetMessage, facts: &Facts) -> String {
    let message_id = message.delivery.properties.message_id().as_ref().map(|id| id.to_string());
    let mut hash = sha2::Sha256::new();
    for part in [
        facts.routing_key.as_bytes(),
        message_id.as_deref().unwrap_or_default().as_bytes(),
        facts.reason.as_deref().unwrap_or_default().as_bytes(),
        facts.queue.as_deref().unwrap_or_default().as_bytes(),
        &message.delivery.data,
    ] {
        // Each part's length first, so two messages cannot trade bytes between parts.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(message: &lapin::message::BasicGetMessage, own_user: Option<&str>) -> DeadLetter {
    let facts = Facts::of(message, own_user);
    let properties = &message.delivery.properties;
    let body = &message.delivery.data;
    DeadLetter {
        id: digest(message, &facts),
        copies: 1,
        replayable: facts.replayable(),
        dead_lettered_at: properties
            .timestamp()
            .and_then(|t| i64::try_from(t).ok())
            .and_then(|t| DateTime::from_timestamp(t, 0)),
        message_id: properties.message_id().as_ref().map(|id| id.to_string()),
        body_bytes: body.len(),
        body_preview: String::from_utf8_lossy(body).chars().take(PREVIEW_CHARS).collect(),
        queue: facts.queue,
        reason: facts.reason,
        routing_key: facts.routing_key,
        publisher: facts.publisher,
        failures: facts.failures,
    }
}

/// The replayed copy's properties: the original's, without its dead-letter headers, the
/// publisher and routing key in headers, the replay marked, and this connection's user.
fn replay_properties(
    original: &BasicProperties,
    facts: &Facts,
    user: Option<&str>,
) -> BasicProperties {
    const OURS: [&str; 6] = [
        REASON_HEADER,
        QUEUE_HEADER,
        FAILURES_HEADER,
        ROUTING_KEY_HEADER,
        USER_ID_HEADER,
        REPLAYED_HEADER,
    ];
    let mut headers = FieldTable::default();
    for (key, value) in original.headers().iter().flat_map(FieldTable::inner) {
        // RabbitMQ's records of deaths (`x-death`, `x-first-death-*`, `x-last-death-*`) are the
        // dead letter's past, not the message's.
        let death = key.as_str().starts_with("x-") && key.as_str().contains("death");
        if !OURS.contains(&key.as_str()) && !death {
            headers.insert(key.clone(), value.clone());
        }
    }
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(facts.routing_key.as_str().into()),
    );
    if let Some(publisher) = &facts.publisher {
        headers.insert(USER_ID_HEADER.into(), AMQPValue::LongString(publisher.as_str().into()));
    }
    headers.insert(REPLAYED_HEADER.into(), AMQPValue::Boolean(true));
    crate::amqp::copy_properties(original, headers, user)
}
