//! Idempotency on `messageId` (SPEC "Deduplication").
//!
//! One moka cache maps a `messageId` to a [`Slot`]: the payload's fingerprint and either the
//! send in flight (a watch channel its waiters subscribe to) or the remembered 2xx answer.
//! [`DedupStore::begin`] inserts atomically with moka's `entry().or_insert`, so of N
//! concurrent identical requests exactly one becomes the leader; [`DedupStore::complete`]
//! replaces or removes the slot only if it is still the leader's (moka's per-key
//! `and_compute_with`), so nothing races with a newer send. Entries live
//! `RELAY_DEDUP_TTL_SECS` from their last write.
//!
//! The store is per process: several replicas need a shared store behind the same
//! [`Deduplicate`] trait.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use moka::future::Cache;
use moka::ops::compute::Op;
use tokio::sync::watch;

use crate::upstream::{GatewayReply, UpstreamError};

/// A 128-bit hash of the normalised payload (xxh3: fast, and DoS resistance is not needed
/// because a caller can only collide with its own `messageId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(u128);

impl Fingerprint {
    /// Fingerprint of the exact bytes that will be forwarded.
    pub fn of(body: &[u8]) -> Self {
        Self(xxhash_rust::xxh3::xxh3_128(body))
    }
}

/// What a send ended with, shared by the leader and every coalesced waiter.
pub type Outcome = Result<GatewayReply, UpstreamError>;

/// A 2xx answer as remembered: its own allocation, never a view into a connection buffer,
/// and no more than it needs (the content type is kept only when it is not plain JSON).
#[derive(Clone, Debug)]
pub struct StoredReply {
    pub status: StatusCode,
    content_type: Option<Box<[u8]>>,
    pub body: Bytes,
}

/// The content type nearly every gateway answer has; not stored per entry.
const JSON: &str = "application/json";

impl StoredReply {
    /// Copies a gateway answer so the cache holds bytes, not the read buffer behind them.
    pub fn copy_of(reply: &GatewayReply) -> Self {
        let content_type = reply
            .content_type
            .as_ref()
            .filter(|v| v.as_bytes() != JSON.as_bytes())
            .map(|v| Box::from(v.as_bytes()));
        Self {
            status: reply.status,
            content_type,
            body: Bytes::copy_from_slice(&reply.body),
        }
    }

    /// The content type to replay.
    pub fn content_type(&self) -> HeaderValue {
        self.content_type
            .as_deref()
            .and_then(|v| HeaderValue::from_bytes(v).ok())
            .unwrap_or_else(|| HeaderValue::from_static(JSON))
    }
}

#[derive(Debug)]
enum SlotState {
    InFlight(watch::Receiver<Option<Outcome>>),
    Done(StoredReply),
}

/// One remembered `messageId`.
#[derive(Debug)]
pub struct Slot {
    fingerprint: Fingerprint,
    state: SlotState,
}

/// The answer of [`DedupStore::begin`].
#[derive(Debug)]
pub enum Begin {
    /// New send: the caller must forward it, then call `complete` with the ticket.
    Lead(Ticket),
    /// Same payload in flight: wait for its outcome.
    Wait(watch::Receiver<Option<Outcome>>),
    /// Same payload already answered 2xx.
    Replay(StoredReply),
    /// Same `messageId`, different payload.
    Conflict,
}

/// Held by the leader of a send; `complete` consumes it.
#[derive(Debug)]
pub struct Ticket {
    message_id: Box<str>,
    slot: Arc<Slot>,
    sender: watch::Sender<Option<Outcome>>,
}

/// The operations a dedup store offers. A store shared by replicas (Redis, say) implements
/// the same three steps.
pub trait Deduplicate {
    /// Claims `message_id` for a new send or reports what already holds it.
    fn begin(
        &self,
        message_id: &str,
        fingerprint: Fingerprint,
    ) -> impl Future<Output = Begin> + Send;
    /// Records the outcome (remember a 2xx, forget anything else) and wakes the waiters.
    fn complete(&self, ticket: Ticket, outcome: Outcome) -> impl Future<Output = ()> + Send;
    /// How many `messageId`s are held (in flight or remembered), after pending evictions.
    fn entries(&self) -> impl Future<Output = u64> + Send;
}

/// The in-process store.
#[derive(Clone)]
pub struct DedupStore {
    cache: Cache<Box<str>, Arc<Slot>>,
}

impl DedupStore {
    /// One time-to-live for every entry, counted from its last write: a remembered answer
    /// lives `ttl` from completion, and a send in flight stays joinable for `ttl` (far longer
    /// than any deadline with the defaults). The table is sized up front so it never rehashes
    /// while it fills.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .initial_capacity(usize::try_from(capacity.min(1 << 20)).unwrap_or(1 << 20))
            .time_to_live(ttl)
            .build();
        Self { cache }
    }
}

impl Deduplicate for DedupStore {
    async fn begin(&self, message_id: &str, fingerprint: Fingerprint) -> Begin {
        // Replays and duplicates are answered from a plain lookup, which allocates nothing;
        // only a miss pays for the slot, its channel and the key.
        if let Some(existing) = self.cache.get(message_id).await {
            return held_by(&existing, fingerprint);
        }
        let (sender, receiver) = watch::channel(None);
        let slot = Arc::new(Slot {
            fingerprint,
            state: SlotState::InFlight(receiver),
        });
        let entry = self
            .cache
            .entry(Box::from(message_id))
            .or_insert(Arc::clone(&slot))
            .await;
        if entry.is_fresh() {
            return Begin::Lead(Ticket {
                message_id: Box::from(message_id),
                slot,
                sender,
            });
        }
        held_by(&entry.into_value(), fingerprint)
    }

    async fn complete(&self, ticket: Ticket, outcome: Outcome) {
        let Ticket {
            message_id,
            slot,
            sender,
        } = ticket;
        let remembered = match &outcome {
            Ok(reply) if reply.status.is_success() && reply.is_json => Some(Arc::new(Slot {
                fingerprint: slot.fingerprint,
                state: SlotState::Done(StoredReply::copy_of(reply)),
            })),
            _ => None,
        };
        self.cache
            .entry(message_id)
            .and_compute_with(|current| {
                let ours = current.is_some_and(|e| Arc::ptr_eq(e.value(), &slot));
                let op = match (ours, remembered) {
                    (false, _) => Op::Nop,
                    (true, Some(done)) => Op::Put(done),
                    (true, None) => Op::Remove,
                };
                std::future::ready(op)
            })
            .await;
        // Waiters are woken after the store is updated, so a caller that gets its answer and
        // retries at once sees the remembered answer, not an empty slot.
        sender.send_replace(Some(outcome));
    }

    async fn entries(&self) -> u64 {
        // moka counts lazily; settle its pending inserts and expiries first (scrape only).
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

/// What to do about a `messageId` an existing slot holds.
fn held_by(existing: &Slot, fingerprint: Fingerprint) -> Begin {
    if existing.fingerprint != fingerprint {
        return Begin::Conflict;
    }
    match &existing.state {
        SlotState::InFlight(receiver) => Begin::Wait(receiver.clone()),
        SlotState::Done(reply) => Begin::Replay(reply.clone()),
    }
}

/// Waits for the leader's outcome. `None` if the leader vanished without one (it cannot,
/// short of a bug: the send runs to completion in its own task).
pub async fn wait(mut receiver: watch::Receiver<Option<Outcome>>) -> Option<Outcome> {
    let outcome = receiver.wait_for(Option::is_some).await.ok()?;
    outcome.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> DedupStore {
        DedupStore::new(100, Duration::from_secs(60))
    }

    fn reply(status: u16) -> Outcome {
        Ok(GatewayReply {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from_static(br#"{"status":"success"}"#),
            is_json: true,
            retry_after: None,
        })
    }

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::of(&[n])
    }

    #[tokio::test]
    async fn first_request_leads() {
        assert!(matches!(store().begin("a", fp(1)).await, Begin::Lead(_)));
    }

    #[tokio::test]
    async fn duplicate_in_flight_waits_for_the_leaders_outcome() {
        let store = store();
        let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
            panic!("expected lead")
        };
        let Begin::Wait(receiver) = store.begin("a", fp(1)).await else {
            panic!("expected wait")
        };
        store.complete(ticket, reply(200)).await;
        let outcome = wait(receiver).await.unwrap().unwrap();
        assert_eq!(outcome.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn success_is_remembered_and_replayed() {
        let store = store();
        let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
            panic!("expected lead")
        };
        store.complete(ticket, reply(200)).await;
        let Begin::Replay(stored) = store.begin("a", fp(1)).await else {
            panic!("expected replay")
        };
        assert_eq!(stored.body, Bytes::from_static(br#"{"status":"success"}"#));
    }

    #[tokio::test]
    async fn different_payload_conflicts_in_flight_and_after() {
        let store = store();
        let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
            panic!("expected lead")
        };
        assert!(matches!(store.begin("a", fp(2)).await, Begin::Conflict));
        store.complete(ticket, reply(200)).await;
        assert!(matches!(store.begin("a", fp(2)).await, Begin::Conflict));
    }

    #[tokio::test]
    async fn failures_are_forgotten() {
        let store = store();
        for outcome in [reply(503), reply(400), Err(UpstreamError::AttemptTimeout)] {
            let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
                panic!("expected lead")
            };
            store.complete(ticket, outcome).await;
        }
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Lead(_)));
    }

    #[tokio::test]
    async fn remembered_answers_expire_after_the_ttl() {
        let store = DedupStore::new(100, Duration::from_millis(50));
        let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
            panic!("expected lead")
        };
        store.complete(ticket, reply(200)).await;
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Replay(_)));
        // moka reads the wall clock; the TTL is 50 ms, so this waits for the expiry itself.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Lead(_)));
    }

    #[tokio::test]
    async fn stored_reply_does_not_share_the_source_buffer() {
        let big = Bytes::from(vec![b'x'; 8192]);
        let source = GatewayReply {
            status: StatusCode::OK,
            content_type: None,
            body: big.slice(0..10),
            is_json: true,
            retry_after: None,
        };
        let stored = StoredReply::copy_of(&source);
        assert_ne!(stored.body.as_ptr(), source.body.as_ptr());
    }
}
