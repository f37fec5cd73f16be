//! The Botline bot agent: takes tasks from its own RabbitMQ queue (or, in HTTP push mode, from
//! POSTs), runs the automation of the task's system row by row, and reports what happened as
//! events (`task.accepted`, `task.progress`, `task.completed`, heartbeats, …).
//!
//! Layout:
//! - [`config`]: [`AgentConfig`], the flags (with environment variables behind them).
//! - `agent`: the core both transports share: [`judge`] decides on an offer (pure), the agent
//!   holds up to its `--slots` tasks at once (one by default), runs each, cancels one,
//!   heartbeats and hands the unfinished ones back at shutdown.
//! - `amqp_mode` / `http_mode`: the two transports' shells around the core.
//! - [`reporter`]: where events go ([`Reporter`]: the broker or the orchestrator's API).
//! - [`batcher`]: AMQP mode's reporter, several events to a message under one confirm, an
//!   acceptance left out when its attempt's end is queued behind it ([`batcher::AmqpReporter`]).
//! - [`progress`]: the [`ProgressSink`] automations record rows in, and the [`Throttle`] (pure)
//!   that batches them into `task.progress` events.
//! - [`automations`]: one module per system (NOOP, VIVO360, CPE, NOTIFY), each
//!   `run(assignment, &mut ProgressSink, cancel) -> Outcome`.
//! - The CPE automation calls the equipment config service with `broker_config::https`'s client,
//!   and HTTP mode serves HTTPS with its server half.
//! - [`net`]: finding the address the bot announces.
//! - `src/main.rs`: the thin binary (logging, signals).

mod agent;
mod amqp_mode;
pub mod automations;
pub mod batcher;
pub mod config;
pub mod error;
mod http_mode;
mod metrics;
pub mod net;
pub mod progress;
pub mod reporter;

pub use agent::{RELEASE_REASON, Verdict, final_event, judge};
pub use automations::Outcome;
pub use config::AgentConfig;
pub use error::AgentError;
pub use http_mode::TaskAnswer;
pub use progress::{ProgressSink, Throttle};
pub use reporter::Reporter;

use tokio_util::sync::CancellationToken;

use automations::Automations;
use automations::cpe::Cpe;
use automations::notify::Notify;
use automations::vivo360::Vivo360;
use broker_config::System;
use broker_config::https::{self, HttpsClient};

/// Runs a bot agent until `shutdown` is cancelled, then shuts down gracefully: stops taking
/// tasks, lets the running ones finish for up to the grace period (else hands each back with
/// `task.released`), reports `bot.offline` and returns. Errors only when it cannot start.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    config.validate()?;
    let programs = config.programs()?;
    for system in config.systems.iter().filter(|s| !programs.contains_key(*s)) {
        config::ensure_supported(system)?;
    }
    // The bot announces every system it has an automation for.
    let mut config = config;
    config.systems.extend(programs.keys().cloned());
    config.systems.sort();
    config.systems.dedup();
    let vivo360 =
        Vivo360::new(&config.vivo360_url, &config.vivo360_username, &config.vivo360_password)
            .map_err(|error| AgentError::HttpClient(error.to_string()))?;
    let cpe = if config.systems.contains(&System::CPE) { Some(equipment(&config)?) } else { None };
    let notify = Notify::new(&config.notify_url)
        .map_err(|error| AgentError::HttpClient(error.to_string()))?;
    let automations = Automations { vivo360, cpe, notify, programs };
    // Stops with the bot, whether it stops on `shutdown` or on an error.
    let metrics_stop = shutdown.child_token();
    let metrics = match config.metrics_listen {
        Some(address) => Some(metrics::serve(address, metrics_stop.clone()).await?),
        None => None,
    };
    let ran = match config.http {
        Some(address) => http_mode::run(config, address, automations, shutdown).await,
        None => amqp_mode::run(config, automations, shutdown).await,
    };
    metrics_stop.cancel();
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    ran
}

/// The CPE automation as the configuration says: the service's URL, and how to trust it.
fn equipment(config: &AgentConfig) -> Result<Cpe, AgentError> {
    let setup = |error: https::TlsSetupError| AgentError::Equipment(error.to_string());
    let client = match (&config.equipment_ca, config.equipment_insecure) {
        (Some(ca), _) => HttpsClient::with_ca_file(ca).map_err(setup)?,
        (None, true) => {
            tracing::warn!(
                url = %config.equipment_url,
                "--equipment-insecure: any certificate is accepted from the equipment service; \
                 use it only with the self-signed simulator"
            );
            HttpsClient::insecure().map_err(setup)?
        }
        (None, false) => HttpsClient::with_system_roots().map_err(setup)?,
    };
    Cpe::new(&config.equipment_url, client)
        .map(|cpe| {
            cpe.with_answer_timeout(std::time::Duration::from_secs(config.equipment_answer_timeout))
        })
        .map_err(|error| AgentError::Equipment(error.to_string()))
}
