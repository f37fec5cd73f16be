//! A row of `tasks`.
#![allow(missing_docs)]

use broker_config::TaskStatus;
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub description: String,
    /// The system's name. Text, not `System`: systems are data (registered at run time), and a
    /// name no longer registered must still read back.
    pub system: String,
    /// Stored as its name (`WAITING`, …).
    pub status: TaskStatus,
    /// The CSV, base64 encoded.
    pub attachment: Option<String>,
    pub payload: Option<Json>,
    pub priority: i32,
    pub not_before: DateTimeUtc,
    pub attempt: i32,
    pub max_attempts: i32,
    pub failures: i32,
    pub bot_id: Option<Uuid>,
    pub avoid_bot_id: Option<Uuid>,
    pub offer_expires_at: Option<DateTimeUtc>,
    pub progress_done: i32,
    pub progress_total: Option<i32>,
    pub result: Option<Json>,
    pub error: Option<String>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub updated_at: DateTimeUtc,
    /// Offers that got no answer (expired, or the bot could not be reached).
    pub unanswered_offers: i32,
    /// This task's maximum run time; `None`: the orchestrator's default.
    pub max_run_seconds: Option<i32>,
    /// When the current run must have ended (set when a bot accepts).
    pub run_deadline: Option<DateTimeUtc>,
    /// How long an offer of it waits for an answer; `None`: the orchestrator's `--offer-timeout`.
    pub offer_timeout_seconds: Option<i32>,
    /// A CSV task's rows that failed or were refused, as counted in `result`; `None` without rows
    /// or before any was reported.
    pub rows_failed: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
