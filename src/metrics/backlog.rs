//! What waits, and for how long: a count and the age of the oldest, the two gauges that say
//! whether a background worker keeps up (events waiting for delivery; queued sends).

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// A count gauge and an oldest-age gauge (seconds), registered together.
#[derive(Clone, Debug, Default)]
pub(crate) struct Backlog {
    count: Gauge,
    oldest: Gauge,
}

impl Backlog {
    /// Registers both: `count` and `oldest` are each a name and its help.
    pub(super) fn register(
        registry: &mut Registry,
        count: (&str, &str),
        oldest: (&str, &str),
    ) -> Self {
        let backlog = Self::default();
        registry.register(count.0, count.1, backlog.count.clone());
        registry.register_with_unit(oldest.0, oldest.1, Unit::Seconds, backlog.oldest.clone());
        backlog
    }

    /// How many wait, and the age in seconds of the oldest.
    pub(crate) fn set(&self, count: u64, oldest_secs: u64) {
        self.count.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.oldest
            .set(i64::try_from(oldest_secs).unwrap_or(i64::MAX));
    }
}
