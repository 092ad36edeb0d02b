//! What happens after SENT, in one place (SPEC "After SENT"): the send path and the webhook
//! listener both record a status here, and each change that makes a record take a new status
//! becomes one `message.status` event.
//!
//! The rule for events: after a merge, the callback's status is announced when the record now
//! stands at it. Its event id comes from the message and the status, and the outbox records an
//! id once, so a repeated callback (or one Lipachat sends again because a 503 hid that it was
//! recorded) announces nothing new, while a callback whose event was lost between the merge
//! and the outbox announces it on its retry. A status that arrives late (DELIVERED after READ)
//! changes nothing and announces nothing.
//!
//! It is on when the webhook listener or events are configured, and with Redis (queued sends
//! have records). Synchronous sends record their SENT only when the listener or events are on
//! ([`Lifecycle::follows_sends`]); otherwise the send path pays nothing and
//! `GET /messages/{messageId}` answers from the dedup window for them.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::config::Config;
use crate::events::memory::MemoryOutbox;
use crate::events::redis::RedisOutbox;
use crate::events::worker::Source;
use crate::events::{EmitError, Event, EventType, Outbox};
use crate::metrics::{EventResult, Metrics};
use crate::status::memory::MemoryStatus;
use crate::status::redis::RedisStatus;
use crate::status::{Merged, Record, SendFacts, Status, StatusStore, Update};
use crate::store::{SharedStore, StoreError};

/// Why a callback was not recorded (the webhook is answered 503 and comes again).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotRecorded {
    #[error("the status store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the event could not be recorded: {0}")]
    Event(#[from] EmitError),
}

/// Status records and the outbox.
#[derive(Clone)]
pub(crate) struct Lifecycle(Arc<Inner>);

struct Inner {
    status: StatusStore,
    outbox: Option<Outbox>,
    metrics: Arc<Metrics>,
    /// The webhook listener or events are on: synchronous sends get a record too.
    follows_sends: bool,
}

impl Lifecycle {
    /// The lifecycle for `config`, and where the delivery worker takes events from; `None`
    /// when neither the webhook listener, events nor Redis (queued sends) are configured.
    pub(crate) fn new(
        config: &Config,
        store: Option<&SharedStore>,
        metrics: Arc<Metrics>,
    ) -> Option<(Self, Option<Source>)> {
        let follows_sends = config.webhooks.is_some() || config.events.is_some();
        if !follows_sends && store.is_none() {
            return None;
        }
        let ttl = config.status.ttl;
        let (status, outbox, source) = match store {
            Some(store) => {
                let status = StatusStore::Redis(RedisStatus::new(store.clone(), ttl));
                let outbox = config.events.as_ref().map(|events| {
                    let consumer = format!(
                        "{}-{}-{:08x}",
                        hostname(),
                        std::process::id(),
                        fastrand::u32(..)
                    );
                    RedisOutbox::new(store.clone(), consumer, ttl.max(events.max_age))
                });
                let source = outbox.clone().map(Source::Redis);
                (status, outbox.map(Outbox::Redis), source)
            }
            None => {
                let status = StatusStore::Memory(MemoryStatus::new(config.status.capacity, ttl));
                match &config.events {
                    Some(events) => {
                        let remember = ttl.max(events.max_age);
                        let (outbox, channel) = MemoryOutbox::new(events.max_pending, remember);
                        let source = Source::Memory(outbox.clone(), channel);
                        (status, Some(Outbox::Memory(outbox)), Some(source))
                    }
                    None => (status, None, None),
                }
            }
        };
        let inner = Inner {
            status,
            outbox,
            metrics,
            follows_sends,
        };
        Some((Self(Arc::new(inner)), source))
    }

    /// The gateway accepted a send: its record says SENT, with what the relay knows of it,
    /// and the SENT event goes out. Failures are logged and counted; the send stands.
    pub(crate) async fn accepted(&self, message_id: &str, facts: SendFacts) {
        let mut update = Update::now(Status::Sent);
        update.send = Some(facts);
        let inner = &self.0;
        let result = match (&inner.status, &inner.outbox) {
            // One round trip: the merge, the waId index and the event, pipelined.
            (StatusStore::Redis(status), Some(Outbox::Redis(outbox))) => {
                let fresh = crate::status::merge(None, message_id, &update);
                let event = Event::status(&fresh.record);
                status
                    .accepted(message_id, &update, Some(&event), outbox)
                    .await
                    .map(drop)
                    .map_err(NotRecorded::from)
            }
            _ => self.apply(message_id, &update).await.map(drop),
        };
        if let Err(error) = result {
            if matches!(error, NotRecorded::Event(EmitError::Full(_))) {
                inner
                    .metrics
                    .lifecycle
                    .event(EventType::MessageStatus.name(), EventResult::Dropped);
            }
            tracing::warn!(%error, "a sent message's status could not be recorded");
        }
    }

    /// Whether synchronous sends record their SENT (the webhook listener or events are on).
    pub(crate) fn follows_sends(&self) -> bool {
        self.0.follows_sends
    }

    /// A status callback for one of our `messageId`s (or one we never sent).
    pub(crate) async fn status(
        &self,
        message_id: &str,
        update: &Update,
    ) -> Result<(), NotRecorded> {
        self.apply(message_id, update).await.map(drop)
    }

    /// An update of the relay's own (a queued send's QUEUED, FAILED or CANCELLED): merged and
    /// announced like a callback; returns the record.
    pub(crate) async fn record(
        &self,
        message_id: &str,
        update: &Update,
    ) -> Result<Record, NotRecorded> {
        self.apply(message_id, update).await
    }

    /// A status callback that names only the gateway's id (Meta's shape): matched to our
    /// `messageId` through the send's `waId`; an id we never gave out is kept under itself.
    pub(crate) async fn status_by_wa_id(
        &self,
        wa_id: &str,
        update: &Update,
    ) -> Result<(), NotRecorded> {
        let message_id = self.0.status.message_of(wa_id).await?;
        self.apply(message_id.as_deref().unwrap_or(wa_id), update)
            .await
            .map(drop)
    }

    /// An inbound message or an unrecognised callback, passed on as an event once.
    pub(crate) async fn passed_on(
        &self,
        kind: EventType,
        key: &[u8],
        data: &RawValue,
    ) -> Result<(), NotRecorded> {
        if let Some(outbox) = &self.0.outbox {
            outbox.emit(Event::passed_on(kind, key, data)).await?;
        }
        Ok(())
    }

    /// The record of a message.
    pub(crate) async fn get(&self, message_id: &str) -> Result<Option<Record>, StoreError> {
        self.0.status.get(message_id).await
    }

    /// Events waiting in this process's memory (0 with Redis, or without events).
    pub(crate) fn pending_in_memory(&self) -> usize {
        match &self.0.outbox {
            Some(Outbox::Memory(outbox)) => outbox.pending(),
            _ => 0,
        }
    }

    /// Whether an event can be recorded now: false only when the in-memory outbox is full.
    pub(crate) fn has_room(&self) -> bool {
        match &self.0.outbox {
            Some(Outbox::Memory(outbox)) => outbox.has_room(),
            _ => true,
        }
    }

    /// Merge, then announce the update's status if the record stands at it.
    async fn apply(&self, message_id: &str, update: &Update) -> Result<Record, NotRecorded> {
        let Merged { record, .. } = self.0.status.apply(message_id, update).await?;
        if record.status == update.status
            && let Some(outbox) = &self.0.outbox
        {
            outbox.emit(Event::status(&record)).await?;
        }
        Ok(record)
    }
}

/// This machine's name, for the replica's consumer name in the event stream.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "relay".to_owned())
}
