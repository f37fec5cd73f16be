//! The REST API under `/api/v1` (with `/api/v1/health`, where the equipment services keep their
//! probe), plus `/healthz` and `/readyz`. Each resource module exposes its
//! `router()`; handlers are thin: parse at the edge, call [`crate::bots`] / [`crate::tasks`].
//! [`auth`] identifies the caller of every route that is not public, and each handler names its
//! route's access rule ([`auth::rules`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::get;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use uuid::Uuid;

use crate::error::ApiError;

pub mod auth;
mod bots;
mod dashboard;
mod equipment;
pub mod extract;
mod health;
mod incidents;
mod live;
mod metrics;
mod monitoring;
pub mod openapi;
mod reports;
mod systems;
mod tasks;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database pool.
    pub db: DatabaseConnection,
    /// The largest CSV attachment accepted, decoded, in bytes.
    pub max_attachment_bytes: usize,
    /// The dispatcher and event application.
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    /// The RabbitMQ management UI, linked from the dashboard.
    pub rabbitmq_ui_url: String,
    /// The API's tokens, and whom each stands for.
    pub access: Arc<auth::Access>,
    /// The port of a bot registered without one (`--default-bot-port`).
    pub default_bot_port: u16,
    /// The origins whose pages may call the API (`--cors-origin`).
    pub cors_origins: Vec<String>,
    /// The broker's dead-letter queue, which the dashboard shows and settles.
    pub dead_letters: broker_config::dead_letters::DeadLetterQueue,
}

/// The whole HTTP API. The public routes (probes, dashboard, report page) are apart; in front of
/// every other route, fallbacks included, [`auth::require_caller`] refuses unknown callers, and
/// each handler names its route's access rule ([`auth::rules`]).
pub fn router(state: AppState) -> Router {
    let body_limit = body_limit(state.max_attachment_bytes);
    let public = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/api/v1/health", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(dashboard::router())
        .merge(reports::pages())
        .method_not_allowed_fallback(method_not_allowed);
    let protected = Router::new()
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/events", get(live::events))
        .route("/metrics", get(metrics))
        .nest(
            "/api/v1",
            bots::router()
                .merge(tasks::router())
                .merge(equipment::router())
                .merge(incidents::router())
                .merge(reports::router())
                .merge(systems::router())
                .merge(monitoring::router()),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside the trace layer, so refusals are logged with their request.
        .layer(axum::middleware::from_fn_with_state(state.access.clone(), auth::require_caller));
    public
        .merge(protected)
        // Inside the routing, so each request is counted under the route it matched.
        .layer(axum::middleware::from_fn(measure))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // At DEBUG: a dashboard polling is most of the requests, and would be most of the log.
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(close_after_an_unread_body))
        // Outermost: a browser's preflight is answered before any token is asked for (it carries
        // none), and refusals carry the CORS headers the page needs to read them.
        .layer(cors(&state.cors_origins))
        .with_state(auth::Guarded::new(state))
}

/// Prometheus metrics in the text format, for any caller (the read token included): see
/// [`crate::metrics`].
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4: tasks by status and system, bots by status, offers, wait and run times, HTTP requests, dead letters…", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(
    auth::AnyCaller(state): auth::AnyCaller,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let text = metrics::render(&state.db).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

/// Counts a request under the route it matched (`/api/v1/tasks/:id`, never the id; `unmatched`
/// when none did), its method and status, and times it. A parameter is written `:id`, not as
/// axum declares it (`{id}`): braces in a label value trip simple text-format parsers.
async fn measure(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| route_label(path.as_str()));
    // Any word is a method to hyper: only the standard ones become labels.
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    let method = request.method();
    let method = if STANDARD.contains(method) { method.as_str() } else { "OTHER" }.to_owned();
    let began = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::http_request(route, method, response.status().as_u16(), began.elapsed());
    response
}

/// `/tasks/{id}/events` as `/tasks/:id/events`.
fn route_label(template: &str) -> String {
    template
        .split('/')
        .map(|part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => format!(":{name}"),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A request's span: method and path only. Never the query string (a client may put a token
/// there, `?access_token=…`, which is refused but would be logged) nor any header.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
}

/// Headers every response carries, for the dashboard and the report pages foremost: no framing
/// by other sites (clickjacking), no content sniffing, no referrer sent elsewhere, and a content
/// policy that runs only the orchestrator's own scripts and styles, unless the handler set its own
/// (the attendance report's page, whose script and style are inline).
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// A request refused before its body was read (no token, the read token writing, a body over the
/// limit, a route or method that does not exist, a body that is not JSON) leaves that body on the
/// connection, which hyper then closes after the answer without saying so: a client that pools
/// connections (httpx, reqwest, every browser) found it gone on its next request. Saying
/// `Connection: close` on such an answer tells the client first, and it opens another.
async fn close_after_an_unread_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length > 0);
    let mut response = next.run(request).await;
    if has_body && matches!(response.status().as_u16(), 401 | 403 | 404 | 405 | 413 | 415) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The dashboard's content policy: its own script, styles, icon and API only; no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Cross-origin access for the listed origins only: the methods and the two headers the API
/// reads (`Authorization`, `Content-Type`). No credentials mode: the API takes bearer tokens,
/// never cookies, so a page of another site gets nothing a user's browser holds. No origin
/// listed: no CORS header at all (browsers then refuse other origins' reads, as before).
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method, header};
    let origins: Vec<HeaderValue> =
        origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600))
}

/// The largest request body: room for the largest attachment in base64 (4 characters per 3
/// bytes) plus the other fields.
fn body_limit(max_attachment_bytes: usize) -> usize {
    max_attachment_bytes.div_ceil(3) * 4 + 64 * 1024
}

/// No such route: a 404 for a caller who may read, refused for others as any write is.
async fn not_found(_: auth::AnyCaller) -> ApiError {
    ApiError::NotFound("route")
}

/// A route without this method: a 405 for a caller who may read, refused for others as any
/// write is (on public routes too: only their reads are public).
async fn method_not_allowed(_: auth::AnyCaller) -> ApiError {
    ApiError::MethodNotAllowed
}

/// Parses a resource id from the path.
fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_parameter("id", format!("'{raw}' is not a UUID")))
}

/// The body of an action on several things at once: `{"ids": [...]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdList {
    /// 1 to [`MAX_IDS`] ids; one given twice counts once.
    ids: Vec<String>,
}

/// The most ids one action takes: the dashboard's largest page.
pub const MAX_IDS: usize = crate::pagination::MAX_LIMIT as usize;

impl IdList {
    /// The ids, each once and in the order given, each parsed by `parse`; any that does not
    /// parse refuses the whole list, so a bad request changes nothing.
    fn parse<T: PartialEq>(
        self,
        parse: impl Fn(&str) -> Result<T, ApiError>,
    ) -> Result<Vec<T>, ApiError> {
        if self.ids.is_empty() || self.ids.len() > MAX_IDS {
            return Err(ApiError::Invalid {
                field: Some("ids".into()),
                message: format!("give 1 to {MAX_IDS} ids, not {}", self.ids.len()),
            });
        }
        let mut parsed: Vec<T> = Vec::with_capacity(self.ids.len());
        for raw in &self.ids {
            let id = parse(raw).map_err(|err| ApiError::Invalid {
                field: Some("ids".into()),
                message: format!("'{raw}': {err}"),
            })?;
            if !parsed.contains(&id) {
                parsed.push(id);
            }
        }
        Ok(parsed)
    }
}

/// What an action on several things did: those it did, and why it did not do the others.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct BulkOutcome {
    /// The ids acted on.
    done: Vec<String>,
    /// The ids refused, each with its error (as the single action would answer it).
    refused: Vec<Refused>,
}

/// One id an action refused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Refused {
    /// The id.
    id: String,
    /// The error's stable code (`not_found`, a conflict's code, …).
    code: String,
    /// Why.
    message: String,
}

impl BulkOutcome {
    fn record(&mut self, id: String, result: Result<(), ApiError>) {
        match result {
            Ok(()) => self.done.push(id),
            Err(err) => {
                let detail = err.detail();
                self.refused.push(Refused { id, code: detail.code, message: detail.message });
            }
        }
    }
}

/// Parses a comma-separated filter (`status=WAITING,RUNNING`), names in any case.
fn parse_list<T>(field: &'static str, raw: Option<&str>) -> Result<Vec<T>, ApiError>
where
    T: std::str::FromStr<Err: std::fmt::Display>,
{
    raw.into_iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(|e| ApiError::invalid_parameter(field, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_name_parameters_without_braces() {
        assert_eq!(super::route_label("/api/v1/tasks/{id}/events"), "/api/v1/tasks/:id/events");
        assert_eq!(super::route_label("/api/v1/tasks"), "/api/v1/tasks");
        assert_eq!(super::route_label("/{*rest}"), "/:*rest");
    }
}
