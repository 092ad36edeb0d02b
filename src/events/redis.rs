//! Pending events in a Redis stream with a consumer group: to be written.

use super::Event;
use crate::store::{SharedStore, StoreError};

/// The shared outbox.
#[derive(Clone)]
pub(crate) struct RedisOutbox {
    store: SharedStore,
}

impl RedisOutbox {
    pub(crate) fn new(
        store: SharedStore,
        _consumer: String,
        _seen_ttl: std::time::Duration,
    ) -> Self {
        Self { store }
    }

    pub(crate) async fn emit(&self, _event: &Event) -> Result<bool, StoreError> {
        let _ = &self.store;
        Err(StoreError::Unreached("not yet built".into()))
    }
}

/// An event this replica took from the stream.
pub(crate) struct Taken {
    pub(crate) entry: String,
    pub(crate) event: Event,
}

impl RedisOutbox {
    pub(crate) async fn take_new(&self, _count: usize) -> Result<Vec<Taken>, StoreError> {
        Ok(Vec::new())
    }

    pub(crate) async fn take_stale(
        &self,
        _min_idle: std::time::Duration,
        _count: usize,
    ) -> Result<Vec<Taken>, StoreError> {
        Ok(Vec::new())
    }

    pub(crate) async fn keep(&self, _entries: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    pub(crate) async fn done(&self, _entry: &str) -> Result<(), StoreError> {
        Ok(())
    }

    pub(crate) async fn pending(&self) -> Result<(u64, Option<u64>), StoreError> {
        Ok((0, None))
    }
}
