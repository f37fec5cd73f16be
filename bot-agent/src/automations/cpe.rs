//! CPE: activates a customer's equipment through the equipment config service ("service A").
//!
//! Payload: `{"equipment_id": …, "timeoutInSeconds": …, "parameters": …}`
//! ([`broker_config::CpePayload`]). The bot POSTs `{"timeoutInSeconds", "parameters"}` to
//! `{equipment-url}/api/v1/equipment/cpe/{id}` exactly as the client gave them (the timeout is
//! the device's, the parameters keep their shape) and waits for the answer, which the service
//! gives only once the device is configured (about a minute), up to the bot's answer timeout
//! (`--equipment-answer-timeout`, 120 s) or `timeoutInSeconds`, whichever is longer: cutting
//! the call short of the device's own timeout would only configure the device again.
//!
//! | answer | outcome |
//! |---|---|
//! | 200 `success` | COMPLETE, the service's JSON as output |
//! | 404 equipment not found, or another 4xx | failed, not retried: the request itself is wrong |
//! | 500 (any 5xx), 408, 429, no connection, no answer in time | failed, retried with backoff |
//!
//! The code inside the body wins over the HTTP status when both are there: a service that
//! answers every outcome with HTTP 200 and `{"code": 500, …}` is read right too. An answer in
//! the service's `{"code","message"}` shape fails the task with
//! [`broker_config::cpe::service_error`] (`404 The requested equipment is not found (equipment
//! config service)`), which the activation API reads back to answer the client as the service
//! did; any other answer is described without that form.

use std::time::Duration;

use broker_config::cpe::{self, CpeAnswer};
use broker_config::https::{self, HttpsClient, RequestError};
use broker_config::{Assignment, CpePayload};
use serde::Deserialize as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Outcome;

/// The CPE automation: where the equipment config service is and how to reach it.
#[derive(Debug, Clone)]
pub struct Cpe {
    client: HttpsClient,
    base_url: String,
    answer_timeout: Duration,
}

/// How long the bot waits for the service's answer by default.
pub const DEFAULT_ANSWER_TIMEOUT: Duration =
    Duration::from_secs(crate::config::DEFAULT_EQUIPMENT_ANSWER_TIMEOUT_SECS);

/// How long to wait for the service's answer to an activation whose device timeout is
/// `timeout_in_seconds`: the bot's answer timeout, or the device's if it is longer, since the
/// service may take that long by the client's own word. Pure.
pub fn answer_wait(answer_timeout: Duration, timeout_in_seconds: u32) -> Duration {
    answer_timeout.max(Duration::from_secs(timeout_in_seconds.into()))
}

impl Cpe {
    /// The automation for the service at `base_url` (`https://host:port`), reached with
    /// `client`. Refuses a URL a request could not be sent to.
    pub fn new(base_url: &str, client: HttpsClient) -> Result<Cpe, RequestError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        https::check_url(&base_url)?;
        Ok(Cpe { client, base_url, answer_timeout: DEFAULT_ANSWER_TIMEOUT })
    }

    /// The same automation, waiting up to `answer_timeout` for the service's answer (at least
    /// the activation's `timeoutInSeconds`).
    pub fn with_answer_timeout(self, answer_timeout: Duration) -> Cpe {
        Cpe { answer_timeout, ..self }
    }

    /// Runs a CPE task.
    pub async fn run(&self, assignment: &Assignment, cancel: &CancellationToken) -> Outcome {
        let payload = match assignment.payload.as_ref().map(CpePayload::from_value) {
            Some(Ok(payload)) => payload,
            Some(Err(error)) => return Outcome::fatal(format!("bad CPE payload: {error}")),
            None => {
                return Outcome::fatal(
                    "a CPE task needs a payload {equipment_id, timeoutInSeconds, parameters}",
                );
            }
        };
        let url = format!("{}{}", self.base_url, payload.equipment_id.path());
        let timeout = answer_wait(self.answer_timeout, payload.timeout_in_seconds);
        tracing::info!(equipment_id = %payload.equipment_id, device_timeout_s = payload.timeout_in_seconds, wait_s = timeout.as_secs(), "configuring the equipment");
        let request = payload.request();
        let response = tokio::select! {
            () = cancel.cancelled() => return Outcome::Cancelled,
            response = self.client.post_json(&url, &request, timeout) => response,
        };
        let outcome = judge_answer(response);
        tracing::info!(equipment_id = %payload.equipment_id, ?outcome, "equipment service answered");
        outcome
    }
}

/// What the service's answer (or the lack of one) means for the task. Pure.
pub fn judge_answer(response: Result<https::Response, RequestError>) -> Outcome {
    let response = match response {
        Ok(response) => response,
        Err(RequestError::Timeout(after)) => {
            return Outcome::retryable(format!(
                "the equipment config service did not answer within {} s",
                after.as_secs()
            ));
        }
        Err(error) => {
            return Outcome::retryable(format!(
                "cannot reach the equipment config service: {error}"
            ));
        }
    };
    let body: Option<Value> = response.json().ok();
    let answer = body.as_ref().and_then(|body| CpeAnswer::deserialize(body).ok());
    let code = answer.as_ref().map_or(response.status, |answer| answer.code);
    let (message, error) = match &answer {
        Some(answer) => (answer.message.clone(), cpe::service_error(answer)),
        None => {
            // Not the service's shape (a proxy's page, a wrong URL): described, never read back
            // as the service's own "not found".
            let text: String = String::from_utf8_lossy(&response.body).chars().take(200).collect();
            let error = format!("equipment config service answered HTTP {code}: {text}");
            (text, error)
        }
    };
    match code {
        200..=299 => Outcome::Completed {
            output: Some(body.unwrap_or_else(|| json!({ "code": code, "message": message }))),
        },
        408 | 429 | 500..=599 => Outcome::retryable(error),
        _ => Outcome::fatal(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    fn answer(status: u16, body: &str) -> Result<https::Response, RequestError> {
        Ok(https::Response { status, body: Bytes::from(body.to_owned()) })
    }

    #[test]
    fn answers_map_to_outcomes() {
        let ok = judge_answer(answer(200, r#"{"code":200,"message":"success"}"#));
        assert_eq!(
            ok,
            Outcome::Completed { output: Some(json!({"code": 200, "message": "success"})) }
        );
        let missing = judge_answer(answer(
            404,
            r#"{"code":404,"message":"The requested equipment is not found"}"#,
        ));
        assert_eq!(
            missing,
            Outcome::fatal("404 The requested equipment is not found (equipment config service)")
        );
        let failed = judge_answer(answer(
            500,
            r#"{"code":500,"message":"Internal provisioning exception"}"#,
        ));
        assert_eq!(
            failed,
            Outcome::retryable("500 Internal provisioning exception (equipment config service)")
        );
        // A 404 not in the service's shape is no "equipment not found".
        let wrong_url = judge_answer(answer(404, "<html>no such route</html>"));
        assert_eq!(
            wrong_url,
            Outcome::fatal(
                "equipment config service answered HTTP 404: <html>no such route</html>"
            )
        );
        assert!(matches!(
            judge_answer(answer(400, r#"{"code":400,"message":"bad"}"#)),
            Outcome::Failed { retryable: false, .. }
        ));
        assert!(
            matches!(judge_answer(answer(503, "<html>down</html>")), Outcome::Failed { retryable: true, ref error } if error.contains("HTTP 503: <html>down"))
        );
    }

    #[test]
    fn the_code_in_the_body_wins_over_the_http_status() {
        let failed = judge_answer(answer(
            200,
            r#"{"code":500,"message":"Internal provisioning exception"}"#,
        ));
        assert!(matches!(failed, Outcome::Failed { retryable: true, .. }));
        let missing = judge_answer(answer(
            200,
            r#"{"code":404,"message":"The requested equipment is not found"}"#,
        ));
        assert!(matches!(missing, Outcome::Failed { retryable: false, .. }));
        let plain = judge_answer(answer(200, "OK"));
        assert_eq!(
            plain,
            Outcome::Completed { output: Some(json!({"code": 200, "message": "OK"})) }
        );
    }

    #[test]
    fn the_bot_waits_its_answer_timeout_or_the_device_s_if_longer() {
        let two_minutes = Duration::from_secs(120);
        // The original example: a device timeout of 14 s, a device that takes a minute.
        assert_eq!(answer_wait(two_minutes, 14), two_minutes);
        assert_eq!(answer_wait(two_minutes, 600), Duration::from_secs(600));
        assert_eq!(answer_wait(Duration::from_secs(1), 1), Duration::from_secs(1));
        assert_eq!(DEFAULT_ANSWER_TIMEOUT, two_minutes);
    }

    #[test]
    fn no_answer_is_retried() {
        let late = judge_answer(Err(RequestError::Timeout(Duration::from_secs(14))));
        assert_eq!(
            late,
            Outcome::retryable("the equipment config service did not answer within 14 s")
        );
        let refused = judge_answer(Err(RequestError::Connect {
            address: "127.0.0.1:1".into(),
            reason: "refused".into(),
        }));
        assert!(matches!(refused, Outcome::Failed { retryable: true, .. }));
    }

    #[tokio::test]
    async fn bad_payloads_fail_for_good_without_a_call() {
        // Nothing listens on port 1: a call would fail retryably, a bad payload fatally.
        let cpe =
            Cpe::new("https://127.0.0.1:1", HttpsClient::insecure().expect("client")).expect("url");
        let mut task = Assignment {
            task: broker_config::TaskRef { task_id: uuid::Uuid::nil(), attempt: 1 },
            system: broker_config::System::CPE,
            description: "activation".into(),
            attachment: None,
            payload: None,
            resume_after_row: 0,
            offer_expires_at: chrono::Utc::now(),
        };
        let cancel = CancellationToken::new();
        assert!(matches!(cpe.run(&task, &cancel).await, Outcome::Failed { retryable: false, .. }));
        task.payload =
            Some(json!({"equipment_id": "bad-id", "timeoutInSeconds": 5, "parameters": {}}));
        assert!(
            matches!(cpe.run(&task, &cancel).await, Outcome::Failed { retryable: false, ref error } if error.starts_with("bad CPE payload"))
        );
        task.payload =
            Some(json!({"equipment_id": "CPE000001", "timeoutInSeconds": 5, "parameters": {}}));
        assert!(matches!(cpe.run(&task, &cancel).await, Outcome::Failed { retryable: true, .. }));
        assert!(Cpe::new("ftp://x", HttpsClient::insecure().expect("client")).is_err());
    }
}
