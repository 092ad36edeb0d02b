//! Queued and scheduled sends (SPEC "Queued and scheduled sends"): a send with
//! `Prefer: respond-async` is validated as usual, held in Redis ([`redis`]), answered 202 with
//! its QUEUED record, and sent later by whichever replica's [`worker`] takes it, through the
//! same pipeline as a synchronous send but without the caller's deadline.
//!
//! The one decision: the dedup claim, not the queue, is the guard against a double send. The
//! queue only promises that every send is taken until it ends (a lease that lapses by itself);
//! a send taken twice — its first taker died, or stalled past its lease — goes through
//! `Dedup::begin` and its claim like any send, so the second taker finds the remembered 2xx and
//! only marks it SENT. What is left is the synchronous sends' own limit: a replica killed
//! mid-call may have reached the gateway with a send that is then sent again after its lease.
//!
//! Only with Redis: without it the preference is not applied (RFC 7240 allows it) and the
//! handler never gets here.

mod redis;
pub(crate) mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::error::ApiError;
use crate::fingerprint::Fingerprint;
use crate::lifecycle::Lifecycle;
use crate::metrics::{Metrics, QueuedResult};
use crate::status::{Record, SendFacts, Status, Update};
use crate::store::SharedStore;
use crate::validate::FieldError;
use redis::{Enqueued, NewSend, RedisQueue};

/// The request header that asks for a queued send (RFC 7240).
pub(crate) const HEADER_PREFER: &str = "prefer";
/// The answer's header saying the preference was applied.
pub(crate) const HEADER_PREFERENCE_APPLIED: &str = "preference-applied";
/// When to send a queued send (RFC 3339).
pub(crate) const HEADER_SEND_AT: &str = "send-at";
/// The preference this module applies.
pub(crate) const RESPOND_ASYNC: &str = "respond-async";

/// How far ahead a `Send-At` may be.
pub(crate) const MAX_SEND_AHEAD: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Whether a `Prefer` header asks for `respond-async` (a list of preferences, any case,
/// parameters allowed).
pub(crate) fn prefers_async(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|text| {
        text.split(',').any(|preference| {
            let token = preference.split([';', '=']).next().unwrap_or_default();
            token.trim().eq_ignore_ascii_case(RESPOND_ASYNC)
        })
    })
}

/// The `Send-At` of a request: `None` when absent; a time in the past means now; more than
/// 30 days ahead or not an RFC 3339 time is 400 naming `Send-At`.
pub(crate) fn send_at(
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Option<SystemTime>, ApiError> {
    let Some(value) = headers.get(HEADER_SEND_AT) else {
        return Ok(None);
    };
    let invalid =
        |message: &'static str| ApiError::Validation(vec![FieldError::new("Send-At", message)]);
    let at = value
        .to_str()
        .ok()
        .and_then(parse_rfc3339)
        .ok_or_else(|| invalid("must be an RFC 3339 time, such as 2026-12-24T09:00:00Z"))?;
    if at > now + MAX_SEND_AHEAD {
        return Err(invalid("must be at most 30 days ahead"));
    }
    Ok(Some(at.max(now)))
}

/// The refusal of a `Send-At` without Redis: queued sends are held there.
pub(crate) fn send_at_needs_redis() -> ApiError {
    ApiError::Validation(vec![FieldError::new(
        "Send-At",
        "needs RELAY_REDIS_URL: queued and scheduled sends are held in Redis",
    )])
}

/// RFC 3339 with `Z` or a numeric offset, fractions of a second allowed.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if text.ends_with(['Z', 'z']) {
        return humantime::parse_rfc3339(text).ok();
    }
    let split = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..split)?, text.get(split..)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => return None,
    };
    let (hours, minutes) = offset.get(1..)?.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes) = (hours.parse::<u64>().ok()?, minutes.parse::<u64>().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    let utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    // Local time = UTC + offset, so UTC = local - offset.
    if sign > 0 {
        utc.checked_sub(shift)
    } else {
        utc.checked_add(shift)
    }
}

pub(crate) use crate::clock::unix_ms;

/// A send to queue, validated.
pub(crate) struct ToQueue<'a> {
    pub(crate) message_id: &'a str,
    pub(crate) kind: &'static str,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) body: &'a Bytes,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) send_at: SystemTime,
}

/// The queue: where sends wait in Redis, and their records.
#[derive(Clone)]
pub(crate) struct Queue(Arc<Inner>);

struct Inner {
    redis: RedisQueue,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    /// `RELAY_QUEUE_MAX_AGE_SECS`.
    max_age: Duration,
    /// How long a cancelled send's hash is kept, so a repeat still finds it.
    keep_cancelled: Duration,
}

impl Queue {
    /// The queue on `store`, recording in `lifecycle`.
    pub(crate) fn new(
        store: SharedStore,
        lifecycle: Lifecycle,
        metrics: Arc<Metrics>,
        max_age: Duration,
        keep_cancelled: Duration,
    ) -> Self {
        Self(Arc::new(Inner {
            redis: RedisQueue::new(store),
            lifecycle,
            metrics,
            max_age,
            keep_cancelled,
        }))
    }

    /// Holds a send; its record (QUEUED for a new one, whatever it is now for a repeat). The
    /// same `messageId` held with another payload is 422.
    pub(crate) async fn enqueue(&self, send: ToQueue<'_>) -> Result<Record, ApiError> {
        let now = SystemTime::now();
        let ahead = send.send_at.duration_since(now).unwrap_or_default();
        let new = NewSend {
            message_id: send.message_id,
            kind: send.kind,
            from: send.from,
            to: send.to,
            body: send.body,
            fingerprint: send.fingerprint,
            send_at: unix_ms(send.send_at),
            created: unix_ms(now),
            // Tried for max_age from when it is due; then kept as long as a cancel is.
            ttl: ahead + self.0.max_age + self.0.keep_cancelled,
        };
        let facts = SendFacts {
            kind: Some(send.kind),
            from: Some(send.from.to_owned()),
            to: Some(send.to.to_owned()),
            wa_id: None,
        };
        let enqueued = self.0.redis.enqueue(&new).await.map_err(|error| {
            self.0.redis.store().warn("cannot queue a send", &error);
            ApiError::StoreUnavailable
        })?;
        match enqueued {
            Enqueued::New => {
                self.0.metrics.queue.record(QueuedResult::Queued);
                let mut update = Update::now(Status::Queued);
                update.send = Some(facts);
                self.record(send.message_id, &update).await
            }
            Enqueued::Held { fingerprint, .. } if fingerprint != Some(send.fingerprint) => {
                Err(ApiError::IdempotencyConflict)
            }
            Enqueued::Held { .. } => match self.0.lifecycle.get(send.message_id).await {
                Ok(Some(record)) => Ok(record),
                Ok(None) => {
                    let mut update = Update::now(Status::Queued);
                    update.send = Some(facts);
                    self.record(send.message_id, &update).await
                }
                Err(_) => Err(ApiError::StatusUnavailable),
            },
        }
    }

    /// `DELETE /messages/{messageId}`: a send still QUEUED becomes CANCELLED and is never
    /// sent; one handed to the gateway is 409; one the relay does not hold is 404.
    pub(crate) async fn cancel(&self, message_id: &str) -> Result<Record, ApiError> {
        let found = self
            .0
            .redis
            .cancel(message_id, self.0.keep_cancelled)
            .await
            .map_err(|error| {
                self.0.redis.store().warn("cannot cancel a send", &error);
                ApiError::StoreUnavailable
            })?;
        match found.as_str() {
            "queued" => {
                self.0.metrics.queue.record(QueuedResult::Cancelled);
                self.record(message_id, &Update::now(Status::Cancelled))
                    .await
            }
            "cancelled" => match self.0.lifecycle.get(message_id).await {
                Ok(Some(record)) => Ok(record),
                Ok(None) => {
                    self.record(message_id, &Update::now(Status::Cancelled))
                        .await
                }
                Err(_) => Err(ApiError::StatusUnavailable),
            },
            "sending" => Err(ApiError::AlreadySent),
            // Not held: a record means it was sent (or failed) already.
            _ => match self.0.lifecycle.get(message_id).await {
                Ok(Some(_)) => Err(ApiError::AlreadySent),
                Ok(None) => Err(ApiError::MessageNotFound),
                Err(_) => Err(ApiError::StatusUnavailable),
            },
        }
    }

    async fn record(&self, message_id: &str, update: &Update) -> Result<Record, ApiError> {
        self.0
            .lifecycle
            .record(message_id, update)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "a queued send's status could not be recorded");
                ApiError::StatusUnavailable
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn respond_async_is_found_in_a_list_in_any_case() {
        for value in [
            "respond-async",
            "Respond-Async",
            "return=minimal, respond-async",
            "respond-async; wait=10",
            "wait=5,respond-async",
        ] {
            assert!(prefers_async(&HeaderValue::from_static(value)), "{value}");
        }
        for value in [
            "return=minimal",
            "respond-asynchronously",
            "wait=respond-async",
        ] {
            assert!(!prefers_async(&HeaderValue::from_static(value)), "{value}");
        }
    }

    #[test]
    fn rfc3339_times_with_offsets_are_read_as_utc() {
        let utc = at("2026-12-24T09:00:00Z");
        assert_eq!(parse_rfc3339("2026-12-24T09:00:00Z"), Some(utc));
        assert_eq!(parse_rfc3339("2026-12-24T12:00:00+03:00"), Some(utc));
        assert_eq!(parse_rfc3339("2026-12-24T04:30:00-04:30"), Some(utc));
        assert_eq!(
            parse_rfc3339("2026-12-24T09:00:00.250Z"),
            Some(utc + Duration::from_millis(250))
        );
        for text in [
            "tomorrow",
            "2026-12-24",
            "2026-12-24T09:00:00",
            "1767000000",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }

    fn headers(send_at: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(
            http::HeaderName::from_static(HEADER_SEND_AT),
            HeaderValue::from_static(send_at),
        )])
    }

    #[test]
    fn a_send_at_in_the_past_means_now() {
        let now = at("2026-12-07T12:00:00Z");
        let got = send_at(&headers("2026-12-01T00:00:00Z"), now).unwrap();
        assert_eq!(got, Some(now));
        assert_eq!(send_at(&HeaderMap::new(), now).unwrap(), None);
    }

    #[test]
    fn a_send_at_over_30_days_ahead_or_not_a_time_is_refused_naming_it() {
        let now = at("2026-12-07T12:00:00Z");
        assert!(send_at(&headers("2027-01-06T12:00:00Z"), now).is_ok());
        for value in ["2027-01-06T12:00:01Z", "next week"] {
            let Err(ApiError::Validation(errors)) = send_at(&headers(value), now) else {
                panic!("{value} was not refused");
            };
            assert_eq!(errors[0].field, "Send-At");
        }
    }
}
