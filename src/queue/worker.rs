//! The queue's worker (SPEC "Queued and scheduled sends"): every replica polls the due index,
//! takes what is due, and runs each send through the pipeline a synchronous send takes —
//! dedup begin → rate limit → claim → forward → complete — without a caller's deadline.
//!
//! - Rate limits wait as long as needed: a refusal is slept off and tried again, never 429.
//!   The wait comes before the claim, so a long wait never outlives the claim's lease.
//! - A retryable failure (408, 425, 429, 5xx, unreachable, a timeout, the store) is tried again
//!   after a back-off from about 1 s, doubling, with jitter, at most 60 s apart (or the
//!   gateway's `Retry-After`, if longer), by whichever replica takes it then, until
//!   `RELAY_QUEUE_MAX_AGE_SECS` after it was due: then FAILED, `expired`.
//! - Any other gateway answer is final: FAILED, with its status as `code` and its `title` and
//!   `message`, if any.
//! - While a send is worked on, its lease is moved on every third of it; if this replica
//!   dies, the send comes due again by itself once the lease ends.
//!
//! It polls every [`POLL`] (one round trip per replica, whether or not anything is due) rather
//! than blocking on Redis: the store multiplexes one connection, which a blocking command
//! would hold for every other request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use tokio::sync::Semaphore;

use super::Queue;
use crate::clock::{millis, now_ms};
use crate::dedup::{Begin, Dedup, Resolved};
use crate::lifecycle::Lifecycle;
use crate::limit::Limits;
use crate::metrics::{Metrics, QueuedResult};
use crate::outcome::{GatewayReply, Outcome, SendFailure, wa_id_of};
use crate::phone::PhoneNumber;
use crate::sends::SendKind;
use crate::shutdown::Shutdown;
use crate::status::{ErrorDetail, SendFacts, Status, Update};
use crate::upstream::{GatewayClient, UpstreamRequest};

/// How often the due index is looked at: a send goes out within about this of its time.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How often the queue's depth is read for the metrics.
const DEPTH_EVERY: Duration = Duration::from_secs(1);
/// Queued sends one replica works on at once.
const CONCURRENCY: usize = 64;
/// The first back-off, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The longest a rate-limit refusal is slept off before asking again.
const RATE_PAUSE_MAX: Duration = Duration::from_secs(5);

/// What the pipeline needs: the parts of the app's state a send uses.
#[derive(Clone)]
pub(crate) struct Pipeline {
    pub(crate) dedup: Dedup,
    pub(crate) limits: Limits,
    pub(crate) gateway: GatewayClient,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: Shutdown,
    /// How long a taken send is this replica's before another may take it.
    pub(crate) lease: Duration,
}

/// How one try of a queued send ended.
#[derive(Debug, PartialEq)]
enum Tried {
    /// Accepted (now, or already): its `waId`, if the answer had one.
    Sent(Option<String>),
    /// Final: FAILED with this.
    Failed(ErrorDetail),
    /// Try again later, not before this (the gateway's `Retry-After`).
    Retry(Option<Duration>),
    /// Shutdown began: put it back for another replica.
    Drained,
}

/// Polls the due index until the drain begins; each send taken runs on the drain's tracker.
pub(crate) async fn run(queue: Queue, pipeline: Pipeline) {
    let busy = Arc::new(Semaphore::new(CONCURRENCY));
    let drain = pipeline.shutdown.token().clone();
    let mut depth_at = Instant::now();
    loop {
        let free = busy.available_permits();
        if free > 0 {
            match queue.0.redis.take(now_ms(), pipeline.lease, free).await {
                Ok(taken) => {
                    for message_id in taken {
                        let Ok(permit) = Arc::clone(&busy).try_acquire_owned() else {
                            break;
                        };
                        let (queue, pipeline) = (queue.clone(), pipeline.clone());
                        pipeline.shutdown.clone().spawn(async move {
                            work(&queue, &pipeline, &message_id).await;
                            drop(permit);
                        });
                    }
                }
                Err(error) => queue
                    .0
                    .redis
                    .store()
                    .warn("cannot take queued sends", &error),
            }
        }
        if depth_at.elapsed() >= DEPTH_EVERY {
            depth_at = Instant::now();
            let now = now_ms();
            if let Ok((count, oldest)) = queue.0.redis.depth(now).await {
                let late = oldest.map_or(0, |due| now.saturating_sub(due) / 1000);
                pipeline.metrics.queue.set_depth(count, late);
            }
        }
        tokio::select! {
            () = drain.cancelled() => return,
            () = tokio::time::sleep(POLL.mul_f64(0.8 + fastrand::f64() * 0.4)) => {}
        }
    }
}

/// One taken send: start it, try it while keeping its lease, then settle it.
async fn work(queue: &Queue, pipeline: &Pipeline, message_id: &str) {
    let redis = &queue.0.redis;
    let held = match redis.start(message_id).await {
        Ok(Some(held)) => held,
        // Cancelled or gone: nothing to send; its due entry goes.
        Ok(None) => {
            if let Err(error) = redis.forget_due(message_id).await {
                redis.store().warn("cannot drop a cancelled send", &error);
            }
            return;
        }
        // Its lease brings it back.
        Err(error) => return redis.store().warn("cannot start a queued send", &error),
    };
    let keep = async {
        loop {
            tokio::time::sleep(pipeline.lease / 3).await;
            let until = now_ms().saturating_add(millis(pipeline.lease));
            if let Err(error) = redis.due_at(message_id, until).await {
                redis
                    .store()
                    .warn("cannot keep a queued send's lease", &error);
            }
        }
    };
    let tried = tokio::select! {
        tried = attempt(pipeline, message_id, &held) => tried,
        () = keep => return,
    };
    let facts = SendFacts {
        kind: SendKind::ALL
            .into_iter()
            .find(|kind| kind.name() == held.kind)
            .map(SendKind::name),
        from: Some(held.from.clone()),
        to: Some(held.to.clone()),
        wa_id: None,
    };
    let settled = match tried {
        Tried::Sent(wa_id) => {
            pipeline.metrics.queue.record(QueuedResult::Sent);
            let facts = SendFacts { wa_id, ..facts };
            pipeline.lifecycle.accepted(message_id, facts).await;
            redis.finish(message_id).await
        }
        Tried::Failed(detail) => {
            pipeline.metrics.queue.record(QueuedResult::Failed);
            fail(pipeline, message_id, detail).await;
            redis.finish(message_id).await
        }
        Tried::Drained => redis.due_at(message_id, now_ms()).await,
        Tried::Retry(_) if now_ms().saturating_sub(held.send_at) >= millis(queue.0.max_age) => {
            pipeline.metrics.queue.record(QueuedResult::Expired);
            let detail = ErrorDetail {
                code: None,
                title: Some("expired".to_owned()),
                message: Some(
                    "retried for RELAY_QUEUE_MAX_AGE_SECS without an answer that ends it".into(),
                ),
            };
            fail(pipeline, message_id, detail).await;
            redis.finish(message_id).await
        }
        Tried::Retry(hint) => {
            pipeline.metrics.queue.record(QueuedResult::Retried);
            let failures = redis.failed(message_id).await.unwrap_or(held.failures + 1);
            let wait = backoff(failures, fastrand::f64()).max(hint.unwrap_or_default());
            redis
                .due_at(message_id, now_ms().saturating_add(millis(wait)))
                .await
        }
    };
    // What did not land comes back with the lease; the dedup window makes that harmless.
    if let Err(error) = settled {
        redis.store().warn("cannot settle a queued send", &error);
    }
}

async fn fail(pipeline: &Pipeline, message_id: &str, detail: ErrorDetail) {
    let mut update = Update::now(Status::Failed);
    update.error = Some(detail);
    if let Err(error) = pipeline.lifecycle.record(message_id, &update).await {
        tracing::warn!(%error, message_id, "a queued send's FAILED could not be recorded");
    }
}

/// One try through the pipeline.
async fn attempt(pipeline: &Pipeline, message_id: &str, held: &super::redis::Held) -> Tried {
    let kind = SendKind::ALL
        .into_iter()
        .find(|kind| kind.name() == held.kind);
    let (Some(kind), Ok(from), Ok(to)) = (
        kind,
        PhoneNumber::parse(&held.from),
        PhoneNumber::parse(&held.to),
    ) else {
        return Tried::Failed(detail(
            None,
            "unreadable",
            "the queued send could not be read",
        ));
    };
    let mut lead = match pipeline.dedup.begin(message_id, held.fingerprint) {
        Begin::Lead(lead) => lead,
        Begin::Replay(answer) => return Tried::Sent(wa_id_of(&answer.body)),
        Begin::Wait(waiter) => return classify(&waiter.outcome().await),
        Begin::Refused(failure) => return classify(&Err(failure)),
    };
    // Rate limits first: a wait of any length, before the claim's lease starts.
    let drain = pipeline.shutdown.token();
    loop {
        let leave_by = Instant::now() + RATE_PAUSE_MAX;
        match pipeline.limits.acquire(&from, &to, leave_by, drain).await {
            Ok(_) => break,
            Err(SendFailure::RateLimited { retry_after, .. }) => {
                let pause = retry_after.clamp(Duration::from_millis(10), RATE_PAUSE_MAX);
                tokio::select! {
                    () = drain.cancelled() => {
                        lead.complete(&Err(SendFailure::Draining)).await;
                        return Tried::Drained;
                    }
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(failure) => {
                let outcome = Err(failure);
                lead.complete(&outcome).await;
                return match outcome {
                    Err(SendFailure::Draining) => Tried::Drained,
                    other => classify(&other),
                };
            }
        }
    }
    let deadline = pipeline.gateway.deadline_from(Instant::now());
    if let Err(resolved) = lead.claim(deadline).await {
        return match resolved {
            Resolved::Replay(answer) => Tried::Sent(wa_id_of(&answer.body)),
            Resolved::Refused(failure) => classify(&Err(failure)),
        };
    }
    let body = held.body.clone();
    let upstream = UpstreamRequest::new(kind, body, &HeaderMap::new(), deadline);
    let outcome = pipeline
        .gateway
        .forward(upstream)
        .await
        .map_err(SendFailure::from);
    lead.complete(&outcome).await;
    classify(&outcome)
}

/// What a send's outcome means for a queued send.
fn classify(outcome: &Outcome) -> Tried {
    match outcome {
        Ok(reply) if reply.is_success() => Tried::Sent(wa_id_of(&reply.body)),
        // Accepted, though not in JSON (not remembered): trying again could send it twice.
        Ok(reply) if reply.status.is_success() => Tried::Sent(None),
        Ok(reply) if is_retried(reply) => Tried::Retry(reply.retry_after),
        Ok(reply) => Tried::Failed(gateway_detail(reply)),
        Err(SendFailure::Conflict) => Tried::Failed(detail(
            None,
            "conflict",
            "messageId was already used with a different payload",
        )),
        Err(SendFailure::Draining) => Tried::Drained,
        Err(_) => Tried::Retry(None),
    }
}

/// Statuses worth another try later: timeouts, too early, too many, the gateway's own
/// failures.
fn is_retried(reply: &GatewayReply) -> bool {
    matches!(reply.status.as_u16(), 408 | 425 | 429) || reply.status.is_server_error()
}

/// A final gateway answer as the record's error: its status, and its body's title and message.
fn gateway_detail(reply: &GatewayReply) -> ErrorDetail {
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
    let text = |name: &str| body.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    ErrorDetail {
        code: Some(reply.status.as_u16().into()),
        title: text("title")
            .or_else(|| text("error"))
            .or_else(|| reply.status.canonical_reason().map(str::to_owned)),
        message: text("message").filter(|message| !message.is_empty()),
    }
}

fn detail(code: Option<u16>, title: &str, message: &str) -> ErrorDetail {
    ErrorDetail {
        code: code.map(Into::into),
        title: Some(title.to_owned()),
        message: Some(message.to_owned()),
    }
}

/// The pause before try `failures + 1`: from about 1 s, doubling, at most 60 s, with jitter
/// (`unit` in 0..1 keeps between half and all of it, so replicas spread out).
pub(crate) fn backoff(failures: u32, unit: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = BACKOFF_FIRST.saturating_mul(1 << exponent).min(BACKOFF_MAX);
    ceiling.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn reply(status: u16, body: &str) -> GatewayReply {
        GatewayReply {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: None,
            body: Bytes::from(body.to_owned()),
            is_json: true,
            retry_after: None,
        }
    }

    #[test]
    fn back_off_starts_near_a_second_doubles_and_stays_under_a_minute() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(7, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn a_gateway_400_is_final_with_its_status_and_message() {
        let body = r#"{"status":"error","message":"to is not a WhatsApp number"}"#;
        let Tried::Failed(detail) = classify(&Ok(reply(400, body))) else {
            panic!("a 400 was retried");
        };
        assert_eq!(detail.code, Some(400.into()));
        assert_eq!(detail.title.as_deref(), Some("Bad Request"));
        assert_eq!(
            detail.message.as_deref(),
            Some("to is not a WhatsApp number")
        );
    }

    #[test]
    fn gateway_failures_and_timeouts_are_retried() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify(&Ok(reply(status, "{}"))),
                Tried::Retry(None),
                "{status}"
            );
        }
        let timeout = Err(SendFailure::Upstream(
            crate::outcome::UpstreamError::DeadlineExceeded,
        ));
        assert_eq!(classify(&timeout), Tried::Retry(None));
        assert!(matches!(classify(&Ok(reply(200, "{}"))), Tried::Sent(None)));
    }
}
