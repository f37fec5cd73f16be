//! What a client sends to create or change tasks ([`TaskRequest`], [`TaskPatch`], a bulk
//! request), checked into the only type that reaches the database ([`TaskSpec`]).

use broker_config::{Attachment, System, TaskStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::view::*;
use crate::entity::task;
use crate::error::ApiError;
use crate::systems::{MAX_MAX_ATTEMPTS, MAX_RUN_SECONDS, Registry};

/// Attempts a task gets when the request does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2_000;

/// The most tasks one bulk request creates (`POST /api/v1/tasks/bulk`).
pub const MAX_BULK_TASKS: usize = 1000;
/// A task's fields as a client sends them in JSON (POST and PUT). Multipart uploads carry the
/// same fields as form parts, with the CSV as a file part instead of base64.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// What it is for (1 to 2,000 characters).
    #[schema(example = "Create the March hires in Vivo360")]
    pub description: String,
    /// The system it targets: one of `GET /api/v1/systems`.
    pub system: System,
    /// The CSV, base64 encoded; required by systems whose contract is a CSV (VIVO360: columns
    /// name, email, login, profile).
    #[serde(default)]
    pub attachment: Option<String>,
    /// A JSON object, for systems without a CSV; checked against the system's JSON Schema.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// Higher runs first; default: the system's, else 0.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Not offered before this time; default: at once.
    #[serde(default)]
    pub not_before: Option<DateTime<Utc>>,
    /// Runs that may fail before it fails for good, 1 to 100; default: the system's, else 3.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Its maximum run time, 1 to 604,800 seconds (a week); default: the system's, else the
    /// orchestrator's `--max-run-time` (an hour).
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
    pub fn parse(
        self,
        max_attachment_bytes: usize,
        registry: &Registry,
    ) -> Result<Vec<TaskSpec>, ApiError> {
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
                TaskSpec::parse_new(request, None, max_attachment_bytes, registry)
                    .map_err(|e| e.within(&format!("tasks[{index}]")))
            })
            .collect()
    }
}

/// The tasks a bulk request created, in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BulkTasks {
    /// The tasks as stored, WAITING, in the order the request gave them.
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
    /// Read-only (counted from the rows reported): ignored.
    #[schema(value_type = Option<Object>)]
    pub rows_failed: Option<Value>,
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
    /// A new description (1 to 2,000 characters).
    pub description: Option<String>,
    /// New system (the attachment is checked against it).
    pub system: Option<System>,
    /// New CSV, base64 encoded.
    pub attachment: Option<String>,
    /// A new payload (replacing it whole).
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    /// New priority.
    pub priority: Option<i32>,
    /// New due time.
    pub not_before: Option<DateTime<Utc>>,
    /// A new budget of failed runs, 1 to 100.
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
        let held = current.status == TaskStatus::Assigned || current.status == TaskStatus::Running;
        self.is_report() && (held || self.status.is_some_and(|s| s != current.status))
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
    /// How long its offers wait for an answer, in seconds (its system's default); `None`: the
    /// orchestrator's `--offer-timeout`.
    pub offer_timeout_seconds: Option<u32>,
}

impl TaskSpec {
    /// The stored task's fields as they are, unchecked against its system's contract (they were
    /// checked when stored): for a change of status only.
    pub fn stored(current: &task::Model) -> Result<TaskSpec, ApiError> {
        let system: System = current.system.parse().map_err(|_| corrupt(current.id, "system"))?;
        let attachment = current
            .attachment
            .as_deref()
            .map(|text| Attachment::from_base64(text, &system, &[], usize::MAX))
            .transpose()
            .map_err(|_| corrupt(current.id, "attachment"))?;
        let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        Ok(TaskSpec {
            description: current.description.clone(),
            system,
            attachment,
            payload: current.payload.clone(),
            priority: current.priority,
            not_before: Some(current.not_before),
            max_attempts: u32::try_from(current.max_attempts)
                .map_err(|_| corrupt(current.id, "max_attempts"))?,
            max_run_seconds: positive(current.max_run_seconds),
            offer_timeout_seconds: positive(current.offer_timeout_seconds),
        })
    }

    /// Checks a new task's request: [`TaskSpec::parse`], and a new task is always WAITING.
    pub fn parse_new(
        request: TaskRequest,
        upload: Option<Vec<u8>>,
        max_attachment_bytes: usize,
        registry: &Registry,
    ) -> Result<TaskSpec, ApiError> {
        if request.status.is_some_and(|s| s != TaskStatus::Waiting) {
            return Err(ApiError::invalid(
                "status",
                "a new task is always WAITING; leave status out",
            ));
        }
        TaskSpec::parse(request, upload, max_attachment_bytes, registry)
    }

    /// Checks a request against its system's contract in `registry`, filling in the system's
    /// defaults. `upload` is a CSV sent as a file (multipart), which takes the place of the
    /// base64 `attachment`; `max_attachment_bytes` bounds the decoded CSV.
    pub fn parse(
        request: TaskRequest,
        upload: Option<Vec<u8>>,
        max_attachment_bytes: usize,
        registry: &Registry,
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
        let (checker, defaults) = registry.get(&system)?;
        let attachment: Option<Attachment> =
            checker.attachment(upload, request.attachment.as_deref(), max_attachment_bytes)?;
        checker.payload(request.payload.as_ref())?;
        let max_attempts =
            request.max_attempts.or(defaults.max_attempts).unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=MAX_MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(ApiError::invalid(
                "max_attempts",
                format!("max_attempts must be between 1 and {MAX_MAX_ATTEMPTS}"),
            ));
        }
        let max_run_seconds = request.max_run_seconds.or(defaults.max_run_seconds);
        if let Some(seconds) = max_run_seconds
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
            priority: request.priority.or(defaults.priority).unwrap_or(0),
            not_before: request.not_before,
            max_attempts,
            max_run_seconds,
            offer_timeout_seconds: defaults.offer_timeout_seconds,
        })
    }
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

    fn builtins() -> Registry {
        Registry::builtins()
    }

    fn field_of(result: Result<TaskSpec, ApiError>) -> Option<String> {
        match result {
            Err(ApiError::Invalid { field, .. } | ApiError::TooLarge { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request_gets_defaults() {
        let spec =
            TaskSpec::parse(request(System::VIVO360), None, 1024, &builtins()).expect("valid");
        assert_eq!(spec.description, "hires");
        assert_eq!((spec.priority, spec.max_attempts), (0, DEFAULT_MAX_ATTEMPTS));
        assert_eq!(spec.attachment.map(|a| a.row_count()), Some(1));
    }

    #[test]
    fn an_upload_replaces_the_base64_attachment() {
        let upload = b"name,email,login,profile\nA,a@x.io,a,agent\nB,b@x.io,b,agent\n".to_vec();
        let spec = TaskSpec::parse(request(System::VIVO360), Some(upload), 1024, &builtins())
            .expect("valid");
        assert_eq!(spec.attachment.map(|a| a.row_count()), Some(2));
    }

    #[test]
    fn bad_fields_are_named() {
        let r = request(System::VIVO360);
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { description: " ".into(), ..r.clone() },
                None,
                1024,
                &builtins()
            ))
            .as_deref(),
            Some("description")
        );
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { attachment: None, ..r.clone() },
                None,
                1024,
                &builtins()
            ))
            .as_deref(),
            Some("attachment")
        );
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { attachment: Some("@@".into()), ..r.clone() },
                None,
                1024,
                &builtins()
            ))
            .as_deref(),
            Some("attachment")
        );
        assert!(matches!(
            TaskSpec::parse(r.clone(), None, 8, &builtins()),
            Err(ApiError::TooLarge { .. })
        ));
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { payload: Some(serde_json::json!([1])), ..r.clone() },
                None,
                1024,
                &builtins()
            ))
            .as_deref(),
            Some("payload")
        );
        assert_eq!(
            field_of(TaskSpec::parse(
                TaskRequest { max_attempts: Some(0), ..r },
                None,
                1024,
                &builtins()
            ))
            .as_deref(),
            Some("max_attempts")
        );
    }

    #[test]
    fn a_cpe_task_needs_the_payload_its_bot_reads() {
        let cpe = |payload| TaskRequest { attachment: None, payload, ..request(System::CPE) };
        assert_eq!(
            field_of(TaskSpec::parse(cpe(None), None, 1024, &builtins())).as_deref(),
            Some("payload")
        );
        let wrong = serde_json::json!({"equipment_id": "CPE000001", "parameters": {}});
        let refused = TaskSpec::parse(cpe(Some(wrong)), None, 1024, &builtins())
            .expect_err("refused")
            .to_string();
        assert!(refused.contains("timeoutInSeconds"), "{refused}");
        let right = serde_json::json!({"equipment_id": "CPE000001", "timeoutInSeconds": 30, "parameters": {"vlan": 534}});
        assert!(TaskSpec::parse(cpe(Some(right)), None, 1024, &builtins()).is_ok());
    }

    #[test]
    fn systems_without_a_csv_need_no_attachment() {
        let noop = TaskRequest {
            attachment: None,
            payload: Some(serde_json::json!({"duration_ms": 5})),
            ..request(System::NOOP)
        };
        assert!(TaskSpec::parse(noop, None, 1024, &builtins()).is_ok());
    }

    #[test]
    fn a_status_write_is_a_report_only_on_a_held_task_or_when_it_changes_the_status() {
        let now = crate::clock::now();
        let row = |status: TaskStatus| task::Model {
            id: Uuid::nil(),
            description: "d".into(),
            system: "NOOP".into(),
            status,
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
            offer_timeout_seconds: None,
            rows_failed: None,
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
}
