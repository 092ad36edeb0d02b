//! Every `POST` send and its alias (SPEC "HTTP API of the relay", "Every Lipachat send").
//!
//! The handler reads like the SPEC: refuse while draining → content type → body (whole-body
//! time and size) → validate → take a `RELAY_MAX_IN_FLIGHT` slot → dedup → (new sends:) claim
//! → rate limit → forward → answer. The body is read before a slot is taken, so a slow client
//! never holds a slot it is not using.
//!
//! A new send runs in a task of its own, spawned on the drain's `TaskTracker`
//! ([`crate::shutdown`]) with its slot, and the handler awaits its `JoinHandle`. If the caller
//! disconnects, only the handler's future is dropped: the task goes on, completes, is
//! remembered, and keeps its slot (and its place in the in-flight gauge) until it ends. So that
//! this is the same whether the caller stays or not, the task writes the tail of a new send
//! itself (the answer, the metrics, the log line) and hands the answer back; the handler writes
//! the tail of every other answer (replayed, coalesced, refused), with the same
//! [`Call::finish`]. The handler holds a `CancellationToken`'s `DropGuard` while it waits: a
//! caller who leaves cancels it, which the task counts as a detached send and logs as
//! `caller_gone`. A task that panics ends its handle with an error (502 to its caller); its
//! `Lead`, dropped as it unwinds, frees the dedup entry and gives its waiters 502. The slot is
//! a semaphore permit moved into the task rather than tower's concurrency limit, whose permit
//! would end with the request's future.
//!
//! Cost: one spawn, one token and one `AppState` clone per new send; replays, coalesced and
//! refused requests spawn nothing. The design before this one polled the send inline and
//! spawned only on a disconnect (a hand-written future with a `Drop`). If the spawn measures
//! above 1 µs per request on a quiet machine, a fast path may come back, built only from
//! tokio and tokio-util parts, with the measurement in this doc.

use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dedup::{Begin, Lead, Remembered, Resolved};
use crate::error::{ApiError, whole_seconds};
use crate::headers::{HEADER_ATTEMPTS, HEADER_REPLAYED, HEADER_REQUEST_ID, HEADER_TRACEPARENT};
use crate::outcome::{GatewayReply, Outcome, RequestOutcome, SendFailure, wa_id_of};
use crate::phone::PhoneNumber;
use crate::queue::{
    self, HEADER_PREFER, HEADER_PREFERENCE_APPLIED, HEADER_SEND_AT, Queue, RESPOND_ASYNC, ToQueue,
};
use crate::sends::SendKind;
use crate::state::{AppState, Slot};
use crate::status::SendFacts;
use crate::telemetry::{self, RequestRecord};
use crate::upstream::UpstreamRequest;
use crate::validate::{self, SendRequest};

/// `POST` on a send type's path or alias.
pub(crate) async fn send(
    State(state): State<AppState>,
    kind: SendKind,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let call = Call {
        state,
        kind,
        started,
        request_id: parts.headers.get(HEADER_REQUEST_ID).cloned(),
        traceparent: parts.headers.get(HEADER_TRACEPARENT).cloned(),
    };
    let span = tracing::info_span!("send", request_id = call.request_id(), r#type = kind.name());
    let mut record = RequestRecord::new(kind, RequestOutcome::Invalid);
    // A span filtered out (the usual RUST_LOG=info has no span output) costs nothing to skip.
    let result = if span.is_disabled() {
        relay(&call, &parts.headers, body, &mut record).await
    } else {
        relay(&call, &parts.headers, body, &mut record)
            .instrument(span)
            .await
    };
    match result {
        Ok(Answer::Finished(response)) => response,
        Ok(Answer::Here(response)) => call.finish(record, Ok(response), false),
        Err(error) => call.finish(record, Err(error), false),
    }
}

/// What the tail of a send request needs, owned, so that a new send's task can write it.
#[derive(Clone)]
struct Call {
    state: AppState,
    kind: SendKind,
    /// When the request arrived: latency and the send's deadline count from here.
    started: Instant,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
}

impl Call {
    fn request_id(&self) -> Option<&str> {
        self.request_id.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The tail of every send request, written once: the answer (the gateway's or ours),
    /// `x-relay-attempts`, the request's metrics and its log line.
    fn finish(
        &self,
        mut record: RequestRecord,
        result: Result<Response, ApiError>,
        caller_gone: bool,
    ) -> Response {
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
        let latency = self.started.elapsed();
        self.state
            .metrics
            .record_request(self.kind, record.outcome, latency);
        let trace_id = self
            .traceparent
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(telemetry::trace_id);
        telemetry::log_request(
            self.request_id(),
            trace_id,
            response.status().as_u16(),
            latency,
            &record,
            caller_gone,
        );
        response
    }
}

/// An answer, and who writes its tail.
enum Answer {
    /// Made by the handler, which writes the tail.
    Here(Response),
    /// Made, counted and logged by a new send's task.
    Finished(Response),
}

async fn relay(
    call: &Call,
    headers: &HeaderMap,
    body: Body,
    record: &mut RequestRecord,
) -> Result<Answer, ApiError> {
    let state = &call.state;
    if state.shutdown.is_draining() {
        return Err(ApiError::Draining);
    }
    if !is_json_content_type(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = read_body(state, headers, body, call.started).await?;
    let request = validate::validate(call.kind.rules(), &body, state.config.default_from.as_ref())?;
    // One header lookup on every send: the queue is only for a caller that asks for it.
    if let Some(prefer) = headers.get(HEADER_PREFER)
        && queue::prefers_async(prefer)
    {
        match &state.queue {
            Some(queue) => {
                return queue_send(call, queue, headers, request, record)
                    .await
                    .map(Answer::Here);
            }
            // Not applied (RFC 7240 allows it): answered synchronously, unless it is for later.
            None if headers.contains_key(HEADER_SEND_AT) => {
                return Err(queue::send_at_needs_redis());
            }
            None => {}
        }
    }
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
            Ok(Answer::Here(replay(&answer)))
        }
        Begin::Refused(failure) => Err(failure.into()),
        Begin::Wait(waiter) => {
            let outcome = waiter.outcome().await;
            drop(slot);
            let response = answer(outcome, true)?;
            record.outcome = RequestOutcome::Coalesced;
            Ok(Answer::Here(response))
        }
        Begin::Lead(lead) => {
            // The record travels with the send, which writes its log line.
            let taken = std::mem::replace(record, RequestRecord::new(call.kind, record.outcome));
            let deadline = state.gateway.deadline_from(call.started);
            let send = NewSend {
                from,
                upstream: UpstreamRequest::new(call.kind, body, headers, deadline),
                lead,
                slot,
                record: taken,
            };
            spawn_send(call, send).await.map(Answer::Finished)
        }
    }
}

/// A send held for later (SPEC "Queued and scheduled sends"): a remembered 2xx is replayed
/// (200), another payload is 422, anything else is queued (or found queued) and answered 202
/// with its record.
async fn queue_send(
    call: &Call,
    queue: &Queue,
    headers: &HeaderMap,
    request: SendRequest,
    record: &mut RequestRecord,
) -> Result<Response, ApiError> {
    let send_at = queue::send_at(headers, SystemTime::now())?.unwrap_or_else(SystemTime::now);
    let found = call.state.dedup.remembered(&request.message_id).await;
    let fingerprint = request.fingerprint;
    record.message_id = Some(request.message_id);
    record.to = Some(request.to);
    let message_id = record.message_id.as_deref().unwrap_or_default();
    match found {
        Ok(Some(answer)) if answer.fingerprint == fingerprint => {
            record.outcome = RequestOutcome::Replayed;
            return Ok(replay(&answer));
        }
        Ok(Some(_)) => return Err(ApiError::IdempotencyConflict),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "cannot look for a remembered answer");
            return Err(ApiError::StoreUnavailable);
        }
    }
    let to = record
        .to
        .as_ref()
        .map(PhoneNumber::digits)
        .unwrap_or_default();
    let queued = queue
        .enqueue(ToQueue {
            message_id,
            kind: call.kind.name(),
            from: request.from.digits(),
            to,
            body: &request.body,
            fingerprint,
            send_at,
        })
        .await?;
    record.outcome = RequestOutcome::Queued;
    let mut response = (StatusCode::ACCEPTED, Json(queued)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static(HEADER_PREFERENCE_APPLIED),
        HeaderValue::from_static(RESPOND_ASYNC),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("/messages/{}", path_segment(message_id)))
    {
        headers.insert(LOCATION, location);
    }
    Ok(response)
}

/// `text` as one URL path segment: unreserved characters as they are, the rest
/// percent-encoded.
fn path_segment(text: &str) -> String {
    let mut segment = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    segment
}

/// The whole body within `RELAY_BODY_TIMEOUT_MS` of the head and `RELAY_MAX_BODY_BYTES`.
pub(crate) async fn read_body(
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

/// What a new send's task takes with it.
struct NewSend {
    from: PhoneNumber,
    upstream: UpstreamRequest,
    lead: Lead,
    slot: Slot,
    record: RequestRecord,
}

/// Spawns a new send on the drain's tracker and waits for its answer. Dropping this future
/// (the caller left) leaves the task running; the task then counts and logs itself detached.
async fn spawn_send(call: &Call, send: NewSend) -> Result<Response, ApiError> {
    let caller = CancellationToken::new();
    let task = finish_send(call.clone(), send, caller.clone());
    let span = tracing::Span::current();
    let handle = if span.is_disabled() {
        call.state.shutdown.spawn(task)
    } else {
        call.state.shutdown.spawn(task.instrument(span))
    };
    let _caller_left = caller.drop_guard();
    handle.await.map_err(|error| {
        // Its `Lead` has freed the dedup entry as it unwound; its waiters get 502 as well.
        tracing::error!(%error, "a send's task ended without an answer");
        ApiError::Abandoned
    })
}

/// The task of a new send: the send, then its tail, whether or not the caller still waits.
async fn finish_send(call: Call, send: NewSend, caller: CancellationToken) -> Response {
    let mut running = std::pin::pin!(run_send(&call.state, send));
    let done = tokio::select! {
        biased;
        done = &mut running => done,
        () = caller.cancelled() => {
            call.state.metrics.record_detached();
            running.await
        }
    };
    let SendDone {
        outcome,
        replayed,
        mut record,
    } = done;
    let result = answer(outcome, replayed);
    if let Ok(response) = &result {
        record.outcome = if replayed {
            RequestOutcome::Replayed
        } else {
            outcome_of(response)
        };
    }
    call.finish(record, result, caller.is_cancelled())
}

/// What a new send ended with, and its record (attempts and rate wait filled in).
struct SendDone {
    outcome: Outcome,
    /// The claim found the answer already remembered (by another replica, say).
    replayed: bool,
    record: RequestRecord,
}

/// Claim → rate limit → forward → complete. The slot is held until this ends.
async fn run_send(state: &AppState, send: NewSend) -> SendDone {
    let NewSend {
        from,
        upstream,
        mut lead,
        slot: _slot,
        mut record,
    } = send;
    let deadline = upstream.deadline();
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
            // The wait must leave time for an attempt, or the send is refused now (429).
            let leave_by = state.gateway.last_departure(deadline);
            let drain = state.shutdown.token();
            state.limits.acquire(&from, to, leave_by, drain).await
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
    let outcome = state
        .gateway
        .forward(upstream.clone())
        .await
        .map_err(SendFailure::from);
    match (&state.lifecycle, &outcome) {
        // Accepted: the status record and the SENT event, beside the completion (two round
        // trips at once on the one multiplexed connection, not one after the other).
        (Some(lifecycle), Ok(reply)) if reply.status.is_success() && lifecycle.follows_sends() => {
            let facts = SendFacts {
                kind: Some(record.kind.name()),
                from: Some(from.digits().to_owned()),
                to: record.to.as_ref().map(|to| to.digits().to_owned()),
                wa_id: wa_id_of(&reply.body),
            };
            let message_id = record.message_id.as_deref().unwrap_or_default();
            tokio::join!(
                lead.complete(&outcome),
                lifecycle.accepted(message_id, facts)
            );
        }
        _ => lead.complete(&outcome).await,
    }
    record.attempts = upstream.attempts();
    SendDone {
        outcome,
        replayed: false,
        record,
    }
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
pub(crate) fn is_json_content_type(headers: &HeaderMap) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(CONTENT_TYPE, HeaderValue::from_static(value))])
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
