//! The task life through the real broker and database, with scripted bots that speak the contract
//! (so each rule is driven step by step): FIFO and capability routing, reject and ignore,
//! liveness, fencing of stale attempts, retries, resume, cancel, undeliverable offers, dead
//! letters.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use broker_config::access::{SenderPolicy, bot_permissions, bot_user};
use broker_config::amqp::Publisher;
use broker_config::messages::{self, Assignment, Command, Event};
use broker_config::topology::{self, EVENTS_EXCHANGE, QueueType};
use broker_config::{
    BotName, ConsumerSpec, Decision, RowOutcome, RowStatus, System, TaskRef, Topology,
};
use chrono::Utc;
use common::{Backend, TestApp};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Polls until the condition holds (15 s at most): the pipeline is asynchronous by nature.
macro_rules! wait_until {
    ($what:expr, $condition:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !$condition {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// Short timings so the task life plays out in a second or two.
async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        config.offer_timeout = Duration::from_millis(1500);
        config.sweep_interval = Duration::from_millis(200);
        config.heartbeat_interval = Duration::from_secs(1);
        config.retry_base = Duration::from_millis(100);
    })
    .await
}

/// A bot scripted by the test: it receives its commands and sends whatever events it is told to.
struct ScriptedBot {
    name: BotName,
    publisher: Publisher,
    commands: mpsc::UnboundedReceiver<Command>,
    heartbeat: CancellationToken,
    stop: CancellationToken,
    /// Its `bot.online`, with this run's session.
    announcement: Event,
    /// What its heartbeats say it works on: what it accepted, until it reports the end.
    holding: Arc<Mutex<Vec<TaskRef>>>,
    /// How many messages reached its queue (a message may carry several offers).
    deliveries: Arc<std::sync::atomic::AtomicUsize>,
}

impl ScriptedBot {
    /// Declares its queue, consumes it, comes online and heartbeats.
    async fn online(app: &TestApp, name: &str, systems: &[System]) -> ScriptedBot {
        ScriptedBot::online_with(app, name, systems, QueueType::Classic).await
    }

    /// [`ScriptedBot::online`] for a bot that runs `slots` tasks at once.
    async fn online_with_slots(
        app: &TestApp,
        name: &str,
        systems: &[System],
        slots: u32,
    ) -> ScriptedBot {
        ScriptedBot::start(app, name, systems, QueueType::Classic, Some(slots)).await
    }

    /// [`ScriptedBot::online`], declaring its queue of type `queue_type`.
    async fn online_with(
        app: &TestApp,
        name: &str,
        systems: &[System],
        queue_type: QueueType,
    ) -> ScriptedBot {
        ScriptedBot::start(app, name, systems, queue_type, None).await
    }

    async fn start(
        app: &TestApp,
        name: &str,
        systems: &[System],
        queue_type: QueueType,
        slots: Option<u32>,
    ) -> ScriptedBot {
        let name = BotName::parse(name).unwrap();
        let stop = CancellationToken::new();
        let publisher = Publisher::new(
            app.vhost.amqp_url(),
            format!("scripted-{name}"),
            Topology::bot(&name).with_queue_type(queue_type),
            Duration::from_secs(10),
            stop.clone(),
        );
        publisher.connect().await.unwrap();
        let (tx, commands) = mpsc::unbounded_channel();
        let spec = ConsumerSpec {
            url: app.vhost.amqp_url(),
            name: format!("scripted-{name}-consumer"),
            queue: topology::bot_queue(&name),
            topology: Topology::bot(&name).with_queue_type(queue_type),
            prefetch: 10,
            max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
            hearing: None,
        };
        let deliveries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = deliveries.clone();
        tokio::spawn(broker_config::consume(spec, stop.clone(), move |message| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // A bot that said `batches` may get several offers in one message.
            let decision = match messages::decode_commands(&message.data) {
                Ok(commands) => {
                    commands.into_iter().for_each(|command| drop(tx.send(command)));
                    Decision::Ack
                }
                Err(err) => Decision::DeadLetter(err.to_string()),
            };
            async move { decision }
        }));
        let announcement = Event::BotOnline {
            bot: name.clone(),
            ip_address: "127.0.0.1".into(),
            systems: systems.to_vec(),
            session: Some(uuid::Uuid::now_v7()),
            slots,
            batches: slots.is_some(),
            at: Utc::now(),
        };
        let bot = ScriptedBot {
            name,
            publisher,
            commands,
            heartbeat: CancellationToken::new(),
            stop,
            announcement,
            holding: Arc::default(),
            deliveries,
        };
        bot.send(bot.announcement.clone()).await;
        let (publisher, name, beat, holding) =
            (bot.publisher.clone(), bot.name.clone(), bot.heartbeat.clone(), bot.holding.clone());
        tokio::spawn(async move {
            while !beat.is_cancelled() {
                let tasks = holding.lock().unwrap().clone();
                let event = Event::BotHeartbeat {
                    bot: name.clone(),
                    task: tasks.first().copied(),
                    tasks,
                    at: Utc::now(),
                };
                let _ = publisher
                    .publish(EVENTS_EXCHANGE, event.routing_key(), &messages::encode(&event), false)
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        // Registered and seen alive (it may already be BUSY with a waiting task).
        let path = format!("/api/v1/bots?name={}&status=AVAILABLE,BUSY", bot.name);
        wait_until!(format!("bot {} online", bot.name), app.get(&path).await.1["total"] == 1);
        bot
    }

    async fn send(&self, event: Event) {
        match &event {
            Event::TaskAccepted { task, .. } => self.holding.lock().unwrap().push(*task),
            Event::TaskCompleted { task, .. }
            | Event::TaskFailed { task, .. }
            | Event::TaskReleased { task, .. }
            | Event::TaskRejected { task, .. } => {
                self.holding.lock().unwrap().retain(|t| t != task)
            }
            _ => {}
        }
        self.publisher
            .publish(EVENTS_EXCHANGE, event.routing_key(), &messages::encode(&event), false)
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Command {
        tokio::time::timeout(Duration::from_secs(15), self.commands.recv())
            .await
            .expect("a command within 15 s")
            .unwrap()
    }

    async fn next_offer(&mut self) -> Assignment {
        match self.next().await {
            Command::AssignTask(assignment) => assignment,
            other => panic!("{} expected an offer, got {other:?}", self.name),
        }
    }

    /// Asserts no command arrives for a while (used sparingly: only to show a bot is left alone).
    async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some(command)) = tokio::time::timeout(wait, self.commands.recv()).await {
            panic!("{} expected nothing, got {command:?}", self.name);
        }
    }

    async fn accept(&self, task: TaskRef) {
        self.send(Event::TaskAccepted { task, bot: self.name.clone(), at: Utc::now() }).await;
    }

    async fn complete(&self, task: TaskRef, rows: Vec<RowOutcome>) {
        self.send(Event::TaskCompleted {
            task,
            bot: self.name.clone(),
            rows,
            output: Some(json!({"ok": true})),
            log: None,
            at: Utc::now(),
        })
        .await;
    }

    /// Stops heartbeating (the bot "dies" without a word).
    fn go_silent(&self) {
        self.heartbeat.cancel();
    }
}

impl Drop for ScriptedBot {
    fn drop(&mut self) {
        self.heartbeat.cancel();
        self.stop.cancel();
    }
}

async fn task_status(app: &TestApp, id: &str) -> String {
    app.get(&format!("/api/v1/tasks/{id}")).await.1["status"].as_str().unwrap().to_owned()
}

async fn wait_status(app: &TestApp, id: &str, status: &str) -> Value {
    wait_until!(format!("task {id} {status}"), task_status(app, id).await == status);
    app.get(&format!("/api/v1/tasks/{id}")).await.1
}

async fn create(app: &TestApp, body: Value) -> String {
    let (status, task) = app.post("/api/v1/tasks", &body).await;
    assert_eq!(status, 201, "{task}");
    task["id"].as_str().unwrap().to_owned()
}

fn noop(description: &str) -> Value {
    json!({"description": description, "system": "NOOP"})
}

async fn history(app: &TestApp, id: &str) -> Vec<String> {
    let (_, events) = app.get(&format!("/api/v1/tasks/{id}/events")).await;
    events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

async fn a_task_flows_through_a_bot(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "bot-1", &[System::NOOP]).await;
    let id = create(&app, noop("nap")).await;
    let offer = bot.next_offer().await;
    assert_eq!(
        (offer.task.task_id.to_string(), offer.task.attempt, offer.system),
        (id.clone(), 1, System::NOOP)
    );
    let assigned = app.get(&format!("/api/v1/tasks/{id}")).await.1;
    assert_eq!(assigned["status"], "ASSIGNED");
    let bot_row = app.get("/api/v1/bots?name=bot-1").await.1;
    assert_eq!(
        (&bot_row["items"][0]["status"], &bot_row["items"][0]["current_task_id"]),
        (&json!("BUSY"), &json!(id))
    );

    bot.accept(offer.task).await;
    let running = wait_status(&app, &id, "RUNNING").await;
    assert!(running["started_at"].is_string());
    bot.complete(offer.task, vec![]).await;
    let done = wait_status(&app, &id, "COMPLETE").await;
    assert_eq!(done["result"], json!({"ok": true}));
    assert!(done["finished_at"].is_string());
    wait_until!(
        "bot free",
        app.get("/api/v1/bots?name=bot-1&status=AVAILABLE").await.1["total"] == 1
    );
    assert_eq!(history(&app, &id).await, ["created", "assigned", "accepted", "completed"]);

    // A redelivered completion is applied once.
    bot.complete(offer.task, vec![]).await;
    bot.accept(offer.task).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(task_status(&app, &id).await, "COMPLETE");
    let kinds = history(&app, &id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "completed").count(), 1, "{kinds:?}");
}

/// A publisher of whatever a test wants on the broker, malformed events included.
fn garbage_publisher(app: &TestApp, shutdown: &CancellationToken) -> Publisher {
    Publisher::new(
        app.vhost.amqp_url(),
        "garbage",
        Topology::core(),
        Duration::from_secs(10),
        shutdown.clone(),
    )
}

/// `GET /metrics`, parsed by a Prometheus text-format parser.
async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap()
}

/// The value of `metric` summed over the series whose labels include `labels` (a histogram's:
/// its count); 0 when there is none.
fn metric(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric || s.metric == metric.trim_end_matches("_total"))
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => {
                buckets.iter().find(|b| b.less_than.is_infinite()).map_or(0.0, |b| b.count)
            }
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// A task through a bot and a malformed event move the metrics: the gauges read from the
/// database, and what was counted on the way (offers, wait and run times, the bot's runs, the
/// event batches, the HTTP request, the dead letter). Counters are compared before and after:
/// they belong to the process.
async fn metrics_follow_a_task_through_a_bot(backend: Backend) {
    let app = spawn(backend).await;
    let before = scrape(&app).await;
    let of_noop = [("system", "NOOP")];
    assert_eq!(metric(&before, "botline_tasks", &of_noop), 0.0, "no task yet");
    let mut bot = ScriptedBot::online(&app, "measured", &[System::NOOP]).await;
    let id = create(&app, noop("counted")).await;
    let offer = bot.next_offer().await;
    let waiting = scrape(&app).await;
    assert_eq!(metric(&waiting, "botline_tasks", &[("status", "ASSIGNED"), of_noop[0]]), 1.0);
    assert_eq!(metric(&waiting, "botline_tasks", &[("status", "WAITING"), of_noop[0]]), 0.0);
    assert_eq!(metric(&waiting, "botline_bots", &[("status", "BUSY")]), 1.0);
    bot.accept(offer.task).await;
    bot.complete(offer.task, vec![]).await;
    wait_status(&app, &id, "COMPLETE").await;
    // A run that reports its end without an acceptance (which it implies) counts as a run, and
    // its wait; its run time is unknown.
    let second = create(&app, noop("done at once")).await;
    let offer = bot.next_offer().await;
    bot.complete(offer.task, vec![]).await;
    wait_status(&app, &second, "COMPLETE").await;
    // A method outside HTTP's standard ones is one label, whatever the word.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let brewed = app.client.request(brew, app.url("/api/v1/tasks")).send().await.unwrap();
    assert_eq!(brewed.status(), 405);
    let shutdown = CancellationToken::new();
    let raw = garbage_publisher(&app, &shutdown);
    raw.publish(EVENTS_EXCHANGE, "task.completed", b"not json", false).await.unwrap();
    app.dead_letter_reasons(1).await;

    let after = scrape(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert_eq!(metric(&after, "botline_tasks", &[("status", "COMPLETE"), of_noop[0]]), 2.0);
    assert_eq!(metric(&after, "botline_tasks", &[("status", "ASSIGNED"), of_noop[0]]), 0.0);
    assert_eq!(metric(&after, "botline_bots", &[("status", "AVAILABLE")]), 1.0);
    assert_eq!(metric(&after, "botline_incidents_open", &[]), 0.0);
    assert_eq!(moved("botline_task_events_total", &[("kind", "assigned")]), 2.0);
    assert_eq!(moved("botline_task_events_total", &[("kind", "completed")]), 2.0);
    assert_eq!(moved("botline_task_wait_seconds", &of_noop), 2.0);
    assert_eq!(moved("botline_task_run_seconds", &[of_noop[0], ("outcome", "completed")]), 1.0);
    assert_eq!(
        moved(
            "botline_bot_runs_total",
            &[("bot", "measured"), of_noop[0], ("outcome", "completed")]
        ),
        2.0
    );
    assert!(moved("botline_event_batch_size", &[]) >= 1.0);
    assert!(moved("botline_event_lag_seconds", &[]) >= 3.0, "online, accepted, completed at least");
    let created = [("route", "/api/v1/tasks"), ("method", "POST"), ("status", "201")];
    assert_eq!(moved("botline_http_requests_total", &created), 2.0);
    assert_eq!(moved("botline_http_request_duration_seconds", &created[..2]), 2.0);
    let one_task = [("route", "/api/v1/tasks/:id"), ("method", "GET")];
    assert!(moved("botline_http_requests_total", &one_task) >= 1.0, "by route, not by id");
    let other = [("route", "/api/v1/tasks"), ("method", "OTHER"), ("status", "405")];
    assert_eq!(moved("botline_http_requests_total", &other), 1.0);
    let dead = [("queue", "botline.orchestrator.events")];
    assert_eq!(moved("botline_dead_lettered_total", &dead), 1.0);
    shutdown.cancel();
}

/// What the dashboard reads besides a task list: the list's filters, sorts and bulk actions, the
/// monitoring view, and the dead letters (read, replayed, discarded), after tasks went through a
/// scripted bot and a malformed event was dead-lettered.
async fn the_dashboard_s_views_follow_tasks_and_dead_letters(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "viewed", &[System::NOOP]).await;
    let csv = "name,email,login,profile\nA,a@x.io,a,agent\nB,b@x.io,b,agent\nC,c@x.io,c,agent\n";
    let attachment = base64::engine::general_purpose::STANDARD.encode(csv);
    let rows = create(
        &app,
        json!({"description": "Rows to check", "system": "NOOP", "attachment": attachment}),
    )
    .await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    let row = |n, status| RowOutcome { row: n, status, message: format!("row {n}") };
    let outcomes =
        vec![row(1, RowStatus::Done), row(2, RowStatus::Rejected), row(3, RowStatus::Done)];
    bot.complete(offer.task, outcomes).await;
    assert_eq!(wait_status(&app, &rows, "COMPLETE").await["rows_failed"], 1);
    let plain = create(&app, noop("plain 50_50")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    bot.complete(offer.task, vec![]).await;
    assert_eq!(wait_status(&app, &plain, "COMPLETE").await["rows_failed"], Value::Null);
    // Due tomorrow: WAITING, not offered.
    let later = |d: &str| json!({"description": d, "system": "NOOP", "not_before": (Utc::now() + chrono::Duration::days(1)).to_rfc3339()});
    let (first_later, second_later) =
        (create(&app, later("later 1")).await, create(&app, later("later 2")).await);

    let ids = |query: &str| {
        let app = &app;
        let query = query.to_owned();
        async move {
            let (status, page) = app.get(&format!("/api/v1/tasks?{query}")).await;
            assert_eq!(status, 200, "{query}: {page}");
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("rows_failed=true").await, std::slice::from_ref(&rows));
    assert_eq!(ids("q=ROWS%20to").await, std::slice::from_ref(&rows), "any case");
    assert_eq!(ids(&format!("q={plain}")).await, std::slice::from_ref(&plain), "a whole id");
    assert_eq!(ids("q=plain_50").await, Vec::<String>::new(), "_ is a character, not any one");
    assert_eq!(ids("q=0%25").await, Vec::<String>::new(), "% is a character too");
    let hour = |h: i64| {
        (Utc::now() + chrono::Duration::hours(h)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    assert_eq!(ids(&format!("created_after={}", hour(1))).await.len(), 0);
    assert_eq!(
        ids(&format!("created_after={}&created_before={}", hour(-1), hour(1))).await.len(),
        4
    );
    let (status, refused) = app
        .get(&format!("/api/v1/tasks?created_after={}&created_before={}", hour(1), hour(-1)))
        .await;
    assert_eq!((status, &refused["error"]["field"]), (400, &json!("created_before")), "{refused}");
    let (status, refused) = app.get("/api/v1/tasks?created_after=yesterday").await;
    assert_eq!((status, &refused["error"]["field"]), (400, &json!("created_after")), "{refused}");
    // Ended first, first; those not ended last, in either order.
    let by_end = ids("sort=finished&order=oldest").await;
    assert_eq!(by_end[..2], [rows.clone(), plain.clone()]);
    assert_eq!(ids("sort=finished&order=newest").await[..2], [plain.clone(), rows.clone()]);
    let by_run = ids("sort=duration&order=newest").await;
    assert_eq!(
        by_run[2..].iter().collect::<std::collections::BTreeSet<_>>(),
        [&first_later, &second_later].into_iter().collect(),
        "not run: last"
    );
    let (status, _) = app.get("/api/v1/tasks?sort=finished&cursor=abc").await;
    assert_eq!(status, 400, "a cursor pages the created order only");

    // A client may PUT back the whole task it read, the new read-only field included.
    let mut read = app.get(&format!("/api/v1/tasks/{first_later}")).await.1;
    assert!(read.get("rows_failed").is_some(), "{read}");
    read["description"] = json!("later 1, edited");
    let (status, edited) = app.put(&format!("/api/v1/tasks/{first_later}"), &read).await;
    assert_eq!((status, &edited["description"]), (200, &json!("later 1, edited")), "{edited}");

    // Bulk actions: each task on its own; a bad id refuses the whole request.
    let (status, refused) =
        app.post("/api/v1/tasks/cancel", &json!({"ids": [first_later, "nope"]})).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["message"], "'nope': not a task id (a UUID)");
    assert_eq!(task_status(&app, &first_later).await, "WAITING", "nothing changed");
    let (status, outcome) =
        app.post("/api/v1/tasks/cancel", &json!({"ids": [first_later, second_later, rows]})).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["done"], json!([first_later, second_later]));
    assert_eq!(outcome["refused"][0]["id"], json!(rows), "{outcome}");
    assert_eq!(task_status(&app, &second_later).await, "CANCELLED");
    let (_, outcome) = app.post("/api/v1/tasks/retry", &json!({"ids": [first_later]})).await;
    assert_eq!(outcome["done"], json!([first_later]), "{outcome}");
    assert_eq!(task_status(&app, &first_later).await, "WAITING");

    // The monitoring view: two runs ended, by the one bot; one task waits.
    let (status, view) = app.get("/api/v1/monitoring?minutes=5").await;
    assert_eq!(status, 200, "{view}");
    let throughput = view["throughput"].as_array().unwrap();
    assert_eq!(throughput.len(), 5);
    let completed: u64 = throughput.iter().map(|m| m["completed"].as_u64().unwrap()).sum();
    assert_eq!(completed, 2, "{view}");
    assert_eq!(view["waiting"]["NOOP"], 1, "{view}");
    assert_eq!(view["waiting"]["VIVO360"], 0, "every system is listed");
    let noop_timings =
        view["timings"].as_array().unwrap().iter().find(|t| t["system"] == "NOOP").unwrap();
    assert_eq!(noop_timings["runs"], 2, "{view}");
    assert!(
        noop_timings["run_p95_seconds"].as_f64().unwrap()
            >= noop_timings["run_p50_seconds"].as_f64().unwrap()
    );
    let viewed = view["bots"].as_array().unwrap().iter().find(|b| b["name"] == "viewed").unwrap();
    assert_eq!(
        (&viewed["completed"], &viewed["failed"], &viewed["success_rate"]),
        (&json!(2), &json!(0), &json!(1.0))
    );
    assert_eq!(view["dead_letters"], 0);
    let (status, _) = app.get("/api/v1/monitoring?minutes=0").await;
    assert_eq!(status, 400);

    // A malformed event is dead-lettered; the API shows it where it failed and why.
    let shutdown = CancellationToken::new();
    let raw = garbage_publisher(&app, &shutdown);
    raw.publish(EVENTS_EXCHANGE, "task.completed", b"not json", false).await.unwrap();
    wait_until!("a dead letter", app.get("/api/v1/dead-letters").await.1["total"] == 1);
    let (_, letters) = app.get("/api/v1/dead-letters").await;
    let letter = &letters["items"][0];
    assert_eq!(letter["queue"], "botline.orchestrator.events", "{letters}");
    assert_eq!(
        (&letter["routing_key"], &letter["body_preview"]),
        (&json!("task.completed"), &json!("not json"))
    );
    assert_eq!(letter["publisher"], "guest");
    assert!(
        letter["reason"].as_str().unwrap().contains("json")
            || letter["reason"].as_str().unwrap().contains("expected"),
        "{letter}"
    );
    let id = letter["id"].as_str().unwrap().to_owned();
    // Replayed: back in the events queue, refused again there (it is still not JSON).
    let before = scrape(&app).await;
    let (status, outcome) = app.post("/api/v1/dead-letters/replay", &json!({"ids": [id]})).await;
    assert_eq!((status, &outcome["done"]), (200, &json!([id])), "{outcome}");
    let dead = [("queue", "botline.orchestrator.events")];
    wait_until!(
        "the replayed event dead-lettered again",
        metric(&scrape(&app).await, "botline_dead_lettered_total", &dead)
            - metric(&before, "botline_dead_lettered_total", &dead)
            == 1.0
    );
    wait_until!("back in the dead letters", app.get("/api/v1/dead-letters").await.1["total"] == 1);
    let (_, outcome) = app.post("/api/v1/dead-letters/discard", &json!({"ids": [id]})).await;
    assert_eq!(outcome["done"], json!([id]), "{outcome}");
    assert_eq!(app.get("/api/v1/dead-letters").await.1["total"], 0);
    let (_, outcome) = app.post("/api/v1/dead-letters/discard", &json!({"ids": [id]})).await;
    assert_eq!(outcome["refused"][0]["code"], "not_found", "{outcome}");
    let (status, _) =
        app.post("/api/v1/dead-letters/discard", &json!({"ids": ["not-an-id"]})).await;
    assert_eq!(status, 422);
    shutdown.cancel();
}

/// Tasks created in one bulk request are offered in the order given; a bot that answers each
/// offer at once (accepted and completed back to back, so they are often applied in one batch
/// together with the next offer) leaves every task a whole history, in order.
async fn bulk_tasks_run_in_the_order_given_with_whole_histories(backend: Backend) {
    let app = spawn(backend).await;
    let tasks: Vec<Value> = (0..6).map(|n| noop(&format!("nap {n}"))).collect();
    let (status, created) = app.post("/api/v1/tasks/bulk", &json!({ "tasks": tasks })).await;
    assert_eq!(status, 201, "{created}");
    let ids: Vec<String> = created["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    let mut bot = ScriptedBot::online(&app, "bot-1", &[System::NOOP]).await;
    for id in &ids {
        let offer = bot.next_offer().await;
        assert_eq!(&offer.task.task_id.to_string(), id, "offered out of order");
        bot.accept(offer.task).await;
        bot.complete(offer.task, vec![]).await;
    }
    for id in &ids {
        wait_status(&app, id, "COMPLETE").await;
        assert_eq!(history(&app, id).await, ["created", "assigned", "accepted", "completed"]);
    }
}

async fn a_repeated_bot_online_keeps_the_bot_s_task_and_a_restart_takes_it_back(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "bot-1", &[System::NOOP]).await;
    let first = create(&app, noop("first")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    wait_status(&app, &first, "RUNNING").await;
    // The same announcement again, as the broker redelivers one an orchestrator applied but died
    // before acking: the bot did not restart. Events apply in order, so once the completion sent
    // after it is applied, so is the repeat.
    bot.send(bot.announcement.clone()).await;
    bot.complete(offer.task, vec![]).await;
    wait_status(&app, &first, "COMPLETE").await;
    assert_eq!(history(&app, &first).await, ["created", "assigned", "accepted", "completed"]);

    // A new session is a restart: what the bot held is lost and offered again.
    let second = create(&app, noop("second")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    wait_status(&app, &second, "RUNNING").await;
    let Event::BotOnline { bot: name, ip_address, systems, .. } = bot.announcement.clone() else {
        unreachable!("the announcement is a bot.online")
    };
    let session = Some(uuid::Uuid::now_v7());
    let slots = None;
    let batches = false;
    bot.send(Event::BotOnline {
        bot: name,
        ip_address,
        systems,
        session,
        slots,
        batches,
        at: Utc::now(),
    })
    .await;
    let again = bot.next_offer().await;
    assert_eq!((again.task.task_id, again.task.attempt), (offer.task.task_id, 2));
    assert_eq!(
        history(&app, &second).await,
        ["created", "assigned", "accepted", "bot_lost", "assigned"]
    );
}

async fn with_quorum_queues_a_task_flows_the_same(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.queue_type = QueueType::Quorum).await;
    let mut bot = ScriptedBot::online_with(&app, "bot-1", &[System::NOOP], QueueType::Quorum).await;
    for queue in ["botline.orchestrator.events", "botline.bot.bot-1", "botline.dead"] {
        assert_eq!(app.vhost.queue(queue).await.unwrap()["type"], "quorum", "{queue}");
    }
    let id = create(&app, noop("nap")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    bot.complete(offer.task, vec![]).await;
    wait_status(&app, &id, "COMPLETE").await;
    assert_eq!(history(&app, &id).await, ["created", "assigned", "accepted", "completed"]);
}

async fn oldest_first_by_priority_and_only_to_capable_bots(backend: Backend) {
    let app = spawn(backend).await;
    let n1 = create(&app, noop("n1")).await;
    let v1 = create(&app, json!({"description": "v1", "system": "VIVO360", "attachment": base64::engine::general_purpose::STANDARD.encode("name,email,login,profile\nA,a@x.io,a,agent\n")})).await;
    let n2 = create(&app, noop("n2")).await;
    let urgent =
        create(&app, json!({"description": "urgent", "system": "NOOP", "priority": 5})).await;
    let mut noop_bot = ScriptedBot::online(&app, "noop-bot", &[System::NOOP]).await;
    let mut vivo_bot = ScriptedBot::online(&app, "vivo-bot", &[System::VIVO360]).await;

    let first = noop_bot.next_offer().await;
    assert_eq!(first.task.task_id.to_string(), urgent, "priority first");
    let vivo = vivo_bot.next_offer().await;
    assert_eq!(
        vivo.task.task_id.to_string(),
        v1,
        "the VIVO360 task goes to the only bot that runs it"
    );
    noop_bot.expect_silence(Duration::from_millis(500)).await;
    for expected in [&n1, &n2] {
        let previous = if expected == &n1 { first.task } else { noop_bot_task(&app, &n1).await };
        noop_bot.accept(previous).await;
        noop_bot.complete(previous, vec![]).await;
        let next = noop_bot.next_offer().await;
        assert_eq!(&next.task.task_id.to_string(), expected, "then the oldest");
    }
}

async fn noop_bot_task(app: &TestApp, id: &str) -> TaskRef {
    let task = app.get(&format!("/api/v1/tasks/{id}")).await.1;
    TaskRef { task_id: id.parse().unwrap(), attempt: task["attempt"].as_u64().unwrap() as u32 }
}

async fn a_rejected_or_ignored_offer_goes_to_the_next_bot(backend: Backend) {
    let app = spawn(backend).await;
    let mut a = ScriptedBot::online(&app, "bot-a", &[System::NOOP]).await;
    let mut b = ScriptedBot::online(&app, "bot-b", &[System::NOOP]).await;
    let id = create(&app, noop("hot potato")).await;

    // Whichever bot gets it first rejects it; the other gets attempt 2 and ignores it; once the
    // offer expires, the first gets attempt 3.
    let (first, second) = tokio::select! {
        offer = a.next_offer() => { a.send(Event::TaskRejected { task: offer.task, bot: a.name.clone(), reason: "busy".into(), at: Utc::now() }).await; (&mut a, &mut b) }
        offer = b.next_offer() => { b.send(Event::TaskRejected { task: offer.task, bot: b.name.clone(), reason: "busy".into(), at: Utc::now() }).await; (&mut b, &mut a) }
    };
    let offer = second.next_offer().await;
    assert_eq!(offer.task.attempt, 2);
    let offer = first.next_offer().await;
    assert_eq!(offer.task.attempt, 3, "after the ignored offer expired");
    first.accept(offer.task).await;
    first.complete(offer.task, vec![]).await;
    wait_status(&app, &id, "COMPLETE").await;
    assert_eq!(
        history(&app, &id).await,
        [
            "created",
            "assigned",
            "rejected",
            "assigned",
            "offer_expired",
            "assigned",
            "accepted",
            "completed"
        ]
    );
    let task = app.get(&format!("/api/v1/tasks/{id}")).await.1;
    assert_eq!(
        (&task["attempt"], &task["failures"]),
        (&json!(3), &json!(0)),
        "rejects and ignores use no attempts"
    );
}

/// The broker went away (every connection closed) after an offer: whatever the bot answered
/// meanwhile waits in the events queue, so the offer does not expire until the event consumer has
/// heard for a whole offer timeout since it came back, however old the offer is.
async fn an_offer_expires_only_once_the_consumer_has_heard_for_its_timeout(backend: Backend) {
    const TIMEOUT: Duration = Duration::from_secs(600);
    // The sweeps never reach the timeout: the test gives the times itself.
    let app = TestApp::spawn_with(backend, |config| config.offer_timeout = TIMEOUT).await;
    let mut bot = ScriptedBot::online(&app, "far-away", &[System::NOOP]).await;
    let id = create(&app, noop("answered while nobody listened")).await;
    let offer = bot.next_offer().await;
    let hearing = app.pipeline.hearing();
    let before = hearing.heard_since().expect("the consumer hears");
    assert!(app.vhost.close_connections(4).await.unwrap() >= 4);
    wait_until!(
        "the event consumer subscribed again",
        hearing.heard_since().is_some_and(|since| since > before)
    );
    let heard_since = hearing.heard_since().unwrap();
    let timeout = chrono::Duration::from_std(TIMEOUT).unwrap();
    let expired = offer.offer_expires_at + chrono::Duration::milliseconds(1);
    assert!(heard_since + timeout > expired, "it came back after the offer was made");
    assert_eq!(
        app.pipeline.expire_offers(expired).await.unwrap(),
        0,
        "past the offer's expiry, but the consumer has not heard for a whole timeout"
    );
    assert_eq!(task_status(&app, &id).await, "ASSIGNED");
    let heard_enough = heard_since + timeout + chrono::Duration::milliseconds(1);
    assert_eq!(app.pipeline.expire_offers(heard_enough).await.unwrap(), 1);
    assert_eq!(history(&app, &id).await, ["created", "assigned", "offer_expired"]);
}

async fn bot_row(app: &TestApp, name: &str) -> Value {
    app.get(&format!("/api/v1/bots?name={name}")).await.1["items"][0].clone()
}

/// A bot with three slots is offered three tasks at once, is AVAILABLE until the third and
/// BUSY with it, shows what it holds, gets the next task as soon as one ends, and each of its
/// attempts is fenced on its own.
async fn a_bot_with_slots_holds_as_many_tasks_and_each_is_fenced(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online_with_slots(&app, "wide", &[System::NOOP], 3).await;
    assert_eq!(bot_row(&app, "wide").await["slots"], 3);
    let tasks: Vec<Value> = (0..5).map(|n| noop(&format!("nap {n}"))).collect();
    let (status, created) = app.post("/api/v1/tasks/bulk", &json!({ "tasks": tasks })).await;
    assert_eq!(status, 201, "{created}");
    let mut offers = Vec::new();
    for _ in 0..3 {
        offers.push(bot.next_offer().await);
    }
    let mut offered: Vec<String> = offers.iter().map(|o| o.task.task_id.to_string()).collect();
    offered.sort();
    offered.dedup();
    assert_eq!(offered.len(), 3, "three different tasks");
    let row = bot_row(&app, "wide").await;
    assert_eq!((&row["status"], &row["slots_used"]), (&json!("BUSY"), &json!(3)), "{row}");
    let mut held: Vec<String> = row["task_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    held.sort();
    assert_eq!(held, offered, "the API shows the tasks it holds");
    assert!(offered.contains(&row["current_task_id"].as_str().unwrap().to_owned()));
    bot.expect_silence(Duration::from_millis(500)).await;

    for offer in &offers {
        bot.accept(offer.task).await;
    }
    bot.complete(offers[0].task, vec![]).await;
    let fourth = bot.next_offer().await;
    assert!(!offered.contains(&fourth.task.task_id.to_string()), "a new task for the freed slot");
    // The completed attempt reported again, and a report about another attempt of a held task:
    // nothing changes.
    bot.complete(offers[0].task, vec![]).await;
    let stale = TaskRef { attempt: offers[1].task.attempt + 1, ..offers[1].task };
    bot.send(Event::TaskCompleted {
        task: stale,
        bot: bot.name.clone(),
        rows: vec![],
        output: None,
        log: None,
        at: Utc::now(),
    })
    .await;
    let second = offers[1].task.task_id.to_string();
    wait_until!(
        "the stale report recorded",
        history(&app, &second).await.contains(&"stale_event".to_owned())
    );
    assert_eq!(task_status(&app, &second).await, "RUNNING");
    bot.accept(fourth.task).await;
    for task in [offers[1].task, offers[2].task, fourth.task] {
        bot.complete(task, vec![]).await;
    }
    let fifth = bot.next_offer().await;
    bot.accept(fifth.task).await;
    bot.complete(fifth.task, vec![]).await;
    for task in created["tasks"].as_array().unwrap() {
        let id = task["id"].as_str().unwrap();
        wait_status(&app, id, "COMPLETE").await;
        let kinds = history(&app, id).await;
        assert_eq!(kinds.iter().filter(|k| *k == "completed").count(), 1, "{id}: {kinds:?}");
    }
    wait_until!("every slot free", bot_row(&app, "wide").await["slots_used"] == 0);
    let row = bot_row(&app, "wide").await;
    assert_eq!((&row["status"], &row["task_ids"]), (&json!("AVAILABLE"), &json!([])));
}

/// A bot of 2,500 slots comes online before 2,400 waiting tasks: its announcement's batch offers
/// a pass's cap (1,000) and wakes the dispatcher, whose passes go on one after the other until
/// every task is offered once. The sweep runs once an hour here, so nothing else could offer
/// the rest. On PostgreSQL the bot's heartbeats (every 100 ms, each a batch holding its shard)
/// made the dispatcher's passes skip it and stop, until passes that left free bots out went on
/// once the shard was free (this test found it).
async fn a_backlog_larger_than_a_pass_is_offered_pass_after_pass(backend: Backend) {
    const TASKS: usize = 2_400;
    let app = TestApp::spawn_with(backend, |config| {
        config.offer_timeout = Duration::from_secs(120);
        config.sweep_interval = Duration::from_secs(3600);
    })
    .await;
    for chunk in (0..TASKS).collect::<Vec<_>>().chunks(1000) {
        let tasks: Vec<Value> = chunk.iter().map(|n| noop(&format!("backlog {n}"))).collect();
        let (status, created) = app.post("/api/v1/tasks/bulk", &json!({ "tasks": tasks })).await;
        assert_eq!(status, 201, "{created}");
    }
    let mut bot = ScriptedBot::online_with_slots(&app, "deep", &[System::NOOP], 2_500).await;
    let mut offered = std::collections::HashSet::new();
    for _ in 0..TASKS {
        let offer = bot.next_offer().await;
        assert!(offered.insert(offer.task.task_id), "offered twice: {offer:?}");
    }
    wait_until!("the bot holds them all", bot_row(&app, "deep").await["slots_used"] == TASKS);
    assert!(
        bot.deliveries.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "at most 1,000 offers a message"
    );
    assert_eq!(app.total("/api/v1/tasks?status=ASSIGNED").await, TASKS as u64);
}

/// A bot lost holding three tasks (two running, one offered) gives all three back, each counted
/// once: the runs as failures, the offer as unanswered.
async fn a_lost_bot_with_slots_gives_back_every_task_once(backend: Backend) {
    let app = spawn(backend).await;
    let mut lost = ScriptedBot::online_with_slots(&app, "lost", &[System::NOOP], 3).await;
    let ids = [
        create(&app, noop("a")).await,
        create(&app, noop("b")).await,
        create(&app, noop("c")).await,
    ];
    let offers = [lost.next_offer().await, lost.next_offer().await, lost.next_offer().await];
    lost.accept(offers[0].task).await;
    lost.accept(offers[1].task).await;
    for offer in &offers[..2] {
        wait_status(&app, &offer.task.task_id.to_string(), "RUNNING").await;
    }
    lost.go_silent();
    wait_until!(
        "the silent bot is lost",
        app.get("/api/v1/bots?name=lost&status=UNAVAILABLE").await.1["total"] == 1
    );
    for id in &ids {
        assert_eq!(task_status(&app, id).await, "WAITING", "{id}");
        let kinds = history(&app, id).await;
        assert_eq!(kinds.iter().filter(|k| *k == "bot_lost").count(), 1, "{id}: {kinds:?}");
    }
    let mut counts = Vec::new();
    for offer in &offers {
        let task = app.get(&format!("/api/v1/tasks/{}", offer.task.task_id)).await.1;
        counts.push((
            task["failures"].clone(),
            task["unanswered_offers"].clone(),
            task["attempt"].clone(),
        ));
    }
    assert_eq!(counts[..2], [(json!(1), json!(0), json!(1)), (json!(1), json!(0), json!(1))]);
    // The offer never answered: every offer of it counts as unanswered (it may have expired
    // and gone back to the silent bot before the bot was found lost), none as a failed run.
    assert_eq!((&counts[2].0, &counts[2].1), (&json!(0), &counts[2].2), "{counts:?}");
    assert_eq!(bot_row(&app, "lost").await["slots_used"], 0);

    let mut rescuer = ScriptedBot::online_with_slots(&app, "rescuer", &[System::NOOP], 8).await;
    let mut again = Vec::new();
    for _ in 0..3 {
        let offer = rescuer.next_offer().await;
        rescuer.accept(offer.task).await;
        rescuer.complete(offer.task, vec![]).await;
        again.push(offer.task.task_id.to_string());
    }
    again.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(again, expected);
    for id in &ids {
        wait_status(&app, id, "COMPLETE").await;
    }
}

/// Of the tasks a live multi-slot bot runs, the one its heartbeats stop mentioning is taken
/// back alone; the others go on.
async fn a_task_a_multi_slot_bot_drops_is_taken_back_alone(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online_with_slots(&app, "juggler", &[System::NOOP], 2).await;
    let kept = create(&app, noop("kept")).await;
    let dropped = create(&app, noop("dropped")).await;
    let offers = [bot.next_offer().await, bot.next_offer().await];
    for offer in &offers {
        bot.accept(offer.task).await;
    }
    wait_status(&app, &kept, "RUNNING").await;
    wait_status(&app, &dropped, "RUNNING").await;
    let dropped_ref = offers.iter().find(|o| o.task.task_id.to_string() == dropped).unwrap().task;
    bot.holding.lock().unwrap().retain(|t| *t != dropped_ref);
    wait_until!("the dropped task taken back", task_status(&app, &dropped).await != "RUNNING");
    let kinds = history(&app, &dropped).await;
    assert!(kinds.contains(&"bot_lost".to_owned()), "{kinds:?}");
    assert_eq!(task_status(&app, &kept).await, "RUNNING", "the other run goes on");
    let again = bot.next_offer().await;
    assert_eq!((again.task.task_id, again.task.attempt), (dropped_ref.task_id, 2));
}

/// A bot that reads offers together gets the offers of one pass in one message, and may report
/// several events in one message, or a completion alone (its acceptance implied): every task
/// ends COMPLETE once, with a whole history.
async fn offers_and_events_travel_together_and_a_completion_implies_the_acceptance(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let tasks: Vec<Value> = (0..4).map(|n| noop(&format!("nap {n}"))).collect();
    let (status, created) = app.post("/api/v1/tasks/bulk", &json!({ "tasks": tasks })).await;
    assert_eq!(status, 201, "{created}");
    let mut bot = ScriptedBot::online_with_slots(&app, "wide", &[System::NOOP], 4).await;
    let offers = [
        bot.next_offer().await,
        bot.next_offer().await,
        bot.next_offer().await,
        bot.next_offer().await,
    ];
    assert_eq!(
        bot.deliveries.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "four offers of one pass in one message"
    );
    // Two accepted and completed in one bot.events message.
    let events: Vec<Event> = offers[..2]
        .iter()
        .flat_map(|offer| {
            [
                Event::TaskAccepted { task: offer.task, bot: bot.name.clone(), at: Utc::now() },
                Event::TaskCompleted {
                    task: offer.task,
                    bot: bot.name.clone(),
                    rows: vec![],
                    output: Some(json!({"n": 1})),
                    log: None,
                    at: Utc::now(),
                },
            ]
        })
        .collect();
    let (key, body) = messages::encode_events(&bot.name, &events);
    assert_eq!(key, messages::EVENTS_TYPE);
    bot.publisher.publish(EVENTS_EXCHANGE, key, &body, false).await.unwrap();
    // The other two completed without a word before: the completion implies the acceptance.
    bot.complete(offers[2].task, vec![]).await;
    bot.complete(offers[3].task, vec![]).await;
    for offer in &offers {
        let id = offer.task.task_id.to_string();
        let done = wait_status(&app, &id, "COMPLETE").await;
        assert!(done["started_at"].is_string(), "{done}");
        assert_eq!(history(&app, &id).await, ["created", "assigned", "accepted", "completed"]);
    }
    let (_, events) = app.get(&format!("/api/v1/tasks/{}/events", offers[3].task.task_id)).await;
    assert_eq!(events[2]["detail"]["implied_by"], "completed", "{events}");
    wait_until!("every slot free", bot_row(&app, "wide").await["slots_used"] == 0);
}

async fn a_lost_bot_s_task_resumes_elsewhere_and_its_late_events_change_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let csv = "name,email,login,profile\nA,a@x.io,a,agent\nB,b@x.io,b,agent\nC,c@x.io,c,agent\n";
    let mut lost = ScriptedBot::online(&app, "lost", &[System::NOOP]).await;
    let id = create(&app, json!({"description": "rows", "system": "NOOP", "attachment": base64::engine::general_purpose::STANDARD.encode(csv)})).await;
    let offer = lost.next_offer().await;
    assert_eq!(offer.resume_after_row, 0);
    lost.accept(offer.task).await;
    let row = |n, status| RowOutcome { row: n, status, message: format!("row {n}") };
    lost.send(Event::TaskProgress {
        task: offer.task,
        bot: lost.name.clone(),
        rows: vec![row(1, RowStatus::Done), row(2, RowStatus::Done)],
        at: Utc::now(),
    })
    .await;
    wait_until!(
        "2 rows reported",
        app.get(&format!("/api/v1/tasks/{id}")).await.1["progress"]["done"] == 2
    );
    lost.go_silent();
    wait_until!(
        "the silent bot is lost",
        app.get("/api/v1/bots?name=lost&status=UNAVAILABLE").await.1["total"] == 1
    );
    assert_eq!(task_status(&app, &id).await, "WAITING");

    let mut rescuer = ScriptedBot::online(&app, "rescuer", &[System::NOOP]).await;
    let again = rescuer.next_offer().await;
    assert_eq!(
        (again.task.attempt, again.resume_after_row),
        (2, 2),
        "resumes after the rows already reported"
    );
    rescuer.accept(again.task).await;
    wait_status(&app, &id, "RUNNING").await;

    // The lost bot wakes up and reports its old attempt: recorded, ignored, and told to stop.
    lost.send(Event::TaskProgress {
        task: offer.task,
        bot: lost.name.clone(),
        rows: vec![row(3, RowStatus::Rejected)],
        at: Utc::now(),
    })
    .await;
    match lost.next().await {
        Command::CancelTask { task, .. } => assert_eq!(task, offer.task),
        other => panic!("expected a cancel, got {other:?}"),
    }
    lost.complete(offer.task, vec![row(3, RowStatus::Rejected)]).await;
    rescuer.complete(again.task, vec![row(3, RowStatus::Done)]).await;
    let done = wait_status(&app, &id, "COMPLETE").await;
    assert_eq!(done["result"]["rows_total"], 3);
    assert_eq!(
        done["result"]["rows_ok"], 3,
        "the stale REJECTED for row 3 was not applied: {}",
        done["result"]
    );
    assert_eq!(done["failures"], 1, "the lost run counts as a failure");
    let kinds = history(&app, &id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "stale_event").count(), 2, "{kinds:?}");
    assert!(kinds.contains(&"bot_lost".to_owned()));
}

async fn retryable_failures_back_off_then_fail_for_good(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "flaky", &[System::NOOP]).await;
    let id =
        create(&app, json!({"description": "doomed", "system": "NOOP", "max_attempts": 2})).await;
    for attempt in 1..=2 {
        let offer = bot.next_offer().await;
        assert_eq!(offer.task.attempt, attempt);
        bot.accept(offer.task).await;
        bot.send(Event::TaskFailed {
            task: offer.task,
            bot: bot.name.clone(),
            rows: vec![],
            error: format!("portal down ({attempt})"),
            retryable: true,
            log: Some(format!("connecting to the portal\nportal down ({attempt})\n")),
            at: Utc::now(),
        })
        .await;
    }
    let failed = wait_status(&app, &id, "FAILED").await;
    assert_eq!((&failed["error"], &failed["failures"]), (&json!("portal down (2)"), &json!(2)));
    let (_, events) = app.get(&format!("/api/v1/tasks/{id}/events")).await;
    let first_failure = events.as_array().unwrap().iter().find(|e| e["kind"] == "failed").unwrap();
    assert!(
        first_failure["detail"]["retry_at"].is_string(),
        "the first failure scheduled a retry: {first_failure}"
    );
    assert_eq!(
        first_failure["detail"]["log"], "connecting to the portal\nportal down (1)\n",
        "the attempt's log is kept with it: {first_failure}"
    );

    // A fatal failure ends the task at once.
    let fatal = create(&app, noop("bad input")).await;
    let offer = bot.next_offer().await;
    bot.send(Event::TaskFailed {
        task: offer.task,
        bot: bot.name.clone(),
        rows: vec![],
        error: "bad input".into(),
        retryable: false,
        log: None,
        at: Utc::now(),
    })
    .await;
    assert_eq!(wait_status(&app, &fatal, "FAILED").await["failures"], 1);
    // And the retry endpoint gives it a fresh budget.
    let (status, retried) = app.post(&format!("/api/v1/tasks/{fatal}/retry"), &json!({})).await;
    assert_eq!(
        (status, &retried["status"], &retried["failures"]),
        (200, &json!("WAITING"), &json!(0))
    );
    assert_eq!(bot.next_offer().await.task.task_id.to_string(), fatal);
}

async fn cancelling_a_running_task_stops_its_bot(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "worker", &[System::NOOP]).await;
    let id = create(&app, noop("long")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    wait_status(&app, &id, "RUNNING").await;
    let (status, cancelled) = app.post(&format!("/api/v1/tasks/{id}/cancel"), &json!({})).await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("CANCELLED")));
    match bot.next().await {
        Command::CancelTask { task, .. } => assert_eq!(task, offer.task),
        other => panic!("expected a cancel, got {other:?}"),
    }
    assert_eq!(app.get("/api/v1/bots?name=worker").await.1["items"][0]["status"], "AVAILABLE");
    // Its late completion changes nothing.
    bot.complete(offer.task, vec![]).await;
    wait_until!(
        "stale completion recorded",
        history(&app, &id).await.last().map(String::as_str) == Some("stale_event")
    );
    assert_eq!(task_status(&app, &id).await, "CANCELLED");
}

async fn a_run_past_its_maximum_run_time_fails_and_its_bot_is_told_to_stop(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "stuck", &[System::NOOP]).await;
    let body = json!({"description": "hangs", "system": "NOOP", "payload": {}, "max_run_seconds": 1, "max_attempts": 2});
    let id = create(&app, body).await;
    for attempt in 1..=2 {
        let offer = bot.next_offer().await;
        assert_eq!(offer.task.attempt, attempt);
        bot.accept(offer.task).await;
        // It never ends: past its second, the run fails and the bot is told to stop. A heartbeat
        // that still names the run, applied just after the sweep, may add a stop of its own
        // ("no longer current"), and the two stops may leave in either order.
        let mut stops = Vec::new();
        loop {
            match bot.next().await {
                Command::CancelTask { task, reason } => {
                    assert_eq!(task, offer.task);
                    stops.push(reason.clone());
                    if reason.contains("maximum run time of 1 s") {
                        break;
                    }
                    assert!(
                        reason.contains("no longer current") && stops.len() < 4,
                        "unexpected stops: {stops:?}"
                    );
                }
                other => panic!("expected a stop, got {other:?}"),
            }
        }
        // It stops, as told: its heartbeats hold nothing again.
        bot.holding.lock().unwrap().clear();
        let path = format!("/api/v1/tasks/{id}");
        wait_until!("the run failed", app.get(&path).await.1["failures"] == attempt);
        let accepted = history(&app, &id).await.iter().filter(|k| *k == "accepted").count();
        assert_eq!(accepted, attempt as usize, "each run was accepted, then failed");
    }
    // Two runs failed: out of attempts. (Its heartbeats, holding nothing, brought it back.)
    let failed = wait_status(&app, &id, "FAILED").await;
    assert!(failed["error"].as_str().unwrap().contains("maximum run time"), "{failed}");
    let kinds = history(&app, &id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "failed").count(), 2, "{kinds:?}");
}

async fn a_task_its_bot_no_longer_mentions_is_taken_back_as_a_failed_run(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "forgetful", &[System::NOOP]).await;
    let id = create(&app, noop("dropped")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    wait_status(&app, &id, "RUNNING").await;
    // It gives the task up without a word: its heartbeats go on, holding nothing.
    bot.holding.lock().unwrap().clear();
    let path = format!("/api/v1/tasks/{id}");
    wait_until!("the task taken back", app.get(&path).await.1["failures"] == 1);
    let events = app.get(&format!("{path}/events")).await.1;
    let lost = events.as_array().unwrap().iter().find(|e| e["kind"] == "bot_lost").unwrap();
    assert!(
        lost["detail"]["reason"].as_str().unwrap().contains("heartbeats said it held nothing"),
        "{lost}"
    );
    // It is alive and free, so the task comes back to it, as a new attempt.
    assert_eq!(bot.next_offer().await.task.attempt, 2);
}

async fn whatever_a_bot_reports_is_stored_or_ends_its_attempt(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.offer_timeout = Duration::from_millis(1500);
        config.sweep_interval = Duration::from_millis(200);
        config.retry_base = Duration::from_secs(60);
        config.bots.max_event_bytes = 4 * 1024 * 1024;
    })
    .await;
    let mut bot = ScriptedBot::online(&app, "odd", &[System::NOOP]).await;
    let nul = "success\u{0}";
    let big = "x".repeat(3 * 1024 * 1024);

    // A NUL and a 3 MB text in row messages, the output and an error: stored, replaced and marked.
    let csv = base64::engine::general_purpose::STANDARD.encode("a\n1\n2\n");
    let rows =
        create(&app, json!({"description": "rows", "system": "NOOP", "attachment": csv})).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    let outcome = |row, message: &str| RowOutcome {
        row,
        status: RowStatus::Done,
        message: message.to_owned(),
    };
    bot.complete(offer.task, vec![outcome(1, nul), outcome(2, &big)]).await;
    let done = wait_status(&app, &rows, "COMPLETE").await;
    let messages: Vec<&str> = done["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0], "success\u{FFFD} [NUL characters replaced]");
    assert!(
        messages[1].len() < 3_000 && messages[1].ends_with("[truncated: 3145728 bytes in all]")
    );

    let output = create(&app, noop("output")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    bot.send(Event::TaskCompleted {
        task: offer.task,
        bot: bot.name.clone(),
        rows: vec![],
        output: Some(json!({"message": nul})),
        log: None,
        at: Utc::now(),
    })
    .await;
    let done = wait_status(&app, &output, "COMPLETE").await;
    assert_eq!(done["result"]["message"], "success\u{FFFD}");

    let failing = create(&app, noop("error")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    bot.send(Event::TaskFailed {
        task: offer.task,
        bot: bot.name.clone(),
        rows: vec![],
        error: format!("{nul}{big}"),
        retryable: false,
        log: None,
        at: Utc::now(),
    })
    .await;
    let failed = wait_status(&app, &failing, "FAILED").await;
    assert!(
        failed["error"].as_str().unwrap().starts_with("success\u{FFFD}"),
        "{}",
        &failed["error"].as_str().unwrap()[..40]
    );

    // A report over the event cap is dead-lettered, and its attempt fails with the reason.
    let huge = create(&app, noop("huge")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    let blob = "y".repeat(5 * 1024 * 1024);
    bot.send(Event::TaskCompleted {
        task: offer.task,
        bot: bot.name.clone(),
        rows: vec![],
        output: Some(json!({"blob": blob})),
        log: None,
        at: Utc::now(),
    })
    .await;
    let path = format!("/api/v1/tasks/{huge}");
    wait_until!("the oversized report's attempt failed", app.get(&path).await.1["failures"] == 1);
    let task = app.get(&path).await.1;
    assert_eq!(task["status"], "WAITING", "a retryable failure: {task}");
    assert!(task["error"].as_str().unwrap().contains("over the 4194304-byte cap"), "{task}");
    let reasons = app.dead_letter_reasons(1).await;
    assert!(reasons[0].contains("over the 4194304-byte cap"), "{reasons:?}");
}

async fn a_bot_that_refuses_every_offer_is_offered_a_bounded_number_of_times(backend: Backend) {
    let app = spawn(backend).await;
    // It says it runs NOOP, and refuses every NOOP task (as a bot whose systems were edited
    // beyond what it can run does).
    let mut bot = ScriptedBot::online(&app, "refuser", &[System::NOOP]).await;
    let id = create(&app, noop("refused")).await;
    let started = tokio::time::Instant::now();
    let mut offers = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let Ok(Some(command)) =
            tokio::time::timeout(Duration::from_millis(200), bot.commands.recv()).await
        else {
            continue;
        };
        if let Command::AssignTask(offer) = command {
            offers += 1;
            bot.send(Event::TaskRejected {
                task: offer.task,
                bot: bot.name.clone(),
                reason: "busy".into(),
                at: Utc::now(),
            })
            .await;
        }
    }
    // The backoff doubles from 100 ms (retry_base here): about 5 offers in 3 s, not thousands.
    assert!((2..=8).contains(&offers), "{offers} offers in 3 s");
    let kinds = history(&app, &id).await;
    assert!(kinds.len() <= 2 + 2 * offers, "{} history rows for {offers} offers", kinds.len());
    let bot_row = &app.get("/api/v1/bots?name=refuser").await.1["items"][0];
    assert!(bot_row["unanswered_offers"].as_u64().unwrap() >= 2, "{bot_row}");
}

async fn a_bot_reporting_on_a_cancelled_attempt_is_told_to_stop_once(backend: Backend) {
    let app = spawn(backend).await;
    let mut bot = ScriptedBot::online(&app, "deaf", &[System::NOOP]).await;
    let id = create(&app, noop("to cancel")).await;
    let offer = bot.next_offer().await;
    bot.accept(offer.task).await;
    wait_status(&app, &id, "RUNNING").await;
    app.post(&format!("/api/v1/tasks/{id}/cancel"), &json!({})).await;
    assert!(matches!(bot.next().await, Command::CancelTask { .. }));
    // It does not listen: it reports progress on the cancelled attempt again and again.
    for row in 1..=20 {
        let rows = vec![RowOutcome { row, status: RowStatus::Done, message: String::new() }];
        bot.send(Event::TaskProgress {
            task: offer.task,
            bot: bot.name.clone(),
            rows,
            at: Utc::now(),
        })
        .await;
    }
    bot.complete(offer.task, vec![]).await;
    wait_until!(
        "the completion recorded",
        history(&app, &id).await.last().map(String::as_str) == Some("stale_event")
    );
    // One stop, and one history entry (the completion's), for twenty-one reports.
    bot.expect_silence(Duration::from_millis(700)).await;
    let kinds = history(&app, &id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "stale_event").count(), 1, "{kinds:?}");
    assert_eq!(task_status(&app, &id).await, "CANCELLED");
}

async fn an_offer_nobody_can_receive_goes_back_at_once(backend: Backend) {
    let app = spawn(backend).await;
    // Registered through the API as available, but never started: it has no queue.
    let (status, _) = app.post("/api/v1/bots", &json!({"name": "ghost", "ip_address": "10.9.9.9", "systems": ["NOOP"], "delivery": "amqp", "status": "AVAILABLE"})).await;
    assert_eq!(status, 201);
    let id = create(&app, noop("for nobody")).await;
    wait_until!(
        "ghost marked unavailable",
        app.get("/api/v1/bots?name=ghost&status=UNAVAILABLE").await.1["total"] == 1
    );
    let task = wait_status(&app, &id, "WAITING").await;
    assert_eq!(task["attempt"], 1);
    assert_eq!(history(&app, &id).await, ["created", "assigned", "offer_undeliverable"]);
    // A real bot then takes it.
    let mut bot = ScriptedBot::online(&app, "real", &[System::NOOP]).await;
    assert_eq!(bot.next_offer().await.task.attempt, 2);
}

async fn malformed_events_are_dead_lettered_and_the_consumer_goes_on(backend: Backend) {
    let app = spawn(backend).await;
    let shutdown = CancellationToken::new();
    let raw = garbage_publisher(&app, &shutdown);
    raw.publish(EVENTS_EXCHANGE, "task.completed", b"{\"v\":1,\"type\":\"task.completed\"", false)
        .await
        .unwrap();
    raw.publish(EVENTS_EXCHANGE, "bot.online", br#"{"v":9,"type":"bot.online"}"#, false)
        .await
        .unwrap();
    let reasons = app.dead_letter_reasons(2).await;
    assert!(reasons[0].contains("malformed message"), "{reasons:?}");
    assert!(reasons[1].contains("unsupported message version 9"), "{reasons:?}");
    // The consumer still applies good events.
    let _bot = ScriptedBot::online(&app, "after-garbage", &[System::NOOP]).await;
    shutdown.cancel();
}

async fn under_the_strict_sender_policy_a_bot_speaks_only_for_itself(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.event_senders = SenderPolicy::Strict;
    })
    .await;
    // Broker users are global: unique names per test.
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mallory = BotName::parse(&format!("mallory-{suffix}")).unwrap();
    let alice = BotName::parse(&format!("alice-{suffix}")).unwrap();
    let password = "mallory-password";
    app.vhost.create_user(&bot_user(&mallory), password, &bot_permissions(&mallory)).await.unwrap();
    let shutdown = CancellationToken::new();
    let as_mallory = Publisher::new(
        app.vhost.amqp_url_as(&bot_user(&mallory), password),
        "mallory",
        Topology::core().passive(),
        Duration::from_secs(10),
        shutdown.clone(),
    );
    let online = |bot: &BotName| {
        messages::encode(&Event::BotOnline {
            bot: bot.clone(),
            ip_address: "127.0.0.1".into(),
            systems: vec![System::NOOP],
            session: Some(uuid::Uuid::now_v7()),
            slots: None,
            batches: false,
            at: Utc::now(),
        })
    };
    // In alice's name: refused. In its own: applied.
    as_mallory.publish(EVENTS_EXCHANGE, "bot.online", &online(&alice), false).await.unwrap();
    as_mallory.publish(EVENTS_EXCHANGE, "bot.online", &online(&mallory), false).await.unwrap();
    // guest (the test's own user) is no bot at all.
    let as_guest = Publisher::new(
        app.vhost.amqp_url(),
        "guest",
        Topology::core(),
        Duration::from_secs(10),
        shutdown.clone(),
    );
    as_guest.publish(EVENTS_EXCHANGE, "bot.online", &online(&alice), false).await.unwrap();
    let reasons = app.dead_letter_reasons(2).await;
    let expected = bot_user(&alice);
    assert!(reasons.iter().all(|r| r.contains(&expected)), "{reasons:?}");
    assert!(reasons[0].contains(&bot_user(&mallory)), "{reasons:?}");
    assert!(reasons[1].contains("guest"), "{reasons:?}");
    let path = format!("/api/v1/bots?name={mallory}");
    wait_until!("mallory online", app.get(&path).await.1["total"] == 1);
    assert_eq!(app.get(&format!("/api/v1/bots?name={alice}")).await.1["total"], 0);
    shutdown.cancel();
}

/// An event that always fails internally (its task's row made corrupt by SQL: an unknown
/// status) is retried behind the others and ends in `botline.dead` after
/// `--max-message-failures` tries, with the count and the reason, while the events of another
/// bot and task are applied.
async fn an_event_that_always_fails_ends_dead_after_the_limit(backend: Backend, queue: QueueType) {
    let app = TestApp::spawn_with(backend, |config| {
        config.offer_timeout = Duration::from_millis(1500);
        config.sweep_interval = Duration::from_millis(200);
        config.heartbeat_interval = Duration::from_secs(1);
        config.queue_type = queue;
        config.max_message_failures = 3;
    })
    .await;
    let mut doomed = ScriptedBot::online_with(&app, "doomed", &[System::NOOP], queue).await;
    let first = create(&app, noop("its row goes bad")).await;
    let offer = doomed.next_offer().await;
    doomed.accept(offer.task).await;
    wait_status(&app, &first, "RUNNING").await;
    orchestrator::entity::task::Entity::update_many()
        .col_expr(
            orchestrator::entity::task::Column::Status,
            sea_orm::sea_query::Expr::value("BOGUS"),
        )
        .filter(orchestrator::entity::task::Column::Id.eq(offer.task.task_id))
        .exec(&app.db)
        .await
        .unwrap();
    doomed.complete(offer.task, vec![]).await;

    let mut healthy = ScriptedBot::online_with(&app, "healthy", &[System::NOOP], queue).await;
    let second = create(&app, noop("fine")).await;
    let offer = healthy.next_offer().await;
    healthy.accept(offer.task).await;
    healthy.complete(offer.task, vec![]).await;
    wait_status(&app, &second, "COMPLETE").await;

    let dead = app.vhost.dead_letters(1).await.unwrap();
    let reason = dead[0].reason.clone().unwrap_or_default();
    assert!(reason.starts_with("failed 3 times: "), "{reason}");
    assert!(reason.contains("BOGUS"), "the reason names the stored status: {reason}");
    assert_eq!(dead[0].failures, Some(3));
    assert_eq!(dead[0].routing_key, "task.completed");
    let event: Value = serde_json::from_slice(&dead[0].data).unwrap();
    assert_eq!(event["type"], "task.completed");
    assert_eq!(event["task_id"], first.as_str());
    assert_eq!(history(&app, &second).await, ["created", "assigned", "accepted", "completed"]);
}

async fn an_event_that_always_fails_ends_dead_after_the_limit_on_a_classic_queue(backend: Backend) {
    an_event_that_always_fails_ends_dead_after_the_limit(backend, QueueType::Classic).await;
}

async fn an_event_that_always_fails_ends_dead_after_the_limit_on_a_quorum_queue(backend: Backend) {
    an_event_that_always_fails_ends_dead_after_the_limit(backend, QueueType::Quorum).await;
}

on_every_backend!(
    a_task_flows_through_a_bot,
    metrics_follow_a_task_through_a_bot,
    the_dashboard_s_views_follow_tasks_and_dead_letters,
    bulk_tasks_run_in_the_order_given_with_whole_histories,
    a_repeated_bot_online_keeps_the_bot_s_task_and_a_restart_takes_it_back,
    with_quorum_queues_a_task_flows_the_same,
    oldest_first_by_priority_and_only_to_capable_bots,
    a_rejected_or_ignored_offer_goes_to_the_next_bot,
    an_offer_expires_only_once_the_consumer_has_heard_for_its_timeout,
    a_lost_bot_s_task_resumes_elsewhere_and_its_late_events_change_nothing,
    a_bot_with_slots_holds_as_many_tasks_and_each_is_fenced,
    a_lost_bot_with_slots_gives_back_every_task_once,
    a_backlog_larger_than_a_pass_is_offered_pass_after_pass,
    a_task_a_multi_slot_bot_drops_is_taken_back_alone,
    offers_and_events_travel_together_and_a_completion_implies_the_acceptance,
    retryable_failures_back_off_then_fail_for_good,
    cancelling_a_running_task_stops_its_bot,
    a_run_past_its_maximum_run_time_fails_and_its_bot_is_told_to_stop,
    a_bot_reporting_on_a_cancelled_attempt_is_told_to_stop_once,
    a_task_its_bot_no_longer_mentions_is_taken_back_as_a_failed_run,
    whatever_a_bot_reports_is_stored_or_ends_its_attempt,
    a_bot_that_refuses_every_offer_is_offered_a_bounded_number_of_times,
    an_offer_nobody_can_receive_goes_back_at_once,
    malformed_events_are_dead_lettered_and_the_consumer_goes_on,
    under_the_strict_sender_policy_a_bot_speaks_only_for_itself,
    an_event_that_always_fails_ends_dead_after_the_limit_on_a_classic_queue,
    an_event_that_always_fails_ends_dead_after_the_limit_on_a_quorum_queue,
);
