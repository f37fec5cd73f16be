//! Live change notices for the dashboard: after every commit that changes a task or a bot, a
//! [`Change`] goes to a bounded broadcast channel that `/api/v1/events` streams as server-sent
//! events. Sending never waits: a browser that reads too slowly misses notices and is told to
//! resync (reload what it shows), so no viewer can hold the orchestrator back.

use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How many notices a slow viewer may fall behind before it must resync.
pub const BUFFER: usize = 1024;

/// What changed. Viewers fetch the current state themselves; the notice only says where to look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Change {
    /// A task was created, changed or deleted.
    Task {
        /// The task.
        id: Uuid,
    },
    /// A bot was registered, changed (status, heartbeat) or deleted.
    Bot {
        /// The bot.
        id: Uuid,
    },
}

/// The sending side, cheap to clone.
#[derive(Debug, Clone)]
pub struct Changes {
    sender: broadcast::Sender<Change>,
    /// Fired when the orchestrator stops: the streams end, so that the server's graceful
    /// shutdown, which waits for every open request, is not held by a viewer forever.
    closing: tokio_util::sync::CancellationToken,
}

impl Default for Changes {
    fn default() -> Changes {
        Changes { sender: broadcast::channel(BUFFER).0, closing: Default::default() }
    }
}

impl Changes {
    /// Announces a changed task (a no-op when nobody watches).
    pub fn task(&self, id: Uuid) {
        let _ = self.sender.send(Change::Task { id });
    }

    /// Announces a changed bot (a no-op when nobody watches).
    pub fn bot(&self, id: Uuid) {
        let _ = self.sender.send(Change::Bot { id });
    }

    /// A new viewer's stream of notices.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }

    /// Ends every viewer's stream (the orchestrator is stopping).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Fires once [`Changes::close`] was called.
    pub fn closing(&self) -> tokio_util::sync::CancellationToken {
        self.closing.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_viewer_is_told_it_lagged_and_the_sender_never_waits() {
        let changes = Changes::default();
        let mut viewer = changes.subscribe();
        let id = Uuid::nil();
        for _ in 0..BUFFER + 10 {
            changes.task(id); // returns at once even though nobody reads
        }
        assert!(matches!(viewer.recv().await, Err(broadcast::error::RecvError::Lagged(10))));
        assert_eq!(viewer.recv().await, Ok(Change::Task { id }));
        assert_eq!(
            serde_json::to_string(&Change::Bot { id }).expect("json"),
            format!(r#"{{"type":"bot","id":"{id}"}}"#)
        );
    }
}
