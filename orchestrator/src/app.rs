//! Starting and stopping the orchestrator.

use migrations::{Migrator, MigratorTrait as _};
use sea_orm::{DatabaseConnection, DbErr};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, redact};
use crate::http::{self, AppState};

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
}

/// A started orchestrator: database open and migrated, ready to serve.
pub struct Orchestrator {
    state: AppState,
}

impl Orchestrator {
    /// Opens the database and applies pending migrations.
    pub async fn start(config: &Config) -> Result<Orchestrator, StartError> {
        let db = migrations::connect(&config.database_url)
            .await
            .map_err(|source| StartError::Database {
                url: redact(&config.database_url),
                source,
            })?;
        Migrator::up(&db, None)
            .await
            .map_err(StartError::Migrations)?;
        tracing::info!(database = %redact(&config.database_url), "database ready");
        Ok(Orchestrator {
            state: AppState {
                db,
                max_attachment_bytes: config.max_attachment_bytes,
            },
        })
    }

    /// The database pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.state.db
    }

    /// The HTTP API, for serving or for `oneshot` tests.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves the API on `listener` until `shutdown` fires, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        tracing::info!(address = %listener.local_addr()?, "API listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}
