//! The defaults of the flags, for the flags and for settings made in code.
//!
//! A duration is a flag in seconds (`parse_seconds`), whose default clap takes as text: each is
//! declared once with `seconds!`, which gives the [`Duration`] and its `…_ARG` text from the
//! same literal.
//!
//! A leaf module: the flags (`config`) and the settings of the pipeline, the incident engine and the
//! ETL read it, and it reads nothing of the crate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Declares a default duration in whole seconds: `NAME` (a [`Duration`]) and `NAME_ARG` (the
/// same number as the flag's default text).
macro_rules! seconds {
    ($(#[$doc:meta])* $name:ident, $arg:ident = $secs:literal) => {
        $(#[$doc])*
        pub const $name: Duration = Duration::from_secs($secs);
        #[doc = concat!("[`", stringify!($name), "`] as the flag's default text.")]
        pub const $arg: &str = stringify!($secs);
    };
}

/// Where the API listens: loopback only, so nothing is open to the network by default.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The largest CSV attachment accepted, in bytes (decoded).
pub const MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;
/// The RabbitMQ management UI the dashboard links to.
pub const RABBITMQ_UI_URL: &str = "http://127.0.0.1:15672/";
/// The time zone of the attendance platform's local dates.
pub const TIMEZONE: chrono_tz::Tz = chrono_tz::America::Sao_Paulo;
/// The port of an HTTP bot registered without one (Flask's own default).
pub const DEFAULT_BOT_PORT: u16 = 5000;
/// Offers of one task that may go unanswered before it ends FAILED.
pub const MAX_UNANSWERED_OFFERS: u32 = 5;
/// The largest event from a bot, in bytes (16 MiB; real ones are a few KiB).
pub const MAX_EVENT_BYTES: u64 = 16 * 1024 * 1024;

seconds!(
    /// How long a bot has to accept or reject an offer.
    OFFER_TIMEOUT, OFFER_TIMEOUT_ARG = 10
);
seconds!(
    /// How often the dispatcher runs without being woken, and the sweeps run.
    SWEEP_INTERVAL, SWEEP_INTERVAL_ARG = 10
);
seconds!(
    /// How often bots heartbeat (a bot silent for 3 intervals is lost).
    HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL_ARG = 5
);
seconds!(
    /// The wait after a task's first failure (it doubles with each failure).
    RETRY_BASE, RETRY_BASE_ARG = 5
);
seconds!(
    /// How often incidents are escalated by minutes ongoing and quiet ones resolved.
    INCIDENT_CHECK_INTERVAL, INCIDENT_CHECK_INTERVAL_ARG = 30
);
seconds!(
    /// How long an OPEN incident goes without a report before it is resolved (30 minutes).
    INCIDENT_QUIET_PERIOD, INCIDENT_QUIET_PERIOD_ARG = 1800
);
seconds!(
    /// How long a run may last when its task does not say (an hour).
    MAX_RUN_TIME, MAX_RUN_TIME_ARG = 3600
);
seconds!(
    /// How long an HTTP bot has to answer the POST of an offer.
    BOT_POST_TIMEOUT, BOT_POST_TIMEOUT_ARG = 5
);
