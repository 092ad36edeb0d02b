//! The Lipachat-compatible mock gateway (SPEC "Mock gateway"): one fake for users' own
//! integration tests, the compose demo and `serve --mock-upstream`.
//!
//! It answers like the documented gateway: 401 envelope for a missing or wrong `apiKey`, 400
//! Spring-style for a body it cannot accept, otherwise 200 with a `SENT` envelope. `GET
//! /mock/sends` lists the accepted messageIds in order, so a test can assert each went out
//! once. The list keeps the most recent [`MAX_RECORDED_SENDS`] so a long demo cannot grow
//! without bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::config::ApiKey;
use crate::error::now_rfc3339;
use crate::routes::media::PATH_MEDIA_ALIAS;
use crate::upstream::HEADER_API_KEY;
use crate::validate::MediaType;

pub const PATH_SENDS: &str = "/mock/sends";
/// Accepted sends remembered for `GET /mock/sends`.
pub const MAX_RECORDED_SENDS: usize = 100_000;

/// Which `apiKey` the mock accepts.
#[derive(Clone, Debug)]
pub enum Accept {
    /// Exactly this key.
    Key(ApiKey),
    /// Any non-empty key (the compose demo, which has no secret).
    AnyKey,
}

#[derive(Clone)]
struct MockState {
    accept: Accept,
    sends: Arc<Mutex<VecDeque<String>>>,
}

/// The mock's router.
pub fn router(accept: Accept) -> Router {
    let state = MockState {
        accept,
        sends: Arc::new(Mutex::new(VecDeque::new())),
    };
    Router::new()
        .route(PATH_MEDIA_ALIAS, post(media))
        .route(PATH_SENDS, get(sends))
        .route(
            "/healthz",
            get(|| async { json_response(StatusCode::OK, json!({"status": "ok"})) }),
        )
        .with_state(state)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn media(State(state): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    let presented = headers.get(HEADER_API_KEY).and_then(|v| v.to_str().ok());
    let authorised = match (&state.accept, presented) {
        (_, None) => false,
        (Accept::AnyKey, Some(key)) => !key.is_empty(),
        (Accept::Key(expected), Some(key)) => expected.expose() == key,
    };
    if !authorised {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"timestamp": now_rfc3339(), "data": null, "status": "success",
                   "message": "Invalid credentials", "errors": null}),
        );
    }
    let Some(message_id) = acceptable(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"timestamp": now_rfc3339(), "status": 400, "error": "Bad Request",
                   "path": PATH_MEDIA_ALIAS}),
        );
    };
    if let Ok(mut sends) = state.sends.lock() {
        if sends.len() == MAX_RECORDED_SENDS {
            sends.pop_front();
        }
        sends.push_back(message_id.clone());
    }
    let wa_id = format!("wamid.{:032X}", fastrand::u128(..));
    json_response(
        StatusCode::OK,
        json!({"timestamp": now_rfc3339(),
               "data": {"messageId": message_id, "waId": wa_id, "status": "SENT",
                        "statusDesc": "Message sent"},
               "status": "success", "message": "", "errors": null}),
    )
}

/// The gateway's own checks: the fields it needs, of the right kind. Returns the messageId.
fn acceptable(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    let message_id = text("messageId").filter(|s| !s.is_empty())?;
    MediaType::ALL
        .iter()
        .find(|t| Some(t.as_str()) == text("mediaType"))?;
    let url = text("mediaUrl")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let scheme = url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    matches!(scheme.as_deref(), Some("https" | "http")).then_some(())?;
    (text("to").is_some_and(digits) && text("from").is_some_and(digits)).then_some(())?;
    Some(message_id.to_owned())
}

async fn sends(State(state): State<MockState>) -> Response {
    let ids: Vec<String> = state
        .sends
        .lock()
        .map(|sends| sends.iter().cloned().collect())
        .unwrap_or_default();
    json_response(
        StatusCode::OK,
        json!({"count": ids.len(), "messageIds": ids}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mock_needs_the_fields_the_gateway_needs() {
        let ok = br#"{"messageId":"a","mediaType":"IMAGE","mediaUrl":"https://x/a","from":"254110090747","to":"254712345678"}"#;
        assert_eq!(acceptable(ok).as_deref(), Some("a"));
        let upper = br#"{"messageId":"b","mediaType":"IMAGE","mediaUrl":"HTTPS://X","from":"254110090747","to":"254712345678"}"#;
        assert_eq!(acceptable(upper).as_deref(), Some("b"));
        let bad_type =
            br#"{"messageId":"a","mediaType":"GIF","mediaUrl":"https://x/a","from":"1","to":"2"}"#;
        assert_eq!(acceptable(bad_type), None);
        assert_eq!(acceptable(b"not json"), None);
    }
}
