//! `/api/v1/systems`: the systems tasks can target, registered at run time.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use broker_config::System;
use serde::{Deserialize, Serialize};

use super::auth::{AnyCaller, Guarded, Operator};
use super::extract;
use crate::clock::now;
use crate::error::{ApiError, ErrorBody};
use crate::store::systems as store;
use crate::systems::{SystemPatch, SystemRequest, SystemSpec, SystemView};

/// The system routes.
pub fn router() -> Router<Guarded> {
    Router::new().route("/systems", get(list_systems).post(create_system)).route(
        "/systems/{name}",
        get(get_system).put(replace_system).patch(patch_system).delete(delete_system),
    )
}

/// Every registered system.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Systems {
    /// By name.
    pub systems: Vec<SystemView>,
}

/// Parses a system's name from the path (any case).
fn parse_name(raw: &str) -> Result<System, ApiError> {
    raw.parse().map_err(|e: broker_config::InvalidSystemName| {
        ApiError::invalid_parameter("name", e.to_string())
    })
}

/// Lists the registered systems, by name: the four built-ins and the users' own.
#[utoipa::path(get, path = "/api/v1/systems", tag = "systems",
    responses((status = 200, body = Systems)))]
pub async fn list_systems(AnyCaller(state): AnyCaller) -> Result<Json<Systems>, ApiError> {
    Ok(Json(Systems { systems: store::list_systems(&state.db).await? }))
}

/// Registers a system: its name, what its tasks must carry (a CSV with some columns, a JSON
/// payload meeting a JSON Schema, or anything) and defaults for its tasks. Bots that announce
/// the name are offered its tasks.
#[utoipa::path(post, path = "/api/v1/systems", tag = "systems", request_body = SystemRequest,
    responses((status = 201, body = SystemView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_system(
    Operator(state): Operator,
    extract::Json(request): extract::Json<SystemRequest>,
) -> Result<(StatusCode, Json<SystemView>), ApiError> {
    let spec = SystemSpec::parse(request)?;
    let system = store::create_system(&state.db, spec, now()).await?;
    tracing::info!(system = %system.name, "system registered");
    Ok((StatusCode::CREATED, Json(system)))
}

/// One system.
#[utoipa::path(get, path = "/api/v1/systems/{name}", tag = "systems", params(("name" = String, Path)),
    responses((status = 200, body = SystemView), (status = 404, body = ErrorBody)))]
pub async fn get_system(
    Path(name): Path<String>,
    AnyCaller(state): AnyCaller,
) -> Result<Json<SystemView>, ApiError> {
    Ok(Json(store::get_system(&state.db, &parse_name(&name)?).await?))
}

/// Changes a system: only the fields given change (`name` may be sent back, not changed). The
/// new contract and defaults apply to tasks created or changed from now on.
#[utoipa::path(put, path = "/api/v1/systems/{name}", tag = "systems", params(("name" = String, Path)),
    request_body = SystemPatch,
    responses((status = 200, body = SystemView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replace_system(
    Path(name): Path<String>,
    Operator(state): Operator,
    extract::Json(patch): extract::Json<SystemPatch>,
) -> Result<Json<SystemView>, ApiError> {
    let current = store::get_system(&state.db, &parse_name(&name)?).await?;
    let spec = SystemSpec::parse(patch.apply_to(current)?)?;
    let system = store::update_system(&state.db, spec, now()).await?;
    tracing::info!(system = %system.name, "system changed");
    Ok(Json(system))
}

/// Changes some of a system's fields: the same as `PUT`.
#[utoipa::path(patch, path = "/api/v1/systems/{name}", tag = "systems", params(("name" = String, Path)),
    request_body = SystemPatch,
    responses((status = 200, body = SystemView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_system(
    name: Path<String>,
    operator: Operator,
    patch: extract::Json<SystemPatch>,
) -> Result<Json<SystemView>, ApiError> {
    replace_system(name, operator, patch).await
}

/// Deletes a system. Refused (409) for the four built-ins and while the system has unfinished
/// tasks (WAITING, ASSIGNED or RUNNING); its finished tasks keep its name.
#[utoipa::path(delete, path = "/api/v1/systems/{name}", tag = "systems", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_system(
    Path(name): Path<String>,
    Operator(state): Operator,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    let txn = crate::store::begin_in_line(&state.db).await?;
    store::delete_system(&txn, &name).await?;
    txn.commit().await?;
    tracing::info!(system = %name, "system deleted");
    Ok(StatusCode::NO_CONTENT)
}
