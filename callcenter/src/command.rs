//! The four commands of the call center and the ids they name, parsed at the edge.
//!
//! Raw strings stop here: a [`CallId`] or [`OperatorId`] that exists is known to be one
//! word, so every message built from it stays on one line and every command typed back
//! with it parses again. A [`Command`] is both what a typed line means and, serialized,
//! what travels over TCP (see [`crate::protocol`]). An [`Input`] is what a typed line asks
//! of the interpreter: a command, or `exit`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in characters: enough for any realistic call or operator
/// reference, short enough that a hostile client cannot make every message huge.
pub const MAX_ID_CHARS: usize = 64;

/// Why a string is not a valid call or operator id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("an id cannot be empty")]
    Empty,
    /// The id holds whitespace or a control character, which would split it or its messages.
    #[error("an id cannot contain spaces or control characters: {0:?}")]
    Whitespace(String),
    /// An operator id holds a comma, which separates operators in `--operators A,B`.
    #[error("an operator id cannot contain a comma: {0:?}")]
    Comma(String),
    /// The id is longer than [`MAX_ID_CHARS`].
    #[error("an id can have at most {MAX_ID_CHARS} characters")]
    TooLong,
}

/// The rules both kinds of id share.
fn check_word(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(IdError::Whitespace(raw.to_owned()));
    }
    if raw.chars().count() > MAX_ID_CHARS {
        return Err(IdError::TooLong);
    }
    Ok(())
}

/// An id as a client sends it: text, or a whole number (`{"command": "call", "id": 3}`, as some
/// peer clients send it), which is read as its digits.
#[derive(Deserialize)]
#[serde(untagged)]
enum SentId {
    Text(String),
    Number(u64),
}

impl From<SentId> for String {
    fn from(id: SentId) -> String {
        match id {
            SentId::Text(text) => text,
            SentId::Number(n) => n.to_string(),
        }
    }
}

/// The id of a call, chosen by whoever places it (`call 7`): one word, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "SentId", into = "String")]
pub struct CallId(String);

impl CallId {
    /// Parses a call id: one word of at most [`MAX_ID_CHARS`] characters.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        check_word(&raw)?;
        Ok(Self(raw))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<SentId> for CallId {
    type Error = IdError;

    fn try_from(raw: SentId) -> Result<Self, Self::Error> {
        Self::parse(String::from(raw))
    }
}

impl From<CallId> for String {
    fn from(id: CallId) -> Self {
        id.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of an operator (`A`, `B`): one word without commas, case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "SentId", into = "String")]
pub struct OperatorId(String);

impl OperatorId {
    /// Parses an operator id: one word of at most [`MAX_ID_CHARS`] characters, no comma.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        check_word(&raw)?;
        if raw.contains(',') {
            return Err(IdError::Comma(raw));
        }
        Ok(Self(raw))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<SentId> for OperatorId {
    type Error = IdError;

    fn try_from(raw: SentId) -> Result<Self, Self::Error> {
        Self::parse(String::from(raw))
    }
}

impl From<OperatorId> for String {
    fn from(id: OperatorId) -> Self {
        id.0
    }
}

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing a user asks of the call center.
///
/// Serialized, it is the request line of the TCP protocol, `{"command":"call","id":"1"}`:
/// the `id` is a call id for `call` and `hangup` and an operator id for `answer` and `reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", content = "id", rename_all = "lowercase")]
pub enum Command {
    /// A new call arrives.
    Call(CallId),
    /// The operator answers the call ringing for them.
    Answer(OperatorId),
    /// The operator turns down the call ringing for them.
    Reject(OperatorId),
    /// The caller hangs up, whether or not the call was answered.
    Hangup(CallId),
}

/// Why a typed line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first word is none of the four verbs.
    #[error("unknown command {0:?}: expected call, answer, reject or hangup")]
    UnknownVerb(String),
    /// The verb came without its id.
    #[error("missing id: usage is \"{0} <{id}>\"", id = id_kind(.0))]
    MissingId(&'static str),
    /// More words followed the id.
    #[error("unexpected {extra:?} after the id: usage is \"{verb} <{id}>\"", id = id_kind(.verb))]
    ExtraArgument {
        /// The verb the line started with.
        verb: &'static str,
        /// The first word too many.
        extra: String,
    },
    /// The id is not a valid id.
    #[error(transparent)]
    InvalidId(#[from] IdError),
}

/// What the id after `verb` names, for usage hints.
fn id_kind(verb: &str) -> &'static str {
    match verb {
        "answer" | "reject" => "operator",
        _ => "call id",
    }
}

impl Command {
    /// Parses a typed line such as `call 1` or `answer A`.
    ///
    /// Returns `Ok(None)` for a blank line, which both the prompt and piped scripts skip
    /// without a message. Verbs are lower-case, exactly as in the JSON protocol.
    pub fn parse_line(line: &str) -> Result<Option<Self>, ParseError> {
        let mut words = line.split_whitespace();
        let Some(verb) = words.next() else {
            return Ok(None);
        };
        let verb: &'static str = match verb {
            "call" => "call",
            "answer" => "answer",
            "reject" => "reject",
            "hangup" => "hangup",
            other => return Err(ParseError::UnknownVerb(other.to_owned())),
        };
        let id = words.next().ok_or(ParseError::MissingId(verb))?;
        if let Some(extra) = words.next() {
            return Err(ParseError::ExtraArgument { verb, extra: extra.to_owned() });
        }
        let command = match verb {
            "call" => Self::Call(CallId::parse(id)?),
            "answer" => Self::Answer(OperatorId::parse(id)?),
            "reject" => Self::Reject(OperatorId::parse(id)?),
            _ => Self::Hangup(CallId::parse(id)?),
        };
        Ok(Some(command))
    }
}

/// Longest typed line the interpreter accepts, in bytes: far more than any command needs
/// (`hangup` and an id of [`MAX_ID_CHARS`] characters), little enough to quote safely.
pub const MAX_TYPED_LINE_BYTES: usize = 1024;

/// How much of an over-long line an error quotes, in characters: enough to recognise it.
const QUOTED_CHARS: usize = 20;

/// What a typed line asks of the interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A blank line: nothing.
    Blank,
    /// A call-center command, for the queue manager.
    Command(Command),
    /// `exit` or `quit` (anything after the word is ignored): stop reading input, as at
    /// its end.
    Exit,
}

/// Why a typed line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The line is longer than [`MAX_TYPED_LINE_BYTES`]; only its start is quoted.
    #[error("line too long: more than {MAX_TYPED_LINE_BYTES} bytes, starting {start:?}…")]
    TooLong {
        /// The first characters of the line.
        start: String,
    },
    /// The line is not a command.
    #[error(transparent)]
    Command(#[from] ParseError),
}

impl Input {
    /// Parses a typed line: `exit`, `quit`, a blank line or a [`Command`].
    ///
    /// A reader may cut a line short once it is past [`MAX_TYPED_LINE_BYTES`]: it is
    /// refused either way.
    pub fn parse(line: &str) -> Result<Self, InputError> {
        if line.len() > MAX_TYPED_LINE_BYTES {
            // Quote only the start: echoing a huge line back whole floods the terminal.
            return Err(InputError::TooLong { start: line.chars().take(QUOTED_CHARS).collect() });
        }
        if let Some("exit" | "quit") = line.split_whitespace().next() {
            return Ok(Self::Exit);
        }
        Ok(Command::parse_line(line)?.map_or(Self::Blank, Self::Command))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Command {
        Command::Call(CallId::parse(id).expect("valid call id"))
    }

    #[test]
    fn parses_the_four_verbs() {
        let answer = Command::Answer(OperatorId::parse("A").expect("valid operator"));
        let reject = Command::Reject(OperatorId::parse("B").expect("valid operator"));
        let hangup = Command::Hangup(CallId::parse("9").expect("valid call id"));
        assert_eq!(Command::parse_line("call 1"), Ok(Some(call("1"))));
        assert_eq!(Command::parse_line("  answer   A "), Ok(Some(answer)));
        assert_eq!(Command::parse_line("reject B"), Ok(Some(reject)));
        assert_eq!(Command::parse_line("hangup 9\r"), Ok(Some(hangup)));
    }

    #[test]
    fn blank_lines_are_skipped() {
        assert_eq!(Command::parse_line(""), Ok(None));
        assert_eq!(Command::parse_line(" \t "), Ok(None));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let message =
            |line: &str| Command::parse_line(line).expect_err("line is invalid").to_string();
        assert_eq!(
            message("dial 1"),
            "unknown command \"dial\": expected call, answer, reject or hangup"
        );
        // Verbs are lower-case only, as in the JSON protocol.
        assert!(message("CALL 1").starts_with("unknown command \"CALL\""));
        assert_eq!(message("answer"), "missing id: usage is \"answer <operator>\"");
        assert_eq!(message("hangup"), "missing id: usage is \"hangup <call id>\"");
        assert_eq!(
            message("call 1 2"),
            "unexpected \"2\" after the id: usage is \"call <call id>\""
        );
        assert_eq!(message("answer A,B"), "an operator id cannot contain a comma: \"A,B\"");
    }

    #[test]
    fn ids_are_single_bounded_words() {
        assert_eq!(CallId::parse(""), Err(IdError::Empty));
        assert!(matches!(CallId::parse("a\nb"), Err(IdError::Whitespace(_))));
        assert!(matches!(OperatorId::parse("\u{1b}[2J"), Err(IdError::Whitespace(_))));
        assert_eq!(CallId::parse("x".repeat(65)), Err(IdError::TooLong));
        assert!(CallId::parse("x".repeat(64)).is_ok());
        assert!(CallId::parse("1,2").is_ok()); // only operator lists use commas
    }

    #[test]
    fn json_shape_is_command_and_id() {
        let json = serde_json::to_string(&call("1")).expect("serializes");
        assert_eq!(json, r#"{"command":"call","id":"1"}"#);
        let answer: Command =
            serde_json::from_str(r#"{"command":"answer","id":"A"}"#).expect("valid request");
        assert_eq!(answer, Command::Answer(OperatorId::parse("A").expect("valid operator")));
        assert!(serde_json::from_str::<Command>(r#"{"command":"call","id":""}"#).is_err());
        // Some peer clients send the call's id as a number: the same call.
        assert_eq!(
            serde_json::from_str::<Command>(r#"{"command":"call","id":3}"#).expect("a number"),
            serde_json::from_str::<Command>(r#"{"command":"call","id":"3"}"#).expect("text"),
        );
        assert!(serde_json::from_str::<Command>(r#"{"command":"call","id":true}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"command":"dial","id":"1"}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"command":"call"}"#).is_err());
    }

    #[test]
    fn exit_and_quit_end_the_input() {
        assert_eq!(Input::parse("exit"), Ok(Input::Exit));
        assert_eq!(Input::parse("  quit \r"), Ok(Input::Exit));
        assert_eq!(Input::parse("quit now"), Ok(Input::Exit));
        assert_eq!(Input::parse(""), Ok(Input::Blank));
        assert_eq!(Input::parse("call 1"), Ok(Input::Command(call("1"))));
        // Lower-case only, like the commands; and a word that merely starts with one is
        // not one.
        assert!(matches!(Input::parse("EXIT"), Err(InputError::Command(_))));
        assert!(matches!(Input::parse("exiting"), Err(InputError::Command(_))));
    }

    #[test]
    fn an_over_long_line_is_refused_and_only_its_start_quoted() {
        let line = format!("call {}", "1".repeat(MAX_TYPED_LINE_BYTES));
        let error = Input::parse(&line).expect_err("line is too long");
        assert_eq!(error, InputError::TooLong { start: "call 111111111111111".to_owned() });
        assert_eq!(
            error.to_string(),
            "line too long: more than 1024 bytes, starting \"call 111111111111111\"…"
        );
        // Even `exit` is not looked for in an over-long line.
        let padded = format!("exit{}", " ".repeat(MAX_TYPED_LINE_BYTES));
        assert!(matches!(Input::parse(&padded), Err(InputError::TooLong { .. })));
        // At the limit, a line is judged as usual.
        let at_limit = format!("call 1{}", " ".repeat(MAX_TYPED_LINE_BYTES - 6));
        assert_eq!(Input::parse(&at_limit), Ok(Input::Command(call("1"))));
    }
}
