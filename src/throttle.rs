//! One throttled warning: a condition that may recur thousands of times a second (the
//! connection limit, accept errors, the shared store down) gets a log line at most every
//! [`WARN_INTERVAL`], and that line says how many occurrences it stands for. A leaf: the server
//! and the shared store each hold one [`Throttle`] per condition.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per condition in this time.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Rate-limits one warning. Shared by reference: the lock is held for two assignments and
/// never across an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Throttle(Mutex<Window>);

#[derive(Debug, Default)]
struct Window {
    /// When the last line was allowed.
    last: Option<Instant>,
    /// Occurrences since then that got no line.
    skipped: u64,
}

impl Throttle {
    /// A throttle that allows its first line at once.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `Some(occurrences not logged since the last line)` when a line may be written now;
    /// `None` (and the occurrence counted) when it may not.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut window = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if window
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            window.skipped += 1;
            return None;
        }
        window.last = Some(now);
        Some(std::mem::take(&mut window.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_says_how_many_it_stands_for() {
        let throttle = Throttle::new();
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(9)), None);
        assert_eq!(throttle.allow(start + WARN_INTERVAL), Some(2));
        assert_eq!(throttle.allow(start + WARN_INTERVAL), None);
    }
}
