//! The in-process window (SPEC "Shared deduplication", first paragraph): remembered 2xx
//! answers in a `moka` cache — the design's choice — with `time_to_live` =
//! `RELAY_DEDUP_TTL_SECS`, `max_capacity` = `RELAY_DEDUP_CAPACITY` and least-recently-used
//! eviction. LRU rather than moka's default TinyLFU, because TinyLFU's admission may refuse a
//! new `messageId`, and a send that is not remembered can be sent twice.
//!
//! Only finished sends live here; sends in flight are held apart, in the coordinator's own
//! table (`dedup/mod.rs`), so the cache can never evict one. With a shared store, this cache
//! also keeps every answer read from it: remembered answers never change, so a replay served
//! from here costs no Redis round trip. Such a copy keeps the time Redis had left on it
//! (moka's per-entry [`Expiry`]), so no replica replays a `messageId` after the shared window
//! has forgotten it; answers of this process's own sends take the window's `time_to_live`,
//! and skip moka's timer wheel.

use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::Remembered;

/// The moka window.
#[derive(Clone)]
pub(crate) struct MemoryWindow {
    /// Keyed by the same `Arc<str>` as the send's entry in flight: no copy of the key.
    cache: Cache<Arc<str>, Entry, foldhash::fast::RandomState>,
}

/// A remembered answer and, for a copy from the shared window, the time it has left there.
#[derive(Clone)]
struct Entry {
    answer: Remembered,
    expires_in: Option<Duration>,
}

/// Copies expire with the shared window; everything else after the window's TTL.
struct CopiesExpireWithRedis;

impl Expiry<Arc<str>, Entry> for CopiesExpireWithRedis {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        entry: &Entry,
        _: std::time::Instant,
    ) -> Option<Duration> {
        entry.expires_in
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        entry: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        entry.expires_in
    }
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
    pub(crate) fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(CopiesExpireWithRedis)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The remembered answer for `message_id`, if any.
    pub(crate) fn get(&self, message_id: &str) -> Option<Remembered> {
        self.cache.get(message_id).map(|entry| entry.answer)
    }

    /// Remembers the answer of a send of this process, for the window's TTL.
    pub(crate) fn insert(&self, message_id: Arc<str>, answer: Remembered) {
        let entry = Entry {
            answer,
            expires_in: None,
        };
        self.cache.insert(message_id, entry);
    }

    /// Keeps a copy of an answer read from the shared window, for the time it has left there
    /// (never longer than the window's own TTL).
    pub(crate) fn insert_copy(
        &self,
        message_id: Arc<str>,
        answer: Remembered,
        expires_in: Duration,
    ) {
        let entry = Entry {
            answer,
            expires_in: Some(expires_in),
        };
        self.cache.insert(message_id, entry);
    }

    /// Answers remembered now, after moka's pending evictions and expiries are applied.
    pub(crate) fn entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprint;
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

    #[test]
    fn a_copy_from_the_shared_window_expires_when_redis_forgets_it() {
        let window = MemoryWindow::new(10, Duration::from_secs(60));
        window.insert_copy(Arc::from("copy"), answer(1), Duration::from_millis(50));
        window.insert(Arc::from("own"), answer(1));
        assert!(window.get("copy").is_some());
        // moka reads its own monotonic clock: this waits the 50 ms out.
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            window.get("copy").is_none(),
            "the copy keeps Redis's time left"
        );
        assert!(
            window.get("own").is_some(),
            "an own answer keeps the window's TTL"
        );
    }

    #[test]
    fn a_copy_never_outlives_the_windows_ttl() {
        let window = MemoryWindow::new(10, Duration::from_millis(50));
        window.insert_copy(Arc::from("copy"), answer(1), Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(120));
        assert!(window.get("copy").is_none());
    }
}
