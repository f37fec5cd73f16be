//! Applying what bots report: [`Pipeline::handle_events`] applies a batch of events in one
//! transaction (in order, each fenced by attempt and idempotent) and the consumer of
//! `botline.orchestrator.events` hands it whatever the broker has delivered, acking the batch only
//! after its commit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use broker_config::access::check_sender;
use broker_config::messages::{self, Command, Event};
use broker_config::topology::ORCHESTRATOR_EVENTS_QUEUE;
use broker_config::{
    BotName, BotStatus, ConsumerSpec, CsvResult, Decision, RowOutcome, TaskRef, TaskStatus,
};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QuerySelect as _, Set,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Pipeline;
use super::dispatcher::Offer;
use super::rules::{self, Report, TaskState, Verdict};
use crate::bots::{BotChange, Load};
use crate::clock::now;
use crate::entity::{bot, task};
use crate::error::ApiError;
use crate::failure::Failure;
use crate::store::history::History;
use crate::tasks::EventKind;

/// What applied events leave to do once their transaction has committed.
#[derive(Default)]
pub struct Effects {
    /// A bot became free or a task WAITING: the batch offers due tasks before it commits.
    pub wake: bool,
    /// Offers made in the events' own transaction, to deliver.
    offers: Vec<Offer>,
    /// Those offers reached a pass's cap with slots still free, or left out free bots of other
    /// shards that a due task could go to: the dispatcher runs a pass of its own.
    pass_again: bool,
    /// Commands to send (telling a stale bot to stop).
    pub commands: Vec<(bot::Model, Command)>,
    /// Tasks and bots that changed, for live views.
    tasks: Vec<Uuid>,
    bots: Vec<Uuid>,
    /// Tasks that may have failed for good, for the incident engine.
    failed: Vec<Uuid>,
    /// Wait and run times, recorded once committed.
    measured: Vec<crate::metrics::Measure>,
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or_default()
}

/// How long `task` waited, from its creation to a run's start at `now`.
fn started(task: &task::Model, now: DateTime<Utc>) -> crate::metrics::Measure {
    let waited = (now - task.created_at).to_std().unwrap_or_default();
    crate::metrics::Measure::Started { system: task.system.clone(), waited }
}

/// A run of `task` on `bot` ended at `now`: how long since its first start (a retried task's
/// earlier runs and waits included).
fn ended(
    task: &task::Model,
    bot: &bot::Model,
    outcome: &'static str,
    now: DateTime<Utc>,
) -> crate::metrics::Measure {
    let ran = task.started_at.map(|at| (now - at).to_std().unwrap_or_default());
    crate::metrics::Measure::Ended {
        system: task.system.clone(),
        bot: bot.name.clone(),
        outcome,
        ran,
    }
}

impl Pipeline {
    /// Consumes `botline.orchestrator.events` until `shutdown`. Whatever the broker has delivered
    /// (up to the prefetch) is applied as one batch in one transaction and acked after its
    /// commit; under load that is one commit for many events, idle it is one event at once (the
    /// batch never waits for more). Malformed events, and events a bot published in another
    /// bot's name (under the strict sender policy, `--event-senders strict`), are dead-lettered
    /// with the reason; events that fail on the database are classified by [`Failure`]: while it
    /// is down they stay in the queue and come back, and one that fails otherwise (a corrupt
    /// row) is retried behind the others and dead-lettered after `settings.max_message_failures`
    /// tries.
    pub async fn run_event_consumer(
        self: Arc<Self>,
        amqp_url: String,
        shutdown: CancellationToken,
    ) {
        let spec = ConsumerSpec {
            url: amqp_url,
            name: "orchestrator-events".into(),
            queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
            topology: self.settings.topology(),
            prefetch: self.settings.events_prefetch,
            max_failures: self.settings.max_message_failures,
            hearing: Some(self.hearing.clone()),
        };
        let max_batch = usize::from(self.settings.events_prefetch);
        let senders = self.settings.event_senders;
        let max_bytes = self.settings.max_event_bytes;
        let pipeline = self.clone();
        broker_config::amqp::consume_batches(spec, max_batch, Duration::ZERO, shutdown, move |batch| {
            let pipeline = pipeline.clone();
            async move {
                let mut decisions = vec![Decision::Ack; batch.len()];
                let mut events = Vec::with_capacity(batch.len());
                let mut oversized = Vec::new();
                for (index, message) in batch.iter().enumerate() {
                    if message.data.len() > max_bytes {
                        let reason = format!(
                            "the event is {} bytes, over the {max_bytes}-byte cap (--max-event-bytes)",
                            message.data.len()
                        );
                        // Under the strict policy, only the bot itself may end its attempt so.
                        oversized.extend(
                            failure_for_oversized(&message.data, &reason).filter(|failure| {
                                check_sender(message.user_id.as_deref(), failure.bot(), senders)
                                    .is_ok()
                            }),
                        );
                        decisions[index] = Decision::DeadLetter(reason);
                        continue;
                    }
                    // One event, or several of one bot in a `bot.events` message.
                    let decoded =
                        messages::decode_events(&message.data).map_err(|e| e.to_string());
                    // Under the strict policy a bot speaks only for itself (RabbitMQ vouches for
                    // the user-id); the events of one message are all its sender's.
                    let checked = decoded.and_then(|decoded| {
                        match decoded.first() {
                            Some(first) => check_sender(message.user_id.as_deref(), first.bot(), senders)
                                .map_err(|refused| refused.to_string())?,
                            None => return Err("a bot.events message without events".to_owned()),
                        }
                        Ok(decoded)
                    });
                    match checked {
                        Ok(decoded) => events.extend(decoded.into_iter().map(|event| (index, event))),
                        Err(reason) => decisions[index] = Decision::DeadLetter(reason),
                    }
                }
                let (indexes, events): (Vec<usize>, Vec<Event>) = events.into_iter().unzip();
                let received = now();
                crate::metrics::event_batch(
                    events.len(),
                    events.iter().map(|event| (received - event.at()).to_std().unwrap_or_default()),
                );
                // An oversized report ends its attempt (it would never be read again): a
                // retryable failure, with the reason.
                for (failure, result) in oversized.iter().zip(pipeline.handle_events(&oversized).await) {
                    if let Err(error) = result {
                        tracing::warn!(?error, task = ?failure.task(), "the failure of an oversized report could not be applied");
                    }
                }
                let results = pipeline.handle_events(&events).await;
                // A message is acked once all its events are applied; the first that was not
                // decides what becomes of it (applied again, its applied events change nothing).
                let mut decided = vec![false; batch.len()];
                for (index, result) in indexes.into_iter().zip(results) {
                    if let (Err(err), false) = (result, decided[index]) {
                        let message = &batch[index];
                        tracing::warn!(error = ?err, routing_key = %message.routing_key, failures = message.failures, "event not applied");
                        decisions[index] = Failure::from(err).decision();
                        decided[index] = true;
                    }
                }
                decisions
            }
        })
        .await;
    }

    /// Applies one event in its own transaction and carries out its effects.
    pub async fn handle_event(&self, event: Event) -> Result<(), ApiError> {
        self.handle_events(std::slice::from_ref(&event)).await.pop().unwrap_or(Ok(()))
    }

    /// Applies `events` in order in one transaction, then carries out their effects (notices,
    /// incident reports, commands, the offers made). One result per event: an invalid event
    /// is refused alone (before it wrote anything). If the transaction fails, the events are
    /// applied again one per transaction, so one event's trouble does not hold back the others.
    pub async fn handle_events(&self, events: &[Event]) -> Vec<Result<(), ApiError>> {
        if events.is_empty() {
            // Every message of the batch was refused before reaching here.
            return Vec::new();
        }
        let now = now();
        match self.apply_events(events, now).await {
            Ok((results, effects)) => {
                self.carry_out(effects, now).await;
                results
            }
            Err(err) if events.len() <= 1 => vec![Err(err)],
            Err(err) => {
                tracing::warn!(error = ?err, events = events.len(), "a batch of events failed; applying them one by one");
                let mut results = Vec::with_capacity(events.len());
                for event in events {
                    let result = match self.apply_events(std::slice::from_ref(event), now).await {
                        Ok((mut result, effects)) => {
                            self.carry_out(effects, now).await;
                            result.pop().unwrap_or(Ok(()))
                        }
                        Err(err) => Err(err),
                    };
                    results.push(result);
                }
                results
            }
        }
    }

    /// Applies `events` in one transaction; `Err` when it did not commit.
    async fn apply_events(
        &self,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Result<(), ApiError>>, Effects), ApiError> {
        // What cannot be stored as sent (a NUL, an oversized field) is replaced here, once.
        let cleaned: Vec<Option<Event>> = events.iter().map(super::storable::event).collect();
        let events: Vec<&Event> =
            events.iter().zip(&cleaned).map(|(raw, clean)| clean.as_ref().unwrap_or(raw)).collect();
        // The shards of the bots that sent them: batches of other bots' events run beside it.
        let (txn, shards) =
            crate::store::begin_for_bots(&self.db, events.iter().map(|e| e.bot().as_str())).await?;
        let mut effects = Effects::default();
        let mut batch = Batch::default();
        batch.load_tasks(&txn, events.iter().filter_map(|e| e.task()).map(|t| t.task_id)).await?;
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            match self.apply_event(&txn, event, now, &mut effects, &mut batch).await {
                Ok(()) => results.push(Ok(())),
                // Refused before writing anything: the others stand.
                Err(err @ ApiError::Invalid { .. }) => results.push(Err(err)),
                Err(err) => return Err(err),
            }
        }
        if effects.wake && self.anything_waits(&txn).await? {
            // Bots came free (or tasks back): offer them the next tasks in this same
            // transaction, rather than waking the dispatcher for a pass of its own.
            let pairing = self.offer_due_tasks(&txn, &mut batch.history, shards, now).await?;
            // This pass sees only the batch's own bots: the dispatcher's sees the others. It
            // runs when this one reached its cap with slots still free, or left out free bots
            // of other shards that a due task could go to (a task another bot turned down, say).
            // One that filled the free slots waits, as the dispatcher would, for more events.
            effects.pass_again = pairing.capped || pairing.skipped;
            effects.offers = pairing.offers;
        }
        batch.history.write(&txn).await?;
        txn.commit().await?;
        Ok((results, effects))
    }

    async fn carry_out(&self, effects: Effects, now: DateTime<Utc>) {
        let Effects { offers, pass_again, commands, tasks, bots, failed, measured, .. } = effects;
        measured.into_iter().for_each(crate::metrics::Measure::record);
        if !failed.is_empty() {
            // Never an error here: the events are applied whatever becomes of the report.
            self.incidents.report_failed_tasks(&failed, now).await;
        }
        tasks.into_iter().for_each(|id| self.changes.task(id));
        bots.into_iter().for_each(|id| self.changes.bot(id));
        for (bot, command) in &commands {
            self.send_command(bot, command).await;
        }
        self.deliver_offers(offers, now).await;
        if pass_again {
            self.wake();
        }
    }

    /// Applies one event within `txn`. Task events are fenced by attempt ([`rules::judge`]): a
    /// stale one is recorded in the history and changes nothing; a repeated one changes nothing.
    /// Bot events register bots and keep their liveness. An [`ApiError::Invalid`] is only ever
    /// returned before anything was written.
    async fn apply_event(
        &self,
        txn: &impl ConnectionTrait,
        event: &Event,
        now: DateTime<Utc>,
        fx: &mut Effects,
        batch: &mut Batch,
    ) -> Result<(), ApiError> {
        if event.task().is_none() {
            // A bot event may change the bot's row, and the tasks it holds.
            batch.forget(event.bot());
        }
        let event = match event {
            Event::BotOnline { bot, ip_address, systems, session, slots, batches, .. } => {
                let online = Online {
                    name: bot,
                    ip_address,
                    systems,
                    session: *session,
                    slots: *slots,
                    batches: *batches,
                };
                return self.bot_online(txn, online, now, fx, &mut batch.history).await;
            }
            Event::BotHeartbeat { bot, task, tasks, .. } => {
                let working_on = messages::heartbeat_tasks(*task, tasks);
                return self.bot_heartbeat(txn, bot, working_on, now, fx, &mut batch.history).await;
            }
            Event::BotStatusChanged { bot, status, .. } => {
                return self.bot_status(txn, bot, *status, now, fx).await;
            }
            Event::BotOffline { bot, .. } => {
                return self.bot_offline(txn, bot, now, fx, &mut batch.history).await;
            }
            Event::TaskAccepted { task, bot, .. } => {
                TaskEvent::new(bot, *task, Report::Accepted, &[], None, json!({}))
            }
            Event::TaskRejected { task, bot, reason, .. } => {
                TaskEvent::new(bot, *task, Report::Rejected, &[], None, json!({ "reason": reason }))
            }
            Event::TaskProgress { task, bot, rows, .. } => TaskEvent::new(
                bot,
                *task,
                Report::Progress,
                rows,
                None,
                json!({ "rows": rows.len() }),
            ),
            Event::TaskCompleted { task, bot, rows, output, log, .. } => TaskEvent::new(
                bot,
                *task,
                Report::Completed,
                rows,
                output.clone(),
                with_log(json!({ "rows": rows.len() }), log),
            ),
            Event::TaskFailed { task, bot, rows, error, retryable, log, .. } => TaskEvent::new(
                bot,
                *task,
                Report::Failed { retryable: *retryable },
                rows,
                Some(json!(error)),
                with_log(json!({ "error": error, "retryable": retryable }), log),
            ),
            Event::TaskReleased { task, bot, rows, reason, .. } => TaskEvent::new(
                bot,
                *task,
                Report::Released,
                rows,
                None,
                json!({ "reason": reason }),
            ),
        };
        self.task_event(txn, event, now, fx, batch).await
    }

    async fn task_event(
        &self,
        txn: &impl ConnectionTrait,
        event: TaskEvent<'_>,
        now: DateTime<Utc>,
        fx: &mut Effects,
        batch: &mut Batch,
    ) -> Result<(), ApiError> {
        let TaskEvent { bot: bot_name, task: task_ref, report, rows, extra, detail } = event;
        let Some(bot) = batch.bot(txn, bot_name).await? else {
            tracing::warn!(bot = %bot_name, task_id = %task_ref.task_id, "event from an unknown bot ignored");
            return Ok(());
        };
        let Some(task) = batch.task(txn, task_ref.task_id).await? else {
            tracing::warn!(bot = %bot_name, task_id = %task_ref.task_id, "event about an unknown task ignored");
            return Ok(());
        };
        let state = TaskState {
            status: task.status,
            attempt: to_u32(task.attempt),
            bot_id: task.bot_id,
            failures: to_u32(task.failures),
            max_attempts: to_u32(task.max_attempts),
        };
        let verdict = rules::judge(&state, task_ref.attempt, bot.id, report);
        let attempt = i32::try_from(task_ref.attempt).unwrap_or(i32::MAX);
        let mut row: task::ActiveModel = task.clone().into();
        row.updated_at = Set(now);
        let (kind, bot_after) = match verdict {
            Verdict::Duplicate => return Ok(()),
            Verdict::Stale { cancel_sender }
                if cancel_sender && self.was_told_to_stop(task_ref) =>
            {
                // Told to stop already: one history entry and one stop per attempt, however
                // often a bot that ignores the stop reports.
                return Ok(());
            }
            Verdict::Stale { cancel_sender } => {
                let stale = json!({ "report": format!("{report:?}"), "attempt": task_ref.attempt, "current_attempt": task.attempt, "status": task.status });
                batch.history.push(
                    task.id,
                    Some(bot.id),
                    attempt,
                    EventKind::StaleEvent,
                    Some(stale),
                    now,
                );
                fx.tasks.push(task.id);
                tracing::info!(task_id = %task.id, bot = %bot.name, attempt = task_ref.attempt, current = task.attempt, "stale event recorded");
                if cancel_sender {
                    fx.commands.push((
                        bot,
                        Command::CancelTask {
                            task: task_ref,
                            reason: "this attempt is no longer current".into(),
                        },
                    ));
                }
                return Ok(());
            }
            Verdict::Start => {
                self.start_run(&mut row, &task, now);
                fx.measured.push(started(&task, now));
                (EventKind::Accepted, None)
            }
            Verdict::Requeue => {
                row.status = Set(TaskStatus::Waiting);
                row.bot_id = Set(None);
                row.avoid_bot_id = Set(Some(bot.id));
                row.offer_expires_at = Set(None);
                (EventKind::Rejected, Some(BotChange::Freed))
            }
            Verdict::Progress => {
                if task.status == TaskStatus::Assigned {
                    // Reporting rows is working on it: RUNNING, as if accepted.
                    self.start_run(&mut row, &task, now);
                    fx.measured.push(started(&task, now));
                }
                merge_rows(&mut row, &task, rows);
                (EventKind::Progress, None)
            }
            Verdict::Complete => {
                merge_rows(&mut row, &task, rows);
                if task.progress_total.is_none() {
                    row.result = Set(extra.clone());
                }
                row.status = Set(TaskStatus::Complete);
                row.finished_at = Set(Some(now));
                row.error = Set(None);
                fx.measured.push(ended(&task, &bot, "completed", now));
                (EventKind::Completed, Some(BotChange::Freed))
            }
            Verdict::RetryLater | Verdict::Fail => {
                merge_rows(&mut row, &task, rows);
                fx.measured.push(ended(&task, &bot, "failed", now));
                let failures = task.failures + 1;
                row.failures = Set(failures);
                row.error = Set(extra.as_ref().and_then(Value::as_str).map(str::to_owned));
                row.bot_id = Set(None);
                row.offer_expires_at = Set(None);
                if verdict == Verdict::RetryLater {
                    let delay = rules::retry_delay(
                        to_u32(failures),
                        self.settings.retry_base,
                        self.settings.retry_cap,
                    );
                    let retry_at = crate::clock::after(now, delay);
                    row.status = Set(TaskStatus::Waiting);
                    row.not_before = Set(retry_at);
                } else {
                    row.status = Set(TaskStatus::Failed);
                    row.finished_at = Set(Some(now));
                }
                (EventKind::Failed, Some(BotChange::Freed))
            }
            Verdict::Release => {
                merge_rows(&mut row, &task, rows);
                row.status = Set(TaskStatus::Waiting);
                row.bot_id = Set(None);
                row.offer_expires_at = Set(None);
                // Only a stopping bot hands tasks back.
                (EventKind::Released, Some(BotChange::Unreachable))
            }
        };
        if verdict != Verdict::Start && verdict != Verdict::Progress {
            row.run_deadline = Set(None);
        }
        let implied = task.status == TaskStatus::Assigned
            && matches!(
                verdict,
                Verdict::Progress | Verdict::Complete | Verdict::RetryLater | Verdict::Fail
            );
        if implied {
            // A bot may report what it did without accepting first (a task done before its
            // acceptance was sent: the report implies it). The history still shows the start.
            if verdict != Verdict::Progress {
                fx.measured.push(started(&task, now));
            }
            if task.started_at.is_none() {
                row.started_at = Set(Some(now));
            }
            let detail = json!({ "implied_by": kind.as_str() });
            batch.history.push(
                task.id,
                Some(bot.id),
                attempt,
                EventKind::Accepted,
                Some(detail),
                now,
            );
        }
        let updated = row.update(txn).await?;
        match verdict {
            Verdict::Start | Verdict::Complete | Verdict::RetryLater | Verdict::Fail
                if bot.unanswered_offers != 0 =>
            {
                // It takes an offer (or reports its end straight away): the ones it did not
                // take before are forgiven.
                bot::Entity::update_many()
                    .col_expr(bot::Column::UnansweredOffers, Expr::value(0))
                    .col_expr(
                        bot::Column::OffersPausedUntil,
                        Expr::value(Option::<DateTime<Utc>>::None),
                    )
                    .filter(bot::Column::Id.eq(bot.id))
                    .exec(txn)
                    .await?;
            }
            Verdict::Requeue => {
                // A refusal is an answer, but a bot that refuses every offer (a system it cannot
                // run, say it is busy) must not be offered task after task: the same backoff as
                // for an unanswered offer, so its offers are rate-limited.
                self.back_off_bot(txn, &bot, now).await?;
                batch.bots.remove(bot.name.as_str());
            }
            _ => {}
        }
        let mut detail = detail;
        if verdict == Verdict::RetryLater {
            detail["retry_at"] = json!(updated.not_before);
        }
        batch.history.push(task.id, Some(bot.id), attempt, kind, Some(detail), now);
        fx.tasks.push(task.id);
        if let Some(status) = bot_after {
            crate::store::bots::release_bot(txn, bot.id, status, now).await?;
            fx.bots.push(bot.id);
            fx.wake = true;
        }
        if verdict == Verdict::Fail {
            // A task that failed for good is a report to the incident engine.
            fx.failed.push(task.id);
        }
        tracing::info!(task_id = %task.id, bot = %bot.name, attempt = task_ref.attempt, event = kind.as_str(), status = %updated.status, "task event applied");
        batch.keep_task(updated);
        Ok(())
    }

    /// Marks `row` (the stored `task`) RUNNING from now: no offer pending, the run's deadline
    /// set, its first start recorded.
    fn start_run(&self, row: &mut task::ActiveModel, task: &task::Model, now: DateTime<Utc>) {
        row.status = Set(TaskStatus::Running);
        row.offer_expires_at = Set(None);
        let limit = task.max_run_seconds.map_or(self.settings.max_run_time, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or_default())
        });
        row.run_deadline = Set(Some(crate::clock::after(now, limit)));
        if task.started_at.is_none() {
            row.started_at = Set(Some(now));
        }
    }

    async fn bot_online(
        &self,
        txn: &impl ConnectionTrait,
        online: Online<'_>,
        now: DateTime<Utc>,
        fx: &mut Effects,
        history: &mut History,
    ) -> Result<(), ApiError> {
        let Online { name, ip_address, systems, session, slots, batches } = online;
        let slots = slots.unwrap_or(1);
        if !(1..=messages::MAX_SLOTS).contains(&slots) {
            return Err(ApiError::invalid(
                "slots",
                format!("bot.online from {name}: slots must be 1 to {}", messages::MAX_SLOTS),
            ));
        }
        let slots = i32::try_from(slots).unwrap_or(1);
        let ip: IpAddr = ip_address.parse().map_err(|_| {
            ApiError::invalid(
                "ip_address",
                format!("bot.online from {name}: '{ip_address}' is not an IP address"),
            )
        })?;
        if systems.is_empty() {
            return Err(ApiError::invalid(
                "systems",
                format!("bot.online from {name}: no systems"),
            ));
        }
        let mut systems = systems.to_vec();
        systems.sort();
        systems.dedup();
        let systems = systems.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        let bot_id = match crate::store::bots::find_by_name(txn, name.as_str()).await? {
            Some(existing) if session.is_some() && existing.session_id == session => {
                // The same announcement again (redelivered): this run is registered already,
                // and whatever it holds it still holds.
                tracing::info!(bot = %name, "bot.online repeated; nothing to do");
                return Ok(());
            }
            Some(existing) => {
                // It restarted: whatever it held is lost.
                let requeued = self
                    .requeue_held_tasks(txn, history, &existing, None, "the bot restarted", now)
                    .await?;
                fx.tasks.extend(&requeued);
                fx.failed.extend(requeued);
                let bot_id = existing.id;
                let mut row: bot::ActiveModel = existing.into();
                row.ip_address = Set(ip.to_string());
                row.systems = Set(systems);
                row.delivery = Set(broker_config::Delivery::Amqp);
                row.http_port = Set(None);
                row.status = Set(BotChange::Online.status(Load::IDLE));
                row.slots = Set(slots);
                row.held = Set(0);
                row.batches = Set(batches);
                row.last_heartbeat_at = Set(Some(now));
                row.updated_at = Set(now);
                row.session_id = Set(session);
                row.update(txn).await?;
                bot_id
            }
            None => {
                let bot_id = Uuid::now_v7();
                bot::ActiveModel {
                    id: Set(bot_id),
                    name: Set(name.to_string()),
                    ip_address: Set(ip.to_string()),
                    status: Set(BotChange::Online.status(Load::IDLE)),
                    systems: Set(systems),
                    delivery: Set(broker_config::Delivery::Amqp),
                    http_port: Set(None),
                    last_heartbeat_at: Set(Some(now)),
                    slots: Set(slots),
                    held: Set(0),
                    batches: Set(batches),
                    created_at: Set(now),
                    updated_at: Set(now),
                    session_id: Set(session),
                    paused: Set(false),
                    unanswered_offers: Set(0),
                    offers_paused_until: Set(None),
                    tls: Set(false),
                }
                .insert(txn)
                .await?;
                bot_id
            }
        };
        fx.bots.push(bot_id);
        fx.wake = true;
        tracing::info!(bot = %name, %ip, "bot online");
        Ok(())
    }

    /// A heartbeat: the bot is alive, and says which attempts it works on. An attempt it works
    /// on that is no longer its own (it was presumed lost, the run passed its time) is told to
    /// stop; a RUNNING task it holds by our records that its heartbeats have not mentioned for
    /// the liveness window is taken back ([`Pipeline::reconcile`]); a bot presumed lost that
    /// works only on what it holds is available again.
    async fn bot_heartbeat(
        &self,
        txn: &impl ConnectionTrait,
        name: &BotName,
        working_on: Vec<TaskRef>,
        now: DateTime<Utc>,
        fx: &mut Effects,
        history: &mut History,
    ) -> Result<(), ApiError> {
        let Some(bot) = crate::store::bots::find_by_name(txn, name.as_str()).await? else {
            tracing::warn!(bot = %name, "heartbeat from an unknown bot ignored (it registers with bot.online)");
            return Ok(());
        };
        let held: Vec<(Uuid, i32, TaskStatus)> = if bot.held > 0 || !working_on.is_empty() {
            task::Entity::find()
                .select_only()
                .column(task::Column::Id)
                .column(task::Column::Attempt)
                .column(task::Column::Status)
                .filter(task::Column::BotId.eq(bot.id))
                .filter(task::Column::Status.is_in([TaskStatus::Assigned, TaskStatus::Running]))
                .into_tuple()
                .all(txn)
                .await?
        } else {
            Vec::new()
        };
        let stale: Vec<TaskRef> = working_on
            .iter()
            .filter(|t| {
                !held.iter().any(|(id, attempt, _)| {
                    *id == t.task_id && i64::from(*attempt) == i64::from(t.attempt)
                })
            })
            .copied()
            .collect();
        let seen = Seen { working_on: &working_on, held: &held, stale: !stale.is_empty() };
        if self.reconcile(txn, &bot, seen, now, fx, history).await? {
            return Ok(());
        }
        let mut update = bot::Entity::update_many()
            .col_expr(bot::Column::LastHeartbeatAt, Expr::value(Some(now)))
            .filter(bot::Column::Id.eq(bot.id));
        // A bot presumed lost that is alive, and works on nothing that is not its own, is
        // available again (BUSY if every slot is taken).
        let back = bot.status == BotStatus::Unavailable && stale.is_empty();
        if back {
            let load = Load::of(bot.held, bot.slots);
            update = update
                .col_expr(bot::Column::Status, Expr::value(BotChange::Online.status(load)))
                .col_expr(bot::Column::UpdatedAt, Expr::value(now));
            fx.wake = true;
            tracing::info!(bot = %name, "bot is back");
        }
        update.exec(txn).await?;
        fx.bots.push(bot.id);
        for task in stale {
            // It works on an attempt that is no longer its own (it was presumed lost).
            fx.commands.push((
                bot.clone(),
                Command::CancelTask { task, reason: "this attempt is no longer current".into() },
            ));
        }
        Ok(())
    }

    /// Takes back the RUNNING tasks a live bot holds by our records (`held`) when its heartbeats
    /// have not mentioned them for the liveness window (`missed_heartbeats` intervals): the bot
    /// gave them up without a word (a report it could not send, a crash in its reporting path).
    /// Each run counts as failed, with the reason in the history; the bot's status is settled
    /// again. Returns whether it took any (the heartbeat is then applied).
    async fn reconcile(
        &self,
        txn: &impl ConnectionTrait,
        bot: &bot::Model,
        seen: Seen<'_>,
        now: DateTime<Utc>,
        fx: &mut Effects,
        history: &mut History,
    ) -> Result<bool, ApiError> {
        let Seen { working_on, held, stale } = seen;
        // An offer not yet accepted is not the bot's to mention: only RUNNING tasks count.
        let unmentioned: Vec<Uuid> = held
            .iter()
            .filter(|(id, _, status)| {
                *status == TaskStatus::Running && !working_on.iter().any(|t| t.task_id == *id)
            })
            .map(|(id, _, _)| *id)
            .collect();
        let grace = self.settings.heartbeat_interval * self.settings.missed_heartbeats;
        let silent: Vec<Uuid> = self
            .unmentioned_since(bot.id, &unmentioned, now)
            .into_iter()
            .filter(|(_, since)| {
                rules::is_silent(
                    *since,
                    now,
                    self.settings.heartbeat_interval,
                    self.settings.missed_heartbeats,
                )
            })
            .map(|(task, _)| task)
            .collect();
        if silent.is_empty() {
            return Ok(false);
        }
        let says = match working_on {
            [] => "nothing".to_owned(),
            [one] => format!("task {} (attempt {})", one.task_id, one.attempt),
            many => format!("{} other tasks", many.len()),
        };
        let reason = format!(
            "the bot's heartbeats said it held {says} for {} s while it held this task",
            grace.as_secs_f64()
        );
        let requeued =
            self.requeue_held_tasks(txn, history, bot, Some(&silent), &reason, now).await?;
        // A bot that works on an attempt not its own cannot be counted on until it stops.
        let change = if stale { BotChange::Unreachable } else { BotChange::Freed };
        crate::store::bots::release_bot(txn, bot.id, change, now).await?;
        bot::Entity::update_many()
            .col_expr(bot::Column::LastHeartbeatAt, Expr::value(Some(now)))
            .filter(bot::Column::Id.eq(bot.id))
            .exec(txn)
            .await?;
        let still: Vec<Uuid> = unmentioned.into_iter().filter(|t| !silent.contains(t)).collect();
        self.unmentioned_since(bot.id, &still, now);
        tracing::warn!(bot = %bot.name, tasks = ?silent, %reason, "tasks taken back from a bot that no longer holds them");
        fx.tasks.extend(&requeued);
        fx.failed.extend(requeued);
        fx.bots.push(bot.id);
        fx.wake = true;
        Ok(true)
    }

    async fn bot_status(
        &self,
        txn: &impl ConnectionTrait,
        name: &BotName,
        reported: BotStatus,
        now: DateTime<Utc>,
        fx: &mut Effects,
    ) -> Result<(), ApiError> {
        let Some(bot) = crate::store::bots::find_by_name(txn, name.as_str()).await? else {
            return Ok(());
        };
        let status = BotChange::Reported(reported).status(Load::of(bot.held, bot.slots));
        bot::Entity::update_many()
            .col_expr(bot::Column::Status, Expr::value(status))
            .col_expr(bot::Column::LastHeartbeatAt, Expr::value(Some(now)))
            .col_expr(bot::Column::UpdatedAt, Expr::value(now))
            .filter(bot::Column::Id.eq(bot.id))
            .exec(txn)
            .await?;
        fx.bots.push(bot.id);
        fx.wake |= status == BotStatus::Available;
        Ok(())
    }

    async fn bot_offline(
        &self,
        txn: &impl ConnectionTrait,
        name: &BotName,
        now: DateTime<Utc>,
        fx: &mut Effects,
        history: &mut History,
    ) -> Result<(), ApiError> {
        let Some(bot) = crate::store::bots::find_by_name(txn, name.as_str()).await? else {
            return Ok(());
        };
        let requeued = self
            .requeue_held_tasks(txn, history, &bot, None, "the bot went offline holding it", now)
            .await?;
        bot::Entity::update_many()
            .col_expr(bot::Column::Status, Expr::value(BotChange::Offline.status(Load::IDLE)))
            .col_expr(bot::Column::Held, Expr::value(0))
            .col_expr(bot::Column::UpdatedAt, Expr::value(now))
            .filter(bot::Column::Id.eq(bot.id))
            .exec(txn)
            .await?;
        fx.tasks.extend(&requeued);
        fx.failed.extend(requeued);
        fx.bots.push(bot.id);
        fx.wake = true;
        tracing::info!(bot = %name, "bot offline");
        Ok(())
    }
}

/// The retryable failure of the attempt an oversized report was about, if it was a report that
/// ends or continues a run (progress, completion, failure, release) and its head can be read.
fn failure_for_oversized(body: &[u8], reason: &str) -> Option<Event> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: String,
        #[serde(flatten)]
        task: Option<TaskRef>,
        bot: Option<BotName>,
    }
    let head: Head = serde_json::from_slice(body).ok()?;
    let runs = matches!(
        head.kind.as_str(),
        "task.progress" | "task.completed" | "task.failed" | "task.released"
    );
    if !runs {
        return None;
    }
    Some(Event::TaskFailed {
        task: head.task?,
        bot: head.bot?,
        rows: Vec::new(),
        error: reason.to_owned(),
        retryable: true,
        log: None,
        at: now(),
    })
}

/// An attempt's history detail with the end of its log, when the bot sent one: the task's page
/// shows it with the attempt.
fn with_log(mut detail: Value, log: &Option<String>) -> Value {
    if let (Some(log), Some(fields)) = (log, detail.as_object_mut()) {
        fields.insert("log".to_owned(), Value::String(log.clone()));
    }
    detail
}

/// What a batch of events keeps from one event to the next: the bots and tasks it has read
/// (each read once per batch: a bot's events come in runs, accepted then completed) and the
/// history it writes before it commits. Task events change only their own task and a bot's
/// status and current task, which they do not read; a bot event drops its bot and every task
/// (it may change the bot's other columns, and requeue the tasks it held).
#[derive(Default)]
struct Batch {
    bots: HashMap<String, bot::Model>,
    tasks: HashMap<Uuid, task::Model>,
    history: History,
}

impl Batch {
    async fn bot(
        &mut self,
        txn: &impl ConnectionTrait,
        name: &BotName,
    ) -> Result<Option<bot::Model>, ApiError> {
        if let Some(bot) = self.bots.get(name.as_str()) {
            return Ok(Some(bot.clone()));
        }
        let found = crate::store::bots::find_by_name(txn, name.as_str()).await?;
        if let Some(bot) = &found {
            self.bots.insert(name.to_string(), bot.clone());
        }
        Ok(found)
    }

    /// Reads the tasks the batch's events name, in one query. FOR UPDATE on PostgreSQL:
    /// orchestrators sharing a database apply one task's events one after the other (SQLite
    /// has a single writer anyway).
    async fn load_tasks(
        &mut self,
        txn: &impl ConnectionTrait,
        tasks: impl IntoIterator<Item = Uuid>,
    ) -> Result<(), ApiError> {
        let mut ids: Vec<Uuid> = tasks.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let rows = task::Entity::find()
            .filter(task::Column::Id.is_in(ids))
            .lock_exclusive()
            .all(txn)
            .await?;
        self.tasks.extend(rows.into_iter().map(|t| (t.id, t)));
        Ok(())
    }

    async fn task(
        &mut self,
        txn: &impl ConnectionTrait,
        id: Uuid,
    ) -> Result<Option<task::Model>, ApiError> {
        if !self.tasks.contains_key(&id) {
            // Dropped by a bot event earlier in the batch.
            self.load_tasks(txn, [id]).await?;
        }
        Ok(self.tasks.get(&id).cloned())
    }

    /// A task as this batch left it.
    fn keep_task(&mut self, task: task::Model) {
        self.tasks.insert(task.id, task);
    }

    fn forget(&mut self, bot: &BotName) {
        self.bots.remove(bot.as_str());
        self.tasks.clear();
    }
}

/// What a heartbeat said, beside what its bot holds by our records.
#[derive(Clone, Copy)]
struct Seen<'a> {
    /// The attempts it says it works on.
    working_on: &'a [TaskRef],
    /// The tasks it holds: id, attempt, status.
    held: &'a [(Uuid, i32, TaskStatus)],
    /// Whether it works on an attempt that is not its own.
    stale: bool,
}

/// A `bot.online`'s parts.
struct Online<'a> {
    name: &'a BotName,
    ip_address: &'a str,
    systems: &'a [broker_config::System],
    session: Option<Uuid>,
    slots: Option<u32>,
    batches: bool,
}

/// A task event's parts, whatever its type.
struct TaskEvent<'a> {
    bot: &'a BotName,
    task: TaskRef,
    report: Report,
    rows: &'a [RowOutcome],
    extra: Option<Value>,
    detail: Value,
}

impl<'a> TaskEvent<'a> {
    fn new(
        bot: &'a BotName,
        task: TaskRef,
        report: Report,
        rows: &'a [RowOutcome],
        extra: Option<Value>,
        detail: Value,
    ) -> TaskEvent<'a> {
        TaskEvent { bot, task, report, rows, extra, detail }
    }
}

/// Adds `rows` to a CSV task's stored result (each row once) and updates its progress.
fn merge_rows(row: &mut task::ActiveModel, task: &task::Model, rows: &[RowOutcome]) {
    let Some(total) = task.progress_total else {
        return;
    };
    let previous = task
        .result
        .as_ref()
        .and_then(|r| serde_json::from_value::<CsvResult>(r.clone()).ok())
        .map(|r| r.rows)
        .unwrap_or_default();
    let merged =
        CsvResult::from_rows(to_u32(total), previous.into_iter().chain(rows.iter().cloned()));
    row.progress_done = Set(i32::try_from(merged.rows.len()).unwrap_or(i32::MAX));
    row.rows_failed = Set(Some(i32::try_from(merged.rows_failed).unwrap_or(i32::MAX)));
    row.result = Set(serde_json::to_value(&merged).ok());
}
