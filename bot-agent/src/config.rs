//! The agent's configuration: command-line flags with environment variables behind them, also
//! constructible in code ([`AgentConfig::new`]) for the demo and tests, with the same defaults
//! (each written once, as a `DEFAULT_…` constant both read).

use broker_config::topology::QueueType;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use broker_config::messages::MAX_SLOTS;
use broker_config::{BotName, System};

use crate::automations::program::Program;
use crate::error::AgentError;

/// The orchestrator's API, for bots in HTTP mode.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";
/// The Vivo360 portal (the simulator's default address).
pub const DEFAULT_VIVO360_URL: &str = "http://127.0.0.1:8091";
/// The equipment config service (the simulator's default address, over HTTPS).
pub const DEFAULT_EQUIPMENT_URL: &str = "https://127.0.0.1:8092";
/// Seconds a CPE bot waits for the equipment config service's answer by default: above the
/// minute a real device takes to configure, with room to spare.
pub const DEFAULT_EQUIPMENT_ANSWER_TIMEOUT_SECS: u64 = 120;
/// The webhooks NOTIFY delivers to (the notification sink's default address).
pub const DEFAULT_NOTIFY_URL: &str = "http://127.0.0.1:8093";
/// The Vivo360 account the bots log in with (the simulator's default account).
pub const DEFAULT_VIVO360_CREDENTIAL: &str = "botline";
/// Milliseconds between heartbeats (the orchestrator's --heartbeat-interval, 5 s).
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 5000;
/// Least milliseconds between two progress reports of a task.
pub const DEFAULT_PROGRESS_INTERVAL_MS: u64 = 250;
/// Seconds a running task may take to finish at shutdown before it is handed back.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// Tasks a bot runs at once unless told otherwise: one, as every bot did before slots.
pub const DEFAULT_SLOTS: u32 = 1;
/// Milliseconds queued events wait, while an acceptance is among them, for others to go in the
/// same message (AMQP mode).
pub const DEFAULT_EVENT_BATCH_DELAY_MS: u64 = 2;
/// The longest --event-batch-delay-ms: events wait at most a second, well inside an offer's
/// expiry and a heartbeat interval.
pub const MAX_EVENT_BATCH_DELAY_MS: u64 = 1000;

/// What `bot-agent --help` says the program is.
pub const ABOUT: &str = "Botline bot agent: takes tasks from its RabbitMQ queue (or over HTTP \
                         with --http), runs the automations and reports what happened";

/// How a bot agent runs. `Debug` hides the passwords (the broker URL's and the portal's).
#[derive(Clone, PartialEq, clap::Parser)]
#[command(name = "bot-agent", version, about = ABOUT)]
pub struct AgentConfig {
    /// The bot's name: lowercase letters, digits, '-', '_' and '.'; its queue is
    /// `botline.bot.<name>`.
    #[arg(long, env = "BOTLINE_BOT_NAME", value_parser = BotName::parse)]
    pub name: BotName,
    /// The built-in systems this bot runs, comma separated (vivo360, cpe, notify, noop); the
    /// systems of --automation and --automations are added.
    #[arg(
        long,
        env = "BOTLINE_BOT_SYSTEMS",
        value_delimiter = ',',
        required_unless_present_any = ["automation", "automations_file"],
        value_parser = parse_system
    )]
    pub systems: Vec<System>,
    /// How many tasks the bot runs at once (its slots), 1 to 10000: it turns offers down as
    /// "busy" only when all are taken.
    #[arg(
        long,
        env = "BOTLINE_SLOTS",
        default_value_t = DEFAULT_SLOTS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SLOTS))
    )]
    pub slots: u32,
    /// A system run by a program of yours: NAME=COMMAND, repeatable. The command is split into
    /// words as a shell would, and runs without a shell (docs/systems.md).
    #[arg(long = "automation", value_name = "NAME=COMMAND", value_parser = parse_automation)]
    pub automation: Vec<(System, Program)>,
    /// A TOML file of programs, one table per system: `[PAYROLL]` with `command`, `args`,
    /// `workdir`, `env`, `shell`, `max_run_seconds`, `cancel_grace_seconds`.
    #[arg(long = "automations", value_name = "FILE", env = "BOTLINE_AUTOMATIONS")]
    pub automations_file: Option<PathBuf>,
    /// The RabbitMQ server (AMQP mode): amqp://USER:PASSWORD@HOST:PORT/VHOST, or amqps://… (port
    /// 5671) for TLS. Connections use [`AgentConfig::broker_url`], which adds the
    /// --amqp-*-file flags.
    #[arg(long, env = "BOTLINE_AMQP_URL", default_value = broker_config::amqp::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// The TLS files of amqps:// connections.
    #[command(flatten)]
    pub amqp_tls: broker_config::tls::AmqpTlsArgs,
    /// Declare nothing on RabbitMQ, only check (passively) that the bot's queue and the exchanges
    /// exist: for a broker user that may not configure, like those of `broker-config users`,
    /// whose definitions create the queue.
    #[arg(long, env = "BOTLINE_BOT_NO_DECLARE")]
    pub no_declare: bool,
    /// The type of the queue it declares: classic (one broker) or quorum (a RabbitMQ cluster);
    /// the same as the orchestrator's --queue-type.
    #[arg(long, env = "BOTLINE_QUEUE_TYPE", value_enum, default_value_t)]
    pub queue_type: QueueType,
    /// The orchestrator's API (HTTP mode).
    #[arg(long, env = "BOTLINE_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// The bearer token sent on every call to the orchestrator's API (HTTP mode): the token the
    /// orchestrator was given for this bot (--bot-token NAME=TOKEN).
    #[arg(long, env = "BOTLINE_API_TOKEN", hide_env_values = true, value_parser = api_token, conflicts_with = "api_token_file")]
    pub api_token: Option<ApiToken>,
    /// A file holding the API token (keeps it out of `ps` and of the environment).
    #[arg(long, env = "BOTLINE_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Receive tasks by HTTP push on this address instead of from RabbitMQ (for bots that cannot
    /// speak AMQP); reports go to --api-url.
    #[arg(long, env = "BOTLINE_BOT_HTTP")]
    pub http: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://<this address>/metrics (offers, runs and their times,
    /// rows, slots in use); off by default.
    #[arg(long, env = "BOTLINE_BOT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// In HTTP mode, serve HTTPS with this certificate chain (PEM), so the orchestrator's pushes
    /// cross the network encrypted; the bot registers with `tls: true` and the orchestrator checks
    /// the certificate against its --bot-ca-file.
    #[arg(long, env = "BOTLINE_BOT_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-tls-cert.
    #[arg(long, env = "BOTLINE_BOT_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// The address the bot announces [default: the local address that reaches the broker (or
    /// the API in HTTP mode), else 127.0.0.1].
    #[arg(long, env = "BOTLINE_BOT_IP")]
    pub ip_address: Option<String>,
    /// Milliseconds between heartbeats.
    #[arg(long, env = "BOTLINE_HEARTBEAT_INTERVAL_MS", default_value_t = DEFAULT_HEARTBEAT_INTERVAL_MS)]
    pub heartbeat_interval_ms: u64,
    /// Least milliseconds between two progress reports of a task.
    #[arg(long, env = "BOTLINE_PROGRESS_INTERVAL_MS", default_value_t = DEFAULT_PROGRESS_INTERVAL_MS)]
    pub progress_interval_ms: u64,
    /// AMQP mode: milliseconds queued events wait for others while an acceptance is among them,
    /// so that a quick run's end can go in its place (at most 200 events or about 256 KiB to a
    /// message), 0 to 1000; 0, or no acceptance queued, sends what is queued at once.
    #[arg(
        long,
        env = "BOTLINE_EVENT_BATCH_DELAY_MS",
        default_value_t = DEFAULT_EVENT_BATCH_DELAY_MS,
        value_parser = clap::value_parser!(u64).range(0..=MAX_EVENT_BATCH_DELAY_MS)
    )]
    pub event_batch_delay_ms: u64,
    /// AMQP mode: send each event in a message of its own, as bots did before `bot.events`
    /// messages (for an orchestrator older than them).
    #[arg(long, env = "BOTLINE_NO_EVENT_BATCHES")]
    pub no_event_batches: bool,
    /// Seconds a running task may take to finish at shutdown before it is handed back.
    #[arg(long, env = "BOTLINE_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// The Vivo360 portal.
    #[arg(long, env = "BOTLINE_VIVO360_URL", default_value = DEFAULT_VIVO360_URL)]
    pub vivo360_url: String,
    /// The Vivo360 account's username.
    #[arg(long, env = "BOTLINE_VIVO360_USERNAME", default_value = DEFAULT_VIVO360_CREDENTIAL)]
    pub vivo360_username: String,
    /// The Vivo360 account's password.
    #[arg(long, env = "BOTLINE_VIVO360_PASSWORD", default_value = DEFAULT_VIVO360_CREDENTIAL, hide_env_values = true, hide_default_value = true)]
    pub vivo360_password: String,
    /// The equipment config service (CPE activations).
    #[arg(long, env = "BOTLINE_EQUIPMENT_URL", default_value = DEFAULT_EQUIPMENT_URL)]
    pub equipment_url: String,
    /// A PEM file of the certificates to trust for the equipment config service (its CA, or
    /// its self-signed certificate) [default: the system's root certificates].
    #[arg(long, env = "BOTLINE_EQUIPMENT_CA", conflicts_with = "equipment_insecure")]
    pub equipment_ca: Option<PathBuf>,
    /// Accept any certificate from the equipment config service: only for the self-signed
    /// simulator of a test or a demo.
    #[arg(long, env = "BOTLINE_EQUIPMENT_INSECURE")]
    pub equipment_insecure: bool,
    /// Seconds to wait for the equipment config service's answer to one activation (it answers
    /// once the device is configured, about a minute). Not the activation's `timeoutInSeconds`,
    /// which is the device's own timeout and goes to the service as given; the bot waits at
    /// least that long too.
    #[arg(long, env = "BOTLINE_EQUIPMENT_ANSWER_TIMEOUT", default_value_t = DEFAULT_EQUIPMENT_ANSWER_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub equipment_answer_timeout: u64,
    /// Where NOTIFY delivers communications: POST {notify-url}/webhooks/{channel}.
    #[arg(long, env = "BOTLINE_NOTIFY_URL", default_value = DEFAULT_NOTIFY_URL)]
    pub notify_url: String,
}

impl AgentConfig {
    /// A configuration with every default, for a bot named `name` running `systems` against the
    /// broker at `amqp_url`.
    pub fn new(name: BotName, systems: Vec<System>, amqp_url: impl Into<String>) -> AgentConfig {
        AgentConfig {
            name,
            systems,
            slots: DEFAULT_SLOTS,
            automation: Vec::new(),
            automations_file: None,
            amqp_url: amqp_url.into(),
            amqp_tls: Default::default(),
            no_declare: false,
            queue_type: QueueType::default(),
            api_url: DEFAULT_API_URL.to_owned(),
            api_token: None,
            api_token_file: None,
            http: None,
            metrics_listen: None,
            http_tls_cert: None,
            http_tls_key: None,
            ip_address: None,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            progress_interval_ms: DEFAULT_PROGRESS_INTERVAL_MS,
            event_batch_delay_ms: DEFAULT_EVENT_BATCH_DELAY_MS,
            no_event_batches: false,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            vivo360_url: DEFAULT_VIVO360_URL.to_owned(),
            vivo360_username: DEFAULT_VIVO360_CREDENTIAL.to_owned(),
            vivo360_password: DEFAULT_VIVO360_CREDENTIAL.to_owned(),
            equipment_url: DEFAULT_EQUIPMENT_URL.to_owned(),
            equipment_ca: None,
            equipment_insecure: false,
            equipment_answer_timeout: DEFAULT_EQUIPMENT_ANSWER_TIMEOUT_SECS,
            notify_url: DEFAULT_NOTIFY_URL.to_owned(),
        }
    }

    /// Checks what the flags' parsers cannot when the configuration is built in code: at least
    /// one system, each with an automation in this build, a slot count from 1 to
    /// [`MAX_SLOTS`], and one way to trust the equipment service.
    pub fn validate(&self) -> Result<(), AgentError> {
        if !(1..=MAX_SLOTS).contains(&self.slots) {
            return Err(AgentError::Slots(self.slots));
        }
        if self.event_batch_delay_ms > MAX_EVENT_BATCH_DELAY_MS {
            return Err(AgentError::EventBatchDelay(self.event_batch_delay_ms));
        }
        if self.systems.is_empty() && self.automation.is_empty() && self.automations_file.is_none()
        {
            return Err(AgentError::NoSystems);
        }
        let programs: Vec<&System> = self.automation.iter().map(|(system, _)| system).collect();
        // The file's systems are known once it is read ([`AgentConfig::programs`]).
        for system in &self.systems {
            if !programs.contains(&system) && self.automations_file.is_none() {
                ensure_supported(system)?;
            }
        }
        if self.equipment_insecure && self.equipment_ca.is_some() {
            return Err(AgentError::Equipment(
                "--equipment-ca and --equipment-insecure exclude each other".to_owned(),
            ));
        }
        Ok(())
    }

    /// The broker URL every connection uses: --amqp-url with the --amqp-*-file flags in its
    /// query.
    pub fn broker_url(&self) -> String {
        self.amqp_tls.apply(&self.amqp_url)
    }

    /// The time between heartbeats.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    /// The least time between two progress reports.
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }

    /// How long a running task may take to finish at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// How long the first of several events waits for others to go with it (AMQP mode).
    pub fn event_batch_delay(&self) -> Duration {
        Duration::from_millis(self.event_batch_delay_ms.min(MAX_EVENT_BATCH_DELAY_MS))
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Taken apart, so that a new field cannot be forgotten here.
        let AgentConfig {
            name,
            systems,
            slots,
            automation,
            automations_file,
            amqp_url,
            amqp_tls,
            no_declare,
            queue_type,
            api_url,
            api_token,
            api_token_file,
            http,
            metrics_listen,
            http_tls_cert,
            http_tls_key,
            ip_address,
            heartbeat_interval_ms,
            progress_interval_ms,
            event_batch_delay_ms,
            no_event_batches,
            shutdown_grace_secs,
            vivo360_url,
            vivo360_username,
            vivo360_password: _,
            equipment_url,
            equipment_ca,
            equipment_insecure,
            equipment_answer_timeout,
            notify_url,
        } = self;
        f.debug_struct("AgentConfig")
            .field("name", name)
            .field("systems", systems)
            .field("slots", slots)
            .field("automation", automation)
            .field("automations_file", automations_file)
            .field("amqp_url", &broker_config::amqp::redact_url(amqp_url))
            .field("amqp_tls", amqp_tls)
            .field("no_declare", no_declare)
            .field("queue_type", queue_type)
            .field("api_url", &broker_config::amqp::redact_url(api_url))
            .field("api_token", api_token)
            .field("api_token_file", api_token_file)
            .field("http", http)
            .field("metrics_listen", metrics_listen)
            .field("http_tls_cert", http_tls_cert)
            .field("http_tls_key", http_tls_key)
            .field("ip_address", ip_address)
            .field("heartbeat_interval_ms", heartbeat_interval_ms)
            .field("progress_interval_ms", progress_interval_ms)
            .field("event_batch_delay_ms", event_batch_delay_ms)
            .field("no_event_batches", no_event_batches)
            .field("shutdown_grace_secs", shutdown_grace_secs)
            .field("vivo360_url", &broker_config::amqp::redact_url(vivo360_url))
            .field("vivo360_username", vivo360_username)
            .field("vivo360_password", &"***")
            .field("equipment_url", &broker_config::amqp::redact_url(equipment_url))
            .field("equipment_ca", equipment_ca)
            .field("equipment_insecure", equipment_insecure)
            .field("equipment_answer_timeout", equipment_answer_timeout)
            .field("notify_url", &broker_config::amqp::redact_url(notify_url))
            .finish()
    }
}

/// A bearer token for the orchestrator's API. `Debug` prints `***`, so configurations can be
/// logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps `token` (surrounding whitespace removed).
    pub fn new(token: &str) -> ApiToken {
        ApiToken(token.trim().to_owned())
    }

    /// The key the orchestrator signs its commands to this bot with (`broker_config::push`).
    pub fn push_key(&self) -> broker_config::push::PushKey {
        broker_config::push::PushKey::from_token(&self.0)
    }

    /// The `Authorization` header carrying it, marked sensitive (kept out of debug output);
    /// `None` when the token has characters a header cannot carry.
    pub fn header(&self) -> Option<reqwest::header::HeaderValue> {
        if self.0.is_empty() || !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// clap's parser for the token: never fails, so clap never echoes it in an error; it is checked
/// when the agent starts.
fn api_token(text: &str) -> Result<ApiToken, std::convert::Infallible> {
    Ok(ApiToken::new(text))
}

/// Refuses a system this agent has no automation for.
pub fn ensure_supported(system: &System) -> Result<(), AgentError> {
    match system.builtin() {
        Some(_) => Ok(()),
        None => Err(AgentError::NoAutomation(system.clone())),
    }
}

/// `--automation NAME=COMMAND`.
fn parse_automation(text: &str) -> Result<(System, Program), String> {
    let (name, command) =
        text.split_once('=').ok_or_else(|| format!("expected NAME=COMMAND, got `{text}`"))?;
    let system = System::new(name).map_err(|e| e.to_string())?;
    let program = Program::from_command_line(command).map_err(|e| e.to_string())?;
    Ok((system, program))
}

impl AgentConfig {
    /// The programs of --automations (read now) and --automation (which win for the same
    /// system), each checked: a command that does not exist stops the agent, naming it.
    pub fn programs(&self) -> Result<BTreeMap<System, Program>, AgentError> {
        let mut programs = BTreeMap::new();
        if let Some(path) = &self.automations_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                AgentError::Automations(format!("cannot read {}: {e}", path.display()))
            })?;
            let table: BTreeMap<String, Program> = toml::from_str(&text)
                .map_err(|e| AgentError::Automations(format!("{}: {e}", path.display())))?;
            for (name, program) in table {
                let system = System::new(&name)
                    .map_err(|e| AgentError::Automations(format!("{}: {e}", path.display())))?;
                programs.insert(system, program);
            }
        }
        for (system, program) in &self.automation {
            programs.insert(system.clone(), program.clone());
        }
        for (system, program) in &programs {
            program.check().map_err(|e| AgentError::Automations(format!("{system}: {e}")))?;
        }
        Ok(programs)
    }
}

/// `--systems` items: a system's name.
fn parse_system(text: &str) -> Result<System, AgentError> {
    text.parse().map_err(AgentError::InvalidSystem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Result<AgentConfig, clap::Error> {
        AgentConfig::try_parse_from(std::iter::once("bot-agent").chain(args.iter().copied()))
    }

    #[test]
    fn parses_a_comma_separated_systems_list_in_any_case() {
        let config = parse(&["--name", "vm-1", "--systems", "vivo360,NOOP"]).expect("valid");
        assert_eq!(config.name.as_str(), "vm-1");
        assert_eq!(config.systems, [System::VIVO360, System::NOOP]);
        assert_eq!(config.http, None);
        assert_eq!(config.amqp_url, broker_config::amqp::DEFAULT_AMQP_URL);
        assert!(!config.no_declare, "bots declare their queue by default");
        let passive = parse(&["--name", "vm-1", "--systems", "noop", "--no-declare"]);
        assert!(passive.expect("valid").no_declare);
        assert_eq!(config.heartbeat_interval(), Duration::from_secs(5));
        assert_eq!(config.validate().map_err(|e| e.to_string()), Ok(()));
        let http = parse(&["--name", "vm-1", "--systems", "noop", "--http", "0.0.0.0:9001"])
            .expect("valid");
        assert_eq!(http.http.map(|a| a.port()), Some(9001));
    }

    #[test]
    fn refuses_bad_names_unknown_and_unavailable_systems() {
        let bad_name = parse(&["--name", "Bot 1", "--systems", "noop"]).expect_err("bad name");
        assert!(bad_name.to_string().contains("lowercase letters"), "{bad_name}");
        let bad_system = parse(&["--name", "b", "--systems", "noop,f@x"]).expect_err("f@x");
        assert!(bad_system.to_string().contains("'f@x' is not a system name"), "{bad_system}");
        let fax = parse(&["--name", "b", "--systems", "noop,fax"]).expect("any name parses");
        let unavailable = fax.validate().expect_err("no automation for FAX").to_string();
        assert!(unavailable.contains("no automation for FAX"), "{unavailable}");
        let notify = parse(&["--name", "b", "--systems", "notify"]).expect("NOTIFY runs");
        assert_eq!(notify.systems, [System::NOTIFY]);
        assert_eq!(notify.notify_url, DEFAULT_NOTIFY_URL);
        assert!(parse(&["--name", "b"]).is_err(), "systems are required");
    }

    #[test]
    fn programs_come_from_the_toml_file_and_the_flags_which_win() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("automations.toml");
        std::fs::write(
            &file,
            "[payroll]\ncommand = \"sh\"\nargs = [\"payroll.sh\"]\nenv = { ERP_URL = \"http://erp\" }\nmax_run_seconds = 600\ncancel_grace_seconds = 2\n\n[ROWS]\ncommand = \"true\"\n",
        )
        .expect("write");
        let file_arg = file.display().to_string();
        let config =
            parse(&["--name", "b", "--automations", &file_arg, "--automation", "rows=cat -"])
                .expect("no --systems needed with automations");
        let programs = config.programs().expect("readable, commands exist");
        let payroll = &programs[&System::new("PAYROLL").expect("name")];
        assert_eq!(
            (payroll.command.as_str(), payroll.args.as_slice()),
            ("sh", &["payroll.sh".to_owned()][..])
        );
        assert_eq!(payroll.env["ERP_URL"], "http://erp");
        assert_eq!(payroll.max_run_time, Some(Duration::from_secs(600)));
        assert_eq!(payroll.cancel_grace, Duration::from_secs(2));
        assert_eq!(programs[&System::new("ROWS").expect("name")].command, "cat", "the flag wins");

        std::fs::write(&file, "[payroll]\ncommand = \"sh\"\ncolour = \"red\"\n").expect("write");
        let unknown = config.programs().expect_err("unknown key").to_string();
        assert!(unknown.contains("colour") && unknown.contains("automations.toml"), "{unknown}");
        std::fs::write(&file, "[payroll]\ncommand = \"botline-no-such-program\"\n").expect("write");
        let missing = parse(&["--name", "b", "--automations", &file_arg]).expect("parses");
        let missing = missing.programs().expect_err("missing command").to_string();
        assert!(
            missing.contains("PAYROLL") && missing.contains("botline-no-such-program"),
            "{missing}"
        );
        assert!(parse(&["--name", "b", "--automation", "noequals"]).is_err());
    }

    #[test]
    fn amqps_flags_go_into_the_broker_url_and_debug_hides_the_passwords() {
        let config = parse(&[
            "--name",
            "b",
            "--systems",
            "noop",
            "--amqp-url",
            "amqps://bot-b:amqp-s3cret@rabbit:5671/%2f",
            "--amqp-ca-file",
            "/etc/botline/ca.pem",
            "--amqp-cert-file",
            "/etc/botline/bot.pem",
            "--amqp-key-file",
            "/etc/botline/bot-key.pem",
            "--vivo360-password",
            "portal-s3cret",
        ])
        .expect("valid");
        assert_eq!(
            config.broker_url(),
            "amqps://bot-b:amqp-s3cret@rabbit:5671/%2f?cacertfile=%2Fetc%2Fbotline%2Fca.pem\
             &certfile=%2Fetc%2Fbotline%2Fbot.pem&keyfile=%2Fetc%2Fbotline%2Fbot-key.pem"
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqps://bot-b:***@rabbit:5671/%2f"), "{shown}");
        let half = ["--name", "b", "--systems", "noop", "--amqp-cert-file", "/etc/bot.pem"];
        assert!(parse(&half).is_err(), "a client certificate needs its key");
    }

    #[test]
    fn the_api_token_comes_from_a_flag_or_a_file_and_is_never_shown() {
        let token = "bot-token-0123456789";
        let config =
            parse(&["--name", "b", "--systems", "noop", "--api-token", token]).expect("valid");
        assert_eq!(config.api_token, Some(ApiToken::new(token)));
        let header = config.api_token.as_ref().and_then(ApiToken::header).expect("a header");
        assert_eq!(header.to_str().ok(), Some("Bearer bot-token-0123456789"));
        assert!(header.is_sensitive());
        assert!(!format!("{config:?}").contains(token), "the token stays out of Debug");
        assert_eq!(ApiToken::new("two words").header(), None);
        assert_eq!(ApiToken::new("").header(), None);
        let file = parse(&["--name", "b", "--systems", "noop", "--api-token-file", "/run/t"])
            .expect("valid");
        assert_eq!(file.api_token_file, Some(PathBuf::from("/run/t")));
        let both = ["--api-token", token, "--api-token-file", "/run/t"];
        assert!(parse(&[&["--name", "b", "--systems", "noop"][..], &both[..]].concat()).is_err());
    }

    #[test]
    fn a_configuration_built_in_code_has_the_flags_defaults() {
        let parsed = parse(&["--name", "b", "--systems", "noop"]).expect("valid");
        let built = AgentConfig::new(
            BotName::parse("b").expect("valid"),
            vec![System::NOOP],
            broker_config::amqp::DEFAULT_AMQP_URL,
        );
        assert_eq!(built, parsed, "{built:#?}\n!=\n{parsed:#?}");
    }

    #[test]
    fn configurations_built_in_code_are_checked_too() {
        let name = BotName::parse("b").expect("valid");
        let notify = AgentConfig::new(name.clone(), vec![System::NOTIFY], "amqp://x");
        assert_eq!(notify.validate().map_err(|e| e.to_string()), Ok(()));
        let none = AgentConfig::new(name.clone(), vec![], "amqp://x");
        assert!(matches!(none.validate(), Err(AgentError::NoSystems)));
        let mut both = AgentConfig::new(name, vec![System::CPE], "amqp://x");
        both.equipment_insecure = true;
        both.equipment_ca = Some("ca.pem".into());
        assert!(matches!(both.validate(), Err(AgentError::Equipment(_))));
    }

    #[test]
    fn slots_default_to_one_and_range_from_one_to_the_most_a_bot_may_run() {
        let config = parse(&["--name", "b", "--systems", "noop"]).expect("valid");
        assert_eq!(config.slots, 1, "one task at a time unless told");
        let many = parse(&["--name", "b", "--systems", "noop", "--slots", "16"]).expect("valid");
        assert_eq!(many.slots, 16);
        assert_eq!(many.validate().map_err(|e| e.to_string()), Ok(()));
        let most = MAX_SLOTS.to_string();
        let most = parse(&["--name", "b", "--systems", "noop", "--slots", &most]).expect("valid");
        assert_eq!(most.slots, MAX_SLOTS);
        for bad in ["0", "10001", "-1", "many"] {
            let refused = parse(&["--name", "b", "--systems", "noop", "--slots", bad]);
            assert!(refused.is_err(), "--slots {bad} is refused");
        }

        let name = BotName::parse("b").expect("valid");
        let mut built = AgentConfig::new(name, vec![System::NOOP], "amqp://x");
        assert_eq!(built.slots, DEFAULT_SLOTS);
        for bad in [0, MAX_SLOTS + 1] {
            built.slots = bad;
            let refused = built.validate().expect_err("out of range");
            assert!(matches!(refused, AgentError::Slots(n) if n == bad), "{refused}");
            assert!(refused.to_string().contains("--slots"), "{refused}");
        }
    }

    #[test]
    fn events_are_batched_after_a_short_delay_unless_told_not_to() {
        let config = parse(&["--name", "b", "--systems", "noop"]).expect("valid");
        assert_eq!(config.event_batch_delay(), Duration::from_millis(2));
        assert!(!config.no_event_batches, "batches by default");
        let zero = ["--event-batch-delay-ms", "0", "--no-event-batches"];
        let zero =
            parse(&[&["--name", "b", "--systems", "noop"][..], &zero[..]].concat()).expect("valid");
        assert_eq!((zero.event_batch_delay(), zero.no_event_batches), (Duration::ZERO, true));
        let long = ["--event-batch-delay-ms", "1001"];
        assert!(parse(&[&["--name", "b", "--systems", "noop"][..], &long[..]].concat()).is_err());

        let name = BotName::parse("b").expect("valid");
        let mut built = AgentConfig::new(name, vec![System::NOOP], "amqp://x");
        assert_eq!(built.event_batch_delay_ms, DEFAULT_EVENT_BATCH_DELAY_MS);
        built.event_batch_delay_ms = MAX_EVENT_BATCH_DELAY_MS + 1;
        let refused = built.validate().expect_err("too long");
        assert!(refused.to_string().contains("--event-batch-delay-ms"), "{refused}");
    }

    #[test]
    fn the_equipment_service_is_https_by_default_with_a_ca_or_insecure() {
        let config = parse(&["--name", "b", "--systems", "cpe,noop"]).expect("valid");
        assert_eq!(config.systems, [System::CPE, System::NOOP]);
        assert_eq!(config.equipment_url, DEFAULT_EQUIPMENT_URL);
        assert_eq!((config.equipment_ca, config.equipment_insecure), (None, false));
        let ca = parse(&["--name", "b", "--systems", "cpe", "--equipment-ca", "/etc/ca.pem"])
            .expect("valid");
        assert_eq!(ca.equipment_ca, Some(PathBuf::from("/etc/ca.pem")));
        let insecure =
            parse(&["--name", "b", "--systems", "cpe", "--equipment-insecure"]).expect("valid");
        assert!(insecure.equipment_insecure);
        let both = ["--equipment-ca", "/etc/ca.pem", "--equipment-insecure"];
        assert!(parse(&[&["--name", "b", "--systems", "cpe"][..], &both[..]].concat()).is_err());
    }

    #[test]
    fn the_bot_waits_for_the_equipment_service_longer_than_a_device_takes_by_default() {
        let config = parse(&["--name", "b", "--systems", "cpe"]).expect("valid");
        assert_eq!(config.equipment_answer_timeout, DEFAULT_EQUIPMENT_ANSWER_TIMEOUT_SECS);
        assert!(config.equipment_answer_timeout > 60, "a real device takes about a minute");
        let short = parse(&["--name", "b", "--systems", "cpe", "--equipment-answer-timeout", "5"])
            .expect("valid");
        assert_eq!(short.equipment_answer_timeout, 5);
        let zero = ["--equipment-answer-timeout", "0"];
        assert!(parse(&[&["--name", "b", "--systems", "cpe"][..], &zero[..]].concat()).is_err());
    }
}
