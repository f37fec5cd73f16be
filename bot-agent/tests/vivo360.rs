//! The VIVO360 automation against the Vivo360 portal simulator: directly, and through the
//! broker for what the agent makes of its outcome.
#![allow(clippy::unwrap_used)]

mod common;

use bot_agent::automations::vivo360::Vivo360;
use bot_agent::{Outcome, ProgressSink};
use broker_config::{Assignment, Command, Event, RowStatus, System};
use common::{Harness, offer, rows_of, vivo360_csv};
use serde_json::{Value, json};
use simulators::vivo360::{Vivo360Config, serve};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A portal on port 0, stopped when the token drops out of scope (cancelled by the caller).
struct Portal {
    url: String,
    stop: CancellationToken,
    client: reqwest::Client,
}

impl Portal {
    async fn start() -> Portal {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, Vivo360Config::default(), stop.clone()));
        Portal { url, stop, client: reqwest::Client::new() }
    }

    async fn control(&self, settings: Value) {
        let response =
            self.client.put(format!("{}/_control", self.url)).json(&settings).send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    async fn logins(&self) -> (Vec<String>, Value) {
        let report: Value = self
            .client
            .get(format!("{}/_control/users", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let logins = report["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["login"].as_str().unwrap().to_owned())
            .collect();
        (logins, report["submissions"].clone())
    }

    fn automation(&self) -> Vivo360 {
        Vivo360::new(&self.url, "botline", "botline").unwrap()
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn users_task(rows: &[[&str; 4]]) -> Assignment {
    offer(System::VIVO360, Some(vivo360_csv(rows)), Value::Null)
}

/// Runs the automation directly; its outcome and the rows it recorded.
async fn run(automation: &Vivo360, task: &Assignment) -> (Outcome, Vec<(u32, RowStatus, String)>) {
    let (mut sink, mut rows) = ProgressSink::channel();
    let outcome = automation.run(task, &mut sink, &CancellationToken::new()).await;
    drop(sink);
    let mut recorded = Vec::new();
    while let Some(row) = rows.recv().await {
        recorded.push((row.row, row.status, row.message));
    }
    (outcome, recorded)
}

const ANA: [&str; 4] = ["Ana Souza", "ana.souza@example.com", "ana.souza", "agent"];
const BRUNO: [&str; 4] = ["Bruno Lima", "bruno.lima@example.com", "bruno.lima", "supervisor"];
const CARLA: [&str; 4] = ["Carla Dias", "carla.dias@example.com", "carla.dias", "admin"];

#[tokio::test]
async fn creates_users_and_rejects_duplicates_and_invalid_fields_with_the_portals_reason() {
    let portal = Portal::start().await;
    let task = users_task(&[
        ANA,
        ["Ana Again", "ana.again@example.com", "ana.souza", "agent"],
        ["Bad Mail", "not-an-email", "bad.mail", "agent"],
        BRUNO,
    ]);
    let (outcome, rows) = run(&portal.automation(), &task).await;
    assert_eq!(outcome, Outcome::Completed { output: None });
    assert_eq!(
        rows,
        [
            (1, RowStatus::Created, "User ana.souza created".to_owned()),
            (2, RowStatus::Rejected, "Login ana.souza already exists".to_owned()),
            (3, RowStatus::Rejected, "email: not a valid e-mail address".to_owned()),
            (4, RowStatus::Created, "User bruno.lima created".to_owned()),
        ]
    );
    let (logins, _) = portal.logins().await;
    assert_eq!(logins, ["ana.souza", "bruno.lima"]);
}

#[tokio::test]
async fn a_login_the_portal_always_fails_is_failed_after_two_retries_and_the_rest_created() {
    let portal = Portal::start().await;
    portal.control(json!({"fail_logins": ["bruno.lima"]})).await;
    let (outcome, rows) = run(&portal.automation(), &users_task(&[ANA, BRUNO, CARLA])).await;
    assert_eq!(outcome, Outcome::Completed { output: None });
    let statuses: Vec<(u32, RowStatus, &str)> =
        rows.iter().map(|(n, s, m)| (*n, *s, m.as_str())).collect();
    assert_eq!(
        statuses,
        [
            (1, RowStatus::Created, "User ana.souza created"),
            (2, RowStatus::Failed, "portal error"),
            (3, RowStatus::Created, "User carla.dias created"),
        ]
    );
    let (logins, submissions) = portal.logins().await;
    assert_eq!(logins, ["ana.souza", "carla.dias"]);
    assert_eq!(submissions["bruno.lima"], 3, "one try and two retries");
}

#[tokio::test]
async fn a_resumed_attempt_starts_after_the_rows_done() {
    let portal = Portal::start().await;
    let mut task = users_task(&[ANA, BRUNO, CARLA]);
    task.resume_after_row = 2;
    let (outcome, rows) = run(&portal.automation(), &task).await;
    assert_eq!(outcome, Outcome::Completed { output: None });
    assert_eq!(rows, [(3, RowStatus::Created, "User carla.dias created".to_owned())]);
}

#[tokio::test]
async fn an_unreachable_portal_or_bad_input_fails_the_attempt() {
    // A port nothing listens on: bind one, then let it go.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let automation = Vivo360::new(&closed, "botline", "botline").unwrap();
    match run(&automation, &users_task(&[ANA])).await {
        (Outcome::Failed { error, retryable: true }, rows) => {
            assert!(error.starts_with("Vivo360 portal unavailable"), "{error}");
            assert!(rows.is_empty());
        }
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    let mut bad = users_task(&[ANA]);
    bad.attachment = Some("bmFtZQpBbmEK".into()); // "name\nAna\n": columns missing
    match run(&automation, &bad).await {
        (Outcome::Failed { error, retryable: false }, _) => {
            assert!(error.contains("lacks the column(s) email, login, profile"), "{error}")
        }
        other => panic!("expected a fatal failure, got {other:?}"),
    }
}

#[tokio::test]
async fn through_the_broker_users_are_created_and_a_portal_that_is_down_fails_retryably() {
    let portal = Portal::start().await;
    let url = portal.url.clone();
    let mut h = Harness::start("agent-vivo360", move |c| c.vivo360_url = url).await;

    let task = users_task(&[ANA, BRUNO]);
    h.send(&Command::AssignTask(task.clone())).await;
    let events = h.until_final(task.task).await;
    assert!(matches!(events.last(), Some(Event::TaskCompleted { .. })), "{events:?}");
    let rows: Vec<(u32, RowStatus)> = rows_of(&events).iter().map(|r| (r.row, r.status)).collect();
    assert_eq!(rows, [(1, RowStatus::Created), (2, RowStatus::Created)]);
    assert_eq!(portal.logins().await.0, ["ana.souza", "bruno.lima"]);

    portal.control(json!({"down": true})).await;
    let task = users_task(&[CARLA]);
    h.send(&Command::AssignTask(task.clone())).await;
    let events = h.until_final(task.task).await;
    match events.last() {
        Some(Event::TaskFailed { error, retryable, rows, .. }) => {
            assert!(retryable);
            assert!(error.starts_with("Vivo360 portal unavailable"), "{error}");
            assert!(rows.is_empty());
        }
        other => panic!("expected task.failed, got {other:?}"),
    }
    h.stop().await;
}
