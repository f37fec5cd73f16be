//! The agent in AMQP mode against a real RabbitMQ (a vhost per test), the test playing the
//! orchestrator.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use broker_config::topology::DEAD_LETTER_QUEUE;
use broker_config::{Command, Event, RowStatus, System};
use chrono::{TimeDelta, Utc};
use common::{Harness, WAIT, is_final, noop_rows, offer, rows_of};
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use serde_json::json;

#[tokio::test]
async fn announces_itself_then_heartbeats_and_says_goodbye() {
    let mut h = Harness::start("agent-online", |_| {}).await;
    match &h.seen[0] {
        Event::BotOnline { bot, ip_address, systems, .. } => {
            assert_eq!(*bot, h.name);
            assert_eq!(ip_address, "127.0.0.1", "the broker is on the loopback");
            assert_eq!(*systems, [System::NOOP, System::VIVO360]);
        }
        other => panic!("expected bot.online first, got {other:?}"),
    }
    for _ in 0..2 {
        match h.next_any().await {
            Event::BotHeartbeat { bot, task, .. } => {
                assert_eq!(bot, h.name);
                assert_eq!(task, None, "no task yet");
            }
            other => panic!("expected heartbeats, got {other:?}"),
        }
    }
    let last = h.stop().await;
    assert!(matches!(last.last(), Some(Event::BotOffline { .. })));
}

#[tokio::test]
async fn runs_an_assignment_and_reports_every_row_once() {
    let mut h = Harness::start("agent-rows", |_| {}).await;
    let task = noop_rows(5, 50);
    h.send(&Command::AssignTask(task.clone())).await;
    let events = h.until_final(task.task).await;
    let for_task: Vec<&Event> = events.iter().filter(|e| e.task() == Some(task.task)).collect();
    assert!(
        matches!(for_task[0], Event::TaskAccepted { bot, .. } if *bot == h.name),
        "accepted first: {for_task:?}"
    );
    assert!(
        for_task.iter().any(|e| matches!(e, Event::TaskProgress { .. })),
        "the first row is reported as soon as it is done: {for_task:?}"
    );
    assert!(matches!(for_task.last(), Some(Event::TaskCompleted { output: None, .. })));
    let rows: Vec<(u32, RowStatus, String)> =
        rows_of(&events).into_iter().map(|r| (r.row, r.status, r.message)).collect();
    let expected: Vec<(u32, RowStatus, String)> =
        (1..=5).map(|n| (n, RowStatus::Done, format!("row {n} done"))).collect();
    assert_eq!(rows, expected, "every row once, in order");
    h.stop().await;
}

#[tokio::test]
async fn an_expired_offer_is_ignored() {
    let mut h = Harness::start("agent-expired", |_| {}).await;
    let mut expired = offer(System::NOOP, None, json!({}));
    expired.offer_expires_at = Utc::now() - TimeDelta::seconds(1);
    let fresh = offer(System::NOOP, None, json!({"duration_ms": 1}));
    h.send(&Command::AssignTask(expired.clone())).await;
    h.send(&Command::AssignTask(fresh.clone())).await;
    let events = h.until_final(fresh.task).await;
    assert!(
        matches!(events.last(), Some(Event::TaskCompleted { output: Some(o), .. }) if *o == json!({"slept_ms": 1}))
    );
    assert!(
        h.seen.iter().all(|e| e.task() != Some(expired.task)),
        "nothing about the expired offer: {:?}",
        h.seen
    );
    h.stop().await;
}

#[tokio::test]
async fn offers_are_rejected_while_busy_and_for_systems_it_cannot_run() {
    let mut h = Harness::start("agent-reject", |c| c.systems = vec![System::NOOP]).await;
    let vivo = offer(System::VIVO360, None, json!({}));
    h.send(&Command::AssignTask(vivo.clone())).await;
    match h.next().await {
        Event::TaskRejected { task, reason, .. } => {
            assert_eq!(task, vivo.task);
            assert_eq!(reason, "this bot cannot run VIVO360");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    let long = offer(System::NOOP, None, json!({"duration_ms": 600_000}));
    h.send(&Command::AssignTask(long.clone())).await;
    assert!(matches!(h.next().await, Event::TaskAccepted { task, .. } if task == long.task));
    // Heartbeats hold the lease on the running task.
    loop {
        if let Event::BotHeartbeat { task: Some(task), .. } = h.next_any().await {
            assert_eq!(task, long.task);
            break;
        }
    }
    let second = offer(System::NOOP, None, json!({}));
    h.send(&Command::AssignTask(second.clone())).await;
    match h.next().await {
        Event::TaskRejected { task, reason, .. } => {
            assert_eq!(task, second.task);
            assert_eq!(reason, "busy");
        }
        other => panic!("expected busy, got {other:?}"),
    }
    h.send(&Command::CancelTask { task: long.task, reason: "test over".into() }).await;
    h.stop().await;
}

#[tokio::test]
async fn a_resumed_attempt_skips_the_rows_already_done_and_fails_as_told() {
    let mut h = Harness::start("agent-resume", |_| {}).await;
    let mut task = noop_rows(5, 10);
    task.resume_after_row = 3;
    task.task.attempt = 2;
    task.payload = Some(json!({"duration_ms": 10, "fail": "retryable"}));
    h.send(&Command::AssignTask(task.clone())).await;
    let events = h.until_final(task.task).await;
    let rows: Vec<u32> = rows_of(&events).iter().map(|r| r.row).collect();
    assert_eq!(rows, [4, 5], "rows 1..=3 were done by attempt 1");
    match events.last() {
        Some(Event::TaskFailed { error, retryable, .. }) => {
            assert_eq!(error, "NOOP told to fail");
            assert!(retryable);
        }
        other => panic!("expected task.failed, got {other:?}"),
    }
    h.stop().await;
}

#[tokio::test]
async fn a_cancelled_task_stops_and_nothing_more_is_said_about_it() {
    let mut h = Harness::start("agent-cancel", |_| {}).await;
    let long = noop_rows(100, 100);
    h.send(&Command::AssignTask(long.clone())).await;
    assert!(matches!(h.next().await, Event::TaskAccepted { task, .. } if task == long.task));
    assert!(matches!(h.next().await, Event::TaskProgress { task, .. } if task == long.task));
    h.send(&Command::CancelTask { task: long.task, reason: "cancelled by a user".into() }).await;
    // The bot is free at once: the next offer is taken.
    let next = offer(System::NOOP, None, json!({}));
    h.send(&Command::AssignTask(next.clone())).await;
    h.until_final(next.task).await;
    let after = h.stop().await;
    let about_long: Vec<&Event> = h
        .seen
        .iter()
        .chain(after.iter())
        .filter(|e| e.task() == Some(long.task) && is_final(e))
        .collect();
    assert!(about_long.is_empty(), "no final event: {about_long:?}");
    assert!(rows_of(&h.seen).len() < 100, "the task stopped early");
}

#[tokio::test]
async fn a_shutdown_mid_task_hands_the_task_back_then_goes_offline() {
    let mut h = Harness::start("agent-release", |c| c.shutdown_grace_secs = 0).await;
    let long = noop_rows(100, 100);
    h.send(&Command::AssignTask(long.clone())).await;
    assert!(matches!(h.next().await, Event::TaskAccepted { task, .. } if task == long.task));
    assert!(matches!(h.next().await, Event::TaskProgress { task, .. } if task == long.task));
    let events = h.stop().await;
    let n = events.len();
    assert!(n >= 2, "{events:?}");
    match &events[n - 2] {
        Event::TaskReleased { task, reason, .. } => {
            assert_eq!(*task, long.task);
            assert_eq!(reason, "bot shutting down");
        }
        other => panic!("expected task.released before bot.offline, got {other:?}"),
    }
    let all: Vec<Event> = h.seen.clone();
    let rows: Vec<u32> = rows_of(&all).iter().map(|r| r.row).collect();
    let expected: Vec<u32> = (1..=u32::try_from(rows.len()).unwrap()).collect();
    assert_eq!(
        rows, expected,
        "the rows done are reported once each, so a resume can start after them"
    );
    assert!(rows.len() < 100);
}

#[tokio::test]
async fn a_malformed_command_is_dead_lettered_and_the_agent_keeps_working() {
    let mut h = Harness::start("agent-dead", |_| {}).await;
    h.send_raw(b"this is not a command").await;
    let connection =
        broker_config::amqp::connect(&h.vhost.amqp_url(), "test-dead-reader").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let got = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if let Some(message) = got {
            break message;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter within the wait");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.delivery.data, b"this is not a command");
    let reason = dead
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-botline-reason").cloned());
    match reason {
        Some(AMQPValue::LongString(reason)) => {
            assert!(reason.to_string().starts_with("malformed message"), "{reason}")
        }
        other => panic!("expected a reason header, got {other:?}"),
    }
    let task = offer(System::NOOP, None, json!({}));
    h.send(&Command::AssignTask(task.clone())).await;
    let events = h.until_final(task.task).await;
    assert!(matches!(events.last(), Some(Event::TaskCompleted { .. })));
    h.stop().await;
}

#[tokio::test]
async fn offers_sent_together_are_answered_together_and_the_bot_says_it_reads_them() {
    let mut h = Harness::start("agent-offers", |c| c.slots = 2).await;
    assert!(
        matches!(h.seen[0], Event::BotOnline { batches: true, slots: Some(2), .. }),
        "a bot on the broker reads tasks.assign messages: {:?}",
        h.seen[0]
    );
    let run = || offer(System::NOOP, None, json!({"duration_ms": 300}));
    let (first, second, third) = (run(), run(), run());
    let offers = [first.clone(), second.clone(), third.clone()];
    h.send_raw(&broker_config::messages::encode_offers(&offers)).await;
    let (mut completed, mut busy) = (Vec::new(), Vec::new());
    while completed.len() < 2 || busy.is_empty() {
        match h.next().await {
            Event::TaskCompleted { task, .. } => completed.push(task),
            Event::TaskRejected { task, reason, .. } => {
                assert_eq!(reason, "busy");
                busy.push(task);
            }
            Event::TaskAccepted { .. } | Event::TaskProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    completed.sort_by_key(|t| t.task_id);
    let mut ran = vec![first.task, second.task];
    ran.sort_by_key(|t| t.task_id);
    assert_eq!((completed, busy), (ran, vec![third.task]), "two slots: the third is turned down");
    h.stop().await;
}
