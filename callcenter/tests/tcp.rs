//! End to end over TCP: the real `callcenter` client binary against the queue manager,
//! both as the real `callcenter-server` binary and in-process through `server::run`, and
//! raw protocol clients that frame their requests the way peer clients do.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use callcenter::queue::{CallQueue, Operators, RingTimeout};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = include_str!("fixtures/seven_calls.txt");
const EXPECTED_STDOUT: &str = include_str!("fixtures/seven_calls.stdout");
const EXPECTED_STDERR: &str = include_str!("fixtures/seven_calls.stderr");

/// Long enough that no ring times out while a script runs, however slow the machine.
const NO_TIMEOUT: &str = "3600";

/// Guards every wait on the network, so a broken server fails the test instead of
/// hanging it. Not a timing assertion: a healthy run takes a fraction of it.
const PATIENCE: Duration = Duration::from_secs(30);

/// The real server binary, killed when dropped.
struct ServerProcess {
    child: Child,
    address: String,
}

impl ServerProcess {
    fn start(extra_args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_callcenter-server"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first_line).unwrap();
        let address = first_line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first_line:?}"))
            .to_owned();
        Self { child, address }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client binary with `args`, `input` piped into it, to completion.
fn run_client(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callcenter"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CALLCENTER_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    // Write from a thread so a full stdout pipe can never block the write.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Error lines as a sorted list: local and server-side errors interleave by timing.
fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

#[test]
fn seven_call_scenario_over_tcp_matches_local_mode_and_the_transcript() {
    let server = ServerProcess::start(&["--ring-timeout", NO_TIMEOUT]);
    let remote = run_client(&["--server", &server.address], SCRIPT);
    let local = run_client(&["--local", "--ring-timeout", NO_TIMEOUT], SCRIPT);

    for (mode, output) in [("tcp", &remote), ("local", &local)] {
        assert!(output.status.success(), "{mode}: {output:?}");
        assert_eq!(text(&output.stdout), EXPECTED_STDOUT, "{mode} stdout");
        assert_eq!(
            sorted_lines(&text(&output.stderr)),
            sorted_lines(EXPECTED_STDERR),
            "{mode} stderr"
        );
    }
}

#[test]
fn the_client_fails_clearly_without_a_server() {
    // Bind and drop a listener to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let output = run_client(&["--server", &format!("127.0.0.1:{port}")], "call 1\n");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(
        text(&output.stderr).contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{output:?}"
    );
}

/// Starts `server::run` in-process on a free port; cancel the token to stop it.
async fn start_in_process(ring_timeout: &str) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let operators: Operators = "A,B".parse().unwrap();
    let ring_timeout: RingTimeout = ring_timeout.parse().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(callcenter::server::run(
        listener,
        CallQueue::new(&operators, ring_timeout),
        shutdown.clone(),
    ));
    (address, shutdown)
}

/// A raw protocol client: writes bytes as given, reads replies as lines.
struct RawClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawClient {
    async fn connect(address: &str) -> Self {
        let stream = TcpStream::connect(address).await.unwrap();
        // Each write goes out at once, so a pause between writes splits the server's reads.
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        Self { lines: tokio::io::BufReader::new(reader).lines(), writer }
    }

    async fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    }

    /// Writes `bytes` as they are: no newline added.
    async fn send_raw(&mut self, bytes: &str) {
        self.writer.write_all(bytes.as_bytes()).await.unwrap();
    }

    async fn receive(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .expect("a reply in time")
            .unwrap()
            .expect("connection still open")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_ring_reaches_the_client_binary_and_every_other_client() {
    let (address, shutdown) = start_in_process("0.5").await;

    // The watcher's reply proves it is served, hence subscribed, before any ring starts.
    let mut watcher = RawClient::connect(&address).await;
    watcher.send(r#"{"command":"hangup","id":"none"}"#).await;
    assert_eq!(watcher.receive().await, r#"{"error":"unknown call none"}"#);

    let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_callcenter"))
        .args(["--server", &address])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(client.stdout.take().unwrap()).lines();
    stdin.write_all(b"call 1\n").await.unwrap();

    let mut first_lines = Vec::new();
    while first_lines.len() < 4 {
        let line = tokio::time::timeout(PATIENCE, stdout.next_line())
            .await
            .expect("output in time")
            .unwrap()
            .expect("client still running");
        first_lines.push(line);
    }
    assert_eq!(
        first_lines,
        [
            "Call 1 received",
            "Call 1 ringing for operator A",
            "Call 1 ignored by operator A",
            "Call 1 ringing for operator B",
        ]
    );
    assert_eq!(watcher.receive().await, r#"{"response":"Call 1 ignored by operator A"}"#);
    assert_eq!(watcher.receive().await, r#"{"response":"Call 1 ringing for operator B"}"#);

    // End of input: the client half-closes, prints what is left and exits by itself.
    drop(stdin);
    let mut rest = Vec::new();
    while let Some(line) =
        tokio::time::timeout(PATIENCE, stdout.next_line()).await.expect("output in time").unwrap()
    {
        rest.push(line);
    }
    let status =
        tokio::time::timeout(PATIENCE, client.wait()).await.expect("client exits").unwrap();
    assert!(status.success());
    // Only more of the same ring cycle can have come meanwhile.
    for line in &rest {
        assert!(
            line.starts_with("Call 1 ignored by operator ")
                || line.starts_with("Call 1 ringing for operator "),
            "unexpected {line:?}"
        );
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_from_one_client_disturbs_no_one() {
    let (address, shutdown) = start_in_process(NO_TIMEOUT).await;
    let mut careless = RawClient::connect(&address).await;
    let mut careful = RawClient::connect(&address).await;

    // Not JSON. (A truncated line such as `{"command":` would now wait for its rest: a
    // newline inside an object is whitespace.)
    careless.send(r#"{"command":}"#).await;
    let error = careless.receive().await;
    assert!(error.starts_with(r#"{"error":"invalid request: "#), "{error}");

    careful.send(r#"{"command":"call","id":"1"}"#).await;
    assert_eq!(
        careful.receive().await,
        r#"{"response":"Call 1 received\nCall 1 ringing for operator A"}"#
    );

    // Both share one queue: the careless client can answer the careful one's call.
    careless.send(r#"{"command":"answer","id":"A"}"#).await;
    assert_eq!(careless.receive().await, r#"{"response":"Call 1 answered by operator A"}"#);

    // Shutdown closes every connection.
    shutdown.cancel();
    let end = tokio::time::timeout(PATIENCE, careful.lines.next_line())
        .await
        .expect("closed in time")
        .unwrap();
    assert_eq!(end, None);
}

// Framing, as peer clients send: no newline after a request, several requests in one
// write, one request over several writes.

/// `call` as peer clients write it: spaces, no newline.
fn peer_call(id: &str) -> String {
    format!(r#"{{"command": "call", "id": "{id}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_trailing_newline_gets_its_reply() {
    let (address, shutdown) = start_in_process(NO_TIMEOUT).await;
    let mut client = RawClient::connect(&address).await;
    client.send_raw(&peer_call("1")).await;
    assert_eq!(
        client.receive().await,
        r#"{"response":"Call 1 received\nCall 1 ringing for operator A"}"#
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_in_one_write_get_two_replies_in_order() {
    let (address, shutdown) = start_in_process(NO_TIMEOUT).await;
    let mut client = RawClient::connect(&address).await;
    client.send_raw(&format!("{}{}", peer_call("1"), peer_call("2"))).await;
    assert_eq!(
        client.receive().await,
        r#"{"response":"Call 1 received\nCall 1 ringing for operator A"}"#
    );
    assert_eq!(
        client.receive().await,
        r#"{"response":"Call 2 received\nCall 2 ringing for operator B"}"#
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_split_across_two_writes_gets_one_reply() {
    let (address, shutdown) = start_in_process(NO_TIMEOUT).await;
    let mut client = RawClient::connect(&address).await;
    client.send_raw(r#"{"command": "ca"#).await;
    // Real sockets cannot be given a fake clock: a real pause makes the server read the
    // first half on its own (the decoder's tests split requests at every byte).
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send_raw(r#"ll", "id": "1"}"#).await;
    assert_eq!(
        client.receive().await,
        r#"{"response":"Call 1 received\nCall 1 ringing for operator A"}"#
    );
    // Exactly one: the next line is the next request's reply, not a stray error.
    client.send_raw(r#"{"command": "answer", "id": "A"}"#).await;
    assert_eq!(client.receive().await, r#"{"response":"Call 1 answered by operator A"}"#);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_prints_several_lines_gets_exactly_one_reply_holding_them_all() {
    let (address, shutdown) = start_in_process(NO_TIMEOUT).await;
    let mut client = RawClient::connect(&address).await;
    for id in ["5", "7", "6"] {
        client.send_raw(&peer_call(id)).await;
        client.receive().await;
    }
    // Call 6 waits; hanging up call 5 frees A, who gets it.
    client.send_raw(r#"{"command": "hangup", "id": "5"}"#).await;
    let reply = client.receive().await;
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"response": "Call 5 missed\nCall 6 ringing for operator A"})
    );
    client.send_raw(r#"{"command": "hangup", "id": "7"}"#).await;
    assert_eq!(client.receive().await, r#"{"response":"Call 7 missed"}"#);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_request_gets_an_error_and_the_server_keeps_serving() {
    let (address, shutdown) = start_in_process(NO_TIMEOUT).await;
    let mut flooder = RawClient::connect(&address).await;
    let mut other = RawClient::connect(&address).await;

    // More than the limit and not finished: the error comes without waiting for the end.
    let id = "x".repeat(callcenter::protocol::MAX_REQUEST_BYTES + 1000);
    flooder.send_raw(&format!(r#"{{"command": "call", "id": "{id}"#)).await;
    assert_eq!(flooder.receive().await, r#"{"error":"invalid request: longer than 4096 bytes"}"#);

    other.send_raw(&peer_call("2")).await;
    assert_eq!(
        other.receive().await,
        r#"{"response":"Call 2 received\nCall 2 ringing for operator A"}"#
    );

    // The rest of the over-long request is skipped, and what follows it is served.
    flooder.send_raw(&format!(r#"{id}"}}{}"#, peer_call("1"))).await;
    assert_eq!(
        flooder.receive().await,
        r#"{"response":"Call 1 received\nCall 1 ringing for operator B"}"#
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_reach_a_client_that_sends_no_newlines_as_messages_of_their_own() {
    let (address, shutdown) = start_in_process("0.5").await;
    let mut client = RawClient::connect(&address).await;
    client.send_raw(&peer_call("1")).await;
    assert_eq!(
        client.receive().await,
        r#"{"response":"Call 1 received\nCall 1 ringing for operator A"}"#
    );
    // Half a second later, unprompted.
    assert_eq!(client.receive().await, r#"{"response":"Call 1 ignored by operator A"}"#);
    assert_eq!(client.receive().await, r#"{"response":"Call 1 ringing for operator B"}"#);
    shutdown.cancel();
}

// The interpreter's input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_quit_and_end_of_input_end_the_interpreter() {
    for (script, close_input) in
        [("call 1\nexit\ncall 2\n", false), ("call 1\nquit\ncall 2\n", false), ("call 1\n", true)]
    {
        let (address, shutdown) = start_in_process(NO_TIMEOUT).await;
        let mut client = tokio::process::Command::new(env!("CARGO_BIN_EXE_callcenter"))
            .args(["--server", &address])
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).await.unwrap();
        // With `exit` or `quit`, standard input stays open: only the word can end the run.
        let _open_input = if close_input {
            drop(stdin);
            None
        } else {
            Some(stdin)
        };
        let output = tokio::time::timeout(PATIENCE, client.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{script:?}: the interpreter did not end"))
            .unwrap();
        assert!(output.status.success(), "{script:?}: {output:?}");
        assert_eq!(
            text(&output.stdout),
            "Call 1 received\nCall 1 ringing for operator A\n",
            "{script:?}"
        );
        assert_eq!(text(&output.stderr), "", "{script:?}");
        shutdown.cancel();
    }
}

#[test]
fn an_over_long_typed_line_is_refused_without_being_echoed_whole() {
    let long = "1".repeat(200_000);
    let output =
        run_client(&["--local", "--ring-timeout", NO_TIMEOUT], &format!("call {long}\ncall 2\n"));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "Call 2 received\nCall 2 ringing for operator A\n");
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("Error: line too long: "), "{stderr}");
    assert!(stderr.len() < 200, "{} bytes of errors", stderr.len());
}
