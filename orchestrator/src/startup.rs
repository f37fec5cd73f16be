//! What every way of running the orchestrator does before it works, once: logging set up, the
//! database opened and migrated, the broker checked, and [`StartError`], the one line a failed
//! start ends with. The whole orchestrator and `orchestrator etl` ([`crate::app`]) and the demo
//! (`botline-demo`) all start through here.

use migrations::{Migrator, MigratorTrait as _};
use sea_orm::{DatabaseConnection, DbErr};

use crate::config::redact;
use crate::http::auth::AccessError;

/// Logs to standard error, at `RUST_LOG` or, by default, info with the database and broker
/// clients' chatter down to warnings.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,lapin=warn".into()),
        )
        .init();
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
}

impl StartError {
    /// The broker at `url` (redacted here) could not be reached, for `reason`.
    pub fn broker(url: &str, reason: impl ToString) -> StartError {
        StartError::Broker { url: redact(url), reason: reason.to_string() }
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
