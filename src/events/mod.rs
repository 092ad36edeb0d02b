//! Events out (SPEC "Events out"): each status change, inbound message and unrecognised
//! callback, POSTed to `RELAY_EVENTS_URL`, signed as Standard Webhooks says (`sign`), delivered
//! at least once with back-off (`deliver`), waiting in this process's memory (`memory`) or in
//! a Redis stream shared by the replicas (`redis`); `receive` is the `events-receive` command,
//! a receiver that verifies them.
//!
//! An event's id is made from what it reports (the message and its status; the inbound
//! message's id; the unrecognised body), not drawn at random: every replica and every retry of
//! a callback names it the same, so the outbox records it once and a receiver that sees it
//! twice can tell.

pub(crate) mod deliver;
pub(crate) mod memory;
pub(crate) mod receive;
pub(crate) mod redis;
pub(crate) mod sign;
pub(crate) mod worker;

use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::status::{Record, rfc3339};
use crate::store::StoreError;

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EventType {
    /// A status record changed: `data` is the whole record.
    MessageStatus,
    /// A customer wrote: `data` is the callback as received.
    MessageReceived,
    /// A callback the relay did not recognise: `data` is the body as received.
    WebhookUnrecognised,
}

impl EventType {
    pub(crate) const ALL: [Self; 3] = [
        Self::MessageStatus,
        Self::MessageReceived,
        Self::WebhookUnrecognised,
    ];

    /// The `type` field (and the metrics label).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::MessageStatus => "message.status",
            Self::MessageReceived => "message.received",
            Self::WebhookUnrecognised => "webhook.unrecognised",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One event: its id (the `webhook-id`), type, when it was made and the JSON body sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// `msg_` and 32 hex digits, from what the event reports.
    pub(crate) id: String,
    pub(crate) kind: EventType,
    /// Unix milliseconds when it was made: its age counts from here on every replica.
    pub(crate) created_ms: u64,
    /// `{"type", "timestamp", "data"}`, exactly as POSTed.
    pub(crate) body: Bytes,
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize + ?Sized> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
    data: &'a T,
}

impl Event {
    /// A `message.status` event for a record that just took its status.
    pub(crate) fn status(record: &Record) -> Self {
        let id = event_id(&[
            b"status",
            record.message_id.as_bytes(),
            record.status.name().as_bytes(),
        ]);
        Self::new(id, EventType::MessageStatus, record)
    }

    /// A `message.received` or `webhook.unrecognised` event for a callback; `key` is what
    /// makes it the same callback when it comes again (an inbound message's id, or the body).
    pub(crate) fn passed_on(kind: EventType, key: &[u8], data: &RawValue) -> Self {
        let id = event_id(&[kind.name().as_bytes(), key]);
        Self::new(id, kind, data)
    }

    fn new<T: Serialize + ?Sized>(id: String, kind: EventType, data: &T) -> Self {
        let now = SystemTime::now();
        let timestamp = rfc3339(now);
        let body = serde_json::to_vec(&Envelope {
            kind: kind.name(),
            timestamp: &timestamp,
            data,
        })
        .unwrap_or_default();
        Self {
            id,
            kind,
            created_ms: crate::clock::unix_ms(now),
            body: Bytes::from(body),
        }
    }
}

/// `msg_` + 128 bits of xxh3 over the parts, each ended by a zero byte.
fn event_id(parts: &[&[u8]]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part);
        hasher.update(&[0]);
    }
    format!("msg_{:032x}", hasher.digest128())
}

/// Why an event could not be recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EmitError {
    /// `RELAY_EVENTS_MAX_PENDING` events wait already (memory only).
    #[error("{0} events are pending")]
    Full(usize),
    /// The shared store did not take it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where pending events wait.
#[derive(Clone)]
pub(crate) enum Outbox {
    Memory(memory::MemoryOutbox),
    Redis(redis::RedisOutbox),
}

impl Outbox {
    /// Records an event for delivery, once per id: `Ok(false)` when it was recorded before.
    pub(crate) async fn emit(&self, event: Event) -> Result<bool, EmitError> {
        match self {
            Self::Memory(outbox) => outbox.emit(event),
            Self::Redis(outbox) => Ok(outbox.emit(&event).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;
    use crate::status::tests::{run, update};

    #[test]
    fn ids_depend_on_what_is_reported_only() {
        let (sent, _) = run(&[update(Status::Sent, "t1")]);
        let (again, _) = run(&[update(Status::Sent, "t9")]);
        let (read, _) = run(&[update(Status::Sent, "t1"), update(Status::Read, "t2")]);
        assert_eq!(Event::status(&sent).id, Event::status(&again).id);
        assert_ne!(Event::status(&sent).id, Event::status(&read).id);
        assert!(Event::status(&sent).id.starts_with("msg_"));
        assert_eq!(Event::status(&sent).id.len(), 36);
    }

    #[test]
    fn the_body_is_type_timestamp_and_data() {
        let (record, _) = run(&[update(Status::Delivered, "t1")]);
        let event = Event::status(&record);
        let body: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
        assert_eq!(body["type"], "message.status");
        assert_eq!(body["data"]["status"], "DELIVERED");
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
