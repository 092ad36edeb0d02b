//! Status records in the shared store (SPEC "Status of a message": with Redis, shared by every
//! replica, the forward-only merge done atomically in Redis).
//!
//! - One hash per message, `<prefix>:status:<messageId>`: `type`, `from`, `to`, `waId`,
//!   `status`, `updatedAt`, `error` (JSON) and `at:<STATUS>` for the first time of each
//!   status. A field is there only when it is known: a missing one reads `null`.
//! - [`MERGE`] applies an update in one script: the rules of [`super::merge`], written again
//!   in Lua, and tested against it on every ordering of callbacks
//!   (`the_script_merges_as_merge_does`). It says whether the record changed and returns the
//!   whole hash. Each change starts the record's `RELAY_STATUS_TTL_SECS` again, as moka's
//!   time-to-live does in memory.
//! - `<prefix>:waid:<waId>` → `messageId`, written for an update that carries the gateway's
//!   `waId` (same TTL). On a Cluster it is in another slot than the record, so it goes beside
//!   the script in the same round trip ([`SharedStore::batch`]), not inside it.
//! - [`RedisStatus::accepted`]: what the send path calls when the gateway accepts a send —
//!   the merge, the index and the event's emit, in one round trip.
//!
//! Optional arguments of the script are `''` for none and `'+'` and the text for some, so an
//! empty text is still a value.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use redis::{Script, Value};
use serde::{Deserialize, Deserializer, Serialize};

use super::{ErrorDetail, Merged, Record, Status, Update};
use crate::events::Event;
use crate::events::redis::RedisOutbox;
use crate::metrics::StoreOp;
use crate::store::{SharedStore, Step, StoreError, reply};

/// Merges one update into the record at KEYS[1]. ARGV: status name, its time, error (JSON),
/// type, from, to, waId (each `''` or `'+'` and the text), the TTL in ms. Returns
/// `{changed (1 or 0), the hash's fields and values}`. The same rules as `status::merge`, step
/// by step: fill the send facts that are missing; a status moves the record when the record
/// is new, or when it is not final and the status ranks higher; a late lower status only
/// fills its own missing time, and never after a final one; READ fills DELIVERED's time;
/// FAILED brings its error.
pub(crate) const MERGE: &str = r"
local key = KEYS[1]
local status, at = ARGV[1], ARGV[2]
local rank = {QUEUED = 1, SENT = 2, DELIVERED = 3, READ = 4, FAILED = 9, CANCELLED = 9}
local function given(arg)
  if arg == '' then return nil end
  return string.sub(arg, 2)
end
local current = redis.call('HGET', key, 'status')
local fresh = not current
local changed = fresh
local function fill(field, value)
  if value and redis.call('HSETNX', key, field, value) == 1 then
    changed = true
  end
end
fill('type', given(ARGV[4]))
fill('from', given(ARGV[5]))
fill('to', given(ARGV[6]))
fill('waId', given(ARGV[7]))
local held = rank[current] or 0
local final = held == 9
local moves = fresh or (not final and rank[status] > held)
if moves or (not final and rank[status] < held) then
  fill('at:' .. status, at)
end
if moves then
  if current ~= status then
    redis.call('HSET', key, 'status', status)
    changed = true
  end
  if status == 'READ' then
    fill('at:DELIVERED', at)
  end
  if status == 'FAILED' then
    local error, before = given(ARGV[3]), redis.call('HGET', key, 'error')
    if error and error ~= before then
      redis.call('HSET', key, 'error', error)
      changed = true
    elseif not error and before then
      redis.call('HDEL', key, 'error')
      changed = true
    end
  end
end
if changed then
  redis.call('HSET', key, 'updatedAt', at)
  redis.call('PEXPIRE', key, ARGV[8])
end
return {changed and 1 or 0, redis.call('HGETALL', key)}
";

/// The shared records.
#[derive(Clone)]
pub(crate) struct RedisStatus {
    store: SharedStore,
    /// `RELAY_STATUS_TTL_SECS`, in ms, as the script and `SET PX` take it.
    ttl_ms: Arc<str>,
    merge: Arc<Script>,
}

impl std::fmt::Debug for RedisStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStatus")
            .field("store", &self.store)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisStatus {
    /// Records that live `ttl` from their last change.
    pub(crate) fn new(store: SharedStore, ttl: Duration) -> Self {
        let ttl_ms = crate::clock::millis(ttl).max(1);
        Self {
            store,
            ttl_ms: ttl_ms.to_string().into(),
            merge: Arc::new(Script::new(MERGE)),
        }
    }

    /// `<prefix>:<kind>:<id>`.
    fn key(&self, kind: &str, id: &str) -> Vec<u8> {
        let prefix = self.store.prefix();
        let mut key = Vec::with_capacity(prefix.len() + kind.len() + id.len() + 2);
        key.extend_from_slice(prefix.as_bytes());
        key.push(b':');
        key.extend_from_slice(kind.as_bytes());
        key.push(b':');
        key.extend_from_slice(id.as_bytes());
        key
    }

    /// Merges `update` into the record of `message_id`, and indexes the send's `waId`.
    pub(crate) async fn apply(
        &self,
        message_id: &str,
        update: &Update,
    ) -> Result<Merged, StoreError> {
        self.merge_with(message_id, update, None).await
    }

    /// A send the gateway accepted: merges `update`, indexes its `waId` and, when given,
    /// records `event` in `outbox`, in one round trip.
    pub(crate) async fn accepted(
        &self,
        message_id: &str,
        update: &Update,
        event: Option<&Event>,
        outbox: &RedisOutbox,
    ) -> Result<Merged, StoreError> {
        let emit = event.map(|event| outbox.emit_step(event));
        self.merge_with(message_id, update, emit).await
    }

    async fn merge_with(
        &self,
        message_id: &str,
        update: &Update,
        emit: Option<Step<'_>>,
    ) -> Result<Merged, StoreError> {
        let key = self.key("status", message_id);
        let args = MergeArgs::of(update);
        let mut steps = vec![Step::script(
            &self.merge,
            &[&key],
            &args.as_slices(&self.ttl_ms),
        )];
        if let Some(wa_id) = update.send.as_ref().and_then(|send| send.wa_id.as_deref()) {
            let index = self.key("waid", wa_id);
            let mut set = redis::cmd("SET");
            set.arg(&index).arg(message_id).arg("PX").arg(&*self.ttl_ms);
            steps.push(Step::command(&index, set));
        }
        steps.extend(emit);
        let mut replies = self
            .store
            .batch(StoreOp::StatusMerge, &steps)
            .await?
            .into_iter();
        let merged = replies.next().unwrap_or(Value::Nil);
        // The index and the emit answer OK and 1 or 0; an error reply fails the whole call.
        for other in replies {
            reply::<Value>(other)?;
        }
        let (changed, fields): (i64, HashMap<String, String>) = reply(merged)?;
        Ok(Merged {
            record: record(message_id, fields).ok_or_else(foreign)?,
            changed: changed == 1,
        })
    }

    /// The record, if there is one.
    pub(crate) async fn get(&self, message_id: &str) -> Result<Option<Record>, StoreError> {
        let mut command = redis::cmd("HGETALL");
        command.arg(self.key("status", message_id));
        let fields: HashMap<String, String> =
            self.store.command(StoreOp::StatusRead, &command).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        record(message_id, fields).map(Some).ok_or_else(foreign)
    }

    /// The `messageId` of the send the gateway gave `wa_id`.
    pub(crate) async fn message_of(&self, wa_id: &str) -> Result<Option<String>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key("waid", wa_id));
        self.store.command(StoreOp::StatusRead, &command).await
    }
}

/// The script's arguments for `update` (see [`MERGE`]).
struct MergeArgs {
    status: &'static str,
    at: String,
    /// Error, type, from, to, waId.
    optional: [Vec<u8>; 5],
}

impl MergeArgs {
    fn of(update: &Update) -> Self {
        let send = update.send.as_ref();
        let error = update
            .error
            .as_ref()
            .map(|error| serde_json::to_string(&StoredError::from(error)).unwrap_or_default());
        Self {
            status: update.status.name(),
            at: update.at.clone(),
            optional: [
                given(error.as_deref()),
                given(send.and_then(|send| send.kind)),
                given(send.and_then(|send| send.from.as_deref())),
                given(send.and_then(|send| send.to.as_deref())),
                given(send.and_then(|send| send.wa_id.as_deref())),
            ],
        }
    }

    fn as_slices<'a>(&'a self, ttl_ms: &'a str) -> [&'a [u8]; 8] {
        let [error, kind, from, to, wa_id] = &self.optional;
        [
            self.status.as_bytes(),
            self.at.as_bytes(),
            error,
            kind,
            from,
            to,
            wa_id,
            ttl_ms.as_bytes(),
        ]
    }
}

/// `''` for none, `'+'` and the text for some.
fn given(value: Option<&str>) -> Vec<u8> {
    value.map_or_else(Vec::new, |text| {
        let mut arg = Vec::with_capacity(text.len() + 1);
        arg.push(b'+');
        arg.extend_from_slice(text.as_bytes());
        arg
    })
}

fn time_field(status: Status) -> String {
    format!("at:{}", status.name())
}

/// The record a hash holds; `None` when it lacks a status or an update time (not ours).
fn record(message_id: &str, mut fields: HashMap<String, String>) -> Option<Record> {
    let status = Status::parse(&fields.remove("status")?)?;
    let updated_at = fields.remove("updatedAt")?;
    let statuses: BTreeMap<Status, String> = Status::ALL
        .into_iter()
        .filter_map(|status| Some((status, fields.remove(&time_field(status))?)))
        .collect();
    let error = match fields.remove("error") {
        Some(json) => Some(serde_json::from_str::<StoredError>(&json).ok()?.into()),
        None => None,
    };
    Some(Record {
        message_id: message_id.to_owned(),
        kind: fields.remove("type"),
        from: fields.remove("from"),
        to: fields.remove("to"),
        wa_id: fields.remove("waId"),
        status,
        statuses,
        error,
        updated_at,
    })
}

fn foreign() -> StoreError {
    StoreError::Failed(format!(
        "a status record holds fields this relay did not write (check {} is not shared with \
         other software)",
        crate::config::vars::REDIS_PREFIX.name
    ))
}

/// [`ErrorDetail`] as the `error` field holds it: absent parts left out, so a `code` that is
/// JSON `null` comes back as one.
#[derive(Serialize, Deserialize)]
struct StoredError {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    code: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl From<&ErrorDetail> for StoredError {
    fn from(error: &ErrorDetail) -> Self {
        Self {
            code: error.code.clone(),
            title: error.title.clone(),
            message: error.message.clone(),
        }
    }
}

impl From<StoredError> for ErrorDetail {
    fn from(error: StoredError) -> Self {
        Self {
            code: error.code,
            title: error.title,
            message: error.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::Slot;

    use super::*;
    use crate::events::EventType;
    use crate::status::{SendFacts, merge};
    use crate::store::test_server::TestRedis;

    const TTL: Duration = Duration::from_secs(600);

    fn update(status: Status, at: usize) -> Update {
        let mut update = crate::status::tests::update(status, &format!("t{at}"));
        if status == Status::Cancelled {
            update.error = None;
        }
        update
    }

    fn facts(kind: Option<&'static str>, wa_id: Option<&str>) -> SendFacts {
        SendFacts {
            kind,
            from: Some("254700000001".to_owned()),
            to: Some(String::new()),
            wa_id: wa_id.map(str::to_owned),
        }
    }

    fn permutations(items: &[Status]) -> Vec<Vec<Status>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut all = Vec::new();
        for (index, first) in items.iter().enumerate() {
            let mut rest = items.to_vec();
            rest.remove(index);
            for mut tail in permutations(&rest) {
                tail.insert(0, *first);
                all.push(tail);
            }
        }
        all
    }

    /// Every ordering of SENT, DELIVERED, READ, FAILED and one more (a repeat of one of them,
    /// QUEUED or CANCELLED); each in three variants: no send facts; the facts on the first
    /// SENT and an error with a `null` code and an empty message; facts on the first SENT and
    /// other, partial facts on the extra update, with a FAILED that brings no error.
    fn scenarios() -> Vec<Vec<Update>> {
        use Status::*;
        let mut all = Vec::new();
        for extra in [Sent, Delivered, Read, Failed, Queued, Cancelled] {
            for order in permutations(&[Sent, Delivered, Read, Failed, extra]) {
                all.extend((0..3).map(|variant| scenario(&order, variant)));
            }
        }
        all
    }

    fn scenario(order: &[Status], variant: u8) -> Vec<Update> {
        let mut updates: Vec<Update> = order
            .iter()
            .enumerate()
            .map(|(at, status)| update(*status, at))
            .collect();
        if variant > 0
            && let Some(sent) = updates.iter_mut().find(|u| u.status == Status::Sent)
        {
            sent.send = Some(facts(Some("text"), Some("wamid.1")));
        }
        for update in updates.iter_mut().filter(|u| u.status == Status::Failed) {
            update.error = match variant {
                1 => Some(ErrorDetail {
                    code: Some(serde_json::Value::Null),
                    title: None,
                    message: Some(String::new()),
                }),
                2 => None,
                _ => update.error.take(),
            };
        }
        if variant == 2
            && let Some(last) = updates.last_mut()
        {
            last.send = Some(SendFacts {
                to: Some("254700000009".to_owned()),
                ..facts(Some("media"), None)
            });
        }
        updates
    }

    #[tokio::test]
    async fn the_script_merges_as_merge_does() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let status = RedisStatus::new(redis.store(), TTL);
        let scenarios = scenarios();
        assert_eq!(scenarios.len(), 6 * 120 * 3);
        for (number, updates) in scenarios.iter().enumerate() {
            let message_id = format!("m{number}");
            let mut expected: Option<Record> = None;
            for update in updates {
                let want = merge(expected.take(), &message_id, update);
                let got = status.apply(&message_id, update).await.unwrap();
                assert_eq!(got, want, "{update:?} in {updates:#?}");
                expected = Some(want.record);
            }
            assert_eq!(status.get(&message_id).await.unwrap(), expected);
        }
    }

    fn pttl(redis: &TestRedis, key: &[u8]) -> i64 {
        let key = String::from_utf8(key.to_vec()).unwrap();
        redis.cli(&["pttl", &key]).trim().parse().unwrap()
    }

    #[tokio::test]
    async fn a_record_is_found_by_wa_id_and_lives_from_its_last_change() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let status = RedisStatus::new(redis.store(), TTL);
        assert_eq!(status.get("m1").await.unwrap(), None);
        assert_eq!(status.message_of("wamid.7").await.unwrap(), None);
        let mut sent = update(Status::Sent, 1);
        sent.send = Some(facts(Some("text"), Some("wamid.7")));
        assert!(status.apply("m1", &sent).await.unwrap().changed);
        assert_eq!(
            status.message_of("wamid.7").await.unwrap().as_deref(),
            Some("m1")
        );
        let key = status.key("status", "m1");
        let ttl = i64::try_from(TTL.as_millis()).unwrap();
        assert!((ttl - 5_000..=ttl).contains(&pttl(&redis, &key)));
        let key_text = String::from_utf8(key.clone()).unwrap();
        redis.cli(&["pexpire", &key_text, "50000"]);
        assert!(!status.apply("m1", &sent).await.unwrap().changed);
        assert!(pttl(&redis, &key) <= 50_000, "unchanged: the TTL runs on");
        assert!(
            status
                .apply("m1", &update(Status::Read, 2))
                .await
                .unwrap()
                .changed
        );
        assert!(pttl(&redis, &key) > 50_000, "changed: the TTL starts again");
        let record = status.get("m1").await.unwrap().unwrap();
        assert_eq!(record.status, Status::Read);
        assert_eq!(record.wa_id.as_deref(), Some("wamid.7"));
        assert_eq!(record.statuses[&Status::Delivered], "t2");
    }

    #[tokio::test]
    async fn a_hash_this_relay_did_not_write_is_an_error() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        let status = RedisStatus::new(redis.store(), TTL);
        let key = String::from_utf8(status.key("status", "m1")).unwrap();
        redis.cli(&["hset", &key, "colour", "blue"]);
        assert!(matches!(
            status.get("m1").await,
            Err(StoreError::Failed(text)) if text.contains("RELAY_REDIS_PREFIX")
        ));
    }

    /// The status record, the `waId` index and the event, in one call, on whatever `redis`
    /// is; on a Cluster the three keys are in three slots.
    async fn accepted_records_all_three(redis: &TestRedis) {
        let store = redis.store();
        let status = RedisStatus::new(store.clone(), TTL);
        let outbox = RedisOutbox::new(store, "replica-a".to_owned(), TTL);
        let stream = format!("{{{}:events}}:stream", status.store.prefix());
        let message_id = (0..)
            .map(|n| format!("m{n}"))
            .find(|id| {
                let slot = Slot::for_key(status.key("status", id));
                slot != Slot::for_key(status.key("waid", "wamid.1"))
                    && slot != Slot::for_key(&stream)
            })
            .unwrap();
        let mut sent = update(Status::Sent, 1);
        sent.send = Some(facts(Some("media"), Some("wamid.1")));
        let expected = merge(None, &message_id, &sent);
        let event = Event::status(&expected.record);

        // Neither script is loaded yet: both come back NOSCRIPT and are loaded and run again.
        let merged = status
            .accepted(&message_id, &sent, Some(&event), &outbox)
            .await
            .unwrap();
        assert_eq!(merged, expected);
        assert_eq!(
            status.message_of("wamid.1").await.unwrap(),
            Some(message_id.clone())
        );
        assert_eq!(outbox.pending().await.unwrap(), (1, Some(event.created_ms)));
        let again = status
            .accepted(&message_id, &sent, Some(&event), &outbox)
            .await
            .unwrap();
        assert!(!again.changed, "a repeated send changes nothing");
        assert!(!outbox.emit(&event).await.unwrap(), "recorded once");
        let taken = outbox.take_new(10).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].event, event);
        assert_eq!(taken[0].event.kind, EventType::MessageStatus);
        let no_event = status
            .accepted(&message_id, &update(Status::Delivered, 2), None, &outbox)
            .await
            .unwrap();
        assert_eq!(no_event.record.status, Status::Delivered);
    }

    #[tokio::test]
    async fn an_accepted_send_records_status_index_and_event_in_one_call() {
        let Some(redis) = TestRedis::start() else {
            return;
        };
        accepted_records_all_three(&redis).await;
        let errors = redis.cli(&["info", "errorstats"]);
        assert!(errors.contains("errorstat_NOSCRIPT:count=2"), "{errors}");
    }

    #[tokio::test]
    async fn an_accepted_send_spans_three_slots_on_a_cluster() {
        let Some(redis) = TestRedis::cluster() else {
            return;
        };
        accepted_records_all_three(&redis).await;
    }
}
