//! Task history as stored: entries appended one at a time or gathered by a transaction
//! ([`History`]) and written together, and read back in order.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _, Set,
};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{task, task_event};
use crate::error::ApiError;
use crate::tasks::{EventKind, TaskEvent};

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
        // Counted as gathered: a transaction that fails and is applied again counts twice.
        crate::metrics::task_event(kind.as_str());
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

/// A task's history, oldest first.
pub async fn list_events(db: &impl ConnectionTrait, id: Uuid) -> Result<Vec<TaskEvent>, ApiError> {
    super::tasks::find_task(db, id).await?;
    let rows = task_event::Entity::find()
        .filter(task_event::Column::TaskId.eq(id))
        .order_by_asc(task_event::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(TaskEvent::from).collect())
}
