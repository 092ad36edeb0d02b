//! Every `POST` send and its alias (SPEC "HTTP API of the relay", "Every Lipachat send").
//!
//! The handler reads like the SPEC: refuse while draining → content type → body (whole-body
//! time and size) → validate → take a `RELAY_MAX_IN_FLIGHT` slot → dedup → (new sends:) claim
//! → rate limit → forward → answer. The body is read before a slot is taken, so a slow client
//! never holds a slot it is not using.
//!
//! A new send runs inside the request's own task while the caller waits (no hand-off on the
//! fast path). If the caller disconnects, [`DetachedSend`] moves the unfinished send, with its
//! slot, into a task of its own: it still completes, is remembered, counted and logged, and
//! keeps its slot (and its place in the in-flight gauge) until it ends. The slot is a
//! semaphore permit moved into the send rather than tower's concurrency limit, whose permit
//! would end with the request's future.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::Instrument;

use crate::dedup::{Begin, Lead, Remembered, Resolved};
use crate::error::{ApiError, whole_seconds};
use crate::headers::{HEADER_ATTEMPTS, HEADER_REPLAYED, HEADER_REQUEST_ID, HEADER_TRACEPARENT};
use crate::outcome::{GatewayReply, Outcome, RequestOutcome, SendFailure};
use crate::phone::PhoneNumber;
use crate::sends::SendKind;
use crate::state::{AppState, Slot};
use crate::telemetry::{self, RequestRecord};
use crate::upstream::UpstreamRequest;
use crate::validate::{self, SendRequest};

/// `POST` on a send type's path or alias.
pub async fn send(State(state): State<AppState>, kind: SendKind, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let request_id = headers.get(HEADER_REQUEST_ID).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!("send", request_id, r#type = kind.name());
    let context = Call {
        state: &state,
        kind,
        headers,
        started,
    };
    let mut record = RequestRecord::new(kind, RequestOutcome::Invalid);
    // A span filtered out (the usual RUST_LOG=info has no span output) costs nothing to skip.
    let result = if span.is_disabled() {
        relay(&context, body, &mut record).await
    } else {
        relay(&context, body, &mut record).instrument(span).await
    };
    let mut response = match result {
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
    let latency = started.elapsed();
    state.metrics.record_request(kind, record.outcome, latency);
    let trace_id = headers
        .get(HEADER_TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(telemetry::trace_id);
    telemetry::log_request(
        request_id,
        trace_id,
        response.status().as_u16(),
        latency,
        &record,
        false,
    );
    response
}

/// What the steps of one request share.
struct Call<'a> {
    state: &'a AppState,
    kind: SendKind,
    headers: &'a HeaderMap,
    started: Instant,
}

async fn relay(
    context: &Call<'_>,
    body: Body,
    record: &mut RequestRecord,
) -> Result<Response, ApiError> {
    let state = context.state;
    if state.drain.is_draining() {
        return Err(ApiError::Draining);
    }
    if !is_json_content_type(context.headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = read_body(state, context.headers, body, context.started).await?;
    let request = validate::validate(
        context.kind.rules(),
        &body,
        state.config.default_from.as_ref(),
    )?;
    let SendRequest {
        message_id,
        from,
        to,
        body,
        fingerprint,
    } = request;
    // The record owns what its log line needs; nothing is copied for it.
    record.message_id = Some(message_id);
    record.to = Some(to);
    let slot = state.take_slot().ok_or(ApiError::Overloaded)?;
    let message_id = record.message_id.as_deref().unwrap_or_default();
    match state.dedup.begin(message_id, fingerprint) {
        Begin::Replay(answer) => {
            record.outcome = RequestOutcome::Replayed;
            Ok(replay(&answer))
        }
        Begin::Refused(failure) => Err(failure.into()),
        Begin::Wait(waiter) => {
            let outcome = waiter.outcome().await;
            drop(slot);
            let response = answer(outcome, true)?;
            record.outcome = RequestOutcome::Coalesced;
            Ok(response)
        }
        Begin::Lead(lead) => {
            // The record travels with the send (which may outlive this request) and back.
            let taken = std::mem::replace(record, RequestRecord::new(context.kind, record.outcome));
            let done = lead_send(context, from, body, lead, slot, taken).await;
            *record = done.record;
            let response = answer(done.outcome, done.replayed)?;
            record.outcome = if done.replayed {
                RequestOutcome::Replayed
            } else {
                outcome_of(&response)
            };
            Ok(response)
        }
    }
}

/// The whole body within `RELAY_BODY_TIMEOUT_MS` of the head and `RELAY_MAX_BODY_BYTES`.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    head_at: Instant,
) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    let too_large = ApiError::BodyTooLarge { limit };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large);
    }
    let timeout = state.config.connections.body_timeout;
    let deadline = tokio::time::Instant::from_std(head_at) + timeout;
    match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(too_large),
        Ok(Err(_)) => Err(ApiError::UnreadableBody),
        Err(_) => Err(ApiError::BodyTimeout(timeout)),
    }
}

/// What a new send ended with, and its record (attempts and rate wait filled in).
struct SendDone {
    outcome: Outcome,
    /// The claim found the answer already remembered (by another replica, say).
    replayed: bool,
    record: RequestRecord,
}

/// Runs a new send: claim → rate limit → forward → complete, surviving its caller.
async fn lead_send(
    context: &Call<'_>,
    from: PhoneNumber,
    body: Bytes,
    lead: Lead,
    slot: Slot,
    mut record: RequestRecord,
) -> SendDone {
    let state = context.state.clone();
    // The deadline counts from the request's arrival: no clock read of its own.
    let deadline = state.gateway.deadline_from(context.started);
    let upstream = UpstreamRequest::new(context.kind, body, context.headers, deadline);
    let guard = state.drain.track_send();
    let send_state = state.clone();
    let send = async move {
        let _slot = slot;
        let _guard = guard;
        let mut lead = lead;
        if let Err(resolved) = lead.claim(deadline).await {
            let (outcome, replayed) = match resolved {
                Resolved::Replay(answer) => (Ok(answer.to_reply()), true),
                Resolved::Refused(failure) => (Err(failure), false),
            };
            return SendDone {
                outcome,
                replayed,
                record,
            };
        }
        let waited = match &record.to {
            Some(to) => {
                let limits = &send_state.limits;
                // The wait must leave time for an attempt, or the send is refused now (429).
                let leave_by = send_state.gateway.last_departure(deadline);
                limits.acquire(&from, to, leave_by, &send_state.drain).await
            }
            None => Ok(Duration::ZERO),
        };
        match waited {
            Ok(waited) => record.rate_wait = waited,
            Err(failure) => {
                let outcome = Err(failure);
                lead.complete(&outcome).await;
                return SendDone {
                    outcome,
                    replayed: false,
                    record,
                };
            }
        }
        let outcome = send_state
            .gateway
            .forward(upstream.clone())
            .await
            .map_err(SendFailure::from);
        lead.complete(&outcome).await;
        record.attempts = upstream.attempts();
        SendDone {
            outcome,
            replayed: false,
            record,
        }
    };
    let detached = Detached {
        state,
        request_id: context.headers.get(HEADER_REQUEST_ID).cloned(),
        traceparent: context.headers.get(HEADER_TRACEPARENT).cloned(),
        started: context.started,
    };
    let span = tracing::Span::current();
    let send: SendFuture = if span.is_disabled() {
        Box::pin(send)
    } else {
        Box::pin(send.instrument(span))
    };
    DetachedSend::new(detached, send).await
}

/// The outcome label of a gateway answer passed on.
fn outcome_of(response: &Response) -> RequestOutcome {
    let status = response.status();
    if status.is_success() {
        RequestOutcome::Sent
    } else if status.is_client_error() {
        RequestOutcome::Rejected
    } else {
        RequestOutcome::UpstreamError
    }
}

/// The gateway's answer, byte for byte, or our own answer when there is no JSON answer.
fn answer(outcome: Outcome, replayed: bool) -> Result<Response, ApiError> {
    let reply = outcome?;
    if !reply.is_json {
        return Err(ApiError::GatewayNotJson(reply.status.as_u16()));
    }
    let GatewayReply {
        status,
        content_type,
        body,
        retry_after,
        ..
    } = reply;
    let mut response = passthrough(status, content_type, body);
    let headers = response.headers_mut();
    if let Some(wait) = retry_after {
        // The gateway's own advice travels with its answer (a date becomes seconds).
        headers.insert(RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
    }
    if replayed {
        headers.insert(
            HeaderName::from_static(HEADER_REPLAYED),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

fn replay(answer: &Remembered) -> Response {
    let mut response = passthrough(
        answer.status,
        Some(answer.content_type()),
        answer.body.clone(),
    );
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

type SendFuture = Pin<Box<dyn Future<Output = SendDone> + Send>>;

/// What a send needs to count and log itself if its caller leaves (its record travels in
/// the send's own output).
struct Detached {
    state: AppState,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    started: Instant,
}

/// Polls the send in the caller's task; if the caller goes away first, the rest of the send
/// is spawned so that it completes, is remembered, and is counted and logged when it ends.
struct DetachedSend {
    detached: Option<Detached>,
    send: Option<SendFuture>,
}

impl DetachedSend {
    fn new(detached: Detached, send: SendFuture) -> Self {
        Self {
            detached: Some(detached),
            send: Some(send),
        }
    }
}

impl Future for DetachedSend {
    type Output = SendDone;

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
        let (Some(send), Some(detached)) = (self.send.take(), self.detached.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // The runtime is shutting down: the send's drop guards free its dedup entry.
            tracing::error!("caller left while the runtime stopped: send dropped");
            return;
        };
        detached.state.metrics.record_detached();
        runtime.spawn(async move {
            let done = send.await;
            let Detached {
                state,
                request_id,
                traceparent,
                started,
            } = detached;
            let mut record = done.record;
            let status = match answer(done.outcome, done.replayed) {
                Ok(response) => {
                    record.outcome = if done.replayed {
                        RequestOutcome::Replayed
                    } else {
                        outcome_of(&response)
                    };
                    response.status()
                }
                Err(error) => {
                    record.outcome = error.outcome();
                    error.status()
                }
            };
            let latency = started.elapsed();
            state
                .metrics
                .record_request(record.kind, record.outcome, latency);
            let trace_id = traceparent
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(telemetry::trace_id);
            telemetry::log_request(
                request_id.as_ref().and_then(|v| v.to_str().ok()),
                trace_id,
                status.as_u16(),
                latency,
                &record,
                true,
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
