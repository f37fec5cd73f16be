//! `/api/v1/bots`.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::{AnyCaller, DeleteOwnBot, EditOwnBot, Guarded, RegisterSelf};
use super::extract::{self, Query};
use super::{AppState, parse_id, parse_list};
use crate::bots::{self, Bot, BotPatch, BotRequest, BotSpec};
use crate::clock::now;
use crate::error::{ApiError, ErrorBody};
use crate::pagination::{Order, Page, PageRequest};
use crate::store::bots::BotFilter;
use broker_config::BotStatus;

/// The bot routes.
pub fn router() -> Router<Guarded> {
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
    AnyCaller(state): AnyCaller,
    Query(q): Query<BotQuery>,
) -> Result<Json<Page<Bot>>, ApiError> {
    let filter = BotFilter {
        statuses: parse_list("status", q.status.as_deref())?,
        systems: parse_list("system", q.system.as_deref())?,
        ip_address: q.ip_address,
        name: q.name,
    };
    let page = PageRequest::parse(q.limit, q.offset, q.cursor.as_deref(), q.order)?;
    Ok(Json(crate::store::bots::list_bots(&state.db, &filter, page).await?))
}

/// Registers a bot. Name and address suffice (the original contract): such a bot runs every
/// system and is an HTTP bot on the default port (`--default-bot-port`, 5000). It is
/// UNAVAILABLE until it comes online (an HTTP bot: until its address answers), unless `status`
/// says otherwise.
#[utoipa::path(post, path = "/api/v1/bots", tag = "bots", request_body = BotRequest,
    responses((status = 201, body = Bot), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_bot(
    RegisterSelf(state, extract::Json(request)): RegisterSelf<extract::Json<BotRequest>>,
) -> Result<(StatusCode, Json<Bot>), ApiError> {
    let registered: Vec<broker_config::System> =
        crate::store::systems::list_systems(&state.db).await?.into_iter().map(|s| s.name).collect();
    let spec = BotSpec::parse_new(request, state.default_bot_port, &registered)?;
    check_network(&state, &spec)?;
    let bot = crate::store::bots::create_bot(&state.db, spec, now()).await?;
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
    AnyCaller(state): AnyCaller,
    Path(id): Path<String>,
) -> Result<Json<Bot>, ApiError> {
    Ok(Json(crate::store::bots::get_bot(&state.db, parse_id(&id)?).await?))
}

/// Changes a bot: the fields given change, the others stay (a client may send back the whole
/// bot it read; the fields the orchestrator owns are ignored). `status` follows
/// [`bots::status_after_write`]: AVAILABLE on a bot running a task is a 409 naming the task.
///
/// Bots in HTTP push mode report on this route too: a body that is a bot event
/// (`{"v":1,"type":"bot.heartbeat","bot":…}`, also `bot.online`, `bot.status`, `bot.offline`) is
/// applied exactly as the same event from the broker would be.
#[utoipa::path(put, path = "/api/v1/bots/{id}", tag = "bots", params(("id" = uuid::Uuid, Path)),
    request_body = BotPatch,
    responses((status = 200, body = Bot), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replace_bot(
    Path(id): Path<String>,
    EditOwnBot(state, body): EditOwnBot<extract::JsonBytes>,
) -> Result<Json<Bot>, ApiError> {
    let current = crate::store::bots::get_bot(&state.db, parse_id(&id)?).await?;
    if body.is_event() {
        let event = body.event()?;
        if event.bot().as_str() != current.name || event.task().is_some() {
            return Err(ApiError::invalid("bot", "the event is not a bot event from this bot"));
        }
        apply_http_bot_event(&state, &current, event).await?;
        return Ok(Json(crate::store::bots::get_bot(&state.db, current.id).await?));
    }
    body.refuse_unstorable()?;
    let mut patch: BotPatch = extract::parse_json(&body.0)?;
    // A PUT is often the whole bot a client read earlier: its `paused` may be from before an
    // operator's pause, so only PATCH pauses and resumes.
    patch.paused = None;
    change_bot(&state, current, patch).await.map(Json)
}

/// Refuses an HTTP bot outside `--http-bot-networks`: the orchestrator would POST to it.
fn check_network(state: &AppState, spec: &BotSpec) -> Result<(), ApiError> {
    if spec.delivery == broker_config::Delivery::Http
        && !state.pipeline.settings.http_bot_allowed(spec.ip_address)
    {
        return Err(ApiError::invalid(
            "ip_address",
            format!(
                "{} is outside the networks HTTP bots may be in (the orchestrator's --http-bot-networks)",
                spec.ip_address
            ),
        ));
    }
    Ok(())
}

/// Applies a client's change to `current`.
async fn change_bot(state: &AppState, current: Bot, patch: BotPatch) -> Result<Bot, ApiError> {
    patch.check_identity(&current)?;
    let holds = crate::store::bots::one_held_task(&state.db, current.id).await?;
    // With the slots it will have: lowering them can fill it.
    let load = bots::Load { held: current.slots_used, slots: patch.slots.unwrap_or(current.slots) };
    let status = bots::status_after_write(current.status, patch.status, load, holds)?;
    let spec = BotSpec::parse(patch.apply_to(&current, status), current.status)?;
    check_network(state, &spec)?;
    let bot = crate::store::bots::update_bot(&state.db, &current, spec, now()).await?;
    state.pipeline.changes.bot(bot.id);
    if bot.status == BotStatus::Available && !bot.paused {
        state.pipeline.wake();
    }
    Ok(bot)
}

/// Applies a bot event sent over HTTP. `bot.online` over HTTP keeps the bot in HTTP mode (the
/// broker's `bot.online` registers an AMQP bot).
async fn apply_http_bot_event(
    state: &AppState,
    current: &Bot,
    event: broker_config::Event,
) -> Result<(), ApiError> {
    match event {
        broker_config::Event::BotOnline { systems, ip_address, slots, .. } => {
            let slots = slots.unwrap_or(current.slots);
            let full = bots::Load { held: current.slots_used, slots }.full();
            let request = BotRequest {
                name: current.name.clone(),
                ip_address,
                systems: Some(systems),
                delivery: Some(current.delivery),
                http_port: current.http_port,
                // A full bot stays BUSY; its heartbeats say what it holds.
                status: Some(if full { BotStatus::Busy } else { BotStatus::Available }),
                paused: Some(current.paused),
                tls: Some(current.tls),
                slots: Some(slots),
            };
            let spec = BotSpec::parse(request, BotStatus::Available)?;
            check_network(state, &spec)?;
            crate::store::bots::update_bot(&state.db, current, spec, now()).await?;
            state.pipeline.changes.bot(current.id);
            let heartbeat = broker_config::Event::BotHeartbeat {
                bot: broker_config::BotName::parse(&current.name)
                    .map_err(|e| ApiError::invalid("bot", e.to_string()))?,
                task: None,
                tasks: Vec::new(),
                at: now(),
            };
            state.pipeline.handle_event(heartbeat).await?;
            state.pipeline.wake();
            Ok(())
        }
        event => state.pipeline.handle_event(event).await,
    }
}

/// Changes some of a bot's fields: the same as `PUT` (see there), for clients that say PATCH.
#[utoipa::path(patch, path = "/api/v1/bots/{id}", tag = "bots", params(("id" = uuid::Uuid, Path)),
    request_body = BotPatch,
    responses((status = 200, body = Bot), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_bot(
    Path(id): Path<String>,
    EditOwnBot(state, extract::Json(patch)): EditOwnBot<extract::Json<BotPatch>>,
) -> Result<Json<Bot>, ApiError> {
    let current = crate::store::bots::get_bot(&state.db, parse_id(&id)?).await?;
    change_bot(&state, current, patch).await.map(Json)
}

/// Deletes a bot; refused while it runs a task.
#[utoipa::path(delete, path = "/api/v1/bots/{id}", tag = "bots", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_bot(
    Path(id): Path<String>,
    DeleteOwnBot(state): DeleteOwnBot,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    crate::store::bots::delete_bot(&state.db, id, now()).await?;
    state.pipeline.changes.bot(id);
    tracing::info!(bot_id = %id, "bot deleted");
    Ok(StatusCode::NO_CONTENT)
}
