//! HTTP push mode, for bots that cannot speak AMQP: the orchestrator POSTs commands to
//! `/tasks` (the same JSON the queue carries) and the bot reports with `PUT` on the
//! orchestrator's API. No broker at all.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use broker_config::amqp::Backoff;
use broker_config::https::{self, TlsMaterial};
use broker_config::messages::decode;
use broker_config::push::{self, SIGNATURE_HEADER, Verifier};
use broker_config::{BotStatus, Command, Delivery};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agent::{Agent, Claim};
use crate::automations::Automations;
use crate::config::{AgentConfig, ApiToken};
use crate::error::AgentError;
use crate::net::local_ip_towards;
use crate::reporter::{HttpReporter, Reporter};

/// How long one request to the orchestrator's API may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer to `POST /tasks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAnswer {
    /// Whether the command was taken.
    pub accepted: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl TaskAnswer {
    fn taken() -> Response {
        let answer = TaskAnswer { accepted: true, reason: None };
        (StatusCode::ACCEPTED, Json(answer)).into_response()
    }

    fn refused(status: StatusCode, reason: String) -> Response {
        let answer = TaskAnswer { accepted: false, reason: Some(reason) };
        (status, Json(answer)).into_response()
    }
}

/// Runs the agent in HTTP mode on `address` until `shutdown`, then shuts down gracefully.
pub(crate) async fn run(
    config: AgentConfig,
    address: SocketAddr,
    automations: Automations,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    // A certificate that cannot serve stops the start, before the bot registers.
    let tls = server_tls(&config)?;
    let listener =
        TcpListener::bind(address).await.map_err(|source| AgentError::Bind { address, source })?;
    let port = listener.local_addr().map_or(address.port(), |a| a.port());
    let client = api_client(&config)?;
    let ip_address = match &config.ip_address {
        Some(ip) => ip.clone(),
        None => local_ip_towards(&config.api_url).await,
    };
    let endpoint = BotEndpoint { port, tls: tls.is_some() };
    let Some(bot_id) = find_or_register(&client, &config, &ip_address, endpoint, &shutdown).await?
    else {
        return Ok(());
    };
    let reporter = Reporter::Http(HttpReporter::new(client, &config.api_url, bot_id));
    let agent = Arc::new(Agent::new(&config, reporter, automations));
    tracing::info!(bot = %config.name, %bot_id, %ip_address, port, slots = config.slots, "bot online (HTTP)");
    agent.announce_online(ip_address).await;
    let heartbeat_stop = CancellationToken::new();
    let heartbeats = tokio::spawn(
        Arc::clone(&agent).heartbeats(config.heartbeat_interval(), heartbeat_stop.clone()),
    );
    let verifier = match api_token(&config)? {
        Some(token) => Some(Verifier::new(token.push_key())),
        None => {
            tracing::warn!(
                "no API token: the commands POSTed to this bot cannot be checked (anyone who reaches it may send them); give it --api-token"
            );
            None
        }
    };
    let router = router_checked(Arc::clone(&agent), verifier);
    let served = match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .await
        }
        Some(tls) => https::serve(listener, router, tls, shutdown.clone()).await,
    };
    tracing::info!("shutting down");
    agent.shut_down(config.shutdown_grace()).await;
    heartbeat_stop.cancel();
    let _ = heartbeats.await;
    agent.announce_offline().await;
    served.map_err(AgentError::Serve)
}

/// Where the orchestrator reaches this bot: its port, and whether it serves HTTPS there.
#[derive(Debug, Clone, Copy)]
struct BotEndpoint {
    port: u16,
    tls: bool,
}

/// The HTTPS configuration of `--http-tls-cert` and `--http-tls-key` (ring), if given.
fn server_tls(config: &AgentConfig) -> Result<Option<Arc<rustls::ServerConfig>>, AgentError> {
    let (Some(cert), Some(key)) = (&config.http_tls_cert, &config.http_tls_key) else {
        return Ok(None);
    };
    TlsMaterial::from_files(cert, key)
        .and_then(|material| material.server_config())
        .map(Some)
        .map_err(|error| {
            AgentError::HttpsServer(format!("{} and {}: {error}", cert.display(), key.display()))
        })
}

/// The bot's API token, from the flag or its file.
fn api_token(config: &AgentConfig) -> Result<Option<ApiToken>, AgentError> {
    Ok(match (&config.api_token, &config.api_token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => {
            Some(ApiToken::new(&std::fs::read_to_string(path).map_err(|error| {
                AgentError::HttpClient(format!(
                    "cannot read the API token from {}: {error}",
                    path.display()
                ))
            })?))
        }
        (None, None) => None,
    })
}

/// The client for the orchestrator's API: every call carries the bot's token, when it has one.
fn api_client(config: &AgentConfig) -> Result<reqwest::Client, AgentError> {
    let token = api_token(config)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let header = token.header().ok_or_else(|| {
            AgentError::HttpClient(
                "the API token may only hold visible ASCII characters (no spaces)".to_owned(),
            )
        })?;
        headers.insert(reqwest::header::AUTHORIZATION, header);
    }
    reqwest::Client::builder()
        .timeout(API_TIMEOUT)
        .default_headers(headers)
        .build()
        .map_err(|error| AgentError::HttpClient(error.to_string()))
}

/// What the bot's routes share: the agent, and the check of the orchestrator's signature when
/// the bot has a token.
struct Endpoint {
    agent: Arc<Agent>,
    verifier: Option<Mutex<Verifier>>,
}

impl Endpoint {
    /// Refuses a command the orchestrator did not sign (forged, changed, stale, replayed).
    /// The command in a request: signed by the orchestrator (when the bot has a token) and well
    /// formed, or the answer refusing it.
    fn command(&self, headers: &HeaderMap, body: &[u8]) -> Result<Command, (StatusCode, String)> {
        self.check(headers, body)
            .map_err(|refused| (StatusCode::UNAUTHORIZED, refused.to_string()))?;
        decode::<Command>(body).map_err(|error| (StatusCode::BAD_REQUEST, error.to_string()))
    }

    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), push::Refused> {
        let Some(verifier) = &self.verifier else { return Ok(()) };
        let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        let checked = match verifier.lock() {
            Ok(mut verifier) => verifier.check(header, body, Utc::now().timestamp()),
            Err(_) => Err(push::Refused::Forged),
        };
        if let Err(refused) = &checked {
            tracing::warn!(reason = %refused, "command refused");
        }
        checked
    }
}

/// The bot's routes without a signature check (a bot without a token).
#[cfg(test)]
pub(crate) fn router(agent: Arc<Agent>) -> Router {
    router_checked(agent, None)
}

/// The bot's routes: offers on `POST /tasks`, stops on `POST /tasks/{id}/cancel` (orchestrators
/// before the cancel route sent stops to `/tasks` too, which is still read). With a verifier,
/// every command must carry the orchestrator's signature.
pub(crate) fn router_checked(agent: Arc<Agent>, verifier: Option<Verifier>) -> Router {
    let endpoint = Endpoint { agent, verifier: verifier.map(Mutex::new) };
    Router::new()
        .route("/tasks", post(receive_command))
        .route("/tasks/{id}/cancel", post(receive_cancel))
        .with_state(Arc::new(endpoint))
}

/// `POST /tasks/{id}/cancel`: stop working on an attempt of the task.
async fn receive_cancel(
    State(endpoint): State<Arc<Endpoint>>,
    axum::extract::Path(id): axum::extract::Path<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match endpoint.command(&headers, &body) {
        Ok(Command::CancelTask { task, reason }) if task.task_id == id => {
            endpoint.agent.cancel(task, &reason);
            TaskAnswer::taken()
        }
        Ok(_) => TaskAnswer::refused(
            StatusCode::BAD_REQUEST,
            format!("the body is not a task.cancel for task {id}"),
        ),
        Err((status, reason)) => TaskAnswer::refused(status, reason),
    }
}

/// `POST /tasks`: an assignment or a cancellation. An offer is turned down (409) when it has
/// expired, or for the reason [`crate::judge`] gives: "busy" only when all the bot's slots are
/// taken.
async fn receive_command(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let agent = &endpoint.agent;
    let command = match endpoint.command(&headers, &body) {
        Ok(command) => command,
        Err((status, reason)) => return TaskAnswer::refused(status, reason),
    };
    match command {
        Command::AssignTask(assignment) => match agent.claim(&assignment, Utc::now()) {
            Claim::Accepted(ticket) => {
                // Answered first; task.accepted is reported before the work starts.
                agent.start(assignment, ticket, true);
                TaskAnswer::taken()
            }
            Claim::AlreadyRunning => TaskAnswer::taken(),
            Claim::Expired => {
                TaskAnswer::refused(StatusCode::CONFLICT, "the offer has expired".to_owned())
            }
            Claim::Rejected(reason) => TaskAnswer::refused(StatusCode::CONFLICT, reason),
            // Only broker redeliveries end so; a push is never one.
            Claim::Ended(why) => TaskAnswer::refused(StatusCode::CONFLICT, why.to_owned()),
        },
        Command::CancelTask { task, reason } => {
            agent.cancel(task, &reason);
            TaskAnswer::taken()
        }
    }
}

#[derive(Debug, Deserialize)]
struct BotList {
    items: Vec<BotRecord>,
}

#[derive(Debug, Deserialize)]
struct BotRecord {
    id: Uuid,
    name: String,
}

/// The bot's id at the orchestrator, registering it if it is not known yet. Retries while the
/// API cannot be reached; `None` if `shutdown` came first.
async fn find_or_register(
    client: &reqwest::Client,
    config: &AgentConfig,
    ip_address: &str,
    endpoint: BotEndpoint,
    shutdown: &CancellationToken,
) -> Result<Option<Uuid>, AgentError> {
    let api = config.api_url.trim_end_matches('/');
    let mut backoff = Backoff::default();
    loop {
        match try_find_or_register(client, api, config, ip_address, endpoint).await {
            Ok(id) => return Ok(Some(id)),
            Err(Attempt::Refused(reason)) => return Err(AgentError::Registration(reason)),
            Err(Attempt::Unreachable(reason)) => {
                tracing::warn!(%api, %reason, "cannot reach the orchestrator's API; retrying");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

enum Attempt {
    Unreachable(String),
    Refused(String),
}

async fn try_find_or_register(
    client: &reqwest::Client,
    api: &str,
    config: &AgentConfig,
    ip_address: &str,
    endpoint: BotEndpoint,
) -> Result<Uuid, Attempt> {
    let unreachable = |error: reqwest::Error| Attempt::Unreachable(error.to_string());
    // Bot names are URL-safe by construction: no escaping needed.
    let response = client
        .get(format!("{api}/api/v1/bots?name={}", config.name))
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // Waiting will not make a wrong or missing token right.
        let text = response.text().await.unwrap_or_default();
        return Err(Attempt::Refused(format!(
            "{status} {}: give the bot the token the orchestrator has for it (--api-token)",
            text.trim()
        )));
    }
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(Attempt::Unreachable(format!("{status} {text}")));
    }
    let list: BotList = response.json().await.map_err(unreachable)?;
    if let Some(bot) = list.items.into_iter().find(|b| b.name == config.name.as_str()) {
        return Ok(bot.id);
    }
    let registration = serde_json::json!({
        "name": config.name,
        "ip_address": ip_address,
        "systems": config.systems,
        // How many tasks the orchestrator may push to it at once (orchestrators before slots
        // ignore the field and push one).
        "slots": config.slots,
        "delivery": Delivery::Http,
        "http_port": endpoint.port,
        "tls": endpoint.tls,
        "status": BotStatus::Available,
    });
    let response = client
        .post(format!("{api}/api/v1/bots"))
        .json(&registration)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if status.is_success() {
        let bot: BotRecord = response.json().await.map_err(unreachable)?;
        tracing::info!(bot_id = %bot.id, "registered with the orchestrator");
        return Ok(bot.id);
    }
    let text = response.text().await.unwrap_or_default();
    let failure = format!("{status} {}", text.trim());
    if status.is_client_error() && status != StatusCode::CONFLICT {
        Err(Attempt::Refused(failure))
    } else {
        // 409: another instance registered the name meanwhile; look again. 5xx: may pass.
        Err(Attempt::Unreachable(failure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::automations::vivo360::Vivo360;
    use crate::config::ApiToken;
    use broker_config::messages::encode;
    use broker_config::{Assignment, BotName, Event, System, TaskRef};
    use tokio::sync::mpsc;

    /// A stand-in for the orchestrator's API that records every PUT body.
    async fn fake_api() -> (String, mpsc::UnboundedReceiver<Event>, CancellationToken) {
        let (tx, rx) = mpsc::unbounded_channel();
        let record = move |body: Bytes| {
            let tx = tx.clone();
            async move {
                match decode::<Event>(&body) {
                    Ok(event) => {
                        let _ = tx.send(event);
                        StatusCode::OK
                    }
                    Err(_) => StatusCode::UNPROCESSABLE_ENTITY,
                }
            }
        };
        let app = Router::new()
            .route("/api/v1/tasks/{id}", axum::routing::put(record.clone()))
            .route("/api/v1/bots/{id}", axum::routing::put(record));
        let stop = CancellationToken::new();
        let url = serve(app, &stop).await;
        (url, rx, stop)
    }

    #[tokio::test]
    async fn http_mode_registers_itself_reports_by_put_and_goes_offline() {
        let bot_id = Uuid::new_v4();
        let (tx, mut events) = mpsc::unbounded_channel();
        let (registered_tx, mut registered) = mpsc::unbounded_channel();
        let record = move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(decode::<Event>(&body).expect("an event"));
                StatusCode::OK
            }
        };
        let register = move |Json(body): Json<serde_json::Value>| {
            let registered_tx = registered_tx.clone();
            async move {
                let name = body["name"].clone();
                let _ = registered_tx.send(body);
                (StatusCode::CREATED, Json(serde_json::json!({"id": bot_id, "name": name})))
            }
        };
        let app = Router::new()
            .route(
                "/api/v1/bots",
                axum::routing::get(|| async { Json(serde_json::json!({"items": []})) })
                    .post(register),
            )
            .route("/api/v1/tasks/{id}", axum::routing::put(record.clone()))
            .route("/api/v1/bots/{id}", axum::routing::put(record));
        let stop = CancellationToken::new();
        let api_url = serve(app, &stop).await;

        let mut config = AgentConfig::new(
            BotName::parse("pushed").expect("name"),
            vec![System::NOOP],
            "amqp://unused",
        );
        config.api_url = api_url;
        config.http = Some("127.0.0.1:0".parse().expect("address"));
        config.heartbeat_interval_ms = 60_000;
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(crate::run(config, shutdown.clone()));

        let registration = tokio::time::timeout(Duration::from_secs(20), registered.recv())
            .await
            .expect("registered within 20 s")
            .expect("registration");
        assert_eq!(registration["name"], "pushed");
        assert_eq!(registration["delivery"], "http");
        assert_eq!(registration["status"], "AVAILABLE");
        assert_eq!(registration["systems"], serde_json::json!(["NOOP"]));
        assert_eq!(registration["ip_address"], "127.0.0.1");
        assert_eq!(registration["slots"], 1, "one slot by default");
        let port = registration["http_port"].as_u64().expect("a port");
        assert!(matches!(next_any(&mut events).await, Event::BotOnline { .. }));

        let task = assignment(0, System::NOOP);
        let answer = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/tasks"))
            .body(encode(&Command::AssignTask(task.clone())))
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        assert!(
            matches!(next(&mut events).await, Event::TaskAccepted { task: t, .. } if t == task.task)
        );
        assert!(
            matches!(next(&mut events).await, Event::TaskCompleted { task: t, .. } if t == task.task)
        );
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), agent)
            .await
            .expect("stops within 20 s")
            .expect("joins")
            .expect("run returns Ok");
        assert!(matches!(next(&mut events).await, Event::BotOffline { .. }));
        stop.cancel();
    }

    #[tokio::test]
    async fn every_call_carries_the_token_and_a_refused_token_stops_the_agent() {
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let refuse = move |headers: axum::http::HeaderMap| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(headers.get("authorization").cloned());
                (
                    StatusCode::UNAUTHORIZED,
                    Json(
                        serde_json::json!({"error": {"code": "unauthorized", "message": "the token is not valid"}}),
                    ),
                )
            }
        };
        let stop = CancellationToken::new();
        let api_url =
            serve(Router::new().route("/api/v1/bots", axum::routing::get(refuse)), &stop).await;
        let mut config = AgentConfig::new(
            BotName::parse("tokened").expect("name"),
            vec![System::NOOP],
            "amqp://unused",
        );
        config.api_url = api_url;
        config.api_token = Some(ApiToken::new("bot-token-0123456789"));
        config.http = Some("127.0.0.1:0".parse().expect("address"));
        let result = tokio::time::timeout(
            Duration::from_secs(20),
            crate::run(config.clone(), CancellationToken::new()),
        )
        .await
        .expect("gives up at once, no retrying");
        match result {
            Err(AgentError::Registration(reason)) => {
                assert!(reason.contains("401") && reason.contains("--api-token"), "{reason}")
            }
            other => panic!("expected a refused registration, got {other:?}"),
        }
        let sent = seen.recv().await.expect("a call").expect("with a header");
        assert_eq!(sent.to_str().ok(), Some("Bearer bot-token-0123456789"));

        config.api_token = Some(ApiToken::new("two words"));
        let bad = crate::run(config, CancellationToken::new()).await;
        assert!(
            matches!(bad, Err(AgentError::HttpClient(ref m)) if m.contains("visible ASCII")),
            "{bad:?}"
        );
        stop.cancel();
    }

    /// An agent of `config` in HTTP mode, reporting to the fake API at `api_url`, with
    /// automations whose target systems are unreachable (its tests run NOOP).
    fn http_agent(config: &AgentConfig, api_url: &str) -> Arc<Agent> {
        let reporter =
            Reporter::Http(HttpReporter::new(reqwest::Client::new(), api_url, Uuid::new_v4()));
        let vivo360 = Vivo360::new("http://127.0.0.1:9", "u", "p").expect("client");
        let notify = crate::automations::notify::Notify::new("http://127.0.0.1:9").expect("client");
        let automations = Automations { vivo360, cpe: None, notify, programs: Default::default() };
        Arc::new(Agent::new(config, reporter, automations))
    }

    async fn serve(app: Router, stop: &CancellationToken) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        });
        format!("http://{address}")
    }

    fn assignment(duration_ms: u64, system: System) -> Assignment {
        Assignment {
            task: TaskRef { task_id: Uuid::new_v4(), attempt: 1 },
            system,
            description: "http".into(),
            attachment: None,
            payload: Some(serde_json::json!({ "duration_ms": duration_ms })),
            resume_after_row: 0,
            offer_expires_at: Utc::now() + chrono::TimeDelta::seconds(60),
        }
    }

    async fn next_any(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("an event within 20 s")
            .expect("the fake API is running")
    }

    async fn next(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        loop {
            let event = next_any(events).await;
            if !matches!(event, Event::BotHeartbeat { .. }) {
                return event;
            }
        }
    }

    #[tokio::test]
    async fn a_bot_with_a_token_refuses_unsigned_forged_stale_and_replayed_commands() {
        let (api_url, mut events, stop) = fake_api().await;
        let name = BotName::parse("signed-bot").expect("name");
        let config = AgentConfig::new(name, vec![System::NOOP], "amqp://unused");
        let agent = http_agent(&config, &api_url);
        let token = ApiToken::new("bot-token-0123456789abcdef");
        let verifier = Verifier::new(token.push_key());
        let bot_url = serve(router_checked(Arc::clone(&agent), Some(verifier)), &stop).await;
        let client = reqwest::Client::new();
        let post = |path: String, body: Vec<u8>, signature: Option<String>| {
            let mut request = client.post(format!("{bot_url}{path}")).body(body);
            if let Some(signature) = signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            request.send()
        };
        let now = Utc::now().timestamp();
        let long = assignment(60_000, System::NOOP);
        let offer = encode(&Command::AssignTask(long.clone()));

        let unsigned = post("/tasks".into(), offer.clone(), None).await.expect("answer");
        assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
        let forger = ApiToken::new("not-the-bot-token-0123").push_key();
        let forged = post("/tasks".into(), offer.clone(), Some(forger.sign(now, &offer)));
        assert_eq!(forged.await.expect("answer").status(), StatusCode::UNAUTHORIZED);
        let stale =
            post("/tasks".into(), offer.clone(), Some(token.push_key().sign(now - 3600, &offer)));
        assert_eq!(stale.await.expect("answer").status(), StatusCode::UNAUTHORIZED);

        let signature = token.push_key().sign(now, &offer);
        let taken =
            post("/tasks".into(), offer.clone(), Some(signature.clone())).await.expect("answer");
        assert_eq!(taken.status(), StatusCode::ACCEPTED);
        assert!(
            matches!(next(&mut events).await, Event::TaskAccepted { task, .. } if task == long.task)
        );
        let replayed = post("/tasks".into(), offer.clone(), Some(signature)).await.expect("answer");
        assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);

        // A forged stop is refused and the task goes on; the orchestrator's own stops it.
        let cancel = encode(&Command::CancelTask { task: long.task, reason: "forged".into() });
        let path = format!("/tasks/{}/cancel", long.task.task_id);
        let refused = post(path.clone(), cancel.clone(), Some(forger.sign(now, &cancel)));
        assert_eq!(refused.await.expect("answer").status(), StatusCode::UNAUTHORIZED);
        let other = encode(&Command::AssignTask(assignment(0, System::NOOP)));
        let busy = post("/tasks".into(), other.clone(), Some(token.push_key().sign(now, &other)));
        assert_eq!(
            busy.await.expect("answer").status(),
            StatusCode::CONFLICT,
            "the task still runs"
        );
        let stopped = post(path, cancel.clone(), Some(token.push_key().sign(now, &cancel)));
        assert_eq!(stopped.await.expect("answer").status(), StatusCode::ACCEPTED);
        stop.cancel();
    }

    #[tokio::test]
    async fn post_tasks_takes_one_task_at_a_time_and_reports_by_put() {
        let (api_url, mut events, stop) = fake_api().await;
        let name = BotName::parse("http-bot").expect("name");
        let config = AgentConfig::new(name.clone(), vec![System::NOOP], "amqp://unused");
        let agent = http_agent(&config, &api_url);
        let bot_url = serve(router(Arc::clone(&agent)), &stop).await;
        let client = reqwest::Client::new();
        let post = |body: Vec<u8>| {
            client
                .post(format!("{bot_url}/tasks"))
                .header("content-type", "application/json")
                .body(body)
                .send()
        };

        let bad = post(b"{\"v\":1,\"type\":\"task.explode\"}".to_vec()).await.expect("answer");
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

        let vivo = post(encode(&Command::AssignTask(assignment(0, System::VIVO360))))
            .await
            .expect("answer");
        assert_eq!(vivo.status(), StatusCode::CONFLICT);
        let answer: TaskAnswer = vivo.json().await.expect("json");
        assert_eq!(answer.reason.as_deref(), Some("this bot cannot run VIVO360"));

        let long = assignment(60_000, System::NOOP);
        let taken = post(encode(&Command::AssignTask(long.clone()))).await.expect("answer");
        assert_eq!(taken.status(), StatusCode::ACCEPTED);
        let answer: TaskAnswer = taken.json().await.expect("json");
        assert_eq!(answer, TaskAnswer { accepted: true, reason: None });
        assert!(
            matches!(next(&mut events).await, Event::TaskAccepted { task, .. } if task == long.task)
        );

        let second =
            post(encode(&Command::AssignTask(assignment(0, System::NOOP)))).await.expect("answer");
        assert_eq!(second.status(), StatusCode::CONFLICT);
        let answer: TaskAnswer = second.json().await.expect("json");
        assert_eq!(answer.reason.as_deref(), Some("busy"));

        let cancel = Command::CancelTask { task: long.task, reason: "test".into() };
        assert_eq!(post(encode(&cancel)).await.expect("answer").status(), StatusCode::ACCEPTED);
        let short = assignment(0, System::NOOP);
        let taken = post(encode(&Command::AssignTask(short.clone()))).await.expect("answer");
        assert_eq!(taken.status(), StatusCode::ACCEPTED, "the cancel freed the bot");
        assert!(
            matches!(next(&mut events).await, Event::TaskAccepted { task, .. } if task == short.task)
        );
        match next(&mut events).await {
            Event::TaskCompleted { task, output, .. } => {
                assert_eq!(task, short.task, "nothing more about the cancelled task");
                assert_eq!(output, Some(serde_json::json!({"slept_ms": 0})));
            }
            other => panic!("expected task.completed, got {other:?}"),
        }

        agent.shut_down(Duration::from_secs(1)).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn post_tasks_says_busy_only_when_all_slots_are_taken_and_shutdown_hands_each_back() {
        let (api_url, mut events, stop) = fake_api().await;
        let mut config = AgentConfig::new(
            BotName::parse("two-slots").expect("name"),
            vec![System::NOOP],
            "amqp://unused",
        );
        config.slots = 2;
        let agent = http_agent(&config, &api_url);
        let bot_url = serve(router(Arc::clone(&agent)), &stop).await;
        let client = reqwest::Client::new();
        let post = |command: Command| {
            client.post(format!("{bot_url}/tasks")).body(encode(&command)).send()
        };
        let offer = |task: &Assignment| post(Command::AssignTask(task.clone()));

        let (first, second, third) = (
            assignment(60_000, System::NOOP),
            assignment(60_000, System::NOOP),
            assignment(60_000, System::NOOP),
        );
        assert_eq!(offer(&first).await.expect("answer").status(), StatusCode::ACCEPTED);
        assert_eq!(
            offer(&second).await.expect("answer").status(),
            StatusCode::ACCEPTED,
            "a second slot is free"
        );
        let full = offer(&third).await.expect("answer");
        assert_eq!(full.status(), StatusCode::CONFLICT);
        let answer: TaskAnswer = full.json().await.expect("json");
        assert_eq!(answer.reason.as_deref(), Some("busy"), "both slots taken");
        assert_eq!(
            offer(&first).await.expect("answer").status(),
            StatusCode::ACCEPTED,
            "an attempt running here is taken again"
        );

        let cancel = Command::CancelTask { task: first.task, reason: "test".into() };
        assert_eq!(post(cancel).await.expect("answer").status(), StatusCode::ACCEPTED);
        assert_eq!(
            offer(&third).await.expect("answer").status(),
            StatusCode::ACCEPTED,
            "the cancel freed one slot"
        );
        assert_eq!(agent.current_tasks(), [second.task, third.task]);

        agent.shut_down(Duration::from_millis(200)).await;
        let mut accepted = Vec::new();
        let mut released = Vec::new();
        while let Ok(event) = events.try_recv() {
            match event {
                Event::TaskAccepted { task, .. } => accepted.push(task),
                Event::TaskReleased { task, reason, .. } => {
                    assert_eq!(reason, crate::RELEASE_REASON);
                    released.push(task);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        accepted.sort_by_key(|t| t.task_id);
        released.sort_by_key(|t| t.task_id);
        let mut all = vec![first.task, second.task, third.task];
        all.sort_by_key(|t| t.task_id);
        let mut held = vec![second.task, third.task];
        held.sort_by_key(|t| t.task_id);
        assert_eq!(accepted, all, "each accepted once");
        assert_eq!(released, held, "each task still running handed back; none for the cancelled");
        stop.cancel();
    }
}
