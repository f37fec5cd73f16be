//! Fault injection on the bot side, with real parts: bot agents as processes of their own (the
//! real binary) that the tests kill with SIGKILL, freeze with SIGSTOP or crash with a poison
//! task; the real orchestrator (in-process, SQLite, short timings: see [`World::start`]); the
//! real RabbitMQ (a vhost per test). Every wait is bounded, every count asserted exactly, and
//! each test prints the figures it saw (`--no-capture` shows them).
//!
//! - kill -9 a bot RUNNING a task, again and again under a steady load, replacing it under the
//!   same name or a new one: nothing lost, nothing completed twice, nothing left in flight; also
//!   with bots of 4 slots, each kill losing every task its bot held.
//! - SIGSTOP a bot past its heartbeats, then SIGCONT: its task went to another bot, and its late
//!   completion is refused (a `stale_event`); also a bot of 3 slots frozen with 3 tasks.
//! - A poison task (NOOP `"fail": "crash"`, which aborts the bot) restarted by a supervisor: FAILED
//!   after `max_attempts` crashes, while the other tasks flow; also when the dead bot left the
//!   poison offer unacknowledged in its queue (the next run of the bot refuses it).
//! - Garbage, wrong versions and a huge message on a bot's queue: dead-lettered with the reason.
//!
//! The kill test's length comes from `BOTLINE_CHAOS_KILLS` (default 5); the full run of issue 10:
//!
//! ```sh
//! BOTLINE_CHAOS_KILLS=50 cargo nextest run -p bot-agent --test chaos --no-capture
//! ```
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt as _;
use std::process::Child;
use std::time::Duration;

use bot_agent::automations::noop::FAULT_INJECTION;
use broker_config::messages::encode;
use broker_config::topology::bot_queue;
use broker_config::{BotName, Command, Event, System};
use common::world::World;
use common::{Harness, offer};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Kills of the kill test when `BOTLINE_CHAOS_KILLS` is not set.
const DEFAULT_KILLS: usize = 5;

/// How many mid-task kills the kill test makes.
fn chaos_kills() -> usize {
    match std::env::var("BOTLINE_CHAOS_KILLS") {
        Err(_) => DEFAULT_KILLS,
        Ok(text) => text
            .parse()
            .ok()
            .filter(|&kills| kills > 0)
            .unwrap_or_else(|| panic!("BOTLINE_CHAOS_KILLS={text}: expected a positive count")),
    }
}

/// Bot agent processes, each under the name it registered with; all killed when dropped, so a
/// failing test leaves none behind.
#[derive(Default)]
struct Fleet {
    bots: Vec<(String, Child)>,
    /// The slots each bot runs (`--slots`; 0 leaves the default, 1).
    slots: u32,
}

impl Fleet {
    /// Bots of `slots` slots each.
    fn with_slots(slots: u32) -> Fleet {
        Fleet { bots: Vec::new(), slots }
    }

    /// Starts `name` with fault injection on (a poison task may crash it).
    fn start(&mut self, world: &World, name: &str) {
        let mut command = world.bot_process(name, "noop");
        if self.slots > 0 {
            command.args(["--slots", &self.slots.to_string()]);
        }
        let child = command.env(FAULT_INJECTION, "1").spawn().expect("the bot-agent binary starts");
        self.bots.push((name.to_owned(), child));
    }

    fn names(&self) -> Vec<String> {
        self.bots.iter().map(|(name, _)| name.clone()).collect()
    }

    /// SIGKILLs the bot at `index` and reaps it.
    fn kill(&mut self, index: usize) -> String {
        let (name, mut child) = self.bots.remove(index);
        child.kill().unwrap();
        child.wait().unwrap();
        name
    }

    /// The bots that exited since last asked, with how: removed from the fleet.
    fn exited(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut gone = Vec::new();
        let mut index = 0;
        while index < self.bots.len() {
            match self.bots[index].1.try_wait().unwrap() {
                Some(status) => gone.push((self.bots.remove(index).0, status)),
                None => index += 1,
            }
        }
        gone
    }

    fn child(&self, name: &str) -> &Child {
        &self.bots.iter().find(|(n, _)| n == name).unwrap().1
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.bots {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` (`STOP`, `CONT`, …) to a bot process.
fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{signal} {}: {status}", child.id());
}

/// How many consumers `queue` has, now (a passive declare; the management API lags); 0 while
/// it does not exist.
async fn consumers(world: &World, queue: &str) -> u32 {
    let connection =
        broker_config::amqp::connect(&world.vhost.amqp_url(), "test-queue-check").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    // NOT_FOUND until the bot has declared its queue.
    let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await;
    let _ = connection.close(200, "checked".into()).await;
    declared.map_or(0, |queue| queue.consumer_count())
}

/// Every task, oldest first, page by page.
async fn all_tasks(world: &World) -> Vec<Value> {
    let mut tasks = Vec::new();
    let mut path = "/api/v1/tasks?order=oldest&limit=500".to_owned();
    loop {
        let page = world.get(&path).await;
        tasks.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/tasks?order=oldest&limit=500&cursor={cursor}"),
            None => return tasks,
        }
    }
}

/// Every bot.
async fn all_bots(world: &World) -> Vec<Value> {
    let page = world.get("/api/v1/bots?limit=500").await;
    assert!(page["next_cursor"].is_null(), "more than 500 bots");
    page["items"].as_array().unwrap().clone()
}

/// The bot named `name`, if it registered.
async fn bot_named(world: &World, name: &str) -> Option<Value> {
    world.get(&format!("/api/v1/bots?name={name}")).await["items"]
        .as_array()
        .unwrap()
        .first()
        .cloned()
}

/// How many tasks are in each status.
async fn stats(world: &World) -> Value {
    world.get("/api/v1/tasks/stats").await
}

fn count(stats: &Value, status: &str) -> u64 {
    stats[status].as_u64().unwrap_or(0)
}

/// The events of `kind` in a history.
fn of_kind<'a>(events: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["kind"] == kind)
}

/// Stale events about a report of this kind (`Completed`, `Accepted`, …).
fn stale_reports(events: &[Value], report: &str) -> usize {
    of_kind(events, "stale_event").filter(|e| e["detail"]["report"] == report).count()
}

/// The orchestrator's `--max-unanswered-offers` in these tests (its default).
const MAX_UNANSWERED: u64 = 5;

/// Checks a poison task ended FAILED, and says why on the task: its last bot restarted (the
/// supervisor was quick) or went silent (it was not), with every attempt used, or with every
/// offer lost unanswered. A bot starts a run before its acceptance is confirmed (a task done at
/// once reports its end alone), so a task that crashes its bot at once may never be accepted:
/// each crash then counts as an offer that ended without an outcome, and those are bounded too.
fn assert_poisoned(task: &Value, max_attempts: u64) {
    assert_eq!(task["status"], "FAILED", "{task}");
    let error = task["error"].as_str().unwrap_or_default();
    let ways = ["the bot restarted", "the bot stopped sending heartbeats"];
    let used = format!(" ({max_attempts} of {max_attempts} attempts used)");
    let unanswered = format!(
        "; offered {MAX_UNANSWERED} times without an answer (limit: --max-unanswered-offers {MAX_UNANSWERED})"
    );
    let runs_used = task["failures"] == max_attempts;
    let offers_used = task["unanswered_offers"] == MAX_UNANSWERED;
    assert!(runs_used || offers_used, "{task}");
    let expected: Vec<String> = ways
        .iter()
        .map(|way| format!("{way}{}", if runs_used { &used } else { &unanswered }))
        .collect();
    assert!(expected.contains(&error.to_owned()), "{task}");
}

/// Each crash of a poison task counted once: as a failed run, or as an offer unanswered.
fn counted(task: &Value) -> u64 {
    task["failures"].as_u64().unwrap() + task["unanswered_offers"].as_u64().unwrap()
}

/// The supervisor of the poison tests: restarts every bot that dies (of SIGABRT, as the poison
/// task makes it) under its name, until `poison` has FAILED (60 s at most, and no more crashes
/// than twice its attempts); then waits for the bots to be available, checking none dies any
/// more. Returns the crashes.
async fn supervise_until_failed(
    world: &World,
    fleet: &mut Fleet,
    poison: &str,
    max_attempts: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut crashes = 0;
    while world.task(poison).await["status"] != "FAILED" {
        for (name, status) in fleet.exited() {
            assert_eq!(status.signal(), Some(6), "{name} should have died of SIGABRT: {status}");
            crashes += 1;
            assert!(
                crashes <= max_attempts + MAX_UNANSWERED,
                "{crashes} crashes for a task allowed {max_attempts} attempts and {MAX_UNANSWERED} unanswered offers: {:#?}",
                world.events(poison).await
            );
            fleet.start(world, &name);
        }
        assert!(
            Instant::now() < deadline,
            "not FAILED in 60 s after {crashes} crashes: {:#?}",
            world.events(poison).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bots = fleet.bots.len();
    wait_until!("the bots available after the poison task failed", {
        let exited = fleet.exited();
        assert!(exited.is_empty(), "exited after the poison task had failed: {exited:?}");
        world.get("/api/v1/bots?status=AVAILABLE").await["total"] == bots
    });
    crashes
}

/// Submits NOOP tasks while fewer than `backlog` wait, until `stop`: a steady load that the
/// bots never run dry of, whatever their pace. Returns the ids of the tasks it created.
async fn keep_tasks_coming(api: String, backlog: u64, stop: CancellationToken) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut created = Vec::new();
    while !stop.is_cancelled() {
        let stats: Value = http
            .get(format!("{api}/api/v1/tasks/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if count(&stats, "WAITING") < backlog {
            // 300 to 900 ms of work: long enough to be killed in the middle of.
            let work = 300 + 150 * (created.len() as u64 % 5);
            let body = json!({
                "description": format!("load {}", created.len()),
                "system": "NOOP",
                "payload": {"duration_ms": work},
                // More than any task can lose to the kills: each must COMPLETE.
                "max_attempts": 20,
            });
            let response =
                http.post(format!("{api}/api/v1/tasks")).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 201);
            created
                .push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_mid_task_again_and_again_loses_nothing_and_completes_nothing_twice() {
    kill_nine_again_and_again(1).await;
}

/// The same with bots of 4 slots: each kill loses every task its bot held, and each is given
/// back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_of_bots_holding_several_tasks_loses_nothing_and_completes_nothing_twice() {
    kill_nine_again_and_again(4).await;
}

async fn kill_nine_again_and_again(slots: u32) {
    const BOTS: usize = 3;
    let kills = chaos_kills();
    let world = World::start(0).await;
    let mut fleet = Fleet::with_slots(slots);
    for n in 1..=BOTS {
        fleet.start(&world, &format!("chaos-{n}"));
    }
    wait_until!(
        "the bots online",
        world.get("/api/v1/bots?status=AVAILABLE").await["total"] == BOTS
    );
    let stop_load = CancellationToken::new();
    let backlog = BOTS as u64 * u64::from(slots);
    let load = tokio::spawn(keep_tasks_coming(world.api.clone(), backlog, stop_load.clone()));

    let began = Instant::now();
    // Per kill: the task and attempt that were running on the victim.
    let mut killed: Vec<(String, u64)> = Vec::new();
    let mut kills_per_task: HashMap<String, usize> = HashMap::new();
    let (mut after_the_task, mut same_name, mut new_name) = (0, 0, 0);
    let mut next_bot = BOTS + 1;
    while killed.len() < kills {
        assert!(
            killed.len() + after_the_task < 3 * kills,
            "{after_the_task} kills landed after the task ended: the tasks are too short"
        );
        // A bot of ours RUNNING a task; of those, in turn, the task killed least so far (the
        // kills spread over many tasks) and the one killed most, up to 4 times (some tasks go
        // through many attempts).
        let spread = killed.len().is_multiple_of(2);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (victim, task_id, attempt) = loop {
            let names: HashMap<String, String> = all_bots(&world)
                .await
                .iter()
                .map(|b| {
                    (b["id"].as_str().unwrap().to_owned(), b["name"].as_str().unwrap().to_owned())
                })
                .collect();
            let ours = fleet.names();
            let running = world.get("/api/v1/tasks?status=RUNNING&limit=500").await;
            let candidate = running["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|t| {
                    let bot = names.get(t["bot_id"].as_str()?)?;
                    let index = ours.iter().position(|n| n == bot)?;
                    let id = t["id"].as_str()?.to_owned();
                    Some((index, id, t["attempt"].as_u64()?))
                })
                .map(|(index, id, attempt)| {
                    let kills = kills_per_task.get(&id).copied().unwrap_or(0);
                    (if spread { kills } else { usize::MAX - kills }, index, id, attempt)
                })
                .filter(|(order, ..)| spread || *order > usize::MAX - 4)
                .min()
                .map(|(_, index, id, attempt)| (index, id, attempt));
            if let Some(found) = candidate {
                break found;
            }
            assert!(Instant::now() < deadline, "no bot of ours was running a task for 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let name = fleet.kill(victim);
        // Alternate the replacement: under the same name (a supervisor restarting the bot: its
        // bot.online tells the orchestrator at once, and it meets whatever its dead predecessor
        // left in the queue) and under a new name (the dead bot is only found by its silence).
        let replacement = if (killed.len() + after_the_task).is_multiple_of(2) {
            same_name += 1;
            name
        } else {
            new_name += 1;
            next_bot += 1;
            format!("chaos-{}", next_bot - 1)
        };
        fleet.start(&world, &replacement);
        // The killed attempt is given up (or it had ended just before the kill).
        wait_until!(format!("task {task_id} attempt {attempt} given up after the kill"), {
            let task = world.task(&task_id).await;
            !(task["status"] == "RUNNING" && task["attempt"] == attempt)
        });
        let events = world.events(&task_id).await;
        if of_kind(&events, "bot_lost").any(|e| e["attempt"] == attempt) {
            *kills_per_task.entry(task_id.clone()).or_default() += 1;
            killed.push((task_id, attempt));
        } else {
            after_the_task += 1;
        }
        wait_until!(format!("{replacement} online"), {
            bot_named(&world, &replacement)
                .await
                .is_some_and(|b| b["status"] == "AVAILABLE" || b["status"] == "BUSY")
        });
    }
    let kill_phase = began.elapsed();

    stop_load.cancel();
    let created = load.await.unwrap();
    let drain_started = Instant::now();
    wait_until!("every task ended", Duration::from_secs(60 + 2 * kills as u64), {
        let stats = stats(&world).await;
        ["WAITING", "ASSIGNED", "RUNNING"].iter().all(|s| count(&stats, s) == 0)
    });
    let drain = drain_started.elapsed();

    // 0 lost: every task created exists, and nothing else does.
    let tasks = all_tasks(&world).await;
    let stored: HashSet<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let submitted: HashSet<&str> = created.iter().map(String::as_str).collect();
    assert_eq!(stored, submitted, "the tasks stored are exactly those submitted");
    assert_eq!(tasks.len(), created.len());
    let mut offers = 0;
    let mut retried = 0;
    let mut max_attempt = 0;
    let mut lost_runs = 0;
    let mut stale: BTreeMap<String, usize> = BTreeMap::new();
    // The events off the straight path (bot_lost, rejected, offer_expired, …).
    let mut detours: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        let id = task["id"].as_str().unwrap();
        // Each task ends COMPLETE: none can run out of its 20 attempts with the kills spread.
        assert_eq!(task["status"], "COMPLETE", "{task}");
        let events = world.events(id).await;
        // 0 completed twice: one completion applied. A late one (from a bot presumed lost when
        // the machine is loaded: killed bots report nothing) would be a stale event, counted in
        // the figures.
        assert_eq!(of_kind(&events, "completed").count(), 1, "task {id}: {events:#?}");
        // Every attempt was offered once, in order, and the completion is the last attempt's.
        let attempt = task["attempt"].as_u64().unwrap();
        let assigned: Vec<u64> =
            of_kind(&events, "assigned").map(|e| e["attempt"].as_u64().unwrap()).collect();
        assert_eq!(assigned, (1..=attempt).collect::<Vec<_>>(), "task {id}: {events:#?}");
        assert_eq!(of_kind(&events, "completed").next().unwrap()["attempt"], attempt);
        // And each attempt before the last was taken back, once, for a reason on record.
        let taken_back =
            ["bot_lost", "rejected", "offer_expired", "offer_undeliverable", "released"]
                .iter()
                .map(|kind| of_kind(&events, kind).count() as u64)
                .sum::<u64>();
        assert_eq!(taken_back, attempt - 1, "task {id}: {events:#?}");
        // A run lost with its bot counts as a failed run; a lost offer does not.
        let failures = task["failures"].as_u64().unwrap() as usize;
        let killed_here = kills_per_task.get(id).copied().unwrap_or(0);
        let lost_here = of_kind(&events, "bot_lost").count();
        assert!((killed_here..=lost_here).contains(&failures), "task {id}: {events:#?}");
        offers += attempt;
        retried += usize::from(attempt > 1);
        max_attempt = max_attempt.max(attempt);
        lost_runs += of_kind(&events, "bot_lost").count();
        for event in of_kind(&events, "stale_event") {
            *stale.entry(event["detail"]["report"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        for event in &events {
            let kind = event["kind"].as_str().unwrap();
            if !["created", "assigned", "accepted", "progress", "completed"].contains(&kind) {
                let why = match event["detail"]["reason"].as_str() {
                    Some(reason) if kind == "rejected" => format!("rejected ({reason})"),
                    _ => kind.to_owned(),
                };
                *detours.entry(why).or_default() += 1;
            }
        }
    }
    // Each kill cost its task the attempt it killed, and a later one completed it.
    for (id, attempt) in &killed {
        let task = tasks.iter().find(|t| t["id"] == id.as_str()).unwrap();
        assert!(task["attempt"].as_u64().unwrap() > *attempt, "{task}");
    }
    assert!(lost_runs >= killed.len(), "{lost_runs} bot_lost events for {} kills", killed.len());
    // No bot was offered a task while it still held one (it would have refused it as busy).
    let refused: Vec<&String> = detours.keys().filter(|k| k.starts_with("rejected")).collect();
    assert!(refused.is_empty(), "offers refused: {detours:?}");
    // Nothing stuck: the live bots are free, the dead ones hold nothing.
    wait_until!("the live bots free", {
        let bots = all_bots(&world).await;
        bots.iter().filter(|b| b["status"] == "AVAILABLE").count() == BOTS
            && bots.iter().all(|b| b["current_task_id"].is_null())
    });
    let bots = all_bots(&world).await;
    assert_eq!(bots.len(), BOTS + new_name, "{bots:#?}");
    assert_eq!(bots.iter().filter(|b| b["status"] == "UNAVAILABLE").count(), new_name);

    eprintln!(
        "chaos kill -9 ({slots} slots per bot): {} mid-task kills (+{after_the_task} that landed after the task ended), \
         {same_name} replacements under the same name, {new_name} under a new one; {} tasks, all \
         COMPLETE, each completed once; {offers} offers in all ({retried} tasks needed more than \
         one, at most {max_attempt}); other events: {detours:?}; stale events by report: {stale:?}; \
         kills took {kill_phase:.1?}, then {drain:.1?} to drain",
        killed.len(),
        tasks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_frozen_past_its_heartbeats_loses_its_task_and_its_late_completion_is_refused() {
    // The task sleeps 2 s: the frozen bot's timer has run out when it is thawed, so the first
    // thing it does is report the completion of an attempt that is no longer its.
    const WORK: Duration = Duration::from_secs(2);
    let world = World::start(0).await;
    let mut fleet = Fleet::default();
    fleet.start(&world, "frozen");
    wait_until!("frozen online", bot_named(&world, "frozen").await.is_some());
    let frozen_id = bot_named(&world, "frozen").await.unwrap()["id"].clone();
    let id = world
        .create_task(json!({"description": "nap", "system": "NOOP", "payload": {"duration_ms": WORK.as_millis() as u64}}))
        .await;
    let running = world.wait_status(&id, "RUNNING").await;
    let accepted_at = Instant::now();
    assert_eq!(running["bot_id"], frozen_id);
    // The rescuer comes online only now, or it could have been offered the task first.
    world.spawn_bot(world.agent_config("rescuer", &[System::NOOP]));
    wait_until!(
        "rescuer online",
        bot_named(&world, "rescuer").await.is_some_and(|b| b["status"] == "AVAILABLE")
    );
    let rescuer_id = bot_named(&world, "rescuer").await.unwrap()["id"].clone();

    signal(fleet.child("frozen"), "STOP");
    let stopped = Instant::now();
    wait_until!("the task offered again", world.task(&id).await["attempt"] == 2);
    let lost_after = stopped.elapsed();
    let task = world.task(&id).await;
    assert_eq!(task["bot_id"], rescuer_id, "{task}");
    // Thawed once its 2 s are over (and never before the task went to the rescuer).
    tokio::time::sleep_until(accepted_at + WORK).await;
    signal(fleet.child("frozen"), "CONT");

    let done = world.wait_status(&id, "COMPLETE").await;
    assert_eq!((&done["attempt"], &done["bot_id"]), (&json!(2), &rescuer_id), "{done}");
    wait_until!(
        "the frozen bot's late completion recorded",
        stale_reports(&world.events(&id).await, "Completed") == 1
    );
    let events = world.events(&id).await;
    let kinds: Vec<(&str, u64)> = events
        .iter()
        .filter(|e| e["kind"] != "progress")
        .map(|e| (e["kind"].as_str().unwrap(), e["attempt"].as_u64().unwrap_or(0)))
        .collect();
    // The late report sits anywhere after the new offer; the rest is in this order.
    let without_stale: Vec<(&str, u64)> =
        kinds.iter().copied().filter(|(kind, _)| *kind != "stale_event").collect();
    assert_eq!(
        without_stale,
        [
            ("created", 0),
            ("assigned", 1),
            ("accepted", 1),
            ("bot_lost", 1),
            ("assigned", 2),
            ("accepted", 2),
            ("completed", 2),
        ],
        "{events:#?}"
    );
    let late: Vec<&Value> = of_kind(&events, "stale_event").collect();
    assert_eq!(late.len(), 1, "only the late completion is stale: {events:#?}");
    assert_eq!(
        (&late[0]["attempt"], &late[0]["bot_id"], &late[0]["detail"]["current_attempt"]),
        (&json!(1), &frozen_id, &json!(2)),
        "{late:#?}"
    );
    let lost = of_kind(&events, "bot_lost").next().unwrap();
    assert_eq!(lost["detail"]["reason"], "the bot stopped sending heartbeats");
    // Thawed, the frozen bot heartbeats again, holds nothing and is given work again.
    wait_until!(
        "the frozen bot available again",
        bot_named(&world, "frozen").await.is_some_and(|b| b["status"] == "AVAILABLE")
    );
    let next = world.create_task(json!({"description": "after", "system": "NOOP"})).await;
    world.wait_status(&next, "COMPLETE").await;
    eprintln!(
        "chaos SIGSTOP: the task was offered again {lost_after:.1?} after the bot froze; the \
         thawed bot's completion of attempt 1 was recorded as stale_event; completed once, by \
         attempt 2"
    );
}

/// A bot of 3 slots frozen while it runs 3 tasks: all 3 go to another bot, each completes once,
/// and each of the thawed bot's late completions is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_slot_bot_frozen_past_its_heartbeats_loses_every_task_once() {
    const WORK: Duration = Duration::from_secs(2);
    const SLOTS: u32 = 3;
    let world = World::start(0).await;
    let mut fleet = Fleet::with_slots(SLOTS);
    fleet.start(&world, "frozen");
    wait_until!("frozen online", bot_named(&world, "frozen").await.is_some());
    let frozen_id = bot_named(&world, "frozen").await.unwrap()["id"].clone();
    let mut ids = Vec::new();
    for n in 0..SLOTS {
        ids.push(world
            .create_task(json!({"description": format!("nap {n}"), "system": "NOOP", "payload": {"duration_ms": WORK.as_millis() as u64}}))
            .await);
    }
    for id in &ids {
        let running = world.wait_status(id, "RUNNING").await;
        assert_eq!(running["bot_id"], frozen_id, "the three run together on the frozen bot");
    }
    let accepted_at = Instant::now();
    let frozen = bot_named(&world, "frozen").await.unwrap();
    assert_eq!((&frozen["status"], &frozen["slots_used"]), (&json!("BUSY"), &json!(SLOTS)));
    let mut rescuer = world.agent_config("rescuer", &[System::NOOP]);
    rescuer.slots = SLOTS;
    world.spawn_bot(rescuer);
    wait_until!(
        "rescuer online",
        bot_named(&world, "rescuer").await.is_some_and(|b| b["status"] == "AVAILABLE")
    );
    let rescuer_id = bot_named(&world, "rescuer").await.unwrap()["id"].clone();

    signal(fleet.child("frozen"), "STOP");
    for id in &ids {
        wait_until!("the task offered again", world.task(id).await["attempt"] == 2);
    }
    tokio::time::sleep_until(accepted_at + WORK).await;
    signal(fleet.child("frozen"), "CONT");
    for id in &ids {
        let done = world.wait_status(id, "COMPLETE").await;
        assert_eq!((&done["attempt"], &done["bot_id"]), (&json!(2), &rescuer_id), "{done}");
        wait_until!(
            "the frozen bot's late completion recorded",
            stale_reports(&world.events(id).await, "Completed") == 1
        );
        let events = world.events(id).await;
        assert_eq!(of_kind(&events, "completed").count(), 1, "{events:#?}");
        assert_eq!(of_kind(&events, "bot_lost").count(), 1, "{events:#?}");
        assert_eq!(world.task(id).await["failures"], 1, "the lost run counted once");
    }
    wait_until!(
        "the frozen bot available again, holding nothing",
        bot_named(&world, "frozen")
            .await
            .is_some_and(|b| b["status"] == "AVAILABLE" && b["slots_used"] == 0)
    );
    eprintln!("chaos SIGSTOP ({SLOTS} slots): every task offered again once, completed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_task_that_crashes_its_bot_fails_after_max_attempts_and_others_flow() {
    const MAX_ATTEMPTS: u64 = 3;
    const OTHERS: usize = 12;
    let world = World::start(0).await;
    let mut fleet = Fleet::default();
    let workers = ["worker-1", "worker-2"];
    for name in workers {
        fleet.start(&world, name);
    }
    wait_until!(
        "the workers online",
        world.get("/api/v1/bots?status=AVAILABLE").await["total"] == 2
    );
    let began = Instant::now();
    let poison = world
        .create_task(json!({"description": "poison", "system": "NOOP", "payload": {"fail": "crash"}, "max_attempts": MAX_ATTEMPTS}))
        .await;
    let mut others = Vec::new();
    for n in 0..OTHERS {
        others.push(
            world
                .create_task(json!({"description": format!("other {n}"), "system": "NOOP", "payload": {"duration_ms": 100}}))
                .await,
        );
    }
    let crashes = supervise_until_failed(&world, &mut fleet, &poison, MAX_ATTEMPTS).await;
    // The queue kept flowing: the others were done meanwhile, or are being done.
    wait_until!("the other tasks done", count(&stats(&world).await, "COMPLETE") == OTHERS as u64);
    let elapsed = began.elapsed();
    let exited = fleet.exited();
    assert!(exited.is_empty(), "exited after the poison task had failed: {exited:?}");

    let task = world.task(&poison).await;
    assert_poisoned(&task, MAX_ATTEMPTS);
    // One count per crash: no run or offer was lost without being counted.
    assert_eq!(crashes, counted(&task), "crashes: {task}");
    let events = world.events(&poison).await;
    assert_eq!(of_kind(&events, "accepted").count() as u64, task["failures"], "{events:#?}");
    assert_eq!(of_kind(&events, "bot_lost").count() as u64, crashes, "{events:#?}");
    assert_eq!(of_kind(&events, "completed").count(), 0);
    // An offer a crash left unacknowledged is refused by the next run, never run by it.
    assert_eq!(stale_reports(&events, "Accepted"), 0, "{events:#?}");
    for id in &others {
        let events = world.events(id).await;
        assert_eq!(world.task(id).await["status"], "COMPLETE");
        assert_eq!(of_kind(&events, "completed").count(), 1, "{events:#?}");
    }
    let stale = of_kind(&events, "stale_event").count();
    eprintln!(
        "chaos poison: FAILED after {crashes} crashes ({} offers, {stale} stale answers), error \
         {}; the {OTHERS} other tasks completed; {elapsed:.1?} in all",
        task["attempt"], task["error"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_offer_a_dead_bot_left_unacknowledged_does_not_crash_its_successor_uncounted() {
    const MAX_ATTEMPTS: u64 = 3;
    // Offers stand for 30 s (10 s by default): long enough for the management API to show the
    // frozen bot's unacknowledged offer, which is then still valid when it is redelivered.
    let world = World::start_with(0, |c| c.offer_timeout = Duration::from_secs(30)).await;
    let mut fleet = Fleet::default();
    fleet.start(&world, "solo");
    let queue = bot_queue(&BotName::parse("solo").unwrap());
    // Online is not yet consuming: its consumer comes right after.
    wait_until!("solo consuming", consumers(&world, &queue).await == 1);
    // Frozen, the bot still holds its consumer: RabbitMQ pushes the offer into its socket, where
    // it stays unacknowledged until the bot dies and the broker redelivers it to the next run.
    signal(fleet.child("solo"), "STOP");
    let poison = world
        .create_task(json!({"description": "poison", "system": "NOOP", "payload": {"fail": "crash"}, "max_attempts": MAX_ATTEMPTS}))
        .await;
    // The management API's figures lag by up to 5 s.
    wait_until!("the offer in the frozen bot's hands", {
        world.vhost.queue(&queue).await.unwrap()["messages_unacknowledged"] == 1
    });
    fleet.kill(0);
    fleet.start(&world, "solo");
    let crashes = supervise_until_failed(&world, &mut fleet, &poison, MAX_ATTEMPTS).await;
    let task = world.task(&poison).await;
    assert_poisoned(&task, MAX_ATTEMPTS);
    // One count per crash, and one for the offer the killed bot held.
    assert_eq!(crashes + 1, counted(&task), "one count per lost offer or run: {task}");
    let events = world.events(&poison).await;
    // The offer the dead bot left was answered by its successor, not run: a refusal of an
    // attempt the restart had already taken back. (A crash may leave another one behind, when it
    // beats the ack of the offer it crashed on: refused the same way.)
    let late: Vec<&Value> = of_kind(&events, "stale_event").collect();
    assert!(late.iter().all(|e| e["detail"]["report"] == "Rejected"), "{events:#?}");
    assert!(late.iter().any(|e| e["attempt"] == 1), "{events:#?}");
    eprintln!(
        "chaos left-behind poison offer: FAILED after {crashes} crashes and {} offers; {} \
         redelivered offers refused, recorded as stale_event",
        task["attempt"],
        late.len()
    );
}

#[tokio::test]
async fn garbage_on_a_bot_s_queue_is_dead_lettered_with_its_reason_and_the_bot_keeps_working() {
    let mut h = Harness::start("chaos-garbage", |_| {}).await;
    let valid: Value =
        serde_json::from_slice(&encode(&Command::AssignTask(offer(System::NOOP, None, json!({})))))
            .unwrap();
    let mut wrong_version = valid.clone();
    wrong_version["v"] = json!(2);
    let mut unversioned = valid.clone();
    unversioned.as_object_mut().unwrap().remove("v");
    // A payload nested 100,000 deep: parsed recursively, it would overflow the stack.
    let text = serde_json::to_string(&valid).unwrap();
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep = text.replace(r#""payload":{}"#, &format!(r#""payload":{nested}"#));
    assert_ne!(deep, text);
    // 12 MiB (below RabbitMQ 4's 16 MiB message size limit): a huge body the bot reads whole.
    let huge =
        format!(r#"{{"v":1,"type":"task.assign","description":"{}"}}"#, "x".repeat(12 << 20));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("binary garbage", vec![0xff, 0xfe, 0x00, 0x9c, 0x80, 0x01], "malformed message: "),
        ("an empty body", Vec::new(), "malformed message: EOF while parsing"),
        (
            "a newer version",
            serde_json::to_vec(&wrong_version).unwrap(),
            "unsupported message version 2",
        ),
        (
            "no version",
            serde_json::to_vec(&unversioned).unwrap(),
            "malformed message: missing field `v`",
        ),
        (
            "an unknown command",
            br#"{"v":1,"type":"task.explode"}"#.to_vec(),
            "malformed message: unknown variant `task.explode`",
        ),
        ("nesting too deep", deep.into_bytes(), "malformed message: recursion limit exceeded"),
        ("a huge message", huge.into_bytes(), "malformed message: missing field"),
    ];
    for (_, body, _) in &cases {
        h.send_raw(body).await;
    }
    let dead = h.vhost.dead_letters(cases.len()).await.unwrap();
    for ((case, body, reason), letter) in cases.iter().zip(&dead) {
        assert_eq!(letter.data.len(), body.len(), "{case}: the body kept whole");
        assert!(letter.data == *body, "{case}: the body kept as it was");
        let got = letter.reason.as_deref().unwrap_or_default();
        assert!(got.starts_with(reason), "{case}: reason {got:?}, expected {reason:?}…");
        assert_eq!(letter.queue.as_deref(), Some(bot_queue(&h.name).as_str()), "{case}");
    }
    // Nothing was said about any of it, and the bot still takes tasks.
    let task = offer(System::NOOP, None, json!({"duration_ms": 1}));
    h.send(&Command::AssignTask(task.clone())).await;
    let events = h.until_final(task.task).await;
    assert!(matches!(events.last(), Some(Event::TaskCompleted { .. })), "{events:?}");
    let about_others: Vec<&Event> =
        h.seen.iter().filter(|e| e.task().is_some_and(|t| t != task.task)).collect();
    assert!(about_others.is_empty(), "{about_others:?}");
    h.stop().await;
    eprintln!(
        "chaos garbage: {} bad messages dead-lettered with their reasons ({} bytes the largest); \
         the bot then completed a task",
        dead.len(),
        dead.iter().map(|d| d.data.len()).max().unwrap_or(0)
    );
}
