//! The pipeline's decisions as plain functions of their inputs (and of `now` where time matters):
//! which task goes to which bot, how long a failed task waits, and what an event may change.
//! The shells in [`super::dispatcher`] and [`super::events`] load the inputs and store the
//! outcome.

use std::collections::VecDeque;
use std::time::Duration;

use broker_config::{System, TaskStatus};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A WAITING task that is due, as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTask {
    /// The task.
    pub id: Uuid,
    /// Its system.
    pub system: System,
    /// Higher first.
    pub priority: i32,
    /// Older first, at equal priority.
    pub created_at: DateTime<Utc>,
    /// A bot that rejected or ignored it: offered to any other bot first.
    pub avoid_bot: Option<Uuid>,
}

impl DueTask {
    /// The dispatch order: priority first (higher first), then age (older first), then id.
    pub fn order_key(&self) -> (std::cmp::Reverse<i32>, DateTime<Utc>, Uuid) {
        (std::cmp::Reverse(self.priority), self.created_at, self.id)
    }
}

/// An AVAILABLE bot, as the dispatcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeBot {
    /// The bot.
    pub id: Uuid,
    /// What it can run.
    pub systems: Vec<System>,
    /// How many more tasks it can take (its free slots).
    pub free: u32,
}

/// Pairs due tasks (in any order: they are sorted here) with free bots (in preference order,
/// e.g. idle longest first). Each task goes to the first free bot that runs its system, avoiding
/// the bot that last turned it down unless no other can take it; each bot gets at most as many
/// tasks as it has free slots, each task at most one bot. A bot that got a task goes to the back
/// of the line, so a burst spreads over the bots instead of filling the first one's slots.
pub fn pair_tasks_with_bots(tasks: &[DueTask], bots: &[FreeBot]) -> Vec<(Uuid, Uuid)> {
    let mut ordered: Vec<&DueTask> = tasks.iter().collect();
    ordered.sort_by_key(|t| t.order_key());
    let mut line: VecDeque<(&FreeBot, u32)> =
        bots.iter().filter(|b| b.free > 0).map(|b| (b, b.free)).collect();
    let mut pairs = Vec::new();
    for task in ordered {
        if line.is_empty() {
            break;
        }
        let can_run = |(bot, _): &(&FreeBot, u32)| bot.systems.contains(&task.system);
        let chosen = line
            .iter()
            .position(|entry| can_run(entry) && Some(entry.0.id) != task.avoid_bot)
            .or_else(|| line.iter().position(can_run));
        if let Some((bot, left)) = chosen.and_then(|index| line.remove(index)) {
            pairs.push((task.id, bot.id));
            if left > 1 {
                line.push_back((bot, left - 1));
            }
        }
    }
    pairs
}

/// The most offers one dispatch pass makes: what a pass reads (up to this many waiting tasks per
/// system), holds in its transaction and publishes at once stays bounded however many slots are
/// free (ten thousand bots of 500 slots would otherwise read five million waiting tasks in one
/// pass). A pass that reached it is followed by another at once ([`pass_again`]).
pub const MAX_OFFERS_PER_PASS: usize = 1000;

/// The offers a pass with `free` free slots may make: all of them, up to
/// [`MAX_OFFERS_PER_PASS`].
pub fn pass_capacity(free: usize) -> usize {
    free.min(MAX_OFFERS_PER_PASS)
}

/// Whether a dispatch pass that could fill `free` slots (its free slots, up to its cap), paired
/// `paired` of them and made `offered` offers should be followed by another at once: it offered
/// something, and either filled every slot it could (more tasks may be due, and bots may have
/// come free meanwhile) or lost a pair to a concurrent change. A pass that left bots free has
/// offered every due task they could run.
pub fn pass_again(free: usize, paired: usize, offered: usize) -> bool {
    offered > 0 && (offered == free || offered < paired)
}

/// How long a task waits after its `failures`-th failure: `base`, doubling each time, capped.
pub fn retry_delay(failures: u32, base: Duration, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << doublings).min(cap)
}

/// Whether a bot that last showed life at `last_seen` is lost at `now`.
pub fn is_silent(
    last_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    heartbeat: Duration,
    missed: u32,
) -> bool {
    let allowed = chrono::Duration::from_std(heartbeat.saturating_mul(missed))
        .unwrap_or(chrono::Duration::MAX);
    now - last_seen > allowed
}

/// What a task event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `task.accepted`.
    Accepted,
    /// `task.rejected`.
    Rejected,
    /// `task.progress`.
    Progress,
    /// `task.completed`.
    Completed,
    /// `task.failed`; `retryable` says whether another run may succeed.
    Failed {
        /// Whether another run may succeed.
        retryable: bool,
    },
    /// `task.released`: handed back unfinished, not a failure.
    Released,
}

/// The task as stored, for judging an event about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskState {
    /// Its status.
    pub status: TaskStatus,
    /// The current offer number.
    pub attempt: u32,
    /// The bot holding the current offer.
    pub bot_id: Option<Uuid>,
    /// Runs failed so far.
    pub failures: u32,
    /// Runs allowed to fail.
    pub max_attempts: u32,
}

/// What an event does to its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The bot started: RUNNING.
    Start,
    /// The bot declined: WAITING again, offered to another bot first.
    Requeue,
    /// More rows done: merge them.
    Progress,
    /// Done: COMPLETE, bot free.
    Complete,
    /// Failed, another run allowed: WAITING after a backoff, one more failure counted.
    RetryLater,
    /// Failed for good: FAILED, bot free.
    Fail,
    /// Handed back: WAITING at once, no failure counted.
    Release,
    /// Already applied (a redelivery): nothing to do.
    Duplicate,
    /// About an attempt that is not the current one, or a task that moved on: recorded in the
    /// history, nothing changes. `cancel_sender` says whether to tell the bot to stop.
    Stale {
        /// Whether the sender may still be working on it and should be told to stop.
        cancel_sender: bool,
    },
}

/// Judges a task event from `sender` about `attempt`, fencing by attempt: only the bot holding
/// the current attempt changes the task, and each change applies once.
pub fn judge(task: &TaskState, attempt: u32, sender: Uuid, report: Report) -> Verdict {
    use TaskStatus::*;
    let current = attempt == task.attempt && task.bot_id == Some(sender);
    // A bot still working on a stale attempt is told to stop; one that reports its end is not.
    let still_working = matches!(report, Report::Accepted | Report::Progress);
    if !current {
        return Verdict::Stale { cancel_sender: still_working };
    }
    match (report, task.status) {
        (Report::Accepted, Assigned) => Verdict::Start,
        (Report::Accepted, Running) => Verdict::Duplicate,
        (Report::Rejected, Assigned) => Verdict::Requeue,
        (Report::Progress, Running | Assigned) => Verdict::Progress,
        (Report::Completed, Running | Assigned) => Verdict::Complete,
        (Report::Completed, Complete) => Verdict::Duplicate,
        (Report::Failed { retryable }, Running | Assigned) => {
            if retryable && task.failures + 1 < task.max_attempts {
                Verdict::RetryLater
            } else {
                Verdict::Fail
            }
        }
        (Report::Failed { .. }, Failed) => Verdict::Duplicate,
        (Report::Released, Running | Assigned) => Verdict::Release,
        // The task moved on (cancelled by a user, already ended): the report changes nothing.
        _ => Verdict::Stale { cancel_sender: still_working },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn task(n: u128, system: System, priority: i32, age: i64) -> DueTask {
        DueTask { id: id(n), system, priority, created_at: at(-age), avoid_bot: None }
    }

    fn bot(n: u128, systems: &[System]) -> FreeBot {
        FreeBot { id: id(n), systems: systems.to_vec(), free: 1 }
    }

    #[test]
    fn oldest_task_first_within_priority_and_only_to_capable_bots() {
        let tasks = [
            task(1, System::NOOP, 0, 10),
            task(2, System::NOOP, 0, 30),
            task(3, System::VIVO360, 5, 1),
            task(4, System::CPE, 9, 50),
        ];
        let bots = [bot(100, &[System::NOOP]), bot(101, &[System::NOOP, System::VIVO360])];
        // Task 4 (CPE) has no capable bot; task 3 wins on priority; task 2 is older than task 1.
        let pairs = pair_tasks_with_bots(&tasks, &bots);
        assert_eq!(pairs, [(id(3), id(101)), (id(2), id(100))]);
    }

    #[test]
    fn never_two_tasks_to_one_bot_nor_one_task_to_two_bots() {
        let tasks: Vec<_> = (0..10).map(|n| task(n, System::NOOP, 0, n as i64)).collect();
        let bots: Vec<_> = (100..103).map(|n| bot(n, &[System::NOOP])).collect();
        let pairs = pair_tasks_with_bots(&tasks, &bots);
        assert_eq!(pairs.len(), 3);
        let mut bots_used: Vec<_> = pairs.iter().map(|p| p.1).collect();
        bots_used.sort();
        bots_used.dedup();
        assert_eq!(bots_used.len(), 3);
        let mut tasks_used: Vec<_> = pairs.iter().map(|p| p.0).collect();
        tasks_used.sort();
        tasks_used.dedup();
        assert_eq!(tasks_used.len(), 3);
    }

    #[test]
    fn bots_take_as_many_tasks_as_free_slots_spread_over_the_bots() {
        let tasks: Vec<_> = (0..10).map(|n| task(n, System::NOOP, 0, 100 - n as i64)).collect();
        let wide = FreeBot { free: 4, ..bot(100, &[System::NOOP]) };
        let narrow = FreeBot { free: 2, ..bot(101, &[System::NOOP]) };
        let full = FreeBot { free: 0, ..bot(102, &[System::NOOP]) };
        let pairs = pair_tasks_with_bots(&tasks, &[wide, narrow, full]);
        let given = |b: u128| pairs.iter().filter(|p| p.1 == id(b)).count();
        assert_eq!((given(100), given(101), given(102)), (4, 2, 0), "{pairs:?}");
        // Turn by turn while both have room: 100, 101, 100, 101, then 100 alone.
        let order: Vec<u128> = pairs.iter().map(|p| p.1.as_u128()).collect();
        assert_eq!(order, [100, 101, 100, 101, 100, 100]);
        let mut tasks_used: Vec<_> = pairs.iter().map(|p| p.0).collect();
        tasks_used.sort();
        tasks_used.dedup();
        assert_eq!(tasks_used.len(), 6, "each task once");
    }

    #[test]
    fn a_rejected_task_goes_to_another_bot_unless_none_other_can_run_it() {
        let mut rejected = task(1, System::NOOP, 0, 5);
        rejected.avoid_bot = Some(id(100));
        let both = [bot(100, &[System::NOOP]), bot(101, &[System::NOOP])];
        assert_eq!(
            pair_tasks_with_bots(std::slice::from_ref(&rejected), &both),
            [(id(1), id(101))]
        );
        let only = [bot(100, &[System::NOOP])];
        assert_eq!(pair_tasks_with_bots(&[rejected], &only), [(id(1), id(100))]);
    }

    #[test]
    fn another_pass_only_when_every_free_bot_was_filled_or_a_pair_was_lost() {
        // 16 bots free, one task created: the pass offers it and leaves 15 bots free.
        assert!(!pass_again(16, 1, 1));
        // Every free bot got a task: more may be due.
        assert!(pass_again(4, 4, 4));
        // A pair lost to a concurrent change (a task cancelled meanwhile): pair again.
        assert!(pass_again(4, 3, 2));
        // Nothing offered, for whatever reason: wait for the next wake or sweep.
        assert!(!pass_again(4, 0, 0));
        assert!(!pass_again(4, 2, 0));
        assert!(!pass_again(0, 0, 0));
    }

    #[test]
    fn a_pass_offers_at_most_its_cap_and_the_next_pass_goes_on_at_once() {
        assert_eq!(pass_capacity(16), 16);
        assert_eq!(pass_capacity(10_000), MAX_OFFERS_PER_PASS);
        // 10,000 free slots, 100,000 due: the pass pairs its cap, and is followed by another.
        let capacity = pass_capacity(10_000);
        assert!(pass_again(capacity, capacity, capacity));
        // 1,500 free slots, 1,200 due: 1,000 now, then 200, and then no more passes.
        assert!(pass_again(pass_capacity(1_500), 1_000, 1_000));
        assert!(!pass_again(pass_capacity(500), 200, 200));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=7).map(|f| retry_delay(f, base, cap).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(retry_delay(u32::MAX, base, cap), cap);
    }

    #[test]
    fn a_bot_is_lost_after_the_allowed_missed_heartbeats() {
        let beat = Duration::from_secs(5);
        assert!(!is_silent(at(0), at(15), beat, 3));
        assert!(is_silent(at(0), at(16), beat, 3));
    }

    fn state(status: TaskStatus) -> TaskState {
        TaskState { status, attempt: 2, bot_id: Some(id(100)), failures: 0, max_attempts: 3 }
    }

    #[test]
    fn events_of_the_current_attempt_move_the_task_once() {
        use TaskStatus::*;
        let me = id(100);
        assert_eq!(judge(&state(Assigned), 2, me, Report::Accepted), Verdict::Start);
        assert_eq!(judge(&state(Running), 2, me, Report::Accepted), Verdict::Duplicate);
        assert_eq!(judge(&state(Assigned), 2, me, Report::Rejected), Verdict::Requeue);
        assert_eq!(judge(&state(Running), 2, me, Report::Progress), Verdict::Progress);
        assert_eq!(judge(&state(Running), 2, me, Report::Completed), Verdict::Complete);
        assert_eq!(judge(&state(Complete), 2, me, Report::Completed), Verdict::Duplicate);
        assert_eq!(judge(&state(Running), 2, me, Report::Released), Verdict::Release);
        assert_eq!(
            judge(&state(Running), 2, me, Report::Failed { retryable: false }),
            Verdict::Fail
        );
    }

    #[test]
    fn retryable_failures_retry_until_max_attempts() {
        let me = id(100);
        let mut running = state(TaskStatus::Running);
        assert_eq!(judge(&running, 2, me, Report::Failed { retryable: true }), Verdict::RetryLater);
        running.failures = 2;
        assert_eq!(judge(&running, 2, me, Report::Failed { retryable: true }), Verdict::Fail);
    }

    #[test]
    fn stale_attempts_and_other_bots_change_nothing() {
        use TaskStatus::*;
        let me = id(100);
        assert_eq!(
            judge(&state(Running), 1, me, Report::Completed),
            Verdict::Stale { cancel_sender: false }
        );
        assert_eq!(
            judge(&state(Running), 1, me, Report::Progress),
            Verdict::Stale { cancel_sender: true }
        );
        assert_eq!(
            judge(&state(Running), 2, id(999), Report::Completed),
            Verdict::Stale { cancel_sender: false }
        );
        assert_eq!(
            judge(&state(Cancelled), 2, me, Report::Progress),
            Verdict::Stale { cancel_sender: true }
        );
        assert_eq!(
            judge(&state(Waiting), 2, me, Report::Accepted),
            Verdict::Stale { cancel_sender: true }
        );
        assert_eq!(
            judge(&state(Cancelled), 2, me, Report::Completed),
            Verdict::Stale { cancel_sender: false }
        );
    }
}
