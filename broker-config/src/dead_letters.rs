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
//! A replayed copy is published by this connection's user (RabbitMQ lets nobody else's `user-id`
//! through), with the original publisher and routing key in headers and a replay mark, which a
//! consumer of the same user trusts as it trusts its own retried copies (see
//! `amqp::receive`): a bot's event replayed is still that bot's.

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
    /// Whether it can be replayed: its source queue is known.
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
    /// A replay of a message whose source queue is unknown.
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
    /// The URL's user: the `user-id` of replayed copies.
    user: Option<String>,
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
        DeadLetterQueue { user: crate::access::url_user(&url), url, name: name.into() }
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
        let (connection, channel) = self.open().await?;
        let walked = walk(&channel, limit).await;
        // Closing the channel returns every message it took, unacknowledged, to its place.
        close(connection).await;
        let (total, messages) = walked?;
        let mut items: Vec<DeadLetter> = Vec::new();
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for message in messages {
            let letter = describe(&message);
            match index.get(&letter.id) {
                Some(&at) => items[at].copies += 1,
                None => {
                    index.insert(letter.id.clone(), items.len());
                    items.push(letter);
                }
            }
        }
        Ok(DeadLetters { total, items })
    }

    /// Replays or discards every message whose id is in `ids`, looking through the first
    /// [`MAX_WALK`] messages. Answers, for each id, whether it was settled (every copy of it) or
    /// why not; what is not asked for goes back untouched.
    pub async fn settle(
        &self,
        ids: &[String],
        action: Settle,
    ) -> Result<BTreeMap<String, Result<(), Refusal>>, BrokerError> {
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
        let mut outcome: BTreeMap<String, Result<(), Refusal>> =
            ids.iter().map(|id| (id.clone(), Err(Refusal::NotFound))).collect();
        let (_, messages) = walk(channel, MAX_WALK).await?;
        for message in messages {
            let id = digest(&message);
            let Some(result) = outcome.get_mut(&id) else {
                continue;
            };
            // An earlier copy already refused: its twins stay too, so they stay one entry.
            if matches!(result, Err(Refusal::NoSource | Refusal::NotTaken(_))) {
                continue;
            }
            if action == Settle::Replay
                && let Err(refusal) = self.replay(channel, &message).await?
            {
                *result = Err(refusal);
                continue;
            }
            bounded(
                "acknowledging a dead letter",
                message.delivery.acker.ack(BasicAckOptions::default()),
            )
            .await?;
            *result = Ok(());
        }
        Ok(outcome)
    }

    /// Publishes `message`'s copy to the end of its source queue and waits for the broker to
    /// take it; `Ok(Err(_))` when it did not (the dead letter then stays).
    async fn replay(
        &self,
        channel: &Channel,
        message: &lapin::message::BasicGetMessage,
    ) -> Result<Result<(), Refusal>, BrokerError> {
        let facts = Facts::of(message);
        let Some(queue) = facts.queue.clone() else {
            return Ok(Err(Refusal::NoSource));
        };
        let properties =
            replay_properties(&message.delivery.properties, &facts, self.user.as_deref());
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
            Confirmation::Ack(None) => {
                tracing::info!(%queue, routing_key = %facts.routing_key, "replayed a dead letter");
                Ok(Ok(()))
            }
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

/// Up to `limit` messages from the head of the queue, unacknowledged, and how many it held.
async fn walk(
    channel: &Channel,
    limit: u32,
) -> Result<(u32, Vec<lapin::message::BasicGetMessage>), BrokerError> {
    let mut taken = Vec::new();
    let mut total = None;
    // Bounded by `limit`, and by the count the first message came with: what arrives after the
    // walk began is left for the next one.
    while (taken.len() as u32) < limit.min(total.unwrap_or(u32::MAX)) {
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
        taken.push(message);
    }
    Ok((total.unwrap_or(0), taken))
}

/// What a dead letter says of itself: from Botline's consumers' headers, else from RabbitMQ's
/// own `x-death` (a message the broker dead-lettered: rejected, expired, over a delivery limit).
#[derive(Debug, Clone, Default)]
struct Facts {
    queue: Option<String>,
    reason: Option<String>,
    routing_key: String,
    publisher: Option<String>,
    failures: Option<u32>,
}

impl Facts {
    fn of(message: &lapin::message::BasicGetMessage) -> Facts {
        let properties = &message.delivery.properties;
        let headers = properties.headers().as_ref();
        let text = |name| headers.and_then(|h| header_text(h, name));
        let death = headers.and_then(first_death);
        let death_text = |name: &str| death.as_ref().and_then(|d| header_text(d, name));
        Facts {
            queue: text(QUEUE_HEADER).or_else(|| death_text("queue")),
            reason: text(REASON_HEADER).or_else(|| death_text("reason")),
            routing_key: text(ROUTING_KEY_HEADER)
                .unwrap_or_else(|| message.delivery.routing_key.to_string()),
            publisher: text(USER_ID_HEADER)
                .or_else(|| properties.user_id().as_ref().map(|u| u.to_string())),
            failures: headers.and_then(|h| crate::amqp::header_count(h, FAILURES_HEADER)),
        }
    }
}

/// The latest entry of RabbitMQ's `x-death` header.
fn first_death(headers: &FieldTable) -> Option<FieldTable> {
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
fn digest(message: &lapin::message::BasicGetMessage) -> String {
    let facts = Facts::of(message);
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

fn describe(message: &lapin::message::BasicGetMessage) -> DeadLetter {
    let facts = Facts::of(message);
    let properties = &message.delivery.properties;
    let body = &message.delivery.data;
    DeadLetter {
        id: digest(message),
        copies: 1,
        replayable: facts.queue.is_some(),
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

/// The replayed copy's properties: the original's, with its dead-letter headers gone, the
/// publisher and routing key carried in headers, the replay marked, and this connection's user.
fn replay_properties(
    original: &BasicProperties,
    facts: &Facts,
    user: Option<&str>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in original.headers().iter().flat_map(FieldTable::inner) {
        let ours = [
            REASON_HEADER,
            QUEUE_HEADER,
            FAILURES_HEADER,
            ROUTING_KEY_HEADER,
            USER_ID_HEADER,
            REPLAYED_HEADER,
        ];
        if !ours.contains(&key.as_str()) && !key.as_str().starts_with("x-death") {
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
    let mut properties = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    if let Some(value) = original.content_type() {
        properties = properties.with_content_type(value.clone());
    }
    if let Some(value) = original.message_id() {
        properties = properties.with_message_id(value.clone());
    }
    if let Some(value) = original.app_id() {
        properties = properties.with_app_id(value.clone());
    }
    if let Some(value) = original.correlation_id() {
        properties = properties.with_correlation_id(value.clone());
    }
    if let Some(user) = user {
        properties = properties.with_user_id(user.into());
    }
    properties
}
