//! The messages Botline programs exchange, as JSON.
//!
//! Every message is an object with `"v"` (the contract version) and `"type"` (the routing key it
//! travels with, e.g. `"task.accepted"`). Commands (orchestrator → bot) are imperative, events
//! (bot → orchestrator) are in the past tense. Task messages carry the task id and the attempt
//! number: the attempt fences stale bots (an event for an older attempt changes nothing).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{BotName, BotStatus, System};

/// The contract version this build speaks.
pub const VERSION: u16 = 1;

/// The most tasks one bot may run at once (its `slots`).
pub const MAX_SLOTS: u32 = 10_000;

/// The attempts a heartbeat says its bot is working on: `tasks`, or `task` from a bot that
/// runs one (every attempt once).
pub fn heartbeat_tasks(task: Option<TaskRef>, tasks: &[TaskRef]) -> Vec<TaskRef> {
    let mut all: Vec<TaskRef> = task.into_iter().chain(tasks.iter().copied()).collect();
    all.sort_by_key(|t| (t.task_id, t.attempt));
    all.dedup();
    all
}

/// A message with its version. `Envelope::<Event>::decode` refuses other versions and shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The contract version.
    pub v: u16,
    /// The message.
    #[serde(flatten)]
    pub message: T,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not a known message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A version this build does not speak.
    #[error("unsupported message version {0} (this build speaks {VERSION})")]
    UnsupportedVersion(u16),
}

/// Serializes a message in its envelope.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a, T> {
        v: u16,
        #[serde(flatten)]
        message: &'a T,
    }
    // Serializing these plain data types cannot fail; an empty body would be dead-lettered.
    serde_json::to_vec(&Out { v: VERSION, message }).unwrap_or_default()
}

/// Parses a message, checking its version first.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DecodeError> {
    #[derive(Deserialize)]
    struct Version {
        v: u16,
    }
    let Version { v } = serde_json::from_slice(bytes)?;
    if v != VERSION {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    let envelope: Envelope<T> = serde_json::from_slice(bytes)?;
    Ok(envelope.message)
}

/// A task and the attempt a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct TaskRef {
    /// The task.
    pub task_id: Uuid,
    /// The attempt (the offer number, which fences stale bots).
    pub attempt: u32,
}

/// Orchestrator → bot, on `botline.tasks` with the bot's name as routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "type")]
pub enum Command {
    /// Run this task (answer with `task.accepted` or `task.rejected` before the offer expires).
    #[serde(rename = "task.assign")]
    AssignTask(Assignment),
    /// Stop working on this attempt (cancelled by a user, or the attempt is stale).
    #[serde(rename = "task.cancel")]
    CancelTask {
        /// The attempt to stop.
        #[serde(flatten)]
        task: TaskRef,
        /// Why.
        reason: String,
    },
}

/// A task offered to a bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct Assignment {
    /// The task and this offer's attempt.
    #[serde(flatten)]
    pub task: TaskRef,
    /// The system to run.
    pub system: System,
    /// What the task is for.
    pub description: String,
    /// The CSV, base64, for systems that take one.
    pub attachment: Option<String>,
    /// The JSON input, for systems that take one.
    pub payload: Option<Value>,
    /// Rows already done by earlier attempts (1-based rows `1..=resume_after_row` are skipped).
    pub resume_after_row: u32,
    /// The offer lapses at this time; an answer after it is ignored.
    pub offer_expires_at: DateTime<Utc>,
}

/// How one CSV row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum RowStatus {
    /// The item was created (a Vivo360 user).
    Created,
    /// The target system refused the item (the reason says why).
    Rejected,
    /// The item could not be processed (the target system erred).
    Failed,
    /// Processed, for systems where rows have no finer outcome.
    Done,
}

impl RowStatus {
    /// Whether the row counts as successful.
    pub fn is_ok(self) -> bool {
        matches!(self, RowStatus::Created | RowStatus::Done)
    }
}

/// One CSV row's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
pub struct RowOutcome {
    /// The row, 1-based, not counting the header.
    pub row: u32,
    /// How it ended.
    pub status: RowStatus,
    /// What the target system said.
    pub message: String,
}

/// A CSV task's result, as stored on the task (docs/architecture.md, "Data").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvResult {
    /// Rows in the file.
    pub rows_total: u32,
    /// Rows that succeeded.
    pub rows_ok: u32,
    /// Rows that did not.
    pub rows_failed: u32,
    /// Each row's outcome, by row number.
    pub rows: Vec<RowOutcome>,
}

impl CsvResult {
    /// The result from row outcomes: sorted by row, one outcome per row (the last reported
    /// wins, so a redelivered progress event cannot count a row twice).
    pub fn from_rows(rows_total: u32, rows: impl IntoIterator<Item = RowOutcome>) -> CsvResult {
        let mut by_row = std::collections::BTreeMap::new();
        for outcome in rows {
            by_row.insert(outcome.row, outcome);
        }
        let rows: Vec<RowOutcome> = by_row.into_values().collect();
        let rows_ok = rows.iter().filter(|r| r.status.is_ok()).count() as u32;
        CsvResult { rows_total, rows_ok, rows_failed: rows.len() as u32 - rows_ok, rows }
    }

    /// The highest row `n` such that rows `1..=n` all have an outcome: where a resumed attempt
    /// starts.
    pub fn contiguous_done(&self) -> u32 {
        let mut done = 0;
        for outcome in &self.rows {
            if outcome.row == done + 1 {
                done = outcome.row;
            } else if outcome.row > done + 1 {
                break;
            }
        }
        done
    }
}

/// Bot → orchestrator, on `botline.events` with [`Event::routing_key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "type")]
pub enum Event {
    /// The bot took the offer and starts working.
    #[serde(rename = "task.accepted")]
    TaskAccepted {
        /// The task and attempt.
        #[serde(flatten)]
        task: TaskRef,
        /// Who.
        bot: BotName,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// The bot declined the offer; it goes to the next available bot.
    #[serde(rename = "task.rejected")]
    TaskRejected {
        /// The task and attempt.
        #[serde(flatten)]
        task: TaskRef,
        /// Who.
        bot: BotName,
        /// Why.
        reason: String,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// Rows done since the last progress event.
    #[serde(rename = "task.progress")]
    TaskProgress {
        /// The task and attempt.
        #[serde(flatten)]
        task: TaskRef,
        /// Who.
        bot: BotName,
        /// The outcomes of the rows done since the last report.
        rows: Vec<RowOutcome>,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// Done.
    #[serde(rename = "task.completed")]
    TaskCompleted {
        /// The task and attempt.
        #[serde(flatten)]
        task: TaskRef,
        /// Who.
        bot: BotName,
        /// The outcomes of the rows not reported yet.
        rows: Vec<RowOutcome>,
        /// The output, for systems without rows.
        output: Option<Value>,
        /// The end of the attempt's log (an external program's stderr and `log` lines, at most
        /// 64 KiB), kept with the attempt. Absent from older agents and built-in automations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<String>,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// The attempt failed.
    #[serde(rename = "task.failed")]
    TaskFailed {
        /// The task and attempt.
        #[serde(flatten)]
        task: TaskRef,
        /// Who.
        bot: BotName,
        /// The outcomes of the rows done but not reported yet (kept for the next attempt).
        rows: Vec<RowOutcome>,
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed (a portal that is down) or not (bad input).
        retryable: bool,
        /// The end of the attempt's log, as in `task.completed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<String>,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// The bot hands the task back unfinished (it is shutting down); not a failure.
    #[serde(rename = "task.released")]
    TaskReleased {
        /// The task and attempt.
        #[serde(flatten)]
        task: TaskRef,
        /// Who.
        bot: BotName,
        /// The outcomes of the rows done but not reported yet.
        rows: Vec<RowOutcome>,
        /// Why.
        reason: String,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// The bot started: it is registered (or updated) and AVAILABLE.
    #[serde(rename = "bot.online")]
    BotOnline {
        /// Who.
        bot: BotName,
        /// Its machine's address.
        ip_address: String,
        /// What it can run.
        systems: Vec<System>,
        /// This run of the agent, new each time it starts: a `bot.online` carrying the session
        /// the bot already has is the same announcement again (the broker redelivers what an
        /// orchestrator applied but died before acking), not a restart. Absent from agents older
        /// than it: each of their announcements is taken for a restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<Uuid>,
        /// How many tasks it runs at once ([`MAX_SLOTS`] at most). Absent from agents older than
        /// it, which run one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slots: Option<u32>,
        /// It reads several offers in one message ([`OFFERS_TYPE`]). Absent from agents older
        /// than it, which are sent one offer per message.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batches: bool,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// The bot is alive; its heartbeats hold the lease on its tasks.
    #[serde(rename = "bot.heartbeat")]
    BotHeartbeat {
        /// Who.
        bot: BotName,
        /// The attempt it is working on, if any; a bot running several, the first of `tasks`
        /// (what a single-slot orchestrator reads).
        task: Option<TaskRef>,
        /// Every attempt it is working on, when it runs more than one. Absent from agents older
        /// than it: `task` says all.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tasks: Vec<TaskRef>,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// The bot paused (UNAVAILABLE) or resumed (AVAILABLE) taking work.
    #[serde(rename = "bot.status")]
    BotStatusChanged {
        /// Who.
        bot: BotName,
        /// Its new status.
        status: BotStatus,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
    /// The bot is stopping.
    #[serde(rename = "bot.offline")]
    BotOffline {
        /// Who.
        bot: BotName,
        /// When; the receiver's clock when absent (a hand-written report need not say).
        #[serde(default = "Utc::now")]
        at: DateTime<Utc>,
    },
}

impl Event {
    /// The routing key it travels with on [`crate::topology::EVENTS_EXCHANGE`].
    pub fn routing_key(&self) -> &'static str {
        match self {
            Event::TaskAccepted { .. } => "task.accepted",
            Event::TaskRejected { .. } => "task.rejected",
            Event::TaskProgress { .. } => "task.progress",
            Event::TaskCompleted { .. } => "task.completed",
            Event::TaskFailed { .. } => "task.failed",
            Event::TaskReleased { .. } => "task.released",
            Event::BotOnline { .. } => "bot.online",
            Event::BotHeartbeat { .. } => "bot.heartbeat",
            Event::BotStatusChanged { .. } => "bot.status",
            Event::BotOffline { .. } => "bot.offline",
        }
    }

    /// The bot that sent it.
    pub fn bot(&self) -> &BotName {
        match self {
            Event::TaskAccepted { bot, .. }
            | Event::TaskRejected { bot, .. }
            | Event::TaskProgress { bot, .. }
            | Event::TaskCompleted { bot, .. }
            | Event::TaskFailed { bot, .. }
            | Event::TaskReleased { bot, .. }
            | Event::BotOnline { bot, .. }
            | Event::BotHeartbeat { bot, .. }
            | Event::BotStatusChanged { bot, .. }
            | Event::BotOffline { bot, .. } => bot,
        }
    }

    /// When the bot sent it.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Event::TaskAccepted { at, .. }
            | Event::TaskRejected { at, .. }
            | Event::TaskProgress { at, .. }
            | Event::TaskCompleted { at, .. }
            | Event::TaskFailed { at, .. }
            | Event::TaskReleased { at, .. }
            | Event::BotOnline { at, .. }
            | Event::BotHeartbeat { at, .. }
            | Event::BotStatusChanged { at, .. }
            | Event::BotOffline { at, .. } => *at,
        }
    }

    /// The task and attempt it is about, for task events.
    pub fn task(&self) -> Option<TaskRef> {
        match self {
            Event::TaskAccepted { task, .. }
            | Event::TaskRejected { task, .. }
            | Event::TaskProgress { task, .. }
            | Event::TaskCompleted { task, .. }
            | Event::TaskFailed { task, .. }
            | Event::TaskReleased { task, .. } => Some(*task),
            _ => None,
        }
    }
}

/// The `type` of a message carrying several offers to one bot: `{"v":1,"type":"tasks.assign",
/// "offers":[<a task.assign without v and type>, …]}`. Sent only to bots that announced
/// `batches`.
pub const OFFERS_TYPE: &str = "tasks.assign";
/// The `type` of a message carrying several events of one bot: `{"v":1,"type":"bot.events",
/// "bot":"<name>","events":[<an event without v>, …]}`, published with that routing key.
pub const EVENTS_TYPE: &str = "bot.events";
/// The most offers or events one message carries.
pub const MAX_BATCH: usize = 1_000;

#[derive(Serialize, Deserialize)]
struct Offers<T> {
    offers: Vec<T>,
}

#[derive(Serialize, Deserialize)]
struct Events<B, T> {
    bot: B,
    events: Vec<T>,
}

/// The `type` of a message, without reading the rest.
fn type_of(bytes: &[u8]) -> Result<String, DecodeError> {
    #[derive(Deserialize)]
    struct Head {
        v: u16,
        #[serde(rename = "type")]
        kind: String,
    }
    let Head { v, kind } = serde_json::from_slice(bytes)?;
    if v != VERSION {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    Ok(kind)
}

fn too_many(what: &str, n: usize) -> DecodeError {
    DecodeError::Malformed(serde::de::Error::custom(format!(
        "{n} {what} in one message, over the {MAX_BATCH} allowed"
    )))
}

/// Serializes offers to one bot: a plain `task.assign` for one, [`OFFERS_TYPE`] for several.
pub fn encode_offers(offers: &[Assignment]) -> Vec<u8> {
    match offers {
        [one] => encode(&Command::AssignTask(one.clone())),
        many => {
            let commands: Vec<Command> = many.iter().cloned().map(Command::AssignTask).collect();
            #[derive(Serialize)]
            struct Out<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                offers: &'a [Command],
            }
            encode(&Out { kind: OFFERS_TYPE, offers: &commands })
        }
    }
}

/// Parses a message to a bot: one command, or the offers of an [`OFFERS_TYPE`] message.
pub fn decode_commands(bytes: &[u8]) -> Result<Vec<Command>, DecodeError> {
    if type_of(bytes)? != OFFERS_TYPE {
        return decode::<Command>(bytes).map(|command| vec![command]);
    }
    let Offers { offers } = serde_json::from_slice::<Offers<Command>>(bytes)?;
    if offers.len() > MAX_BATCH {
        return Err(too_many("offers", offers.len()));
    }
    if offers.iter().any(|c| !matches!(c, Command::AssignTask(_))) {
        return Err(DecodeError::Malformed(serde::de::Error::custom(
            "a tasks.assign message carries only task.assign offers",
        )));
    }
    Ok(offers)
}

/// Serializes events of one bot: the event itself for one, [`EVENTS_TYPE`] for several; with
/// the routing key to publish it with.
pub fn encode_events(bot: &BotName, events: &[Event]) -> (&'static str, Vec<u8>) {
    match events {
        [one] => (one.routing_key(), encode(one)),
        many => {
            #[derive(Serialize)]
            struct Out<'a> {
                #[serde(rename = "type")]
                kind: &'static str,
                bot: &'a BotName,
                events: &'a [Event],
            }
            (EVENTS_TYPE, encode(&Out { kind: EVENTS_TYPE, bot, events: many }))
        }
    }
}

/// Parses a message from a bot: one event, or the events of an [`EVENTS_TYPE`] message, which
/// must all be its sender's (`bot`), so a check of the sender covers them all.
pub fn decode_events(bytes: &[u8]) -> Result<Vec<Event>, DecodeError> {
    if type_of(bytes)? != EVENTS_TYPE {
        return decode::<Event>(bytes).map(|event| vec![event]);
    }
    let Events { bot, events } = serde_json::from_slice::<Events<BotName, Event>>(bytes)?;
    if events.len() > MAX_BATCH {
        return Err(too_many("events", events.len()));
    }
    if let Some(other) = events.iter().find(|e| e.bot() != &bot) {
        return Err(DecodeError::Malformed(serde::de::Error::custom(format!(
            "a bot.events message from {bot} carries an event from {}",
            other.bot()
        ))));
    }
    Ok(events)
}

impl Command {
    /// The task and attempt it is about.
    pub fn task(&self) -> TaskRef {
        match self {
            Command::AssignTask(assignment) => assignment.task,
            Command::CancelTask { task, .. } => *task,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").expect("time").with_timezone(&Utc)
    }

    fn bot() -> BotName {
        BotName::parse("bot-1").expect("name")
    }

    fn task() -> TaskRef {
        TaskRef { task_id: Uuid::nil(), attempt: 2 }
    }

    #[test]
    fn every_event_round_trips_with_its_routing_key_as_type() {
        let row = RowOutcome { row: 1, status: RowStatus::Created, message: "ok".into() };
        let events = vec![
            Event::TaskAccepted { task: task(), bot: bot(), at: at() },
            Event::TaskRejected { task: task(), bot: bot(), reason: "busy".into(), at: at() },
            Event::TaskProgress { task: task(), bot: bot(), rows: vec![row.clone()], at: at() },
            Event::TaskCompleted {
                task: task(),
                bot: bot(),
                rows: vec![row.clone()],
                output: Some(json!({"a": 1})),
                log: None,
                at: at(),
            },
            Event::TaskFailed {
                task: task(),
                bot: bot(),
                rows: vec![],
                error: "down".into(),
                retryable: true,
                log: Some("portal down\n".into()),
                at: at(),
            },
            Event::TaskReleased {
                task: task(),
                bot: bot(),
                rows: vec![row],
                reason: "stopping".into(),
                at: at(),
            },
            Event::BotOnline {
                bot: bot(),
                ip_address: "10.0.0.1".into(),
                systems: vec![System::NOOP],
                session: Some(Uuid::nil()),
                slots: Some(16),
                batches: true,
                at: at(),
            },
            Event::BotHeartbeat { bot: bot(), task: Some(task()), tasks: vec![], at: at() },
            Event::BotHeartbeat {
                bot: bot(),
                task: Some(task()),
                tasks: vec![task(), TaskRef { task_id: Uuid::from_u128(7), attempt: 1 }],
                at: at(),
            },
            Event::BotStatusChanged { bot: bot(), status: BotStatus::Unavailable, at: at() },
            Event::BotOffline { bot: bot(), at: at() },
        ];
        for event in events {
            let bytes = encode(&event);
            let json: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(json["v"], 1);
            assert_eq!(json["type"], event.routing_key());
            assert_eq!(decode::<Event>(&bytes).expect("decodes"), event);
        }
    }

    #[test]
    fn commands_round_trip_and_carry_task_and_attempt_at_the_top_level() {
        let assign = Command::AssignTask(Assignment {
            task: task(),
            system: System::VIVO360,
            description: "hires".into(),
            attachment: Some("bmFtZQo=".into()),
            payload: None,
            resume_after_row: 3,
            offer_expires_at: at(),
        });
        let bytes = encode(&assign);
        let json: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            (json["type"].as_str(), json["attempt"].as_u64()),
            (Some("task.assign"), Some(2))
        );
        assert_eq!(decode::<Command>(&bytes).expect("decodes"), assign);
        let cancel = Command::CancelTask { task: task(), reason: "cancelled".into() };
        assert_eq!(decode::<Command>(&encode(&cancel)).expect("decodes"), cancel);
    }

    #[test]
    fn offers_and_events_travel_several_to_a_message_and_one_alone() {
        let offer = |n: u128| Assignment {
            task: TaskRef { task_id: Uuid::from_u128(n), attempt: 1 },
            system: System::NOOP,
            description: format!("nap {n}"),
            attachment: None,
            payload: None,
            resume_after_row: 0,
            offer_expires_at: at(),
        };
        let one = encode_offers(&[offer(1)]);
        assert_eq!(
            decode::<Command>(&one).expect("a plain task.assign"),
            Command::AssignTask(offer(1))
        );
        let three = encode_offers(&[offer(1), offer(2), offer(3)]);
        let commands = decode_commands(&three).expect("decodes");
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[2], Command::AssignTask(offer(3)));
        assert_eq!(decode_commands(&one).expect("one").len(), 1);
        assert!(
            decode::<Command>(&three).is_err(),
            "an older bot cannot read it: sent only on request"
        );

        let accepted = Event::TaskAccepted { task: task(), bot: bot(), at: at() };
        let done = Event::TaskCompleted {
            task: task(),
            bot: bot(),
            rows: vec![],
            output: None,
            log: None,
            at: at(),
        };
        let (key, body) = encode_events(&bot(), std::slice::from_ref(&accepted));
        assert_eq!(
            (key, decode_events(&body).expect("one")),
            ("task.accepted", vec![accepted.clone()])
        );
        let (key, body) = encode_events(&bot(), &[accepted.clone(), done.clone()]);
        assert_eq!((key, decode_events(&body).expect("two")), (EVENTS_TYPE, vec![accepted, done]));
        let forged = r#"{"v":1,"type":"bot.events","bot":"alice","events":[{"type":"bot.offline","bot":"mallory"}]}"#;
        let refused = decode_events(forged.as_bytes()).expect_err("another bot's event");
        assert!(refused.to_string().contains("mallory"), "{refused}");
        let wrong = br#"{"v":1,"type":"tasks.assign","offers":[{"type":"task.cancel","task_id":"00000000-0000-0000-0000-000000000000","attempt":1,"reason":"x"}]}"#;
        assert!(decode_commands(wrong).is_err(), "offers only");
    }

    #[test]
    fn a_single_slot_agents_messages_read_as_one_slot_and_one_task() {
        let online = br#"{"v":1,"type":"bot.online","bot":"old","ip_address":"10.0.0.1","systems":["NOOP"]}"#;
        let Event::BotOnline { slots, .. } = decode::<Event>(online).expect("old bot.online")
        else {
            panic!("not bot.online");
        };
        assert_eq!(slots, None, "no slots: one");
        let beat = format!(
            r#"{{"v":1,"type":"bot.heartbeat","bot":"old","task":{{"task_id":"{}","attempt":2}}}}"#,
            Uuid::nil()
        );
        let Event::BotHeartbeat { task: one, tasks, .. } =
            decode::<Event>(beat.as_bytes()).expect("old")
        else {
            panic!("not bot.heartbeat");
        };
        assert_eq!(heartbeat_tasks(one, &tasks), [task()]);
        let other = TaskRef { task_id: Uuid::from_u128(9), attempt: 1 };
        assert_eq!(
            heartbeat_tasks(Some(task()), &[other, task()]),
            [task(), other],
            "each attempt once, `task` included"
        );
        assert!(heartbeat_tasks(None, &[]).is_empty());
    }

    #[test]
    fn an_event_without_at_is_stamped_on_arrival() {
        // As the hand-written examples in docs/rabbitmq.md send it.
        let before = Utc::now();
        let body = json!({"v": 1, "type": "task.accepted", "task_id": task().task_id, "attempt": 2, "bot": "bot-1"});
        let event = decode::<Event>(&serde_json::to_vec(&body).expect("json")).expect("decodes");
        let Event::TaskAccepted { at, task: got, .. } = event else {
            panic!("not an acceptance: {event:?}")
        };
        assert_eq!(got.attempt, 2);
        assert!(at >= before && at <= Utc::now(), "stamped now, got {at}");
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        assert!(matches!(decode::<Event>(b"not json"), Err(DecodeError::Malformed(_))));
        let future = json!({"v": 2, "type": "bot.offline", "bot": "b", "at": at()});
        assert!(matches!(
            decode::<Event>(&serde_json::to_vec(&future).expect("json")),
            Err(DecodeError::UnsupportedVersion(2))
        ));
        let bad_name = json!({"v": 1, "type": "bot.offline", "bot": "Not A Name", "at": at()});
        assert!(decode::<Event>(&serde_json::to_vec(&bad_name).expect("json")).is_err());
        let unknown = json!({"v": 1, "type": "task.exploded", "at": at()});
        assert!(decode::<Event>(&serde_json::to_vec(&unknown).expect("json")).is_err());
    }

    #[test]
    fn csv_results_count_each_row_once_and_know_where_to_resume() {
        let outcome = |row, status| RowOutcome { row, status, message: String::new() };
        let result = CsvResult::from_rows(
            5,
            [
                outcome(2, RowStatus::Rejected),
                outcome(1, RowStatus::Created),
                outcome(2, RowStatus::Rejected),
                outcome(4, RowStatus::Created),
            ],
        );
        assert_eq!((result.rows_total, result.rows_ok, result.rows_failed), (5, 2, 1));
        assert_eq!(result.rows.iter().map(|r| r.row).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(result.contiguous_done(), 2, "row 3 is missing, so an attempt resumes at 3");
        assert_eq!(CsvResult::from_rows(0, []).contiguous_done(), 0);
    }
}
