//! The RabbitMQ topology of docs/architecture.md, declared idempotently by whoever starts first and printed as
//! a definitions file for the management UI.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use serde_json::{Value, json};

use crate::BotName;

/// Assignments and commands to bots; routing key = bot name.
pub const TASKS_EXCHANGE: &str = "botline.tasks";
/// Task and bot events (`task.accepted`, `bot.heartbeat`, …).
pub const EVENTS_EXCHANGE: &str = "botline.events";
/// The orchestrator's queue of every event.
pub const ORCHESTRATOR_EVENTS_QUEUE: &str = "botline.orchestrator.events";
/// Incident triggers from monitoring platforms.
pub const MONITORING_EXCHANGE: &str = "botline.monitoring";
/// The orchestrator's queue of monitoring reports: everything published to
/// [`MONITORING_EXCHANGE`] (`#`), one report per message, counted by the incident engine.
pub const MONITORING_INCIDENTS_QUEUE: &str = "botline.monitoring.incidents";
/// Customer-service records for the attendance ETL.
pub const ATTENDANCE_EXCHANGE: &str = "botline.attendance";
/// The attendance ETL's queue: every record published to [`ATTENDANCE_EXCHANGE`] (`#`), and
/// those published to [`STOMP_TOPIC_EXCHANGE`] with [`STOMP_ATTENDANCE_KEYS`].
pub const ATTENDANCE_ETL_QUEUE: &str = "botline.attendance.etl";
/// RabbitMQ's built-in topic exchange, where the STOMP plugin publishes what is sent to
/// `/topic/<key>` (routing key `<key>`): a producer moved from ActiveMQ sends its records to
/// `/topic/attendance`. It exists in every vhost and its `amq.` name is reserved, so Botline
/// binds to it and never declares it.
pub const STOMP_TOPIC_EXCHANGE: &str = "amq.topic";
/// The routing keys of attendance records on [`STOMP_TOPIC_EXCHANGE`]: `attendance` itself (a
/// topic pattern's `#` matches zero words too) and `attendance.<anything>`, the keys docs/etl.md
/// names for [`ATTENDANCE_EXCHANGE`].
pub const STOMP_ATTENDANCE_KEYS: &str = "attendance.#";
/// Where rejected and undeliverable messages go.
pub const DEAD_LETTER_EXCHANGE: &str = "botline.dlx";
/// The queue that keeps dead letters for inspection.
pub const DEAD_LETTER_QUEUE: &str = "botline.dead";
/// Prefix of the per-bot queues.
pub const BOT_QUEUE_PREFIX: &str = "botline.bot.";

/// The queue a bot consumes: `botline.bot.<name>`, so ops recognise it in the management UI.
pub fn bot_queue(name: &BotName) -> String {
    format!("{BOT_QUEUE_PREFIX}{name}")
}

/// An exchange's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exact routing key match.
    Direct,
    /// Pattern match on dotted routing keys.
    Topic,
    /// Every bound queue.
    Fanout,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Topic => "topic",
            Kind::Fanout => "fanout",
        }
    }

    fn lapin(self) -> ExchangeKind {
        match self {
            Kind::Direct => ExchangeKind::Direct,
            Kind::Topic => ExchangeKind::Topic,
            Kind::Fanout => ExchangeKind::Fanout,
        }
    }
}

/// The kind of RabbitMQ queue Botline declares. Every program of one deployment must use the
/// same: RabbitMQ refuses to declare a queue again with another type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// Classic queues: one node holds each (a single broker, development).
    #[default]
    Classic,
    /// Quorum queues: replicated over a RabbitMQ cluster's nodes (Raft), what a cluster needs
    /// for a queue to outlive its node.
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` argument's value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: Kind,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Its name.
    pub name: String,
    /// Whether rejected messages go to [`DEAD_LETTER_EXCHANGE`].
    pub dead_letters: bool,
}

/// A queue bound to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The exchange.
    pub exchange: String,
    /// The queue.
    pub queue: String,
    /// The routing key (or pattern).
    pub routing_key: String,
}

/// A set of exchanges, queues and bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Exchanges, declared first.
    pub exchanges: Vec<Exchange>,
    /// Queues.
    pub queues: Vec<Queue>,
    /// Bindings, declared last.
    pub bindings: Vec<Binding>,
    /// Only check that the exchanges and queues exist, declaring nothing (see
    /// [`Topology::passive`]).
    pub passive: bool,
    /// The type of every queue.
    pub queue_type: QueueType,
}

fn exchange(name: &str, kind: Kind) -> Exchange {
    Exchange { name: name.to_owned(), kind }
}

fn binding(exchange: &str, queue: &str, routing_key: &str) -> Binding {
    Binding {
        exchange: exchange.to_owned(),
        queue: queue.to_owned(),
        routing_key: routing_key.to_owned(),
    }
}

impl Topology {
    /// Everything but the per-bot queues: what the orchestrator declares.
    pub fn core() -> Topology {
        Topology {
            exchanges: vec![
                exchange(DEAD_LETTER_EXCHANGE, Kind::Fanout),
                exchange(TASKS_EXCHANGE, Kind::Direct),
                exchange(EVENTS_EXCHANGE, Kind::Topic),
                exchange(MONITORING_EXCHANGE, Kind::Topic),
                exchange(ATTENDANCE_EXCHANGE, Kind::Topic),
            ],
            queues: vec![
                // The dead-letter queue itself dead-letters nowhere: nothing may loop.
                Queue { name: DEAD_LETTER_QUEUE.to_owned(), dead_letters: false },
                Queue { name: ORCHESTRATOR_EVENTS_QUEUE.to_owned(), dead_letters: true },
                Queue { name: MONITORING_INCIDENTS_QUEUE.to_owned(), dead_letters: true },
                Queue { name: ATTENDANCE_ETL_QUEUE.to_owned(), dead_letters: true },
            ],
            bindings: vec![
                binding(DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, ""),
                binding(EVENTS_EXCHANGE, ORCHESTRATOR_EVENTS_QUEUE, "#"),
                binding(MONITORING_EXCHANGE, MONITORING_INCIDENTS_QUEUE, "#"),
                binding(ATTENDANCE_EXCHANGE, ATTENDANCE_ETL_QUEUE, "#"),
                // STOMP producers (`/topic/attendance`) reach amq.topic: without this binding
                // RabbitMQ confirms their records and drops them, routed nowhere.
                binding(STOMP_TOPIC_EXCHANGE, ATTENDANCE_ETL_QUEUE, STOMP_ATTENDANCE_KEYS),
            ],
            passive: false,
            queue_type: QueueType::Classic,
        }
    }

    /// A bot's queue, bound to [`TASKS_EXCHANGE`] with its name, plus the exchanges it needs.
    pub fn bot(name: &BotName) -> Topology {
        let queue = bot_queue(name);
        Topology {
            exchanges: vec![
                exchange(DEAD_LETTER_EXCHANGE, Kind::Fanout),
                exchange(TASKS_EXCHANGE, Kind::Direct),
                exchange(EVENTS_EXCHANGE, Kind::Topic),
            ],
            queues: vec![Queue { name: queue.clone(), dead_letters: true }],
            bindings: vec![binding(TASKS_EXCHANGE, &queue, name.as_str())],
            passive: false,
            queue_type: QueueType::Classic,
        }
    }

    /// The same topology with queues of type `queue_type`.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Topology {
        self.queue_type = queue_type;
        self
    }

    /// The same topology, only checked: [`Topology::declare`] then declares the exchanges and
    /// queues passively (an error if one is missing) and leaves the bindings alone. Passive
    /// declares need no permission, so this is how a program whose broker user may not configure
    /// anything (a bot's user from `broker-config users`) checks that what it uses exists; the
    /// topology itself comes from the definitions.
    pub fn passive(mut self) -> Topology {
        self.passive = true;
        self
    }

    /// This topology and `other`'s, without repeats; passive, and of the queue type, if this
    /// one is.
    pub fn merge(mut self, other: Topology) -> Topology {
        for e in other.exchanges {
            if !self.exchanges.contains(&e) {
                self.exchanges.push(e);
            }
        }
        for q in other.queues {
            if !self.queues.contains(&q) {
                self.queues.push(q);
            }
        }
        for b in other.bindings {
            if !self.bindings.contains(&b) {
                self.bindings.push(b);
            }
        }
        self
    }

    /// Declares everything on `channel`. Declaring what exists with the same options is a no-op,
    /// so every program declares what it uses at every (re)connection. A [passive](Self::passive)
    /// topology is only checked: a missing exchange or queue is a `NOT_FOUND` error (which closes
    /// the channel), and the bindings are not touched (binding needs write and read permissions,
    /// and cannot be checked passively).
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let passive = self.passive;
        for e in &self.exchanges {
            // durable: survives a broker restart; not auto-delete: stays with no bindings.
            let options = ExchangeDeclareOptions { durable: true, passive, ..Default::default() };
            channel
                .exchange_declare(
                    e.name.as_str().into(),
                    e.kind.lapin(),
                    options,
                    FieldTable::default(),
                )
                .await?;
        }
        for q in &self.queues {
            // durable (with persistent messages, survives a restart); not exclusive: several
            // consumers (two orchestrators) may share it; not auto-delete: a bot that restarts
            // finds its pending assignments.
            let options = QueueDeclareOptions { durable: true, passive, ..Default::default() };
            let arguments = queue_arguments(q, self.queue_type);
            channel.queue_declare(q.name.as_str().into(), options, arguments).await?;
        }
        if passive {
            return Ok(());
        }
        for b in &self.bindings {
            channel
                .queue_bind(
                    b.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// The topology as a RabbitMQ definitions file (management UI → Overview → Import
    /// definitions, or `rabbitmqctl import_definitions`), for the vhost `vhost`.
    pub fn to_definitions(&self, vhost: &str) -> Value {
        json!({
            "vhosts": [{ "name": vhost }],
            "exchanges": self.exchanges.iter().map(|e| json!({
                "name": e.name, "vhost": vhost, "type": e.kind.as_str(),
                "durable": true, "auto_delete": false, "internal": false, "arguments": {}
            })).collect::<Vec<_>>(),
            "queues": self.queues.iter().map(|q| json!({
                "name": q.name, "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": definition_arguments(q, self.queue_type)
            })).collect::<Vec<_>>(),
            "bindings": self.bindings.iter().map(|b| json!({
                "source": b.exchange, "vhost": vhost, "destination": b.queue,
                "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}
            })).collect::<Vec<_>>(),
        })
    }
}

/// A queue's arguments: its dead-letter exchange, and its type unless classic (classic queues
/// are declared without one, as they always were, so existing ones stay equivalent).
fn arguments_of(queue: &Queue, queue_type: QueueType) -> Vec<(&'static str, &'static str)> {
    let mut arguments = Vec::new();
    if queue.dead_letters {
        arguments.push(("x-dead-letter-exchange", DEAD_LETTER_EXCHANGE));
    }
    if queue_type != QueueType::Classic {
        arguments.push(("x-queue-type", queue_type.as_str()));
    }
    arguments
}

fn queue_arguments(queue: &Queue, queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    for (key, value) in arguments_of(queue, queue_type) {
        arguments.insert(key.into(), AMQPValue::LongString(value.into()));
    }
    arguments
}

fn definition_arguments(queue: &Queue, queue_type: QueueType) -> Value {
    arguments_of(queue, queue_type).into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_topology_matches_the_design() {
        let core = Topology::core();
        let names: Vec<_> = core.exchanges.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(
            names,
            [
                ("botline.dlx", Kind::Fanout),
                ("botline.tasks", Kind::Direct),
                ("botline.events", Kind::Topic),
                ("botline.monitoring", Kind::Topic),
                ("botline.attendance", Kind::Topic),
            ]
        );
        assert!(core.bindings.contains(&binding(
            "botline.events",
            "botline.orchestrator.events",
            "#"
        )));
        assert!(core.bindings.contains(&binding(
            "botline.monitoring",
            "botline.monitoring.incidents",
            "#"
        )));
        assert!(core.bindings.contains(&binding(
            "botline.attendance",
            "botline.attendance.etl",
            "#"
        )));
        assert!(
            core.bindings.contains(&binding("amq.topic", "botline.attendance.etl", "attendance.#")),
            "STOMP's /topic/attendance reaches the ETL"
        );
        assert!(
            core.exchanges.iter().all(|e| !e.name.starts_with("amq.")),
            "amq.* exchanges are RabbitMQ's: bound to, never declared"
        );
    }

    #[test]
    fn a_passive_topology_describes_the_same_objects_and_merging_keeps_the_mode() {
        let name = BotName::parse("vm-7").expect("valid");
        let passive = Topology::bot(&name).passive();
        assert!(passive.passive && !Topology::bot(&name).passive);
        assert!(passive.clone().merge(Topology::core()).passive);
        assert!(!Topology::core().merge(passive.clone()).passive);
        assert_eq!(passive.to_definitions("/"), Topology::bot(&name).to_definitions("/"));
    }

    #[test]
    fn bot_queues_are_named_after_bots_and_merge_without_repeats() {
        let name = BotName::parse("vm-7").expect("valid");
        let bot = Topology::bot(&name);
        assert_eq!(bot.queues[0].name, "botline.bot.vm-7");
        assert_eq!(bot.bindings[0], binding("botline.tasks", "botline.bot.vm-7", "vm-7"));
        let merged = Topology::core().merge(bot);
        assert_eq!(merged.exchanges.len(), 5, "shared exchanges appear once");
        assert_eq!(merged.queues.len(), 5);
        let definitions = merged.to_definitions("/");
        assert_eq!(definitions["queues"][2]["arguments"]["x-dead-letter-exchange"], "botline.dlx");
        assert_eq!(
            definitions["queues"][0]["arguments"],
            json!({}),
            "the dead-letter queue does not loop"
        );
    }

    #[test]
    fn quorum_queues_say_so_and_classic_ones_stay_as_they_were_declared() {
        let name = BotName::parse("vm-7").expect("valid");
        let quorum =
            Topology::core().with_queue_type(QueueType::Quorum).merge(Topology::bot(&name));
        let definitions = quorum.to_definitions("/");
        let queues = definitions["queues"].as_array().expect("queues");
        assert_eq!(queues.len(), 5);
        assert!(queues.iter().all(|q| q["arguments"]["x-queue-type"] == "quorum"), "{queues:?}");
        assert_eq!(
            queues[0]["arguments"],
            json!({"x-queue-type": "quorum"}),
            "the dead-letter queue still dead-letters nowhere"
        );
        let classic = Topology::core().to_definitions("/");
        assert!(
            classic["queues"]
                .as_array()
                .expect("queues")
                .iter()
                .all(|q| q["arguments"].get("x-queue-type").is_none()),
            "classic queues are declared without a type, as before"
        );
    }
}
