//! Pending events in the shared store (SPEC "Events out": with Redis, a stream with a
//! consumer group shared by the replicas, so a replica's `kill -9` loses none).
//!
//! - Keys: `{<prefix>:events}:stream` (the events waiting, one entry each: `id`, `type`,
//!   `created` in Unix ms, `body`) and `{<prefix>:events}:seen:<event id>` (an event already
//!   recorded, remembered for `seen_ttl`). The braces are a Cluster hash tag (the prefix
//!   cannot hold braces: config refuses them), so [`EMIT`] touches one slot.
//! - Emit: one script ([`EMIT`]): `SET seen NX PX` and, only when that was new, `XADD`. Every
//!   replica and every retry of a callback names an event the same, so it waits once.
//! - Take: the consumer group [`GROUP`], one consumer per replica. New entries come with
//!   `XREADGROUP … >`, never with `BLOCK`: the store multiplexes every request over one
//!   connection, and a blocking read would stall them all; the delivery worker polls. Entries
//!   a replica took and then went silent on (killed, partitioned) come to another with
//!   `XAUTOCLAIM` once idle for `min_idle` (the SPEC's 30 s); a live replica still retrying
//!   keeps its entries with [`KEEP`], which resets their idle time.
//! - Done: `XACK` and `XDEL`, so the stream holds exactly the events not yet delivered (or
//!   dead), and `XLEN` counts them.
//!
//! The group is created on first use at `0`, the start of the stream, not at `$`, its end:
//! events are emitted (and the stream made by `XADD`) before any replica has read, and `$`
//! would skip every one of them. Starting at `0` delivers nothing twice, since delivered
//! events are deleted. A group that goes missing while the stream stays (deleted by hand, a
//! failover to a replica that lacked it) is made again the same way, over whatever the stream
//! still holds: events a replica was retrying are then taken again (at least once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamRangeReply, StreamReadReply};
use redis::{Cmd, Script, Value};

use super::{Event, EventType};
use crate::metrics::StoreOp;
use crate::store::{SharedStore, Step, StoreError, is_error, reply};

/// The consumer group every replica reads through.
pub(crate) const GROUP: &str = "relay";

/// Records an event once. KEYS: stream, seen. ARGV: seen TTL (ms), id, type, created (Unix
/// ms), body. Returns 1 when it was new, 0 when it had been recorded before.
pub(crate) const EMIT: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('XADD', KEYS[1], '*',
    'id', ARGV[2], 'type', ARGV[3], 'created', ARGV[4], 'body', ARGV[5])
  return 1
end
return 0
";

/// Resets the idle time of the entries (ARGV[3]…) that consumer ARGV[2] of group ARGV[1] still
/// holds, and only those: an entry another replica has taken over stays with it. Returns how
/// many were kept (0 when the group is gone).
pub(crate) const KEEP: &str = r"
local kept = 0
for i = 3, #ARGV do
  local held = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if held.err then
    return kept
  end
  if #held == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
return kept
";

/// An event taken for delivery, with its stream entry (to keep it, or be done with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The stream entry id.
    pub(crate) entry: String,
    pub(crate) event: Event,
}

/// The shared outbox.
#[derive(Clone)]
pub(crate) struct RedisOutbox {
    store: SharedStore,
    /// This replica's name in the group.
    consumer: Arc<str>,
    /// How long an event id is remembered, in ms, as `SET PX` takes it.
    seen_ttl_ms: Arc<str>,
    stream: Arc<[u8]>,
    emit: Arc<Script>,
    keep: Arc<Script>,
    /// Where the next `XAUTOCLAIM` looks (it scans the pending entries a few at a time).
    cursor: Arc<Mutex<String>>,
}

impl std::fmt::Debug for RedisOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOutbox")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl RedisOutbox {
    /// The outbox as `consumer` (this replica's unique name) sees it; an event id is
    /// remembered for `seen_ttl`.
    pub(crate) fn new(store: SharedStore, consumer: String, seen_ttl: Duration) -> Self {
        let seen_ttl_ms = u64::try_from(seen_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let stream = format!("{{{}:events}}:stream", store.prefix()).into_bytes();
        Self {
            store,
            consumer: consumer.into(),
            seen_ttl_ms: seen_ttl_ms.to_string().into(),
            stream: stream.into(),
            emit: Arc::new(Script::new(EMIT)),
            keep: Arc::new(Script::new(KEEP)),
            cursor: Arc::new(Mutex::new(START.to_owned())),
        }
    }

    /// Records `event` for delivery, once per id: whether it was new.
    pub(crate) async fn emit(&self, event: &Event) -> Result<bool, StoreError> {
        let (seen, args) = self.emit_args(event);
        let new: i64 = self
            .store
            .script(
                StoreOp::EventEmit,
                &self.emit,
                &[&self.stream, &seen],
                &args.each(),
            )
            .await?;
        Ok(new == 1)
    }

    /// The same emit, as a step of a batch (an accepted send's, with its status record).
    pub(crate) fn emit_step(&self, event: &Event) -> Step<'_> {
        let (seen, args) = self.emit_args(event);
        Step::script(&self.emit, &[&self.stream, &seen], &args.each())
    }

    fn emit_args<'a>(&'a self, event: &'a Event) -> (Vec<u8>, EmitArgs<'a>) {
        let mut seen = self.stream.to_vec();
        seen.truncate(seen.len() - b"stream".len());
        seen.extend_from_slice(b"seen:");
        seen.extend_from_slice(event.id.as_bytes());
        let args = EmitArgs {
            ttl_ms: &self.seen_ttl_ms,
            event,
            created: event.created_ms.to_string(),
        };
        (seen, args)
    }

    /// Up to `count` events no replica has taken yet, now this consumer's. Never waits.
    pub(crate) async fn take_new(&self, count: usize) -> Result<Vec<Taken>, StoreError> {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(&*self.consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(&*self.stream)
            .arg(">");
        let mut answer = self.one(StoreOp::EventTake, read.clone()).await?;
        if is_error(&answer, "NOGROUP") {
            self.create_group().await?;
            answer = self.one(StoreOp::EventTake, read).await?;
        }
        let entries = reply::<Option<StreamReadReply>>(answer)?
            .map(|read| read.keys.into_iter().flat_map(|key| key.ids).collect())
            .unwrap_or_default();
        Ok(self.events(entries).await)
    }

    /// Up to `count` events another consumer took and has not touched for `min_idle` (it
    /// died, or lost Redis), now this consumer's.
    pub(crate) async fn take_stale(
        &self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Taken>, StoreError> {
        let cursor = self
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut claim = redis::cmd("XAUTOCLAIM");
        claim
            .arg(&*self.stream)
            .arg(GROUP)
            .arg(&*self.consumer)
            .arg(crate::clock::millis(min_idle))
            .arg(&cursor)
            .arg("COUNT")
            .arg(count.max(1));
        let answer = self.one(StoreOp::EventTake, claim).await?;
        if is_error(&answer, "NOGROUP") {
            // Nobody has read yet: nothing can be stale.
            self.create_group().await?;
            return Ok(Vec::new());
        }
        // Entries deleted meanwhile (`deleted_ids`) are already out of the pending list.
        let claimed: StreamAutoClaimReply = reply(answer)?;
        *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) = claimed.next_stream_id;
        Ok(self.events(claimed.claimed).await)
    }

    /// A heartbeat for `entries` this consumer holds and is still retrying: resets their
    /// idle time, so no other replica takes them over. Entries already taken over are left to
    /// their new consumer.
    pub(crate) async fn keep(&self, entries: &[String]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&[u8]> = vec![GROUP.as_bytes(), self.consumer.as_bytes()];
        args.extend(entries.iter().map(String::as_bytes));
        let _kept: i64 = self
            .store
            .script(StoreOp::EventKeep, &self.keep, &[&self.stream], &args)
            .await?;
        Ok(())
    }

    /// Ends an entry (its event delivered, or dead): acknowledged and deleted.
    pub(crate) async fn done(&self, entry: &str) -> Result<(), StoreError> {
        self.done_all(&[entry.to_owned()]).await
    }

    /// Ends entries (delivered, or dead) in one round trip: acknowledged and deleted.
    pub(crate) async fn done_all(&self, entries: &[String]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(&*self.stream).arg(GROUP).arg(entries);
        let mut delete = redis::cmd("XDEL");
        delete.arg(&*self.stream).arg(entries);
        let steps = [
            Step::command(&self.stream, ack),
            Step::command(&self.stream, delete),
        ];
        for answer in self.store.batch(StoreOp::EventDone, &steps).await? {
            reply::<i64>(answer)?;
        }
        Ok(())
    }

    /// How many events wait (taken or not), and when the oldest was made (Unix ms).
    pub(crate) async fn pending(&self) -> Result<(u64, Option<u64>), StoreError> {
        let mut length = redis::cmd("XLEN");
        length.arg(&*self.stream);
        let mut first = redis::cmd("XRANGE");
        first
            .arg(&*self.stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        let steps = [
            Step::command(&self.stream, length),
            Step::command(&self.stream, first),
        ];
        let mut answers = self
            .store
            .batch(StoreOp::EventPending, &steps)
            .await?
            .into_iter();
        let count: u64 = reply(answers.next().unwrap_or(Value::Nil))?;
        let first: StreamRangeReply = reply(answers.next().unwrap_or(Value::Nil))?;
        let oldest = first
            .ids
            .into_iter()
            .next()
            .and_then(|entry| field::<u64>(&entry.map, "created"));
        Ok((count, oldest))
    }

    /// One command whose error reply the caller reads.
    async fn one(&self, op: StoreOp, command: Cmd) -> Result<Value, StoreError> {
        let steps = [Step::command(&self.stream, command)];
        Ok(self
            .store
            .batch(op, &steps)
            .await?
            .into_iter()
            .next()
            .unwrap_or(Value::Nil))
    }

    /// The group, reading from the stream's start (see the module's doc); one that another
    /// replica made meanwhile is just as good.
    async fn create_group(&self) -> Result<(), StoreError> {
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(&*self.stream)
            .arg(GROUP)
            .arg(START)
            .arg("MKSTREAM");
        let answer = self.one(StoreOp::EventTake, create).await?;
        if is_error(&answer, "BUSYGROUP") {
            return Ok(());
        }
        reply::<Value>(answer).map(drop)
    }

    /// The events of `entries`. An entry this relay did not write (or cannot read) would be
    /// taken over and over: it is deleted, with a warning.
    async fn events(&self, entries: Vec<StreamId>) -> Vec<Taken> {
        let mut taken = Vec::with_capacity(entries.len());
        for entry in entries {
            match event(&entry.map) {
                Some(event) => taken.push(Taken {
                    entry: entry.id,
                    event,
                }),
                None => {
                    tracing::warn!(
                        entry = %entry.id,
                        "events: dropping a stream entry that is not an event"
                    );
                    if let Err(error) = self.done(&entry.id).await {
                        self.store.warn("cannot drop a stream entry", &error);
                    }
                }
            }
        }
        taken
    }
}

/// Where a new group, and a full scan of the pending entries, start.
const START: &str = "0-0";

/// EMIT's arguments.
struct EmitArgs<'a> {
    ttl_ms: &'a str,
    event: &'a Event,
    created: String,
}

impl EmitArgs<'_> {
    fn each(&self) -> [&[u8]; 5] {
        [
            self.ttl_ms.as_bytes(),
            self.event.id.as_bytes(),
            self.event.kind.name().as_bytes(),
            self.created.as_bytes(),
            &self.event.body,
        ]
    }
}

fn event(fields: &HashMap<String, Value>) -> Option<Event> {
    Some(Event {
        id: field(fields, "id")?,
        kind: EventType::parse(&field::<String>(fields, "type")?)?,
        created_ms: field(fields, "created")?,
        body: Bytes::from(field::<Vec<u8>>(fields, "body")?),
    })
}

fn field<T: redis::FromRedisValue>(fields: &HashMap<String, Value>, name: &str) -> Option<T> {
    redis::from_redis_value_ref(fields.get(name)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_server::TestRedis;

    const TTL: Duration = Duration::from_secs(600);
    /// Short enough for a test, long enough that a loaded machine's pause between two calls
    /// does not make an entry stale by itself.
    const MIN_IDLE: Duration = Duration::from_millis(600);

    fn event(number: u32) -> Event {
        Event {
            id: format!("msg_{number:032x}"),
            kind: EventType::MessageReceived,
            created_ms: 1_800_000_000_000 + u64::from(number),
            body: Bytes::from(format!("{{\"n\":{number}}}")),
        }
    }

    fn outboxes(redis: &TestRedis) -> (RedisOutbox, RedisOutbox) {
        let store = redis.store();
        (
            RedisOutbox::new(store.clone(), "replica-a".to_owned(), TTL),
            RedisOutbox::new(store, "replica-b".to_owned(), TTL),
        )
    }

    fn stream(outbox: &RedisOutbox) -> String {
        String::from_utf8(outbox.stream.to_vec()).unwrap()
    }

    /// Who holds `entry`, as `XPENDING` says.
    fn holder(redis: &TestRedis, outbox: &RedisOutbox, entry: &str) -> String {
        let answer = redis.cli(&["xpending", &stream(outbox), GROUP, entry, entry, "1"]);
        answer.lines().nth(1).unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn an_event_is_recorded_once_and_waits_until_done() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b) = outboxes(&redis);
        assert_eq!(a.pending().await.unwrap(), (0, None));
        assert!(a.emit(&event(1)).await.unwrap());
        assert!(
            !b.emit(&event(1)).await.unwrap(),
            "another replica's repeat"
        );
        assert_eq!(a.pending().await.unwrap(), (1, Some(event(1).created_ms)));
        let taken = a.take_new(10).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].event, event(1));
        assert!(b.take_new(10).await.unwrap().is_empty(), "taken once");
        assert_eq!(a.pending().await.unwrap().0, 1, "taken is still pending");
        a.done(&taken[0].entry).await.unwrap();
        assert_eq!(a.pending().await.unwrap(), (0, None));
        assert!(!a.emit(&event(1)).await.unwrap(), "its id is remembered");
        assert!(a.take_new(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn events_emitted_before_any_replica_reads_are_not_missed() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b) = outboxes(&redis);
        for number in 1..=3 {
            a.emit(&event(number)).await.unwrap();
        }
        assert!(b.take_stale(MIN_IDLE, 10).await.unwrap().is_empty());
        let taken = b.take_new(2).await.unwrap();
        let events: Vec<Event> = taken.into_iter().map(|taken| taken.event).collect();
        assert_eq!(
            events,
            [event(1), event(2)],
            "oldest first, `count` at most"
        );
        assert_eq!(a.take_new(10).await.unwrap()[0].event, event(3));
        assert_eq!(a.pending().await.unwrap(), (3, Some(event(1).created_ms)));
    }

    #[tokio::test]
    async fn a_silent_replicas_events_are_taken_over_unless_it_keeps_them() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b) = outboxes(&redis);
        a.emit(&event(1)).await.unwrap();
        let entry = a.take_new(10).await.unwrap().remove(0).entry;
        assert!(
            b.take_stale(MIN_IDLE, 10).await.unwrap().is_empty(),
            "not idle yet"
        );

        tokio::time::sleep(MIN_IDLE + MIN_IDLE / 2).await;
        a.keep(std::slice::from_ref(&entry)).await.unwrap();
        assert!(
            b.take_stale(MIN_IDLE, 10).await.unwrap().is_empty(),
            "a replica that keeps its entries keeps them"
        );

        // Replica a dies: no more heartbeats.
        tokio::time::sleep(MIN_IDLE + MIN_IDLE / 2).await;
        let taken = b.take_stale(MIN_IDLE, 10).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].entry, entry);
        assert_eq!(taken[0].event, event(1));
        assert_eq!(holder(&redis, &b, &entry), "replica-b");
        a.keep(std::slice::from_ref(&entry)).await.unwrap();
        assert_eq!(
            holder(&redis, &b, &entry),
            "replica-b",
            "a late heartbeat does not take it back"
        );
        b.done(&entry).await.unwrap();
        assert_eq!(b.pending().await.unwrap(), (0, None));
        assert!(
            redis
                .cli(&["xpending", &stream(&b), GROUP])
                .starts_with('0')
        );
    }

    #[tokio::test]
    async fn an_entry_deleted_meanwhile_is_not_taken_over() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, b) = outboxes(&redis);
        a.emit(&event(1)).await.unwrap();
        a.emit(&event(2)).await.unwrap();
        let taken = a.take_new(10).await.unwrap();
        redis.cli(&["xdel", &stream(&a), &taken[0].entry]);
        tokio::time::sleep(MIN_IDLE + MIN_IDLE / 2).await;
        let stale = b.take_stale(MIN_IDLE, 10).await.unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].event, event(2));
    }

    #[tokio::test]
    async fn an_entry_that_is_not_an_event_is_dropped() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, _) = outboxes(&redis);
        redis.cli(&["xadd", &stream(&a), "*", "colour", "blue"]);
        a.emit(&event(1)).await.unwrap();
        let taken = a.take_new(10).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].event, event(1));
        assert_eq!(a.pending().await.unwrap(), (1, Some(event(1).created_ms)));
    }

    #[tokio::test]
    async fn the_group_is_made_again_when_redis_lost_it() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let (a, _) = outboxes(&redis);
        a.emit(&event(1)).await.unwrap();
        a.take_new(10).await.unwrap();
        redis.cli(&["xgroup", "destroy", &stream(&a), GROUP]);
        a.keep(&["1-0".to_owned()]).await.unwrap();
        a.emit(&event(2)).await.unwrap();
        let events: Vec<Event> = a
            .take_new(10)
            .await
            .unwrap()
            .into_iter()
            .map(|taken| taken.event)
            .collect();
        assert_eq!(events, [event(1), event(2)], "what the stream still holds");
    }
}
