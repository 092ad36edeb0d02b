//! Pending events in this process's memory (without Redis): bounded by
//! `RELAY_EVENTS_MAX_PENDING`, lost with the process (the README says so). An event's id is
//! remembered for as long as a status record lives, so a repeated callback records it once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::mpsc;

use super::{EmitError, Event};

/// The in-process outbox: a count of what waits, the ids already recorded, and the channel
/// to the delivery worker.
#[derive(Clone)]
pub(crate) struct MemoryOutbox(Arc<Inner>);

struct Inner {
    seen: Cache<String, ()>,
    pending: AtomicUsize,
    max_pending: usize,
    to_worker: mpsc::UnboundedSender<Event>,
}

impl MemoryOutbox {
    /// The outbox and the receiving end the delivery worker reads.
    pub(crate) fn new(
        max_pending: usize,
        remember: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (to_worker, from_outbox) = mpsc::unbounded_channel();
        let seen = Cache::builder()
            .max_capacity(max_pending as u64 * 4)
            .time_to_live(remember)
            .build();
        let outbox = Self(Arc::new(Inner {
            seen,
            pending: AtomicUsize::new(0),
            max_pending,
            to_worker,
        }));
        (outbox, from_outbox)
    }

    /// Records `event` once per id; `Full` when `RELAY_EVENTS_MAX_PENDING` wait already.
    pub(crate) fn emit(&self, event: Event) -> Result<bool, EmitError> {
        let inner = &self.0;
        if inner.seen.contains_key(&event.id) {
            return Ok(false);
        }
        // Take a place first, so that two emits racing for the last one cannot both win.
        let taken = inner
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.max_pending).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(EmitError::Full(inner.max_pending));
        }
        let fresh = inner
            .seen
            .entry(event.id.clone())
            .or_insert_with(|| ())
            .is_fresh();
        if !fresh || inner.to_worker.send(event).is_err() {
            inner.pending.fetch_sub(1, Ordering::AcqRel);
            return Ok(false);
        }
        Ok(true)
    }

    /// An event left the outbox (delivered or dead).
    pub(crate) fn settled(&self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// How many events wait.
    pub(crate) fn pending(&self) -> usize {
        self.0.pending.load(Ordering::Acquire)
    }

    /// Whether an event could be recorded now (for the webhook's 503 before anything is
    /// written).
    pub(crate) fn has_room(&self) -> bool {
        self.pending() < self.0.max_pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;
    use serde_json::value::RawValue;

    fn event(key: &str) -> Event {
        let data = RawValue::from_string("{}".to_owned()).unwrap();
        Event::passed_on(EventType::WebhookUnrecognised, key.as_bytes(), &data)
    }

    #[test]
    fn an_event_is_recorded_once_and_the_bound_holds() {
        let (outbox, mut worker) = MemoryOutbox::new(2, Duration::from_secs(60));
        assert!(outbox.emit(event("a")).unwrap());
        assert!(!outbox.emit(event("a")).unwrap());
        assert!(outbox.emit(event("b")).unwrap());
        assert!(matches!(outbox.emit(event("c")), Err(EmitError::Full(2))));
        assert!(!outbox.has_room());
        assert!(worker.try_recv().is_ok());
        outbox.settled();
        assert!(outbox.emit(event("c")).unwrap());
        assert_eq!(outbox.pending(), 2);
    }
}
