//! Identification: who a request comes from. The bearer token of its `Authorization` header
//! names a [`Principal`]; with no token configured, a client on this machine (loopback) is the
//! admin and any other is refused. Done once per request ([`identified`]): by
//! [`require_caller`] in front of every route that is not public, or by the first access rule
//! that asks; what it refuses is a [`Refusal`], answered 401 or 403.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use broker_config::BotName;

use super::secrets::Access;
use crate::error::{ErrorBody, ErrorDetail};

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
/// task's bot). Set by [`identified`];
/// on public routes, where nobody is asked, nobody in particular.
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

impl Access {
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
        self.holder(token).cloned().ok_or(Refusal::UnknownToken)
    }
}

/// Who the request comes from, identified once: later calls give the first answer (the
/// [`Principal`] is kept in the request's extensions, where [`Caller`] reads it). A refusal is
/// logged here, with the peer.
pub fn identified(parts: &mut Parts, access: &Access) -> Result<Principal, Refusal> {
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Ok(principal.clone());
    }
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    match access.identify(parts.headers.get(AUTHORIZATION), peer) {
        Ok(principal) => {
            parts.extensions.insert(principal.clone());
            Ok(principal)
        }
        Err(refusal) => {
            tracing::info!(peer = ?peer, reason = %refusal, "request refused");
            Err(refusal)
        }
    }
}

/// Refuses a request whose caller the API does not know, before any handler or extractor sees
/// it: in front of every route but the public ones, so a route whose handler names no rule is
/// still closed to unknown callers. What a known caller may do there is the route's rule's to
/// say.
pub async fn require_caller(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match identified(&mut parts, &access) {
        Ok(_) => next.run(Request::from_parts(parts, body)).await,
        Err(refusal) => refusal.into_response(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::AuthConfig;
    use crate::http::auth::fixtures::*;

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
}
