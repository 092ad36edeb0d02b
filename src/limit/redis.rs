//! The shared limits (SPEC "Rate limits that match WhatsApp's", "with `RELAY_REDIS_URL`"): the
//! same two GCRA limits, kept in Redis, Valkey or a Redis Cluster for every replica at once.
//!
//! One script per send ([`RESERVE`], one round trip) reads both keys, works out how long the
//! send must wait for each, and either refuses (the longer wait does not fit in the budget the
//! relay passes) or reserves the send's slot in both keys at the time it will leave, and says
//! how long to sleep first. Reserving rather than "check, sleep, check again" keeps it to one
//! round trip per send however long the queue, serves waiters in arrival order, and stamps both
//! keys with the send's real departure time, so neither limit is charged early or twice.
//!
//! - Time comes from Redis (`TIME`), so every replica reads one clock; only durations cross the
//!   wire. Times are whole microseconds (exact in Lua's doubles for centuries); a sender period
//!   that is not a whole number of microseconds is rounded up, never down.
//! - Keys: `{prefix}:rate:{<from>}:sender` and `{prefix}:rate:{<from>}:pair:<to>`. The braces
//!   around the `from` digits are a Cluster hash tag (the prefix cannot hold braces: config
//!   refuses them), so both keys of a send sit in one slot and the script runs on one node.
//! - Each key holds its TAT and expires (`PX`) when the TAT has passed: from then on it would
//!   read the same as a missing key, so Redis holds only senders and pairs still within their
//!   last interval.
//! - Each key also holds the nonce of the send that last moved it (`<tat>:<nonce>`). A client
//!   library that sends the script again after losing its reply (the Cluster client retries a
//!   call once) finds its own nonce and gets its first answer back instead of a second slot:
//!   a send is charged once.
//! - A reserved slot stays spent if its send then ends before leaving (a drain during the
//!   wait): the limits err on the side of sending less.

use std::time::Duration;

use redis::Script;

use crate::config::RateLimitConfig;
use crate::metrics::StoreOp;
use crate::outcome::LimitScope;
use crate::phone::PhoneNumber;
use crate::store::{SharedStore, StoreError};

/// Reserves a slot in both keys, or refuses.
///
/// KEYS: sender, pair. ARGV: sender period and tolerance (µs; period 0 = off), pair period and
/// tolerance, the longest wait allowed (µs), the send's nonce. Returns `{verdict, wait,
/// scope}`: verdict 0 = go after `wait` µs, 1 = refused (a slot is `wait` µs away); scope 1 =
/// sender, 2 = pair, the key with the longer wait. A key that already holds this nonce means
/// this send was charged by an earlier run of the script: go, after what is left of its wait.
pub const RESERVE: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local nonce = ARGV[6]
local tat = {now, now}
local wait = {0, 0}
for i = 1, 2 do
  local period = tonumber(ARGV[2 * i - 1])
  if period > 0 then
    local value = redis.call('GET', KEYS[i])
    local held, owner = nil, nil
    if value then
      held, owner = string.match(value, '^(%d+):?(.*)$')
      held = tonumber(held)
    end
    if held and owner == nonce then
      return {0, math.max(0, held - period - now), i}
    end
    if held and held > now then
      tat[i] = held
    end
    local earliest = tat[i] - tonumber(ARGV[2 * i])
    if earliest > now then
      wait[i] = earliest - now
    end
  end
end
local scope = 1
if wait[2] >= wait[1] then
  scope = 2
end
local longest = wait[scope]
if longest > tonumber(ARGV[5]) then
  return {1, longest, scope}
end
local leaves = now + longest
for i = 1, 2 do
  local period = tonumber(ARGV[2 * i - 1])
  if period > 0 then
    local next = math.max(tat[i], leaves) + period
    redis.call('SET', KEYS[i], string.format('%.0f:%s', next, nonce), 'PX', math.ceil((next - now) / 1000))
  end
end
return {0, longest, scope}
";

/// One GCRA limit in whole microseconds: a cell every `period`, `tolerance` = (burst − 1)
/// periods early at most. `period` 0 = off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Gcra {
    period: u64,
    tolerance: u64,
}

impl Gcra {
    fn new(period: Duration, burst: u32) -> Self {
        // Round up: a limit kept in whole microseconds may only be stricter than configured.
        let nanos = period.as_nanos();
        let period = u64::try_from(nanos.div_ceil(1_000)).unwrap_or(u64::MAX);
        Self {
            period,
            tolerance: period.saturating_mul(u64::from(burst.saturating_sub(1))),
        }
    }
}

/// What the script decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// The slot is reserved: leave after `wait`; `scope` is the limit that made it wait.
    Go {
        /// How long to wait before leaving.
        wait: Duration,
        /// The limit with the longer wait.
        scope: LimitScope,
    },
    /// No slot within the budget; the earliest is `retry_after` away.
    Refused {
        /// The limit with the longer wait.
        scope: LimitScope,
        /// How far away the earliest slot is.
        retry_after: Duration,
    },
}

/// The Redis limits.
#[derive(Clone, Debug)]
pub(crate) struct SharedLimits {
    store: SharedStore,
    sender: Gcra,
    pair: Gcra,
    script: std::sync::Arc<Script>,
}

impl SharedLimits {
    /// The limits of `config`, kept in `store`.
    pub(crate) fn new(store: SharedStore, config: &RateLimitConfig) -> Self {
        let sender = if config.sender_rate == 0 {
            Gcra::default()
        } else {
            let rate = config.sender_rate;
            Gcra::new(Duration::from_secs(1) / rate, rate)
        };
        let pair = if config.pair_interval.is_zero() {
            Gcra::default()
        } else {
            Gcra::new(config.pair_interval, config.pair_burst.max(1))
        };
        Self {
            store,
            sender,
            pair,
            script: std::sync::Arc::new(Script::new(RESERVE)),
        }
    }

    /// The store, for its failure mode and warnings.
    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Reserves a slot for one send from `from` to `to` that may wait up to `budget`.
    pub(crate) async fn reserve(
        &self,
        from: &PhoneNumber,
        to: &PhoneNumber,
        budget: Duration,
    ) -> Result<Reservation, StoreError> {
        self.reserve_for(from, to, budget, fastrand::u64(1..)).await
    }

    /// [`SharedLimits::reserve`] for the send known by `nonce`: run again for the same send
    /// (the same nonce), it charges nothing more and answers as the first run did.
    pub(crate) async fn reserve_for(
        &self,
        from: &PhoneNumber,
        to: &PhoneNumber,
        budget: Duration,
        nonce: u64,
    ) -> Result<Reservation, StoreError> {
        let (sender_key, pair_key) = keys(self.store.prefix(), from, to);
        let args = [
            self.sender.period.to_string(),
            self.sender.tolerance.to_string(),
            self.pair.period.to_string(),
            self.pair.tolerance.to_string(),
            u64::try_from(budget.as_micros())
                .unwrap_or(u64::MAX)
                .to_string(),
            format!("{nonce:x}"),
        ];
        let args: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
        let (verdict, wait, scope): (i64, i64, i64) = self
            .store
            .script(
                StoreOp::Limit,
                &self.script,
                &[&sender_key, &pair_key],
                &args,
            )
            .await?;
        let wait = Duration::from_micros(u64::try_from(wait).unwrap_or(0));
        let scope = if scope == 1 {
            LimitScope::Sender
        } else {
            LimitScope::Pair
        };
        Ok(match verdict {
            0 => Reservation::Go { wait, scope },
            _ => Reservation::Refused {
                scope,
                retry_after: wait,
            },
        })
    }
}

/// `{prefix}:rate:{<from>}:sender` and `{prefix}:rate:{<from>}:pair:<to>`.
fn keys(prefix: &str, from: &PhoneNumber, to: &PhoneNumber) -> (Vec<u8>, Vec<u8>) {
    let mut sender = Vec::with_capacity(prefix.len() + 32);
    sender.extend_from_slice(prefix.as_bytes());
    sender.extend_from_slice(b":rate:{");
    sender.extend_from_slice(from.digits().as_bytes());
    sender.push(b'}');
    let mut pair = sender.clone();
    sender.extend_from_slice(b":sender");
    pair.extend_from_slice(b":pair:");
    pair.extend_from_slice(to.digits().as_bytes());
    (sender, pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_of_a_sender_share_one_hash_tag() {
        let from = PhoneNumber::parse("254110090747").unwrap();
        let to = PhoneNumber::parse("254712345678").unwrap();
        let (sender, pair) = keys("lipachat-relay", &from, &to);
        assert_eq!(sender, b"lipachat-relay:rate:{254110090747}:sender");
        assert_eq!(
            pair,
            b"lipachat-relay:rate:{254110090747}:pair:254712345678"
        );
    }

    #[test]
    fn periods_round_up_to_whole_microseconds() {
        assert_eq!(
            Gcra::new(Duration::from_secs(1) / 80, 80),
            Gcra {
                period: 12_500,
                tolerance: 12_500 * 79
            }
        );
        let third = Gcra::new(Duration::from_secs(1) / 3, 3);
        assert_eq!(third.period, 333_334);
        assert_eq!(
            Gcra::new(Duration::from_millis(6_000), 45).tolerance,
            6_000_000 * 44
        );
    }
}
