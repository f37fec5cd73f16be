//! AMQP plumbing every Botline program shares: connecting with backoff, a [`Publisher`] that
//! waits for publisher confirms and reconnects (re-declaring the topology) when the connection
//! or channel is lost, and [`consume`], a supervised consumer that reconnects when its stream
//! ends for any reason.
//!
//! lapin's own auto-recovery is left off on purpose: it does not reopen a channel closed by a
//! channel error, nor republish what was unconfirmed, nor tell a consumer whose stream silently
//! stopped. Here recovery is explicit and tested against a real broker: a publish is retried on a
//! fresh channel until it is confirmed (at-least-once; receivers are idempotent), and a consumer
//! whose stream ends reconnects and consumes again.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{FutureExt as _, StreamExt as _};
use lapin::Confirmation;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::topology::{DEAD_LETTER_EXCHANGE, Topology};
use crate::transport::Endpoint;

/// The default broker: the local RabbitMQ with its default user.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Exponential backoff between reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, next: initial, max }
    }

    /// The delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// Opens a connection named `name` (the name ops see in the management UI) to the broker at
/// `url`: `amqp://` for plain TCP, `amqps://` for TLS, verifying the server against the CA file
/// of the URL's `cacertfile` parameter or else the system's roots, and presenting the client
/// certificate of `certfile` and `keyfile` when given (see [`crate::tls`]). Errors never show
/// the URL's password.
///
/// An attempt that gets no answer within [`BROKER_TIMEOUT`] fails (a broker in the middle of
/// starting or stopping can accept the TCP connection and never finish the handshake).
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let endpoint = Endpoint::parse(url)?;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tracing::debug!(connection = name, url = %redact_url(url), tls = endpoint.is_tls(), "connecting to RabbitMQ");
    match tokio::time::timeout(BROKER_TIMEOUT, endpoint.connect(properties)).await {
        Ok(connected) => connected,
        Err(_elapsed) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("RabbitMQ did not finish the handshake within {BROKER_TIMEOUT:?}"),
        )
        .into()),
    }
}

/// How long a connection attempt, the opening of a consumer (channel, topology, subscription)
/// or the settling of a consumed batch may wait on the broker before it counts as lost. lapin
/// resolves most operations on a connection that fails with an error, but not every one: an
/// acknowledgement sent as the broker closes the connection was seen to wait forever, and with
/// it the consumer, deaf to its queue until the program restarted.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a consumer waits for the broker to take the acknowledgements, dead letters and
/// retried copies of one batch: [`BROKER_TIMEOUT`], as a slow but healthy broker (quorum queues
/// under load, flow control) may take seconds to confirm, and a batch given up is handled again.
const SETTLE_TIMEOUT: Duration = BROKER_TIMEOUT;

/// Checks, without connecting, that `url` is a broker URL and that its TLS files make a TLS
/// configuration: for programs that retry connecting, so a mistake stops them at once.
pub fn check_url(url: &str) -> Result<(), std::io::Error> {
    Endpoint::parse(url).map(|_| ())
}

/// `url` with its password replaced by `***` (`amqp://bot:***@rabbit/%2f`), for logs and error
/// messages; a string that is not a URL with an authority, and holds an `@`, is hidden whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') {
            "<a URL that does not parse>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Connects, retrying with backoff until it works or `shutdown` fires (then `None`).
pub async fn connect_with_retry(
    url: &str,
    name: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let mut backoff = Backoff::default();
    loop {
        match connect(url, name).await {
            Ok(connection) => return Some(connection),
            Err(err) => {
                tracing::warn!(connection = name, error = %err, "cannot reach RabbitMQ; retrying")
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Properties of every Botline message: JSON, persistent (delivery mode 2: written to disk by a
/// durable queue), with an id and the sending program.
pub fn message_properties(app_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(uuid::Uuid::new_v4().to_string().into())
        .with_timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default())
        .with_app_id(app_id.into())
}

/// What became of a confirmed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored by the broker in at least one queue.
    Delivered,
    /// Confirmed, but no queue is bound for it (a mandatory publish came back).
    Unroutable,
}

/// Why a publish did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker could not be reached, or did not confirm, within the deadline.
    #[error("RabbitMQ unavailable: {0}")]
    Unavailable(String),
    /// The program is stopping.
    #[error("shutting down")]
    ShuttingDown,
}

struct Link {
    // Kept so the channel lives; dropping the connection would close it.
    _connection: Connection,
    channel: Channel,
}

/// Publishes with confirms on one channel, reconnecting when needed. Clones share the channel;
/// publishes from several tasks run concurrently on it.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

struct PublisherInner {
    url: String,
    name: String,
    /// The `user-id` of every message: the URL's user, which RabbitMQ checks is the connection's,
    /// so consumers know who published ([`crate::access::check_sender`]).
    user_id: Option<String>,
    topology: Topology,
    link: Mutex<Option<Link>>,
    shutdown: CancellationToken,
    deadline: Duration,
}

impl Publisher {
    /// A publisher for `url` that declares `topology` on every (re)connection and gives up on a
    /// message after `deadline` without a confirm. Its messages carry the URL's user as their
    /// `user-id` (see [`crate::access::url_user`]).
    pub fn new(
        url: impl Into<String>,
        name: impl Into<String>,
        topology: Topology,
        deadline: Duration,
        shutdown: CancellationToken,
    ) -> Publisher {
        let url = url.into();
        Publisher {
            inner: Arc::new(PublisherInner {
                user_id: crate::access::url_user(&url),
                url,
                name: name.into(),
                topology,
                link: Mutex::new(None),
                shutdown,
                deadline,
            }),
        }
    }

    /// Connects now (and declares the topology), so start-up fails fast on a wrong URL.
    pub async fn connect(&self) -> Result<(), lapin::Error> {
        self.channel_now().await.map(|_| ())
    }

    /// Whether the publisher currently holds an open channel.
    pub async fn is_connected(&self) -> bool {
        self.inner.link.lock().await.as_ref().is_some_and(|l| l.channel.status().connected())
    }

    async fn channel_now(&self) -> Result<Channel, lapin::Error> {
        let mut link = self.inner.link.lock().await;
        if let Some(current) = link.as_ref()
            && current.channel.status().connected()
        {
            return Ok(current.channel.clone());
        }
        *link = None;
        let connection = connect(&self.inner.url, &self.inner.name).await?;
        let channel = connection.create_channel().await?;
        self.inner.topology.declare(&channel).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        tracing::info!(connection = %self.inner.name, "publisher connected");
        *link = Some(Link { _connection: connection, channel: channel.clone() });
        Ok(channel)
    }

    async fn forget(&self, broken: &Channel) {
        let mut link = self.inner.link.lock().await;
        if link.as_ref().is_some_and(|l| l.channel.id() == broken.id()) {
            *link = None;
        }
    }

    /// Publishes `body` and waits for the broker's confirm, retrying on a fresh connection until
    /// confirmed or the deadline passes. A message may therefore arrive twice; never zero times
    /// once this returns `Ok`.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        mandatory: bool,
    ) -> Result<Published, PublishError> {
        let give_up = Instant::now() + self.inner.deadline;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut properties = message_properties(&self.inner.name);
        if let Some(user) = &self.inner.user_id {
            properties = properties.with_user_id(user.as_str().into());
        }
        loop {
            let attempt = async {
                let channel = self.channel_now().await.map_err(|e| (None, e.to_string()))?;
                let confirm = channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.into(),
                        BasicPublishOptions { mandatory, ..Default::default() },
                        body,
                        properties.clone(),
                    )
                    .await
                    .map_err(|e| (Some(channel.clone()), e.to_string()))?
                    .await
                    .map_err(|e| (Some(channel.clone()), e.to_string()))?;
                match confirm {
                    Confirmation::Ack(None) => Ok(Published::Delivered),
                    Confirmation::Ack(Some(_returned)) => Ok(Published::Unroutable),
                    Confirmation::Nack(_) => {
                        Err((None, "the broker refused the message".to_owned()))
                    }
                    Confirmation::NotRequested => {
                        Err((Some(channel), "channel lost confirm mode".into()))
                    }
                }
            };
            let failure = tokio::select! {
                () = self.inner.shutdown.cancelled() => return Err(PublishError::ShuttingDown),
                result = tokio::time::timeout_at(give_up, attempt) => match result {
                    Ok(Ok(published)) => return Ok(published),
                    Ok(Err(failure)) => failure,
                    Err(_elapsed) => (None, "no confirm before the deadline".to_owned()),
                },
            };
            let (broken, reason) = failure;
            if let Some(channel) = broken {
                self.forget(&channel).await;
            }
            if Instant::now() >= give_up {
                return Err(PublishError::Unavailable(reason));
            }
            tracing::warn!(connection = %self.inner.name, exchange, routing_key, %reason, "publish not confirmed; retrying");
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return Err(PublishError::ShuttingDown),
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}

/// How many times, by default, handling one message may fail ([`Decision::Retry`]) before it is
/// dead-lettered. It stays under RabbitMQ 4's default `delivery-limit` of quorum queues (20),
/// which counts every return of a message to its queue: the consumer's own dead letter, with its
/// reason, comes first.
pub const DEFAULT_MAX_FAILURES: u32 = 10;

/// The counter of messages consumers dead-lettered (confirmed by the broker), labelled with
/// the queue they came from: the `metrics` facade's, exported by whichever recorder the program
/// installs (none: nothing is counted).
pub const DEAD_LETTERED_METRIC: &str = "botline_dead_lettered_total";

/// Header of a dead letter: why it was dead-lettered.
pub const REASON_HEADER: &str = "x-botline-reason";
/// Header of a dead letter: the queue it was consumed from.
pub const QUEUE_HEADER: &str = "x-botline-queue";
/// Header of a retried copy, and of a dead letter that failed before: how many times handling
/// the message failed.
pub const FAILURES_HEADER: &str = "x-botline-failures";
/// Header of a retried copy: the routing key the message was published with (the copy goes
/// through the default exchange, whose routing key is the queue's name).
pub(crate) const ROUTING_KEY_HEADER: &str = "x-botline-routing-key";
/// Header of a retried copy, a dead letter and a replayed one: the `user-id` of the message's
/// publisher (a copy's own `user-id` is the consumer's user, the only one RabbitMQ lets it set).
pub(crate) const USER_ID_HEADER: &str = "x-botline-user-id";
/// Header of a dead letter put back in its queue ([`crate::dead_letters`]): its routing key and
/// publisher are in the headers above, as in a retried copy.
pub(crate) const REPLAYED_HEADER: &str = "x-botline-replayed";
/// Header of a retried copy: why the last try failed, for whoever looks into the queue.
const LAST_ERROR_HEADER: &str = "x-botline-last-error";

/// The pause after a batch that sent messages back to the queue, doubling while batches keep
/// doing so, up to [`MAX_RETRY_PAUSE`]: whatever failed (the database, usually) gets a moment.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The longest pause between two such batches.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// A message as a consumer's handler sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The routing key it was published with.
    pub routing_key: String,
    /// The body.
    pub data: Vec<u8>,
    /// Whether the broker delivered it before (a consumer died without acking it).
    pub redelivered: bool,
    /// The AMQP user that published it (set by RabbitMQ when the publisher sets `user-id`).
    pub user_id: Option<String>,
    /// The publisher's id for it (`message-id`), where it set one.
    pub message_id: Option<String>,
    /// How many times handling it failed before ([`Decision::Retry`]): 0 on its first delivery.
    pub failures: u32,
}

/// What to do with a consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Handled (and committed): remove it from the queue.
    Ack,
    /// Never processable (malformed, unknown): send it to the dead-letter queue with the reason.
    DeadLetter(String),
    /// Failed in a way that may recur every time (a bug, a corrupt row): handle it again later,
    /// behind what is queued now, until it has failed [`ConsumerSpec::max_failures`] times; then
    /// dead-letter it with `failed N times: <reason>`.
    Retry(String),
    /// Not handled now for a reason outside the message (the database is down): leave it in the
    /// queue for later, however long that takes. Not counted as a failure.
    Requeue,
}

/// Whether a consumer hears its queue, and since when: [`consume_batches`] marks it deaf while it
/// has no subscription (connecting, reconnecting after the broker went away) and hearing from the
/// moment it consumes again. For whoever judges by what the queue would have told: while the
/// consumer was deaf, what was published meanwhile is still in the queue, unread, so silence
/// means nothing until it has heard for a while. Clones share the state.
#[derive(Debug, Clone)]
pub struct Hearing(Arc<std::sync::Mutex<Option<DateTime<Utc>>>>);

impl Hearing {
    /// Hearing since `at` (a program that judges from its start, before its consumer subscribes).
    pub fn since(at: DateTime<Utc>) -> Hearing {
        Hearing(Arc::new(std::sync::Mutex::new(Some(at))))
    }

    /// Since when the consumer has heard its queue without a break; `None` while it is deaf.
    pub fn heard_since(&self) -> Option<DateTime<Utc>> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, since: Option<DateTime<Utc>>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = since;
    }
}

/// How to consume one queue.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The broker.
    pub url: String,
    /// Connection name and consumer tag.
    pub name: String,
    /// The queue.
    pub queue: String,
    /// Declared on every (re)connection before consuming.
    pub topology: Topology,
    /// How many unacknowledged messages the broker may send ahead.
    pub prefetch: u16,
    /// How many times handling one message may fail ([`Decision::Retry`]) before it is
    /// dead-lettered: [`DEFAULT_MAX_FAILURES`] unless configured; 1 dead-letters at the first
    /// failure (0 counts as 1).
    pub max_failures: u32,
    /// Told when the consumer loses its subscription and when it consumes again, if anyone
    /// listens.
    pub hearing: Option<Hearing>,
}

/// Consumes `spec.queue` until `shutdown` fires, handing each message to `handler` in order and
/// applying its [`Decision`] as [`consume_batches`] does, one message at a time. When the
/// connection drops, the channel closes, or the stream ends, it reconnects with backoff,
/// re-declares the topology and consumes again; unacknowledged messages come back from the
/// broker as redeliveries.
pub async fn consume<H, F>(spec: ConsumerSpec, shutdown: CancellationToken, mut handler: H)
where
    H: FnMut(Message) -> F,
    F: Future<Output = Decision>,
{
    consume_batches(spec, 1, Duration::ZERO, shutdown, move |batch: Vec<Message>| {
        let handled = batch.into_iter().next().map(&mut handler);
        async move {
            match handled {
                Some(decision) => vec![decision.await],
                None => Vec::new(),
            }
        }
    })
    .await;
}

/// Consumes `spec.queue` in batches until `shutdown` fires: waits for a message, gathers up to
/// `max_batch` of them (those already delivered at once, then waiting at most `max_wait` after
/// the first; with `Duration::ZERO` a batch is what has arrived, never waited for), hands them to
/// `handler` in delivery order, and applies the [`Decision`] it returns for each, by position (a
/// missing decision counts as [`Decision::Requeue`]; a handler that panics fails every message
/// of its batch, as [`Decision::Retry`] would).
///
/// Settled messages are acknowledged with one `multiple` ack per run. A dead letter, and the
/// copy a [`Decision::Retry`] puts back at the end of the queue (with its failures counted in a
/// header, so the count survives restarts and works on classic and quorum queues alike), are
/// published with publisher confirms and the message acknowledged only once they are confirmed:
/// a message is never lost between the two (an unconfirmed one goes back to the queue
/// instead). After a batch that sent messages back, the consumer pauses, longer while batches
/// keep failing.
///
/// `spec.prefetch` should be at least `max_batch`, or batches never fill. When the connection
/// drops, the channel closes, or the stream ends, it reconnects with backoff, re-declares the
/// topology and consumes again; a batch being gathered then, or when `shutdown` fires, is left
/// unacknowledged and comes back.
pub async fn consume_batches<H, F>(
    spec: ConsumerSpec,
    max_batch: usize,
    max_wait: Duration,
    shutdown: CancellationToken,
    mut handler: H,
) where
    H: FnMut(Vec<Message>) -> F,
    F: Future<Output = Vec<Decision>>,
{
    let batching = Batching { max_batch: max_batch.max(1), max_wait };
    let mut backoff = Backoff::default();
    let deaf = || {
        if let Some(hearing) = &spec.hearing {
            hearing.set(None);
        }
    };
    deaf();
    while let Some(connection) = connect_with_retry(&spec.url, &spec.name, &shutdown).await {
        let consumed =
            consume_batches_on(&connection, &spec, batching, &shutdown, &mut handler, &mut backoff)
                .await;
        deaf();
        match consumed {
            Ok(()) => {
                let closing = connection.close(200, "shutting down".into());
                let _ = tokio::time::timeout(BROKER_TIMEOUT, closing).await;
                return;
            }
            Err(reason) => {
                tracing::warn!(queue = %spec.queue, %reason, "consumer lost; reconnecting");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Batching {
    max_batch: usize,
    max_wait: Duration,
}

/// A delivered message, with what settling it needs.
struct Received {
    message: Message,
    acker: lapin::Acker,
    /// Its properties as delivered, for the copy a retry publishes.
    properties: BasicProperties,
}

async fn consume_batches_on<H, F>(
    connection: &Connection,
    spec: &ConsumerSpec,
    batching: Batching,
    shutdown: &CancellationToken,
    handler: &mut H,
    backoff: &mut Backoff,
) -> Result<(), String>
where
    H: FnMut(Vec<Message>) -> F,
    F: Future<Output = Vec<Decision>>,
{
    let (channel, mut consumer) =
        tokio::time::timeout(BROKER_TIMEOUT, open_consumer(connection, spec)).await.map_err(
            |_| format!("the broker did not open the consumer within {BROKER_TIMEOUT:?}"),
        )??;
    tracing::info!(queue = %spec.queue, consumer = %spec.name, max_batch = batching.max_batch, max_failures = spec.max_failures, "consuming");
    if let Some(hearing) = &spec.hearing {
        hearing.set(Some(Utc::now()));
    }
    backoff.reset();
    // Retried copies are published as this user: RabbitMQ vouches for it, so a copy is told
    // from a message someone else made look like one.
    let own_user = crate::access::url_user(&spec.url);
    let mut pause = Backoff::new(RETRY_PAUSE, MAX_RETRY_PAUSE);
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = consumer.next() => next,
        };
        let mut batch = vec![receive(first, own_user.as_deref())?];
        let deadline = Instant::now() + batching.max_wait;
        while batch.len() < batching.max_batch {
            // What has already arrived joins at once; then wait for more until the deadline.
            let next = match consumer.next().now_or_never() {
                Some(next) => next,
                None if Instant::now() >= deadline => break,
                None => tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep_until(deadline) => break,
                    next = consumer.next() => next,
                },
            };
            batch.push(receive(next, own_user.as_deref())?);
        }
        let messages: Vec<Message> = batch.iter().map(|r| r.message.clone()).collect();
        let decisions = handle(handler, messages).await;
        if !channel.status().connected() {
            // Lost while the batch was handled: it comes back, to be handled again (what
            // consumers do is idempotent); acknowledging on a dead channel could wait forever.
            return Err("the channel closed while a batch was handled".into());
        }
        let settling = settle(&channel, spec, own_user.as_deref(), &batch, decisions);
        let sent_back = tokio::time::timeout(SETTLE_TIMEOUT, settling).await.map_err(|_| {
            format!(
                "the broker did not take the batch's acknowledgements within {SETTLE_TIMEOUT:?}"
            )
        })??;
        if sent_back {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause.next_delay()) => {}
            }
        } else {
            pause.reset();
        }
    }
}

/// The handler's decisions for `messages`, as many as there are messages; a handler that panics
/// (building its future or running it) fails them all with the panic's message.
async fn handle<H, F>(handler: &mut H, messages: Vec<Message>) -> Vec<Decision>
where
    H: FnMut(Vec<Message>) -> F,
    F: Future<Output = Vec<Decision>>,
{
    let count = messages.len();
    let handled = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(messages))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    let mut decisions = handled.unwrap_or_else(|panic| {
        let reason = format!("the handler panicked: {}", panic_message(panic.as_ref()));
        tracing::error!(%reason, messages = count, "consumer handler panicked");
        vec![Decision::Retry(reason); count]
    });
    decisions.resize(count, Decision::Requeue);
    decisions
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Carries out `decisions` for `batch`, by position: publishes the dead letters and retried
/// copies (all at once, then waits for their confirms), then acks each message that is settled
/// (handled, or its dead letter or copy confirmed) with one `multiple` ack per run and nacks the
/// others back into the queue. Returns whether any message went back to the queue.
async fn settle(
    channel: &Channel,
    spec: &ConsumerSpec,
    own_user: Option<&str>,
    batch: &[Received],
    decisions: Vec<Decision>,
) -> Result<bool, String> {
    let max_failures = spec.max_failures.max(1);
    let mut settled = vec![false; batch.len()];
    let mut sent_back = false;
    let mut confirms = Vec::new();
    for (index, (received, decision)) in batch.iter().zip(decisions).enumerate() {
        let message = &received.message;
        let publish = match decision {
            Decision::Ack => {
                settled[index] = true;
                continue;
            }
            Decision::Requeue => {
                sent_back = true;
                continue;
            }
            Decision::DeadLetter(reason) => {
                (true, dead_letter(spec, own_user, message, &reason, message.failures))
            }
            Decision::Retry(reason) => {
                let failures = message.failures.saturating_add(1);
                if failures >= max_failures {
                    let reason = format!("failed {failures} times: {reason}");
                    (true, dead_letter(spec, own_user, message, &reason, failures))
                } else {
                    tracing::warn!(queue = %spec.queue, routing_key = %message.routing_key, failures, max_failures, %reason, "message failed; retrying it later");
                    sent_back = true;
                    (false, retry_copy(spec, received, own_user, failures, &reason))
                }
            }
        };
        let (dead, publish) = publish;
        let Outgoing { exchange, routing_key, mandatory, properties } = publish;
        let options = BasicPublishOptions { mandatory, ..Default::default() };
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.as_str().into(),
                options,
                &message.data,
                properties,
            )
            .await
            .map_err(|e| e.to_string())?;
        confirms.push((index, dead, confirm));
    }
    for (index, dead, confirm) in confirms {
        match confirm.await.map_err(|e| e.to_string())? {
            Confirmation::Ack(None) => {
                settled[index] = true;
                if dead {
                    metrics::counter!(DEAD_LETTERED_METRIC, "queue" => spec.queue.clone())
                        .increment(1);
                }
            }
            Confirmation::Ack(Some(_returned)) => {
                tracing::warn!(queue = %spec.queue, "a retried copy was routed nowhere; the message goes back to the queue");
                sent_back = true;
            }
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                tracing::warn!(queue = %spec.queue, "the broker refused a dead letter or retried copy; the message goes back to the queue");
                sent_back = true;
            }
        }
    }
    // One `multiple` ack for each run of settled messages; one sent back ends the run.
    let mut pending_ack = None;
    for (received, settled) in batch.iter().zip(settled) {
        if settled {
            pending_ack = Some(&received.acker);
            continue;
        }
        if let Some(last) = pending_ack.take() {
            last.ack(BasicAckOptions { multiple: true }).await.map_err(|e| e.to_string())?;
        }
        let options = BasicNackOptions { requeue: true, ..Default::default() };
        received.acker.nack(options).await.map_err(|e| e.to_string())?;
    }
    if let Some(last) = pending_ack {
        last.ack(BasicAckOptions { multiple: true }).await.map_err(|e| e.to_string())?;
    }
    Ok(sent_back)
}

/// A message to publish in place of one consumed.
struct Outgoing {
    exchange: String,
    routing_key: String,
    /// Whether the broker must return it when no queue takes it.
    mandatory: bool,
    properties: BasicProperties,
}

/// `message`'s dead letter: its body and routing key, its publisher's id (so it can be traced
/// back to its record), the reason, the queue, how many times it failed, if it did, and its
/// publisher. Published as the consumer's user (RabbitMQ checks the `user-id`): whoever reads the
/// dead letter trusts these headers only from the user that consumes the queue they name
/// ([`crate::dead_letters`]), since anyone who may write the dead-letter exchange could set them.
fn dead_letter(
    spec: &ConsumerSpec,
    own_user: Option<&str>,
    message: &Message,
    reason: &str,
    failures: u32,
) -> Outgoing {
    tracing::warn!(queue = %spec.queue, routing_key = %message.routing_key, %reason, "dead-lettering a message");
    let mut headers = FieldTable::default();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert(QUEUE_HEADER.into(), AMQPValue::LongString(spec.queue.as_str().into()));
    if failures > 0 {
        headers.insert(FAILURES_HEADER.into(), AMQPValue::LongLongInt(i64::from(failures)));
    }
    // Whose message it was, for a replay ([`crate::dead_letters`]): the dead letter's own
    // `user-id` is the consumer's.
    if let Some(user) = &message.user_id {
        headers.insert(USER_ID_HEADER.into(), AMQPValue::LongString(user.as_str().into()));
    }
    let mut properties = message_properties(&spec.name).with_headers(headers);
    if let Some(user) = own_user {
        properties = properties.with_user_id(user.into());
    }
    if let Some(id) = &message.message_id {
        properties = properties.with_message_id(id.as_str().into());
    }
    Outgoing {
        exchange: DEAD_LETTER_EXCHANGE.to_owned(),
        routing_key: message.routing_key.clone(),
        mandatory: false,
        properties,
    }
}

/// The copy of `received` that a retry puts at the end of its queue (through the default
/// exchange, mandatory, so a copy that no queue takes is not confirmed as if stored): the same
/// body and properties, `failures` and the last error in headers, and the message's routing key
/// and publisher in headers too, since the copy's own are the queue's name and the consumer's
/// user.
fn retry_copy(
    spec: &ConsumerSpec,
    received: &Received,
    own_user: Option<&str>,
    failures: u32,
    reason: &str,
) -> Outgoing {
    let message = &received.message;
    let original = &received.properties;
    let mut headers = FieldTable::default();
    for (key, value) in original.headers().iter().flat_map(FieldTable::inner) {
        if ![FAILURES_HEADER, ROUTING_KEY_HEADER, USER_ID_HEADER, LAST_ERROR_HEADER]
            .contains(&key.as_str())
        {
            headers.insert(key.clone(), value.clone());
        }
    }
    headers.insert(FAILURES_HEADER.into(), AMQPValue::LongLongInt(i64::from(failures)));
    headers.insert(LAST_ERROR_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(message.routing_key.as_str().into()),
    );
    if let Some(user) = &message.user_id {
        headers.insert(USER_ID_HEADER.into(), AMQPValue::LongString(user.as_str().into()));
    }
    let properties = copy_properties(original, headers, own_user);
    Outgoing {
        exchange: String::new(),
        routing_key: spec.queue.clone(),
        mandatory: true,
        properties,
    }
}

/// The properties of a copy of a message that carried `original`, with `headers`, published by
/// `own_user`: a retried copy, a replayed dead letter. Built afresh, not cloned: the publisher's
/// `user-id` must not be kept (RabbitMQ refuses a `user-id` other than the connection's), nor an
/// expiration restarted.
pub(crate) fn copy_properties(
    original: &BasicProperties,
    headers: FieldTable,
    own_user: Option<&str>,
) -> BasicProperties {
    let mut properties = BasicProperties::default().with_headers(headers).with_delivery_mode(2);
    let text = |value: &Option<ShortString>| value.clone();
    if let Some(value) = text(original.content_type()) {
        properties = properties.with_content_type(value);
    }
    if let Some(value) = text(original.content_encoding()) {
        properties = properties.with_content_encoding(value);
    }
    if let Some(value) = text(original.correlation_id()) {
        properties = properties.with_correlation_id(value);
    }
    if let Some(value) = text(original.message_id()) {
        properties = properties.with_message_id(value);
    }
    if let Some(value) = text(original.kind()) {
        properties = properties.with_type(value);
    }
    if let Some(value) = text(original.app_id()) {
        properties = properties.with_app_id(value);
    }
    if let Some(value) = *original.priority() {
        properties = properties.with_priority(value);
    }
    if let Some(value) = *original.timestamp() {
        properties = properties.with_timestamp(value);
    }
    if let Some(user) = own_user {
        properties = properties.with_user_id(user.into());
    }
    properties
}

/// The message and what settling it needs, from the consumer stream's next item; an error or
/// the end of the stream is the connection's loss. A copy this consumer's user published for a
/// retry, or a dead letter it replayed ([`crate::dead_letters`]; RabbitMQ vouches for a
/// `user-id`), is handed on with the routing key and publisher of the message it copies; in anything else those headers are ignored, so no publisher can speak
/// for another through them. The failure count is read from any message: a publisher that sets
/// it can only shorten its own message's retries.
fn receive(
    next: Option<Result<Delivery, lapin::Error>>,
    own_user: Option<&str>,
) -> Result<Received, String> {
    let delivery = match next {
        Some(Ok(delivery)) => delivery,
        Some(Err(err)) => return Err(err.to_string()),
        None => return Err("the consumer stream ended".into()),
    };
    let Delivery { data, routing_key, redelivered, properties, acker, .. } = delivery;
    let headers = properties.headers().as_ref();
    let user_id = properties.user_id().as_ref().map(ShortString::to_string);
    let failures = headers.and_then(|h| header_count(h, FAILURES_HEADER)).unwrap_or(0);
    let replayed = headers.is_some_and(|h| h.inner().contains_key(REPLAYED_HEADER));
    let copy = own_user.is_some() && user_id.as_deref() == own_user && (failures > 0 || replayed);
    let (routing_key, user_id) = match headers {
        Some(headers) if copy => (
            header_text(headers, ROUTING_KEY_HEADER).unwrap_or_else(|| routing_key.to_string()),
            header_text(headers, USER_ID_HEADER),
        ),
        _ => (routing_key.to_string(), user_id),
    };
    let message = Message {
        routing_key,
        user_id,
        message_id: properties.message_id().as_ref().map(ShortString::to_string),
        data,
        redelivered,
        failures,
    };
    Ok(Received { message, acker, properties })
}

/// A text header's value.
fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// A count header's value, of whichever integer type it came as (clients and brokers differ);
/// a negative or non-integer one counts as absent.
pub(crate) fn header_count(headers: &FieldTable, name: &str) -> Option<u32> {
    let value: i64 = match headers.inner().get(name)? {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(value).ok()
}

/// Opens a channel for consuming `spec.queue`: the topology declared, publisher confirms on (for
/// the dead letters and retried copies it publishes: a message is acked only once they are
/// confirmed), the prefetch set, and the consumer started with manual acks.
async fn open_consumer(
    connection: &Connection,
    spec: &ConsumerSpec,
) -> Result<(Channel, lapin::Consumer), String> {
    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    spec.topology.declare(&channel).await.map_err(|e| e.to_string())?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let consumer = channel
        .basic_consume(
            spec.queue.as_str().into(),
            spec.name.as_str().into(),
            BasicConsumeOptions::default(), // manual acks: no_ack is false
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((channel, consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        let cases = [
            (
                "amqps://bot:s3cret@rabbit:5671/%2f?cacertfile=/ca.pem",
                "amqps://bot:***@rabbit:5671/%2f?cacertfile=/ca.pem",
            ),
            ("postgres://bot:s3cret@db:5432/botline", "postgres://bot:***@db:5432/botline"),
            ("amqp://bot:p@ss@rabbit/%2f", "amqp://bot:***@rabbit/%2f"),
            ("amqp://guest@127.0.0.1/x?a=b@c:d", "amqp://guest@127.0.0.1/x?a=b@c:d"),
            ("amqp://rabbit/%2f", "amqp://rabbit/%2f"),
            ("sqlite://botline.db?mode=rwc", "sqlite://botline.db?mode=rwc"),
            ("amqps:bot:s3cret@rabbit", "<a URL that does not parse>"),
        ];
        for (url, redacted) in cases {
            assert_eq!(redact_url(url), redacted, "{url}");
        }
    }

    #[tokio::test]
    async fn a_url_that_does_not_parse_is_refused_without_its_password() {
        for url in [
            "amqps:bot:s3cret@127.0.0.1:5671",
            "amqp://bot:s3cret@127.0.0.1:notaport/%2f",
            "amqp://bot:s3cret@127.0.0.1/%2f?heartbeat=often",
            "http://bot:s3cret@127.0.0.1/",
            "amqp://bot:s3cret@127.0.0.1/%2f?cacertfile=/ca.pem",
        ] {
            let error = connect(url, "test").await.expect_err(url).to_string();
            assert!(error.contains("invalid AMQP URL"), "{url}: {error}");
            assert!(!error.contains("s3cret"), "{url}: {error}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
