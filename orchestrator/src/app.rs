//! Starting and stopping the orchestrator.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker_config::amqp::Publisher;
use migrations::{Migrator, MigratorTrait as _};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact};
use crate::http::auth::{Access, AccessError};
use crate::http::{self, AppState};
use crate::pipeline::Pipeline;

/// How long a publish may go unconfirmed (the broker restarting) before it is given up.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);

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

/// A started orchestrator: database open and migrated, broker reachable, ready to serve.
pub struct Orchestrator {
    state: AppState,
    amqp_url: String,
    /// How the attendance ETL reads records.
    etl: crate::etl::EtlSettings,
    shutdown: CancellationToken,
    /// The HTTPS configuration, when the API is served over HTTPS.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Orchestrator {
    /// Opens the database, applies pending migrations, connects to RabbitMQ and declares the
    /// topology. Nothing runs until [`Orchestrator::serve`].
    pub async fn start(config: &Config) -> Result<Orchestrator, StartError> {
        // Checked first: bad tokens or a certificate should not wait for the database and broker.
        let access = Arc::new(Access::from_config(&config.auth)?);
        access.check_listen(config.listen)?;
        let tls = match config.tls_files() {
            Some((cert, key)) => Some(
                broker_config::https::TlsMaterial::from_files(cert, key)
                    .and_then(|material| material.server_config())
                    .map_err(|error| StartError::Tls {
                        cert: cert.display().to_string(),
                        key: key.display().to_string(),
                        reason: error.to_string(),
                    })?,
            ),
            None => None,
        };
        let db = migrations::connect(&config.database_url)
            .await
            .map_err(|source| StartError::Database { url: redact(&config.database_url), source })?;
        Migrator::up(&db, None).await.map_err(StartError::Migrations)?;
        tracing::info!(database = %redact(&config.database_url), "database ready");
        let shutdown = CancellationToken::new();
        let publisher = Publisher::new(
            config.broker_url(),
            "orchestrator",
            config.pipeline_settings().topology(),
            PUBLISH_DEADLINE,
            shutdown.clone(),
        );
        publisher.connect().await.map_err(|e| StartError::Broker {
            url: redact(&config.broker_url()),
            reason: e.to_string(),
        })?;
        tracing::info!(broker = %redact(&config.broker_url()), "broker ready");
        let mut settings = config.pipeline_settings();
        settings.push_keys = access.push_keys();
        // Trust for HTTPS bots: a bad CA file stops the start, as a bad certificate does; a machine
        // without system roots only cannot reach HTTPS bots (each offer to one says so).
        settings.https = match &config.bots.bot_ca_file {
            Some(path) => Some(
                broker_config::https::HttpsClient::with_ca_file(path)
                    .map_err(|e| StartError::BotTls(e.to_string()))?,
            ),
            None => broker_config::https::HttpsClient::with_system_roots()
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "no system roots: HTTPS bots cannot be reached without --bot-ca-file");
                })
                .ok(),
        };
        let pipeline = Pipeline::new(db.clone(), publisher, settings);
        Ok(Orchestrator {
            state: AppState {
                db,
                max_attachment_bytes: config.max_attachment_bytes,
                pipeline,
                rabbitmq_ui_url: config.rabbitmq_ui_url.clone(),
                access,
                default_bot_port: config.bots.default_bot_port,
                cors_origins: config.cors_origins.clone(),
            },
            amqp_url: config.broker_url(),
            etl: config.etl_settings(),
            shutdown,
            tls,
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

    /// Serves the API on `listener` (over HTTPS when the configuration gave a certificate) and
    /// runs the dispatcher, the event consumer, the incident engine (monitoring reports and its
    /// timer) and the attendance ETL until `shutdown` fires; then finishes in-flight requests and
    /// stops the loops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let address = listener.local_addr()?;
        // Whatever listener the caller bound: never open to the network without a token.
        if let Err(refused) = self.state.access.check_listen(address) {
            self.shutdown.cancel();
            return Err(std::io::Error::new(ErrorKind::PermissionDenied, refused));
        }
        tracing::info!(%address, scheme, auth = %self.state.access.summary(), "API listening");
        let pipeline = self.state.pipeline.clone();
        let dispatcher = tokio::spawn(pipeline.clone().run_dispatcher(shutdown.clone()));
        let consumer = tokio::spawn(
            pipeline.clone().run_event_consumer(self.amqp_url.clone(), shutdown.clone()),
        );
        let topology = pipeline.settings.topology();
        let incidents = tokio::spawn(pipeline.incidents.clone().run(
            self.amqp_url.clone(),
            topology.clone(),
            shutdown.clone(),
        ));
        let etl = tokio::spawn(crate::etl::run_etl(
            self.state.db.clone(),
            self.amqp_url.clone(),
            topology,
            self.etl,
            shutdown.clone(),
        ));
        pipeline.wake();
        let served = match self.tls.clone() {
            Some(tls) => {
                broker_config::https::serve(listener, self.router(), tls, shutdown.clone()).await
            }
            None => {
                // The peer's address lets the API refuse clients that are not on this machine.
                let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
        };
        let _ = dispatcher.await;
        let _ = consumer.await;
        let _ = incidents.await;
        let _ = etl.await;
        self.shutdown.cancel();
        served
    }
}
