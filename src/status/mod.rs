//! A status record per message (SPEC "Status of a message"): what the gateway accepted, then
//! what WhatsApp reported by webhook, merged forward only.
//!
//! The rules live in one function, [`merge`]: QUEUED < SENT < DELIVERED < READ; FAILED and
//! CANCELLED are final once seen; a READ without a DELIVERED implies it (Meta sends one
//! webhook when both happen at once); every status seen keeps its first time; an error is kept
//! with the FAILED that brought it. The in-process store (`memory`, moka) runs [`merge`] inside
//! the cache's entry lock; the shared store (`redis`) runs the same rules in one script, tested
//! against [`merge`] on every ordering of callbacks.

pub(crate) mod memory;
pub(crate) mod redis;

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::StoreError;

/// A message's status, in the order it moves.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    /// Held by the relay (queued sends).
    Queued,
    /// Accepted by the gateway.
    Sent,
    /// Delivered to the phone.
    Delivered,
    /// Read by the customer.
    Read,
    /// Failed, with the reason in `error`; final.
    Failed,
    /// Cancelled before it was sent (queued sends); final.
    Cancelled,
}

impl Status {
    /// Every status, in order.
    pub(crate) const ALL: [Self; 6] = [
        Self::Queued,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The name, as records, events and metrics write it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::Sent => "SENT",
            Self::Delivered => "DELIVERED",
            Self::Read => "READ",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// A callback's status word, in any letter case.
    pub(crate) fn parse(word: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.name().eq_ignore_ascii_case(word.trim()))
    }

    /// Where it stands: a record moves only to a higher rank; final statuses stand above all.
    pub(crate) fn rank(self) -> u8 {
        match self {
            Self::Queued => 1,
            Self::Sent => 2,
            Self::Delivered => 3,
            Self::Read => 4,
            Self::Failed | Self::Cancelled => 9,
        }
    }

    /// FAILED and CANCELLED: nothing moves a record after them.
    pub(crate) fn is_final(self) -> bool {
        self.rank() == 9
    }
}

/// Why a message failed, as the provider said it (each part optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = MessageError)]
pub(crate) struct ErrorDetail {
    /// WhatsApp's code (131026, 131047, …), as the provider gave it (a number or a string).
    #[schema(value_type = Option<Object>, example = 131026)]
    pub(crate) code: Option<serde_json::Value>,
    /// The provider's short title.
    #[schema(example = "Message undeliverable")]
    pub(crate) title: Option<String>,
    /// The provider's longer text.
    pub(crate) message: Option<String>,
}

/// What the relay knows of a send it made: filled in when the record is created by a send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SendFacts {
    /// The send type, as metrics name it (`media`, `text`, …).
    pub(crate) kind: Option<&'static str>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    /// The gateway's id for the message, which Meta-shaped callbacks carry.
    pub(crate) wa_id: Option<String>,
}

/// One thing that happened to a message: a send accepted, a callback, a cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Update {
    pub(crate) status: Status,
    /// When it happened, as RFC 3339 (the relay's clock: providers' clocks are not trusted
    /// for the order).
    pub(crate) at: String,
    pub(crate) error: Option<ErrorDetail>,
    /// Set when the relay itself is the source (a send); `None` for callbacks.
    pub(crate) send: Option<SendFacts>,
}

impl Update {
    /// An update stamped now.
    pub(crate) fn now(status: Status) -> Self {
        Self {
            status,
            at: rfc3339(SystemTime::now()),
            error: None,
            send: None,
        }
    }
}

/// The record of one message, exactly as `GET /messages/{messageId}` and `message.status`
/// events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = MessageStatus)]
pub(crate) struct Record {
    /// The caller's `messageId`.
    pub(crate) message_id: String,
    /// The send type (`media`, `text`, …); null for a message this relay did not send.
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    /// The sender's number, digits only.
    pub(crate) from: Option<String>,
    /// The recipient's number, digits only.
    pub(crate) to: Option<String>,
    /// The gateway's id for the message.
    pub(crate) wa_id: Option<String>,
    /// Where the message stands.
    pub(crate) status: Status,
    /// The first time (RFC 3339) of each status seen.
    #[schema(value_type = Object)]
    pub(crate) statuses: BTreeMap<Status, String>,
    /// Why it failed, as the provider said.
    pub(crate) error: Option<ErrorDetail>,
    /// When the record last changed (RFC 3339).
    pub(crate) updated_at: String,
}

/// What merging an update did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Merged {
    /// The record after the update.
    pub(crate) record: Record,
    /// Whether the record changed (a new status, time, error or send fact).
    pub(crate) changed: bool,
}

/// The one set of rules: `update` applied to `existing` (or to a new record).
pub(crate) fn merge(existing: Option<Record>, message_id: &str, update: &Update) -> Merged {
    let mut record = existing.unwrap_or_else(|| Record {
        message_id: message_id.to_owned(),
        kind: None,
        from: None,
        to: None,
        wa_id: None,
        status: update.status,
        statuses: BTreeMap::new(),
        error: None,
        updated_at: update.at.clone(),
    });
    let before = record.clone();
    if let Some(facts) = &update.send {
        fill(&mut record.kind, facts.kind.map(str::to_owned));
        fill(&mut record.from, facts.from.clone());
        fill(&mut record.to, facts.to.clone());
        fill(&mut record.wa_id, facts.wa_id.clone());
    }
    let current = record.status;
    let moves = if record.statuses.is_empty() {
        true
    } else if current.is_final() {
        false
    } else {
        update.status.rank() > current.rank()
    };
    // A late callback (DELIVERED after READ) is history, not news: its time is kept only
    // when the record has none for it, and never after a final status.
    if moves || (!current.is_final() && update.status.rank() < current.rank()) {
        record
            .statuses
            .entry(update.status)
            .or_insert_with(|| update.at.clone());
    }
    if moves {
        record.status = update.status;
        if update.status == Status::Read {
            record
                .statuses
                .entry(Status::Delivered)
                .or_insert_with(|| update.at.clone());
        }
        if update.status == Status::Failed {
            record.error = update.error.clone();
        }
    }
    let changed = record != before || before.statuses.is_empty();
    if changed {
        record.updated_at = update.at.clone();
    }
    Merged { record, changed }
}

fn fill<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// `2026-12-07T10:00:00.123Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Where records live: this process's memory, or the shared store.
#[derive(Clone)]
pub(crate) enum StatusStore {
    Memory(memory::MemoryStatus),
    Redis(redis::RedisStatus),
}

impl StatusStore {
    /// Merges `update` into the record of `message_id`.
    pub(crate) async fn apply(
        &self,
        message_id: &str,
        update: &Update,
    ) -> Result<Merged, StoreError> {
        match self {
            Self::Memory(store) => Ok(store.apply(message_id, update)),
            Self::Redis(store) => store.apply(message_id, update).await,
        }
    }

    /// The record, if there is one.
    pub(crate) async fn get(&self, message_id: &str) -> Result<Option<Record>, StoreError> {
        match self {
            Self::Memory(store) => Ok(store.get(message_id)),
            Self::Redis(store) => store.get(message_id).await,
        }
    }

    /// The `messageId` of the send the gateway gave `wa_id`.
    pub(crate) async fn message_of(&self, wa_id: &str) -> Result<Option<String>, StoreError> {
        match self {
            Self::Memory(store) => Ok(store.message_of(wa_id)),
            Self::Redis(store) => store.message_of(wa_id).await,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn update(status: Status, at: &str) -> Update {
        Update {
            status,
            at: at.to_owned(),
            error: (status == Status::Failed).then(|| ErrorDetail {
                code: Some(131026.into()),
                title: Some("Message undeliverable".to_owned()),
                message: None,
            }),
            send: None,
        }
    }

    /// Applies updates in order; the final record.
    pub(crate) fn run(updates: &[Update]) -> (Record, Vec<bool>) {
        let mut record = None;
        let mut changes = Vec::new();
        for update in updates {
            let merged = merge(record.take(), "m1", update);
            changes.push(merged.changed);
            record = Some(merged.record);
        }
        (record.unwrap(), changes)
    }

    #[test]
    fn statuses_only_move_forward_and_keep_their_first_time() {
        use Status::*;
        let (record, changes) = run(&[
            update(Sent, "t1"),
            update(Delivered, "t2"),
            update(Sent, "t3"),
            update(Read, "t4"),
            update(Delivered, "t5"),
            update(Read, "t6"),
        ]);
        assert_eq!(record.status, Read);
        assert_eq!(record.statuses[&Sent], "t1");
        assert_eq!(record.statuses[&Delivered], "t2");
        assert_eq!(record.statuses[&Read], "t4");
        assert_eq!(changes, [true, true, false, true, false, false]);
    }

    #[test]
    fn read_before_delivered_implies_it_and_the_late_delivered_changes_nothing() {
        use Status::*;
        let (record, changes) = run(&[
            update(Sent, "t1"),
            update(Read, "t2"),
            update(Delivered, "t3"),
        ]);
        assert_eq!(record.status, Read);
        assert_eq!(record.statuses[&Delivered], "t2");
        assert_eq!(changes, [true, true, false]);
    }

    #[test]
    fn failed_is_final_and_keeps_its_error() {
        use Status::*;
        let (record, changes) = run(&[
            update(Sent, "t1"),
            update(Failed, "t2"),
            update(Delivered, "t3"),
            update(Failed, "t4"),
        ]);
        assert_eq!(record.status, Failed);
        assert!(!record.statuses.contains_key(&Delivered));
        assert_eq!(record.statuses[&Failed], "t2");
        assert_eq!(record.error.unwrap().code, Some(131026.into()));
        assert_eq!(changes, [true, true, false, false]);
    }

    #[test]
    fn a_callback_before_the_send_is_recorded_and_the_send_fills_in_its_facts() {
        use Status::*;
        let mut sent = update(Sent, "t2");
        sent.send = Some(SendFacts {
            kind: Some("text"),
            from: Some("254700000001".into()),
            to: Some("254700000002".into()),
            wa_id: Some("wamid.1".into()),
        });
        let (record, changes) = run(&[update(Delivered, "t1"), sent]);
        assert_eq!(record.status, Delivered);
        assert_eq!(record.kind.as_deref(), Some("text"));
        assert_eq!(record.wa_id.as_deref(), Some("wamid.1"));
        assert_eq!(record.statuses[&Sent], "t2");
        assert_eq!(changes, [true, true]);
    }

    #[test]
    fn the_record_serialises_as_the_spec_shows_it() {
        let (record, _) = run(&[update(Status::Sent, "2026-12-07T10:00:00.000Z")]);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["messageId"], "m1");
        assert_eq!(json["type"], serde_json::Value::Null);
        assert_eq!(json["status"], "SENT");
        assert_eq!(json["statuses"]["SENT"], "2026-12-07T10:00:00.000Z");
        assert_eq!(json["error"], serde_json::Value::Null);
        assert_eq!(json["updatedAt"], "2026-12-07T10:00:00.000Z");
        assert_eq!(json["waId"], serde_json::Value::Null);
    }

    #[test]
    fn status_words_are_read_in_any_case() {
        assert_eq!(Status::parse("delivered"), Some(Status::Delivered));
        assert_eq!(Status::parse(" Read "), Some(Status::Read));
        assert_eq!(Status::parse("seen"), None);
    }
}
