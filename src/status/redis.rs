//! Status records in the shared store: to be written (one hash per message, the merge in one
//! script).

use super::{Merged, Record, Update};
use crate::store::{SharedStore, StoreError};

/// The shared records.
#[derive(Clone)]
pub(crate) struct RedisStatus {
    store: SharedStore,
}

impl RedisStatus {
    pub(crate) fn new(store: SharedStore, _ttl: std::time::Duration) -> Self {
        Self { store }
    }

    pub(crate) async fn apply(
        &self,
        _message_id: &str,
        _update: &Update,
    ) -> Result<Merged, StoreError> {
        let _ = &self.store;
        Err(StoreError::Unreached("not yet built".into()))
    }

    pub(crate) async fn get(&self, _message_id: &str) -> Result<Option<Record>, StoreError> {
        Err(StoreError::Unreached("not yet built".into()))
    }

    pub(crate) async fn message_of(&self, _wa_id: &str) -> Result<Option<String>, StoreError> {
        Err(StoreError::Unreached("not yet built".into()))
    }
}

impl RedisStatus {
    pub(crate) async fn accepted(
        &self,
        message_id: &str,
        update: &Update,
        _event: Option<&crate::events::Event>,
        _outbox: &crate::events::redis::RedisOutbox,
    ) -> Result<Merged, StoreError> {
        self.apply(message_id, update).await
    }
}
