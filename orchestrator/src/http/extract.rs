//! Extractors that turn bad bodies and queries into [`ApiError`]s, so every rejection has the
//! API's own error format and names the field at fault.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

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
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body, unparsed: for handlers that choose the shape from the content (a bot's event or a
/// user's edit on the same route).
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
        Bytes::from_request(req, state).await.map(JsonBytes).map_err(body_rejection)
    }
}

impl JsonBytes {
    /// Whether the body is a bot event (`{"v":…,"type":"task.accepted",…}`) rather than a
    /// resource: events carry `type`, resources never do.
    pub fn is_event(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "type")]
            kind: Option<serde::de::IgnoredAny>,
        }
        serde_json::from_slice::<Probe>(&self.0).is_ok_and(|p| p.kind.is_some())
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
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| ApiError::InvalidParameter {
                field: None,
                message: rejection.body_text(),
            })
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
    fn json_media_types() {
        assert!(is_json(Some(&HeaderValue::from_static("application/json; charset=utf-8"))));
        assert!(is_json(Some(&HeaderValue::from_static("application/merge-patch+json"))));
        assert!(!is_json(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!is_json(None));
    }
}
