//! The changes of a task's status a client may ask for: a user's cancel or retry
//! ([`check_user_transition`]), and a bot's plain status write read as its report
//! ([`report_of_write`]). Pure: no IO.

use broker_config::TaskStatus;
use chrono::Utc;

use super::request::*;
use super::view::corrupt;
use crate::entity::task;
use crate::error::ApiError;

/// What a user may do to a task's status through the API: cancel a task that has not ended, or
/// send a FAILED or CANCELLED task back to WAITING (a retry). Asking for the current status
/// changes nothing. Everything else belongs to the pipeline.
pub fn check_user_transition(from: TaskStatus, to: TaskStatus) -> Result<(), ApiError> {
    let allowed = from == to
        || (to == TaskStatus::Cancelled && !from.is_final())
        || (to == TaskStatus::Waiting
            && matches!(from, TaskStatus::Failed | TaskStatus::Cancelled));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "invalid_transition",
            Some("status"),
            format!(
                "a {from} task cannot be set to {to}; the API can cancel a task that has not ended or retry a FAILED or CANCELLED one"
            ),
        ))
    }
}

/// Who sends a report through the CRUD API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reporter {
    /// A bot, by its token.
    Bot(broker_config::BotName),
    /// Anyone the API lets write without naming a bot (the admin token, or a loopback client
    /// when no token is configured): taken for the task's bot, unless the request comes from
    /// another machine than that bot's (`peer`, set only for non-loopback clients).
    Unnamed {
        /// The client's address, when it is not this machine.
        peer: Option<std::net::IpAddr>,
    },
}

/// A status write (RUNNING, COMPLETE, FAILED) on a task, read as the report it stands for from
/// the bot holding the task: the event to apply (fenced by attempt like any other), or `None`
/// when the task is already in that status (a repeated report changes nothing). A report on a
/// task no bot holds, on one another bot holds, or for another attempt is a 409 that says so.
pub fn report_of_write(
    current: &task::Model,
    holder: Option<&crate::entity::bot::Model>,
    reporter: &Reporter,
    patch: TaskPatch,
) -> Result<Option<broker_config::Event>, ApiError> {
    use broker_config::{BotName, Event, TaskRef};
    let from = current.status;
    let Some(status) = patch.status else { return Ok(None) };
    if from == status {
        return Ok(None);
    }
    let csv = current.progress_total.is_some();
    let holder = match (from, holder) {
        (TaskStatus::Assigned | TaskStatus::Running, Some(holder)) => holder,
        _ => {
            let hint = if from == TaskStatus::Waiting && current.unanswered_offers > 0 {
                " (its last offer went unanswered and was taken back: answer an offer within the offer timeout)"
            } else {
                ""
            };
            return Err(ApiError::conflict(
                "task_not_held",
                Some("status"),
                format!(
                    "the task is {from} and no bot holds it, so a {status} report changes nothing{hint}"
                ),
            ));
        }
    };
    let another = |who: String| {
        ApiError::conflict(
            "task_held_by_another_bot",
            Some("status"),
            format!(
                "task {} is held by bot {} ({}), not by {who}",
                current.id, holder.name, holder.id
            ),
        )
    };
    match reporter {
        Reporter::Bot(name) if name.as_str() != holder.name => {
            return Err(another(format!("bot {name}")));
        }
        Reporter::Unnamed { peer: Some(ip) }
            if Some(ip.to_canonical()) != holder.ip_address.parse::<std::net::IpAddr>().ok() =>
        {
            return Err(another(format!("a client at {ip} (the bot is at {})", holder.ip_address)));
        }
        _ => {}
    }
    if let Some(bot_id) = patch.bot_id.filter(|id| *id != holder.id) {
        return Err(another(format!("bot {bot_id}")));
    }
    if let Some(attempt) = patch.attempt.filter(|a| i64::from(*a) != i64::from(current.attempt)) {
        return Err(ApiError::conflict(
            "stale_attempt",
            Some("attempt"),
            format!(
                "the report is for attempt {attempt}; the task is at attempt {}",
                current.attempt
            ),
        ));
    }
    let bot = BotName::parse(&holder.name).map_err(|_| {
        ApiError::Internal(sea_orm::DbErr::Type(format!(
            "bot {}: stored name is invalid",
            holder.id
        )))
    })?;
    let task = TaskRef {
        task_id: current.id,
        attempt: u32::try_from(current.attempt).map_err(|_| corrupt(current.id, "attempt"))?,
    };
    let at = Utc::now();
    // Rows are a CSV task's; another task's output may have a key named so.
    let listed_rows = patch.result.as_ref().filter(|_| csv).and_then(|r| r.get("rows"));
    let rows = match (patch.rows, listed_rows) {
        (Some(rows), _) => rows,
        (None, Some(rows)) => serde_json::from_value(rows.clone()).map_err(|e| {
            ApiError::invalid(
                "result.rows",
                format!(
                    "rows are [{{\"row\": 1, \"status\": \"CREATED\", \"message\": \"…\"}}, …]: {e}"
                ),
            )
        })?,
        (None, None) => Vec::new(),
    };
    let event = match status {
        TaskStatus::Running => Event::TaskAccepted { task, bot, at },
        TaskStatus::Complete => {
            Event::TaskCompleted { task, bot, rows, output: patch.result, log: None, at }
        }
        _ => Event::TaskFailed {
            task,
            bot,
            rows,
            error: patch.error.unwrap_or_else(|| "the bot reported FAILED".to_owned()),
            retryable: patch.retryable.unwrap_or(true),
            log: None,
            at,
        },
    };
    Ok(Some(event))
}

/// Whether a task's content may change: not while a bot holds it, and not once it completed.
pub fn is_editable(status: TaskStatus) -> bool {
    matches!(status, TaskStatus::Waiting | TaskStatus::Failed | TaskStatus::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_may_cancel_unfinished_tasks_and_retry_ended_ones() {
        use TaskStatus::*;
        for from in [Waiting, Assigned, Running] {
            assert!(check_user_transition(from, Cancelled).is_ok(), "{from} → CANCELLED");
        }
        for from in [Failed, Cancelled] {
            assert!(check_user_transition(from, Waiting).is_ok(), "{from} → WAITING");
        }
        for (from, to) in [
            (Complete, Cancelled),
            (Complete, Waiting),
            (Waiting, Running),
            (Running, Complete),
            (Assigned, Waiting),
        ] {
            assert!(check_user_transition(from, to).is_err(), "{from} → {to} must be refused");
        }
        assert!(check_user_transition(Running, Running).is_ok(), "no change is no error");
    }
}
