//! What a client sends to register or change a bot ([`BotRequest`], [`BotPatch`]), checked
//! into the only type that reaches the database ([`BotSpec`]).

use std::net::IpAddr;

use broker_config::{BotName, BotStatus, Delivery, System};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::view::Bot;
#[cfg(test)]
use super::view::{join_systems, split_systems};
use crate::error::ApiError;

/// The most systems one bot may run.
pub const MAX_BOT_SYSTEMS: usize = 64;

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
    /// The systems it runs (any names: a bot may announce a system before it is registered);
    /// when absent, every system registered at the time.
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
    /// How many tasks it runs at once: 1 (the default, an RPA robot on a desktop) to 10,000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000, example = 1)]
    pub slots: Option<u32>,
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
    pub slots_used: Option<Value>,
    /// Read-only: ignored.
    #[schema(value_type = Option<Object>)]
    pub task_ids: Option<Value>,
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
    /// A new name (its queue is then `botline.bot.<new name>`).
    pub name: Option<String>,
    /// A new address (checked against `--http-bot-networks` for HTTP bots).
    pub ip_address: Option<String>,
    /// The systems it runs from now on (replacing the list, not adding to it).
    pub systems: Option<Vec<System>>,
    /// New delivery; switching to `amqp` drops the HTTP port.
    pub delivery: Option<Delivery>,
    /// New HTTP port.
    pub http_port: Option<u16>,
    /// Whether its port serves HTTPS.
    pub tls: Option<bool>,
    /// How many tasks it runs at once from now on (1 to 10,000). Lowering it below what it
    /// holds takes nothing back: it gets no offer until it holds fewer.
    #[schema(minimum = 1, maximum = 10000)]
    pub slots: Option<u32>,
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
            slots: Some(self.slots.unwrap_or(current.slots)),
        }
    }
}
/// A bot's fields, checked: only this type reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotSpec {
    /// A valid queue name.
    pub name: BotName,
    /// Parsed: IPv4 or IPv6.
    pub ip_address: IpAddr,
    /// Its systems, sorted, without repeats, never empty.
    pub systems: Vec<System>,
    /// How it receives tasks.
    pub delivery: Delivery,
    /// Its port, exactly when `delivery` is http.
    pub http_port: Option<u16>,
    /// As [`super::status`] allows it.
    pub status: BotStatus,
    /// Out of rotation.
    pub paused: bool,
    /// Its port serves HTTPS.
    pub tls: bool,
    /// Tasks it runs at once, 1 to [`broker_config::messages::MAX_SLOTS`].
    pub slots: u32,
}

impl BotSpec {
    /// Checks a new bot's request: [`BotSpec::parse`] with the defaults of the original
    /// contract (every system in `registered`; HTTP on `default_port`; UNAVAILABLE), and never
    /// BUSY.
    pub fn parse_new(
        request: BotRequest,
        default_port: u16,
        registered: &[System],
    ) -> Result<BotSpec, ApiError> {
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
        let systems = Some(request.systems.clone().unwrap_or_else(|| registered.to_vec()));
        let request = BotRequest { delivery: Some(delivery), http_port, systems, ..request };
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
        let mut systems = request.systems.unwrap_or_default();
        systems.sort();
        systems.dedup();
        if systems.is_empty() {
            return Err(ApiError::invalid("systems", "a bot must run at least one system"));
        }
        if systems.len() > MAX_BOT_SYSTEMS {
            return Err(ApiError::invalid(
                "systems",
                format!("a bot runs at most {MAX_BOT_SYSTEMS} systems"),
            ));
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
        let slots = request.slots.unwrap_or(1);
        if !(1..=broker_config::messages::MAX_SLOTS).contains(&slots) {
            return Err(ApiError::invalid(
                "slots",
                format!(
                    "slots is how many tasks the bot runs at once: 1 to {}",
                    broker_config::messages::MAX_SLOTS
                ),
            ));
        }
        Ok(BotSpec {
            slots,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> BotRequest {
        BotRequest {
            name: "bot-1".into(),
            ip_address: "10.0.0.7".into(),
            systems: Some(vec![System::NOOP, System::VIVO360, System::NOOP]),
            delivery: None,
            http_port: None,
            status: None,
            paused: None,
            tls: None,
            slots: None,
        }
    }

    #[test]
    fn a_valid_request_is_normalised() {
        let spec = BotSpec::parse(request(), BotStatus::Unavailable).expect("valid");
        assert_eq!(spec.systems, [System::NOOP, System::VIVO360], "sorted by name");
        assert_eq!(spec.delivery, Delivery::Amqp);
        assert_eq!(spec.status, BotStatus::Unavailable);
        assert_eq!(join_systems(&spec.systems), "NOOP,VIVO360");
        assert_eq!(split_systems("NOOP,VIVO360"), Ok(spec.systems));
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
        for slots in [0, broker_config::messages::MAX_SLOTS + 1] {
            assert_eq!(
                field_of(BotRequest { slots: Some(slots), ..request() }).as_deref(),
                Some("slots"),
                "{slots} slots"
            );
        }
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
            systems: vec![System::NOOP],
            delivery: Delivery::Http,
            http_port: Some(9000),
            tls: false,
            last_heartbeat_at: None,
            current_task_id: None,
            slots: 1,
            slots_used: 0,
            task_ids: vec![],
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
        let registered = [System::VIVO360, System::new("PAYROLL").expect("name")];
        let spec =
            BotSpec::parse_new(minimal, 5000, &registered).expect("name and address suffice");
        assert_eq!(
            spec.systems,
            [System::new("PAYROLL").expect("name"), System::VIVO360],
            "every registered system, sorted"
        );
        assert_eq!((spec.delivery, spec.http_port), (Delivery::Http, Some(5000)));
        assert_eq!(spec.status, BotStatus::Unavailable);
        let amqp = BotRequest { delivery: Some(Delivery::Amqp), ..request() };
        assert_eq!(BotSpec::parse_new(amqp, 5000, &registered).expect("amqp").http_port, None);
        let busy = BotRequest { status: Some(BotStatus::Busy), ..request() };
        assert!(BotSpec::parse_new(busy, 5000, &registered).is_err(), "a new bot holds no task");
    }
}
