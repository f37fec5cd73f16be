//! A RabbitMQ vhost per test, the agent running in-process, and the test playing the
//! orchestrator: it declares the core topology, publishes commands and reads the events
//! ([`Harness`]). [`world::World`] runs the real orchestrator instead, with bots in-process or as
//! processes (pipeline and chaos tests).
#![allow(dead_code, clippy::unwrap_used)]

#[macro_use]
pub mod world;

use std::time::Duration;

use bot_agent::{AgentConfig, AgentError};
use broker_config::messages::{decode_events, encode};
use broker_config::testing::TestVhost;
use broker_config::topology::{ORCHESTRATOR_EVENTS_QUEUE, TASKS_EXCHANGE};
use broker_config::{
    Assignment, Attachment, BotName, Command, ConsumerSpec, Decision, Event, Publisher, RowOutcome,
    System, TaskRef, Topology, consume,
};
use chrono::{TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one thing.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running agent and the orchestrator's side of the broker.
pub struct Harness {
    pub vhost: TestVhost,
    pub name: BotName,
    pub commands: Publisher,
    pub events: mpsc::UnboundedReceiver<Event>,
    /// Every event read so far, heartbeats included.
    pub seen: Vec<Event>,
    pub shutdown: CancellationToken,
    pub agent: Option<JoinHandle<Result<(), AgentError>>>,
    plumbing: CancellationToken,
}

impl Harness {
    /// Starts an agent named `bot-1` running NOOP and VIVO360 with short intervals, changed
    /// by `configure`.
    pub async fn start(prefix: &str, configure: impl FnOnce(&mut AgentConfig)) -> Harness {
        let vhost = TestVhost::create(prefix).await.unwrap();
        let plumbing = CancellationToken::new();
        let connection =
            broker_config::amqp::connect(&vhost.amqp_url(), "test-declarer").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        Topology::core().declare(&channel).await.unwrap();
        connection.close(200, "declared".into()).await.unwrap();

        let (tx, events) = mpsc::unbounded_channel();
        let spec = ConsumerSpec {
            url: vhost.amqp_url(),
            name: "test-orchestrator-events".into(),
            queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
            topology: Topology::core(),
            prefetch: 50,
            max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
            hearing: None,
        };
        tokio::spawn(consume(spec, plumbing.clone(), move |message| {
            // One event, or several in one `bot.events` message.
            let decision = match decode_events(&message.data) {
                Ok(events) => {
                    for event in events {
                        let _ = tx.send(event);
                    }
                    Decision::Ack
                }
                Err(error) => Decision::DeadLetter(error.to_string()),
            };
            async move { decision }
        }));

        let name = BotName::parse("bot-1").unwrap();
        let mut config =
            AgentConfig::new(name.clone(), vec![System::NOOP, System::VIVO360], vhost.amqp_url());
        config.heartbeat_interval_ms = 200;
        config.progress_interval_ms = 100;
        config.shutdown_grace_secs = 5;
        configure(&mut config);
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(bot_agent::run(config, shutdown.clone()));
        let commands = Publisher::new(
            vhost.amqp_url(),
            "test-orchestrator",
            Topology::core(),
            Duration::from_secs(20),
            plumbing.clone(),
        );
        let mut harness = Harness {
            vhost,
            name,
            commands,
            events,
            seen: Vec::new(),
            shutdown,
            agent: Some(agent),
            plumbing,
        };
        // The bot's queue exists once it says it is online: commands sent before would be lost.
        let first = harness.next_any().await;
        assert!(
            matches!(first, Event::BotOnline { .. }),
            "expected bot.online first, got {first:?}"
        );
        harness
    }

    /// Publishes `command` to the bot, as the orchestrator does.
    pub async fn send(&self, command: &Command) {
        self.send_raw(&encode(command)).await;
    }

    /// Publishes any bytes to the bot.
    pub async fn send_raw(&self, body: &[u8]) {
        self.commands.publish(TASKS_EXCHANGE, self.name.as_str(), body, false).await.unwrap();
    }

    /// The next event, heartbeats included.
    pub async fn next_any(&mut self) -> Event {
        let event = tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event within the wait")
            .expect("the events consumer runs");
        self.seen.push(event.clone());
        event
    }

    /// The next event that is not a heartbeat (heartbeats alone never satisfy the wait).
    pub async fn next(&mut self) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.next_any())
                .await
                .expect("an event other than a heartbeat within the wait");
            if !matches!(event, Event::BotHeartbeat { .. }) {
                return event;
            }
        }
    }

    /// Events up to and including the first that ends `task` (completed, failed, released).
    pub async fn until_final(&mut self, task: TaskRef) -> Vec<Event> {
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {task:?} did not end within {:?}; events: {events:?}",
                WAIT * 3
            );
            let event = self.next().await;
            let done = event.task() == Some(task) && is_final(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Shuts the agent down, checks `run` returned `Ok`, and returns the events up to
    /// `bot.offline` (included).
    pub async fn stop(&mut self) -> Vec<Event> {
        self.shutdown.cancel();
        if let Some(agent) = self.agent.take() {
            tokio::time::timeout(WAIT * 2, agent)
                .await
                .expect("the agent stops within the wait")
                .unwrap()
                .expect("run returns Ok after a graceful shutdown");
        }
        let mut events = Vec::new();
        loop {
            let event = self.next().await;
            let offline = matches!(event, Event::BotOffline { .. });
            events.push(event);
            if offline {
                return events;
            }
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.plumbing.cancel();
    }
}

/// Whether `event` ends an attempt.
pub fn is_final(event: &Event) -> bool {
    matches!(
        event,
        Event::TaskCompleted { .. } | Event::TaskFailed { .. } | Event::TaskReleased { .. }
    )
}

/// The row outcomes `events` carry, in order.
pub fn rows_of(events: &[Event]) -> Vec<RowOutcome> {
    events
        .iter()
        .flat_map(|event| match event {
            Event::TaskProgress { rows, .. }
            | Event::TaskCompleted { rows, .. }
            | Event::TaskFailed { rows, .. }
            | Event::TaskReleased { rows, .. } => rows.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// An offer valid for a minute.
pub fn offer(system: System, attachment: Option<String>, payload: serde_json::Value) -> Assignment {
    Assignment {
        task: TaskRef { task_id: uuid::Uuid::new_v4(), attempt: 1 },
        system,
        description: "test task".into(),
        attachment,
        payload: Some(payload),
        resume_after_row: 0,
        offer_expires_at: Utc::now() + TimeDelta::seconds(60),
    }
}

/// A NOOP offer over a CSV of `rows` rows, each taking `row_ms`.
pub fn noop_rows(rows: usize, row_ms: u64) -> Assignment {
    let csv: String =
        std::iter::once("item\n".to_owned()).chain((1..=rows).map(|n| format!("{n}\n"))).collect();
    let attachment = Attachment::parse(csv, &System::NOOP, &[]).unwrap().to_base64();
    offer(System::NOOP, Some(attachment), serde_json::json!({ "duration_ms": row_ms }))
}

/// The base64 of a Vivo360 CSV with these rows (name, email, login, profile).
pub fn vivo360_csv(rows: &[[&str; 4]]) -> String {
    let mut csv = "name,email,login,profile\n".to_owned();
    for row in rows {
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    Attachment::parse(csv, &System::VIVO360, &broker_config::attachment::VIVO360_COLUMNS)
        .unwrap()
        .to_base64()
}
