//! End to end through the real broker: the orchestrator (in-process, SQLite), the Vivo360 portal
//! stand-in, and real bot agents, in-process or as separate processes (the binary) when the test
//! kills one with SIGKILL. Each test has a RabbitMQ vhost and a database of its own.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::net::SocketAddr;

use base64::Engine as _;
use broker_config::System;
use common::world::World;
use serde_json::json;
use tokio::net::TcpListener;

fn users_csv(logins: &[&str]) -> String {
    let mut csv = String::from("name,email,login,profile\n");
    for login in logins {
        csv.push_str(&format!("User {login},{login}@example.com,{login},agent\n"));
    }
    csv
}

fn encode(csv: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(csv)
}

#[tokio::test]
async fn a_vivo360_task_creates_its_users_row_by_row() {
    let world = World::start(0).await;
    world.spawn_bot(world.agent_config("vivo-1", &[System::VIVO360, System::NOOP]));
    let csv = "name,email,login,profile\n\
               Ana Souza,ana@example.com,ana.souza,agent\n\
               Bruno Lima,bruno@example,bruno.lima,agent\n\
               Carla Dias,carla@example.com,carla.dias,supervisor\n\
               Ana Again,ana2@example.com,ana.souza,agent\n";
    let id = world
        .create_task(
            json!({"description": "hires", "system": "VIVO360", "attachment": encode(csv)}),
        )
        .await;
    let task = world.wait_status(&id, "COMPLETE").await;
    let result = &task["result"];
    assert_eq!(
        (&result["rows_total"], &result["rows_ok"], &result["rows_failed"]),
        (&json!(4), &json!(2), &json!(2))
    );
    let statuses: Vec<&str> =
        result["rows"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["CREATED", "REJECTED", "CREATED", "REJECTED"]);
    assert_eq!(result["rows"][1]["message"], "email: not a valid e-mail address");
    assert_eq!(result["rows"][3]["message"], "Login ana.souza already exists");
    assert_eq!(task["progress"], json!({"done": 4, "total": 4}));
    let users = world.portal_users().await;
    let logins: Vec<&str> =
        users["users"].as_array().unwrap().iter().map(|u| u["login"].as_str().unwrap()).collect();
    assert_eq!(logins, ["ana.souza", "carla.dias"]);
    let history = world.history(&id).await;
    assert_eq!(history.first().map(String::as_str), Some("created"));
    assert_eq!(history.last().map(String::as_str), Some("completed"));
}

#[tokio::test]
async fn a_portal_that_is_down_fails_the_task_retryably_then_it_completes() {
    let world = World::start(0).await;
    world
        .http
        .put(format!("{}/_control", world.portal))
        .json(&json!({"down": true}))
        .send()
        .await
        .unwrap();
    world.spawn_bot(world.agent_config("vivo-1", &[System::VIVO360]));
    let id = world.create_task(json!({"description": "hires", "system": "VIVO360", "attachment": encode(&users_csv(&["dora.m"])), "max_attempts": 5})).await;
    wait_until!("a failed run", world.task(&id).await["failures"].as_u64().unwrap_or(0) >= 1);
    let task = world.task(&id).await;
    assert!(task["error"].as_str().unwrap().contains("unavailable"), "{task}");
    world
        .http
        .put(format!("{}/_control", world.portal))
        .json(&json!({"down": false}))
        .send()
        .await
        .unwrap();
    let done = world.wait_status(&id, "COMPLETE").await;
    assert_eq!(done["result"]["rows_ok"], 1);
}

#[tokio::test]
async fn noop_tasks_spread_over_several_bots_each_completed_once() {
    let world = World::start(0).await;
    // Every task waits before any bot exists, so the order of offers is the dispatcher's choice.
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(world.create_task(json!({"description": format!("nap {n}"), "system": "NOOP", "payload": {"duration_ms": 50}})).await);
    }
    for n in 1..=3 {
        world.spawn_bot(world.agent_config(&format!("noop-{n}"), &[System::NOOP]));
    }
    let mut bots = std::collections::BTreeSet::new();
    let mut first_offers = Vec::new();
    for id in &ids {
        let task = world.wait_status(id, "COMPLETE").await;
        bots.insert(task["bot_id"].as_str().map(str::to_owned));
        let events = world.get(&format!("/api/v1/tasks/{id}/events")).await;
        let events = events.as_array().unwrap();
        let completions = events.iter().filter(|e| e["kind"] == "completed").count();
        assert_eq!(completions, 1, "task {id} completed {completions} times");
        let offered =
            events.iter().find(|e| e["kind"] == "assigned").unwrap()["at"].as_str().unwrap();
        first_offers.push(chrono::DateTime::parse_from_rfc3339(offered).unwrap());
    }
    // FIFO across the bots: no task was offered before an older one.
    assert!(first_offers.windows(2).all(|w| w[0] <= w[1]), "offers out of order: {first_offers:?}");
    assert!(bots.len() >= 2, "work spread over the bots: {bots:?}");
}

/// Bots of several slots, over the broker and over HTTP: each runs as many tasks at once as it
/// has slots (the runs overlap), shows them held, and is free again after.
#[tokio::test]
async fn bots_with_slots_run_that_many_tasks_at_once_over_amqp_and_http() {
    const SLOTS: u32 = 3;
    let world = World::start(0).await;
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut web = world.agent_config("web-wide", &[System::NOOP]);
    web.http = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    web.slots = SLOTS;
    world.spawn_bot(web);
    wait_until!(
        "the HTTP bot registered",
        world.get("/api/v1/bots?name=web-wide&status=AVAILABLE").await["total"] == 1
    );
    assert_eq!(world.get("/api/v1/bots?name=web-wide").await["items"][0]["slots"], SLOTS);
    let mut queued = world.agent_config("amqp-wide", &[System::NOOP]);
    queued.slots = SLOTS;
    world.spawn_bot(queued);
    wait_until!(
        "the AMQP bot online",
        world.get("/api/v1/bots?name=amqp-wide&status=AVAILABLE").await["total"] == 1
    );
    let mut ids = Vec::new();
    for n in 0..2 * SLOTS {
        ids.push(world.create_task(json!({"description": format!("nap {n}"), "system": "NOOP", "payload": {"duration_ms": 1500}})).await);
    }
    // Six tasks, six slots: all RUNNING at once, three on each bot.
    wait_until!(
        "every task running at once",
        world.get("/api/v1/tasks?status=RUNNING").await["total"] == 2 * SLOTS
    );
    for name in ["web-wide", "amqp-wide"] {
        let bot = &world.get(&format!("/api/v1/bots?name={name}")).await["items"][0];
        assert_eq!((&bot["status"], &bot["slots_used"]), (&json!("BUSY"), &json!(SLOTS)), "{bot}");
        assert_eq!(bot["task_ids"].as_array().unwrap().len(), SLOTS as usize, "{bot}");
    }
    let mut runs = Vec::new();
    for id in &ids {
        let task = world.wait_status(id, "COMPLETE").await;
        let at = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(task[field].as_str().unwrap()).unwrap()
        };
        runs.push((at("started_at"), at("finished_at")));
        assert_eq!(world.history(id).await.iter().filter(|k| *k == "completed").count(), 1);
    }
    let last_start = runs.iter().map(|r| r.0).max().unwrap();
    let first_end = runs.iter().map(|r| r.1).min().unwrap();
    assert!(last_start < first_end, "the six runs overlap: {runs:?}");
    for name in ["web-wide", "amqp-wide"] {
        wait_until!(format!("{name} free"), {
            let bot = &world.get(&format!("/api/v1/bots?name={name}")).await["items"][0];
            bot["status"] == "AVAILABLE" && bot["slots_used"] == 0
        });
    }
}

/// The value of `metric` with `labels` in a scrape (0 when absent).
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn a_bot_serves_its_metrics_when_asked_to() {
    let world = World::start(0).await;
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut bot = world
        .bot_process("measured", "vivo360")
        .args(["--metrics-listen", &format!("127.0.0.1:{port}"), "--slots", "2"])
        .spawn()
        .unwrap();
    let csv = users_csv(&["m.one", "m.two"]) + "Bad Mail,bad@example,m.bad,agent\n";
    let id = world
        .create_task(
            json!({"description": "hires", "system": "VIVO360", "attachment": encode(&csv)}),
        )
        .await;
    world.wait_status(&id, "COMPLETE").await;
    let scrape = || async {
        let text = world
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    };
    // The completion is reported before it is counted: wait for the count.
    wait_until!("the run counted", {
        let scraped = scrape().await;
        sample(&scraped, "botline_agent_runs_total", &[("outcome", "completed")]) == 1.0
    });
    let scraped = scrape().await;
    let of = [("bot", "measured")];
    assert_eq!(
        sample(&scraped, "botline_agent_offers_total", &[of[0], ("answer", "accepted")]),
        1.0
    );
    assert_eq!(
        sample(
            &scraped,
            "botline_agent_runs_total",
            &[of[0], ("system", "VIVO360"), ("outcome", "completed")]
        ),
        1.0
    );
    assert_eq!(
        sample(&scraped, "botline_agent_run_seconds_count", &[of[0], ("system", "VIVO360")]),
        1.0
    );
    assert_eq!(sample(&scraped, "botline_agent_rows_total", &[of[0], ("status", "created")]), 2.0);
    assert_eq!(sample(&scraped, "botline_agent_rows_total", &[of[0], ("status", "rejected")]), 1.0);
    assert_eq!(sample(&scraped, "botline_agent_slots", &of), 2.0);
    assert_eq!(sample(&scraped, "botline_agent_tasks_running", &of), 0.0);
    bot.kill().unwrap();
    bot.wait().unwrap();
}

#[tokio::test]
async fn a_killed_bot_s_task_resumes_on_another_and_no_row_is_done_twice() {
    // Each portal request takes 60 ms: a row (login form, four fields, submit) takes ~400 ms.
    let world = World::start(60).await;
    let mut doomed = world.spawn_bot_process("doomed", "vivo360");
    let logins = ["u.one", "u.two", "u.three", "u.four", "u.five", "u.six"];
    let id = world.create_task(json!({"description": "six hires", "system": "VIVO360", "attachment": encode(&users_csv(&logins))})).await;
    // Kill it right after a row was reported: mid-way through the next row's form.
    wait_until!(
        "two rows reported",
        world.task(&id).await["progress"]["done"].as_u64().unwrap_or(0) >= 2
    );
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let reported = world.task(&id).await["progress"]["done"].as_u64().unwrap();

    world.spawn_bot(world.agent_config("rescuer", &[System::VIVO360]));
    let done = world.wait_status(&id, "COMPLETE").await;
    assert_eq!(done["result"]["rows_ok"], 6, "{}", done["result"]);
    assert!(done["attempt"].as_u64().unwrap() >= 2);
    let history = world.history(&id).await;
    assert!(history.contains(&"bot_lost".to_owned()), "{history:?}");
    assert_eq!(history.iter().filter(|k| *k == "completed").count(), 1, "{history:?}");
    let portal = world.portal_users().await;
    assert_eq!(portal["users"].as_array().unwrap().len(), 6);
    for login in logins {
        assert_eq!(
            portal["submissions"][login], 1,
            "{login} was submitted more than once: {}",
            portal["submissions"]
        );
    }
    let events = world.get(&format!("/api/v1/tasks/{id}/events")).await;
    let resumed =
        events.as_array().unwrap().iter().rev().find(|e| e["kind"] == "assigned").unwrap();
    assert_eq!(resumed["attempt"], done["attempt"]);
    assert_eq!(
        resumed["detail"]["resume_after_row"], reported,
        "the last attempt resumed right after the rows the killed bot had reported"
    );
}

#[tokio::test]
async fn both_sides_recover_when_the_broker_drops_every_connection() {
    let world = World::start(0).await;
    world.spawn_bot(world.agent_config("steady", &[System::NOOP]));
    let first = world.create_task(json!({"description": "before", "system": "NOOP"})).await;
    world.wait_status(&first, "COMPLETE").await;
    // The orchestrator's publisher and consumer, the bot's publisher and consumer.
    let closed = world.vhost.close_connections(4).await.unwrap();
    assert!(closed >= 4, "closed {closed}");
    let mut after = Vec::new();
    for n in 0..5 {
        after.push(
            world.create_task(json!({"description": format!("after {n}"), "system": "NOOP"})).await,
        );
    }
    for id in &after {
        world.wait_status(id, "COMPLETE").await;
    }
}

#[tokio::test]
async fn a_bot_in_http_push_mode_runs_tasks_through_the_rest_api() {
    let world = World::start(0).await;
    // A free port for the bot's endpoint.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut config = world.agent_config("web-bot", &[System::NOOP]);
    config.http = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    world.spawn_bot(config);
    wait_until!(
        "the HTTP bot registered",
        world.get("/api/v1/bots?name=web-bot&status=AVAILABLE").await["total"] == 1
    );
    let bot = &world.get("/api/v1/bots?name=web-bot").await["items"][0];
    assert_eq!((&bot["delivery"], &bot["http_port"]), (&json!("http"), &json!(port)));
    let csv = "a,b\n1,2\n3,4\n";
    let id = world.create_task(json!({"description": "over http", "system": "NOOP", "attachment": encode(csv), "payload": {"duration_ms": 10}})).await;
    let done = world.wait_status(&id, "COMPLETE").await;
    assert_eq!(done["result"]["rows_ok"], 2);
    let history: Vec<String> =
        world.history(&id).await.into_iter().filter(|k| k != "progress").collect();
    assert_eq!(history, ["created", "assigned", "accepted", "completed"]);

    // A cancel reaches it on its own route (POST /tasks/{id}/cancel) and stops the run: the bot
    // is free for the next task at once, instead of refusing it while the long one goes on.
    let long = world
        .create_task(
            json!({"description": "long", "system": "NOOP", "payload": {"duration_ms": 60000}}),
        )
        .await;
    world.wait_status(&long, "RUNNING").await;
    let cancel = reqwest::Client::new()
        .post(format!("{}/api/v1/tasks/{long}/cancel", world.api))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let next = world
        .create_task(
            json!({"description": "next", "system": "NOOP", "payload": {"duration_ms": 10}}),
        )
        .await;
    world.wait_status(&next, "COMPLETE").await;
    let history: Vec<String> =
        world.history(&next).await.into_iter().filter(|k| k != "progress").collect();
    assert_eq!(
        history,
        ["created", "assigned", "accepted", "completed"],
        "taken at the first offer"
    );
}

#[tokio::test]
async fn a_bot_serving_https_gets_its_tasks_over_tls() {
    // A certificate for the loopback, which the orchestrator is told to trust (--bot-ca-file).
    let material = simulators::tls::self_signed().unwrap();
    let dir = std::env::temp_dir().join(format!("botline-https-bot-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &material.cert_pem).unwrap();
    std::fs::write(&key, &material.key_pem).unwrap();
    let trusted = cert.clone();
    let world = World::start_with(0, |config| config.bots.bot_ca_file = Some(trusted)).await;
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut config = world.agent_config("tls-bot", &[System::NOOP]);
    config.http = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    config.http_tls_cert = Some(cert);
    config.http_tls_key = Some(key);
    world.spawn_bot(config);
    wait_until!(
        "the HTTPS bot registered",
        world.get("/api/v1/bots?name=tls-bot&status=AVAILABLE").await["total"] == 1
    );
    assert_eq!(world.get("/api/v1/bots?name=tls-bot").await["items"][0]["tls"], true);
    let id = world
        .create_task(
            json!({"description": "over https", "system": "NOOP", "payload": {"duration_ms": 10}}),
        )
        .await;
    world.wait_status(&id, "COMPLETE").await;
    let history: Vec<String> =
        world.history(&id).await.into_iter().filter(|k| k != "progress").collect();
    assert_eq!(history, ["created", "assigned", "accepted", "completed"], "taken over TLS at once");
    // The bot's port speaks only TLS: a plain HTTP POST gets no answer.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/tasks"))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    std::fs::remove_dir_all(&dir).ok();
}
