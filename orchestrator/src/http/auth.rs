//! API authentication: bearer tokens, and what each may do.
//!
//! Three kinds of token are given at start ([`AuthConfig`]):
//! - the **admin** token may do everything;
//! - the **read** token may only read (`GET`, `HEAD`): for the dashboard's viewers;
//! - a **bot** token is bound to one bot's name. A bot in HTTP push mode uses it to register
//!   itself (`POST /api/v1/bots` with its own name), to change its own record and report on it
//!   (`PUT`/`PATCH`/`DELETE /api/v1/bots/{its id}`), to report on the tasks it was given
//!   (`PUT /api/v1/tasks/{id}` with an event naming it), and to read. Anything else is a 403.
//!
//! With no token configured at all, the API serves only loopback clients (anyone on this machine
//! may do everything), and [`Access::check_listen`] refuses to listen anywhere but on a loopback
//! address, so the API is never open to the network by accident.
//!
//! The probes (`/healthz`, `/readyz`) and the dashboard's static files are public; the data the
//! dashboard shows comes from the API, which is not.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time; a [`Secret`] prints as
//! `***`, so the configuration can be logged, and no refusal ever repeats a token.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use broker_config::BotName;
use sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::AppState;
use super::extract::JsonBytes;
use crate::entity::{task, task_event};
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::tasks::EventKind;

/// The shortest token accepted: shorter ones are refused at start.
pub const MIN_TOKEN_LEN: usize = 16;

/// The API's tokens, from flags or the environment. A token is at least 16 visible ASCII
/// characters (`openssl rand -hex 32` makes a good one). The `*_FILE` forms read it from a file
/// instead, which keeps it out of `ps` and of the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthConfig {
    /// Bearer token that may do everything. With no token at all, the API serves only clients on
    /// this machine (loopback) and refuses to listen on any other address.
    #[arg(long, env = "BOTLINE_ADMIN_TOKEN", hide_env_values = true, value_parser = secret, conflicts_with = "admin_token_file")]
    pub admin_token: Option<Secret>,

    /// A file holding the admin token.
    #[arg(long, env = "BOTLINE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Bearer token that may only read (GET): for the dashboard's viewers.
    #[arg(long, env = "BOTLINE_READ_TOKEN", hide_env_values = true, value_parser = secret, conflicts_with = "read_token_file")]
    pub read_token: Option<Secret>,

    /// A file holding the read token.
    #[arg(long, env = "BOTLINE_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,

    /// A bot's token, as NAME=TOKEN (repeat the flag; comma separated in the variable). That bot
    /// (HTTP push mode) may register itself, report on itself and on the tasks it was given, and
    /// read.
    #[arg(long = "bot-token", value_name = "NAME=TOKEN", env = "BOTLINE_BOT_TOKENS", hide_env_values = true, value_delimiter = ',', value_parser = secret)]
    pub bot_tokens: Vec<Secret>,

    /// A file of bot tokens: one NAME=TOKEN per line; blank lines and lines starting with # are
    /// skipped.
    #[arg(long, env = "BOTLINE_BOT_TOKENS_FILE")]
    pub bot_tokens_file: Option<PathBuf>,
}

/// A token (or text holding one): compared, never shown. `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// clap's parser for secrets: never fails, so clap never echoes one in an error; the checks
/// happen in [`Access::from_config`], whose errors name the token, not its value.
fn secret(text: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(text))
}

/// Why the tokens cannot be used, or why the API may not be served without one.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A token file cannot be read.
    #[error("cannot read the {what} from {path}: {source}")]
    Read {
        /// Which token.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A token is shorter than [`MIN_TOKEN_LEN`].
    #[error(
        "{what} is too short: a token needs at least {MIN_TOKEN_LEN} characters (`openssl rand -hex 32` makes a good one)"
    )]
    TooShort {
        /// Which token.
        what: String,
    },
    /// A token has characters an `Authorization` header cannot carry.
    #[error("{what} may only hold visible ASCII characters (no spaces)")]
    BadCharacters {
        /// Which token.
        what: String,
    },
    /// A bot token is not `NAME=TOKEN` with a valid bot name.
    #[error("{place} is not NAME=TOKEN with a bot name: {reason}")]
    BadBotToken {
        /// Where: which entry of the flag or variable, which line of the file.
        place: String,
        /// What is wrong.
        reason: String,
    },
    /// Two tokens for one bot.
    #[error("the bot {0} is given two tokens")]
    DuplicateBot(String),
    /// One token for two roles or bots: who presents it would be ambiguous.
    #[error("{first} and {second} are the same token; each role and each bot needs its own")]
    Reused {
        /// The first holder.
        first: String,
        /// The second holder.
        second: String,
    },
    /// No token, and an address other machines can reach.
    #[error(
        "refusing to serve the API on {listen} without a token, where other machines could reach it: set BOTLINE_ADMIN_TOKEN (or --admin-token-file), or listen on a loopback address such as 127.0.0.1:8080"
    )]
    Unprotected {
        /// The address.
        listen: SocketAddr,
    },
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token, or a loopback client when no token is configured: everything.
    Admin,
    /// The read token: reads only.
    Reader,
    /// A bot's token: its own record and tasks, and reads.
    Bot(BotName),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Admin => f.write_str("the admin token"),
            Principal::Reader => f.write_str("the read token"),
            Principal::Bot(name) => write!(f, "the token of bot {name}"),
        }
    }
}

/// Who made a request, for the handlers that act on it (a bot's report is checked against the
/// task's bot). Set by [`guard`]; on public routes and in tests without it, nobody in particular.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    principal: Option<Principal>,
    peer: Option<IpAddr>,
}

impl Caller {
    /// Who a report through the CRUD API comes from.
    pub fn reporter(&self) -> crate::tasks::Reporter {
        match &self.principal {
            Some(Principal::Bot(name)) => crate::tasks::Reporter::Bot(name.clone()),
            _ => crate::tasks::Reporter::Unnamed { peer: self.peer.filter(|ip| !is_loopback(*ip)) },
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Caller, Self::Rejection> {
        Ok(Caller {
            principal: parts.extensions.get::<Principal>().cloned(),
            peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()),
        })
    }
}

/// A token's SHA-256 digest: what is kept and compared.
type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests in time independent of where they differ.
fn same_digest(a: &TokenDigest, b: &TokenDigest) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The tokens in force (as digests) and whom each stands for.
#[derive(Clone, Default)]
pub struct Access {
    grants: Vec<(TokenDigest, Principal)>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access").field("mode", &self.summary()).finish()
    }
}

impl Access {
    /// Checks and loads the configured tokens (reading the token files).
    pub fn from_config(config: &AuthConfig) -> Result<Access, AccessError> {
        let mut grants: Vec<(TokenDigest, Principal)> = Vec::new();
        let roles = [
            ("admin token", &config.admin_token, &config.admin_token_file, Principal::Admin),
            ("read token", &config.read_token, &config.read_token_file, Principal::Reader),
        ];
        for (what, token, file, principal) in roles {
            let token = match (token, file) {
                (Some(token), _) => Some(token.clone()),
                (None, Some(path)) => Some(Secret::new(read_file(what, path)?.trim().to_owned())),
                (None, None) => None,
            };
            if let Some(token) = token {
                let name = format!("the {what}");
                grants.push((check_token(&name, &token)?, principal));
            }
        }
        let mut pairs = Vec::new();
        for (n, entry) in config.bot_tokens.iter().enumerate() {
            let place = format!("entry {} of --bot-token/BOTLINE_BOT_TOKENS", n + 1);
            pairs.push((place, entry.clone()));
        }
        if let Some(path) = &config.bot_tokens_file {
            let text = read_file("bot tokens", path)?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    let place = format!("line {} of {}", n + 1, path.display());
                    pairs.push((place, Secret::new(line)));
                }
            }
        }
        for (place, entry) in pairs {
            let (name, token) = bot_token(&place, &entry)?;
            if grants.iter().any(|(_, p)| *p == Principal::Bot(name.clone())) {
                return Err(AccessError::DuplicateBot(name.to_string()));
            }
            let principal = Principal::Bot(name);
            grants.push((check_token(&principal.to_string(), &token)?, principal));
        }
        for (i, (first, holder)) in grants.iter().enumerate() {
            if let Some((_, other)) = grants[i + 1..].iter().find(|(d, _)| same_digest(d, first)) {
                return Err(AccessError::Reused {
                    first: holder.to_string(),
                    second: other.to_string(),
                });
            }
        }
        Ok(Access { grants })
    }

    /// Each bot's push key (the digest of its token): the orchestrator signs what it POSTs to
    /// that bot with it (`broker_config::push`).
    pub fn push_keys(&self) -> std::collections::HashMap<String, broker_config::push::PushKey> {
        self.grants
            .iter()
            .filter_map(|(digest, principal)| match principal {
                Principal::Bot(name) => {
                    Some((name.to_string(), broker_config::push::PushKey::from_digest(*digest)))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether no token is configured (loopback clients only).
    pub fn is_open(&self) -> bool {
        self.grants.is_empty()
    }

    /// How the API is protected, for the start-up log: which tokens, never their values.
    pub fn summary(&self) -> String {
        if self.is_open() {
            return "no token: loopback clients only".to_owned();
        }
        let has = |p: &Principal| self.grants.iter().any(|(_, g)| g == p);
        let bots = self.grants.iter().filter(|(_, p)| matches!(p, Principal::Bot(_))).count();
        let mut parts = Vec::new();
        if has(&Principal::Admin) {
            parts.push("admin".to_owned());
        }
        if has(&Principal::Reader) {
            parts.push("read".to_owned());
        }
        if bots > 0 {
            parts.push(format!("{bots} bot(s)"));
        }
        format!("bearer tokens: {}", parts.join(", "))
    }

    /// Refuses to serve on `listen` without a token unless it is a loopback address.
    pub fn check_listen(&self, listen: SocketAddr) -> Result<(), AccessError> {
        if self.is_open() && !is_loopback(listen.ip()) {
            return Err(AccessError::Unprotected { listen });
        }
        Ok(())
    }

    /// Who sent a request with this `Authorization` header from `peer` (unknown when the server
    /// does not say; it then listens on loopback, see [`Access::check_listen`]).
    pub fn identify(
        &self,
        authorization: Option<&HeaderValue>,
        peer: Option<IpAddr>,
    ) -> Result<Principal, Refusal> {
        if self.is_open() {
            return match peer {
                Some(ip) if !is_loopback(ip) => Err(Refusal::LoopbackOnly),
                _ => Ok(Principal::Admin),
            };
        }
        let header = authorization.ok_or(Refusal::NoToken)?;
        let token = bearer_token(header).ok_or(Refusal::MalformedHeader)?;
        let presented = digest(token);
        // Every grant is compared, so the time taken does not say which one matched.
        let mut found = None;
        for (grant, principal) in &self.grants {
            if same_digest(grant, &presented) && found.is_none() {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(Refusal::UnknownToken)
    }
}

fn read_file(what: &'static str, path: &std::path::Path) -> Result<String, AccessError> {
    std::fs::read_to_string(path).map_err(|source| AccessError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Checks a token and returns its digest; `what` names it in errors.
fn check_token(what: &str, token: &Secret) -> Result<TokenDigest, AccessError> {
    let text = token.expose();
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AccessError::BadCharacters { what: what.to_owned() });
    }
    if text.len() < MIN_TOKEN_LEN {
        return Err(AccessError::TooShort { what: what.to_owned() });
    }
    Ok(digest(text))
}

/// Splits `NAME=TOKEN`; errors say where, and never show the token.
fn bot_token(place: &str, entry: &Secret) -> Result<(BotName, Secret), AccessError> {
    let bad = |reason: String| AccessError::BadBotToken { place: place.to_owned(), reason };
    let Some((name, token)) = entry.expose().trim().split_once('=') else {
        return Err(bad("there is no '='".to_owned()));
    };
    let name = BotName::parse(name.trim()).map_err(|e| bad(e.to_string()))?;
    Ok((name, Secret::new(token.trim())))
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer_token(header: &HeaderValue) -> Option<&str> {
    let (scheme, token) = header.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `ip` is a loopback address (IPv4-mapped IPv6 ones included).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header: 401.
    NoToken,
    /// An `Authorization` header that is not `Bearer <token>`: 401.
    MalformedHeader,
    /// A token nobody configured: 401.
    UnknownToken,
    /// No token is configured and the client is not on this machine: 403.
    LoopbackOnly,
    /// The read token on a write: 403.
    ReadOnly,
    /// A bot's token beyond what that bot may do: 403, saying what it may do.
    NotThisBot(String),
}

impl Refusal {
    /// 401 when a (valid) token would help, 403 when it would not.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoToken | Refusal::MalformedHeader | Refusal::UnknownToken => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::LoopbackOnly | Refusal::ReadOnly | Refusal::NotThisBot(_) => {
                StatusCode::FORBIDDEN
            }
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750), where one applies.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            Refusal::NoToken => Some(r#"Bearer realm="botline""#),
            Refusal::MalformedHeader | Refusal::UnknownToken => {
                Some(r#"Bearer realm="botline", error="invalid_token""#)
            }
            Refusal::ReadOnly | Refusal::NotThisBot(_) => {
                Some(r#"Bearer realm="botline", error="insufficient_scope""#)
            }
            Refusal::LoopbackOnly => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoToken => {
                f.write_str("this API needs a token: send the header Authorization: Bearer <token>")
            }
            Refusal::MalformedHeader => {
                f.write_str("the Authorization header must be Bearer <token>")
            }
            Refusal::UnknownToken => f.write_str("the token is not valid"),
            Refusal::LoopbackOnly => f.write_str(
                "this orchestrator has no API token configured, so it serves only clients on its own machine",
            ),
            Refusal::ReadOnly => f.write_str("the read token may only read (GET)"),
            Refusal::NotThisBot(reason) => f.write_str(reason),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let code =
            if self.status() == StatusCode::UNAUTHORIZED { "unauthorized" } else { "forbidden" };
        let body = ErrorBody {
            error: ErrorDetail { code: code.to_owned(), message: self.to_string(), field: None },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// Whether anyone may make this request: the probes and the dashboard's static files.
pub fn is_public(method: &Method, path: &str) -> bool {
    const PUBLIC: [&str; 8] = [
        "/healthz",
        "/api/v1/health",
        "/readyz",
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/favicon.svg",
        "/reports/attendance",
    ];
    is_read(method) && PUBLIC.contains(&path)
}

fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// The writes a bot's token may attempt, from the method and path alone; each is then checked
/// against the database and the body (`check_bot_write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotWrite {
    /// `POST /api/v1/bots`: registering itself.
    Register,
    /// `PUT`/`PATCH /api/v1/bots/{id}`: its own record (a resource or a bot event).
    ChangeBot(Uuid),
    /// `DELETE /api/v1/bots/{id}`: its own record.
    DeleteBot(Uuid),
    /// `PUT`/`PATCH /api/v1/tasks/{id}`: a report on a task it was given (an event, or a status
    /// RUNNING, COMPLETE or FAILED).
    ReportTask(Uuid),
    /// Anything else.
    Never,
}

impl BotWrite {
    /// Classifies a write. Ids are taken as they are in the path: one that is not a plain UUID
    /// (percent-encoded, say) is `Never`, so the check cannot be bypassed by spelling.
    pub fn of(method: &Method, path: &str) -> BotWrite {
        let id = |rest: &str| rest.parse::<Uuid>().ok();
        if path == "/api/v1/bots" && *method == Method::POST {
            return BotWrite::Register;
        }
        if let Some(rest) = path.strip_prefix("/api/v1/bots/") {
            return match (id(rest), method) {
                (Some(id), &Method::PUT | &Method::PATCH) => BotWrite::ChangeBot(id),
                (Some(id), &Method::DELETE) => BotWrite::DeleteBot(id),
                _ => BotWrite::Never,
            };
        }
        if let Some(rest) = path.strip_prefix("/api/v1/tasks/")
            && (*method == Method::PUT || *method == Method::PATCH)
            && let Some(id) = id(rest)
        {
            return BotWrite::ReportTask(id);
        }
        BotWrite::Never
    }
}

/// Refuses requests without the right token; lets the others through. A bot's write is checked
/// against the database (whose bot, whose task) and its body (which name, which bot's event).
pub(super) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    if is_public(&method, request.uri().path()) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let principal = match state.access.identify(request.headers().get(AUTHORIZATION), peer) {
        Ok(principal) => principal,
        Err(refusal) => {
            tracing::info!(peer = ?peer, reason = %refusal, "request refused");
            return refusal.into_response();
        }
    };
    let mut request = request;
    request.extensions_mut().insert(principal.clone());
    let request = match principal {
        Principal::Admin => request,
        _ if is_read(&method) => request,
        Principal::Reader => return refuse(Refusal::ReadOnly),
        Principal::Bot(name) => {
            let write = BotWrite::of(&method, request.uri().path());
            match check_bot_write(&state, &name, write, request).await {
                Ok(request) => request,
                Err(response) => return response,
            }
        }
    };
    next.run(request).await
}

fn refuse(refusal: Refusal) -> Response {
    tracing::info!(reason = %refusal, "request refused");
    refusal.into_response()
}

/// Checks a bot's write and hands back the request (its body read and put back).
async fn check_bot_write(
    state: &AppState,
    me: &BotName,
    write: BotWrite,
    request: Request,
) -> Result<Request, Response> {
    let not_this_bot =
        |what: &str| refuse(Refusal::NotThisBot(format!("the token of bot {me} {what}")));
    if write == BotWrite::Never {
        return Err(not_this_bot(
            "may only read, register that bot, change its record and report on the tasks it was given",
        ));
    }
    let (parts, body) = request.into_parts();
    let limit = super::body_limit(state.max_attachment_bytes);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::TooLarge { field: None, message: "request body is over the size limit".into() }
            .into_response()
    })?;
    let db = &state.db;
    let body = JsonBytes(bytes.clone());
    match write {
        BotWrite::Register => {
            if named(&bytes) != Ok(Some(me.as_str().to_owned())) {
                return Err(not_this_bot("may only register that bot: the body's name must be it"));
            }
        }
        BotWrite::ChangeBot(id) | BotWrite::DeleteBot(id) => {
            if !is_bot(db, id, me).await.map_err(IntoResponse::into_response)? {
                return Err(not_this_bot("may only change that bot's own record"));
            }
            let own_body = match write {
                BotWrite::DeleteBot(_) => true,
                _ if body.is_event() => {
                    body.event().map_err(IntoResponse::into_response)?.bot() == me
                }
                // Renaming would hand the record to another bot's token.
                _ => match named(&bytes) {
                    Ok(None) => true,
                    Ok(Some(name)) => name == me.as_str(),
                    Err(()) => false,
                },
            };
            if write == BotWrite::ChangeBot(id) && !body.is_event() && pauses(&bytes) {
                return Err(not_this_bot(
                    "may not pause or resume that bot: only an operator takes a bot out of rotation",
                ));
            }
            if !own_body {
                return Err(not_this_bot("may only send that bot's own events and keep its name"));
            }
        }
        BotWrite::ReportTask(id) => {
            if body.is_event() {
                let event = body.event().map_err(IntoResponse::into_response)?;
                if event.bot() != me || event.task().map(|t| t.task_id) != Some(id) {
                    return Err(not_this_bot(
                        "may only report that bot's own events about this task",
                    ));
                }
            } else if !is_status_report(&bytes) {
                return Err(not_this_bot(
                    "may only report on tasks (status RUNNING, COMPLETE or FAILED, or an event), not edit them",
                ));
            }
            if !was_given(db, id, me).await.map_err(IntoResponse::into_response)? {
                return Err(not_this_bot("may only report on the tasks that bot was given"));
            }
        }
        BotWrite::Never => {}
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Whether a JSON body sets `paused`.
fn pauses(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        paused: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|probe| probe.paused.is_some())
}

/// Whether a body is a plain status report (RUNNING, COMPLETE, FAILED): the handler then checks
/// that the task is this bot's and that nothing but the report's fields change.
fn is_status_report(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        status: Option<broker_config::TaskStatus>,
    }
    serde_json::from_slice::<Probe>(bytes)
        .is_ok_and(|probe| probe.status.is_some_and(broker_config::TaskStatus::is_report))
}

/// The `name` of a JSON object body: `Ok(None)` without one, `Err` when the body is not such an
/// object.
fn named(bytes: &[u8]) -> Result<Option<String>, ()> {
    #[derive(serde::Deserialize)]
    struct Probe {
        name: Option<String>,
    }
    serde_json::from_slice::<Probe>(bytes).map(|probe| probe.name).map_err(|_| ())
}

/// Whether the bot `id` exists and is named `me`.
async fn is_bot(db: &DatabaseConnection, id: Uuid, me: &BotName) -> Result<bool, ApiError> {
    let record = crate::store::bots::find_by_id(db, id).await?;
    Ok(record.is_some_and(|bot| bot.name == me.as_str()))
}

/// Whether the task `id` is held by the bot `me`, or was offered to it before. A bot that once
/// held a task may still report on it: its late events are fenced by attempt, recorded as stale
/// and change nothing, exactly as they would over the broker.
async fn was_given(db: &DatabaseConnection, id: Uuid, me: &BotName) -> Result<bool, ApiError> {
    let Some(bot) = crate::store::bots::find_by_name(db, me.as_str()).await? else {
        return Ok(false);
    };
    let Some(task) = task::Entity::find_by_id(id).one(db).await? else {
        return Ok(false);
    };
    if task.bot_id == Some(bot.id) {
        return Ok(true);
    }
    let offered = task_event::Entity::find()
        .filter(task_event::Column::TaskId.eq(id))
        .filter(task_event::Column::BotId.eq(bot.id))
        .filter(task_event::Column::Kind.eq(EventKind::Assigned.as_str()))
        .one(db)
        .await?;
    Ok(offered.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    const ADMIN: &str = "admin-token-0123456789";
    const READ: &str = "read-token-0123456789";
    const BOT: &str = "bot-token-0123456789";

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        auth: AuthConfig,
    }

    fn parse(args: &[&str]) -> AuthConfig {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .expect("the flags parse")
            .auth
    }

    fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value")
    }

    /// An admin, a read-only and one bot's token.
    fn three_tokens() -> AuthConfig {
        parse(&[
            "--admin-token",
            ADMIN,
            "--read-token",
            READ,
            "--bot-token",
            &format!("bot-1={BOT}"),
        ])
    }

    fn access() -> Access {
        Access::from_config(&three_tokens()).expect("valid tokens")
    }

    fn error(config: &AuthConfig) -> String {
        Access::from_config(config).map(|_| ()).expect_err("refused").to_string()
    }

    #[test]
    fn each_token_stands_for_its_role_and_others_are_refused() {
        let access = access();
        let peer = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(access.identify(Some(&bearer(ADMIN)), peer), Ok(Principal::Admin));
        assert_eq!(access.identify(Some(&bearer(READ)), peer), Ok(Principal::Reader));
        let bot = BotName::parse("bot-1").expect("name");
        assert_eq!(access.identify(Some(&bearer(BOT)), None), Ok(Principal::Bot(bot)));
        let lowercase = HeaderValue::from_str(&format!("bearer  {ADMIN} ")).expect("header");
        assert_eq!(access.identify(Some(&lowercase), peer), Ok(Principal::Admin));
        assert_eq!(access.identify(None, peer), Err(Refusal::NoToken), "loopback needs one too");
        let wrong = format!("{ADMIN}x");
        assert_eq!(access.identify(Some(&bearer(&wrong)), peer), Err(Refusal::UnknownToken));
        let basic = HeaderValue::from_static("Basic YWRtaW46YWRtaW4=");
        assert_eq!(access.identify(Some(&basic), peer), Err(Refusal::MalformedHeader));
        let bare = HeaderValue::from_static("Bearer");
        assert_eq!(access.identify(Some(&bare), peer), Err(Refusal::MalformedHeader));
        assert_eq!(Refusal::NoToken.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Refusal::ReadOnly.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn without_tokens_only_loopback_clients_are_served_and_only_loopback_addresses_listened_on() {
        let open = Access::from_config(&AuthConfig::default()).expect("no token is valid");
        assert!(open.is_open());
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(open.identify(None, Some(ip)), Ok(Principal::Admin), "{ip}");
            assert!(open.check_listen(SocketAddr::new(ip, 8080)).is_ok(), "{ip}");
        }
        for ip in ["192.0.2.7", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "0.0.0.0", "::"] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(open.identify(None, Some(ip)), Err(Refusal::LoopbackOnly), "{ip}");
            let refused = open.check_listen(SocketAddr::new(ip, 8080)).expect_err("refused");
            assert!(refused.to_string().contains("BOTLINE_ADMIN_TOKEN"), "{refused}");
        }
        // A server that does not say who the peer is listens on loopback (check_listen).
        assert_eq!(open.identify(None, None), Ok(Principal::Admin));
        // With a token, any address may be listened on.
        assert!(access().check_listen("0.0.0.0:8080".parse().expect("address")).is_ok());
        assert_eq!(
            access().identify(None, Some("192.0.2.7".parse().expect("address"))),
            Err(Refusal::NoToken)
        );
    }

    #[test]
    fn bad_tokens_are_refused_at_start_without_showing_them() {
        let short = parse(&["--admin-token", "s3cret-short"]);
        let message = error(&short);
        assert!(message.contains("the admin token is too short"), "{message}");
        assert!(!message.contains("s3cret-short"), "{message}");
        let spaced = parse(&["--read-token", "has a space in it, long enough"]);
        assert!(error(&spaced).contains("visible ASCII"), "{}", error(&spaced));
        let no_name = parse(&["--bot-token", "s3cret-without-a-name-0123"]);
        let message = error(&no_name);
        assert!(
            message.contains("entry 1 of --bot-token") && message.contains("no '='"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        let bad_name = parse(&["--bot-token", &format!("Bot One={BOT}")]);
        assert!(error(&bad_name).contains("lowercase"), "{}", error(&bad_name));
        let twice =
            parse(&["--bot-token", &format!("b={BOT}"), "--bot-token", &format!("b={ADMIN}")]);
        assert_eq!(error(&twice), "the bot b is given two tokens");
        let reused = parse(&["--admin-token", ADMIN, "--bot-token", &format!("b={ADMIN}")]);
        assert_eq!(
            error(&reused),
            "the admin token and the token of bot b are the same token; each role and each bot needs its own"
        );
        let short_bot = parse(&["--bot-token", "b=short"]);
        assert!(error(&short_bot).contains("the token of bot b is too short"));
    }

    #[test]
    fn tokens_come_from_files_too() {
        let dir = std::env::temp_dir().join(format!("botline-auth-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let admin = dir.join("admin");
        std::fs::write(&admin, format!("{ADMIN}\n")).expect("written");
        let bots = dir.join("bots");
        std::fs::write(&bots, format!("# bots\n\nbot-1={BOT}\n  bot-2 = {READ}x \n"))
            .expect("written");
        let config = parse(&[
            "--admin-token-file",
            &admin.display().to_string(),
            "--bot-tokens-file",
            &bots.display().to_string(),
        ]);
        let access = Access::from_config(&config).expect("valid files");
        assert_eq!(access.identify(Some(&bearer(ADMIN)), None), Ok(Principal::Admin));
        let bot2 = BotName::parse("bot-2").expect("name");
        let token2 = format!("{READ}x");
        assert_eq!(access.identify(Some(&bearer(&token2)), None), Ok(Principal::Bot(bot2)));
        assert_eq!(access.summary(), "bearer tokens: admin, 2 bot(s)");

        std::fs::write(&bots, "bot-1=short\n").expect("written");
        assert!(error(&config).starts_with("the token of bot bot-1 is too short"));
        std::fs::write(&bots, "\n# no name:\nbot-1\n").expect("written");
        let message = error(&config);
        assert!(message.starts_with(&format!("line 3 of {} is not", bots.display())), "{message}");
        let missing = parse(&["--read-token-file", "/nonexistent/botline-token"]);
        assert!(error(&missing).starts_with("cannot read the read token from /nonexistent"));
        assert!(
            Cli::try_parse_from(["test", "--admin-token", ADMIN, "--admin-token-file", "f"])
                .is_err(),
            "a token and a token file exclude each other"
        );
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }

    #[test]
    fn tokens_never_reach_debug_output_or_logs() {
        let mut config = crate::Config::for_database("sqlite://x.db");
        config.auth = three_tokens();
        let shown = format!("{config:?} {:?} {:#?}", access(), config.auth);
        for token in [ADMIN, READ, BOT] {
            assert!(!shown.contains(token), "{token} shown in {shown}");
        }
        assert!(shown.contains("***"), "{shown}");
        assert!(format!("{:?}", access()).contains("bearer tokens: admin, read, 1 bot(s)"));
        let refusals = [
            Refusal::NoToken,
            Refusal::MalformedHeader,
            Refusal::UnknownToken,
            Refusal::LoopbackOnly,
            Refusal::ReadOnly,
        ];
        for refusal in refusals {
            assert!(!refusal.to_string().contains(ADMIN));
        }
    }

    #[test]
    fn only_the_probes_and_the_dashboard_files_are_public() {
        for path in ["/healthz", "/api/v1/health", "/readyz", "/", "/assets/app.js", "/favicon.svg"]
        {
            assert!(is_public(&Method::GET, path), "{path}");
            assert!(!is_public(&Method::POST, path), "POST {path}");
        }
        for path in [
            "/api/v1/tasks",
            "/api/v1/openapi.json",
            "/api/v1/events",
            "/healthz/",
            "/metrics",
            "/x",
        ] {
            assert!(!is_public(&Method::GET, path), "{path}");
        }
    }

    #[test]
    fn bot_writes_are_classified_by_method_and_exact_path() {
        let id = Uuid::new_v4();
        let of = |method: Method, path: String| BotWrite::of(&method, &path);
        assert_eq!(of(Method::POST, "/api/v1/bots".into()), BotWrite::Register);
        assert_eq!(of(Method::PUT, format!("/api/v1/bots/{id}")), BotWrite::ChangeBot(id));
        assert_eq!(of(Method::PATCH, format!("/api/v1/bots/{id}")), BotWrite::ChangeBot(id));
        assert_eq!(of(Method::DELETE, format!("/api/v1/bots/{id}")), BotWrite::DeleteBot(id));
        assert_eq!(of(Method::PUT, format!("/api/v1/tasks/{id}")), BotWrite::ReportTask(id));
        assert_eq!(of(Method::PATCH, format!("/api/v1/tasks/{id}")), BotWrite::ReportTask(id));
        let never = [
            of(Method::DELETE, format!("/api/v1/tasks/{id}")),
            of(Method::POST, "/api/v1/tasks".into()),
            of(Method::POST, format!("/api/v1/tasks/{id}/cancel")),
            of(Method::POST, format!("/api/v1/bots/{id}")),
            of(Method::PUT, format!("/api/v1/bots/{id}/x")),
            of(Method::PUT, format!("/api/v1/tasks/{id}/")),
            // Percent-encoded: the router would decode it, so the check refuses it.
            of(Method::PUT, format!("/api/v1/bots/%3{}", &id.to_string()[1..])),
            of(Method::POST, "/api/v1/actions".into()),
        ];
        assert!(never.iter().all(|w| *w == BotWrite::Never), "{never:?}");
    }

    #[test]
    fn names_are_read_from_json_objects_only() {
        assert_eq!(named(br#"{"name":"a","x":1}"#), Ok(Some("a".to_owned())));
        assert_eq!(named(br#"{"status":"AVAILABLE"}"#), Ok(None));
        assert_eq!(named(br#"{"name":"a","name":"b"}"#), Err(()), "duplicates are ambiguous");
        assert_eq!(named(b"[1]"), Err(()));
        assert_eq!(named(b"not json"), Err(()));
    }
}
