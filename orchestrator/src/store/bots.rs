//! Bots as stored: registering, reading, listing, a guarded update, deletion (which puts an
//! offered task back) and freeing a bot from a task.

use std::collections::HashMap;

use broker_config::{BotStatus, System, TaskStatus};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set, TransactionSession as _,
};
use uuid::Uuid;

use crate::bots::{Bot, BotChange, BotSpec, Load, join_systems};
use crate::entity::{bot, task};
use crate::error::{ApiError, unique_violation};
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::tasks::EventKind;

/// Filters for listing bots; every given filter must match.
#[derive(Debug, Clone, Default)]
pub struct BotFilter {
    /// Any of these statuses.
    pub statuses: Vec<BotStatus>,
    /// Bots that run any of these systems.
    pub systems: Vec<System>,
    /// This exact address.
    pub ip_address: Option<String>,
    /// This exact name.
    pub name: Option<String>,
}

/// Maps a unique violation on insert or update to the field that is taken.
fn taken(err: sea_orm::DbErr, spec: &BotSpec) -> ApiError {
    match unique_violation(&err) {
        // SQLite names the columns, PostgreSQL the index.
        Some(message) if message.contains("ip_address") || message.contains("ux_bots_endpoint") => {
            ApiError::conflict(
                "ip_address_taken",
                Some("ip_address"),
                match spec.http_port {
                    Some(port) => {
                        format!("another bot already listens on {}:{port}", spec.ip_address)
                    }
                    None => format!("another bot already has the address {}", spec.ip_address),
                },
            )
        }
        Some(_) => ApiError::conflict(
            "name_taken",
            Some("name"),
            format!("a bot named '{}' already exists", spec.name),
        ),
        None => err.into(),
    }
}

/// Registers a bot.
pub async fn create_bot(
    db: &impl ConnectionTrait,
    spec: BotSpec,
    now: DateTime<Utc>,
) -> Result<Bot, ApiError> {
    let row = bot::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(spec.name.to_string()),
        ip_address: Set(spec.ip_address.to_string()),
        status: Set(spec.status),
        systems: Set(join_systems(&spec.systems)),
        delivery: Set(spec.delivery),
        http_port: Set(spec.http_port.map(i32::from)),
        last_heartbeat_at: Set(None),
        slots: Set(i32::try_from(spec.slots).unwrap_or(1)),
        held: Set(0),
        batches: Set(false),
        created_at: Set(now),
        updated_at: Set(now),
        session_id: Set(None),
        paused: Set(spec.paused),
        unanswered_offers: Set(0),
        offers_paused_until: Set(None),
        tls: Set(spec.tls),
    };
    row.insert(db).await.map_err(|e| taken(e, &spec))?.try_into()
}

/// One bot, with the tasks it holds.
pub async fn get_bot(db: &impl ConnectionTrait, id: Uuid) -> Result<Bot, ApiError> {
    let bot: Bot =
        bot::Entity::find_by_id(id).one(db).await?.ok_or(ApiError::NotFound("bot"))?.try_into()?;
    with_tasks(db, vec![bot]).await?.pop().ok_or(ApiError::NotFound("bot"))
}

/// `bots` with the tasks each holds (`task_ids`, oldest offer first, and `current_task_id`, the
/// first): one query for them all.
pub async fn with_tasks(
    db: &impl ConnectionTrait,
    mut bots: Vec<Bot>,
) -> Result<Vec<Bot>, ApiError> {
    let holding: Vec<Uuid> = bots.iter().filter(|b| b.slots_used > 0).map(|b| b.id).collect();
    if holding.is_empty() {
        return Ok(bots);
    }
    let held: Vec<(Uuid, Option<Uuid>)> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .column(task::Column::BotId)
        .filter(task::Column::BotId.is_in(holding))
        .filter(task::Column::Status.is_in([TaskStatus::Assigned, TaskStatus::Running]))
        .order_by_asc(task::Column::UpdatedAt)
        .order_by_asc(task::Column::Id)
        .into_tuple()
        .all(db)
        .await?;
    let mut by_bot: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (task, bot) in held {
        if let Some(bot) = bot {
            by_bot.entry(bot).or_default().push(task);
        }
    }
    for bot in &mut bots {
        bot.task_ids = by_bot.remove(&bot.id).unwrap_or_default();
        bot.current_task_id = bot.task_ids.first().copied();
    }
    Ok(bots)
}

/// A page of bots matching `filter`.
pub async fn list_bots(
    db: &impl ConnectionTrait,
    filter: &BotFilter,
    page: PageRequest,
) -> Result<Page<Bot>, ApiError> {
    let mut select = bot::Entity::find();
    if !filter.statuses.is_empty() {
        select =
            select.filter(bot::Column::Status.is_in(filter.statuses.iter().map(|s| s.as_str())));
    }
    if !filter.systems.is_empty() {
        // Systems are stored comma-separated: wrap in commas so "CPE" never matches a longer name.
        // `||` concatenates on both SQLite and PostgreSQL.
        let wrapped = Expr::cust("(',' || systems || ',')");
        let mut any = sea_orm::Condition::any();
        for system in &filter.systems {
            any = any.add(wrapped.clone().like(format!("%,{system},%")));
        }
        select = select.filter(any);
    }
    if let Some(ip) = &filter.ip_address {
        select = select.filter(bot::Column::IpAddress.eq(ip.as_str()));
    }
    if let Some(name) = &filter.name {
        select = select.filter(bot::Column::Name.eq(name.as_str()));
    }
    let mut page = fetch_page(
        db,
        select,
        (bot::Column::CreatedAt, bot::Column::Id),
        page,
        |row| (row.created_at, row.id),
        Bot::try_from,
    )
    .await?;
    page.items = with_tasks(db, std::mem::take(&mut page.items)).await?;
    Ok(page)
}

/// Replaces a bot's fields, provided it is still as `current` shows it: the same status and as
/// many tasks held. A bot that took or ended a task, or was found lost, meanwhile is a
/// 409, so a status decided from what the caller read is never written over what holds now.
pub async fn update_bot(
    db: &impl ConnectionTrait,
    current: &Bot,
    spec: BotSpec,
    now: DateTime<Utc>,
) -> Result<Bot, ApiError> {
    let id = current.id;
    let update = bot::Entity::update_many()
        .col_expr(bot::Column::Name, Expr::value(spec.name.to_string()))
        .col_expr(bot::Column::IpAddress, Expr::value(spec.ip_address.to_string()))
        .col_expr(bot::Column::Status, Expr::value(spec.status))
        .col_expr(bot::Column::Systems, Expr::value(join_systems(&spec.systems)))
        .col_expr(bot::Column::Delivery, Expr::value(spec.delivery))
        .col_expr(bot::Column::HttpPort, Expr::value(spec.http_port.map(i32::from)))
        .col_expr(bot::Column::Paused, Expr::value(spec.paused))
        .col_expr(bot::Column::Tls, Expr::value(spec.tls))
        .col_expr(bot::Column::Slots, Expr::value(i32::try_from(spec.slots).unwrap_or(1)))
        .col_expr(bot::Column::UpdatedAt, Expr::value(now))
        .filter(bot::Column::Id.eq(id))
        .filter(bot::Column::Status.eq(current.status))
        .filter(bot::Column::Held.eq(i32::try_from(current.slots_used).unwrap_or(i32::MAX)));
    let done = update.exec(db).await.map_err(|e| taken(e, &spec))?;
    if done.rows_affected == 0 {
        get_bot(db, id).await?;
        return Err(ApiError::conflict(
            "bot_changed",
            None,
            "the bot changed meanwhile (it took or ended a task, or was found lost); read it again and repeat the change",
        ));
    }
    get_bot(db, id).await
}

/// Deletes a bot. A bot running a task cannot be deleted (cancel the task or wait for it); a task
/// merely offered to it goes back to WAITING, in the same transaction.
pub async fn delete_bot(
    db: &(impl ConnectionTrait + sea_orm::TransactionTrait),
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let txn = crate::store::begin_in_line(db).await?;
    bot::Entity::find_by_id(id).one(&txn).await?.ok_or(ApiError::NotFound("bot"))?;
    let held = task::Entity::find()
        .filter(task::Column::BotId.eq(id))
        .filter(task::Column::Status.is_in([TaskStatus::Assigned, TaskStatus::Running]))
        .all(&txn)
        .await?;
    if let Some(running) = held.iter().find(|t| t.status == TaskStatus::Running) {
        return Err(ApiError::conflict(
            "bot_running_task",
            None,
            format!(
                "the bot is running task {}; cancel the task or wait for it to end before deleting the bot",
                running.id
            ),
        ));
    }
    for offered in held {
        super::tasks::requeue_offer(&txn, offered, now, EventKind::OfferWithdrawn).await?;
    }
    bot::Entity::delete_by_id(id).exec(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// Sets a bot's status after `why`, with `held` counted again from the tasks it holds: called
/// whenever a task leaves it (it completed, failed or refused it, a user cancelled it, the offer
/// expired or could not be delivered), after the task's own change in the same transaction.
/// Counting, rather than subtracting one, means no path can leave the count wrong. Returns
/// the bot's load, or `None` when it is gone.
pub async fn release_bot(
    db: &impl ConnectionTrait,
    bot_id: Uuid,
    why: BotChange,
    now: DateTime<Utc>,
) -> Result<Option<Load>, ApiError> {
    let found: Option<(i32, i64)> = slots_and_held(bot_id).into_tuple().one(db).await?;
    let Some((slots, held)) = found else { return Ok(None) };
    let held = i32::try_from(held).unwrap_or(i32::MAX);
    let load = Load::of(held, slots);
    bot::Entity::update_many()
        .col_expr(bot::Column::Status, Expr::value(why.status(load)))
        .col_expr(bot::Column::Held, Expr::value(held))
        .col_expr(bot::Column::UpdatedAt, Expr::value(now))
        .filter(bot::Column::Id.eq(bot_id))
        .exec(db)
        .await?;
    Ok(Some(load))
}

/// A bot's slots and the tasks it holds now, counted from its ASSIGNED and RUNNING tasks (a
/// search of `ix_tasks_bot_status`, however many tasks the bot ran before).
fn slots_and_held(bot_id: Uuid) -> sea_orm::Select<bot::Entity> {
    let held_now = Expr::cust(format!(
        "(SELECT COUNT(*) FROM tasks WHERE tasks.bot_id = bots.id AND tasks.status IN ('{}', '{}'))",
        TaskStatus::Assigned.as_str(),
        TaskStatus::Running.as_str()
    ));
    bot::Entity::find_by_id(bot_id)
        .select_only()
        .column(bot::Column::Slots)
        .column_as(held_now, "held_now")
}

/// One task `bot_id` holds, a RUNNING one if any (the one a status change could not leave it).
pub async fn one_held_task(
    db: &impl ConnectionTrait,
    bot_id: Uuid,
) -> Result<Option<(Uuid, TaskStatus)>, ApiError> {
    let held: Vec<(Uuid, TaskStatus)> = task::Entity::find()
        .select_only()
        .column(task::Column::Id)
        .column(task::Column::Status)
        .filter(task::Column::BotId.eq(bot_id))
        .filter(task::Column::Status.is_in([TaskStatus::Assigned, TaskStatus::Running]))
        .into_tuple()
        .all(db)
        .await?;
    Ok(held.iter().find(|(_, s)| *s == TaskStatus::Running).or(held.first()).copied())
}

/// One stored bot row, if it exists.
pub async fn find_by_id(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<bot::Model>, ApiError> {
    Ok(bot::Entity::find_by_id(id).one(db).await?)
}

/// One bot by name.
pub async fn find_by_name(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<bot::Model>, ApiError> {
    Ok(bot::Entity::find().filter(bot::Column::Name.eq(name)).one(db).await?)
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait as _, Database, DbBackend, QueryTrait as _, Statement};

    use super::*;

    /// The recount after every task a bot ends searches the index by bot and status: a bot that
    /// ran a million tasks recounts as fast as a new one (by bot alone it read all its tasks).
    #[tokio::test]
    async fn a_bots_held_tasks_are_counted_from_the_index_by_bot_and_status() {
        use migrations::MigratorTrait as _;
        let db = Database::connect("sqlite::memory:").await.expect("an in-memory SQLite");
        migrations::Migrator::up(&db, None).await.expect("migrations run");
        let query = slots_and_held(Uuid::nil()).build(DbBackend::Sqlite);
        let plan = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {}", query.sql),
                query.values.map(|v| v.0).unwrap_or_default(),
            ))
            .await
            .expect("the plan");
        let steps: Vec<String> =
            plan.iter().filter_map(|row| row.try_get::<String>("", "detail").ok()).collect();
        assert!(
            steps.iter().any(|s| s.contains("ix_tasks_bot_status (bot_id=? AND status=?)")),
            "the count does not search by bot and status: {steps:?}"
        );
        assert!(!steps.iter().any(|s| s.starts_with("SCAN")), "a scan: {steps:?}");
    }
}
