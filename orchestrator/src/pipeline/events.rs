//! Applying what bots report: [`Pipeline::apply_event`] (one transaction per event, fenced by
//! attempt, idempotent) and the consumer of `botline.orchestrator.events` that acks each event
//! only after its transaction committed.

use std::net::IpAddr;
use std::sync::Arc;

use broker_config::messages::{self, Command, Event};
use broker_config::topology::ORCHESTRATOR_EVENTS_QUEUE;
use broker_config::{
    BotName, BotStatus, ConsumerSpec, CsvResult, Decision, RowOutcome, TaskRef, TaskStatus,
    Topology,
};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Set,
    TransactionTrait as _,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Pipeline;
use super::rules::{self, Report, TaskState, Verdict};
use crate::bots;
use crate::clock::now;
use crate::entity::{bot, task};
use crate::error::ApiError;
use crate::tasks::{EventKind, record};

/// What applying an event did, beyond the database.
#[derive(Debug, Default)]
pub struct Applied {
    /// A bot became free or a task WAITING: the dispatcher has work.
    pub wake: bool,
    /// Commands to send once committed (telling a stale bot to stop).
    pub commands: Vec<(bot::Model, Command)>,
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or_default()
}

impl Pipeline {
    /// Consumes `botline.orchestrator.events` until `shutdown`, applying each event and acking it
    /// after its commit. Malformed events are dead-lettered with the reason; events that fail on
    /// the database (it is down) stay in the queue and come back.
    pub async fn run_event_consumer(
        self: Arc<Self>,
        amqp_url: String,
        shutdown: CancellationToken,
    ) {
        let spec = ConsumerSpec {
            url: amqp_url,
            name: "orchestrator-events".into(),
            queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
            topology: Topology::core(),
            prefetch: self.settings.events_prefetch,
        };
        let pipeline = self.clone();
        broker_config::consume(spec, shutdown, move |message| {
            let pipeline = pipeline.clone();
            async move {
                let event = match messages::decode::<Event>(&message.data) {
                    Ok(event) => event,
                    Err(err) => return Decision::DeadLetter(err.to_string()),
                };
                match pipeline.handle_event(event).await {
                    Ok(()) => Decision::Ack,
                    Err(ApiError::Invalid { message, .. }) => Decision::DeadLetter(message),
                    Err(err) => {
                        tracing::warn!(error = %err, routing_key = %message.routing_key, "event not applied; it stays queued");
                        Decision::Requeue
                    }
                }
            }
        })
        .await;
    }

    /// Applies an event and carries out its effects (wake the dispatcher, send commands).
    pub async fn handle_event(&self, event: Event) -> Result<(), ApiError> {
        let applied = self.apply_event(&event, now()).await?;
        for (bot, command) in &applied.commands {
            self.send_command(bot, command).await;
        }
        if applied.wake {
            self.wake();
        }
        Ok(())
    }

    /// Applies one event in one transaction. Task events are fenced by attempt
    /// ([`rules::judge`]): a stale one is recorded in the history and changes nothing; a repeated
    /// one changes nothing. Bot events register bots and keep their liveness.
    pub async fn apply_event(
        &self,
        event: &Event,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApiError> {
        match event {
            Event::BotOnline { bot, ip_address, systems, .. } => {
                self.bot_online(bot, ip_address, systems, now).await
            }
            Event::BotHeartbeat { bot, task, .. } => self.bot_heartbeat(bot, *task, now).await,
            Event::BotStatusChanged { bot, status, .. } => self.bot_status(bot, *status, now).await,
            Event::BotOffline { bot, .. } => self.bot_offline(bot, now).await,
            Event::TaskAccepted { task, bot, .. } => {
                self.task_event(bot, *task, Report::Accepted, &[], None, now, json!({})).await
            }
            Event::TaskRejected { task, bot, reason, .. } => {
                self.task_event(
                    bot,
                    *task,
                    Report::Rejected,
                    &[],
                    None,
                    now,
                    json!({ "reason": reason }),
                )
                .await
            }
            Event::TaskProgress { task, bot, rows, .. } => {
                self.task_event(
                    bot,
                    *task,
                    Report::Progress,
                    rows,
                    None,
                    now,
                    json!({ "rows": rows.len() }),
                )
                .await
            }
            Event::TaskCompleted { task, bot, rows, output, .. } => {
                self.task_event(
                    bot,
                    *task,
                    Report::Completed,
                    rows,
                    output.clone(),
                    now,
                    json!({ "rows": rows.len() }),
                )
                .await
            }
            Event::TaskFailed { task, bot, rows, error, retryable, .. } => {
                let report = Report::Failed { retryable: *retryable };
                self.task_event(
                    bot,
                    *task,
                    report,
                    rows,
                    Some(json!(error)),
                    now,
                    json!({ "error": error, "retryable": retryable }),
                )
                .await
            }
            Event::TaskReleased { task, bot, rows, reason, .. } => {
                self.task_event(
                    bot,
                    *task,
                    Report::Released,
                    rows,
                    None,
                    now,
                    json!({ "reason": reason }),
                )
                .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn task_event(
        &self,
        bot_name: &BotName,
        task_ref: TaskRef,
        report: Report,
        rows: &[RowOutcome],
        extra: Option<Value>,
        now: DateTime<Utc>,
        detail: Value,
    ) -> Result<Applied, ApiError> {
        let mut applied = Applied::default();
        let txn = self.db.begin().await?;
        let Some(bot) = bots::find_by_name(&txn, bot_name.as_str()).await? else {
            tracing::warn!(bot = %bot_name, task_id = %task_ref.task_id, "event from an unknown bot ignored");
            return Ok(applied);
        };
        let Some(task) = task::Entity::find_by_id(task_ref.task_id).one(&txn).await? else {
            tracing::warn!(bot = %bot_name, task_id = %task_ref.task_id, "event about an unknown task ignored");
            return Ok(applied);
        };
        let status: TaskStatus = task
            .status
            .parse()
            .map_err(|_| ApiError::Internal(sea_orm::DbErr::Type("task status".into())))?;
        let state = TaskState {
            status,
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
            Verdict::Duplicate => return Ok(applied),
            Verdict::Stale { cancel_sender } => {
                let stale = json!({ "report": format!("{report:?}"), "attempt": task_ref.attempt, "current_attempt": task.attempt, "status": task.status });
                record(
                    &txn,
                    task.id,
                    Some(bot.id),
                    attempt,
                    EventKind::StaleEvent,
                    Some(stale),
                    now,
                )
                .await?;
                txn.commit().await?;
                self.changes.task(task.id);
                tracing::info!(task_id = %task.id, bot = %bot.name, attempt = task_ref.attempt, current = task.attempt, "stale event recorded");
                if cancel_sender {
                    applied.commands.push((
                        bot,
                        Command::CancelTask {
                            task: task_ref,
                            reason: "this attempt is no longer current".into(),
                        },
                    ));
                }
                return Ok(applied);
            }
            Verdict::Start => {
                row.status = Set(TaskStatus::Running.as_str().to_owned());
                row.offer_expires_at = Set(None);
                if task.started_at.is_none() {
                    row.started_at = Set(Some(now));
                }
                (EventKind::Accepted, None)
            }
            Verdict::Requeue => {
                row.status = Set(TaskStatus::Waiting.as_str().to_owned());
                row.bot_id = Set(None);
                row.avoid_bot_id = Set(Some(bot.id));
                row.offer_expires_at = Set(None);
                (EventKind::Rejected, Some(BotStatus::Available))
            }
            Verdict::Progress => {
                merge_rows(&mut row, &task, rows);
                (EventKind::Progress, None)
            }
            Verdict::Complete => {
                merge_rows(&mut row, &task, rows);
                if task.progress_total.is_none() {
                    row.result = Set(extra.clone());
                }
                row.status = Set(TaskStatus::Complete.as_str().to_owned());
                row.finished_at = Set(Some(now));
                row.error = Set(None);
                (EventKind::Completed, Some(BotStatus::Available))
            }
            Verdict::RetryLater | Verdict::Fail => {
                merge_rows(&mut row, &task, rows);
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
                    let retry_at =
                        now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    row.status = Set(TaskStatus::Waiting.as_str().to_owned());
                    row.not_before = Set(retry_at);
                } else {
                    row.status = Set(TaskStatus::Failed.as_str().to_owned());
                    row.finished_at = Set(Some(now));
                }
                (EventKind::Failed, Some(BotStatus::Available))
            }
            Verdict::Release => {
                merge_rows(&mut row, &task, rows);
                row.status = Set(TaskStatus::Waiting.as_str().to_owned());
                row.bot_id = Set(None);
                row.offer_expires_at = Set(None);
                // Only a stopping bot hands tasks back.
                (EventKind::Released, Some(BotStatus::Unavailable))
            }
        };
        let updated = row.update(&txn).await?;
        let mut detail = detail;
        if verdict == Verdict::RetryLater {
            detail["retry_at"] = json!(updated.not_before);
        }
        record(&txn, task.id, Some(bot.id), attempt, kind, Some(detail), now).await?;
        if let Some(status) = bot_after {
            bots::release_bot(&txn, bot.id, task.id, status, now).await?;
            applied.wake = true;
        }
        txn.commit().await?;
        self.changes.task(task.id);
        if bot_after.is_some() {
            self.changes.bot(bot.id);
        }
        tracing::info!(task_id = %task.id, bot = %bot.name, attempt = task_ref.attempt, event = kind.as_str(), status = %updated.status, "task event applied");
        if verdict == Verdict::Fail {
            // A task that failed for good is a report to the incident engine (never an error
            // here: the event is applied whatever becomes of the report).
            self.incidents.report_failed_tasks(&[task.id], now).await;
        }
        Ok(applied)
    }

    async fn bot_online(
        &self,
        name: &BotName,
        ip_address: &str,
        systems: &[broker_config::System],
        now: DateTime<Utc>,
    ) -> Result<Applied, ApiError> {
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
        let txn = self.db.begin().await?;
        let (bot_id, requeued) = match bots::find_by_name(&txn, name.as_str()).await? {
            Some(existing) => {
                // It restarted: whatever it held is lost.
                let requeued =
                    self.requeue_held_tasks(&txn, &existing, "the bot restarted", now).await?;
                let bot_id = existing.id;
                let mut row: bot::ActiveModel = existing.into();
                row.ip_address = Set(ip.to_string());
                row.systems = Set(systems);
                row.delivery = Set(broker_config::Delivery::Amqp.as_str().to_owned());
                row.http_port = Set(None);
                row.status = Set(BotStatus::Available.as_str().to_owned());
                row.current_task_id = Set(None);
                row.last_heartbeat_at = Set(Some(now));
                row.updated_at = Set(now);
                row.update(&txn).await?;
                (bot_id, requeued)
            }
            None => {
                let bot_id = Uuid::now_v7();
                bot::ActiveModel {
                    id: Set(bot_id),
                    name: Set(name.to_string()),
                    ip_address: Set(ip.to_string()),
                    status: Set(BotStatus::Available.as_str().to_owned()),
                    systems: Set(systems),
                    delivery: Set(broker_config::Delivery::Amqp.as_str().to_owned()),
                    http_port: Set(None),
                    last_heartbeat_at: Set(Some(now)),
                    current_task_id: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?;
                (bot_id, Vec::new())
            }
        };
        txn.commit().await?;
        self.incidents.report_failed_tasks(&requeued, now).await;
        self.changes.bot(bot_id);
        requeued.into_iter().for_each(|id| self.changes.task(id));
        tracing::info!(bot = %name, %ip, "bot online");
        Ok(Applied { wake: true, commands: Vec::new() })
    }

    async fn bot_heartbeat(
        &self,
        name: &BotName,
        working_on: Option<TaskRef>,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApiError> {
        let mut applied = Applied::default();
        let Some(bot) = bots::find_by_name(&self.db, name.as_str()).await? else {
            tracing::warn!(bot = %name, "heartbeat from an unknown bot ignored (it registers with bot.online)");
            return Ok(applied);
        };
        let holds = match working_on {
            None => None,
            Some(t) => {
                task::Entity::find_by_id(t.task_id)
                    .filter(task::Column::BotId.eq(bot.id))
                    .filter(task::Column::Attempt.eq(i32::try_from(t.attempt).unwrap_or(i32::MAX)))
                    .filter(
                        task::Column::Status
                            .is_in([TaskStatus::Assigned.as_str(), TaskStatus::Running.as_str()]),
                    )
                    .one(&self.db)
                    .await?
            }
        };
        let mut update = bot::Entity::update_many()
            .col_expr(bot::Column::LastHeartbeatAt, Expr::value(Some(now)))
            .filter(bot::Column::Id.eq(bot.id));
        // A bot presumed lost that is alive and idle is available again.
        let back = bot.status == BotStatus::Unavailable.as_str()
            && working_on.is_none()
            && bot.current_task_id.is_none();
        if back {
            update = update
                .col_expr(bot::Column::Status, Expr::value(BotStatus::Available.as_str()))
                .col_expr(bot::Column::UpdatedAt, Expr::value(now));
            applied.wake = true;
            tracing::info!(bot = %name, "bot is back");
        }
        update.exec(&self.db).await?;
        self.changes.bot(bot.id);
        if let (Some(task), None) = (working_on, holds) {
            // It works on an attempt that is no longer its own (it was presumed lost).
            applied.commands.push((
                bot,
                Command::CancelTask { task, reason: "this attempt is no longer current".into() },
            ));
        }
        Ok(applied)
    }

    async fn bot_status(
        &self,
        name: &BotName,
        reported: BotStatus,
        now: DateTime<Utc>,
    ) -> Result<Applied, ApiError> {
        let Some(bot) = bots::find_by_name(&self.db, name.as_str()).await? else {
            return Ok(Applied::default());
        };
        let status = rules::bot_status_after_report(reported, bot.current_task_id.is_some());
        bot::Entity::update_many()
            .col_expr(bot::Column::Status, Expr::value(status.as_str()))
            .col_expr(bot::Column::LastHeartbeatAt, Expr::value(Some(now)))
            .col_expr(bot::Column::UpdatedAt, Expr::value(now))
            .filter(bot::Column::Id.eq(bot.id))
            .exec(&self.db)
            .await?;
        self.changes.bot(bot.id);
        Ok(Applied { wake: status == BotStatus::Available, commands: Vec::new() })
    }

    async fn bot_offline(&self, name: &BotName, now: DateTime<Utc>) -> Result<Applied, ApiError> {
        let txn = self.db.begin().await?;
        let Some(bot) = bots::find_by_name(&txn, name.as_str()).await? else {
            return Ok(Applied::default());
        };
        let requeued =
            self.requeue_held_tasks(&txn, &bot, "the bot went offline holding it", now).await?;
        bot::Entity::update_many()
            .col_expr(bot::Column::Status, Expr::value(BotStatus::Unavailable.as_str()))
            .col_expr(bot::Column::CurrentTaskId, Expr::value(Option::<Uuid>::None))
            .col_expr(bot::Column::UpdatedAt, Expr::value(now))
            .filter(bot::Column::Id.eq(bot.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.incidents.report_failed_tasks(&requeued, now).await;
        self.changes.bot(bot.id);
        requeued.into_iter().for_each(|id| self.changes.task(id));
        tracing::info!(bot = %name, "bot offline");
        Ok(Applied { wake: true, commands: Vec::new() })
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
    row.result = Set(serde_json::to_value(&merged).ok());
}
