//! What every way of running the orchestrator does before it works, once: logging set up, the
//! database opened and migrated, the broker checked, and [`StartError`], the one line a failed
//! start ends with. The whole orchestrator and `orchestrator etl` ([`crate::app`]) and the demo
//! (`botline-demo`) all start through here.

use migrations::{Migrator, MigratorTrait as _};
use sea_orm::{DatabaseConnection, DbErr};

use crate::config::redact;
use crate::http::auth::AccessError;

/// Logs to standard error as `format` says, at `RUST_LOG` or, by default, info with the database
/// and broker clients' chatter left out ([`broker_config::logging`]).
pub fn init_logging(format: broker_config::logging::LogFormat) {
    broker_config::logging::init(format);
}

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The API's tokens cannot be used, or none is given for an address others can reach.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The database cannot be opened.
    #[error("cannot open the database {url}: {source}")]
    Database {
        /// The URL, password redacted.
        url: String,
        /// The driver's error.
        source: DbErr,
    },
    /// The schema cannot be brought up to date.
    #[error("cannot apply the database migrations: {0}")]
    Migrations(DbErr),
    /// The HTTPS certificate or key cannot be used.
    #[error("cannot serve HTTPS with {cert} and {key}: {reason}")]
    Tls {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// Why.
        reason: String,
    },
    /// The trust for HTTPS bots (`--bot-ca-file`) cannot be set up.
    #[error("cannot set up the trust for HTTPS bots: {0}")]
    BotTls(String),
    /// RabbitMQ cannot be reached.
    #[error(
        "cannot reach RabbitMQ at {url}: {reason}. Start one (`rabbitmq-server -detached`, or `scripts/services`) or point BOTLINE_AMQP_URL at yours"
    )]
    Broker {
        /// The URL, password redacted.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// The broker answered and refused the URL's user, password or vhost.
    #[error(
        "RabbitMQ at {url} refused the connection: {reason}. Check the user, password and vhost of BOTLINE_AMQP_URL (--amqp-url), and the user's permissions there"
    )]
    BrokerRefused {
        /// The URL, password redacted.
        url: String,
        /// The broker's answer.
        reason: String,
    },
}

impl StartError {
    /// The broker at `url` (redacted here) could not be reached, or refused the connection, for
    /// `reason`.
    pub fn broker(url: &str, reason: impl ToString) -> StartError {
        let url = redact(url);
        let reason = reason.to_string();
        // lapin's text of the broker's answer ends with its own full stop.
        let trimmed = reason.trim_end_matches('.').to_owned();
        if reason.contains("ACCESS_REFUSED") || reason.contains("NOT_ALLOWED") {
            StartError::BrokerRefused { url, reason: trimmed }
        } else {
            StartError::Broker { url, reason: trimmed }
        }
    }
}

/// Opens the database at `url` and applies the pending migrations.
pub async fn open_database(url: &str) -> Result<DatabaseConnection, StartError> {
    let db = migrations::connect(url)
        .await
        .map_err(|source| StartError::Database { url: redact(url), source })?;
    Migrator::up(&db, None).await.map_err(StartError::Migrations)?;
    tracing::info!(database = %redact(url), "database ready");
    Ok(db)
}

/// Connects to the broker at `url` once, as `name`, and closes the connection: a wrong URL or
/// an absent broker stops the start with one clear line, where the consumers would retry
/// quietly forever.
pub async fn check_broker(url: &str, name: &str) -> Result<(), StartError> {
    let connection =
        broker_config::amqp::connect(url, name).await.map_err(|e| StartError::broker(url, e))?;
    let _ = connection.close(200, "checked".into()).await;
    Ok(())
}
