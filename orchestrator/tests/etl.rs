//! The attendance ETL end to end: records published to `botline.attendance` on a real RabbitMQ,
//! loaded by the running orchestrator into a real database (SQLite and PostgreSQL), bad ones
//! dead-lettered with their reasons, and the report computed over them. Records also come the
//! way the original's producer sent them: over STOMP to `/topic/attendance`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use broker_config::access::publisher_permissions;
use broker_config::amqp;
use broker_config::testing::stomp::StompClient;
use broker_config::topology::{ATTENDANCE_ETL_QUEUE, ATTENDANCE_EXCHANGE};
use chrono::{NaiveDate, TimeZone as _, Utc};
use common::{Backend, TestApp, assert_error};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation};
use orchestrator::entity::{attendance, attendance_service};
use orchestrator::etl::produce::{ProduceOptions, produce};
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _, QueryOrder as _,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn example() -> Value {
    json!({"name":"Geralt","document":"123.456.789-12","age":"40","sex":"masculino",
        "channel":"whatsapp","services":{"1":"agendar consulta","2":"informacoes"},
        "date":"02/08/2021 11:35:42","headache":"sim","otherSymptoms":"nao","covidContact":"nao",
        "covidTest":"negativo","serviceScore":"10","solved":"sim"})
}

fn with(field: &str, value: Value) -> Value {
    let mut record = example();
    record[field] = value;
    record
}

/// Publishes raw bodies, each with its message id (or none), and waits for the broker's confirms.
async fn publish(app: &TestApp, records: &[(Option<&str>, Vec<u8>)]) {
    let connection = amqp::connect(&app.vhost.amqp_url(), "test-platform").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    broker_config::Topology::core().declare(&channel).await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut confirms = Vec::new();
    for (id, body) in records {
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(id) = id {
            properties = properties.with_message_id((*id).into());
        }
        let confirm = channel
            .basic_publish(
                ATTENDANCE_EXCHANGE.into(),
                "attendance.whatsapp".into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        assert!(matches!(confirm.await.unwrap(), Confirmation::Ack(_)));
    }
    let _ = connection.close(200, "done".into()).await;
}

fn json_body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// Waits until the record with message key `key` is loaded: the ETL consumes in order, so every
/// record published before it has been handled by then.
async fn wait_for_key(app: &TestApp, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = attendance::Entity::find()
            .filter(attendance::Column::MessageKey.eq(key))
            .count(&app.db)
            .await
            .unwrap();
        if found > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{key} not loaded within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rows(app: &TestApp) -> u64 {
    attendance::Entity::find().count(&app.db).await.unwrap()
}

/// Takes `n` dead letters from `botline.dead`: message id (or body) → reason.
async fn dead_letters(app: &TestApp, n: usize) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for dead in app.vhost.dead_letters(n).await.unwrap() {
        assert_eq!(dead.queue.as_deref(), Some(ATTENDANCE_ETL_QUEUE));
        let id =
            dead.message_id.unwrap_or_else(|| String::from_utf8_lossy(&dead.data).into_owned());
        found.insert(id, dead.reason.expect("every dead letter says why"));
    }
    found
}

async fn the_example_record_is_loaded_normalized(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    publish(&app, &[(Some("example-1"), json_body(&example()))]).await;
    wait_for_key(&app, "example-1").await;
    let row = attendance::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(row.message_key, "example-1");
    assert_eq!(row.name, "Geralt");
    assert_eq!(row.document, "12345678912");
    assert_eq!(row.age, 40);
    assert_eq!(row.sex, "male");
    assert_eq!(row.channel, "whatsapp");
    // 11:35:42 in São Paulo (UTC-3) is 14:35:42 UTC.
    assert_eq!(row.attended_at, Utc.with_ymd_and_hms(2021, 8, 2, 14, 35, 42).unwrap());
    assert_eq!(row.attended_on, NaiveDate::from_ymd_opt(2021, 8, 2).unwrap());
    assert!(row.headache);
    assert!(!row.other_symptoms);
    assert!(!row.covid_contact);
    assert_eq!(row.covid_test, "negative");
    assert_eq!(row.service_score, 10);
    assert!(row.solved);
    assert_eq!(row.raw, example(), "the raw record is kept beside the normalized one");
    let services: Vec<(i32, String)> = attendance_service::Entity::find()
        .filter(attendance_service::Column::AttendanceId.eq(row.id))
        .order_by_asc(attendance_service::Column::Position)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.position, s.service))
        .collect();
    assert_eq!(services, [(1, "agendar consulta".to_owned()), (2, "informacoes".to_owned())]);
}

async fn dates_are_read_in_the_configured_time_zone(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.timezone = chrono_tz::UTC).await;
    publish(&app, &[(Some("utc-1"), json_body(&example()))]).await;
    wait_for_key(&app, "utc-1").await;
    let row = attendance::Entity::find().one(&app.db).await.unwrap().unwrap();
    assert_eq!(row.attended_at, Utc.with_ymd_and_hms(2021, 8, 2, 11, 35, 42).unwrap());
}

async fn each_kind_of_bad_record_is_dead_lettered_with_its_reasons(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut missing = example();
    missing.as_object_mut().unwrap().remove("date");
    let mut several = with("age", json!("-5"));
    several["solved"] = json!("?");
    several["channel"] = json!("");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not-json", b"{\"name\": \"Geralt\",".to_vec(), "record: is not JSON: EOF while parsing"),
        ("not-object", b"[\"Geralt\"]".to_vec(), "record: is not a JSON object"),
        (
            "document",
            json_body(&with("document", json!("123.456.789"))),
            "document: \"123.456.789\" is not a CPF of 11 digits (12345678901 or 123.456.789-01)",
        ),
        (
            "age",
            json_body(&with("age", json!("quarenta"))),
            "age: \"quarenta\" is not a whole number",
        ),
        (
            "score",
            json_body(&with("serviceScore", json!("11"))),
            "serviceScore: 11 is out of range 0–10",
        ),
        (
            "date",
            json_body(&with("date", json!("2021-08-02T11:35:42"))),
            "date: \"2021-08-02T11:35:42\" is not a date as dd/mm/yyyy HH:MM:SS",
        ),
        (
            "yes-no",
            json_body(&with("headache", json!("talvez"))),
            "headache: \"talvez\" is not sim or nao",
        ),
        (
            "covid",
            json_body(&with("covidTest", json!("inconclusivo"))),
            "covidTest: \"inconclusivo\" is not positivo, negativo or nao testado",
        ),
        (
            "sex",
            json_body(&with("sex", json!("x"))),
            "sex: \"x\" is not masculino, feminino or outro",
        ),
        ("missing", json_body(&missing), "date: is missing"),
        ("services", json_body(&with("services", json!({}))), "services: lists no service"),
        (
            "several",
            json_body(&several),
            "age: -5 is out of range 0–130; channel: is empty; solved: \"?\" is not sim or nao",
        ),
    ];
    let mut batch: Vec<(Option<&str>, Vec<u8>)> =
        cases.iter().map(|(id, body, _)| (Some(*id), body.clone())).collect();
    // A good record among them is loaded: one bad record does not hold back its batch.
    batch.insert(3, (Some("good-1"), json_body(&example())));
    batch.push((Some("good-2"), json_body(&with("name", json!("Yennefer")))));
    publish(&app, &batch).await;
    wait_for_key(&app, "good-2").await;
    let dead = dead_letters(&app, cases.len()).await;
    for (id, _, reason) in &cases {
        let actual = dead.get(*id).unwrap_or_else(|| panic!("{id} was not dead-lettered"));
        assert!(actual.starts_with(reason), "{id}: {actual:?} should start with {reason:?}");
    }
    assert_eq!(dead.len(), cases.len());
    assert_eq!(rows(&app).await, 2, "only the good records are loaded, none half-loaded");
    assert_eq!(attendance_service::Entity::find().count(&app.db).await.unwrap(), 4);
}

/// A STOMP frame's headers.
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// The EloGroup case: a producer moved from ActiveMQ sends its records over STOMP to
/// `/topic/attendance` (which RabbitMQ's STOMP plugin publishes to `amq.topic`), logging in with
/// a publisher's user and naming the vhost in the `host` header.
async fn records_sent_over_stomp_to_topic_attendance_are_loaded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unique = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let (user, password) = (format!("platform-{unique}"), format!("pw-{unique}"));
    app.vhost.create_user(&user, &password, &publisher_permissions()).await.unwrap();
    let mut stomp = StompClient::connect(&user, &password, Some(app.vhost.name())).await.unwrap();
    let json = ("content-type", "application/json");
    let persistent = ("persistent", "true");
    // The original's shape, with the header the plugin maps to the AMQP message-id.
    let sends: [(&str, Headers, Value); 4] = [
        ("/topic/attendance", vec![json, persistent, ("amqp-message-id", "stomp-1")], example()),
        // No id and no content type, as many ActiveMQ producers send: keyed by its hash.
        ("/topic/attendance.whatsapp", vec![persistent], with("name", json!("Yennefer"))),
        (
            "/topic/attendance",
            vec![json, ("amqp-message-id", "stomp-bad")],
            with("age", json!("quarenta")),
        ),
        (
            "/exchange/botline.attendance/attendance.telefone",
            vec![json, persistent, ("amqp-message-id", "stomp-3")],
            with("name", json!("Ciri")),
        ),
    ];
    for (destination, headers, record) in &sends {
        stomp
            .send(destination, headers, &json_body(record))
            .await
            .unwrap_or_else(|e| panic!("{destination}: {e}"));
    }
    stomp.disconnect().await.unwrap();
    wait_for_key(&app, "stomp-3").await;
    let row = attendance::Entity::find()
        .filter(attendance::Column::MessageKey.eq("stomp-1"))
        .one(&app.db)
        .await
        .unwrap()
        .expect("the record sent to /topic/attendance is loaded, keyed by amqp-message-id");
    assert_eq!((row.name.as_str(), row.channel.as_str()), ("Geralt", "whatsapp"));
    assert_eq!(row.raw, example(), "kept as the producer sent it");
    let hashed = attendance::Entity::find()
        .filter(attendance::Column::Name.eq("Yennefer"))
        .one(&app.db)
        .await
        .unwrap()
        .expect("the record sent to /topic/attendance.whatsapp is loaded");
    assert!(hashed.message_key.starts_with("sha256:"), "{}", hashed.message_key);
    assert_eq!(rows(&app).await, 3);
    let dead = dead_letters(&app, 1).await;
    assert_eq!(dead["stomp-bad"], "age: \"quarenta\" is not a whole number");
}

/// A record of 20 MB (an unknown field) is over the size limit: dead-lettered with its size,
/// never parsed nor stored, and the records around it are loaded.
async fn an_oversized_record_is_dead_lettered_and_the_others_keep_flowing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let huge = json_body(&with("anexo", json!("x".repeat(20 * 1024 * 1024))));
    publish(
        &app,
        &[
            (Some("before"), json_body(&example())),
            (Some("huge"), huge.clone()),
            (Some("after"), json_body(&with("name", json!("Yennefer")))),
        ],
    )
    .await;
    wait_for_key(&app, "after").await;
    assert_eq!(rows(&app).await, 2, "the huge record is not loaded");
    let dead = app.vhost.dead_letters(1).await.unwrap();
    assert_eq!(dead[0].message_id.as_deref(), Some("huge"));
    assert_eq!(
        dead[0].reason.as_deref(),
        Some(
            format!(
                "record: is {} bytes, more than the 65536 a record may have (--etl-max-record-bytes)",
                huge.len()
            )
            .as_str()
        )
    );
    assert_eq!(dead[0].data.len(), huge.len(), "the dead letter keeps the record for inspection");
    publish(&app, &[(Some("later"), json_body(&with("name", json!("Ciri"))))]).await;
    wait_for_key(&app, "later").await;
}

/// `--etl-max-record-bytes` sets the limit: a record of exactly the limit is loaded, one byte more
/// is not.
async fn the_size_limit_is_a_setting(backend: Backend) {
    let fits = json_body(&with("name", json!("Ciri")));
    let limit = fits.len() as u64;
    let app = TestApp::spawn_with(backend, |config| config.etl_max_record_bytes = limit).await;
    let over = json_body(&with("name", json!("Ciria")));
    assert_eq!(over.len() as u64, limit + 1);
    publish(&app, &[(Some("over"), over), (Some("fits"), fits)]).await;
    wait_for_key(&app, "fits").await;
    assert_eq!(rows(&app).await, 1);
    let dead = dead_letters(&app, 1).await;
    assert!(dead["over"].starts_with(&format!("record: is {} bytes", limit + 1)), "{dead:?}");
}

async fn duplicated_and_redelivered_records_are_loaded_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other = with("name", json!("Ciri"));
    // The same content, keys in another order and spaced out: the same canonical record.
    let reordered = r#"{ "solved":"sim", "serviceScore":"10", "covidTest":"negativo",
        "covidContact":"nao", "otherSymptoms":"nao", "headache":"sim",
        "date":"02/08/2021 11:35:42", "services":{"2":"informacoes","1":"agendar consulta"},
        "channel":"whatsapp", "sex":"masculino", "age":"40", "document":"123.456.789-12",
        "name":"Ciri" }"#;
    publish(
        &app,
        &[
            (Some("dup-1"), json_body(&example())),
            (Some("dup-1"), json_body(&example())),
            (None, json_body(&other)),
            (None, json_body(&other)),
            (None, reordered.as_bytes().to_vec()),
            (Some("marker-1"), json_body(&with("name", json!("Vesemir")))),
        ],
    )
    .await;
    wait_for_key(&app, "marker-1").await;
    assert_eq!(rows(&app).await, 3, "dup-1, the hashed record and the marker");
    // Again, once the first copies are committed: a redelivery after a lost ack.
    publish(
        &app,
        &[
            (Some("dup-1"), json_body(&example())),
            (None, json_body(&other)),
            (Some("marker-2"), json_body(&with("name", json!("Lambert")))),
        ],
    )
    .await;
    wait_for_key(&app, "marker-2").await;
    assert_eq!(rows(&app).await, 4, "only the new marker");
    assert_eq!(
        attendance_service::Entity::find().count(&app.db).await.unwrap(),
        8,
        "no services twice"
    );
    let hashed = attendance::Entity::find()
        .filter(attendance::Column::Name.eq("Ciri"))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert!(hashed.message_key.starts_with("sha256:"), "{}", hashed.message_key);
    // The same content under two message ids is two attendances: the id is what identifies.
    publish(&app, &[(Some("dup-2"), json_body(&example()))]).await;
    wait_for_key(&app, "dup-2").await;
    assert_eq!(rows(&app).await, 5);
}

async fn ten_thousand_records_published_fast_are_all_loaded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let options = ProduceOptions {
        count: 10_000,
        bad_ratio: 0.05,
        seed: 2021,
        publishers: 4,
        timezone: chrono_tz::America::Sao_Paulo,
        queue_type: Default::default(),
    };
    let started = Instant::now();
    let report = produce(&app.vhost.amqp_url(), &options, CancellationToken::new()).await.unwrap();
    assert_eq!((report.good, report.bad), (9_500, 500));
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let loaded = rows(&app).await;
        if loaded >= report.good {
            assert_eq!(loaded, report.good, "no record loaded twice");
            break;
        }
        assert!(Instant::now() < deadline, "{loaded} of {} loaded within 240 s", report.good);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "{backend:?}: published 10000 records in {:.2} s ({:.0}/s); all {} good ones loaded {:.2} s after the first publish ({:.0} records/s)",
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.good,
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
    let dead = dead_letters(&app, 500).await;
    assert_eq!(dead.len(), 500);
    let services = attendance_service::Entity::find().count(&app.db).await.unwrap();
    assert!(services >= report.good, "every record has a service or more: {services}");
}

/// The hand-computed data set of the report test: 8 attendances from 1 to 3 August 2021
/// (São Paulo days), and two outside that range.
fn report_records() -> Vec<Value> {
    #[allow(clippy::too_many_arguments)]
    fn record(
        date: &str,
        channel: &str,
        services: &[&str],
        score: u8,
        solved: bool,
        headache: bool,
        other: bool,
        contact: bool,
        covid: &str,
    ) -> Value {
        let yes = |b: bool| if b { "sim" } else { "nao" };
        let services: serde_json::Map<String, Value> =
            services.iter().enumerate().map(|(i, s)| ((i + 1).to_string(), json!(s))).collect();
        json!({"name":"Paciente","document":"12345678901","age":"30","sex":"feminino",
            "channel":channel,"services":services,"date":date,"headache":yes(headache),
            "otherSymptoms":yes(other),"covidContact":yes(contact),"covidTest":covid,
            "serviceScore":score.to_string(),"solved":yes(solved)})
    }
    #[rustfmt::skip]
    let records = vec![
        record("01/08/2021 09:00:00", "whatsapp", &["agendar consulta", "informacoes"], 10, true, true, false, false, "negativo"),
        // 02:30 UTC on the 2nd, but the 1st in São Paulo: reported on the 1st.
        record("01/08/2021 23:30:00", "whatsapp", &["informacoes"], 8, true, false, false, true, "positivo"),
        record("02/08/2021 10:00:00", "telefone", &["agendar consulta"], 6, false, true, true, false, "nao testado"),
        record("02/08/2021 11:00:00", "telefone", &["segunda via"], 9, true, false, false, false, "negativo"),
        record("02/08/2021 12:00:00", "webchat", &["resultado de exame", "informacoes"], 4, false, true, true, true, "positivo"),
        record("03/08/2021 08:00:00", "telegram", &["informacoes"], 7, true, false, false, false, "negativo"),
        record("03/08/2021 09:00:00", "whatsapp", &["agendar consulta"], 10, true, false, true, false, "nao testado"),
        record("03/08/2021 20:00:00", "app", &["segunda via", "agendar consulta"], 2, false, true, false, true, "negativo"),
        // Outside 1–3 August.
        record("31/07/2021 23:59:59", "whatsapp", &["informacoes"], 0, false, false, false, false, "positivo"),
        record("05/08/2021 10:00:00", "email", &["segunda via"], 5, true, false, false, false, "negativo"),
    ];
    records
}

#[track_caller]
fn close(actual: &Value, expected: f64) {
    let actual = actual.as_f64().unwrap_or_else(|| panic!("not a number: {actual}"));
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

async fn the_report_matches_a_hand_computed_data_set(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let records = report_records();
    let ids: Vec<String> = (0..records.len()).map(|i| format!("report-{i}")).collect();
    let batch: Vec<(Option<&str>, Vec<u8>)> =
        ids.iter().zip(&records).map(|(id, r)| (Some(id.as_str()), json_body(r))).collect();
    publish(&app, &batch).await;
    wait_for_key(&app, ids.last().unwrap()).await;
    assert_eq!(rows(&app).await, 10);

    let (status, r) = app.get("/api/v1/reports/attendance?from=2021-08-01&to=2021-08-03").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["from"], "2021-08-01");
    assert_eq!(r["to"], "2021-08-03");
    assert_eq!(r["attendances"], 8);
    close(&r["average_score"], 56.0 / 8.0);
    assert_eq!(r["solved"]["count"], 5);
    close(&r["solved"]["share"], 5.0 / 8.0);
    assert_eq!(r["headache"]["count"], 4);
    close(&r["headache"]["share"], 0.5);
    assert_eq!(r["other_symptoms"]["count"], 3);
    close(&r["other_symptoms"]["share"], 3.0 / 8.0);
    assert_eq!(r["covid_contact"]["count"], 3);
    close(&r["covid_contact"]["share"], 3.0 / 8.0);
    assert_eq!(r["covid_tests"]["positive"], 2);
    assert_eq!(r["covid_tests"]["negative"], 4);
    assert_eq!(r["covid_tests"]["not_tested"], 2);
    close(&r["covid_tests"]["positivity"], 2.0 / 6.0);

    let channels: Vec<(&str, i64)> = r["by_channel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["channel"].as_str().unwrap(), c["attendances"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        channels,
        [("whatsapp", 3), ("phone", 2), ("app", 1), ("other", 1), ("webchat", 1)],
        "busiest first, then by name"
    );
    let whatsapp = &r["by_channel"][0];
    close(&whatsapp["average_score"], 28.0 / 3.0);
    close(&whatsapp["solved"]["share"], 1.0);
    let phone = &r["by_channel"][1];
    close(&phone["average_score"], 7.5);
    close(&phone["solved"]["share"], 0.5);
    assert!(phone["covid_tests"]["positivity"].is_number());

    let services: Vec<(&str, i64)> = r["by_service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap(), s["attendances"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        services,
        [
            ("agendar consulta", 4),
            ("informacoes", 4),
            ("segunda via", 2),
            ("resultado de exame", 1)
        ]
    );
    close(&r["by_service"][0]["share"], 0.5);
    close(&r["by_service"][3]["share"], 0.125);

    let days: Vec<(&str, i64)> = r["by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["day"].as_str().unwrap(), d["attendances"].as_i64().unwrap()))
        .collect();
    assert_eq!(days, [("2021-08-01", 2), ("2021-08-02", 3), ("2021-08-03", 3)]);
    let [first, second, third] = [&r["by_day"][0], &r["by_day"][1], &r["by_day"][2]];
    close(&first["average_score"], 9.0);
    close(&first["solved"]["share"], 1.0);
    close(&first["covid_tests"]["positivity"], 0.5);
    close(&second["average_score"], 19.0 / 3.0);
    close(&second["solved"]["share"], 1.0 / 3.0);
    close(&second["covid_tests"]["positivity"], 0.5);
    close(&third["average_score"], 19.0 / 3.0);
    close(&third["solved"]["share"], 2.0 / 3.0);
    close(&third["covid_tests"]["positivity"], 0.0);

    // Open ends.
    let (_, all) = app.get("/api/v1/reports/attendance").await;
    assert_eq!(all["attendances"], 10);
    assert!(all["from"].is_null() && all["to"].is_null());
    close(&all["average_score"], 61.0 / 10.0);
    let (_, later) = app.get("/api/v1/reports/attendance?from=2021-08-02").await;
    assert_eq!(later["attendances"], 7);
    let (_, earlier) = app.get("/api/v1/reports/attendance?to=2021-07-31&from=").await;
    assert_eq!(earlier["attendances"], 1);
    assert_eq!(earlier["by_day"][0]["day"], "2021-07-31");

    // The chart's series: every day of the range, 4 August (no attendance) at zero.
    let (_, week) = app.get("/api/v1/reports/attendance?from=2021-07-31&to=2021-08-06").await;
    let series: Vec<(&str, i64, &str)> = week["day_series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let label = d["label"].as_str().unwrap();
            (d["day"].as_str().unwrap(), d["attendances"].as_i64().unwrap(), label)
        })
        .collect();
    assert_eq!(
        series,
        [
            ("2021-07-31", 1, "07-31"),
            ("2021-08-01", 2, "08-01"),
            ("2021-08-02", 3, "08-02"),
            ("2021-08-03", 3, "08-03"),
            ("2021-08-04", 0, "08-04"),
            ("2021-08-05", 1, "08-05"),
            ("2021-08-06", 0, "08-06"),
        ]
    );
    assert_eq!(
        week["by_day"].as_array().unwrap().len(),
        5,
        "by_day keeps the days with attendances"
    );
    assert_eq!(all["day_series"].as_array().unwrap().len(), 6, "open ends: 31 July to 5 August");
    let (_, new_year) = app.get("/api/v1/reports/attendance?from=2020-12-31&to=2021-08-01").await;
    let new_year = new_year["day_series"].as_array().unwrap();
    assert_eq!(new_year[0]["label"], "2020-12-31", "the range crosses a year: labels carry it");
    assert_eq!(new_year.last().unwrap()["tick"], true, "the last day is labelled");

    // Nothing in range: zeros, and null where a ratio has no denominator.
    let (status, none) = app.get("/api/v1/reports/attendance?from=2030-01-01&to=2030-01-31").await;
    assert_eq!(status, 200);
    assert_eq!(none["attendances"], 0);
    assert!(none["average_score"].is_null());
    assert!(none["solved"]["share"].is_null());
    assert!(none["covid_tests"]["positivity"].is_null());
    assert_eq!(none["by_channel"], json!([]));
    assert_eq!(none["by_service"], json!([]));
    assert_eq!(none["by_day"], json!([]));
    assert_eq!(none["day_series"], json!([]), "no attendances: no chart");
}

async fn report_parameters_are_checked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_error(
        &app.get("/api/v1/reports/attendance?from=2021-13-01").await,
        400,
        "invalid_parameter",
        Some("from"),
    );
    assert_error(
        &app.get("/api/v1/reports/attendance?to=01/08/2021").await,
        400,
        "invalid_parameter",
        Some("to"),
    );
    assert_error(
        &app.get("/api/v1/reports/attendance?from=2021-08-03&to=2021-08-01").await,
        400,
        "invalid_parameter",
        Some("to"),
    );
    let page = app.client.get(app.url("/reports/attendance")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/v1/reports/attendance"), "the page reads the JSON report");
    for external in ["<script src", "stylesheet", "cdn", "import "] {
        assert!(!html.contains(external), "nothing fetched from elsewhere: {external}");
    }
    let (_, openapi) = app.get("/api/v1/openapi.json").await;
    assert!(openapi["paths"]["/api/v1/reports/attendance"]["get"].is_object());
}

on_every_backend!(
    the_example_record_is_loaded_normalized,
    dates_are_read_in_the_configured_time_zone,
    each_kind_of_bad_record_is_dead_lettered_with_its_reasons,
    records_sent_over_stomp_to_topic_attendance_are_loaded,
    an_oversized_record_is_dead_lettered_and_the_others_keep_flowing,
    the_size_limit_is_a_setting,
    duplicated_and_redelivered_records_are_loaded_once,
    ten_thousand_records_published_fast_are_all_loaded,
    the_report_matches_a_hand_computed_data_set,
    report_parameters_are_checked,
);
