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
use sea_orm::{
    ConnectionTrait as _, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait as _,
    TransactionTrait,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::changes::Changes;
use crate::entity::bot;
use crate::error::ApiError;
use crate::incidents::{IncidentSettings, Incidents};

pub mod dispatcher;
pub mod events;
pub mod rules;

/// The advisory lock key of the pipeline's transactions on PostgreSQL ("botline" in ASCII).
const PIPELINE_LOCK: i64 = 0x0062_6f74_6c69_6e65;

/// Begins a transaction that waits its turn behind the pipeline's own ([`Pipeline::begin`]):
/// also for the API's writes that change a task and its bot together (cancel, delete), which
/// could otherwise deadlock with a batch of events on PostgreSQL.
pub(crate) async fn begin_in_line<D: TransactionTrait>(db: &D) -> Result<D::Transaction, ApiError> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({PIPELINE_LOCK})")).await?;
    }
    Ok(txn)
}

/// Timings of the task life (DESIGN.md defaults; tests shorten them).
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
    /// The incident engine's timer and quiet period.
    pub incidents: IncidentSettings,
    /// Whose events are accepted (by the AMQP user that published them).
    pub event_senders: SenderPolicy,
    /// The type of the queues declared.
    pub queue_type: QueueType,
}

impl Settings {
    /// The core topology, with queues of the configured type.
    pub fn topology(&self) -> Topology {
        Topology::core().with_queue_type(self.queue_type)
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            offer_timeout: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(300),
            events_prefetch: 64,
            incidents: IncidentSettings::default(),
            event_senders: SenderPolicy::Open,
            queue_type: QueueType::Classic,
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
    /// When this pipeline started: the sweeps judge nobody by what happened before it (what bots
    /// reported while no orchestrator ran is still queued, unread).
    started: chrono::DateTime<chrono::Utc>,
}

impl Pipeline {
    /// A pipeline over `db`, publishing with `publisher`.
    pub fn new(db: DatabaseConnection, publisher: Publisher, settings: Settings) -> Arc<Pipeline> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let changes = Changes::default();
        let wake = Arc::new(Notify::new());
        let incidents =
            Incidents::new(db.clone(), changes.clone(), wake.clone(), settings.incidents.clone());
        let started = crate::clock::now();
        Arc::new(Pipeline { db, publisher, http, settings, changes, incidents, wake, started })
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
        begin_in_line(&self.db).await
    }

    /// Whether the broker connection is up (for `/readyz`).
    pub async fn broker_ready(&self) -> bool {
        self.publisher.is_connected().await || self.publisher.connect().await.is_ok()
    }

    /// Sends `command` to a bot, through its queue or its HTTP endpoint. Best effort: a bot that
    /// misses a command is fenced by attempt anyway.
    pub async fn send_command(&self, bot: &bot::Model, command: &Command) {
        let body = messages::encode(command);
        let task = command.task();
        let result = match bot.delivery.parse::<Delivery>() {
            Ok(Delivery::Http) => self.post_to_bot(bot, body).await.map(|_| ()),
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

    /// POSTs a command to an HTTP-mode bot; `Ok(status)` when it answered at all.
    async fn post_to_bot(&self, bot: &bot::Model, body: Vec<u8>) -> Result<u16, String> {
        let port = bot.http_port.ok_or("the bot has no http_port")?;
        let host = match bot.ip_address.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => bot.ip_address.clone(),
        };
        let response = self
            .http
            .post(format!("http://{host}:{port}/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    }
}
