//! Monitoring reports as they arrive: `{"servico":"login","retorno":"503"}` (the original field
//! names) or `{"service":"login","status":"503"}`, alone (one broker message) or in a list
//! (`{"gatilhos":[…]}` or `{"triggers":[…]}` on the API). Everything is checked here, before
//! anything is counted, and becomes a [`Trigger`]: a service and a return code, normalised.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest service name.
pub const MAX_SERVICE_CHARS: usize = 100;
/// The longest return code.
pub const MAX_CODE_CHARS: usize = 64;
/// The most reports one request may carry.
pub const MAX_REPORTS: usize = 1000;

/// A checked (service, return code) pair: the service lowercased, the return code uppercased,
/// both trimmed and non-empty, so `Login`/`503` and `login`/`503` are the same trigger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct Trigger {
    /// The service that failed.
    #[schema(example = "login")]
    pub service: String,
    /// What it returned (an HTTP status, an error code), as text.
    #[schema(example = "503")]
    pub status: String,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.status)
    }
}

/// Why a report was refused; `field` is a path into the body (`triggers[2].service`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReportError {
    /// Where.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn refuse(field: impl Into<String>, message: impl Into<String>) -> ReportError {
    ReportError { field: field.into(), message: message.into() }
}

impl Trigger {
    /// Checks a pair: both present, non-blank and short enough. `field` names it in errors.
    pub fn parse(service: &str, status: &str, field: &str) -> Result<Trigger, ReportError> {
        let service = service.trim();
        let status = status.trim();
        if service.is_empty() {
            return Err(refuse(format!("{field}.service"), "service must not be blank"));
        }
        if status.is_empty() {
            return Err(refuse(format!("{field}.status"), "status (retorno) must not be blank"));
        }
        // PostgreSQL stores no NUL in text (found by tests/properties.rs: a 500 there).
        if service.contains('\0') {
            return Err(refuse(format!("{field}.service"), "service must not contain NUL"));
        }
        if status.contains('\0') {
            return Err(refuse(format!("{field}.status"), "status must not contain NUL"));
        }
        // The lengths are those of the normalised text, which is what the columns hold: case
        // changes can lengthen it ('ß' uppercases to "SS", 'İ' lowercases to two characters).
        let (service, status) = (service.to_lowercase(), status.to_uppercase());
        if service.chars().count() > MAX_SERVICE_CHARS {
            return Err(refuse(
                format!("{field}.service"),
                format!("service must be at most {MAX_SERVICE_CHARS} characters (lowercased)"),
            ));
        }
        if status.chars().count() > MAX_CODE_CHARS {
            return Err(refuse(
                format!("{field}.status"),
                format!("status must be at most {MAX_CODE_CHARS} characters (uppercased)"),
            ));
        }
        Ok(Trigger { service, status })
    }

    /// The trigger of a pipeline task that ended FAILED: its system, and the error's first word
    /// when it looks like a code (`503`, `TIMEOUT`, `E_LOGIN`) rather than the system's own name
    /// (`NOOP told to fail`), else `FAILED`.
    pub fn of_failed_task(system: &str, error: Option<&str>) -> Trigger {
        let code = error
            .and_then(|e| e.split_whitespace().next())
            .map(|word| word.trim_end_matches([':', ',', '.', ';']))
            .filter(|word| is_code(word) && !word.eq_ignore_ascii_case(system.trim()))
            .unwrap_or("FAILED");
        Trigger { service: system.trim().to_lowercase(), status: code.to_uppercase() }
    }
}

/// A word that reads as an error code: digits, or capitals, digits, `_` and `-` with a capital
/// or a digit first, at most [`MAX_CODE_CHARS`].
fn is_code(word: &str) -> bool {
    let mut chars = word.chars();
    let Some(first) = chars.next() else { return false };
    word.len() <= MAX_CODE_CHARS
        && (first.is_ascii_uppercase() || first.is_ascii_digit())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// One report as sent, in either shape; fields are optional here so their absence is reported
/// with the field's name rather than as a parse error.
#[derive(Debug, Clone, Deserialize)]
pub struct RawTrigger {
    /// `service` or `servico`.
    #[serde(default, alias = "servico")]
    service: Option<Value>,
    /// `status` or `retorno`; a string, or a number (`503`).
    #[serde(default, alias = "retorno")]
    status: Option<Value>,
}

impl RawTrigger {
    /// Checks one report; `field` names it in errors.
    pub fn check(&self, field: &str) -> Result<Trigger, ReportError> {
        let service = match &self.service {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => {
                return Err(refuse(format!("{field}.service"), "service (servico) is missing"));
            }
            Some(_) => {
                return Err(refuse(format!("{field}.service"), "service must be a string"));
            }
        };
        let number;
        let status = match &self.status {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Number(n)) => {
                number = n.to_string();
                number.as_str()
            }
            None | Some(Value::Null) => {
                return Err(refuse(format!("{field}.status"), "status (retorno) is missing"));
            }
            Some(_) => {
                return Err(refuse(
                    format!("{field}.status"),
                    "status must be a string (\"503\") or a number",
                ));
            }
        };
        Trigger::parse(service, status, field)
    }
}

/// The body of `POST /api/v1/incidents/triggers`, in either shape.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct TriggersRequest {
    /// The reports: `triggers` (`[{"service","status"}]`) or `gatilhos`
    /// (`[{"servico","retorno"}]`).
    #[serde(default, alias = "gatilhos")]
    #[schema(value_type = Vec<Object>, example = json!([{"service": "login", "status": "503"}]))]
    pub triggers: Option<Vec<RawTrigger>>,
}

/// Parses and checks a whole request body: every report must be good, or none is counted.
pub fn parse_triggers(body: &[u8]) -> Result<Vec<Trigger>, ReportError> {
    let request: TriggersRequest = serde_json::from_slice(body)
        .map_err(|e| refuse("triggers", format!("expected {{\"triggers\":[{{\"service\",\"status\"}}]}} or {{\"gatilhos\":[{{\"servico\",\"retorno\"}}]}}: {e}")))?;
    let reports = request.triggers.ok_or_else(|| {
        refuse("triggers", "the body needs a `triggers` (or `gatilhos`) list of reports")
    })?;
    if reports.is_empty() {
        return Err(refuse("triggers", "the list of reports is empty"));
    }
    if reports.len() > MAX_REPORTS {
        return Err(refuse("triggers", format!("at most {MAX_REPORTS} reports per request")));
    }
    reports.iter().enumerate().map(|(i, raw)| raw.check(&format!("triggers[{i}]"))).collect()
}

/// Parses one report from a broker message (a single object, either shape).
pub fn parse_message(body: &[u8]) -> Result<Trigger, ReportError> {
    let raw: RawTrigger = serde_json::from_slice(body).map_err(|e| {
        refuse(
            "report",
            format!("expected {{\"service\",\"status\"}} or {{\"servico\",\"retorno\"}}: {e}"),
        )
    })?;
    raw.check("report")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn trigger(service: &str, status: &str) -> Trigger {
        Trigger { service: service.into(), status: status.into() }
    }

    #[test]
    fn both_shapes_parse_to_the_same_triggers() {
        let original = br#"{"gatilhos":[{"servico":"login","retorno":"503"},{"servico":"Login","retorno":404}]}"#;
        let english = br#"{"triggers":[{"service":"login","status":"503"},{"service":" login ","status":"404"}]}"#;
        let expected = [trigger("login", "503"), trigger("login", "404")];
        assert_eq!(parse_triggers(original).unwrap(), expected);
        assert_eq!(parse_triggers(english).unwrap(), expected);
        assert_eq!(
            parse_message(br#"{"servico":"pagamento","retorno":"timeout","host":"x"}"#).unwrap(),
            trigger("pagamento", "TIMEOUT"),
            "unknown fields are ignored, codes are uppercased"
        );
    }

    #[test]
    fn bad_reports_are_refused_with_their_field() {
        let field = |body: &[u8]| parse_triggers(body).unwrap_err().field;
        assert_eq!(field(br#"{"triggers":[]}"#), "triggers");
        assert_eq!(field(br#"{}"#), "triggers");
        assert_eq!(field(br#"[1]"#), "triggers");
        assert_eq!(
            field(br#"{"triggers":[{"service":"a","status":"1"},{"status":"1"}]}"#),
            "triggers[1].service"
        );
        assert_eq!(field(br#"{"gatilhos":[{"servico":"a"}]}"#), "triggers[0].status");
        assert_eq!(
            field(br#"{"triggers":[{"service":"  ","status":"1"}]}"#),
            "triggers[0].service"
        );
        assert_eq!(field(br#"{"triggers":[{"service":"a","status":true}]}"#), "triggers[0].status");
        assert!(parse_message(b"not json").is_err());
        assert_eq!(parse_message(br#"{"service":"a"}"#).unwrap_err().field, "report.status");
    }

    #[test]
    fn failed_tasks_report_their_system_and_an_error_code() {
        assert_eq!(
            Trigger::of_failed_task("VIVO360", Some("Vivo360 portal unavailable: refused")),
            trigger("vivo360", "FAILED")
        );
        assert_eq!(
            Trigger::of_failed_task("CPE", Some("504: gateway timeout")),
            trigger("cpe", "504")
        );
        assert_eq!(
            Trigger::of_failed_task("CPE", Some("TIMEOUT after 14 s")),
            trigger("cpe", "TIMEOUT")
        );
        assert_eq!(Trigger::of_failed_task("NOOP", None), trigger("noop", "FAILED"));
        assert_eq!(
            Trigger::of_failed_task("NOOP", Some("NOOP told to fail")),
            trigger("noop", "FAILED"),
            "the system's own name is no code"
        );
    }
}
