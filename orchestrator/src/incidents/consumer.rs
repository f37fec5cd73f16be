//! The consumer of monitoring reports on `botline.monitoring.incidents`: each message is one
//! report, counted by the engine; what the broker is told (ack, dead-letter, requeue) is decided
//! here.

use broker_config::topology::MONITORING_INCIDENTS_QUEUE;
use broker_config::{ConsumerSpec, Decision, Topology};
use tokio_util::sync::CancellationToken;

use super::engine::{Incidents, Source};
use super::report;

impl Incidents {
    /// Consumes `botline.monitoring.incidents` (declaring `topology`) until `shutdown`: one
    /// report per message, either shape. A malformed report is dead-lettered with the reason;
    /// one the database cannot take now stays queued; one that fails otherwise is retried and
    /// dead-lettered after `max_failures` tries ([`Failure`](crate::failure::Failure)).
    pub async fn run_consumer(
        self,
        amqp_url: String,
        topology: Topology,
        max_failures: u32,
        shutdown: CancellationToken,
    ) {
        let spec = ConsumerSpec {
            url: amqp_url,
            name: "orchestrator-monitoring".into(),
            queue: MONITORING_INCIDENTS_QUEUE.into(),
            topology,
            // Reports are counted one at a time, in order; a few ahead hide the round trip.
            prefetch: 16,
            max_failures,
            hearing: None,
        };
        let engine = self.clone();
        broker_config::consume(spec, shutdown, move |message| {
            let engine = engine.clone();
            async move {
                let trigger = match report::parse_message(&message.data) {
                    Ok(trigger) => trigger,
                    Err(error) => {
                        return Decision::DeadLetter(format!("{}: {}", error.field, error.message));
                    }
                };
                match engine.report_one(&trigger, Source::Broker, crate::clock::now()).await {
                    Ok(_) => Decision::Ack,
                    Err(error) => {
                        tracing::warn!(?error, %trigger, failures = message.failures, "report not counted");
                        crate::failure::Failure::from(error).decision()
                    }
                }
            }
        })
        .await;
    }
}
