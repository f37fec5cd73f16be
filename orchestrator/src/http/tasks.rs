//! `/api/v1/tasks`.

use std::collections::HashMap;

use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Path, Request};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_config::{System, TaskStatus};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::auth::{AnyCaller, Caller, Guarded, Operator, ReportOnTask};
use super::extract::{self, Query};
use super::{AppState, BulkOutcome, IdList, parse_id, parse_list};
use crate::clock::now;
use crate::error::{ApiError, ErrorBody};
use crate::pagination::{Order, Page, PageRequest};
use crate::store::tasks::{Search, TaskFilter, TaskSort, UpdateEffects};
use crate::tasks::{
    self, BulkTaskRequest, BulkTasks, Task, TaskEvent, TaskPatch, TaskRequest, TaskSpec,
};

/// The task routes.
pub fn router() -> Router<Guarded> {
    Router::new()
        .route("/tasks", get(list_tasks).post(create_task))
        .route("/tasks/stats", get(task_stats))
        .route("/tasks/bulk", post(create_tasks))
        .route("/tasks/cancel", post(cancel_tasks))
        .route("/tasks/retry", post(retry_tasks))
        .route("/tasks/{id}", get(get_task).put(replace_task).patch(patch_task).delete(delete_task))
        .route("/tasks/{id}/attachment", get(get_attachment))
        .route("/tasks/{id}/events", get(list_task_events))
        .route("/tasks/{id}/cancel", post(cancel_task))
        .route("/tasks/{id}/retry", post(retry_task))
}

/// Filters and paging for `GET /api/v1/tasks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskQuery {
    /// Statuses, comma separated (WAITING,RUNNING).
    status: Option<String>,
    /// Systems, comma separated.
    system: Option<String>,
    /// Tasks held (or last held) by this bot.
    bot_id: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u64>,
    /// Rows to skip.
    offset: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `newest` (default) or `oldest` first, in the `sort` order.
    order: Option<Order>,
    /// A task's id, or text to look for in descriptions (any case).
    q: Option<String>,
    /// Created at or after this RFC 3339 time.
    created_after: Option<String>,
    /// Created before this RFC 3339 time.
    created_before: Option<String>,
    /// `true`: only CSV tasks with a row failed or refused.
    rows_failed: Option<bool>,
    /// `created` (default), `finished` or `duration` (run time); not `created`: page by
    /// `offset` (no `cursor`), tasks not ended last.
    sort: Option<TaskSort>,
}

/// An RFC 3339 time given as the query parameter `field`.
fn instant(field: &'static str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).map_err(|e| {
            ApiError::invalid_parameter(
                field,
                format!("'{raw}' is not an RFC 3339 time like 2026-12-01T09:00:00Z: {e}"),
            )
        })
    })
    .transpose()
}

/// Lists tasks.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(TaskQuery),
    responses((status = 200, body = Page<Task>), (status = 400, body = ErrorBody)))]
pub async fn list_tasks(
    AnyCaller(state): AnyCaller,
    Query(q): Query<TaskQuery>,
) -> Result<Json<Page<Task>>, ApiError> {
    let filter = TaskFilter {
        statuses: parse_list("status", q.status.as_deref())?,
        systems: parse_list("system", q.system.as_deref())?,
        bot_id: q
            .bot_id
            .as_deref()
            .map(|raw| {
                raw.parse().map_err(|_| {
                    ApiError::invalid_parameter("bot_id", format!("'{raw}' is not a UUID"))
                })
            })
            .transpose()?,
        search: q.q.as_deref().and_then(Search::parse),
        created_after: instant("created_after", q.created_after.as_deref())?,
        created_before: instant("created_before", q.created_before.as_deref())?,
        rows_failed: q.rows_failed.unwrap_or(false),
    };
    if let (Some(after), Some(before)) = (filter.created_after, filter.created_before)
        && after >= before
    {
        return Err(ApiError::invalid_parameter(
            "created_before",
            "created_before must be later than created_after",
        ));
    }
    let sort = q.sort.unwrap_or_default();
    if sort != TaskSort::Created && q.cursor.is_some() {
        return Err(ApiError::invalid_parameter(
            "cursor",
            "a cursor pages through the created order only: use offset with this sort",
        ));
    }
    let page = PageRequest::parse(q.limit, q.offset, q.cursor.as_deref(), q.order)?;
    Ok(Json(crate::store::tasks::list_tasks(&state.db, &filter, sort, page).await?))
}

/// How many tasks are in each status, for the dashboard's counters.
#[utoipa::path(get, path = "/api/v1/tasks/stats", tag = "tasks",
    responses((status = 200, description = "{\"WAITING\": 3, \"RUNNING\": 1, …}, every status present", body = std::collections::BTreeMap<String, u64>)))]
pub async fn task_stats(
    AnyCaller(state): AnyCaller,
) -> Result<Json<std::collections::BTreeMap<String, u64>>, ApiError> {
    Ok(Json(crate::store::tasks::count_by_status(&state.db).await?))
}

/// A multipart task submission, as documented; the handler reads the parts itself.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TaskUpload {
    /// What it is for.
    description: String,
    /// The system it targets.
    system: System,
    /// The CSV file.
    #[schema(content_media_type = "text/csv", value_type = String, format = Binary)]
    attachment: Option<Vec<u8>>,
    /// A JSON object, as text.
    payload: Option<String>,
    /// Higher runs first.
    priority: Option<i32>,
    /// RFC 3339 due time.
    not_before: Option<DateTime<Utc>>,
    /// Runs that may fail before it fails for good.
    max_attempts: Option<u32>,
    /// Its maximum run time, in seconds.
    max_run_seconds: Option<u32>,
}

/// A new task's body: JSON with a base64 attachment, or a multipart form with the CSV as a file.
pub struct NewTask {
    request: TaskRequest,
    upload: Option<Vec<u8>>,
}

impl<S: Send + Sync> FromRequest<S> for NewTask {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_multipart =
            req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data")
            });
        if !is_multipart {
            let extract::Json(request) =
                extract::Json::<TaskRequest>::from_request(req, state).await?;
            return Ok(NewTask { request, upload: None });
        }
        let multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::MalformedBody(e.body_text()))?;
        read_form(multipart).await
    }
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge {
            field: Some("attachment".into()),
            message: "the upload is over the size limit".into(),
        }
    } else {
        ApiError::MalformedBody(format!("malformed multipart body: {}", err.body_text()))
    }
}

async fn read_form(mut form: Multipart) -> Result<NewTask, ApiError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut upload = None;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "attachment" | "file" => {
                upload = Some(field.bytes().await.map_err(multipart_error)?.to_vec())
            }
            "description" | "system" | "payload" | "priority" | "not_before" | "max_attempts"
            | "max_run_seconds" => {
                let text = field.text().await.map_err(multipart_error)?;
                if text.contains('\0') {
                    // PostgreSQL stores no NUL in text: refused here rather than a 500 there.
                    return Err(ApiError::invalid(name, "must not contain a NUL character"));
                }
                fields.insert(name, text);
            }
            other => {
                return Err(ApiError::invalid(other, format!("unknown form field '{other}'")));
            }
        }
    }
    let mut take = |name: &str| fields.remove(name).filter(|v| !v.trim().is_empty());
    let description = take("description")
        .ok_or_else(|| ApiError::invalid("description", "missing field `description`"))?;
    let system = take("system")
        .ok_or_else(|| ApiError::invalid("system", "missing field `system`"))?
        .parse::<System>()
        .map_err(|e| ApiError::invalid("system", e.to_string()))?;
    let number = |field: &'static str, raw: Option<String>| {
        raw.map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ApiError::invalid(field, format!("'{v}' is not a whole number")))
        })
        .transpose()
    };
    let priority = number("priority", take("priority"))?
        .map(|n| {
            i32::try_from(n).map_err(|_| ApiError::invalid("priority", "priority is out of range"))
        })
        .transpose()?;
    let max_attempts = number("max_attempts", take("max_attempts"))?
        .map(|n| {
            u32::try_from(n)
                .map_err(|_| ApiError::invalid("max_attempts", "max_attempts is out of range"))
        })
        .transpose()?;
    let max_run_seconds = number("max_run_seconds", take("max_run_seconds"))?
        .map(|n| {
            u32::try_from(n).map_err(|_| {
                ApiError::invalid("max_run_seconds", "max_run_seconds is out of range")
            })
        })
        .transpose()?;
    let not_before = take("not_before")
        .map(|v| {
            DateTime::parse_from_rfc3339(v.trim()).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                ApiError::invalid("not_before", format!("'{v}' is not an RFC 3339 time"))
            })
        })
        .transpose()?;
    let payload = take("payload")
        .map(|v| {
            serde_json::from_str(&v)
                .map_err(|e| ApiError::invalid("payload", format!("payload is not JSON: {e}")))
        })
        .transpose()?;
    let request = TaskRequest {
        description,
        system,
        attachment: None,
        payload,
        priority,
        not_before,
        max_attempts,
        max_run_seconds,
        status: None,
    };
    Ok(NewTask { request, upload })
}

/// Submits a task: it is stored WAITING and offered to a bot as soon as one is free.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks",
    request_body(content((TaskRequest = "application/json"), (TaskUpload = "multipart/form-data"))),
    responses((status = 201, body = Task), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_task(
    Operator(state): Operator,
    NewTask { request, upload }: NewTask,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let registry = crate::store::systems::registry(&state.db).await?;
    let spec = TaskSpec::parse_new(request, upload, state.max_attachment_bytes, &registry)?;
    let task = crate::store::tasks::create_task(&state.db, spec, now()).await?;
    state.pipeline.changes.task(task.id);
    state.pipeline.wake();
    tracing::info!(task_id = %task.id, system = %task.system, rows = ?task.progress.total, "task created");
    Ok((StatusCode::CREATED, Json(task)))
}

/// Creates up to 1,000 tasks in one request and one transaction (JSON only, attachments in
/// base64). Every task is checked first: one bad task refuses them all, and its index is in the
/// error's field (`tasks[3].payload`). The tasks come back in the order given, which is also the
/// order they are offered in, all else equal.
#[utoipa::path(post, path = "/api/v1/tasks/bulk", tag = "tasks", request_body = BulkTaskRequest,
    responses((status = 201, body = BulkTasks), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_tasks(
    Operator(state): Operator,
    body: extract::JsonBytes,
) -> Result<(StatusCode, Json<BulkTasks>), ApiError> {
    body.refuse_unstorable()?;
    let extract::JsonBytes(body) = body;
    let bulk: BulkTaskRequest = extract::parse_json(&body).map_err(|err| {
        // serde would read a bare list as the object's fields in order, and say so obscurely.
        let is_list = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        match err {
            ApiError::Invalid { .. } if is_list => ApiError::Invalid {
                field: None,
                message: "a bulk request is an object, {\"tasks\": [...]}, not a list".into(),
            },
            err => err,
        }
    })?;
    let registry = crate::store::systems::registry(&state.db).await?;
    let specs = bulk.parse(state.max_attachment_bytes, &registry)?;
    let created = crate::store::tasks::create_tasks(&state.db, specs, now()).await?;
    created.iter().for_each(|task| state.pipeline.changes.task(task.id));
    state.pipeline.wake();
    tracing::info!(tasks = created.len(), "tasks created");
    Ok((StatusCode::CREATED, Json(BulkTasks { tasks: created })))
}

/// One task.
#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    AnyCaller(state): AnyCaller,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(crate::store::tasks::get_task(&state.db, parse_id(&id)?).await?))
}

/// Carries out what an update implies: stop the bot of a cancelled task, wake the dispatcher.
async fn follow_up(state: &AppState, task: &Task, effects: UpdateEffects) -> Result<(), ApiError> {
    state.pipeline.changes.task(task.id);
    if let Some((bot_id, stopped)) = effects.stop {
        state.pipeline.changes.bot(bot_id);
        state.pipeline.stop_bot(bot_id, stopped, "the task was cancelled").await?;
    }
    if effects.wake {
        state.pipeline.wake();
    }
    Ok(())
}

/// Changes a task: the fields given change, the others stay (a client may send back the whole
/// task it read). Content changes only while WAITING, FAILED or CANCELLED; `status` CANCELLED
/// cancels, WAITING retries.
///
/// The bot holding the task reports on this route, in either of two shapes:
/// - plain writes, as in the original Vivo360 contract: `{"status":"RUNNING"}`, then
///   `{"status":"COMPLETE","result":{"rows":[…]}}` or `{"status":"FAILED","error":"…"}`;
/// - a bot event (`{"v":1,"type":"task.accepted","task_id":…,"attempt":…,"bot":…}`).
///
/// Both are applied exactly as the same event from the broker would be, fenced by attempt.
#[utoipa::path(put, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    request_body = TaskPatch,
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replace_task(
    Path(id): Path<String>,
    caller: Caller,
    ReportOnTask(state, body): ReportOnTask<extract::JsonBytes>,
) -> Result<Json<Task>, ApiError> {
    let id = parse_id(&id)?;
    if body.is_event() {
        let event = body.event()?;
        if event.task().map(|t| t.task_id) != Some(id) {
            return Err(ApiError::invalid(
                "task_id",
                "the event is about another task (or no task)",
            ));
        }
        crate::store::tasks::find_task(&state.db, id).await?;
        state.pipeline.handle_event(event).await?;
        return Ok(Json(crate::store::tasks::get_task(&state.db, id).await?));
    }
    let patch: TaskPatch = extract::parse_json(&body.0)?;
    change_task(&state, id, &caller, patch, &body).await.map(Json)
}

/// Changes a task: the same as `PUT` (see there), for clients that say PATCH.
#[utoipa::path(patch, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    request_body = TaskPatch,
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn patch_task(
    Path(id): Path<String>,
    caller: Caller,
    ReportOnTask(state, body): ReportOnTask<extract::JsonBytes>,
) -> Result<Json<Task>, ApiError> {
    let patch: TaskPatch = extract::parse_json(&body.0)?;
    change_task(&state, parse_id(&id)?, &caller, patch, &body).await.map(Json)
}

/// A user's edit, or a bot's report when `status` is RUNNING, COMPLETE or FAILED.
async fn change_task(
    state: &AppState,
    id: uuid::Uuid,
    caller: &Caller,
    patch: TaskPatch,
    body: &extract::JsonBytes,
) -> Result<Task, ApiError> {
    let current = crate::store::tasks::find_task(&state.db, id).await?;
    patch.check_identity(&current)?;
    if patch.is_report_on(&current) {
        // What a bot reports is made storable where it is applied, never refused for it.
        let holder = match current.bot_id {
            Some(bot_id) => crate::store::bots::find_by_id(&state.db, bot_id).await?,
            None => None,
        };
        let reporter = caller.reporter();
        if let Some(event) = tasks::report_of_write(&current, holder.as_ref(), &reporter, patch)? {
            state.pipeline.handle_event(event).await?;
        }
        return crate::store::tasks::get_task(&state.db, id).await;
    }
    body.refuse_unstorable()?;
    let limit = state.max_attachment_bytes;
    let registry = crate::store::systems::registry(&state.db).await?;
    let update = |current: &_| {
        let request = patch.apply_to(current)?;
        let status = request.status;
        Ok((TaskSpec::parse(request, None, limit, &registry)?, status))
    };
    let (task, effects) = crate::store::tasks::update_task(&state.db, id, update, now()).await?;
    follow_up(state, &task, effects).await?;
    Ok(task)
}

async fn set_status(
    state: &AppState,
    id: &str,
    status: TaskStatus,
) -> Result<Json<Task>, ApiError> {
    // Only the status changes: the stored fields were checked when they were stored, and a
    // system's contract changed (or the system deleted) since must not block a cancel.
    let update = |current: &_| Ok((TaskSpec::stored(current)?, Some(status)));
    let (task, effects) =
        crate::store::tasks::update_task(&state.db, parse_id(id)?, update, now()).await?;
    follow_up(state, &task, effects).await?;
    Ok(Json(task))
}

/// Cancels a task that has not ended; a bot working on it is told to stop and freed.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_task(
    Operator(state): Operator,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    set_status(&state, &id, TaskStatus::Cancelled).await
}

/// Sends a FAILED or CANCELLED task back to WAITING with a fresh budget of attempts.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry_task(
    Operator(state): Operator,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    set_status(&state, &id, TaskStatus::Waiting).await
}

/// Cancels several tasks, each as `POST /tasks/{id}/cancel` would: one refused (ended already,
/// gone) does not stop the others.
#[utoipa::path(post, path = "/api/v1/tasks/cancel", tag = "tasks", request_body = IdList,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ErrorBody)))]
pub async fn cancel_tasks(
    Operator(state): Operator,
    extract::Json(ids): extract::Json<IdList>,
) -> Result<Json<BulkOutcome>, ApiError> {
    set_statuses(&state, ids, TaskStatus::Cancelled).await
}

/// Sends several tasks back to WAITING, each as `POST /tasks/{id}/retry` would.
#[utoipa::path(post, path = "/api/v1/tasks/retry", tag = "tasks", request_body = IdList,
    responses((status = 200, body = BulkOutcome), (status = 400, body = ErrorBody)))]
pub async fn retry_tasks(
    Operator(state): Operator,
    extract::Json(ids): extract::Json<IdList>,
) -> Result<Json<BulkOutcome>, ApiError> {
    set_statuses(&state, ids, TaskStatus::Waiting).await
}

/// Each task in its own transaction, in the order given: a bulk action is a convenience over the
/// single ones, not a unit (a task that ended meanwhile is refused, the rest go on). Only the
/// database failing stops it, since every later task would fail the same way.
async fn set_statuses(
    state: &AppState,
    ids: IdList,
    status: TaskStatus,
) -> Result<Json<BulkOutcome>, ApiError> {
    let ids = ids.parse(|raw| {
        raw.parse::<uuid::Uuid>()
            .map_err(|_| ApiError::invalid_parameter("ids", "not a task id (a UUID)"))
    })?;
    let mut outcome = BulkOutcome::default();
    for id in ids {
        let result = set_status(state, &id.to_string(), status).await.map(|_| ());
        if let Err(err @ (ApiError::Unavailable(_) | ApiError::Internal(_))) = result {
            return Err(err);
        }
        outcome.record(id.to_string(), result);
    }
    Ok(Json(outcome))
}

/// Deletes a task and its history; refused while a bot holds it.
#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_task(
    Operator(state): Operator,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    crate::store::tasks::delete_task(&state.db, id).await?;
    state.pipeline.changes.task(id);
    Ok(StatusCode::NO_CONTENT)
}

/// The task's CSV, decoded.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/attachment", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, content_type = "text/csv", body = String), (status = 404, body = ErrorBody)))]
pub async fn get_attachment(
    AnyCaller(state): AnyCaller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let csv = crate::store::tasks::get_attachment(&state.db, id).await?;
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (CONTENT_DISPOSITION, format!("attachment; filename=\"task-{id}.csv\"")),
        ],
        csv,
    ))
}

/// The task's history, oldest first.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/events", tag = "tasks", params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<TaskEvent>), (status = 404, body = ErrorBody)))]
pub async fn list_task_events(
    AnyCaller(state): AnyCaller,
    Path(id): Path<String>,
) -> Result<Json<Vec<TaskEvent>>, ApiError> {
    Ok(Json(crate::store::history::list_events(&state.db, parse_id(&id)?).await?))
}
