//! `GET /messages/{messageId}` (SPEC "Status of a message"): the status record, from the
//! lifecycle's store when the webhook listener or events are on; otherwise from the dedup
//! window — SENT, with the gateway's `waId` — for as long as the send is remembered, so the
//! send path pays nothing for the lookup. `DELETE /messages/{messageId}` cancels a queued send.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use crate::dedup::Remembered;
use crate::error::ApiError;
use crate::state::AppState;
use crate::status::{Record, Status, rfc3339};

/// `GET /messages/{messageId}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    // A path that does not decode (bad percent-encoding, not UTF-8) names no message.
    let Ok(Path(message_id)) = path else {
        return ApiError::MessageNotFound.into_response();
    };
    let found = match &state.lifecycle {
        Some(lifecycle) if lifecycle.follows_sends() => lifecycle.get(&message_id).await,
        // Records of queued sends only (Redis without the listener or events): a synchronous
        // send is known from the dedup window.
        Some(lifecycle) => match lifecycle.get(&message_id).await {
            Ok(None) => window(&state, &message_id).await,
            found => found,
        },
        None => window(&state, &message_id).await,
    };
    match found {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => ApiError::MessageNotFound.into_response(),
        Err(error) => {
            tracing::warn!(%error, "a status lookup failed");
            ApiError::StatusUnavailable.into_response()
        }
    }
}

/// `DELETE /messages/{messageId}` (SPEC "Queued and scheduled sends"): a send still QUEUED
/// is cancelled (200 and its CANCELLED record); one handed to the gateway is 409; one the
/// relay does not hold (or any, without Redis) is 404.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let (Ok(Path(message_id)), Some(queue)) = (path, &state.queue) else {
        return ApiError::MessageNotFound.into_response();
    };
    match queue.cancel(&message_id).await {
        Ok(record) => Json(record).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The record of a synchronous send from the dedup window.
async fn window(
    state: &AppState,
    message_id: &str,
) -> Result<Option<Record>, crate::store::StoreError> {
    let answer = state.dedup.remembered(message_id).await?;
    Ok(answer.map(|answer| from_window(message_id, &answer)))
}

/// A remembered 2xx as a record: SENT, the gateway's `waId`, and the gateway's own
/// `timestamp` (the window keeps the answer, not when it was made) or now.
fn from_window(message_id: &str, answer: &Remembered) -> Record {
    let envelope: serde_json::Value =
        serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    let wa_id = text(&envelope["data"]["waId"]).or_else(|| text(&envelope["waId"]));
    let at = text(&envelope["timestamp"]).unwrap_or_else(|| rfc3339(std::time::SystemTime::now()));
    Record {
        message_id: message_id.to_owned(),
        kind: None,
        from: None,
        to: None,
        wa_id,
        status: Status::Sent,
        statuses: BTreeMap::from([(Status::Sent, at.clone())]),
        error: None,
        updated_at: at,
    }
}
