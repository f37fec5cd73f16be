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
use serde_json::Value;
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
    /// Whether that port serves HTTPS (the orchestrator then POSTs over TLS).
    pub tls: bool,
    /// When it last said it was alive.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// The task it holds, if any (the orchestrator's to set: never written by a client).
    pub current_task_id: Option<Uuid>,
    /// Taken out of rotation by an operator: offered nothing, whatever it reports.
    pub paused: bool,
    /// Offers in a row it did not take (unanswered or refused); reset when it takes one. Each
    /// pauses its offers a while (the backoff), so no bot is offered task after task.
    pub unanswered_offers: u32,
    /// It gets no offer before this time (the backoff after unanswered offers).
    pub offers_paused_until: Option<DateTime<Utc>>,
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
            tls: row.tls,
            systems,
            name: row.name,
            ip_address: row.ip_address,
            last_heartbeat_at: row.last_heartbeat_at,
            current_task_id: row.current_task_id,
            paused: row.paused,
            unanswered_offers: u32::try_from(row.unanswered_offers).unwrap_or_default(),
            offers_paused_until: row.offers_paused_until,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A new bot's fields (POST). Only `name` and `ip_address` are required, as in the original
/// Vivo360 contract: such a bot runs every system and is an HTTP bot on the default port.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotRequest {
    /// 1–64 lowercase letters, digits, `-`, `_`, `.`; unique.
    #[schema(example = "bot-1")]
    pub name: String,
    /// An IPv4 or IPv6 address.
    #[schema(example = "10.0.0.7")]
    pub ip_address: String,
    /// The systems it runs; every system when absent.
    #[serde(default)]
    pub systems: Option<Vec<System>>,
    /// `http` (the default through this API: the orchestrator POSTs tasks to the bot) or `amqp`
    /// (the bot consumes its own queue; such bots usually register with `bot.online`).
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// The HTTP bot's port; the orchestrator's `--default-bot-port` (5000) when absent. Refused
    /// with `delivery: amqp`.
    #[serde(default)]
    pub http_port: Option<u16>,
    /// AVAILABLE or UNAVAILABLE (the default: an HTTP bot becomes AVAILABLE once its address
    /// answers, an AMQP bot when it comes online). Never BUSY: a new bot holds no task.
    #[serde(default)]
    pub status: Option<BotStatus>,
    /// An HTTP bot that serves HTTPS on its port (default false).
    #[serde(default)]
    pub tls: Option<bool>,
    /// Out of rotation from the start.
    #[serde(default)]
    pub paused: Option<bool>,
}

/// A change of a bot (PUT and PATCH alike): only the fields given change. A client may send
/// back the whole bot it read: the fields the orchestrator owns are then accepted and ignored,
/// but `id` and `created_at` must be this bot's.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BotPatch {
    /// This bot's id, if sent: it must match the path.
    pub id: Option<Uuid>,
    /// This bot's creation time, if sent: it must match.
    pub created_at: Option<DateTime<Utc>>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub current_task_id: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub last_heartbeat_at: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub updated_at: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub unanswered_offers: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub offers_paused_until: Option<Value>,
    /// `true` takes the bot out of rotation (it is offered nothing, whatever it reports, until
    /// `false`); what it holds it keeps.
    pub paused: Option<bool>,
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
    /// Whether its port serves HTTPS.
    pub tls: Option<bool>,
    /// AVAILABLE or UNAVAILABLE; BUSY only as it is (the orchestrator sets it while the bot
    /// holds a task). See [`status_after_write`].
    pub status: Option<BotStatus>,
}

impl BotPatch {
    /// Checks the identity fields a client sent back against `current`.
    pub fn check_identity(&self, current: &Bot) -> Result<(), ApiError> {
        if self.id.is_some_and(|id| id != current.id) {
            return Err(ApiError::invalid("id", "id is read-only: it must be this bot's id"));
        }
        if self.created_at.is_some_and(|at| at != current.created_at) {
            return Err(ApiError::invalid("created_at", "created_at is read-only"));
        }
        Ok(())
    }

    /// The full request this patch makes of `current`, with `status` decided by the caller.
    pub fn apply_to(self, current: &Bot, status: BotStatus) -> BotRequest {
        let delivery = self.delivery.unwrap_or(current.delivery);
        let http_port = match delivery {
            Delivery::Amqp => self.http_port,
            Delivery::Http => self.http_port.or(current.http_port),
        };
        BotRequest {
            name: self.name.unwrap_or_else(|| current.name.clone()),
            ip_address: self.ip_address.unwrap_or_else(|| current.ip_address.clone()),
            systems: Some(self.systems.unwrap_or_else(|| current.systems.clone())),
            delivery: Some(delivery),
            http_port,
            status: Some(status),
            paused: Some(self.paused.unwrap_or(current.paused)),
            tls: Some(self.tls.unwrap_or(current.tls) && delivery == Delivery::Http),
        }
    }
}

/// The status a client's write leaves a bot in, given what it asks and what the bot holds. BUSY
/// is the orchestrator's to set: a bot holds a task exactly while it is BUSY, so no write can
/// make a bot that holds a task look free (it would be offered a second one) nor a free bot
/// look busy. A bot that asks to be AVAILABLE while its offer is pending stays BUSY (the offer
/// stands); asking AVAILABLE or UNAVAILABLE while it runs a task is a 409 naming the task.
pub fn status_after_write(
    current: BotStatus,
    requested: Option<BotStatus>,
    holds: Option<(Uuid, TaskStatus)>,
) -> Result<BotStatus, ApiError> {
    match (requested, holds) {
        (None, _) => Ok(current),
        (Some(BotStatus::Busy), Some(_)) => Ok(BotStatus::Busy),
        (Some(BotStatus::Busy), None) => Err(ApiError::conflict(
            "bot_holds_no_task",
            Some("status"),
            "a bot is BUSY only while it holds a task, and the orchestrator sets that; to take a bot out of rotation, set paused: true",
        )),
        (Some(BotStatus::Available), Some((_, TaskStatus::Assigned))) => Ok(BotStatus::Busy),
        (Some(status), Some((task, held))) => Err(ApiError::conflict(
            "bot_holds_task",
            Some("status"),
            format!(
                "the bot holds task {task} ({held}), so it cannot be {status}: report the task's end first (PUT /api/v1/tasks/{task} with {{\"status\":\"COMPLETE\"}}) or cancel it"
            ),
        )),
        (Some(status), None) => Ok(status),
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
    /// Out of rotation.
    pub paused: bool,
    /// Its port serves HTTPS.
    pub tls: bool,
}

impl BotSpec {
    /// Checks a new bot's request: [`BotSpec::parse`] with the defaults of the original
    /// contract (every system; HTTP on `default_port`; UNAVAILABLE), and never BUSY.
    pub fn parse_new(request: BotRequest, default_port: u16) -> Result<BotSpec, ApiError> {
        if request.status == Some(BotStatus::Busy) {
            return Err(ApiError::invalid(
                "status",
                "a new bot holds no task, so it cannot be BUSY: AVAILABLE or UNAVAILABLE",
            ));
        }
        let delivery = request.delivery.unwrap_or(Delivery::Http);
        let http_port = match delivery {
            Delivery::Http => Some(request.http_port.unwrap_or(default_port)),
            Delivery::Amqp => request.http_port,
        };
        let request = BotRequest { delivery: Some(delivery), http_port, ..request };
        BotSpec::parse(request, BotStatus::Unavailable)
    }

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
        let mut systems = request.systems.unwrap_or_else(|| System::ALL.to_vec());
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
            (Delivery::Amqp, _) if request.tls == Some(true) => {
                return Err(ApiError::invalid(
                    "tls",
                    "tls is only for delivery http; amqp bots receive from their queue",
                ));
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
            paused: request.paused.unwrap_or(false),
            tls: request.tls.unwrap_or(false),
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
        .col_expr(bot::Column::Status, Expr::value(spec.status.as_str()))
        .col_expr(bot::Column::Systems, Expr::value(join_systems(&spec.systems)))
        .col_expr(bot::Column::Delivery, Expr::value(spec.delivery.as_str()))
        .col_expr(bot::Column::HttpPort, Expr::value(spec.http_port.map(i32::from)))
        .col_expr(bot::Column::Paused, Expr::value(spec.paused))
        .col_expr(bot::Column::Tls, Expr::value(spec.tls))
        .col_expr(bot::Column::UpdatedAt, Expr::value(now))
        .filter(bot::Column::Id.eq(id))
        .filter(bot::Column::Status.eq(current.status.as_str()));
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
    use super::*;

    fn request() -> BotRequest {
        BotRequest {
            name: "bot-1".into(),
            ip_address: "10.0.0.7".into(),
            systems: Some(vec![System::Noop, System::Vivo360, System::Noop]),
            delivery: None,
            http_port: None,
            status: None,
            paused: None,
            tls: None,
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
            field_of(BotRequest { systems: Some(vec![]), ..request() }).as_deref(),
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
            tls: false,
            last_heartbeat_at: None,
            current_task_id: None,
            paused: false,
            unanswered_offers: 0,
            offers_paused_until: None,
            created_at: now,
            updated_at: now,
        };
        let renamed = BotPatch { name: Some("bot-2".into()), ..Default::default() }
            .apply_to(&current, BotStatus::Busy);
        assert_eq!((renamed.name.as_str(), renamed.http_port), ("bot-2", Some(9000)));
        assert_eq!(renamed.status, Some(BotStatus::Busy));
        let only_status = BotPatch::default().apply_to(&current, BotStatus::Available);
        assert_eq!(
            (only_status.delivery, only_status.http_port),
            (Some(Delivery::Http), Some(9000)),
            "a write that omits delivery keeps an HTTP bot an HTTP bot"
        );
        let to_amqp = BotPatch { delivery: Some(Delivery::Amqp), ..Default::default() }
            .apply_to(&current, BotStatus::Busy);
        assert_eq!(to_amqp.http_port, None, "switching to amqp drops the port");
        let wrong_id = BotPatch { id: Some(Uuid::from_u128(7)), ..Default::default() };
        assert!(wrong_id.check_identity(&current).is_err());
        let same = BotPatch { id: Some(current.id), created_at: Some(now), ..Default::default() };
        assert!(same.check_identity(&current).is_ok());
    }

    #[test]
    fn a_new_bot_of_the_original_contract_runs_everything_over_http() {
        let minimal = BotRequest { systems: None, ..request() };
        let spec = BotSpec::parse_new(minimal, 5000).expect("name and address suffice");
        assert_eq!(spec.systems.len(), System::ALL.len());
        assert_eq!((spec.delivery, spec.http_port), (Delivery::Http, Some(5000)));
        assert_eq!(spec.status, BotStatus::Unavailable);
        let amqp = BotRequest { delivery: Some(Delivery::Amqp), ..request() };
        assert_eq!(BotSpec::parse_new(amqp, 5000).expect("amqp").http_port, None);
        let busy = BotRequest { status: Some(BotStatus::Busy), ..request() };
        assert!(BotSpec::parse_new(busy, 5000).is_err(), "a new bot holds no task");
    }

    #[test]
    fn no_write_makes_a_bot_holding_a_task_look_free() {
        use BotStatus::*;
        let task = Uuid::from_u128(9);
        let offered = Some((task, TaskStatus::Assigned));
        let running = Some((task, TaskStatus::Running));
        assert_eq!(status_after_write(Busy, Some(Available), offered).ok(), Some(Busy));
        assert_eq!(status_after_write(Busy, Some(Busy), running).ok(), Some(Busy));
        assert_eq!(status_after_write(Unavailable, Some(Available), None).ok(), Some(Available));
        assert_eq!(status_after_write(Available, None, None).ok(), Some(Available));
        let refused = status_after_write(Busy, Some(Available), running).expect_err("runs a task");
        assert!(refused.to_string().contains(&task.to_string()), "names the task: {refused}");
        assert!(status_after_write(Busy, Some(Unavailable), running).is_err());
        assert!(status_after_write(Available, Some(Busy), None).is_err(), "BUSY is not a pause");
    }
}
