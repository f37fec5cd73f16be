//! Equipment (CPE) activation: the request a client sends, the payload of a CPE task, and the
//! `{"code": …, "message": …}` answers of the equipment config service ("service A") and of the
//! orchestrator's asynchronous activation API, which keeps that service's shape.
//!
//! Both the orchestrator (which stores the payload) and the bot agent (which sends it on to the
//! service) parse through these types, so an equipment id or a timeout is checked once, here.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The equipment config service's route and the orchestrator's: `{EQUIPMENT_PATH}/{id}`.
pub const EQUIPMENT_PATH: &str = "/api/v1/equipment/cpe";
/// The fewest characters in an equipment id.
pub const MIN_EQUIPMENT_ID_LEN: usize = 6;
/// The most characters in an equipment id.
pub const MAX_EQUIPMENT_ID_LEN: usize = 64;
/// The longest timeout a client may give an activation, in seconds (an hour).
pub const MAX_TIMEOUT_SECONDS: u32 = 3600;

/// The answers' messages, word for word as the original interface has them.
pub mod message {
    /// The service configured the equipment.
    pub const SUCCESS: &str = "success";
    /// The equipment id is malformed or unknown.
    pub const EQUIPMENT_NOT_FOUND: &str = "The requested equipment is not found";
    /// The configuration failed.
    pub const PROVISIONING_FAILED: &str = "Internal provisioning exception";
    /// An activation that ended well.
    pub const COMPLETED: &str = "Completed";
    /// An activation waiting for a bot, or running.
    pub const STILL_RUNNING: &str = "Task is still running";
    /// No activation with that task id for that equipment.
    pub const TASK_NOT_FOUND: &str = "The requested task is not found";
    /// An activation cancelled by an operator before it ended.
    pub const CANCELLED: &str = "The task was cancelled";
}

/// An equipment id: 6 to 64 ASCII letters and digits (a serial number or MAC-like code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EquipmentId(String);

/// Why a string is not an [`EquipmentId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EquipmentIdError {
    /// Fewer than [`MIN_EQUIPMENT_ID_LEN`] characters.
    #[error("an equipment id has at least {MIN_EQUIPMENT_ID_LEN} characters")]
    TooShort,
    /// More than [`MAX_EQUIPMENT_ID_LEN`] characters.
    #[error("an equipment id has at most {MAX_EQUIPMENT_ID_LEN} characters")]
    TooLong,
    /// A character other than an ASCII letter or digit.
    #[error("an equipment id holds only ASCII letters and digits (found {0:?})")]
    InvalidCharacter(char),
}

impl EquipmentId {
    /// Checks `id` and wraps it.
    pub fn parse(id: &str) -> Result<EquipmentId, EquipmentIdError> {
        if let Some(bad) = id.chars().find(|c| !c.is_ascii_alphanumeric()) {
            return Err(EquipmentIdError::InvalidCharacter(bad));
        }
        // Only ASCII is left, so bytes are characters.
        if id.len() < MIN_EQUIPMENT_ID_LEN {
            return Err(EquipmentIdError::TooShort);
        }
        if id.len() > MAX_EQUIPMENT_ID_LEN {
            return Err(EquipmentIdError::TooLong);
        }
        Ok(EquipmentId(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path of this equipment's activation route: `/api/v1/equipment/cpe/{id}`.
    pub fn path(&self) -> String {
        format!("{EQUIPMENT_PATH}/{}", self.0)
    }
}

impl fmt::Display for EquipmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EquipmentId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        EquipmentId::parse(&raw).map_err(de::Error::custom)
    }
}

/// The device settings of an activation (`username`, `password`, `vlan`, `interfaces`, …). They
/// are the device's business: Botline checks them and passes them on in the shape the client
/// sent.
///
/// Reads an object, or a list of one-key objects (`[{"vlan": 534}, {"interfaces": [1, 2]}]`, as
/// in the original interface's example); a key given twice is refused rather than one value
/// silently winning. Written back in the shape it was read: a list stays a list, in its order,
/// because an equipment config service that takes only the original shape refuses an object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpeParameters {
    /// The parameters as one object, for reading them.
    map: Map<String, Value>,
    /// The list of one-key objects as the client sent it, when it sent one.
    listed: Option<Vec<Value>>,
}

impl CpeParameters {
    /// The parameters as one object, whatever shape they came in.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// One parameter.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// Whether they came as a list of one-key objects (and are written back as one).
    pub fn is_list(&self) -> bool {
        self.listed.is_some()
    }

    /// The parameters in the shape they came in: the object, or the list of one-key objects.
    pub fn to_value(&self) -> Value {
        match &self.listed {
            Some(items) => Value::Array(items.clone()),
            None => Value::Object(self.map.clone()),
        }
    }
}

impl From<Map<String, Value>> for CpeParameters {
    fn from(map: Map<String, Value>) -> Self {
        CpeParameters { map, listed: None }
    }
}

impl Serialize for CpeParameters {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.listed {
            Some(items) => items.serialize(serializer),
            None => self.map.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for CpeParameters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const EXPECTED: &str = "an object of device parameters, or a list of one-key objects such as [{\"vlan\": 534}]";
        match Value::deserialize(deserializer)? {
            Value::Object(map) => Ok(CpeParameters { map, listed: None }),
            Value::Array(items) => {
                let mut map = Map::new();
                for (index, item) in items.iter().enumerate() {
                    let Value::Object(pair) = item else {
                        return Err(de::Error::custom(format!(
                            "parameters[{index}] must be an object with one key, like {{\"vlan\": 534}}"
                        )));
                    };
                    if pair.len() != 1 {
                        return Err(de::Error::custom(format!(
                            "parameters[{index}] must have exactly one key, it has {}",
                            pair.len()
                        )));
                    }
                    for (key, value) in pair {
                        if map.contains_key(key) {
                            return Err(de::Error::custom(format!(
                                "parameter `{key}` is given twice"
                            )));
                        }
                        map.insert(key.clone(), value.clone());
                    }
                }
                Ok(CpeParameters { map, listed: Some(items) })
            }
            other => Err(de::Error::invalid_type(unexpected(&other), &EXPECTED)),
        }
    }
}

/// How serde names a JSON value's type in "invalid type" errors.
fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(n) => match n.as_f64() {
            Some(f) => de::Unexpected::Float(f),
            None => de::Unexpected::Other("number"),
        },
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

/// Reads `timeoutInSeconds`: a whole number from 1 to [`MAX_TIMEOUT_SECONDS`].
fn timeout_seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    struct Seconds;
    impl de::Visitor<'_> for Seconds {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS}")
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
            match u32::try_from(n) {
                Ok(n) if (1..=MAX_TIMEOUT_SECONDS).contains(&n) => Ok(n),
                _ => Err(E::invalid_value(de::Unexpected::Unsigned(n), &self)),
            }
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
            }
        }
    }
    deserializer.deserialize_u64(Seconds)
}

/// An activation request: the body of `POST /api/v1/equipment/cpe/{id}`, to the orchestrator and
/// to the equipment config service alike. Only a JSON object is one (a derived reader would also
/// take `[14, {…}]`); unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpeRequest {
    /// The device's configuration timeout, in seconds (1 to 3600): forwarded to the equipment
    /// config service as given. It is not how long a bot waits for the service's answer (the
    /// bot's `--equipment-answer-timeout` is).
    #[serde(rename = "timeoutInSeconds")]
    #[cfg_attr(feature = "openapi", schema(example = 14, minimum = 1, maximum = 3600))]
    pub timeout_in_seconds: u32,
    /// The device settings: an object, or a list of one-key objects, forwarded in that shape.
    #[cfg_attr(feature = "openapi", schema(value_type = Object, example = json!({"username": "admin", "password": "admin", "vlan": 534, "interfaces": [1, 2, 3, 4]})))]
    pub parameters: CpeParameters,
}

/// [`CpeRequest`]'s fields, as read from an object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CpeRequestFields {
    #[serde(rename = "timeoutInSeconds", deserialize_with = "timeout_seconds")]
    timeout_in_seconds: u32,
    parameters: CpeParameters,
}

impl<'de> Deserialize<'de> for CpeRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> de::Visitor<'de> for Object {
            type Value = CpeRequest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object {\"timeoutInSeconds\": …, \"parameters\": …}")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<CpeRequest, A::Error> {
                // Reading through the map keeps the field path for error messages.
                let fields =
                    CpeRequestFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(CpeRequest {
                    timeout_in_seconds: fields.timeout_in_seconds,
                    parameters: fields.parameters,
                })
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// A CPE task's payload: the activation request and the equipment it is for, stored on the task
/// as `{"equipment_id": …, "timeoutInSeconds": …, "parameters": …}`, the parameters in the shape
/// the client sent (payloads stored with an object before lists were kept read the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpePayload {
    /// The equipment to configure.
    pub equipment_id: EquipmentId,
    /// The device's configuration timeout, in seconds, forwarded as given.
    #[serde(rename = "timeoutInSeconds", deserialize_with = "timeout_seconds")]
    pub timeout_in_seconds: u32,
    /// The device settings, in the shape the client sent.
    pub parameters: CpeParameters,
}

impl CpePayload {
    /// The payload of an activation of `equipment_id`.
    pub fn new(equipment_id: EquipmentId, request: CpeRequest) -> CpePayload {
        CpePayload {
            equipment_id,
            timeout_in_seconds: request.timeout_in_seconds,
            parameters: request.parameters,
        }
    }

    /// Reads a task's payload.
    pub fn from_value(payload: &Value) -> Result<CpePayload, serde_json::Error> {
        CpePayload::deserialize(payload)
    }

    /// The payload as the JSON object stored on the task.
    pub fn to_value(&self) -> Value {
        // A struct of strings, numbers and a JSON map always serializes.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The request to send to the equipment config service.
    pub fn request(&self) -> CpeRequest {
        CpeRequest {
            timeout_in_seconds: self.timeout_in_seconds,
            parameters: self.parameters.clone(),
        }
    }
}

/// A `{"code": …, "message": …}` answer, the equipment config service's and the activation
/// API's shape for outcomes and errors alike. `code` repeats the HTTP status, except for
/// "still running", which the API sends as `204` inside an HTTP 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CpeAnswer {
    /// The status code.
    #[cfg_attr(feature = "openapi", schema(example = 200))]
    pub code: u16,
    /// What happened.
    #[cfg_attr(feature = "openapi", schema(example = "success"))]
    pub message: String,
}

impl CpeAnswer {
    /// An answer with `code` and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> CpeAnswer {
        CpeAnswer { code, message: message.into() }
    }
}

/// Who a CPE task's error names when the equipment config service answered in its own shape.
const SERVICE: &str = "(equipment config service)";

/// A CPE task's error when the equipment config service answered `answer` in its own
/// `{"code","message"}` shape: the code first, `404 The requested equipment is not found
/// (equipment config service)`, so the activation API can tell the client what the service
/// said, and incidents read the code as the failure's return.
pub fn service_error(answer: &CpeAnswer) -> String {
    format!("{} {} {SERVICE}", answer.code, answer.message)
}

/// The code the equipment config service answered, read back from a CPE task's error written by
/// [`service_error`]; `None` for any other error (no answer, an answer not in the service's
/// shape, a run that timed out).
pub fn service_code(error: &str) -> Option<u16> {
    let rest = error.strip_suffix(SERVICE)?;
    let (code, _) = rest.split_once(' ')?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equipment_ids_are_six_to_sixty_four_letters_or_digits() {
        for ok in ["ABC123", "cpe000001", "0123456789", &"a".repeat(64)] {
            assert_eq!(EquipmentId::parse(ok).map(|id| id.to_string()), Ok(ok.to_owned()));
        }
        assert_eq!(EquipmentId::parse("ab12"), Err(EquipmentIdError::TooShort));
        assert_eq!(EquipmentId::parse(""), Err(EquipmentIdError::TooShort));
        assert_eq!(EquipmentId::parse(&"a".repeat(65)), Err(EquipmentIdError::TooLong));
        assert_eq!(EquipmentId::parse("cpe-0001"), Err(EquipmentIdError::InvalidCharacter('-')));
        assert_eq!(EquipmentId::parse("çpe0001"), Err(EquipmentIdError::InvalidCharacter('ç')));
        assert_eq!(
            EquipmentId::parse("ABC123").map(|id| id.path()).as_deref(),
            Ok("/api/v1/equipment/cpe/ABC123")
        );
        assert!(serde_json::from_value::<EquipmentId>(json!("x")).is_err());
    }

    #[test]
    fn parameters_are_an_object_or_a_list_of_one_key_objects_and_keep_their_shape() {
        let object = json!({"timeoutInSeconds": 14, "parameters": {"username": "admin", "password": "admin", "vlan": 534, "interfaces": [1, 2, 3, 4]}});
        // Not in key order, so a list rebuilt from a (sorted) map would differ.
        let list = json!({"timeoutInSeconds": 14, "parameters": [{"vlan": 534}, {"username": "admin"}, {"password": "admin"}, {"interfaces": [1, 2, 3, 4]}]});
        let from_object: CpeRequest = serde_json::from_value(object.clone()).expect("object");
        let from_list: CpeRequest = serde_json::from_value(list.clone()).expect("list");
        assert_eq!(from_object.parameters.as_map(), from_list.parameters.as_map());
        assert_eq!(from_object.timeout_in_seconds, 14);
        assert_eq!(from_list.parameters.get("vlan"), Some(&json!(534)));
        assert!(from_list.parameters.is_list() && !from_object.parameters.is_list());
        // Written back as they came: a list stays a list, in its order.
        assert_eq!(serde_json::to_value(&from_list).expect("serializes"), list);
        assert_eq!(serde_json::to_value(&from_object).expect("serializes"), object);
        assert_eq!(from_list.parameters.to_value(), list["parameters"]);
        let empty: CpeRequest =
            serde_json::from_value(json!({"timeoutInSeconds": 1, "parameters": []})).expect("[]");
        assert_eq!(serde_json::to_value(&empty).expect("serializes")["parameters"], json!([]));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let error = |body: Value| match serde_json::from_value::<CpeRequest>(body) {
            Ok(request) => panic!("accepted {request:?}"),
            Err(error) => error.to_string(),
        };
        let p = json!({"vlan": 1});
        assert!(error(json!({"parameters": p})).contains("missing field `timeoutInSeconds`"));
        assert!(error(json!({"timeoutInSeconds": 5})).contains("missing field `parameters`"));
        assert!(
            error(json!({"timeoutInSeconds": "14", "parameters": p}))
                .contains("a whole number of seconds")
        );
        assert!(error(json!({"timeoutInSeconds": 0, "parameters": p})).contains("from 1 to 3600"));
        assert!(
            error(json!({"timeoutInSeconds": 3601, "parameters": p})).contains("from 1 to 3600")
        );
        assert!(error(json!({"timeoutInSeconds": -3, "parameters": p})).contains("from 1 to 3600"));
        assert!(error(json!({"timeoutInSeconds": 1.5, "parameters": p})).contains("whole number"));
        assert!(
            error(json!({"timeoutInSeconds": 5, "parameters": "vlan=1"}))
                .contains("invalid type: string")
        );
        assert!(
            error(json!({"timeoutInSeconds": 5, "parameters": [{"a": 1, "b": 2}]}))
                .contains("parameters[0] must have exactly one key")
        );
        assert!(
            error(json!({"timeoutInSeconds": 5, "parameters": [1]}))
                .contains("parameters[0] must be an object")
        );
        assert!(
            error(json!({"timeoutInSeconds": 5, "parameters": [{"a": 1}, {"a": 2}]}))
                .contains("`a` is given twice")
        );
        assert!(
            error(json!({"timeoutInSeconds": 5, "parameters": p, "vlan": 2}))
                .contains("unknown field `vlan`")
        );
    }

    #[test]
    fn the_service_s_code_is_read_back_from_the_task_s_error() {
        let missing = CpeAnswer::new(404, message::EQUIPMENT_NOT_FOUND);
        let error = service_error(&missing);
        assert_eq!(error, "404 The requested equipment is not found (equipment config service)");
        assert_eq!(service_code(&error), Some(404));
        assert_eq!(service_code(&service_error(&CpeAnswer::new(500, "boom"))), Some(500));
        for other in [
            "equipment config service answered HTTP 404: <html>",
            "404 something else",
            "the equipment config service did not answer within 120 s",
            "",
        ] {
            assert_eq!(service_code(other), None, "{other}");
        }
    }

    #[test]
    fn the_payload_round_trips_as_stored_on_the_task() {
        let request: CpeRequest =
            serde_json::from_value(json!({"timeoutInSeconds": 9, "parameters": [{"vlan": 7}]}))
                .expect("valid");
        let payload =
            CpePayload::new(EquipmentId::parse("CPE000001").expect("id"), request.clone());
        let stored = payload.to_value();
        assert_eq!(
            stored,
            json!({"equipment_id": "CPE000001", "timeoutInSeconds": 9, "parameters": [{"vlan": 7}]})
        );
        assert_eq!(CpePayload::from_value(&stored).expect("reads"), payload);
        assert_eq!(payload.request(), request);
        // A payload stored with an object (before lists were kept) still reads, as an object.
        let old =
            json!({"equipment_id": "CPE000001", "timeoutInSeconds": 9, "parameters": {"vlan": 7}});
        let read = CpePayload::from_value(&old).expect("reads");
        assert_eq!(
            serde_json::to_value(read.request()).expect("serializes")["parameters"],
            json!({"vlan": 7})
        );
        assert!(
            CpePayload::from_value(
                &json!({"equipment_id": "x", "timeoutInSeconds": 9, "parameters": {}})
            )
            .is_err()
        );
    }
}
