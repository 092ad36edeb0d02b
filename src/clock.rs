//! Wall-clock time as Unix numbers, written once. Event ages, queued sends' due times and the
//! Standard Webhooks `webhook-timestamp` count in these, so every replica reads them alike; a
//! clock before 1970 reads as 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds of `time`.
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, millis)
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
