//! `POST /media` and its alias `POST /api/v1/whatsapp/media` (SPEC "HTTP API of the relay").
//!
//! The handler reads like the SPEC: refuse while draining → content type → body → validate →
//! dedup → forward → answer. The send runs inside the request's own task while the caller
//! waits (no hand-off on the fast path); if the caller disconnects, [`DetachedSend`] moves the
//! unfinished send into a task of its own, so it still completes, is remembered and logged.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tower::BoxError;
use tracing::Instrument;

use crate::app::AppState;
use crate::dedup::{self, Begin, Deduplicate, Outcome, StoredReply, Ticket};
use crate::error::ApiError;
use crate::metrics::RequestOutcome;
use crate::telemetry::{self, RequestRecord};
use crate::upstream::{HEADER_REQUEST_ID, HEADER_TRACEPARENT, UpstreamRequest};
use crate::validate::{self, MediaRequest};

pub const HEADER_REPLAYED: &str = "idempotent-replayed";
pub const HEADER_ATTEMPTS: &str = "x-relay-attempts";

/// The relay's own path and the gateway's, so existing clients only change the base URL.
pub const PATH_MEDIA: &str = "/media";
pub const PATH_MEDIA_ALIAS: &str = "/api/v1/whatsapp/media";

/// `POST /media`.
pub async fn send_media(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut record = RequestRecord::new(RequestOutcome::Invalid);
    let mut response = match relay(&state, &headers, body, &mut record).await {
        Ok(response) => response,
        Err(error) => {
            record.outcome = error.outcome();
            error.into_response()
        }
    };
    if record.attempts > 0 {
        // On the gateway's answer and on our 502/504 alike: how often the gateway was tried.
        response.headers_mut().insert(
            HeaderName::from_static(HEADER_ATTEMPTS),
            HeaderValue::from(record.attempts),
        );
    }
    response.extensions_mut().insert(record);
    response
}

async fn relay(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    record: &mut RequestRecord,
) -> Result<Response, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::Draining);
    }
    if !is_json_content_type(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge {
                limit: state.config.max_body_bytes,
            }
        } else {
            ApiError::UnreadableBody
        }
    })?;
    let request = validate::validate(&body, state.config.default_from.as_ref())?;
    record.message_id = Some(request.message_id.clone());
    record.to = Some(request.to.clone());
    match state
        .dedup
        .begin(&request.message_id, request.fingerprint)
        .await
    {
        Begin::Replay(stored) => {
            record.outcome = RequestOutcome::Replayed;
            Ok(replay(stored))
        }
        Begin::Conflict => Err(ApiError::IdempotencyConflict),
        Begin::Wait(receiver) => {
            let outcome = dedup::wait(receiver)
                .await
                .ok_or(ApiError::GatewayUnreachable)?;
            let response = answer(outcome, true)?;
            record.outcome = RequestOutcome::Coalesced;
            Ok(response)
        }
        Begin::Lead(ticket) => {
            let (outcome, attempts) = lead(state, headers, request, ticket).await;
            record.attempts = attempts;
            let response = answer(outcome, false)?;
            record.outcome = outcome_of(response.status());
            Ok(response)
        }
    }
}

/// Forwards a new send and records its outcome in the dedup store, surviving the caller.
async fn lead(
    state: &AppState,
    headers: &HeaderMap,
    request: MediaRequest,
    ticket: Ticket,
) -> (Outcome, u32) {
    let upstream = UpstreamRequest::new(request.body, headers, state.gateway.deadline_from_now());
    let gateway = state.gateway.clone();
    let store = state.dedup.clone();
    let guard = state.drain.track_send();
    let send = async move {
        let _guard = guard;
        let outcome = gateway.forward(upstream.clone()).await;
        store.complete(ticket, &outcome).await;
        (outcome, upstream.attempts())
    };
    DetachedSend::new(request.message_id, Box::pin(send.in_current_span())).await
}

/// The status of the answer, as an outcome label.
fn outcome_of(status: StatusCode) -> RequestOutcome {
    if status.is_success() {
        RequestOutcome::Sent
    } else if status.is_client_error() {
        RequestOutcome::Rejected
    } else {
        RequestOutcome::UpstreamError
    }
}

/// The gateway's answer, byte for byte, or our 502/504 when there is no JSON answer.
fn answer(outcome: Outcome, replayed: bool) -> Result<Response, ApiError> {
    let reply = outcome?;
    if !reply.is_json {
        return Err(ApiError::GatewayNotJson(reply.status.as_u16()));
    }
    let mut response = passthrough(reply.status, reply.content_type, reply.body);
    let headers = response.headers_mut();
    if let Some(wait) = reply.retry_after {
        // The gateway's own advice travels with its answer (a date becomes seconds).
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if replayed {
        headers.insert(
            HeaderName::from_static(HEADER_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

fn replay(stored: StoredReply) -> Response {
    let content_type = stored.content_type();
    let mut response = passthrough(stored.status, Some(content_type), stored.body);
    response.headers_mut().insert(
        HeaderName::from_static(HEADER_REPLAYED),
        HeaderValue::from_static("true"),
    );
    response
}

fn passthrough(status: StatusCode, content_type: Option<HeaderValue>, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    response
}

/// `application/json` or `application/*+json`, parameters such as `charset` allowed.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || (subtype.len() > 5
                && subtype
                    .get(subtype.len() - 5..)
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))))
}

/// Shed answers from the load-shed layer become our 503 envelope.
pub async fn overloaded(error: BoxError) -> Response {
    if !error.is::<tower::load_shed::error::Overloaded>() {
        tracing::error!(%error, "unexpected error from the /media middleware");
    }
    ApiError::Overloaded.into_response()
}

/// The request-log layer: one info line and the request metrics per `/media` request.
pub async fn log_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let request_id = request.headers().get(HEADER_REQUEST_ID).cloned();
    let traceparent = request.headers().get(HEADER_TRACEPARENT).cloned();
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let trace_id = traceparent
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(telemetry::trace_id);
    let span = tracing::info_span!("media", request_id, trace_id);
    let mut response = next.run(request).instrument(span).await;
    let latency = started.elapsed();
    let record = response
        .extensions_mut()
        .remove::<RequestRecord>()
        .unwrap_or_else(|| RequestRecord::new(RequestOutcome::Invalid));
    state.metrics.record_request(record.outcome, latency);
    telemetry::log_request(
        request_id,
        trace_id,
        response.status().as_u16(),
        latency,
        &record,
    );
    response
}

type SendFuture = Pin<Box<dyn Future<Output = (Outcome, u32)> + Send>>;

/// Polls the send in the caller's task; if the caller goes away first, the rest of the send
/// is spawned so that it completes, is remembered, and its outcome is logged.
struct DetachedSend {
    message_id: Box<str>,
    send: Option<SendFuture>,
}

impl DetachedSend {
    fn new(message_id: Box<str>, send: SendFuture) -> Self {
        Self {
            message_id,
            send: Some(send),
        }
    }
}

impl Future for DetachedSend {
    type Output = (Outcome, u32);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(send) = this.send.as_mut() else {
            // Polled after completion: the caller owns the result already. Never happens with
            // `.await`; stay pending rather than panic.
            return Poll::Pending;
        };
        let output = std::task::ready!(send.as_mut().poll(cx));
        this.send = None;
        Poll::Ready(output)
    }
}

impl Drop for DetachedSend {
    fn drop(&mut self) {
        let Some(send) = self.send.take() else {
            return;
        };
        let message_id = std::mem::take(&mut self.message_id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(%message_id, "caller left and no runtime is running: send dropped");
            return;
        };
        runtime.spawn(async move {
            let (outcome, attempts) = send.await;
            let status = match &outcome {
                Ok(reply) => reply.status.as_u16(),
                Err(error) => ApiError::from(error.clone()).status().as_u16(),
            };
            tracing::info!(
                message_id = &*message_id,
                status,
                attempts,
                "send finished after its caller disconnected"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn json_content_types_are_accepted() {
        for value in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
            "application/vnd.lipachat+json;charset=UTF-8",
        ] {
            assert!(is_json_content_type(&with_type(value)), "{value}");
        }
    }

    #[test]
    fn other_content_types_are_refused() {
        for value in [
            "text/plain",
            "application/xml",
            "json",
            "application/+json",
            "application/jsonx",
        ] {
            assert!(!is_json_content_type(&with_type(value)), "{value}");
        }
        assert!(!is_json_content_type(&HeaderMap::new()));
    }
}
