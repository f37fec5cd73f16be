//! API authentication: bearer tokens, whom they stand for, and what each route lets them do.
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
//! - [`secrets`]: the tokens configured, checked at start, kept as SHA-256 digests and compared
//!   in constant time; each bot's push key. A [`Secret`] prints as `***`, and no refusal ever
//!   repeats a token.
//! - [`identity`]: who a request comes from ([`Principal`]), identified once per request; in
//!   front of every route but the public ones, [`require_caller`] refuses unknown callers.
//! - [`rules`]: the access rules, extractors each handler names among its arguments
//!   ([`Operator`], [`AnyCaller`], …); the router's state, [`Guarded`], reaches a handler only
//!   through one.
//! - [`bot_writes`]: what a bot's token may write, checked against the database and the body.

pub mod bot_writes;
pub mod identity;
pub mod rules;
pub mod secrets;

pub use self::identity::{Caller, Principal, Refusal, identified, is_loopback, require_caller};
pub use self::rules::{
    AnyCaller, Anyone, DeleteOwnBot, EditOwnBot, Guarded, Operator, RegisterSelf, ReportOnTask,
};
pub use self::secrets::{Access, AccessError, AuthConfig, MIN_TOKEN_LEN, Secret};

/// Tokens and configurations the unit tests of these modules share.
#[cfg(test)]
mod fixtures {
    use axum::http::HeaderValue;
    use clap::Parser as _;

    use super::{Access, AuthConfig};

    pub const ADMIN: &str = "admin-token-0123456789";
    pub const READ: &str = "read-token-0123456789";
    pub const BOT: &str = "bot-token-0123456789";

    #[derive(clap::Parser)]
    pub struct Cli {
        #[command(flatten)]
        pub auth: AuthConfig,
    }

    pub fn parse(args: &[&str]) -> AuthConfig {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .expect("the flags parse")
            .auth
    }

    pub fn bearer(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value")
    }

    /// An admin, a read-only and one bot's token.
    pub fn three_tokens() -> AuthConfig {
        parse(&[
            "--admin-token",
            ADMIN,
            "--read-token",
            READ,
            "--bot-token",
            &format!("bot-1={BOT}"),
        ])
    }

    pub fn access() -> Access {
        Access::from_config(&three_tokens()).expect("valid tokens")
    }

    pub fn error(config: &AuthConfig) -> String {
        Access::from_config(config).map(|_| ()).expect_err("refused").to_string()
    }
}
