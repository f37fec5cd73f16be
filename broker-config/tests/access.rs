//! Broker least privilege against a real RabbitMQ: the users `broker-config users` defines are
//! loaded into a vhost of the test's own, then each is made to try what it may and may not do.
//! RabbitMQ users are not per vhost, so every user name here is unique to its test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use broker_config::access::{
    Credentials, SenderPolicy, SenderRefused, UserPlan, bot_user, check_sender,
};
use broker_config::amqp::{self, Publisher};
use broker_config::testing::TestVhost;
use broker_config::testing::stomp::{StompClient, StompError};
use broker_config::topology::{
    ATTENDANCE_ETL_QUEUE, ATTENDANCE_EXCHANGE, DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE, MONITORING_EXCHANGE, MONITORING_INCIDENTS_QUEUE, ORCHESTRATOR_EVENTS_QUEUE,
    STOMP_TOPIC_EXCHANGE, TASKS_EXCHANGE, bot_queue,
};
use broker_config::{BotName, ConsumerSpec, Decision, Message, Published, Topology, consume};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// A vhost holding the definitions of an orchestrator and two bots, `a` and `b`.
struct World {
    vhost: TestVhost,
    a: BotName,
    b: BotName,
    plan: UserPlan,
}

impl World {
    async fn start(prefix: &str) -> World {
        World::start_with(prefix, false).await
    }

    /// A world with a publisher user too (`publisher-<unique>`), when `publisher`.
    async fn start_with(prefix: &str, publisher: bool) -> World {
        let vhost = TestVhost::create(prefix).await.unwrap();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let a = BotName::parse(&format!("a-{}", &unique[..12])).unwrap();
        let b = BotName::parse(&format!("b-{}", &unique[..12])).unwrap();
        let orchestrator = format!("orchestrator-{}", &unique[..12]);
        let publishers: Vec<String> =
            if publisher { vec![format!("publisher-{}", &unique[..12])] } else { Vec::new() };
        let bots = [a.clone(), b.clone()];
        let plan =
            UserPlan::with_publishers(&orchestrator, &publishers, &bots, BTreeMap::new()).unwrap();
        vhost.import_definitions(&plan.to_definitions(vhost.name())).await.unwrap();
        World { vhost, a, b, plan }
    }

    fn credentials(&self, bot: &BotName) -> &Credentials {
        &self.plan.bots().iter().find(|(name, _)| name == bot).unwrap().1
    }

    fn bot_url(&self, bot: &BotName) -> String {
        let credentials = self.credentials(bot);
        self.vhost.amqp_url_as(credentials.user(), credentials.password())
    }

    fn orchestrator_url(&self) -> String {
        let credentials = self.plan.orchestrator();
        self.vhost.amqp_url_as(credentials.user(), credentials.password())
    }

    async fn connect_as_bot(&self, bot: &BotName) -> Connection {
        amqp::connect(&self.bot_url(bot), &format!("test {bot}")).await.unwrap()
    }

    async fn connect_as_orchestrator(&self) -> Connection {
        amqp::connect(&self.orchestrator_url(), "test orchestrator").await.unwrap()
    }

    /// Consumes `botline.orchestrator.events` as the orchestrator (declaring the core topology,
    /// which only it may do), forwarding every message.
    fn consume_events(&self, shutdown: &CancellationToken) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        let spec = ConsumerSpec {
            url: self.orchestrator_url(),
            name: "test-orchestrator-events".into(),
            queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
            topology: Topology::core(),
            prefetch: 10,
            max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
            hearing: None,
        };
        tokio::spawn(consume(spec, shutdown.clone(), move |message| {
            let _ = tx.send(message);
            async { Decision::Ack }
        }));
        rx
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a message within the wait").unwrap()
}

/// Asserts the broker refused `result` with `code` (which closes the channel) and returns the
/// broker's words.
fn refused<T: std::fmt::Debug>(result: Result<T, lapin::Error>, code: &str) -> String {
    let error = result.expect_err("the broker refuses").to_string();
    assert!(error.contains(code), "expected {code}, got: {error}");
    error
}

/// Publishes `body` with confirms on a fresh channel and returns the confirm's outcome, or the
/// error that closed the channel.
async fn publish_on(
    connection: &Connection,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            b"{}",
            properties,
        )
        .await?
        .await?;
    assert!(confirm.is_ack(), "confirmed: {confirm:?}");
    // A refused publish closes the channel asynchronously: a round trip makes it show.
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
}

async fn consume_on(channel: &Channel, queue: &str) -> Result<lapin::Consumer, lapin::Error> {
    channel
        .basic_consume(
            queue.into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

#[tokio::test]
async fn generated_definitions_load_and_each_user_logs_in_with_its_password_only() {
    let world = World::start("access-login").await;
    for (credentials, _) in world.plan.users() {
        let url = world.vhost.amqp_url_as(credentials.user(), credentials.password());
        let connection = amqp::connect(&url, "test login")
            .await
            .unwrap_or_else(|e| panic!("{} logs in: {e}", credentials.user()));
        connection.close(200, "done".into()).await.unwrap();
    }
    let wrong = world.vhost.amqp_url_as(&bot_user(&world.a), "not-the-password");
    let refused = amqp::connect(&wrong, "test wrong password").await;
    assert!(refused.is_err(), "a wrong password is refused");
    assert_eq!(world.plan.users().len(), 3);
}

#[tokio::test]
async fn a_bot_consumes_its_own_queue_and_not_another_bots() {
    let world = World::start("access-read").await;
    let connection = world.connect_as_bot(&world.a).await;
    let own = connection.create_channel().await.unwrap();
    consume_on(&own, &bot_queue(&world.a)).await.expect("bot a consumes its own queue");

    let other = connection.create_channel().await.unwrap();
    let words = refused(consume_on(&other, &bot_queue(&world.b)).await, "ACCESS_REFUSED");
    assert!(words.contains(&bot_queue(&world.b)), "{words}");
    let other = connection.create_channel().await.unwrap();
    let get = other.basic_get(bot_queue(&world.b).as_str().into(), BasicGetOptions::default());
    refused(get.await, "ACCESS_REFUSED");
    let events = connection.create_channel().await.unwrap();
    refused(consume_on(&events, ORCHESTRATOR_EVENTS_QUEUE).await, "ACCESS_REFUSED");
}

#[tokio::test]
async fn a_bot_declares_nothing_but_may_check_what_exists() {
    let world = World::start("access-configure").await;
    let connection = world.connect_as_bot(&world.a).await;
    let declare = |name: String| {
        let connection = &connection;
        async move {
            let channel = connection.create_channel().await?;
            let options = QueueDeclareOptions { durable: true, ..Default::default() };
            channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await
        }
    };
    refused(declare("botline.bot.new".into()).await, "ACCESS_REFUSED");
    refused(declare("anything".into()).await, "ACCESS_REFUSED");
    refused(declare(bot_queue(&world.a)).await, "ACCESS_REFUSED");

    let channel = connection.create_channel().await.unwrap();
    let exchange = channel.exchange_declare(
        "botline.mine".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    );
    refused(exchange.await, "ACCESS_REFUSED");
    let channel = connection.create_channel().await.unwrap();
    let bind = channel.queue_bind(
        bot_queue(&world.a).as_str().into(),
        EVENTS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    refused(bind.await, "ACCESS_REFUSED");
    let channel = connection.create_channel().await.unwrap();
    refused(Topology::bot(&world.a).declare(&channel).await, "ACCESS_REFUSED");

    // Passive declares need no permission: the agent's --no-declare checks its topology so.
    let channel = connection.create_channel().await.unwrap();
    Topology::bot(&world.a).passive().declare(&channel).await.expect("bot a's topology exists");
    let unknown = BotName::parse("not-loaded").unwrap();
    let channel = connection.create_channel().await.unwrap();
    let missing = refused(Topology::bot(&unknown).passive().declare(&channel).await, "NOT_FOUND");
    assert!(missing.contains("botline.bot.not-loaded"), "{missing}");
}

#[tokio::test]
async fn a_bot_publishes_events_as_itself_and_nothing_else() {
    let world = World::start("access-write").await;
    let shutdown = CancellationToken::new();
    let mut events = world.consume_events(&shutdown);
    let publisher = Publisher::new(
        world.bot_url(&world.a),
        "test bot a",
        Topology::bot(&world.a).passive(),
        WAIT,
        shutdown.clone(),
    );
    publisher.connect().await.expect("bot a connects and checks its topology");
    let published = publisher.publish(EVENTS_EXCHANGE, "bot.heartbeat", b"first", true).await;
    assert_eq!(published.unwrap(), Published::Delivered);
    let first = next(&mut events).await;
    assert_eq!(first.data, b"first");
    let user_id = first.user_id.as_deref();
    assert_eq!(user_id, Some(bot_user(&world.a).as_str()), "the publisher sets its user-id");
    assert_eq!(check_sender(user_id, &world.a, SenderPolicy::Strict), Ok(()));
    assert!(matches!(
        check_sender(user_id, &world.b, SenderPolicy::Strict),
        Err(SenderRefused::Impostor { .. })
    ));

    let connection = world.connect_as_bot(&world.a).await;
    let as_b = BasicProperties::default().with_user_id(bot_user(&world.b).as_str().into());
    let forged = publish_on(&connection, EVENTS_EXCHANGE, "bot.heartbeat", as_b).await;
    let words = refused(forged, "PRECONDITION_FAILED");
    assert!(words.contains("user_id"), "{words}");
    let offer =
        publish_on(&connection, TASKS_EXCHANGE, world.b.as_str(), BasicProperties::default());
    refused(offer.await, "ACCESS_REFUSED");
    let monitoring = publish_on(&connection, "botline.monitoring", "x", BasicProperties::default());
    refused(monitoring.await, "ACCESS_REFUSED");
    let dead = publish_on(&connection, DEAD_LETTER_EXCHANGE, "x", BasicProperties::default()).await;
    dead.expect("a bot may dead-letter what it cannot process");

    publisher.publish(EVENTS_EXCHANGE, "bot.heartbeat", b"second", true).await.unwrap();
    let second = next(&mut events).await;
    assert_eq!(second.data, b"second", "the forged event never reached the orchestrator");
    shutdown.cancel();
}

#[tokio::test]
async fn the_orchestrator_declares_offers_and_consumes_but_reads_no_bots_queue() {
    let world = World::start("access-orchestrator").await;
    let shutdown = CancellationToken::new();
    let mut events = world.consume_events(&shutdown);
    let orchestrator = Publisher::new(
        world.orchestrator_url(),
        "test orchestrator",
        Topology::core(),
        WAIT,
        shutdown.clone(),
    );
    orchestrator.connect().await.expect("the orchestrator declares the core topology");
    let offer = orchestrator.publish(TASKS_EXCHANGE, world.a.as_str(), b"offer", true).await;
    assert_eq!(offer.unwrap(), Published::Delivered, "bot a's queue came with the definitions");

    let bot = world.connect_as_bot(&world.a).await;
    let channel = bot.create_channel().await.unwrap();
    let options = BasicGetOptions { no_ack: true };
    let got = channel.basic_get(bot_queue(&world.a).as_str().into(), options).await.unwrap();
    assert_eq!(got.expect("the offer waits in bot a's queue").delivery.data, b"offer");

    let connection = world.connect_as_orchestrator().await;
    let channel = connection.create_channel().await.unwrap();
    refused(consume_on(&channel, &bot_queue(&world.a)).await, "ACCESS_REFUSED");
    let channel = connection.create_channel().await.unwrap();
    let declare = channel.queue_declare(
        bot_queue(&BotName::parse("rogue").unwrap()).as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    );
    refused(declare.await, "ACCESS_REFUSED");

    let bot_publisher = Publisher::new(
        world.bot_url(&world.a),
        "test bot a",
        Topology::bot(&world.a).passive(),
        WAIT,
        shutdown.clone(),
    );
    bot_publisher.publish(EVENTS_EXCHANGE, "task.accepted", b"event", true).await.unwrap();
    assert_eq!(next(&mut events).await.data, b"event", "the orchestrator consumes events");
    shutdown.cancel();
}

#[tokio::test]
async fn consumers_dead_letter_with_their_reason_under_their_own_users() {
    let world = World::start("access-dead").await;
    let shutdown = CancellationToken::new();
    let spec = ConsumerSpec {
        url: world.bot_url(&world.a),
        name: "test bot a".into(),
        queue: bot_queue(&world.a),
        topology: Topology::bot(&world.a).passive(),
        prefetch: 1,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    };
    tokio::spawn(consume(spec, shutdown.clone(), |_| async {
        Decision::DeadLetter("malformed command".into())
    }));
    let events = ConsumerSpec {
        url: world.orchestrator_url(),
        name: "test orchestrator events".into(),
        queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
        topology: Topology::core(),
        prefetch: 1,
        max_failures: broker_config::amqp::DEFAULT_MAX_FAILURES,
        hearing: None,
    };
    tokio::spawn(consume(events, shutdown.clone(), |_| async {
        Decision::DeadLetter("malformed event".into())
    }));
    let orchestrator =
        Publisher::new(world.orchestrator_url(), "test", Topology::core(), WAIT, shutdown.clone());
    orchestrator.publish(TASKS_EXCHANGE, world.a.as_str(), b"{bad", true).await.unwrap();
    let bot = Publisher::new(
        world.bot_url(&world.a),
        "test bot a",
        Topology::bot(&world.a).passive(),
        WAIT,
        shutdown.clone(),
    );
    bot.publish(EVENTS_EXCHANGE, "bot.heartbeat", b"{worse", true).await.unwrap();
    let mut dead = world.vhost.dead_letters(2).await.unwrap();
    dead.sort_by(|x, y| x.data.cmp(&y.data));
    assert_eq!(dead[0].data, b"{bad");
    assert_eq!(dead[0].reason.as_deref(), Some("malformed command"));
    assert_eq!(dead[0].queue.as_deref(), Some(bot_queue(&world.a).as_str()));
    assert_eq!(dead[1].data, b"{worse");
    assert_eq!(dead[1].reason.as_deref(), Some("malformed event"));
    shutdown.cancel();
}

/// How many messages wait in `queue`, taking them (as the test's own user, which may read all).
async fn drain(vhost: &TestVhost, queue: &str) -> usize {
    let connection = amqp::connect(&vhost.amqp_url(), "test drain").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut taken = 0;
    while channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap().is_some()
    {
        taken += 1;
    }
    connection.close(200, "done".into()).await.unwrap();
    taken
}

#[tokio::test]
async fn a_publisher_publishes_attendance_and_monitoring_and_nothing_else() {
    let world = World::start_with("access-publisher", true).await;
    let publisher = &world.plan.publishers()[0];
    let url = world.vhost.amqp_url_as(publisher.user(), publisher.password());
    let connection = amqp::connect(&url, "test publisher").await.unwrap();
    let allowed = [
        (ATTENDANCE_EXCHANGE, "attendance.whatsapp"),
        (MONITORING_EXCHANGE, "alert.vm-1"),
        // Where STOMP's /topic/attendance and /topic/attendance.<channel> land.
        (STOMP_TOPIC_EXCHANGE, "attendance"),
        (STOMP_TOPIC_EXCHANGE, "attendance.phone"),
    ];
    for (exchange, key) in allowed {
        publish_on(&connection, exchange, key, BasicProperties::default())
            .await
            .unwrap_or_else(|e| panic!("the publisher may publish to {exchange} ({key}): {e}"));
    }
    let forbidden = [
        (EVENTS_EXCHANGE, "bot.heartbeat"),
        (TASKS_EXCHANGE, world.a.as_str()),
        (DEAD_LETTER_EXCHANGE, "x"),
        (STOMP_TOPIC_EXCHANGE, "task.accepted"),
        (STOMP_TOPIC_EXCHANGE, "attendancex"),
        ("", ATTENDANCE_ETL_QUEUE),
        ("amq.direct", "attendance"),
    ];
    for (exchange, key) in forbidden {
        let words = refused(
            publish_on(&connection, exchange, key, BasicProperties::default()).await,
            "ACCESS_REFUSED",
        );
        assert!(words.contains("refused"), "{exchange} {key}: {words}");
    }
    let channel = connection.create_channel().await.unwrap();
    refused(consume_on(&channel, ATTENDANCE_ETL_QUEUE).await, "ACCESS_REFUSED");
    let channel = connection.create_channel().await.unwrap();
    let get = channel.basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions::default());
    refused(get.await, "ACCESS_REFUSED");
    let channel = connection.create_channel().await.unwrap();
    let declare =
        channel.queue_declare("mine".into(), QueueDeclareOptions::default(), FieldTable::default());
    refused(declare.await, "ACCESS_REFUSED");
    let channel = connection.create_channel().await.unwrap();
    let bind = channel.queue_bind(
        ATTENDANCE_ETL_QUEUE.into(),
        EVENTS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    refused(bind.await, "ACCESS_REFUSED");
    connection.close(200, "done".into()).await.unwrap();

    // What it published reached the ETL and the incident engine, and nothing else.
    assert_eq!(drain(&world.vhost, ATTENDANCE_ETL_QUEUE).await, 3);
    assert_eq!(drain(&world.vhost, MONITORING_INCIDENTS_QUEUE).await, 1);
    for queue in [ORCHESTRATOR_EVENTS_QUEUE, DEAD_LETTER_QUEUE, &bot_queue(&world.a)] {
        assert_eq!(drain(&world.vhost, queue).await, 0, "{queue}");
    }

    // The same over STOMP, as a producer moved from ActiveMQ logs in.
    let (user, password, vhost) = (publisher.user(), publisher.password(), world.vhost.name());
    let mut stomp = StompClient::connect(user, password, Some(vhost)).await.unwrap();
    for destination in
        ["/topic/attendance", "/topic/attendance.whatsapp", "/exchange/botline.monitoring/alert"]
    {
        stomp.send(destination, &[], b"{}").await.unwrap_or_else(|e| panic!("{destination}: {e}"));
    }
    stomp.disconnect().await.unwrap();
    for destination in
        ["/topic/task.accepted", "/exchange/botline.events/bot.heartbeat", "/queue/attendance"]
    {
        // An ERROR ends a STOMP session: one session per refusal.
        let mut stomp = StompClient::connect(user, password, Some(vhost)).await.unwrap();
        match stomp.send(destination, &[], b"{}").await {
            Err(StompError::Refused { message, body }) => {
                assert_eq!(message, "access_refused", "{destination}: {body}");
            }
            other => panic!("{destination} should be refused: {other:?}"),
        }
    }
    assert_eq!(drain(&world.vhost, ATTENDANCE_ETL_QUEUE).await, 2);
    assert_eq!(drain(&world.vhost, MONITORING_INCIDENTS_QUEUE).await, 1);
    assert_eq!(drain(&world.vhost, ORCHESTRATOR_EVENTS_QUEUE).await, 0);
    let wrong = StompClient::connect(user, "not-the-password", Some(vhost)).await;
    assert!(matches!(wrong, Err(StompError::Refused { .. })), "{:?}", wrong.err());
}

fn broker_config(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_broker-config")).args(args).output().unwrap()
}

#[tokio::test]
async fn the_users_command_prints_definitions_rabbitmq_loads_and_passwords_once() {
    let vhost = TestVhost::create("access-cli").await.unwrap();
    let unique = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let (orchestrator, a, b) =
        (format!("orch-{unique}"), format!("a-{unique}"), format!("b-{unique}"));
    let file = std::env::temp_dir().join(format!("botline-passwords-{unique}"));
    std::fs::write(&file, format!("# given\nbot-{a}:given-password\n")).unwrap();
    let path = file.to_str().unwrap();
    let args = ["users", "--vhost", vhost.name(), "--orchestrator", &orchestrator];
    let output =
        broker_config(&[&args[..], &["--bot", &a, "--bot", &b, "--passwords", path]].concat());
    std::fs::remove_file(&file).unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stdout.contains("given-password"), "only hashes in the definitions");
    let generated: BTreeMap<&str, &str> =
        stderr.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once(':')).collect();
    let mut expected = vec![orchestrator.clone(), format!("bot-{b}")];
    expected.sort();
    let printed: Vec<String> = generated.keys().map(|user| (*user).to_owned()).collect();
    assert_eq!(printed, expected, "the given password is not printed, the others are: {stderr}");

    vhost.import_definitions(&serde_json::from_str(&stdout).unwrap()).await.unwrap();
    let logins = [
        (orchestrator.clone(), generated[orchestrator.as_str()].to_owned()),
        (format!("bot-{a}"), "given-password".to_owned()),
        (format!("bot-{b}"), generated[format!("bot-{b}").as_str()].to_owned()),
    ];
    for (user, password) in &logins {
        let connection = amqp::connect(&vhost.amqp_url_as(user, password), "test cli login")
            .await
            .unwrap_or_else(|e| panic!("{user} logs in with its password: {e}"));
        connection.close(200, "done".into()).await.unwrap();
    }
    let names = vhost.queue_names().await.unwrap();
    assert!(names.contains(&format!("botline.bot.{a}")), "{names:?}");
}

#[test]
fn the_users_command_refuses_bad_requests_and_prints_nothing() {
    for (args, expected) in [
        (&["users", "--orchestrator", "bot-x"][..], "starts the names of bot users"),
        (&["users", "--bot", "a", "--bot", "a"][..], "bot a is given twice"),
        (&["users", "--bot", "Not A Bot"][..], "lowercase letters"),
        (&["users", "--passwords", "/nonexistent/botline"][..], "reading /nonexistent/botline"),
    ] {
        let output = broker_config(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} is refused");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} prints no definitions");
    }
    let file = std::env::temp_dir().join(format!("botline-passwords-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, "bot-z:secret\n").unwrap();
    let output = broker_config(&["users", "--bot", "a", "--passwords", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("names user 'bot-z'"), "{stderr}");
    assert!(!stderr.contains("secret"), "no password in the error: {stderr}");
    assert!(output.stdout.is_empty());
}

/// A retried event is put back as the orchestrator's own user, through the default exchange its
/// permissions allow, and speaks for the bot that published it: the handler sees the bot's
/// user-id and routing key again, so the strict sender check holds on every try. A bot cannot
/// use those headers to speak for another: on its own message they are ignored (only the
/// failure count is read, which can only shorten its own message's tries).
#[tokio::test]
async fn a_retried_event_keeps_its_sender_and_no_bot_can_forge_one() {
    let world = World::start("access-retry").await;
    let shutdown = CancellationToken::new();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        url: world.orchestrator_url(),
        name: "test orchestrator events".into(),
        queue: ORCHESTRATOR_EVENTS_QUEUE.into(),
        topology: Topology::core(),
        prefetch: 10,
        max_failures: 3,
        hearing: None,
    };
    tokio::spawn(consume(spec, shutdown.clone(), move |message: Message| {
        let retry = message.data == b"retry me" && message.failures == 0;
        let _ = tx.send(message);
        async move { if retry { Decision::Retry("once".into()) } else { Decision::Ack } }
    }));
    let bot = Publisher::new(
        world.bot_url(&world.a),
        "test bot a",
        Topology::bot(&world.a).passive(),
        WAIT,
        shutdown.clone(),
    );
    bot.publish(EVENTS_EXCHANGE, "task.accepted", b"retry me", true).await.unwrap();
    let first = next(&mut seen).await;
    let again = next(&mut seen).await;
    let bot_a = bot_user(&world.a);
    for (message, failures) in [(&first, 0), (&again, 1)] {
        assert_eq!(message.data, b"retry me");
        assert_eq!(message.user_id.as_deref(), Some(bot_a.as_str()), "{message:?}");
        assert_eq!(message.routing_key, "task.accepted", "{message:?}");
        assert_eq!(message.failures, failures, "{message:?}");
    }

    // Bot b dresses its event up as a retried copy of one of bot a's.
    let connection = world.connect_as_bot(&world.b).await;
    let channel = connection.create_channel().await.unwrap();
    let mut headers = FieldTable::default();
    let text = |s: &str| lapin::types::AMQPValue::LongString(s.into());
    headers.insert("x-botline-user-id".into(), text(&bot_a));
    headers.insert("x-botline-routing-key".into(), text("task.completed"));
    headers.insert("x-botline-failures".into(), lapin::types::AMQPValue::LongLongInt(1));
    let properties =
        BasicProperties::default().with_user_id(bot_user(&world.b).into()).with_headers(headers);
    channel
        .basic_publish(
            EVENTS_EXCHANGE.into(),
            "bot.heartbeat".into(),
            BasicPublishOptions::default(),
            b"forged",
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let forged = next(&mut seen).await;
    assert_eq!(forged.data, b"forged");
    assert_eq!(forged.user_id, Some(bot_user(&world.b)), "still bot b's: {forged:?}");
    assert_eq!(forged.routing_key, "bot.heartbeat", "{forged:?}");
    assert_eq!(forged.failures, 1, "{forged:?}");
    assert_eq!(drain(&world.vhost, DEAD_LETTER_QUEUE).await, 0, "nothing dead-lettered");
    shutdown.cancel();
}
