//! A row of `bots`.
#![allow(missing_docs)]

use broker_config::{BotStatus, Delivery};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    pub ip_address: String,
    /// Stored as its name (`AVAILABLE`, …); changed only as [`crate::bots::status`] says.
    pub status: BotStatus,
    /// Comma-separated system names.
    pub systems: String,
    /// Stored as its name (`amqp`, `http`).
    pub delivery: Delivery,
    pub http_port: Option<i32>,
    pub last_heartbeat_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The agent run that last announced itself (`bot.online`).
    pub session_id: Option<Uuid>,
    /// Taken out of rotation by an operator: offered nothing, whatever it reports.
    pub paused: bool,
    /// Offers in a row it did not take, unanswered or refused (reset when it takes one).
    pub unanswered_offers: i32,
    /// No offer before this time (the backoff after unanswered offers).
    pub offers_paused_until: Option<DateTimeUtc>,
    /// An HTTP bot served over HTTPS.
    pub tls: bool,
    /// How many tasks it runs at once (1 for an RPA robot on a desktop).
    pub slots: i32,
    /// How many it holds now (ASSIGNED or RUNNING): recounted from `tasks` whenever one leaves
    /// it, raised by the dispatcher when it offers one.
    pub held: i32,
    /// It reads several offers in one message (`tasks.assign`), as it said in `bot.online`.
    pub batches: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
