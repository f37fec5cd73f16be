//! Liveness and readiness probes.

use axum::Json;
use axum::http::StatusCode;
use serde::Serialize;

use super::auth::Anyone;

/// A probe's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unready`.
    pub status: &'static str,
    /// The database: `ok` or what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The broker: `ok` or what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

/// The process is up. Also served at `/api/v1/health`, where the equipment services keep it.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok", database: None, broker: None })
}

/// The process can serve: the database and the broker answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health))
)]
pub async fn readyz(Anyone(state): Anyone) -> (StatusCode, Json<Health>) {
    let database = match state.db.ping().await {
        Ok(()) => Ok(()),
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database does not answer");
            Err(err.to_string())
        }
    };
    let broker = if state.pipeline.broker_ready().await {
        Ok(())
    } else {
        tracing::warn!("readiness: broker does not answer");
        Err("cannot reach RabbitMQ".to_owned())
    };
    let ready = database.is_ok() && broker.is_ok();
    let describe = |r: Result<(), String>| Some(r.map_or_else(|e| e, |()| "ok".to_owned()));
    let health = Health {
        status: if ready { "ready" } else { "unready" },
        database: describe(database),
        broker: describe(broker),
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}
