//! The notification sink: a webhook receiver that records the incident communications bots
//! deliver, so tests and demos can see what went out.
//!
//! # Protocol
//!
//! - `POST /webhooks/{channel}` with any JSON body: 202 `{"id": "<uuid>"}`, recorded. A request
//!   whose `Idempotency-Key` was seen before gets 200 `{"id": "<original id>", "duplicate": true}`
//!   and is not recorded again. A body that is not JSON gets 400 `{"message": …}`.
//! - `GET /_control/received[?channel=…]`: the records, oldest first, each
//!   `{"id","channel","body","headers","at"}` where `headers` holds `idempotency-key` if sent.
//!   `DELETE /_control/received`: 204, forgets records and idempotency keys.
//! - `GET`/`PUT /_control`: `{"down","delay_ms"}`; while down, webhooks answer 503.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::control::{self, Availability, ControlJson, Unreliable};

/// The request header that makes a delivery idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How a notification sink starts; both settings can be changed later through `PUT /_control`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct NotifyConfig {
    /// Milliseconds to wait before answering a webhook.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Answer 503 to every webhook.
    #[arg(long)]
    pub down: bool,
}

/// A running sink's state, shared by its handlers; clones share it.
#[derive(Debug, Clone)]
pub struct NotifyState {
    sink: Arc<Mutex<Sink>>,
}

impl NotifyState {
    /// A sink that has received nothing yet, as `config` says.
    pub fn new(config: NotifyConfig) -> NotifyState {
        let sink = Sink {
            availability: Availability { down: config.down, delay_ms: config.delay_ms },
            ..Sink::default()
        };
        NotifyState { sink: Arc::new(Mutex::new(sink)) }
    }

    /// The sink, locked. Never held across an `.await`; poisoning is ignored as every change
    /// to the sink is a single push or clear.
    fn lock(&self) -> MutexGuard<'_, Sink> {
        self.sink.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Unreliable for NotifyState {
    fn availability(&self) -> Availability {
        self.lock().availability
    }

    fn unavailable() -> Response {
        control::json_message(StatusCode::SERVICE_UNAVAILABLE, "notification sink unavailable")
    }
}

/// The sink's routes over `state`.
pub fn router(state: NotifyState) -> Router {
    let webhooks = Router::new().route("/webhooks/{channel}", post(receive)).layer(
        middleware::from_fn_with_state(state.clone(), control::inject_failures::<NotifyState>),
    );
    let control = Router::new()
        .route("/_control", get(settings).put(update_settings))
        .route("/_control/received", get(received).delete(forget_received));
    webhooks.merge(control).layer(TraceLayer::new_for_http()).with_state(state)
}

/// Serves a sink configured by `config` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    config: NotifyConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "notification sink listening");
    }
    axum::serve(listener, router(NotifyState::new(config)))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// One delivery, as `GET /_control/received` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Record {
    id: Uuid,
    channel: String,
    body: Value,
    /// The headers worth keeping: `idempotency-key`, when sent.
    headers: BTreeMap<&'static str, String>,
    at: DateTime<Utc>,
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receipt {
    /// Recorded under this id.
    Recorded(Uuid),
    /// Its idempotency key was seen before, for the delivery recorded under this id.
    Duplicate(Uuid),
}

/// Everything received, with the idempotency keys seen. No IO: ids and `now` come in.
#[derive(Debug, Default)]
struct Sink {
    availability: Availability,
    records: Vec<Record>,
    keys: HashMap<String, Uuid>,
}

impl Sink {
    fn receive(
        &mut self,
        channel: String,
        body: Value,
        idempotency_key: Option<String>,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Receipt {
        let mut headers = BTreeMap::new();
        if let Some(key) = idempotency_key {
            if let Some(original) = self.keys.get(&key) {
                return Receipt::Duplicate(*original);
            }
            self.keys.insert(key.clone(), id);
            headers.insert(IDEMPOTENCY_KEY, key);
        }
        self.records.push(Record { id, channel, body, headers, at: now });
        Receipt::Recorded(id)
    }

    /// Records oldest first, only `channel`'s if given.
    fn received(&self, channel: Option<&str>) -> Vec<Record> {
        self.records
            .iter()
            .filter(|record| channel.is_none_or(|channel| record.channel == channel))
            .cloned()
            .collect()
    }

    fn forget(&mut self) {
        self.records.clear();
        self.keys.clear();
    }
}

async fn receive(
    State(state): State<NotifyState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            let message = format!("the body is not JSON: {error}");
            return control::json_message(StatusCode::BAD_REQUEST, message);
        }
    };
    let key = match headers.get(IDEMPOTENCY_KEY).map(|key| key.to_str()) {
        None => None,
        Some(Ok(key)) => Some(key.to_owned()),
        Some(Err(_)) => {
            let message = "the Idempotency-Key header must be visible ASCII";
            return control::json_message(StatusCode::BAD_REQUEST, message);
        }
    };
    let receipt = state.lock().receive(channel.clone(), body, key, Uuid::now_v7(), Utc::now());
    match receipt {
        Receipt::Recorded(id) => {
            tracing::info!(%id, %channel, "notification received");
            (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response()
        }
        Receipt::Duplicate(id) => {
            tracing::info!(%id, %channel, "duplicate notification ignored");
            let body = json!({ "id": id, "duplicate": true });
            (StatusCode::OK, Json(body)).into_response()
        }
    }
}

async fn settings(State(state): State<NotifyState>) -> Json<Availability> {
    Json(state.lock().availability)
}

/// A change to some of the sink's settings (`PUT /_control`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AvailabilityUpdate {
    down: Option<bool>,
    delay_ms: Option<u64>,
}

async fn update_settings(
    State(state): State<NotifyState>,
    ControlJson(update): ControlJson<AvailabilityUpdate>,
) -> Json<Availability> {
    let mut sink = state.lock();
    if let Some(down) = update.down {
        sink.availability.down = down;
    }
    if let Some(delay_ms) = update.delay_ms {
        sink.availability.delay_ms = delay_ms;
    }
    tracing::info!(availability = ?sink.availability, "failure injection changed");
    Json(sink.availability)
}

#[derive(Debug, Deserialize)]
struct ReceivedFilter {
    channel: Option<String>,
}

async fn received(
    State(state): State<NotifyState>,
    Query(filter): Query<ReceivedFilter>,
) -> Json<Vec<Record>> {
    Json(state.lock().received(filter.channel.as_deref()))
}

async fn forget_received(State(state): State<NotifyState>) -> StatusCode {
    state.lock().forget();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: NotifyConfig,
    }

    #[test]
    fn flag_defaults_are_the_config_defaults() {
        assert_eq!(Cli::parse_from(["x"]).config, NotifyConfig::default());
    }

    #[test]
    fn an_idempotency_key_is_recorded_once() {
        let mut sink = Sink::default();
        let (first, second, third) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let now = Utc::now();
        let key = || Some("k1".to_owned());
        assert_eq!(
            sink.receive("ops".into(), json!(1), key(), first, now),
            Receipt::Recorded(first)
        );
        assert_eq!(
            sink.receive("customers".into(), json!(2), key(), second, now),
            Receipt::Duplicate(first)
        );
        assert_eq!(
            sink.receive("ops".into(), json!(3), None, third, now),
            Receipt::Recorded(third)
        );
        let received = sink.received(None);
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].headers.get(IDEMPOTENCY_KEY).unwrap(), "k1");
        assert!(received[1].headers.is_empty());
        sink.forget();
        assert!(sink.received(None).is_empty());
        assert_eq!(
            sink.receive("ops".into(), json!(1), key(), second, now),
            Receipt::Recorded(second)
        );
    }
}
