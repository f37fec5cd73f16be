//! Broker least privilege: the RabbitMQ users Botline's programs connect as, what each may do,
//! and the check that an event comes from the bot it names.
//!
//! RabbitMQ grants a user, per vhost, three regular expressions over the names of exchanges and
//! queues (see <https://www.rabbitmq.com/docs/access-control>):
//! - configure: declare (not passively) and delete. Declaring a queue with a dead-letter exchange
//!   also needs write on that exchange and read on the queue.
//! - write: publish to an exchange; be the queue of a `queue.bind`.
//! - read: consume or get from a queue; be the exchange of a `queue.bind`.
//!
//! Passive declares, `confirm.select`, `basic.qos`, acks and nacks need no permission.
//!
//! The users, with what they may do and why:
//! - a bot, user [`bot_user`] (`bot-<name>`): configure nothing; write `botline.events` (its
//!   reports) and `botline.dlx` (its consumer dead-letters a malformed command with the reason,
//!   instead of retrying it forever); read its own queue `botline.bot.<name>` and nothing else.
//!   Its queue and binding come from the definitions [`UserPlan::to_definitions`] prints, and the
//!   agent only checks them ([`Topology::passive`]). Every event it publishes carries the AMQP
//!   `user-id` property, which RabbitMQ checks against the connection's user.
//! - the orchestrator: configure and bind the core topology ([`Topology::core`]); write
//!   `botline.tasks` (offers and cancellations), `botline.dlx` and the default exchange
//!   (`amq.default`: a message it will retry goes back to the end of its queue through it, with
//!   its failures counted); read its queues. It does not read the bots' queues.
//! - a publisher ([`publisher_permissions`]; `broker-config users --publisher NAME`): an
//!   attendance or monitoring platform. Configure and read nothing; write `botline.attendance`,
//!   `botline.monitoring` and `amq.topic`, the last only with the attendance routing keys
//!   ([`publisher_topic_permissions`]): that is where a STOMP producer's `/topic/attendance`
//!   lands, and the keys keep it from reaching anything else bound there.
//!
//! The orchestrator then checks each event's `user-id` against the bot the event names
//! ([`check_sender`]), so a bot cannot report for another.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lapin::uri::{AMQPUri, SASLMechanism};
use rand::Rng as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::BotName;
use crate::topology::{
    ATTENDANCE_EXCHANGE, DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, EVENTS_EXCHANGE,
    MONITORING_EXCHANGE, QueueType, STOMP_TOPIC_EXCHANGE, TASKS_EXCHANGE, Topology, bot_queue,
};

/// The prefix of a bot's broker user: bot `vm-1` connects as `bot-vm-1`. Reserved: no other user
/// may start with it.
pub const BOT_USER_PREFIX: &str = "bot-";

/// The broker user of the bot `name`: [`BOT_USER_PREFIX`] then the name.
pub fn bot_user(name: &BotName) -> String {
    format!("{BOT_USER_PREFIX}{name}")
}

/// A user's permissions on a vhost: three anchored regular expressions over resource names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Which exchanges and queues the user may declare and delete.
    pub configure: String,
    /// Which exchanges the user may publish to, and which queues it may bind.
    pub write: String,
    /// Which queues the user may consume from, and which exchanges it may bind queues to.
    pub read: String,
}

/// What the bot `name` may do: no configure, write the events and dead-letter exchanges, read its
/// own queue.
pub fn bot_permissions(name: &BotName) -> Permissions {
    Permissions {
        configure: only([]),
        write: only([EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE]),
        read: only([bot_queue(name).as_str()]),
    }
}

/// A user's topic permissions on one topic exchange (RabbitMQ's topic authorisation): anchored
/// regular expressions over the routing keys it may publish with, and bind or subscribe with.
/// Without any for an exchange, every routing key is allowed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermissions {
    /// The topic exchange they apply to.
    pub exchange: String,
    /// The routing keys the user may publish with.
    pub write: String,
    /// The routing keys the user may consume with (bind, subscribe).
    pub read: String,
}

/// The routing keys a publisher may use on [`STOMP_TOPIC_EXCHANGE`]: `attendance` and
/// `attendance.<words>`, what the ETL's binding there
/// ([`STOMP_ATTENDANCE_KEYS`](crate::topology::STOMP_ATTENDANCE_KEYS)) takes.
pub const PUBLISHER_TOPIC_KEYS: &str = r"^attendance(\..+)?$";

/// What a publisher (an attendance or monitoring platform) may do: configure nothing, read
/// nothing, write the attendance and monitoring exchanges, and `amq.topic`, where the STOMP
/// plugin publishes `/topic/…` destinations (limited to the attendance keys by
/// [`publisher_topic_permissions`]).
pub fn publisher_permissions() -> Permissions {
    Permissions {
        configure: only([]),
        write: only([ATTENDANCE_EXCHANGE, MONITORING_EXCHANGE, STOMP_TOPIC_EXCHANGE]),
        read: only([]),
    }
}

/// A publisher's topic permissions: on `amq.topic`, only [`PUBLISHER_TOPIC_KEYS`], and no key to
/// subscribe with. `amq.topic` is shared (MQTT and other STOMP clients use it too), so a
/// publisher may write there only what reaches the ETL.
pub fn publisher_topic_permissions() -> Vec<TopicPermissions> {
    vec![TopicPermissions {
        exchange: STOMP_TOPIC_EXCHANGE.to_owned(),
        write: PUBLISHER_TOPIC_KEYS.to_owned(),
        read: only([]),
    }]
}

/// The default exchange's name in permissions: publishing with the exchange `""` needs write on
/// `amq.default`.
pub const DEFAULT_EXCHANGE: &str = "amq.default";

/// What the orchestrator may do: declare and bind the core topology (computed from
/// [`Topology::core`], so the two never drift), publish offers, dead letters and retried copies
/// of what its consumers failed to handle, read its queues.
pub fn orchestrator_permissions() -> Permissions {
    let core = Topology::core();
    let mut configure = BTreeSet::new();
    // The default exchange (`amq.default` to permissions): a consumer puts a message it will
    // retry back at the end of its queue through it ([`crate::amqp::Decision::Retry`]).
    let mut write = BTreeSet::from([TASKS_EXCHANGE, DEAD_LETTER_EXCHANGE, DEFAULT_EXCHANGE]);
    let mut read = BTreeSet::new();
    for exchange in &core.exchanges {
        configure.insert(exchange.name.as_str());
    }
    for queue in &core.queues {
        configure.insert(queue.name.as_str());
        if queue.dead_letters {
            // Declaring a queue with a dead-letter exchange: write on it, read on the queue (the
            // orchestrator consumes each of these queues anyway).
            write.insert(DEAD_LETTER_EXCHANGE);
            read.insert(queue.name.as_str());
        }
    }
    for binding in &core.bindings {
        write.insert(binding.queue.as_str());
        read.insert(binding.exchange.as_str());
    }
    // The dashboard's dead letters: read, replayed and discarded over AMQP
    // ([`crate::dead_letters`]).
    read.insert(DEAD_LETTER_QUEUE);
    Permissions { configure: only(configure), write: only(write), read: only(read) }
}

/// An anchored regular expression matching exactly `names` (`^$`, matching no resource, when
/// there are none).
fn only<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<String> = names.into_iter().map(escape).collect();
    names.sort();
    names.dedup();
    match names.as_slice() {
        [] => "^$".to_owned(),
        [one] => format!("^{one}$"),
        many => format!("^({})$", many.join("|")),
    }
}

/// `name` with every regular expression metacharacter escaped.
fn escape(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Which events the orchestrator accepts, by the AMQP user that published them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SenderPolicy {
    /// Any event, whoever published it: for development, where every program connects as the
    /// same user (guest).
    #[default]
    Open,
    /// Only events whose `user-id` is the broker user of the bot they name ([`bot_user`]): with
    /// the users of `broker-config users`.
    Strict,
}

impl fmt::Display for SenderPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SenderPolicy::Open => "open",
            SenderPolicy::Strict => "strict",
        })
    }
}

impl std::str::FromStr for SenderPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<SenderPolicy, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(SenderPolicy::Open),
            "strict" => Ok(SenderPolicy::Strict),
            _ => Err(format!("unknown event sender policy '{text}': open or strict")),
        }
    }
}

/// Why an event's sender was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SenderRefused {
    /// The event has no `user-id`.
    #[error(
        "an event for bot {bot} has no user-id: bots must publish as their own broker user ({expected})"
    )]
    Anonymous {
        /// The bot the event names.
        bot: BotName,
        /// The user it should have come from.
        expected: String,
    },
    /// The event was published by another user.
    #[error("an event for bot {bot} was published by broker user '{user_id}', not {expected}")]
    Impostor {
        /// The bot the event names.
        bot: BotName,
        /// The user that published it (RabbitMQ checked it is the connection's).
        user_id: String,
        /// The user it should have come from.
        expected: String,
    },
}

/// Whether an event naming `bot`, published with the AMQP `user-id` `user_id`, may be applied
/// under `policy`. RabbitMQ refuses a publish whose `user-id` is not the connection's user, so a
/// `user-id` here is who really published.
pub fn check_sender(
    user_id: Option<&str>,
    bot: &BotName,
    policy: SenderPolicy,
) -> Result<(), SenderRefused> {
    if policy == SenderPolicy::Open {
        return Ok(());
    }
    let expected = bot_user(bot);
    match user_id {
        Some(user) if user == expected => Ok(()),
        Some(user) => {
            Err(SenderRefused::Impostor { bot: bot.clone(), user_id: user.to_owned(), expected })
        }
        None => Err(SenderRefused::Anonymous { bot: bot.clone(), expected }),
    }
}

/// The user a connection to `url` logs in as, to set as the `user-id` of what it publishes; `None`
/// when the URL does not parse or the user comes from elsewhere (EXTERNAL: a TLS client
/// certificate; ANONYMOUS).
pub fn url_user(url: &str) -> Option<String> {
    let uri: AMQPUri = url.parse().ok()?;
    match uri.query.auth_mechanism.unwrap_or_default() {
        SASLMechanism::Plain | SASLMechanism::AMQPlain | SASLMechanism::RabbitCrDemo => {
            Some(uri.authority.userinfo.username)
        }
        SASLMechanism::External | SASLMechanism::Anonymous => None,
    }
}

/// The name of RabbitMQ's password hashing algorithm used by [`password_hash`].
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// `password` hashed the way RabbitMQ stores it: base64 of the 4-byte salt followed by
/// SHA-256(salt ++ password).
pub fn password_hash(password: &str, salt: [u8; 4]) -> String {
    let digest = Sha256::new().chain_update(salt).chain_update(password.as_bytes()).finalize();
    let mut salted = salt.to_vec();
    salted.extend_from_slice(&digest);
    BASE64.encode(salted)
}

/// Whether `hash` (as [`password_hash`] makes it) is the hash of `password`.
pub fn password_matches(hash: &str, password: &str) -> bool {
    let Ok(bytes) = BASE64.decode(hash) else { return false };
    let Some((salt, _)) = bytes.split_first_chunk::<4>() else { return false };
    password_hash(password, *salt) == hash
}

/// A random password: 32 letters and digits (190 bits), safe in a URL without escaping.
pub fn generate_password() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

/// A broker user and its password. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
    generated: bool,
}

impl Credentials {
    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password, to hand to whoever runs the program (never to a log).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Whether the password was generated here (rather than given).
    pub fn generated(&self) -> bool {
        self.generated
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .field("generated", &self.generated)
            .finish()
    }
}

/// Why users cannot be defined as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// A user name (the orchestrator's, a publisher's) is not acceptable.
    #[error("{role} user name '{name}': {reason}")]
    UserName {
        /// Whose name it is: `orchestrator` or `publisher`.
        role: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same bot was given twice.
    #[error("bot {0} is given twice")]
    DuplicateBot(BotName),
    /// The same user name was given twice (two publishers, or a publisher and the orchestrator).
    #[error("user '{0}' is given twice")]
    DuplicateUser(String),
    /// A line of the passwords file is malformed (the line is not repeated: it may hold a
    /// password).
    #[error("passwords file, line {line}: {reason}")]
    PasswordsLine {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The passwords file names a user that is not being defined.
    #[error(
        "passwords file names user '{0}', which is neither the orchestrator's nor a given publisher's or bot's"
    )]
    UnknownUser(String),
}

/// Reads a passwords file: one `user:password` per line (split at the first `:`), blank lines
/// and lines starting with `#` ignored. The format `broker-config users` prints generated
/// passwords in, so its output can be kept for the next run.
pub fn parse_passwords(text: &str) -> Result<BTreeMap<String, String>, AccessError> {
    let mut passwords = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let bad =
            |reason: &str| AccessError::PasswordsLine { line: index + 1, reason: reason.into() };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            return Err(bad("expected user:password"));
        };
        if user.is_empty() || password.is_empty() {
            return Err(bad("expected user:password, neither empty"));
        }
        if passwords.insert(user.to_owned(), password.to_owned()).is_some() {
            return Err(bad(&format!("user '{user}' appears twice")));
        }
    }
    Ok(passwords)
}

/// The broker users of one deployment: the orchestrator's, the publishers' and one per bot, with
/// their passwords.
#[derive(Debug, Clone)]
pub struct UserPlan {
    orchestrator: Credentials,
    publishers: Vec<Credentials>,
    bots: Vec<(BotName, Credentials)>,
    queue_type: QueueType,
}

impl UserPlan {
    /// Users for an orchestrator named `orchestrator` and for `bots`, with the passwords of
    /// `given` (user → password) and random ones for the others. Refuses an orchestrator name
    /// that is empty, longer than 64, made of other than letters, digits, `-`, `_` and `.`, or
    /// starting with [`BOT_USER_PREFIX`] (it could then pass for a bot); a bot given twice; and
    /// a password for a user that is not defined here.
    pub fn new(
        orchestrator: &str,
        bots: &[BotName],
        given: BTreeMap<String, String>,
    ) -> Result<UserPlan, AccessError> {
        UserPlan::with_publishers(orchestrator, &[], bots, given)
    }

    /// As [`UserPlan::new`], with a publisher user for each of `publishers` (an attendance or
    /// monitoring platform: [`publisher_permissions`]). A publisher's name follows the
    /// orchestrator's rules, and no name may be given twice.
    pub fn with_publishers(
        orchestrator: &str,
        publishers: &[String],
        bots: &[BotName],
        mut given: BTreeMap<String, String>,
    ) -> Result<UserPlan, AccessError> {
        check_user_name("orchestrator", orchestrator)?;
        let mut names = BTreeSet::from([orchestrator]);
        for publisher in publishers {
            check_user_name("publisher", publisher)?;
            if !names.insert(publisher.as_str()) {
                return Err(AccessError::DuplicateUser(publisher.clone()));
            }
        }
        let mut seen = BTreeSet::new();
        if let Some(twice) = bots.iter().find(|bot| !seen.insert(*bot)) {
            return Err(AccessError::DuplicateBot((*twice).clone()));
        }
        let mut credentials = |user: String| {
            let (password, generated) = match given.remove(&user) {
                Some(password) => (password, false),
                None => (generate_password(), true),
            };
            Credentials { user, password, generated }
        };
        let plan = UserPlan {
            orchestrator: credentials(orchestrator.to_owned()),
            publishers: publishers.iter().map(|p| credentials(p.clone())).collect(),
            bots: bots.iter().map(|bot| (bot.clone(), credentials(bot_user(bot)))).collect(),
            queue_type: QueueType::Classic,
        };
        if let Some(unknown) = given.into_keys().next() {
            return Err(AccessError::UnknownUser(unknown));
        }
        Ok(plan)
    }

    /// The same plan, defining queues of type `queue_type`.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> UserPlan {
        self.queue_type = queue_type;
        self
    }

    /// The orchestrator's user.
    pub fn orchestrator(&self) -> &Credentials {
        &self.orchestrator
    }

    /// The bots and their users, in the order given.
    pub fn bots(&self) -> &[(BotName, Credentials)] {
        &self.bots
    }

    /// The publishers' users, in the order given.
    pub fn publishers(&self) -> &[Credentials] {
        &self.publishers
    }

    /// Every user with its permissions: the orchestrator first, then the bots, then the
    /// publishers.
    pub fn users(&self) -> Vec<(&Credentials, Permissions)> {
        std::iter::once((&self.orchestrator, orchestrator_permissions()))
            .chain(self.bots.iter().map(|(bot, credentials)| (credentials, bot_permissions(bot))))
            .chain(self.publishers.iter().map(|credentials| (credentials, publisher_permissions())))
            .collect()
    }

    /// A RabbitMQ definitions file for `vhost`: the core topology, each bot's queue and binding
    /// (so a bot needs no configure permission), the users with their password hashes (freshly
    /// salted: two runs differ, both valid) and their permissions. Import it with
    /// `rabbitmqctl import_definitions FILE`, the management UI, or `load_definitions`.
    pub fn to_definitions(&self, vhost: &str) -> Value {
        let core = Topology::core().with_queue_type(self.queue_type);
        let topology = self.bots.iter().fold(core, |t, (bot, _)| t.merge(Topology::bot(bot)));
        let mut definitions = topology.to_definitions(vhost);
        let users = self.users();
        definitions["users"] = users
            .iter()
            .map(|(credentials, _)| {
                json!({
                    "name": credentials.user,
                    "password_hash": password_hash(&credentials.password, rand::rng().random()),
                    "hashing_algorithm": HASHING_ALGORITHM,
                    "tags": [],
                    "limits": {},
                })
            })
            .collect();
        definitions["permissions"] = users
            .iter()
            .map(|(credentials, permissions)| {
                json!({
                    "user": credentials.user,
                    "vhost": vhost,
                    "configure": permissions.configure,
                    "write": permissions.write,
                    "read": permissions.read,
                })
            })
            .collect();
        definitions["topic_permissions"] = self
            .publishers
            .iter()
            .flat_map(|credentials| {
                publisher_topic_permissions().into_iter().map(|topic| {
                    json!({
                        "user": credentials.user,
                        "vhost": vhost,
                        "exchange": topic.exchange,
                        "write": topic.write,
                        "read": topic.read,
                    })
                })
            })
            .collect();
        definitions
    }
}

fn check_user_name(role: &'static str, name: &str) -> Result<(), AccessError> {
    let refuse =
        |reason: &str| AccessError::UserName { role, name: name.into(), reason: reason.into() };
    if name.is_empty() || name.len() > 64 {
        return Err(refuse("must be 1 to 64 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(refuse("may only hold letters, digits, '-', '_' and '.'"));
    }
    if name.starts_with(BOT_USER_PREFIX) {
        return Err(refuse(&format!("'{BOT_USER_PREFIX}' starts the names of bot users")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot(name: &str) -> BotName {
        BotName::parse(name).expect("valid bot name")
    }

    #[test]
    fn a_bot_configures_nothing_writes_events_and_reads_only_its_queue() {
        let permissions = bot_permissions(&bot("vm-1"));
        assert_eq!(
            permissions,
            Permissions {
                configure: "^$".into(),
                write: r"^(botline\.dlx|botline\.events)$".into(),
                read: r"^botline\.bot\.vm-1$".into(),
            }
        );
        assert_eq!(bot_user(&bot("vm-1")), "bot-vm-1");
    }

    #[test]
    fn the_orchestrator_gets_the_core_topology_and_not_the_bots_queues() {
        let permissions = orchestrator_permissions();
        assert_eq!(
            permissions.configure,
            r"^(botline\.attendance|botline\.attendance\.etl|botline\.dead|botline\.dlx|botline\.events|botline\.monitoring|botline\.monitoring\.incidents|botline\.orchestrator\.events|botline\.tasks)$"
        );
        assert_eq!(
            permissions.write,
            r"^(amq\.default|botline\.attendance\.etl|botline\.dead|botline\.dlx|botline\.monitoring\.incidents|botline\.orchestrator\.events|botline\.tasks)$",
            "amq.default: retried messages go back to their queue through the default exchange"
        );
        assert_eq!(
            permissions.read,
            r"^(amq\.topic|botline\.attendance|botline\.attendance\.etl|botline\.dead|botline\.dlx|botline\.events|botline\.monitoring|botline\.monitoring\.incidents|botline\.orchestrator\.events)$",
            "read on amq.topic: binding the ETL's queue there (for STOMP producers) needs it; on botline.dead: the dashboard's dead letters"
        );
        assert!(!permissions.read.contains("bot\\."), "no bot queue: {}", permissions.read);
        assert!(!permissions.configure.contains("amq"), "amq.topic is RabbitMQ's, not declared");
        assert!(!permissions.write.contains("amq\\.topic"), "{}", permissions.write);
    }

    #[test]
    fn a_publisher_writes_only_the_attendance_and_monitoring_exchanges() {
        assert_eq!(
            publisher_permissions(),
            Permissions {
                configure: "^$".into(),
                write: r"^(amq\.topic|botline\.attendance|botline\.monitoring)$".into(),
                read: "^$".into(),
            }
        );
        assert_eq!(
            publisher_topic_permissions(),
            [TopicPermissions {
                exchange: "amq.topic".into(),
                write: r"^attendance(\..+)?$".into(),
                read: "^$".into(),
            }],
            "on the shared amq.topic, only the keys the ETL is bound with"
        );
    }

    #[test]
    fn publishers_get_users_and_topic_permissions_and_names_are_checked() {
        let given = BTreeMap::from([("platform".to_owned(), "p-pass".to_owned())]);
        let publishers = ["platform".to_owned(), "monitor".to_owned()];
        let plan = UserPlan::with_publishers("orchestrator", &publishers, &[bot("vm-1")], given)
            .expect("valid");
        let users: Vec<(&str, bool)> =
            plan.users().iter().map(|(c, _)| (c.user(), c.generated())).collect();
        assert_eq!(
            users,
            [("orchestrator", true), ("bot-vm-1", true), ("platform", false), ("monitor", true)]
        );
        let definitions = plan.to_definitions("/");
        let permissions = definitions["permissions"].as_array().expect("permissions");
        assert_eq!(permissions[2]["user"], "platform");
        assert_eq!(
            permissions[2]["write"],
            r"^(amq\.topic|botline\.attendance|botline\.monitoring)$"
        );
        assert_eq!(permissions[2]["configure"], "^$");
        assert_eq!(permissions[2]["read"], "^$");
        let topic = definitions["topic_permissions"].as_array().expect("topic permissions");
        assert_eq!(topic.len(), 2, "one per publisher: {topic:?}");
        assert_eq!(
            topic[0],
            json!({"user": "platform", "vhost": "/", "exchange": "amq.topic",
                "write": r"^attendance(\..+)?$", "read": "^$"})
        );
        assert!(!definitions.to_string().contains("p-pass"));

        let refused = |publishers: &[&str]| {
            let publishers: Vec<String> = publishers.iter().map(|p| (*p).to_owned()).collect();
            UserPlan::with_publishers("orchestrator", &publishers, &[], BTreeMap::new())
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            refused(&["bot-x"]),
            "publisher user name 'bot-x': 'bot-' starts the names of bot users"
        );
        assert_eq!(refused(&["orchestrator"]), "user 'orchestrator' is given twice");
        assert_eq!(refused(&["p", "p"]), "user 'p' is given twice");
        assert!(refused(&["a b"]).contains("may only hold"));
        let none = UserPlan::new("orchestrator", &[], BTreeMap::new()).expect("valid");
        assert_eq!(none.to_definitions("/")["topic_permissions"], json!([]));
    }

    #[test]
    fn names_are_escaped_so_a_dot_matches_only_a_dot() {
        assert_eq!(escape("a.b*c"), r"a\.b\*c");
        assert_eq!(only(["b", "a", "b"]), "^(a|b)$");
        assert_eq!(only([]), "^$");
    }

    #[test]
    fn the_strict_policy_wants_the_named_bots_own_user() {
        let vm1 = bot("vm-1");
        assert_eq!(check_sender(Some("bot-vm-1"), &vm1, SenderPolicy::Strict), Ok(()));
        let impostor = check_sender(Some("bot-vm-2"), &vm1, SenderPolicy::Strict)
            .expect_err("another bot's user");
        assert_eq!(
            impostor.to_string(),
            "an event for bot vm-1 was published by broker user 'bot-vm-2', not bot-vm-1"
        );
        assert!(matches!(
            check_sender(Some("vm-1"), &vm1, SenderPolicy::Strict),
            Err(SenderRefused::Impostor { .. })
        ));
        assert!(matches!(
            check_sender(Some("orchestrator"), &vm1, SenderPolicy::Strict),
            Err(SenderRefused::Impostor { .. })
        ));
        let anonymous = check_sender(None, &vm1, SenderPolicy::Strict).expect_err("no user-id");
        assert!(anonymous.to_string().contains("has no user-id"), "{anonymous}");
    }

    #[test]
    fn the_open_policy_accepts_anyone() {
        let vm1 = bot("vm-1");
        assert_eq!(check_sender(None, &vm1, SenderPolicy::Open), Ok(()));
        assert_eq!(check_sender(Some("guest"), &vm1, SenderPolicy::Open), Ok(()));
        assert_eq!(SenderPolicy::default(), SenderPolicy::Open);
        assert_eq!("STRICT".parse(), Ok(SenderPolicy::Strict));
        assert_eq!(SenderPolicy::Strict.to_string(), "strict");
        assert!("lenient".parse::<SenderPolicy>().is_err());
    }

    #[test]
    fn the_user_id_is_the_urls_user_unless_authentication_is_external() {
        assert_eq!(url_user("amqp://bot-a:secret@rabbit:5672/%2f").as_deref(), Some("bot-a"));
        assert_eq!(url_user("amqp://bot%2Da:x@rabbit/%2f").as_deref(), Some("bot-a"));
        assert_eq!(url_user("amqp://rabbit/%2f").as_deref(), Some("guest"), "lapin's default");
        assert_eq!(url_user("amqps://rabbit/%2f?auth_mechanism=external"), None);
        assert_eq!(url_user("not a url"), None);
    }

    #[test]
    fn password_hashes_are_rabbitmqs() {
        // RabbitMQ 3.10's stored hash of the password "guest" (GET /api/users/guest).
        let rabbitmq = "3CZfbFn3VuL66FNjqiGjhnmBa+0JtQktV5KOKvTpk2exSyZL";
        assert!(password_matches(rabbitmq, "guest"));
        assert!(!password_matches(rabbitmq, "Guest"));
        assert!(!password_matches("not base64!", "guest"));
        assert!(!password_matches("AAA=", "guest"), "too short for a salt");
        let hash = password_hash("s3cret", [1, 2, 3, 4]);
        assert!(password_matches(&hash, "s3cret"));
        assert_ne!(hash, password_hash("s3cret", [4, 3, 2, 1]), "salted");
    }

    #[test]
    fn generated_passwords_are_long_random_and_url_safe() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn passwords_files_are_parsed_and_bad_lines_are_refused_without_echo() {
        let text = "# kept from the last run\n\nbot-a:pa:ss\n orchestrator:o \n";
        let passwords = parse_passwords(text).expect("valid");
        assert_eq!(passwords["bot-a"], "pa:ss", "split at the first colon");
        assert_eq!(passwords["orchestrator"], "o");
        let missing = parse_passwords("ok:1\nhunter2\n").expect_err("no colon");
        assert_eq!(missing.to_string(), "passwords file, line 2: expected user:password");
        assert!(!missing.to_string().contains("hunter2"));
        assert!(parse_passwords("a:\n").is_err());
        assert!(parse_passwords(":x\n").is_err());
        assert!(parse_passwords("a:1\na:2\n").is_err());
    }

    #[test]
    fn a_plan_gives_or_generates_every_password_and_refuses_bad_requests() {
        let given = BTreeMap::from([("bot-a".to_owned(), "given".to_owned())]);
        let plan = UserPlan::new("orchestrator", &[bot("a"), bot("b")], given).expect("valid");
        let users: Vec<(&str, bool)> =
            plan.users().iter().map(|(c, _)| (c.user(), c.generated())).collect();
        assert_eq!(users, [("orchestrator", true), ("bot-a", false), ("bot-b", true)]);
        assert_eq!(plan.bots()[0].1.password(), "given");
        assert!(!format!("{plan:?}").contains("given"), "Debug hides passwords");

        let refused = |orchestrator: &str, bots: &[BotName], given: &[(&str, &str)]| {
            let given = given.iter().map(|(u, p)| ((*u).to_owned(), (*p).to_owned())).collect();
            UserPlan::new(orchestrator, bots, given).expect_err("refused").to_string()
        };
        assert!(refused("bot-x", &[], &[]).contains("starts the names of bot users"));
        assert!(refused("", &[], &[]).contains("1 to 64"));
        assert!(refused("a:b", &[], &[]).contains("may only hold"));
        assert_eq!(refused("o", &[bot("a"), bot("a")], &[]), "bot a is given twice");
        assert!(refused("o", &[bot("a")], &[("bot-z", "p")]).contains("'bot-z'"));
    }

    #[test]
    fn definitions_hold_the_topology_users_and_permissions() {
        let given = BTreeMap::from([("orchestrator".to_owned(), "o-pass".to_owned())]);
        let plan = UserPlan::new("orchestrator", &[bot("vm-1")], given).expect("valid");
        let definitions = plan.to_definitions("prod");
        let queues: Vec<&str> = definitions["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .filter_map(|q| q["name"].as_str())
            .collect();
        assert!(queues.contains(&"botline.bot.vm-1"), "{queues:?}");
        assert!(queues.contains(&"botline.orchestrator.events"), "{queues:?}");
        let users = definitions["users"].as_array().expect("users");
        assert_eq!(users.len(), 2);
        assert_eq!(users[0]["name"], "orchestrator");
        assert_eq!(users[0]["hashing_algorithm"], HASHING_ALGORITHM);
        let hash = users[0]["password_hash"].as_str().expect("hash");
        assert!(password_matches(hash, "o-pass"));
        let text = definitions.to_string();
        assert!(!text.contains("o-pass"), "no clear password in the definitions");
        assert!(!text.contains(plan.bots()[0].1.password()));
        let permissions = definitions["permissions"].as_array().expect("permissions");
        assert_eq!(permissions[1]["user"], "bot-vm-1");
        assert_eq!(permissions[1]["vhost"], "prod");
        assert_eq!(permissions[1]["configure"], "^$");
        assert_eq!(permissions[1]["read"], r"^botline\.bot\.vm-1$");
    }
}
