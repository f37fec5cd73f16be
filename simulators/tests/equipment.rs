//! The equipment config service over real HTTPS (and HTTP), reached with the bots' own client.
#![allow(clippy::unwrap_used)]

use std::io;
use std::time::Duration;

use broker_config::https::TlsMaterial;
use broker_config::https::{HttpsClient, Method, RequestError, Response};
use serde_json::{Value, json};
use simulators::equipment::{self, EquipmentConfig, FailFirst};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any one request may take in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// A service on 127.0.0.1:0, stopped when dropped, and a client that trusts it.
struct Service {
    base: String,
    client: HttpsClient,
    material: Option<TlsMaterial>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<io::Result<()>>>,
}

impl Service {
    async fn https(config: EquipmentConfig) -> Service {
        Service::https_with(config, simulators::tls::self_signed().unwrap()).await
    }

    async fn https_with(config: EquipmentConfig, material: TlsMaterial) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let serve = equipment::serve_tls(listener, config, material.clone(), shutdown.clone());
        let client = HttpsClient::with_ca_pem(material.cert_pem.as_bytes()).unwrap();
        Service {
            base,
            client,
            material: Some(material),
            shutdown,
            handle: Some(tokio::spawn(serve)),
        }
    }

    async fn http(config: EquipmentConfig) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let serve = equipment::serve(listener, config, shutdown.clone());
        let client = HttpsClient::insecure().unwrap();
        Service { base, client, material: None, shutdown, handle: Some(tokio::spawn(serve)) }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn configure_raw(&self, id: &str, body: &[u8]) -> Result<Response, RequestError> {
        let url = self.url(&format!("/api/v1/equipment/cpe/{id}"));
        self.client.request(Method::POST, &url, Some(body.to_vec()), WAIT).await
    }

    /// POSTs a configuration request; the status and JSON answer.
    async fn configure(&self, id: &str, body: Value) -> (u16, Value) {
        let response = self.configure_raw(id, &serde_json::to_vec(&body).unwrap()).await.unwrap();
        (response.status, response.json().unwrap())
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = method.parse().unwrap();
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let response = self.client.request(method, &self.url(path), body, WAIT).await.unwrap();
        let json = if response.body.is_empty() { Value::Null } else { response.json().unwrap() };
        (response.status, json)
    }

    async fn requests(&self) -> Value {
        let (status, report) = self.control("GET", "/_control/requests", None).await;
        assert_eq!(status, 200);
        report
    }

    async fn stop(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle.take().unwrap())
            .await
            .expect("the service stops within the wait")
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn fast() -> EquipmentConfig {
    EquipmentConfig { delay_ms: 20, ..EquipmentConfig::default() }
}

fn activation() -> Value {
    json!({"timeoutInSeconds": 14, "parameters": {"username": "admin", "password": "admin", "vlan": 534, "interfaces": [1, 2, 3, 4]}})
}

/// The original interface's shape of `parameters`: a list of one-key objects.
fn listed_parameters() -> Value {
    json!([{"username": "admin"}, {"password": "admin"}, {"vlan": 534}, {"interfaces": [1, 2, 3, 4]}])
}

fn success() -> Value {
    json!({"code": 200, "message": "success"})
}

fn not_found() -> Value {
    json!({"code": 404, "message": "The requested equipment is not found"})
}

fn provisioning_failed() -> Value {
    json!({"code": 500, "message": "Internal provisioning exception"})
}

#[tokio::test]
async fn a_configuration_succeeds_over_https_and_is_recorded() {
    let service = Service::https(fast()).await;
    assert_eq!(service.configure("CPE000001", activation()).await, (200, success()));
    // The original example's shape: parameters as a list of one-key objects.
    let listed = json!({"timeoutInSeconds": 14, "parameters": listed_parameters()});
    assert_eq!(service.configure("CPE000001", listed).await, (200, success()));
    assert_eq!(service.configure("a1b2c3d4e5", activation()).await, (200, success()));

    let report = service.requests().await;
    assert_eq!(report["counts"], json!({"CPE000001": 2, "a1b2c3d4e5": 1}));
    let requests = report["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 3);
    // Recorded in the shape they came in (they used to be normalised to one object).
    let shapes: Vec<&Value> = requests.iter().map(|r| &r["parameters"]).collect();
    assert_eq!(
        shapes,
        [&activation()["parameters"], &listed_parameters(), &activation()["parameters"]]
    );
    for request in requests {
        assert_eq!((&request["timeoutInSeconds"], &request["code"]), (&json!(14), &json!(200)));
    }
    assert_eq!(service.control("DELETE", "/_control/requests", None).await.0, 204);
    assert_eq!(service.requests().await, json!({"requests": [], "counts": {}}));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_and_unknown_equipment_is_not_found_at_once() {
    // A device takes a minute; a missing one is answered at once (the client waits 10 s).
    let config = EquipmentConfig {
        delay_ms: 60_000,
        known_ids: vec!["CPE000001".into()],
        ..EquipmentConfig::default()
    };
    let service = Service::https(config).await;
    for id in ["abc12", "CPE-00001", "CPE000002", &"A".repeat(65)] {
        assert_eq!(service.configure(id, activation()).await, (404, not_found()), "{id}");
    }
    // Only the well-formed id is recorded: it reached the device inventory.
    assert_eq!(service.requests().await["counts"], json!({"CPE000002": 1}));
    service.control("PUT", "/_control", Some(json!({"delay_ms": 10}))).await;
    assert_eq!(service.configure("CPE000001", activation()).await, (200, success()));
}

#[tokio::test]
async fn bodies_that_are_not_requests_are_refused_with_a_reason() {
    let service = Service::https(fast()).await;
    let cases: [(&[u8], &str); 6] = [
        (b"{\"parameters\": {}}", "missing field `timeoutInSeconds`"),
        (b"{\"timeoutInSeconds\": 5}", "missing field `parameters`"),
        (b"{\"timeoutInSeconds\": \"5\", \"parameters\": {}}", "whole number of seconds"),
        (b"{\"timeoutInSeconds\": 5, \"parameters\": 7}", "invalid type"),
        (b"{\"timeoutInSeconds\": 5, \"parameters\": [{\"a\": 1, \"b\": 2}]}", "exactly one key"),
        (b"not json", "expected"),
    ];
    for (body, reason) in cases {
        let response = service.configure_raw("CPE000001", body).await.unwrap();
        let answer: Value = response.json().unwrap();
        assert_eq!((response.status, &answer["code"]), (400, &json!(400)), "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message} should say {reason}");
    }
    assert_eq!(service.requests().await["requests"], json!([]));
}

#[tokio::test]
async fn failures_are_injected_by_id_by_first_requests_and_by_rate() {
    let config = EquipmentConfig {
        fail_ids: vec!["BROKEN001".into()],
        fail_first: vec![FailFirst { id: "FLAKY0001".into(), count: 2 }],
        ..fast()
    };
    let service = Service::https(config).await;
    assert_eq!(service.configure("BROKEN001", activation()).await, (500, provisioning_failed()));
    assert_eq!(service.configure("BROKEN001", activation()).await, (500, provisioning_failed()));
    let mut flaky = Vec::new();
    for _ in 0..3 {
        flaky.push(service.configure("FLAKY0001", activation()).await.0);
    }
    assert_eq!(flaky, [500, 500, 200]);

    let (status, settings) =
        service.control("PUT", "/_control", Some(json!({"fail_rate": 1.0}))).await;
    assert_eq!(status, 200);
    assert_eq!(settings["fail_rate"], 1.0);
    assert_eq!(settings["fail_first"], json!({"FLAKY0001": 2}));
    assert_eq!(service.configure("HEALTHY01", activation()).await.0, 500);
    let (status, refused) =
        service.control("PUT", "/_control", Some(json!({"fail_rate": 2, "delay_ms": 1}))).await;
    assert_eq!(status, 422, "{refused}");
    let (_, settings) = service.control("GET", "/_control", None).await;
    assert_eq!((&settings["fail_rate"], &settings["delay_ms"]), (&json!(1.0), &json!(20)));
    let report = service.requests().await;
    let codes: Vec<u64> = report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 500, 500, 200, 500]);
}

#[tokio::test]
async fn a_slow_device_outlasts_a_short_timeout_but_the_request_arrived() {
    let service =
        Service::https(EquipmentConfig { delay_ms: 1500, ..EquipmentConfig::default() }).await;
    let url = service.url("/api/v1/equipment/cpe/SLOW00001");
    let body = serde_json::to_vec(&activation()).unwrap();
    let late = service.client.request(Method::POST, &url, Some(body), Duration::from_secs(1)).await;
    assert_eq!(late, Err(RequestError::Timeout(Duration::from_secs(1))));
    assert_eq!(service.requests().await["counts"], json!({"SLOW00001": 1}));
}

#[tokio::test]
async fn only_clients_that_trust_the_certificate_get_through() {
    let service = Service::https(fast()).await;
    let stranger = simulators::tls::self_signed().unwrap();
    let wary = HttpsClient::with_ca_pem(stranger.cert_pem.as_bytes()).unwrap();
    let url = service.url("/_control");
    let refused = wary.get(&url, WAIT).await;
    assert!(matches!(refused, Err(RequestError::Tls { .. })), "{refused:?}");
    let insecure = HttpsClient::insecure().unwrap();
    assert_eq!(insecure.get(&url, WAIT).await.unwrap().status, 200);
    // The certificate names localhost as well as 127.0.0.1.
    let port = service.base.rsplit(':').next().unwrap();
    let by_name = format!("https://localhost:{port}/_control");
    assert_eq!(service.client.get(&by_name, WAIT).await.unwrap().status, 200);
}

#[tokio::test]
async fn certificate_files_are_served_and_plain_http_works_too() {
    let material = simulators::tls::self_signed().unwrap();
    let dir = std::env::temp_dir().join(format!("botline-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &material.cert_pem).unwrap();
    std::fs::write(&key, &material.key_pem).unwrap();
    let from_files = TlsMaterial::from_files(&cert, &key).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(from_files, material);
    let service = Service::https_with(fast(), from_files).await;
    assert!(service.material.is_some());
    assert_eq!(service.configure("CPE000001", activation()).await, (200, success()));

    let plain = Service::http(fast()).await;
    assert!(plain.base.starts_with("http://"));
    assert_eq!(plain.configure("CPE000001", activation()).await, (200, success()));
    plain.stop().await.unwrap();
}

#[tokio::test]
async fn stopping_cuts_a_configuration_short() {
    let service = Service::https(EquipmentConfig::default()).await;
    let url = service.url("/api/v1/equipment/cpe/CPE000001");
    let client = service.client.clone();
    let body = serde_json::to_vec(&activation()).unwrap();
    let pending =
        tokio::spawn(async move { client.request(Method::POST, &url, Some(body), WAIT).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while service.requests().await["counts"] != json!({"CPE000001": 1}) {
        assert!(tokio::time::Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A real device's minute (the default delay) does not hold the service up.
    service.stop().await.unwrap();
    let answer = pending.await.unwrap().unwrap();
    assert_eq!(answer.status, 503);
}

#[tokio::test]
async fn a_strict_service_takes_only_the_original_list_of_parameters() {
    let service = Service::https(EquipmentConfig { strict_parameters: true, ..fast() }).await;
    let listed = json!({"timeoutInSeconds": 14, "parameters": listed_parameters()});
    assert_eq!(service.configure("CPE000001", listed).await, (200, success()));
    let (status, refused) = service.configure("CPE000001", activation()).await;
    assert_eq!((status, &refused["code"]), (400, &json!(400)), "{refused}");
    assert_eq!(refused["message"], equipment::STRICT_PARAMETERS_MESSAGE);
    let report = service.requests().await;
    assert_eq!(report["counts"], json!({"CPE000001": 1}), "the refused object is not recorded");
    assert_eq!(report["requests"][0]["parameters"], listed_parameters());
    // Strictness is a setting like the others.
    let (_, settings) = service.control("GET", "/_control", None).await;
    assert_eq!(settings["strict_parameters"], true);
    service.control("PUT", "/_control", Some(json!({"strict_parameters": false}))).await;
    assert_eq!(service.configure("CPE000001", activation()).await, (200, success()));
}

#[tokio::test]
async fn the_health_routes_answer_where_such_services_keep_them() {
    let service = Service::https(fast()).await;
    for path in ["/api/v1/health", "/healthz"] {
        assert_eq!(
            service.control("GET", path, None).await,
            (200, json!({"status": "ok"})),
            "{path}"
        );
    }
}
