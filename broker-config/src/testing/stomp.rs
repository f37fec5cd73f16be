//! A STOMP 1.2 producer for tests: frames written and read by hand over TCP, to RabbitMQ's STOMP
//! plugin, as a producer moved from ActiveMQ talks to it. Only what a producer needs: CONNECT,
//! SEND with a receipt (the plugin sends the RECEIPT once the broker has confirmed the message),
//! DISCONNECT; an ERROR frame is the broker's refusal, returned with its words.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The STOMP server, from `BOTLINE_TEST_STOMP_SERVER` (default `127.0.0.1:61613`: RabbitMQ's
/// STOMP plugin, which `scripts/services` enables).
pub fn stomp_server() -> String {
    std::env::var("BOTLINE_TEST_STOMP_SERVER").unwrap_or_else(|_| "127.0.0.1:61613".into())
}

/// How long the broker has to answer a frame.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// The largest frame read back (the broker's answers are small).
const MAX_FRAME: usize = 1024 * 1024;

/// Why a STOMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum StompError {
    /// The TCP connection failed.
    #[error(
        "STOMP connection to {server}: {source} (is rabbitmq_stomp enabled? scripts/services enables it)"
    )]
    Io {
        /// The server.
        server: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The broker answered with an ERROR frame.
    #[error("the broker refused: {message}: {body}")]
    Refused {
        /// Its `message` header.
        message: String,
        /// Its body, as text.
        body: String,
    },
    /// The broker answered with another frame than expected.
    #[error("expected {expected}, the broker answered {command}")]
    Unexpected {
        /// What was expected.
        expected: &'static str,
        /// What came.
        command: String,
    },
    /// No whole frame within the wait, or the connection closed first.
    #[error("no answer from the broker: {0}")]
    NoAnswer(String),
}

/// A frame: its command, headers in order, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `CONNECTED`, `RECEIPT`, `ERROR`, …
    pub command: String,
    /// The headers, unescaped, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Frame {
    /// The first header named `name` (STOMP: the first of repeated headers counts).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Escapes a header name or value as STOMP 1.2 wants in every frame but CONNECT and CONNECTED.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ':' => out.push_str("\\c"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            // Undefined escapes are an error in STOMP 1.2; a test reader keeps them as written.
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Encodes a frame: the command, the headers (escaped unless `command` is CONNECT), a
/// `content-length` when there is a body, the body and the NUL that ends every frame.
pub fn encode_frame(command: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let raw = command == "CONNECT";
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    for (name, value) in headers {
        let (name, value) = if raw {
            ((*name).to_owned(), (*value).to_owned())
        } else {
            (escape(name), escape(value))
        };
        out.extend_from_slice(format!("{name}:{value}\n").as_bytes());
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("content-length:{}\n", body.len()).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
    out
}

/// Decodes the first whole frame of `buffer`, skipping the end-of-lines that may come between
/// frames (heart-beats): the frame and how many bytes it took, or `None` while incomplete.
pub fn decode_frame(buffer: &[u8]) -> Option<(Frame, usize)> {
    let start = buffer.iter().position(|b| *b != b'\n' && *b != b'\r')?;
    let rest = buffer.get(start..)?;
    let head_end = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, 2))
        .or_else(|| rest.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, 4)))?;
    let (at, separator) = head_end;
    let head = String::from_utf8_lossy(rest.get(..at)?).into_owned();
    let mut lines = head.lines().map(|line| line.trim_end_matches('\r'));
    let command = lines.next()?.to_owned();
    let escaped = !matches!(command.as_str(), "CONNECT" | "CONNECTED");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(
            |(k, v)| {
                if escaped { (unescape(k), unescape(v)) } else { (k.to_owned(), v.to_owned()) }
            },
        )
        .collect();
    let body_start = at + separator;
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let body_end = match length {
        Some(length) => body_start + length,
        None => body_start + rest.get(body_start..)?.iter().position(|b| *b == 0)?,
    };
    // The frame ends with a NUL right after its body.
    if *rest.get(body_end)? != 0 {
        return None;
    }
    let body = rest.get(body_start..body_end)?.to_vec();
    Some((Frame { command, headers, body }, start + body_end + 1))
}

/// A STOMP session with the broker.
pub struct StompClient {
    server: String,
    stream: TcpStream,
    buffer: Vec<u8>,
    receipts: u64,
}

impl StompClient {
    /// Connects to [`stomp_server`] and logs in with `login` and `passcode` on the vhost `host`
    /// (RabbitMQ reads the `host` header as the vhost; `None` leaves the header out, and the
    /// broker picks its default vhost).
    pub async fn connect(
        login: &str,
        passcode: &str,
        host: Option<&str>,
    ) -> Result<StompClient, StompError> {
        let server = stomp_server();
        let stream = tokio::time::timeout(ANSWER_WITHIN, TcpStream::connect(&server))
            .await
            .map_err(|_| StompError::NoAnswer(format!("connecting to {server} timed out")))?
            .map_err(|source| StompError::Io { server: server.clone(), source })?;
        let mut client = StompClient { server, stream, buffer: Vec::new(), receipts: 0 };
        let mut headers = vec![
            ("accept-version", "1.2"),
            ("login", login),
            ("passcode", passcode),
            ("heart-beat", "0,0"),
        ];
        if let Some(host) = host {
            headers.push(("host", host));
        }
        client.write(&encode_frame("CONNECT", &headers, b"")).await?;
        client.expect("CONNECTED").await?;
        Ok(client)
    }

    /// Sends `body` to `destination` with `headers`, asking for a receipt, and waits for it: the
    /// broker has then confirmed the message (routed or not: a message no queue takes is
    /// confirmed and dropped).
    pub async fn send(
        &mut self,
        destination: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), StompError> {
        self.receipts += 1;
        let receipt = format!("send-{}", self.receipts);
        let mut all = vec![("destination", destination), ("receipt", receipt.as_str())];
        all.extend_from_slice(headers);
        self.write(&encode_frame("SEND", &all, body)).await?;
        let answer = self.expect("RECEIPT").await?;
        match answer.header("receipt-id") {
            Some(id) if id == receipt => Ok(()),
            other => Err(StompError::Unexpected {
                expected: "the RECEIPT of the SEND",
                command: format!("RECEIPT for {other:?}"),
            }),
        }
    }

    /// Says goodbye (waiting for the receipt, so that everything sent before is handled).
    pub async fn disconnect(mut self) -> Result<(), StompError> {
        self.write(&encode_frame("DISCONNECT", &[("receipt", "bye")], b"")).await?;
        self.expect("RECEIPT").await.map(|_| ())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), StompError> {
        let server = &self.server;
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| StompError::Io { server: server.clone(), source })
    }

    /// Reads the next frame: `expected`, or the ERROR the broker answered instead.
    async fn expect(&mut self, expected: &'static str) -> Result<Frame, StompError> {
        let frame =
            tokio::time::timeout(ANSWER_WITHIN, self.read_frame()).await.map_err(|_| {
                StompError::NoAnswer(format!("no {expected} within {ANSWER_WITHIN:?}"))
            })??;
        if frame.command == expected {
            return Ok(frame);
        }
        if frame.command == "ERROR" {
            return Err(StompError::Refused {
                message: frame.header("message").unwrap_or_default().to_owned(),
                body: String::from_utf8_lossy(&frame.body).into_owned(),
            });
        }
        Err(StompError::Unexpected { expected, command: frame.command })
    }

    async fn read_frame(&mut self) -> Result<Frame, StompError> {
        loop {
            if let Some((frame, used)) = decode_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Ok(frame);
            }
            if self.buffer.len() > MAX_FRAME {
                return Err(StompError::NoAnswer(format!("a frame over {MAX_FRAME} bytes")));
            }
            let mut chunk = [0_u8; 8192];
            let read = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|source| StompError::Io { server: self.server.clone(), source })?;
            if read == 0 {
                return Err(StompError::NoAnswer("the broker closed the connection".into()));
            }
            self.buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_frame_is_escaped_and_carries_its_length() {
        let frame = encode_frame("SEND", &[("destination", "/topic/a:b"), ("x", "1\n2")], b"{}");
        assert_eq!(
            frame,
            b"SEND\ndestination:/topic/a\\cb\nx:1\\n2\ncontent-length:2\n\n{}\0".to_vec()
        );
        let connect = encode_frame("CONNECT", &[("passcode", "a:b")], b"");
        assert_eq!(connect, b"CONNECT\npasscode:a:b\n\n\0".to_vec(), "CONNECT is not escaped");
    }

    #[test]
    fn frames_are_decoded_whole_or_not_at_all() {
        let error = b"\nERROR\nmessage:access_refused\ncontent-length:5\n\nno\0pe\0RECEIPT\n";
        let (frame, used) = decode_frame(error).expect("a whole frame");
        assert_eq!(frame.command, "ERROR");
        assert_eq!(frame.header("message"), Some("access_refused"));
        assert_eq!(frame.body, b"no\0pe", "content-length reads past a NUL in the body");
        assert_eq!(used, error.len() - "RECEIPT\n".len());
        assert_eq!(decode_frame(&error[used..]), None, "an incomplete frame waits");
        let (receipt, _) = decode_frame(b"RECEIPT\nreceipt-id:a\\cb\n\n\0").expect("whole");
        assert_eq!(receipt.header("receipt-id"), Some("a:b"));
        assert_eq!(decode_frame(b"CONNECTED\nversion:1.2\n\n"), None, "no NUL yet");
    }
}
