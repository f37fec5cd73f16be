//! Fault injection on the orchestrator's side, with real parts: the orchestrator as processes of
//! its own (this test binary running itself, see `orchestrator_faults/harness.rs`) that the tests
//! kill with SIGKILL or crash at a failpoint; bot agents as processes (the real binary) that keep
//! running through it all; the real RabbitMQ (a vhost per test) and the real PostgreSQL (a
//! database per test). Every wait is bounded, every count asserted exactly, and each test prints
//! its figures (`--no-capture` shows them).
//!
//! The kill test's length comes from `BOTLINE_CHAOS_ORCHESTRATOR_KILLS` (default 3), its kill
//! points from `BOTLINE_CHAOS_SEED` (printed by each run); the full run:
//!
//! ```sh
//! BOTLINE_CHAOS_ORCHESTRATOR_KILLS=20 cargo nextest run -p bot-agent --test orchestrator_faults --no-capture
//! ```
//!
//! Faults of the shared services (RabbitMQ restarted, PostgreSQL stopped) are in
//! `service_faults.rs`, which never runs in the parallel suite.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;
#[path = "orchestrator_faults/harness.rs"]
mod harness;

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use harness::{
    Api, BotProcess, Dice, Figures, Load, LockWatch, Site, Submissions, Submitted, Timings,
    busy_rejections, check_every_task_completed_once, count, count_from_env, of_kind,
    offers_to_busy_bots, outline,
};
use serde_json::Value;
use tokio::time::Instant;

/// Not a test: the orchestrator process the fault tests spawn ([`harness::ENTRY`] names it).
/// Run by the suite, it returns at once.
#[test]
fn orchestrator_process_when_spawned_by_a_fault_test() {
    harness::run_orchestrator_if_spawned();
}

/// Waits until every bot is AVAILABLE and holds nothing, and checks each process still runs.
async fn assert_bots_free(api: &Api, bots: &mut [BotProcess]) {
    wait_until!("every bot AVAILABLE and holding nothing", {
        let all = api.all_bots().await;
        all.len() == bots.len()
            && all.iter().all(|b| b["status"] == "AVAILABLE" && b["current_task_id"].is_null())
    });
    for bot in bots {
        bot.assert_running();
    }
}

/// Once nothing is in flight: task `id` ran once on the bot first offered it, undisturbed
/// (offered, accepted and completed as attempt 1), and every bot is free.
async fn assert_ran_undisturbed(api: &Api, id: &str, bots: &mut [BotProcess], why: &str) {
    api.wait_drained(Duration::from_secs(60)).await;
    let outline = outline(&api.events(id).await);
    let plain: Vec<(&str, u64)> =
        outline.iter().map(|(kind, attempt)| (kind.as_str(), *attempt)).collect();
    assert_eq!(
        plain,
        [("created", 0), ("assigned", 1), ("accepted", 1), ("completed", 1)],
        "{why}"
    );
    assert_bots_free(api, bots).await;
}

/// Every history's checks shared by the tests: no bot was offered a task while it held another,
/// by the database's record nor by the bots' own account (a "busy" rejection).
fn assert_no_double_assignment(histories: &std::collections::HashMap<String, Vec<Value>>) {
    assert_no_offer_beyond_the_slots(histories, 1);
}

/// [`assert_no_double_assignment`] for bots of `slots` slots: none was offered a task while it
/// held as many as its slots.
fn assert_no_offer_beyond_the_slots(
    histories: &std::collections::HashMap<String, Vec<Value>>,
    slots: usize,
) {
    let overlaps = offers_to_busy_bots(histories, slots);
    assert!(overlaps.is_empty(), "bots offered a task while full ({slots} slots): {overlaps:?}");
    assert_eq!(busy_rejections(histories), 0, "a bot was offered a task while it ran another");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_commit_and_the_publish_strands_no_offer() {
    const TASKS: usize = 8;
    let timings = Timings { offer_timeout: 3.0, ..Timings::default() };
    let site = Site::create("crash-commit", timings).await;
    let mut command = site.orchestrator_command("crashing");
    command.env(orchestrator::failpoint::CRASH_AT, "dispatch.after_commit");
    let mut crashing = site.start_orchestrator("crashing", command).await;
    // Submitted before any bot exists: every dispatch pass ends early (no free bot), before the
    // failpoint. The first pass after the bot comes online commits its offer and dies.
    let api = crashing.client();
    let mut created = Vec::new();
    for n in 0..TASKS {
        let description = format!("task {n}");
        match api.submit_noop(&description, 200).await {
            Submitted::Created(id) => created.push((description, id, api.base.clone())),
            other => panic!("{description}: {other:?}"),
        }
    }
    let mut bots = vec![site.spawn_bot("bot-1")];
    let status = crashing.wait_exit(Duration::from_secs(60)).await;
    let crashed_at = Utc::now();
    assert_eq!(
        status.signal(),
        Some(6),
        "died of SIGABRT at the failpoint: {}",
        crashing.log_tail()
    );
    assert!(
        crashing.log().contains("failpoint dispatch.after_commit: aborting"),
        "{}",
        crashing.log_tail()
    );

    // A second bot comes after the restart: it takes the other tasks while the first one waits
    // for an offer that never comes.
    let restarted = site.spawn_orchestrator("restarted").await;
    bots.push(site.spawn_bot("bot-2"));
    let api = restarted.client();
    let drain = api.wait_drained(Duration::from_secs(90)).await;
    let tasks = api.all_tasks().await;
    let histories = api.histories(&tasks).await;
    let submitted = Submissions { created, unknown: Vec::new() };
    check_every_task_completed_once(&tasks, &histories, &submitted, false);
    assert_no_double_assignment(&histories);

    // The offer committed before the crash: offered (attempt 1) and never published, so no bot
    // answered it; the expiry sweep of the restarted orchestrator took it back, and it was
    // offered again.
    let offered_before_crash = |events: &Vec<Value>| {
        of_kind(events, "assigned").any(|e| {
            let at: DateTime<Utc> = e["at"].as_str().unwrap().parse().unwrap();
            at < crashed_at
        })
    };
    let stranded: Vec<(&String, &Vec<Value>)> =
        histories.iter().filter(|(_, events)| offered_before_crash(events)).collect();
    assert_eq!(stranded.len(), 1, "one offer (one bot) before the crash");
    let (id, events) = stranded[0];
    let outline = outline(events);
    let start: Vec<(&str, u64)> =
        outline.iter().take(4).map(|(kind, attempt)| (kind.as_str(), *attempt)).collect();
    // (A bot_lost instead of offer_expired would be the bot's bot.online, applied by the
    // crashed orchestrator but not acked, redelivered and taken for a restart: see
    // a_redelivered_bot_online_takes_back_nothing_from_its_bot.)
    assert_eq!(
        start,
        [("created", 0), ("assigned", 1), ("offer_expired", 1), ("assigned", 2)],
        "task {id}: {outline:?}"
    );
    let about_attempt_1 = outline.iter().filter(|(_, attempt)| *attempt == 1).count();
    assert_eq!(about_attempt_1, 2, "no bot ever saw the stranded offer: {outline:?}");
    assert_bots_free(&api, &mut bots).await;
    eprintln!(
        "orchestrator crash after the commit: the offer stranded by the crash was taken back by \
         the expiry sweep ({} s offers): {outline:?}; all {TASKS} tasks COMPLETE once, \
         {drain:.1?} from the restart; {}",
        timings.offer_timeout,
        Figures::of(&tasks, &histories)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_the_orchestrator_again_and_again_under_load_loses_nothing() {
    kill_nine_the_orchestrator(1).await;
}

/// The same with bots of 4 slots, each holding several tasks through every kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_the_orchestrator_of_bots_holding_several_tasks_loses_nothing() {
    kill_nine_the_orchestrator(4).await;
}

async fn kill_nine_the_orchestrator(slots: u32) {
    const BOTS: usize = 3;
    let kills = count_from_env("BOTLINE_CHAOS_ORCHESTRATOR_KILLS", 3);
    let mut dice = Dice::seeded();
    let mut site = Site::create("kill-orch", Timings::default()).await;
    site.bot_slots = slots;
    let mut current = site.spawn_orchestrator("orchestrator-0").await;
    let mut bots = site.spawn_bots(&current.client(), "bot", BOTS).await;
    let began = Instant::now();
    let load = Load::start(vec![current.api.clone()], 2 * BOTS as u64 * u64::from(slots), None);
    // Per kill: how long after the (re)start it came, the downtime until the next orchestrator
    // listened, and the time from the kill until that one had completed a task.
    let mut rounds: Vec<(Duration, Duration, Duration)> = Vec::new();
    for kill in 1..=kills {
        let api = current.client();
        // Flowing before the kill: a task completes.
        let complete = count(&api.stats().await, "COMPLETE");
        wait_until!(
            format!("a task completed before kill {kill}"),
            Duration::from_secs(60),
            count(&api.stats().await, "COMPLETE") > complete
        );
        let after = dice.between(Duration::from_millis(100), Duration::from_millis(2500));
        tokio::time::sleep(after).await;
        let status = current.kill();
        let killed_at = Instant::now();
        assert_eq!(status.signal(), Some(9), "{}", current.log_tail());
        // Its port could be anyone's now.
        load.set_apis(Vec::new());
        current = site.spawn_orchestrator(&format!("orchestrator-{kill}")).await;
        let downtime = killed_at.elapsed();
        load.set_apis(vec![current.api.clone()]);
        let api = current.client();
        let complete = count(&api.stats().await, "COMPLETE");
        wait_until!(
            format!("a task completed after restart {kill}"),
            Duration::from_secs(60),
            count(&api.stats().await, "COMPLETE") > complete
        );
        rounds.push((after, downtime, killed_at.elapsed()));
    }
    let submitted = load.stop().await;
    let api = current.client();
    let drain = api.wait_drained(Duration::from_secs(90)).await;
    let elapsed = began.elapsed();

    let tasks = api.all_tasks().await;
    let histories = api.histories(&tasks).await;
    check_every_task_completed_once(&tasks, &histories, &submitted, false);
    assert_no_offer_beyond_the_slots(&histories, slots as usize);
    // Every event a bot published was applied and acknowledged.
    site.wait_events_queue_empty(Duration::from_secs(30)).await;
    assert_bots_free(&api, &mut bots).await;
    let figures = Figures::of(&tasks, &histories);
    eprintln!(
        "orchestrator kill -9 under load ({slots} slots per bot): {kills} kills (after the restart, downtime until the next \
         one listened, kill until it completed a task): {rounds:.1?}; {} tasks submitted ({} \
         without an answer), all COMPLETE once, every acceptance and completion applied; {elapsed:.1?} \
         in all, {drain:.1?} to drain; {figures}",
        submitted.created.len() + submitted.unknown.len(),
        submitted.unknown.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_on_one_database_never_assign_a_task_twice_even_when_one_dies() {
    const BOTS: usize = 4;
    const TASKS: usize = 120;
    let mut dice = Dice::seeded();
    let site = Site::create("two-orch", Timings::default()).await;
    let mut pair = [site.spawn_orchestrator("a").await, site.spawn_orchestrator("b").await];
    let mut bots = site.spawn_bots(&pair[0].client(), "bot", BOTS).await;
    let locks = LockWatch::start(&site.database).await;
    let began = Instant::now();
    let load =
        Load::start(pair.iter().map(|o| o.api.clone()).collect(), 2 * BOTS as u64, Some(TASKS));
    // Both run under load for a while, then one dies.
    let after = dice.between(Duration::from_secs(2), Duration::from_secs(5));
    tokio::time::sleep(after).await;
    let locks = locks.stop().await;
    // The pipeline is cut into shards by bot: both orchestrators applied events or dispatched at
    // the same instant (one lock for everything made that impossible).
    assert!(
        locks.both_holding > 0,
        "the two orchestrators never held pipeline shards at once: {locks:?}"
    );
    let victim = usize::from(dice.below(2) == 1);
    let survivor = 1 - victim;
    let status = pair[victim].kill();
    assert_eq!(status.signal(), Some(9), "{}", pair[victim].log_tail());
    let killed_after = began.elapsed();
    load.set_apis(vec![pair[survivor].api.clone()]);
    wait_until!(format!("{TASKS} tasks submitted"), Duration::from_secs(120), load.finished());
    let submitted = load.stop().await;
    let api = pair[survivor].client();
    let drain = api.wait_drained(Duration::from_secs(90)).await;
    let elapsed = began.elapsed();

    let tasks = api.all_tasks().await;
    let histories = api.histories(&tasks).await;
    // Two consumers share the events queue: a bot's acceptance and completion may be applied by
    // different orchestrators, in either order.
    check_every_task_completed_once(&tasks, &histories, &submitted, true);
    assert_no_double_assignment(&histories);
    site.wait_events_queue_empty(Duration::from_secs(30)).await;
    assert_bots_free(&api, &mut bots).await;

    // Both took part: each stored tasks, made offers and applied events (their logs say so).
    let mut parts = Vec::new();
    for orchestrator in &pair {
        let via = submitted.created.iter().filter(|(_, _, base)| *base == orchestrator.api).count();
        let log = orchestrator.log();
        let offered = log.matches("task offered").count();
        let applied = log.matches("task event applied").count();
        let failed_passes = log.matches("dispatch pass failed").count();
        assert!(
            via > 0 && offered > 0 && applied > 0,
            "{} took no part: {via} tasks submitted through it, {offered} offers, {applied} events applied",
            orchestrator.label
        );
        parts.push(format!(
            "{}: {via} tasks submitted, {offered} offers, {applied} task events applied, {failed_passes} dispatch passes failed",
            orchestrator.label
        ));
    }
    eprintln!(
        "two orchestrators, one database: pipeline locks sampled {} times while both ran: both \
         held shards at once in {}, a transaction waited for a lock in {}; {} killed after \
         {killed_after:.1?}; {parts:?}; {} tasks \
         ({} without an answer), all COMPLETE once, no attempt offered twice, no bot offered a \
         task while it held one; {elapsed:.1?} in all, {drain:.1?} to drain after the last \
         submission; {}",
        locks.samples,
        locks.both_holding,
        locks.waiting,
        pair[victim].label,
        submitted.created.len() + submitted.unknown.len(),
        submitted.unknown.len(),
        Figures::of(&tasks, &histories)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_down_longer_than_a_bot_s_heartbeat_window_takes_back_no_running_task() {
    // A bot is lost after 3 s of silence; the orchestrator stays down 6 s while the bot, alive
    // and running its task, heartbeats into the queue.
    let timings = Timings { heartbeat_interval: 1.0, offer_timeout: 2.0, ..Timings::default() };
    let site = Site::create("long-down", timings).await;
    let mut before = site.spawn_orchestrator("before").await;
    let mut bots = site.spawn_bots(&before.client(), "bot", 2).await;
    let id = match before.client().submit_noop("long", 9000).await {
        Submitted::Created(id) => id,
        other => panic!("{other:?}"),
    };
    let api = before.client();
    wait_until!(
        "the task RUNNING",
        api.get(&format!("/api/v1/tasks/{id}")).await["status"] == "RUNNING"
    );
    before.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = site.spawn_orchestrator("after").await;
    let api = after.client();
    let why = "the bot ran its task throughout and said so: the task must not be taken from it";
    assert_ran_undisturbed(&api, &id, &mut bots, why).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_bot_online_takes_back_nothing_from_its_bot() {
    // An orchestrator that dies after applying a bot.online and before acking it (seen in
    // a_crash_between_the_commit_and_the_publish_strands_no_offer) has the broker deliver the
    // same message again to the next one. The test copies the bot's own announcement as it
    // travels and delivers it again while the bot runs a task.
    use broker_config::topology::EVENTS_EXCHANGE;
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueBindOptions};
    use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    let site = Site::create("online-again", Timings::default()).await;
    let orchestrator = site.spawn_orchestrator("orchestrator").await;
    let api = orchestrator.client();
    let connection =
        broker_config::amqp::connect(&site.vhost.amqp_url(), "test-redelivery").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = QueueDeclareOptions { exclusive: true, ..Default::default() };
    let copies = channel.queue_declare("".into(), options, FieldTable::default()).await.unwrap();
    let (copies, options) = (copies.name().clone(), QueueBindOptions::default());
    channel
        .queue_bind(
            copies.clone(),
            EVENTS_EXCHANGE.into(),
            "bot.online".into(),
            options,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut bots = site.spawn_bots(&api, "bot", 1).await;
    let announcement = channel
        .basic_get(copies, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the bot's bot.online, copied as it went to the orchestrator")
        .delivery
        .data;
    let id = match api.submit_noop("long", 3000).await {
        Submitted::Created(id) => id,
        other => panic!("{other:?}"),
    };
    wait_until!(
        "the task RUNNING",
        api.get(&format!("/api/v1/tasks/{id}")).await["status"] == "RUNNING"
    );
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let properties = lapin::BasicProperties::default().with_delivery_mode(2);
    channel
        .basic_publish(
            EVENTS_EXCHANGE.into(),
            "bot.online".into(),
            BasicPublishOptions::default(),
            &announcement,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let why = "the bot never restarted: its task must not be taken from it";
    assert_ran_undisturbed(&api, &id, &mut bots, why).await;
}

/// A history entry as the API shows it.
fn entry(id: i64, task: &str, bot: &str, attempt: u64, kind: &str) -> Value {
    serde_json::json!({"id": id, "task_id": task, "bot_id": bot, "attempt": attempt, "kind": kind, "detail": {}})
}

#[test]
fn the_replay_of_the_histories_finds_a_bot_offered_a_task_while_it_held_another() {
    // b1 runs t1 (sequence 1 to 5); t2's first offer, to b2, expires; its second goes to b1, at
    // sequence `offered_to_b1`.
    let histories = |offered_to_b1| {
        std::collections::HashMap::from([
            (
                "t1".to_owned(),
                vec![entry(1, "t1", "b1", 1, "assigned"), entry(5, "t1", "b1", 1, "completed")],
            ),
            (
                "t2".to_owned(),
                vec![
                    entry(2, "t2", "b2", 1, "assigned"),
                    entry(3, "t2", "b2", 1, "offer_expired"),
                    entry(offered_to_b1, "t2", "b1", 2, "assigned"),
                ],
            ),
        ])
    };
    assert_eq!(offers_to_busy_bots(&histories(6), 1), [], "after b1 completed t1: fine");
    assert_eq!(
        offers_to_busy_bots(&histories(4), 1),
        [("b1".to_owned(), "t1".to_owned(), "t2".to_owned())],
        "while b1 held t1: caught"
    );
    assert_eq!(offers_to_busy_bots(&histories(4), 2), [], "b1 of 2 slots may hold both");
}

#[test]
#[should_panic(expected = "completed 2 times")]
fn the_end_check_refuses_a_task_completed_twice() {
    let task = serde_json::json!({"id": "t1", "description": "load 0", "status": "COMPLETE", "attempt": 2});
    let events = vec![
        entry(1, "t1", "b1", 1, "assigned"),
        entry(2, "t1", "b1", 1, "accepted"),
        entry(3, "t1", "b1", 1, "completed"),
        entry(4, "t1", "b2", 2, "assigned"),
        entry(5, "t1", "b2", 2, "accepted"),
        entry(6, "t1", "b2", 2, "completed"),
    ];
    let histories = std::collections::HashMap::from([("t1".to_owned(), events)]);
    let submitted = Submissions {
        created: vec![("load 0".into(), "t1".into(), "http://api".into())],
        unknown: Vec::new(),
    };
    check_every_task_completed_once(&[task], &histories, &submitted, false);
}
