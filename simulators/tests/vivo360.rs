//! The Vivo360 portal over HTTP, driven the way the bot drives it.
#![allow(clippy::unwrap_used)]

mod common;

use common::Server;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use simulators::vivo360::{self, Vivo360Config};

async fn portal() -> Server {
    portal_with(Vivo360Config::default()).await
}

async fn portal_with(config: Vivo360Config) -> Server {
    Server::start(|listener, shutdown| vivo360::serve(listener, config, shutdown)).await
}

/// The text and class of the page's `<p id="result">`.
fn result_of(html: &str) -> (String, String) {
    let end = html.find(r#"" id="result">"#).unwrap();
    let class_start = html[..end].rfind(r#"<p class=""#).unwrap() + r#"<p class=""#.len();
    let text_start = end + r#"" id="result">"#.len();
    let text_end = text_start + html[text_start..].find("</p>").unwrap();
    (html[class_start..end].to_owned(), html[text_start..text_end].to_owned())
}

/// Logs in with the default account; returns the `Cookie` header value.
async fn log_in(portal: &Server) -> String {
    let response = portal
        .client
        .post(portal.url("/login"))
        .form(&[("username", "botline"), ("password", "botline")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Opens a user form; returns its `form_token`.
async fn open_form(portal: &Server, cookie: &str) -> String {
    let response =
        portal.client.get(portal.url("/users/new")).header(COOKIE, cookie).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    let marker = r#"<input type="hidden" name="form_token" value=""#;
    let start = html.find(marker).unwrap() + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_owned()
}

/// Types `value` into `field`; returns the status and JSON answer.
async fn fill(
    portal: &Server,
    cookie: &str,
    token: &str,
    field: &str,
    value: &str,
) -> (StatusCode, Value) {
    let response = portal
        .client
        .post(portal.url(&format!("/users/fields/{field}")))
        .header(COOKIE, cookie)
        .form(&[("form_token", token), ("value", value)])
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Posts the user form with `fields`; returns the status and the result paragraph.
async fn submit(portal: &Server, cookie: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
    let response = portal
        .client
        .post(portal.url("/users"))
        .header(COOKIE, cookie)
        .form(fields)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let (class, text) = result_of(&response.text().await.unwrap());
    let expected_class = if status == StatusCode::CREATED { "success" } else { "error" };
    assert_eq!(class, expected_class, "{status} {text}");
    (status, text)
}

/// A whole user, the bot's way: open a form, type each field, submit.
async fn create(portal: &Server, cookie: &str, user: [&str; 4]) -> (StatusCode, String) {
    let token = open_form(portal, cookie).await;
    for (field, value) in ["name", "email", "login", "profile"].into_iter().zip(user) {
        let (status, _) = fill(portal, cookie, &token, field, value).await;
        assert_eq!(status, StatusCode::OK);
    }
    submit(portal, cookie, &[("form_token", &token)]).await
}

async fn control_users(portal: &Server) -> Value {
    let response = portal.client.get(portal.url("/_control/users")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn put_control(portal: &Server, body: Value) -> (StatusCode, Value) {
    let response = portal.client.put(portal.url("/_control")).json(&body).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn get(portal: &Server, path: &str) -> reqwest::Response {
    portal.client.get(portal.url(path)).send().await.unwrap()
}

const ANA: [&str; 4] = ["Ana Silva", "ana@example.com", "ana.silva", "agent"];

#[tokio::test]
async fn the_root_leads_to_the_login_form() {
    let portal = portal().await;
    let response = get(&portal, "/").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/login");

    let response = get(&portal, "/login").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"method="post" action="/login""#), "{html}");
    assert!(html.contains(r#"name="username""#), "{html}");
    assert!(html.contains(r#"name="password" type="password""#), "{html}");
}

#[tokio::test]
async fn the_right_credentials_open_a_session() {
    let portal = portal().await;
    let response = portal
        .client
        .post(portal.url("/login"))
        .form(&[("username", "botline"), ("password", "botline")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/users/new");
    let cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    let token = cookie
        .strip_prefix("vivo360_session=")
        .and_then(|rest| rest.strip_suffix("; HttpOnly; Path=/"))
        .unwrap_or_else(|| panic!("unexpected Set-Cookie {cookie}"));
    assert_eq!(token.len(), 32);

    // A second login gets another session.
    assert_ne!(log_in(&portal).await, log_in(&portal).await);
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let config = Vivo360Config {
        username: "robot".into(),
        password: "s3cret".into(),
        ..Vivo360Config::default()
    };
    let portal = portal_with(config).await;
    for (username, password) in
        [("botline", "botline"), ("robot", "wrong"), ("Robot", "s3cret"), ("", "")]
    {
        let response = portal
            .client
            .post(portal.url("/login"))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{username}");
        assert!(response.headers().get(SET_COOKIE).is_none());
        let html = response.text().await.unwrap();
        assert!(
            html.contains(r#"<p class="error" id="result">Invalid username or password</p>"#),
            "{html}"
        );
    }
    let response = portal
        .client
        .post(portal.url("/login"))
        .form(&[("username", "robot"), ("password", "s3cret")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_user_typed_field_by_field_is_created() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;

    let response =
        portal.client.get(portal.url("/users/new")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap();
    for needle in [
        r#"<form id="user-form" method="post" action="/users">"#,
        r#"<input type="hidden" name="form_token" value=""#,
        r#"<input name="name">"#,
        r#"<input name="email" type="email">"#,
        r#"<input name="login">"#,
        r#"<select name="profile">"#,
        r#"<option value="agent">"#,
        r#"<option value="supervisor">"#,
        r#"<option value="admin">"#,
    ] {
        assert!(html.contains(needle), "{needle} missing from {html}");
    }

    let token = open_form(&portal, &cookie).await;
    assert_ne!(token, open_form(&portal, &cookie).await, "a fresh token per GET");
    for (field, value) in [
        ("name", "  Ana Silva "),
        ("email", "ana@example.com"),
        ("login", "ana.silva"),
        ("profile", "agent"),
    ] {
        let (status, body) = fill(&portal, &cookie, &token, field, value).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"field": field, "valid": true}));
    }
    let (status, result) = submit(&portal, &cookie, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(result, "User ana.silva created");

    let report = control_users(&portal).await;
    let users = report["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["name"], "Ana Silva");
    assert_eq!(users[0]["email"], "ana@example.com");
    assert_eq!(users[0]["login"], "ana.silva");
    assert_eq!(users[0]["profile"], "agent");
    let created_at = users[0]["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
    assert_eq!(report["submissions"], json!({"ana.silva": 1}));
}

#[tokio::test]
async fn live_validation_applies_every_rule() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    let token = open_form(&portal, &cookie).await;
    let cases = [
        ("name", "Jo", None),
        ("name", "João D'Ávila-Souza Jr.", None),
        ("name", "", Some("missing")),
        ("name", "J", Some("must be 2 to 100 characters")),
        ("name", &"a".repeat(101), Some("must be 2 to 100 characters")),
        ("name", "R2-D2", Some("may contain only letters, spaces, apostrophes, hyphens and dots")),
        ("email", " ana@mail.example.com ", None),
        ("email", "   ", Some("missing")),
        ("email", "ana.example.com", Some("not a valid e-mail address")),
        ("email", "ana@example", Some("not a valid e-mail address")),
        ("email", "a@b@example.com", Some("not a valid e-mail address")),
        ("email", "ana s@example.com", Some("not a valid e-mail address")),
        ("login", "a_b-c.9", None),
        ("login", "ab", Some("must be 3 to 32 characters")),
        ("login", &"a".repeat(33), Some("must be 3 to 32 characters")),
        (
            "login",
            "Ana",
            Some("may contain only lowercase letters a-z, digits, dots, underscores and hyphens"),
        ),
        ("profile", "supervisor", None),
        ("profile", "admin", None),
        ("profile", "root", Some("must be one of agent, supervisor, admin")),
    ];
    for (field, value, message) in cases {
        let (status, body) = fill(&portal, &cookie, &token, field, value).await;
        assert_eq!(status, StatusCode::OK);
        let expected = match message {
            None => json!({"field": field, "valid": true}),
            Some(message) => json!({"field": field, "valid": false, "message": message}),
        };
        assert_eq!(body, expected, "{field}={value}");
    }

    let (status, body) = fill(&portal, &cookie, &token, "password", "x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"message": "unknown field password"}));
}

#[tokio::test]
async fn the_last_value_typed_is_the_one_submitted() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    let token = open_form(&portal, &cookie).await;
    for (field, value) in [
        ("name", "Ana Silva"),
        ("email", "ana@example.com"),
        ("login", "ana"),
        ("profile", "agent"),
        ("email", "not-an-email"),
    ] {
        fill(&portal, &cookie, &token, field, value).await;
    }
    let (status, result) = submit(&portal, &cookie, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(result, "email: not a valid e-mail address");

    // Values in the submission itself override the draft.
    let token = open_form(&portal, &cookie).await;
    for (field, value) in [("name", "Ana Silva"), ("email", "bad"), ("login", "ana")] {
        fill(&portal, &cookie, &token, field, value).await;
    }
    let fields =
        [("form_token", token.as_str()), ("email", "ana@example.com"), ("profile", "admin")];
    let (status, result) = submit(&portal, &cookie, &fields).await;
    assert_eq!(status, StatusCode::CREATED, "{result}");
    let report = control_users(&portal).await;
    assert_eq!(report["users"][0]["profile"], "admin");
    assert_eq!(report["users"][0]["email"], "ana@example.com");
}

#[tokio::test]
async fn an_invalid_submission_is_rejected_with_the_first_reason() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    let cases = [
        (["", "ana@example.com", "ana", "agent"], "name: missing"),
        (
            ["Ana 2", "ana@example.com", "ana", "agent"],
            "name: may contain only letters, spaces, apostrophes, hyphens and dots",
        ),
        (["Ana", "ana@", "ana", "agent"], "email: not a valid e-mail address"),
        (["Ana", "ana@example.com", "", "agent"], "login: missing"),
        (["Ana", "ana@example.com", "an", "agent"], "login: must be 3 to 32 characters"),
        (
            ["Ana", "ana@example.com", "ana", "manager"],
            "profile: must be one of agent, supervisor, admin",
        ),
        (["", "", "", ""], "name: missing"),
    ];
    for (user, reason) in cases {
        let (status, result) = create(&portal, &cookie, user).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{user:?}");
        assert_eq!(result, reason);
    }
    // Submitted without typing anything at all.
    let token = open_form(&portal, &cookie).await;
    let (status, result) = submit(&portal, &cookie, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(result, "name: missing");

    let report = control_users(&portal).await;
    assert_eq!(report["users"], json!([]));
    // Every attempt that named a login counts, valid or not.
    assert_eq!(report["submissions"], json!({"ana": 4, "an": 1}));
}

#[tokio::test]
async fn logins_and_emails_are_unique() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    assert_eq!(create(&portal, &cookie, ANA).await.0, StatusCode::CREATED);

    let same_login = ["Ana Souza", "souza@example.com", "ana.silva", "admin"];
    let (status, result) = create(&portal, &cookie, same_login).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(result, "Login ana.silva already exists");

    let same_email = ["Ana Souza", "ANA@example.com", "ana.souza", "admin"];
    let (status, result) = create(&portal, &cookie, same_email).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(result, "E-mail ANA@example.com already exists");

    let report = control_users(&portal).await;
    assert_eq!(report["users"].as_array().unwrap().len(), 1);
    assert_eq!(report["submissions"], json!({"ana.silva": 2, "ana.souza": 1}));
}

#[tokio::test]
async fn a_form_token_serves_one_submission_of_its_own_session() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    let token = open_form(&portal, &cookie).await;
    for (field, value) in ["name", "email", "login", "profile"].into_iter().zip(ANA) {
        fill(&portal, &cookie, &token, field, value).await;
    }

    // Another session can neither type into nor submit this form.
    let other = log_in(&portal).await;
    let (status, body) = fill(&portal, &other, &token, "name", "Eve").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"message": "form expired"}));
    let (status, result) = submit(&portal, &other, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(result, "form expired");

    let (status, _) = submit(&portal, &cookie, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::CREATED);

    // Used up: the same token no longer works, for typing or submitting.
    let (status, body) = fill(&portal, &cookie, &token, "name", "Ana").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, json!({"message": "form expired"}));
    let (status, result) = submit(&portal, &cookie, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(result, "form expired");

    // Missing or made-up tokens are expired forms too.
    let (status, _) = fill(&portal, &cookie, "made-up", "name", "Ana").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let response = portal
        .client
        .post(portal.url("/users/fields/name"))
        .header(COOKIE, &cookie)
        .form(&[("value", "Ana")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (status, result) = submit(&portal, &cookie, &[("login", "x")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(result, "form expired");

    assert_eq!(control_users(&portal).await["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_rejected_submission_uses_its_form_up() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    let token = open_form(&portal, &cookie).await;
    let (status, _) = submit(&portal, &cookie, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut fields = vec![("form_token", token.as_str())];
    fields.extend(["name", "email", "login", "profile"].into_iter().zip(ANA));
    let (status, result) = submit(&portal, &cookie, &fields).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(result, "form expired");
}

#[tokio::test]
async fn a_session_is_required() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    let token = open_form(&portal, &cookie).await;
    for bad_cookie in [None, Some("vivo360_session=forged"), Some("other=1")] {
        let with_cookie = |request: reqwest::RequestBuilder| match bad_cookie {
            Some(value) => request.header(COOKIE, value),
            None => request,
        };
        let response =
            with_cookie(portal.client.get(portal.url("/users/new"))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[LOCATION], "/login");

        let response = with_cookie(portal.client.post(portal.url("/users/fields/name")))
            .form(&[("form_token", token.as_str()), ("value", "Ana")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"message": "not logged in"}));

        let response = with_cookie(portal.client.post(portal.url("/users")))
            .form(&[("form_token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[LOCATION], "/login");
    }
    // The form survived those attempts: it still takes its own session's values.
    let (status, _) = fill(&portal, &cookie, &token, "name", "Ana").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_down_portal_answers_503_but_its_control_api_works() {
    let portal = portal_with(Vivo360Config { down: true, ..Vivo360Config::default() }).await;
    for path in ["/", "/login", "/users/new"] {
        let response = get(&portal, path).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let html = response.text().await.unwrap();
        assert!(html.contains(r#"<p class="error" id="result">Portal unavailable</p>"#), "{html}");
    }
    let response = portal
        .client
        .post(portal.url("/login"))
        .form(&[("username", "botline"), ("password", "botline")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&portal, "/_control/users").await.status(), StatusCode::OK);

    let (status, settings) = put_control(&portal, json!({"down": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["down"], false);
    let cookie = log_in(&portal).await;
    let token = open_form(&portal, &cookie).await;

    let (_, settings) = put_control(&portal, json!({"down": true})).await;
    assert_eq!(settings["down"], true);
    let (status, result) = submit(&portal, &cookie, &[("form_token", &token)]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(result, "Portal unavailable");
    let response = portal
        .client
        .post(portal.url("/users/fields/name"))
        .header(COOKIE, &cookie)
        .form(&[("form_token", token.as_str()), ("value", "Ana")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_slow_portal_still_answers_correctly() {
    let portal = portal_with(Vivo360Config { delay_ms: 20, ..Vivo360Config::default() }).await;
    let cookie = log_in(&portal).await;
    let (status, result) = create(&portal, &cookie, ANA).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(result, "User ana.silva created");
}

#[tokio::test]
async fn failing_logins_get_500_and_are_not_created_but_counted() {
    let portal =
        portal_with(Vivo360Config { fail_logins: vec!["bob".into()], ..Vivo360Config::default() })
            .await;
    let cookie = log_in(&portal).await;
    let bob = ["Bob Lee", "bob@example.com", "bob", "agent"];
    for _ in 0..2 {
        let (status, result) = create(&portal, &cookie, bob).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(result, "Internal error");
    }
    assert_eq!(create(&portal, &cookie, ANA).await.0, StatusCode::CREATED);

    let report = control_users(&portal).await;
    let logins: Vec<&str> = report["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["login"].as_str().unwrap())
        .collect();
    assert_eq!(logins, ["ana.silva"]);
    assert_eq!(report["submissions"], json!({"bob": 2, "ana.silva": 1}));

    // Lifting the failure lets bob through.
    let (status, settings) = put_control(&portal, json!({"fail_logins": []})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(settings["fail_logins"], json!([]));
    assert_eq!(create(&portal, &cookie, bob).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_fail_rate_of_one_fails_every_submission() {
    let portal = portal().await;
    let (status, _) = put_control(&portal, json!({"fail_rate": 1.0})).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = log_in(&portal).await;
    for _ in 0..3 {
        let (status, result) = create(&portal, &cookie, ANA).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(result, "Internal error");
    }
    let report = control_users(&portal).await;
    assert_eq!(report["users"], json!([]));
    assert_eq!(report["submissions"], json!({"ana.silva": 3}));

    put_control(&portal, json!({"fail_rate": 0.0})).await;
    assert_eq!(create(&portal, &cookie, ANA).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn the_control_api_reports_and_validates_settings() {
    let portal = portal().await;
    let response = get(&portal, "/_control").await;
    assert_eq!(response.status(), StatusCode::OK);
    let settings: Value = response.json().await.unwrap();
    let defaults = json!({"down": false, "delay_ms": 0, "fail_rate": 0.0, "fail_logins": []});
    assert_eq!(settings, defaults);

    let update = json!({"delay_ms": 5, "fail_rate": 0.25, "fail_logins": ["x.y", "a"]});
    let (status, settings) = put_control(&portal, update).await;
    assert_eq!(status, StatusCode::OK);
    let expected =
        json!({"down": false, "delay_ms": 5, "fail_rate": 0.25, "fail_logins": ["a", "x.y"]});
    assert_eq!(settings, expected);

    for bad in [
        json!({"fail_rate": 1.5}),
        json!({"fail_rate": -0.1}),
        json!({"delay_ms": -1}),
        json!({"down": "yes"}),
        json!({"surprise": true}),
    ] {
        let (status, body) = put_control(&portal, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let response = portal
        .client
        .put(portal.url("/_control"))
        .header(CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].is_string());

    // Nothing bad was applied.
    let settings: Value = get(&portal, "/_control").await.json().await.unwrap();
    assert_eq!(settings, expected);
}

#[tokio::test]
async fn users_and_submissions_can_be_forgotten() {
    let portal = portal().await;
    let cookie = log_in(&portal).await;
    assert_eq!(create(&portal, &cookie, ANA).await.0, StatusCode::CREATED);
    let response = portal.client.delete(portal.url("/_control/users")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(control_users(&portal).await, json!({"users": [], "submissions": {}}));
    // The login is free again, and the session survived.
    assert_eq!(create(&portal, &cookie, ANA).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn serve_refuses_an_out_of_range_fail_rate() {
    let portal = portal_with(Vivo360Config { fail_rate: 2.0, ..Vivo360Config::default() }).await;
    let error = portal.stop().await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("fail_rate"), "{error}");
}

#[tokio::test]
async fn serve_stops_when_cancelled() {
    let portal = portal().await;
    assert_eq!(get(&portal, "/login").await.status(), StatusCode::OK);
    portal.stop().await.unwrap();
}
