//! The Lipachat-compatible mock gateway (SPEC "Mock gateway"): one fake for users' own
//! integration tests, the compose demo and `serve --mock-upstream`.
//!
//! It answers every send type's gateway path (from the table in [`crate::sends`]) like the
//! documented gateway: 401 envelope for a missing or wrong `apiKey`, 400 Spring-style for a
//! body it cannot accept, otherwise 200 with a `SENT` envelope. `GET /mock/sends` lists the
//! accepted sends in order, with the path each came by, so a test can assert each went out
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
use crate::sends::media::{MediaType, has_media_url_shape};
use crate::sends::{SEND_TYPES, SendKind};
use crate::upstream::HEADER_API_KEY;

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

/// One accepted send.
#[derive(Clone, Debug)]
struct Sent {
    message_id: String,
    path: &'static str,
}

#[derive(Clone)]
struct MockState {
    accept: Accept,
    sends: Arc<Mutex<VecDeque<Sent>>>,
}

/// The mock's router.
pub fn router(accept: Accept) -> Router {
    let state = MockState {
        accept,
        sends: Arc::new(Mutex::new(VecDeque::new())),
    };
    let mut router = Router::new();
    for send_type in &SEND_TYPES {
        let kind = send_type.kind;
        router = router.route(
            send_type.gateway_path,
            post(
                move |state: State<MockState>, headers: HeaderMap, body: Bytes| {
                    send(state, kind, headers, body)
                },
            ),
        );
    }
    router
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

async fn send(
    State(state): State<MockState>,
    kind: SendKind,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = kind.spec().gateway_path;
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
    let Some(message_id) = acceptable(kind, &body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"timestamp": now_rfc3339(), "status": 400, "error": "Bad Request",
                   "path": path}),
        );
    };
    if let Ok(mut sends) = state.sends.lock() {
        if sends.len() == MAX_RECORDED_SENDS {
            sends.pop_front();
        }
        sends.push_back(Sent {
            message_id: message_id.clone(),
            path,
        });
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
fn acceptable(kind: SendKind, body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    let message_id = text("messageId").filter(|s| !s.is_empty())?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (text("to").is_some_and(digits) && text("from").is_some_and(digits)).then_some(())?;
    let fits = match kind {
        SendKind::Media => {
            MediaType::ALL
                .iter()
                .any(|t| Some(t.as_str()) == text("mediaType"))
                && text("mediaUrl").is_some_and(has_media_url_shape)
        }
    };
    fits.then(|| message_id.to_owned())
}

async fn sends(State(state): State<MockState>) -> Response {
    let sent: Vec<Sent> = state
        .sends
        .lock()
        .map(|sends| sends.iter().cloned().collect())
        .unwrap_or_default();
    let ids: Vec<&str> = sent.iter().map(|s| s.message_id.as_str()).collect();
    let list: Vec<Value> = sent
        .iter()
        .map(|s| json!({"messageId": s.message_id, "path": s.path}))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"count": sent.len(), "messageIds": ids, "sends": list}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mock_needs_the_fields_the_gateway_needs() {
        let ok = br#"{"messageId":"a","mediaType":"IMAGE","mediaUrl":"https://x.example/a","from":"254110090747","to":"254712345678"}"#;
        assert_eq!(acceptable(SendKind::Media, ok).as_deref(), Some("a"));
        let upper = br#"{"messageId":"b","mediaType":"IMAGE","mediaUrl":"HTTPS://X.example","from":"254110090747","to":"254712345678"}"#;
        assert_eq!(acceptable(SendKind::Media, upper).as_deref(), Some("b"));
        let bad_type = br#"{"messageId":"a","mediaType":"GIF","mediaUrl":"https://x.example/a","from":"1","to":"2"}"#;
        assert_eq!(acceptable(SendKind::Media, bad_type), None);
        assert_eq!(acceptable(SendKind::Media, b"not json"), None);
    }

    #[test]
    fn the_mock_applies_the_documented_https_rule() {
        let http = br#"{"messageId":"a","mediaType":"IMAGE","mediaUrl":"http://x.example/a","from":"254110090747","to":"254712345678"}"#;
        assert_eq!(acceptable(SendKind::Media, http), None);
    }
}
