//! The broker's own round trip, measured with the same client library Botline uses: a persistent
//! 1 KiB message published with confirms, consumed with a manual ack by a second connection,
//! which publishes a small confirmed event consumed by a third. `pipelines` round trips are in
//! flight at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

use crate::cpu::{Parts, PerTask};
use crate::stats::{Summary, summarize};

/// One ceiling measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Round trips in flight at once.
    pub pipelines: usize,
    /// Round trips completed.
    pub round_trips: usize,
    /// Round trips per second.
    pub per_second: f64,
    /// Publish → final consume latency.
    pub latency: Summary,
    /// CPU per round trip: RabbitMQ's, and the three clients' (this process).
    pub cpu_ms_per_round_trip: PerTask,
}

const REQUESTS: &str = "bench.ceiling.requests";
const EVENTS: &str = "bench.ceiling.events";

async fn channel(
    url: &str,
    name: &str,
    confirms: bool,
) -> anyhow::Result<(lapin::Connection, Channel)> {
    let connection = broker_config::amqp::connect(url, name).await?;
    let channel = connection.create_channel().await?;
    for queue in [REQUESTS, EVENTS] {
        let options = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(queue.into(), options, FieldTable::default()).await?;
    }
    if confirms {
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    Ok((connection, channel))
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into())
}

/// Runs `round_trips` round trips with `pipelines` in flight, on the broker at `url` (a vhost of
/// the benchmark's own).
pub async fn measure(url: &str, pipelines: usize, round_trips: usize) -> anyhow::Result<Ceiling> {
    let (_a, sender) = channel(url, "bench-ceiling-sender", true).await?;
    let (_b, relay) = channel(url, "bench-ceiling-relay", true).await?;
    let (_c, sink) = channel(url, "bench-ceiling-sink", false).await?;
    let origin = Instant::now();

    // The relay: consume a request, publish a confirmed event, then ack the request.
    relay
        .basic_qos(u16::try_from(pipelines * 2).unwrap_or(u16::MAX), BasicQosOptions::default())
        .await?;
    let mut requests = relay
        .basic_consume(
            REQUESTS.into(),
            "relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let relay_channel = relay.clone();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = requests.next().await {
            let channel = relay_channel.clone();
            tokio::spawn(async move {
                let event = delivery.data[..16].to_vec(); // the id and send time, nothing else
                let published = channel
                    .basic_publish(
                        "".into(),
                        EVENTS.into(),
                        BasicPublishOptions::default(),
                        &event,
                        persistent(),
                    )
                    .await;
                if let Ok(confirm) = published {
                    let _ = confirm.await;
                }
                let _ = delivery.ack(BasicAckOptions::default()).await;
            });
        }
    });

    // The sink: consume events, note each round trip, release its pipeline.
    let mut events = sink
        .basic_consume(
            EVENTS.into(),
            "sink".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<f64>();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = events.next().await {
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&delivery.data[8..16]);
            let sent = Duration::from_nanos(u64::from_le_bytes(sent));
            let latency = origin.elapsed().saturating_sub(sent);
            let _ = done_tx.send(latency.as_secs_f64() * 1000.0);
        }
    });

    let mut parts = Parts::default();
    parts.add("clients", Some(std::process::id()));
    parts.add_rabbitmq();
    let cpu_before = parts.snapshot();
    let remaining = Arc::new(Mutex::new(round_trips));
    let started = Instant::now();
    let mut senders = Vec::new();
    for pipeline in 0..pipelines {
        let channel = sender.clone();
        let remaining = remaining.clone();
        let (go_tx, mut go_rx) = mpsc::unbounded_channel::<()>();
        senders.push(go_tx.clone());
        tokio::spawn(async move {
            let mut body = vec![b' '; 1024];
            body[..8].copy_from_slice(&(pipeline as u64).to_le_bytes());
            let _ = go_tx.send(());
            while go_rx.recv().await.is_some() {
                {
                    let mut left = remaining.lock().await;
                    if *left == 0 {
                        return;
                    }
                    *left -= 1;
                }
                body[8..16].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_le_bytes());
                match channel
                    .basic_publish(
                        "".into(),
                        REQUESTS.into(),
                        BasicPublishOptions::default(),
                        &body,
                        persistent(),
                    )
                    .await
                {
                    Ok(confirm) => {
                        let _ = confirm.await;
                    }
                    Err(_) => return,
                }
            }
        });
    }
    // Closed loop: each finished round trip lets one pipeline send again.
    let mut latencies = Vec::with_capacity(round_trips);
    let mut next = 0;
    while latencies.len() < round_trips {
        let latency = tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("the broker stopped answering"))?
            .ok_or_else(|| anyhow::anyhow!("the sink stopped"))?;
        latencies.push(latency);
        let _ = senders[next % senders.len()].send(());
        next += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Ceiling {
        pipelines,
        round_trips,
        per_second: round_trips as f64 / seconds,
        latency: summarize(latencies),
        cpu_ms_per_round_trip: cpu_before.per_task(&parts.snapshot(), round_trips),
    })
}
