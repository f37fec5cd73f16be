//! [`ApiError`]: every way a request can fail, mapped to one HTTP status and the JSON body of
//! docs/architecture.md: `{"error":{"code":"…","message":"…","field":…}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sea_orm::{DbErr, SqlErr};
use serde::Serialize;

/// A failed request. Client errors say what to fix; server errors are logged in full and shown
/// opaquely, so no SQL or stack detail leaks to a caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not parseable at all (broken JSON, broken multipart): 400.
    #[error("{0}")]
    MalformedBody(String),
    /// A path or query-string parameter is invalid: 400.
    #[error("{message}")]
    InvalidParameter {
        /// The parameter.
        field: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// The body parses but a field is wrong (missing, unknown, bad value): 422.
    #[error("{message}")]
    Invalid {
        /// The field, as a path (`systems[1]`) where known.
        field: Option<String>,
        /// What is wrong with it.
        message: String,
    },
    /// The body or attachment is over the size limit: 413.
    #[error("{message}")]
    TooLarge {
        /// The field, where known.
        field: Option<String>,
        /// What limit was exceeded.
        message: String,
    },
    /// The body is not of a type this endpoint reads: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No such resource: 404.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists but not with this method: 405.
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// The request conflicts with the current state (a taken name, a running task): 409.
    #[error("{message}")]
    Conflict {
        /// A stable machine-readable code (`name_taken`, `bot_running_task`, …).
        code: &'static str,
        /// The field that conflicts, where one does.
        field: Option<String>,
        /// What conflicts, and what to do about it.
        message: String,
    },
    /// The database cannot be reached, or asks for a retry (busy, a deadlock): 503, so clients
    /// and load balancers retry.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// RabbitMQ cannot be reached for what the request needs of it (the dead letters): 503. The
    /// cause is logged, not answered.
    #[error("the broker is unavailable")]
    BrokerUnavailable(String),
    /// Anything else: 500.
    #[error("internal error")]
    Internal(#[source] DbErr),
}

impl ApiError {
    /// A 422 for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: Some(field.into()), message: message.into() }
    }

    /// A 400 for the path or query parameter `field`.
    pub fn invalid_parameter(field: impl Into<String>, message: impl ToString) -> ApiError {
        ApiError::InvalidParameter { field: Some(field.into()), message: message.to_string() }
    }

    /// The same error about a field of the element at `path` (`tasks[3]`): its field becomes
    /// `tasks[3].payload`, or `tasks[3]` when it named none.
    pub fn within(self, path: &str) -> ApiError {
        let nest = |field: Option<String>| {
            Some(field.map_or_else(|| path.to_owned(), |f| format!("{path}.{f}")))
        };
        match self {
            ApiError::Invalid { field, message } => {
                ApiError::Invalid { field: nest(field), message: format!("{path}: {message}") }
            }
            ApiError::TooLarge { field, message } => {
                ApiError::TooLarge { field: nest(field), message: format!("{path}: {message}") }
            }
            other => other,
        }
    }

    /// A 409 with `code`.
    pub fn conflict(
        code: &'static str,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError::Conflict { code, field: field.map(str::to_owned), message: message.into() }
    }

    /// The HTTP status for this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_) | ApiError::InvalidParameter { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable(_) | ApiError::BrokerUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedBody(_) => "malformed_body",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::Unavailable(_) | ApiError::BrokerUnavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::InvalidParameter { field, .. }
            | ApiError::Invalid { field, .. }
            | ApiError::TooLarge { field, .. }
            | ApiError::Conflict { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

impl From<DbErr> for ApiError {
    /// A 503 when [`crate::failure::is_transient`] says the error will pass (the client may
    /// retry), a 500 otherwise.
    fn from(err: DbErr) -> ApiError {
        if crate::failure::is_transient(&err) {
            ApiError::Unavailable(err)
        } else {
            ApiError::Internal(err)
        }
    }
}

/// Whether `err` is a unique-constraint violation, and its database message if so.
pub fn unique_violation(err: &DbErr) -> Option<String> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => Some(message),
        _ => None,
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for programs (`code`, `field`) and people (`message`).
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `malformed_body`, `invalid_parameter`, `invalid_field`, `too_large`,
    /// `unsupported_media_type`, `not_found`, a conflict's own code, `unavailable`, `internal`.
    #[schema(example = "invalid_field")]
    pub code: String,
    /// What to fix.
    pub message: String,
    /// The field at fault, where there is one.
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if status.is_server_error() {
            // Logged inside the request's span, so the method and path come with it.
            tracing::error!(error = ?self, "request failed");
        }
        (status, Json(ErrorBody { error: self.detail() })).into_response()
    }
}

impl ApiError {
    /// What the response body says of this error.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().to_owned(),
            message: self.to_string(),
            field: self.field().map(str::to_owned),
        }
    }
}

impl From<ApiError> for crate::failure::Failure {
    /// The pipeline's work is shared with the API and still reports [`ApiError`]s: a client
    /// error is a refusal of the message itself, a 503 is [`is_transient`]'s verdict, and the
    /// rest (a 404 or 409 met while applying, a 500) is internal.
    fn from(err: ApiError) -> crate::failure::Failure {
        match err {
            ApiError::MalformedBody(_)
            | ApiError::InvalidParameter { .. }
            | ApiError::Invalid { .. }
            | ApiError::TooLarge { .. }
            | ApiError::UnsupportedMediaType(_) => {
                crate::failure::Failure::Invalid(err.to_string())
            }
            ApiError::Unavailable(source) => crate::failure::Failure::Transient(source.to_string()),
            ApiError::BrokerUnavailable(why) => crate::failure::Failure::Transient(why),
            ApiError::Internal(source) => crate::failure::Failure::Internal(source.to_string()),
            ApiError::NotFound(_) | ApiError::MethodNotAllowed | ApiError::Conflict { .. } => {
                crate::failure::Failure::Internal(err.to_string())
            }
        }
    }
}
