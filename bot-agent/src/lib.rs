//! The Botline bot agent: takes tasks from its own RabbitMQ queue (or, in HTTP push mode, from
//! POSTs), runs the automation of the task's system row by row, and reports what happened as
//! events (`task.accepted`, `task.progress`, `task.completed`, heartbeats, …).
//!
//! Layout:
//! - [`config`]: [`AgentConfig`], the flags (with environment variables behind them).
//! - `agent`: the core both transports share: [`judge`] decides on an offer (pure), the agent
//!   holds one task at a time, runs it, cancels it, heartbeats and hands an unfinished task
//!   back at shutdown.
//! - `amqp_mode` / `http_mode`: the two transports' shells around the core.
//! - [`reporter`]: where events go ([`Reporter`]: the broker or the orchestrator's API).
//! - [`progress`]: the [`ProgressSink`] automations record rows in, and the [`Throttle`] (pure)
//!   that batches them into `task.progress` events.
//! - [`automations`]: one module per system (NOOP, VIVO360), each
//!   `run(assignment, &mut ProgressSink, cancel) -> Outcome`.
//! - [`net`]: finding the address the bot announces.
//! - `src/main.rs`: the thin binary (logging, signals).

mod agent;
mod amqp_mode;
pub mod automations;
pub mod config;
pub mod error;
mod http_mode;
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
use automations::vivo360::Vivo360;

/// Runs a bot agent until `shutdown` is cancelled, then shuts down gracefully: stops taking
/// tasks, lets a running task finish for up to the grace period (else hands it back with
/// `task.released`), reports `bot.offline` and returns. Errors only when it cannot start.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    config.validate()?;
    let vivo360 =
        Vivo360::new(&config.vivo360_url, &config.vivo360_username, &config.vivo360_password)
            .map_err(|error| AgentError::HttpClient(error.to_string()))?;
    let automations = Automations { vivo360 };
    match config.http {
        Some(address) => http_mode::run(config, address, automations, shutdown).await,
        None => amqp_mode::run(config, automations, shutdown).await,
    }
}
