//! Pending events in a Redis stream with a consumer group: to be written.

use super::Event;
use crate::store::{SharedStore, StoreError};

/// The shared outbox.
#[derive(Clone)]
pub(crate) struct RedisOutbox {
    store: SharedStore,
}

impl RedisOutbox {
    pub(crate) fn new(store: SharedStore) -> Self {
        Self { store }
    }

    pub(crate) async fn emit(&self, _event: &Event) -> Result<bool, StoreError> {
        let _ = &self.store;
        Err(StoreError::Unreached("not yet built".into()))
    }
}
