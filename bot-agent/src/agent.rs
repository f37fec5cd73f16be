//! The agent's core, shared by both transports: deciding on offers ([`judge`], pure), holding
//! the tasks a bot runs at once (up to its `slots`, one by default), running each with
//! progress reporting, cancelling one, heartbeats and the graceful shutdown that hands the
//! unfinished ones back.

use std::collections::{HashMap, VecDeque};
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
use crate::reporter::{ReportError, Reporter, Submitted};

/// Why a task is handed back at shutdown.
pub const RELEASE_REASON: &str = "bot shutting down";
/// Why an offer a previous run of the bot left unacknowledged is refused (see [`judge`]).
pub const LEFT_BEHIND_REASON: &str =
    "redelivered from a previous run of this bot, which died holding it: not run again";
/// The fewest offers a run of the bot remembers, to tell the redeliveries of its own offers (a
/// requeue, a reconnection) from those a previous run left behind (see [`remembered_offers`]).
const MIN_REMEMBERED_OFFERS: usize = 64;
/// Offers remembered per slot beyond [`MIN_REMEMBERED_OFFERS`]: each slot can have an offer
/// being answered, one waiting unacknowledged (AMQP mode prefetches one per slot) and a task
/// running whose offer may come back; four each leaves room for the rejected ones between.
const REMEMBERED_OFFERS_PER_SLOT: usize = 4;
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

/// Decides on `assignment` at `now`, for a bot with `slots` slots running the attempts
/// `running` that can run `systems` and is `closing` (shutting down) or not. The checks go in
/// this order: expired, already running here, left behind, busy (all `slots` taken; a bot with
/// none is always busy), closing, able to run the system.
///
/// `left_behind` says the broker redelivered an offer this run of the bot never had: a previous
/// run died holding it, maybe because of it (a poison task), and the orchestrator has taken it
/// back when this run came online. Running it could only crash this run too, uncounted (the
/// orchestrator counts a lost run only for the attempt it holds), so it is refused
/// (`LEFT_BEHIND_REASON`); the refusal is a stale event.
pub fn judge(
    assignment: &Assignment,
    now: DateTime<Utc>,
    running: &[TaskRef],
    slots: usize,
    closing: bool,
    systems: &[System],
    left_behind: bool,
) -> Verdict {
    if now > assignment.offer_expires_at {
        return Verdict::Expired;
    }
    if running.contains(&assignment.task) {
        return Verdict::AlreadyRunning;
    }
    if left_behind {
        return Verdict::Reject(LEFT_BEHIND_REASON.to_owned());
    }
    if running.len() >= slots {
        return Verdict::Reject("busy".to_owned());
    }
    if closing {
        return Verdict::Reject(RELEASE_REASON.to_owned());
    }
    if !systems.contains(&assignment.system) {
        return Verdict::Reject(format!("this bot cannot run {}", assignment.system));
    }
    Verdict::Accept
}

/// How many offers a run of a bot with `slots` slots remembers (see [`Slots::remember`]): with
/// many slots, many offers are in flight at once, and a reconnection can bring back as many
/// unacknowledged ones together.
fn remembered_offers(slots: usize) -> usize {
    slots.saturating_mul(REMEMBERED_OFFERS_PER_SLOT).max(MIN_REMEMBERED_OFFERS)
}

/// What became of an offer this run of the bot had, to answer its redeliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Offered: being answered, turned down, running, or stopped before its end (its acceptance
    /// was not confirmed). A redelivery is judged again.
    Offered,
    /// Its run here came to its end (completed, failed or handed back) and reported it: a
    /// redelivery is not run again.
    Ran,
    /// The orchestrator cancelled it: a redelivery is not run again.
    Cancelled,
}

impl Fate {
    /// Why a redelivered offer of this fate is ignored, if it is.
    fn ended(self) -> Option<&'static str> {
        match self {
            Fate::Offered => None,
            Fate::Ran => Some("this attempt already ran here"),
            Fate::Cancelled => Some("this attempt was cancelled"),
        }
    }
}

/// What the bot holds: the attempts it runs (up to its slots), whether it is closing, and the
/// offers this run had. Pure state, no IO: [`Agent`] locks it and acts on what it says.
struct Slots {
    /// How many attempts it may hold at once.
    capacity: usize,
    /// The attempts it holds, oldest first: the first is the one a heartbeat's `task` names.
    running: Vec<TaskRef>,
    /// How to stop each attempt of `running`.
    tickets: HashMap<TaskRef, Ticket>,
    /// The bot is shutting down: it takes no more offers.
    closing: bool,
    /// The last offers this run had, newest last, at most `remembered` of them.
    offers: VecDeque<TaskRef>,
    /// The same offers with what became of each, to look one up without walking thousands.
    offers_seen: HashMap<TaskRef, Fate>,
    /// How many offers it remembers ([`remembered_offers`]).
    remembered: usize,
    /// The serial number of the next ticket.
    next_serial: u64,
}

impl Slots {
    /// Empty slots, `capacity` of them (a bot with none is always busy).
    fn new(capacity: usize) -> Slots {
        Slots {
            capacity,
            running: Vec::new(),
            tickets: HashMap::new(),
            closing: false,
            offers: VecDeque::new(),
            offers_seen: HashMap::new(),
            remembered: remembered_offers(capacity),
            next_serial: 0,
        }
    }

    /// Remembers the offer `task`; whether this run had it before.
    fn remember(&mut self, task: TaskRef) -> bool {
        if self.offers_seen.contains_key(&task) {
            return true;
        }
        if self.offers.len() >= self.remembered
            && let Some(oldest) = self.offers.pop_front()
        {
            self.offers_seen.remove(&oldest);
        }
        self.offers.push_back(task);
        self.offers_seen.insert(task, Fate::Offered);
        false
    }

    /// Records what became of the offer `task`, if this run remembers it.
    fn settle(&mut self, task: TaskRef, fate: Fate) {
        if let Some(known) = self.offers_seen.get_mut(&task) {
            *known = fate;
        }
    }

    /// Judges `assignment` (see [`judge`]), `redelivered` by the broker or not, and takes a slot
    /// for it when it is accepted. An offer of an attempt whose run came to its end here, or that
    /// was cancelled, is not run again ([`Claim::Ended`]), whether the broker marks it redelivered
    /// or not: a publisher that lost the broker's confirm of an offer publishes it again, and the
    /// broker may hold both copies (each attempt is offered once, so a second copy is never new
    /// work). One whose run was stopped because its acceptance was not confirmed is judged as a
    /// new offer.
    fn claim(
        &mut self,
        assignment: &Assignment,
        now: DateTime<Utc>,
        redelivered: bool,
        systems: &[System],
    ) -> Claim {
        let had_it = self.remember(assignment.task);
        let left_behind = redelivered && !had_it;
        let ended = self.offers_seen.get(&assignment.task).and_then(|fate| fate.ended());
        let verdict = judge(
            assignment,
            now,
            &self.running,
            self.capacity,
            self.closing,
            systems,
            left_behind,
        );
        match (verdict, ended) {
            (Verdict::Expired, _) => Claim::Expired,
            (Verdict::AlreadyRunning, _) => Claim::AlreadyRunning,
            (_, Some(why)) => Claim::Ended(why),
            (Verdict::Reject(reason), None) => Claim::Rejected(reason),
            (Verdict::Accept, None) => {
                let ticket = Ticket {
                    cancel: CancellationToken::new(),
                    silence: CancellationToken::new(),
                    serial: self.next_serial,
                };
                self.next_serial += 1;
                self.running.push(assignment.task);
                self.tickets.insert(assignment.task, ticket.clone());
                Claim::Accepted(ticket)
            }
        }
    }

    /// Frees the slot of `task`, if it holds one; the task's ticket.
    fn release(&mut self, task: TaskRef) -> Option<Ticket> {
        self.running.retain(|held| *held != task);
        self.tickets.remove(&task)
    }

    /// Frees the slot of `task` if `ticket` (not a later claim of the same attempt) holds it;
    /// the ticket it held.
    fn release_ticket(&mut self, task: TaskRef, ticket: &Ticket) -> Option<Ticket> {
        if self.tickets.get(&task).is_some_and(|held| held.serial == ticket.serial) {
            self.release(task)
        } else {
            None
        }
    }

    /// The run of `task` under `ticket` came to its end: frees its slot and remembers the
    /// attempt ran, unless the run was silenced (cancelled, or stopped), which then says nothing
    /// more; whether it may report its end.
    fn finish(&mut self, task: TaskRef, ticket: &Ticket) -> bool {
        if ticket.silence.is_cancelled() {
            return false;
        }
        self.release_ticket(task, ticket);
        self.settle(task, Fate::Ran);
        true
    }
}

/// An accepted offer's hold on a slot of the bot, handed to [`Agent::start`]; the bot keeps a
/// copy, to stop the task.
#[derive(Clone)]
pub(crate) struct Ticket {
    /// Stops the automation between rows.
    cancel: CancellationToken,
    /// Stops every report about the task (the orchestrator cancelled it).
    silence: CancellationToken,
    /// Tells this claim of an attempt from a later claim of the same attempt (after a stop).
    serial: u64,
}

impl Ticket {
    /// Stops the run and every report about it.
    fn stop_silently(&self) {
        self.silence.cancel();
        self.cancel.cancel();
    }
}

/// What [`Agent::claim`] made of an offer.
pub(crate) enum Claim {
    /// The offer lapsed: ignore it.
    Expired,
    /// This very attempt runs here: accept it again.
    AlreadyRunning,
    /// A redelivered offer of an attempt that ended here (it ran to its end, or was cancelled):
    /// ignore it, for this reason.
    Ended(&'static str),
    /// Decline it, for this reason.
    Rejected(String),
    /// The bot now holds the task: start it, or give it up with [`Agent::unclaim`].
    Accepted(Ticket),
}

/// A bot: its name, what it runs, where its events go, and the tasks it holds.
pub(crate) struct Agent {
    name: BotName,
    systems: Vec<System>,
    /// How many tasks it runs at once, as announced in `bot.online`.
    slot_count: u32,
    reporter: Reporter,
    automations: Automations,
    progress_interval: Duration,
    slots: Mutex<Slots>,
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
            slot_count: config.slots,
            reporter,
            automations,
            progress_interval: config.progress_interval(),
            // A u32 fits a usize on every target Botline builds for; saturating keeps it total.
            slots: Mutex::new(Slots::new(usize::try_from(config.slots).unwrap_or(usize::MAX))),
            tracker: TaskTracker::new(),
            session: Uuid::now_v7(),
        }
    }

    pub(crate) fn name(&self) -> &BotName {
        &self.name
    }

    /// The slots, locked; never held across an `.await`. Nothing is left half-changed by a
    /// panic while they are held, so poisoning is ignored.
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The attempts the bot is working on, oldest first.
    pub(crate) fn current_tasks(&self) -> Vec<TaskRef> {
        self.slots().running.clone()
    }

    /// Decides on an offer and, when it is taken, holds a slot for it at once, so an offer
    /// arriving meanwhile finds that slot taken.
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
        let (claim, running) = {
            let mut slots = self.slots();
            let claim = slots.claim(assignment, now, redelivered, &self.systems);
            (claim, slots.running.len())
        };
        let answer = match &claim {
            Claim::Expired => "expired",
            Claim::AlreadyRunning => "already_running",
            Claim::Ended(_) => "ended",
            Claim::Rejected(_) => "rejected",
            Claim::Accepted(_) => "accepted",
        };
        crate::metrics::offer(&self.name, answer);
        crate::metrics::slots(&self.name, self.slot_count, running);
        claim
    }

    /// Frees the slot of `task`, if the bot holds it; the other tasks go on.
    pub(crate) fn unclaim(&self, task: TaskRef) {
        self.slots().release(task);
    }

    /// Stops `task` if it is running here, reporting nothing more about it, and frees its slot
    /// at once; whether it was running. The other tasks go on. A redelivery of its offer is not
    /// run again.
    pub(crate) fn cancel(&self, task: TaskRef, reason: &str) -> bool {
        let released = {
            let mut slots = self.slots();
            slots.settle(task, Fate::Cancelled);
            let released = slots.release(task);
            // Silenced while the slots are locked, so a run ending now cannot report its end.
            if let Some(ticket) = &released {
                ticket.stop_silently();
            }
            released
        };
        match released {
            Some(_) => {
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, reason, "task cancelled");
                true
            }
            None => {
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, reason, "cancel for a task not running here; nothing to do");
                false
            }
        }
    }

    /// Stops the run `ticket` started for `task` when its `task.accepted` could not be
    /// confirmed: silently (it reports nothing more, as after [`Agent::cancel`]), freeing its
    /// slot at once. A redelivery of the offer is judged as a new offer, so it can be claimed
    /// again. Returns whether the run was still going; `false` when it had already come to its
    /// end, whose event (which implies the acceptance) is then on its way, and a redelivery is
    /// not run again.
    pub(crate) fn stop_unconfirmed(&self, task: TaskRef, ticket: &Ticket) -> bool {
        let mut slots = self.slots();
        match slots.release_ticket(task, ticket) {
            Some(held) => {
                // Silenced while the slots are locked, so the run cannot be ending meanwhile.
                held.stop_silently();
                true
            }
            None => false,
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
    pub(crate) async fn report(&self, event: &Event) -> Result<(), ReportError> {
        self.reporter.report(event).await
    }

    /// Queues an event at once (see [`Reporter::submit`]); the future says when it is confirmed.
    pub(crate) fn submit(&self, event: Event) -> Submitted {
        self.reporter.submit(event)
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
        let began = std::time::Instant::now();
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
        // Free before reporting: the orchestrator offers the next task as soon as it has applied
        // this report, and that offer can arrive before the broker's confirm of the report does;
        // a bot still holding this slot then would turn it down as "busy" when it was the last.
        // No heartbeat follows: the final event frees the bot, and a bot presumed lost meanwhile
        // is back with its next periodic heartbeat. (One used to follow every task: a quarter of
        // the broker's messages for short tasks, for nothing.) A run silenced meanwhile (its
        // task cancelled, or its acceptance not confirmed) says nothing more: checked with the
        // slots locked, as the silencing is done.
        let (finished, running) = {
            let mut slots = self.slots();
            (slots.finish(task, &ticket), slots.running.len())
        };
        crate::metrics::slots(&self.name, self.slot_count, running);
        if !finished {
            tracing::info!("task stopped after its cancellation");
            return;
        }
        tracing::info!(?outcome, "task ended");
        let ended = match &outcome {
            Outcome::Completed { .. } => "completed",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "released",
        };
        crate::metrics::run(&self.name, &assignment.system, ended, began.elapsed());
        let event = final_event(&self.name, task, outcome, unreported, log);
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
            slots: Some(self.slot_count),
            // On the broker it reads several offers to a message (`tasks.assign`); over HTTP the
            // orchestrator pushes one offer per call.
            batches: self.reporter.is_amqp(),
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

    /// Reports one `bot.heartbeat` with the tasks it holds: all in `tasks`, and the oldest in
    /// `task`, which is what an orchestrator from before slots reads.
    pub(crate) async fn heartbeat(&self) {
        let event = heartbeat_event(&self.name, self.current_tasks());
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

    /// Refuses new offers, lets the running tasks finish for up to `grace`, then stops every one
    /// still running, each handed back (`task.released`), and waits up to [`STOP_WAIT`] for them
    /// to be reported.
    pub(crate) async fn shut_down(&self, grace: Duration) {
        self.slots().closing = true;
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_ok() {
            return;
        }
        {
            let slots = self.slots();
            for (task, ticket) in &slots.tickets {
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, "task still running after the grace period; handing it back");
                // Not silenced: the run reports its `task.released`.
                ticket.cancel.cancel();
            }
        }
        if tokio::time::timeout(STOP_WAIT, self.tracker.wait()).await.is_err() {
            tracing::error!("tasks did not stop in time; stopping anyway");
        }
    }
}

/// The `bot.heartbeat` of a bot holding `tasks` (oldest first): `task` the oldest, for an
/// orchestrator from before slots, `tasks` all of them (empty, and so left out, when none).
fn heartbeat_event(bot: &BotName, tasks: Vec<TaskRef>) -> Event {
    Event::BotHeartbeat { bot: bot.clone(), task: tasks.first().copied(), tasks, at: Utc::now() }
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

    /// An attempt of a task of its own.
    fn task() -> TaskRef {
        TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 }
    }

    /// `assignment` with another attempt of another task.
    fn another(assignment: &Assignment) -> Assignment {
        Assignment { task: task(), ..assignment.clone() }
    }

    #[test]
    fn offers_are_judged_expiry_first_then_load_then_ability() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let fresh = offer(System::NOOP, 1, TimeDelta::seconds(10), now);
        let other = task();
        assert_eq!(judge(&fresh, now, &[], 1, false, &systems, false), Verdict::Accept);
        assert_eq!(
            judge(&fresh, now, &[], 1, false, &[System::VIVO360], false),
            Verdict::Reject("this bot cannot run NOOP".into())
        );
        assert_eq!(
            judge(&fresh, now, &[other], 1, false, &systems, false),
            Verdict::Reject("busy".into())
        );
        assert_eq!(
            judge(&fresh, now, &[fresh.task], 1, false, &systems, false),
            Verdict::AlreadyRunning
        );
        assert_eq!(
            judge(&fresh, now, &[], 1, true, &systems, false),
            Verdict::Reject(RELEASE_REASON.into())
        );
        assert_eq!(
            judge(&fresh, now, &[other], 1, true, &systems, false),
            Verdict::Reject("busy".into()),
            "busy before closing"
        );
        let lapsed = offer(System::NOOP, 1, TimeDelta::seconds(-1), now);
        assert_eq!(judge(&lapsed, now, &[other], 1, false, &systems, false), Verdict::Expired);
        let exactly_now = offer(System::NOOP, 1, TimeDelta::zero(), now);
        assert_eq!(judge(&exactly_now, now, &[], 1, false, &systems, false), Verdict::Accept);
    }

    #[test]
    fn judge_accepts_while_a_slot_is_free_and_says_busy_when_all_are_taken() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let fresh = offer(System::NOOP, 1, TimeDelta::seconds(10), now);
        let held = [task(), task(), task()];
        for running in 0..held.len() {
            assert_eq!(
                judge(&fresh, now, &held[..running], 3, false, &systems, false),
                Verdict::Accept,
                "{running} of 3 slots taken"
            );
        }
        assert_eq!(
            judge(&fresh, now, &held, 3, false, &systems, false),
            Verdict::Reject("busy".into())
        );
        assert_eq!(
            judge(&fresh, now, &held[..2], 3, false, &[System::VIVO360], false),
            Verdict::Reject("this bot cannot run NOOP".into()),
            "a free slot does not make the bot able"
        );
        assert_eq!(
            judge(&fresh, now, &held[..2], 3, true, &systems, false),
            Verdict::Reject(RELEASE_REASON.into()),
            "a closing bot takes nothing, free slots or not"
        );
        assert_eq!(
            judge(&fresh, now, &[], 0, false, &systems, false),
            Verdict::Reject("busy".into()),
            "no slots: always busy"
        );
    }

    #[test]
    fn an_attempt_among_several_running_is_already_running_even_when_all_slots_are_taken() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let fresh = offer(System::NOOP, 1, TimeDelta::seconds(10), now);
        let held = [task(), fresh.task, task()];
        assert_eq!(judge(&fresh, now, &held, 3, false, &systems, false), Verdict::AlreadyRunning);
        assert_eq!(judge(&fresh, now, &held, 5, true, &systems, true), Verdict::AlreadyRunning);
        let next_attempt = Assignment { task: TaskRef { attempt: 2, ..fresh.task }, ..fresh };
        assert_eq!(
            judge(&next_attempt, now, &held, 3, false, &systems, false),
            Verdict::Reject("busy".into()),
            "another attempt of a task held is another offer"
        );
    }

    #[test]
    fn an_offer_a_previous_run_left_behind_is_refused_unless_expired() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let fresh = offer(System::NOOP, 2, TimeDelta::seconds(10), now);
        let left_behind = Verdict::Reject(LEFT_BEHIND_REASON.into());
        assert_eq!(judge(&fresh, now, &[], 1, false, &systems, true), left_behind);
        let other = task();
        assert_eq!(judge(&fresh, now, &[other], 1, false, &systems, true), left_behind);
        assert_eq!(judge(&fresh, now, &[other], 4, false, &systems, true), left_behind);
        let lapsed = offer(System::NOOP, 2, TimeDelta::seconds(-1), now);
        assert_eq!(judge(&lapsed, now, &[], 1, false, &systems, true), Verdict::Expired);
    }

    #[test]
    fn a_run_tells_its_own_redeliveries_from_offers_left_behind() {
        let mut slots = Slots::new(1);
        let first = task();
        assert!(!slots.remember(first), "never had it");
        assert!(slots.remember(first), "its own offer, redelivered (a requeue, a reconnection)");
        let next = TaskRef { attempt: 2, ..first };
        assert!(!slots.remember(next), "another attempt is another offer");
        for _ in 0..MIN_REMEMBERED_OFFERS {
            slots.remember(task());
        }
        assert_eq!(slots.offers.len(), MIN_REMEMBERED_OFFERS, "bounded");
        assert_eq!(slots.offers_seen.len(), MIN_REMEMBERED_OFFERS, "the lookup set too");
        assert!(!slots.remember(first), "forgotten after {MIN_REMEMBERED_OFFERS} others");
    }

    #[test]
    fn the_offers_remembered_grow_with_the_slots() {
        assert_eq!(remembered_offers(1), MIN_REMEMBERED_OFFERS);
        assert_eq!(remembered_offers(16), MIN_REMEMBERED_OFFERS, "a few slots: the least");
        assert_eq!(remembered_offers(100), 100 * REMEMBERED_OFFERS_PER_SLOT);
        let most = usize::try_from(broker_config::messages::MAX_SLOTS).expect("fits");
        assert_eq!(remembered_offers(most), most * REMEMBERED_OFFERS_PER_SLOT);
        assert_eq!(remembered_offers(usize::MAX), usize::MAX, "saturates");

        // A bot with 100 slots still knows its first offer after 300 others.
        let mut slots = Slots::new(100);
        let first = task();
        assert!(!slots.remember(first));
        for _ in 0..300 {
            slots.remember(task());
        }
        assert!(slots.remember(first), "still remembered among {} offers", slots.offers.len());
        for _ in 0..remembered_offers(100) {
            slots.remember(task());
        }
        assert_eq!(slots.offers.len(), remembered_offers(100), "bounded");
        assert!(!slots.remember(first), "forgotten at last");
    }

    #[test]
    fn a_bot_with_several_slots_claims_until_full_and_each_unclaim_frees_one() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let mut slots = Slots::new(3);
        let offers: Vec<Assignment> =
            (0..4).map(|_| another(&offer(System::NOOP, 1, TimeDelta::seconds(10), now))).collect();
        for offer in &offers[..3] {
            assert!(matches!(slots.claim(offer, now, false, &systems), Claim::Accepted(_)));
        }
        assert_eq!(slots.running, [offers[0].task, offers[1].task, offers[2].task], "oldest first");
        assert!(
            matches!(slots.claim(&offers[3], now, false, &systems), Claim::Rejected(ref r) if r == "busy")
        );
        assert!(matches!(slots.claim(&offers[1], now, true, &systems), Claim::AlreadyRunning));

        assert!(slots.release(offers[1].task).is_some());
        assert!(slots.release(offers[1].task).is_none(), "released once");
        assert_eq!(slots.running, [offers[0].task, offers[2].task], "the others go on, in order");
        assert_eq!(slots.tickets.len(), 2);
        assert!(matches!(slots.claim(&offers[3], now, false, &systems), Claim::Accepted(_)));
        assert_eq!(slots.running, [offers[0].task, offers[2].task, offers[3].task]);
        for offer in &offers {
            slots.release(offer.task);
        }
        assert!(slots.running.is_empty() && slots.tickets.is_empty());
    }

    /// An agent with `slots` slots whose reports go nowhere (its tests report nothing).
    fn agent(slots: u32) -> Agent {
        let mut config = AgentConfig::new(
            BotName::parse("b").expect("name"),
            vec![System::NOOP],
            "amqp://unused",
        );
        config.slots = slots;
        let reporter = Reporter::Http(crate::reporter::HttpReporter::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9",
            Uuid::nil(),
        ));
        let vivo360 = crate::automations::vivo360::Vivo360::new("http://127.0.0.1:9", "u", "p")
            .expect("client");
        let notify = crate::automations::notify::Notify::new("http://127.0.0.1:9").expect("client");
        let automations = Automations { vivo360, cpe: None, notify, programs: Default::default() };
        Agent::new(&config, reporter, automations)
    }

    #[test]
    fn an_agent_claims_and_unclaims_several_tasks_each_on_its_own() {
        let now = Utc::now();
        let agent = agent(2);
        let first = offer(System::NOOP, 1, TimeDelta::seconds(10), now);
        let second = another(&first);
        let third = another(&first);
        assert!(matches!(agent.claim(&first, now), Claim::Accepted(_)));
        assert!(matches!(agent.claim(&second, now), Claim::Accepted(_)));
        assert!(matches!(agent.claim(&third, now), Claim::Rejected(ref r) if r == "busy"));
        assert_eq!(agent.current_tasks(), [first.task, second.task]);
        assert!(matches!(agent.claim(&first, now), Claim::AlreadyRunning));

        agent.unclaim(first.task);
        assert_eq!(agent.current_tasks(), [second.task]);
        agent.unclaim(third.task);
        assert_eq!(agent.current_tasks(), [second.task], "unclaiming a task not held: nothing");
        assert!(matches!(agent.claim(&third, now), Claim::Accepted(_)));
        assert_eq!(agent.current_tasks(), [second.task, third.task]);
    }

    #[test]
    fn cancelling_one_task_stops_only_it_and_frees_its_slot() {
        let now = Utc::now();
        let agent = agent(3);
        let offers: Vec<Assignment> =
            (0..3).map(|_| another(&offer(System::NOOP, 1, TimeDelta::seconds(10), now))).collect();
        let tickets: Vec<Ticket> = offers
            .iter()
            .map(|offer| match agent.claim(offer, now) {
                Claim::Accepted(ticket) => ticket,
                _ => panic!("a slot is free"),
            })
            .collect();
        assert!(agent.cancel(offers[1].task, "test"));
        assert!(tickets[1].cancel.is_cancelled() && tickets[1].silence.is_cancelled());
        for kept in [&tickets[0], &tickets[2]] {
            assert!(
                !kept.cancel.is_cancelled() && !kept.silence.is_cancelled(),
                "the others go on"
            );
        }
        assert_eq!(agent.current_tasks(), [offers[0].task, offers[2].task]);
        assert!(!agent.cancel(offers[1].task, "again"), "cancelled once");
        let next = another(&offers[0]);
        assert!(matches!(agent.claim(&next, now), Claim::Accepted(_)), "its slot is free again");
    }

    #[test]
    fn an_offer_of_an_attempt_that_ran_or_was_cancelled_here_is_not_run_again() {
        let now = Utc::now();
        let systems = [System::NOOP];
        let mut slots = Slots::new(2);
        let ran = offer(System::NOOP, 1, TimeDelta::seconds(10), now);
        let Claim::Accepted(ticket) = slots.claim(&ran, now, false, &systems) else {
            panic!("a slot is free");
        };
        assert!(slots.finish(ran.task, &ticket), "not silenced: it reports its end");
        assert!(slots.running.is_empty(), "its slot is free");
        assert!(matches!(
            slots.claim(&ran, now, true, &systems),
            Claim::Ended(why) if why == "this attempt already ran here"
        ));
        // A second copy of the offer, not marked redelivered: its publisher lost the broker's
        // confirm (a restart) and published it again. Running it again would take a slot for
        // work done, and turn down the next offer as busy.
        assert!(matches!(
            slots.claim(&ran, now, false, &systems),
            Claim::Ended(why) if why == "this attempt already ran here"
        ));

        let agent = agent(2);
        let cancelled = another(&ran);
        assert!(matches!(agent.claim(&cancelled, now), Claim::Accepted(_)));
        assert!(agent.cancel(cancelled.task, "by a user"));
        assert!(matches!(
            agent.claim_delivery(&cancelled, now, true),
            Claim::Ended(why) if why == "this attempt was cancelled"
        ));
        let expired = Assignment { offer_expires_at: now - TimeDelta::seconds(1), ..ran };
        assert!(
            matches!(slots.claim(&expired, now, true, &systems), Claim::Expired),
            "expired first"
        );
    }

    #[test]
    fn a_run_whose_acceptance_was_not_confirmed_stops_silently_and_its_offer_can_be_claimed_again()
    {
        let now = Utc::now();
        let agent = agent(1);
        let first = offer(System::NOOP, 1, TimeDelta::seconds(10), now);
        let Claim::Accepted(stopped) = agent.claim_delivery(&first, now, false) else {
            panic!("a slot is free");
        };
        assert!(agent.stop_unconfirmed(first.task, &stopped), "it was running");
        assert!(stopped.cancel.is_cancelled() && stopped.silence.is_cancelled());
        assert!(agent.current_tasks().is_empty(), "its slot is free at once");
        assert!(!agent.slots().finish(first.task, &stopped), "silenced: it reports no end");

        // The requeued offer comes back: this run had it, and it did not run to its end.
        let Claim::Accepted(again) = agent.claim_delivery(&first, now, true) else {
            panic!("claimed again");
        };
        assert_eq!(agent.current_tasks(), [first.task]);
        assert!(
            !agent.stop_unconfirmed(first.task, &stopped),
            "the stopped claim no longer holds the attempt"
        );
        assert!(!again.silence.is_cancelled(), "the new run goes on");
        assert!(agent.slots().finish(first.task, &again));
        assert!(
            !agent.stop_unconfirmed(first.task, &again),
            "a run that came to its end is not stopped: its end implies the acceptance"
        );
        assert!(matches!(agent.claim_delivery(&first, now, true), Claim::Ended(_)));

        // A full bot turns the redelivery down cleanly instead.
        let second = another(&first);
        let Claim::Accepted(ticket) = agent.claim_delivery(&second, now, false) else {
            panic!("a slot is free");
        };
        assert!(agent.stop_unconfirmed(second.task, &ticket));
        let third = another(&first);
        assert!(matches!(agent.claim_delivery(&third, now, false), Claim::Accepted(_)));
        assert!(matches!(
            agent.claim_delivery(&second, now, true),
            Claim::Rejected(ref reason) if reason == "busy"
        ));
    }

    #[test]
    fn a_heartbeat_names_the_oldest_task_and_lists_them_all() {
        let bot = BotName::parse("b").expect("name");
        let (first, second) = (task(), task());
        let Event::BotHeartbeat { task, tasks, .. } = heartbeat_event(&bot, vec![first, second])
        else {
            panic!("a heartbeat");
        };
        assert_eq!((task, tasks), (Some(first), vec![first, second]));
        let idle = heartbeat_event(&bot, vec![]);
        assert!(
            matches!(idle, Event::BotHeartbeat { task: None, ref tasks, .. } if tasks.is_empty())
        );
        let json: serde_json::Value =
            serde_json::from_slice(&broker_config::messages::encode(&idle)).expect("json");
        assert!(json.get("tasks").is_none(), "left out when empty: {json}");
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
