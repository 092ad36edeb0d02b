//! The webhook listener (SPEC "After SENT: webhooks in"): untrusted input from the internet,
//! in one room. `POST /webhooks/lipachat/{token}` and `GET /healthz`, served on
//! `RELAY_WEBHOOK_LISTEN` by the same accept loop (head, body and idle timeouts, connection
//! limit) as the send API.
//!
//! A request passes, in order: the token (constant time; a wrong one is 404, counted, never
//! logged — it is a secret, and the path holds it), the content type (415), the body within
//! `RELAY_MAX_BODY_BYTES` and `RELAY_BODY_TIMEOUT_MS` (413, 408), JSON (400). Then every body
//! is 200 once recorded — a shape the relay does not read is passed on as
//! `webhook.unrecognised`, never dropped — or 503 with `Retry-After` when it cannot be
//! recorded, so the provider posts it again. One parser per provider shape: `lipachat`,
//! `meta`. The log line says the kind, the statuses and the result; never the token, a
//! message's text or a customer's number.

mod lipachat;
mod meta;

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::events::EventType;
use crate::lifecycle::{Lifecycle, NotRecorded};
use crate::metrics::{WebhookKind, WebhookResult};
use crate::routes::ops;
use crate::routes::send::{is_json_content_type, read_body};
use crate::state::AppState;
use crate::status::{ErrorDetail, Update};

/// The path Lipachat's dashboard is given, with the token as its last segment.
pub(crate) const PATH_PREFIX: &str = "/webhooks/lipachat/";

/// One thing a webhook body reported.
#[derive(Debug)]
pub(crate) enum Callback {
    /// A status for one of our `messageId`s (Lipachat's shape).
    Status { message_id: String, update: Update },
    /// A status naming the gateway's id only (Meta's shape).
    StatusByWaId { wa_id: String, update: Update },
    /// A customer's message; `key` is its id, so a repeat is recorded once.
    Received { key: String, data: Box<RawValue> },
    /// A body the relay does not read: passed on whole.
    Unrecognised { data: Box<RawValue> },
}

impl Callback {
    fn kind(&self) -> WebhookKind {
        match self {
            Self::Status { .. } | Self::StatusByWaId { .. } => WebhookKind::Status,
            Self::Received { .. } => WebhookKind::Received,
            Self::Unrecognised { .. } => WebhookKind::Unrecognised,
        }
    }
}

/// The callbacks in a body; `Err` with the parser's reason when it is not JSON.
pub(crate) fn parse(body: &[u8]) -> Result<Vec<Callback>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
    let whole = || Callback::Unrecognised { data: raw(&value) };
    let Some(object) = value.as_object() else {
        return Ok(vec![whole()]);
    };
    if let Some(callbacks) = meta::parse(object) {
        return Ok(callbacks);
    }
    Ok(vec![lipachat::parse(object).unwrap_or_else(whole)])
}

/// A provider's error details: `code`, `title`, `message` (Meta's `error_data.details` when
/// there is no `message`).
fn error_detail(value: &Value) -> ErrorDetail {
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    ErrorDetail {
        code: value.get("code").filter(|code| !code.is_null()).cloned(),
        title: text("title"),
        message: text("message").or_else(|| {
            value
                .get("error_data")
                .and_then(|data| data.get("details"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }),
    }
}

/// A JSON value as raw text, for an event's `data`.
fn raw(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| empty_object())
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// The listener's router: the webhook, `/healthz`, and the relay envelope's 404 for the rest.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/lipachat/{token}", post(receive))
        .route("/healthz", get(ops::healthz))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

/// `POST /webhooks/lipachat/{token}`.
async fn receive(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let lifecycle = state.lifecycle.as_ref();
    let token = request
        .uri()
        .path()
        .strip_prefix(PATH_PREFIX)
        .unwrap_or_default();
    let expected = state.config.webhooks.as_ref().map(|hooks| &hooks.token);
    let (Some(lifecycle), Some(expected)) = (lifecycle, expected) else {
        return ApiError::NotFound.into_response();
    };
    let metrics = &state.metrics.lifecycle;
    if !expected.matches(token) {
        metrics.webhook(WebhookKind::None, WebhookResult::WrongToken);
        return ApiError::NotFound.into_response();
    }
    let (parts, body) = request.into_parts();
    let refused = |error: ApiError| {
        metrics.webhook(WebhookKind::None, WebhookResult::Refused);
        tracing::info!(status = error.status().as_u16(), reason = %error, "webhook refused");
        error.into_response()
    };
    if !is_json_content_type(&parts.headers) {
        return refused(ApiError::UnsupportedMediaType);
    }
    let body = match read_body(&state, &parts.headers, body, started).await {
        Ok(body) => body,
        Err(error) => return refused(error),
    };
    let callbacks = match parse(&body) {
        Ok(callbacks) => callbacks,
        Err(reason) => return refused(ApiError::MalformedJson(reason)),
    };
    let kind = callbacks
        .first()
        .map_or(WebhookKind::Unrecognised, Callback::kind);
    let statuses: Vec<&'static str> = callbacks
        .iter()
        .filter_map(|callback| match callback {
            Callback::Status { update, .. } | Callback::StatusByWaId { update, .. } => {
                Some(update.status.name())
            }
            _ => None,
        })
        .collect();
    match record(lifecycle, &body, callbacks).await {
        Ok(()) => {
            metrics.webhook(kind, WebhookResult::Recorded);
            tracing::info!(kind = ?kind, ?statuses, "webhook recorded");
            (
                StatusCode::OK,
                [(CONTENT_TYPE, "application/json")],
                r#"{"status":"received"}"#,
            )
                .into_response()
        }
        Err(error) => {
            metrics.webhook(kind, WebhookResult::Unavailable);
            tracing::warn!(kind = ?kind, %error, "webhook not recorded; answered 503");
            ApiError::NotRecorded.into_response()
        }
    }
}

/// Records every callback of one body; the first failure stops it (the provider posts the
/// whole body again, and what was recorded is recorded once).
async fn record(
    lifecycle: &Lifecycle,
    body: &[u8],
    callbacks: Vec<Callback>,
) -> Result<(), NotRecorded> {
    if !lifecycle.has_room() {
        return Err(NotRecorded::Event(crate::events::EmitError::Full(0)));
    }
    for callback in callbacks {
        match callback {
            Callback::Status { message_id, update } => {
                lifecycle.status(&message_id, &update).await?;
            }
            Callback::StatusByWaId { wa_id, update } => {
                lifecycle.status_by_wa_id(&wa_id, &update).await?;
            }
            Callback::Received { key, data } => {
                lifecycle
                    .passed_on(EventType::MessageReceived, key.as_bytes(), &data)
                    .await?;
            }
            Callback::Unrecognised { data } => {
                lifecycle
                    .passed_on(EventType::WebhookUnrecognised, body, &data)
                    .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    fn one(body: &str) -> Callback {
        let mut callbacks = parse(body.as_bytes()).unwrap();
        assert_eq!(callbacks.len(), 1, "{callbacks:?}");
        callbacks.remove(0)
    }

    #[test]
    fn lipachat_status_callbacks_are_read_in_any_case_with_their_error() {
        let Callback::Status { message_id, update } =
            one(r#"{"messageId":"m-1","status":"delivered","timestamp":"x"}"#)
        else {
            panic!("not a status");
        };
        assert_eq!(message_id, "m-1");
        assert_eq!(update.status, Status::Delivered);
        let Callback::Status { update, .. } = one(
            r#"{"messageId":"m-1","status":"FAILED","errors":[{"code":131047,"title":"Re-engagement message"}]}"#,
        ) else {
            panic!("not a status");
        };
        let error = update.error.unwrap();
        assert_eq!(error.code, Some(131047.into()));
        assert_eq!(error.title.as_deref(), Some("Re-engagement message"));
    }

    #[test]
    fn lipachat_inbound_messages_are_passed_on_as_received() {
        let Callback::Received { key, data } = one(
            r#"{"messageId":"c94c","from":"254700000001","to":"254700000002","profileName":"A","type":"TEXT","text":"hi"}"#,
        ) else {
            panic!("not received");
        };
        assert_eq!(key, "c94c");
        assert!(data.get().contains(r#""text":"hi""#));
    }

    #[test]
    fn meta_statuses_and_messages_are_each_read() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{
            "statuses":[{"id":"wamid.A","status":"read"},{"id":"wamid.B","status":"failed",
              "errors":[{"code":131026,"title":"Message undeliverable","error_data":{"details":"d"}}]}],
            "messages":[{"id":"wamid.C","from":"254700000001","type":"text","text":{"body":"hi"}}]
        }}]}]}"#;
        let callbacks = parse(body.as_bytes()).unwrap();
        assert_eq!(callbacks.len(), 3);
        let Callback::StatusByWaId { wa_id, update } = &callbacks[1] else {
            panic!("{callbacks:?}");
        };
        assert_eq!(wa_id, "wamid.B");
        let error = update.error.clone().unwrap();
        assert_eq!(error.code, Some(131026.into()));
        assert_eq!(error.message.as_deref(), Some("d"));
        assert!(matches!(&callbacks[2], Callback::Received { key, .. } if key == "wamid.C"));
    }

    #[test]
    fn anything_else_is_unrecognised_and_kept_whole() {
        for body in [
            r#"{"event":"template_status","name":"x"}"#,
            r#"{"messageId":"m","status":"deleted"}"#,
            r#"[1,2]"#,
            r#"{"entry":[{"changes":[{"value":{"contacts":[]}}]}]}"#,
        ] {
            let Callback::Unrecognised { data } = one(body) else {
                panic!("{body} was read");
            };
            let back: Value = serde_json::from_str(data.get()).unwrap();
            assert_eq!(back, serde_json::from_str::<Value>(body).unwrap());
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(
            parse(b"{not json")
                .unwrap_err()
                .starts_with("malformed JSON")
        );
    }
}
