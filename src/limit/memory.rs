//! The in-process limits (SPEC "Rate limits that match WhatsApp's", "In one process"): two
//! keyed GCRA limiters from the `governor` crate, one per `from` and one per (`from`, `to`).
//!
//! - Keys are the numbers themselves, packed into `u64`s (a leading `1` before the digits keeps
//!   `0254…` and `254…` apart): no allocation per send, 8 or 16 bytes per key.
//! - State lives in governor's `DashMap` store (sharded, so concurrent sends rarely contend),
//!   hashed with foldhash's per-process seed (callers choose the `to` numbers).
//! - The clock is [`TokioClock`], which reads `tokio::time::Instant`: in production that is the
//!   monotonic clock, and under a paused test runtime it follows `tokio::time::advance`, so the
//!   unit tests of `limit/` run on paused time. governor's own clocks (quanta, `std`) would not.
//! - Memory: a key whose theoretical arrival time (TAT) has passed is indistinguishable from a
//!   fresh one, and [`LocalLimits::sweep`] drops those (governor's `retain_recent`) and gives
//!   the freed table capacity back (`shrink_to_fit`). It is called periodically by a task of
//!   `serve` (see `limit/mod.rs`), so the tables hold only senders and pairs active in the last
//!   few intervals.

use std::num::NonZeroU32;
use std::ops::Add;
use std::time::{Duration, Instant};

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::phone::PhoneNumber;

/// A point on [`TokioClock`]: a `std` instant read through tokio, so that it is `Copy` and
/// `Ord` as governor needs, and pausable as the tests need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        // An overflow would need a TAT centuries ahead; keep the instant rather than panic.
        Self(self.0.checked_add(other.into()).unwrap_or(self.0))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

/// governor's clock, read from `tokio::time::Instant::now()`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now().into_std())
    }
}

type Hasher = foldhash::fast::RandomState;
type Keyed<K> =
    RateLimiter<K, DashMapStateStore<K, Hasher>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// A sender's key.
type SenderKey = u64;
/// A pair's key: (`from`, `to`).
type PairKey = (u64, u64);

/// The per-sender and per-pair limiters of this process; `None` where switched off.
#[derive(Debug)]
pub(crate) struct LocalLimits {
    sender: Option<Keyed<SenderKey>>,
    pair: Option<Keyed<PairKey>>,
}

impl LocalLimits {
    /// The limiters `config` switches on.
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        let sender = NonZeroU32::new(config.sender_rate).map(|rate| {
            // `per_second(n)`: one cell every 1/n s, bursts of n (one second's worth).
            let quota = Quota::per_second(rate);
            RateLimiter::dashmap_with_clock_and_hasher(quota, TokioClock, Hasher::default())
        });
        let pair = Quota::with_period(config.pair_interval).map(|quota| {
            let burst = NonZeroU32::new(config.pair_burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::dashmap_with_clock_and_hasher(
                quota.allow_burst(burst),
                TokioClock,
                Hasher::default(),
            )
        });
        Self { sender, pair }
    }

    /// Takes a cell of the pair's limit, or says how long until one is free (taking nothing).
    pub(crate) fn check_pair(&self, from: &PhoneNumber, to: &PhoneNumber) -> Result<(), Duration> {
        let Some(limiter) = &self.pair else {
            return Ok(());
        };
        limiter
            .check_key(&(number_key(from), number_key(to)))
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }

    /// Takes a cell of the sender's limit, or says how long until one is free (taking nothing).
    pub(crate) fn check_sender(&self, from: &PhoneNumber) -> Result<(), Duration> {
        let Some(limiter) = &self.sender else {
            return Ok(());
        };
        limiter
            .check_key(&number_key(from))
            .map_err(|not_until| not_until.wait_time_from(TokioClock.now()))
    }

    /// Drops every key whose state is as good as fresh, and returns the freed capacity.
    /// O(keys); each `DashMap` shard is locked only while it is walked.
    pub(crate) fn sweep(&self) {
        if let Some(limiter) = &self.sender {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.pair {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys held: (senders, pairs).
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        (
            self.sender.as_ref().map_or(0, Keyed::len),
            self.pair.as_ref().map_or(0, Keyed::len),
        )
    }
}

/// `1` followed by the digits, as a number: unique per number (8–15 digits fit with room to
/// spare), and leading zeros stay significant.
fn number_key(number: &PhoneNumber) -> u64 {
    number.digits().bytes().fold(1_u64, |key, digit| {
        key.wrapping_mul(10)
            .wrapping_add(u64::from(digit.wrapping_sub(b'0')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> PhoneNumber {
        PhoneNumber::parse(text).unwrap()
    }

    #[test]
    fn number_keys_keep_leading_zeros_apart() {
        assert_eq!(number_key(&number("254712345678")), 1_254_712_345_678);
        assert_ne!(
            number_key(&number("0254712345678")),
            number_key(&number("254712345678"))
        );
        assert_eq!(
            number_key(&number("999999999999999")),
            1_999_999_999_999_999,
            "15 digits fit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_paused_time() {
        let before = TokioClock.now();
        tokio::time::advance(Duration::from_secs(6)).await;
        let after = TokioClock.now();
        assert_eq!(
            Duration::from(after.duration_since(before)),
            Duration::from_secs(6)
        );
        assert_eq!(before.duration_since(after), Nanos::from(Duration::ZERO));
        assert_eq!(
            after.saturating_sub(Nanos::from(Duration::from_secs(6))),
            before
        );
    }
}
