//! The agent under broker least privilege: it runs as the user `broker-config users` defines for
//! it (configure nothing, read its queue, write events and dead letters) with `--no-declare`,
//! and every event it publishes carries its user, which the strict sender policy accepts.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use bot_agent::AgentConfig;
use broker_config::access::{SenderPolicy, UserPlan, bot_user, check_sender};
use broker_config::messages::{decode_events, encode};
use broker_config::testing::TestVhost;
use broker_config::topology::{ORCHESTRATOR_EVENTS_QUEUE, TASKS_EXCHANGE, bot_queue};
use broker_config::{
    BotName, Command, ConsumerSpec, Decision, Event, Publisher, System, Topology, consume,
};
use common::{WAIT, noop_rows};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The next event other than a heartbeat, with the user that published it.
async fn next(events: &mut mpsc::UnboundedReceiver<(Event, Option<String>)>) -> (Event, String) {
    loop {
        let (event, user) = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("an event within the wait")
            .expect("the events consumer runs");
        if !matches!(event, Event::BotHeartbeat { .. }) {
            return (event, user.expect("every event carries its publisher's user-id"));
        }
    }
}

#[tokio::test]
async fn an_agent_works_as_its_own_least_privilege_user() {
    let vhost = TestVhost::create("agent-access").await.unwrap();
    let unique = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let name = BotName::parse(&format!("vm-{unique}")).unwrap();
    let plan = UserPlan::new(
        &format!("orchestrator-{unique}"),
        std::slice::from_ref(&name),
        BTreeMap::new(),
    )
    .unwrap();
    vhost.import_definitions(&plan.to_definitions(vhost.name())).await.unwrap();
    let url_of = |c: &broker_config::access::Credentials| vhost.amqp_url_as(c.user(), c.password());
    let (orchestrator_url, bot_url) = (url_of(plan.orchestrator()), url_of(&plan.bots()[0].1));

    // The orchestrator's side, as its own user, under the strict sender policy.
    let plumbing = CancellationToken::new();
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        url: orchestrator_url.clone(),
        name: "test-orchestrator-events".into(),
        queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
        topology: Topology::core(),
        prefetch: 50,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    };
    tokio::spawn(consume(spec, plumbing.clone(), move |message| {
        // One event, or several of one bot in a `bot.events` message.
        let decision = match decode_events(&message.data) {
            Err(error) => Decision::DeadLetter(error.to_string()),
            Ok(events) => {
                let refused = events.iter().find_map(|event| {
                    check_sender(message.user_id.as_deref(), event.bot(), SenderPolicy::Strict)
                        .err()
                });
                match refused {
                    Some(refused) => Decision::DeadLetter(refused.to_string()),
                    None => {
                        for event in events {
                            let _ = tx.send((event, message.user_id.clone()));
                        }
                        Decision::Ack
                    }
                }
            }
        };
        async move { decision }
    }));

    let mut config = AgentConfig::new(name.clone(), vec![System::NOOP], bot_url);
    config.no_declare = true;
    config.heartbeat_interval_ms = 200;
    config.progress_interval_ms = 50;
    config.shutdown_grace_secs = 5;
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(bot_agent::run(config, shutdown.clone()));
    let expected_user = bot_user(&name);
    let (online, user) = next(&mut events).await;
    assert!(matches!(online, Event::BotOnline { .. }), "online first: {online:?}");
    assert_eq!(user, expected_user);

    let commands = Publisher::new(
        orchestrator_url,
        "test-orchestrator",
        Topology::core(),
        WAIT,
        plumbing.clone(),
    );
    let task = noop_rows(3, 20);
    let assign = encode(&Command::AssignTask(task.clone()));
    commands.publish(TASKS_EXCHANGE, name.as_str(), &assign, true).await.unwrap();
    loop {
        let (event, user) = next(&mut events).await;
        assert_eq!(user, expected_user, "{event:?}");
        assert_eq!(event.task(), Some(task.task), "{event:?}");
        assert!(!matches!(event, Event::TaskFailed { .. }), "{event:?}");
        if matches!(event, Event::TaskCompleted { .. }) {
            break;
        }
    }

    // A malformed command is dead-lettered by the agent, which may write botline.dlx.
    commands.publish(TASKS_EXCHANGE, name.as_str(), b"{not json", true).await.unwrap();
    let dead = vhost.dead_letters(1).await.unwrap();
    assert_eq!(dead[0].data, b"{not json");
    assert_eq!(dead[0].queue.as_deref(), Some(bot_queue(&name).as_str()));
    assert!(dead[0].reason.is_some());

    shutdown.cancel();
    tokio::time::timeout(WAIT * 2, agent)
        .await
        .expect("the agent stops within the wait")
        .unwrap()
        .expect("run returns Ok after a graceful shutdown");
    let (offline, user) = next(&mut events).await;
    assert!(matches!(offline, Event::BotOffline { .. }), "{offline:?}");
    assert_eq!(user, expected_user);
    plumbing.cancel();
}
