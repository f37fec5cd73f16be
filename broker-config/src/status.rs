//! Task and bot statuses, and how a bot receives its work.

use serde::Serialize;

pub use crate::names::UnknownValue;

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

crate::named_enum!(TaskStatus, "status", {
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
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
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

crate::named_enum!(BotStatus, "status", {
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

crate::named_enum!(Delivery, "delivery", {
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
    fn serialized_names_are_the_named_enum_names() {
        for status in TaskStatus::ALL {
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
        for status in BotStatus::ALL {
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
        for delivery in Delivery::ALL {
            assert_eq!(serde_json::to_value(delivery).expect("json"), delivery.as_str());
        }
    }

    #[test]
    fn only_complete_failed_and_cancelled_are_final() {
        let finals: Vec<_> = TaskStatus::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [&TaskStatus::Complete, &TaskStatus::Failed, &TaskStatus::Cancelled]);
    }
}
