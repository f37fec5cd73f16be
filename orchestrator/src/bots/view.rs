//! How the API shows a bot ([`Bot`]), read from its stored row.

use broker_config::{BotStatus, Delivery, System};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::entity::bot;
use crate::error::ApiError;

/// A bot, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bot {
    /// A UUIDv7, kept across re-registrations under the same name.
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
    /// A task it holds, if any: the first of `task_ids` (what clients of single-slot bots
    /// read). The orchestrator's to set: never written by a client.
    pub current_task_id: Option<Uuid>,
    /// How many tasks it runs at once.
    #[schema(example = 1)]
    pub slots: u32,
    /// How many of them it holds now (ASSIGNED or RUNNING).
    #[schema(example = 0)]
    pub slots_used: u32,
    /// The tasks it holds, oldest offer first.
    pub task_ids: Vec<Uuid>,
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
            status: row.status,
            delivery: row.delivery,
            http_port: row.http_port.and_then(|p| u16::try_from(p).ok()),
            tls: row.tls,
            systems,
            name: row.name,
            ip_address: row.ip_address,
            last_heartbeat_at: row.last_heartbeat_at,
            // The tasks it holds are read beside the row (`store::bots::with_tasks`).
            current_task_id: None,
            slots: u32::try_from(row.slots).unwrap_or(1),
            slots_used: u32::try_from(row.held).unwrap_or_default(),
            task_ids: Vec::new(),
            paused: row.paused,
            unanswered_offers: u32::try_from(row.unanswered_offers).unwrap_or_default(),
            offers_paused_until: row.offers_paused_until,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A bot's systems as stored: their names, comma-separated.
pub fn join_systems(systems: &[System]) -> String {
    systems.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// The systems of a stored bot (comma-separated names).
pub fn split_systems(stored: &str) -> Result<Vec<System>, broker_config::InvalidSystemName> {
    stored.split(',').filter(|s| !s.is_empty()).map(str::parse).collect()
}
