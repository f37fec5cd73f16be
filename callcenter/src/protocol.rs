//! The TCP protocol: JSON objects read as a stream, replies one per line.
//!
//! - Client to server: a serialized [`Command`](crate::command::Command),
//!   `{"command":"call","id":"1"}`; the `id` is the operator for `answer` and `reject`.
//!   Requests need no terminator: objects may follow each other directly or be separated
//!   by whitespace or newlines, and may arrive split across reads in any way; newlines
//!   inside an object are whitespace like any other.
//! - Server to client: exactly one [`Reply`] per request, on its own line:
//!   `{"response":"Call 1 received\nCall 1 ringing for operator A"}` holds every message the
//!   command produced, joined by `\n`; `{"error":"..."}` says why a command was refused or
//!   a request could not be read. Messages no command caused (a ring timing out) go to
//!   every client, one `{"response":...}` line per message, between replies.
//! - A client that is done half-closes its side; the server answers what it has read and
//!   then closes its own side, so the client knows it has seen every reply.
//!
//! Both sides read with [`JsonCodec`], which reports a bad or over-long object as an item
//! rather than as an error, so one bad request costs one error reply, not the connection.

use std::io;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// Longest request the server accepts, in bytes. A request is tens of bytes; the limit
/// only stops a misbehaving client from growing a buffer without end.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Longest reply the interpreter accepts, in bytes. Replies are longer than requests (an
/// error may quote a rejected request), so the limit is looser.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// One message the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Messages to show, one per line, such as `Call 1 received`.
    #[serde(rename = "response")]
    Response(String),
    /// Why a command was refused or a request could not be read.
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

/// Why part of the stream is not a message. Reading goes on after each of them.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A JSON object that is not a valid message, or an object broken by bytes that are
    /// not JSON (then bytes up to the next newline or `{` are skipped).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Something other than an object where a message should start; bytes up to the next
    /// newline or `{` are skipped.
    #[error("expected a JSON object")]
    NotAnObject,
    /// An object longer than the limit; the rest of it is skipped as it arrives, up to
    /// its closing brace or the end of its line.
    #[error("longer than {0} bytes")]
    TooLong(usize),
    /// The stream ended inside an unfinished object.
    #[error("the connection ended inside an unfinished JSON object")]
    UnfinishedStream,
}

/// Splits a byte stream into JSON objects of at most `max_bytes` each and deserializes
/// each into a `T`.
///
/// Objects are found by parsing (serde_json's stream deserializer over the buffer), not by
/// looking for newlines, so requests without a terminator, several in one read or one
/// split across reads all come out the same. Whitespace, newlines included, between
/// objects is skipped.
///
/// A bad object is an item (`Err(FrameError)`), not a decoder error: a `FramedRead` ends
/// its stream after a decoder error, which would drop the connection over one bad request.
/// After one, the decoder skips to where the next object can start; what it skips
/// depends only on the bytes, never on how they were split into reads.
#[derive(Debug)]
pub struct JsonCodec<T> {
    max_bytes: usize,
    skipping: Option<Skip>,
    message: PhantomData<fn() -> T>,
}

/// What the decoder is skipping after a bad object.
#[derive(Debug)]
enum Skip {
    /// The rest of an over-long object, followed to its end.
    Object(ObjectSkipper),
    /// Bytes that are not JSON: up to the next newline, or the next `{`, which may start
    /// a good object; so a client that sends no newlines is not stuck behind its own
    /// error, its next request ends the skipping.
    Garbage,
}

impl<T> JsonCodec<T> {
    /// A codec at the start of a stream, for objects of at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, skipping: None, message: PhantomData }
    }

    /// Drops skipped bytes from the front of `buffer`; returns whether skipping is over.
    fn skip(&mut self, buffer: &mut BytesMut) -> bool {
        let end = match &mut self.skipping {
            None => return true,
            Some(Skip::Object(skipper)) => skipper.feed(buffer),
            Some(Skip::Garbage) => {
                buffer.iter().position(|&byte| byte == b'{' || byte == b'\n').map(|end| {
                    // A newline is consumed; a `{` is kept to be read.
                    if buffer[end] == b'\n' { end + 1 } else { end }
                })
            }
        };
        match end {
            Some(end) => {
                buffer.advance(end);
                self.skipping = None;
                true
            }
            None => {
                buffer.clear();
                false
            }
        }
    }
}

impl<T: DeserializeOwned> Decoder for JsonCodec<T> {
    type Item = Result<T, FrameError>;
    type Error = io::Error;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Self::Item>, io::Error> {
        if !self.skip(buffer) {
            return Ok(None);
        }
        let Some(start) = buffer.iter().position(|&byte| !is_json_whitespace(byte)) else {
            buffer.clear();
            return Ok(None);
        };
        buffer.advance(start);
        if buffer[0] != b'{' {
            self.skipping = Some(Skip::Garbage);
            self.skip(buffer);
            return Ok(Some(Err(FrameError::NotAnObject)));
        }
        // Parsing at most `max_bytes` bounds the work per read as well as the buffer.
        let mut values =
            serde_json::Deserializer::from_slice(&buffer[..buffer.len().min(self.max_bytes)])
                .into_iter::<IgnoredAny>();
        match values.next() {
            Some(Ok(IgnoredAny)) => {
                let end = values.byte_offset();
                let message = serde_json::from_slice(&buffer[..end]).map_err(FrameError::from);
                buffer.advance(end);
                Ok(Some(message))
            }
            Some(Err(error)) if error.is_eof() => {
                if buffer.len() > self.max_bytes {
                    // Reply at once rather than when the object ends, which it may never
                    // do. The first `max_bytes` are a valid start of an object, so
                    // following its strings and brackets finds where it ends.
                    self.skipping = Some(Skip::Object(ObjectSkipper::default()));
                    self.skip(buffer);
                    Ok(Some(Err(FrameError::TooLong(self.max_bytes))))
                } else {
                    // A valid start: wait for the rest.
                    Ok(None)
                }
            }
            Some(Err(error)) => {
                // Past the `{`, nothing tells where the broken object ends.
                buffer.advance(1);
                self.skipping = Some(Skip::Garbage);
                self.skip(buffer);
                Ok(Some(Err(FrameError::Json(error))))
            }
            // Not reached: the buffer starts with `{`.
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, buffer: &mut BytesMut) -> Result<Option<Self::Item>, io::Error> {
        if let Some(frame) = self.decode(buffer)? {
            return Ok(Some(frame));
        }
        // Whatever is being skipped was reported already; anything else left is the start
        // of an unfinished object.
        self.skipping = None;
        if buffer.is_empty() {
            return Ok(None);
        }
        buffer.clear();
        Ok(Some(Err(FrameError::UnfinishedStream)))
    }
}

/// JSON's four whitespace bytes (not `u8::is_ascii_whitespace`, which adds form feed).
fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// Follows an object from its `{` through strings and nested brackets to find its end,
/// keeping nothing. A newline also ends it: an over-long object is more likely a runaway
/// line than a pretty-printed request, and this bounds what a broken one can swallow.
#[derive(Debug, Default)]
struct ObjectSkipper {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl ObjectSkipper {
    /// Feeds the next `bytes`; if the object ends within them, returns how many of them
    /// belong to it (a newline that ends it is left for the caller).
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (index, &byte) in bytes.iter().enumerate() {
            if byte == b'\n' {
                return Some(index);
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(index + 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CallId, Command};

    /// What the decoder made of a stream, errors as their messages.
    type Decoded = Vec<Result<Command, String>>;

    const LIMIT: usize = 64;

    /// Decodes `input` fed in chunks of `chunk` bytes, then the end of the stream.
    fn decode_in_chunks(input: &[u8], chunk: usize) -> Decoded {
        let mut codec = JsonCodec::<Command>::new(LIMIT);
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        for piece in input.chunks(chunk) {
            buffer.extend_from_slice(piece);
            while let Some(frame) = codec.decode(&mut buffer).expect("decoding never fails") {
                frames.push(frame.map_err(|error| error.to_string()));
            }
        }
        while let Some(frame) = codec.decode_eof(&mut buffer).expect("decoding never fails") {
            frames.push(frame.map_err(|error| error.to_string()));
        }
        frames
    }

    /// Decodes `input` split at every possible place, one byte at a time included, and
    /// checks that every split reads the same; returns that reading.
    fn decode(input: &[u8]) -> Decoded {
        let whole = decode_in_chunks(input, input.len().max(1));
        for chunk in 1..input.len() {
            assert_eq!(decode_in_chunks(input, chunk), whole, "chunks of {chunk} bytes");
        }
        whole
    }

    fn call(id: &str) -> Result<Command, String> {
        Ok(Command::Call(CallId::parse(id).expect("valid call id")))
    }

    fn error(message: &str) -> Result<Command, String> {
        Err(message.to_owned())
    }

    #[test]
    fn a_request_needs_no_terminator() {
        assert_eq!(decode(br#"{"command": "call", "id": "1"}"#), [call("1")]);
    }

    #[test]
    fn requests_may_follow_each_other_directly_or_on_lines() {
        assert_eq!(
            decode(b"{\"command\":\"call\",\"id\":\"1\"}{\"command\":\"call\",\"id\":\"2\"}"),
            [call("1"), call("2")]
        );
        assert_eq!(
            decode(b"\r\n{\"command\":\"call\",\"id\":\"1\"}\r\n\n  \t{\"command\":\"call\",\"id\":\"2\"}\n"),
            [call("1"), call("2")]
        );
    }

    #[test]
    fn a_bad_object_is_an_item_and_reading_goes_on() {
        let frames =
            decode(b"{\"command\":\"dial\",\"id\":\"1\"}{\"command\":\"call\",\"id\":\"2\"}");
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(frames[0].as_ref().is_err_and(|error| error.starts_with("unknown variant `dial`")));
        assert_eq!(frames[1], call("2"));
    }

    #[test]
    fn bad_bytes_are_skipped_to_the_next_line_or_object() {
        let frames =
            decode(b"not json {\"x\"\n{'command': 'call'}\n{\"command\":\"call\",\"id\":\"3\"}");
        assert_eq!(frames.len(), 4, "{frames:?}");
        assert_eq!(frames[0], error("expected a JSON object"));
        // The `{` after the garbage starts an object, which the next line breaks.
        assert!(frames[1].as_ref().is_err_and(|error| error.starts_with("expected `:`")));
        assert!(frames[2].as_ref().is_err_and(|error| error.starts_with("key must be a string")));
        assert_eq!(frames[3], call("3"));
        // Without a newline, the next object ends the skipping.
        assert_eq!(
            decode(b"oops{\"command\":\"call\",\"id\":\"4\"}"),
            [error("expected a JSON object"), call("4")]
        );
    }

    #[test]
    fn without_a_newline_bad_bytes_cost_only_what_arrived() {
        // A client that sends no newlines gets its error and can go on at once.
        let mut codec = JsonCodec::<Command>::new(LIMIT);
        let mut buffer = BytesMut::from(&b"{'command': 'call'}"[..]);
        let frame = codec.decode(&mut buffer).expect("decoding never fails");
        assert!(matches!(frame, Some(Err(FrameError::Json(_)))), "{frame:?}");
        assert!(buffer.is_empty());
        buffer.extend_from_slice(br#"{"command":"call","id":"1"}"#);
        let frame = codec.decode(&mut buffer).expect("decoding never fails");
        assert_eq!(frame.map(|frame| frame.map_err(|error| error.to_string())), Some(call("1")));
    }

    #[test]
    fn a_request_may_span_lines() {
        assert_eq!(decode(b"{\n  \"command\": \"call\",\n  \"id\": \"1\"\n}\n"), [call("1")]);
    }

    #[test]
    fn an_unfinished_request_at_the_end_of_the_stream_is_reported() {
        assert_eq!(
            decode(br#"{"command":"call","id":"1"} {"command":"#),
            [call("1"), error("the connection ended inside an unfinished JSON object")]
        );
    }

    #[test]
    fn a_request_of_exactly_the_limit_is_accepted() {
        let request =
            |id_len: usize| format!(r#"{{"command":"call","id":"{}"}}"#, "9".repeat(id_len));
        let id = "9".repeat(LIMIT - request(0).len());
        let at_limit = request(id.len());
        assert_eq!(at_limit.len(), LIMIT);
        assert_eq!(decode(at_limit.as_bytes()), [call(&id)]);
        assert_eq!(decode(format!("{at_limit}\n").as_bytes()), [call(&id)]);

        let over = request(LIMIT + 1 - request(0).len());
        assert_eq!(decode(over.as_bytes()), [error("longer than 64 bytes")]);
    }

    #[test]
    fn the_rest_of_an_over_long_request_is_skipped_to_its_end() {
        // Braces and escaped quotes inside strings do not end the object early.
        let long = format!(r#"{{"command":"call","id":"{}\"}}{{","x":[{{}}]}}"#, "7".repeat(LIMIT));
        let next = r#"{"command":"call","id":"1"}"#;
        assert_eq!(
            decode(format!("{long}{next}").as_bytes()),
            [error("longer than 64 bytes"), call("1")]
        );
        // An over-long object that never closes ends at its line.
        let unclosed = format!(r#"{{"id":"{}"#, "7".repeat(LIMIT));
        assert_eq!(
            decode(format!("{unclosed}\n{next}").as_bytes()),
            [error("longer than 64 bytes"), call("1")]
        );
        // And is not reported twice when the stream ends inside it.
        assert_eq!(decode(unclosed.as_bytes()), [error("longer than 64 bytes")]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_the_buffer_stays_bounded() {
        // A fixed pseudo-random stream over bytes that matter to the decoder.
        const ALPHABET: &[u8] = b"{}[]\":,\\ \n\rab1\xff";
        let mut state: u32 = 0x1234_5678;
        let mut next = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 16) as usize
        };
        let mut codec = JsonCodec::<Command>::new(LIMIT);
        let mut buffer = BytesMut::new();
        for _ in 0..20_000 {
            let chunk: Vec<u8> =
                (0..next() % 40).map(|_| ALPHABET[next() % ALPHABET.len()]).collect();
            buffer.extend_from_slice(&chunk);
            while codec.decode(&mut buffer).expect("decoding never fails").is_some() {}
            assert!(buffer.len() <= LIMIT + 40, "buffer grew to {}", buffer.len());
        }
        while codec.decode_eof(&mut buffer).expect("decoding never fails").is_some() {}
        assert!(buffer.is_empty());
    }

    #[test]
    fn replies_have_the_documented_shape() {
        let response = Reply::Response("Call 5 missed\nCall 6 ringing for operator A".to_owned());
        assert_eq!(
            encode_line(&response).expect("replies serialize"),
            b"{\"response\":\"Call 5 missed\\nCall 6 ringing for operator A\"}\n"
        );
        let error = encode_line(&Reply::Error("unknown call 9".to_owned())).expect("serializes");
        assert_eq!(error, b"{\"error\":\"unknown call 9\"}\n");
        let parsed: Reply =
            serde_json::from_str(r#"{"response":"Call 1 missed"}"#).expect("valid reply");
        assert_eq!(parsed, Reply::Response("Call 1 missed".to_owned()));
    }
}
