//! Where events go: to `botline.events` (AMQP mode, batched by [`AmqpReporter`]) or to the
//! orchestrator's REST API (HTTP mode, one call per event). The agent loop and the automations do
//! not know which.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use broker_config::messages::encode;
use broker_config::{Event, PublishError};
use uuid::Uuid;

use crate::batcher::AmqpReporter;

/// How many times HTTP mode tries a report before giving up on it.
const HTTP_REPORT_ATTEMPTS: u32 = 4;
/// The wait before the second try; it doubles after each failure.
const HTTP_REPORT_BACKOFF: Duration = Duration::from_millis(250);

/// Why an event could not be reported.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The broker did not confirm the event.
    #[error(transparent)]
    Amqp(#[from] PublishError),
    /// The orchestrator's API did not take the event.
    #[error("the orchestrator did not take the event: {0}")]
    Http(String),
    /// The reporter stopped before the event was sent (the agent is stopping).
    #[error("the event reporter stopped")]
    Stopped,
}

/// A report on its way: resolves once it is confirmed (or has failed).
pub type Submitted = Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + 'static>>;

/// The transport for events.
#[derive(Clone)]
pub enum Reporter {
    /// Published on `botline.events` with publisher confirms, several events to a message unless
    /// `--no-event-batches`.
    Amqp(AmqpReporter),
    /// `PUT` on the orchestrator's API.
    Http(HttpReporter),
}

impl Reporter {
    /// Sends `event`; `Ok` once the broker confirmed it (or the API answered 2xx).
    pub async fn report(&self, event: &Event) -> Result<(), ReportError> {
        match self {
            Reporter::Amqp(amqp) => amqp.submit(event.clone()).await,
            Reporter::Http(http) => http.report(event).await,
        }
    }

    /// Sends `event` as [`Reporter::report`] does, but queues it at once (AMQP mode), so no event
    /// reported after this call overtakes it; the returned future says when it is confirmed.
    /// In HTTP mode the call is made when the future is first polled.
    pub fn submit(&self, event: Event) -> Submitted {
        match self {
            Reporter::Amqp(amqp) => Box::pin(amqp.submit(event)),
            Reporter::Http(http) => {
                let http = http.clone();
                Box::pin(async move { http.report(&event).await })
            }
        }
    }

    /// Whether events go to the broker (AMQP mode).
    pub fn is_amqp(&self) -> bool {
        matches!(self, Reporter::Amqp(_))
    }
}

/// HTTP mode's reporter: task events go to `PUT {api}/api/v1/tasks/{task_id}`, bot events to
/// `PUT {api}/api/v1/bots/{bot_id}`, with the same JSON as on the broker.
#[derive(Debug, Clone)]
pub struct HttpReporter {
    client: reqwest::Client,
    api_url: String,
    bot_id: Uuid,
}

impl HttpReporter {
    /// A reporter for the bot registered as `bot_id` at the API `api_url`.
    pub fn new(client: reqwest::Client, api_url: &str, bot_id: Uuid) -> HttpReporter {
        HttpReporter { client, api_url: api_url.trim_end_matches('/').to_owned(), bot_id }
    }

    /// Where `event` is sent.
    pub fn url_for(&self, event: &Event) -> String {
        match event.task() {
            Some(task) => format!("{}/api/v1/tasks/{}", self.api_url, task.task_id),
            None => format!("{}/api/v1/bots/{}", self.api_url, self.bot_id),
        }
    }

    async fn report(&self, event: &Event) -> Result<(), ReportError> {
        let url = self.url_for(event);
        let body = encode(event);
        let mut delay = HTTP_REPORT_BACKOFF;
        let mut attempt = 1;
        loop {
            let failure = match self
                .client
                .put(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let failure = format!("{status} {}", text.trim());
                    // The API understood and refused (a stale attempt, a bad event): trying
                    // again changes nothing. Timeouts, throttling and 5xx may pass.
                    let retryable = status.is_server_error()
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                    if !retryable {
                        return Err(ReportError::Http(failure));
                    }
                    failure
                }
                Err(error) => error.to_string(),
            };
            if attempt >= HTTP_REPORT_ATTEMPTS {
                return Err(ReportError::Http(failure));
            }
            tracing::warn!(%url, event = event.routing_key(), attempt, %failure, "report failed; retrying");
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
        }
    }
}
