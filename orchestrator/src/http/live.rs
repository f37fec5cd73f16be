//! `GET /api/v1/events`: committed changes as server-sent events, for live views.
//!
//! Events: `hello` when the stream opens (and again after every reconnect, so a client reloads
//! what it shows), `change` with a [`crate::changes::Change`] as JSON, and `resync` when the
//! client read too slowly and missed notices. A comment every 15 s keeps proxies from closing
//! an idle stream; the browser's `EventSource` reconnects by itself.

use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::auth::AnyCaller;

/// The change stream.
#[utoipa::path(get, path = "/api/v1/events", tag = "live",
    responses((status = 200, description = "text/event-stream of `hello`, `change` ({\"type\":\"task\"|\"bot\",\"id\":…}) and `resync` events", content_type = "text/event-stream")))]
pub async fn events(
    AnyCaller(state): AnyCaller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.pipeline.changes.subscribe();
    let closing = state.pipeline.changes.closing();
    let hello = Event::default().event("hello").data("{}");
    let stream = futures_util::stream::unfold(
        (receiver, closing, Some(hello)),
        |(mut receiver, closing, first)| async move {
            if let Some(hello) = first {
                return Some((Ok(hello), (receiver, closing, None)));
            }
            // The orchestrator stopping ends the stream (a client reconnects elsewhere).
            let received = tokio::select! {
                () = closing.cancelled() => return None,
                received = receiver.recv() => received,
            };
            let event = match received {
                Ok(change) => Event::default()
                    .event("change")
                    .json_data(&change)
                    .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
                Err(RecvError::Lagged(missed)) => {
                    Event::default().event("resync").data(missed.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (receiver, closing, None)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
}
