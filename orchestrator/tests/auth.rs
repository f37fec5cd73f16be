//! API authentication against the real server: every route of the OpenAPI document refuses
//! requests without a valid token and writes with the read token; without tokens only clients on
//! this machine are served and the server will not listen where others could reach it; a bot's
//! token (used by the real bot agent in HTTP mode) changes only that bot and the tasks it was
//! given; tokens never reach the logs.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use bot_agent::AgentConfig;
use bot_agent::config::ApiToken;
use broker_config::messages::encode;
use broker_config::testing::TestVhost;
use broker_config::{BotName, Event, System, TaskRef};
use common::{Backend, TestApp};
use orchestrator::http::auth::{AccessError, Secret};
use orchestrator::{Config, Orchestrator, StartError};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ADMIN: &str = "admin-test-token-0123456789abcdef";
const READ: &str = "read-test-token-0123456789abcdef";
const BOT_A: &str = "bot-a-test-token-0123456789abcdef";
const BOT_B: &str = "bot-b-test-token-0123456789abcdef";
const WRONG: &str = "wrong-test-token-0123456789abcdef";

/// The probes: the only routes of the OpenAPI document anyone may call.
const PUBLIC: [&str; 2] = ["/healthz", "/readyz"];

fn with_tokens(config: &mut Config) {
    config.auth.admin_token = Some(Secret::new(ADMIN));
    config.auth.read_token = Some(Secret::new(READ));
    config.auth.bot_tokens =
        vec![Secret::new(format!("bot-a={BOT_A}")), Secret::new(format!("bot-b={BOT_B}"))];
}

/// What the server answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: Value,
}

impl Answer {
    #[track_caller]
    fn refused(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        let code = if status == 401 { "unauthorized" } else { "forbidden" };
        assert_eq!(self.body["error"]["code"], code, "{what}: {self:?}");
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
        if status == 401 {
            let challenge = self.challenge.as_deref().unwrap_or_default();
            assert!(challenge.starts_with("Bearer realm=\"botline\""), "{what}: {self:?}");
        }
    }

    #[track_caller]
    fn allowed(&self, what: &str) {
        assert!(![401, 403].contains(&self.status), "{what}: {self:?}");
    }
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    send(&app.client, method, &app.url(path), token, body).await
}

async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let header =
        |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let challenge = header(reqwest::header::WWW_AUTHENTICATE);
    // The change stream never ends: its headers are enough.
    if header(reqwest::header::CONTENT_TYPE).is_some_and(|t| t.starts_with("text/event-stream")) {
        return Answer { status, challenge, body: Value::Null };
    }
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, challenge, body }
}

/// Every (method, path) of the server's own OpenAPI document, path parameters filled in.
async fn documented_routes(app: &TestApp) -> Vec<(Method, String)> {
    let doc = call(app, Method::GET, "/api/v1/openapi.json", Some(ADMIN), None).await;
    assert_eq!(doc.status, 200, "{doc:?}");
    let any_id = Uuid::new_v4().to_string();
    let mut routes = Vec::new();
    for (template, item) in doc.body["paths"].as_object().expect("paths") {
        let path: String = template
            .split('/')
            .map(|segment| if segment.starts_with('{') { any_id.as_str() } else { segment })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "put", "post", "delete", "patch", "head", "options", "trace"] {
            if item.get(method).is_some() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                routes.push((method, path.clone()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_documented_route_needs_a_token_and_the_read_token_only_reads() {
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        with_tokens(config);
        // With a token, any address may be listened on.
        config.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    })
    .await;
    let routes = documented_routes(&app).await;
    assert!(routes.len() >= 30, "the document lists every route: {routes:?}");
    let empty = json!({});
    let mut public = Vec::new();
    for (method, path) in &routes {
        let what = format!("{method} {path}");
        let body = (method != Method::GET).then_some(&empty);
        if PUBLIC.contains(&path.as_str()) {
            call(&app, method.clone(), path, None, body).await.allowed(&what);
            public.push(path.as_str());
            continue;
        }
        let none = call(&app, method.clone(), path, None, body).await;
        none.refused(401, &format!("{what} without a token"));
        let wrong = call(&app, method.clone(), path, Some(WRONG), body).await;
        wrong.refused(401, &format!("{what} with a wrong token"));
        assert!(wrong.challenge.as_deref().is_some_and(|c| c.contains("invalid_token")));
        let read = call(&app, method.clone(), path, Some(READ), body).await;
        let bot = call(&app, method.clone(), path, Some(BOT_A), body).await;
        if method == Method::GET {
            read.allowed(&format!("{what} with the read token"));
            bot.allowed(&format!("{what} with a bot token"));
        } else {
            read.refused(403, &format!("{what} with the read token"));
            // No id here is the bot's own, and no body names it.
            bot.refused(403, &format!("{what} with a bot token"));
        }
        call(&app, method.clone(), path, Some(ADMIN), body).await.allowed(&what);
    }
    public.sort_unstable();
    public.dedup();
    assert_eq!(public, PUBLIC, "the probes are documented and public");

    // Routes outside the document: the dashboard's files are public, the rest is not.
    for path in ["/", "/assets/app.js", "/assets/app.css", "/favicon.svg", "/reports/attendance"] {
        assert_eq!(call(&app, Method::GET, path, None, None).await.status, 200, "{path}");
    }
    for path in ["/api/v1/openapi.json", "/api/v1/no-such-route", "/no-such-page"] {
        call(&app, Method::GET, path, None, None).await.refused(401, path);
    }
    let basic = app
        .client
        .get(app.url("/api/v1/tasks"))
        .basic_auth("admin", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401, "only bearer tokens");
    // Refused writes changed nothing.
    let tasks = call(&app, Method::GET, "/api/v1/tasks", Some(READ), None).await;
    assert_eq!(tasks.body["total"], 0, "{tasks:?}");
}

/// The rules are the routes' own (extractors), so what happens before and around them is checked
/// here: a refusal comes before any parsing of the path, the query or the body; the fallbacks
/// (no such route, no such method, on public routes too) refuse as a write does; a bot's token
/// on a path whose id is not a UUID is refused, not parsed.
#[tokio::test]
async fn refusals_come_before_parsing_and_the_fallbacks_refuse_as_writes_do() {
    let app = TestApp::spawn_with(Backend::Sqlite, with_tokens).await;
    let empty = json!({});
    let status = |answer: Answer| answer.status;

    // The query is bad, but the caller is unknown: 401 first; a reader gets the 400.
    let bad_query = "/api/v1/tasks?limit=many";
    call(&app, Method::GET, bad_query, None, None).await.refused(401, bad_query);
    assert_eq!(status(call(&app, Method::GET, bad_query, Some(READ), None).await), 400);
    let head = call(&app, Method::HEAD, "/api/v1/tasks", None, None).await;
    assert_eq!(head.status, 401, "a HEAD is refused as its GET: {head:?}");
    assert_eq!(status(call(&app, Method::HEAD, "/api/v1/tasks", Some(READ), None).await), 200);

    // Only the reads of the public routes are public.
    for path in ["/healthz", "/readyz", "/", "/reports/attendance"] {
        let what = format!("POST {path}");
        call(&app, Method::POST, path, None, Some(&empty)).await.refused(401, &what);
        call(&app, Method::POST, path, Some(READ), Some(&empty)).await.refused(403, &what);
        call(&app, Method::POST, path, Some(BOT_A), Some(&empty)).await.refused(403, &what);
        assert_eq!(status(call(&app, Method::POST, path, Some(ADMIN), Some(&empty)).await), 405);
    }
    // A method a route does not have, and a route that does not exist: a reader reads a 404 or
    // 405, and is refused anything else, as is a bot.
    let openapi = "/api/v1/openapi.json";
    call(&app, Method::PUT, openapi, Some(READ), Some(&empty)).await.refused(403, "PUT openapi");
    call(&app, Method::PUT, openapi, Some(BOT_A), Some(&empty)).await.refused(403, "PUT openapi");
    assert_eq!(status(call(&app, Method::PUT, openapi, Some(ADMIN), Some(&empty)).await), 405);
    let nowhere = "/api/v1/no-such-route";
    assert_eq!(status(call(&app, Method::GET, nowhere, Some(READ), None).await), 404);
    assert_eq!(status(call(&app, Method::GET, nowhere, Some(BOT_A), None).await), 404);
    call(&app, Method::POST, nowhere, Some(READ), Some(&empty)).await.refused(403, "POST nowhere");
    call(&app, Method::DELETE, nowhere, Some(BOT_A), None).await.refused(403, "DELETE nowhere");
    assert_eq!(status(call(&app, Method::POST, nowhere, Some(ADMIN), Some(&empty)).await), 404);

    // An id that is not a UUID: refused for a bot whatever the route, a 400 for the operator.
    for (method, path) in [
        (Method::PUT, "/api/v1/bots/bot-a"),
        (Method::PATCH, "/api/v1/bots/bot-a"),
        (Method::DELETE, "/api/v1/bots/bot-a"),
        (Method::PUT, "/api/v1/tasks/1"),
        (Method::DELETE, "/api/v1/tasks/1"),
    ] {
        let what = format!("{method} {path}");
        let body = (method != Method::DELETE).then_some(&empty);
        call(&app, method.clone(), path, Some(BOT_A), body).await.refused(403, &what);
        let admin = call(&app, method.clone(), path, Some(ADMIN), body).await;
        assert_eq!(admin.status, 400, "{what}: {admin:?}");
    }
}

#[tokio::test]
async fn a_write_refused_before_its_body_was_read_does_not_break_the_clients_next_request() {
    let app = TestApp::spawn_with(Backend::Sqlite, with_tokens).await;
    // One pooled client, as httpx and browsers keep: the refused write's body is left unread, so
    // the server closes that connection; the answer must say so, or the next request on it fails.
    let client = reqwest::Client::new();
    let big = json!({"system": "NOOP", "description": "x".repeat(256 * 1024)});
    let (tasks, nowhere) = (app.url("/api/v1/tasks"), app.url("/api/v1/no-such-route"));
    for round in 0..40 {
        let (token, url) = if round % 2 == 0 { (READ, &tasks) } else { (WRONG, &nowhere) };
        let refused = client.post(url).bearer_auth(token).json(&big).send().await.unwrap();
        assert!([401, 403].contains(&refused.status().as_u16()), "round {round}: {refused:?}");
        let connection = refused.headers().get(reqwest::header::CONNECTION).cloned();
        assert_eq!(
            connection.as_ref().and_then(|c| c.to_str().ok()),
            Some("close"),
            "round {round}"
        );
        let next = client.get(&tasks).bearer_auth(READ).send().await;
        assert!(next.is_ok_and(|r| r.status() == 200), "round {round}: the next request failed");
    }
    // A read without a body keeps its connection.
    let read = client.get(&tasks).bearer_auth(WRONG).send().await.unwrap();
    assert_eq!(read.status(), 401);
    assert!(read.headers().get(reqwest::header::CONNECTION).is_none(), "{read:?}");
}

/// A local address that is not loopback, if this machine has one (the source address towards a
/// documentation address through the default route; nothing is sent).
async fn non_loopback_address() -> Option<IpAddr> {
    let ip: IpAddr =
        bot_agent::net::local_ip_towards("http://203.0.113.1:80").await.parse().ok()?;
    // The standard library's notion, not the server's: the test must not share its mistakes.
    (!ip.is_loopback()).then_some(ip)
}

#[tokio::test]
async fn without_tokens_only_clients_on_this_machine_s_loopback_are_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let from = |ip: IpAddr| reqwest::Client::builder().local_address(ip).build().unwrap();
    let loopback = from(IpAddr::from([127, 0, 0, 2]));
    let served = send(&loopback, Method::GET, &app.url("/api/v1/tasks"), None, None).await;
    assert_eq!(served.status, 200, "another loopback address is this machine too: {served:?}");

    let Some(outside) = non_loopback_address().await else {
        eprintln!(
            "this machine has no address besides loopback: the refusal of other clients is \
             proven by the unit tests of orchestrator::http::auth only"
        );
        return;
    };
    // Linux lets a socket bound to the machine's own network address connect to 127.0.0.1:
    // the server then sees a client that is not on loopback.
    let other = from(outside);
    let refused = send(&other, Method::GET, &app.url("/api/v1/tasks"), None, None).await;
    refused.refused(403, &format!("a client at {outside}"));
    assert!(refused.challenge.is_none(), "no token would help: {refused:?}");
    let task = json!({"description": "from afar", "system": "NOOP"});
    let url = app.url("/api/v1/tasks");
    let write = send(&other, Method::POST, &url, Some(ADMIN), Some(&task)).await;
    write.refused(403, "a write from afar, whatever token it brings");
    let probe = send(&other, Method::GET, &app.url("/healthz"), None, None).await;
    assert_eq!(probe.status, 200, "the probes stay public");
    let tasks = send(&loopback, Method::GET, &app.url("/api/v1/tasks"), None, None).await;
    assert_eq!(tasks.body["total"], 0, "nothing was created");
}

#[tokio::test]
async fn without_tokens_every_documented_route_but_the_probes_refuses_a_client_from_afar() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let routes = documented_routes(&app).await;
    assert!(routes.len() >= 30, "the document lists every route: {routes:?}");
    let Some(outside) = non_loopback_address().await else {
        eprintln!("this machine has no address besides loopback: nothing to call from afar");
        return;
    };
    let other = reqwest::Client::builder().local_address(outside).build().unwrap();
    let empty = json!({});
    for (method, path) in &routes {
        let what = format!("{method} {path} from {outside}");
        let body = (method != Method::GET).then_some(&empty);
        let answer = send(&other, method.clone(), &app.url(path), Some(ADMIN), body).await;
        if PUBLIC.contains(&path.as_str()) {
            answer.allowed(&what);
        } else {
            answer.refused(403, &what);
        }
    }
    let tasks = call(&app, Method::GET, "/api/v1/tasks", None, None).await;
    assert_eq!(tasks.body["total"], 0, "nothing was created: {tasks:?}");
}

/// `BOTLINE_*` variables of the environment the tests run in must not reach the binary.
fn orchestrator_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("BOTLINE_")) {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "warn");
    command
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("botline-auth-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn without_a_token_the_orchestrator_will_not_listen_where_other_machines_could_reach_it() {
    // Refused before the database and the broker are touched (neither is reachable here).
    let mut config = Config::for_database("postgres://nobody@127.0.0.1:1/none");
    config.bots.http_bot_networks = orchestrator::config::BotBoundary::loopback_networks();
    config.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    config.listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    match Orchestrator::start(&config, CancellationToken::new()).await.map(|_| ()) {
        Err(StartError::Access(AccessError::Unprotected { listen })) => {
            assert_eq!(listen, config.listen)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    config.auth.admin_token = Some(Secret::new("s3cret-short"));
    let short = Orchestrator::start(&config, CancellationToken::new())
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(matches!(short, StartError::Access(AccessError::TooShort { .. })), "{short:?}");
    assert!(!short.to_string().contains("s3cret"), "{short}");

    // The binary says so in one line and exits with status 1, having created nothing.
    let dir = temp_dir();
    let database = dir.join("botline.db");
    let output = orchestrator_binary()
        .env("BOTLINE_LISTEN", "0.0.0.0:0")
        .env("BOTLINE_DATABASE_URL", format!("sqlite://{}?mode=rwc", database.display()))
        .env("BOTLINE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: refusing to serve the API on 0.0.0.0:0 without a token")
            && stderr.contains("BOTLINE_ADMIN_TOKEN"),
        "{stderr}"
    );
    assert!(!database.exists(), "nothing was created");
    let output = orchestrator_binary()
        .env("BOTLINE_ADMIN_TOKEN", "s3cret-short")
        .env("BOTLINE_DATABASE_URL", format!("sqlite://{}?mode=rwc", database.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the admin token is too short"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "the refused token is not shown: {stderr}");

    // A caller that binds its own listener gets the same refusal from serve.
    let vhost = TestVhost::create("auth").await.expect("RabbitMQ with its management plugin");
    let mut config = Config::for_database(format!("sqlite://{}?mode=rwc", database.display()));
    config.bots.http_bot_networks = orchestrator::config::BotBoundary::loopback_networks();
    config.amqp_url = vhost.amqp_url();
    let orchestrator =
        Orchestrator::start(&config, CancellationToken::new()).await.expect("starts for loopback");
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(10), orchestrator.serve(listener))
        .await
        .expect("serve returns at once");
    let Err(orchestrator::ServeError::Io(refused)) = served else {
        panic!("refused with an I/O error: {served:?}");
    };
    assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied, "{refused}");
    assert!(refused.to_string().starts_with("refusing to serve the API on 0.0.0.0:"), "{refused}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn event(event: &Event) -> Value {
    serde_json::from_slice(&encode(event)).unwrap()
}

fn accepted(task: TaskRef, bot: &str) -> Value {
    event(&Event::TaskAccepted { task, bot: BotName::parse(bot).unwrap(), at: chrono::Utc::now() })
}

fn completed(task: TaskRef, bot: &str) -> Value {
    event(&Event::TaskCompleted {
        task,
        bot: BotName::parse(bot).unwrap(),
        rows: vec![],
        output: Some(json!({"forged": true})),
        log: None,
        at: chrono::Utc::now(),
    })
}

fn heartbeat(bot: &str) -> Value {
    event(&Event::BotHeartbeat {
        bot: BotName::parse(bot).unwrap(),
        task: None,
        tasks: vec![],
        at: chrono::Utc::now(),
    })
}

async fn wait_for(app: &TestApp, what: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = call(app, Method::GET, path, Some(ADMIN), None).await;
        if done(&answer.body) {
            return answer.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_task(app: &TestApp, body: Value) -> Value {
    let created = call(app, Method::POST, "/api/v1/tasks", Some(ADMIN), Some(&body)).await;
    assert_eq!(created.status, 201, "{created:?}");
    created.body
}

async fn history(app: &TestApp, id: &str) -> Vec<String> {
    let path = format!("/api/v1/tasks/{id}/events");
    let events = call(app, Method::GET, &path, Some(ADMIN), None).await.body;
    events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

async fn a_bot_token_changes_only_its_own_bot_and_the_tasks_it_was_given(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        with_tokens(config);
        config.sweep_interval = Duration::from_millis(250);
    })
    .await;
    // bot-a is the real agent in HTTP mode, with its token: it registers, finds itself, reports.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let mut agent = AgentConfig::new(
        BotName::parse("bot-a").unwrap(),
        vec![System::NOOP],
        app.vhost.amqp_url(),
    );
    agent.api_url = app.url("");
    agent.api_token = Some(ApiToken::new(BOT_A));
    agent.http = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    agent.ip_address = Some("127.0.0.1".into());
    agent.heartbeat_interval_ms = 500;
    let stop = CancellationToken::new();
    let running = tokio::spawn(bot_agent::run(agent, stop.clone()));
    let bots = wait_for(&app, "bot-a online", "/api/v1/bots?name=bot-a&status=AVAILABLE", |b| {
        b["total"] == 1
    })
    .await;
    let a_id = bots["items"][0]["id"].as_str().unwrap().to_owned();
    let long = create_task(
        &app,
        json!({"description": "long", "system": "NOOP", "payload": {"duration_ms": 60000}}),
    )
    .await;
    let task_id = long["id"].as_str().unwrap().to_owned();
    let task_path = format!("/api/v1/tasks/{task_id}");
    let task =
        wait_for(&app, "bot-a runs the task", &task_path, |t| t["status"] == "RUNNING").await;
    assert_eq!(task["bot_id"], a_id.as_str());
    let held = TaskRef {
        task_id: task_id.parse().unwrap(),
        attempt: task["attempt"].as_u64().unwrap() as u32,
    };

    // bot-b registers itself, and only itself.
    let registration =
        |name: &str| json!({"name": name, "ip_address": "127.0.0.1", "systems": ["CPE"]});
    for name in ["bot-a", "bot-x"] {
        let answer =
            call(&app, Method::POST, "/api/v1/bots", Some(BOT_B), Some(&registration(name))).await;
        answer.refused(403, &format!("bot-b registering {name}"));
    }
    let own = registration("bot-b");
    let b = call(&app, Method::POST, "/api/v1/bots", Some(BOT_B), Some(&own)).await;
    assert_eq!(b.status, 201, "{b:?}");
    let b_path = format!("/api/v1/bots/{}", b.body["id"].as_str().unwrap());

    // bot-b cannot touch bot-a's record, even speaking as bot-a...
    let a_path = format!("/api/v1/bots/{a_id}");
    let tries = [
        (Method::PUT, heartbeat("bot-b")),
        (Method::PUT, heartbeat("bot-a")),
        (Method::PUT, registration("bot-a")),
        (Method::PATCH, json!({"status": "UNAVAILABLE"})),
        (Method::DELETE, json!({})),
    ];
    for (method, body) in tries {
        let answer = call(&app, method.clone(), &a_path, Some(BOT_B), Some(&body)).await;
        answer.refused(403, &format!("bot-b: {method} bot-a with {body}"));
    }
    // ...nor bot-a's task, nor do what operators do.
    for body in [completed(held, "bot-b"), completed(held, "bot-a"), json!({"description": "x"})] {
        let answer = call(&app, Method::PUT, &task_path, Some(BOT_B), Some(&body)).await;
        answer.refused(403, &format!("bot-b: PUT bot-a's task with {body}"));
    }
    let noop = json!({"description": "by a bot", "system": "NOOP"});
    let operator = [
        (Method::POST, "/api/v1/tasks".to_owned(), noop),
        (Method::POST, format!("{task_path}/cancel"), json!({})),
        (Method::PATCH, task_path.clone(), json!({"priority": 9})),
        (Method::DELETE, task_path.clone(), json!({})),
    ];
    for (method, path, body) in operator {
        let answer = call(&app, method.clone(), &path, Some(BOT_B), Some(&body)).await;
        answer.refused(403, &format!("bot-b: {method} {path}"));
    }
    // bot-b changes its own record, but may not take another name; it reads like anyone.
    let rename = json!({"name": "bot-c"});
    let rename = call(&app, Method::PATCH, &b_path, Some(BOT_B), Some(&rename)).await;
    rename.refused(403, "bot-b renaming itself");
    let moved = json!({"ip_address": "127.0.0.9"});
    let own = call(&app, Method::PATCH, &b_path, Some(BOT_B), Some(&moved)).await;
    assert_eq!((own.status, &own.body["ip_address"]), (200, &json!("127.0.0.9")), "{own:?}");
    assert_eq!(call(&app, Method::GET, &task_path, Some(BOT_B), None).await.status, 200);

    // bot-a's token on the task it holds: a repeated acceptance is taken (and changes nothing).
    let repeated = accepted(held, "bot-a");
    let again = call(&app, Method::PUT, &task_path, Some(BOT_A), Some(&repeated)).await;
    assert_eq!(again.status, 200, "{again:?}");
    // Nothing bot-b tried changed anything.
    let task = call(&app, Method::GET, &task_path, Some(ADMIN), None).await.body;
    assert_eq!((&task["status"], &task["bot_id"]), (&json!("RUNNING"), &json!(a_id)));
    let a = call(&app, Method::GET, &a_path, Some(ADMIN), None).await.body;
    assert_eq!(
        (&a["name"], &a["status"], &a["ip_address"]),
        (&json!("bot-a"), &json!("BUSY"), &json!("127.0.0.1"))
    );
    assert!(!history(&app, &task_id).await.contains(&"completed".to_owned()));

    // bot-a cannot report on a task it was never given (nobody runs CPE: it waits).
    let payload = json!({"equipment_id": "CPE000001", "timeoutInSeconds": 30, "parameters": {}});
    let cpe =
        create_task(&app, json!({"description": "not a's", "system": "CPE", "payload": payload}));
    let cpe_id = cpe.await["id"].as_str().unwrap().to_owned();
    let other = TaskRef { task_id: cpe_id.parse().unwrap(), attempt: 1 };
    let forged = accepted(other, "bot-a");
    let path = format!("/api/v1/tasks/{cpe_id}");
    let answer = call(&app, Method::PUT, &path, Some(BOT_A), Some(&forged)).await;
    answer.refused(403, "bot-a on a task it was never given");

    // Cancelled: bot-a is told to stop and freed. It held the task, so its late report is still
    // heard, as over the broker: recorded as stale, changing nothing.
    let cancel = call(&app, Method::POST, &format!("{task_path}/cancel"), Some(ADMIN), None).await;
    assert_eq!(cancel.status, 200, "{cancel:?}");
    wait_for(&app, "bot-a freed", &a_path, |b| b["status"] == "AVAILABLE").await;
    let late = completed(held, "bot-a");
    let late = call(&app, Method::PUT, &task_path, Some(BOT_A), Some(&late)).await;
    assert_eq!(late.status, 200, "{late:?}");
    let task = call(&app, Method::GET, &task_path, Some(ADMIN), None).await.body;
    assert_eq!(task["status"], "CANCELLED");
    assert!(history(&app, &task_id).await.contains(&"stale_event".to_owned()));

    // The agent, with its token, runs a task from offer to end.
    let short = create_task(
        &app,
        json!({"description": "short", "system": "NOOP", "payload": {"duration_ms": 10}}),
    )
    .await;
    let short_id = short["id"].as_str().unwrap().to_owned();
    let done = wait_for(&app, "the short task done", &format!("/api/v1/tasks/{short_id}"), |t| {
        t["status"] == "COMPLETE"
    })
    .await;
    assert_eq!(done["bot_id"], a_id.as_str());
    let kinds: Vec<String> =
        history(&app, &short_id).await.into_iter().filter(|k| k != "progress").collect();
    assert_eq!(kinds, ["created", "assigned", "accepted", "completed"]);
    stop.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running).await;
    stopped.expect("the agent stops").expect("joins").expect("the agent ran");
}

on_every_backend!(a_bot_token_changes_only_its_own_bot_and_the_tasks_it_was_given);

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let vhost = TestVhost::create("auth").await.expect("RabbitMQ with its management plugin");
    let dir = temp_dir();
    let log_path = dir.join("orchestrator.log");
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let tokens_file = dir.join("bots");
    std::fs::write(&tokens_file, format!("bot-a={BOT_A}\n")).unwrap();
    let mut child = orchestrator_binary()
        .env("RUST_LOG", "trace")
        .env("BOTLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("BOTLINE_DATABASE_URL", format!("sqlite://{}?mode=rwc", dir.join("db").display()))
        .env("BOTLINE_AMQP_URL", vhost.amqp_url())
        .env("BOTLINE_ADMIN_TOKEN", ADMIN)
        .env("BOTLINE_READ_TOKEN", READ)
        .env("BOTLINE_BOT_TOKENS_FILE", &tokens_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !client.get(format!("{api}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(tokio::time::Instant::now() < deadline, "the orchestrator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks = format!("{api}/api/v1/tasks");
    let body = json!({"description": "logged?", "system": "NOOP"});
    assert_eq!(send(&client, Method::POST, &tasks, Some(ADMIN), Some(&body)).await.status, 201);
    assert_eq!(send(&client, Method::POST, &tasks, Some(READ), Some(&body)).await.status, 403);
    assert_eq!(send(&client, Method::GET, &tasks, Some(WRONG), None).await.status, 401);
    assert_eq!(send(&client, Method::POST, &tasks, Some(BOT_A), Some(&body)).await.status, 403);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exited = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exited.success(), "stopped cleanly: {exited}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("request refused"), "the log was captured: {log}");
    assert!(log.contains("bearer tokens: admin, read, 1 bot(s)"), "{log}");
    for token in [ADMIN, READ, BOT_A, WRONG] {
        assert!(!log.contains(token), "{token} is in the log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
