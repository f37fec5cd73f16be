//! The equipment config service ("service A"): configures a customer's equipment (CPE)
//! synchronously, taking as long as a real device does.
//!
//! # Protocol
//!
//! - `POST /api/v1/equipment/cpe/{id}` with `{"timeoutInSeconds": 14, "parameters": {…}}`
//!   (`parameters` may also be a list of one-key objects): after `delay_ms`, 200
//!   `{"code":200,"message":"success"}`, or 500 `{"code":500,"message":"Internal provisioning
//!   exception"}` when failure injection strikes (`fail_ids`, `fail_first`, `fail_rate`). At
//!   once: 404 `{"code":404,"message":"The requested equipment is not found"}` for an id that is
//!   not 6 to 64 letters or digits, or not among `known_ids` when that list is not empty; 400
//!   `{"code":400,"message":…}` for a body that is not such a request, and, when
//!   `strict_parameters` is set, for `parameters` that are not the original interface's list of
//!   one-key objects (as a service that takes only that shape answers). `timeoutInSeconds` is
//!   the device's configuration timeout; the stand-in records it and does not enforce it.
//! - `GET /api/v1/health` and `GET /healthz`: `{"status":"ok"}`.
//! - `GET`/`PUT /_control`: the settings `{"delay_ms","fail_rate","fail_ids","known_ids",
//!   "fail_first","strict_parameters"}` (`fail_first` is `{"ID": N}`: the first N requests for
//!   ID answer 500).
//! - `GET /_control/requests`: `{"requests":[{"id","timeoutInSeconds","parameters","code","at"}],
//!   "counts":{"ID":N}}`, every request with a well-formed id and body, as it arrived (the
//!   parameters in the shape they came in), with the code it was (or is being) answered;
//!   `DELETE /_control/requests` forgets them and the counts.
//! - Served over HTTP ([`serve`]) or HTTPS ([`serve_tls`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_config::cpe::{self, CpeAnswer, CpeParameters, CpeRequest, EquipmentId};
use broker_config::https::TlsMaterial;
use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::control::{self, ControlJson};
use crate::vivo360::{InvalidSetting, parse_fail_rate};

/// `ID:N` (`--fail-first`): the first N requests for the equipment ID answer 500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailFirst {
    /// The equipment.
    pub id: String,
    /// How many of its first requests fail.
    pub count: u32,
}

impl FromStr for FailFirst {
    type Err = String;

    fn from_str(text: &str) -> Result<FailFirst, String> {
        let (id, count) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("'{text}' is not ID:N (e.g. CPE000001:2)"))?;
        let count =
            count.trim().parse().map_err(|_| format!("in '{text}', '{count}' is not a count"))?;
        let id = id.trim();
        if id.is_empty() {
            return Err(format!("'{text}' names no equipment"));
        }
        Ok(FailFirst { id: id.to_owned(), count })
    }
}

/// How an equipment config service starts; every setting can be changed later through
/// `PUT /_control`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct EquipmentConfig {
    /// Milliseconds a configuration takes before the service answers (a real device takes about
    /// a minute).
    #[arg(long, default_value_t = 60_000)]
    pub delay_ms: u64,
    /// Probability (0 to 1) that a configuration fails with 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fail_rate)]
    pub fail_rate: f64,
    /// Equipment ids whose configurations always fail with 500, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub fail_ids: Vec<String>,
    /// The only equipment ids the service knows, comma-separated; others are not found. When
    /// empty, every well-formed id is known.
    #[arg(long, value_delimiter = ',')]
    pub known_ids: Vec<String>,
    /// `ID:N`, comma-separated: the first N requests for ID fail with 500.
    #[arg(long, value_delimiter = ',')]
    pub fail_first: Vec<FailFirst>,
    /// Accept `parameters` only as the original interface's list of one-key objects
    /// (`[{"vlan": 534}]`) and answer 400 to an object, like a service A that knows no other
    /// shape.
    #[arg(long, env = "EQUIPMENT_STRICT_PARAMETERS")]
    pub strict_parameters: bool,
}

impl Default for EquipmentConfig {
    fn default() -> Self {
        EquipmentConfig {
            delay_ms: 60_000,
            fail_rate: 0.0,
            fail_ids: Vec::new(),
            known_ids: Vec::new(),
            fail_first: Vec::new(),
            strict_parameters: false,
        }
    }
}

/// The failure injection and timing, as `GET /_control` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct Settings {
    delay_ms: u64,
    fail_rate: f64,
    fail_ids: BTreeSet<String>,
    known_ids: BTreeSet<String>,
    fail_first: BTreeMap<String, u32>,
    strict_parameters: bool,
}

/// A change to some of the [`Settings`] (`PUT /_control`); absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsUpdate {
    delay_ms: Option<u64>,
    fail_rate: Option<f64>,
    fail_ids: Option<Vec<String>>,
    known_ids: Option<Vec<String>>,
    fail_first: Option<BTreeMap<String, u32>>,
    strict_parameters: Option<bool>,
}

/// Trimmed, non-empty ids.
fn id_set(ids: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    ids.into_iter().map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()).collect()
}

impl Settings {
    /// Applies `update` whole, or not at all when a value is out of range.
    fn apply(&mut self, update: SettingsUpdate) -> Result<(), InvalidSetting> {
        if let Some(rate) = update.fail_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(InvalidSetting::FailRate(rate));
        }
        if let Some(delay_ms) = update.delay_ms {
            self.delay_ms = delay_ms;
        }
        if let Some(rate) = update.fail_rate {
            self.fail_rate = rate;
        }
        if let Some(ids) = update.fail_ids {
            self.fail_ids = id_set(ids);
        }
        if let Some(ids) = update.known_ids {
            self.known_ids = id_set(ids);
        }
        if let Some(fail_first) = update.fail_first {
            self.fail_first = fail_first
                .into_iter()
                .map(|(id, count)| (id.trim().to_owned(), count))
                .filter(|(id, _)| !id.is_empty())
                .collect();
        }
        if let Some(strict) = update.strict_parameters {
            self.strict_parameters = strict;
        }
        Ok(())
    }
}

/// One request, as `GET /_control/requests` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Received {
    id: String,
    #[serde(rename = "timeoutInSeconds")]
    timeout_in_seconds: u32,
    parameters: CpeParameters,
    /// What it was (or is being) answered.
    code: u16,
    at: DateTime<Utc>,
}

/// What the service answers a request, and whether it first takes a configuration's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    code: u16,
    delay: Duration,
}

/// The service's memory: settings, requests and counts. No IO: the failure roll and `now` come
/// in as arguments.
#[derive(Debug, Default)]
struct Device {
    settings: Settings,
    requests: Vec<Received>,
    counts: BTreeMap<String, u64>,
}

impl Device {
    /// Records a request for `id` and decides its answer, given `roll`, a uniform sample of
    /// `[0, 1)`.
    fn receive(
        &mut self,
        id: &EquipmentId,
        request: CpeRequest,
        roll: f64,
        now: DateTime<Utc>,
    ) -> Verdict {
        let id = id.as_str();
        let count = self.counts.entry(id.to_owned()).or_default();
        *count += 1;
        let nth = *count;
        let settings = &self.settings;
        let verdict = if !settings.known_ids.is_empty() && !settings.known_ids.contains(id) {
            Verdict { code: 404, delay: Duration::ZERO }
        } else {
            let fails_first =
                settings.fail_first.get(id).is_some_and(|&first| nth <= u64::from(first));
            let fails = settings.fail_ids.contains(id) || fails_first || roll < settings.fail_rate;
            let delay = Duration::from_millis(settings.delay_ms);
            Verdict { code: if fails { 500 } else { 200 }, delay }
        };
        self.requests.push(Received {
            id: id.to_owned(),
            timeout_in_seconds: request.timeout_in_seconds,
            parameters: request.parameters,
            code: verdict.code,
            at: now,
        });
        verdict
    }

    fn forget(&mut self) {
        self.requests.clear();
        self.counts.clear();
    }
}

/// A running service's state, shared by its handlers; clones share it.
#[derive(Debug, Clone)]
pub struct EquipmentState {
    device: Arc<Mutex<Device>>,
    /// Cuts a configuration's wait short when the service stops.
    shutdown: CancellationToken,
}

impl EquipmentState {
    /// A service that has received nothing yet, as `config` says, stopping with `shutdown`.
    pub fn new(
        config: EquipmentConfig,
        shutdown: CancellationToken,
    ) -> Result<EquipmentState, InvalidSetting> {
        let mut settings = Settings::default();
        settings.apply(SettingsUpdate {
            delay_ms: Some(config.delay_ms),
            fail_rate: Some(config.fail_rate),
            fail_ids: Some(config.fail_ids),
            known_ids: Some(config.known_ids),
            fail_first: Some(config.fail_first.into_iter().map(|f| (f.id, f.count)).collect()),
            strict_parameters: Some(config.strict_parameters),
        })?;
        let device = Device { settings, ..Device::default() };
        Ok(EquipmentState { device: Arc::new(Mutex::new(device)), shutdown })
    }

    /// The device, locked. Never held across an `.await`; every change is a single step, so
    /// poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Device> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The service's routes over `state`.
pub fn router(state: EquipmentState) -> Router {
    Router::new()
        .route(&format!("{}/{{id}}", cpe::EQUIPMENT_PATH), post(configure))
        .route("/api/v1/health", get(health))
        .route("/healthz", get(health))
        .route("/_control", get(settings).put(update_settings))
        .route("/_control/requests", get(requests).delete(forget_requests))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the service over HTTP on `listener` until `shutdown` is cancelled. Fails at once if
/// `config` is out of range.
pub async fn serve(
    listener: TcpListener,
    config: EquipmentConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let state = EquipmentState::new(config, shutdown.clone())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "equipment config service listening (HTTP)");
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// Serves the service over HTTPS with `tls` on `listener` until `shutdown` is cancelled. Fails
/// at once if `config` is out of range or `tls` unusable.
pub async fn serve_tls(
    listener: TcpListener,
    config: EquipmentConfig,
    tls: TlsMaterial,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let state = EquipmentState::new(config, shutdown.clone())
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let server_config = tls.server_config()?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "equipment config service listening (HTTPS)");
    }
    broker_config::https::serve(listener, router(state), server_config, shutdown).await
}

/// A `{"code","message"}` answer with `code` as the HTTP status too.
fn answer(code: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(CpeAnswer::new(code, message))).into_response()
}

async fn configure(
    State(state): State<EquipmentState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(id) = EquipmentId::parse(&id) else {
        tracing::info!(%id, "malformed equipment id");
        return answer(404, cpe::message::EQUIPMENT_NOT_FOUND);
    };
    let request: CpeRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return answer(400, format!("invalid configuration request: {error}")),
    };
    if state.lock().settings.strict_parameters && !request.parameters.is_list() {
        tracing::info!(%id, "parameters not in the original list shape (strict)");
        return answer(400, STRICT_PARAMETERS_MESSAGE);
    }
    let roll = rand::rng().random::<f64>();
    let verdict = state.lock().receive(&id, request, roll, Utc::now());
    if verdict.code == 404 {
        tracing::info!(%id, "unknown equipment");
        return answer(404, cpe::message::EQUIPMENT_NOT_FOUND);
    }
    tracing::info!(%id, delay_ms = verdict.delay.as_millis(), code = verdict.code, "configuring");
    tokio::select! {
        () = state.shutdown.cancelled() => {
            return answer(503, "the equipment config service is stopping");
        }
        () = tokio::time::sleep(verdict.delay) => {}
    }
    if verdict.code == 200 {
        tracing::info!(%id, "equipment configured");
        answer(200, cpe::message::SUCCESS)
    } else {
        tracing::info!(%id, "configuration failed (injected)");
        answer(verdict.code, cpe::message::PROVISIONING_FAILED)
    }
}

/// What a strict service answers `parameters` that are not a list of one-key objects.
pub const STRICT_PARAMETERS_MESSAGE: &str = "invalid configuration request: parameters must be a list of one-key objects, like [{\"vlan\": 534}]";

/// `GET /api/v1/health` and `/healthz`: the service is up.
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn settings(State(state): State<EquipmentState>) -> Json<Settings> {
    Json(state.lock().settings.clone())
}

async fn update_settings(
    State(state): State<EquipmentState>,
    ControlJson(update): ControlJson<SettingsUpdate>,
) -> Response {
    let mut device = state.lock();
    match device.settings.apply(update) {
        Ok(()) => {
            tracing::info!(settings = ?device.settings, "settings changed");
            Json(device.settings.clone()).into_response()
        }
        Err(error) => control::json_message(StatusCode::UNPROCESSABLE_ENTITY, error.to_string()),
    }
}

/// `GET /_control/requests`.
#[derive(Debug, Serialize)]
struct RequestsReport {
    requests: Vec<Received>,
    counts: BTreeMap<String, u64>,
}

async fn requests(State(state): State<EquipmentState>) -> Json<RequestsReport> {
    let device = state.lock();
    Json(RequestsReport { requests: device.requests.clone(), counts: device.counts.clone() })
}

async fn forget_requests(State(state): State<EquipmentState>) -> StatusCode {
    state.lock().forget();
    tracing::info!("requests and counts forgotten");
    StatusCode::NO_CONTENT
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: EquipmentConfig,
    }

    #[test]
    fn flag_defaults_are_the_config_defaults_and_fail_first_is_id_colon_n() {
        assert_eq!(Cli::parse_from(["x"]).config, EquipmentConfig::default());
        assert_eq!(EquipmentConfig::default().delay_ms, 60_000, "as slow as a real device");
        let cli = Cli::parse_from([
            "x",
            "--fail-first",
            "CPE000001:2,CPE000002:1",
            "--known-ids",
            "A1B2C3",
        ]);
        assert_eq!(
            cli.config.fail_first,
            [
                FailFirst { id: "CPE000001".into(), count: 2 },
                FailFirst { id: "CPE000002".into(), count: 1 }
            ]
        );
        assert_eq!(cli.config.known_ids, ["A1B2C3"]);
        assert!(Cli::try_parse_from(["x", "--fail-first", "CPE000001"]).is_err());
        assert!(Cli::try_parse_from(["x", "--fail-first", "CPE000001:two"]).is_err());
        assert!(Cli::try_parse_from(["x", "--fail-first", ":2"]).is_err());
        assert!(Cli::try_parse_from(["x", "--fail-rate", "2"]).is_err());
    }

    fn request() -> CpeRequest {
        serde_json::from_value(json!({"timeoutInSeconds": 14, "parameters": {"vlan": 534}}))
            .unwrap()
    }

    fn device(update: SettingsUpdate) -> Device {
        let mut device = Device::default();
        device.settings.apply(update).unwrap();
        device
    }

    #[test]
    fn known_ids_limit_what_is_found_and_unknown_ones_answer_at_once() {
        let known = Some(vec!["CPE000001".to_owned()]);
        let mut device =
            device(SettingsUpdate { known_ids: known, delay_ms: Some(5), ..Default::default() });
        let id = |s| EquipmentId::parse(s).unwrap();
        let now = Utc::now();
        assert_eq!(
            device.receive(&id("CPE000001"), request(), 0.5, now),
            Verdict { code: 200, delay: Duration::from_millis(5) }
        );
        assert_eq!(
            device.receive(&id("CPE000009"), request(), 0.5, now),
            Verdict { code: 404, delay: Duration::ZERO }
        );
        assert_eq!(
            device.counts,
            BTreeMap::from([("CPE000001".into(), 1), ("CPE000009".into(), 1)])
        );
        assert_eq!(device.requests.iter().map(|r| r.code).collect::<Vec<_>>(), [200, 404]);
    }

    #[test]
    fn failures_come_from_the_ids_the_first_requests_and_the_rate() {
        let mut device = device(SettingsUpdate {
            fail_ids: Some(vec![" BROKEN01 ".into(), "".into()]),
            fail_first: Some(BTreeMap::from([("FLAKY001".to_owned(), 2)])),
            fail_rate: Some(0.25),
            ..Default::default()
        });
        let id = |s| EquipmentId::parse(s).unwrap();
        let now = Utc::now();
        let code = |device: &mut Device, s, roll| device.receive(&id(s), request(), roll, now).code;
        assert_eq!(code(&mut device, "BROKEN01", 0.9), 500);
        assert_eq!(code(&mut device, "BROKEN01", 0.9), 500);
        assert_eq!(
            [0.9, 0.9, 0.9].map(|roll| code(&mut device, "FLAKY001", roll)),
            [500, 500, 200]
        );
        assert_eq!(code(&mut device, "HEALTHY1", 0.2), 500, "under the rate");
        assert_eq!(code(&mut device, "HEALTHY1", 0.25), 200);
        device.forget();
        assert_eq!(code(&mut device, "FLAKY001", 0.9), 500, "forgetting resets the counts");
    }

    #[test]
    fn an_out_of_range_rate_changes_nothing() {
        let mut settings = Settings { delay_ms: 7, ..Settings::default() };
        let update =
            SettingsUpdate { delay_ms: Some(1), fail_rate: Some(-0.1), ..Default::default() };
        assert_eq!(settings.apply(update), Err(InvalidSetting::FailRate(-0.1)));
        assert_eq!(settings.delay_ms, 7);
        let config = EquipmentConfig { fail_rate: 3.0, ..EquipmentConfig::default() };
        assert!(EquipmentState::new(config, CancellationToken::new()).is_err());
    }
}
