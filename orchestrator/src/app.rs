//! Starting and stopping the orchestrator: [`Orchestrator::start`] gets everything ready under
//! one cancellation token, [`Orchestrator::serve`] runs the API and the loops beside it, each
//! watched: a loop that ends before the token fires stops the whole orchestrator with an error
//! naming it ([`ServeError::LoopEnded`]), rather than leaving an API that answers and says it is
//! ready while nothing consumes or dispatches. Its supervisor (systemd, Compose, Kubernetes)
//! starts it again.

use std::collections::HashMap;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker_config::amqp::Publisher;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact};
use crate::failpoint;
use crate::http::auth::Access;
use crate::http::{self, AppState};
use crate::pipeline::Pipeline;
use crate::startup::{self, StartError};

/// How long a publish may go unconfirmed (the broker restarting) before it is given up.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(30);

/// A started orchestrator: database open and migrated, broker reachable, ready to serve.
pub struct Orchestrator {
    state: AppState,
    amqp_url: String,
    /// How the attendance ETL reads records.
    etl: crate::etl::EtlSettings,
    /// The one token that stops everything: the API, the loops, the publisher's retries.
    shutdown: CancellationToken,
    /// The HTTPS configuration, when the API is served over HTTPS.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Orchestrator {
    /// Opens the database, applies pending migrations, connects to RabbitMQ and declares the
    /// topology. Nothing runs until [`Orchestrator::serve`], which runs until `shutdown` fires;
    /// the same token ends the publisher's retries.
    pub async fn start(
        config: &Config,
        shutdown: CancellationToken,
    ) -> Result<Orchestrator, StartError> {
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
        let db = startup::open_database(&config.database_url).await?;
        let publisher = Publisher::new(
            config.broker_url(),
            "orchestrator",
            config.pipeline_settings().topology(),
            PUBLISH_DEADLINE,
            shutdown.clone(),
        );
        publisher.connect().await.map_err(|e| StartError::broker(&config.broker_url(), e))?;
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
                dead_letters: broker_config::dead_letters::DeadLetterQueue::new(
                    config.broker_url(),
                    "botline-orchestrator-dead-letters",
                ),
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
    /// runs the loops beside it (the dispatcher and its sweeps, the event consumer, the incident
    /// timer, the monitoring consumer, the attendance ETL) until the token given to
    /// [`Orchestrator::start`] fires; then finishes in-flight requests and stops the loops.
    ///
    /// Each loop runs until that token fires. One that ends before, by returning or panicking,
    /// cancels the token (the API finishes its requests and the other loops stop), and `serve`
    /// returns [`ServeError::LoopEnded`] naming it.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServeError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let address = listener.local_addr()?;
        // Whatever listener the caller bound: never open to the network without a token.
        if let Err(refused) = self.state.access.check_listen(address) {
            return Err(ServeError::Io(std::io::Error::new(ErrorKind::PermissionDenied, refused)));
        }
        tracing::info!(%address, scheme, auth = %self.state.access.summary(), "API listening");
        let shutdown = self.shutdown.clone();
        let pipeline = self.state.pipeline.clone();
        let topology = pipeline.settings.topology();
        crate::metrics::install();
        let mut loops = Loops::default();
        loops.spawn(METRICS_UPKEEP, crate::metrics::keep_up(shutdown.clone()));
        loops.spawn(DISPATCHER, pipeline.clone().run_dispatcher(shutdown.clone()));
        loops.spawn(
            EVENT_CONSUMER,
            pipeline.clone().run_event_consumer(self.amqp_url.clone(), shutdown.clone()),
        );
        loops.spawn(INCIDENT_TIMER, pipeline.incidents.clone().run_timer(shutdown.clone()));
        loops.spawn(
            MONITORING_CONSUMER,
            pipeline.incidents.clone().run_consumer(
                self.amqp_url.clone(),
                topology.clone(),
                pipeline.settings.max_message_failures,
                shutdown.clone(),
            ),
        );
        loops.spawn(
            ATTENDANCE_ETL,
            crate::etl::run_etl(
                self.state.db.clone(),
                self.amqp_url.clone(),
                topology,
                self.etl,
                shutdown.clone(),
            ),
        );
        pipeline.wake();
        // Open change streams end when the orchestrator stops, or the graceful shutdown would
        // wait for their viewers to leave.
        let (changes, stopping) = (pipeline.changes.clone(), shutdown.clone());
        tokio::spawn(async move {
            stopping.cancelled().await;
            changes.close();
        });
        let router = self.router();
        let server = async {
            match self.tls.clone() {
                Some(tls) => {
                    broker_config::https::serve(listener, router, tls, shutdown.clone()).await
                }
                None => {
                    // The peer's address lets the API refuse clients that are not on this machine.
                    let app = router.into_make_service_with_connect_info::<SocketAddr>();
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                        .await
                }
            }
        };
        tokio::pin!(server);
        let mut ended_early = None;
        let served = tokio::select! {
            served = &mut server => served,
            Some((name, how)) = loops.next_ended() => {
                if !shutdown.is_cancelled() {
                    tracing::error!(r#loop = name, how = %how, "a loop ended before shutdown; stopping the orchestrator");
                    ended_early = Some(ServeError::LoopEnded { name, how });
                    shutdown.cancel();
                }
                server.await
            }
        };
        // The API stopped (shutdown, or it failed): so do the loops.
        shutdown.cancel();
        while let Some((name, how)) = loops.next_ended().await {
            if how != RETURNED {
                tracing::error!(r#loop = name, how = %how, "a loop did not stop cleanly");
            }
        }
        match ended_early {
            Some(error) => Err(error),
            None => served.map_err(ServeError::Io),
        }
    }
}

/// The loops [`Orchestrator::serve`] runs beside the API, by the names errors, logs and the
/// [`failpoint::END_LOOP`] failpoint know them by.
pub const DISPATCHER: &str = "dispatcher";
/// The upkeep of the metrics' histograms ([`crate::metrics`]).
pub const METRICS_UPKEEP: &str = "metrics-upkeep";
/// The consumer of bots' events (`botline.orchestrator.events`).
pub const EVENT_CONSUMER: &str = "event-consumer";
/// The incident engine's timer (escalation, resolution).
pub const INCIDENT_TIMER: &str = "incident-timer";
/// The consumer of monitoring reports (`botline.monitoring.incidents`).
pub const MONITORING_CONSUMER: &str = "monitoring-consumer";
/// The attendance ETL's consumer (`botline.attendance.etl`).
pub const ATTENDANCE_ETL: &str = "attendance-etl";

/// How a loop that ended cleanly ended.
const RETURNED: &str = "returned";

/// Why [`Orchestrator::serve`] stopped other than by its token.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The API could not be served (the listener), or not on this address without a token.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A loop ended before shutdown: without it the orchestrator would answer but not work.
    #[error("the {name} loop {how} before shutdown; the orchestrator stopped (start it again)")]
    LoopEnded {
        /// The loop ([`DISPATCHER`], [`EVENT_CONSUMER`], …).
        name: &'static str,
        /// `returned`, or `panicked: <message>`.
        how: String,
    },
}

/// The loops of one [`Orchestrator::serve`], spawned under the names they are watched by.
#[derive(Default)]
struct Loops {
    running: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Loops {
    /// Spawns `run` as the loop `name` ([`failpoint::END_LOOP`] may end it at once instead).
    fn spawn(&mut self, name: &'static str, run: impl Future<Output = ()> + Send + 'static) {
        let handle = self.running.spawn(async move {
            match failpoint::loop_end(name) {
                Some(failpoint::LoopEnd::Panic) => {
                    panic!("failpoint {}={name}: the {name} loop panics", failpoint::END_LOOP)
                }
                Some(failpoint::LoopEnd::Return) => {}
                None => run.await,
            }
        });
        self.names.insert(handle.id(), name);
    }

    /// The next loop to end and how it ended (`returned`, `panicked: …`); `None` once none runs.
    async fn next_ended(&mut self) -> Option<(&'static str, String)> {
        let joined = self.running.join_next_with_id().await?;
        let (id, how) = match joined {
            Ok((id, ())) => (id, RETURNED.to_owned()),
            Err(error) if error.is_panic() => {
                let id = error.id();
                let panic = error.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                (id, format!("panicked: {message}"))
            }
            Err(error) => (error.id(), "was cancelled".to_owned()),
        };
        Some((self.names.get(&id).copied().unwrap_or("unknown"), how))
    }
}

/// `orchestrator etl`: only the ETL, without the API or the pipeline. Opens and migrates the
/// database and checks the broker answers ([`crate::startup`]), then consumes until `shutdown` fires.
pub async fn run_etl_alone(config: &Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let db = startup::open_database(&config.database_url).await?;
    startup::check_broker(&config.broker_url(), "orchestrator-etl-check").await?;
    let settings = config.etl_settings();
    tracing::info!(timezone = %settings.timezone, max_record_bytes = settings.max_record_bytes, "attendance ETL running");
    let topology = config.pipeline_settings().topology();
    crate::etl::run_etl(db, config.broker_url(), topology, settings, shutdown).await;
    Ok(())
}
