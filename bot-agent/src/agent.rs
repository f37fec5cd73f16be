//! The agent's core, shared by both transports: deciding on offers ([`judge`], pure), holding
//! the one task a bot runs at a time, running it with progress reporting, cancelling it,
//! heartbeats and the graceful shutdown that hands an unfinished task back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use broker_config::{Assignment, BotName, Event, System, TaskRef};
use chrono::{DateTime, Utc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::automations::{Automations, Outcome};
use crate::config::AgentConfig;
use crate::progress::{ProgressSink, report_progress};
use crate::reporter::Reporter;

/// Why a task is handed back at shutdown.
pub const RELEASE_REASON: &str = "bot shutting down";
/// Why an offer a previous run of the bot left unacknowledged is refused (see [`judge`]).
pub const LEFT_BEHIND_REASON: &str =
    "redelivered from a previous run of this bot, which died holding it: not run again";
/// How many offers a run of the bot remembers, to tell the redeliveries of its own offers (a
/// requeue, a reconnection) from those a previous run left behind. One offer is handled at a
/// time, so a redelivery follows its first delivery closely: a few suffice.
const REMEMBERED_OFFERS: usize = 64;
/// Tries of a final event (completed, failed, released) before giving up on it.
const FINAL_REPORT_ATTEMPTS: u32 = 3;
/// How long a cancelled task may take to stop at shutdown before the agent stops anyway.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// What to do with an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The offer lapsed: do nothing (the orchestrator has offered the task again).
    Expired,
    /// This very attempt is already running here (a redelivered offer): accept again.
    AlreadyRunning,
    /// Decline, for this reason.
    Reject(String),
    /// Take it.
    Accept,
}

/// Decides on `assignment` at `now`, for a bot running `running` (if anything) that can run
/// `systems` and is `closing` (shutting down) or not. `left_behind` says the broker redelivered
/// an offer this run of the bot never had: a previous run died holding it, maybe because of it
/// (a poison task), and the orchestrator has taken it back when this run came online. Running it
/// could only crash this run too, uncounted (the orchestrator counts a lost run only for the
/// attempt it holds), so it is refused (`LEFT_BEHIND_REASON`); the refusal is a stale event.
pub fn judge(
    assignment: &Assignment,
    now: DateTime<Utc>,
    running: Option<TaskRef>,
    closing: bool,
    systems: &[System],
    left_behind: bool,
) -> Verdict {
    if now > assignment.offer_expires_at {
        return Verdict::Expired;
    }
    match running {
        Some(task) if task == assignment.task => return Verdict::AlreadyRunning,
        _ if left_behind => return Verdict::Reject(LEFT_BEHIND_REASON.to_owned()),
        Some(_) => return Verdict::Reject("busy".to_owned()),
        None => {}
    }
    if closing {
        return Verdict::Reject(RELEASE_REASON.to_owned());
    }
    if !systems.contains(&assignment.system) {
        return Verdict::Reject(format!("this bot cannot run {}", assignment.system));
    }
    Verdict::Accept
}

/// The task a bot holds, and how to stop it.
struct Running {
    task: TaskRef,
    /// Stops the automation between rows.
    cancel: CancellationToken,
    /// Stops every report about the task (the orchestrator cancelled it).
    silence: CancellationToken,
}

#[derive(Default)]
struct Slot {
    running: Option<Running>,
    closing: bool,
    /// The last offers this run had, newest last.
    offers: VecDeque<TaskRef>,
}

impl Slot {
    /// Remembers the offer `task`; whether this run had it before.
    fn remember(&mut self, task: TaskRef) -> bool {
        if self.offers.contains(&task) {
            return true;
        }
        if self.offers.len() == REMEMBERED_OFFERS {
            self.offers.pop_front();
        }
        self.offers.push_back(task);
        false
    }
}

/// An accepted offer's hold on the bot, handed to [`Agent::start`].
pub(crate) struct Ticket {
    cancel: CancellationToken,
    silence: CancellationToken,
}

/// What [`Agent::claim`] made of an offer.
pub(crate) enum Claim {
    Expired,
    AlreadyRunning,
    Rejected(String),
    /// The bot now holds the task: start it, or give it up with [`Agent::unclaim`].
    Accepted(Ticket),
}

/// A bot: its name, what it runs, where its events go, and the task it holds.
pub(crate) struct Agent {
    name: BotName,
    systems: Vec<System>,
    reporter: Reporter,
    automations: Automations,
    progress_interval: Duration,
    slot: Mutex<Slot>,
    tracker: TaskTracker,
    /// This run, announced in `bot.online`: the orchestrator tells a restart from the same
    /// announcement delivered twice.
    session: Uuid,
}

impl Agent {
    pub(crate) fn new(config: &AgentConfig, reporter: Reporter, automations: Automations) -> Agent {
        Agent {
            name: config.name.clone(),
            systems: config.systems.clone(),
            reporter,
            automations,
            progress_interval: config.progress_interval(),
            slot: Mutex::new(Slot::default()),
            tracker: TaskTracker::new(),
            session: Uuid::now_v7(),
        }
    }

    pub(crate) fn name(&self) -> &BotName {
        &self.name
    }

    /// The slot, locked; never held across an `.await`. Nothing is left half-changed by a
    /// panic while it is held, so poisoning is ignored.
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The attempt the bot is working on.
    pub(crate) fn current_task(&self) -> Option<TaskRef> {
        self.slot().running.as_ref().map(|r| r.task)
    }

    /// Decides on an offer and, when it is taken, holds the bot for it at once, so a second
    /// offer arriving meanwhile finds the bot busy.
    pub(crate) fn claim(&self, assignment: &Assignment, now: DateTime<Utc>) -> Claim {
        self.claim_delivery(assignment, now, false)
    }

    /// [`Agent::claim`] for an offer the broker delivered, `redelivered` or not: a redelivered
    /// offer this run never had is refused (see [`judge`]).
    pub(crate) fn claim_delivery(
        &self,
        assignment: &Assignment,
        now: DateTime<Utc>,
        redelivered: bool,
    ) -> Claim {
        let mut slot = self.slot();
        let had_it = slot.remember(assignment.task);
        let left_behind = redelivered && !had_it;
        let running = slot.running.as_ref().map(|r| r.task);
        match judge(assignment, now, running, slot.closing, &self.systems, left_behind) {
            Verdict::Expired => Claim::Expired,
            Verdict::AlreadyRunning => Claim::AlreadyRunning,
            Verdict::Reject(reason) => Claim::Rejected(reason),
            Verdict::Accept => {
                let ticket =
                    Ticket { cancel: CancellationToken::new(), silence: CancellationToken::new() };
                slot.running = Some(Running {
                    task: assignment.task,
                    cancel: ticket.cancel.clone(),
                    silence: ticket.silence.clone(),
                });
                Claim::Accepted(ticket)
            }
        }
    }

    /// Frees the bot if it holds `task`.
    pub(crate) fn unclaim(&self, task: TaskRef) {
        let mut slot = self.slot();
        if slot.running.as_ref().is_some_and(|r| r.task == task) {
            slot.running = None;
        }
    }

    /// Stops `task` if it is the one running, reporting nothing more about it, and frees the
    /// bot at once; whether it was running.
    pub(crate) fn cancel(&self, task: TaskRef, reason: &str) -> bool {
        let mut slot = self.slot();
        match slot.running.take_if(|r| r.task == task) {
            Some(running) => {
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, reason, "task cancelled");
                running.silence.cancel();
                running.cancel.cancel();
                true
            }
            None => {
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, reason, "cancel for a task not running here; nothing to do");
                false
            }
        }
    }

    /// `task.accepted` for `assignment`.
    pub(crate) fn accepted(&self, assignment: &Assignment) -> Event {
        Event::TaskAccepted { task: assignment.task, bot: self.name.clone(), at: Utc::now() }
    }

    /// `task.rejected` for `assignment`.
    pub(crate) fn rejected(&self, assignment: &Assignment, reason: String) -> Event {
        Event::TaskRejected {
            task: assignment.task,
            bot: self.name.clone(),
            reason,
            at: Utc::now(),
        }
    }

    /// Sends an event.
    pub(crate) async fn report(&self, event: &Event) -> Result<(), crate::reporter::ReportError> {
        self.reporter.report(event).await
    }

    /// Runs the claimed `assignment` in the background. With `announce`, `task.accepted` is
    /// reported first (HTTP mode, which answered the offer before reporting); if it cannot be,
    /// the task is given up.
    pub(crate) fn start(self: &Arc<Self>, assignment: Assignment, ticket: Ticket, announce: bool) {
        let span = tracing::info_span!("task", task_id = %assignment.task.task_id, attempt = assignment.task.attempt, system = %assignment.system);
        let agent = Arc::clone(self);
        self.tracker.spawn(
            async move {
                if announce && let Err(error) = agent.report(&agent.accepted(&assignment)).await {
                    tracing::error!(%error, "cannot report task.accepted; giving the task up");
                    agent.unclaim(assignment.task);
                    return;
                }
                agent.run_task(assignment, ticket).await;
            }
            .instrument(span),
        );
    }

    async fn run_task(&self, assignment: Assignment, ticket: Ticket) {
        let task = assignment.task;
        tracing::info!(description = %assignment.description, resume_after_row = assignment.resume_after_row, "task started");
        let (sink, rows) = ProgressSink::channel();
        let work = async {
            let mut sink = sink;
            let ran = self.automations.run(&assignment, &mut sink, &ticket.cancel).await;
            // Ends the progress loop once it has reported what is left.
            drop(sink);
            ran
        };
        let progress = report_progress(
            &self.reporter,
            &self.name,
            task,
            self.progress_interval,
            rows,
            &ticket.silence,
        );
        let ((outcome, log), unreported) = tokio::join!(work, progress);
        if ticket.silence.is_cancelled() {
            tracing::info!("task stopped after its cancellation");
            return;
        }
        tracing::info!(?outcome, "task ended");
        let event = final_event(&self.name, task, outcome, unreported, log);
        // Free before reporting: the orchestrator offers the next task as soon as it has applied
        // this report, and that offer can arrive before the broker's confirm of the report does;
        // a bot still holding the slot then would turn it down as "busy".
        // No heartbeat follows: the final event frees the bot, and a bot presumed lost meanwhile
        // is back with its next periodic heartbeat. (One used to follow every task: a quarter of
        // the broker's messages for short tasks, for nothing.)
        self.unclaim(task);
        self.report_final(&event).await;
    }

    async fn report_final(&self, event: &Event) {
        for attempt in 1..=FINAL_REPORT_ATTEMPTS {
            match self.report(event).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::error!(event = event.routing_key(), attempt, %error, "final event not reported")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tracing::error!(
            event = event.routing_key(),
            "giving up on the final event; the orchestrator will offer the task again"
        );
    }

    /// Reports `bot.online`.
    pub(crate) async fn announce_online(&self, ip_address: String) {
        let event = Event::BotOnline {
            bot: self.name.clone(),
            ip_address,
            systems: self.systems.clone(),
            session: Some(self.session),
            at: Utc::now(),
        };
        if let Err(error) = self.report(&event).await {
            tracing::error!(%error, "cannot report bot.online; heartbeats will follow");
        }
    }

    /// Reports `bot.offline`.
    pub(crate) async fn announce_offline(&self) {
        let event = Event::BotOffline { bot: self.name.clone(), at: Utc::now() };
        if let Err(error) = self.report(&event).await {
            tracing::error!(%error, "cannot report bot.offline");
        }
    }

    /// Reports one `bot.heartbeat` with the task it holds.
    pub(crate) async fn heartbeat(&self) {
        let event = Event::BotHeartbeat {
            bot: self.name.clone(),
            task: self.current_task(),
            at: Utc::now(),
        };
        if let Err(error) = self.report(&event).await {
            tracing::warn!(%error, "heartbeat not reported");
        }
    }

    /// Heartbeats every `interval` until `stop`.
    pub(crate) async fn heartbeats(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.heartbeat() => {}
            }
        }
    }

    /// Refuses new offers, lets a running task finish for up to `grace`, then stops it and
    /// hands it back (`task.released`), and waits for it to be reported.
    pub(crate) async fn shut_down(&self, grace: Duration) {
        self.slot().closing = true;
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_ok() {
            return;
        }
        if let Some(running) = self.slot().running.as_ref() {
            tracing::info!(task_id = %running.task.task_id, "task still running after the grace period; handing it back");
            running.cancel.cancel();
        }
        if tokio::time::timeout(STOP_WAIT, self.tracker.wait()).await.is_err() {
            tracing::error!("the task did not stop in time; stopping anyway");
        }
    }
}

/// The event that ends an attempt, carrying the rows not reported yet and the end of its log.
pub fn final_event(
    bot: &BotName,
    task: TaskRef,
    outcome: Outcome,
    rows: Vec<broker_config::RowOutcome>,
    log: Option<String>,
) -> Event {
    let bot = bot.clone();
    let at = Utc::now();
    match outcome {
        Outcome::Completed { output } => Event::TaskCompleted { task, bot, rows, output, log, at },
        Outcome::Failed { error, retryable } => {
            Event::TaskFailed { task, bot, rows, error, retryable, log, at }
        }
        // Only the shutdown cancels without silencing the task.
        Outcome::Cancelled => {
            Event::TaskReleased { task, bot, rows, reason: RELEASE_REASON.to_owned(), at }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn offer(
        system: System,
        attempt: u32,
        expires_in: TimeDelta,
        now: DateTime<Utc>,
    ) -> Assignment {
        Assignment {
            task: TaskRef { task_id: uuid::Uuid::nil(), attempt },
            system,
            description: String::new(),
            attachment: None,
            payload: None,
            resume_after_row: 0,
            offer_expires_at: now + expires_in,
        }
    }

    #[test]
    fn offers_are_judged_expiry_first_then_load_then_ability() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let fresh = offer(System::NOOP, 1, TimeDelta::seconds(10), now);
        let other = TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 };
        assert_eq!(judge(&fresh, now, None, false, &systems, false), Verdict::Accept);
        assert_eq!(
            judge(&fresh, now, None, false, &[System::VIVO360], false),
            Verdict::Reject("this bot cannot run NOOP".into())
        );
        assert_eq!(
            judge(&fresh, now, Some(other), false, &systems, false),
            Verdict::Reject("busy".into())
        );
        assert_eq!(
            judge(&fresh, now, Some(fresh.task), false, &systems, false),
            Verdict::AlreadyRunning
        );
        assert_eq!(
            judge(&fresh, now, None, true, &systems, false),
            Verdict::Reject(RELEASE_REASON.into())
        );
        let lapsed = offer(System::NOOP, 1, TimeDelta::seconds(-1), now);
        assert_eq!(judge(&lapsed, now, Some(other), false, &systems, false), Verdict::Expired);
        let exactly_now = offer(System::NOOP, 1, TimeDelta::zero(), now);
        assert_eq!(judge(&exactly_now, now, None, false, &systems, false), Verdict::Accept);
    }

    #[test]
    fn an_offer_a_previous_run_left_behind_is_refused_unless_expired() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let fresh = offer(System::NOOP, 2, TimeDelta::seconds(10), now);
        let left_behind = Verdict::Reject(LEFT_BEHIND_REASON.into());
        assert_eq!(judge(&fresh, now, None, false, &systems, true), left_behind);
        let other = TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 };
        assert_eq!(judge(&fresh, now, Some(other), false, &systems, true), left_behind);
        let lapsed = offer(System::NOOP, 2, TimeDelta::seconds(-1), now);
        assert_eq!(judge(&lapsed, now, None, false, &systems, true), Verdict::Expired);
    }

    #[test]
    fn a_run_tells_its_own_redeliveries_from_offers_left_behind() {
        let mut slot = Slot::default();
        let first = TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 };
        assert!(!slot.remember(first), "never had it");
        assert!(slot.remember(first), "its own offer, redelivered (a requeue, a reconnection)");
        let next = TaskRef { attempt: 2, ..first };
        assert!(!slot.remember(next), "another attempt is another offer");
        for n in 0..REMEMBERED_OFFERS {
            slot.remember(TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 + n as u32 });
        }
        assert_eq!(slot.offers.len(), REMEMBERED_OFFERS, "bounded");
        assert!(!slot.remember(first), "forgotten after {REMEMBERED_OFFERS} others");
    }

    #[test]
    fn outcomes_become_final_events_with_the_unreported_rows() {
        let bot = BotName::parse("b").expect("name");
        let task = TaskRef { task_id: uuid::Uuid::nil(), attempt: 3 };
        let row = broker_config::RowOutcome {
            row: 7,
            status: broker_config::RowStatus::Done,
            message: "row 7 done".into(),
        };
        let failed = final_event(&bot, task, Outcome::retryable("down"), vec![row.clone()], None);
        assert!(matches!(
            failed,
            Event::TaskFailed { retryable: true, ref error, ref rows, .. } if error == "down" && rows == std::slice::from_ref(&row)
        ));
        let released = final_event(&bot, task, Outcome::Cancelled, vec![], None);
        assert!(
            matches!(released, Event::TaskReleased { ref reason, .. } if reason == RELEASE_REASON)
        );
        let completed =
            final_event(&bot, task, Outcome::Completed { output: None }, vec![row], None);
        assert_eq!(completed.routing_key(), "task.completed");
    }
}
