//! The queue manager: one task owns the [`CallQueue`], connections talk to it.
//!
//! - [`QueueHandle::spawn`] starts the task that owns the queue. It applies commands one at
//!   a time, in arrival order, and sleeps until the earliest ring deadline to expire
//!   unanswered rings; what expiry produces is broadcast to every connection.
//! - [`serve_connection`] speaks the [`protocol`](crate::protocol) on any byte stream: a TCP
//!   socket here, an in-memory pipe in the client's `--local` mode. Each request gets
//!   exactly one reply, [`command_reply`] or an error.
//! - [`run`] accepts TCP connections until its shutdown token is cancelled.

use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::command::Command;
use crate::protocol::{FrameError, JsonCodec, MAX_REQUEST_BYTES, Reply, encode_line};
use crate::queue::{CallQueue, Event, QueueError};

/// How many unprompted messages a slow connection may fall behind before it loses some.
const BROADCAST_CAPACITY: usize = 256;

/// How many commands may wait for the queue task; senders wait beyond that.
const REQUEST_CAPACITY: usize = 64;

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Reading from or writing to the peer failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// A reply could not be serialized (the protocol's types always serialize).
    #[error("could not encode a reply: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a command produced: its messages, or why it was refused.
pub type Outcome = Result<Vec<Event>, QueueError>;

struct Request {
    command: Command,
    outcome: oneshot::Sender<Outcome>,
}

/// A cheap, cloneable way to reach the task that owns the queue.
///
/// The task stops when every handle is dropped.
#[derive(Debug, Clone)]
pub struct QueueHandle {
    requests: mpsc::Sender<Request>,
    unprompted: broadcast::Sender<Event>,
}

impl QueueHandle {
    /// Starts the task that owns `queue`, on the current tokio runtime.
    pub fn spawn(queue: CallQueue) -> (Self, JoinHandle<()>) {
        let (requests, receiver) = mpsc::channel(REQUEST_CAPACITY);
        let (unprompted, _) = broadcast::channel(BROADCAST_CAPACITY);
        let task = tokio::spawn(own_queue(queue, receiver, unprompted.clone()));
        (Self { requests, unprompted }, task)
    }

    /// Applies `command` and returns what it produced, or `None` if the queue task has
    /// stopped.
    ///
    /// Messages that timeouts produced up to this command are broadcast before this
    /// returns, so a subscriber that drains its receiver first shows them in order.
    pub async fn submit(&self, command: Command) -> Option<Outcome> {
        let (outcome, receiver) = oneshot::channel();
        self.requests.send(Request { command, outcome }).await.ok()?;
        receiver.await.ok()
    }

    /// Subscribes to the messages no command caused: rings ignored past their timeout and
    /// the deliveries that follow.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.unprompted.subscribe()
    }
}

/// The queue task: commands in arrival order, expiry at each ring deadline.
async fn own_queue(
    mut queue: CallQueue,
    mut requests: mpsc::Receiver<Request>,
    unprompted: broadcast::Sender<Event>,
) {
    let expire = |queue: &mut CallQueue, now: Instant| {
        for event in queue.expire(now.into_std()) {
            info!(%event, "unprompted");
            // No subscriber means no connection to tell: nothing is lost that anyone awaits.
            let _ = unprompted.send(event);
        }
    };
    loop {
        let deadline = queue.next_deadline().map(Instant::from_std);
        tokio::select! {
            request = requests.recv() => {
                let Some(Request { command, outcome }) = request else {
                    break;
                };
                let now = Instant::now();
                // A ring past its deadline was ignored before this command arrived, even
                // if the timer has not fired yet.
                expire(&mut queue, now);
                debug!(?command, "applying");
                let result = queue.apply(command, now.into_std());
                // The connection may have gone meanwhile; the command still took effect.
                let _ = outcome.send(result);
            }
            () = sleep_until(deadline) => expire(&mut queue, Instant::now()),
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Serves one client on `stream` until it half-closes, the queue stops or `shutdown` is
/// cancelled; then closes the write side.
///
/// Requests are read as a stream of JSON objects (see [`JsonCodec`]); each gets exactly
/// one reply line, in order, and one that is not a valid request gets an error reply and
/// the connection goes on. Unprompted messages are written between replies as they
/// happen, one line each.
pub async fn serve_connection<S>(
    stream: S,
    queue: QueueHandle,
    shutdown: CancellationToken,
) -> Result<(), ConnectionError>
where
    S: AsyncRead + AsyncWrite,
{
    let mut unprompted = queue.subscribe();
    let (reader, writer) = tokio::io::split(stream);
    let mut requests = FramedRead::new(reader, JsonCodec::<Command>::new(MAX_REQUEST_BYTES));
    let mut writer = BufWriter::new(writer);
    loop {
        let mut replies = Vec::new();
        tokio::select! {
            () = shutdown.cancelled() => break,
            request = requests.next() => {
                let Some(request) = request else {
                    debug!("client finished sending");
                    break;
                };
                match request? {
                    Err(error) => replies.push(invalid_request(&error)),
                    Ok(command) => {
                        let Some(outcome) = queue.submit(command).await else {
                            break;
                        };
                        // Timeouts that happened before this command come first, as
                        // messages of their own.
                        while let Ok(event) = unprompted.try_recv() {
                            replies.push(response(&event));
                        }
                        replies.push(command_reply(&outcome));
                    }
                }
            }
            event = unprompted.recv() => match event {
                Ok(event) => replies.push(response(&event)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "connection too slow for unprompted messages");
                    replies.push(Reply::Error(format!(
                        "{missed} messages were lost because this connection reads too slowly"
                    )));
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
        write_replies(&mut writer, &replies).await?;
    }
    writer.shutdown().await?;
    Ok(())
}

/// An unprompted message: one event, one reply line, as before command replies were
/// grouped; clients written for that keep working.
fn response(event: &Event) -> Reply {
    Reply::Response(event.to_string())
}

/// The one reply to a command: every message it produced, joined by `\n`, or why it was
/// refused.
pub fn command_reply(outcome: &Outcome) -> Reply {
    match outcome {
        Ok(events) => {
            let lines: Vec<String> = events.iter().map(ToString::to_string).collect();
            Reply::Response(lines.join("\n"))
        }
        Err(error) => Reply::Error(error.to_string()),
    }
}

/// The reply to bytes that are not a valid request.
fn invalid_request(error: &FrameError) -> Reply {
    Reply::Error(format!("invalid request: {error}"))
}

async fn write_replies<W>(writer: &mut W, replies: &[Reply]) -> Result<(), ConnectionError>
where
    W: AsyncWrite + Unpin,
{
    if replies.is_empty() {
        return Ok(());
    }
    for reply in replies {
        writer.write_all(&encode_line(reply)?).await?;
    }
    writer.flush().await?;
    Ok(())
}

/// Runs the queue manager on `listener` until `shutdown` is cancelled, serving many
/// clients at once against one shared `queue`.
///
/// Returns once every connection has closed. Accept errors (such as running out of file
/// descriptors) are logged and retried after a short pause rather than ending the server.
pub async fn run(listener: TcpListener, queue: CallQueue, shutdown: CancellationToken) {
    let (handle, queue_task) = QueueHandle::spawn(queue);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = info_span!("connection", %peer);
                    let (handle, shutdown) = (handle.clone(), shutdown.clone());
                    connections.spawn(
                        async move {
                            info!("connected");
                            match serve_connection(stream, handle, shutdown).await {
                                Ok(()) => info!("disconnected"),
                                Err(error) => warn!(%error, "connection ended"),
                            }
                        }
                        .instrument(span),
                    );
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow with every client.
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    warn!(%error, "connection task failed");
                }
            }
        }
    }
    drop(handle);
    while connections.join_next().await.is_some() {}
    // Every handle is gone now, so the queue task ends.
    if let Err(error) = queue_task.await {
        warn!(%error, "queue task failed");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream, Lines};

    use super::*;
    use crate::command::{CallId, OperatorId};
    use crate::queue::{Operators, RingTimeout};

    /// A client of [`serve_connection`] over an in-memory pipe.
    struct TestClient {
        lines: Lines<BufReader<tokio::io::ReadHalf<DuplexStream>>>,
        writer: tokio::io::WriteHalf<DuplexStream>,
    }

    impl TestClient {
        fn connect(queue: &QueueHandle) -> Self {
            let (client_end, server_end) = tokio::io::duplex(4096);
            tokio::spawn(serve_connection(server_end, queue.clone(), CancellationToken::new()));
            let (reader, writer) = tokio::io::split(client_end);
            Self { lines: BufReader::new(reader).lines(), writer }
        }

        async fn send(&mut self, line: &str) {
            self.writer.write_all(format!("{line}\n").as_bytes()).await.expect("server reads");
        }

        async fn receive(&mut self, count: usize) -> Vec<String> {
            let mut lines = Vec::new();
            for _ in 0..count {
                let line = self.lines.next_line().await.expect("server writes");
                lines.push(line.expect("server still connected"));
            }
            lines
        }
    }

    fn queue(timeout_seconds: u64) -> QueueHandle {
        let operators: Operators = "A,B".parse().expect("valid operators");
        let timeout =
            RingTimeout::new(Duration::from_secs(timeout_seconds)).expect("valid ring timeout");
        QueueHandle::spawn(CallQueue::new(&operators, timeout)).0
    }

    // Paused time: the runtime jumps to the ring deadline as soon as every task waits.
    #[tokio::test(start_paused = true)]
    async fn an_ignored_ring_reaches_every_connection() {
        let queue = queue(10);
        let mut caller = TestClient::connect(&queue);
        let mut watcher = TestClient::connect(&queue);
        caller.send(r#"{"command":"call","id":"1"}"#).await;
        assert_eq!(
            caller.receive(1).await,
            [r#"{"response":"Call 1 received\nCall 1 ringing for operator A"}"#]
        );
        // Each unprompted message is a line of its own, as it was before replies were
        // grouped per command.
        let unprompted = [
            r#"{"response":"Call 1 ignored by operator A"}"#,
            r#"{"response":"Call 1 ringing for operator B"}"#,
        ];
        assert_eq!(caller.receive(2).await, unprompted);
        assert_eq!(watcher.receive(2).await, unprompted);

        // A no longer has the call; B lets it ring too, and it comes back to A.
        caller.send(r#"{"command":"answer","id":"A"}"#).await;
        assert_eq!(
            caller.receive(3).await,
            [
                r#"{"error":"operator A has no ringing call"}"#,
                r#"{"response":"Call 1 ignored by operator B"}"#,
                r#"{"response":"Call 1 ringing for operator A"}"#,
            ]
        );
        caller.send(r#"{"command":"answer","id":"A"}"#).await;
        assert_eq!(caller.receive(1).await, [r#"{"response":"Call 1 answered by operator A"}"#]);
        // The watcher saw only what no command of its own caused.
        assert_eq!(
            watcher.receive(2).await,
            [
                r#"{"response":"Call 1 ignored by operator B"}"#,
                r#"{"response":"Call 1 ringing for operator A"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn a_bad_line_gets_an_error_and_the_connection_goes_on() {
        let queue = queue(10);
        let mut client = TestClient::connect(&queue);
        client.send("not json").await;
        client.send("").await;
        client.send(r#"{"command":"dial","id":"1"}"#).await;
        client.send(r#"{"command":"answer","id":"A"}"#).await;
        client.send(r#"{"command":"call","id":"7"}"#).await;
        // One reply per request; the blank line is no request.
        let replies = client.receive(4).await;
        assert_eq!(replies[0], r#"{"error":"invalid request: expected a JSON object"}"#);
        assert!(
            replies[1].starts_with(r#"{"error":"invalid request: unknown variant `dial`"#),
            "{replies:?}"
        );
        assert_eq!(
            replies[2..],
            [
                r#"{"error":"operator A has no ringing call"}"#,
                r#"{"response":"Call 7 received\nCall 7 ringing for operator A"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn the_server_closes_after_the_client_half_closes() {
        let queue = queue(10);
        let mut client = TestClient::connect(&queue);
        client.send(r#"{"command":"call","id":"1"}"#).await;
        client.writer.shutdown().await.expect("half-close");
        assert_eq!(client.receive(1).await.len(), 1);
        let end = client.lines.next_line().await.expect("clean end of stream");
        assert_eq!(end, None);
    }

    #[test]
    fn a_command_reply_holds_every_line_the_command_printed() {
        let call = |id: &str| CallId::parse(id).expect("valid call id");
        let operator = OperatorId::parse("A").expect("valid operator");
        let outcome: Outcome = Ok(vec![
            Event::Missed { call: call("5") },
            Event::Ringing { call: call("6"), operator },
        ]);
        assert_eq!(
            command_reply(&outcome),
            Reply::Response("Call 5 missed\nCall 6 ringing for operator A".to_owned())
        );
        let refused: Outcome = Err(QueueError::UnknownCall(call("9")));
        assert_eq!(command_reply(&refused), Reply::Error("unknown call 9".to_owned()));
    }

    #[tokio::test]
    async fn a_request_without_a_newline_is_answered_and_a_truncated_one_is_reported() {
        let queue = queue(10);
        let mut client = TestClient::connect(&queue);
        client.writer.write_all(br#"{"command": "call", "id": "1"}"#).await.expect("server reads");
        assert_eq!(
            client.receive(1).await,
            [r#"{"response":"Call 1 received\nCall 1 ringing for operator A"}"#]
        );
        client.writer.write_all(br#"{"command": "hangup", "#).await.expect("server reads");
        client.writer.shutdown().await.expect("half-close");
        assert_eq!(
            client.receive(1).await,
            [
                r#"{"error":"invalid request: the connection ended inside an unfinished JSON object"}"#
            ]
        );
        assert_eq!(client.lines.next_line().await.expect("clean end of stream"), None);
    }
}
