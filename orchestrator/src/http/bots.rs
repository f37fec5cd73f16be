//! `/api/v1/bots`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{self, Query};
use super::{AppState, parse_id, parse_list};
use crate::bots::{self, Bot, BotFilter, BotPatch, BotRequest, BotSpec};
use crate::clock::now;
use crate::error::{ApiError, ErrorBody};
use crate::pagination::{Order, Page, PageRequest};
use broker_config::BotStatus;

/// The bot routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/bots", get(list_bots).post(create_bot))
        .route("/bots/{id}", get(get_bot).put(replace_bot).patch(patch_bot).delete(delete_bot))
}

/// Filters and paging for `GET /api/v1/bots`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BotQuery {
    /// Statuses, comma separated (AVAILABLE,BUSY).
    status: Option<String>,
    /// Bots that run any of these systems, comma separated.
    system: Option<String>,
    /// This exact address (a bot in HTTP mode finds itself with it).
    ip_address: Option<String>,
    /// This exact name.
    name: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u64>,
    /// Rows to skip.
    offset: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `newest` (default) or `oldest` first.
    order: Option<Order>,
}

/// Lists bots.
#[utoipa::path(get, path = "/api/v1/bots", tag = "bots", params(BotQuery),
    responses((status = 200, body = Page<Bot>), (status = 400, body = ErrorBody)))]
pub async fn list_bots(
    State(state): State<AppState>,
    Query(q): Query<BotQuery>,
) -> Result<Json<Page<Bot>>, ApiError> {
    let filter = BotFilter {
        statuses: parse_list("status", q.status.as_deref())?,
        systems: parse_list("system", q.system.as_deref())?,
        ip_address: q.ip_address,
        name: q.name,
    };
    let page = PageRequest::parse(q.limit, q.offset, q.cursor.as_deref(), q.order)?;
    Ok(Json(bots::list_bots(&state.db, &filter, page).await?))
}

/// Registers a bot. It is UNAVAILABLE until it comes online, unless `status` says otherwise.
#[utoipa::path(post, path = "/api/v1/bots", tag = "bots", request_body = BotRequest,
    responses((status = 201, body = Bot), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_bot(
    State(state): State<AppState>,
    extract::Json(request): extract::Json<BotRequest>,
) -> Result<(StatusCode, Json<Bot>), ApiError> {
    let spec = BotSpec::parse(request, BotStatus::Unavailable)?;
    let bot = bots::create_bot(&state.db, spec, now()).await?;
    state.pipeline.changes.bot(bot.id);
    if bot.status == BotStatus::Available {
        state.pipeline.wake();
    }
    tracing::info!(bot_id = %bot.id, name = %bot.name, "bot registered");
    Ok((StatusCode::CREATED, Json(bot)))
}

/// One bot.
#[utoipa::path(get, path = "/api/v1/bots/{id}", tag = "bots", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Bot), (status = 404, body = ErrorBody)))]
pub async fn get_bot(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Bot>, ApiError> {
    Ok(Json(bots::get_bot(&state.db, parse_id(&id)?).await?))
}

/// Replaces a bot's fields (an absent status keeps the current one).
///
/// Bots in HTTP push mode report on this route too: a body that is a bot event
/// (`{"v":1,"type":"bot.heartbeat","bot":…}`, also `bot.online`, `bot.status`, `bot.offline`) is
/// applied exactly as the same event from the broker would be.
#[utoipa::path(put, path = "/api/v1/bots/{id}", tag = "bots", params(("id" = uuid::Uuid, Path)),
    request_body = BotRequest,
    responses((status = 200, body = Bot), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replace_bot(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: extract::JsonBytes,
) -> Result<Json<Bot>, ApiError> {
    let current = bots::get_bot(&state.db, parse_id(&id)?).await?;
    if body.is_event() {
        let event = body.event()?;
        if event.bot().as_str() != current.name || event.task().is_some() {
            return Err(ApiError::invalid("bot", "the event is not a bot event from this bot"));
        }
        apply_http_bot_event(&state, &current, event).await?;
        return Ok(Json(bots::get_bot(&state.db, current.id).await?));
    }
    let request: BotRequest = extract::parse_json(&body.0)?;
    let spec = BotSpec::parse(request, current.status)?;
    let bot = bots::update_bot(&state.db, current.id, spec, now()).await?;
    state.pipeline.changes.bot(bot.id);
    if bot.status == BotStatus::Available {
        state.pipeline.wake();
    }
    Ok(Json(bot))
}

/// Applies a bot event sent over HTTP. `bot.online` over HTTP keeps the bot in HTTP mode (the
/// broker's `bot.online` registers an AMQP bot).
async fn apply_http_bot_event(
    state: &AppState,
    current: &Bot,
    event: broker_config::Event,
) -> Result<(), ApiError> {
    match event {
        broker_config::Event::BotOnline { systems, ip_address, .. } => {
            let request = BotRequest {
                name: current.name.clone(),
                ip_address,
                systems,
                delivery: Some(current.delivery),
                http_port: current.http_port,
                status: Some(BotStatus::Available),
            };
            let spec = BotSpec::parse(request, BotStatus::Available)?;
            bots::update_bot(&state.db, current.id, spec, now()).await?;
            state.pipeline.changes.bot(current.id);
            let heartbeat = broker_config::Event::BotHeartbeat {
                bot: broker_config::BotName::parse(&current.name)
                    .map_err(|e| ApiError::invalid("bot", e.to_string()))?,
                task: None,
                at: now(),
            };
            state.pipeline.handle_event(heartbeat).await?;
            state.pipeline.wake();
            Ok(())
        }
        event => state.pipeline.handle_event(event).await,
    }
}

/// Changes some of a bot's fields.
#[utoipa::path(patch, path = "/api/v1/bots/{id}", tag = "bots", params(("id" = uuid::Uuid, Path)),
    request_body = BotPatch,
    responses((status = 200, body = Bot), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_bot(
    State(state): State<AppState>,
    Path(id): Path<String>,
    extract::Json(patch): extract::Json<BotPatch>,
) -> Result<Json<Bot>, ApiError> {
    let current = bots::get_bot(&state.db, parse_id(&id)?).await?;
    let spec = BotSpec::parse(patch.apply_to(&current), current.status)?;
    Ok(Json(bots::update_bot(&state.db, current.id, spec, now()).await?))
}

/// Deletes a bot; refused while it runs a task.
#[utoipa::path(delete, path = "/api/v1/bots/{id}", tag = "bots", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_bot(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    bots::delete_bot(&state.db, id, now()).await?;
    state.pipeline.changes.bot(id);
    tracing::info!(bot_id = %id, "bot deleted");
    Ok(StatusCode::NO_CONTENT)
}
