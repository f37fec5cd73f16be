//! VIVO360: creates the users of a CSV in the Vivo360 portal, filling its user form field by
//! field as a person would.
//!
//! Per row: `GET /users/new` (a one-use form token), `POST /users/fields/{field}` for name,
//! email, login and profile (a field the portal finds invalid rejects the row), then
//! `POST /users`. A portal that is down (unreachable, 503) fails the attempt as retryable; a 500
//! on submission is retried twice, then the row is FAILED; a lost session means logging in
//! again and redoing the row; an expired form is redone once.

pub mod html;

use std::time::Duration;

use broker_config::attachment::VIVO360_COLUMNS;
use broker_config::{Assignment, Attachment, RowOutcome, RowStatus, System};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{NO_SIZE_LIMIT, Outcome, row_number, rows_to_do};
use crate::progress::ProgressSink;

/// The portal's session cookie.
const SESSION_COOKIE: &str = "vivo360_session";
/// Tries of a submission after the first that failed with 500.
const SUBMIT_RETRIES: u32 = 2;
/// The wait before retrying a submission that failed with 500; it grows with each retry.
const SUBMIT_BACKOFF: Duration = Duration::from_millis(100);
/// Times a row may be redone because the session was lost, before it is given up as FAILED.
const RELOGINS_PER_ROW: u32 = 2;
/// How long one portal request may take before the portal counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The Vivo360 automation: where the portal is and the account it logs in with.
#[derive(Debug, Clone)]
pub struct Vivo360 {
    client: reqwest::Client,
    base_url: String,
    username: String,
    password: String,
}

/// One user, from one CSV row.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NewUser {
    /// The values of `name`, `email`, `login`, `profile`, in the order the form is filled.
    fields: Vec<(&'static str, String)>,
}

impl NewUser {
    fn from_row(attachment: &Attachment, index: usize) -> NewUser {
        NewUser {
            fields: VIVO360_COLUMNS
                .iter()
                .map(|&column| {
                    let value = attachment.field(index, column).unwrap_or_default();
                    (column, value.to_owned())
                })
                .collect(),
        }
    }
}

/// The portal's answer to a field.
#[derive(Debug, Deserialize)]
struct FieldCheck {
    valid: bool,
    #[serde(default)]
    message: Option<String>,
}

/// How one try at a row went, when the portal answered about the row.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RowAnswer {
    Created(String),
    Rejected(String),
}

/// Why a portal request did not give the row an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PortalError {
    #[error("{0}")]
    Unavailable(String),
    #[error("session lost")]
    SessionLost,
    #[error("form expired")]
    FormExpired,
    #[error("portal error")]
    ServerError,
    #[error("the portal refused the bot's credentials")]
    LoginRefused,
    #[error("unexpected portal answer: {0}")]
    Unexpected(String),
}

impl From<reqwest::Error> for PortalError {
    fn from(error: reqwest::Error) -> Self {
        // Refused connections, timeouts and cut-off bodies all mean the portal is not there.
        PortalError::Unavailable(error.to_string())
    }
}

impl Vivo360 {
    /// The automation for the portal at `base_url`, logging in as `username`.
    pub fn new(base_url: &str, username: &str, password: &str) -> Result<Vivo360, reqwest::Error> {
        let client = reqwest::Client::builder()
            // The session cookie is read from the login answer itself: follow nothing.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Vivo360 {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// Runs a VIVO360 task.
    pub async fn run(
        &self,
        assignment: &Assignment,
        sink: &mut ProgressSink,
        cancel: &CancellationToken,
    ) -> Outcome {
        let Some(encoded) = assignment.attachment.as_deref() else {
            return Outcome::fatal("a VIVO360 task needs a CSV attachment of users");
        };
        let attachment = match Attachment::from_base64(
            encoded,
            &System::VIVO360,
            &VIVO360_COLUMNS,
            NO_SIZE_LIMIT,
        ) {
            Ok(attachment) => attachment,
            Err(error) => return Outcome::fatal(error.to_string()),
        };
        let rows = rows_to_do(assignment, attachment.row_count());
        if rows.is_empty() {
            return Outcome::Completed { output: None };
        }
        let mut session = match self.log_in().await {
            Ok(session) => session,
            Err(error) => return failure(error),
        };
        for index in rows {
            if cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            let row = row_number(index);
            let user = NewUser::from_row(&attachment, index);
            match self.create_user(&mut session, &user, cancel).await {
                Ok((status, message)) => {
                    tracing::info!(task_id = %assignment.task.task_id, row, ?status, %message, "row done");
                    sink.record(RowOutcome { row, status, message });
                }
                Err(outcome) => return outcome,
            }
        }
        Outcome::Completed { output: None }
    }

    /// Creates one user, retrying what may pass; the row's status and message, or the outcome
    /// of the whole attempt when the rows must stop.
    async fn create_user(
        &self,
        session: &mut String,
        user: &NewUser,
        cancel: &CancellationToken,
    ) -> Result<(RowStatus, String), Outcome> {
        let mut server_errors = 0;
        let mut relogins = 0;
        let mut expired_forms = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(Outcome::Cancelled);
            }
            let error = match self.try_create_user(session, user).await {
                Ok(RowAnswer::Created(message)) => return Ok((RowStatus::Created, message)),
                Ok(RowAnswer::Rejected(message)) => return Ok((RowStatus::Rejected, message)),
                Err(error) => error,
            };
            match error {
                PortalError::ServerError => {
                    server_errors += 1;
                    if server_errors > SUBMIT_RETRIES {
                        return Ok((RowStatus::Failed, "portal error".to_owned()));
                    }
                    tokio::select! {
                        () = cancel.cancelled() => return Err(Outcome::Cancelled),
                        () = tokio::time::sleep(SUBMIT_BACKOFF * server_errors) => {}
                    }
                }
                PortalError::FormExpired => {
                    expired_forms += 1;
                    if expired_forms > 1 {
                        return Ok((RowStatus::Failed, "form expired".to_owned()));
                    }
                }
                PortalError::SessionLost => {
                    relogins += 1;
                    if relogins > RELOGINS_PER_ROW {
                        return Ok((RowStatus::Failed, "portal session lost".to_owned()));
                    }
                    tracing::info!("Vivo360 session lost; logging in again");
                    *session = self.log_in().await.map_err(failure)?;
                }
                PortalError::Unexpected(message) => return Ok((RowStatus::Failed, message)),
                PortalError::Unavailable(_) | PortalError::LoginRefused => {
                    return Err(failure(error));
                }
            }
        }
    }

    /// One try at a row, from a fresh form to its submission.
    async fn try_create_user(
        &self,
        session: &str,
        user: &NewUser,
    ) -> Result<RowAnswer, PortalError> {
        let token = self.open_form(session).await?;
        for (field, value) in &user.fields {
            let check = self.fill(session, &token, field, value).await?;
            if !check.valid {
                let message = check.message.unwrap_or_else(|| "invalid".to_owned());
                return Ok(RowAnswer::Rejected(format!("{field}: {message}")));
            }
        }
        self.submit(session, &token).await
    }

    /// Logs in; the session token.
    async fn log_in(&self) -> Result<String, PortalError> {
        let response = self
            .client
            .post(format!("{}/login", self.base_url))
            .form(&[("username", self.username.as_str()), ("password", self.password.as_str())])
            .send()
            .await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(PortalError::LoginRefused);
        }
        if let Some(error) = common_error(status, &response) {
            return Err(error);
        }
        response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(session_from_set_cookie)
            .ok_or_else(|| {
                PortalError::Unexpected(format!("login answered {status} without a session"))
            })
    }

    /// Opens a new user form; its token.
    async fn open_form(&self, session: &str) -> Result<String, PortalError> {
        let response = self
            .client
            .get(format!("{}/users/new", self.base_url))
            .header(COOKIE, cookie(session))
            .send()
            .await?;
        let status = response.status();
        if let Some(error) = common_error(status, &response) {
            return Err(error);
        }
        let page = response.text().await?;
        if status != StatusCode::OK {
            return Err(unexpected(status, &page));
        }
        html::form_token(&page)
            .ok_or_else(|| PortalError::Unexpected("the user form has no form_token".to_owned()))
    }

    /// Fills one field of the form `token`.
    async fn fill(
        &self,
        session: &str,
        token: &str,
        field: &str,
        value: &str,
    ) -> Result<FieldCheck, PortalError> {
        let response = self
            .client
            .post(format!("{}/users/fields/{field}", self.base_url))
            .header(COOKIE, cookie(session))
            .form(&[("form_token", token), ("value", value)])
            .send()
            .await?;
        let status = response.status();
        if let Some(error) = common_error(status, &response) {
            return Err(error);
        }
        let body = response.text().await?;
        if status != StatusCode::OK {
            return Err(unexpected(status, &body));
        }
        serde_json::from_str(&body)
            .map_err(|error| PortalError::Unexpected(format!("field {field}: {error}")))
    }

    /// Submits the form `token`.
    async fn submit(&self, session: &str, token: &str) -> Result<RowAnswer, PortalError> {
        let response = self
            .client
            .post(format!("{}/users", self.base_url))
            .header(COOKIE, cookie(session))
            .form(&[("form_token", token)])
            .send()
            .await?;
        let status = response.status();
        if let Some(error) = common_error(status, &response) {
            return Err(error);
        }
        let page = response.text().await?;
        let text = html::result_text(&page);
        match status {
            StatusCode::CREATED => {
                Ok(RowAnswer::Created(text.unwrap_or_else(|| "user created".to_owned())))
            }
            StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
                Ok(RowAnswer::Rejected(text.unwrap_or_else(|| format!("refused ({status})"))))
            }
            _ => Err(unexpected(status, &page)),
        }
    }
}

/// The outcome of an attempt stopped by `error`.
fn failure(error: PortalError) -> Outcome {
    match error {
        PortalError::Unavailable(reason) => {
            Outcome::retryable(format!("Vivo360 portal unavailable: {reason}"))
        }
        PortalError::LoginRefused => Outcome::fatal(
            "the Vivo360 portal refused the bot's credentials (--vivo360-username, --vivo360-password)",
        ),
        other => Outcome::retryable(format!("Vivo360 login failed: {other}")),
    }
}

/// What every portal route may answer: down, no session, expired form, internal error.
fn common_error(status: StatusCode, response: &reqwest::Response) -> Option<PortalError> {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => {
            Some(PortalError::Unavailable("503 Service Unavailable".to_owned()))
        }
        StatusCode::UNAUTHORIZED => Some(PortalError::SessionLost),
        StatusCode::FORBIDDEN => Some(PortalError::FormExpired),
        StatusCode::INTERNAL_SERVER_ERROR => Some(PortalError::ServerError),
        status if status.is_redirection() => {
            let to_login = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .is_some_and(|l| l.trim_end_matches('/').ends_with("/login"));
            // After a login the portal redirects to the form: not an error there.
            to_login.then_some(PortalError::SessionLost)
        }
        _ => None,
    }
}

fn unexpected(status: StatusCode, body: &str) -> PortalError {
    let said = html::result_text(body).unwrap_or_default();
    PortalError::Unexpected(format!("{status} {said}").trim().to_owned())
}

fn cookie(session: &str) -> String {
    format!("{SESSION_COOKIE}={session}")
}

/// The session token in a `Set-Cookie` header value, if it sets the portal's session cookie.
fn session_from_set_cookie(header: &str) -> Option<String> {
    let pair = header.split(';').next()?.trim();
    let value = pair.strip_prefix(SESSION_COOKIE)?.strip_prefix('=')?;
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_cookie() {
        assert_eq!(
            session_from_set_cookie("vivo360_session=abc123; HttpOnly; Path=/").as_deref(),
            Some("abc123")
        );
        assert_eq!(session_from_set_cookie("other=1; Path=/"), None);
        assert_eq!(session_from_set_cookie("vivo360_sessionx=1"), None);
        assert_eq!(session_from_set_cookie("vivo360_session=; Path=/"), None);
    }

    #[test]
    fn a_row_fills_the_fields_in_the_form_order() {
        let csv = "login,profile,email,name\nana,agent,ana@example.com,Ana\n";
        let attachment =
            Attachment::parse(csv.to_owned(), &System::VIVO360, &VIVO360_COLUMNS).expect("valid");
        let user = NewUser::from_row(&attachment, 0);
        assert_eq!(
            user.fields,
            [
                ("name", "Ana".to_owned()),
                ("email", "ana@example.com".to_owned()),
                ("login", "ana".to_owned()),
                ("profile", "agent".to_owned())
            ]
        );
    }
}
