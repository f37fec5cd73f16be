//! Test support (feature `test-support`): a RabbitMQ vhost of a test's own, made and removed
//! through the management API, so tests never see each other's queues; and [`stomp`], a STOMP
//! producer.

use std::time::Duration;

pub mod stomp;

use serde_json::Value;

/// The management API, from `BOTLINE_TEST_RABBITMQ_API` (default: the local broker's, as guest).
pub fn management_api() -> String {
    std::env::var("BOTLINE_TEST_RABBITMQ_API")
        .unwrap_or_else(|_| "http://127.0.0.1:15672/api".into())
}

/// The AMQP server, from `BOTLINE_TEST_AMQP_SERVER` (default `amqp://guest:guest@127.0.0.1:5672`).
pub fn amqp_server() -> String {
    std::env::var("BOTLINE_TEST_AMQP_SERVER")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".into())
}

/// The AMQP-over-TLS server, from `BOTLINE_TEST_AMQPS_SERVER` (default
/// `amqps://guest:guest@127.0.0.1:5671`: the listener `scripts/services` configures).
pub fn amqps_server() -> String {
    std::env::var("BOTLINE_TEST_AMQPS_SERVER")
        .unwrap_or_else(|_| "amqps://guest:guest@127.0.0.1:5671".into())
}

/// Where `scripts/services` keeps the test certificates (`BOTLINE_TEST_TLS_DIR`, default
/// `/var/lib/botline-test-tls`): `ca.pem` signed RabbitMQ's `server.pem` (for 127.0.0.1 and
/// localhost) and `client.pem` (with `client-key.pem`); `other-ca.pem` signed nothing.
pub fn tls_dir() -> std::path::PathBuf {
    std::env::var_os("BOTLINE_TEST_TLS_DIR")
        .map_or_else(|| "/var/lib/botline-test-tls".into(), std::path::PathBuf::from)
}

/// The TLS flags that trust the test CA (and present no client certificate).
pub fn test_ca() -> crate::tls::AmqpTlsArgs {
    crate::tls::AmqpTlsArgs { amqp_ca_file: Some(tls_dir().join("ca.pem")), ..Default::default() }
}

/// `server` (scheme, user, host and port, perhaps a query) with `vhost` as its path.
fn with_vhost(server: &str, vhost: &str) -> String {
    match server.split_once('?') {
        Some((base, query)) => format!("{base}/{vhost}?{query}"),
        None => format!("{server}/{vhost}"),
    }
}

fn credentials() -> (String, String) {
    (
        std::env::var("BOTLINE_TEST_RABBITMQ_USER").unwrap_or_else(|_| "guest".into()),
        std::env::var("BOTLINE_TEST_RABBITMQ_PASSWORD").unwrap_or_else(|_| "guest".into()),
    )
}

/// Why the management API refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "RabbitMQ management API: {0} (is the rabbitmq_management plugin enabled? scripts/services enables it)"
)]
pub struct ManagementError(String);

/// A vhost for one test; dropping it deletes the vhost with everything in it, and the users the
/// test made through it (users are not per vhost in RabbitMQ: name them uniquely).
pub struct TestVhost {
    name: String,
    client: reqwest::Client,
    users: std::sync::Mutex<Vec<String>>,
}

impl TestVhost {
    /// Creates a uniquely named vhost and gives the test user every permission on it.
    pub async fn create(prefix: &str) -> Result<TestVhost, ManagementError> {
        let name = format!("botline-test-{prefix}-{}", uuid::Uuid::new_v4().simple());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ManagementError(e.to_string()))?;
        let vhost = TestVhost { name, client, users: std::sync::Mutex::default() };
        vhost.call(reqwest::Method::PUT, &format!("/vhosts/{}", vhost.encoded()), None).await?;
        let (user, _) = credentials();
        let all = serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"});
        vhost
            .call(
                reqwest::Method::PUT,
                &format!("/permissions/{}/{user}", vhost.encoded()),
                Some(all),
            )
            .await?;
        Ok(vhost)
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn encoded(&self) -> String {
        // Names are made of [a-z0-9-]: nothing to escape.
        self.name.clone()
    }

    /// An AMQP URL for this vhost.
    pub fn amqp_url(&self) -> String {
        with_vhost(&amqp_server(), &self.encoded())
    }

    /// An `amqps://` URL for this vhost, on RabbitMQ's TLS listener ([`amqps_server`]), with
    /// `tls`'s files in its query.
    pub fn amqps_url(&self, tls: &crate::tls::AmqpTlsArgs) -> String {
        tls.apply(&with_vhost(&amqps_server(), &self.encoded()))
    }

    /// An AMQP URL for this vhost, logging in as `user` with `password` (both percent-encoded).
    pub fn amqp_url_as(&self, user: &str, password: &str) -> String {
        let server = amqp_server();
        let (scheme, rest) = server.split_once("://").unwrap_or(("amqp", server.as_str()));
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let (user, password) = (percent_encode(user), percent_encode(password));
        with_vhost(&format!("{scheme}://{user}:{password}@{host}"), &self.encoded())
    }

    fn remember_user(&self, user: &str) {
        if let Ok(mut users) = self.users.lock()
            && !users.iter().any(|known| known == user)
        {
            users.push(user.to_owned());
        }
    }

    /// Creates the user `user` with `password` and `permissions` on this vhost (no tags: no
    /// management access). Deleted with the vhost.
    pub async fn create_user(
        &self,
        user: &str,
        password: &str,
        permissions: &crate::access::Permissions,
    ) -> Result<(), ManagementError> {
        self.remember_user(user);
        let body = serde_json::json!({"password": password, "tags": ""});
        self.call(reqwest::Method::PUT, &format!("/users/{}", percent_encode(user)), Some(body))
            .await?;
        let body = serde_json::json!({
            "configure": permissions.configure,
            "write": permissions.write,
            "read": permissions.read,
        });
        let path = format!("/permissions/{}/{}", self.encoded(), percent_encode(user));
        self.call(reqwest::Method::PUT, &path, Some(body)).await.map(|_| ())
    }

    /// Loads a definitions file (as `rabbitmqctl import_definitions` would), through the
    /// management API's `POST /api/definitions`. The users it defines are deleted with the vhost.
    pub async fn import_definitions(&self, definitions: &Value) -> Result<(), ManagementError> {
        for user in definitions["users"].as_array().into_iter().flatten() {
            if let Some(name) = user["name"].as_str() {
                self.remember_user(name);
            }
        }
        self.call(reqwest::Method::POST, "/definitions", Some(definitions.clone()))
            .await
            .map(|_| ())
    }

    /// The paths of the users this test made, for deletion.
    fn user_paths(&self) -> Vec<String> {
        let users = self.users.lock().map(|users| users.clone()).unwrap_or_default();
        users.iter().map(|user| format!("/users/{}", percent_encode(user))).collect()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ManagementError> {
        let (user, password) = credentials();
        let mut request = self
            .client
            .request(method, format!("{}{path}", management_api()))
            .basic_auth(user, Some(password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| ManagementError(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ManagementError(e.to_string()))?;
        if !status.is_success() {
            return Err(ManagementError(format!("{path}: {status} {text}")));
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        })
    }

    /// The names of the client connections to this vhost, as the management API lists them.
    pub async fn connection_names(&self) -> Result<Vec<String>, ManagementError> {
        let connections = self
            .call(reqwest::Method::GET, &format!("/vhosts/{}/connections", self.encoded()), None)
            .await?;
        Ok(connections
            .as_array()
            .map(|all| all.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// The client connections to this vhost, as the management API describes them (`name`,
    /// `ssl`, `peer_cert_subject`, …). A new connection is listed a few seconds late.
    pub async fn connections(&self) -> Result<Vec<Value>, ManagementError> {
        let connections = self
            .call(reqwest::Method::GET, &format!("/vhosts/{}/connections", self.encoded()), None)
            .await?;
        Ok(connections.as_array().cloned().unwrap_or_default())
    }

    /// Closes the client connections to this vhost from the server side, as a broker restart or a
    /// network cut would, once at least `expected` of them are listed (the management API lists
    /// a new connection a few seconds late). Returns how many were closed.
    pub async fn close_connections(&self, expected: usize) -> Result<usize, ManagementError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let names = loop {
            let names = self.connection_names().await?;
            if names.len() >= expected || tokio::time::Instant::now() >= deadline {
                break names;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        for name in &names {
            let path = format!("/connections/{}", percent_encode(name));
            // A connection may close by itself meanwhile: a 404 is fine.
            let _ = self.call(reqwest::Method::DELETE, &path, None).await;
        }
        Ok(names.len())
    }

    /// How many messages wait in `queue` (ready and unacknowledged), as the management API
    /// reports them (its figures lag by a few seconds).
    pub async fn queue(&self, queue: &str) -> Result<Value, ManagementError> {
        self.call(
            reqwest::Method::GET,
            &format!("/queues/{}/{}", self.encoded(), percent_encode(queue)),
            None,
        )
        .await
    }

    /// The names of the queues in this vhost.
    pub async fn queue_names(&self) -> Result<Vec<String>, ManagementError> {
        let queues =
            self.call(reqwest::Method::GET, &format!("/queues/{}", self.encoded()), None).await?;
        Ok(queues
            .as_array()
            .map(|all| all.iter().filter_map(|q| q["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// Deletes the vhost now, and the users the test made.
    pub async fn delete(self) -> Result<(), ManagementError> {
        for path in self.user_paths() {
            self.call(reqwest::Method::DELETE, &path, None).await?;
        }
        if let Ok(mut users) = self.users.lock() {
            users.clear();
        }
        let path = format!("/vhosts/{}", self.encoded());
        self.call(reqwest::Method::DELETE, &path, None).await.map(|_| ())
    }
}

/// A message taken from `botline.dead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The body, as it was.
    pub data: Vec<u8>,
    /// The publisher's message id, when it set one.
    pub message_id: Option<String>,
    /// Why it was dead-lettered (the `x-botline-reason` header).
    pub reason: Option<String>,
    /// The queue it was consumed from (the `x-botline-queue` header).
    pub queue: Option<String>,
    /// How many times handling it failed, when it was retried before (the
    /// `x-botline-failures` header).
    pub failures: Option<i64>,
    /// The routing key it was dead-lettered with: the one it was published with.
    pub routing_key: String,
}

fn header(headers: Option<&lapin::types::FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(text) => {
            Some(String::from_utf8_lossy(text.as_bytes()).into_owned())
        }
        _ => None,
    }
}

impl TestVhost {
    /// Takes `n` messages from `botline.dead`, in the order they arrive, waiting 30 s at most.
    pub async fn dead_letters(&self, n: usize) -> Result<Vec<DeadLetter>, ManagementError> {
        let failed = |e: lapin::Error| ManagementError(format!("reading botline.dead: {e}"));
        let connection =
            crate::amqp::connect(&self.amqp_url(), "test-dead-letters").await.map_err(failed)?;
        let channel = connection.create_channel().await.map_err(failed)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut found = Vec::new();
        while found.len() < n {
            if tokio::time::Instant::now() > deadline {
                return Err(ManagementError(format!(
                    "only {} of {n} dead letters arrived: {found:?}",
                    found.len()
                )));
            }
            let options = lapin::options::BasicGetOptions { no_ack: true };
            let queue = crate::topology::DEAD_LETTER_QUEUE;
            let Some(message) = channel.basic_get(queue.into(), options).await.map_err(failed)?
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let properties = &message.delivery.properties;
            let headers = properties.headers().as_ref();
            found.push(DeadLetter {
                message_id: properties.message_id().as_ref().map(|id| id.to_string()),
                reason: header(headers, "x-botline-reason"),
                queue: header(headers, "x-botline-queue"),
                failures: headers.and_then(|h| match h.inner().get(crate::amqp::FAILURES_HEADER) {
                    Some(lapin::types::AMQPValue::LongLongInt(n)) => Some(*n),
                    _ => None,
                }),
                routing_key: message.delivery.routing_key.to_string(),
                data: message.delivery.data.clone(),
            });
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(found)
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        // Drop may run during a panic and outside async code: delete from a thread of its own.
        let api = management_api();
        let mut paths = self.user_paths();
        paths.push(format!("/vhosts/{}", self.encoded()));
        let _ = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let (user, password) = credentials();
                let client = reqwest::Client::new();
                for path in paths {
                    let _ = client
                        .delete(format!("{api}{path}"))
                        .basic_auth(&user, Some(&password))
                        .send()
                        .await;
                }
            });
            Some(())
        })
        .join();
    }
}
