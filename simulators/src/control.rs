//! What the simulators share: the `down` / `delay_ms` failure injection placed in front of their
//! public routes (never their `/_control` API, so a test can always switch it back off), and the
//! `{"message": …}` JSON error shape of their JSON endpoints.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// How reachable a simulator is: the failure injection every simulator has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Availability {
    /// Answer every public route with 503.
    pub down: bool,
    /// Wait this long before answering a public route.
    pub delay_ms: u64,
}

/// A simulator whose public routes can be made slow or unavailable.
pub(crate) trait Unreliable: Clone + Send + Sync + 'static {
    /// The current setting, read afresh for every request so a control call takes effect at once.
    fn availability(&self) -> Availability;

    /// What the simulator answers while it is down.
    fn unavailable() -> Response;
}

/// Middleware: delays, then answers 503 while the simulator is down, else passes the request on.
pub(crate) async fn inject_failures<S: Unreliable>(
    State(simulator): State<S>,
    request: Request,
    next: Next,
) -> Response {
    let Availability { down, delay_ms } = simulator.availability();
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    if down {
        return S::unavailable();
    }
    next.run(request).await
}

/// A JSON error: `status` with `{"message": message}`.
pub(crate) fn json_message(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "message": message.into() }))).into_response()
}

/// [`Json`], with a body that cannot be read answered as [`json_message`] (400 for broken JSON,
/// 422 for JSON of the wrong shape, 415 without a JSON content type) instead of axum's plain text.
pub(crate) struct ControlJson<T>(pub T);

impl<T, S> FromRequest<S> for ControlJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ControlJson(value)),
            Err(rejection) => Err(json_message(rejection.status(), rejection.body_text())),
        }
    }
}
