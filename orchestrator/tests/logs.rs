//! The orchestrator's log as an operator reads it: no colour codes outside a terminal, JSON lines
//! on request, and a broker that refuses the URL's user or vhost is one line saying so.

use std::process::{Command, Output};

/// Runs the orchestrator against the local RabbitMQ at `amqp_url` with `args`, on a database of
/// its own; it is expected to stop at once.
fn start(amqp_url: &str, args: &[&str]) -> Output {
    let db = std::env::temp_dir().join(format!("botline-logs-{}.db", uuid::Uuid::new_v4()));
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("BOTLINE_DATABASE_URL", format!("sqlite://{}?mode=rwc", db.display()))
        .env("BOTLINE_AMQP_URL", amqp_url)
        .env_remove("RUST_LOG")
        .env_remove("BOTLINE_LOG_FORMAT")
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_file(db);
    output
}

fn refused_in_one_line(output: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what}: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "{what}: no colour codes in a pipe: {stderr:?}");
    assert!(!stderr.contains("ERROR"), "{what}: no client error dumps: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: RabbitMQ at amqp://guest:***@127.0.0.1:5672/"), "{last}");
    assert!(last.contains("Check the user, password and vhost"), "{what}: {last}");
    assert!(!last.contains("Start one"), "{what}: the broker is running: {last}");
}

#[test]
fn a_broker_refusing_the_password_or_vhost_is_one_line_that_says_so() {
    let wrong_password = start("amqp://guest:wrong@127.0.0.1:5672/%2f", &[]);
    refused_in_one_line(&wrong_password, "a wrong password");
    let stderr = String::from_utf8_lossy(&wrong_password.stderr);
    assert!(!stderr.contains("wrong"), "the password never reaches the log: {stderr}");
    let no_vhost = start("amqp://guest:guest@127.0.0.1:5672/no-such-vhost", &[]);
    refused_in_one_line(&no_vhost, "a vhost that does not exist");
}

#[test]
fn with_log_format_json_every_log_line_is_an_object() {
    let output = start("amqp://guest:wrong@127.0.0.1:5672/%2f", &["--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let (error, log) = lines.split_last().expect("a log, then the error");
    assert!(error.starts_with("error: "), "{error}");
    assert!(!log.is_empty(), "the start is logged: {stderr}");
    for line in log {
        let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON object a line");
        assert!(entry["timestamp"].is_string() && entry["level"].is_string(), "{entry}");
        assert!(entry["fields"]["message"].is_string(), "{entry}");
    }
}
