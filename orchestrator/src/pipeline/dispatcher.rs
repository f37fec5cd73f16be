//! The dispatcher: pairs due tasks with free bots in one transaction, then delivers the offers;
//! and the sweeps for expired offers and silent bots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use broker_config::messages::{self, Assignment, Command};
use broker_config::topology::TASKS_EXCHANGE;
use broker_config::{BotStatus, CsvResult, Delivery, Published, System, TaskRef, TaskStatus};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Pipeline;
use super::rules::{self, DueTask, FreeBot};
use crate::bots::{BotChange, Load};
use crate::clock::now;
use crate::entity::{bot, task};
use crate::error::ApiError;
use crate::store::history::{History, record};
use crate::tasks::EventKind;

/// An offer committed to the database, to deliver.
pub(crate) struct Offer {
    task: task::Model,
    bot: bot::Model,
    resume_after_row: u32,
}

/// How often the dispatcher tries again, [`SHARD_WAIT`] apart, when free bots that a due task
/// could go to were left out of a pass because other transactions held their shards
/// (PostgreSQL): those are short (a batch of events), so a few milliseconds usually suffice;
/// past that, the next wake or sweep.
const SHARD_WAITS: u32 = 50;
const SHARD_WAIT: Duration = Duration::from_millis(2);

/// The offers a pairing made, to deliver once its transaction has committed.
pub(crate) struct Pairing {
    pub(crate) offers: Vec<Offer>,
    /// Whether pairing again at once could find more ([`rules::pass_again`]).
    pub(crate) again: bool,
    /// Whether free bots were left out because another transaction held their shards, while a
    /// task they could run is due: a pass once those shards are free would offer it.
    pub(crate) skipped: bool,
    /// Whether the pass reached [`rules::MAX_OFFERS_PER_PASS`] with more to pair.
    pub(crate) capped: bool,
}

/// What a dispatch pass did.
struct PassOutcome {
    offered: usize,
    /// Another pass at once could offer more ([`Pairing::again`]).
    again: bool,
    /// Another pass once other transactions let go of some shards could ([`Pairing::skipped`]).
    skipped: bool,
}

/// The body of an offer POSTed to an HTTP bot: the task as the API shows it (`id`,
/// `description`, `system`, `status`, `created_at`, …) with its `attachment` in base64, and the
/// command's fields (`v`, `type`, `task_id`, `attempt`, `offer_expires_at`, `resume_after_row`)
/// beside them. A bot written to the original Vivo360 contract reads the first; Botline's agent
/// reads the second.
fn http_offer(task: &task::Model, command: &Command) -> Vec<u8> {
    let mut body = match crate::tasks::Task::try_from(task.clone()).map(serde_json::to_value) {
        Ok(Ok(serde_json::Value::Object(view))) => view,
        _ => serde_json::Map::new(),
    };
    body.insert("attachment".into(), json!(task.attachment));
    if let Ok(serde_json::Value::Object(fields)) =
        serde_json::from_slice::<serde_json::Value>(&messages::encode(command))
    {
        body.extend(fields);
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// About how many bytes of offers one message carries before the next begins (offers carry
/// their CSV attachments; RabbitMQ refuses messages over its `max_message_size`).
const OFFERS_PER_MESSAGE_BYTES: usize = 1 << 20;

/// The offer a committed [`Offer`] sends; `None` for a task whose stored system is unreadable.
fn assignment(offer: &Offer, now: DateTime<Utc>) -> Option<Assignment> {
    let task = &offer.task;
    Some(Assignment {
        task: TaskRef { task_id: task.id, attempt: to_u32(task.attempt) },
        system: task.system.parse::<System>().ok()?,
        description: task.description.clone(),
        attachment: task.attachment.clone(),
        payload: task.payload.clone(),
        resume_after_row: offer.resume_after_row,
        offer_expires_at: task.offer_expires_at.unwrap_or(now),
    })
}

/// About the bytes an offer takes in a message.
fn assignment_size(assignment: &Assignment) -> usize {
    let payload = assignment.payload.as_ref().map_or(0, |p| p.to_string().len());
    256 + assignment.description.len()
        + assignment.attachment.as_ref().map_or(0, String::len)
        + payload
}

/// Where a new attempt starts: after the rows earlier attempts reported, in order.
fn resume_point(task: &task::Model) -> u32 {
    task.result
        .as_ref()
        .and_then(|r| serde_json::from_value::<CsvResult>(r.clone()).ok())
        .map_or(0, |r| r.contiguous_done())
}

fn systems_of(row: &bot::Model) -> Vec<System> {
    row.systems.split(',').filter_map(|s| s.parse().ok()).collect()
}

/// The WAITING tasks of `system` due at `now`: a range of `ix_tasks_dispatch`.
fn due_tasks(system: &System, now: DateTime<Utc>) -> sea_orm::Select<task::Entity> {
    task::Entity::find()
        .filter(task::Column::Status.eq(TaskStatus::Waiting))
        .filter(task::Column::System.eq(system.as_str()))
        .filter(task::Column::NotBefore.lte(now))
}

fn to_u32(n: i32) -> u32 {
    u32::try_from(n).unwrap_or_default()
}

impl Pipeline {
    /// Runs the dispatcher until `shutdown`: a pass whenever woken, and the sweeps plus a pass
    /// every `sweep_interval`. A pass that filled every free bot (or lost a pair to a concurrent
    /// change, or reached its cap of offers) is followed by another at once, so a backlog drains
    /// as fast as bots free up; one that left bots free has offered all it could, and the
    /// dispatcher waits to be woken, unless (PostgreSQL) it left out free bots that a due task
    /// could go to because their shards were held: then it passes again a few milliseconds later
    /// ([`SHARD_WAITS`] times at most).
    pub async fn run_dispatcher(self: Arc<Self>, shutdown: CancellationToken) {
        let mut sweep = tokio::time::interval(self.settings.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                _ = sweep.tick() => {
                    if let Err(err) = self.sweep(now()).await {
                        tracing::warn!(error = ?err, "sweep failed; retrying next period");
                    }
                }
            }
            let mut waits = 0;
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                match self.dispatch_pass(now()).await {
                    Ok(PassOutcome { offered, again, skipped }) => {
                        tracing::debug!(offered, again, skipped, "dispatch pass");
                        if again {
                            continue;
                        }
                        if !skipped {
                            break;
                        }
                        // Free bots whose shards a batch of events held (a heartbeat's, say,
                        // which offers nothing): their turn comes once it commits.
                        if waits == SHARD_WAITS {
                            tracing::debug!(
                                waits,
                                "shards still held; the next wake or sweep offers to their bots"
                            );
                            break;
                        }
                        waits += 1;
                        tokio::time::sleep(SHARD_WAIT).await;
                    }
                    Err(err) => {
                        tracing::warn!(error = ?err, "dispatch pass failed; retrying next period");
                        break;
                    }
                }
            }
        }
    }

    /// The sweeps: expired offers, runs past their maximum run time, silent bots, and HTTP bots
    /// that answer again.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<(), ApiError> {
        self.expire_offers(now).await?;
        self.expire_runs(now).await?;
        self.detect_lost_bots(now).await?;
        self.revive_http_bots(now).await?;
        Ok(())
    }

    /// One dispatch pass: offers the oldest due WAITING tasks (priority first) to AVAILABLE bots
    /// that run their system (up to [`rules::MAX_OFFERS_PER_PASS`]; on PostgreSQL only bots whose
    /// shards no other transaction holds), marking each task ASSIGNED (a new attempt) and its bot
    /// BUSY when full, in one transaction, then delivers the offers. Returns how many were made.
    ///
    /// Every update is guarded by the state it expects (`status = 'WAITING'`, `'AVAILABLE'`), so
    /// two dispatchers on one database can never give one task to two bots or two tasks to one.
    pub async fn dispatch_due_tasks(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        Ok(self.dispatch_pass(now).await?.offered)
    }

    /// A dispatch pass: how many offers it made, whether another pass at once could make more
    /// ([`Pairing::again`]), and whether one could once other transactions let go of shards
    /// ([`Pairing::skipped`]).
    async fn dispatch_pass(&self, now: DateTime<Utc>) -> Result<PassOutcome, ApiError> {
        // With no shard at all (every one in other transactions' hands) the pairing offers
        // nothing and says whether a later pass could.
        let (txn, shards) = crate::store::begin_for_dispatch(&self.db).await?;
        let mut history = History::default();
        let Pairing { offers, again, skipped, .. } =
            self.offer_due_tasks(&txn, &mut history, shards, now).await?;
        history.write(&txn).await?;
        txn.commit().await?;
        let offered = offers.len();
        self.deliver_offers(offers, now).await;
        Ok(PassOutcome { offered, again, skipped })
    }

    /// Pairs due tasks with the free bots of `shards` within `txn` (see
    /// [`Pipeline::dispatch_due_tasks`]): the offers to deliver with [`Pipeline::deliver_offers`]
    /// once `txn` has committed, and their entries in `history`, to write before it does.
    pub(crate) async fn offer_due_tasks(
        &self,
        txn: &impl ConnectionTrait,
        history: &mut History,
        shards: crate::store::Shards,
        now: DateTime<Utc>,
    ) -> Result<Pairing, ApiError> {
        let bot_rows = bot::Entity::find()
            .filter(bot::Column::Status.eq(BotStatus::Available))
            .filter(bot::Column::Paused.eq(false))
            .filter(
                sea_orm::Condition::any()
                    .add(bot::Column::OffersPausedUntil.is_null())
                    .add(bot::Column::OffersPausedUntil.lte(now)),
            )
            .order_by_asc(bot::Column::UpdatedAt)
            .order_by_asc(bot::Column::Id)
            .all(txn)
            .await?;
        // Only the bots whose shards this transaction holds (on SQLite, all).
        let (bot_rows, left_out): (Vec<bot::Model>, Vec<bot::Model>) =
            bot_rows.into_iter().partition(|b| shards.contains(&b.name));
        let skipped = self.due_for_any(txn, &left_out, now).await?;
        if bot_rows.is_empty() {
            return Ok(Pairing { offers: Vec::new(), again: false, skipped, capped: false });
        }
        let free: Vec<FreeBot> = bot_rows
            .iter()
            .map(|b| FreeBot {
                id: b.id,
                systems: systems_of(b),
                free: Load::of(b.held, b.slots).free(),
            })
            .collect();
        // At most as many tasks per system as the free slots of the bots that run it, and as a
        // pass offers: each query is a short range scan of ix_tasks_dispatch, whatever the
        // backlog.
        let mut capacity: BTreeMap<System, u64> = BTreeMap::new();
        for bot in &free {
            for system in &bot.systems {
                *capacity.entry(system.clone()).or_default() += u64::from(bot.free);
            }
        }
        let mut candidates = HashMap::new();
        for (system, limit) in capacity {
            let rows = due_tasks(&system, now)
                .order_by_desc(task::Column::Priority)
                .order_by_asc(task::Column::CreatedAt)
                .order_by_asc(task::Column::Id)
                .limit(limit.min(rules::MAX_OFFERS_PER_PASS as u64))
                .all(txn)
                .await?;
            for row in rows {
                candidates.insert(row.id, row);
            }
        }
        let due: Vec<DueTask> = candidates
            .values()
            .filter_map(|t| {
                Some(DueTask {
                    id: t.id,
                    system: t.system.parse().ok()?,
                    priority: t.priority,
                    created_at: t.created_at,
                    avoid_bot: t.avoid_bot_id,
                })
            })
            .collect();
        let bots_by_id: HashMap<Uuid, &bot::Model> = bot_rows.iter().map(|b| (b.id, b)).collect();
        let free_slots: usize = free.iter().map(|b| b.free as usize).sum();
        let slots = rules::pass_capacity(free_slots);
        let mut pairs = rules::pair_tasks_with_bots(&due, &free);
        // The first in the tasks' order; the rest go to the next pass.
        let capped = free_slots > slots && pairs.len() >= slots;
        pairs.truncate(slots);
        let paired = pairs.len();
        // What each bot holds as this pass goes: every bot update is guarded by it.
        let mut loads: HashMap<Uuid, Load> =
            bot_rows.iter().map(|b| (b.id, Load::of(b.held, b.slots))).collect();
        let mut offers = Vec::new();
        for (task_id, bot_id) in pairs {
            let (Some(task), Some(bot), Some(load)) =
                (candidates.get(&task_id), bots_by_id.get(&bot_id), loads.get_mut(&bot_id))
            else {
                continue;
            };
            if let Some(offer) = self.assign(txn, history, task, bot, load, now).await? {
                offers.push(offer);
            }
        }
        let again = rules::pass_again(slots, paired, offers.len());
        Ok(Pairing { offers, again, skipped, capped })
    }

    /// Whether a task that one of `bots` runs is due: one index probe per system, only for bots
    /// a pass left out.
    async fn due_for_any(
        &self,
        txn: &impl ConnectionTrait,
        bots: &[bot::Model],
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        let systems: BTreeSet<System> = bots.iter().flat_map(systems_of).collect();
        for system in systems {
            let due = due_tasks(&system, now)
                .select_only()
                .column(task::Column::Id)
                .limit(1)
                .into_tuple::<Uuid>()
                .one(txn)
                .await?;
            if due.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether any task is WAITING: one index probe. Below full load a batch of events frees
    /// bots while nothing waits, and then need not read every free bot. (Not "due": tasks
    /// waiting for a later time could make that a long scan; the dispatch queries skip them.)
    pub(crate) async fn anything_waits(
        &self,
        txn: &impl ConnectionTrait,
    ) -> Result<bool, ApiError> {
        let waiting = task::Entity::find()
            .select_only()
            .column(task::Column::Id)
            .filter(task::Column::Status.eq(TaskStatus::Waiting))
            .limit(1)
            .into_tuple::<Uuid>()
            .one(txn)
            .await?;
        Ok(waiting.is_some())
    }

    /// Delivers offers whose transaction has committed, all at once.
    pub(crate) async fn deliver_offers(&self, offers: Vec<Offer>, now: DateTime<Utc>) {
        if offers.is_empty() {
            return;
        }
        crate::failpoint::hit("dispatch.after_commit");
        for offer in &offers {
            self.changes.task(offer.task.id);
            self.changes.bot(offer.bot.id);
        }
        // An HTTP bot may take seconds to answer (or not answer): its POST goes on in a task of
        // its own. Publishes to queues are quick and stay in line.
        let (http, queued): (Vec<Offer>, Vec<Offer>) =
            offers.into_iter().partition(|offer| offer.bot.delivery == Delivery::Http);
        let mut queued = queued;
        match self.me.upgrade() {
            Some(me) => {
                for offer in http {
                    let me = me.clone();
                    tokio::spawn(async move { me.deliver(offer, now).await });
                }
            }
            None => queued.extend(http),
        }
        // A bot that reads offers together gets its offers of this pass in one message; the
        // others one per message.
        let mut together: HashMap<Uuid, Vec<Offer>> = HashMap::new();
        let mut batches = Vec::new();
        let mut alone = Vec::new();
        for offer in queued {
            if offer.bot.batches && offer.bot.delivery == Delivery::Amqp {
                together.entry(offer.bot.id).or_default().push(offer);
            } else {
                alone.push(offer);
            }
        }
        for offers in together.into_values() {
            if offers.len() == 1 {
                alone.extend(offers);
            } else {
                batches.push(offers);
            }
        }
        join_all(
            alone
                .into_iter()
                .map(|offer| futures_util::future::Either::Left(self.deliver(offer, now)))
                .chain(batches.into_iter().map(|offers| {
                    futures_util::future::Either::Right(self.deliver_together(offers, now))
                })),
        )
        .await;
    }

    /// Marks `task` ASSIGNED to `bot` (guarded), which holds `load` before it and one more
    /// after; `None` when either moved on meanwhile.
    async fn assign(
        &self,
        txn: &impl ConnectionTrait,
        history: &mut History,
        task: &task::Model,
        bot: &bot::Model,
        load: &mut Load,
        now: DateTime<Utc>,
    ) -> Result<Option<Offer>, ApiError> {
        let attempt = task.attempt + 1;
        // The task's own offer timeout (its system's default when it was created), else ours.
        let timeout = task
            .offer_timeout_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.offer_timeout, std::time::Duration::from_secs);
        let expires = crate::clock::after(now, timeout);
        let taken = task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(TaskStatus::Assigned))
            .col_expr(task::Column::Attempt, Expr::value(attempt))
            .col_expr(task::Column::BotId, Expr::value(Some(bot.id)))
            .col_expr(task::Column::OfferExpiresAt, Expr::value(Some(expires)))
            .col_expr(task::Column::UpdatedAt, Expr::value(now))
            .filter(task::Column::Id.eq(task.id))
            .filter(task::Column::Status.eq(TaskStatus::Waiting))
            .filter(task::Column::Attempt.eq(task.attempt))
            .exec(txn)
            .await?;
        if taken.rows_affected != 1 {
            return Ok(None);
        }
        let after = load.plus(1);
        let busy = bot::Entity::update_many()
            .col_expr(bot::Column::Status, Expr::value(BotChange::Offered.status(after)))
            .col_expr(bot::Column::Held, Expr::value(i32::try_from(after.held).unwrap_or(i32::MAX)))
            .col_expr(bot::Column::UpdatedAt, Expr::value(now))
            .filter(bot::Column::Id.eq(bot.id))
            .filter(bot::Column::Status.eq(BotStatus::Available))
            // As many held as this pass counts: another pass, or a task that left it, changed
            // it otherwise.
            .filter(bot::Column::Held.eq(i32::try_from(load.held).unwrap_or(i32::MAX)))
            // Paused or backed off since the pass read it: no offer.
            .filter(bot::Column::Paused.eq(false))
            .filter(
                sea_orm::Condition::any()
                    .add(bot::Column::OffersPausedUntil.is_null())
                    .add(bot::Column::OffersPausedUntil.lte(now)),
            )
            .exec(txn)
            .await?;
        if busy.rows_affected != 1 {
            // The bot left or was taken meanwhile: put the task back as it was.
            task::Entity::update_many()
                .col_expr(task::Column::Status, Expr::value(TaskStatus::Waiting))
                .col_expr(task::Column::Attempt, Expr::value(task.attempt))
                .col_expr(task::Column::BotId, Expr::value(Option::<Uuid>::None))
                .col_expr(task::Column::OfferExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
                .filter(task::Column::Id.eq(task.id))
                .exec(txn)
                .await?;
            return Ok(None);
        }
        *load = after;
        let resume_after_row = resume_point(task);
        let detail = json!({ "bot": bot.name, "offer_expires_at": expires, "resume_after_row": resume_after_row });
        history.push(task.id, Some(bot.id), attempt, EventKind::Assigned, Some(detail), now);
        let mut offered = task.clone();
        offered.attempt = attempt;
        offered.status = TaskStatus::Assigned;
        offered.bot_id = Some(bot.id);
        offered.offer_expires_at = Some(expires);
        Ok(Some(Offer { task: offered, bot: bot.clone(), resume_after_row }))
    }

    /// Delivers a committed offer. An offer that cannot reach its bot (no queue, no HTTP answer)
    /// goes back at once; one whose publish is merely unconfirmed waits for the expiry sweep.
    async fn deliver(&self, offer: Offer, now: DateTime<Utc>) {
        let Some(assignment) = assignment(&offer, now) else { return };
        let command = Command::AssignTask(assignment);
        let undeliverable = match offer.bot.delivery {
            Delivery::Http => {
                match self
                    .post_to_bot(&offer.bot, "/tasks", http_offer(&offer.task, &command))
                    .await
                {
                    Ok(status) if (200..300).contains(&status) => None,
                    // The bot's state, not the task's: the bot backs off, the task counts nothing.
                    Ok(409) => Some(("the bot says it is busy".to_owned(), false)),
                    Ok(status) => Some((format!("the bot answered HTTP {status}"), true)),
                    Err(reason) => {
                        Some((format!("the bot's endpoint does not answer: {reason}"), true))
                    }
                }
            }
            _ => self.publish_offers(&offer.bot, &messages::encode(&command), 1).await,
        };
        self.delivered(offer, undeliverable, now).await;
    }

    /// Delivers several committed offers to one bot that reads them together (`batches`), in
    /// as few messages as their count ([`messages::MAX_BATCH`]) and size ([`OFFERS_PER_MESSAGE_BYTES`])
    /// allow.
    async fn deliver_together(&self, offers: Vec<Offer>, now: DateTime<Utc>) {
        let mut chunk: Vec<(Offer, Assignment)> = Vec::new();
        let mut bytes = 0;
        let mut offers = offers.into_iter().peekable();
        while let Some(offer) = offers.next() {
            if let Some(assignment) = assignment(&offer, now) {
                bytes += assignment_size(&assignment);
                chunk.push((offer, assignment));
            }
            let full = chunk.len() >= messages::MAX_BATCH || bytes >= OFFERS_PER_MESSAGE_BYTES;
            if chunk.is_empty() || !(full || offers.peek().is_none()) {
                continue;
            }
            let (sent, assignments): (Vec<Offer>, Vec<Assignment>) =
                std::mem::take(&mut chunk).into_iter().unzip();
            bytes = 0;
            let body = messages::encode_offers(&assignments);
            let undeliverable = self.publish_offers(&sent[0].bot, &body, sent.len()).await;
            for offer in sent {
                self.delivered(offer, undeliverable.clone(), now).await;
            }
        }
    }

    /// Publishes `count` offers in `body` to `bot`'s queue: `None` when delivered (or merely
    /// unconfirmed: the expiry sweep takes those back), else why not and whether it counts.
    async fn publish_offers(
        &self,
        bot: &bot::Model,
        body: &[u8],
        count: usize,
    ) -> Option<(String, bool)> {
        match self.publisher.publish(TASKS_EXCHANGE, &bot.name, body, true).await {
            Ok(Published::Delivered) => None,
            Ok(Published::Unroutable) => {
                Some(("the bot has no queue: it has never come online".to_owned(), true))
            }
            Err(err) => {
                tracing::warn!(bot = %bot.name, count, error = %err, "offers not confirmed; the expiry sweep will take them back");
                None
            }
        }
    }

    /// Logs a delivered offer, or takes back one that could not be delivered.
    async fn delivered(
        &self,
        offer: Offer,
        undeliverable: Option<(String, bool)>,
        now: DateTime<Utc>,
    ) {
        let Offer { task, bot, .. } = offer;
        match undeliverable {
            None => {
                tracing::info!(task_id = %task.id, attempt = task.attempt, bot = %bot.name, "task offered")
            }
            Some((reason, counts)) => {
                tracing::warn!(task_id = %task.id, bot = %bot.name, %reason, "offer undeliverable");
                if let Err(err) = self
                    .take_back(
                        &task,
                        &bot,
                        EventKind::OfferUndeliverable,
                        (&reason, counts),
                        BotChange::Unreachable,
                        now,
                    )
                    .await
                {
                    tracing::warn!(task_id = %task.id, error = %err, "cannot take the offer back; the expiry sweep will");
                }
                self.wake();
            }
        }
    }

    /// Puts an ASSIGNED task back to WAITING (guarded by its attempt), avoiding `bot` next time,
    /// and sets the bot's status. The offer went unanswered: the task counts it when `counts`
    /// (not when the bot said it is busy), and past `max_unanswered_offers` it ends FAILED
    /// instead; the bot backs off ([`Pipeline::back_off_bot`]), so other bots come first.
    async fn take_back(
        &self,
        task: &task::Model,
        bot: &bot::Model,
        why: EventKind,
        (reason, counts): (&str, bool),
        bot_change: BotChange,
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        let txn = self.begin().await?;
        let unanswered = task.unanswered_offers + i32::from(counts);
        let limit = i32::try_from(self.settings.max_unanswered_offers).unwrap_or(i32::MAX);
        let gives_up = unanswered >= limit;
        let mut back = task::Entity::update_many()
            .col_expr(task::Column::BotId, Expr::value(Option::<Uuid>::None))
            .col_expr(task::Column::AvoidBotId, Expr::value(Some(bot.id)))
            .col_expr(task::Column::OfferExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(task::Column::UnansweredOffers, Expr::value(unanswered))
            .col_expr(task::Column::UpdatedAt, Expr::value(now));
        let status = if gives_up {
            let error = format!(
                "offered {unanswered} times without an answer; the last time: {reason} (limit: --max-unanswered-offers {limit})"
            );
            back = back
                .col_expr(task::Column::Error, Expr::value(Some(error)))
                .col_expr(task::Column::FinishedAt, Expr::value(Some(now)));
            TaskStatus::Failed
        } else {
            TaskStatus::Waiting
        };
        let back = back
            .col_expr(task::Column::Status, Expr::value(status))
            .filter(task::Column::Id.eq(task.id))
            .filter(task::Column::Status.eq(TaskStatus::Assigned))
            .filter(task::Column::Attempt.eq(task.attempt))
            .exec(&txn)
            .await?;
        if back.rows_affected == 1 {
            crate::store::bots::release_bot(&txn, bot.id, bot_change, now).await?;
            let pause = self.back_off_bot(&txn, bot, now).await?;
            let detail = json!({ "bot": bot.name, "reason": reason, "unanswered_offers": unanswered, "status": status, "bot_paused_for_s": pause.as_secs_f64() });
            record(&txn, task.id, Some(bot.id), task.attempt, why, Some(detail), now).await?;
        }
        txn.commit().await?;
        if back.rows_affected == 1 {
            self.changes.task(task.id);
            self.changes.bot(bot.id);
            if gives_up {
                tracing::warn!(task_id = %task.id, unanswered, "task failed: its offers went unanswered");
                self.incidents.report_failed_tasks(&[task.id], now).await;
            }
        }
        Ok(back.rows_affected == 1)
    }

    /// Counts an offer `bot` did not take (unanswered, refused, or a run it could not be stopped
    /// from) and pauses its offers for the retry backoff of that count: 5 s, doubling, 5 min at
    /// most. Returns the pause.
    pub(crate) async fn back_off_bot(
        &self,
        txn: &impl ConnectionTrait,
        bot: &bot::Model,
        now: DateTime<Utc>,
    ) -> Result<std::time::Duration, ApiError> {
        let in_a_row = bot.unanswered_offers + 1;
        let pause =
            rules::retry_delay(to_u32(in_a_row), self.settings.retry_base, self.settings.retry_cap);
        bot::Entity::update_many()
            .col_expr(bot::Column::UnansweredOffers, Expr::value(in_a_row))
            .col_expr(
                bot::Column::OffersPausedUntil,
                Expr::value(Some(crate::clock::after(now, pause))),
            )
            .filter(bot::Column::Id.eq(bot.id))
            .exec(txn)
            .await?;
        Ok(pause)
    }

    /// Takes back every offer whose bot did not answer in time; the task is offered again,
    /// to another bot first. Returns how many.
    pub async fn expire_offers(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        // An answer sent while the event consumer could not hear (right after a start, or the
        // broker restarting) is still queued, unread: no offer to a broker bot expires until the
        // consumer has heard for a whole offer timeout, so it is read first. A bot that took an
        // offer while the broker went away would otherwise run it while it is offered again, and
        // turn the next offer down as busy. An HTTP bot answers its POST: judged from this
        // orchestrator's start.
        let settled = |since| crate::clock::after(since, self.settings.offer_timeout) <= now;
        let broker_bots = self.hearing.heard_since().is_some_and(settled);
        let http_bots = settled(self.started);
        if !broker_bots && !http_bots {
            return Ok(0);
        }
        let expired = task::Entity::find()
            .filter(task::Column::Status.eq(TaskStatus::Assigned))
            .filter(task::Column::OfferExpiresAt.lt(now))
            .all(&self.db)
            .await?;
        let mut count = 0;
        for task in expired {
            let Some(bot_id) = task.bot_id else { continue };
            let Some(bot) = bot::Entity::find_by_id(bot_id).one(&self.db).await? else {
                continue;
            };
            let judged = match bot.delivery {
                Delivery::Amqp => broker_bots,
                Delivery::Http => http_bots,
            };
            if !judged {
                continue;
            }
            if self
                .take_back(
                    &task,
                    &bot,
                    EventKind::OfferExpired,
                    ("no answer before the offer expired", true),
                    BotChange::Freed,
                    now,
                )
                .await?
            {
                tracing::info!(task_id = %task.id, bot = %bot.name, "offer expired");
                count += 1;
            }
        }
        if count > 0 {
            self.wake();
        }
        Ok(count)
    }

    /// Fails every run past its deadline (its task's `max_run_seconds`, or `max_run_time`): the
    /// run counts as a failure and the task is retried after a backoff (or FAILED, out of
    /// attempts); the bot is told to stop and is UNAVAILABLE until it shows it is free again (a
    /// heartbeat holding nothing, or, for an HTTP bot, a probe). Returns how many.
    pub async fn expire_runs(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        // Runs accepted before deadlines existed have none: they are judged by when they began.
        let before_deadlines = now
            - chrono::Duration::from_std(self.settings.max_run_time)
                .unwrap_or(chrono::Duration::MAX);
        let overdue = task::Entity::find()
            .filter(task::Column::Status.eq(TaskStatus::Running))
            .filter(
                sea_orm::Condition::any().add(task::Column::RunDeadline.lt(now)).add(
                    sea_orm::Condition::all()
                        .add(task::Column::RunDeadline.is_null())
                        .add(task::Column::StartedAt.lt(before_deadlines)),
                ),
            )
            .all(&self.db)
            .await?;
        let mut count = 0;
        for task in overdue {
            let txn = self.begin().await?;
            let failures = task.failures + 1;
            let out_of_attempts = failures >= task.max_attempts;
            let limit =
                task.max_run_seconds.map_or(self.settings.max_run_time.as_secs_f64(), f64::from);
            let error = format!("the run passed its maximum run time of {limit} s");
            let (status, not_before, finished) = if out_of_attempts {
                (TaskStatus::Failed, task.not_before, Some(now))
            } else {
                let delay = rules::retry_delay(
                    to_u32(failures),
                    self.settings.retry_base,
                    self.settings.retry_cap,
                );
                (TaskStatus::Waiting, crate::clock::after(now, delay), None)
            };
            let done = task::Entity::update_many()
                .col_expr(task::Column::Status, Expr::value(status))
                .col_expr(task::Column::Failures, Expr::value(failures))
                .col_expr(task::Column::BotId, Expr::value(Option::<Uuid>::None))
                .col_expr(task::Column::RunDeadline, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(task::Column::NotBefore, Expr::value(not_before))
                .col_expr(task::Column::FinishedAt, Expr::value(finished))
                .col_expr(task::Column::Error, Expr::value(Some(error.clone())))
                .col_expr(task::Column::UpdatedAt, Expr::value(now))
                .filter(task::Column::Id.eq(task.id))
                .filter(task::Column::Status.eq(TaskStatus::Running))
                .filter(task::Column::Attempt.eq(task.attempt))
                .exec(&txn)
                .await?;
            if done.rows_affected != 1 {
                continue;
            }
            if let Some(bot_id) = task.bot_id {
                crate::store::bots::release_bot(&txn, bot_id, BotChange::Unreachable, now).await?;
                // A bot that cannot be stopped (no cancel route) may still be at it: no offer
                // for a while, even if a probe finds it listening.
                if let Some(bot) = bot::Entity::find_by_id(bot_id).one(&txn).await? {
                    self.back_off_bot(&txn, &bot, now).await?;
                }
            }
            let detail = json!({ "reason": error, "status": status, "retry_at": (status == TaskStatus::Waiting).then_some(not_before) });
            record(&txn, task.id, task.bot_id, task.attempt, EventKind::Failed, Some(detail), now)
                .await?;
            txn.commit().await?;
            count += 1;
            tracing::warn!(task_id = %task.id, attempt = task.attempt, %error, "run failed");
            self.changes.task(task.id);
            if let Some(bot_id) = task.bot_id {
                self.changes.bot(bot_id);
                let task_ref = TaskRef { task_id: task.id, attempt: to_u32(task.attempt) };
                self.stop_bot(bot_id, task_ref, &error).await?;
            }
            if out_of_attempts {
                self.incidents.report_failed_tasks(&[task.id], now).await;
            }
        }
        if count > 0 {
            self.wake();
        }
        Ok(count)
    }

    /// HTTP bots that are UNAVAILABLE, hold nothing and are not paused, whose address answers a
    /// probe, become AVAILABLE: a bot of the original contract registers before it listens and
    /// never says it is back. Returns how many.
    pub async fn revive_http_bots(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        let candidates = bot::Entity::find()
            .filter(bot::Column::Status.eq(BotStatus::Unavailable))
            .filter(bot::Column::Delivery.eq(Delivery::Http))
            .filter(bot::Column::Paused.eq(false))
            .filter(bot::Column::Held.eq(0))
            .all(&self.db)
            .await?;
        let probes = join_all(candidates.iter().map(|bot| self.probe(bot))).await;
        let mut revived = 0;
        for (bot, answers) in candidates.iter().zip(probes) {
            if !answers {
                continue;
            }
            let back = bot::Entity::update_many()
                .col_expr(bot::Column::Status, Expr::value(BotChange::Online.status(Load::IDLE)))
                .col_expr(bot::Column::LastHeartbeatAt, Expr::value(Some(now)))
                .col_expr(bot::Column::UpdatedAt, Expr::value(now))
                .filter(bot::Column::Id.eq(bot.id))
                .filter(bot::Column::Status.eq(BotStatus::Unavailable))
                .filter(bot::Column::Held.eq(0))
                .exec(&self.db)
                .await?;
            if back.rows_affected == 1 {
                tracing::info!(bot = %bot.name, "HTTP bot answers its probe: AVAILABLE");
                self.changes.bot(bot.id);
                revived += 1;
            }
        }
        if revived > 0 {
            self.wake();
        }
        Ok(revived)
    }

    /// Marks bots silent for too long UNAVAILABLE and puts their tasks back (a lost run counts as
    /// a failure). An HTTP bot that sends no heartbeats is silent only when its address does not
    /// answer a probe either. Returns how many bots were lost.
    pub async fn detect_lost_bots(&self, now: DateTime<Utc>) -> Result<usize, ApiError> {
        // A bot that paused itself (UNAVAILABLE) with a free slot may still hold tasks.
        let live = bot::Entity::find()
            .filter(
                sea_orm::Condition::any()
                    .add(bot::Column::Status.is_in([BotStatus::Available, BotStatus::Busy]))
                    .add(bot::Column::Held.gt(0)),
            )
            .all(&self.db)
            .await?;
        // Heartbeats sent while the event consumer could not hear (no orchestrator ran, or the
        // broker was away) are queued, not yet read: a bot on the broker counts as seen when it
        // began to hear again, and none is judged while it does not. An HTTP bot's heartbeats
        // come by the API: counted from this orchestrator's start.
        let heard_since = self.hearing.heard_since();
        let mut lost = 0;
        for bot in live {
            let since = match bot.delivery {
                Delivery::Http => self.started,
                Delivery::Amqp => match heard_since {
                    Some(since) => since,
                    None => continue,
                },
            };
            let last_seen = bot.last_heartbeat_at.unwrap_or(bot.updated_at).max(since);
            if !rules::is_silent(
                last_seen,
                now,
                self.settings.heartbeat_interval,
                self.settings.missed_heartbeats,
            ) {
                continue;
            }
            if bot.delivery == Delivery::Http && self.probe(&bot).await {
                bot::Entity::update_many()
                    .col_expr(bot::Column::LastHeartbeatAt, Expr::value(Some(now)))
                    .filter(bot::Column::Id.eq(bot.id))
                    .exec(&self.db)
                    .await?;
                continue;
            }
            let txn = self.begin().await?;
            let marked = bot::Entity::update_many()
                .col_expr(bot::Column::Status, Expr::value(BotChange::Offline.status(Load::IDLE)))
                .col_expr(bot::Column::Held, Expr::value(0))
                .col_expr(bot::Column::UpdatedAt, Expr::value(now))
                .filter(bot::Column::Id.eq(bot.id))
                .filter(bot::Column::Status.eq(bot.status))
                .filter(bot::Column::UpdatedAt.eq(bot.updated_at))
                .exec(&txn)
                .await?;
            let mut requeued = Vec::new();
            if marked.rows_affected == 1 {
                let mut history = History::default();
                let reason = "the bot stopped sending heartbeats";
                requeued =
                    self.requeue_held_tasks(&txn, &mut history, &bot, None, reason, now).await?;
                history.write(&txn).await?;
                tracing::warn!(bot = %bot.name, %last_seen, "bot lost");
                lost += 1;
            }
            txn.commit().await?;
            // Tasks that ran out of attempts with the bot feed the incident engine.
            self.incidents.report_failed_tasks(&requeued, now).await;
            if marked.rows_affected == 1 {
                self.changes.bot(bot.id);
                requeued.into_iter().for_each(|id| self.changes.task(id));
            }
        }
        if lost > 0 {
            self.wake();
        }
        Ok(lost)
    }

    /// Puts back every task `bot` holds (or `only` these of them), after the bot was lost or
    /// restarted. A lost RUNNING task counts as a failed run (a task that kills its bot every
    /// time must end); a lost offer counts as unanswered; each is counted once, and offered
    /// again at once, resuming after the rows already reported. The caller settles the bot.
    pub(crate) async fn requeue_held_tasks(
        &self,
        txn: &impl ConnectionTrait,
        history: &mut History,
        bot: &bot::Model,
        only: Option<&[Uuid]>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, ApiError> {
        let mut held = task::Entity::find()
            .filter(task::Column::BotId.eq(bot.id))
            .filter(task::Column::Status.is_in([TaskStatus::Assigned, TaskStatus::Running]));
        if let Some(only) = only {
            held = held.filter(task::Column::Id.is_in(only.iter().copied()));
        }
        let held = held.all(txn).await?;
        let mut requeued = Vec::new();
        let unanswered_limit =
            i32::try_from(self.settings.max_unanswered_offers).unwrap_or(i32::MAX);
        for task in held {
            let was_running = task.status == TaskStatus::Running;
            let failures = task.failures + i32::from(was_running);
            // An offer lost with its bot went unanswered: counted, so an offer that kills its bot
            // every time ends (and it goes to another bot first).
            let unanswered = task.unanswered_offers + i32::from(!was_running);
            let out_of_attempts = failures >= task.max_attempts;
            let out_of_offers = unanswered >= unanswered_limit;
            let status = if out_of_attempts || out_of_offers {
                TaskStatus::Failed
            } else {
                TaskStatus::Waiting
            };
            let mut update = task::Entity::update_many()
                .col_expr(task::Column::Status, Expr::value(status))
                .col_expr(task::Column::Failures, Expr::value(failures))
                .col_expr(task::Column::UnansweredOffers, Expr::value(unanswered))
                .col_expr(task::Column::BotId, Expr::value(Option::<Uuid>::None))
                .col_expr(task::Column::AvoidBotId, Expr::value(Some(bot.id)))
                .col_expr(task::Column::OfferExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(task::Column::RunDeadline, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(task::Column::UpdatedAt, Expr::value(now));
            if out_of_attempts || out_of_offers {
                let error = if out_of_attempts {
                    format!("{reason} ({failures} of {} attempts used)", task.max_attempts)
                } else {
                    format!(
                        "{reason}; offered {unanswered} times without an answer (limit: --max-unanswered-offers {unanswered_limit})"
                    )
                };
                update = update
                    .col_expr(task::Column::Error, Expr::value(Some(error)))
                    .col_expr(task::Column::FinishedAt, Expr::value(Some(now)));
            }
            update
                .filter(task::Column::Id.eq(task.id))
                .filter(task::Column::Attempt.eq(task.attempt))
                .exec(txn)
                .await?;
            let detail = json!({ "bot": bot.name, "reason": reason, "status": status });
            history.push(
                task.id,
                Some(bot.id),
                task.attempt,
                EventKind::BotLost,
                Some(detail),
                now,
            );
            requeued.push(task.id);
        }
        Ok(requeued)
    }
}
