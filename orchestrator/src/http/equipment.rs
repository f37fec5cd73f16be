//! `/api/v1/equipment/cpe`: the asynchronous equipment-activation interface. Creating an
//! activation stores a CPE task and answers at once with its id; a bot makes the slow
//! configuration call; the client polls the task's status.
//!
//! These routes keep the original interface's contract, errors included: every answer is
//! `{"code": …, "message": …}` (or `{"code": 200, "taskId": …}`), not the rest of the API's
//! `{"error": …}` shape.

use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_config::cpe::{self, CpeAnswer, CpePayload, CpeRequest, EquipmentId, message};
use broker_config::{System, TaskStatus};
use serde::Serialize;
use uuid::Uuid;

use super::auth::{AnyCaller, Guarded, Operator};
use crate::clock::now;
use crate::error::ApiError;
use crate::tasks::{TaskRequest, TaskSpec};

/// Attempts an activation gets: a device that fails or answers late is tried twice more.
pub const ACTIVATION_MAX_ATTEMPTS: u32 = 3;

/// The equipment routes.
pub fn router() -> Router<Guarded> {
    Router::new()
        .route("/equipment/cpe/{id}", post(create_activation))
        .route("/equipment/cpe/{id}/task/{task}", get(activation_status))
}

/// `{"code": 200, "taskId": …}`: the activation is stored and will run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivationCreated {
    /// Always 200.
    #[schema(example = 200)]
    pub code: u16,
    /// The task to poll.
    #[serde(rename = "taskId")]
    pub task_id: Uuid,
}

/// Why an equipment request failed, answered as `{"code","message"}`.
#[derive(Debug)]
pub enum EquipmentError {
    /// A malformed equipment id: 404, as the original interface answers.
    EquipmentNotFound,
    /// No such task for that equipment: 404.
    TaskNotFound,
    /// A body that is not an activation request: 400.
    BadRequest(String),
    /// Anything the database or the server did: its own status.
    Api(ApiError),
}

impl From<ApiError> for EquipmentError {
    fn from(error: ApiError) -> Self {
        EquipmentError::Api(error)
    }
}

/// `status` with `{"code": status, "message": message}`.
fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(CpeAnswer::new(status.as_u16(), message))).into_response()
}

impl IntoResponse for EquipmentError {
    fn into_response(self) -> Response {
        match self {
            EquipmentError::EquipmentNotFound => {
                answer(StatusCode::NOT_FOUND, message::EQUIPMENT_NOT_FOUND)
            }
            EquipmentError::TaskNotFound => answer(StatusCode::NOT_FOUND, message::TASK_NOT_FOUND),
            EquipmentError::BadRequest(reason) => answer(StatusCode::BAD_REQUEST, reason),
            EquipmentError::Api(error) => {
                let status = error.status_code();
                if status.is_server_error() {
                    // Logged inside the request's span; the caller sees no database detail.
                    tracing::error!(error = ?error, "equipment request failed");
                }
                answer(status, error.to_string())
            }
        }
    }
}

fn equipment_id(raw: &str) -> Result<EquipmentId, EquipmentError> {
    EquipmentId::parse(raw).map_err(|_| EquipmentError::EquipmentNotFound)
}

/// Reads an activation request, naming the field at fault.
fn parse_request(body: Result<Bytes, BytesRejection>) -> Result<CpeRequest, EquipmentError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => EquipmentError::Api(ApiError::TooLarge {
            field: None,
            message: "request body is over the size limit".into(),
        }),
        _ => EquipmentError::BadRequest(rejection.body_text()),
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EquipmentError::BadRequest(
            "the body must be JSON: {\"timeoutInSeconds\": 14, \"parameters\": {…}}".into(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let request: CpeRequest =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            EquipmentError::BadRequest(if !inner.is_data() {
                format!("malformed JSON: {inner}")
            } else if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        })?;
    deserializer
        .end()
        .map_err(|error| EquipmentError::BadRequest(format!("malformed JSON: {error}")))?;
    Ok(request)
}

/// Starts an activation: stores a CPE task (WAITING) for a bot to run and answers with its id
/// at once. The body's `parameters` may also be a list of one-key objects; they are stored and
/// forwarded in the shape given, and `timeoutInSeconds` (the device's) goes on as given.
#[utoipa::path(post, path = "/api/v1/equipment/cpe/{id}", tag = "equipment",
    params(("id" = String, Path, description = "The equipment: 6 to 64 letters or digits")),
    request_body = CpeRequest,
    responses((status = 200, body = ActivationCreated),
        (status = 400, body = CpeAnswer, description = "Not an activation request"),
        (status = 404, body = CpeAnswer, description = "The requested equipment is not found")))]
pub async fn create_activation(
    Operator(state): Operator,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ActivationCreated>, EquipmentError> {
    let equipment_id = equipment_id(&id)?;
    let request = parse_request(body)?;
    let payload = CpePayload::new(equipment_id.clone(), request);
    let task_request = TaskRequest {
        description: format!("Activate CPE {equipment_id}"),
        system: System::CPE,
        attachment: None,
        payload: Some(payload.to_value()),
        priority: None,
        not_before: None,
        max_attempts: Some(ACTIVATION_MAX_ATTEMPTS),
        max_run_seconds: None,
        status: None,
    };
    let registry = crate::store::systems::registry(&state.db).await?;
    let spec = TaskSpec::parse(task_request, None, state.max_attachment_bytes, &registry)?;
    let task = crate::store::tasks::create_task(&state.db, spec, now()).await?;
    state.pipeline.wake();
    tracing::info!(task_id = %task.id, %equipment_id, timeout_s = payload.timeout_in_seconds, "activation created");
    Ok(Json(ActivationCreated { code: 200, task_id: task.id }))
}

/// An activation's status: `Completed`; still running (code 204 in an HTTP 200) while it
/// waits for a bot or runs; 404 "equipment not found" when the equipment config service said
/// so; 500 once it failed for good otherwise; 410 if an operator cancelled it.
#[utoipa::path(get, path = "/api/v1/equipment/cpe/{id}/task/{task}", tag = "equipment",
    params(("id" = String, Path, description = "The equipment"), ("task" = Uuid, Path, description = "The activation's task id")),
    responses(
        (status = 200, body = CpeAnswer, description = "`{\"code\":200,\"message\":\"Completed\"}`, or `{\"code\":204,\"message\":\"Task is still running\"}`"),
        (status = 404, body = CpeAnswer, description = "The requested equipment (or task) is not found; also once the equipment config service answered that the equipment is unknown"),
        (status = 410, body = CpeAnswer, description = "The task was cancelled"),
        (status = 500, body = CpeAnswer, description = "Internal provisioning exception")))]
pub async fn activation_status(
    AnyCaller(state): AnyCaller,
    Path((id, task)): Path<(String, String)>,
) -> Result<Response, EquipmentError> {
    let equipment_id = equipment_id(&id)?;
    let task_id: Uuid = task.parse().map_err(|_| EquipmentError::TaskNotFound)?;
    let row = match crate::store::tasks::find_task(&state.db, task_id).await {
        Ok(row) => row,
        Err(ApiError::NotFound(_)) => return Err(EquipmentError::TaskNotFound),
        Err(error) => return Err(error.into()),
    };
    // A task belongs to the equipment its payload names; any other is "not found" here.
    let belongs = row.system == System::CPE.as_str()
        && row
            .payload
            .as_ref()
            .and_then(|payload| payload.get("equipment_id"))
            .and_then(|stored| stored.as_str())
            == Some(equipment_id.as_str());
    if !belongs {
        return Err(EquipmentError::TaskNotFound);
    }
    Ok(match row.status {
        TaskStatus::Complete => answer(StatusCode::OK, message::COMPLETED),
        TaskStatus::Waiting | TaskStatus::Assigned | TaskStatus::Running => {
            let running = CpeAnswer::new(StatusCode::NO_CONTENT.as_u16(), message::STILL_RUNNING);
            (StatusCode::OK, Json(running)).into_response()
        }
        // The service's own "not found" for a well-formed id it does not know reaches the
        // client as the service said it; every other failure is a provisioning exception.
        TaskStatus::Failed if row.error.as_deref().and_then(cpe::service_code) == Some(404) => {
            answer(StatusCode::NOT_FOUND, message::EQUIPMENT_NOT_FOUND)
        }
        TaskStatus::Failed => {
            answer(StatusCode::INTERNAL_SERVER_ERROR, message::PROVISIONING_FAILED)
        }
        TaskStatus::Cancelled => answer(StatusCode::GONE, message::CANCELLED),
    })
}
