//! Queued sends in Redis (SPEC "Queued and scheduled sends": held in Redis, taken by whichever
//! replica is free, a replica's `kill -9` loses none).
//!
//! Two kinds of key:
//! - `<prefix>:queue:<messageId>`, one hash per send: `kind`, `from`, `to`, `body`,
//!   `fingerprint` (16 bytes), `state` (`queued`, `sending`, `cancelled`), `sendAt` and
//!   `created` (Unix ms), `failures`. A send is one key, so on a Cluster it is in one slot.
//! - `{<prefix>:queue}:due`, the due index: a sorted set of `messageId`s scored by when each is
//!   due (Unix ms). One key: [`TAKE`] reads and re-scores it in one script.
//!
//! The lease is the re-score: [`TAKE`] moves each due member to `now + lease`, so a send taken
//! by a replica that then dies comes due again by itself, and any replica takes it. A replica
//! that is still working on a send moves it on again before the lease ends ([`Queue::keep`]).
//! Whether a send may still go or be cancelled is decided on its hash, by one script each
//! ([`START`], [`CANCEL`]), so a cancel and a take never both win. Nothing here blocks
//! (`BZPOPMIN`): the store multiplexes one connection, which a blocking command would hold.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::{Cmd, Script, Value};

use crate::fingerprint::Fingerprint;
use crate::metrics::StoreOp;
use crate::store::{SharedStore, StoreError};

/// Creates the hash at KEYS[1] unless it exists. ARGV: kind, from, to, body, fingerprint,
/// sendAt, created, the hash's TTL (ms). Returns `{state, fingerprint, sendAt}`: `new` for a
/// send just queued, else what the hash holds.
const ENQUEUE: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  local held = redis.call('HMGET', KEYS[1], 'fingerprint', 'sendAt')
  return {state, held[1], held[2]}
end
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'from', ARGV[2], 'to', ARGV[3], 'body', ARGV[4],
  'fingerprint', ARGV[5], 'state', 'queued', 'sendAt', ARGV[6], 'created', ARGV[7],
  'failures', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return {'new', ARGV[5], ARGV[6]}
";

/// Takes up to ARGV[3] members of the due index KEYS[1] with a score up to ARGV[1] (now, ms),
/// re-scoring each to now + ARGV[2] (the lease). Returns the members.
const TAKE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local leased = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', leased, id)
end
return due
";

/// A taken send may go: `queued` or `sending` (a send whose last taker let it come due again)
/// becomes `sending`, and the hash comes back. Anything else (cancelled, gone) comes back as
/// its state, or `''`.
const START: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' or state == 'sending' then
  redis.call('HSET', KEYS[1], 'state', 'sending')
  return redis.call('HGETALL', KEYS[1])
end
return state or ''
";

/// Cancels the send at KEYS[1] if it is still `queued` (kept ARGV[1] ms, so a repeat finds it).
/// Returns the state it found (`queued` meaning: cancelled now), or `''`.
const CANCEL: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return state or ''
";

/// Counts the due index KEYS[1] and finds its oldest member due by ARGV[1] (now, ms).
/// Returns `{count, the oldest due score or ''}`.
const DEPTH: &str = r"
local count = redis.call('ZCARD', KEYS[1])
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, 1)
return {count, oldest[2] or ''}
";

/// What [`RedisQueue::enqueue`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Queued now.
    New,
    /// Already there: its state, fingerprint and due time.
    Held {
        state: String,
        fingerprint: Option<Fingerprint>,
    },
}

/// A queued send as its hash holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) kind: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) body: Bytes,
    pub(crate) fingerprint: Fingerprint,
    /// When it was due first (Unix ms): its `RELAY_QUEUE_MAX_AGE_SECS` counts from here.
    pub(crate) send_at: u64,
    pub(crate) failures: u32,
}

/// What a queued send is to be after a new send is enqueued.
pub(crate) struct NewSend<'a> {
    pub(crate) message_id: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) fingerprint: Fingerprint,
    /// Unix ms.
    pub(crate) send_at: u64,
    /// Unix ms.
    pub(crate) created: u64,
    /// How long the hash may live.
    pub(crate) ttl: Duration,
}

/// The queue's keys and scripts.
#[derive(Clone)]
pub(crate) struct RedisQueue {
    store: SharedStore,
    due: Arc<[u8]>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    enqueue: Script,
    take: Script,
    start: Script,
    cancel: Script,
    depth: Script,
}

impl RedisQueue {
    pub(crate) fn new(store: SharedStore) -> Self {
        let due = format!("{{{}:queue}}:due", store.prefix()).into_bytes();
        Self {
            store,
            due: due.into(),
            scripts: Arc::new(Scripts {
                enqueue: Script::new(ENQUEUE),
                take: Script::new(TAKE),
                start: Script::new(START),
                cancel: Script::new(CANCEL),
                depth: Script::new(DEPTH),
            }),
        }
    }

    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    /// `<prefix>:queue:<messageId>`.
    fn key(&self, message_id: &str) -> Vec<u8> {
        format!("{}:queue:{message_id}", self.store.prefix()).into_bytes()
    }

    /// Creates the send's hash unless it exists, then puts a queued one in the due index
    /// (`NX`: a repeat keeps its due time, and puts back an entry a failed call left out).
    pub(crate) async fn enqueue(&self, send: &NewSend<'_>) -> Result<Enqueued, StoreError> {
        let key = self.key(send.message_id);
        let fingerprint = send.fingerprint.to_bytes();
        let send_at = send.send_at.to_string();
        let created = send.created.to_string();
        let ttl = millis(send.ttl).to_string();
        let args: [&[u8]; 8] = [
            send.kind.as_bytes(),
            send.from.as_bytes(),
            send.to.as_bytes(),
            send.body,
            &fingerprint,
            send_at.as_bytes(),
            created.as_bytes(),
            ttl.as_bytes(),
        ];
        let reply: Vec<Value> = self
            .store
            .script(StoreOp::Queue, &self.scripts.enqueue, &[&key], &args)
            .await?;
        let state = text(reply.first()).unwrap_or_default();
        let due_at = text(reply.get(2)).unwrap_or_else(|| send_at.clone());
        if state == "new" || state == "queued" {
            let mut add = Cmd::new();
            add.arg("ZADD")
                .arg(&*self.due)
                .arg("NX")
                .arg(due_at)
                .arg(send.message_id);
            self.store.command::<Value>(StoreOp::Queue, &add).await?;
        }
        if state == "new" {
            return Ok(Enqueued::New);
        }
        let fingerprint = bytes(reply.get(1))
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(Fingerprint::from_bytes);
        Ok(Enqueued::Held { state, fingerprint })
    }

    /// Up to `limit` sends due by `now` (Unix ms), each leased for `lease`.
    pub(crate) async fn take(
        &self,
        now: u64,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let now = now.to_string();
        let lease = millis(lease).to_string();
        let limit = limit.to_string();
        let args: [&[u8]; 3] = [now.as_bytes(), lease.as_bytes(), limit.as_bytes()];
        self.store
            .script(StoreOp::Queue, &self.scripts.take, &[&self.due], &args)
            .await
    }

    /// Marks a taken send `sending` and reads it; `None` when it may not go (cancelled, gone).
    pub(crate) async fn start(&self, message_id: &str) -> Result<Option<Held>, StoreError> {
        let key = self.key(message_id);
        let reply: Value = self
            .store
            .script(StoreOp::Queue, &self.scripts.start, &[&key], &[])
            .await?;
        let Value::Array(fields) = reply else {
            return Ok(None);
        };
        let mut held = Held {
            kind: String::new(),
            from: String::new(),
            to: String::new(),
            body: Bytes::new(),
            fingerprint: Fingerprint::from_bytes([0; 16]),
            send_at: 0,
            failures: 0,
        };
        for pair in fields.chunks(2) {
            let (Some(name), Some(value)) = (text(pair.first()), bytes(pair.get(1))) else {
                continue;
            };
            let as_text = || String::from_utf8_lossy(&value).into_owned();
            match name.as_str() {
                "kind" => held.kind = as_text(),
                "from" => held.from = as_text(),
                "to" => held.to = as_text(),
                "body" => held.body = Bytes::from(value),
                "fingerprint" => {
                    if let Ok(raw) = <[u8; 16]>::try_from(value.as_slice()) {
                        held.fingerprint = Fingerprint::from_bytes(raw);
                    }
                }
                "sendAt" => held.send_at = as_text().parse().unwrap_or(0),
                "failures" => held.failures = as_text().parse().unwrap_or(0),
                _ => {}
            }
        }
        Ok(Some(held))
    }

    /// Cancels a send still queued; returns the state it found (`queued`: cancelled now).
    pub(crate) async fn cancel(
        &self,
        message_id: &str,
        keep: Duration,
    ) -> Result<String, StoreError> {
        let key = self.key(message_id);
        let keep = millis(keep).to_string();
        let state: String = self
            .store
            .script(
                StoreOp::Queue,
                &self.scripts.cancel,
                &[&key],
                &[keep.as_bytes()],
            )
            .await?;
        if state == "queued" {
            self.forget_due(message_id).await?;
        }
        Ok(state)
    }

    /// Moves a taken send's due time to `at` (Unix ms): its lease, kept, or its next try.
    pub(crate) async fn due_at(&self, message_id: &str, at: u64) -> Result<(), StoreError> {
        let mut add = Cmd::new();
        add.arg("ZADD")
            .arg(&*self.due)
            .arg("XX")
            .arg(at)
            .arg(message_id);
        self.store.command::<Value>(StoreOp::Queue, &add).await?;
        Ok(())
    }

    /// Counts a failed try; returns how many there have been.
    pub(crate) async fn failed(&self, message_id: &str) -> Result<u32, StoreError> {
        let mut incr = Cmd::new();
        incr.arg("HINCRBY")
            .arg(self.key(message_id))
            .arg("failures")
            .arg(1);
        self.store.command(StoreOp::Queue, &incr).await
    }

    /// A send that ended (SENT or FAILED): its hash and its due entry go.
    pub(crate) async fn finish(&self, message_id: &str) -> Result<(), StoreError> {
        let mut del = Cmd::new();
        del.arg("DEL").arg(self.key(message_id));
        let (deleted, removed) = tokio::join!(
            self.store.command::<Value>(StoreOp::Queue, &del),
            self.forget_due(message_id)
        );
        deleted.map(drop).and(removed)
    }

    /// Removes a send from the due index.
    pub(crate) async fn forget_due(&self, message_id: &str) -> Result<(), StoreError> {
        let mut rem = Cmd::new();
        rem.arg("ZREM").arg(&*self.due).arg(message_id);
        self.store.command::<Value>(StoreOp::Queue, &rem).await?;
        Ok(())
    }

    /// Sends in the due index, and the due time (Unix ms) of the oldest one due by `now`.
    pub(crate) async fn depth(&self, now: u64) -> Result<(u64, Option<u64>), StoreError> {
        let now = now.to_string();
        let reply: Vec<Value> = self
            .store
            .script(
                StoreOp::Queue,
                &self.scripts.depth,
                &[&self.due],
                &[now.as_bytes()],
            )
            .await?;
        let count = match reply.first() {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        let oldest = text(reply.get(1))
            .and_then(|score| score.parse::<f64>().ok())
            .map(|score| score as u64);
        Ok((count, oldest))
    }
}

/// Whole milliseconds, at least 1 (a lease or a wait of 0 would be no lease at all).
fn millis(duration: Duration) -> u64 {
    crate::clock::millis(duration).max(1)
}

fn bytes(value: Option<&Value>) -> Option<Vec<u8>> {
    match value? {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        Value::Double(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    bytes(value).map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_server::TestRedis;

    const LEASE: Duration = Duration::from_secs(10);

    fn send(message_id: &str, send_at: u64, fingerprint: u8) -> NewSend<'_> {
        NewSend {
            message_id,
            kind: "text",
            from: "254110090747",
            to: "254712345678",
            body: b"{}",
            fingerprint: Fingerprint::from_bytes([fingerprint; 16]),
            send_at,
            created: send_at,
            ttl: Duration::from_secs(60),
        }
    }

    async fn take_start_and_cancel_hold_their_rules(queue: RedisQueue) {
        assert_eq!(
            queue.enqueue(&send("a", 1_000, 1)).await.unwrap(),
            Enqueued::New
        );
        assert_eq!(
            queue.enqueue(&send("b", 5_000, 1)).await.unwrap(),
            Enqueued::New
        );
        // A repeat keeps its due time and says what it holds.
        let again = queue.enqueue(&send("a", 9_000, 2)).await.unwrap();
        let held = Some(Fingerprint::from_bytes([1; 16]));
        assert_eq!(
            again,
            Enqueued::Held {
                state: "queued".into(),
                fingerprint: held
            }
        );
        // Only what is due is taken; taking leases it: not due again until the lease ends.
        assert_eq!(queue.take(2_000, LEASE, 10).await.unwrap(), ["a"]);
        assert!(queue.take(2_000, LEASE, 10).await.unwrap().is_empty());
        assert_eq!(queue.take(12_000, LEASE, 10).await.unwrap(), ["b", "a"]);
        // Started, it can no longer be cancelled; started again (a lapsed lease), it goes.
        let started = queue.start("a").await.unwrap().unwrap();
        assert_eq!(started.send_at, 1_000);
        assert_eq!(started.to, "254712345678");
        assert_eq!(queue.cancel("a", LEASE).await.unwrap(), "sending");
        assert!(queue.start("a").await.unwrap().is_some());
        // Cancelled while queued, it never starts, and leaves the due index.
        assert_eq!(queue.cancel("b", LEASE).await.unwrap(), "queued");
        assert_eq!(queue.cancel("b", LEASE).await.unwrap(), "cancelled");
        assert_eq!(queue.start("b").await.unwrap(), None);
        assert_eq!(queue.depth(1_000_000).await.unwrap(), (1, Some(22_000)));
        // A retry is due at its next try; the end removes it.
        assert_eq!(queue.failed("a").await.unwrap(), 1);
        queue.due_at("a", 30_000).await.unwrap();
        assert!(queue.take(29_999, LEASE, 10).await.unwrap().is_empty());
        queue.finish("a").await.unwrap();
        assert_eq!(queue.depth(1_000_000).await.unwrap(), (0, None));
        assert_eq!(queue.start("a").await.unwrap(), None);
        assert_eq!(queue.cancel("unknown", LEASE).await.unwrap(), "");
    }

    #[tokio::test]
    async fn the_scripts_take_start_and_cancel_as_documented() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        take_start_and_cancel_hold_their_rules(RedisQueue::new(redis.store())).await;
    }

    #[tokio::test]
    async fn the_scripts_work_on_a_cluster() {
        let Some(redis) = TestRedis::cluster() else {
            return;
        };
        take_start_and_cancel_hold_their_rules(RedisQueue::new(redis.store())).await;
    }
}
