//! The command interpreter: typed lines in, the queue manager's messages out.
//!
//! [`run`] speaks the [`protocol`](crate::protocol) over any byte stream. It never waits on
//! one side only: typed lines arrive through a channel fed by a thread (see
//! [`spawn_stdin_reader`]), requests are written as the socket accepts them, and replies
//! are printed as they come, so unprompted messages show up while the user is typing and
//! a long piped script cannot deadlock against a server that is writing replies.
//!
//! Lines that are not a command are reported here and never sent; so is a line over
//! [`MAX_TYPED_LINE_BYTES`], quoting only its start. Replies are read as a stream of JSON
//! objects, newline or not, and each line of a reply is printed on its own. At the end of
//! input, or at `exit` or `quit`, the client half-closes the connection and prints replies
//! until the server closes its side.
//!
//! [`run_local`] runs the same client against an in-process server over an in-memory
//! pipe, which is how `callcenter --local` prints exactly what the TCP mode prints.

use std::io::{self, BufRead, IsTerminal, Write};

use futures_util::StreamExt;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::command::{Input, MAX_TYPED_LINE_BYTES};
use crate::protocol::{FrameError, JsonCodec, MAX_REPLY_BYTES, Reply, encode_line};
use crate::queue::CallQueue;
use crate::server::{QueueHandle, serve_connection};

/// Typed lines read ahead of the connection; the reading thread waits beyond that.
const INPUT_CAPACITY: usize = 64;

/// Encoded requests the client holds while the server is slow to read them; it stops
/// taking typed lines beyond that.
const MAX_PENDING_BYTES: usize = 64 * 1024;

/// Size of each direction of the in-memory pipe in `--local` mode.
const LOCAL_PIPE_BYTES: usize = 64 * 1024;

/// The prompt shown when standard input is a terminal.
const PROMPT: &str = "> ";

/// Why the client stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Talking to the server or writing the output failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A request could not be serialized (commands always serialize).
    #[error("could not encode a request: {0}")]
    Encode(#[from] serde_json::Error),
    /// The server closed the connection before the end of input.
    #[error("the server closed the connection")]
    ServerClosed,
    /// The line editor could not start on the terminal.
    #[error("cannot set up the terminal: {0}")]
    Terminal(#[from] ReadlineError),
}

/// How an error message is shown: one line, recognisable among the normal messages.
pub fn error_line(message: &str) -> String {
    format!("Error: {message}")
}

/// Where the client shows messages and errors.
pub trait Printer {
    /// Shows a message from the queue manager, such as `Call 1 received`.
    fn message(&mut self, text: &str) -> io::Result<()>;
    /// Shows why a line or command was refused.
    fn error(&mut self, message: &str) -> io::Result<()>;
}

/// Messages to standard output, errors to standard error, each flushed at once.
///
/// Errors go to standard error so that a piped script's standard output is exactly the
/// transcript of what happened, whatever the timing of local and server-side errors.
#[derive(Debug, Default)]
pub struct StdPrinter;

impl Printer for StdPrinter {
    fn message(&mut self, text: &str) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()
    }

    fn error(&mut self, message: &str) -> io::Result<()> {
        let mut stderr = io::stderr().lock();
        writeln!(stderr, "{}", error_line(message))?;
        stderr.flush()
    }
}

/// Prints above the line being edited, so output never garbles the prompt.
pub struct TerminalPrinter<P>(P);

impl<P: ExternalPrinter> TerminalPrinter<P> {
    fn print(&mut self, line: String) -> io::Result<()> {
        self.0.print(line).map_err(io::Error::other)
    }
}

impl<P: ExternalPrinter> Printer for TerminalPrinter<P> {
    fn message(&mut self, text: &str) -> io::Result<()> {
        // The newline is needed when no prompt is shown; with one, rustyline keeps it.
        self.print(format!("{text}\n"))
    }

    fn error(&mut self, message: &str) -> io::Result<()> {
        self.print(format!("{}\n", error_line(message)))
    }
}

/// Starts a thread that reads standard input line by line into the returned channel,
/// and returns the printer that suits it.
///
/// On a terminal the thread runs a line editor with history, and output goes through the
/// editor so it appears above the prompt; otherwise lines are read plainly (bytes that are
/// not UTF-8 are replaced, so a bad line is reported rather than ending the input, and a
/// line over [`MAX_TYPED_LINE_BYTES`] is cut short, as it is refused anyway). The channel
/// closes at the end of input, on Ctrl-C or Ctrl-D at the prompt, or after `exit` or
/// `quit`. A thread, not a task: reading stdin blocks, and a blocked thread never holds up
/// the network side nor the runtime's shutdown.
pub fn spawn_stdin_reader() -> Result<(mpsc::Receiver<String>, Box<dyn Printer>), ClientError> {
    let (sender, receiver) = mpsc::channel(INPUT_CAPACITY);
    if io::stdin().is_terminal() {
        let mut editor = DefaultEditor::new()?;
        let printer = editor.create_external_printer()?;
        std::thread::spawn(move || read_with_editor(editor, &sender));
        Ok((receiver, Box::new(TerminalPrinter(printer))))
    } else {
        std::thread::spawn(move || read_plain(io::stdin().lock(), &sender));
        Ok((receiver, Box::new(StdPrinter)))
    }
}

fn read_with_editor(mut editor: DefaultEditor, lines: &mpsc::Sender<String>) {
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() && line.len() <= MAX_TYPED_LINE_BYTES {
                    // History is a convenience: failing to record a line loses nothing.
                    let _ = editor.add_history_entry(line.as_str());
                }
                let exit = ends_input(&line);
                // Stop at `exit` rather than prompt again: the process ends soon, and a
                // prompt left open would leave the terminal in raw mode.
                if lines.blocking_send(line).is_err() || exit {
                    break;
                }
            }
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => break,
            Err(error) => {
                warn!(%error, "cannot read the terminal");
                break;
            }
        }
    }
}

fn read_plain(mut input: impl BufRead, lines: &mpsc::Sender<String>) {
    let mut buffer = Vec::new();
    loop {
        // One byte over the limit (and a `\r`) is enough to refuse the line.
        match read_line_capped(&mut input, MAX_TYPED_LINE_BYTES + 2, &mut buffer) {
            Ok(false) => break,
            Ok(true) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
                let exit = ends_input(&line);
                if lines.blocking_send(line).is_err() || exit {
                    break;
                }
            }
            Err(error) => {
                warn!(%error, "cannot read standard input");
                break;
            }
        }
    }
}

/// Reads one line into `line`, newline excluded, keeping at most `keep` bytes of it: the
/// rest is read and dropped, so a huge line costs no memory. Returns `false` at the end
/// of input.
fn read_line_capped(input: &mut impl BufRead, keep: usize, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let mut read_any = false;
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let newline = available.iter().position(|&byte| byte == b'\n');
        let text = &available[..newline.unwrap_or(available.len())];
        let room = keep.saturating_sub(line.len());
        line.extend_from_slice(&text[..text.len().min(room)]);
        let used = newline.map_or(available.len(), |end| end + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(true);
        }
    }
}

/// Whether `line` ends the input: `exit` or `quit`.
fn ends_input(line: &str) -> bool {
    matches!(Input::parse(line), Ok(Input::Exit))
}

/// Sends each valid line of `input` to the server on `stream` and prints every reply
/// until the server closes its side.
///
/// `input` ends at its end or at a line that is `exit` or `quit`; later lines are not
/// read. Returns [`ClientError::ServerClosed`] if the server closes before `input` ends.
pub async fn run<S>(
    stream: S,
    mut input: mpsc::Receiver<String>,
    printer: &mut dyn Printer,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut replies = FramedRead::new(reader, JsonCodec::<Reply>::new(MAX_REPLY_BYTES));
    // Requests not yet taken by the socket. Writing from this loop in small steps, rather
    // than with `write_all`, keeps replies flowing while the server is slow to read.
    let mut pending: Vec<u8> = Vec::new();
    let mut input_open = true;
    let mut write_open = true;
    loop {
        if !input_open && pending.is_empty() && write_open {
            // Half-close: the server answers what it has and then closes its side.
            writer.shutdown().await?;
            write_open = false;
        }
        tokio::select! {
            line = input.recv(), if input_open && pending.len() < MAX_PENDING_BYTES => {
                match line.as_deref().map(Input::parse) {
                    Some(Ok(Input::Command(command))) => pending.extend(encode_line(&command)?),
                    Some(Ok(Input::Blank)) => {}
                    Some(Err(error)) => printer.error(&error.to_string())?,
                    Some(Ok(Input::Exit)) | None => {
                        input_open = false;
                        // Lines typed after `exit` are not read; the reader stops too.
                        input.close();
                    }
                }
            }
            written = writer.write(&pending), if !pending.is_empty() => {
                match written? {
                    0 => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    written => drop(pending.drain(..written)),
                }
            }
            reply = replies.next() => match reply {
                Some(reply) => show_reply(reply?, printer)?,
                None => break,
            },
        }
    }
    if input_open || !pending.is_empty() {
        return Err(ClientError::ServerClosed);
    }
    Ok(())
}

/// Prints each line of a reply as a message or an error of its own, as the server's
/// messages were printed when each was a reply.
fn show_reply(reply: Result<Reply, FrameError>, printer: &mut dyn Printer) -> io::Result<()> {
    match reply {
        Ok(Reply::Response(text)) => text.lines().try_for_each(|line| printer.message(line)),
        Ok(Reply::Error(text)) => text.lines().try_for_each(|line| printer.error(line)),
        Err(error) => printer.error(&format!("unreadable reply from the server: {error}")),
    }
}

/// Runs the client against its own in-process queue manager: the standalone mode.
///
/// The server side is [`serve_connection`] over an in-memory pipe, so every line is
/// handled and printed exactly as in the TCP mode.
pub async fn run_local(
    queue: CallQueue,
    input: mpsc::Receiver<String>,
    printer: &mut dyn Printer,
) -> Result<(), ClientError> {
    let (handle, _queue_task) = QueueHandle::spawn(queue);
    let (client_end, server_end) = tokio::io::duplex(LOCAL_PIPE_BYTES);
    let server = serve_connection(server_end, handle, CancellationToken::new());
    // Both end together: the server closes once the client half-closes, and if the
    // client stops early its end of the pipe is dropped, which ends the server.
    let (client, server) = tokio::join!(run(client_end, input, printer), server);
    if let Err(error) = server {
        warn!(%error, "local queue manager failed");
    }
    client
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::queue::{Operators, RingTimeout};

    #[derive(Default)]
    struct Recorder {
        messages: Vec<String>,
        errors: Vec<String>,
    }

    impl Printer for Recorder {
        fn message(&mut self, text: &str) -> io::Result<()> {
            self.messages.push(text.to_owned());
            Ok(())
        }

        fn error(&mut self, message: &str) -> io::Result<()> {
            self.errors.push(message.to_owned());
            Ok(())
        }
    }

    fn input(lines: &[&str]) -> mpsc::Receiver<String> {
        let (sender, receiver) = mpsc::channel(lines.len().max(1));
        for line in lines {
            sender.try_send((*line).to_owned()).expect("channel has room for every line");
        }
        receiver
    }

    fn queue() -> CallQueue {
        let operators: Operators = "A,B".parse().expect("valid operators");
        CallQueue::new(&operators, RingTimeout::DEFAULT)
    }

    #[tokio::test]
    async fn local_mode_prints_messages_and_errors_in_order() {
        let mut recorder = Recorder::default();
        let lines = input(&["call 1", "", "answer B", "bogus", "answer A", "hangup 1"]);
        run_local(queue(), lines, &mut recorder).await.expect("local run succeeds");
        assert_eq!(
            recorder.messages,
            [
                "Call 1 received",
                "Call 1 ringing for operator A",
                "Call 1 answered by operator A",
                "Call 1 finished and operator A available",
            ]
        );
        // Local errors print at once, server errors when their reply arrives: compare as
        // a set.
        recorder.errors.sort();
        assert_eq!(
            recorder.errors,
            [
                "operator B has no ringing call",
                "unknown command \"bogus\": expected call, answer, reject or hangup",
            ]
        );
    }

    #[tokio::test]
    async fn a_server_that_closes_early_is_an_error() {
        let (client_end, server_end) = tokio::io::duplex(1024);
        drop(server_end);
        let (_sender, receiver) = mpsc::channel(1);
        let mut recorder = Recorder::default();
        let result = run(client_end, receiver, &mut recorder).await;
        assert!(matches!(result, Err(ClientError::ServerClosed)), "{result:?}");
    }

    #[test]
    fn plain_input_is_split_into_lines() {
        let (sender, mut receiver) = mpsc::channel(8);
        read_plain(&b"call 1\r\nanswer A\n\xffcall\nlast"[..], &sender);
        drop(sender);
        let mut lines = Vec::new();
        while let Ok(line) = receiver.try_recv() {
            lines.push(line);
        }
        assert_eq!(lines, ["call 1", "answer A", "\u{fffd}call", "last"]);
    }

    #[test]
    fn plain_input_cuts_an_over_long_line_and_stops_after_exit() {
        let (sender, mut receiver) = mpsc::channel(8);
        let long = "9".repeat(100 * MAX_TYPED_LINE_BYTES);
        let script = format!("call 1\ncall {long}\r\nexit\ncall 2\n");
        read_plain(script.as_bytes(), &sender);
        drop(sender);
        let mut lines = Vec::new();
        while let Ok(line) = receiver.try_recv() {
            lines.push(line);
        }
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "call 1");
        // Cut short, yet still over the limit, so it is refused rather than run.
        assert_eq!(lines[1].len(), MAX_TYPED_LINE_BYTES + 2);
        assert!(Input::parse(&lines[1]).is_err());
        assert_eq!(lines[2], "exit");
    }

    #[tokio::test]
    async fn exit_ends_the_input_while_more_could_come() {
        let (sender, receiver) = mpsc::channel(8);
        for line in ["call 1", "quit", "call 2"] {
            sender.try_send(line.to_owned()).expect("channel has room");
        }
        let mut recorder = Recorder::default();
        // The sender stays alive: only `quit` can end the run, which must not hang.
        let run = run_local(queue(), receiver, &mut recorder);
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("quit ends the run")
            .expect("local run succeeds");
        assert_eq!(recorder.messages, ["Call 1 received", "Call 1 ringing for operator A"]);
        assert!(recorder.errors.is_empty(), "{:?}", recorder.errors);
        assert!(sender.is_closed(), "the input channel is closed");
    }

    #[tokio::test]
    async fn an_over_long_line_is_refused_and_not_sent() {
        let long = format!("call {}", "7".repeat(MAX_TYPED_LINE_BYTES));
        let mut recorder = Recorder::default();
        run_local(queue(), input(&[&long, "call 2"]), &mut recorder).await.expect("runs");
        assert_eq!(recorder.messages, ["Call 2 received", "Call 2 ringing for operator A"]);
        assert_eq!(recorder.errors.len(), 1);
        assert!(recorder.errors[0].starts_with("line too long: "), "{:?}", recorder.errors);
        assert!(recorder.errors[0].len() < 100, "{:?}", recorder.errors);
    }

    #[tokio::test]
    async fn replies_are_read_as_a_stream_and_printed_line_by_line() {
        let (client_end, mut server_end) = tokio::io::duplex(1024);
        // A server that sends no newlines and splits a reply across writes.
        let server = tokio::spawn(async move {
            server_end
                .write_all(br#"{"response":"Call 1 received\nCall 1 ringing"#)
                .await
                .expect("client reads");
            server_end
                .write_all(br#" for operator A"}{"error":"unknown call 9"}not json"#)
                .await
                .expect("client reads");
            server_end.shutdown().await.expect("close");
        });
        let (sender, receiver) = mpsc::channel(1);
        drop(sender);
        let mut recorder = Recorder::default();
        run(client_end, receiver, &mut recorder).await.expect("run succeeds");
        server.await.expect("server task");
        assert_eq!(recorder.messages, ["Call 1 received", "Call 1 ringing for operator A"]);
        assert_eq!(
            recorder.errors,
            ["unknown call 9", "unreadable reply from the server: expected a JSON object"]
        );
    }
}
