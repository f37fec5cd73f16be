//! Extractors that turn bad bodies and queries into [`ApiError`]s, so every rejection has the
//! API's own error format and names the field at fault.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body. Broken JSON is a 400; JSON of the wrong shape (unknown, missing or mistyped
/// fields) is a 422 naming the field; a body over the limit is a 413; another media type a 415.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        refuse_unstorable(&bytes)?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body, unparsed: for handlers that choose the shape from the content (a bot's event or a
/// user's edit on the same route). Not checked for what cannot be stored: a bot's report is made
/// storable where it is applied (a refused report would leave its task RUNNING); the handler
/// checks an edit with [`JsonBytes::refuse_unstorable`].
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        Ok(JsonBytes(bytes))
    }
}

impl JsonBytes {
    /// [`refuse_unstorable`] on the body: for an edit, which is stored as sent.
    pub fn refuse_unstorable(&self) -> Result<(), ApiError> {
        refuse_unstorable(&self.0)
    }
    /// Whether the body is a bot event (`{"v":…,"type":"task.accepted",…}`) rather than a
    /// resource: events carry `type`, resources never do.
    pub fn is_event(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        // A bot of the original contract may send back the offer it was POSTed (its `type` is
        // `task.assign`) with a new status: that is a plain write, not an event.
        serde_json::from_slice::<Probe>(&self.0)
            .is_ok_and(|p| p.kind.is_some_and(|kind| kind != "task.assign"))
    }

    /// Parses the body as a bot event.
    pub fn event(&self) -> Result<broker_config::Event, ApiError> {
        broker_config::messages::decode(&self.0)
            .map_err(|e| ApiError::Invalid { field: None, message: e.to_string() })
    }
}

/// Deserializes `bytes`, telling broken JSON (400) from JSON of the wrong shape (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_data() {
            // serde names unknown and missing fields in the message, not the path.
            let field = if path == "." { None } else { Some(path) };
            ApiError::Invalid { field, message: inner.to_string() }
        } else {
            ApiError::MalformedBody(format!("malformed JSON: {inner}"))
        }
    })?;
    deserializer.end().map_err(|e| ApiError::MalformedBody(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The largest magnitude of a JSON number the API stores. PostgreSQL's jsonb writes numbers
/// back in full (`1.7976931348623155e308` as 309 digits), and serde_json reads numbers that
/// close to `f64::MAX` as out of range, so the row could be stored but not read (a 500, found by
/// fuzzing). Anything up to 1e308 reads back.
pub const MAX_JSON_NUMBER: f64 = 1e308;

/// Refuses a JSON body the databases cannot store and give back, naming the first field at
/// fault: a NUL character (`\u0000`) in any string (PostgreSQL stores none in text or jsonb),
/// or a number beyond [`MAX_JSON_NUMBER`]. Both were 500s on PostgreSQL, found by fuzzing.
/// Broken JSON is left to the parser, which says what is broken.
pub fn refuse_unstorable(bytes: &[u8]) -> Result<(), ApiError> {
    // A cheap scan first: almost every body has neither, and is not parsed twice.
    if !has_escaped_nul(bytes) && !has_large_exponent(bytes) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    match unstorable(&value, String::new()) {
        Some((path, message)) => Err(ApiError::Invalid {
            field: (!path.is_empty()).then_some(path),
            message: message.into(),
        }),
        None => Ok(()),
    }
}

/// Whether the JSON text holds the escape `\u0000`: a raw NUL cannot appear in a JSON string,
/// and backslashes appear only in strings, so a scan that skips escaped characters finds it.
fn has_escaped_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Whether the text may hold a number of 1e100 or more: an exponent of three digits (`1e308`,
/// `2E+300`). serde_json writes a large number with an exponent, and one written out in full
/// (over 300 digits) is parsed as that number with an exponent. Only a hint for the full check.
fn has_large_exponent(bytes: &[u8]) -> bool {
    bytes.windows(2).enumerate().any(|(i, pair)| {
        let rest = &bytes[i + 2..];
        let rest = rest.strip_prefix(b"+").unwrap_or(rest);
        (pair[0].is_ascii_digit() || pair[0] == b'.')
            && matches!(pair[1], b'e' | b'E')
            && rest.len() >= 3
            && rest[..3].iter().all(u8::is_ascii_digit)
    }) || bytes.split(|b| !b.is_ascii_digit()).any(|digits| digits.len() > 300)
}

/// The path (`triggers[0].service`, as serde_path_to_error writes it) of the first value that
/// cannot be stored, and why.
fn unstorable(value: &Value, path: String) -> Option<(String, &'static str)> {
    match value {
        Value::String(text) if text.contains('\0') => {
            Some((path, "text must not contain a NUL character (\\u0000)"))
        }
        Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() > MAX_JSON_NUMBER) => {
            Some((path, "numbers must be between -1e308 and 1e308"))
        }
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| unstorable(item, format!("{path}[{i}]")))
        }
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                return Some((path.clone(), "keys must not contain a NUL character (\\u0000)"));
            }
            let inner = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            unstorable(item, inner)
        }),
        _ => None,
    }
}

fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Maps a failure to read the body: over the limit is a 413, anything else a 400.
pub fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { field: None, message: "request body is over the size limit".into() }
    } else {
        ApiError::MalformedBody(rejection.body_text())
    }
}

/// A query string, with the API's error format for bad parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let value = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| ApiError::InvalidParameter {
                field: None,
                message: rejection.body_text(),
            })?;
        // A NUL (`%00`) in a filter would reach PostgreSQL, which refuses it: a 500 (fuzzing).
        if parts.uri.query().is_some_and(|q| q.contains("%00")) {
            let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                .map(|axum::extract::Query(pairs)| pairs)
                .unwrap_or_default();
            if let Some((name, _)) =
                pairs.iter().find(|(n, v)| n.contains('\0') || v.contains('\0'))
            {
                return Err(ApiError::invalid_parameter(
                    name.replace('\0', ""),
                    "a query parameter must not contain a NUL character (%00)",
                ));
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        name: String,
        tags: Vec<u8>,
    }

    #[test]
    fn broken_json_is_malformed_and_wrong_shapes_are_invalid_with_their_field() {
        assert!(matches!(parse_json::<Input>(b"{\"name\":"), Err(ApiError::MalformedBody(_))));
        assert!(matches!(
            parse_json::<Input>(br#"{"name":"a","tags":[]} trailing"#),
            Err(ApiError::MalformedBody(_))
        ));
        match parse_json::<Input>(br#"{"name":"a","tags":[1,"x"]}"#) {
            Err(ApiError::Invalid { field, .. }) => assert_eq!(field.as_deref(), Some("tags[1]")),
            other => panic!("expected Invalid, got {other:?}"),
        }
        match parse_json::<Input>(br#"{"name":"a","tags":[],"extra":1}"#) {
            Err(ApiError::Invalid { message, .. }) => {
                assert!(message.contains("unknown field `extra`"))
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_nul_or_a_huge_number_is_refused_naming_its_field() {
        let refused = |body: &str| match refuse_unstorable(body.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{body}: expected a refusal, got {other:?}"),
        };
        assert_eq!(refused(r#"{"description":"a\u0000b"}"#).as_deref(), Some("description"));
        assert_eq!(
            refused(r#"{"triggers":[{"service":"x"},{"service":"\u0000"}]}"#).as_deref(),
            Some("triggers[1].service")
        );
        assert_eq!(refused(r#""\u0000""#), None);
        assert_eq!(
            refused(r#"{"payload":{"a":[1,-1.7976931348623155e308]}}"#).as_deref(),
            Some("payload.a[1]")
        );
        assert_eq!(refused(r#"{"p":1.5E+308}"#).as_deref(), Some("p"));
        let digits = format!(r#"{{"p":17{}}}"#, "0".repeat(307));
        assert_eq!(refused(&digits).as_deref(), Some("p"));
        // An escaped backslash followed by "u0000" is text, not a NUL; 1e308 and small numbers
        // are stored; broken JSON is the parser's to refuse.
        assert!(refuse_unstorable(br#"{"path":"C:\\u0000"}"#).is_ok());
        assert!(refuse_unstorable(br#"{"a":1e308,"b":-1e-400,"c":"1e999"}"#).is_ok());
        assert!(refuse_unstorable(br#"{"a":"\u0000"#).is_ok());
        assert!(refuse_unstorable(br#"{"a":"b"}"#).is_ok());
    }

    #[test]
    fn json_media_types() {
        assert!(is_json(Some(&HeaderValue::from_static("application/json; charset=utf-8"))));
        assert!(is_json(Some(&HeaderValue::from_static("application/merge-patch+json"))));
        assert!(!is_json(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!is_json(None));
    }
}
