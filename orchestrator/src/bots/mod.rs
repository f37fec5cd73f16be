//! Bots as the API speaks of them: what a client sends ([`request`]), what it is shown
//! ([`view`]) and how a bot's status may change ([`status`], pure). How bots are stored is
//! [`crate::store::bots`]; what they report is applied by [`crate::pipeline`].

pub mod request;
pub mod status;
pub mod view;

pub use request::{BotPatch, BotRequest, BotSpec};
pub use status::{BotChange, Load, status_after_write};
pub use view::{Bot, join_systems, split_systems};
