//! The broker pipeline: the dispatcher offers due tasks to free bots, the event consumer applies
//! what bots report (and offers the bots it frees their next tasks in the same transaction), and two sweeps catch what nobody reported (expired offers, silent bots).
//!
//! - [`rules`]: the decisions, pure and unit-tested (pairing, fencing, backoff, liveness).
//! - [`dispatcher`]: one dispatch pass ([`Pipeline::dispatch_due_tasks`]), the sweeps and the
//!   loop that runs them when woken and on a period.
//! - [`events`]: [`Pipeline::handle_events`], shared by the AMQP consumer and the REST API (bots in
//!   HTTP push mode report through it), and the consumer loop.

use std::sync::Arc;
use std::time::Duration;

use broker_config::access::SenderPolicy;
use broker_config::amqp::Publisher;
use broker_config::messages::{self, Command};
use broker_config::topology::{QueueType, TASKS_EXCHANGE};
use broker_config::{Delivery, TaskRef, Topology};
use sea_orm::{DatabaseConnection, DatabaseTransaction, EntityTrait as _};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::changes::Changes;
use crate::entity::bot;
use crate::error::ApiError;
use crate::incidents::{IncidentSettings, Incidents};

pub mod dispatcher;
pub mod events;
pub mod rules;
pub mod storable;

/// Why one POST to a bot did not get an answer.
enum PostError {
    /// The connection was refused (the bot may not listen yet): worth a quick retry.
    Refused(String),
    /// Anything else: no retry.
    Failed(String),
}

/// Timings of the task life (the defaults of the flags, `crate::defaults`; tests shorten them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a bot has to answer an offer.
    pub offer_timeout: Duration,
    /// How often the dispatcher runs without being woken, and the sweeps run.
    pub sweep_interval: Duration,
    /// How often bots heartbeat.
    pub heartbeat_interval: Duration,
    /// Heartbeats a bot may miss before it is lost.
    pub missed_heartbeats: u32,
    /// The wait after a task's first failure; doubles with each failure.
    pub retry_base: Duration,
    /// The longest wait between retries.
    pub retry_cap: Duration,
    /// Events the broker may send ahead of their acks.
    pub events_prefetch: u16,
    /// How many times a consumed message (event, monitoring report, attendance record) may fail
    /// internally before it is dead-lettered with the last error.
    pub max_message_failures: u32,
    /// The incident engine's timer and quiet period.
    pub incidents: IncidentSettings,
    /// Whose events are accepted (by the AMQP user that published them).
    pub event_senders: SenderPolicy,
    /// The type of the queues declared.
    pub queue_type: QueueType,
    /// Offers of one task that may go unanswered before it ends FAILED.
    pub max_unanswered_offers: u32,
    /// How long a run may last when its task does not say.
    pub max_run_time: Duration,
    /// How long an HTTP bot has to answer the POST of a command.
    pub bot_post_timeout: Duration,
    /// The networks HTTP bots may be in; empty: anywhere.
    pub http_bot_networks: Vec<ipnet::IpNet>,
    /// The largest event applied, in bytes; a larger one is dead-lettered (and the attempt it
    /// reports on fails).
    pub max_event_bytes: usize,
    /// The keys that sign what is POSTed to each HTTP bot that has a token, by bot name.
    pub push_keys: std::collections::HashMap<String, broker_config::push::PushKey>,
    /// The client for HTTPS bots (`tls: true`), with the trust `--bot-ca-file` gives.
    pub https: Option<broker_config::https::HttpsClient>,
}

impl Settings {
    /// Whether an HTTP bot at `ip` may be registered and contacted.
    pub fn http_bot_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.http_bot_networks.is_empty()
            || self.http_bot_networks.iter().any(|net| net.contains(&ip))
    }
}

impl Settings {
    /// The core topology, with queues of the configured type.
    pub fn topology(&self) -> Topology {
        Topology::core().with_queue_type(self.queue_type)
    }
}

impl Default for Settings {
    fn default() -> Settings {
        use crate::defaults;
        Settings {
            offer_timeout: defaults::OFFER_TIMEOUT,
            sweep_interval: defaults::SWEEP_INTERVAL,
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            missed_heartbeats: 3,
            retry_base: defaults::RETRY_BASE,
            retry_cap: Duration::from_secs(300),
            events_prefetch: 64,
            max_message_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
            incidents: IncidentSettings::default(),
            event_senders: SenderPolicy::default(),
            queue_type: QueueType::default(),
            max_unanswered_offers: defaults::MAX_UNANSWERED_OFFERS,
            max_run_time: defaults::MAX_RUN_TIME,
            bot_post_timeout: defaults::BOT_POST_TIMEOUT,
            http_bot_networks: Vec::new(),
            max_event_bytes: usize::try_from(defaults::MAX_EVENT_BYTES).unwrap_or(usize::MAX),
            push_keys: Default::default(),
            https: None,
        }
    }
}

/// The pipeline's shared parts.
pub struct Pipeline {
    pub(crate) db: DatabaseConnection,
    pub(crate) publisher: Publisher,
    pub(crate) http: reqwest::Client,
    pub(crate) settings: Settings,
    /// Notices of committed changes, for live views.
    pub changes: Changes,
    /// The incident engine (its communications are tasks of this pipeline).
    pub incidents: Incidents,
    wake: Arc<Notify>,
    /// This pipeline, for the deliveries to HTTP bots it hands to tasks of their own (a bot that
    /// answers slowly must not hold up a batch of events or an API request).
    me: std::sync::Weak<Pipeline>,
    /// The attempts bots were told to stop, so each is told once (a bot that keeps reporting on
    /// a cancelled attempt is not sent a stop, and its report not recorded, for every report).
    told_to_stop: std::sync::Mutex<std::collections::HashSet<TaskRef>>,
    /// For each bot whose heartbeats do not mention tasks it runs by our records: those tasks,
    /// and since when (the reconciliation's grace period runs from there).
    unmentioned: std::sync::Mutex<
        std::collections::HashMap<
            Uuid,
            std::collections::HashMap<Uuid, chrono::DateTime<chrono::Utc>>,
        >,
    >,
    /// When this pipeline started: the sweeps judge nobody by what happened before it (what bots
    /// reported while no orchestrator ran is still queued, unread).
    started: chrono::DateTime<chrono::Utc>,
    /// Whether the event consumer hears the events queue, and since when: while it does not
    /// (the broker restarting, this orchestrator starting), bots' answers and heartbeats wait in
    /// the queue, so the sweeps do not take their silence for one.
    hearing: broker_config::amqp::Hearing,
}

impl Pipeline {
    /// A pipeline over `db`, publishing with `publisher`.
    pub fn new(db: DatabaseConnection, publisher: Publisher, settings: Settings) -> Arc<Pipeline> {
        // No redirect is followed and no proxy used: a bot (or whatever answers on its address)
        // could otherwise send the orchestrator's POST outside --http-bot-networks.
        let http = reqwest::Client::builder()
            .timeout(settings.bot_post_timeout)
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let changes = Changes::default();
        let wake = Arc::new(Notify::new());
        let incidents =
            Incidents::new(db.clone(), changes.clone(), wake.clone(), settings.incidents.clone());
        let started = crate::clock::now();
        Arc::new_cyclic(|me| Pipeline {
            me: me.clone(),
            db,
            publisher,
            http,
            settings,
            changes,
            incidents,
            wake,
            told_to_stop: Default::default(),
            unmentioned: Default::default(),
            started,
            hearing: broker_config::amqp::Hearing::since(started),
        })
    }

    /// Whether the event consumer hears the events queue, and since when.
    pub fn hearing(&self) -> &broker_config::amqp::Hearing {
        &self.hearing
    }

    /// Asks the dispatcher to run now (a task was created, a bot became free or came online).
    /// Wakes are coalesced: many calls before the dispatcher runs make one pass.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Begins a transaction of the pipeline's own (dispatch, events, sweeps). On PostgreSQL it
    /// first takes a transaction-scoped advisory lock, so those transactions, in this process and
    /// in any other orchestrator on the same database, run one at a time: a batch of events and
    /// a dispatch pass both update several bot and task rows, and in no common order, which
    /// deadlocked. SQLite has a single writer anyway.
    pub(crate) async fn begin(&self) -> Result<DatabaseTransaction, ApiError> {
        crate::store::begin_in_line(&self.db).await
    }

    /// Whether the broker connection is up (for `/readyz`).
    pub async fn broker_ready(&self) -> bool {
        self.publisher.is_connected().await || self.publisher.connect().await.is_ok()
    }

    /// Whether `task` is an attempt no bot was told to stop yet; notes that one is now. The set
    /// is forgotten past 100,000 attempts (it only saves repeats: a repeat is harmless).
    pub(crate) fn first_stop(&self, task: TaskRef) -> bool {
        let Ok(mut told) = self.told_to_stop.lock() else {
            return true;
        };
        if told.len() >= 100_000 {
            told.clear();
        }
        told.insert(task)
    }

    /// Since when `bot`'s heartbeats have not mentioned each of `tasks`, tasks it runs by our
    /// records: now, the first time. Tasks not in `tasks` are forgotten (the bot mentions them
    /// again, or they left it); an empty `tasks` forgets the bot.
    pub(crate) fn unmentioned_since(
        &self,
        bot: Uuid,
        tasks: &[Uuid],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<(Uuid, chrono::DateTime<chrono::Utc>)> {
        let Ok(mut map) = self.unmentioned.lock() else {
            return tasks.iter().map(|task| (*task, now)).collect();
        };
        if tasks.is_empty() {
            map.remove(&bot);
            return Vec::new();
        }
        let seen = map.entry(bot).or_default();
        seen.retain(|task, _| tasks.contains(task));
        tasks.iter().map(|task| (*task, *seen.entry(*task).or_insert(now))).collect()
    }

    /// Whether a bot was told to stop `task` already.
    pub(crate) fn was_told_to_stop(&self, task: TaskRef) -> bool {
        self.told_to_stop.lock().is_ok_and(|told| told.contains(&task))
    }

    /// Sends `command` to a bot, through its queue or its HTTP endpoint. Best effort: a bot that
    /// misses a command is fenced by attempt anyway. A stop is sent once per attempt.
    pub async fn send_command(&self, bot: &bot::Model, command: &Command) {
        let task = command.task();
        if matches!(command, Command::CancelTask { .. }) && !self.first_stop(task) {
            tracing::debug!(bot = %bot.name, task_id = %task.task_id, attempt = task.attempt, "bot already told to stop this attempt");
            return;
        }
        let body = messages::encode(command);
        let result = match bot.delivery {
            Delivery::Http => {
                // Each command on its own route: a bot of the original contract reads every
                // POST /tasks as a task to run.
                let route = match command {
                    Command::AssignTask(_) => "/tasks".to_owned(),
                    Command::CancelTask { task, .. } => format!("/tasks/{}/cancel", task.task_id),
                };
                if let Some(me) = self.me.upgrade() {
                    let bot = bot.clone();
                    tokio::spawn(async move {
                        if let Err(reason) = me.post_to_bot(&bot, &route, body).await {
                            tracing::warn!(bot = %bot.name, task_id = %task.task_id, attempt = task.attempt, %reason, "command not delivered");
                        }
                    });
                }
                Ok(())
            }
            _ => self
                .publisher
                .publish(TASKS_EXCHANGE, &bot.name, &body, false)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if let Err(reason) = result {
            tracing::warn!(bot = %bot.name, task_id = %task.task_id, attempt = task.attempt, %reason, "command not delivered");
        }
    }

    /// Tells the bot `bot_id` to stop working on `task`.
    pub async fn stop_bot(
        &self,
        bot_id: Uuid,
        task: TaskRef,
        reason: &str,
    ) -> Result<(), ApiError> {
        if let Some(bot) = bot::Entity::find_by_id(bot_id).one(&self.db).await? {
            self.send_command(&bot, &Command::CancelTask { task, reason: reason.to_owned() }).await;
        }
        Ok(())
    }

    /// POSTs `body` to an HTTP-mode bot's `route`, signed when the bot has a token
    /// (`broker_config::push`); `Ok(status)` when it answered at all. A bot that refuses the
    /// connection is tried again briefly (3 tries in about 1.5 s): the natural
    /// order of a small bot is to register, then start listening.
    async fn post_to_bot(
        &self,
        bot: &bot::Model,
        route: &str,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let url = self.bot_url(bot, route)?;
        let key = self.settings.push_keys.get(&bot.name);
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=3 {
            // Signed at each try: a bot refuses a signature it has seen (a replay).
            let signature = key.map(|key| key.sign(chrono::Utc::now().timestamp(), &body));
            let sent = if bot.tls {
                self.post_https_once(&url, signature, &body).await
            } else {
                self.post_http_once(&url, signature, &body).await
            };
            match sent {
                Err(PostError::Refused(_)) if attempt < 3 => {
                    tracing::debug!(bot = %bot.name, %url, attempt, "the bot refused the connection; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(PostError::Refused(reason) | PostError::Failed(reason)) => return Err(reason),
                Ok(status) => return Ok(status),
            }
        }
        Err("the bot refused the connection three times".to_owned())
    }

    /// One POST over plain HTTP (reqwest: no redirect, no proxy).
    async fn post_http_once(
        &self,
        url: &str,
        signature: Option<String>,
        body: &[u8],
    ) -> Result<u16, PostError> {
        let mut request =
            self.http.post(url).header("content-type", "application/json").body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header(broker_config::push::SIGNATURE_HEADER, signature);
        }
        match request.send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(error) if error.is_connect() => Err(PostError::Refused(error.to_string())),
            Err(error) if error.is_timeout() => Err(PostError::Failed(format!(
                "no answer to the POST within {:?} (answer at once, then work)",
                self.settings.bot_post_timeout
            ))),
            Err(error) => Err(PostError::Failed(error.to_string())),
        }
    }

    /// One POST to a bot that serves HTTPS: its certificate checked against `--bot-ca-file` (or
    /// the system's roots), no redirect followed.
    async fn post_https_once(
        &self,
        url: &str,
        signature: Option<String>,
        body: &[u8],
    ) -> Result<u16, PostError> {
        use broker_config::https::RequestError;
        let client = self.settings.https.as_ref().ok_or_else(|| {
            PostError::Failed(
                "the bot serves HTTPS and the orchestrator has no trust for it (see --bot-ca-file)"
                    .to_owned(),
            )
        })?;
        let headers: Vec<(&str, String)> =
            signature.map(|s| (broker_config::push::SIGNATURE_HEADER, s)).into_iter().collect();
        let method = broker_config::https::Method::POST;
        let timeout = self.settings.bot_post_timeout;
        match client.request_with(method, url, Some(body.to_vec()), &headers, timeout).await {
            Ok(response) => Ok(response.status),
            Err(error @ RequestError::Connect { .. }) => Err(PostError::Refused(error.to_string())),
            Err(error) => Err(PostError::Failed(error.to_string())),
        }
    }

    /// Whether an HTTP bot's address takes a TCP connection within a second: the liveness of a
    /// bot that sends no heartbeats.
    pub(crate) async fn probe(&self, bot: &bot::Model) -> bool {
        let Some(port) = bot.http_port.and_then(|p| u16::try_from(p).ok()) else {
            return false;
        };
        let Ok(ip) = bot.ip_address.parse::<std::net::IpAddr>() else {
            return false;
        };
        if !self.settings.http_bot_allowed(ip) {
            return false;
        }
        let connect = tokio::net::TcpStream::connect((ip, port));
        matches!(tokio::time::timeout(Duration::from_secs(1), connect).await, Ok(Ok(_)))
    }

    /// The URL of `route` on an HTTP bot, if its address may be contacted.
    fn bot_url(&self, bot: &bot::Model, route: &str) -> Result<String, String> {
        let port = bot.http_port.ok_or("the bot has no http_port")?;
        let ip: std::net::IpAddr =
            bot.ip_address.parse().map_err(|_| "the bot's address is not an IP address")?;
        if !self.settings.http_bot_allowed(ip) {
            return Err(format!("{ip} is outside --http-bot-networks"));
        }
        let host = match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        let scheme = if bot.tls { "https" } else { "http" };
        Ok(format!("{scheme}://{host}:{port}{route}"))
    }
}
