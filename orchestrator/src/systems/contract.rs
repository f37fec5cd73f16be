//! A system's input contract: what its tasks must carry, checked at the edge when a task is
//! created or changed, so a bot never gets a task it could only fail.

use broker_config::{Attachment, AttachmentError, System};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// The most CSV columns a contract may require.
pub const MAX_COLUMNS: usize = 100;
/// The longest column name, in characters.
pub const MAX_COLUMN_CHARS: usize = 64;
/// The largest JSON Schema, serialized, in bytes.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// The most schema violations a refusal lists (the first is the field; the rest say what else to
/// fix in the same round trip).
const MAX_VIOLATIONS: usize = 5;

/// What a system's tasks must carry.
// The example spares fuzzers generating a free-form schema object: Schemathesis 4.32 crashed
// doing so (a CPython recursion error, depending on the seed), which failed scripts/fuzz-api.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"kind": "csv", "columns": ["employee", "amount"]}))]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Contract {
    /// A CSV attachment (one item per row) with at least these columns (any case, any order).
    Csv {
        /// The columns the header must have.
        columns: Vec<String>,
    },
    /// A JSON payload that meets this JSON Schema (draft 2020-12 unless `$schema` says
    /// otherwise; no remote `$ref`).
    Json {
        /// The schema.
        #[schema(value_type = Object)]
        schema: Value,
    },
    /// Anything: an optional CSV with any header, an optional JSON object.
    None,
}

impl Contract {
    /// Checks a contract a client sent: columns named and not repeated, a schema that compiles.
    /// Errors name the field under `input` (`input.columns[2]`).
    pub fn check(self) -> Result<Contract, ApiError> {
        match self {
            Contract::Csv { columns } => {
                if columns.is_empty() || columns.len() > MAX_COLUMNS {
                    return Err(ApiError::invalid(
                        "input.columns",
                        format!("a CSV contract names 1 to {MAX_COLUMNS} columns"),
                    ));
                }
                let mut seen: Vec<String> = Vec::with_capacity(columns.len());
                for (index, column) in columns.iter().enumerate() {
                    let column = column.trim().to_lowercase();
                    let field = format!("input.columns[{index}]");
                    if column.is_empty() || column.chars().count() > MAX_COLUMN_CHARS {
                        return Err(ApiError::invalid(
                            field,
                            format!("a column name has 1 to {MAX_COLUMN_CHARS} characters"),
                        ));
                    }
                    if seen.contains(&column) {
                        return Err(ApiError::invalid(field, format!("column '{column}' twice")));
                    }
                    seen.push(column);
                }
                Ok(Contract::Csv { columns: seen })
            }
            Contract::Json { schema } => {
                // Booleans are schemas too, but `true` is `{"kind": "none"}` and `false` refuses
                // every task: only objects, as the API documents.
                if !schema.is_object() {
                    return Err(ApiError::invalid(
                        "input.schema",
                        "a JSON Schema here is an object",
                    ));
                }
                if schema.to_string().len() > MAX_SCHEMA_BYTES {
                    return Err(ApiError::invalid(
                        "input.schema",
                        format!("the schema is larger than {MAX_SCHEMA_BYTES} bytes"),
                    ));
                }
                compile(&schema).map_err(|message| ApiError::invalid("input.schema", message))?;
                Ok(Contract::Json { schema })
            }
            Contract::None => Ok(Contract::None),
        }
    }

    /// The contract as stored: (`input`, `columns`, `schema`).
    pub fn to_columns(&self) -> (&'static str, Option<Value>, Option<Value>) {
        match self {
            Contract::Csv { columns } => ("csv", Some(Value::from(columns.clone())), None),
            Contract::Json { schema } => ("json", None, Some(schema.clone())),
            Contract::None => ("none", None, None),
        }
    }

    /// The contract from its stored columns; `None` when they are not one (a row written by
    /// hand).
    pub fn from_columns(
        input: &str,
        columns: Option<&Value>,
        schema: Option<&Value>,
    ) -> Option<Contract> {
        match input {
            "csv" => {
                let columns = columns?.as_array()?;
                let columns: Option<Vec<String>> =
                    columns.iter().map(|c| c.as_str().map(str::to_owned)).collect();
                Some(Contract::Csv { columns: columns? })
            }
            "json" => Some(Contract::Json { schema: schema?.clone() }),
            "none" => Some(Contract::None),
            _ => None,
        }
    }
}

/// A contract ready to check tasks: its schema compiled once.
#[derive(Debug)]
pub struct Checker {
    system: System,
    kind: Compiled,
}

#[derive(Debug)]
enum Compiled {
    Csv(Vec<String>),
    Json(Box<jsonschema::Validator>),
    None,
}

impl Checker {
    /// Compiles `contract` for `system`. A stored schema that no longer compiles (written by
    /// hand) refuses every task with the reason, rather than letting them through unchecked.
    pub fn new(system: System, contract: &Contract) -> Result<Checker, String> {
        let kind = match contract {
            Contract::Csv { columns } => Compiled::Csv(columns.clone()),
            Contract::Json { schema } => Compiled::Json(Box::new(compile(schema)?)),
            Contract::None => Compiled::None,
        };
        Ok(Checker { system, kind })
    }

    /// Whether tasks must carry a CSV.
    pub fn needs_csv(&self) -> bool {
        matches!(self.kind, Compiled::Csv(_))
    }

    /// Parses a task's CSV (an upload, or base64) against the contract's columns.
    pub fn attachment(
        &self,
        upload: Option<Vec<u8>>,
        base64: Option<&str>,
        max_bytes: usize,
    ) -> Result<Option<Attachment>, ApiError> {
        let columns: Vec<&str> = match &self.kind {
            Compiled::Csv(columns) => columns.iter().map(String::as_str).collect(),
            Compiled::Json(_) | Compiled::None => Vec::new(),
        };
        let parsed = match (upload, base64) {
            (Some(bytes), _) => {
                Some(Attachment::from_bytes(bytes, &self.system, &columns, max_bytes))
            }
            (None, Some(text)) => {
                Some(Attachment::from_base64(text, &self.system, &columns, max_bytes))
            }
            (None, None) => None,
        }
        .transpose()
        .map_err(attachment_error)?;
        if parsed.is_none() && self.needs_csv() {
            return Err(ApiError::invalid(
                "attachment",
                format!(
                    "{} tasks need a CSV attachment, one row per item, with the columns {}",
                    self.system,
                    columns.join(", ")
                ),
            ));
        }
        Ok(parsed)
    }

    /// Checks a task's payload: a JSON object, meeting the schema of a `json` contract (an
    /// absent payload is checked as `{}`, so a schema with required fields asks for them). The
    /// error names the field (`payload.parameters.vlan`) and says what is wrong.
    pub fn payload(&self, payload: Option<&Value>) -> Result<(), ApiError> {
        if let Some(payload) = payload
            && !payload.is_object()
        {
            return Err(ApiError::invalid("payload", "payload must be a JSON object"));
        }
        let Compiled::Json(validator) = &self.kind else { return Ok(()) };
        let empty = Value::Object(Default::default());
        let instance = payload.unwrap_or(&empty);
        let mut violations = validator.iter_errors(instance).take(MAX_VIOLATIONS).peekable();
        let Some(first) = violations.peek() else { return Ok(()) };
        let field = payload_field(first.instance_path().as_str());
        let message: Vec<String> = violations
            .map(|error| {
                let at = payload_field(error.instance_path().as_str());
                format!("{at}: {error}")
            })
            .collect();
        Err(ApiError::invalid(
            field,
            format!("the payload does not meet the {} schema: {}", self.system, message.join("; ")),
        ))
    }
}

/// Compiles a JSON Schema, saying why it cannot be one.
fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|error| format!("not a usable JSON Schema: {error}"))
}

/// A JSON pointer into the payload as a field path: `/parameters/0/vlan` is
/// `payload.parameters[0].vlan`.
fn payload_field(pointer: &str) -> String {
    let mut field = String::from("payload");
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            field.push_str(&format!("[{segment}]"));
        } else {
            field.push('.');
            field.push_str(&segment);
        }
    }
    field
}

fn attachment_error(err: AttachmentError) -> ApiError {
    match err {
        AttachmentError::TooLarge { .. } => {
            ApiError::TooLarge { field: Some("attachment".into()), message: err.to_string() }
        }
        err => ApiError::invalid("attachment", err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of<T: std::fmt::Debug>(result: Result<T, ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field: Some(field), .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn csv_columns_are_named_lowercase_and_once() {
        let checked = Contract::Csv { columns: vec![" Name ".into(), "EMAIL".into()] }.check();
        assert_eq!(
            checked.expect("valid"),
            Contract::Csv { columns: vec!["name".into(), "email".into()] }
        );
        assert_eq!(field_of(Contract::Csv { columns: vec![] }.check()), "input.columns");
        let twice = Contract::Csv { columns: vec!["a".into(), "A".into()] }.check();
        assert_eq!(field_of(twice), "input.columns[1]");
        assert_eq!(
            field_of(Contract::Csv { columns: vec![" ".into()] }.check()),
            "input.columns[0]"
        );
    }

    #[test]
    fn a_schema_must_compile_and_stay_local() {
        let bad_type = Contract::Json { schema: json!({"type": "strnig"}) }.check();
        assert_eq!(field_of(bad_type), "input.schema");
        assert_eq!(field_of(Contract::Json { schema: json!([1]) }.check()), "input.schema");
        assert_eq!(field_of(Contract::Json { schema: json!(false) }.check()), "input.schema");
        let remote =
            Contract::Json { schema: json!({"$ref": "https://example.com/schema.json"}) }.check();
        assert_eq!(field_of(remote), "input.schema");
        let file = Contract::Json { schema: json!({"$ref": "file:///etc/passwd"}) }.check();
        assert_eq!(field_of(file), "input.schema");
        assert!(Contract::Json { schema: json!({"type": "object"}) }.check().is_ok());
    }

    #[test]
    fn stored_columns_round_trip() {
        for contract in [
            Contract::Csv { columns: vec!["a".into()] },
            Contract::Json { schema: json!({"type": "object"}) },
            Contract::None,
        ] {
            let (input, columns, schema) = contract.to_columns();
            assert_eq!(
                Contract::from_columns(input, columns.as_ref(), schema.as_ref()),
                Some(contract)
            );
        }
        assert_eq!(Contract::from_columns("xml", None, None), None);
        assert_eq!(Contract::from_columns("csv", Some(&json!([1])), None), None);
    }

    #[test]
    fn a_payload_is_checked_against_the_schema_field_by_field() {
        let schema = json!({
            "type": "object",
            "required": ["employee", "lines"],
            "properties": {
                "employee": {"type": "string"},
                "lines": {"type": "array", "items": {"type": "object", "required": ["amount"],
                    "properties": {"amount": {"type": "number"}}}}
            }
        });
        let checker =
            Checker::new(System::new("PAYROLL").expect("name"), &Contract::Json { schema })
                .expect("compiles");
        assert!(
            checker.payload(Some(&json!({"employee": "ana", "lines": [{"amount": 3}]}))).is_ok()
        );
        let wrong = checker.payload(Some(&json!({"employee": "ana", "lines": [{"amount": "3"}]})));
        assert_eq!(field_of(wrong), "payload.lines[0].amount");
        let missing = checker.payload(None).expect_err("required").to_string();
        assert!(missing.contains("\"employee\" is a required property"), "{missing}");
        assert!(missing.contains("PAYROLL schema"), "{missing}");
        assert_eq!(field_of(checker.payload(Some(&json!([1])))), "payload");
    }

    #[test]
    fn a_csv_contract_needs_its_columns() {
        let vivo = Contract::Csv { columns: vec!["name".into(), "email".into()] };
        let checker = Checker::new(System::VIVO360, &vivo).expect("compiles");
        assert_eq!(field_of(checker.attachment(None, None, 1024)), "attachment");
        let lacking = checker.attachment(Some(b"name\nana\n".to_vec()), None, 1024);
        let message = lacking.expect_err("lacks email").to_string();
        assert!(message.contains("lacks the column(s) email that VIVO360 needs"), "{message}");
        let ok = checker.attachment(Some(b"Email,NAME\na@b.c,ana\n".to_vec()), None, 1024);
        assert_eq!(ok.expect("any case, any order").map(|a| a.row_count()), Some(1));
        let any = Checker::new(System::NOOP, &Contract::None).expect("compiles");
        assert!(any.attachment(None, None, 1024).expect("optional").is_none());
        assert!(matches!(
            any.attachment(Some(vec![b'a'; 10]), None, 4),
            Err(ApiError::TooLarge { .. })
        ));
    }
}
