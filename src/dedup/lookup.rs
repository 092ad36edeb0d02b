//! `GET /messages/{messageId}` without status records: what the dedup window remembers.

use super::{Dedup, Remembered};
use crate::store::StoreError;

impl Dedup {
    /// The remembered answer of `message_id`: this process's window, then the shared one.
    pub(crate) async fn remembered(
        &self,
        message_id: &str,
    ) -> Result<Option<Remembered>, StoreError> {
        if let Some(answer) = self.0.memory.get(message_id) {
            return Ok(Some(answer));
        }
        match &self.0.shared {
            Some(shared) => shared.remembered(message_id).await,
            None => Ok(None),
        }
    }
}
