//! A bot's status, and the one place that decides how it changes. Pure: no IO.

use broker_config::{BotStatus, TaskStatus};
use uuid::Uuid;

use crate::error::ApiError;

/// Something that happens to a bot, as far as its status goes. Every status the pipeline writes
/// is [`BotChange::status`] of one of these; a client's write goes through
/// [`status_after_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotChange {
    /// The dispatcher offered it a task.
    Offered,
    /// Its task ended or was taken from it while it stays reachable: it completed, failed or
    /// refused the task, a user cancelled it, or the offer expired unanswered.
    Freed,
    /// It cannot be counted on: an offer could not reach it, a run past its time could not be
    /// stopped, or it handed its task back because it is stopping.
    Unreachable,
    /// It announced itself (`bot.online`) or was heard again after a silence (a heartbeat, a
    /// probe of its address).
    Online,
    /// It said goodbye (`bot.offline`) or went silent.
    Offline,
    /// Its own report of its status (`bot.status`).
    Reported(BotStatus),
}

impl BotChange {
    /// The status a bot has after this, given whether it holds a task afterwards. A bot holds a
    /// task exactly while it is BUSY: one that is heard from while holding one stays BUSY
    /// whatever it says, one that goes away is UNAVAILABLE (the task is taken back from it),
    /// and BUSY is never a free bot's status.
    pub fn status(self, holds_task: bool) -> BotStatus {
        match self {
            BotChange::Offered => BotStatus::Busy,
            BotChange::Unreachable | BotChange::Offline => BotStatus::Unavailable,
            _ if holds_task => BotStatus::Busy,
            BotChange::Freed | BotChange::Online | BotChange::Reported(BotStatus::Busy) => {
                BotStatus::Available
            }
            BotChange::Reported(status) => status,
        }
    }
}

/// The status a client's write leaves a bot in, given what it asks and what the bot holds. BUSY
/// is the orchestrator's to set: a bot holds a task exactly while it is BUSY, so no write can
/// make a bot that holds a task look free (it would be offered a second one) nor a free bot
/// look busy. A bot that asks to be AVAILABLE while its offer is pending stays BUSY (the offer
/// stands); asking AVAILABLE or UNAVAILABLE while it runs a task is a 409 naming the task.
pub fn status_after_write(
    current: BotStatus,
    requested: Option<BotStatus>,
    holds: Option<(Uuid, TaskStatus)>,
) -> Result<BotStatus, ApiError> {
    match (requested, holds) {
        (None, _) => Ok(current),
        (Some(BotStatus::Busy), Some(_)) => Ok(BotStatus::Busy),
        (Some(BotStatus::Busy), None) => Err(ApiError::conflict(
            "bot_holds_no_task",
            Some("status"),
            "a bot is BUSY only while it holds a task, and the orchestrator sets that; to take a bot out of rotation, set paused: true",
        )),
        (Some(BotStatus::Available), Some((_, TaskStatus::Assigned))) => Ok(BotStatus::Busy),
        (Some(status), Some((task, held))) => Err(ApiError::conflict(
            "bot_holds_task",
            Some("status"),
            format!(
                "the bot holds task {task} ({held}), so it cannot be {status}: report the task's end first (PUT /api/v1/tasks/{task} with {{\"status\":\"COMPLETE\"}}) or cancel it"
            ),
        )),
        (Some(status), None) => Ok(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bot_holding_a_task_is_busy_until_it_goes_away() {
        use BotChange::*;
        use BotStatus::*;
        for change in [Freed, Online, Reported(Available), Reported(Unavailable), Reported(Busy)] {
            assert_eq!(change.status(true), Busy, "{change:?} while holding a task");
        }
        assert_eq!(Offered.status(false), Busy);
        for change in [Unreachable, Offline] {
            assert_eq!(change.status(true), Unavailable, "{change:?}: its task is taken back");
            assert_eq!(change.status(false), Unavailable, "{change:?}");
        }
    }

    #[test]
    fn a_free_bot_is_available_unless_it_says_otherwise() {
        use BotChange::*;
        use BotStatus::*;
        assert_eq!(Freed.status(false), Available);
        assert_eq!(Online.status(false), Available);
        assert_eq!(Reported(Busy).status(false), Available, "BUSY is not a free bot's status");
        assert_eq!(Reported(Unavailable).status(false), Unavailable);
        assert_eq!(Reported(Available).status(false), Available);
    }

    #[test]
    fn no_write_makes_a_bot_holding_a_task_look_free() {
        use BotStatus::*;
        let task = Uuid::from_u128(9);
        let offered = Some((task, TaskStatus::Assigned));
        let running = Some((task, TaskStatus::Running));
        assert_eq!(status_after_write(Busy, Some(Available), offered).ok(), Some(Busy));
        assert_eq!(status_after_write(Busy, Some(Busy), running).ok(), Some(Busy));
        assert_eq!(status_after_write(Unavailable, Some(Available), None).ok(), Some(Available));
        assert_eq!(status_after_write(Available, None, None).ok(), Some(Available));
        let refused = status_after_write(Busy, Some(Available), running).expect_err("runs a task");
        assert!(refused.to_string().contains(&task.to_string()), "names the task: {refused}");
        assert!(status_after_write(Busy, Some(Unavailable), running).is_err());
        assert!(status_after_write(Available, Some(Busy), None).is_err(), "BUSY is not a pause");
    }
}
