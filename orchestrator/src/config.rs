//! Configuration: flags, with environment variables behind them. Each default is written once,
//! in [`defaults`], and read both by the flag and by the code that builds settings without flags
//! ([`Config::for_database`], the `Default` of the pipeline's, incidents' and ETL's settings).

use broker_config::topology::QueueType;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pipeline::Settings;

pub use crate::defaults;

/// The orchestrator's settings. `Debug` hides the passwords in the database and broker URLs.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Database: sqlite://FILE?mode=rwc or postgres://USER@HOST/DB.
    #[arg(long, env = "BOTLINE_DATABASE_URL", default_value = migrations::DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Address the API listens on.
    #[arg(long, env = "BOTLINE_LISTEN", default_value_t = defaults::LISTEN)]
    pub listen: SocketAddr,

    /// Largest CSV attachment accepted, in bytes (decoded).
    #[arg(long, env = "BOTLINE_MAX_ATTACHMENT_BYTES", default_value_t = defaults::MAX_ATTACHMENT_BYTES)]
    pub max_attachment_bytes: usize,

    /// RabbitMQ: amqp://USER:PASSWORD@HOST:PORT/VHOST (the vhost URL-encoded, %2f for /), or
    /// amqps://… (port 5671) for TLS. Connections use [`Config::broker_url`], which adds
    /// the --amqp-*-file flags.
    #[arg(long, env = "BOTLINE_AMQP_URL", default_value = broker_config::amqp::DEFAULT_AMQP_URL)]
    pub amqp_url: String,

    /// The TLS files of amqps:// connections.
    #[command(flatten)]
    pub amqp_tls: broker_config::tls::AmqpTlsArgs,

    /// Which bot events to accept by their AMQP user-id: open (any; development, everything as
    /// guest) or strict (only from the user of the bot they name, `bot-<name>`, as `broker-config
    /// users` defines them; others are dead-lettered with the reason).
    #[arg(long, env = "BOTLINE_EVENT_SENDERS", value_enum, default_value_t)]
    pub event_senders: broker_config::access::SenderPolicy,

    /// The type of the queues it declares: classic (one broker) or quorum (a RabbitMQ cluster).
    /// Bot agents and `broker-config` must be given the same.
    #[arg(long, env = "BOTLINE_QUEUE_TYPE", value_enum, default_value_t)]
    pub queue_type: QueueType,

    /// Seconds a bot has to accept or reject an offer.
    #[arg(long, env = "BOTLINE_OFFER_TIMEOUT", default_value = defaults::OFFER_TIMEOUT_ARG, value_parser = parse_seconds)]
    pub offer_timeout: Duration,

    /// Seconds between dispatcher sweeps (it also runs at once when woken).
    #[arg(long, env = "BOTLINE_SWEEP_INTERVAL", default_value = defaults::SWEEP_INTERVAL_ARG, value_parser = parse_seconds)]
    pub sweep_interval: Duration,

    /// Seconds between bot heartbeats; a bot silent for 3 intervals is lost.
    #[arg(long, env = "BOTLINE_HEARTBEAT_INTERVAL", default_value = defaults::HEARTBEAT_INTERVAL_ARG, value_parser = parse_seconds)]
    pub heartbeat_interval: Duration,

    /// How many times a consumed message (a bot's event, a monitoring report, an attendance
    /// record) may fail for an internal reason (a bug, a corrupt row) before it is dead-lettered
    /// to botline.dead with `failed N times: <last error>`. Each retry goes behind what is queued;
    /// a database that is down or busy is waited for, uncounted. Quorum queues of RabbitMQ 4
    /// dead-letter by themselves after 20 returns (their delivery-limit): keep this below.
    #[arg(long, env = "BOTLINE_MAX_MESSAGE_FAILURES", default_value_t = broker_config::amqp::DEFAULT_MAX_FAILURES, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_message_failures: u32,

    /// Seconds a task waits after its first failure; doubles with each failure (5 minutes at most).
    #[arg(long, env = "BOTLINE_RETRY_BASE", default_value = defaults::RETRY_BASE_ARG, value_parser = parse_seconds)]
    pub retry_base: Duration,

    /// The RabbitMQ management UI, linked from the dashboard for ops.
    #[arg(long, env = "BOTLINE_RABBITMQ_UI_URL", default_value = defaults::RABBITMQ_UI_URL)]
    pub rabbitmq_ui_url: String,

    /// Serve the API over HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "BOTLINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "BOTLINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The time zone of the attendance platform's local dates (an IANA name).
    #[arg(long, env = "BOTLINE_TIMEZONE", default_value_t = defaults::TIMEZONE, value_parser = parse_timezone)]
    pub timezone: chrono_tz::Tz,

    /// The largest attendance record the ETL loads, in bytes; a larger one is dead-lettered with
    /// its size as the reason, unread.
    #[arg(long, env = "BOTLINE_ETL_MAX_RECORD_BYTES", default_value_t = crate::etl::record::DEFAULT_MAX_RECORD_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub etl_max_record_bytes: u64,

    /// Seconds between incident checks: escalation by minutes ongoing, and resolution of quiet
    /// incidents.
    #[arg(long, env = "BOTLINE_INCIDENT_CHECK_INTERVAL", default_value = defaults::INCIDENT_CHECK_INTERVAL_ARG, value_parser = parse_seconds)]
    pub incident_check_interval: Duration,

    /// Seconds without a report after which an OPEN incident is resolved (30 minutes).
    #[arg(long, env = "BOTLINE_INCIDENT_QUIET_PERIOD", default_value = defaults::INCIDENT_QUIET_PERIOD_ARG, value_parser = parse_seconds)]
    pub incident_quiet_period: Duration,

    /// How the orchestrator treats bots at its boundary (HTTP bots, unanswered offers, run time).
    #[command(flatten)]
    pub bots: BotBoundary,

    /// An origin (`https://ops.example.com`) whose pages may call the API from a browser (CORS).
    /// Repeat the flag, or separate with commas. None by default; `*` is refused (any web page a
    /// user opens could then drive the API with the user's token or from the user's machine).
    #[arg(long = "cors-origin", value_name = "ORIGIN", env = "BOTLINE_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// The API's bearer tokens (none: loopback clients only).
    #[command(flatten)]
    pub auth: crate::http::auth::AuthConfig,
}

/// Limits at the bot boundary (docs/bots.md says why each exists).
#[derive(Debug, Clone, clap::Args)]
pub struct BotBoundary {
    /// The port of a bot registered through the API without `delivery` and `http_port`: such a
    /// bot is an HTTP bot, reached on this port (Flask's own default).
    #[arg(long, env = "BOTLINE_DEFAULT_BOT_PORT", default_value_t = defaults::DEFAULT_BOT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub default_bot_port: u16,

    /// Offers of one task that may go unanswered (expired, or the bot could not be reached)
    /// before the task ends FAILED instead of being offered again.
    #[arg(long, env = "BOTLINE_MAX_UNANSWERED_OFFERS", default_value_t = defaults::MAX_UNANSWERED_OFFERS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_unanswered_offers: u32,

    /// Seconds a run may last when its task does not say (`max_run_seconds`); past it the bot is
    /// told to stop and the run fails, retryably.
    #[arg(long, env = "BOTLINE_MAX_RUN_TIME", default_value = defaults::MAX_RUN_TIME_ARG, value_parser = parse_seconds)]
    pub max_run_time: Duration,

    /// The networks HTTP bots may be in (`10.20.0.0/16`; repeat or separate with commas). The
    /// orchestrator POSTs to and probes the address a bot registers with, so an API client
    /// could otherwise point it anywhere; a bot outside these networks is refused (422) and never
    /// contacted. Default: anywhere.
    #[arg(
        long = "http-bot-networks",
        value_name = "CIDR",
        env = "BOTLINE_HTTP_BOT_NETWORKS",
        value_delimiter = ','
    )]
    pub http_bot_networks: Vec<ipnet::IpNet>,

    /// The largest event from a bot, in bytes (16 MiB; real ones are a few KiB): a larger one is
    /// dead-lettered with the reason, and the attempt it reports on fails, retryably.
    #[arg(long, env = "BOTLINE_MAX_EVENT_BYTES", default_value_t = defaults::MAX_EVENT_BYTES, value_parser = clap::value_parser!(u64).range(1024..=(128 * 1024 * 1024)))]
    pub max_event_bytes: u64,

    /// The CA (or the certificate itself), PEM, that HTTPS bots' certificates are checked against
    /// (bots registered with `tls: true`); without it, the system's root certificates.
    #[arg(long, env = "BOTLINE_BOT_CA_FILE")]
    pub bot_ca_file: Option<PathBuf>,

    /// Seconds an HTTP bot has to answer the POST of an offer (it should answer at once and work
    /// afterwards).
    #[arg(long, env = "BOTLINE_BOT_POST_TIMEOUT", default_value = defaults::BOT_POST_TIMEOUT_ARG, value_parser = parse_seconds)]
    pub bot_post_timeout: Duration,
}

impl Default for BotBoundary {
    fn default() -> BotBoundary {
        BotBoundary {
            default_bot_port: defaults::DEFAULT_BOT_PORT,
            max_unanswered_offers: defaults::MAX_UNANSWERED_OFFERS,
            max_run_time: defaults::MAX_RUN_TIME,
            http_bot_networks: Vec::new(),
            max_event_bytes: defaults::MAX_EVENT_BYTES,
            bot_ca_file: None,
            bot_post_timeout: defaults::BOT_POST_TIMEOUT,
        }
    }
}

impl BotBoundary {
    /// The loopback networks only: what tests use, so that no address a test registers is ever
    /// contacted off this machine.
    pub fn loopback_networks() -> Vec<ipnet::IpNet> {
        ["127.0.0.0/8", "::1/128"].iter().filter_map(|net| net.parse().ok()).collect()
    }
}

/// Parses a CORS origin: `scheme://host[:port]`, nothing after it, never `*`.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text == "*" {
        return Err("'*' is refused: name each origin that may call the API".to_owned());
    }
    let url = url::Url::parse(text)
        .map_err(|e| format!("'{text}' is not an origin like https://ops.example.com: {e}"))?;
    let origin = url.origin();
    if !origin.is_tuple() || !matches!(url.scheme(), "http" | "https") {
        return Err(format!("'{text}' is not an http or https origin"));
    }
    let serialized = origin.ascii_serialization();
    if serialized != text.trim_end_matches('/') {
        return Err(format!(
            "'{text}' is not an origin: an origin has no path, query or user (did you mean {serialized}?)"
        ));
    }
    Ok(serialized)
}

/// Parses an IANA time zone name (`America/Sao_Paulo`, `UTC`).
pub fn parse_timezone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a time zone name like America/Sao_Paulo or UTC"))
}

/// Parses a duration given in seconds (fractions allowed: `0.5`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 =
        text.trim().parse().map_err(|_| format!("'{text}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("'{text}' is not a positive number of seconds"))
}

impl Config {
    /// The settings for a database, with every other value at its default.
    pub fn for_database(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            listen: defaults::LISTEN,
            max_attachment_bytes: defaults::MAX_ATTACHMENT_BYTES,
            amqp_url: broker_config::amqp::DEFAULT_AMQP_URL.to_owned(),
            amqp_tls: Default::default(),
            event_senders: Default::default(),
            queue_type: QueueType::default(),
            max_message_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
            offer_timeout: defaults::OFFER_TIMEOUT,
            sweep_interval: defaults::SWEEP_INTERVAL,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            retry_base: defaults::RETRY_BASE,
            rabbitmq_ui_url: defaults::RABBITMQ_UI_URL.to_owned(),
            tls_cert: None,
            tls_key: None,
            timezone: defaults::TIMEZONE,
            etl_max_record_bytes: crate::etl::record::DEFAULT_MAX_RECORD_BYTES,
            incident_check_interval: defaults::INCIDENT_CHECK_INTERVAL,
            incident_quiet_period: defaults::INCIDENT_QUIET_PERIOD,
            bots: BotBoundary::default(),
            cors_origins: Vec::new(),
            auth: Default::default(),
        }
    }

    /// The broker URL every connection uses: --amqp-url with the --amqp-*-file flags in its
    /// query.
    pub fn broker_url(&self) -> String {
        self.amqp_tls.apply(&self.amqp_url)
    }

    /// The certificate and key files to serve HTTPS with, when both are given.
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }

    /// The attendance ETL's settings.
    pub fn etl_settings(&self) -> crate::etl::EtlSettings {
        crate::etl::EtlSettings {
            timezone: self.timezone,
            max_record_bytes: self.etl_max_record_bytes,
            max_failures: self.max_message_failures,
        }
    }

    /// The pipeline timings these settings give.
    pub fn pipeline_settings(&self) -> Settings {
        Settings {
            offer_timeout: self.offer_timeout,
            sweep_interval: self.sweep_interval,
            heartbeat_interval: self.heartbeat_interval,
            retry_base: self.retry_base,
            event_senders: self.event_senders,
            queue_type: self.queue_type,
            max_message_failures: self.max_message_failures,
            incidents: crate::incidents::IncidentSettings {
                check_interval: self.incident_check_interval,
                quiet_period: self.incident_quiet_period,
            },
            max_unanswered_offers: self.bots.max_unanswered_offers,
            max_run_time: self.bots.max_run_time,
            bot_post_timeout: self.bots.bot_post_timeout,
            http_bot_networks: self.bots.http_bot_networks.clone(),
            max_event_bytes: usize::try_from(self.bots.max_event_bytes).unwrap_or(usize::MAX),
            ..Settings::default()
        }
    }
}

/// `url` with any password replaced by `***`, for logs and error messages.
pub use broker_config::amqp::redact_url as redact;

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Taken apart, so that a new field cannot be forgotten here.
        let Config {
            database_url,
            listen,
            max_attachment_bytes,
            amqp_url,
            amqp_tls,
            event_senders,
            queue_type,
            max_message_failures,
            offer_timeout,
            sweep_interval,
            heartbeat_interval,
            retry_base,
            rabbitmq_ui_url,
            tls_cert,
            tls_key,
            timezone,
            etl_max_record_bytes,
            incident_check_interval,
            incident_quiet_period,
            bots,
            cors_origins,
            auth,
        } = self;
        f.debug_struct("Config")
            .field("database_url", &redact(database_url))
            .field("listen", listen)
            .field("max_attachment_bytes", max_attachment_bytes)
            .field("amqp_url", &redact(amqp_url))
            .field("amqp_tls", amqp_tls)
            .field("event_senders", event_senders)
            .field("queue_type", queue_type)
            .field("max_message_failures", max_message_failures)
            .field("offer_timeout", offer_timeout)
            .field("sweep_interval", sweep_interval)
            .field("heartbeat_interval", heartbeat_interval)
            .field("retry_base", retry_base)
            .field("rabbitmq_ui_url", &redact(rabbitmq_ui_url))
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("timezone", timezone)
            .field("etl_max_record_bytes", etl_max_record_bytes)
            .field("incident_check_interval", incident_check_interval)
            .field("incident_quiet_period", incident_quiet_period)
            .field("bots", bots)
            .field("cors_origins", cors_origins)
            .field("auth", auth)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn settings_made_in_code_have_the_flags_defaults() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            config: super::Config,
        }
        let parsed = Flags::try_parse_from(["orchestrator"]).expect("the defaults parse").config;
        let built = super::Config::for_database(migrations::DEFAULT_DATABASE_URL);
        assert_eq!(format!("{built:#?}"), format!("{parsed:#?}"));
        // The settings the flags give, and those made without flags.
        let settings = format!("{:#?}", super::Settings::default());
        assert_eq!(format!("{:#?}", parsed.pipeline_settings()), settings);
        assert_eq!(parsed.etl_settings(), crate::etl::EtlSettings::default());
        assert_eq!(format!("{:?}", parsed.bots), format!("{:?}", super::BotBoundary::default()));
        assert_eq!(parsed.offer_timeout, super::defaults::OFFER_TIMEOUT, "the text is the number");
        assert_eq!(parsed.incident_quiet_period, super::defaults::INCIDENT_QUIET_PERIOD);
    }

    #[test]
    fn seconds_parse_with_fractions_and_refuse_nonsense() {
        assert_eq!(super::parse_seconds("0.5"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(super::parse_seconds("10"), Ok(std::time::Duration::from_secs(10)));
        assert!(super::parse_seconds("-1").is_err());
        assert!(super::parse_seconds("soon").is_err());
    }

    #[test]
    fn cors_origins_are_origins_and_never_any() {
        use super::parse_origin;
        assert_eq!(parse_origin("http://127.0.0.1:5173").as_deref(), Ok("http://127.0.0.1:5173"));
        assert_eq!(
            parse_origin("https://ops.example.com/").as_deref(),
            Ok("https://ops.example.com")
        );
        assert!(parse_origin("*").expect_err("any").contains("refused"));
        assert!(parse_origin("https://ops.example.com/app").expect_err("path").contains("no path"));
        assert!(parse_origin("ftp://ops.example.com").is_err());
        assert!(parse_origin("ops.example.com").is_err());
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://bot:s3cret@db:5432/botline"),
            "postgres://bot:***@db:5432/botline"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(redact("sqlite://botline.db?mode=rwc"), "sqlite://botline.db?mode=rwc");
    }

    #[test]
    fn debug_hides_the_broker_and_database_passwords() {
        let mut config = super::Config::for_database("postgres://botline:db-s3cret@db/botline");
        config.amqp_url = "amqps://orchestrator:amqp-s3cret@rabbit:5671/%2f".into();
        config.amqp_tls.amqp_ca_file = Some("/etc/botline/rabbit-ca.pem".into());
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqps://orchestrator:***@rabbit:5671/%2f"), "{shown}");
        assert!(shown.contains("postgres://botline:***@db/botline"), "{shown}");
        assert!(shown.contains("rabbit-ca.pem"), "{shown}");
        // What connections use keeps the password, and carries the CA file.
        assert_eq!(
            config.broker_url(),
            "amqps://orchestrator:amqp-s3cret@rabbit:5671/%2f?cacertfile=%2Fetc%2Fbotline%2Frabbit-ca.pem"
        );
    }
}
