//! AMQP mode: commands from the bot's own queue, events to `botline.events`.
//!
//! The consumer hands over whatever the broker has delivered (up to one message per slot) as one
//! batch. Each message holds one command, or several offers (`tasks.assign`). Every offer is
//! judged and answered at once: an accepted one starts running while its `task.accepted` is
//! reported, and each message is acknowledged once the answers to all its offers are confirmed.
//! Events travel through the batching [`AmqpReporter`], so the answers to a batch of offers
//! usually go out together, in one message.

use std::sync::Arc;
use std::time::Duration;

use broker_config::amqp::{Backoff, consume_batches};
use broker_config::messages::decode_commands;
use broker_config::topology::bot_queue;
use broker_config::{
    Assignment, Command, ConsumerSpec, Decision, Message, Publisher, TaskRef, Topology,
};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::agent::{Agent, Claim, Ticket};
use crate::automations::Automations;
use futures_util::future::join_all;

use crate::batcher::{AmqpReporter, Batching};
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::net::local_ip_towards;
use crate::reporter::{Reporter, Submitted};

/// How long a publish may wait for the broker's confirm (with reconnections) before it fails.
/// Below the orchestrator's offer expiry (10 s), so an unconfirmed acceptance is requeued while
/// the offer may still stand. (A batch of events is one publish: an event waits for the batch
/// before it, if one is out, then for its own.)
const PUBLISH_DEADLINE: Duration = Duration::from_secs(8);

/// Runs the agent on RabbitMQ until `shutdown`, then shuts down gracefully.
pub(crate) async fn run(
    config: AgentConfig,
    automations: Automations,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    // Connections are retried forever; a URL or TLS file that can never work stops the agent.
    broker_config::amqp::check_url(&config.broker_url())
        .map_err(|error| AgentError::Broker(error.to_string()))?;
    let name = config.name.clone();
    let connection_name = format!("bot-agent {name}");
    // A least-privilege broker user may not declare: its queue comes from the definitions, and
    // the agent only checks that it exists.
    let topology = Topology::bot(&name).with_queue_type(config.queue_type);
    let topology = if config.no_declare { topology.passive() } else { topology };
    // The publisher outlives `shutdown`: task.released and bot.offline go out after it.
    let publisher_stop = CancellationToken::new();
    let publisher = Publisher::new(
        config.broker_url(),
        connection_name.clone(),
        topology.clone(),
        PUBLISH_DEADLINE,
        publisher_stop.clone(),
    );
    // Declares (or checks) the bot's queue before the bot says it is online, so no offer is lost.
    let mut backoff = Backoff::default();
    while let Err(error) = publisher.connect().await {
        tracing::warn!(%error, "cannot connect to RabbitMQ or declare the bot's queue; retrying");
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
    let ip_address = match &config.ip_address {
        Some(ip) => ip.clone(),
        None => local_ip_towards(&config.amqp_url).await,
    };
    let batching = if config.no_event_batches {
        Batching::one_per_message()
    } else {
        Batching::combined(config.event_batch_delay())
    };
    let reporter = Reporter::Amqp(AmqpReporter::start(publisher, name.clone(), batching));
    let agent = Arc::new(Agent::new(&config, reporter, automations));
    tracing::info!(bot = %name, %ip_address, systems = ?config.systems, slots = config.slots, event_batches = batching.combine, "bot online (AMQP)");
    agent.announce_online(ip_address).await;
    let heartbeat_stop = CancellationToken::new();
    let heartbeats = tokio::spawn(
        Arc::clone(&agent).heartbeats(config.heartbeat_interval(), heartbeat_stop.clone()),
    );

    let prefetch = prefetch(config.slots);
    let spec = ConsumerSpec {
        url: config.broker_url(),
        name: connection_name,
        queue: bot_queue(&name),
        topology,
        prefetch,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    };
    // What has been delivered is handled at once; a batch is never waited for.
    consume_batches(spec, usize::from(prefetch), Duration::ZERO, shutdown.clone(), |messages| {
        let agent = Arc::clone(&agent);
        async move { on_deliveries(&agent, messages).await }
    })
    .await;

    tracing::info!("shutting down");
    agent.shut_down(config.shutdown_grace()).await;
    heartbeat_stop.cancel();
    let _ = heartbeats.await;
    agent.announce_offline().await;
    publisher_stop.cancel();
    Ok(())
}

/// The consumer's prefetch, and its largest batch, for a bot with `slots` slots: as many
/// unacknowledged messages as it has slots. The orchestrator can have an offer out for each free
/// slot, and the broker hands them over together rather than one per round trip; what has
/// arrived is handled as one batch, its answers confirmed together. A message is acknowledged
/// once the answers to its offers are confirmed, while the accepted tasks already run, so
/// running tasks do not count against the prefetch. Never 0 (which RabbitMQ reads as no limit);
/// a count past `u16::MAX` (more than `MAX_SLOTS` allows) gets the most the field holds.
fn prefetch(slots: u32) -> u16 {
    u16::try_from(slots.max(1)).unwrap_or(u16::MAX)
}

/// What was made of one message: decided at once, or waiting for the answers to its offers.
enum Taken {
    /// Nothing to wait for.
    Decided(Decision),
    /// Acknowledged once every answer is confirmed.
    Answering(Vec<Answer>),
}

/// The bot's answer to one offer, on its way.
struct Answer {
    /// The attempt offered.
    task: TaskRef,
    /// The answer's confirm.
    confirmed: Submitted,
    /// The run the offer started, when the answer is its acceptance.
    run: Option<Ticket>,
}

/// Handles the messages the broker delivered together, in order; their decisions, by position.
/// Each offer is answered, and each accepted one started, before the next command is read; then
/// the confirms of all the answers are awaited together.
async fn on_deliveries(agent: &Arc<Agent>, messages: Vec<Message>) -> Vec<Decision> {
    let taken: Vec<(tracing::Span, Taken)> = messages
        .iter()
        .map(|message| {
            let span = tracing::info_span!("delivery", routing_key = %message.routing_key, redelivered = message.redelivered);
            let taken = span.in_scope(|| take(agent, message));
            (span, taken)
        })
        .collect();
    join_all(taken.into_iter().map(|(span, taken)| decide(agent, taken).instrument(span))).await
}

/// Reads one message and acts on its commands in order: a malformed one is dead-lettered.
fn take(agent: &Arc<Agent>, message: &Message) -> Taken {
    let commands = match decode_commands(&message.data) {
        Ok(commands) => commands,
        Err(error) => return Taken::Decided(Decision::DeadLetter(error.to_string())),
    };
    let mut answers = Vec::new();
    for command in commands {
        match command {
            Command::AssignTask(assignment) => {
                answers.extend(take_offer(agent, assignment, message.redelivered));
            }
            Command::CancelTask { task, reason } => {
                agent.cancel(task, &reason);
            }
        }
    }
    Taken::Answering(answers)
}

/// Judges one offer and queues its answer; an accepted offer starts at once, its acceptance
/// queued first, so nothing the run reports overtakes it. `None`: nothing to answer.
fn take_offer(agent: &Arc<Agent>, assignment: Assignment, redelivered: bool) -> Option<Answer> {
    let task = assignment.task;
    match agent.claim_delivery(&assignment, Utc::now(), redelivered) {
        Claim::Expired => {
            tracing::info!(task_id = %task.task_id, attempt = task.attempt, "offer expired; ignored");
            None
        }
        Claim::Ended(why) => {
            tracing::info!(task_id = %task.task_id, attempt = task.attempt, why, "offer seen before; ignored");
            None
        }
        Claim::AlreadyRunning => {
            Some(Answer { task, confirmed: agent.submit(agent.accepted(&assignment)), run: None })
        }
        Claim::Rejected(reason) => {
            tracing::info!(task_id = %task.task_id, attempt = task.attempt, %reason, "offer rejected");
            let confirmed = agent.submit(agent.rejected(&assignment, reason));
            Some(Answer { task, confirmed, run: None })
        }
        Claim::Accepted(ticket) => {
            let confirmed = agent.submit(agent.accepted(&assignment));
            agent.start(assignment, ticket.clone(), false);
            Some(Answer { task, confirmed, run: Some(ticket) })
        }
    }
}

/// A message's decision: acked once the answers to all its offers are confirmed; requeued if
/// one is not (its redelivery is recognised: see [`answered`]).
async fn decide(agent: &Agent, taken: Taken) -> Decision {
    let answers = match taken {
        Taken::Decided(decision) => return decision,
        Taken::Answering(answers) => answers,
    };
    let confirmed = join_all(answers.into_iter().map(|answer| answered(agent, answer))).await;
    if confirmed.into_iter().all(|confirmed| confirmed) { Decision::Ack } else { Decision::Requeue }
}

/// Waits for `answer`'s confirm; whether it came. An acceptance that is not confirmed stops its
/// run silently if it is still going ([`Agent::stop_unconfirmed`]): the offer goes back to the
/// queue and its redelivery is judged as a new offer (claimed again if a slot is free and the
/// offer stands, turned down or ignored otherwise). A run that already came to its end goes on
/// reporting it (the end implies the acceptance), and the redelivery is ignored.
async fn answered(agent: &Agent, answer: Answer) -> bool {
    let Answer { task, confirmed, run } = answer;
    let Err(error) = confirmed.await else { return true };
    match run {
        Some(ticket) if agent.stop_unconfirmed(task, &ticket) => {
            tracing::warn!(task_id = %task.task_id, attempt = task.attempt, %error, "acceptance not confirmed; the task is stopped and the offer requeued");
        }
        Some(_) => {
            tracing::warn!(task_id = %task.task_id, attempt = task.attempt, %error, "acceptance not confirmed, but the task had already ended here (its final event implies the acceptance) or was cancelled; requeueing the offer");
        }
        None => {
            tracing::warn!(bot = %agent.name(), task_id = %task.task_id, %error, "answer not confirmed; requeueing the offer");
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    use broker_config::messages::{encode, encode_offers};
    use broker_config::{BotName, Event, System};
    use chrono::TimeDelta;
    use serde_json::json;

    use crate::batcher::testing::Recorder;

    /// A NOOP offer sleeping `ms`, valid for a minute.
    fn offer(ms: u64) -> Assignment {
        Assignment {
            task: TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 },
            system: System::NOOP,
            description: "test".into(),
            attachment: None,
            payload: Some(json!({ "duration_ms": ms })),
            resume_after_row: 0,
            offer_expires_at: Utc::now() + TimeDelta::seconds(60),
        }
    }

    /// A delivery of `body`.
    fn message(body: Vec<u8>, redelivered: bool) -> Message {
        Message {
            routing_key: "b".into(),
            data: body,
            redelivered,
            user_id: None,
            message_id: None,
            failures: 0,
        }
    }

    /// An agent with `slots` slots whose events go to `sink`, batched.
    fn agent(slots: u32, sink: &Recorder) -> Arc<Agent> {
        let name = BotName::parse("b").expect("name");
        let mut config = AgentConfig::new(name.clone(), vec![System::NOOP], "amqp://unused");
        config.slots = slots;
        let batching = Batching::combined(Duration::from_millis(2));
        let reporter = Reporter::Amqp(AmqpReporter::start_with(sink.clone(), name, batching));
        let vivo360 = crate::automations::vivo360::Vivo360::new("http://127.0.0.1:9", "u", "p")
            .expect("client");
        let notify = crate::automations::notify::Notify::new("http://127.0.0.1:9").expect("client");
        let automations = Automations { vivo360, cpe: None, notify, programs: Default::default() };
        Arc::new(Agent::new(&config, reporter, automations))
    }

    /// Waits (a few seconds at most) until `sink` has confirmed an event `done` accepts.
    async fn until(sink: &Recorder, done: impl Fn(&Event) -> bool) {
        for _ in 0..500 {
            if sink.events().iter().any(&done) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not reported: {:?}", sink.events());
    }

    #[tokio::test]
    async fn the_offers_delivered_together_are_answered_together_and_cancels_apply_in_order() {
        let sink = Recorder::default();
        let agent = agent(2, &sink);
        let (first, second, third) = (offer(600_000), offer(600_000), offer(600_000));
        let offers = message(encode_offers(&[first.clone(), second.clone(), third.clone()]), false);
        let cancel = Command::CancelTask { task: second.task, reason: "by a user".into() };
        let cancel = message(encode(&cancel), false);
        let malformed = message(b"not a command".to_vec(), false);
        let decisions = on_deliveries(&agent, vec![offers, cancel, malformed]).await;
        assert_eq!(decisions[..2], [Decision::Ack, Decision::Ack]);
        assert!(matches!(decisions[2], Decision::DeadLetter(_)), "{decisions:?}");
        assert_eq!(agent.current_tasks(), [first.task], "the second was cancelled after");

        let sent = sink.sent();
        assert_eq!(sent.len(), 1, "the answers in one message: {sent:?}");
        let answers: Vec<(&str, Option<TaskRef>)> =
            sent[0].1.iter().map(|e| (e.routing_key(), e.task())).collect();
        assert_eq!(
            answers,
            [
                ("task.accepted", Some(first.task)),
                ("task.accepted", Some(second.task)),
                ("task.rejected", Some(third.task)),
            ]
        );
        agent.cancel(first.task, "test over");
    }

    #[tokio::test]
    async fn an_unconfirmed_acceptance_stops_its_task_and_the_requeued_offer_is_claimed_again() {
        let sink = Recorder::default();
        let agent = agent(1, &sink);
        let long = offer(600_000);
        sink.fail(true);
        let decisions =
            on_deliveries(&agent, vec![message(encode_offers(std::slice::from_ref(&long)), false)]);
        assert_eq!(decisions.await, [Decision::Requeue]);
        assert!(agent.current_tasks().is_empty(), "stopped, its slot free");

        sink.fail(false);
        let redelivered = message(encode_offers(std::slice::from_ref(&long)), true);
        assert_eq!(on_deliveries(&agent, vec![redelivered]).await, [Decision::Ack]);
        assert_eq!(agent.current_tasks(), [long.task], "claimed again: this run had it");
        let events = sink.events();
        assert!(
            matches!(events[..], [Event::TaskAccepted { task, .. }] if task == long.task),
            "{events:?}"
        );
        agent.cancel(long.task, "test over");
    }

    #[tokio::test]
    async fn a_redelivered_offer_of_a_task_that_ran_here_is_acked_without_running_it_again() {
        let sink = Recorder::default();
        let agent = agent(1, &sink);
        let quick = offer(1);
        let delivery = encode_offers(std::slice::from_ref(&quick));
        assert_eq!(
            on_deliveries(&agent, vec![message(delivery.clone(), false)]).await,
            [Decision::Ack]
        );
        until(&sink, |e| matches!(e, Event::TaskCompleted { task, .. } if *task == quick.task))
            .await;
        let reported = sink.events().len();
        assert_eq!(on_deliveries(&agent, vec![message(delivery, true)]).await, [Decision::Ack]);
        assert!(agent.current_tasks().is_empty(), "not run again");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sink.events().len(), reported, "nothing more said: {:?}", sink.events());
    }

    #[test]
    fn the_prefetch_is_the_slot_count_within_what_the_field_holds() {
        assert_eq!(prefetch(1), 1);
        assert_eq!(prefetch(16), 16);
        assert_eq!(prefetch(broker_config::messages::MAX_SLOTS), 10_000);
        assert_eq!(prefetch(0), 1, "never 0, which RabbitMQ reads as no limit");
        assert_eq!(prefetch(u32::MAX), u16::MAX);
    }
}
