//! Why an agent could not start or keep running.

use broker_config::{InvalidSystemName, System};

/// Why [`crate::run`] returned early. Problems while running (a broker or API that went away, a
/// task that failed) are logged and retried, not returned.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration lists no system.
    #[error("the bot must run at least one system (--systems)")]
    NoSystems,
    /// A slot count outside 1 to [`broker_config::messages::MAX_SLOTS`].
    #[error(
        "the bot must run from 1 to {max} tasks at once (--slots), not {0}",
        max = broker_config::messages::MAX_SLOTS
    )]
    Slots(u32),
    /// An event batch delay over [`crate::config::MAX_EVENT_BATCH_DELAY_MS`].
    #[error(
        "events may wait at most {max} ms for others (--event-batch-delay-ms), not {0}",
        max = crate::config::MAX_EVENT_BATCH_DELAY_MS
    )]
    EventBatchDelay(u64),
    /// A name that cannot be a system's.
    #[error(transparent)]
    InvalidSystem(InvalidSystemName),
    /// A system the bot would announce without an automation to run it.
    #[error(
        "this bot has no automation for {0}: it runs VIVO360, CPE, NOTIFY and NOOP itself, and \
         any other system with --automation {0}=COMMAND"
    )]
    NoAutomation(System),
    /// The programs of --automation or --automations cannot be used (a file that does not read,
    /// a command that does not exist).
    #[error("cannot use the automations: {0}")]
    Automations(String),
    /// The equipment config service's client could not be set up (a bad URL or CA file).
    #[error("cannot set up the equipment service client: {0}")]
    Equipment(String),
    /// The broker URL does not parse, or its TLS files are missing or unusable.
    #[error("cannot use the broker URL: {0}")]
    Broker(String),
    /// HTTP mode's certificate or key cannot serve HTTPS.
    #[error("cannot serve HTTPS: {0}")]
    HttpsServer(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),
    /// HTTP mode could not listen on its address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `--metrics-listen` could not be bound.
    #[error("cannot serve metrics on {address}: {source}")]
    MetricsListen {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP mode's server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// HTTP mode: the orchestrator refused to register this bot.
    #[error("the orchestrator refused to register the bot: {0}")]
    Registration(String),
}
