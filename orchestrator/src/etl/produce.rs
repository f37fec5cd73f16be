//! `orchestrator etl produce`: realistic synthetic attendance records, some of them broken on
//! purpose, published to `botline.attendance` as fast as the broker confirms them, for demos,
//! tests and benchmarks. The records are made by pure functions of a seeded generator.

use std::collections::VecDeque;
use std::time::Duration;

use broker_config::Topology;
use broker_config::amqp::{connect, message_properties};
use broker_config::topology::{ATTENDANCE_EXCHANGE, QueueType};
use chrono::{DateTime, Duration as Span, Utc};
use chrono_tz::Tz;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{Rng, SeedableRng as _};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::record::{Channel, DATE_FORMAT};

/// Publishes a confirm may wait for on one channel before the next publish waits.
const CONFIRM_WINDOW: usize = 512;

/// What to publish.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// How many records.
    pub count: u64,
    /// The share of them broken on purpose (0–1), spread evenly.
    pub bad_ratio: f64,
    /// The generator's seed: the same seed gives the same records (message ids stay unique).
    pub seed: u64,
    /// Concurrent publishers, each on a channel of its own.
    pub publishers: usize,
    /// The time zone the records' local dates are written in.
    pub timezone: Tz,
    /// The type of the queues (declared if missing).
    pub queue_type: QueueType,
}

/// What was published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProduceReport {
    /// Valid records, confirmed by the broker.
    pub good: u64,
    /// Broken records, confirmed by the broker.
    pub bad: u64,
    /// From the first publish to the last confirm.
    pub elapsed: Duration,
}

impl ProduceReport {
    /// Records confirmed per second.
    pub fn rate(&self) -> f64 {
        (self.good + self.bad) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The broker cannot be reached, or a channel failed.
    #[error("RabbitMQ: {0}")]
    Broker(String),
    /// The broker refused (nacked) some records.
    #[error("the broker refused {0} records")]
    Refused(u64),
    /// Stopped by Ctrl-C.
    #[error("stopped before every record was published")]
    ShuttingDown,
}

impl From<lapin::Error> for ProduceError {
    fn from(err: lapin::Error) -> ProduceError {
        ProduceError::Broker(err.to_string())
    }
}

/// One synthetic record, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    /// `attendance.<channel>`.
    pub routing_key: String,
    /// The JSON (or, for one kind of broken record, not quite JSON).
    pub body: Vec<u8>,
    /// Whether it was broken on purpose.
    pub bad: bool,
}

/// Whether record `index` is one of the broken ones: exactly ⌊count × ratio⌋ of the first
/// `count`, spread evenly.
pub fn is_bad(index: u64, ratio: f64) -> bool {
    let ratio = if ratio.is_finite() { ratio.clamp(0.0, 1.0) } else { 0.0 };
    ((index + 1) as f64 * ratio).floor() > (index as f64 * ratio).floor()
}

const FIRST_NAMES: [&str; 20] = [
    "Ana",
    "João",
    "Maria",
    "José",
    "Francisca",
    "Antônio",
    "Adriana",
    "Carlos",
    "Juliana",
    "Paulo",
    "Márcia",
    "Lucas",
    "Fernanda",
    "Rafael",
    "Patrícia",
    "Gabriel",
    "Aline",
    "Marcos",
    "Luana",
    "Geralt",
];
const SURNAMES: [&str; 16] = [
    "Silva",
    "Santos",
    "Oliveira",
    "Souza",
    "Rodrigues",
    "Ferreira",
    "Alves",
    "Pereira",
    "Lima",
    "Gomes",
    "Costa",
    "Ribeiro",
    "Martins",
    "Carvalho",
    "Araújo",
    "de Rívia",
];
const SERVICES: [&str; 8] = [
    "agendar consulta",
    "informacoes",
    "resultado de exame",
    "segunda via",
    "cancelar consulta",
    "atualizar cadastro",
    "reclamacao",
    "autorizacao de procedimento",
];
/// Channel names as the platform writes them, with how often each comes up (out of 100).
const CHANNELS: [(&str, u32); 8] = [
    ("whatsapp", 38),
    ("telefone", 22),
    ("webchat", 14),
    ("phone", 4),
    ("email", 8),
    ("sms", 4),
    ("app", 8),
    ("telegram", 2),
];

/// A record as the platform would send it, at most 30 days before `now`, in office hours of
/// `tz`; `bad` ones are broken in one of several ways.
pub fn synthetic_record(rng: &mut impl Rng, bad: bool, now: DateTime<Utc>, tz: Tz) -> Synthetic {
    let channel = weighted(rng, &CHANNELS);
    let mut record = Map::new();
    let name = format!(
        "{} {}",
        FIRST_NAMES.choose(rng).copied().unwrap_or("Ana"),
        SURNAMES.choose(rng).copied().unwrap_or("Silva")
    );
    record.insert("name".into(), json!(name));
    record.insert("document".into(), json!(cpf(rng)));
    record.insert("age".into(), json!(rng.random_range(16..=90).to_string()));
    let sex = weighted(rng, &[("masculino", 48), ("feminino", 49), ("outro", 3)]);
    record.insert("sex".into(), json!(sex));
    record.insert("channel".into(), json!(channel));
    let mut services = SERVICES.to_vec();
    services.shuffle(rng);
    let wanted = weighted(rng, &[(1, 60), (2, 30), (3, 10)]);
    let services: Map<String, Value> = services
        .into_iter()
        .take(wanted)
        .enumerate()
        .map(|(i, s)| ((i + 1).to_string(), json!(s)))
        .collect();
    record.insert("services".into(), Value::Object(services));
    let day = now - Span::days(rng.random_range(0..30));
    let local = day.with_timezone(&tz).date_naive();
    let time = chrono::NaiveTime::from_hms_opt(
        rng.random_range(7..22),
        rng.random_range(0..60),
        rng.random_range(0..60),
    )
    .unwrap_or_default();
    record.insert("date".into(), json!(local.and_time(time).format(DATE_FORMAT).to_string()));
    let headache = yes_no(rng, 30);
    record.insert("headache".into(), json!(headache));
    let other = yes_no(rng, 25);
    record.insert("otherSymptoms".into(), json!(other));
    let contact = yes_no(rng, 15);
    record.insert("covidContact".into(), json!(contact));
    let test = weighted(rng, &[("positivo", 10), ("negativo", 50), ("nao testado", 40)]);
    record.insert("covidTest".into(), json!(test));
    let score = weighted(rng, &[(10, 30), (9, 20), (8, 15), (7, 10), (5, 10), (3, 8), (0, 7)]);
    record.insert("serviceScore".into(), json!(score.to_string()));
    let solved = yes_no(rng, 75);
    record.insert("solved".into(), json!(solved));
    let routing_key = format!("attendance.{}", Channel::parse(channel).as_str());
    if !bad {
        let body = serde_json::to_vec(&record).unwrap_or_default();
        return Synthetic { routing_key, body, bad };
    }
    let body = match rng.random_range(0..10) {
        0 => {
            record.insert("document".into(), json!("123.456.789-0"));
            serde_json::to_vec(&record)
        }
        1 => {
            record.insert("age".into(), json!("quarenta"));
            serde_json::to_vec(&record)
        }
        2 => {
            record.insert("serviceScore".into(), json!("11"));
            serde_json::to_vec(&record)
        }
        3 => {
            record.insert("date".into(), json!(now.to_rfc3339()));
            serde_json::to_vec(&record)
        }
        4 => {
            record.insert("headache".into(), json!("talvez"));
            serde_json::to_vec(&record)
        }
        5 => {
            record.insert("covidTest".into(), json!("inconclusivo"));
            serde_json::to_vec(&record)
        }
        6 => {
            record.remove("name");
            serde_json::to_vec(&record)
        }
        7 => {
            record.insert("services".into(), json!({}));
            serde_json::to_vec(&record)
        }
        8 => {
            record.insert("age".into(), json!("-5"));
            record.insert("solved".into(), json!("?"));
            record.insert("sex".into(), json!("x"));
            serde_json::to_vec(&record)
        }
        // Cut short in transit: not JSON at all.
        _ => serde_json::to_vec(&record).map(|mut bytes| {
            bytes.truncate(bytes.len() / 2);
            bytes
        }),
    }
    .unwrap_or_default();
    Synthetic { routing_key, body, bad }
}

fn yes_no(rng: &mut impl Rng, percent: u32) -> &'static str {
    if rng.random_ratio(percent, 100) { "sim" } else { "nao" }
}

fn weighted<T: Copy>(rng: &mut impl Rng, choices: &[(T, u32)]) -> T {
    let total: u32 = choices.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total.max(1));
    for (choice, weight) in choices {
        if pick < *weight {
            return *choice;
        }
        pick -= weight;
    }
    choices[0].0
}

/// A CPF with valid check digits, written with or without its punctuation.
fn cpf(rng: &mut impl Rng) -> String {
    let mut digits: Vec<u32> = (0..9).map(|_| rng.random_range(0..10)).collect();
    for length in [9, 10] {
        let sum: u32 = digits.iter().enumerate().map(|(i, d)| d * (length + 1 - i as u32)).sum();
        digits.push(sum * 10 % 11 % 10);
    }
    let text: String = digits.iter().filter_map(|d| char::from_digit(*d, 10)).collect();
    if rng.random_bool(0.5) {
        format!("{}.{}.{}-{}", &text[0..3], &text[3..6], &text[6..9], &text[9..11])
    } else {
        text
    }
}

/// Publishes `options.count` synthetic records to `botline.attendance` (declaring the topology
/// first, so they wait in the ETL's queue even while no ETL runs), with `options.publishers`
/// concurrent publishers, each keeping up to 512 confirms outstanding.
pub async fn produce(
    amqp_url: &str,
    options: &ProduceOptions,
    shutdown: CancellationToken,
) -> Result<ProduceReport, ProduceError> {
    let connection = connect(amqp_url, "orchestrator-etl-producer").await?;
    let setup = connection.create_channel().await?;
    Topology::core().with_queue_type(options.queue_type).declare(&setup).await?;
    let publishers = options.publishers.max(1);
    let mut channels = Vec::with_capacity(publishers);
    for _ in 0..publishers {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    let now = Utc::now();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(publishers);
    for (share, channel) in channels.into_iter().enumerate() {
        let options = options.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            publish_share(channel, share, publishers, &options, now, shutdown).await
        }));
    }
    let (mut good, mut bad) = (0, 0);
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok((g, b))) => {
                good += g;
                bad += b;
            }
            Ok(Err(err)) => failure = failure.or(Some(err)),
            Err(err) => failure = failure.or(Some(ProduceError::Broker(err.to_string()))),
        }
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "done".into()).await;
    match failure {
        Some(err) => Err(err),
        None => Ok(ProduceReport { good, bad, elapsed }),
    }
}

/// Publishes records `share`, `share + shares`, `share + 2 × shares`, … on `channel`.
async fn publish_share(
    channel: lapin::Channel,
    share: usize,
    shares: usize,
    options: &ProduceOptions,
    now: DateTime<Utc>,
    shutdown: CancellationToken,
) -> Result<(u64, u64), ProduceError> {
    let mut rng = StdRng::seed_from_u64(options.seed.wrapping_add(share as u64));
    let mut in_flight = VecDeque::with_capacity(CONFIRM_WINDOW);
    let (mut good, mut bad, mut refused) = (0, 0, 0);
    let mut settle = |confirmation: Confirmation, was_bad: bool| match confirmation {
        Confirmation::Ack(_) if was_bad => bad += 1,
        Confirmation::Ack(_) => good += 1,
        Confirmation::Nack(_) | Confirmation::NotRequested => refused += 1,
    };
    for index in (share as u64..options.count).step_by(shares) {
        if shutdown.is_cancelled() {
            return Err(ProduceError::ShuttingDown);
        }
        let record =
            synthetic_record(&mut rng, is_bad(index, options.bad_ratio), now, options.timezone);
        let confirm = channel
            .basic_publish(
                ATTENDANCE_EXCHANGE.into(),
                record.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &record.body,
                message_properties("orchestrator-etl-producer"),
            )
            .await?;
        in_flight.push_back((confirm, record.bad));
        if in_flight.len() >= CONFIRM_WINDOW
            && let Some((confirm, was_bad)) = in_flight.pop_front()
        {
            settle(confirm.await?, was_bad);
        }
    }
    while let Some((confirm, was_bad)) = in_flight.pop_front() {
        settle(confirm.await?, was_bad);
    }
    if refused > 0 {
        return Err(ProduceError::Refused(refused));
    }
    Ok((good, bad))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::etl::record::{decode, parse_record};

    #[test]
    fn the_bad_ratio_is_exact_and_spread() {
        let bad: Vec<u64> = (0..20).filter(|i| is_bad(*i, 0.25)).collect();
        assert_eq!(bad, [3, 7, 11, 15, 19]);
        assert_eq!((0..10_000).filter(|i| is_bad(*i, 0.1)).count(), 1000);
        assert_eq!((0..100).filter(|i| is_bad(*i, 0.0)).count(), 0);
        assert_eq!((0..100).filter(|i| is_bad(*i, 7.0)).count(), 100, "clamped to 1");
        assert_eq!((0..100).filter(|i| is_bad(*i, f64::NAN)).count(), 0);
    }

    #[test]
    fn good_records_parse_and_bad_ones_do_not() {
        let tz = chrono_tz::America::Sao_Paulo;
        let now = Utc::now();
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..2000 {
            let bad = i % 3 == 0;
            let record = synthetic_record(&mut rng, bad, now, tz);
            let parsed =
                decode(&record.body).map_err(|p| vec![p]).and_then(|raw| parse_record(&raw, tz));
            assert_eq!(parsed.is_err(), bad, "{}", String::from_utf8_lossy(&record.body));
            assert!(record.routing_key.starts_with("attendance."));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_records() {
        let now = Utc::now();
        let tz = chrono_tz::America::Sao_Paulo;
        let a = synthetic_record(&mut StdRng::seed_from_u64(1), false, now, tz);
        let b = synthetic_record(&mut StdRng::seed_from_u64(1), false, now, tz);
        assert_eq!(a, b);
    }

    #[test]
    fn documents_are_cpfs_with_valid_check_digits() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let digits: Vec<u32> = cpf(&mut rng).chars().filter_map(|c| c.to_digit(10)).collect();
            assert_eq!(digits.len(), 11);
            let check = |n: usize| {
                let sum: u32 = (0..n).map(|i| digits[i] * (n as u32 + 1 - i as u32)).sum();
                sum * 10 % 11 % 10
            };
            assert_eq!((digits[9], digits[10]), (check(9), check(10)));
        }
    }
}
