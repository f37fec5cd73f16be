//! Task and bot statuses, and how a bot receives its work.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that is not one of the names a field accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {field} '{value}'; expected one of {expected}")]
pub struct UnknownValue {
    /// Which field was being parsed (`system`, `status`, …).
    pub field: &'static str,
    /// The value given.
    pub value: String,
    /// The accepted names, comma separated.
    pub expected: String,
}

impl UnknownValue {
    /// An error for `value`, which is none of `expected`.
    pub fn new(field: &'static str, value: &str, expected: &[&str]) -> Self {
        UnknownValue { field, value: value.to_owned(), expected: expected.join(", ") }
    }
}

/// Implements `as_str`, `Display`, and case-insensitive `FromStr` and `Deserialize` for a field-less enum whose
/// serde names are its uppercase names.
macro_rules! named_enum {
    ($ty:ident, $field:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in a stable order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name used in the API, the database and messages.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            /// Reads the name in any case (`running` is `RUNNING`), as [`FromStr`] does.
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl FromStr for $ty {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| UnknownValue::new($field, s, &[$($name),+]))
            }
        }
    };
}

/// Where a task is in its life (docs/architecture.md, "The task life").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sea-orm", derive(sea_orm::DeriveValueType), sea_orm(value_type = "String"))]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskStatus {
    /// Stored and due (or waiting for its `not_before`), not offered to any bot.
    Waiting,
    /// Offered to a bot that has not answered yet.
    Assigned,
    /// Accepted by a bot, which is working on it.
    Running,
    /// Done; the result holds the per-row outcomes.
    Complete,
    /// Ended without completing (a fatal error, or out of attempts).
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

named_enum!(TaskStatus, "status", {
    Waiting => "WAITING",
    Assigned => "ASSIGNED",
    Running => "RUNNING",
    Complete => "COMPLETE",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
});

impl TaskStatus {
    /// Whether a bot reports this status on the task it holds (RUNNING, COMPLETE, FAILED).
    pub fn is_report(self) -> bool {
        matches!(self, TaskStatus::Running | TaskStatus::Complete | TaskStatus::Failed)
    }

    /// Whether the task has ended and will not change again by itself.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Complete | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

/// Whether a bot can take work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sea-orm", derive(sea_orm::DeriveValueType), sea_orm(value_type = "String"))]
#[serde(rename_all = "UPPERCASE")]
pub enum BotStatus {
    /// Online and free.
    Available,
    /// Offline, or silent for too long.
    Unavailable,
    /// Holding a task (offered or running).
    Busy,
}

named_enum!(BotStatus, "status", {
    Available => "AVAILABLE",
    Unavailable => "UNAVAILABLE",
    Busy => "BUSY",
});

/// How the orchestrator hands tasks to a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sea-orm", derive(sea_orm::DeriveValueType), sea_orm(value_type = "String"))]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Through the bot's own RabbitMQ queue.
    #[default]
    Amqp,
    /// By POSTing the task to the bot's HTTP endpoint (bots that cannot speak AMQP).
    Http,
}

named_enum!(Delivery, "delivery", {
    Amqp => "amqp",
    Http => "http",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_case_insensitively_and_serialize_uppercase() {
        assert_eq!("running".parse::<TaskStatus>(), Ok(TaskStatus::Running));
        assert_eq!("BUSY".parse::<BotStatus>(), Ok(BotStatus::Busy));
        assert_eq!(
            serde_json::from_str::<TaskStatus>("\"Complete\"").expect("json"),
            TaskStatus::Complete
        );
        assert_eq!(serde_json::from_str::<Delivery>("\"HTTP\"").expect("json"), Delivery::Http);
        assert!(serde_json::from_str::<BotStatus>("\"IDLE\"").is_err());
        assert_eq!(serde_json::to_string(&TaskStatus::Cancelled).expect("json"), "\"CANCELLED\"");
        assert_eq!(serde_json::to_string(&Delivery::Http).expect("json"), "\"http\"");
        assert!("DONE".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn only_complete_failed_and_cancelled_are_final() {
        let finals: Vec<_> = TaskStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [&TaskStatus::Complete, &TaskStatus::Failed, &TaskStatus::Cancelled]);
    }
}
