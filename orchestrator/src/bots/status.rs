//! A bot's status, and the one place that decides how it changes. Pure: no IO.

use broker_config::{BotStatus, TaskStatus};
use uuid::Uuid;

use crate::error::ApiError;

/// How much a bot holds: `held` tasks (ASSIGNED or RUNNING) of the `slots` it runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Tasks it holds.
    pub held: u32,
    /// Tasks it runs at once (at least 1).
    pub slots: u32,
}

impl Load {
    /// A bot holding nothing (its slots do not matter to its status then).
    pub const IDLE: Load = Load { held: 0, slots: 1 };

    /// A bot holding `held` of `slots` (stored as integers; a bad value reads as 0 held, 1 slot).
    pub fn of(held: i32, slots: i32) -> Load {
        Load {
            held: u32::try_from(held).unwrap_or_default(),
            slots: u32::try_from(slots).unwrap_or_default().max(1),
        }
    }

    /// Every slot taken: it gets no offer.
    pub fn full(self) -> bool {
        self.held >= self.slots
    }

    /// Slots left.
    pub fn free(self) -> u32 {
        self.slots.saturating_sub(self.held)
    }

    /// The same bot holding `n` more.
    pub fn plus(self, n: u32) -> Load {
        Load { held: self.held.saturating_add(n), ..self }
    }
}

/// Something that happens to a bot, as far as its status goes. Every status the pipeline writes
/// is [`BotChange::status`] of one of these; a client's write goes through
/// [`status_after_write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotChange {
    /// The dispatcher offered it a task.
    Offered,
    /// A task ended or was taken from it while it stays reachable: it completed, failed or
    /// refused the task, a user cancelled it, or the offer expired unanswered.
    Freed,
    /// It cannot be counted on: an offer could not reach it, a run past its time could not be
    /// stopped, or it handed a task back because it is stopping.
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
    /// The status a bot has after this, holding `load` afterwards. BUSY means every slot is
    /// taken, and a full bot is BUSY whatever it says: one that is heard from while full stays
    /// BUSY, one that goes away is UNAVAILABLE (its tasks are taken back from it, or it gets no
    /// more while it cannot be counted on), and BUSY is never the status of a bot with a free
    /// slot. A bot with a single slot is therefore BUSY exactly while it holds a task.
    pub fn status(self, load: Load) -> BotStatus {
        match self {
            BotChange::Unreachable | BotChange::Offline => BotStatus::Unavailable,
            _ if load.full() => BotStatus::Busy,
            BotChange::Offered
            | BotChange::Freed
            | BotChange::Online
            | BotChange::Reported(BotStatus::Busy) => BotStatus::Available,
            BotChange::Reported(status) => status,
        }
    }
}

/// The status a client's write leaves a bot in, given what it asks, how much it holds (`load`)
/// and one task it holds (a RUNNING one if any). BUSY is the orchestrator's to set: it means
/// every slot is taken, so no write can make a full bot look free (it would be offered one more
/// than it runs) nor a bot with a free slot look busy. A full bot that asks to be AVAILABLE
/// while its offers are pending stays BUSY (the offers stand); asking AVAILABLE or UNAVAILABLE
/// while full and running a task is a 409 naming the task. A bot with a free slot may pause
/// itself (UNAVAILABLE) while it runs others: they go on, and it gets no new offer.
pub fn status_after_write(
    current: BotStatus,
    requested: Option<BotStatus>,
    load: Load,
    holds: Option<(Uuid, TaskStatus)>,
) -> Result<BotStatus, ApiError> {
    let full = load.full() && holds.is_some();
    match (requested, holds) {
        // Only its slots change (or nothing): BUSY exactly when full.
        (None, _) if full && current == BotStatus::Available => Ok(BotStatus::Busy),
        (None, _) if !full && current == BotStatus::Busy => Ok(BotStatus::Available),
        (None, _) => Ok(current),
        (Some(BotStatus::Busy), Some(_)) if full => Ok(BotStatus::Busy),
        (Some(BotStatus::Busy), _) => Err(ApiError::conflict(
            if holds.is_some() { "bot_has_free_slots" } else { "bot_holds_no_task" },
            Some("status"),
            "a bot is BUSY only while every slot it has holds a task, and the orchestrator sets that; to take a bot out of rotation, set paused: true",
        )),
        (Some(BotStatus::Available), Some((_, TaskStatus::Assigned))) if full => {
            Ok(BotStatus::Busy)
        }
        (Some(status), Some((task, held))) if full => Err(ApiError::conflict(
            "bot_holds_task",
            Some("status"),
            format!(
                "the bot holds task {task} ({held}) in its last free slot, so it cannot be {status}: report the task's end first (PUT /api/v1/tasks/{task} with {{\"status\":\"COMPLETE\"}}) or cancel it"
            ),
        )),
        (Some(status), _) => Ok(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Load = Load { held: 0, slots: 1 };
    const FULL: Load = Load { held: 1, slots: 1 };

    #[test]
    fn a_single_slot_bot_holding_a_task_is_busy_until_it_goes_away() {
        use BotChange::*;
        use BotStatus::*;
        for change in [Freed, Online, Reported(Available), Reported(Unavailable), Reported(Busy)] {
            assert_eq!(change.status(FULL), Busy, "{change:?} while holding a task");
        }
        assert_eq!(Offered.status(FULL), Busy);
        for change in [Unreachable, Offline] {
            assert_eq!(change.status(FULL), Unavailable, "{change:?}: its task is taken back");
            assert_eq!(change.status(IDLE), Unavailable, "{change:?}");
        }
    }

    #[test]
    fn a_free_bot_is_available_unless_it_says_otherwise() {
        use BotChange::*;
        use BotStatus::*;
        assert_eq!(Freed.status(IDLE), Available);
        assert_eq!(Online.status(IDLE), Available);
        assert_eq!(Reported(Busy).status(IDLE), Available, "BUSY is not a free bot's status");
        assert_eq!(Reported(Unavailable).status(IDLE), Unavailable);
        assert_eq!(Reported(Available).status(IDLE), Available);
    }

    #[test]
    fn a_bot_with_several_slots_is_available_until_the_last_is_taken() {
        use BotChange::*;
        use BotStatus::*;
        let four = Load { held: 0, slots: 4 };
        assert_eq!(Offered.status(four.plus(1)), Available, "3 slots left");
        assert_eq!(Offered.status(four.plus(3)), Available, "1 slot left");
        assert_eq!(Offered.status(four.plus(4)), Busy, "full");
        assert_eq!(Freed.status(four.plus(3)), Available);
        assert_eq!(Reported(Unavailable).status(four.plus(2)), Unavailable, "pauses itself");
        assert_eq!(Reported(Unavailable).status(four.plus(4)), Busy, "full is BUSY");
        assert_eq!(Unreachable.status(four.plus(2)), Unavailable, "no more until it is back");
        assert_eq!(four.plus(1).free(), 3);
        assert_eq!(Load::of(7, 4).free(), 0, "more held than slots (slots lowered): none free");
        assert_eq!(Load::of(-1, 0), IDLE, "a bad stored value reads as idle with one slot");
    }

    #[test]
    fn no_write_makes_a_full_bot_look_free() {
        use BotStatus::*;
        let task = Uuid::from_u128(9);
        let offered = Some((task, TaskStatus::Assigned));
        let running = Some((task, TaskStatus::Running));
        assert_eq!(status_after_write(Busy, Some(Available), FULL, offered).ok(), Some(Busy));
        assert_eq!(status_after_write(Busy, Some(Busy), FULL, running).ok(), Some(Busy));
        assert_eq!(
            status_after_write(Unavailable, Some(Available), IDLE, None).ok(),
            Some(Available)
        );
        assert_eq!(status_after_write(Available, None, IDLE, None).ok(), Some(Available));
        let refused =
            status_after_write(Busy, Some(Available), FULL, running).expect_err("runs a task");
        assert!(refused.to_string().contains(&task.to_string()), "names the task: {refused}");
        assert!(status_after_write(Busy, Some(Unavailable), FULL, running).is_err());
        assert!(status_after_write(Available, Some(Busy), IDLE, None).is_err(), "not a pause");
    }

    #[test]
    fn a_bot_with_a_free_slot_may_pause_itself_but_not_claim_busy() {
        use BotStatus::*;
        let running = Some((Uuid::from_u128(9), TaskStatus::Running));
        let half = Load { held: 2, slots: 4 };
        assert_eq!(
            status_after_write(Available, Some(Unavailable), half, running).ok(),
            Some(Unavailable)
        );
        assert_eq!(
            status_after_write(Unavailable, Some(Available), half, running).ok(),
            Some(Available)
        );
        let busy =
            status_after_write(Available, Some(Busy), half, running).expect_err("free slots");
        assert!(busy.to_string().contains("every slot"), "{busy}");
        // Slots changed, no status asked: BUSY exactly when full.
        assert_eq!(status_after_write(Busy, None, half, running).ok(), Some(Available));
        let lowered = Load { held: 2, slots: 2 };
        assert_eq!(status_after_write(Available, None, lowered, running).ok(), Some(Busy));
        assert_eq!(status_after_write(Unavailable, None, lowered, running).ok(), Some(Unavailable));
    }
}
