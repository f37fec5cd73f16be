//! AMQP mode's reporting: the events a bot reports within a short window go out together, in
//! one `bot.events` message ([`encode_events`]) and under one publisher confirm.
//!
//! [`AmqpReporter::submit`] queues an event with a oneshot and hands back a future of the
//! confirm. One flusher task takes what is queued, in order: up to [`MAX_BATCH_EVENTS`] events
//! or about [`MAX_BATCH_BYTES`] of them, whichever comes first. While an acceptance is queued it
//! waits at most the batch delay after the oldest queued event, for the end of a quick run to
//! take the acceptance's place (below); with no acceptance queued, or a delay of zero, it sends
//! what is queued without waiting. It publishes the batch, waits for the broker's confirm, and
//! resolves the oneshot of every event of the batch with it; then it takes the next batch. While
//! one batch waits for its confirm the next one gathers, so under load batches grow by themselves.
//!
//! Implied acceptance: a `task.completed` or `task.failed` queued while the `task.accepted` of
//! the same attempt is still queued (not yet handed to the publisher) takes the acceptance's
//! place: the acceptance is left out (the orchestrator takes the end of an attempt it offered
//! and was not told was accepted), and its waiter is resolved with the batch that carries the
//! end. [`EventQueue`] is that logic, pure.
//!
//! Without batches (`--no-event-batches`, for an orchestrator older than `bot.events`), every
//! event is a message of its own, as before, and none is left out; the flusher still takes them
//! in order, publishing at once (concurrently) only events about different attempts, so that an
//! attempt's events reach the broker in the order they were reported.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use broker_config::messages::{encode, encode_events};
use broker_config::topology::EVENTS_EXCHANGE;
use broker_config::{BotName, Event, PublishError, Publisher, TaskRef};
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::reporter::ReportError;

/// The most events one batch carries (well under [`broker_config::messages::MAX_BATCH`]).
pub const MAX_BATCH_EVENTS: usize = 200;
/// About the most bytes of events one batch carries: the encoded events are counted, not the
/// envelope around them. An event larger than this goes alone.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// How events are grouped into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Several events to a message (`bot.events`), an acceptance a completion implies left out;
    /// when false, one message per event and nothing left out.
    pub combine: bool,
    /// How long the oldest queued event waits for others, while an acceptance that an end could
    /// replace is queued ([`EventQueue::deadline`]).
    pub delay: Duration,
    /// The most events taken at once.
    pub max_events: usize,
    /// About the most bytes of events one message carries (when `combine`).
    pub max_bytes: usize,
}

impl Batching {
    /// Batches of up to [`MAX_BATCH_EVENTS`] events or [`MAX_BATCH_BYTES`], the oldest event
    /// waiting at most `delay` for others.
    pub fn combined(delay: Duration) -> Batching {
        Batching { combine: true, delay, max_events: MAX_BATCH_EVENTS, max_bytes: MAX_BATCH_BYTES }
    }

    /// One message per event, sent without waiting (`--no-event-batches`).
    pub fn one_per_message() -> Batching {
        Batching {
            combine: false,
            delay: Duration::ZERO,
            max_events: MAX_BATCH_EVENTS,
            max_bytes: MAX_BATCH_BYTES,
        }
    }
}

/// One queued event, and whoever waits for its confirm: several waiters when it carries an
/// acceptance it implies.
struct Entry<W> {
    event: Event,
    /// Its encoded size (0 when events are not combined: nothing bounds by size then).
    size: usize,
    /// When it was queued (the acceptance's time, for an end that took an acceptance's place).
    queued_at: Instant,
    waiters: Vec<W>,
}

/// The events waiting to be handed to the publisher, in the order they were reported, each with
/// its waiters (`W`: a oneshot in the agent, anything in tests). Pure: no IO, no clock of its
/// own.
pub(crate) struct EventQueue<W> {
    batching: Batching,
    entries: VecDeque<Entry<W>>,
    /// The sum of the entries' sizes.
    bytes: usize,
    /// The attempts whose `task.accepted` is queued and is the last queued event about them: an
    /// end of one of them takes its acceptance's place.
    acceptances: HashSet<TaskRef>,
}

impl<W> EventQueue<W> {
    /// An empty queue grouping events as `batching` says.
    pub(crate) fn new(batching: Batching) -> EventQueue<W> {
        EventQueue { batching, entries: VecDeque::new(), bytes: 0, acceptances: HashSet::new() }
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues `event`, reported at `now`, for `waiter`. When events are combined, an end
    /// (`task.completed`, `task.failed`) of an attempt whose acceptance is still queued, with
    /// nothing else about that attempt after it, removes the acceptance: the end implies it, and
    /// the acceptance's waiters wait for the end's confirm instead.
    pub(crate) fn push(&mut self, event: Event, waiter: W, now: Instant) {
        let mut waiters = Vec::new();
        let mut queued_at = now;
        if let Some(task) = event.task() {
            // Whatever else is queued about the attempt comes after its acceptance, which is then
            // no longer the last: the acceptance stays.
            let was_last = self.acceptances.remove(&task);
            let ends = matches!(event, Event::TaskCompleted { .. } | Event::TaskFailed { .. });
            if self.batching.combine && ends && was_last {
                let accepted = self.entries.iter().rposition(
                    |e| matches!(e.event, Event::TaskAccepted { task: t, .. } if t == task),
                );
                if let Some(accepted) = accepted.and_then(|index| self.entries.remove(index)) {
                    self.bytes -= accepted.size;
                    waiters = accepted.waiters;
                    queued_at = accepted.queued_at;
                }
            }
            if matches!(event, Event::TaskAccepted { .. }) {
                self.acceptances.insert(task);
            }
        }
        waiters.push(waiter);
        let size = if self.batching.combine { encoded_size(&event) } else { 0 };
        self.bytes += size;
        self.entries.push_back(Entry { event, size, queued_at, waiters });
    }

    /// Whether the next batch can take no more: it is sent at once.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.batching.max_events.max(1)
            || (self.batching.combine && self.bytes >= self.batching.max_bytes)
    }

    /// When what is queued must be sent; `None` when nothing is queued. While an acceptance that
    /// an end could still take the place of is queued, the batch delay after the oldest queued
    /// event: a quick run's end then travels alone, its acceptance implied. Otherwise at once:
    /// nothing queued is worth the wait, and what comes while the batch waits for its confirm
    /// gathers for the next one anyway.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let oldest = self.entries.iter().map(|entry| entry.queued_at).min()?;
        Some(if self.acceptances.is_empty() { oldest } else { oldest + self.batching.delay })
    }

    /// Takes the next batch from the front of the queue, in order: up to `max_events` events and,
    /// when combined, about `max_bytes` of them (at least one, however large); when not combined,
    /// only events about different attempts (the bot's own events count as one attempt), since
    /// those are published concurrently. Each event comes with its waiters.
    pub(crate) fn take_batch(&mut self) -> Vec<(Event, Vec<W>)> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut attempts = HashSet::new();
        while let Some(next) = self.entries.front() {
            if batch.len() >= self.batching.max_events.max(1) {
                break;
            }
            if self.batching.combine {
                if !batch.is_empty() && bytes + next.size > self.batching.max_bytes {
                    break;
                }
            } else if !attempts.insert(next.event.task()) {
                break;
            }
            let Some(entry) = self.entries.pop_front() else { break };
            bytes += entry.size;
            self.bytes -= entry.size;
            if let Event::TaskAccepted { task, .. } = &entry.event {
                // Handed to the publisher: an end queued from now on no longer replaces it.
                self.acceptances.remove(task);
            }
            batch.push((entry.event, entry.waiters));
        }
        batch
    }
}

/// How many bytes `event` takes encoded.
fn encoded_size(event: &Event) -> usize {
    encode(event).len()
}

/// Where batches go: the broker ([`Publisher`]), or a fake in tests.
pub(crate) trait EventSink: Send + Sync + 'static {
    /// Publishes `body` with `routing_key` on `botline.events`; `Ok` once the broker confirmed.
    fn send(
        &self,
        routing_key: &'static str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl EventSink for Publisher {
    async fn send(&self, routing_key: &'static str, body: Vec<u8>) -> Result<(), PublishError> {
        self.publish(EVENTS_EXCHANGE, routing_key, &body, false).await.map(|_published| ())
    }
}

/// Resolves a report's waiter with the confirm of the message that carried it.
type Waiter = oneshot::Sender<Result<(), ReportError>>;

/// An event on its way to the flusher.
struct Queued {
    event: Event,
    waiter: Waiter,
}

/// AMQP mode's reporter: hands events to the flusher task, which batches and publishes them (see
/// the module's documentation). Clones share the flusher, which stops once every clone is gone.
#[derive(Clone)]
pub struct AmqpReporter {
    queue: mpsc::UnboundedSender<Queued>,
}

impl AmqpReporter {
    /// Starts the flusher, publishing for the bot `bot` with `publisher` as `batching` says. Must
    /// be called within a Tokio runtime.
    pub fn start(publisher: Publisher, bot: BotName, batching: Batching) -> AmqpReporter {
        AmqpReporter::start_with(publisher, bot, batching)
    }

    /// [`AmqpReporter::start`] with any sink.
    pub(crate) fn start_with<S: EventSink>(
        sink: S,
        bot: BotName,
        batching: Batching,
    ) -> AmqpReporter {
        let (queue, incoming) = mpsc::unbounded_channel();
        tokio::spawn(flush(sink, bot, batching, incoming));
        AmqpReporter { queue }
    }

    /// Queues `event` now (so nothing reported later overtakes it) and returns a future of its
    /// confirm. Dropping the future does not take the event back.
    pub fn submit(
        &self,
        event: Event,
    ) -> impl Future<Output = Result<(), ReportError>> + Send + 'static {
        let (waiter, confirmed) = oneshot::channel();
        // If the flusher is gone, the waiter is dropped with the event and the future says so.
        let _ = self.queue.send(Queued { event, waiter });
        async move { confirmed.await.unwrap_or(Err(ReportError::Stopped)) }
    }
}

/// The flusher: batches what `incoming` brings and sends each batch to `sink`, one batch at a
/// time, until every reporter is gone and the queue is empty.
async fn flush<S: EventSink>(
    sink: S,
    bot: BotName,
    batching: Batching,
    mut incoming: mpsc::UnboundedReceiver<Queued>,
) {
    let mut queue = EventQueue::new(batching);
    loop {
        if queue.is_empty() {
            let Some(Queued { event, waiter }) = incoming.recv().await else { return };
            queue.push(event, waiter, Instant::now());
        }
        gather(&mut queue, &mut incoming).await;
        let batch = queue.take_batch();
        send(&sink, &bot, batching, batch).await;
    }
}

/// Adds to `queue` what arrives until the next batch is full or its delay has passed (or
/// `incoming` has closed).
async fn gather(queue: &mut EventQueue<Waiter>, incoming: &mut mpsc::UnboundedReceiver<Queued>) {
    loop {
        // What has arrived joins at once, so an end can take its acceptance's place.
        while let Ok(Queued { event, waiter }) = incoming.try_recv() {
            queue.push(event, waiter, Instant::now());
        }
        if queue.is_full() {
            return;
        }
        let Some(deadline) = queue.deadline() else { return };
        if Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            next = incoming.recv() => match next {
                Some(Queued { event, waiter }) => queue.push(event, waiter, Instant::now()),
                None => return,
            },
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Publishes `batch` and resolves its waiters with the confirm: one message for them all when
/// combined; otherwise one message per event, published concurrently.
async fn send<S: EventSink>(
    sink: &S,
    bot: &BotName,
    batching: Batching,
    batch: Vec<(Event, Vec<Waiter>)>,
) {
    if batch.is_empty() {
        return;
    }
    if batching.combine {
        let (events, waiters): (Vec<Event>, Vec<Vec<Waiter>>) = batch.into_iter().unzip();
        let (routing_key, body) = encode_events(bot, &events);
        let confirmed = sink.send(routing_key, body).await;
        if let Err(error) = &confirmed {
            tracing::warn!(events = events.len(), %error, "events not confirmed");
        }
        resolve(waiters.into_iter().flatten(), &confirmed);
    } else {
        join_all(batch.into_iter().map(|(event, waiters)| async move {
            let confirmed = sink.send(event.routing_key(), encode(&event)).await;
            resolve(waiters, &confirmed);
        }))
        .await;
    }
}

/// Hands `confirmed` to each of `waiters` (a waiter that stopped waiting is skipped).
fn resolve(waiters: impl IntoIterator<Item = Waiter>, confirmed: &Result<(), PublishError>) {
    for waiter in waiters {
        let _ = waiter.send(match confirmed {
            Ok(()) => Ok(()),
            Err(error) => Err(ReportError::Amqp(copy_error(error))),
        });
    }
}

/// A copy of `error`, for each of the events it failed.
fn copy_error(error: &PublishError) -> PublishError {
    match error {
        PublishError::Unavailable(reason) => PublishError::Unavailable(reason.clone()),
        PublishError::ShuttingDown => PublishError::ShuttingDown,
    }
}

/// A fake broker for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    use broker_config::messages::decode_events;
    use broker_config::{Event, PublishError};

    use super::EventSink;

    /// A message as sent: its routing key and its events.
    pub(crate) type Sent = (&'static str, Vec<Event>);

    /// A sink that records the messages it is sent, and fails while told to.
    #[derive(Clone, Default)]
    pub(crate) struct Recorder {
        sent: Arc<Mutex<Vec<Sent>>>,
        failing: Arc<Mutex<bool>>,
    }

    impl EventSink for Recorder {
        async fn send(&self, routing_key: &'static str, body: Vec<u8>) -> Result<(), PublishError> {
            // A confirm takes a moment, so events reported meanwhile gather.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if *lock(&self.failing) {
                return Err(PublishError::Unavailable("down".into()));
            }
            let events =
                decode_events(&body).map_err(|e| PublishError::Unavailable(e.to_string()))?;
            lock(&self.sent).push((routing_key, events));
            Ok(())
        }
    }

    impl Recorder {
        /// The messages confirmed so far: routing key and events.
        pub(crate) fn sent(&self) -> Vec<Sent> {
            lock(&self.sent).clone()
        }

        /// The events confirmed so far, in order.
        pub(crate) fn events(&self) -> Vec<Event> {
            self.sent().into_iter().flat_map(|(_, events)| events).collect()
        }

        /// Makes the broker refuse (`true`) or confirm (`false`) what follows.
        pub(crate) fn fail(&self, failing: bool) {
            *lock(&self.failing) = failing;
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Recorder;
    use super::*;

    use broker_config::messages::EVENTS_TYPE;
    use chrono::Utc;
    use uuid::Uuid;

    fn bot() -> BotName {
        BotName::parse("b").expect("name")
    }

    fn attempt(n: u128) -> TaskRef {
        TaskRef { task_id: Uuid::from_u128(n), attempt: 1 }
    }

    fn accepted(task: TaskRef) -> Event {
        Event::TaskAccepted { task, bot: bot(), at: Utc::now() }
    }

    fn progress(task: TaskRef) -> Event {
        Event::TaskProgress { task, bot: bot(), rows: vec![], at: Utc::now() }
    }

    fn completed(task: TaskRef) -> Event {
        Event::TaskCompleted {
            task,
            bot: bot(),
            rows: vec![],
            output: None,
            log: None,
            at: Utc::now(),
        }
    }

    fn failed(task: TaskRef) -> Event {
        Event::TaskFailed {
            task,
            bot: bot(),
            rows: vec![],
            error: "down".into(),
            retryable: true,
            log: None,
            at: Utc::now(),
        }
    }

    fn released(task: TaskRef) -> Event {
        Event::TaskReleased {
            task,
            bot: bot(),
            rows: vec![],
            reason: "stop".into(),
            at: Utc::now(),
        }
    }

    fn heartbeat() -> Event {
        Event::BotHeartbeat { bot: bot(), task: None, tasks: vec![], at: Utc::now() }
    }

    /// A batch as `(routing key, task, waiters)` per event, for comparing.
    fn shape(batch: Vec<(Event, Vec<u32>)>) -> Vec<(&'static str, Option<TaskRef>, Vec<u32>)> {
        batch
            .into_iter()
            .map(|(event, waiters)| (event.routing_key(), event.task(), waiters))
            .collect()
    }

    #[test]
    fn an_end_queued_behind_its_acceptance_takes_its_place_and_its_waiter() {
        let now = Instant::now();
        let (one, two) = (attempt(1), attempt(2));
        let mut queue = EventQueue::new(Batching::combined(Duration::from_millis(2)));
        queue.push(accepted(one), 1, now);
        queue.push(accepted(two), 2, now);
        queue.push(heartbeat(), 3, now);
        queue.push(completed(one), 4, now);
        queue.push(failed(two), 5, now);
        assert_eq!(
            shape(queue.take_batch()),
            [
                ("bot.heartbeat", None, vec![3]),
                ("task.completed", Some(one), vec![1, 4]),
                ("task.failed", Some(two), vec![2, 5]),
            ],
            "both acceptances left out; each waiter resolved with the end that implies it"
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn an_acceptance_already_handed_to_the_publisher_is_not_replaced() {
        let now = Instant::now();
        let task = attempt(1);
        let mut queue = EventQueue::new(Batching::combined(Duration::ZERO));
        queue.push(accepted(task), 1, now);
        assert_eq!(shape(queue.take_batch()), [("task.accepted", Some(task), vec![1])]);
        queue.push(completed(task), 2, now);
        assert_eq!(shape(queue.take_batch()), [("task.completed", Some(task), vec![2])]);
    }

    #[test]
    fn an_acceptance_followed_by_other_news_of_its_attempt_stays() {
        let now = Instant::now();
        let task = attempt(1);
        let mut queue = EventQueue::new(Batching::combined(Duration::ZERO));
        queue.push(accepted(task), 1, now);
        queue.push(progress(task), 2, now);
        queue.push(completed(task), 3, now);
        assert_eq!(
            shape(queue.take_batch()),
            [
                ("task.accepted", Some(task), vec![1]),
                ("task.progress", Some(task), vec![2]),
                ("task.completed", Some(task), vec![3]),
            ]
        );
    }

    #[test]
    fn only_a_completion_or_failure_of_the_same_attempt_implies_an_acceptance() {
        let now = Instant::now();
        let task = attempt(1);
        let next_attempt = TaskRef { attempt: 2, ..task };
        let mut queue = EventQueue::new(Batching::combined(Duration::ZERO));
        queue.push(accepted(task), 1, now);
        queue.push(completed(next_attempt), 2, now);
        queue.push(released(task), 3, now);
        assert_eq!(
            shape(queue.take_batch()),
            [
                ("task.accepted", Some(task), vec![1]),
                ("task.completed", Some(next_attempt), vec![2]),
                ("task.released", Some(task), vec![3]),
            ],
            "another attempt's end, or a release, leaves the acceptance"
        );
    }

    #[test]
    fn without_batches_nothing_is_left_out_and_an_attempt_is_never_twice_in_a_batch() {
        let now = Instant::now();
        let (one, two) = (attempt(1), attempt(2));
        let mut queue = EventQueue::new(Batching::one_per_message());
        queue.push(accepted(one), 1, now);
        queue.push(accepted(two), 2, now);
        queue.push(heartbeat(), 3, now);
        queue.push(completed(one), 4, now);
        queue.push(heartbeat(), 5, now);
        assert_eq!(
            shape(queue.take_batch()),
            [
                ("task.accepted", Some(one), vec![1]),
                ("task.accepted", Some(two), vec![2]),
                ("bot.heartbeat", None, vec![3]),
            ],
            "published concurrently: up to the next event about an attempt already in it"
        );
        assert_eq!(
            shape(queue.take_batch()),
            [("task.completed", Some(one), vec![4]), ("bot.heartbeat", None, vec![5])],
            "the completion goes after its acceptance, not in its place"
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn a_batch_holds_at_most_max_events_and_about_max_bytes_in_order() {
        let now = Instant::now();
        let batching = Batching { max_events: 3, ..Batching::combined(Duration::ZERO) };
        let mut queue = EventQueue::new(batching);
        for n in 0..7 {
            queue.push(heartbeat(), n, now);
        }
        assert!(queue.is_full());
        let sizes: Vec<Vec<u32>> = std::iter::from_fn(|| {
            let batch = queue.take_batch();
            (!batch.is_empty()).then(|| batch.into_iter().flat_map(|(_, w)| w).collect())
        })
        .collect();
        assert_eq!(sizes, [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);

        let one = encoded_size(&heartbeat());
        let batching =
            Batching { max_bytes: one * 2 + one / 2, ..Batching::combined(Duration::ZERO) };
        let mut queue = EventQueue::new(batching);
        let big = Event::TaskCompleted {
            task: attempt(9),
            bot: bot(),
            rows: vec![],
            output: Some(serde_json::json!("x".repeat(one * 4))),
            log: None,
            at: Utc::now(),
        };
        for (n, event) in
            [heartbeat(), heartbeat(), heartbeat(), big, heartbeat()].into_iter().enumerate()
        {
            queue.push(event, n, now);
        }
        assert!(queue.is_full(), "over the bytes");
        let batches: Vec<Vec<usize>> = std::iter::from_fn(|| {
            let batch = queue.take_batch();
            (!batch.is_empty()).then(|| batch.into_iter().flat_map(|(_, w)| w).collect())
        })
        .collect();
        assert_eq!(
            batches,
            [vec![0, 1], vec![2], vec![3], vec![4]],
            "an event too large goes alone"
        );
    }

    #[test]
    fn a_queued_acceptance_waits_the_delay_after_the_oldest_event_for_its_end() {
        let start = Instant::now();
        let delay = Duration::from_millis(5);
        let mut queue = EventQueue::new(Batching::combined(delay));
        assert_eq!(queue.deadline(), None);
        let (one, two) = (attempt(1), attempt(2));
        queue.push(heartbeat(), 1, start);
        queue.push(accepted(one), 2, start + Duration::from_millis(1));
        queue.push(accepted(two), 3, start + Duration::from_millis(2));
        assert_eq!(queue.deadline(), Some(start + delay), "from the oldest event");
        queue.push(completed(one), 4, start + Duration::from_millis(3));
        assert_eq!(queue.deadline(), Some(start + delay), "two's acceptance may still be replaced");
        queue.push(progress(two), 5, start + Duration::from_millis(4));
        assert_eq!(
            queue.deadline(),
            Some(start),
            "no acceptance left that an end could replace: nothing is worth waiting for"
        );
        assert!(!queue.is_full());
    }

    #[test]
    fn without_a_queued_acceptance_events_go_at_once() {
        let start = Instant::now();
        let mut queue = EventQueue::new(Batching::combined(Duration::from_millis(5)));
        let task = attempt(1);
        queue.push(accepted(task), 1, start);
        queue.push(completed(task), 2, start + Duration::from_millis(1));
        assert_eq!(
            queue.deadline(),
            Some(start),
            "an end in its acceptance's place keeps the acceptance's time and goes at once"
        );
        queue.take_batch();
        queue.push(heartbeat(), 3, start + Duration::from_millis(2));
        assert_eq!(queue.deadline(), Some(start + Duration::from_millis(2)));
    }

    #[tokio::test]
    async fn events_reported_together_travel_in_one_message_in_order() {
        let sink = Recorder::default();
        let reporter = AmqpReporter::start_with(
            sink.clone(),
            bot(),
            Batching::combined(Duration::from_millis(50)),
        );
        let (one, two) = (attempt(1), attempt(2));
        let waits: Vec<_> = [accepted(one), heartbeat(), accepted(two), completed(one)]
            .into_iter()
            .map(|event| reporter.submit(event))
            .collect();
        for confirmed in join_all(waits).await {
            assert!(confirmed.is_ok(), "{confirmed:?}");
        }
        let sent = sink.sent();
        assert_eq!(sent.len(), 1, "one message: {sent:?}");
        assert_eq!(sent[0].0, EVENTS_TYPE);
        let keys: Vec<&str> = sent[0].1.iter().map(Event::routing_key).collect();
        assert_eq!(keys, ["bot.heartbeat", "task.accepted", "task.completed"]);
        assert_eq!(sent[0].1[1].task(), Some(two));
        assert_eq!(sent[0].1[2].task(), Some(one), "the completion stands for its acceptance");

        reporter.submit(heartbeat()).await.expect("alone");
        let sent = sink.sent();
        assert_eq!(sent[1].0, "bot.heartbeat", "one event travels as itself");
    }

    #[tokio::test]
    async fn a_failed_confirm_fails_every_event_of_its_batch_and_the_next_batch_goes_on() {
        let sink = Recorder::default();
        sink.fail(true);
        let reporter =
            AmqpReporter::start_with(sink.clone(), bot(), Batching::combined(Duration::ZERO));
        let task = attempt(1);
        let acceptance = reporter.submit(accepted(task));
        let end = reporter.submit(completed(task));
        let (acceptance, end) = tokio::join!(acceptance, end);
        assert!(matches!(acceptance, Err(ReportError::Amqp(PublishError::Unavailable(_)))));
        assert!(matches!(end, Err(ReportError::Amqp(PublishError::Unavailable(_)))));
        sink.fail(false);
        reporter.submit(heartbeat()).await.expect("the broker is back");
        assert_eq!(sink.sent().len(), 1);
    }

    #[tokio::test]
    async fn without_batches_each_event_is_a_message_of_its_own() {
        let sink = Recorder::default();
        let reporter = AmqpReporter::start_with(sink.clone(), bot(), Batching::one_per_message());
        let task = attempt(1);
        let waits = [accepted(task), completed(task)].map(|event| reporter.submit(event));
        for confirmed in join_all(waits).await {
            assert!(confirmed.is_ok(), "{confirmed:?}");
        }
        let keys: Vec<&str> = sink.sent().iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, ["task.accepted", "task.completed"], "in order, nothing left out");
    }
}
