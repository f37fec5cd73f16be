//! Property tests of the orchestrator's own input parsers: list paging (`limit`, `offset`,
//! `cursor`), monitoring reports, and the attendance ETL's records. Arbitrary input never panics
//! and is refused naming its field; well-formed input round-trips; what a parser accepts fits the
//! columns it is stored in (PostgreSQL refuses text over a column's length, and NUL anywhere).
//!
//! Default case counts keep this at a few seconds; a long run:
//! `PROPTEST_CASES=100000 cargo nextest run -p orchestrator --test properties`.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use orchestrator::error::ApiError;
use orchestrator::etl::record;
use orchestrator::incidents::report::{
    self, MAX_CODE_CHARS, MAX_REPORTS, MAX_SERVICE_CHARS, Trigger,
};
use orchestrator::pagination::{Cursor, MAX_LIMIT, MAX_OFFSET, Order, PageRequest};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

fn field_of(error: &ApiError) -> Option<&str> {
    match error {
        ApiError::InvalidParameter { field, .. } | ApiError::Invalid { field, .. } => {
            field.as_deref()
        }
        _ => None,
    }
}

/// Any JSON value without floats.
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

// ---------------------------------------------------------------------------------------------
// Paging

proptest! {
    #[test]
    fn cursors_round_trip(micros in -8_000_000_000_000_000i64..8_000_000_000_000_000, id in any::<u128>()) {
        let at = DateTime::<Utc>::from_timestamp_micros(micros).unwrap();
        let cursor = Cursor::after(at, Uuid::from_u128(id));
        prop_assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        let page = PageRequest::parse(None, None, Some(&cursor.encode()), None).unwrap();
        prop_assert_eq!(page.cursor, Some(cursor));
    }

    #[test]
    fn arbitrary_cursors_never_panic(text in prop_oneof![".{0,64}", "[A-Za-z0-9_-]{0,80}"]) {
        match PageRequest::parse(None, None, Some(&text), None) {
            Ok(page) => prop_assert!(page.cursor.is_some()),
            Err(error) => prop_assert_eq!(field_of(&error), Some("cursor")),
        }
    }

    #[test]
    fn page_parameters_are_accepted_in_range_and_refused_by_name_outside(
        limit in proptest::option::of(any::<u64>()),
        offset in proptest::option::of(any::<u64>()),
        with_cursor in any::<bool>(),
        oldest in any::<bool>(),
    ) {
        let cursor = Cursor::after(Utc::now(), Uuid::now_v7()).encode();
        let cursor = with_cursor.then_some(cursor.as_str());
        let order = oldest.then_some(Order::Oldest);
        let result = PageRequest::parse(limit, offset, cursor, order);
        let limit_ok = limit.is_none_or(|l| (1..=MAX_LIMIT).contains(&l));
        let offset_ok = offset.is_none_or(|o| o <= MAX_OFFSET);
        let both = with_cursor && offset.is_some_and(|o| o > 0);
        match result {
            Ok(page) => {
                prop_assert!(limit_ok && offset_ok && !both);
                prop_assert_eq!(page.limit, limit.unwrap_or(50));
                prop_assert_eq!(page.offset, offset.unwrap_or(0));
                prop_assert_eq!(page.order, if oldest { Order::Oldest } else { Order::Newest });
            }
            Err(error) => {
                let expected = if !limit_ok { "limit" } else { "offset" };
                prop_assert!(!limit_ok || !offset_ok || both);
                prop_assert_eq!(field_of(&error), Some(expected));
                prop_assert_eq!(error.status_code(), 400);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Monitoring reports

proptest! {
    #[test]
    fn arbitrary_report_bodies_are_refused_naming_a_field(
        bytes in vec(any::<u8>(), 0..96),
        value in json_value(),
    ) {
        for body in [bytes, serde_json::to_vec(&value).unwrap(), serde_json::to_vec(&json!({"triggers": value})).unwrap()] {
            if let Err(error) = report::parse_triggers(&body) {
                prop_assert!(error.field.starts_with("triggers"), "{:?}", error);
                prop_assert!(!error.message.is_empty());
            }
            if let Err(error) = report::parse_message(&body) {
                prop_assert!(error.field.starts_with("report"), "{:?}", error);
            }
        }
    }

    #[test]
    fn an_accepted_trigger_fits_its_columns(service in ".{0,110}", status in ".{0,70}") {
        // action_triggers and unclassified_reports hold a service in 100 characters and a
        // return code in 64; PostgreSQL refuses longer text, and NUL in any text.
        if let Ok(trigger) = Trigger::parse(&service, &status, "triggers[0]") {
            prop_assert!(trigger.service.chars().count() <= MAX_SERVICE_CHARS, "{:?}", trigger);
            prop_assert!(trigger.status.chars().count() <= MAX_CODE_CHARS, "{:?}", trigger);
            prop_assert!(!trigger.service.contains('\0') && !trigger.status.contains('\0'), "{:?}", trigger);
        }
    }

    #[test]
    fn well_formed_reports_parse_in_both_shapes_and_a_bad_one_is_named(
        reports in vec(("[a-zA-Z][a-zA-Z0-9_. -]{0,20}", "[a-zA-Z0-9_]{1,10}"), 1..8),
        bad in any::<prop::sample::Index>(),
        fault in 0..4usize,
    ) {
        let english: Vec<Value> = reports.iter().map(|(s, c)| json!({"service": s, "status": c})).collect();
        let original: Vec<Value> = reports.iter().map(|(s, c)| json!({"servico": s, "retorno": c})).collect();
        let expected: Vec<Trigger> = reports
            .iter()
            .map(|(s, c)| Trigger { service: s.trim().to_lowercase(), status: c.trim().to_uppercase() })
            .collect();
        let body = serde_json::to_vec(&json!({"triggers": english})).unwrap();
        prop_assert_eq!(report::parse_triggers(&body).unwrap(), expected.clone());
        let body = serde_json::to_vec(&json!({"gatilhos": original})).unwrap();
        prop_assert_eq!(report::parse_triggers(&body).unwrap(), expected);

        // One report broken: the error names it and the field, and nothing is accepted.
        let at = bad.index(english.len());
        let mut broken = english.clone();
        let (key, value) = match fault {
            0 => ("service", Value::Null),
            1 => ("status", json!(" ")),
            2 => ("service", json!(["login"])),
            _ => ("service", json!("x".repeat(MAX_SERVICE_CHARS + 1))),
        };
        broken[at][key] = value;
        let body = serde_json::to_vec(&json!({"triggers": broken})).unwrap();
        let error = report::parse_triggers(&body).unwrap_err();
        prop_assert_eq!(error.field, format!("triggers[{at}].{key}"));
    }

}

#[test]
fn too_many_reports_are_refused() {
    for count in [MAX_REPORTS + 1, MAX_REPORTS + 50] {
        let reports = vec![json!({"service": "login", "status": 503}); count];
        let body = serde_json::to_vec(&json!({"triggers": reports})).unwrap();
        let error = report::parse_triggers(&body).unwrap_err();
        assert!(error.message.contains("at most 1000 reports"), "{error:?}");
    }
    let reports = vec![json!({"service": "login", "status": 503}); MAX_REPORTS];
    let body = serde_json::to_vec(&json!({"triggers": reports})).unwrap();
    assert_eq!(report::parse_triggers(&body).map(|t| t.len()), Ok(MAX_REPORTS));
}

// ---------------------------------------------------------------------------------------------
// Attendance records (the ETL's broker messages)

proptest! {
    #[test]
    fn arbitrary_records_are_refused_with_reasons(bytes in vec(any::<u8>(), 0..96), value in json_value()) {
        let tz = chrono_tz::America::Sao_Paulo;
        if let Ok(raw) = record::decode(&bytes) {
            let _ = record::parse_record(&raw, tz);
        }
        match record::parse_record(&value, tz) {
            Ok(_) => {}
            Err(problems) => {
                prop_assert!(!problems.is_empty());
                prop_assert!(!record::reasons(&problems).is_empty());
            }
        }
        let object = json!({"record": value});
        let _ = record::parse_record(&object, tz);
    }
}
