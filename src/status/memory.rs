//! Status records in this process's memory: a moka cache bounded by `RELAY_STATUS_CAPACITY`,
//! each entry living `RELAY_STATUS_TTL_SECS` from its last change, the merge run under the
//! entry's lock so two callbacks for one message never both win. A second, smaller map finds
//! a record from the gateway's `waId` (Meta-shaped callbacks name only that).

use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{Merged, Record, Update, merge};

/// The in-process records.
#[derive(Clone)]
pub(crate) struct MemoryStatus {
    records: Cache<String, Arc<Record>>,
    wa_ids: Cache<Arc<str>, Arc<str>>,
}

impl MemoryStatus {
    pub(crate) fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            records: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            wa_ids: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub(crate) fn apply(&self, message_id: &str, update: &Update) -> Merged {
        let mut merged = None;
        self.records
            .entry(message_id.to_owned())
            .and_compute_with(|entry| {
                let existing = entry.map(|entry| Record::clone(entry.value()));
                let result = merge(existing, message_id, update);
                let op = if result.changed {
                    Op::Put(Arc::new(result.record.clone()))
                } else {
                    Op::Nop
                };
                merged = Some(result);
                op
            });
        let merged = merged.unwrap_or_else(|| merge(None, message_id, update));
        if let Some(wa_id) = update
            .send
            .as_ref()
            .and_then(|facts| facts.wa_id.as_deref())
        {
            self.wa_ids.insert(Arc::from(wa_id), Arc::from(message_id));
        }
        merged
    }

    pub(crate) fn get(&self, message_id: &str) -> Option<Record> {
        self.records
            .get(message_id)
            .map(|record| Record::clone(&record))
    }

    pub(crate) fn message_of(&self, wa_id: &str) -> Option<String> {
        self.wa_ids.get(wa_id).map(|id| id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::update;
    use super::super::{SendFacts, Status};
    use super::*;

    #[test]
    fn the_cache_keeps_the_merged_record_and_finds_it_by_wa_id() {
        let store = MemoryStatus::new(100, Duration::from_secs(60));
        let mut sent = update(Status::Sent, "t1");
        sent.send = Some(SendFacts {
            wa_id: Some("wamid.9".into()),
            ..SendFacts::default()
        });
        assert!(store.apply("m1", &sent).changed);
        assert!(store.apply("m1", &update(Status::Read, "t2")).changed);
        assert!(!store.apply("m1", &update(Status::Delivered, "t3")).changed);
        let record = store.get("m1").unwrap();
        assert_eq!(record.status, Status::Read);
        assert_eq!(store.message_of("wamid.9").as_deref(), Some("m1"));
        assert!(store.get("m2").is_none());
    }
}
