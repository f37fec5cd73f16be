//! The attendance record, parsed: the customer-service platform's JSON (every value a string)
//! becomes a validated [`Attendance`], or the list of everything wrong with it. Pure: no IO, the
//! time zone of the platform's dates is an argument.

use std::fmt;

use chrono::{DateTime, Datelike as _, LocalResult, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// The format of the platform's dates: day/month/year hours:minutes:seconds, local time.
pub const DATE_FORMAT: &str = "%d/%m/%Y %H:%M:%S";

/// The default of the largest record loaded, in bytes (`--etl-max-record-bytes`): the platform's
/// records are about 400 bytes, so 64 KiB leaves room for long names and many services while a
/// record carrying megabytes of anything is refused rather than stored whole.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The longest name or service kept (characters); longer ones are refused, not cut.
const MAX_TEXT: usize = 200;
/// The most services one attendance may list.
const MAX_SERVICES: usize = 50;

/// The customer's sex as the platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    /// `masculino` or `m`.
    Male,
    /// `feminino` or `f`.
    Female,
    /// `outro`.
    Other,
}

impl Sex {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
        }
    }

    fn parse(text: &str) -> Result<Sex, String> {
        match fold(text).as_str() {
            "masculino" | "m" => Ok(Sex::Male),
            "feminino" | "f" => Ok(Sex::Female),
            "outro" => Ok(Sex::Other),
            _ => Err(format!("{} is not masculino, feminino or outro", quote(text))),
        }
    }
}

/// Where the attendance happened. Channels the platform may add later land in [`Channel::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// `whatsapp`.
    Whatsapp,
    /// `phone` or `telefone`.
    Phone,
    /// `webchat` or `chat`.
    Webchat,
    /// `email` or `e-mail`.
    Email,
    /// `sms`.
    Sms,
    /// `app`.
    App,
    /// Anything else.
    Other,
}

impl Channel {
    /// Every channel, in display order.
    pub const ALL: [Channel; 7] = [
        Channel::Whatsapp,
        Channel::Phone,
        Channel::Webchat,
        Channel::Email,
        Channel::Sms,
        Channel::App,
        Channel::Other,
    ];

    /// The stored name (also the last part of the producer's routing key).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Phone => "phone",
            Channel::Webchat => "webchat",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::App => "app",
            Channel::Other => "other",
        }
    }

    /// The channel a platform name means; unknown names are [`Channel::Other`].
    pub fn parse(text: &str) -> Channel {
        let name: String = fold(text).chars().filter(|c| !matches!(c, ' ' | '-' | '_')).collect();
        match name.as_str() {
            "whatsapp" => Channel::Whatsapp,
            "phone" | "telefone" => Channel::Phone,
            "webchat" | "chat" => Channel::Webchat,
            "email" => Channel::Email,
            "sms" => Channel::Sms,
            "app" => Channel::App,
            _ => Channel::Other,
        }
    }
}

/// The outcome of the customer's covid test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CovidTest {
    /// `positivo`.
    Positive,
    /// `negativo`.
    Negative,
    /// `nao testado` (or `nao`, `nao realizado`): no test.
    NotTested,
}

impl CovidTest {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CovidTest::Positive => "positive",
            CovidTest::Negative => "negative",
            CovidTest::NotTested => "not_tested",
        }
    }

    fn parse(text: &str) -> Result<CovidTest, String> {
        let words: Vec<String> = fold(text)
            .split([' ', '-', '_'])
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        match words.join(" ").as_str() {
            "positivo" | "positive" => Ok(CovidTest::Positive),
            "negativo" | "negative" => Ok(CovidTest::Negative),
            "nao testado" | "nao realizado" | "nao fez" | "nao" | "sem teste" | "not tested" => {
                Ok(CovidTest::NotTested)
            }
            _ => Err(format!("{} is not positivo, negativo or nao testado", quote(text))),
        }
    }
}

/// One service the customer asked for, at the position the platform numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The platform's key ("1", "2", …) as a number.
    pub position: u32,
    /// What was asked, trimmed and lowercased so the reports group equal services.
    pub name: String,
}

/// A validated, normalized attendance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    /// The customer's name, spaces collapsed.
    pub name: String,
    /// The CPF: 11 digits, punctuation removed.
    pub document: String,
    /// Years, 0–130.
    pub age: i32,
    /// The customer's sex.
    pub sex: Sex,
    /// Where the attendance happened.
    pub channel: Channel,
    /// What the customer asked for, by position.
    pub services: Vec<Service>,
    /// When, in UTC.
    pub attended_at: DateTime<Utc>,
    /// The day as the platform recorded it (in its time zone).
    pub attended_on: NaiveDate,
    /// Whether the customer has a headache.
    pub headache: bool,
    /// Whether the customer has other symptoms.
    pub other_symptoms: bool,
    /// Whether the customer met someone with covid.
    pub covid_contact: bool,
    /// The customer's covid test.
    pub covid_test: CovidTest,
    /// The customer's score of the service, 0–10.
    pub service_score: i32,
    /// Whether the customer's request was solved.
    pub solved: bool,
}

/// One thing wrong with a record: the platform's field name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as the platform names it (`serviceScore`), or `record` for the whole.
    pub field: &'static str,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of a record, as one dead-letter reason: `age: …; date: …`.
pub fn reasons(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ")
}

/// Checks a message body's size, `len` bytes, against `limit`, before anything reads it: a record
/// over the limit is refused whole (its fields are not looked at, unknown ones included).
pub fn check_size(len: usize, limit: u64) -> Result<(), Problem> {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    if len <= limit {
        return Ok(());
    }
    Err(Problem {
        field: "record",
        message: format!(
            "is {len} bytes, more than the {limit} a record may have (--etl-max-record-bytes)"
        ),
    })
}

/// Decodes a message body: it must be a JSON object.
pub fn decode(body: &[u8]) -> Result<Value, Problem> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(Problem { field: "record", message: "is not a JSON object".into() }),
        Err(err) => Err(Problem { field: "record", message: format!("is not JSON: {err}") }),
    }
}

/// Parses a raw record, collecting every problem rather than stopping at the first. `tz` is the
/// time zone of the platform's dates.
pub fn parse_record(raw: &Value, tz: Tz) -> Result<Attendance, Vec<Problem>> {
    let Some(record) = raw.as_object() else {
        return Err(vec![Problem { field: "record", message: "is not a JSON object".into() }]);
    };
    let mut fields = Fields { record, problems: Vec::new() };
    if contains_nul(raw) {
        // PostgreSQL refuses NUL in text and jsonb: such a record could never be stored.
        fields.problem("record", "contains a NUL character".into());
    }
    let name = fields.parse("name", parse_name);
    let document = fields.parse("document", parse_document);
    let age = fields.parse("age", |t| parse_integer(t, 0, 130));
    let sex = fields.parse("sex", Sex::parse);
    let channel = fields.parse("channel", |t| Ok(Channel::parse(t)));
    let services = fields.services();
    let date = fields.parse("date", |t| parse_date(t, tz));
    let headache = fields.parse("headache", parse_yes_no);
    let other_symptoms = fields.parse("otherSymptoms", parse_yes_no);
    let covid_contact = fields.parse("covidContact", parse_yes_no);
    let covid_test = fields.parse("covidTest", CovidTest::parse);
    let service_score = fields.parse("serviceScore", |t| parse_integer(t, 0, 10));
    let solved = fields.parse("solved", parse_yes_no);
    let (
        Some(name),
        Some(document),
        Some(age),
        Some(sex),
        Some(channel),
        Some(services),
        Some((attended_at, attended_on)),
        Some(headache),
        Some(other_symptoms),
        Some(covid_contact),
        Some(covid_test),
        Some(service_score),
        Some(solved),
    ) = (
        name,
        document,
        age,
        sex,
        channel,
        services,
        date,
        headache,
        other_symptoms,
        covid_contact,
        covid_test,
        service_score,
        solved,
    )
    else {
        return Err(fields.problems);
    };
    if !fields.problems.is_empty() {
        return Err(fields.problems);
    }
    Ok(Attendance {
        name,
        document,
        age,
        sex,
        channel,
        services,
        attended_at,
        attended_on,
        headache,
        other_symptoms,
        covid_contact,
        covid_test,
        service_score,
        solved,
    })
}

/// The key that makes loading idempotent: the message id when the publisher set one, otherwise
/// `sha256:<hex>` of the record's canonical JSON (keys sorted, no spaces), so the same record
/// published twice without an id is loaded once.
pub fn message_key(message_id: Option<&str>, raw: &Value) -> String {
    match message_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => {
            let digest = Sha256::digest(canonical_json(raw).as_bytes());
            let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("sha256:{hex}")
        }
    }
}

/// `value` as JSON with object keys sorted at every level and no whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(key) {
                    write_canonical(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Reads the fields of one record and keeps every problem met.
struct Fields<'a> {
    record: &'a Map<String, Value>,
    problems: Vec<Problem>,
}

impl Fields<'_> {
    fn problem(&mut self, field: &'static str, message: String) {
        self.problems.push(Problem { field, message });
    }

    /// The field as trimmed text (numbers and booleans as written), or a problem.
    fn text(&mut self, field: &'static str) -> Option<String> {
        let text = match self.record.get(field) {
            None | Some(Value::Null) => {
                self.problem(field, "is missing".into());
                return None;
            }
            Some(Value::String(text)) => text.trim().to_owned(),
            Some(value @ (Value::Number(_) | Value::Bool(_))) => value.to_string(),
            Some(Value::Array(_) | Value::Object(_)) => {
                self.problem(field, "must be a string".into());
                return None;
            }
        };
        if text.is_empty() {
            self.problem(field, "is empty".into());
            return None;
        }
        Some(text)
    }

    fn parse<T>(
        &mut self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(field)?;
        parse(&text).map_err(|message| self.problem(field, message)).ok()
    }

    /// `services`: an object of position → service (`{"1":"…","2":"…"}`), or an array.
    fn services(&mut self) -> Option<Vec<Service>> {
        const FIELD: &str = "services";
        let entries: Vec<(String, &Value)> = match self.record.get(FIELD) {
            None | Some(Value::Null) => {
                self.problem(FIELD, "is missing".into());
                return None;
            }
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| ((i + 1).to_string(), v)).collect()
            }
            Some(_) => {
                self.problem(FIELD, "must be an object of numbered services".into());
                return None;
            }
        };
        if entries.is_empty() {
            self.problem(FIELD, "lists no service".into());
            return None;
        }
        if entries.len() > MAX_SERVICES {
            self.problem(
                FIELD,
                format!("lists {} services, more than {MAX_SERVICES}", entries.len()),
            );
            return None;
        }
        let before = self.problems.len();
        let mut services = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let position = match key.trim().parse::<u32>() {
                Ok(position) if position >= 1 => Some(position),
                _ => {
                    self.problem(FIELD, format!("key {} is not a position (1, 2, …)", quote(&key)));
                    None
                }
            };
            let name = match value {
                Value::String(text) => match parse_text(text) {
                    Ok(name) => Some(name.to_lowercase()),
                    Err(message) => {
                        self.problem(FIELD, format!("service {}: {message}", quote(&key)));
                        None
                    }
                },
                _ => {
                    self.problem(FIELD, format!("service {} must be a string", quote(&key)));
                    None
                }
            };
            if let (Some(position), Some(name)) = (position, name) {
                services.push(Service { position, name });
            }
        }
        if self.problems.len() > before {
            return None;
        }
        services.sort_by_key(|s| s.position);
        if services.windows(2).any(|pair| pair[0].position == pair[1].position) {
            // "1" and "01" are both position 1.
            self.problem(FIELD, "two services share a position".into());
            return None;
        }
        Some(services)
    }
}

fn parse_text(text: &str) -> Result<String, String> {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return Err("is empty".into());
    }
    if collapsed.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    let length = collapsed.chars().count();
    if length > MAX_TEXT {
        return Err(format!("is {length} characters long, more than {MAX_TEXT}"));
    }
    Ok(collapsed)
}

fn parse_name(text: &str) -> Result<String, String> {
    let name = parse_text(text)?;
    if !name.chars().any(char::is_alphabetic) {
        return Err(format!("{} has no letter", quote(text)));
    }
    Ok(name)
}

/// A CPF, as `12345678901` or `123.456.789-01`; the digits are kept.
fn parse_document(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let plain = bytes.len() == 11 && bytes.iter().all(u8::is_ascii_digit);
    let masked = bytes.len() == 14
        && bytes.iter().enumerate().all(|(i, b)| match i {
            3 | 7 => *b == b'.',
            11 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    if plain || masked {
        Ok(text.chars().filter(char::is_ascii_digit).collect())
    } else {
        Err(format!("{} is not a CPF of 11 digits (12345678901 or 123.456.789-01)", quote(text)))
    }
}

fn parse_integer(text: &str, min: i32, max: i32) -> Result<i32, String> {
    let value: i64 = text.parse().map_err(|_| format!("{} is not a whole number", quote(text)))?;
    i32::try_from(value)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| format!("{value} is out of range {min}–{max}"))
}

fn parse_yes_no(text: &str) -> Result<bool, String> {
    match fold(text).as_str() {
        "sim" | "s" | "true" => Ok(true),
        "nao" | "n" | "false" => Ok(false),
        _ => Err(format!("{} is not sim or nao", quote(text))),
    }
}

/// A local `dd/mm/yyyy HH:MM:SS` in `tz`, as UTC and as the local day.
fn parse_date(text: &str, tz: Tz) -> Result<(DateTime<Utc>, NaiveDate), String> {
    let local = NaiveDateTime::parse_from_str(text, DATE_FORMAT)
        .map_err(|_| format!("{} is not a date as dd/mm/yyyy HH:MM:SS", quote(text)))?;
    if !(1970..=2100).contains(&local.year()) {
        return Err(format!("{} is not a plausible year", local.year()));
    }
    let at = match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => at,
        // The hour repeated when the clocks went back: the first of the two.
        LocalResult::Ambiguous(earliest, _) => earliest,
        LocalResult::None => {
            return Err(format!(
                "{} does not exist in {tz} (the clocks jumped forward)",
                quote(text)
            ));
        }
    };
    Ok((at.with_timezone(&Utc), local.date()))
}

/// Lowercase, Portuguese accents removed: `Não` → `nao`.
fn fold(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'á' | 'à' | 'â' | 'ã' => 'a',
            'é' | 'ê' => 'e',
            'í' => 'i',
            'ó' | 'ô' | 'õ' => 'o',
            'ú' | 'ü' => 'u',
            'ç' => 'c',
            c => c,
        })
        .collect()
}

/// `text` quoted for a reason, cut to 40 characters.
fn quote(text: &str) -> String {
    let mut cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    Value::String(cut).to_string()
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn example() -> Value {
        json!({"name":"Geralt","document":"123.456.789-12","age":"40","sex":"masculino",
            "channel":"whatsapp","services":{"1":"agendar consulta","2":"informacoes"},
            "date":"02/08/2021 11:35:42","headache":"sim","otherSymptoms":"nao",
            "covidContact":"nao","covidTest":"negativo","serviceScore":"10","solved":"sim"})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut record = example();
        record[field] = value;
        record
    }

    fn problems(raw: &Value) -> Vec<String> {
        match parse_record(raw, chrono_tz::America::Sao_Paulo) {
            Ok(attendance) => panic!("accepted: {attendance:?}"),
            Err(problems) => problems.iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn the_example_record_is_normalized() {
        let attendance = parse_record(&example(), chrono_tz::America::Sao_Paulo).unwrap();
        assert_eq!(
            attendance,
            Attendance {
                name: "Geralt".into(),
                document: "12345678912".into(),
                age: 40,
                sex: Sex::Male,
                channel: Channel::Whatsapp,
                services: vec![
                    Service { position: 1, name: "agendar consulta".into() },
                    Service { position: 2, name: "informacoes".into() },
                ],
                // São Paulo is UTC-3 (no daylight saving time since 2019).
                attended_at: Utc.with_ymd_and_hms(2021, 8, 2, 14, 35, 42).unwrap(),
                attended_on: NaiveDate::from_ymd_opt(2021, 8, 2).unwrap(),
                headache: true,
                other_symptoms: false,
                covid_contact: false,
                covid_test: CovidTest::Negative,
                service_score: 10,
                solved: true,
            }
        );
    }

    #[test]
    fn the_time_zone_is_an_argument() {
        let utc = parse_record(&example(), chrono_tz::UTC).unwrap();
        assert_eq!(utc.attended_at, Utc.with_ymd_and_hms(2021, 8, 2, 11, 35, 42).unwrap());
        // Daylight saving time in São Paulo, January 2018: UTC-2.
        let summer = with("date", json!("15/01/2018 10:00:00"));
        let summer = parse_record(&summer, chrono_tz::America::Sao_Paulo).unwrap();
        assert_eq!(summer.attended_at, Utc.with_ymd_and_hms(2018, 1, 15, 12, 0, 0).unwrap());
    }

    #[test]
    fn a_local_time_the_clocks_skipped_is_refused_and_a_repeated_one_is_the_first() {
        // 4 November 2018, 00:00 → 01:00 in São Paulo.
        assert_eq!(
            problems(&with("date", json!("04/11/2018 00:30:00"))),
            [
                "date: \"04/11/2018 00:30:00\" does not exist in America/Sao_Paulo (the clocks jumped forward)"
            ]
        );
        // 17 February 2018, 00:00 → 23:00 the day before: 23:30 happened twice.
        let twice = with("date", json!("17/02/2018 23:30:00"));
        let twice = parse_record(&twice, chrono_tz::America::Sao_Paulo).unwrap();
        assert_eq!(twice.attended_at, Utc.with_ymd_and_hms(2018, 2, 18, 1, 30, 0).unwrap());
    }

    #[test]
    fn variants_the_platform_may_send_are_accepted() {
        let mut record = with("document", json!("12345678912"));
        record["sex"] = json!("F");
        record["channel"] = json!("Web Chat");
        record["headache"] = json!("NÃO");
        record["solved"] = json!("Sim");
        record["covidTest"] = json!("não testado");
        record["services"] = json!({"2": "  Segunda   Via ", "10": "x", "1": "informacoes"});
        record["age"] = json!(33);
        let attendance = parse_record(&record, chrono_tz::America::Sao_Paulo).unwrap();
        assert_eq!(attendance.document, "12345678912");
        assert_eq!(attendance.sex, Sex::Female);
        assert_eq!(attendance.channel, Channel::Webchat);
        assert!(!attendance.headache);
        assert!(attendance.solved);
        assert_eq!(attendance.covid_test, CovidTest::NotTested);
        assert_eq!(attendance.age, 33);
        let services: Vec<_> =
            attendance.services.iter().map(|s| (s.position, s.name.as_str())).collect();
        assert_eq!(services, [(1, "informacoes"), (2, "segunda via"), (10, "x")]);
        for (text, channel) in [
            ("telefone", Channel::Phone),
            ("phone", Channel::Phone),
            ("chat", Channel::Webchat),
            ("E-mail", Channel::Email),
            ("sms", Channel::Sms),
            ("app", Channel::App),
            ("telegram", Channel::Other),
        ] {
            assert_eq!(Channel::parse(text), channel, "{text}");
        }
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let mut record = example();
        record["document"] = json!("123.456.789");
        record["age"] = json!("quarenta");
        record["serviceScore"] = json!("11");
        record["date"] = json!("2021-08-02 11:35");
        record["headache"] = json!("talvez");
        record["covidTest"] = json!("inconclusivo");
        record["sex"] = json!("x");
        record.as_object_mut().unwrap().remove("solved");
        assert_eq!(
            problems(&record),
            [
                "document: \"123.456.789\" is not a CPF of 11 digits (12345678901 or 123.456.789-01)",
                "age: \"quarenta\" is not a whole number",
                "sex: \"x\" is not masculino, feminino or outro",
                "date: \"2021-08-02 11:35\" is not a date as dd/mm/yyyy HH:MM:SS",
                "headache: \"talvez\" is not sim or nao",
                "covidTest: \"inconclusivo\" is not positivo, negativo or nao testado",
                "serviceScore: 11 is out of range 0–10",
                "solved: is missing",
            ]
        );
    }

    #[test]
    fn broken_shapes_are_problems_not_panics() {
        assert_eq!(problems(&json!([1, 2])), ["record: is not a JSON object"]);
        assert_eq!(problems(&with("name", json!("   "))), ["name: is empty"]);
        assert_eq!(problems(&with("name", json!({"first": "G"}))), ["name: must be a string"]);
        assert_eq!(
            problems(&with("name", json!("x".repeat(201)))),
            ["name: is 201 characters long, more than 200"]
        );
        assert_eq!(problems(&with("age", json!("-1"))), ["age: -1 is out of range 0–130"]);
        assert_eq!(
            problems(&with("age", json!("99999999999"))),
            ["age: 99999999999 is out of range 0–130"]
        );
        assert_eq!(problems(&with("services", json!({}))), ["services: lists no service"]);
        assert_eq!(
            problems(&with("services", json!("consulta"))),
            ["services: must be an object of numbered services"]
        );
        assert_eq!(
            problems(&with("services", json!({"a": "x", "2": 3}))),
            [
                "services: service \"2\" must be a string",
                "services: key \"a\" is not a position (1, 2, …)",
            ]
        );
        assert_eq!(
            problems(&with("services", json!({"1": "a", "01": "b"}))),
            ["services: two services share a position"]
        );
        assert_eq!(
            problems(&with("date", json!("31/02/2021 10:00:00"))),
            ["date: \"31/02/2021 10:00:00\" is not a date as dd/mm/yyyy HH:MM:SS"]
        );
        assert_eq!(
            problems(&with("date", json!("01/01/1021 10:00:00"))),
            ["date: 1021 is not a plausible year"]
        );
        assert_eq!(
            problems(&with("extra", json!("a\u{0}b"))),
            ["record: contains a NUL character"]
        );
    }

    #[test]
    fn a_record_over_the_size_limit_is_refused_with_its_size() {
        assert_eq!(check_size(0, 10), Ok(()));
        assert_eq!(check_size(10, 10), Ok(()), "the limit itself is allowed");
        let over = check_size(11, 10).unwrap_err();
        assert_eq!(
            over.to_string(),
            "record: is 11 bytes, more than the 10 a record may have (--etl-max-record-bytes)"
        );
        let body = serde_json::to_vec(&example()).unwrap();
        assert!(check_size(body.len(), DEFAULT_MAX_RECORD_BYTES).is_ok());
        let mut huge = example();
        huge["notes"] = json!("x".repeat(20 * 1024 * 1024));
        let huge = serde_json::to_vec(&huge).unwrap();
        assert!(check_size(huge.len(), DEFAULT_MAX_RECORD_BYTES).is_err(), "20 MB");
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(decode(br#"{"a":1}"#).is_ok());
        assert_eq!(decode(b"[1]").unwrap_err().to_string(), "record: is not a JSON object");
        assert!(decode(b"{broken").unwrap_err().to_string().starts_with("record: is not JSON"));
        assert_eq!(
            reasons(&problems_of(&["a", "b"])),
            "record: a; record: b",
            "reasons are joined with '; '"
        );
    }

    fn problems_of(messages: &[&str]) -> Vec<Problem> {
        messages.iter().map(|m| Problem { field: "record", message: (*m).into() }).collect()
    }

    #[test]
    fn the_key_is_the_message_id_or_a_hash_of_the_canonical_record() {
        let a = json!({"b": 1, "a": {"y": [1, "x"], "x": null}});
        let b: Value =
            serde_json::from_str(r#"{ "a": {"x": null, "y": [1, "x"]}, "b": 1 }"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#);
        assert_eq!(message_key(None, &a), message_key(None, &b), "key order does not matter");
        assert_eq!(message_key(Some("  "), &a), message_key(None, &a), "a blank id is no id");
        assert!(message_key(None, &a).starts_with("sha256:"));
        assert_eq!(message_key(None, &a).len(), "sha256:".len() + 64);
        assert_ne!(message_key(None, &a), message_key(None, &json!({"b": 2})));
        assert_eq!(message_key(Some("m-1"), &a), "m-1");
    }
}
