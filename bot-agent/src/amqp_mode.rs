//! AMQP mode: assignments from the bot's own queue, events to `botline.events`.

use std::sync::Arc;
use std::time::Duration;

use broker_config::amqp::Backoff;
use broker_config::messages::decode;
use broker_config::topology::bot_queue;
use broker_config::{Command, ConsumerSpec, Decision, Message, Publisher, Topology, consume};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::agent::{Agent, Claim};
use crate::automations::Automations;
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::net::local_ip_towards;
use crate::reporter::Reporter;

/// How long a publish may wait for the broker's confirm (with reconnections) before it fails.
/// Below the orchestrator's offer expiry (10 s), so an unconfirmed acceptance is requeued while
/// the offer may still stand.
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
    let agent = Arc::new(Agent::new(&config, Reporter::Amqp(publisher), automations));
    tracing::info!(bot = %name, %ip_address, systems = ?config.systems, slots = config.slots, "bot online (AMQP)");
    agent.announce_online(ip_address).await;
    let heartbeat_stop = CancellationToken::new();
    let heartbeats = tokio::spawn(
        Arc::clone(&agent).heartbeats(config.heartbeat_interval(), heartbeat_stop.clone()),
    );

    let spec = ConsumerSpec {
        url: config.broker_url(),
        name: connection_name,
        queue: bot_queue(&name),
        topology,
        prefetch: prefetch(config.slots),
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
    };
    consume(spec, shutdown.clone(), |message| {
        let agent = Arc::clone(&agent);
        let span = tracing::info_span!("delivery", routing_key = %message.routing_key, redelivered = message.redelivered);
        async move { on_delivery(&agent, message).await }.instrument(span)
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

/// The consumer's prefetch for a bot with `slots` slots: as many unacknowledged commands as it
/// has slots. The orchestrator can have an offer out for each free slot, and the broker hands
/// them over together rather than one per round trip. An accepted offer is acknowledged once its
/// `task.accepted` is confirmed, when its task starts, so running tasks do not count against the
/// prefetch. `consume` answers deliveries one after the other (it awaits each handler and settles
/// its decision before taking the next), so a larger prefetch would not answer more at once: it
/// would only keep offers waiting here, unanswered and expiring, rather than in the queue. Never
/// 0 (which RabbitMQ reads as no limit); a count past `u16::MAX` (more than `MAX_SLOTS` allows)
/// gets the most the field holds.
fn prefetch(slots: u32) -> u16 {
    u16::try_from(slots.max(1)).unwrap_or(u16::MAX)
}

/// Handles one command from the bot's queue.
async fn on_delivery(agent: &Arc<Agent>, message: Message) -> Decision {
    let command = match decode::<Command>(&message.data) {
        Ok(command) => command,
        Err(error) => return Decision::DeadLetter(error.to_string()),
    };
    match command {
        Command::AssignTask(assignment) => {
            let task = assignment.task;
            match agent.claim_delivery(&assignment, Utc::now(), message.redelivered) {
                Claim::Expired => {
                    tracing::info!(task_id = %task.task_id, attempt = task.attempt, "offer expired; ignored");
                    Decision::Ack
                }
                Claim::AlreadyRunning => answer(agent, agent.accepted(&assignment)).await,
                Claim::Rejected(reason) => {
                    tracing::info!(task_id = %task.task_id, attempt = task.attempt, %reason, "offer rejected");
                    answer(agent, agent.rejected(&assignment, reason)).await
                }
                Claim::Accepted(ticket) => match agent.report(&agent.accepted(&assignment)).await {
                    Ok(()) => {
                        agent.start(assignment, ticket, false);
                        Decision::Ack
                    }
                    Err(error) => {
                        tracing::warn!(task_id = %task.task_id, %error, "acceptance not confirmed; requeueing the offer");
                        agent.unclaim(task);
                        Decision::Requeue
                    }
                },
            }
        }
        Command::CancelTask { task, reason } => {
            agent.cancel(task, &reason);
            Decision::Ack
        }
    }
}

/// Acks the offer once `event` (the bot's answer) is confirmed; requeues it otherwise.
async fn answer(agent: &Agent, event: broker_config::Event) -> Decision {
    match agent.report(&event).await {
        Ok(()) => Decision::Ack,
        Err(error) => {
            tracing::warn!(bot = %agent.name(), %error, "answer not confirmed; requeueing the offer");
            Decision::Requeue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_is_the_slot_count_within_what_the_field_holds() {
        assert_eq!(prefetch(1), 1);
        assert_eq!(prefetch(16), 16);
        assert_eq!(prefetch(broker_config::messages::MAX_SLOTS), 10_000);
        assert_eq!(prefetch(0), 1, "never 0, which RabbitMQ reads as no limit");
        assert_eq!(prefetch(u32::MAX), u16::MAX);
    }
}
