//! What a bot reports, made storable before it reaches the database: PostgreSQL stores no NUL in
//! text or JSON (`22P05`), and a report's strings and output are bounded. A report is never
//! refused for its content, since a refused report would leave its task RUNNING: what cannot be
//! stored is replaced, and marked so a reader sees it was.
//!
//! Pure functions; [`event`] returns `None` (no copy) for the usual report, which needs nothing.

use std::borrow::Cow;

use broker_config::{Event, RowOutcome};
use serde_json::Value;

/// The longest row message kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// The longest error or reason kept, in characters.
pub const MAX_ERROR_CHARS: usize = 8_000;
/// The longest attempt log kept, in characters: the agent sends at most the last 64 KiB.
pub const MAX_LOG_CHARS: usize = 64 * 1024;
/// The largest output kept, serialized, in bytes; a larger one is replaced by a note of its size.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// What replaces a NUL character: U+FFFD, the replacement character, as for invalid text.
const REPLACEMENT: char = '\u{FFFD}';

/// `text` without NUL characters and at most `max` characters long (a truncated text says how
/// much was cut).
pub fn text(text: &str, max: usize) -> Cow<'_, str> {
    let has_nul = text.contains('\0');
    // Cheap first: a byte length within the bound is a character count within it.
    let too_long = text.len() > max && text.chars().count() > max;
    if !has_nul && !too_long {
        return Cow::Borrowed(text);
    }
    let mut out: String =
        text.chars().take(max).map(|c| if c == '\0' { REPLACEMENT } else { c }).collect();
    if has_nul {
        out.push_str(" [NUL characters replaced]");
    }
    if too_long {
        out.push_str(&format!(" [truncated: {} bytes in all]", text.len()));
    }
    Cow::Owned(out)
}

/// `value` with every NUL in its strings and keys replaced, or, when it serializes to more than
/// [`MAX_OUTPUT_BYTES`], a note of its size in its place.
pub fn output(value: &Value) -> Option<Value> {
    let size = serialized_len(value);
    if size > MAX_OUTPUT_BYTES {
        return Some(serde_json::json!({
            "truncated": true,
            "reason": format!("the output was {size} bytes, over the {MAX_OUTPUT_BYTES}-byte limit"),
        }));
    }
    has_nul(value).then(|| without_nul(value))
}

/// How many bytes `value` serializes to, counted without writing them anywhere (it is checked
/// for every completion that carries an output).
fn serialized_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn without_nul(value: &Value) -> Value {
    let clean = |s: &str| s.replace('\0', &REPLACEMENT.to_string());
    match value {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(items) => Value::Array(items.iter().map(without_nul).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (clean(k), without_nul(v))).collect())
        }
        other => other.clone(),
    }
}

fn rows(rows: &[RowOutcome]) -> Option<Vec<RowOutcome>> {
    let needs = rows.iter().any(|r| matches!(text(&r.message, MAX_MESSAGE_CHARS), Cow::Owned(_)));
    needs.then(|| {
        rows.iter()
            .map(|r| RowOutcome {
                message: text(&r.message, MAX_MESSAGE_CHARS).into_owned(),
                ..r.clone()
            })
            .collect()
    })
}

/// Whether anything in `event` must change to be stored: checked without copying, since nearly
/// every event needs nothing.
fn needs_care(event: &Event) -> bool {
    let text_needs = |s: &str, max: usize| s.contains('\0') || s.len() > max;
    let rows_need =
        |rows: &[RowOutcome]| rows.iter().any(|r| text_needs(&r.message, MAX_MESSAGE_CHARS));
    match event {
        Event::TaskRejected { reason, .. } => text_needs(reason, MAX_ERROR_CHARS),
        Event::TaskProgress { rows, .. } => rows_need(rows),
        Event::TaskCompleted { rows, output, log, .. } => {
            rows_need(rows)
                || output
                    .as_ref()
                    .is_some_and(|o| has_nul(o) || serialized_len(o) > MAX_OUTPUT_BYTES)
                || log.as_deref().is_some_and(|l| text_needs(l, MAX_LOG_CHARS))
        }
        Event::TaskFailed { rows, error, log, .. } => {
            rows_need(rows)
                || text_needs(error, MAX_ERROR_CHARS)
                || log.as_deref().is_some_and(|l| text_needs(l, MAX_LOG_CHARS))
        }
        Event::TaskReleased { rows, reason, .. } => {
            rows_need(rows) || text_needs(reason, MAX_ERROR_CHARS)
        }
        _ => false,
    }
}

/// The event as it can be stored, or `None` when it can be stored as it is.
pub fn event(event: &Event) -> Option<Event> {
    let changed_text = |s: &str, max| match text(s, max) {
        Cow::Owned(clean) => Some(clean),
        Cow::Borrowed(_) => None,
    };
    let changed_log = |log: &mut Option<String>| {
        log.as_deref()
            .and_then(|l| changed_text(l, MAX_LOG_CHARS))
            .map(|c| *log = Some(c))
            .is_some()
    };
    if !needs_care(event) {
        return None;
    }
    let mut clean = event.clone();
    let changed = match &mut clean {
        Event::TaskRejected { reason, .. } => {
            changed_text(reason, MAX_ERROR_CHARS).map(|c| *reason = c).is_some()
        }
        Event::TaskProgress { rows: r, .. } => rows(r).map(|c| *r = c).is_some(),
        Event::TaskCompleted { rows: r, output: o, log, .. } => {
            let rows_changed = rows(r).map(|c| *r = c).is_some();
            let output_changed = o.as_ref().and_then(output).map(|c| *o = Some(c)).is_some();
            let log_changed = changed_log(log);
            rows_changed || output_changed || log_changed
        }
        Event::TaskFailed { rows: r, error, log, .. } => {
            let rows_changed = rows(r).map(|c| *r = c).is_some();
            let log_changed = changed_log(log);
            changed_text(error, MAX_ERROR_CHARS).map(|c| *error = c).is_some()
                || rows_changed
                || log_changed
        }
        Event::TaskReleased { rows: r, reason, .. } => {
            let rows_changed = rows(r).map(|c| *r = c).is_some();
            changed_text(reason, MAX_ERROR_CHARS).map(|c| *reason = c).is_some() || rows_changed
        }
        _ => false,
    };
    changed.then_some(clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_text_is_kept_as_it_is() {
        assert!(matches!(text("User ana created", 100), Cow::Borrowed(_)));
        assert_eq!(output(&json!({"message": "success"})), None);
    }

    #[test]
    fn a_nul_is_replaced_and_marked() {
        let clean = text("success\0", 100);
        assert_eq!(clean, "success\u{FFFD} [NUL characters replaced]");
        let out =
            output(&json!({"message": "success\u{0}", "k\u{0}": [1, "a\u{0}"]})).expect("changed");
        assert_eq!(out, json!({"message": "success\u{FFFD}", "k\u{FFFD}": [1, "a\u{FFFD}"]}));
    }

    #[test]
    fn long_text_is_cut_and_says_so() {
        let long = "é".repeat(5_000);
        let cut = text(&long, 2_000);
        assert!(cut.starts_with(&"é".repeat(2_000)));
        assert!(cut.ends_with("[truncated: 10000 bytes in all]"), "{}", &cut[cut.len() - 40..]);
        // At the bound exactly: kept.
        assert!(matches!(text(&"é".repeat(2_000), 2_000), Cow::Borrowed(_)));
    }

    #[test]
    fn a_huge_output_is_replaced_by_a_note_of_its_size() {
        let huge = json!({"blob": "x".repeat(MAX_OUTPUT_BYTES)});
        let note = output(&huge).expect("replaced");
        assert_eq!(note["truncated"], true);
        assert!(note["reason"].as_str().expect("reason").contains("over the 1048576-byte limit"));
    }

    #[test]
    fn every_field_a_bot_reports_is_made_storable() {
        let task = broker_config::TaskRef { task_id: uuid::Uuid::nil(), attempt: 1 };
        let bot = broker_config::BotName::parse("b").expect("name");
        let row =
            RowOutcome { row: 1, status: broker_config::RowStatus::Done, message: "a\0".into() };
        let failed = Event::TaskFailed {
            task,
            bot: bot.clone(),
            rows: vec![row.clone()],
            error: "e\0".into(),
            retryable: true,
            log: Some("l\0".into()),
            at: chrono::Utc::now(),
        };
        let Some(Event::TaskFailed { rows, error, log, .. }) = event(&failed) else {
            panic!("changed")
        };
        assert!(!rows[0].message.contains('\0') && !error.contains('\0'));
        assert!(log.is_some_and(|l| !l.contains('\0')));
        let clean = Event::TaskAccepted { task, bot, at: chrono::Utc::now() };
        assert_eq!(event(&clean), None);
    }
}
