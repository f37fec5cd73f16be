//! Signed pushes to HTTP bots: the orchestrator signs every command it POSTs to a bot, so that
//! nobody else who can reach the bot can cancel its task or push it work.
//!
//! The key is the SHA-256 digest of the bot's API token (`--bot-token NAME=TOKEN` on the
//! orchestrator, `--api-token` on the bot): both sides have it and nothing new is handed out. The
//! header is `X-Botline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, as
//! Stripe and Svix sign their webhooks. A bot accepts a command whose time is within
//! [`MAX_SKEW`] of its clock and whose signature it has not seen yet ([`Verifier`]): a replay
//! within the window is refused, and one after it is stale.
//!
//! A bot written by hand checks it in a few lines:
//! `hmac.compare_digest(hmac.new(sha256(token).digest(), f"{t}.".encode() + body, sha256).hexdigest(), v1)`.

use std::collections::VecDeque;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-botline-signature";

/// How far a command's time may be from the bot's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// The signing key of a bot: the SHA-256 digest of its API token.
#[derive(Clone, PartialEq, Eq)]
pub struct PushKey([u8; 32]);

impl PushKey {
    /// The key of the bot whose API token is `token`.
    pub fn from_token(token: &str) -> PushKey {
        PushKey(Sha256::digest(token.as_bytes()).into())
    }

    /// The key from the token's digest, as the orchestrator keeps tokens.
    pub fn from_digest(digest: [u8; 32]) -> PushKey {
        PushKey(digest)
    }

    fn mac(&self, unix_seconds: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(unix_seconds.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The header value signing `body` at `unix_seconds`.
    pub fn sign(&self, unix_seconds: i64, body: &[u8]) -> String {
        let tag = self.mac(unix_seconds, body).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("t={unix_seconds},v1={hex}")
    }
}

impl std::fmt::Debug for PushKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushKey(***)")
    }
}

/// Why a bot refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No signature header.
    #[error("the command is not signed (header X-Botline-Signature)")]
    Unsigned,
    /// A header that is not `t=…,v1=…`.
    #[error("the signature header is not t=<seconds>,v1=<hex>")]
    Malformed,
    /// Signed with another key, or the body was changed.
    #[error("the signature does not match")]
    Forged,
    /// Its time is too far from the bot's clock.
    #[error("the command is stale: signed {0} s away from this bot's clock")]
    Stale(i64),
    /// The same signature again.
    #[error("the command was already received (a replay)")]
    Replayed,
}

/// Checks commands for one bot, remembering the signatures it accepted within the window.
#[derive(Debug)]
pub struct Verifier {
    key: PushKey,
    seen: VecDeque<(i64, Vec<u8>)>,
}

impl Verifier {
    /// A verifier for `key`.
    pub fn new(key: PushKey) -> Verifier {
        Verifier { key, seen: VecDeque::new() }
    }

    /// Checks `header` over `body` at `now` (unix seconds); remembers it when accepted.
    pub fn check(&mut self, header: Option<&str>, body: &[u8], now: i64) -> Result<(), Refused> {
        let header = header.ok_or(Refused::Unsigned)?;
        let mut time = None;
        let mut tag = None;
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => time = value.parse::<i64>().ok(),
                Some(("v1", value)) => tag = decode_hex(value),
                _ => {}
            }
        }
        let (Some(time), Some(tag)) = (time, tag) else { return Err(Refused::Malformed) };
        self.key.mac(time, body).verify_slice(&tag).map_err(|_| Refused::Forged)?;
        let skew = now.saturating_sub(time);
        let window = i64::try_from(MAX_SKEW.as_secs()).unwrap_or(i64::MAX);
        if skew.abs() > window {
            return Err(Refused::Stale(skew));
        }
        // Forget what is out of the window: a replay of it is stale anyway.
        while self.seen.front().is_some_and(|(at, _)| now.saturating_sub(*at) > window) {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(_, seen)| *seen == tag) {
            return Err(Refused::Replayed);
        }
        // Bounded: the orchestrator sends a bot a few commands a second at most.
        if self.seen.len() >= 100_000 {
            self.seen.pop_front();
        }
        self.seen.push_back((time, tag));
        Ok(())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_signed_command_is_accepted_once() {
        let key = PushKey::from_token("bot-token-0123456789");
        let body = br#"{"v":1,"type":"task.cancel"}"#;
        let header = key.sign(NOW, body);
        let mut verifier = Verifier::new(key.clone());
        assert_eq!(verifier.check(Some(&header), body, NOW + 2), Ok(()));
        assert_eq!(verifier.check(Some(&header), body, NOW + 3), Err(Refused::Replayed));
        // Another command at the same second has another signature.
        let other = br#"{"v":1,"type":"task.assign"}"#;
        assert_eq!(verifier.check(Some(&key.sign(NOW, other)), other, NOW + 3), Ok(()));
    }

    #[test]
    fn unsigned_forged_changed_and_stale_commands_are_refused() {
        let key = PushKey::from_token("bot-token-0123456789");
        let body = b"{}";
        let mut verifier = Verifier::new(key.clone());
        assert_eq!(verifier.check(None, body, NOW), Err(Refused::Unsigned));
        assert_eq!(verifier.check(Some("v1=abc"), body, NOW), Err(Refused::Malformed));
        let forged = PushKey::from_token("another-token-0123456").sign(NOW, body);
        assert_eq!(verifier.check(Some(&forged), body, NOW), Err(Refused::Forged));
        let signed = key.sign(NOW, body);
        assert_eq!(verifier.check(Some(&signed), b"{\"x\":1}", NOW), Err(Refused::Forged));
        assert_eq!(verifier.check(Some(&signed), body, NOW + 301), Err(Refused::Stale(301)));
        assert_eq!(verifier.check(Some(&signed), body, NOW - 400), Err(Refused::Stale(-400)));
    }

    #[test]
    fn the_key_is_the_token_s_digest_and_is_never_shown() {
        let digest: [u8; 32] = Sha256::digest(b"bot-token-0123456789").into();
        assert_eq!(PushKey::from_digest(digest), PushKey::from_token("bot-token-0123456789"));
        assert_eq!(format!("{:?}", PushKey::from_digest(digest)), "PushKey(***)");
    }
}
