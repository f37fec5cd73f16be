//! Equipment activations end to end, as IO-bound work: the equipment config service stand-in
//! (`simulators equipment`, over HTTPS, answering each configuration after a device's delay), the
//! orchestrator on SQLite and B bot agents of S slots each (the binaries beside this one), N
//! activations created through `POST /api/v1/equipment/cpe/{id}`. A bot holds a slot for the
//! whole of a device's delay, so slots, not CPU, bound the throughput. Every figure is read back
//! from the tasks' own timestamps.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;
use tokio::process::Command;

use crate::botline::Database;
use crate::cpu::PerTask;
use crate::stack::{Post, Stack, free_port, post_all, sibling};
use crate::stats::{Summary, summarize};

/// How long the equipment service stand-in may take to accept connections once started.
const SIMULATOR_START: Duration = Duration::from_secs(30);

/// How long, beyond one device delay, the activations may take to complete once created.
const COMPLETE_MARGIN: Duration = Duration::from_secs(600);

/// How often the completion count is asked for: seldom enough that the polling costs the
/// orchestrator little CPU over a run of a minute or more.
const COMPLETE_POLL: Duration = Duration::from_millis(200);

/// The least answer timeout given to the bots (their own default, 120 s).
const MIN_ANSWER_TIMEOUT_S: u64 = 120;

/// What a CPE run does.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Bot agent processes.
    pub bots: usize,
    /// Activations each bot runs at once (its `--slots`).
    pub slots: u32,
    /// Activations created.
    pub activations: usize,
    /// Concurrent API clients creating them.
    pub senders: usize,
    /// Milliseconds the stand-in takes to configure a device.
    pub device_delay_ms: u64,
}

/// One CPE run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Bot agent processes.
    pub bots: usize,
    /// Activations each bot runs at once.
    pub slots: u32,
    /// Activations.
    pub activations: usize,
    /// Concurrent API clients creating them.
    pub senders: usize,
    /// Milliseconds the stand-in took to configure each device.
    pub device_delay_ms: u64,
    /// Seconds the bots waited at most for the stand-in's answer (`--equipment-answer-timeout`).
    pub answer_timeout_s: u64,
    /// From the first creation to the last completion, seconds.
    pub wall_s: f64,
    /// Activations completed per second over that time.
    pub per_second: f64,
    /// Activations created per second by the API.
    pub created_per_second: f64,
    /// Created → accepted by a bot.
    pub to_accepted: Summary,
    /// Created → COMPLETE.
    pub to_complete: Summary,
    /// Activations that failed at least once before completing (each such one ran again).
    pub retried: usize,
    /// The orchestrator's peak resident memory, MiB.
    pub orchestrator_peak_rss_mib: f64,
    /// The largest peak resident memory of the bot agents, MiB.
    pub bot_peak_rss_mib: f64,
    /// CPU milliseconds per activation, by process: orchestrator, bots (all), rabbitmq,
    /// equipment (the stand-in), bench (the client creating activations and polling).
    pub cpu_ms_per_activation: PerTask,
}

/// The equipment id of the `n`th activation: `CPE` and six or more digits.
fn equipment_id(n: usize) -> String {
    format!("CPE{n:06}")
}

/// The seconds the bots wait for the stand-in's answer to one activation: a minute more than
/// the device's delay, and never less than their default.
fn answer_timeout_s(device_delay_ms: u64) -> u64 {
    (device_delay_ms.div_ceil(1000) + 60).max(MIN_ANSWER_TIMEOUT_S)
}

/// The body of an activation (the original "service A" contract): the device's own timeout,
/// half a minute past its delay (1 to 3600 s), and the parameters as a list of one-key objects.
fn activation_body(device_delay_ms: u64) -> serde_json::Value {
    let timeout = (device_delay_ms.div_ceil(1000) + 30).clamp(1, 3600);
    json!({
        "timeoutInSeconds": timeout,
        "parameters": [{"username": "admin"}, {"password": "admin"}, {"vlan": 534}, {"interfaces": [1, 2, 3, 4]}],
    })
}

/// Runs `shape.activations` activations through `shape.bots` CPE bots against the equipment
/// service stand-in.
pub async fn run(shape: Shape) -> anyhow::Result<Run> {
    let mut stack = Stack::start(Database::Sqlite).await?;

    // The equipment config service stand-in, over HTTPS with a certificate the bots trust.
    let device_port = free_port()?;
    let device_address = format!("127.0.0.1:{device_port}");
    let certificate = stack.workdir().join("equipment.pem");
    let mut simulator = Command::new(sibling("simulators")?);
    simulator
        .args(["equipment", "--listen", &device_address, "--tls", "--save-cert"])
        .arg(&certificate)
        .args(["--delay-ms", &shape.device_delay_ms.to_string()])
        .env("RUST_LOG", "warn");
    stack.spawn("equipment", &mut simulator)?;
    let saved = certificate.clone();
    stack
        .wait_until(
            &format!("the equipment service stand-in to accept connections on {device_address}"),
            SIMULATOR_START,
            crate::stack::POLL,
            || async {
                // It binds before it writes the certificate: both must be there.
                let written = std::fs::read_to_string(&saved)
                    .is_ok_and(|pem| pem.contains("-----END CERTIFICATE-----"));
                written && tokio::net::TcpStream::connect(&device_address).await.is_ok()
            },
        )
        .await?;

    let answer_timeout = answer_timeout_s(shape.device_delay_ms);
    for n in 1..=shape.bots {
        let args = [
            "--name".to_owned(),
            format!("bench-cpe-{n}"),
            "--systems".to_owned(),
            "cpe".to_owned(),
            "--slots".to_owned(),
            shape.slots.to_string(),
            "--equipment-url".to_owned(),
            format!("https://{device_address}"),
            "--equipment-ca".to_owned(),
            certificate.display().to_string(),
            "--equipment-answer-timeout".to_owned(),
            answer_timeout.to_string(),
        ];
        stack.spawn_bot(&args)?;
    }
    stack.wait_for_bots(shape.bots).await?;

    // Create the activations.
    let cpu_before = stack.parts.snapshot();
    let started = Instant::now();
    let body = activation_body(shape.device_delay_ms);
    let api = stack.api.clone();
    let posts = (1..=shape.activations).map(|n| Post {
        url: format!("{api}/api/v1/equipment/cpe/{}", equipment_id(n)),
        body: body.clone(),
        due: None,
    });
    post_all(&stack.client, posts, shape.senders, 200).await.context("creating the activations")?;
    let created_per_second = shape.activations as f64 / started.elapsed().as_secs_f64();
    let limit = Duration::from_millis(shape.device_delay_ms) + COMPLETE_MARGIN;
    stack.wait_for_complete(shape.activations, limit, COMPLETE_POLL).await?;
    let cpu_ms_per_activation = cpu_before.per_task(&stack.parts.snapshot(), shape.activations);
    let orchestrator_peak_rss_mib = stack.orchestrator_peak_rss_mib();
    let bot_peak_rss_mib = stack.bot_peak_rss_mib();

    let timings = stack.read_back().await?;
    stack.finish().await?;
    Ok(Run {
        bots: shape.bots,
        slots: shape.slots,
        activations: shape.activations,
        senders: shape.senders,
        device_delay_ms: shape.device_delay_ms,
        answer_timeout_s: answer_timeout,
        wall_s: timings.span_s,
        per_second: shape.activations as f64 / timings.span_s.max(1e-9),
        created_per_second,
        to_accepted: summarize(timings.to_accepted),
        to_complete: summarize(timings.to_complete),
        retried: timings.retried,
        orchestrator_peak_rss_mib,
        bot_peak_rss_mib,
        cpu_ms_per_activation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_the_bots_wait_longer_than_a_device() {
        assert_eq!(equipment_id(1), "CPE000001");
        assert_eq!(equipment_id(1_234_567), "CPE1234567");
        assert_eq!(answer_timeout_s(200), MIN_ANSWER_TIMEOUT_S);
        assert_eq!(answer_timeout_s(60_000), 120);
        assert_eq!(answer_timeout_s(90_500), 151);
        assert_eq!(activation_body(60_000)["timeoutInSeconds"], 90);
        assert_eq!(activation_body(10_000_000)["timeoutInSeconds"], 3600);
    }
}
