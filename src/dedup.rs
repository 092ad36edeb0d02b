//! Idempotency on `messageId` (SPEC "Deduplication").
//!
//! The store maps a `messageId` to the payload's fingerprint and either the send in flight (a
//! watch channel its waiters subscribe to) or the remembered 2xx answer. [`DedupStore::begin`]
//! looks up and inserts under one shard lock, so of N concurrent identical requests exactly
//! one becomes the leader; [`DedupStore::complete`] replaces or removes the entry only if it
//! is still the leader's (its sequence number), so nothing races with a newer send.
//!
//! Entries live `RELAY_DEDUP_TTL_SECS` from their last write. When the store holds
//! `RELAY_DEDUP_CAPACITY` messageIds, a new one evicts the oldest write: first in, first out,
//! so every new send is remembered, and what is forgotten first is what is closest to expiry
//! anyway. Both orders are one queue per shard, because every entry has the same TTL.
//!
//! The store is built for bytes per entry, not kilobytes: one allocation holds the
//! `messageId` and the answer's body, the tables grow with what they hold (so memory is linear
//! in entries, and an idle relay with a large window stays small), and a lock is held for a
//! lookup or an insert, never across an `.await`.
//!
//! The store is per process: several replicas need a shared store behind the same
//! [`Deduplicate`] trait.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashTable;
use http::{HeaderValue, StatusCode};
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

/// A remembered 2xx answer, as replayed.
#[derive(Clone, Debug)]
pub struct StoredReply {
    pub status: StatusCode,
    content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// The content type nearly every gateway answer has; not stored per entry.
const JSON: &str = "application/json";

impl StoredReply {
    /// The content type to replay.
    pub fn content_type(&self) -> HeaderValue {
        self.content_type
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static(JSON))
    }
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
    seq: u64,
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
    fn complete(&self, ticket: Ticket, outcome: &Outcome) -> impl Future<Output = ()> + Send;
    /// How many `messageId`s are held (in flight or remembered), after expiring old ones.
    fn entries(&self) -> impl Future<Output = u64> + Send;
}

/// One remembered `messageId`: about 80 bytes in the table plus one allocation for the key
/// and the body.
#[derive(Debug)]
struct Entry {
    /// The `messageId`'s bytes, then (once answered) the answer's body.
    data: Box<[u8]>,
    /// Only when the answer's content type is not plain `application/json`.
    content_type: Option<Box<[u8]>>,
    fingerprint: Fingerprint,
    /// Which write this is; a ticket and a queue slot name their entry by it.
    seq: u64,
    /// When it was last written, in milliseconds since the store was made.
    written_ms: u64,
    /// `Some` while the send is in flight.
    in_flight: Option<watch::Receiver<Option<Outcome>>>,
    key_len: u32,
    status: u16,
}

impl Entry {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn held_by(&self, fingerprint: Fingerprint) -> Begin {
        if self.fingerprint != fingerprint {
            return Begin::Conflict;
        }
        match &self.in_flight {
            Some(receiver) => Begin::Wait(receiver.clone()),
            None => Begin::Replay(StoredReply {
                status: StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK),
                content_type: self
                    .content_type
                    .as_deref()
                    .and_then(|v| HeaderValue::from_bytes(v).ok()),
                body: Bytes::copy_from_slice(&self.data[self.key_len as usize..]),
            }),
        }
    }
}

/// A write, in the order writes happened: the queue that drives expiry and eviction.
#[derive(Clone, Copy, Debug)]
struct Written {
    hash: u64,
    seq: u64,
    at_ms: u64,
}

#[derive(Debug)]
struct Shard {
    table: HashTable<Entry>,
    /// This shard's share of `RELAY_DEDUP_CAPACITY`.
    capacity: usize,
    /// Oldest write first. A slot whose entry was rewritten or removed since is stale and
    /// skipped; the queue is compacted when it holds three times as many slots as entries.
    order: VecDeque<Written>,
}

/// Expired entries dropped per operation at most, so one request never pays for a whole
/// window that expired at once (lookups check the expiry themselves).
const EXPIRE_BATCH: usize = 64;

/// The in-process store.
#[derive(Clone, Debug)]
pub struct DedupStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    ttl_ms: u64,
    epoch: Instant,
    next_seq: std::sync::atomic::AtomicU64,
}

fn hash_of(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

impl DedupStore {
    /// At most `capacity` messageIds, each for `ttl` from its last write. Large windows are
    /// split into up to 16 shards (at least 1,024 entries each), each holding its share of
    /// the capacity, so the bound is never exceeded. A table grows by doubling; with 16
    /// shards a resize moves at most a sixteenth of the window.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        let mut shard_count = 16;
        while shard_count > 1 && capacity / shard_count < 1024 {
            shard_count /= 2;
        }
        let shards = (0..shard_count)
            .map(|index| {
                // The shares add up to the capacity exactly.
                let share = capacity / shard_count + usize::from(index < capacity % shard_count);
                Mutex::new(Shard {
                    table: HashTable::new(),
                    capacity: share,
                    order: VecDeque::new(),
                })
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                epoch: Instant::now(),
                next_seq: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_expired(&self, written_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(written_ms) >= self.ttl_ms
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // The top bits pick the shard; hashbrown uses the low bits and the top 7 for itself,
        // but with at most 16 shards the overlap only thins out one tag bit's entropy.
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        // A panic while holding the lock cannot leave an entry half-written (every mutation
        // is a single insert, replace or remove), so a poisoned lock is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_seq(&self) -> u64 {
        self.next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Shard {
    /// Drops the oldest writes while they have expired (at most `limit` of them) or while
    /// the shard holds more than its capacity.
    fn trim(&mut self, inner: &Inner, now_ms: u64, mut limit: usize) {
        while let Some(&front) = self.order.front() {
            let over = self.table.len() > self.capacity;
            if !over && (limit == 0 || !inner.is_expired(front.at_ms, now_ms)) {
                break;
            }
            self.order.pop_front();
            if let Ok(entry) = self.table.find_entry(front.hash, |e| e.seq == front.seq) {
                entry.remove();
                limit = limit.saturating_sub(1);
            }
        }
    }

    fn record(&mut self, written: Written) {
        self.order.push_back(written);
        // Every completed send leaves one stale slot (its in-flight write) until the front
        // passes it, so a full window runs at about two slots per entry. Compacting at three
        // keeps the queue bounded (~24 bytes a slot) without ever walking it in steady state.
        if self.order.len() > 3 * self.table.len() + 1024 {
            let table = &self.table;
            self.order
                .retain(|w| table.find(w.hash, |e| e.seq == w.seq).is_some());
        }
    }
}

impl Deduplicate for DedupStore {
    async fn begin(&self, message_id: &str, fingerprint: Fingerprint) -> Begin {
        let inner = &*self.inner;
        let key = message_id.as_bytes();
        let hash = hash_of(key);
        let now_ms = inner.now_ms();
        let mut shard = inner.shard(hash);
        shard.trim(inner, now_ms, EXPIRE_BATCH);
        if let Ok(entry) = shard.table.find_entry(hash, |e| e.key() == key) {
            if !inner.is_expired(entry.get().written_ms, now_ms) {
                return entry.get().held_by(fingerprint);
            }
            entry.remove();
        }
        let (sender, receiver) = watch::channel(None);
        let seq = inner.next_seq();
        shard.table.insert_unique(
            hash,
            Entry {
                data: Box::from(key),
                content_type: None,
                fingerprint,
                seq,
                written_ms: now_ms,
                in_flight: Some(receiver),
                key_len: u32::try_from(key.len()).unwrap_or(u32::MAX),
                status: 0,
            },
            |e| hash_of(e.key()),
        );
        shard.record(Written {
            hash,
            seq,
            at_ms: now_ms,
        });
        shard.trim(inner, now_ms, 0);
        drop(shard);
        Begin::Lead(Ticket {
            message_id: Box::from(message_id),
            seq,
            sender,
        })
    }

    async fn complete(&self, ticket: Ticket, outcome: &Outcome) {
        let Ticket {
            message_id,
            seq,
            sender,
        } = ticket;
        let remembered = match outcome {
            Ok(reply) if reply.status.is_success() && reply.is_json => Some(reply),
            _ => None,
        };
        let inner = &*self.inner;
        let key = message_id.as_bytes();
        let hash = hash_of(key);
        {
            let now_ms = inner.now_ms();
            let mut shard = inner.shard(hash);
            // Only the leader's own entry: it may have been evicted, or expired and been
            // claimed by a newer send, while this one was in flight.
            if let Ok(mut entry) = shard.table.find_entry(hash, |e| e.seq == seq) {
                match remembered {
                    Some(reply) => {
                        let new_seq = inner.next_seq();
                        let e = entry.get_mut();
                        let mut data = Vec::with_capacity(key.len() + reply.body.len());
                        data.extend_from_slice(key);
                        data.extend_from_slice(&reply.body);
                        e.data = data.into_boxed_slice();
                        e.content_type = reply
                            .content_type
                            .as_ref()
                            .filter(|v| v.as_bytes() != JSON.as_bytes())
                            .map(|v| Box::from(v.as_bytes()));
                        e.status = reply.status.as_u16();
                        e.in_flight = None;
                        e.seq = new_seq;
                        e.written_ms = now_ms;
                        shard.record(Written {
                            hash,
                            seq: new_seq,
                            at_ms: now_ms,
                        });
                    }
                    None => {
                        entry.remove();
                    }
                }
            }
        }
        // Waiters are woken after the store is updated, so a caller that gets its answer and
        // retries at once sees the remembered answer, not an empty slot. Every waiter took its
        // receiver under the shard lock, and the store's own receiver went with the entry's
        // update above, so no receiver means no waiter: nothing to clone or wake.
        if sender.receiver_count() > 0 {
            sender.send_replace(Some(outcome.clone()));
        }
    }

    async fn entries(&self) -> u64 {
        let inner = &*self.inner;
        let now_ms = inner.now_ms();
        let mut total = 0;
        for index in 0..inner.shards.len() {
            let mut shard = inner.shards[index]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shard.trim(inner, now_ms, usize::MAX);
            total += shard.table.len() as u64;
        }
        total
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
        store.complete(ticket, &reply(200)).await;
        let outcome = wait(receiver).await.unwrap().unwrap();
        assert_eq!(outcome.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn success_is_remembered_and_replayed() {
        let store = store();
        let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
            panic!("expected lead")
        };
        store.complete(ticket, &reply(200)).await;
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
        store.complete(ticket, &reply(200)).await;
        assert!(matches!(store.begin("a", fp(2)).await, Begin::Conflict));
    }

    #[tokio::test]
    async fn failures_are_forgotten() {
        let store = store();
        for outcome in [reply(503), reply(400), Err(UpstreamError::AttemptTimeout)] {
            let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
                panic!("expected lead")
            };
            store.complete(ticket, &outcome).await;
        }
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Lead(_)));
    }

    #[tokio::test]
    async fn remembered_answers_expire_after_the_ttl() {
        let store = DedupStore::new(100, Duration::from_millis(50));
        let Begin::Lead(ticket) = store.begin("a", fp(1)).await else {
            panic!("expected lead")
        };
        store.complete(ticket, &reply(200)).await;
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Replay(_)));
        // moka reads the wall clock; the TTL is 50 ms, so this waits for the expiry itself.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Lead(_)));
    }

    async fn lead(store: &DedupStore, id: &str) -> Ticket {
        match store.begin(id, fp(1)).await {
            Begin::Lead(ticket) => ticket,
            other => panic!("expected lead for {id}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn replay_carries_the_status_body_and_content_type() {
        let store = store();
        let ticket = lead(&store, "a").await;
        store
            .complete(
                ticket,
                &Ok(GatewayReply {
                    status: StatusCode::ACCEPTED,
                    content_type: Some(HeaderValue::from_static("application/json;charset=UTF-8")),
                    body: Bytes::from_static(b"{\"x\":1}"),
                    is_json: true,
                    retry_after: None,
                }),
            )
            .await;
        let Begin::Replay(stored) = store.begin("a", fp(1)).await else {
            panic!("expected replay")
        };
        assert_eq!(stored.status, StatusCode::ACCEPTED);
        assert_eq!(stored.body, Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(stored.content_type(), "application/json;charset=UTF-8");
    }

    #[tokio::test]
    async fn when_full_the_oldest_write_is_forgotten_first() {
        let store = DedupStore::new(3, Duration::from_secs(60));
        for id in ["a", "b", "c"] {
            let ticket = lead(&store, id).await;
            store.complete(ticket, &reply(200)).await;
        }
        // "d" pushes out the oldest write, "a".
        let ticket = lead(&store, "d").await;
        store.complete(ticket, &reply(200)).await;
        assert_eq!(store.entries().await, 3);
        for id in ["b", "c", "d"] {
            assert!(
                matches!(store.begin(id, fp(1)).await, Begin::Replay(_)),
                "{id}"
            );
        }
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Lead(_)));
    }

    #[tokio::test]
    async fn a_completed_send_counts_as_written_at_completion() {
        let store = DedupStore::new(2, Duration::from_secs(60));
        let slow = lead(&store, "slow").await;
        let fast = lead(&store, "fast").await;
        store.complete(fast, &reply(200)).await;
        store.complete(slow, &reply(200)).await;
        // "fast" was written before "slow" completed, so it is the one a newcomer evicts.
        let _new = lead(&store, "new").await;
        assert!(matches!(store.begin("slow", fp(1)).await, Begin::Replay(_)));
        assert!(matches!(store.begin("fast", fp(1)).await, Begin::Lead(_)));
    }

    #[tokio::test]
    async fn an_evicted_leader_does_not_overwrite_a_newer_send() {
        let store = DedupStore::new(1, Duration::from_secs(60));
        let old = lead(&store, "a").await;
        let _b = lead(&store, "b").await; // evicts "a" while it is in flight
        let newer = lead(&store, "a").await; // evicts "b"; "a" is claimed again
        store.complete(old, &reply(503)).await; // must not remove the newer claim
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Wait(_)));
        store.complete(newer, &reply(200)).await;
        assert!(matches!(store.begin("a", fp(1)).await, Begin::Replay(_)));
    }

    #[tokio::test]
    async fn the_capacity_is_never_exceeded_across_shards() {
        let capacity = 20_000;
        let store = DedupStore::new(capacity, Duration::from_secs(60));
        for n in 0..(3 * capacity) {
            let ticket = lead(&store, &format!("m-{n}")).await;
            store.complete(ticket, &reply(200)).await;
        }
        let held = store.entries().await;
        assert!(held <= capacity, "{held} > {capacity}");
        // Each shard holds its share: the window is full to within one entry per shard.
        assert!(held > capacity - 16, "{held}");
        // The newest sends are all still remembered.
        for n in (3 * capacity - 100)..(3 * capacity) {
            assert!(matches!(
                store.begin(&format!("m-{n}"), fp(1)).await,
                Begin::Replay(_)
            ));
        }
    }

    #[tokio::test]
    async fn the_write_queue_stays_bounded_when_sends_keep_failing() {
        let store = DedupStore::new(100, Duration::from_secs(60));
        for _ in 0..10_000 {
            let ticket = lead(&store, "a").await;
            store.complete(ticket, &reply(503)).await;
        }
        let shard = store.inner.shards[0].lock().unwrap();
        assert_eq!(shard.table.len(), 0);
        assert!(shard.order.len() <= 1024 + 1, "{}", shard.order.len());
    }
}
