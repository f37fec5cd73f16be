//! The OpenAPI document, generated from the handlers' annotations (`/api/v1/openapi.json`).

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{bots, equipment, health, incidents, live, monitoring, reports, systems, tasks};

/// Botline's REST API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Botline API", description = "Submit tasks for automation bots, manage bots, follow tasks to the end."),
    paths(
        health::healthz, health::readyz, super::metrics, live::events, tasks::task_stats,
        bots::list_bots, bots::create_bot, bots::get_bot, bots::replace_bot, bots::patch_bot, bots::delete_bot,
        tasks::list_tasks, tasks::create_task, tasks::create_tasks, tasks::get_task, tasks::replace_task, tasks::patch_task,
        tasks::delete_task, tasks::get_attachment, tasks::list_task_events, tasks::cancel_task, tasks::retry_task,
        equipment::create_activation, equipment::activation_status,
        incidents::list_actions, incidents::create_action, incidents::get_action, incidents::replace_action,
        incidents::delete_action, incidents::report_triggers, incidents::list_incidents, incidents::get_incident,
        incidents::resolve_incident, incidents::list_unclassified,
        reports::attendance_report,
        systems::list_systems, systems::create_system, systems::get_system, systems::replace_system,
        systems::patch_system, systems::delete_system,
        tasks::cancel_tasks, tasks::retry_tasks,
        monitoring::monitoring, monitoring::list_dead_letters, monitoring::replay_dead_letters,
        monitoring::discard_dead_letters,
    ),
    // Referenced by the lists' `order` parameter, which does not register it by itself.
    components(schemas(crate::pagination::Order, crate::store::tasks::TaskSort)),
    modifiers(&ErrorResponses),
    tags(
        (name = "bots", description = "The automation bots"),
        (name = "tasks", description = "Work for the bots"),
        (name = "systems", description = "The systems tasks target: what their tasks must carry, and their defaults"),
        (name = "equipment", description = "Equipment (CPE) activation, asynchronous"),
        (name = "incidents", description = "Monitoring reports, incidents, escalation and the actions that rule them"),
        (name = "reports", description = "Reports over the attendances the ETL loaded"),
        (name = "health", description = "Probes"),
        (name = "live", description = "Live change notices"),
    )
)]
pub struct ApiDoc;

/// Documents the refusals every route may answer with, which the handlers' annotations leave
/// out: a bad path or query parameter (400), a body that is broken (400), too large (413), not
/// JSON (415) or wrong (422), a missing or insufficient token (401, 403), and the database being
/// down (503). Clients and fuzzers then know every status the API may send.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue; // the public probes answer 200 or 503, as documented
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                document_refusals(path, operation);
            }
        }
    }
}

fn document_refusals(path: &str, operation: &mut Operation) {
    let mut statuses = vec![
        ("401", "No token, or not a valid one"),
        ("403", "The token may not do this"),
        ("503", "The database is unavailable; retry later"),
    ];
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_parameters || path.contains('{') {
        statuses.push(("400", "A path or query parameter is invalid, or the body is broken"));
    }
    if path.contains('{') {
        statuses.push(("404", "No such resource"));
    }
    if operation.request_body.is_some() {
        statuses.extend([
            ("400", "The body is not well-formed"),
            ("413", "The body is over the size limit"),
            ("415", "The body is not of a type this route reads"),
            ("422", "A field of the body is missing, unknown or wrong"),
        ]);
    }
    for (status, description) in statuses {
        operation.responses.responses.entry(status.to_owned()).or_insert_with(|| {
            let content =
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build()
                .into()
        });
    }
}

/// Serves the document, to any caller the API knows.
pub async fn openapi_json(_: super::auth::AnyCaller) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
