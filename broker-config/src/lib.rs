//! Botline's contract, shared by the orchestrator and the bot agents.
//!
//! Everything two Botline programs must agree on lives here, so nobody types a status string, a
//! queue name or a CSV column by hand elsewhere.
//!
//! Layout:
//! - [`system`]: the systems a task targets and a bot can run ([`System`]).
//! - [`status`]: task and bot statuses and how a bot receives work ([`TaskStatus`], [`BotStatus`],
//!   [`Delivery`]).
//! - [`bot_name`]: [`BotName`], a bot name that is also safe as a RabbitMQ queue name.
//! - [`attachment`]: a task's CSV attachment, decoded from base64 and checked against the columns
//!   its system needs ([`Attachment`]).

pub mod attachment;
pub mod bot_name;
pub mod status;
pub mod system;

pub use attachment::{Attachment, AttachmentError};
pub use bot_name::{BotName, BotNameError};
pub use status::{BotStatus, Delivery, TaskStatus, UnknownValue};
pub use system::System;
