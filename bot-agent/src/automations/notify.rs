//! NOTIFY: delivers an incident communication to its channel's webhook.
//!
//! Payload: `{"channel","to","message","incident_id","communication_id", …}`. The bot POSTs
//! the payload as JSON to `{notify_url}/webhooks/{channel, lowercased}` with the header
//! `Idempotency-Key: <communication_id>`, so a delivery retried (a lost answer, a bot presumed
//! dead) is recorded once by the receiver. 2xx: completed. 4xx: failed, not retryable (the
//! receiver refuses this communication). 5xx, a timeout or no connection: failed, retryable.

use std::time::Duration;

use broker_config::Assignment;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Outcome;

/// How long a webhook may take to answer before the delivery counts as failed (retryable).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest channel name accepted in a webhook path.
const MAX_CHANNEL_CHARS: usize = 32;

/// The NOTIFY automation: where the webhooks are.
#[derive(Debug, Clone)]
pub struct Notify {
    client: reqwest::Client,
    base_url: String,
}

/// The fields a NOTIFY payload must have; the rest is delivered as is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NotifyPayload {
    /// The channel (`Push`, `SMS`, `internal`…): the webhook's name.
    pub channel: String,
    /// The recipient.
    pub to: String,
    /// The text.
    pub message: String,
    /// The communication, used as the idempotency key.
    pub communication_id: String,
}

impl NotifyPayload {
    /// Reads the fields the delivery needs, refusing a payload that cannot be delivered.
    pub fn parse(payload: Option<&Value>) -> Result<NotifyPayload, String> {
        let Some(value) = payload.filter(|v| v.is_object()) else {
            return Err("a NOTIFY task needs a JSON object payload".to_owned());
        };
        let payload = NotifyPayload::deserialize(value)
            .map_err(|error| format!("bad NOTIFY payload: {error}"))?;
        let channel = payload.channel.trim();
        let valid = !channel.is_empty()
            && channel.chars().count() <= MAX_CHANNEL_CHARS
            && channel.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "bad NOTIFY payload: channel '{channel}' must be 1 to {MAX_CHANNEL_CHARS} letters, digits, '-' or '_'"
            ));
        }
        if payload.communication_id.trim().is_empty() {
            return Err("bad NOTIFY payload: communication_id is empty".to_owned());
        }
        Ok(payload)
    }

    /// The webhook path: `/webhooks/{channel, lowercased}`.
    pub fn path(&self) -> String {
        format!("/webhooks/{}", self.channel.trim().to_ascii_lowercase())
    }
}

impl Notify {
    /// The automation for the webhooks under `base_url`.
    pub fn new(base_url: &str) -> Result<Notify, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Notify { client, base_url: base_url.trim_end_matches('/').to_owned() })
    }

    /// Delivers one communication.
    pub async fn run(&self, assignment: &Assignment, cancel: &CancellationToken) -> Outcome {
        let payload = match NotifyPayload::parse(assignment.payload.as_ref()) {
            Ok(payload) => payload,
            Err(error) => return Outcome::fatal(error),
        };
        let body = assignment.payload.clone().unwrap_or(Value::Null);
        let url = format!("{}{}", self.base_url, payload.path());
        let request = self
            .client
            .post(&url)
            .header("Idempotency-Key", payload.communication_id.trim())
            .json(&body)
            .send();
        let response = tokio::select! {
            () = cancel.cancelled() => return Outcome::Cancelled,
            response = request => response,
        };
        let status = match response {
            Ok(response) => response.status(),
            Err(error) => return Outcome::retryable(format!("UNREACHABLE webhook {url}: {error}")),
        };
        if status.is_success() {
            tracing::info!(%url, communication_id = %payload.communication_id, to = %payload.to, "communication delivered");
            Outcome::Completed {
                output: Some(json!({ "webhook": url, "status": status.as_u16() })),
            }
        } else if status.is_client_error() {
            Outcome::fatal(format!("{} webhook {url} refused the communication", status.as_u16()))
        } else {
            Outcome::retryable(format!("{} webhook {url} failed", status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_need_a_channel_a_recipient_a_message_and_an_id() {
        let good = json!({"channel": "Push", "to": "All app users", "message": "down",
                          "incident_id": "i", "communication_id": "c-1"});
        let payload = NotifyPayload::parse(Some(&good)).expect("valid");
        assert_eq!(payload.path(), "/webhooks/push");
        assert!(NotifyPayload::parse(None).is_err());
        assert!(NotifyPayload::parse(Some(&json!([1]))).is_err());
        assert!(NotifyPayload::parse(Some(&json!({"channel": "Push"}))).is_err());
        let mut bad_channel = good.clone();
        bad_channel["channel"] = json!("../admin");
        assert!(NotifyPayload::parse(Some(&bad_channel)).is_err());
        let mut no_id = good;
        no_id["communication_id"] = json!(" ");
        assert!(NotifyPayload::parse(Some(&no_id)).is_err());
    }
}
