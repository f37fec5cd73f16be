//! The TCP protocol: one JSON object per line, both ways.
//!
//! - Client to server: a serialized [`Command`](crate::command::Command),
//!   `{"command":"call","id":"1"}`; the `id` is the operator for `answer` and `reject`.
//! - Server to client: a [`Reply`], `{"response":"Call 1 received"}` for each message, or
//!   `{"error":"..."}` for a refused command or an unreadable line. A command's replies come
//!   in order; messages no command caused (a ring timing out) go to every client.
//! - A client that is done half-closes its side; the server answers what it has read and
//!   then closes its own side, so the client knows it has seen every reply.
//!
//! Lines are read with [`LineCodec`], which reports an over-long or non-UTF-8 line as a
//! [`Line`] rather than as an error, so one bad line costs one error reply, not the
//! connection.

use std::io;

use serde::{Deserialize, Serialize};
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Longest line either side accepts, in bytes, newline excluded. A request is tens of
/// bytes; the limit only stops a misbehaving peer from growing a buffer without end.
pub const MAX_LINE_BYTES: usize = 4096;

/// One line the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A message to show, such as `Call 1 received`.
    #[serde(rename = "response")]
    Response(String),
    /// Why a command was refused or a line could not be read.
    #[serde(rename = "error")]
    Error(String),
}

/// Serializes `message` as one protocol line, newline included.
///
/// Fails only if `message` cannot be serialized, which the protocol's own types never do;
/// callers still get a `Result` rather than a panic path.
pub fn encode_line<T: Serialize>(message: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

/// What [`LineCodec`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line of text, without its newline (and without a `\r` before it).
    Text(String),
    /// A line longer than [`MAX_LINE_BYTES`]; its bytes were skipped.
    TooLong,
    /// A line that is not UTF-8; its bytes were skipped.
    NotUtf8,
}

/// Splits a byte stream into [`Line`]s of at most [`MAX_LINE_BYTES`].
///
/// Unlike `tokio_util`'s `LinesCodec`, an over-long or non-UTF-8 line is an item, not a
/// decoder error: a `FramedRead` ends its stream after a decoder error, which would drop
/// the connection over one bad line.
#[derive(Debug, Default)]
pub struct LineCodec {
    /// Bytes already searched for a newline, so each byte is scanned once.
    scanned: usize,
    /// Inside an over-long line: skipping bytes up to its newline.
    discarding: bool,
}

impl LineCodec {
    /// A codec at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = io::Error;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Line>, io::Error> {
        loop {
            let newline = buffer[self.scanned..]
                .iter()
                .position(|&byte| byte == b'\n')
                .map(|offset| self.scanned + offset);
            match newline {
                Some(end) => {
                    self.scanned = 0;
                    let line = buffer.split_to(end + 1);
                    if std::mem::take(&mut self.discarding) {
                        return Ok(Some(Line::TooLong));
                    }
                    return Ok(Some(to_line(&line[..end])));
                }
                None if self.discarding => {
                    buffer.advance(buffer.len());
                    self.scanned = 0;
                    return Ok(None);
                }
                None if buffer.len() > MAX_LINE_BYTES => {
                    // Skip what we have and the rest of the line as it arrives.
                    self.discarding = true;
                }
                None => {
                    self.scanned = buffer.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buffer: &mut BytesMut) -> Result<Option<Line>, io::Error> {
        if let Some(line) = self.decode(buffer)? {
            return Ok(Some(line));
        }
        // A last line without a newline still counts.
        self.scanned = 0;
        if std::mem::take(&mut self.discarding) {
            return Ok(Some(Line::TooLong));
        }
        if buffer.is_empty() {
            return Ok(None);
        }
        let line = buffer.split();
        Ok(Some(to_line(&line)))
    }
}

fn to_line(bytes: &[u8]) -> Line {
    if bytes.len() > MAX_LINE_BYTES {
        return Line::TooLong;
    }
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Line::Text(text.to_owned()),
        Err(_) => Line::NotUtf8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Vec<Line> {
        let mut codec = LineCodec::new();
        let mut buffer = BytesMut::new();
        let mut lines = Vec::new();
        // Feed one byte at a time: lines must not depend on how reads are split.
        for &byte in input {
            buffer.extend_from_slice(&[byte]);
            while let Some(line) = codec.decode(&mut buffer).expect("decoding never fails") {
                lines.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buffer).expect("decoding never fails") {
            lines.push(line);
        }
        lines
    }

    fn text(line: &str) -> Line {
        Line::Text(line.to_owned())
    }

    #[test]
    fn splits_lines_and_keeps_an_unterminated_last_one() {
        assert_eq!(
            decode_all(b"one\r\ntwo\n\nthree"),
            [text("one"), text("two"), text(""), text("three")]
        );
    }

    #[test]
    fn bad_lines_are_items_and_reading_goes_on() {
        let mut input = b"before\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        input.extend_from_slice(b"\n\xff\xfe\nafter\n");
        input.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 1));
        assert_eq!(
            decode_all(&input),
            [text("before"), Line::TooLong, Line::NotUtf8, text("after"), Line::TooLong]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let mut input = vec![b'z'; MAX_LINE_BYTES];
        input.push(b'\n');
        assert_eq!(decode_all(&input), [text(&"z".repeat(MAX_LINE_BYTES))]);
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let response =
            encode_line(&Reply::Response("Call 1 received".to_owned())).expect("replies serialize");
        assert_eq!(response, b"{\"response\":\"Call 1 received\"}\n");
        let error = encode_line(&Reply::Error("unknown call 9".to_owned())).expect("serializes");
        assert_eq!(error, b"{\"error\":\"unknown call 9\"}\n");
        let parsed: Reply =
            serde_json::from_str(r#"{"response":"Call 1 missed"}"#).expect("valid reply");
        assert_eq!(parsed, Reply::Response("Call 1 missed".to_owned()));
    }
}
