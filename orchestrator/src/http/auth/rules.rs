//! The access rules: one extractor per kind of route, which the route's handler takes as an
//! argument, so a route's rule is read where the route is.
//!
//! | rule | who may call |
//! | --- | --- |
//! | [`Anyone`] | anyone, token or not: the probes, the dashboard |
//! | [`AnyCaller`] | any token (any loopback client without tokens), to read |
//! | [`Operator`] | the admin token only |
//! | [`RegisterSelf`] | an operator, or a bot registering itself (`POST /bots`) |
//! | [`EditOwnBot`], [`DeleteOwnBot`] | an operator, or the bot whose record it is |
//! | [`ReportOnTask`] | an operator, or a bot reporting on a task it was given |
//!
//! A handler reaches the [`AppState`] only through its rule: the router's state is
//! [`Guarded`], which hands the state to nothing else, so a handler that names no rule cannot
//! touch the database and does not compile if it tries. Every rule fails closed: a caller is
//! identified if nobody did yet, and a write through [`AnyCaller`] needs the admin token.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use broker_config::BotName;
use uuid::Uuid;

use super::bot_writes::{BotWrite, check_bot_write};
use super::identity::{Principal, Refusal, identified};
use crate::http::AppState;

/// The router's state: the [`AppState`], sealed. Only the rules of this module open it, so the
/// only way for a handler to the database, the pipeline or the settings is through a rule.
#[derive(Clone)]
pub struct Guarded(AppState);

impl Guarded {
    /// Seals `state` for the router.
    pub fn new(state: AppState) -> Guarded {
        Guarded(state)
    }
}

/// Anyone may call this route, with a token or without: the probes and the dashboard's page.
pub struct Anyone(pub AppState);

/// Any caller the API knows may read through this route: the admin, the read and every bot's
/// token (with no token configured, any client on this machine). Anything but a read (`GET`,
/// `HEAD`) through it needs the admin token, as [`Operator`] does: a route given this rule by
/// mistake stays closed to writes.
pub struct AnyCaller(pub AppState);

/// Only the admin token (with no token configured, any client on this machine) may call this
/// route: a write only an operator makes.
pub struct Operator(pub AppState);

/// `POST /bots`: an operator, or a bot registering itself (the body's `name` is its own); the
/// body is then read as `B`.
pub struct RegisterSelf<B>(pub AppState, pub B);

/// `PUT`/`PATCH /bots/{id}`: an operator, or the bot whose record it is, sending its own events
/// or changing its record without renaming, pausing or resuming it; the body is then read as
/// `B`.
pub struct EditOwnBot<B>(pub AppState, pub B);

/// `DELETE /bots/{id}`: an operator, or the bot whose record it is.
pub struct DeleteOwnBot(pub AppState);

/// `PUT`/`PATCH /tasks/{id}`: an operator, or a bot reporting on a task it was given (a status
/// RUNNING, COMPLETE or FAILED, or an event of its own about this task); the body is then read
/// as `B`.
pub struct ReportOnTask<B>(pub AppState, pub B);

/// Whether a request only reads.
fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// What only the admin token may do: the read token may only read, a bot's token only what the
/// bot rules allow.
fn operator_only(principal: &Principal) -> Result<(), Refusal> {
    match principal {
        Principal::Admin => Ok(()),
        Principal::Reader => Err(Refusal::ReadOnly),
        Principal::Bot(me) => Err(not_this_bot(
            me,
            "may only read, register that bot, change its record and report on the tasks it was given",
        )),
    }
}

/// The rule of [`AnyCaller`]: any principal reads; anything else needs an operator.
fn reads_or_operator(principal: &Principal, method: &Method) -> Result<(), Refusal> {
    if is_read(method) { Ok(()) } else { operator_only(principal) }
}

/// A bot's token beyond what that bot may do, saying what it may.
fn not_this_bot(me: &BotName, what: &str) -> Refusal {
    Refusal::NotThisBot(format!("the token of bot {me} {what}"))
}

/// Answers a refusal of a known caller, logged (an unknown caller's is logged where it is
/// identified).
pub(super) fn refuse(refusal: Refusal) -> Response {
    tracing::info!(reason = %refusal, "request refused");
    refusal.into_response()
}

/// The caller, identified (or refused) once per request.
fn principal(parts: &mut Parts, state: &Guarded) -> Result<Principal, Refusal> {
    identified(parts, &state.0.access)
}

impl FromRequestParts<Guarded> for Anyone {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, state: &Guarded) -> Result<Self, Self::Rejection> {
        Ok(Anyone(state.0.clone()))
    }
}

impl FromRequestParts<Guarded> for AnyCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Guarded) -> Result<Self, Response> {
        let principal = principal(parts, state).map_err(IntoResponse::into_response)?;
        reads_or_operator(&principal, &parts.method).map_err(refuse)?;
        Ok(AnyCaller(state.0.clone()))
    }
}

impl FromRequestParts<Guarded> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Guarded) -> Result<Self, Response> {
        let principal = principal(parts, state).map_err(IntoResponse::into_response)?;
        operator_only(&principal).map_err(refuse)?;
        Ok(Operator(state.0.clone()))
    }
}

/// Which of a bot's writes a rule stands for; the id comes from the route's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Register,
    ChangeBot,
    DeleteBot,
    ReportTask,
}

impl Shape {
    /// The write a bot attempts on a route of this shape whose path holds `id` (not a UUID:
    /// [`BotWrite::Never`]).
    fn write(self, id: Option<Uuid>) -> BotWrite {
        match (self, id) {
            (Shape::Register, _) => BotWrite::Register,
            (Shape::ChangeBot, Some(id)) => BotWrite::ChangeBot(id),
            (Shape::DeleteBot, Some(id)) => BotWrite::DeleteBot(id),
            (Shape::ReportTask, Some(id)) => BotWrite::ReportTask(id),
            (_, None) => BotWrite::Never,
        }
    }
}

/// The id of the route's path (`/bots/{id}`, `/tasks/{id}`), as the handler reads it.
async fn path_id(parts: &mut Parts) -> Option<Uuid> {
    let Path(raw) = Path::<String>::from_request_parts(parts, &()).await.ok()?;
    raw.parse().ok()
}

/// The rules that let a bot write: an operator passes, the read token is refused, and a bot's
/// write of this shape is checked ([`check_bot_write`]). Gives back the request, its body put
/// back when a bot's was read.
async fn operator_or_bot(
    request: Request,
    state: &Guarded,
    shape: Shape,
) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    match principal(&mut parts, state).map_err(IntoResponse::into_response)? {
        Principal::Admin => Ok(Request::from_parts(parts, body)),
        Principal::Reader => Err(refuse(Refusal::ReadOnly)),
        Principal::Bot(me) => {
            let write = shape.write(path_id(&mut parts).await);
            check_bot_write(&state.0, &me, write, parts, body).await
        }
    }
}

/// Reads the body as `B` once the rule let the request through.
async fn body<B: FromRequest<Guarded>>(request: Request, state: &Guarded) -> Result<B, Response> {
    B::from_request(request, state).await.map_err(IntoResponse::into_response)
}

impl<B: FromRequest<Guarded>> FromRequest<Guarded> for RegisterSelf<B> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Guarded) -> Result<Self, Response> {
        let request = operator_or_bot(request, state, Shape::Register).await?;
        Ok(RegisterSelf(state.0.clone(), body(request, state).await?))
    }
}

impl<B: FromRequest<Guarded>> FromRequest<Guarded> for EditOwnBot<B> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Guarded) -> Result<Self, Response> {
        let request = operator_or_bot(request, state, Shape::ChangeBot).await?;
        Ok(EditOwnBot(state.0.clone(), body(request, state).await?))
    }
}

impl FromRequest<Guarded> for DeleteOwnBot {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Guarded) -> Result<Self, Response> {
        operator_or_bot(request, state, Shape::DeleteBot).await?;
        Ok(DeleteOwnBot(state.0.clone()))
    }
}

impl<B: FromRequest<Guarded>> FromRequest<Guarded> for ReportOnTask<B> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Guarded) -> Result<Self, Response> {
        let request = operator_or_bot(request, state, Shape::ReportTask).await?;
        Ok(ReportOnTask(state.0.clone(), body(request, state).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> Principal {
        Principal::Bot(BotName::parse("bot-1").expect("a bot name"))
    }

    #[test]
    fn only_the_admin_token_passes_the_operator_rule() {
        assert_eq!(operator_only(&Principal::Admin), Ok(()));
        assert_eq!(operator_only(&Principal::Reader), Err(Refusal::ReadOnly));
        let refused = operator_only(&bot()).expect_err("a bot is no operator");
        assert_eq!(refused.status(), axum::http::StatusCode::FORBIDDEN);
        assert!(refused.to_string().starts_with("the token of bot bot-1 may only read"));
    }

    #[test]
    fn any_caller_reads_and_only_an_operator_writes_through_the_read_rule() {
        for principal in [Principal::Admin, Principal::Reader, bot()] {
            for method in [Method::GET, Method::HEAD] {
                assert_eq!(reads_or_operator(&principal, &method), Ok(()), "{principal} {method}");
            }
            for method in
                [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS]
            {
                assert_eq!(
                    reads_or_operator(&principal, &method),
                    operator_only(&principal),
                    "{principal} {method}"
                );
            }
        }
        assert_eq!(reads_or_operator(&Principal::Admin, &Method::DELETE), Ok(()));
    }

    #[test]
    fn a_bot_write_needs_a_uuid_in_the_path_except_a_registration() {
        let id = Uuid::new_v4();
        assert_eq!(Shape::Register.write(None), BotWrite::Register);
        assert_eq!(Shape::ChangeBot.write(Some(id)), BotWrite::ChangeBot(id));
        assert_eq!(Shape::DeleteBot.write(Some(id)), BotWrite::DeleteBot(id));
        assert_eq!(Shape::ReportTask.write(Some(id)), BotWrite::ReportTask(id));
        for shape in [Shape::ChangeBot, Shape::DeleteBot, Shape::ReportTask] {
            assert_eq!(shape.write(None), BotWrite::Never, "{shape:?}");
        }
    }
}
