//! The OpenAPI document, generated from the handlers' annotations (`/api/v1/openapi.json`).

use axum::Json;
use utoipa::OpenApi;

use super::{bots, equipment, health, incidents, live, reports, tasks};

/// Botline's REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Botline API", description = "Submit tasks for automation bots, manage bots, follow tasks to the end."),
    paths(
        health::healthz, health::readyz, live::events, tasks::task_stats,
        bots::list_bots, bots::create_bot, bots::get_bot, bots::replace_bot, bots::patch_bot, bots::delete_bot,
        tasks::list_tasks, tasks::create_task, tasks::get_task, tasks::replace_task, tasks::patch_task,
        tasks::delete_task, tasks::get_attachment, tasks::list_task_events, tasks::cancel_task, tasks::retry_task,
        equipment::create_activation, equipment::activation_status,
        incidents::list_actions, incidents::create_action, incidents::get_action, incidents::replace_action,
        incidents::delete_action, incidents::report_triggers, incidents::list_incidents, incidents::get_incident,
        incidents::resolve_incident, incidents::list_unclassified,
        reports::attendance_report,
    ),
    tags(
        (name = "bots", description = "The automation bots"),
        (name = "tasks", description = "Work for the bots"),
        (name = "equipment", description = "Equipment (CPE) activation, asynchronous"),
        (name = "incidents", description = "Monitoring reports, incidents, escalation and the actions that rule them"),
        (name = "reports", description = "Reports over the attendances the ETL loaded"),
        (name = "health", description = "Probes"),
        (name = "live", description = "Live change notices"),
    )
)]
pub struct ApiDoc;

/// Serves the document.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
