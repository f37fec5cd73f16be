//! The secrets: the tokens configured (flags, environment, files), checked at start and kept
//! only as SHA-256 digests ([`Access`]), compared in constant time; each bot's push key derived
//! from its token. A [`Secret`] prints as `***`, and no error shows a token.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use broker_config::BotName;
use sha2::{Digest as _, Sha256};

use super::identity::{Principal, is_loopback};

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

    /// Whom `token` stands for, if anyone. Every grant is compared, in constant time, so the
    /// time taken says neither whether nor which one matched.
    pub(super) fn holder(&self, token: &str) -> Option<&Principal> {
        let presented = digest(token);
        let mut found = None;
        for (grant, principal) in &self.grants {
            if same_digest(grant, &presented) && found.is_none() {
                found = Some(principal);
            }
        }
        found
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::fixtures::*;
    use crate::http::auth::identity::Refusal;
    use clap::Parser as _;
    use uuid::Uuid;

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
}
