//! The in-process window (SPEC "Shared deduplication", first paragraph): remembered 2xx
//! answers in a `moka` cache — the design's choice — with `time_to_live` =
//! `RELAY_DEDUP_TTL_SECS`, `max_capacity` = `RELAY_DEDUP_CAPACITY` and least-recently-used
//! eviction. LRU rather than moka's default TinyLFU, because TinyLFU's admission may refuse a
//! new `messageId`, and a send that is not remembered can be sent twice.
//!
//! Only finished sends live here; sends in flight are held apart, in the coordinator's own
//! table (`dedup/mod.rs`), so the cache can never evict one. With a shared store, this cache
//! also keeps every answer read from it: remembered answers never change, so a replay served
//! from here costs no Redis round trip.

use std::sync::Arc;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{Claim, ClaimToken, Deduplicate, Remembered};
use crate::fingerprint::Fingerprint;
use crate::store::StoreError;

/// The moka window.
#[derive(Clone)]
pub struct MemoryWindow {
    /// Keyed by the same `Arc<str>` as the send's entry in flight: no copy of the key.
    cache: Cache<Arc<str>, Remembered, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for MemoryWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryWindow")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl MemoryWindow {
    /// At most `capacity` answers, each for `ttl` from when it was remembered.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_policy(EvictionPolicy::lru())
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The remembered answer for `message_id`, if any.
    pub fn get(&self, message_id: &str) -> Option<Remembered> {
        self.cache.get(message_id)
    }

    /// Remembers an answer.
    pub fn insert(&self, message_id: Arc<str>, answer: Remembered) {
        self.cache.insert(message_id, answer);
    }

    /// Answers remembered now, after moka's pending evictions and expiries are applied.
    pub fn entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

impl Deduplicate for MemoryWindow {
    async fn claim(
        &self,
        message_id: &str,
        _fingerprint: Fingerprint,
        _lease: Duration,
    ) -> Result<Claim, StoreError> {
        // In flight is the coordinator's table: a miss here means "go ahead".
        Ok(match self.get(message_id) {
            Some(answer) => Claim::Remembered(answer),
            None => Claim::Claimed(ClaimToken::Local),
        })
    }

    async fn complete(
        &self,
        message_id: &str,
        _token: &ClaimToken,
        answer: Option<&Remembered>,
    ) -> Result<(), StoreError> {
        if let Some(answer) = answer {
            self.insert(Arc::from(message_id), answer.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn answer(n: u8) -> Remembered {
        Remembered {
            fingerprint: Fingerprint::of("media", &[n]),
            status: StatusCode::OK,
            content_type: None,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn at_capacity_a_new_id_is_admitted_and_the_least_recently_used_goes() {
        let window = MemoryWindow::new(3, Duration::from_secs(60));
        for id in ["a", "b", "c"] {
            window.insert(Arc::from(id), answer(1));
            window.entries();
        }
        // Reading "a" makes "b" the least recently used.
        assert!(window.get("a").is_some());
        window.entries();
        window.insert(Arc::from("d"), answer(1));
        assert_eq!(window.entries(), 3);
        assert!(window.get("d").is_some(), "the new id must be admitted");
        assert!(window.get("b").is_none(), "the least recently used goes");
        for id in ["a", "c", "d"] {
            assert!(window.get(id).is_some(), "{id}");
        }
    }

    #[test]
    fn a_full_window_admits_every_new_id() {
        let window = MemoryWindow::new(100, Duration::from_secs(60));
        for n in 0..1_000 {
            let id = format!("m-{n}");
            window.insert(Arc::from(id.as_str()), answer(1));
            assert!(window.get(&id).is_some(), "{id} was not admitted");
        }
        assert!(window.entries() <= 100);
    }

    #[test]
    fn answers_expire_after_the_ttl() {
        let window = MemoryWindow::new(10, Duration::from_millis(50));
        window.insert(Arc::from("a"), answer(1));
        assert!(window.get("a").is_some());
        // moka reads its own monotonic clock, which paused tokio time does not move: this
        // waits the 50 ms TTL out.
        std::thread::sleep(Duration::from_millis(120));
        assert!(window.get("a").is_none());
    }
}
