//! Starting and stopping the orchestrator.

use std::sync::Arc;
use std::time::Duration;

use broker_config::Topology;
use broker_config::amqp::Publisher;
use migrations::{Migrator, MigratorTrait as _};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact};
use crate::http::{self, AppState};
use crate::pipeline::Pipeline;

/// How long a publish may go unconfirmed (the broker restarting) before it is given up.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);

/// Why the orchestrator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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

/// A started orchestrator: database open and migrated, broker reachable, ready to serve.
pub struct Orchestrator {
    state: AppState,
    amqp_url: String,
    shutdown: CancellationToken,
}

impl Orchestrator {
    /// Opens the database, applies pending migrations, connects to RabbitMQ and declares the
    /// topology. Nothing runs until [`Orchestrator::serve`].
    pub async fn start(config: &Config) -> Result<Orchestrator, StartError> {
        let db = migrations::connect(&config.database_url)
            .await
            .map_err(|source| StartError::Database { url: redact(&config.database_url), source })?;
        Migrator::up(&db, None).await.map_err(StartError::Migrations)?;
        tracing::info!(database = %redact(&config.database_url), "database ready");
        let shutdown = CancellationToken::new();
        let publisher = Publisher::new(
            &config.amqp_url,
            "orchestrator",
            Topology::core(),
            PUBLISH_DEADLINE,
            shutdown.clone(),
        );
        publisher.connect().await.map_err(|e| StartError::Broker {
            url: redact(&config.amqp_url),
            reason: e.to_string(),
        })?;
        tracing::info!(broker = %redact(&config.amqp_url), "broker ready");
        let pipeline = Pipeline::new(db.clone(), publisher, config.pipeline_settings());
        Ok(Orchestrator {
            state: AppState {
                db,
                max_attachment_bytes: config.max_attachment_bytes,
                pipeline,
                rabbitmq_ui_url: config.rabbitmq_ui_url.clone(),
            },
            amqp_url: config.amqp_url.clone(),
            shutdown,
        })
    }

    /// The database pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// The pipeline (dispatcher, event application, sweeps).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.state.pipeline
    }

    /// The HTTP API, for serving or for `oneshot` tests.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves the API on `listener` and runs the dispatcher and the event consumer until
    /// `shutdown` fires; then finishes in-flight requests and stops the loops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        tracing::info!(address = %listener.local_addr()?, "API listening");
        let pipeline = self.state.pipeline.clone();
        let dispatcher = tokio::spawn(pipeline.clone().run_dispatcher(shutdown.clone()));
        let consumer = tokio::spawn(
            pipeline.clone().run_event_consumer(self.amqp_url.clone(), shutdown.clone()),
        );
        pipeline.wake();
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        let _ = dispatcher.await;
        let _ = consumer.await;
        self.shutdown.cancel();
        served
    }
}
