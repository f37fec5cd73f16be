//! Property tests of the contract's parsers: everything that reads input from outside (bot names,
//! system and status names, equipment ids and activation requests, CSV attachments in base64,
//! broker messages in JSON).
//!
//! Three kinds of property, for each parser:
//! - arbitrary input (bytes, strings, JSON) never panics, and a refusal says something;
//! - well-formed generated input round-trips (encode → decode is the identity, a generated CSV
//!   parses to its rows);
//! - near-valid input (one field removed, mistyped, out of range, truncated, huge) is refused
//!   with an error that names what is wrong.
//!
//! The default 256 cases per property keep this file at a few seconds; a long run:
//! `PROPTEST_CASES=100000 cargo nextest run -p broker-config --test properties`.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use broker_config::attachment::VIVO360_COLUMNS;
use broker_config::bot_name::MAX_BOT_NAME_LEN;
use broker_config::cpe::{MAX_EQUIPMENT_ID_LEN, MIN_EQUIPMENT_ID_LEN};
use broker_config::messages::{self, DecodeError};
use broker_config::{
    Assignment, Attachment, AttachmentError, BotName, BotNameError, BotStatus, Builtin, Command,
    CpePayload, CpeRequest, Delivery, EquipmentId, EquipmentIdError, Event, RowOutcome, RowStatus,
    System, TaskRef, TaskStatus,
};
use chrono::{DateTime, Utc};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Generators

/// A valid bot name: what `BotName::parse` must accept.
fn bot_name() -> impl Strategy<Value = BotName> {
    "[a-z0-9][a-z0-9._-]{0,63}".prop_map(|name| BotName::parse(&name).unwrap())
}

/// A valid system name, a built-in one or any other.
fn system() -> impl Strategy<Value = System> {
    prop_oneof![
        select(Builtin::ALL.to_vec()).prop_map(Builtin::system),
        "[A-Z0-9][A-Z0-9_-]{0,63}".prop_map(|name| System::new(&name).unwrap()),
    ]
}

fn bot_status() -> impl Strategy<Value = BotStatus> {
    select(BotStatus::ALL.to_vec())
}

/// Any instant from 1970 to 2100, to the nanosecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn task_ref() -> impl Strategy<Value = TaskRef> {
    (any::<u128>(), any::<u32>())
        .prop_map(|(id, attempt)| TaskRef { task_id: Uuid::from_u128(id), attempt })
}

fn row_outcome() -> impl Strategy<Value = RowOutcome> {
    let status =
        select(vec![RowStatus::Created, RowStatus::Rejected, RowStatus::Failed, RowStatus::Done]);
    (any::<u32>(), status, ".{0,20}").prop_map(|(row, status, message)| RowOutcome {
        row,
        status,
        message,
    })
}

fn rows() -> impl Strategy<Value = Vec<RowOutcome>> {
    vec(row_outcome(), 0..4)
}

/// Any JSON value without floats (whose text form is not always read back to the same bits).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(".{0,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An optional JSON value. `Some(null)` is left out: it is written as `null`, which reads back
/// as `None`, and the two mean the same to every reader.
fn optional_json() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![Just(None), json_value().prop_filter("not null", |v| !v.is_null()).prop_map(Some)]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (task_ref(), bot_name(), instant()).prop_map(|(task, bot, at)| Event::TaskAccepted {
            task,
            bot,
            at
        }),
        (task_ref(), bot_name(), ".{0,20}", instant())
            .prop_map(|(task, bot, reason, at)| Event::TaskRejected { task, bot, reason, at }),
        (task_ref(), bot_name(), rows(), instant())
            .prop_map(|(task, bot, rows, at)| Event::TaskProgress { task, bot, rows, at }),
        (
            task_ref(),
            bot_name(),
            rows(),
            optional_json(),
            proptest::option::of(".{0,20}"),
            instant()
        )
            .prop_map(|(task, bot, rows, output, log, at)| Event::TaskCompleted {
                task,
                bot,
                rows,
                output,
                log,
                at
            }),
        (task_ref(), bot_name(), rows(), ".{0,20}", any::<bool>(), instant()).prop_map(
            |(task, bot, rows, error, retryable, at)| Event::TaskFailed {
                task,
                bot,
                rows,
                error,
                retryable,
                log: None,
                at
            }
        ),
        (task_ref(), bot_name(), rows(), ".{0,20}", instant()).prop_map(
            |(task, bot, rows, reason, at)| Event::TaskReleased { task, bot, rows, reason, at }
        ),
        (
            bot_name(),
            ".{0,20}",
            vec(system(), 0..4),
            proptest::option::of(any::<u128>().prop_map(uuid::Uuid::from_u128)),
            proptest::option::of(1u32..=broker_config::messages::MAX_SLOTS),
            any::<bool>(),
            instant()
        )
            .prop_map(|(bot, ip_address, systems, session, slots, batches, at)| {
                Event::BotOnline { bot, ip_address, systems, session, slots, batches, at }
            }),
        (bot_name(), proptest::option::of(task_ref()), vec(task_ref(), 0..3), instant())
            .prop_map(|(bot, task, tasks, at)| Event::BotHeartbeat { bot, task, tasks, at }),
        (bot_name(), bot_status(), instant())
            .prop_map(|(bot, status, at)| Event::BotStatusChanged { bot, status, at }),
        (bot_name(), instant()).prop_map(|(bot, at)| Event::BotOffline { bot, at }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let assignment = (
        task_ref(),
        system(),
        ".{0,20}",
        proptest::option::of("[A-Za-z0-9+/]{0,16}"),
        optional_json(),
        any::<u32>(),
        instant(),
    )
        .prop_map(
            |(
                task,
                system,
                description,
                attachment,
                payload,
                resume_after_row,
                offer_expires_at,
            )| {
                Command::AssignTask(Assignment {
                    task,
                    system,
                    description,
                    attachment,
                    payload,
                    resume_after_row,
                    offer_expires_at,
                })
            },
        );
    prop_oneof![
        assignment,
        (task_ref(), ".{0,20}").prop_map(|(task, reason)| Command::CancelTask { task, reason }),
    ]
}

/// A CSV field: any text, commas, quotes and line breaks included (the writer quotes them).
fn csv_field() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-z ,\"\r\n;]{0,12}"]
}

/// A Vivo360 CSV as a header and rows: the required columns in any order and letter case,
/// padded with spaces, among optional extra columns.
fn vivo360_table() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>)> {
    let extra = proptest::sample::subsequence(vec!["phone", "notes", "team"], 0..=3);
    (extra, any::<u64>(), vec(any::<bool>(), 8), 1usize..6).prop_flat_map(
        |(extra, seed, upper, row_count)| {
            let mut columns: Vec<String> =
                VIVO360_COLUMNS.iter().copied().chain(extra).map(str::to_owned).collect();
            // A cheap deterministic shuffle driven by the seed.
            let len = columns.len();
            for i in (1..len).rev() {
                columns.swap(i, (seed as usize).wrapping_add(i * 7) % (i + 1));
            }
            let header: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if upper[i % upper.len()] {
                        format!(" {} ", c.to_uppercase())
                    } else {
                        c.clone()
                    }
                })
                .collect();
            (Just(header), vec(vec(csv_field(), len), row_count))
        },
    )
}

/// Writes a table as CSV text with the `csv` crate's writer.
fn write_csv(header: &[String], rows: &[Vec<String>]) -> String {
    let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
    writer.write_record(header).unwrap();
    for row in rows {
        writer.write_record(row).unwrap();
    }
    String::from_utf8(writer.into_inner().unwrap()).unwrap()
}

fn trimmed(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    rows.iter().map(|row| row.iter().map(|f| f.trim().to_owned()).collect()).collect()
}

/// A wrong-typed stand-in for a JSON value (a number for a string, a string for a number, …).
fn wrong_type(value: &Value) -> Value {
    match value {
        Value::String(_) => json!(12345),
        Value::Number(_) => json!("12"),
        Value::Bool(_) => json!("true"),
        Value::Array(_) => json!({}),
        Value::Object(_) => json!([]),
        Value::Null => json!(7),
    }
}

fn as_object(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(bytes).unwrap() {
        Value::Object(map) => map,
        other => panic!("a message is a JSON object, got {other}"),
    }
}

/// Keys whose value is any JSON (`output`, `payload`): no type is wrong for them.
const ANY_JSON_KEYS: [&str; 2] = ["output", "payload"];
/// Keys that may be absent (read as `None`; `at` as the time of arrival).
const OPTIONAL_KEYS: [&str; 10] = [
    "output",
    "payload",
    "attachment",
    "task",
    "tasks",
    "session",
    "slots",
    "batches",
    "log",
    "at",
];

// ---------------------------------------------------------------------------------------------
// Bot names

/// The rule of docs/architecture.md, written independently of the parser.
fn is_bot_name(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && s.len() <= MAX_BOT_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

proptest! {
    #[test]
    fn bot_names_are_accepted_exactly_when_queue_safe(s in prop_oneof![".{0,70}", "[a-zA-Z0-9._ #-]{0,70}"]) {
        match BotName::parse(&s) {
            Ok(name) => {
                prop_assert!(is_bot_name(&s), "accepted {s:?}");
                prop_assert_eq!(name.as_str(), s.as_str());
                let json = serde_json::to_string(&name).unwrap();
                prop_assert_eq!(serde_json::from_str::<BotName>(&json).unwrap(), name);
            }
            Err(error) => {
                prop_assert!(!is_bot_name(&s), "refused {s:?}: {error}");
                // The error names the actual fault.
                match error {
                    BotNameError::Empty => prop_assert!(s.is_empty()),
                    BotNameError::TooLong => prop_assert!(
                        s.chars().count() > MAX_BOT_NAME_LEN,
                        "{s:?} has {} characters, yet was refused as too long", s.chars().count()
                    ),
                    BotNameError::InvalidCharacter(c) => {
                        prop_assert!(s.contains(c));
                        let quoted = format!("{c:?}");
                        prop_assert!(error.to_string().contains(&quoted));
                    }
                }
                prop_assert!(serde_json::from_value::<BotName>(json!(s)).is_err());
            }
        }
    }

    #[test]
    fn a_valid_bot_name_with_one_character_changed_is_refused_for_that_character(
        name in bot_name(),
        position in any::<prop::sample::Index>(),
        bad in prop_oneof![Just('A'), Just(' '), Just('#'), Just('/'), Just('é'), Just('\u{0}')],
    ) {
        let mut chars: Vec<char> = name.as_str().chars().collect();
        let at = position.index(chars.len());
        chars[at] = bad;
        let mutated: String = chars.into_iter().collect();
        prop_assert_eq!(BotName::parse(&mutated), Err(BotNameError::InvalidCharacter(bad)));
    }
}

// ---------------------------------------------------------------------------------------------
// Systems and statuses

fn mixed_case(name: &str, mask: &[bool]) -> String {
    name.chars()
        .zip(mask.iter().cycle())
        .map(|(c, upper)| if *upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect()
}

proptest! {
    #[test]
    fn names_parse_in_any_case_with_spaces_and_round_trip(
        mask in vec(any::<bool>(), 1..8),
        pad in "[ \t]{0,2}",
    ) {
        for system in Builtin::ALL.map(Builtin::system) {
            let text = format!("{pad}{}{pad}", mixed_case(system.as_str(), &mask));
            prop_assert_eq!(text.parse::<System>(), Ok(system.clone()));
            prop_assert_eq!(system.to_string().parse::<System>(), Ok(system.clone()));
            let json = serde_json::to_string(&system).unwrap();
            prop_assert_eq!(serde_json::from_str::<System>(&json).unwrap(), system);
        }
        for status in TaskStatus::ALL {
            let text = format!("{pad}{}{pad}", mixed_case(status.as_str(), &mask));
            prop_assert_eq!(text.parse::<TaskStatus>(), Ok(status));
        }
        for status in BotStatus::ALL {
            prop_assert_eq!(mixed_case(status.as_str(), &mask).parse::<BotStatus>(), Ok(status));
        }
        for delivery in Delivery::ALL {
            prop_assert_eq!(mixed_case(delivery.as_str(), &mask).parse::<Delivery>(), Ok(delivery));
        }
    }

    #[test]
    fn unknown_names_are_refused_with_the_value_and_the_known_ones(s in ".{0,16}") {
        // Any name of the allowed characters is a system (which ones exist is the registry's
        // business); anything else is refused, naming the value.
        let name = s.trim();
        let well_formed = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        match s.parse::<System>() {
            Ok(system) => prop_assert!(well_formed && system.as_str() == name.to_ascii_uppercase()),
            Err(error) => {
                prop_assert!(!well_formed);
                prop_assert_eq!(&error.value, &s);
                let message = error.to_string();
                prop_assert!(message.contains("is not a system name"), "{}", message);
            }
        }
        let known = Builtin::ALL.iter().any(|v| v.as_str().eq_ignore_ascii_case(s.trim()));
        prop_assert_eq!(s.parse::<Builtin>().is_ok(), known);
        let known = TaskStatus::ALL.iter().any(|v| v.as_str().eq_ignore_ascii_case(s.trim()));
        prop_assert_eq!(s.parse::<TaskStatus>().is_ok(), known);
    }
}

// ---------------------------------------------------------------------------------------------
// Equipment ids and activation requests

fn is_equipment_id(s: &str) -> bool {
    (MIN_EQUIPMENT_ID_LEN..=MAX_EQUIPMENT_ID_LEN).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn cpe_payload() -> impl Strategy<Value = CpePayload> {
    ("[A-Za-z0-9]{6,64}", 1u32..=3600, btree_map("[a-z]{1,8}", json_value(), 0..5)).prop_map(
        |(id, timeout, parameters)| {
            let request: CpeRequest = serde_json::from_value(json!({
                "timeoutInSeconds": timeout,
                "parameters": Value::Object(parameters.into_iter().collect()),
            }))
            .unwrap();
            CpePayload::new(EquipmentId::parse(&id).unwrap(), request)
        },
    )
}

proptest! {
    #[test]
    fn equipment_ids_are_accepted_exactly_when_six_to_sixty_four_letters_or_digits(
        s in prop_oneof![".{0,70}", "[a-zA-Z0-9-]{0,70}"]
    ) {
        match EquipmentId::parse(&s) {
            Ok(id) => {
                prop_assert!(is_equipment_id(&s));
                prop_assert_eq!(id.path(), format!("/api/v1/equipment/cpe/{s}"));
            }
            Err(EquipmentIdError::InvalidCharacter(c)) => prop_assert!(!c.is_ascii_alphanumeric() && s.contains(c)),
            Err(EquipmentIdError::TooShort) => prop_assert!(s.len() < MIN_EQUIPMENT_ID_LEN),
            Err(EquipmentIdError::TooLong) => prop_assert!(s.len() > MAX_EQUIPMENT_ID_LEN),
        }
    }

    #[test]
    fn cpe_payloads_round_trip_in_both_parameter_shapes(payload in cpe_payload()) {
        let stored = payload.to_value();
        prop_assert_eq!(&CpePayload::from_value(&stored).unwrap(), &payload);
        let request = payload.request();
        let as_object = serde_json::to_vec(&request).unwrap();
        prop_assert_eq!(&serde_json::from_slice::<CpeRequest>(&as_object).unwrap(), &request);
        // The original interface's list of one-key objects reads to the same parameters, and is
        // sent on in the shape it came in.
        let list: Vec<Value> = request
            .parameters
            .as_map()
            .iter()
            .map(|(k, v)| Value::Object(Map::from_iter([(k.clone(), v.clone())])))
            .collect();
        let as_list = json!({"timeoutInSeconds": request.timeout_in_seconds, "parameters": list});
        let read = serde_json::from_value::<CpeRequest>(as_list).unwrap();
        prop_assert_eq!(read.timeout_in_seconds, request.timeout_in_seconds);
        prop_assert_eq!(read.parameters.as_map(), request.parameters.as_map());
        prop_assert!(read.parameters.is_list());
        prop_assert_eq!(&serde_json::to_value(&read).unwrap()["parameters"], &Value::Array(list));
    }

    #[test]
    fn cpe_requests_with_a_bad_timeout_say_the_range(
        timeout in prop_oneof![Just(json!(0)), (3601u64..).prop_map(Value::from), (i64::MIN..0).prop_map(Value::from), Just(json!(1.5)), Just(json!("14"))],
    ) {
        let body = json!({"timeoutInSeconds": timeout, "parameters": {"vlan": 1}});
        let error = serde_json::from_value::<CpeRequest>(body).unwrap_err().to_string();
        prop_assert!(error.contains("a whole number of seconds from 1 to 3600"), "{}", error);
    }

    #[test]
    fn cpe_requests_from_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64), value in json_value()) {
        let _ = serde_json::from_slice::<CpeRequest>(&bytes);
        let _ = serde_json::from_value::<CpeRequest>(value.clone());
        let _ = CpePayload::from_value(&value);
    }

    #[test]
    fn a_parameter_given_twice_in_the_list_shape_is_refused_by_name(
        key in "[a-z]{1,8}", first in json_value(), second in json_value()
    ) {
        let body = json!({"timeoutInSeconds": 5, "parameters": [{&key: first}, {&key: second}]});
        let error = serde_json::from_value::<CpeRequest>(body).unwrap_err().to_string();
        prop_assert!(error.contains(&format!("parameter `{key}` is given twice")), "{}", error);
    }
}

// ---------------------------------------------------------------------------------------------
// CSV attachments

proptest! {
    #[test]
    fn arbitrary_attachments_never_panic(
        text in prop_oneof![".{0,64}", "[A-Za-z0-9+/= \n]{0,64}"],
        bytes in vec(any::<u8>(), 0..64),
        csvish in "[a-z,;\"\r\n \u{feff}]{0,48}",
        system in system(),
        columns in vec("[a-z]{1,6}", 0..3),
        limit in 0usize..128,
    ) {
        let required: Vec<&str> = columns.iter().map(String::as_str).collect();
        for result in [
            Attachment::from_base64(&text, &system, &required, limit),
            Attachment::from_bytes(bytes.clone(), &system, &required, limit),
            Attachment::parse(csvish.clone(), &system, &required),
        ] {
            match result {
                Ok(attachment) => {
                    prop_assert!(attachment.row_count() > 0);
                    let width = attachment.headers().len();
                    prop_assert!(attachment.rows().iter().all(|row| row.len() == width));
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn a_generated_csv_parses_to_its_rows_and_round_trips_through_base64(
        (header, rows) in vivo360_table(),
        bom in any::<bool>(),
        wrap in 1usize..80,
    ) {
        let text = format!("{}{}", if bom { "\u{feff}" } else { "" }, write_csv(&header, &rows));
        let attachment = Attachment::parse(text.clone(), &System::VIVO360, &VIVO360_COLUMNS).unwrap();
        let headers: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
        prop_assert_eq!(attachment.headers(), headers.as_slice());
        let expected = trimmed(&rows);
        prop_assert_eq!(attachment.rows(), expected.as_slice());
        prop_assert_eq!(attachment.as_str(), text.as_str());
        let email = headers.iter().position(|h| h == "email").unwrap();
        for (i, row) in rows.iter().enumerate() {
            prop_assert_eq!(attachment.field(i, "email"), Some(row[email].trim()));
        }

        // Base64, wrapped at any width as `base64` does, reads back to the same file.
        let encoded = attachment.to_base64();
        prop_assert_eq!(&encoded, &BASE64.encode(&text));
        let wrapped: String = encoded
            .as_bytes()
            .chunks(wrap)
            .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
            .collect();
        let decoded = Attachment::from_base64(&wrapped, &System::VIVO360, &VIVO360_COLUMNS, text.len()).unwrap();
        prop_assert_eq!(&decoded, &attachment);
        // Systems without columns of their own take it as any CSV.
        let any_csv = Attachment::parse(text, &System::NOOP, &[]).unwrap();
        prop_assert_eq!(any_csv.rows(), attachment.rows());
    }

    #[test]
    fn the_size_limit_holds_to_the_byte(
        (header, rows) in vivo360_table(),
        slack in -40i64..40,
    ) {
        let text = write_csv(&header, &rows);
        let limit = usize::try_from(text.len() as i64 + slack).unwrap_or(0);
        let too_large = Err(AttachmentError::TooLarge { limit });
        let from_base64 = Attachment::from_base64(&BASE64.encode(&text), &System::VIVO360, &VIVO360_COLUMNS, limit);
        let from_bytes = Attachment::from_bytes(text.clone().into_bytes(), &System::VIVO360, &VIVO360_COLUMNS, limit);
        if text.len() > limit {
            prop_assert_eq!(&from_base64, &too_large);
            prop_assert_eq!(&from_bytes, &too_large);
        } else {
            prop_assert!(from_base64.is_ok(), "{:?}", from_base64);
            prop_assert!(from_bytes.is_ok(), "{:?}", from_bytes);
        }
    }

    #[test]
    fn a_missing_required_column_is_named(
        (header, rows) in vivo360_table(),
        which in select(VIVO360_COLUMNS.to_vec()),
    ) {
        let drop = header.iter().position(|h| h.trim().eq_ignore_ascii_case(which)).unwrap();
        let keep = |row: &Vec<String>| -> Vec<String> {
            row.iter().enumerate().filter(|(i, _)| *i != drop).map(|(_, f)| f.clone()).collect()
        };
        let text = write_csv(&keep(&header), &rows.iter().map(keep).collect::<Vec<_>>());
        match Attachment::parse(text, &System::VIVO360, &VIVO360_COLUMNS) {
            Err(AttachmentError::MissingColumns { system, missing, .. }) => {
                prop_assert_eq!(system, System::VIVO360);
                prop_assert_eq!(missing, which);
            }
            other => prop_assert!(false, "expected the missing column {}, got {:?}", which, other),
        }
    }

    #[test]
    fn a_row_with_a_field_too_few_is_refused_with_its_line(
        rows in vec(vec("[a-z ]{0,8}", 4), 1..6),
        ragged in any::<prop::sample::Index>(),
    ) {
        let header: Vec<String> = VIVO360_COLUMNS.iter().map(|c| c.to_string()).collect();
        let ragged = ragged.index(rows.len());
        let mut short = rows.clone();
        short[ragged].pop();
        let text = write_csv(&header, &short);
        match Attachment::parse(text, &System::VIVO360, &VIVO360_COLUMNS) {
            Err(AttachmentError::Malformed(message)) => {
                prop_assert!(message.contains("found record with 3 fields"), "{}", message);
                prop_assert!(message.contains(&format!("line: {}", ragged + 2)), "{}", message);
            }
            other => prop_assert!(false, "expected a malformed row, got {:?}", other),
        }
    }

    #[test]
    fn truncated_base64_is_refused_as_base64(
        (header, rows) in vivo360_table(),
        cut in 1usize..4,
    ) {
        let encoded = BASE64.encode(write_csv(&header, &rows));
        let truncated = &encoded[..encoded.len() - cut];
        let result = Attachment::from_base64(truncated, &System::VIVO360, &VIVO360_COLUMNS, usize::MAX);
        prop_assert!(matches!(result, Err(AttachmentError::InvalidBase64(_))), "{:?}", result);
    }

    #[test]
    fn a_byte_that_is_not_utf8_is_refused_at_its_offset(
        rows in vec(vec("[a-z ]{0,8}", 4), 1..4),
        at in any::<prop::sample::Index>(),
        bad in 0x80u8..=0xff,
    ) {
        let header: Vec<String> = VIVO360_COLUMNS.iter().map(|c| c.to_string()).collect();
        let mut bytes = write_csv(&header, &rows).into_bytes();
        let at = at.index(bytes.len());
        bytes.insert(at, bad);
        // A lone byte of 0x80 or more is never valid UTF-8 among ASCII.
        prop_assert_eq!(
            Attachment::from_bytes(bytes, &System::VIVO360, &VIVO360_COLUMNS, usize::MAX),
            Err(AttachmentError::NotUtf8(at))
        );
    }

    #[test]
    fn a_header_without_rows_or_nothing_at_all_is_refused_as_such(
        blank in "[ \t]{0,4}",
        (header, _) in vivo360_table(),
    ) {
        prop_assert_eq!(Attachment::parse(blank.clone(), &System::VIVO360, &VIVO360_COLUMNS), Err(AttachmentError::Empty));
        prop_assert_eq!(Attachment::parse(format!("{blank}\nname\n"), &System::NOOP, &[]), Err(AttachmentError::Empty));
        prop_assert_eq!(
            Attachment::parse(write_csv(&header, &[]), &System::VIVO360, &VIVO360_COLUMNS),
            Err(AttachmentError::NoRows)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Broker messages

proptest! {
    #[test]
    fn events_and_commands_round_trip(event in event(), command in command()) {
        let bytes = messages::encode(&event);
        let json = as_object(&bytes);
        prop_assert_eq!(&json["v"], &json!(messages::VERSION));
        prop_assert_eq!(&json["type"], &json!(event.routing_key()));
        prop_assert_eq!(messages::decode::<Event>(&bytes).unwrap(), event);

        let bytes = messages::encode(&command);
        prop_assert_eq!(messages::decode::<Command>(&bytes).unwrap(), command);
    }

    #[test]
    fn arbitrary_bytes_and_json_are_refused_without_panicking(
        bytes in vec(any::<u8>(), 0..128),
        value in json_value(),
    ) {
        for body in [bytes, serde_json::to_vec(&value).unwrap()] {
            if let Err(error) = messages::decode::<Event>(&body) {
                prop_assert!(!error.to_string().is_empty());
            }
            if let Err(error) = messages::decode::<Command>(&body) {
                prop_assert!(!error.to_string().is_empty());
            }
        }
    }

    #[test]
    fn an_event_without_a_required_field_names_it(event in event(), pick in any::<prop::sample::Index>()) {
        let mut json = as_object(&messages::encode(&event));
        let keys: Vec<String> =
            json.keys().filter(|k| !OPTIONAL_KEYS.contains(&k.as_str())).cloned().collect();
        let key = pick.get(&keys).clone();
        json.remove(&key);
        let body = serde_json::to_vec(&json).unwrap();
        match messages::decode::<Event>(&body) {
            Err(DecodeError::Malformed(error)) => {
                let message = error.to_string();
                prop_assert!(message.contains(&format!("missing field `{key}`")), "{}: {}", key, message);
            }
            other => prop_assert!(false, "without `{}`: {:?}", key, other),
        }
    }

    #[test]
    fn an_event_with_a_mistyped_field_is_refused(event in event(), pick in any::<prop::sample::Index>()) {
        let mut json = as_object(&messages::encode(&event));
        let keys: Vec<String> =
            json.keys().filter(|k| !ANY_JSON_KEYS.contains(&k.as_str())).cloned().collect();
        let key = pick.get(&keys).clone();
        let wrong = wrong_type(&json[&key]);
        json.insert(key.clone(), wrong.clone());
        let body = serde_json::to_vec(&json).unwrap();
        match messages::decode::<Event>(&body) {
            Err(DecodeError::Malformed(error)) => {
                let message = error.to_string();
                let says = ["invalid type", "invalid length", "unknown variant", "invalid value"];
                prop_assert!(says.iter().any(|s| message.contains(s)), "`{}` = {}: {}", key, wrong, message);
            }
            other => prop_assert!(false, "`{}` = {}: {:?}", key, wrong, other),
        }
    }

    #[test]
    fn other_versions_unknown_types_bad_names_and_huge_numbers_are_refused(
        event in event(),
        version in any::<u16>().prop_filter("not this version", |v| *v != messages::VERSION),
        kind in "[a-z]{1,8}\\.[a-z]{1,8}",
        bad_name in prop_oneof!["[A-Z][a-z]{0,8}", "[a-z]{1,8} [a-z]{1,8}", "[a-z]{65,80}"],
    ) {
        let json = as_object(&messages::encode(&event));

        let mut other_version = json.clone();
        other_version.insert("v".into(), json!(version));
        let result = messages::decode::<Event>(&serde_json::to_vec(&other_version).unwrap());
        prop_assert!(matches!(result, Err(DecodeError::UnsupportedVersion(v)) if v == version));

        let known = ["task.accepted", "task.rejected", "task.progress", "task.completed", "task.failed", "task.released", "bot.online", "bot.heartbeat", "bot.status", "bot.offline"];
        if !known.contains(&kind.as_str()) {
            let mut unknown = json.clone();
            unknown.insert("type".into(), json!(kind));
            let error = messages::decode::<Event>(&serde_json::to_vec(&unknown).unwrap()).unwrap_err();
            prop_assert!(error.to_string().contains("unknown variant"), "{}", error);
        }

        let mut renamed = json.clone();
        renamed.insert("bot".into(), json!(bad_name));
        let error = messages::decode::<Event>(&serde_json::to_vec(&renamed).unwrap()).unwrap_err();
        prop_assert!(error.to_string().contains("bot name"), "{}", error);

        if json.contains_key("attempt") {
            let mut huge = json.clone();
            huge.insert("attempt".into(), json!(u64::from(u32::MAX) + 1));
            let error = messages::decode::<Event>(&serde_json::to_vec(&huge).unwrap()).unwrap_err();
            prop_assert!(error.to_string().contains("4294967296"), "{}", error);
        }
    }

    #[test]
    fn a_truncated_message_is_malformed(event in event(), command in command(), cut in any::<prop::sample::Index>()) {
        let bytes = messages::encode(&event);
        let short = &bytes[..cut.index(bytes.len())];
        prop_assert!(matches!(messages::decode::<Event>(short), Err(DecodeError::Malformed(_))));
        let bytes = messages::encode(&command);
        let short = &bytes[..cut.index(bytes.len())];
        prop_assert!(matches!(messages::decode::<Command>(short), Err(DecodeError::Malformed(_))));
    }
}
