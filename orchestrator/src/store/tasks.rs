//! Tasks as stored: creating, reading, listing, a user's update and deletion, and putting an
//! offer back. Every write that could race the pipeline goes through
//! [`begin_in_line`](super::begin_in_line).

use std::collections::HashMap;

use broker_config::{System, TaskStatus};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set, TransactionSession as _, TransactionTrait,
};
use uuid::Uuid;

use super::history::{History, record_event};
use crate::bots::BotChange;
use crate::entity::task;
use crate::error::ApiError;
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::tasks::{EventKind, Task, TaskSpec, check_user_transition, corrupt, is_editable};

/// Filters for listing tasks; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Any of these statuses.
    pub statuses: Vec<TaskStatus>,
    /// Any of these systems.
    pub systems: Vec<System>,
    /// Held (or last held) by this bot.
    pub bot_id: Option<Uuid>,
    /// This task, or the tasks whose description holds this text.
    pub search: Option<Search>,
    /// Created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Only CSV tasks with a row failed or refused.
    pub rows_failed: bool,
}

/// What `?q=` looks for: a whole task id finds that task; any other text is looked for in
/// descriptions, whatever its case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    /// The task with this id.
    Id(Uuid),
    /// Descriptions holding this text.
    Text(String),
}

impl Search {
    /// `None` for blank text: no search.
    pub fn parse(text: &str) -> Option<Search> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(text.parse().map_or_else(|_| Search::Text(text.to_owned()), Search::Id))
    }
}

/// The order of a task list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskSort {
    /// By submission (the only order a cursor pages through).
    #[default]
    Created,
    /// By end; tasks not ended come last.
    Finished,
    /// By run time (end − acceptance); tasks not ended come last.
    Duration,
}

/// `text` as a LIKE pattern that matches it literally anywhere (`\` escapes `%`, `_` and itself).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A new WAITING task's row.
fn new_row(spec: TaskSpec, now: DateTime<Utc>) -> task::ActiveModel {
    let rows = spec.attachment.as_ref().map(|a| i32::try_from(a.row_count()).unwrap_or(i32::MAX));
    task::ActiveModel {
        id: Set(Uuid::now_v7()),
        description: Set(spec.description),
        system: Set(spec.system.as_str().to_owned()),
        status: Set(TaskStatus::Waiting),
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
        offer_timeout_seconds: Set(spec.offer_timeout_seconds.and_then(|s| i32::try_from(s).ok())),
        rows_failed: Set(None),
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
    sort: TaskSort,
    page: PageRequest,
) -> Result<Page<Task>, ApiError> {
    use sea_orm::sea_query::{Expr, ExprTrait as _, LikeExpr};
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
    match &filter.search {
        Some(Search::Id(id)) => select = select.filter(task::Column::Id.eq(*id)),
        Some(Search::Text(text)) => {
            // Case-insensitive each database's way: PostgreSQL's ILIKE folds every letter (and
            // escapes with a backslash unless told otherwise: sea-query's ESCAPE after ILIKE is not
            // valid SQL); SQLite's LIKE folds ASCII letters only (É matches É, not é).
            let pattern = contains_pattern(text);
            let description = Expr::col(task::Column::Description);
            select = select.filter(match db.get_database_backend() {
                sea_orm::DatabaseBackend::Postgres => {
                    use sea_orm::sea_query::extension::postgres::PgExpr as _;
                    description.ilike(LikeExpr::new(pattern))
                }
                _ => description.like(LikeExpr::new(pattern).escape('\\')),
            });
        }
        None => {}
    }
    if let Some(after) = filter.created_after {
        select = select.filter(task::Column::CreatedAt.gte(after));
    }
    if let Some(before) = filter.created_before {
        select = select.filter(task::Column::CreatedAt.lt(before));
    }
    if filter.rows_failed {
        select = select.filter(task::Column::RowsFailed.gt(0));
    }
    if sort == TaskSort::Created {
        return fetch_page(
            db,
            select,
            (task::Column::CreatedAt, task::Column::Id),
            page,
            |row| (row.created_at, row.id),
            Task::try_from,
        )
        .await;
    }
    sorted_page(db, select, sort, page).await
}

/// A page of tasks in an order other than their submission's, by offset (a cursor holds a
/// creation time only); ties fall back on the id, and tasks not ended come last either way.
async fn sorted_page(
    db: &impl ConnectionTrait,
    select: sea_orm::Select<task::Entity>,
    sort: TaskSort,
    page: PageRequest,
) -> Result<Page<Task>, ApiError> {
    use sea_orm::sea_query::{Expr, NullOrdering, Order as SqlOrder, SimpleExpr};
    use sea_orm::{PaginatorTrait as _, QueryOrder as _, QuerySelect as _};
    let direction = match page.order {
        crate::pagination::Order::Newest => SqlOrder::Desc,
        crate::pagination::Order::Oldest => SqlOrder::Asc,
    };
    let key: SimpleExpr = match sort {
        TaskSort::Created | TaskSort::Finished => Expr::col(task::Column::FinishedAt),
        // Each database subtracts times its own way: SQLite stores them as text.
        TaskSort::Duration => match db.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => Expr::cust("finished_at - started_at"),
            _ => Expr::cust("julianday(finished_at) - julianday(started_at)"),
        },
    };
    let total = select.clone().count(db).await?;
    let rows = select
        .order_by_with_nulls(key, direction.clone(), NullOrdering::Last)
        .order_by(task::Column::Id, direction)
        .offset(page.offset)
        .limit(page.limit)
        .all(db)
        .await?;
    let items = rows.into_iter().map(Task::try_from).collect::<Result<_, _>>()?;
    Ok(Page { items, total, limit: page.limit, offset: page.offset, next_cursor: None })
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
    let txn = crate::store::begin_in_line(db).await?;
    let current = find_task(&txn, id).await?;
    let from = current.status;
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
    if spec.system.as_str() != current.system {
        // Moved to another system: its offers wait as long as that system's do.
        row.offer_timeout_seconds =
            Set(spec.offer_timeout_seconds.and_then(|s| i32::try_from(s).ok()));
    }
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
            row.status = Set(TaskStatus::Cancelled);
            row.offer_expires_at = Set(None);
            row.run_deadline = Set(None);
            row.finished_at = Set(Some(now));
            if let (Some(bot_id), TaskStatus::Assigned | TaskStatus::Running) =
                (current.bot_id, from)
            {
                // The bot is freed once the task is CANCELLED below, in this transaction.
                let attempt = u32::try_from(current.attempt).unwrap_or_default();
                effects.stop = Some((bot_id, broker_config::TaskRef { task_id: id, attempt }));
                effects.wake = true;
            }
            Some(EventKind::Cancelled)
        }
        Some(TaskStatus::Waiting) if from != TaskStatus::Waiting => {
            effects.wake = true;
            // A retry starts afresh: a new budget of attempts and no trace of the last outcome.
            row.status = Set(TaskStatus::Waiting);
            row.failures = Set(0);
            row.unanswered_offers = Set(0);
            row.bot_id = Set(None);
            row.avoid_bot_id = Set(None);
            row.error = Set(None);
            row.result = Set(None);
            row.rows_failed = Set(None);
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
    if let Some((bot_id, _)) = effects.stop {
        super::bots::release_bot(&txn, bot_id, BotChange::Freed, now).await?;
    }
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
    let txn = crate::store::begin_in_line(db).await?;
    let row = find_task(&txn, id).await?;
    if row.status == TaskStatus::Assigned || row.status == TaskStatus::Running {
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

/// Puts an offered (ASSIGNED) task back to WAITING, recording why.
pub async fn requeue_offer(
    db: &impl ConnectionTrait,
    row: task::Model,
    now: DateTime<Utc>,
    why: EventKind,
) -> Result<(), ApiError> {
    let mut active: task::ActiveModel = row.clone().into();
    active.status = Set(TaskStatus::Waiting);
    active.bot_id = Set(None);
    active.offer_expires_at = Set(None);
    active.updated_at = Set(now);
    active.update(db).await?;
    record_event(db, &row, why, None, now).await
}

#[cfg(test)]
mod tests {
    use super::{Search, contains_pattern};

    #[test]
    fn a_search_is_an_id_or_text_and_its_wildcards_are_literal() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(Search::parse(&format!(" {id} ")), Some(Search::Id(id)));
        assert_eq!(Search::parse("  March "), Some(Search::Text("March".into())));
        assert_eq!(Search::parse("   "), None);
        assert_eq!(contains_pattern("50%_a\\B"), r"%50\%\_a\\B%");
    }
}
