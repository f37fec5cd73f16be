//! Bots: their validated fields ([`BotSpec`]), how the API shows them ([`Bot`]) and how they are
//! stored. Handlers and (later) the broker consumer both go through these functions.

use std::net::IpAddr;

use broker_config::{BotName, BotStatus, Delivery, System, TaskStatus};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    Set, TransactionSession as _,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::entity::{bot, task};
use crate::error::{ApiError, unique_violation};
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::tasks::{self, EventKind};

/// A bot, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bot {
    /// Its id.
    pub id: Uuid,
    /// Its unique name, also its queue's name (`botline.bot.<name>`).
    #[schema(example = "bot-1")]
    pub name: String,
    /// The address of its machine.
    #[schema(example = "10.0.0.7")]
    pub ip_address: String,
    /// Whether it can take work.
    pub status: BotStatus,
    /// The systems it can run.
    pub systems: Vec<System>,
    /// How it receives tasks.
    pub delivery: Delivery,
    /// Its HTTP port, for `delivery: http`.
    pub http_port: Option<u16>,
    /// When it last said it was alive.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// The task it holds, if any.
    pub current_task_id: Option<Uuid>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<bot::Model> for Bot {
    type Error = ApiError;

    fn try_from(row: bot::Model) -> Result<Bot, ApiError> {
        let corrupt = |what: &str| {
            ApiError::Internal(sea_orm::DbErr::Type(format!(
                "bot {}: stored {what} is invalid",
                row.id
            )))
        };
        let systems = split_systems(&row.systems).map_err(|_| corrupt("systems"))?;
        Ok(Bot {
            id: row.id,
            status: row.status.parse().map_err(|_| corrupt("status"))?,
            delivery: row.delivery.parse().map_err(|_| corrupt("delivery"))?,
            http_port: row.http_port.and_then(|p| u16::try_from(p).ok()),
            systems,
            name: row.name,
            ip_address: row.ip_address,
            last_heartbeat_at: row.last_heartbeat_at,
            current_task_id: row.current_task_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A bot's fields as a client sends them (POST and PUT; PATCH overlays its fields on the current
/// bot's and checks the result the same way).
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotRequest {
    /// 1–64 lowercase letters, digits, `-`, `_`, `.`; unique.
    #[schema(example = "bot-1")]
    pub name: String,
    /// An IPv4 or IPv6 address.
    #[schema(example = "10.0.0.7")]
    pub ip_address: String,
    /// At least one system.
    pub systems: Vec<System>,
    /// `amqp` (default) or `http`.
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// Required with `delivery: http`, refused otherwise.
    #[serde(default)]
    pub http_port: Option<u16>,
    /// Defaults to UNAVAILABLE on creation (a bot becomes AVAILABLE when it comes online) and to
    /// the current status on replacement.
    #[serde(default)]
    pub status: Option<BotStatus>,
}

/// A partial update of a bot: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotPatch {
    /// New name.
    pub name: Option<String>,
    /// New address.
    pub ip_address: Option<String>,
    /// New systems.
    pub systems: Option<Vec<System>>,
    /// New delivery; switching to `amqp` drops the HTTP port.
    pub delivery: Option<Delivery>,
    /// New HTTP port.
    pub http_port: Option<u16>,
    /// New status.
    pub status: Option<BotStatus>,
}

impl BotPatch {
    /// The full request this patch makes of `current`.
    pub fn apply_to(self, current: &Bot) -> BotRequest {
        let delivery = self.delivery.unwrap_or(current.delivery);
        let http_port = match delivery {
            Delivery::Amqp => self.http_port,
            Delivery::Http => self.http_port.or(current.http_port),
        };
        BotRequest {
            name: self.name.unwrap_or_else(|| current.name.clone()),
            ip_address: self.ip_address.unwrap_or_else(|| current.ip_address.clone()),
            systems: self.systems.unwrap_or_else(|| current.systems.clone()),
            delivery: Some(delivery),
            http_port,
            status: Some(self.status.unwrap_or(current.status)),
        }
    }
}

/// A bot's fields, checked: only this type reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotSpec {
    /// Its name.
    pub name: BotName,
    /// Its address.
    pub ip_address: IpAddr,
    /// Its systems, sorted, without repeats, never empty.
    pub systems: Vec<System>,
    /// How it receives tasks.
    pub delivery: Delivery,
    /// Its port, exactly when `delivery` is http.
    pub http_port: Option<u16>,
    /// Its status.
    pub status: BotStatus,
}

impl BotSpec {
    /// Checks a request; `default_status` fills an absent status.
    pub fn parse(request: BotRequest, default_status: BotStatus) -> Result<BotSpec, ApiError> {
        let name = BotName::parse(request.name.trim())
            .map_err(|e| ApiError::invalid("name", e.to_string()))?;
        let ip_address: IpAddr = request.ip_address.trim().parse().map_err(|_| {
            ApiError::invalid(
                "ip_address",
                format!("'{}' is not an IPv4 or IPv6 address", request.ip_address),
            )
        })?;
        let mut systems = request.systems;
        systems.sort();
        systems.dedup();
        if systems.is_empty() {
            return Err(ApiError::invalid("systems", "a bot must run at least one system"));
        }
        let delivery = request.delivery.unwrap_or_default();
        match (delivery, request.http_port) {
            (Delivery::Http, None) => {
                return Err(ApiError::invalid("http_port", "delivery http needs an http_port"));
            }
            (Delivery::Http, Some(0)) => {
                return Err(ApiError::invalid("http_port", "http_port must be 1 to 65535"));
            }
            (Delivery::Amqp, Some(_)) => {
                return Err(ApiError::invalid(
                    "http_port",
                    "http_port is only for delivery http; amqp bots receive from their queue",
                ));
            }
            _ => {}
        }
        Ok(BotSpec {
            name,
            ip_address,
            systems,
            delivery,
            http_port: request.http_port,
            status: request.status.unwrap_or(default_status),
        })
    }
}

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

fn join_systems(systems: &[System]) -> String {
    systems.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn split_systems(stored: &str) -> Result<Vec<System>, broker_config::UnknownValue> {
    stored.split(',').filter(|s| !s.is_empty()).map(str::parse).collect()
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
        status: Set(spec.status.as_str().to_owned()),
        systems: Set(join_systems(&spec.systems)),
        delivery: Set(spec.delivery.as_str().to_owned()),
        http_port: Set(spec.http_port.map(i32::from)),
        last_heartbeat_at: Set(None),
        current_task_id: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        session_id: Set(None),
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

/// Replaces a bot's fields.
pub async fn update_bot(
    db: &impl ConnectionTrait,
    id: Uuid,
    spec: BotSpec,
    now: DateTime<Utc>,
) -> Result<Bot, ApiError> {
    let row = bot::Entity::find_by_id(id).one(db).await?.ok_or(ApiError::NotFound("bot"))?;
    let mut row: bot::ActiveModel = row.into();
    row.name = Set(spec.name.to_string());
    row.ip_address = Set(spec.ip_address.to_string());
    row.status = Set(spec.status.as_str().to_owned());
    row.systems = Set(join_systems(&spec.systems));
    row.delivery = Set(spec.delivery.as_str().to_owned());
    row.http_port = Set(spec.http_port.map(i32::from));
    row.updated_at = Set(now);
    row.update(db).await.map_err(|e| taken(e, &spec))?.try_into()
}

/// Deletes a bot. A bot running a task cannot be deleted (cancel the task or wait for it); a task
/// merely offered to it goes back to WAITING, in the same transaction.
pub async fn delete_bot(
    db: &(impl ConnectionTrait + sea_orm::TransactionTrait),
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let txn = crate::pipeline::begin_in_line(db).await?;
    bot::Entity::find_by_id(id).one(&txn).await?.ok_or(ApiError::NotFound("bot"))?;
    let held = task::Entity::find()
        .filter(task::Column::BotId.eq(id))
        .filter(
            task::Column::Status
                .is_in([TaskStatus::Assigned.as_str(), TaskStatus::Running.as_str()]),
        )
        .all(&txn)
        .await?;
    if let Some(running) = held.iter().find(|t| t.status == TaskStatus::Running.as_str()) {
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
        tasks::requeue_offer(&txn, offered, now, EventKind::OfferWithdrawn).await?;
    }
    bot::Entity::delete_by_id(id).exec(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// Frees a bot from `task_id`: its status becomes `status` and it holds no task. Does nothing if
/// the bot holds another task meanwhile (a guard, not an error).
pub async fn release_bot(
    db: &impl ConnectionTrait,
    bot_id: Uuid,
    task_id: Uuid,
    status: BotStatus,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    bot::Entity::update_many()
        .col_expr(bot::Column::Status, Expr::value(status.as_str()))
        .col_expr(bot::Column::CurrentTaskId, Expr::value(Option::<Uuid>::None))
        .col_expr(bot::Column::UpdatedAt, Expr::value(now))
        .filter(bot::Column::Id.eq(bot_id))
        .filter(bot::Column::CurrentTaskId.eq(task_id))
        .exec(db)
        .await?;
    Ok(())
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
    use super::*;

    fn request() -> BotRequest {
        BotRequest {
            name: "bot-1".into(),
            ip_address: "10.0.0.7".into(),
            systems: vec![System::Noop, System::Vivo360, System::Noop],
            delivery: None,
            http_port: None,
            status: None,
        }
    }

    #[test]
    fn a_valid_request_is_normalised() {
        let spec = BotSpec::parse(request(), BotStatus::Unavailable).expect("valid");
        assert_eq!(spec.systems, [System::Vivo360, System::Noop]);
        assert_eq!(spec.delivery, Delivery::Amqp);
        assert_eq!(spec.status, BotStatus::Unavailable);
        assert_eq!(join_systems(&spec.systems), "VIVO360,NOOP");
        assert_eq!(split_systems("VIVO360,NOOP"), Ok(spec.systems));
    }

    #[test]
    fn invalid_fields_are_named() {
        let field_of = |r: BotRequest| match BotSpec::parse(r, BotStatus::Available) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(
            field_of(BotRequest { name: "Bad Name".into(), ..request() }).as_deref(),
            Some("name")
        );
        assert_eq!(
            field_of(BotRequest { ip_address: "10.0.0".into(), ..request() }).as_deref(),
            Some("ip_address")
        );
        assert_eq!(
            field_of(BotRequest { systems: vec![], ..request() }).as_deref(),
            Some("systems")
        );
        assert_eq!(
            field_of(BotRequest { delivery: Some(Delivery::Http), ..request() }).as_deref(),
            Some("http_port")
        );
        assert_eq!(
            field_of(BotRequest { http_port: Some(9000), ..request() }).as_deref(),
            Some("http_port")
        );
    }

    #[test]
    fn a_patch_overlays_the_current_bot() {
        let now = crate::clock::now();
        let current = Bot {
            id: Uuid::now_v7(),
            name: "bot-1".into(),
            ip_address: "10.0.0.7".into(),
            status: BotStatus::Busy,
            systems: vec![System::Noop],
            delivery: Delivery::Http,
            http_port: Some(9000),
            last_heartbeat_at: None,
            current_task_id: None,
            created_at: now,
            updated_at: now,
        };
        let renamed =
            BotPatch { name: Some("bot-2".into()), ..Default::default() }.apply_to(&current);
        assert_eq!((renamed.name.as_str(), renamed.http_port), ("bot-2", Some(9000)));
        assert_eq!(renamed.status, Some(BotStatus::Busy));
        let to_amqp =
            BotPatch { delivery: Some(Delivery::Amqp), ..Default::default() }.apply_to(&current);
        assert_eq!(to_amqp.http_port, None, "switching to amqp drops the port");
    }
}
