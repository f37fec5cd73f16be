//! Bot names, which double as RabbitMQ queue names and routing keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest bot name: `botline.bot.` plus the name must fit RabbitMQ's 255-byte queue names
/// with room to spare, and a person must be able to read it in the management UI.
pub const MAX_BOT_NAME_LEN: usize = 64;

/// A bot name: 1 to 64 of lowercase letters, digits, `-`, `_` and `.`, starting with a letter or
/// digit. Queues are named after bots (`botline.bot.<name>`), so the name is checked once, here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BotName(String);

/// Why a string is not a [`BotName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BotNameError {
    /// The name is empty.
    #[error("bot name must not be empty")]
    Empty,
    /// The name is too long.
    #[error("bot name must be at most {MAX_BOT_NAME_LEN} characters")]
    TooLong,
    /// The name has a character other than lowercase letters, digits, `-`, `_` and `.`.
    #[error(
        "bot name may only hold lowercase letters, digits, '-', '_' and '.', and must start with a letter or digit (found {0:?})"
    )]
    InvalidCharacter(char),
}

impl BotName {
    /// Checks `name` and wraps it.
    pub fn parse(name: &str) -> Result<BotName, BotNameError> {
        if name.is_empty() {
            return Err(BotNameError::Empty);
        }
        // Characters first: a short name of multi-byte characters is refused for them, not as
        // too long. After this check only ASCII is left, so bytes are characters.
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        for (i, c) in name.chars().enumerate() {
            let ok = allowed(c) || (i > 0 && matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(BotNameError::InvalidCharacter(c));
            }
        }
        if name.len() > MAX_BOT_NAME_LEN {
            return Err(BotNameError::TooLong);
        }
        Ok(BotName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BotName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        BotName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_queue_safe_names() {
        for ok in ["bot-1", "a", "vm01.rpa_bot", "9lives"] {
            assert_eq!(BotName::parse(ok).expect(ok).as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(BotName::parse(""), Err(BotNameError::Empty));
        assert_eq!(BotName::parse(&"a".repeat(65)), Err(BotNameError::TooLong));
        assert_eq!(BotName::parse("Bot"), Err(BotNameError::InvalidCharacter('B')));
        assert_eq!(BotName::parse("bot 1"), Err(BotNameError::InvalidCharacter(' ')));
        assert_eq!(BotName::parse("-bot"), Err(BotNameError::InvalidCharacter('-')));
        assert_eq!(BotName::parse("bot#1"), Err(BotNameError::InvalidCharacter('#')));
        assert!(serde_json::from_str::<BotName>("\"UPPER\"").is_err());
    }

    #[test]
    fn a_short_name_of_multi_byte_characters_is_refused_for_them_not_as_too_long() {
        // Found by tests/properties.rs: 33 characters of 2 bytes each were "at most 64 characters".
        assert_eq!(BotName::parse(&"é".repeat(33)), Err(BotNameError::InvalidCharacter('é')));
        let name = format!("{}é", "a".repeat(63));
        assert_eq!(BotName::parse(&name), Err(BotNameError::InvalidCharacter('é')));
        assert_eq!(BotName::parse(&"A".repeat(65)), Err(BotNameError::InvalidCharacter('A')));
    }
}
