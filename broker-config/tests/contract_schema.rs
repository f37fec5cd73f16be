//! The contract's JSON Schema, checked in for the Python package, is what the message types say.

use std::path::PathBuf;

use broker_config::schema::contract_schema;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/python/src/botline/contract.schema.json")
}

#[test]
fn the_checked_in_schema_is_the_one_the_message_types_make() {
    let generated = serde_json::to_string_pretty(&contract_schema()).expect("json") + "\n";
    let path = checked_in();
    if std::env::var_os("BOTLINE_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} drifted from broker-config's message types: rewrite it with \
         `BOTLINE_WRITE_SCHEMA=1 cargo test -p broker-config --test contract_schema` and update \
         the Python package for what changed",
        path.display()
    );
}

#[test]
fn the_schema_accepts_every_message_the_types_encode_and_refuses_broken_ones() {
    use broker_config::messages::{encode, encode_events, encode_offers};
    use broker_config::{Assignment, BotName, BotStatus, Command, Event, RowOutcome, RowStatus};
    use broker_config::{System, TaskRef};
    use serde_json::{Value, json};

    let schema = contract_schema();
    // Formats checked, as serde checks them (a uuid, a time).
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid JSON Schema");
    let bot = BotName::parse("py-1").expect("name");
    let task = TaskRef { task_id: uuid::Uuid::from_u128(7), attempt: 2 };
    let at = chrono::Utc::now();
    let offer = Assignment {
        task,
        system: System::VIVO360,
        description: "hires".into(),
        attachment: Some("bmFtZQo=".into()),
        payload: Some(json!({"a": 1})),
        resume_after_row: 3,
        offer_expires_at: at,
    };
    let row = RowOutcome { row: 4, status: RowStatus::Rejected, message: "taken".into() };
    let events = vec![
        Event::TaskAccepted { task, bot: bot.clone(), at },
        Event::TaskRejected { task, bot: bot.clone(), reason: "busy".into(), at },
        Event::TaskProgress { task, bot: bot.clone(), rows: vec![row.clone()], at },
        Event::TaskCompleted {
            task,
            bot: bot.clone(),
            rows: vec![],
            output: Some(json!([1])),
            log: Some("ok".into()),
            at,
        },
        Event::TaskFailed {
            task,
            bot: bot.clone(),
            rows: vec![row.clone()],
            error: "down".into(),
            retryable: true,
            log: None,
            at,
        },
        Event::TaskReleased { task, bot: bot.clone(), rows: vec![], reason: "stop".into(), at },
        Event::BotOnline {
            bot: bot.clone(),
            ip_address: "10.0.0.1".into(),
            systems: vec![System::NOOP],
            session: Some(uuid::Uuid::nil()),
            slots: Some(8),
            batches: true,
            at,
        },
        Event::BotHeartbeat { bot: bot.clone(), task: Some(task), tasks: vec![task], at },
        Event::BotStatusChanged { bot: bot.clone(), status: BotStatus::Unavailable, at },
        Event::BotOffline { bot: bot.clone(), at },
    ];
    let mut messages: Vec<Vec<u8>> = events.iter().map(encode).collect();
    messages.push(encode_events(&bot, &events).1);
    messages.push(encode_offers(std::slice::from_ref(&offer)));
    messages.push(encode_offers(&[offer.clone(), offer]));
    messages.push(encode(&Command::CancelTask { task, reason: "by a user".into() }));
    for bytes in &messages {
        let message: Value = serde_json::from_slice(bytes).expect("json");
        let errors: Vec<String> = validator.iter_errors(&message).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{message} is refused: {errors:?}");
    }

    // What a hand-written bot may leave out (`at`), and what it may not.
    let accepted = json!({"v": 1, "type": "task.accepted", "task_id": task.task_id, "attempt": 2, "bot": "py-1"});
    assert!(validator.is_valid(&accepted), "`at` is optional");
    let broken = [
        json!({"v": 2, "type": "task.accepted", "task_id": task.task_id, "attempt": 2, "bot": "py-1"}),
        json!({"v": 1, "type": "task.exploded", "task_id": task.task_id, "attempt": 2, "bot": "py-1"}),
        json!({"v": 1, "type": "task.accepted", "task_id": task.task_id, "bot": "py-1"}),
        json!({"v": 1, "type": "task.accepted", "task_id": task.task_id, "attempt": 2, "bot": "Py 1"}),
        json!({"v": 1, "type": "task.progress", "task_id": task.task_id, "attempt": 2, "bot": "py-1",
               "rows": [{"row": 1, "status": "MAYBE", "message": ""}]}),
        json!({"v": 1, "type": "task.failed", "task_id": task.task_id, "attempt": 2, "bot": "py-1",
               "rows": [], "error": "x"}),
        json!({"v": 1, "type": "task.accepted", "task_id": "not-a-uuid", "attempt": 2, "bot": "py-1"}),
        json!({"v": 1, "type": "task.accepted", "task_id": task.task_id, "attempt": 1_u64 << 40, "bot": "py-1"}),
        json!({"v": 1, "type": "task.accepted", "task_id": task.task_id, "attempt": 2, "bot": "py-1", "at": "yesterday"}),
        json!({"v": 1, "type": "tasks.assign", "offers": [
            {"type": "task.cancel", "task_id": task.task_id, "attempt": 1, "reason": "x"}]}),
    ];
    for message in broken {
        assert!(!validator.is_valid(&message), "{message} is accepted");
    }
}
