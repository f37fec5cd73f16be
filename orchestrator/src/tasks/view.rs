//! How the API shows a task ([`Task`]) and its history ([`TaskEvent`], [`EventKind`]), read
//! from their stored rows.

use broker_config::{System, TaskStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{task, task_event};
use crate::error::ApiError;

/// A task, as the API shows it. The attachment itself is served by
/// `GET /api/v1/tasks/{id}/attachment`, so lists stay small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    /// A UUIDv7: tasks created later have greater ids.
    pub id: Uuid,
    /// What it is for.
    pub description: String,
    /// The system it targets.
    pub system: System,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// Whether it has a CSV attachment.
    pub has_attachment: bool,
    /// Input for systems without a CSV.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Higher runs first.
    pub priority: i32,
    /// Not offered before this time.
    pub not_before: DateTime<Utc>,
    /// The current offer's number: how many times it has been offered (to any bot, answered or
    /// not). It fences late reports; it is not bounded by `max_attempts`.
    pub attempt: u32,
    /// Runs allowed to fail before it fails for good.
    pub max_attempts: u32,
    /// Runs that failed so far (errors, lost bots, runs past their time), at most
    /// `max_attempts`; rejected or unanswered offers do not count.
    pub failures: u32,
    /// Offers nobody answered (expired, or the bot could not be reached); past the
    /// orchestrator's `--max-unanswered-offers` the task fails.
    pub unanswered_offers: u32,
    /// Its maximum run time in seconds; absent: the orchestrator's `--max-run-time`.
    pub max_run_seconds: Option<u32>,
    /// When the current run must have ended.
    pub run_deadline: Option<DateTime<Utc>>,
    /// The bot holding it, if any.
    pub bot_id: Option<Uuid>,
    /// When the current offer lapses.
    pub offer_expires_at: Option<DateTime<Utc>>,
    /// Rows done out of the total.
    pub progress: Progress,
    /// A CSV task's rows that failed or were refused (also counted in `result`); absent without
    /// rows or before any was reported. A COMPLETE task can hold some.
    pub rows_failed: Option<u32>,
    /// The outcome (per-row results for CSV tasks).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When a bot accepted it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Rows done out of the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// Rows done.
    pub done: u32,
    /// Rows in all; absent for tasks without a CSV.
    pub total: Option<u32>,
}

/// The error for a stored row that does not read back (a count out of range, a bad attachment):
/// the database holds what the orchestrator never writes.
pub fn corrupt(id: Uuid, what: &str) -> ApiError {
    ApiError::Internal(sea_orm::DbErr::Type(format!("task {id}: stored {what} is invalid")))
}

impl TryFrom<task::Model> for Task {
    type Error = ApiError;

    fn try_from(row: task::Model) -> Result<Task, ApiError> {
        let id = row.id;
        let count = |n: i32| u32::try_from(n).map_err(|_| corrupt(id, "count"));
        Ok(Task {
            id,
            system: row.system.parse().map_err(|_| corrupt(id, "system"))?,
            status: row.status,
            has_attachment: row.attachment.is_some(),
            attempt: count(row.attempt)?,
            max_attempts: count(row.max_attempts)?,
            failures: count(row.failures)?,
            unanswered_offers: count(row.unanswered_offers)?,
            max_run_seconds: row.max_run_seconds.map(count).transpose()?,
            run_deadline: row.run_deadline,
            progress: Progress {
                done: count(row.progress_done)?,
                total: row.progress_total.map(count).transpose()?,
            },
            description: row.description,
            payload: row.payload,
            priority: row.priority,
            not_before: row.not_before,
            bot_id: row.bot_id,
            offer_expires_at: row.offer_expires_at,
            rows_failed: row.rows_failed.map(count).transpose()?,
            result: row.result,
            error: row.error,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        })
    }
}

/// Kinds of entries in a task's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Submitted: WAITING.
    Created,
    /// Its content was edited.
    Updated,
    /// Cancelled by a user.
    Cancelled,
    /// Sent back to WAITING by a user.
    Retried,
    /// Its offer was withdrawn (the bot was deleted) and it is WAITING again.
    OfferWithdrawn,
    /// Offered to a bot (a new attempt).
    Assigned,
    /// The offer could not reach the bot; WAITING again.
    OfferUndeliverable,
    /// The bot did not answer before the offer expired; WAITING again.
    OfferExpired,
    /// The bot accepted: RUNNING.
    Accepted,
    /// The bot declined: WAITING again.
    Rejected,
    /// The bot reported rows done (recorded once per report, not per row).
    Progress,
    /// The bot completed it: COMPLETE.
    Completed,
    /// The run failed; `detail.retry_at` says when it runs again, if it does.
    Failed,
    /// The bot handed it back unfinished: WAITING again.
    Released,
    /// Its bot went silent or restarted: WAITING again (or FAILED, out of attempts).
    BotLost,
    /// An event about an old attempt or a task that moved on: recorded, nothing changed.
    StaleEvent,
}

impl EventKind {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Cancelled => "cancelled",
            EventKind::Retried => "retried",
            EventKind::OfferWithdrawn => "offer_withdrawn",
            EventKind::Assigned => "assigned",
            EventKind::OfferUndeliverable => "offer_undeliverable",
            EventKind::OfferExpired => "offer_expired",
            EventKind::Accepted => "accepted",
            EventKind::Rejected => "rejected",
            EventKind::Progress => "progress",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Released => "released",
            EventKind::BotLost => "bot_lost",
            EventKind::StaleEvent => "stale_event",
        }
    }
}

/// An entry in a task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskEvent {
    /// Its sequence number (history is ordered by it).
    pub id: i64,
    /// The task it belongs to (absent once the task is deleted).
    pub task_id: Option<Uuid>,
    /// The bot involved, if any.
    pub bot_id: Option<Uuid>,
    /// The attempt it belongs to.
    pub attempt: Option<u32>,
    /// What happened: an [`EventKind`] name (`created`, `assigned`, `completed`, …).
    pub kind: String,
    /// What goes with it: the reason of a failure, the fields an edit changed, when a retry
    /// runs, the status it left.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
    /// When the orchestrator recorded it.
    pub at: DateTime<Utc>,
}

impl From<task_event::Model> for TaskEvent {
    fn from(row: task_event::Model) -> TaskEvent {
        TaskEvent {
            id: row.id,
            task_id: row.task_id,
            bot_id: row.bot_id,
            attempt: row.attempt.and_then(|a| u32::try_from(a).ok()),
            kind: row.kind,
            detail: row.detail,
            at: row.at,
        }
    }
}
