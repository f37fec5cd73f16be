//! Bring your own automation, end to end: the real orchestrator (in-process, SQLite), the real
//! broker, a real bot agent running programs (Python, shell) for systems registered through the
//! API. The program runner's own cases (time-out, cancel, floods, children) are in program.rs.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::PathBuf;

use base64::Engine as _;
use bot_agent::automations::program::Program;
use broker_config::System;
use common::world::World;
use serde_json::{Value, json};

fn encode(csv: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(csv)
}

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path).display().to_string()
}

/// A shell program in a file of its own.
fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> Program {
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    Program { args: vec![path.display().to_string()], ..Program::new("sh") }
}

async fn register(world: &World, body: Value) {
    let response =
        world.http.post(format!("{}/api/v1/systems", world.api)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn the_python_example_creates_vivo360_users_in_place_of_the_built_in() {
    let world = World::start(0).await;
    let mut config = world.agent_config("py-1", &[]);
    let mut program = Program::from_command_line(&format!(
        "python3 {}",
        repo("examples/automations/vivo360_users.py")
    ))
    .unwrap();
    program.env.insert("VIVO360_URL".into(), world.portal.clone());
    config.automation.push((System::VIVO360, program));
    world.spawn_bot(config);
    let csv = "name,email,login,profile\nAna Souza,ana@example.com,ana.souza,agent\n\
               Bruno Lima,bruno@example,bruno.lima,agent\nCarla Dias,carla@example.com,carla.dias,supervisor\n";
    let id = world
        .create_task(
            json!({"description": "hires", "system": "VIVO360", "attachment": encode(csv)}),
        )
        .await;
    let task = world.wait_status(&id, "COMPLETE").await;
    let statuses: Vec<&str> = task["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["CREATED", "REJECTED", "CREATED"], "{task}");
    assert_eq!(task["result"]["rows"][1]["message"], "email: not a valid e-mail address");
    let users = world.portal_users().await;
    let logins: Vec<&str> =
        users["users"].as_array().unwrap().iter().map(|u| u["login"].as_str().unwrap()).collect();
    assert_eq!(logins, ["ana.souza", "carla.dias"]);
    let events = world.events(&id).await;
    let completed = events.iter().find(|e| e["kind"] == "completed").unwrap();
    let log = completed["detail"]["log"].as_str().unwrap();
    assert!(log.contains("3 user(s), resuming after row 0"), "the program's log line: {log}");
}

#[tokio::test]
async fn a_registered_system_runs_a_shell_program_retries_and_resumes_after_a_kill() {
    let world = World::start(0).await;
    register(&world, json!({"name": "rows", "input": {"kind": "csv", "columns": ["item"]}, "defaults": {"max_attempts": 3}})).await;
    let dir = tempfile::tempdir().unwrap();
    // Attempt 1: rows 1 and 2, then the program is killed (kill -9 of itself). Attempt 2: must
    // start after row 2, and exits 75 (retryable) after row 3. Attempt 3: row 4, done.
    let program = script(
        &dir,
        "rows.sh",
        r#"
row=$((BOTLINE_RESUME_AFTER_ROW + 1))
total=$(($(wc -l < "$BOTLINE_ATTACHMENT") - 1))
echo "attempt $BOTLINE_ATTEMPT from row $row" >&2
while [ "$row" -le "$total" ]; do
    echo "{\"row\": $row, \"status\": \"DONE\", \"message\": \"attempt $BOTLINE_ATTEMPT\"}"
    if [ "$BOTLINE_ATTEMPT" = 1 ] && [ "$row" = 2 ]; then sleep 0.3; kill -9 $$; fi
    if [ "$BOTLINE_ATTEMPT" = 2 ] && [ "$row" = 3 ]; then sleep 0.3; exit 75; fi
    row=$((row + 1))
done
echo "not a report line"
"#,
    );
    let mut config = world.agent_config("sh-1", &[]);
    config.automation.push((System::new("ROWS").unwrap(), program));
    world.spawn_bot(config);
    let id = world
        .create_task(json!({"description": "items", "system": "rows", "attachment": encode("item\na\nb\nc\nd\n")}))
        .await;
    let task = world.wait_status(&id, "COMPLETE").await;
    let messages: Vec<&str> = task["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["attempt 1", "attempt 1", "attempt 2", "attempt 3"],
        "each row once: {task}"
    );
    assert_eq!(task["failures"], 2, "{task}");
    let events = world.events(&id).await;
    let failed: Vec<&Value> = events.iter().filter(|e| e["kind"] == "failed").collect();
    assert!(failed[0]["detail"]["error"].as_str().unwrap().contains("signal"), "{:?}", failed[0]);
    assert_eq!(failed[1]["detail"]["retryable"], true);
    assert!(
        failed[1]["detail"]["log"].as_str().unwrap().contains("attempt 2 from row 3"),
        "{:?}",
        failed[1]
    );
    let completed = events.iter().find(|e| e["kind"] == "completed").unwrap();
    let log = completed["detail"]["log"].as_str().unwrap();
    assert!(log.contains("not a report line") && log.contains("attempt 3 from row 4"), "{log}");
}

#[tokio::test]
async fn a_fatal_exit_fails_the_task_for_good_with_the_reason() {
    let world = World::start(0).await;
    register(&world, json!({"name": "payroll", "input": {"kind": "json", "schema": {"type": "object", "required": ["employee"]}}})).await;
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        &dir,
        "payroll.sh",
        "cat > /dev/null\necho 'employee 42 unknown in the ERP' >&2\nexit 3\n",
    );
    let mut config = world.agent_config("erp-1", &[System::NOOP]);
    config.automation.push((System::new("payroll").unwrap(), program));
    world.spawn_bot(config);
    let id = world
        .create_task(
            json!({"description": "march", "system": "PAYROLL", "payload": {"employee": "42"}}),
        )
        .await;
    let task = world.wait_status(&id, "FAILED").await;
    assert_eq!(task["failures"], 1, "not retried: {task}");
    let error = task["error"].as_str().unwrap();
    assert!(error.contains("status 3") && error.contains("employee 42 unknown"), "{error}");
    // The same bot still runs its built-in NOOP.
    let noop = world.create_task(json!({"description": "n", "system": "NOOP"})).await;
    world.wait_status(&noop, "COMPLETE").await;
}

#[tokio::test]
async fn an_agent_with_a_missing_command_refuses_to_start_naming_it() {
    let world = World::start(0).await;
    let mut config = world.agent_config("bad-1", &[]);
    config.automation.push((
        System::new("X").unwrap(),
        Program::from_command_line("no-such-program-here --go").unwrap(),
    ));
    let refused = bot_agent::run(config, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("no-such-program-here"), "{refused}");
}

#[tokio::test]
async fn a_killed_agent_takes_its_program_along_and_the_task_resumes_after_the_reported_rows() {
    let world = World::start(0).await;
    register(&world, json!({"name": "rows", "input": {"kind": "csv", "columns": ["item"]}})).await;
    let dir = tempfile::tempdir().unwrap();
    let work_log = dir.path().join("work.log");
    let pids = dir.path().join("pids");
    // Each row takes 300 ms of "work", recorded in the work log (the target system) before it is
    // reported: a row in the log twice was done twice.
    let body = r#"
echo $$ >> "$PIDS"
row=$((BOTLINE_RESUME_AFTER_ROW + 1))
total=$(($(wc -l < "$BOTLINE_ATTACHMENT") - 1))
while [ "$row" -le "$total" ]; do
    sleep 0.3
    echo "row $row" >> "$WORK_LOG"
    echo "{\"row\": $row, \"status\": \"DONE\", \"message\": \"attempt $BOTLINE_ATTEMPT\"}"
    row=$((row + 1))
done
"#;
    let path = dir.path().join("rows.sh");
    std::fs::write(&path, body).unwrap();
    let automation = format!("ROWS=sh {}", path.display());
    let mut doomed = world
        .bot_process("doomed", "noop")
        .args(["--automation", &automation])
        .env("WORK_LOG", &work_log)
        .env("PIDS", &pids)
        .spawn()
        .unwrap();
    let id = world
        .create_task(json!({"description": "items", "system": "rows", "attachment": encode("item\na\nb\nc\nd\ne\nf\n")}))
        .await;
    wait_until!(
        "two rows reported",
        world.task(&id).await["progress"]["done"].as_u64().unwrap_or(0) >= 2
    );
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let orphan: u32 = std::fs::read_to_string(&pids).unwrap().trim().parse().unwrap();
    wait_until!(
        "the program died with its agent",
        !std::path::Path::new(&format!("/proc/{orphan}")).exists()
    );

    let mut rescuer = world.agent_config("rescuer", &[]);
    let mut program = Program::from_command_line(&format!("sh {}", path.display())).unwrap();
    program.env.insert("WORK_LOG".into(), work_log.display().to_string());
    program.env.insert("PIDS".into(), pids.display().to_string());
    rescuer.automation.push((System::new("ROWS").unwrap(), program));
    world.spawn_bot(rescuer);
    let done = world.wait_status(&id, "COMPLETE").await;
    assert_eq!(done["result"]["rows_ok"], 6, "{}", done["result"]);
    let work = std::fs::read_to_string(&work_log).unwrap();
    for row in 1..=6 {
        assert_eq!(
            work.lines().filter(|l| *l == format!("row {row}")).count(),
            1,
            "row {row} done once: {work}"
        );
    }
    let history = world.history(&id).await;
    assert!(history.contains(&"bot_lost".to_owned()), "{history:?}");
}
