//! Botline's contract, shared by the orchestrator and the bot agents.
//!
//! Everything two Botline programs must agree on lives here, so nobody types a status string, a
//! queue name or a CSV column by hand elsewhere.
//!
//! Layout:
//! - [`names`]: enums that travel by name: [`named_enum!`], and [`UnknownValue`] for any other
//!   name.
//! - [`system`]: the name of a system a task targets and a bot can run ([`System`]), and the
//!   four Botline ships ([`Builtin`]).
//! - [`status`]: task and bot statuses and how a bot receives work ([`TaskStatus`], [`BotStatus`],
//!   [`Delivery`]).
//! - [`bot_name`]: [`BotName`], a bot name that is also safe as a RabbitMQ queue name.
//! - [`cpe`]: equipment activation: [`EquipmentId`], the request, a CPE task's payload and the
//!   `{"code","message"}` answers.
//! - [`attachment`]: a task's CSV attachment, decoded from base64 and checked against the columns
//!   its system needs ([`Attachment`]).
//! - [`topology`]: exchange and queue names, declared idempotently, printed as definitions.
//! - [`messages`]: the versioned JSON commands and events ([`Command`], [`Event`]).
//! - [`amqp`]: connecting with backoff, a confirming and reconnecting [`Publisher`], and a
//!   supervised [`consume`] loop.
//! - [`tls`]: AMQP over TLS: the CA and client certificate files a broker URL names, and the
//!   flags that name them ([`tls::AmqpTlsArgs`]); `transport` (private) opens the TCP or TLS
//!   stream lapin speaks over.
//! - [`access`]: broker least privilege: each program's RabbitMQ user and permissions, the
//!   definitions that create them, and the check of an event's sender ([`access::check_sender`]).
//! - [`push`]: the signatures of the orchestrator's pushes to HTTP bots.
//! - `schema` (feature `json-schema`): the messages as a JSON Schema, for bots in other
//!   languages (checked in for the Python package).
//! - `https` (feature `https`): HTTP over TLS between the programs: the client of bots and of
//!   the equipment service, and serving a router over HTTPS.
//! - [`signal`]: Ctrl-C and SIGTERM, the same in every program: the first stops gracefully, a
//!   second at once (exit code 130).
//! - `testing` (feature `test-support`): a RabbitMQ vhost per test.

pub mod access;
pub mod amqp;
pub mod attachment;
pub mod bot_name;
pub mod cpe;
pub mod dead_letters;
#[cfg(feature = "https")]
pub mod https;
pub mod logging;
pub mod messages;
pub mod names;
pub mod push;
#[cfg(feature = "json-schema")]
pub mod schema;
pub mod signal;
pub mod status;
pub mod system;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
pub mod topology;
mod transport;

pub use amqp::{ConsumerSpec, Decision, Message, PublishError, Published, Publisher, consume};
pub use messages::{Assignment, Command, CsvResult, Event, RowOutcome, RowStatus, TaskRef};
pub use topology::Topology;

pub use attachment::{Attachment, AttachmentError};
pub use bot_name::{BotName, BotNameError};
pub use cpe::{CpeAnswer, CpeParameters, CpePayload, CpeRequest, EquipmentId, EquipmentIdError};
pub use names::UnknownValue;
pub use status::{BotStatus, Delivery, TaskStatus};
pub use system::{Builtin, InvalidSystemName, MAX_SYSTEM_NAME_CHARS, System};
