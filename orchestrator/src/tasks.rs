//! Tasks: their validated fields ([`TaskSpec`]), how the API shows them ([`Task`]), the
//! transitions a user may ask for, their history ([`TaskEvent`]) and how they are stored.

use std::collections::HashMap;

use broker_config::{Attachment, AttachmentError, BotStatus, CpePayload, System, TaskStatus};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, Set, TransactionSession as _, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{task, task_event};
use crate::error::ApiError;
use crate::pagination::{Page, PageRequest, fetch_page};

/// Attempts a task gets when the request does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The most attempts a task may ask for.
pub const MAX_MAX_ATTEMPTS: u32 = 100;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;

/// A task, as the API shows it. The attachment itself is served by
/// `GET /api/v1/tasks/{id}/attachment`, so lists stay small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    /// Its id.
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

fn corrupt(id: Uuid, what: &str) -> ApiError {
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
            status: row.status.parse().map_err(|_| corrupt(id, "status"))?,
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
            result: row.result,
            error: row.error,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        })
    }
}

/// A task's fields as a client sends them in JSON (POST and PUT). Multipart uploads carry the
/// same fields as form parts, with the CSV as a file part instead of base64.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// What it is for (1 to 2,000 characters).
    #[schema(example = "Create the March hires in Vivo360")]
    pub description: String,
    /// The system it targets.
    pub system: System,
    /// The CSV, base64 encoded; required for VIVO360 (columns name, email, login, profile).
    #[serde(default)]
    pub attachment: Option<String>,
    /// A JSON object, for systems without a CSV.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Higher runs first; default 0.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Not offered before this time; default: at once.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Runs that may fail before it fails for good, 1 to 100; default 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Its maximum run time, 1 to 604,800 seconds (a week); default: the orchestrator's
    /// `--max-run-time` (an hour).
    #[serde(default)]
    pub max_run_seconds: Option<u32>,
    /// A new task is WAITING: leave it out (or say WAITING).
    #[serde(default)]
    pub status: Option<TaskStatus>,
}

/// Many tasks in one request (`POST /api/v1/tasks/bulk`), created together or not at all.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkTaskRequest {
    /// 1 to 1,000 tasks, each as `POST /api/v1/tasks` takes it in JSON.
    pub tasks: Vec<TaskRequest>,
}

impl BulkTaskRequest {
    /// Checks every task ([`TaskSpec::parse_new`]); the first bad one refuses them all, its
    /// index in the field (`tasks[3].payload`).
    pub fn parse(self, max_attachment_bytes: usize) -> Result<Vec<TaskSpec>, ApiError> {
        if !(1..=MAX_BULK_TASKS).contains(&self.tasks.len()) {
            return Err(ApiError::invalid(
                "tasks",
                format!(
                    "a bulk request holds 1 to {MAX_BULK_TASKS} tasks, not {}",
                    self.tasks.len()
                ),
            ));
        }
        self.tasks
            .into_iter()
            .enumerate()
            .map(|(index, request)| {
                TaskSpec::parse_new(request, None, max_attachment_bytes)
                    .map_err(|e| e.within(&format!("tasks[{index}]")))
            })
            .collect()
    }
}

/// The tasks a bulk request created, in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkTasks {
    /// The new tasks.
    pub tasks: Vec<Task>,
}

/// A change of a task (PUT and PATCH alike): only the fields given change. A client may send
/// back the whole task it read: the fields the orchestrator owns are then accepted and ignored,
/// but `id` and `created_at` must be this task's.
///
/// `status` RUNNING, COMPLETE or FAILED is a bot's report on the task it holds (the original
/// contract's way to report), the same as `task.accepted`, `task.completed` and `task.failed`;
/// `result` (with `rows` for CSV tasks), `error` and `retryable` go with it, and `attempt` or
/// `bot_id`, when sent, must be the current ones. CANCELLED cancels; WAITING retries a FAILED
/// or CANCELLED task.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    /// This task's id, if sent: it must match the path.
    pub id: Option<Uuid>,
    /// This task's creation time, if sent: it must match.
    pub created_at: Option<DateTime<Utc>>,
    /// With a report: the offer reported on; a report for another one is a 409.
    pub attempt: Option<u32>,
    /// With a report: the bot reporting; a report for a task another bot holds is a 409.
    pub bot_id: Option<Uuid>,
    /// With COMPLETE: the outcome; for CSV tasks `{"rows": [{"row": 1, "status": "CREATED",
    /// "message": "…"}]}`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// With COMPLETE or FAILED, for CSV tasks: the rows' outcomes (the same as `result.rows`).
    #[schema(value_type = Option<Vec<Object>>)]
    pub rows: Option<Vec<broker_config::RowOutcome>>,
    /// With FAILED: what went wrong.
    pub error: Option<String>,
    /// With FAILED: whether another run may succeed (default true; runs are still bounded by
    /// `max_attempts`).
    pub retryable: Option<bool>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub has_attachment: Option<Value>,
    /// The offer's contract version, when a bot sends back the offer it was POSTed: ignored.
    #[schema(value_type = Option<Object>)]
    pub v: Option<Value>,
    /// The offer's `type` (`task.assign`), when a bot sends back the offer: ignored.
    #[serde(rename = "type")]
    #[schema(value_type = Option<Object>)]
    pub kind: Option<Value>,
    /// The offer's `task_id` (the task's id), when a bot sends back the offer: ignored.
    #[schema(value_type = Option<Object>)]
    pub task_id: Option<Value>,
    /// The offer's `resume_after_row`, when a bot sends back the offer: ignored.
    #[schema(value_type = Option<Object>)]
    pub resume_after_row: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub failures: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub unanswered_offers: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub offer_expires_at: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub run_deadline: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub started_at: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub finished_at: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub updated_at: Option<Value>,
    /// New maximum run time, in seconds.
    pub max_run_seconds: Option<u32>,
    /// New description.
    pub description: Option<String>,
    /// New system (the attachment is checked against it).
    pub system: Option<System>,
    /// New CSV, base64 encoded.
    pub attachment: Option<String>,
    /// New payload.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// New priority.
    pub priority: Option<i32>,
    /// New due time.
    pub not_before: Option<DateTime<Utc>>,
    /// New attempt budget.
    pub max_attempts: Option<u32>,
    /// CANCELLED to cancel, WAITING to retry a FAILED or CANCELLED task; RUNNING, COMPLETE or
    /// FAILED from the bot that holds it: its report.
    pub status: Option<TaskStatus>,
}

impl TaskPatch {
    /// Whether this write is a bot's report (RUNNING, COMPLETE or FAILED).
    pub fn is_report(&self) -> bool {
        self.status.is_some_and(TaskStatus::is_report)
    }

    /// Whether this write is a report on `current`: a report status on a task a bot holds, or
    /// one that would change its status. The same status on a task no bot holds (`FAILED` on a
    /// FAILED task, with a new description) is an edit.
    pub fn is_report_on(&self, current: &task::Model) -> bool {
        let held = current.status == TaskStatus::Assigned.as_str()
            || current.status == TaskStatus::Running.as_str();
        self.is_report() && (held || self.status.is_some_and(|s| s.as_str() != current.status))
    }

    /// Checks the identity fields a client sent back against `current`.
    pub fn check_identity(&self, current: &task::Model) -> Result<(), ApiError> {
        if self.id.is_some_and(|id| id != current.id) {
            return Err(ApiError::invalid("id", "id is read-only: it must be this task's id"));
        }
        if self.created_at.is_some_and(|at| at != current.created_at) {
            return Err(ApiError::invalid("created_at", "created_at is read-only"));
        }
        Ok(())
    }

    /// The full request this patch makes of the stored task.
    pub fn apply_to(self, current: &task::Model) -> Result<TaskRequest, ApiError> {
        Ok(TaskRequest {
            description: self.description.unwrap_or_else(|| current.description.clone()),
            system: match self.system {
                Some(system) => system,
                None => current.system.parse().map_err(|_| corrupt(current.id, "system"))?,
            },
            attachment: self.attachment.or_else(|| current.attachment.clone()),
            payload: self.payload.or_else(|| current.payload.clone()),
            priority: Some(self.priority.unwrap_or(current.priority)),
            not_before: Some(self.not_before.unwrap_or(current.not_before)),
            max_attempts: Some(match self.max_attempts {
                Some(n) => n,
                None => u32::try_from(current.max_attempts)
                    .map_err(|_| corrupt(current.id, "max_attempts"))?,
            }),
            max_run_seconds: self
                .max_run_seconds
                .or_else(|| current.max_run_seconds.and_then(|s| u32::try_from(s).ok())),
            status: self.status,
        })
    }
}

/// A task's fields, checked: only this type reaches the database.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// What it is for, trimmed, never empty.
    pub description: String,
    /// The system it targets.
    pub system: System,
    /// The CSV, parsed and checked against the system's columns.
    pub attachment: Option<Attachment>,
    /// A JSON object.
    pub payload: Option<Value>,
    /// Higher runs first.
    pub priority: i32,
    /// Not offered before this time; `None` means when created.
    pub not_before: Option<DateTime<Utc>>,
    /// Runs that may fail before it fails for good.
    pub max_attempts: u32,
    /// Its own maximum run time, in seconds.
    pub max_run_seconds: Option<u32>,
}

/// The longest maximum run time a task may ask for: a week.
pub const MAX_RUN_SECONDS: u32 = 7 * 24 * 3600;

impl TaskSpec {
    /// Checks a new task's request: [`TaskSpec::parse`], and a new task is always WAITING.
    pub fn parse_new(
        request: TaskRequest,
        upload: Option<Vec<u8>>,
        max_attachment_bytes: usize,
    ) -> Result<TaskSpec, ApiError> {
        if request.status.is_some_and(|s| s != TaskStatus::Waiting) {
            return Err(ApiError::invalid(
                "status",
                "a new task is always WAITING; leave status out",
            ));
        }
        TaskSpec::parse(request, upload, max_attachment_bytes)
    }

    /// Checks a request. `upload` is a CSV sent as a file (multipart), which takes the place of
    /// the base64 `attachment`; `max_attachment_bytes` bounds the decoded CSV.
    pub fn parse(
        request: TaskRequest,
        upload: Option<Vec<u8>>,
        max_attachment_bytes: usize,
    ) -> Result<TaskSpec, ApiError> {
        let description = request.description.trim().to_owned();
        if description.is_empty() {
            return Err(ApiError::invalid("description", "description must not be empty"));
        }
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(ApiError::invalid(
                "description",
                format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let system = request.system;
        let attachment = match (upload, request.attachment) {
            (Some(bytes), _) => Some(Attachment::from_bytes(bytes, system, max_attachment_bytes)),
            (None, Some(base64)) => {
                Some(Attachment::from_base64(&base64, system, max_attachment_bytes))
            }
            (None, None) => None,
        }
        .transpose()
        .map_err(attachment_error)?;
        if attachment.is_none() && system.required_columns().is_some() {
            return Err(ApiError::invalid(
                "attachment",
                format!("{system} tasks need a CSV attachment, one row per item"),
            ));
        }
        if let Some(payload) = &request.payload
            && !payload.is_object()
        {
            return Err(ApiError::invalid("payload", "payload must be a JSON object"));
        }
        if system == System::Cpe {
            // The bot could only fail it later: say so now, field by field.
            let payload = request.payload.as_ref().ok_or_else(|| {
                ApiError::invalid("payload", format!("CPE tasks need a payload: {CPE_PAYLOAD}"))
            })?;
            CpePayload::from_value(payload).map_err(|e| {
                ApiError::invalid("payload", format!("a CPE task's payload is {CPE_PAYLOAD}: {e}"))
            })?;
        }
        let max_attempts = request.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=MAX_MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(ApiError::invalid(
                "max_attempts",
                format!("max_attempts must be between 1 and {MAX_MAX_ATTEMPTS}"),
            ));
        }
        if let Some(seconds) = request.max_run_seconds
            && !(1..=MAX_RUN_SECONDS).contains(&seconds)
        {
            return Err(ApiError::invalid(
                "max_run_seconds",
                format!("max_run_seconds must be between 1 and {MAX_RUN_SECONDS} (a week)"),
            ));
        }
        Ok(TaskSpec {
            description,
            system,
            attachment,
            payload: request.payload,
            priority: request.priority.unwrap_or(0),
            not_before: request.not_before,
            max_attempts,
            max_run_seconds: request.max_run_seconds,
        })
    }
}

fn attachment_error(err: AttachmentError) -> ApiError {
    match err {
        AttachmentError::TooLarge { .. } => {
            ApiError::TooLarge { field: Some("attachment".into()), message: err.to_string() }
        }
        err => ApiError::invalid("attachment", err.to_string()),
    }
}

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
    let from: TaskStatus = current.status.parse().map_err(|_| corrupt(current.id, "status"))?;
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
        TaskStatus::Complete => Event::TaskCompleted { task, bot, rows, output: patch.result, at },
        _ => Event::TaskFailed {
            task,
            bot,
            rows,
            error: patch.error.unwrap_or_else(|| "the bot reported FAILED".to_owned()),
            retryable: patch.retryable.unwrap_or(true),
            at,
        },
    };
    Ok(Some(event))
}

/// Whether a task's content may change: not while a bot holds it, and not once it completed.
fn is_editable(status: TaskStatus) -> bool {
    matches!(status, TaskStatus::Waiting | TaskStatus::Failed | TaskStatus::Cancelled)
}

/// Kinds of entries in a task's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Submitted.
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
    /// Rows done.
    Progress,
    /// Done.
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
    /// The task.
    pub task_id: Option<Uuid>,
    /// The bot involved, if any.
    pub bot_id: Option<Uuid>,
    /// The attempt it belongs to.
    pub attempt: Option<u32>,
    /// What happened.
    pub kind: String,
    /// Details.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
    /// When.
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

/// Appends an entry to a task's history, with the task's current bot and attempt.
pub async fn record_event(
    db: &impl ConnectionTrait,
    row: &task::Model,
    kind: EventKind,
    detail: Option<Value>,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    record(db, row.id, row.bot_id, row.attempt, kind, detail, at).await
}

/// Appends an entry to a task's history.
pub async fn record(
    db: &impl ConnectionTrait,
    task_id: Uuid,
    bot_id: Option<Uuid>,
    attempt: i32,
    kind: EventKind,
    detail: Option<Value>,
    at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let mut history = History::default();
    history.push(task_id, bot_id, attempt, kind, detail, at);
    history.write(db).await
}

/// History entries gathered by a transaction that writes many (a batch of events, a dispatch
/// pass, a bulk create) and written together just before it commits: one statement per
/// thousand entries rather than one per entry. Their order is kept.
#[derive(Default)]
pub struct History(Vec<task_event::ActiveModel>);

impl History {
    /// Entries per INSERT: 6 values each stays well within SQLite's 32,766 bound parameters.
    const CHUNK: usize = 1000;

    /// Adds an entry, to be written by [`History::write`].
    pub fn push(
        &mut self,
        task_id: Uuid,
        bot_id: Option<Uuid>,
        attempt: i32,
        kind: EventKind,
        detail: Option<Value>,
        at: DateTime<Utc>,
    ) {
        self.0.push(task_event::ActiveModel {
            task_id: Set(Some(task_id)),
            bot_id: Set(bot_id),
            attempt: Set(Some(attempt)),
            kind: Set(kind.as_str().to_owned()),
            detail: Set(detail),
            at: Set(at),
            ..Default::default()
        });
    }

    /// Writes every entry gathered so far (within the caller's transaction) and forgets them.
    pub async fn write(&mut self, db: &impl ConnectionTrait) -> Result<(), ApiError> {
        while !self.0.is_empty() {
            let rest = self.0.split_off(self.0.len().min(Self::CHUNK));
            let chunk = std::mem::replace(&mut self.0, rest);
            task_event::Entity::insert_many(chunk).exec_without_returning(db).await?;
        }
        Ok(())
    }
}

/// What a CPE task's payload holds, for error messages.
const CPE_PAYLOAD: &str = r#"{"equipment_id": "…", "timeoutInSeconds": N, "parameters": {…}} (what POST /api/v1/equipment/cpe/{id} stores)"#;

/// Filters for listing tasks; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Any of these statuses.
    pub statuses: Vec<TaskStatus>,
    /// Any of these systems.
    pub systems: Vec<System>,
    /// Held (or last held) by this bot.
    pub bot_id: Option<Uuid>,
}

/// The most tasks one bulk request creates (`POST /api/v1/tasks/bulk`).
pub const MAX_BULK_TASKS: usize = 1000;

/// A new WAITING task's row.
fn new_row(spec: TaskSpec, now: DateTime<Utc>) -> task::ActiveModel {
    let rows = spec.attachment.as_ref().map(|a| i32::try_from(a.row_count()).unwrap_or(i32::MAX));
    task::ActiveModel {
        id: Set(Uuid::now_v7()),
        description: Set(spec.description),
        system: Set(spec.system.as_str().to_owned()),
        status: Set(TaskStatus::Waiting.as_str().to_owned()),
        attachment: Set(spec.attachment.map(|a| a.to_base64())),
        payload: Set(spec.payload),
        priority: Set(spec.priority),
        not_before: Set(spec.not_before.unwrap_or(now)),
        attempt: Set(0),
        max_attempts: Set(spec.max_attempts as i32),
        failures: Set(0),
        bot_id: Set(None),
        avoid_bot_id: Set(None),
        offer_expires_at: Set(None),
        progress_done: Set(0),
        progress_total: Set(rows),
        result: Set(None),
        error: Set(None),
        created_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
        updated_at: Set(now),
        unanswered_offers: Set(0),
        max_run_seconds: Set(spec.max_run_seconds.and_then(|s| i32::try_from(s).ok())),
        run_deadline: Set(None),
    }
}

/// Stores a new WAITING task and its `created` event.
pub async fn create_task(
    db: &impl TransactionTrait,
    spec: TaskSpec,
    now: DateTime<Utc>,
) -> Result<Task, ApiError> {
    let txn = db.begin().await?;
    let row = new_row(spec, now).insert(&txn).await?;
    record_event(&txn, &row, EventKind::Created, None, now).await?;
    txn.commit().await?;
    row.try_into()
}

/// Stores new WAITING tasks and their `created` events in one transaction, all or none, in
/// the order given (which is also the order they are offered in, all else equal: their ids
/// grow). At most [`MAX_BULK_TASKS`], which one INSERT holds on both databases (as
/// [`BulkTaskRequest::parse`] checks).
pub async fn create_tasks(
    db: &impl TransactionTrait,
    specs: Vec<TaskSpec>,
    now: DateTime<Utc>,
) -> Result<Vec<Task>, ApiError> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<task::ActiveModel> = specs.into_iter().map(|spec| new_row(spec, now)).collect();
    let order: HashMap<Uuid, usize> =
        rows.iter().enumerate().filter_map(|(i, row)| Some((*row.id.try_as_ref()?, i))).collect();
    let txn = db.begin().await?;
    // One statement: 25 values a row, 1,000 rows stay within both databases' bound parameters.
    let mut stored = task::Entity::insert_many(rows).exec_with_returning(&txn).await?;
    let mut history = History::default();
    for row in &stored {
        history.push(row.id, None, row.attempt, EventKind::Created, None, now);
    }
    history.write(&txn).await?;
    txn.commit().await?;
    // RETURNING gives the rows in no promised order.
    stored.sort_by_key(|row| order.get(&row.id).copied().unwrap_or(usize::MAX));
    stored.into_iter().map(Task::try_from).collect()
}

/// How many tasks are in each status (every status present, zero included).
pub async fn count_by_status(
    db: &impl ConnectionTrait,
) -> Result<std::collections::BTreeMap<String, u64>, ApiError> {
    use sea_orm::QuerySelect as _;
    use sea_orm::sea_query::{Expr, ExprTrait as _};
    let rows: Vec<(String, i64)> = task::Entity::find()
        .select_only()
        .column(task::Column::Status)
        .column_as(Expr::col(task::Column::Id).count(), "n")
        .group_by(task::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let mut counts: std::collections::BTreeMap<String, u64> =
        TaskStatus::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
    for (status, n) in rows {
        counts.insert(status, u64::try_from(n).unwrap_or_default());
    }
    Ok(counts)
}

/// One stored task row.
pub async fn find_task(db: &impl ConnectionTrait, id: Uuid) -> Result<task::Model, ApiError> {
    task::Entity::find_by_id(id).one(db).await?.ok_or(ApiError::NotFound("task"))
}

/// One task.
pub async fn get_task(db: &impl ConnectionTrait, id: Uuid) -> Result<Task, ApiError> {
    find_task(db, id).await?.try_into()
}

/// A task's CSV, decoded.
pub async fn get_attachment(db: &impl ConnectionTrait, id: Uuid) -> Result<Vec<u8>, ApiError> {
    use base64::Engine as _;
    let row = find_task(db, id).await?;
    let encoded = row.attachment.ok_or(ApiError::NotFound("attachment"))?;
    base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| corrupt(id, "attachment"))
}

/// A page of tasks matching `filter`.
pub async fn list_tasks(
    db: &impl ConnectionTrait,
    filter: &TaskFilter,
    page: PageRequest,
) -> Result<Page<Task>, ApiError> {
    let mut select = task::Entity::find();
    if !filter.statuses.is_empty() {
        select =
            select.filter(task::Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str())));
    }
    if !filter.systems.is_empty() {
        select =
            select.filter(task::Column::System.is_in(filter.systems.iter().map(|s| s.as_str())));
    }
    if let Some(bot_id) = filter.bot_id {
        select = select.filter(task::Column::BotId.eq(bot_id));
    }
    fetch_page(
        db,
        select,
        (task::Column::CreatedAt, task::Column::Id),
        page,
        |row| (row.created_at, row.id),
        Task::try_from,
    )
    .await
}

/// What a user's update did besides changing the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateEffects {
    /// A bot was working on the cancelled task and must be told to stop: (bot, task, attempt).
    pub stop: Option<(Uuid, broker_config::TaskRef)>,
    /// The task became WAITING (a retry) or a bot became free: the dispatcher has work.
    pub wake: bool,
}

/// Applies a user's update: new content (only while no bot holds the task and it has not
/// completed) and an optional status change ([`check_user_transition`]), with their events.
/// Cancelling a task a bot holds frees the bot in the same transaction.
pub async fn update_task(
    db: &impl TransactionTrait,
    id: Uuid,
    request: impl FnOnce(&task::Model) -> Result<(TaskSpec, Option<TaskStatus>), ApiError>,
    now: DateTime<Utc>,
) -> Result<(Task, UpdateEffects), ApiError> {
    let txn = crate::pipeline::begin_in_line(db).await?;
    let current = find_task(&txn, id).await?;
    let from: TaskStatus = current.status.parse().map_err(|_| corrupt(id, "status"))?;
    let (spec, to) = request(&current)?;
    if let Some(to) = to {
        check_user_transition(from, to)?;
    }

    let rows = spec.attachment.as_ref().map(|a| i32::try_from(a.row_count()).unwrap_or(i32::MAX));
    let attachment = spec.attachment.map(|a| a.to_base64());
    let not_before = spec.not_before.unwrap_or(current.created_at);
    let max_attempts = spec.max_attempts as i32;
    let max_run_seconds = spec.max_run_seconds.and_then(|s| i32::try_from(s).ok());
    let changed: Vec<&str> = [
        ("description", spec.description != current.description),
        ("system", spec.system.as_str() != current.system),
        ("attachment", attachment != current.attachment),
        ("payload", spec.payload != current.payload),
        ("priority", spec.priority != current.priority),
        ("not_before", not_before != current.not_before),
        ("max_attempts", max_attempts != current.max_attempts),
        ("max_run_seconds", max_run_seconds != current.max_run_seconds),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    let mut row: task::ActiveModel = current.clone().into();
    row.description = Set(spec.description);
    row.system = Set(spec.system.as_str().to_owned());
    row.attachment = Set(attachment);
    row.payload = Set(spec.payload);
    row.priority = Set(spec.priority);
    row.not_before = Set(not_before);
    row.max_attempts = Set(max_attempts);
    row.max_run_seconds = Set(max_run_seconds);
    row.progress_total = Set(rows);
    if !changed.is_empty() && !is_editable(from) {
        return Err(ApiError::conflict(
            "task_not_editable",
            changed.first().copied(),
            format!("a {from} task cannot be edited; only WAITING, FAILED and CANCELLED tasks can"),
        ));
    }

    let mut effects = UpdateEffects::default();
    let status_event = match to {
        Some(TaskStatus::Cancelled) if from != TaskStatus::Cancelled => {
            row.status = Set(TaskStatus::Cancelled.as_str().to_owned());
            row.offer_expires_at = Set(None);
            row.run_deadline = Set(None);
            row.finished_at = Set(Some(now));
            if let (Some(bot_id), TaskStatus::Assigned | TaskStatus::Running) =
                (current.bot_id, from)
            {
                crate::bots::release_bot(&txn, bot_id, id, BotStatus::Available, now).await?;
                let attempt = u32::try_from(current.attempt).unwrap_or_default();
                effects.stop = Some((bot_id, broker_config::TaskRef { task_id: id, attempt }));
                effects.wake = true;
            }
            Some(EventKind::Cancelled)
        }
        Some(TaskStatus::Waiting) if from != TaskStatus::Waiting => {
            effects.wake = true;
            // A retry starts afresh: a new budget of attempts and no trace of the last outcome.
            row.status = Set(TaskStatus::Waiting.as_str().to_owned());
            row.failures = Set(0);
            row.unanswered_offers = Set(0);
            row.bot_id = Set(None);
            row.avoid_bot_id = Set(None);
            row.error = Set(None);
            row.result = Set(None);
            row.progress_done = Set(0);
            row.started_at = Set(None);
            row.finished_at = Set(None);
            Some(EventKind::Retried)
        }
        _ => None,
    };
    if changed.is_empty() && status_event.is_none() {
        txn.commit().await?;
        return Ok((current.try_into()?, effects));
    }
    row.updated_at = Set(now);
    let updated = row.update(&txn).await?;
    if !changed.is_empty() {
        record_event(
            &txn,
            &updated,
            EventKind::Updated,
            Some(serde_json::json!({ "fields": changed })),
            now,
        )
        .await?;
    }
    if let Some(kind) = status_event {
        record_event(&txn, &updated, kind, Some(serde_json::json!({ "from": from })), now).await?;
    }
    txn.commit().await?;
    Ok((updated.try_into()?, effects))
}

/// Deletes a task and its history. A task a bot holds (ASSIGNED or RUNNING) must be cancelled
/// first.
pub async fn delete_task(db: &impl TransactionTrait, id: Uuid) -> Result<(), ApiError> {
    let txn = crate::pipeline::begin_in_line(db).await?;
    let row = find_task(&txn, id).await?;
    if row.status == TaskStatus::Assigned.as_str() || row.status == TaskStatus::Running.as_str() {
        return Err(ApiError::conflict(
            "task_held",
            Some("status"),
            format!("the task is {}; cancel it before deleting it", row.status),
        ));
    }
    task::Entity::delete_by_id(id).exec(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// A task's history, oldest first.
pub async fn list_events(db: &impl ConnectionTrait, id: Uuid) -> Result<Vec<TaskEvent>, ApiError> {
    find_task(db, id).await?;
    let rows = task_event::Entity::find()
        .filter(task_event::Column::TaskId.eq(id))
        .order_by_asc(task_event::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(TaskEvent::from).collect())
}

/// Puts an offered (ASSIGNED) task back to WAITING, recording why.
pub async fn requeue_offer(
    db: &impl ConnectionTrait,
    row: task::Model,
    now: DateTime<Utc>,
    why: EventKind,
) -> Result<(), ApiError> {
    let mut active: task::ActiveModel = row.clone().into();
    active.status = Set(TaskStatus::Waiting.as_str().to_owned());
    active.bot_id = Set(None);
    active.offer_expires_at = Set(None);
    active.updated_at = Set(now);
    active.update(db).await?;
    record_event(db, &row, why, None, now).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const USERS: &str = "name,email,login,profile\nAna,ana@example.com,ana,agent\n";

    fn request(system: System) -> TaskRequest {
        TaskRequest {
            description: "  hires  ".into(),
            system,
            attachment: Some(base64::engine::general_purpose::STANDARD.encode(USERS)),
            payload: None,
            priority: None,
            not_before: None,
            max_attempts: None,
            max_run_seconds: None,
            status: None,
        }
    }

    fn field_of(result: Result<TaskSpec, ApiError>) -> Option<String> {
        match result {
            Err(ApiError::Invalid { field, .. } | ApiError::TooLarge { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_gets_defaults() {
        let spec = TaskSpec::parse(request(System::Vivo360), None, 1024).expect("valid");
        assert_eq!(spec.description, "hires");
        assert_eq!((spec.priority, spec.max_attempts), (0, DEFAULT_MAX_ATTEMPTS));
        assert_eq!(spec.attachment.map(|a| a.row_count()), Some(1));
    }

    #[test]
    fn an_upload_replaces_the_base64_attachment() {
        let upload = b"name,email,login,profile\nA,a@x.io,a,agent\nB,b@x.io,b,agent\n".to_vec();
        let spec = TaskSpec::parse(request(System::Vivo360), Some(upload), 1024).expect("valid");
        assert_eq!(spec.attachment.map(|a| a.row_count()), Some(2));
    }

    #[test]
    fn bad_fields_are_named() {
        let r = request(System::Vivo360);
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { description: " ".into(), ..r.clone() },
                None,
                1024
            ))
            .as_deref(),
            Some("description")
        );
        assert_eq!(
            field_of(TaskSpec::parse(TaskRequest { attachment: None, ..r.clone() }, None, 1024))
                .as_deref(),
            Some("attachment")
        );
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { attachment: Some("@@".into()), ..r.clone() },
                None,
                1024
            ))
            .as_deref(),
            Some("attachment")
        );
        assert!(matches!(TaskSpec::parse(r.clone(), None, 8), Err(ApiError::TooLarge { .. })));
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { payload: Some(serde_json::json!([1])), ..r.clone() },
                None,
                1024
            ))
            .as_deref(),
            Some("payload")
        );
        assert_eq!(
            field_of(TaskSpec::parse(TaskRequest { max_attempts: Some(0), ..r }, None, 1024))
                .as_deref(),
            Some("max_attempts")
        );
    }

    #[test]
    fn a_cpe_task_needs_the_payload_its_bot_reads() {
        let cpe = |payload| TaskRequest { attachment: None, payload, ..request(System::Cpe) };
        assert_eq!(field_of(TaskSpec::parse(cpe(None), None, 1024)).as_deref(), Some("payload"));
        let wrong = serde_json::json!({"equipment_id": "CPE000001", "parameters": {}});
        let refused =
            TaskSpec::parse(cpe(Some(wrong)), None, 1024).expect_err("refused").to_string();
        assert!(refused.contains("timeoutInSeconds"), "{refused}");
        let right = serde_json::json!({"equipment_id": "CPE000001", "timeoutInSeconds": 30, "parameters": {"vlan": 534}});
        assert!(TaskSpec::parse(cpe(Some(right)), None, 1024).is_ok());
    }

    #[test]
    fn systems_without_a_csv_need_no_attachment() {
        let noop = TaskRequest {
            attachment: None,
            payload: Some(serde_json::json!({"duration_ms": 5})),
            ..request(System::Noop)
        };
        assert!(TaskSpec::parse(noop, None, 1024).is_ok());
    }

    #[test]
    fn a_status_write_is_a_report_only_on_a_held_task_or_when_it_changes_the_status() {
        let now = crate::clock::now();
        let row = |status: TaskStatus| task::Model {
            id: Uuid::nil(),
            description: "d".into(),
            system: "NOOP".into(),
            status: status.as_str().into(),
            attachment: None,
            payload: None,
            priority: 0,
            not_before: now,
            attempt: 1,
            max_attempts: 3,
            failures: 0,
            bot_id: None,
            avoid_bot_id: None,
            offer_expires_at: None,
            progress_done: 0,
            progress_total: None,
            result: None,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            unanswered_offers: 0,
            max_run_seconds: None,
            run_deadline: None,
        };
        let write = |status| TaskPatch { status: Some(status), ..Default::default() };
        assert!(write(TaskStatus::Complete).is_report_on(&row(TaskStatus::Running)));
        assert!(write(TaskStatus::Running).is_report_on(&row(TaskStatus::Assigned)));
        assert!(
            write(TaskStatus::Complete).is_report_on(&row(TaskStatus::Waiting)),
            "refused as a report"
        );
        // FAILED again, with a new description, on a FAILED task: an edit.
        assert!(!write(TaskStatus::Failed).is_report_on(&row(TaskStatus::Failed)));
        assert!(!write(TaskStatus::Cancelled).is_report_on(&row(TaskStatus::Running)));
    }

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
