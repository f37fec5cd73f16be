//! The command interpreter: typed lines in, the queue manager's messages out.
//!
//! [`run`] speaks the [`protocol`](crate::protocol) over any byte stream. It never waits on
//! one side only: typed lines arrive through a channel fed by a thread (see
//! [`spawn_stdin_reader`]), requests are written as the socket accepts them, and replies
//! are printed as they come, so unprompted messages show up while the user is typing and
//! a long piped script cannot deadlock against a server that is writing replies.
//!
//! Lines that are not a command are reported here and never sent. At the end of input the
//! client half-closes the connection and prints replies until the server closes its side.
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

use crate::command::Command;
use crate::protocol::{Line, LineCodec, Reply, encode_line};
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
/// not UTF-8 are replaced, so a bad line is reported rather than ending the input). The
/// channel closes at the end of input, or on Ctrl-C or Ctrl-D at the prompt. A thread, not
/// a task: reading stdin blocks, and a blocked thread never holds up the network side
/// nor the runtime's shutdown.
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
                if !line.trim().is_empty() {
                    // History is a convenience: failing to record a line loses nothing.
                    let _ = editor.add_history_entry(line.as_str());
                }
                if lines.blocking_send(line).is_err() {
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
        buffer.clear();
        match input.read_until(b'\n', &mut buffer) {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                if lines.blocking_send(line).is_err() {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                warn!(%error, "cannot read standard input");
                break;
            }
        }
    }
}

/// Sends each valid line of `input` to the server on `stream` and prints every reply
/// until the server closes its side.
///
/// Returns [`ClientError::ServerClosed`] if the server closes before `input` ends.
pub async fn run<S>(
    stream: S,
    mut input: mpsc::Receiver<String>,
    printer: &mut dyn Printer,
) -> Result<(), ClientError>
where
    S: AsyncRead + AsyncWrite,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut replies = FramedRead::new(reader, LineCodec::new());
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
                match line {
                    Some(line) => match Command::parse_line(&line) {
                        Ok(Some(command)) => pending.extend(encode_line(&command)?),
                        Ok(None) => {}
                        Err(error) => printer.error(&error.to_string())?,
                    },
                    None => input_open = false,
                }
            }
            written = writer.write(&pending), if !pending.is_empty() => {
                match written? {
                    0 => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                    written => drop(pending.drain(..written)),
                }
            }
            reply = replies.next() => match reply {
                Some(line) => show_reply(line?, printer)?,
                None => break,
            },
        }
    }
    if input_open || !pending.is_empty() {
        return Err(ClientError::ServerClosed);
    }
    Ok(())
}

fn show_reply(line: Line, printer: &mut dyn Printer) -> io::Result<()> {
    let text = match line {
        Line::Text(text) if text.trim().is_empty() => return Ok(()),
        Line::Text(text) => text,
        Line::TooLong | Line::NotUtf8 => {
            return printer.error("unreadable reply from the server");
        }
    };
    match serde_json::from_str(&text) {
        Ok(Reply::Response(message)) => printer.message(&message),
        Ok(Reply::Error(message)) => printer.error(&message),
        Err(_) => printer.error(&format!("unreadable reply from the server: {text}")),
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
}
