//! `/api/v1/actions` and `/api/v1/incidents`: the incident rules, the incidents they opened,
//! and the monitoring reports (`POST /api/v1/incidents/triggers`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{AnyCaller, Guarded, Operator};
use super::extract::{self, JsonBytes, Query};
use super::{parse_id, parse_list};
use crate::clock::now;
use crate::error::{ApiError, ErrorBody};
use crate::incidents::actions::{self, Action, ActionRequest, ActionSpec};
use crate::incidents::report::{self, TriggersRequest};
use crate::incidents::{
    self, Incident, IncidentDetail, ReportOutcome, SentSummary, Source, UnclassifiedReport,
};
use crate::pagination::{Order, Page, PageRequest};

/// The incident routes.
pub fn router() -> Router<Guarded> {
    Router::new()
        .route("/actions", get(list_actions).post(create_action))
        .route("/actions/{id}", get(get_action).put(replace_action).delete(delete_action))
        .route("/incidents", get(list_incidents))
        .route("/incidents/triggers", post(report_triggers))
        .route("/incidents/unclassified", get(list_unclassified))
        .route("/incidents/{id}", get(get_incident))
        .route("/incidents/{id}/resolve", post(resolve_incident))
}

/// Lists every action, oldest first.
#[utoipa::path(get, path = "/api/v1/actions", tag = "incidents",
    responses((status = 200, body = Vec<Action>)))]
pub async fn list_actions(AnyCaller(state): AnyCaller) -> Result<Json<Vec<Action>>, ApiError> {
    Ok(Json(actions::list_actions(&state.db).await?))
}

/// Registers an action: its triggers, whom it tells and when.
#[utoipa::path(post, path = "/api/v1/actions", tag = "incidents", request_body = ActionRequest,
    responses((status = 201, body = Action), (status = 400, body = ErrorBody),
        (status = 409, description = "name, code or a trigger taken", body = ErrorBody),
        (status = 422, description = "a field is wrong (levels that do not rise…)", body = ErrorBody)))]
pub async fn create_action(
    Operator(state): Operator,
    extract::Json(request): extract::Json<ActionRequest>,
) -> Result<(StatusCode, Json<Action>), ApiError> {
    let spec = ActionSpec::parse(request)?;
    Ok((StatusCode::CREATED, Json(actions::create_action(&state.db, spec, now()).await?)))
}

/// One action.
#[utoipa::path(get, path = "/api/v1/actions/{id}", tag = "incidents",
    params(("id" = String, Path, description = "action id")),
    responses((status = 200, body = Action), (status = 404, body = ErrorBody)))]
pub async fn get_action(
    AnyCaller(state): AnyCaller,
    Path(id): Path<String>,
) -> Result<Json<Action>, ApiError> {
    Ok(Json(actions::get_action(&state.db, parse_id(&id)?).await?))
}

/// Replaces an action; an OPEN incident follows the new rules from now on.
#[utoipa::path(put, path = "/api/v1/actions/{id}", tag = "incidents", request_body = ActionRequest,
    params(("id" = String, Path, description = "action id")),
    responses((status = 200, body = Action), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replace_action(
    Operator(state): Operator,
    Path(id): Path<String>,
    extract::Json(request): extract::Json<ActionRequest>,
) -> Result<Json<Action>, ApiError> {
    let id = parse_id(&id)?;
    let spec = ActionSpec::parse(request)?;
    Ok(Json(actions::replace_action(&state.db, id, spec, now()).await?))
}

/// Deletes an action with its resolved incidents; refused while one is OPEN.
#[utoipa::path(delete, path = "/api/v1/actions/{id}", tag = "incidents",
    params(("id" = String, Path, description = "action id")),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, description = "an incident is OPEN", body = ErrorBody)))]
pub async fn delete_action(
    Operator(state): Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    actions::delete_action(&state.db, parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What `POST /api/v1/incidents/triggers` answers: one outcome per report, in order, and what
/// went out because of the request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TriggersAnswer {
    /// What became of each report.
    pub results: Vec<ReportOutcome>,
    /// The communications this request sent, to customers and to support teams.
    pub summary: SentSummary,
}

/// Reports failures: `{"triggers":[{"service":"login","status":"503"}]}` or
/// `{"gatilhos":[{"servico":"login","retorno":"503"}]}`. A request is one occurrence for each
/// action whose triggers it lists (login/503 and login/404 together: one occurrence), as the
/// original counts. The whole list is checked first: one bad report (or an empty list) is a
/// 400 and nothing counts.
#[utoipa::path(post, path = "/api/v1/incidents/triggers", tag = "incidents",
    request_body = TriggersRequest,
    responses((status = 200, body = TriggersAnswer),
        (status = 400, description = "empty list, a missing or blank field: nothing counted", body = ErrorBody)))]
pub async fn report_triggers(
    Operator(state): Operator,
    body: JsonBytes,
) -> Result<Json<TriggersAnswer>, ApiError> {
    body.refuse_unstorable()?;
    let JsonBytes(body) = body;
    let triggers = report::parse_triggers(&body)
        .map_err(|e| ApiError::MalformedBody(format!("{}: {}", e.field, e.message)))?;
    let results = state.pipeline.incidents.report(&triggers, Source::Api, now()).await?;
    let summary = incidents::summarize(&results);
    Ok(Json(TriggersAnswer { results, summary }))
}

/// Filters and paging for `GET /api/v1/incidents`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// Statuses, comma separated (OPEN,RESOLVED).
    status: Option<String>,
    /// Only this action's incidents.
    action_id: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u64>,
    /// Rows to skip.
    offset: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `newest` (default) or `oldest` first.
    order: Option<Order>,
}

/// Lists incidents, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentQuery),
    responses((status = 200, body = Page<Incident>), (status = 400, body = ErrorBody)))]
pub async fn list_incidents(
    AnyCaller(state): AnyCaller,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<Page<Incident>>, ApiError> {
    let statuses = parse_list("status", q.status.as_deref())?;
    let action_id = q
        .action_id
        .as_deref()
        .map(|raw| {
            raw.parse().map_err(|_| {
                ApiError::invalid_parameter("action_id", format!("'{raw}' is not a UUID"))
            })
        })
        .transpose()?;
    let page = PageRequest::parse(q.limit, q.offset, q.cursor.as_deref(), q.order)?;
    Ok(Json(incidents::list_incidents(&state.db, &statuses, action_id, page).await?))
}

/// One incident with the communications it sent.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents",
    params(("id" = String, Path, description = "incident id")),
    responses((status = 200, body = IncidentDetail), (status = 404, body = ErrorBody)))]
pub async fn get_incident(
    AnyCaller(state): AnyCaller,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(incidents::get_incident(&state.db, parse_id(&id)?).await?))
}

/// Resolves an OPEN incident; customers who were told it was down are told it is back.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = String, Path, description = "incident id")),
    responses((status = 200, body = IncidentDetail), (status = 404, body = ErrorBody),
        (status = 409, description = "already resolved", body = ErrorBody)))]
pub async fn resolve_incident(
    Operator(state): Operator,
    Path(id): Path<String>,
) -> Result<Json<IncidentDetail>, ApiError> {
    Ok(Json(state.pipeline.incidents.resolve(parse_id(&id)?, now()).await?))
}

/// Paging for `GET /api/v1/incidents/unclassified`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnclassifiedQuery {
    /// Page size, 1 to 500 (default 50).
    limit: Option<u64>,
    /// Rows to skip.
    offset: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `newest` (default) or `oldest` first.
    order: Option<Order>,
}

/// Lists the reports no action matched, newest first: each needs an action registered.
#[utoipa::path(get, path = "/api/v1/incidents/unclassified", tag = "incidents",
    params(UnclassifiedQuery),
    responses((status = 200, body = Page<UnclassifiedReport>), (status = 400, body = ErrorBody)))]
pub async fn list_unclassified(
    AnyCaller(state): AnyCaller,
    Query(q): Query<UnclassifiedQuery>,
) -> Result<Json<Page<UnclassifiedReport>>, ApiError> {
    let page = PageRequest::parse(q.limit, q.offset, q.cursor.as_deref(), q.order)?;
    Ok(Json(incidents::list_unclassified(&state.db, page).await?))
}
