//! Bots as stored: registering, reading, listing, a guarded update, deletion (which puts an
//! offered task back) and freeing a bot from a task.

use broker_config::{BotStatus, System, TaskStatus};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set, TransactionSession as _,
};
use uuid::Uuid;

use crate::bots::{Bot, BotChange, BotSpec, join_systems};
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
        current_task_id: Set(None),
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

/// One bot.
pub async fn get_bot(db: &impl ConnectionTrait, id: Uuid) -> Result<Bot, ApiError> {
    bot::Entity::find_by_id(id).one(db).await?.ok_or(ApiError::NotFound("bot"))?.try_into()
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
    fetch_page(
        db,
        select,
        (bot::Column::CreatedAt, bot::Column::Id),
        page,
        |row| (row.created_at, row.id),
        Bot::try_from,
    )
    .await
}

/// Replaces a bot's fields, provided it is still as `current` shows it: the same status and the
/// same task held (or none). A bot that took or ended a task, or was found lost, meanwhile is a
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
        .col_expr(bot::Column::UpdatedAt, Expr::value(now))
        .filter(bot::Column::Id.eq(id))
        .filter(bot::Column::Status.eq(current.status));
    let update = match current.current_task_id {
        Some(task) => update.filter(bot::Column::CurrentTaskId.eq(task)),
        None => update.filter(bot::Column::CurrentTaskId.is_null()),
    };
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

/// Frees a bot from `task_id` (`why`: freed, or gone unreachable): it holds no task and its
/// status is what [`BotChange::status`] says. Does nothing if the bot holds another task
/// meanwhile (a guard, not an error).
pub async fn release_bot(
    db: &impl ConnectionTrait,
    bot_id: Uuid,
    task_id: Uuid,
    why: BotChange,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    bot::Entity::update_many()
        .col_expr(bot::Column::Status, Expr::value(why.status(false)))
        .col_expr(bot::Column::CurrentTaskId, Expr::value(Option::<Uuid>::None))
        .col_expr(bot::Column::UpdatedAt, Expr::value(now))
        .filter(bot::Column::Id.eq(bot_id))
        .filter(bot::Column::CurrentTaskId.eq(task_id))
        .exec(db)
        .await?;
    Ok(())
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
