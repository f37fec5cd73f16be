//! The incident timer: every check interval it escalates incidents by minutes and resolves the
//! quiet ones ([`Incidents::check_incidents`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::engine::{CheckSummary, Incidents};

impl Incidents {
    /// Runs the timer (every check interval) until `shutdown`: escalation and resolution.
    pub async fn run_timer(self, shutdown: CancellationToken) {
        // tokio's interval refuses a zero period; a configured 0 means "as often as sensible".
        let period = self.settings.check_interval.max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.check_incidents(crate::clock::now()).await {
                Ok(summary) if summary != CheckSummary::default() => {
                    tracing::info!(
                        sent = summary.communications,
                        resolved = summary.resolved,
                        "incidents checked"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "incident check failed; next tick retries"),
            }
        }
    }
}
