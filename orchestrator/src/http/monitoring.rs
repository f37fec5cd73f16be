//! `/api/v1/monitoring` (the dashboard's monitoring view) and `/api/v1/dead-letters` (the
//! broker's dead-letter queue: read, replay, discard).

use axum::routing::{get, post};
use axum::{Json, Router};
use broker_config::dead_letters::{DeadLetters, Refusal, Settle};
use serde::Deserialize;

use super::auth::{AnyCaller, Guarded, Operator};
use super::extract::{self, Query};
use super::{AppState, BulkOutcome, IdList};
use crate::error::{ApiError, ErrorBody};
use crate::monitoring::{DEFAULT_MINUTES, MAX_MINUTES, Monitoring};

/// The routes.
pub fn router() -> Router<Guarded> {
    Router::new()
        .route("/monitoring", get(monitoring))
        .route("/dead-letters", get(list_dead_letters))
        .route("/dead-letters/replay", post(replay_dead_letters))
        .route("/dead-letters/discard", post(discard_dead_letters))
}

/// The window of `GET /api/v1/monitoring`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MonitoringQuery {
    /// The window, in minutes up to now: 1 to 1440 (default 60).
    minutes: Option<u32>,
}

/// Throughput per minute, waiting tasks per system, wait and run times per system, each bot's
/// utilisation and success rate, and the dead letters, over the last `minutes`. Each task counts
/// with its last run.
#[utoipa::path(get, path = "/api/v1/monitoring", tag = "health", params(MonitoringQuery),
    responses((status = 200, body = Monitoring), (status = 400, body = ErrorBody)))]
pub async fn monitoring(
    AnyCaller(state): AnyCaller,
    Query(q): Query<MonitoringQuery>,
) -> Result<Json<Monitoring>, ApiError> {
    let minutes = q.minutes.unwrap_or(DEFAULT_MINUTES);
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::invalid_parameter(
            "minutes",
            format!("minutes must be between 1 and {MAX_MINUTES}"),
        ));
    }
    let now = crate::clock::now();
    let since = crate::monitoring::window_start(now, minutes);
    let tasks = crate::store::monitoring::task_times(&state.db, since).await?;
    let bots = crate::store::monitoring::bot_slots(&state.db).await?;
    let waiting = crate::store::monitoring::waiting(&state.db).await?;
    // The view stands without the broker: the count is then absent, and the reason logged.
    let dead_letters = match tokio::time::timeout(COUNT_TIMEOUT, state.dead_letters.count()).await {
        Ok(Ok(count)) => Some(u64::from(count)),
        Ok(Err(err)) => {
            tracing::warn!(%err, "monitoring: the dead letters cannot be counted");
            None
        }
        Err(_) => {
            tracing::warn!(
                "monitoring: the broker did not count the dead letters within {COUNT_TIMEOUT:?}"
            );
            None
        }
    };
    Ok(Json(crate::monitoring::compute(&tasks, &bots, waiting, dead_letters, now, minutes)))
}

/// How many dead letters to read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// From the head of the queue: 0 to 500 (default 100); 0 answers the count alone, without
    /// reading any message.
    limit: Option<u32>,
}

/// The first messages of the dead-letter queue (`botline.dead`), with where they failed and why;
/// they stay in the queue. Any token reads it, as it reads tasks' payloads and results; a look
/// holds the messages it reads for a moment (on a quorum queue, RabbitMQ may count it as a
/// delivery), so pollers ask for the count (`limit=0`).
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "health", params(DeadLetterQuery),
    responses((status = 200, body = DeadLetters), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_dead_letters(
    AnyCaller(state): AnyCaller,
    Query(q): Query<DeadLetterQuery>,
) -> Result<Json<DeadLetters>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit > super::MAX_IDS as u32 {
        return Err(ApiError::invalid_parameter(
            "limit",
            format!("limit must be between 0 and {}", super::MAX_IDS),
        ));
    }
    let letters = if limit == 0 {
        let total = state.dead_letters.count().await.map_err(unavailable)?;
        DeadLetters { total, items: Vec::new() }
    } else {
        state.dead_letters.peek(limit).await.map_err(unavailable)?
    };
    Ok(Json(letters))
}

/// Puts the dead letters named back at the end of the queues they failed on (each is taken out
/// of the dead-letter queue once the broker holds its copy).
#[utoipa::path(post, path = "/api/v1/dead-letters/replay", tag = "health", request_body = IdList,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn replay_dead_letters(
    Operator(state): Operator,
    extract::Json(ids): extract::Json<IdList>,
) -> Result<Json<BulkOutcome>, ApiError> {
    settle(&state, ids, Settle::Replay).await
}

/// Removes the dead letters named for good.
#[utoipa::path(post, path = "/api/v1/dead-letters/discard", tag = "health", request_body = IdList,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn discard_dead_letters(
    Operator(state): Operator,
    extract::Json(ids): extract::Json<IdList>,
) -> Result<Json<BulkOutcome>, ApiError> {
    settle(&state, ids, Settle::Discard).await
}

async fn settle(
    state: &AppState,
    ids: IdList,
    action: Settle,
) -> Result<Json<BulkOutcome>, ApiError> {
    let ids = ids.parse(|raw| {
        if raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(raw.to_ascii_lowercase())
        } else {
            Err(ApiError::invalid_parameter("ids", "not a dead letter's id (32 hex digits)"))
        }
    })?;
    let settled = state.dead_letters.settle(&ids, action).await.map_err(unavailable)?;
    let verb = match action {
        Settle::Replay => "replayed",
        Settle::Discard => "discarded",
    };
    let mut outcome = BulkOutcome::default();
    for id in ids {
        let result = match settled.get(&id) {
            Some(Ok(())) => Ok(()),
            Some(Err(Refusal::NoSource)) => Err(ApiError::conflict(
                "no_source_queue",
                None,
                "the dead letter does not say which queue it failed on, or that queue is not one \
                 of the orchestrator's (a replay never goes to a bot's queue)",
            )),
            Some(Err(Refusal::NotTaken(why))) => {
                Err(ApiError::conflict("not_replayed", None, why.clone()))
            }
            // Settled already, or beyond the part of the queue walked.
            Some(Err(Refusal::NotFound)) | None => Err(ApiError::NotFound("dead letter")),
        };
        outcome.record(id, result);
    }
    // An operator's action on messages: in the log, since no task's history holds it.
    tracing::info!(
        action = verb,
        done = outcome.done.len(),
        refused = outcome.refused.len(),
        ids = ?outcome.done,
        "dead letters settled"
    );
    Ok(Json(outcome))
}

fn unavailable(err: broker_config::dead_letters::BrokerError) -> ApiError {
    tracing::warn!(%err, "the dead-letter queue cannot be reached");
    ApiError::BrokerUnavailable(err.to_string())
}

/// How long the monitoring view waits for the dead letters' count: the view stands without it.
const COUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
