//! Faults of the shared services, with real parts (the orchestrator and bot agents as processes,
//! as in `orchestrator_faults.rs`): RabbitMQ restarted again and again during load and all its
//! connections closed, bots of 3 slots each; PostgreSQL stopped for a while and started again.
//!
//! These stop services that every other test on the machine uses, so they never run in the
//! parallel suite: each is ignored, and runs alone, as root (for `rabbitmqctl` and
//! `pg_ctlcluster`), with nothing else running against those services:
//!
//! ```sh
//! cargo nextest run -p bot-agent --test service_faults --run-ignored only --test-threads 1 --no-capture
//! ```
//!
//! `BOTLINE_CHAOS_RABBITMQ_RESTARTS` sets the broker restarts (default 3; issue 10's full count is
//! 10); `BOTLINE_TEST_PG_CLUSTER` the PostgreSQL cluster (default `15 main`, as
//! `pg_ctlcluster 15 main stop` names it). Whatever happens, a test starts again what it stopped.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;
#[path = "orchestrator_faults/harness.rs"]
mod harness;

use std::process::Command;
use std::time::Duration;

use broker_config::topology::{DEAD_LETTER_QUEUE, ORCHESTRATOR_EVENTS_QUEUE};
use harness::{
    Api, Dice, Figures, Load, Site, Submitted, Timings, busy_rejections,
    check_every_task_completed_once, count, count_from_env, offers_to_busy_bots,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Not a test: the orchestrator process the fault tests spawn ([`harness::ENTRY`] names it).
/// Run by the suite, it returns at once.
#[test]
fn orchestrator_process_when_spawned_by_a_fault_test() {
    harness::run_orchestrator_if_spawned();
}

/// Runs a service's control command, which must succeed; how long it took.
fn control(program: &str, args: &[&str]) -> Duration {
    let began = std::time::Instant::now();
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run (these tests need root): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    began.elapsed()
}

/// The messages in `queue` of `vhost`, ready and unacknowledged, as the queue itself counts them
/// (`rabbitmqctl list_queues`; the management API's queue figures are samples, taken every 5 s,
/// and can miss a wait of a few seconds altogether).
fn queue_messages(vhost: &str, queue: &str) -> Result<u64, String> {
    let output = Command::new("rabbitmqctl")
        .args(["list_queues", "-p", vhost, "--quiet", "--no-table-headers", "name", "messages"])
        .output()
        .map_err(|e| format!("rabbitmqctl does not run: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    text.lines()
        .find_map(|line| {
            let mut fields = line.split('\t');
            (fields.next() == Some(queue)).then(|| fields.next()?.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no count for {queue} in {text:?}"))
}

/// Starts RabbitMQ's application again if the test stopped it and did not get to start it.
struct BrokerGuard {
    stopped: bool,
}

impl BrokerGuard {
    fn stop(&mut self) -> Duration {
        self.stopped = true;
        control("rabbitmqctl", &["stop_app"])
    }

    fn start(&mut self) -> Duration {
        let took = control("rabbitmqctl", &["start_app"]);
        self.stopped = false;
        took
    }
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if self.stopped {
            let _ = Command::new("rabbitmqctl").arg("start_app").status();
        }
    }
}

/// The PostgreSQL cluster, as `pg_ctlcluster` names it (version and name).
fn pg_cluster() -> Vec<String> {
    std::env::var("BOTLINE_TEST_PG_CLUSTER")
        .unwrap_or_else(|_| "15 main".into())
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Starts PostgreSQL again if the test stopped it and did not get to start it.
struct DatabaseGuard {
    stopped: bool,
}

impl DatabaseGuard {
    fn pg_ctlcluster(action: &str) -> Duration {
        let cluster = pg_cluster();
        let mut args: Vec<&str> = cluster.iter().map(String::as_str).collect();
        args.push(action);
        control("pg_ctlcluster", &args)
    }

    fn stop(&mut self) -> Duration {
        self.stopped = true;
        DatabaseGuard::pg_ctlcluster("stop")
    }

    fn start(&mut self) -> Duration {
        let took = DatabaseGuard::pg_ctlcluster("start");
        self.stopped = false;
        took
    }
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        if self.stopped {
            let mut args = pg_cluster();
            args.push("start".into());
            let _ = Command::new("pg_ctlcluster").args(args).status();
        }
    }
}

/// Waits (`limit` at most) until a task completes that had not when called; how long it took.
/// Answers other than 200 (the API is unready meanwhile) are waited through.
async fn until_a_task_completes(api: &Api, limit: Duration) -> Duration {
    let began = Instant::now();
    let mut before = None;
    loop {
        if let Ok((200, stats)) = api.try_get("/api/v1/tasks/stats").await {
            let now = count(&stats, "COMPLETE");
            match before {
                None => before = Some(now),
                Some(before) if now > before => return began.elapsed(),
                Some(_) => {}
            }
        }
        assert!(began.elapsed() < limit, "no task completed within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The common end: every task COMPLETE once, no double assignment, the events queue empty,
/// nothing dead-lettered, every bot free and running.
async fn check_the_end(
    site: &Site,
    api: &Api,
    bots: &mut [harness::BotProcess],
    submitted: &harness::Submissions,
) -> Figures {
    let tasks = api.all_tasks().await;
    let histories = api.histories(&tasks).await;
    check_every_task_completed_once(&tasks, &histories, submitted, false);
    let overlaps = offers_to_busy_bots(&histories, site.bot_slots as usize);
    assert!(overlaps.is_empty(), "bots offered a task while holding another: {overlaps:?}");
    assert_eq!(busy_rejections(&histories), 0, "a bot was offered a task while it ran another");
    site.wait_events_queue_empty(Duration::from_secs(60)).await;
    let dead = site.vhost.queue(DEAD_LETTER_QUEUE).await.unwrap();
    assert_eq!(dead["messages"].as_u64(), Some(0), "dead letters: {dead}");
    wait_until!("every bot AVAILABLE and holding nothing", Duration::from_secs(60), {
        let all = api.all_bots().await;
        all.len() == bots.len()
            && all.iter().all(|b| b["status"] == "AVAILABLE" && b["current_task_id"].is_null())
    });
    for bot in bots {
        bot.assert_running();
    }
    Figures::of(&tasks, &histories)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops a shared service: run alone (see the file's documentation)"]
async fn rabbitmq_restarted_again_and_again_during_load_and_every_task_completes() {
    const BOTS: usize = 3;
    let restarts = count_from_env("BOTLINE_CHAOS_RABBITMQ_RESTARTS", 3);
    let mut dice = Dice::seeded();
    // docs/architecture.md's heartbeats and offer timeout: a broker restart takes seconds, and a bot that
    // cannot publish for that long must not be taken for lost.
    let timings = Timings {
        offer_timeout: 10.0,
        heartbeat_interval: 5.0,
        bot_heartbeat_ms: 1000,
        ..Timings::default()
    };
    let mut site = Site::create("broker-restart", timings).await;
    // Bots of several slots: each restart finds every bot holding several tasks, each to be
    // completed once; no bot is offered beyond its slots.
    site.bot_slots = 3;
    let orchestrator = site.spawn_orchestrator("orchestrator").await;
    let api = orchestrator.client();
    let mut bots = site.spawn_bots(&api, "bot", BOTS).await;
    let began = Instant::now();
    let load = Load::start(
        vec![orchestrator.api.clone()],
        2 * BOTS as u64 * u64::from(site.bot_slots),
        None,
    );
    let mut broker = BrokerGuard { stopped: false };
    // Per restart: stop_app's time, start_app's, and from start_app's return until a task
    // completed.
    let mut rounds: Vec<(Duration, Duration, Duration)> = Vec::new();
    for restart in 1..=restarts {
        until_a_task_completes(&api, Duration::from_secs(120)).await;
        tokio::time::sleep(dice.between(Duration::from_millis(100), Duration::from_secs(2))).await;
        let stopping = broker.stop();
        let starting = broker.start();
        let flowing = until_a_task_completes(&api, Duration::from_secs(180)).await;
        eprintln!(
            "restart {restart}: stop_app {stopping:.1?}, start_app {starting:.1?}, flowing again {flowing:.1?} later"
        );
        rounds.push((stopping, starting, flowing));
    }
    // Every connection closed at once, from the server's side.
    until_a_task_completes(&api, Duration::from_secs(120)).await;
    control("rabbitmqctl", &["close_all_connections", "--global", "botline fault test"]);
    let after_close = until_a_task_completes(&api, Duration::from_secs(180)).await;
    let submitted = load.stop().await;
    let drain = api.wait_drained(Duration::from_secs(180)).await;
    let figures = check_the_end(&site, &api, &mut bots, &submitted).await;
    eprintln!(
        "RabbitMQ restarted {restarts} times during load (stop_app, start_app, then until a task \
         completed): {rounds:.1?}; all connections closed: flowing again {after_close:.1?} later; \
         {} tasks submitted ({} without an answer), all COMPLETE once, every event applied; \
         {:.1?} in all, {drain:.1?} to drain; {figures}",
        submitted.created.len() + submitted.unknown.len(),
        submitted.unknown.len(),
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops a shared service: run alone (see the file's documentation)"]
async fn postgresql_stopped_a_while_answers_503_keeps_the_events_and_loses_nothing() {
    const BOTS: usize = 2;
    const TASKS: usize = 12;
    const DOWN: Duration = Duration::from_secs(8);
    // Offers and heartbeats outlast the outage (each request waits up to the pool's 10 s
    // acquire timeout meanwhile): this test is about the API and the events, not liveness.
    let timings = Timings { offer_timeout: 60.0, heartbeat_interval: 20.0, ..Timings::default() };
    let site = Site::create("db-down", timings).await;
    let orchestrator = site.spawn_orchestrator("orchestrator").await;
    let api = orchestrator.client();
    let mut bots = site.spawn_bots(&api, "bot", BOTS).await;
    // Tasks of 1.5 s: bots are in the middle of some when the database goes.
    let mut created = Vec::new();
    for n in 0..TASKS {
        let description = format!("task {n}");
        match api.submit_noop(&description, 1500).await {
            Submitted::Created(id) => created.push((description, id, api.base.clone())),
            other => panic!("{description}: {other:?}"),
        }
    }
    wait_until!("a task RUNNING", count(&api.stats().await, "RUNNING") > 0);
    let mut database = DatabaseGuard { stopped: false };
    let stopping = database.stop();
    let stopped_at = Instant::now();

    // While the API is asked, the events queue is watched: the bots go on and finish what they
    // run, and their events wait there, unacknowledged or requeued, never dead-lettered.
    let paths = ["/api/v1/tasks", "/api/v1/tasks/stats", "/api/v1/bots", "/readyz"];
    let asked = CancellationToken::new();
    let ask = async {
        let answers =
            futures_util::future::join_all(paths.iter().map(|path| api.try_get(path))).await;
        let answered_after = stopped_at.elapsed();
        tokio::time::sleep(DOWN.saturating_sub(answered_after)).await;
        asked.cancel();
        (answers, answered_after)
    };
    let watch = async {
        let (mut peak, mut readings, mut last_error) = (0, 0, None);
        while !asked.is_cancelled() {
            let vhost = site.vhost.name().to_owned();
            let count = tokio::task::spawn_blocking(move || {
                queue_messages(&vhost, ORCHESTRATOR_EVENTS_QUEUE)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match count {
                Ok(count) => {
                    readings += 1;
                    peak = peak.max(count);
                }
                Err(err) => last_error = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (peak, readings, last_error)
    };
    let ((answers, answered_after), (peak, readings, last_error)) = tokio::join!(ask, watch);
    // The API says the database is unavailable, in its own error format.
    for (path, answer) in paths.iter().zip(answers) {
        let (status, body) = answer.unwrap_or_else(|e| panic!("GET {path}: no answer: {e}"));
        assert_eq!(status, 503, "GET {path} while PostgreSQL is down: {body}");
        if *path == "/readyz" {
            assert_eq!(body["status"], "unready", "{body}");
        } else {
            assert_eq!(body["error"]["code"], "unavailable", "GET {path}: {body}");
            assert_eq!(body["error"]["message"], "database unavailable", "GET {path}: {body}");
        }
    }
    assert!(
        peak > 0,
        "no event waited in the queue while the database was down ({readings} readings of the \
         queue, last rabbitmqctl error: {last_error:?})"
    );
    let dead = site.vhost.queue(DEAD_LETTER_QUEUE).await.unwrap();
    assert_eq!(dead["messages"].as_u64(), Some(0), "an event was dead-lettered: {dead}");
    let starting = database.start();
    let down = stopped_at.elapsed();
    let flowing = until_a_task_completes(&api, Duration::from_secs(120)).await;
    let drain = api.wait_drained(Duration::from_secs(120)).await;
    let submitted = harness::Submissions { created, unknown: Vec::new() };
    let figures = check_the_end(&site, &api, &mut bots, &submitted).await;
    eprintln!(
        "PostgreSQL stopped ({stopping:.1?}) for {down:.1?} and started ({starting:.1?}): the API \
         answered 503 `unavailable` ({} requests, all answered {answered_after:.1?} after the \
         stop), up to {peak} events waited in the queue and none was dead-lettered; a task \
         completed {flowing:.1?} after the start, all {TASKS} COMPLETE once {drain:.1?} later; \
         {figures}",
        paths.len()
    );
}
