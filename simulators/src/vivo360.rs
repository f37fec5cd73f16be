//! The Vivo360 portal: a user-administration web application that bots log in to and fill in,
//! one user form per CSV row, field by field.
//!
//! # Protocol
//!
//! - `GET /` redirects (303) to `/login`; `GET /login` is the login form.
//! - `POST /login` (form `username`, `password`): 303 to `/users/new` with the cookie
//!   `vivo360_session`, or 401 with `<p class="error" id="result">Invalid username or
//!   password</p>`.
//! - `GET /users/new` (session required, else 303 to `/login`): the form `#user-form` with a
//!   fresh one-use hidden `form_token` and the fields `name`, `email`, `login`, `profile`.
//! - `POST /users/fields/{field}` (form `form_token`, `value`): live validation of one field,
//!   `{"field","valid"[,"message"]}`; the value is kept on the form's draft. 401 without a
//!   session, 404 for an unknown field, 403 `form expired` for a bad token, as
//!   `{"message": …}`.
//! - `POST /users` (form `form_token`, optionally any field, overriding the draft): 201
//!   `User LOGIN created`, 422 for an invalid field, 409 for a taken login or e-mail, 403
//!   `form expired`, 500 when failure injection strikes; always in `<p id="result">`. The form
//!   token is used up whatever the outcome.
//! - Failure injection: `down` (503 everywhere but `/_control`), `delay_ms`, `fail_rate` and
//!   `fail_logins` (500 on `POST /users`, nothing created).
//! - Control API: `GET`/`PUT /_control` (settings), `GET`/`DELETE /_control/users` (users
//!   created and submission attempts per login).

mod pages;
mod portal;
mod user;

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::control::{self, Availability, ControlJson, Unreliable};
pub use portal::InvalidSetting;
use portal::{FormExpired, Portal, Settings, SettingsUpdate, Submission, User};
use user::{Draft, Field, InvalidField};

/// The session cookie's name.
const SESSION_COOKIE: &str = "vivo360_session";

/// How a Vivo360 portal starts; the failure injection can be changed later through
/// `PUT /_control`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Vivo360Config {
    /// Username of the portal's one account.
    #[arg(long, env = "VIVO360_USERNAME", default_value = "botline")]
    pub username: String,
    /// Password of the portal's one account.
    #[arg(long, env = "VIVO360_PASSWORD", default_value = "botline")]
    pub password: String,
    /// Milliseconds to wait before answering any request but the control API's.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Probability (0 to 1) that a user submission fails with 500, creating nothing.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fail_rate)]
    pub fail_rate: f64,
    /// Answer 503 to every request but the control API's.
    #[arg(long)]
    pub down: bool,
    /// Logins whose submissions always fail with 500, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub fail_logins: Vec<String>,
}

impl Default for Vivo360Config {
    fn default() -> Self {
        Vivo360Config {
            username: "botline".to_owned(),
            password: "botline".to_owned(),
            delay_ms: 0,
            fail_rate: 0.0,
            down: false,
            fail_logins: Vec::new(),
        }
    }
}

/// Parses `--fail-rate`, so a bad value is refused with the flag's name before anything starts.
pub(crate) fn parse_fail_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(InvalidSetting::FailRate(rate).to_string());
    }
    Ok(rate)
}

/// A running portal's state, shared by its handlers; clones share it.
#[derive(Debug, Clone)]
pub struct Vivo360State {
    portal: Arc<Mutex<Portal>>,
}

impl Vivo360State {
    /// A portal with no users, as `config` says.
    pub fn new(config: Vivo360Config) -> Result<Vivo360State, InvalidSetting> {
        let availability = Availability { down: config.down, delay_ms: config.delay_ms };
        let portal = Portal::new(
            config.username,
            config.password,
            availability,
            config.fail_rate,
            config.fail_logins,
        )?;
        Ok(Vivo360State { portal: Arc::new(Mutex::new(portal)) })
    }

    /// The portal, locked. Never held across an `.await`. A handler that panicked mid-change
    /// leaves nothing half-done worth refusing service over, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Portal> {
        self.portal.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Unreliable for Vivo360State {
    fn availability(&self) -> Availability {
        self.lock().settings.availability
    }

    fn unavailable() -> Response {
        PortalError::Unavailable.into_page()
    }
}

/// The portal's routes over `state`.
pub fn router(state: Vivo360State) -> Router {
    let portal = Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(log_in))
        .route("/users/new", get(new_user_form))
        .route("/users/fields/{field}", post(fill_field))
        .route("/users", post(create_user))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            control::inject_failures::<Vivo360State>,
        ));
    let control = Router::new()
        .route("/_control", get(settings).put(update_settings))
        .route("/_control/users", get(users).delete(forget_users));
    portal.merge(control).layer(TraceLayer::new_for_http()).with_state(state)
}

/// Serves a portal configured by `config` on `listener` until `shutdown` is cancelled, then
/// lets in-flight requests finish. Fails at once if `config` is out of range.
pub async fn serve(
    listener: TcpListener,
    config: Vivo360Config,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let state = Vivo360State::new(config)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "Vivo360 portal listening");
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Every way a portal request can fail, answered as a page (browser routes) or as
/// `{"message": …}` (the field validation API), like the real portal.
#[derive(Debug, thiserror::Error)]
enum PortalError {
    #[error("not logged in")]
    NotLoggedIn,
    #[error("Invalid username or password")]
    InvalidCredentials,
    #[error("form expired")]
    FormExpired,
    #[error("unknown field {0}")]
    UnknownField(String),
    #[error("{0}")]
    Invalid(InvalidField),
    #[error("{0}")]
    Duplicate(String),
    /// Failure injection on a submission.
    #[error("Internal error")]
    Injected,
    #[error("Portal unavailable")]
    Unavailable,
    /// A body that is not a form (wrong content type, undecodable).
    #[error("{message}")]
    BadForm { status: StatusCode, message: String },
}

impl From<FormExpired> for PortalError {
    fn from(FormExpired: FormExpired) -> Self {
        PortalError::FormExpired
    }
}

impl From<FormRejection> for PortalError {
    fn from(rejection: FormRejection) -> Self {
        PortalError::BadForm { status: rejection.status(), message: rejection.body_text() }
    }
}

impl PortalError {
    fn status_code(&self) -> StatusCode {
        match self {
            PortalError::NotLoggedIn | PortalError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            PortalError::FormExpired => StatusCode::FORBIDDEN,
            PortalError::UnknownField(_) => StatusCode::NOT_FOUND,
            PortalError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PortalError::Duplicate(_) => StatusCode::CONFLICT,
            PortalError::Injected => StatusCode::INTERNAL_SERVER_ERROR,
            PortalError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PortalError::BadForm { status, .. } => *status,
        }
    }

    /// As a page: a browser without a session is sent to log in, a failed login sees the
    /// login form again, anything else an error paragraph.
    fn into_page(self) -> Response {
        match self {
            PortalError::NotLoggedIn => Redirect::to("/login").into_response(),
            PortalError::InvalidCredentials => {
                (self.status_code(), Html(pages::login(Some(&self.to_string())))).into_response()
            }
            _ => (self.status_code(), Html(pages::outcome("error", &self.to_string())))
                .into_response(),
        }
    }
}

/// A [`PortalError`] answered as a page.
struct AsPage(PortalError);

impl<E: Into<PortalError>> From<E> for AsPage {
    fn from(error: E) -> Self {
        AsPage(error.into())
    }
}

impl IntoResponse for AsPage {
    fn into_response(self) -> Response {
        self.0.into_page()
    }
}

/// A [`PortalError`] answered as `{"message": …}`.
struct AsJson(PortalError);

impl<E: Into<PortalError>> From<E> for AsJson {
    fn from(error: E) -> Self {
        AsJson(error.into())
    }
}

impl IntoResponse for AsJson {
    fn into_response(self) -> Response {
        control::json_message(self.0.status_code(), self.0.to_string())
    }
}

/// The session named by the request's `vivo360_session` cookie, if the portal knows it.
fn session(portal: &Portal, headers: &HeaderMap) -> Result<String, PortalError> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .find(|token| portal.is_logged_in(token))
        .map(str::to_owned)
        .ok_or(PortalError::NotLoggedIn)
}

/// An unguessable token for a session or a form.
fn random_token() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

async fn index() -> Redirect {
    Redirect::to("/login")
}

async fn login_page() -> Html<String> {
    Html(pages::login(None))
}

#[derive(Debug, Deserialize)]
struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn log_in(
    State(state): State<Vivo360State>,
    form: Result<Form<Credentials>, FormRejection>,
) -> Result<Response, AsPage> {
    let Form(credentials) = form?;
    let session = random_token();
    if !state.lock().log_in(&credentials.username, &credentials.password, session.clone()) {
        tracing::info!(username = %credentials.username, "login refused");
        return Err(PortalError::InvalidCredentials.into());
    }
    tracing::info!(username = %credentials.username, "logged in");
    let cookie = format!("{SESSION_COOKIE}={session}; HttpOnly; Path=/");
    Ok((StatusCode::SEE_OTHER, [(LOCATION, "/users/new".to_owned()), (SET_COOKIE, cookie)])
        .into_response())
}

async fn new_user_form(
    State(state): State<Vivo360State>,
    headers: HeaderMap,
) -> Result<Html<String>, AsPage> {
    let mut portal = state.lock();
    let session = session(&portal, &headers)?;
    let token = random_token();
    portal.open_form(&session, token.clone());
    Ok(Html(pages::user_form(&token)))
}

#[derive(Debug, Deserialize)]
struct FieldInput {
    form_token: Option<String>,
    #[serde(default)]
    value: String,
}

/// The live validation's verdict on one field.
#[derive(Debug, Serialize)]
struct FieldCheck {
    field: &'static str,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
}

async fn fill_field(
    State(state): State<Vivo360State>,
    headers: HeaderMap,
    Path(field): Path<String>,
    form: Result<Form<FieldInput>, FormRejection>,
) -> Result<Json<FieldCheck>, AsJson> {
    let mut portal = state.lock();
    let session = session(&portal, &headers)?;
    let field = Field::parse(&field).ok_or(PortalError::UnknownField(field))?;
    let Form(input) = form?;
    let verdict = portal.fill(&session, input.form_token.as_deref(), field, input.value)?;
    Ok(Json(FieldCheck { field: field.as_str(), valid: verdict.is_ok(), message: verdict.err() }))
}

#[derive(Debug, Deserialize)]
struct UserSubmission {
    form_token: Option<String>,
    name: Option<String>,
    email: Option<String>,
    login: Option<String>,
    profile: Option<String>,
}

impl UserSubmission {
    /// The field values given in the body, which override the form's draft.
    fn overrides(&mut self) -> Draft {
        let mut draft = Draft::default();
        let given = [
            (Field::Name, self.name.take()),
            (Field::Email, self.email.take()),
            (Field::Login, self.login.take()),
            (Field::Profile, self.profile.take()),
        ];
        for (field, value) in given {
            if let Some(value) = value {
                draft.set(field, value);
            }
        }
        draft
    }
}

async fn create_user(
    State(state): State<Vivo360State>,
    headers: HeaderMap,
    form: Result<Form<UserSubmission>, FormRejection>,
) -> Result<Response, AsPage> {
    let mut portal = state.lock();
    let session = session(&portal, &headers)?;
    let Form(mut submission) = form?;
    let overrides = submission.overrides();
    let roll = rand::rng().random::<f64>();
    let token = submission.form_token.as_deref();
    let outcome = portal.submit(&session, token, overrides, roll, chrono::Utc::now());
    let Ok((login, submission)) = outcome else {
        tracing::info!("user submission refused: form expired");
        return Err(PortalError::FormExpired.into());
    };
    let error = match submission {
        Submission::Created(user) => {
            tracing::info!(
                login = %user.login,
                email = %user.email,
                profile = user.profile.as_str(),
                "user created"
            );
            let message = format!("User {} created", user.login);
            let page = Html(pages::outcome("success", &message));
            return Ok((StatusCode::CREATED, page).into_response());
        }
        Submission::Invalid(invalid) => PortalError::Invalid(invalid),
        Submission::Duplicate(message) => PortalError::Duplicate(message),
        Submission::Failed => PortalError::Injected,
    };
    tracing::info!(%login, status = %error.status_code(), reason = %error, "user rejected");
    Err(error.into())
}

async fn settings(State(state): State<Vivo360State>) -> Json<Settings> {
    Json(state.lock().settings.clone())
}

async fn update_settings(
    State(state): State<Vivo360State>,
    ControlJson(update): ControlJson<SettingsUpdate>,
) -> Response {
    let mut portal = state.lock();
    match portal.settings.apply(update) {
        Ok(()) => {
            tracing::info!(settings = ?portal.settings, "failure injection changed");
            Json(portal.settings.clone()).into_response()
        }
        Err(error) => control::json_message(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
    }
}

/// `GET /_control/users`.
#[derive(Debug, Serialize)]
struct UsersReport {
    users: Vec<User>,
    submissions: BTreeMap<String, u64>,
}

async fn users(State(state): State<Vivo360State>) -> Json<UsersReport> {
    let portal = state.lock();
    Json(UsersReport { users: portal.users().to_vec(), submissions: portal.submissions().clone() })
}

async fn forget_users(State(state): State<Vivo360State>) -> StatusCode {
    state.lock().forget_users();
    tracing::info!("users and submissions forgotten");
    StatusCode::NO_CONTENT
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Vivo360Config,
    }

    #[test]
    fn flag_defaults_are_the_config_defaults() {
        assert_eq!(Cli::parse_from(["x"]).config, Vivo360Config::default());
        let cli = Cli::parse_from(["x", "--fail-logins", "ana,bob", "--down"]);
        assert_eq!(cli.config.fail_logins, ["ana", "bob"]);
        assert!(cli.config.down);
        assert_eq!(Cli::parse_from(["x", "--fail-rate", "0.5"]).config.fail_rate, 0.5);
        assert!(Cli::try_parse_from(["x", "--fail-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--fail-rate", "half"]).is_err());
    }

    #[test]
    fn the_session_comes_from_the_cookie_the_portal_issued() {
        let state = Vivo360State::new(Vivo360Config::default()).unwrap();
        let mut portal = state.lock();
        assert!(portal.log_in("botline", "botline", "abc".into()));
        let mut headers = HeaderMap::new();
        assert!(session(&portal, &headers).is_err());
        headers.insert(COOKIE, "theme=dark; vivo360_session=nope".parse().unwrap());
        assert!(session(&portal, &headers).is_err());
        headers.append(COOKIE, "x=1;vivo360_session=abc".parse().unwrap());
        assert_eq!(session(&portal, &headers).unwrap(), "abc");
    }

    #[test]
    fn an_out_of_range_fail_rate_is_refused() {
        let config = Vivo360Config { fail_rate: 1.01, ..Vivo360Config::default() };
        assert_eq!(Vivo360State::new(config).unwrap_err(), InvalidSetting::FailRate(1.01));
    }
}
