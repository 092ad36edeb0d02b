//! The shared window (SPEC "Shared deduplication: across restarts and replicas"): one key per
//! `messageId` in Redis, Valkey or a Redis Cluster, shared by every replica and every restart.
//!
//! - Claim: one script ([`CLAIM`]) that sets the claim if nothing is there (this replica
//!   leads), or returns what holds the key, with the time it has left, without changing it:
//!   another replica's claim in flight, or a remembered answer (whose time left goes into
//!   moka with it, so no replica replays a `messageId` longer than Redis remembers it).
//! - Complete: one script ([`COMPLETE`]) that compares the key with this leader's claim and,
//!   only if it is still ours, replaces it with the remembered answer for
//!   `RELAY_DEDUP_TTL_SECS` (a 2xx) or deletes it (anything else). A 2xx whose claim has
//!   vanished (Redis restarted without persistence, a failover) is written all the same; a
//!   claim taken meanwhile by another replica, or an answer already there, is left alone. The
//!   script says which of these it did ([`Completion`]).
//!
//! The claim's value is made by the caller ([`claim_value`]), so a claim whose reply timed out
//! is still known: it may have been applied after the stall, and is then completed or released
//! like any other (see `dedup/mod.rs`).
//!
//! Each operation touches one key, so it works unchanged on a Cluster. Values are compact
//! binary: `C` + fingerprint (16 bytes) + owner (16 bytes) for a claim, `R` + fingerprint +
//! status (2 bytes) + content-type length (1 byte) + content type + body for an answer.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use redis::Script;

use super::Remembered;
use crate::fingerprint::Fingerprint;
use crate::metrics::StoreOp;
use crate::store::{SharedStore, StoreError};

const CLAIM_TAG: u8 = b'C';
const ANSWER_TAG: u8 = b'R';
/// Tag, fingerprint and owner: the claim's whole value, compared on completion.
const CLAIM_LEN: usize = 1 + 16 + 16;

/// Sets the claim (ARGV[1], for ARGV[2] ms) when the key is empty and returns nil; otherwise
/// returns what holds it and its time left in ms, unchanged.
const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  return {held, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Replaces (ARGV[2] non-empty, for ARGV[3] ms) or deletes the key if it still holds this
/// leader's claim (ARGV[1]): 1. Writes a 2xx answer into an empty key (the claim vanished): 2.
/// Leaves anything else alone: 0.
const COMPLETE: &str = r"
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
  return 1
end
if not held and ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 2
end
return 0
";

/// What the shared window holds for a `messageId` that this replica tried to claim.
#[derive(Debug)]
pub(crate) enum Held {
    /// Nothing was there: the claim is set, this replica leads.
    Claimed,
    /// A send with this fingerprint was answered 2xx; Redis keeps it for `expires_in` more.
    Remembered {
        answer: Remembered,
        expires_in: Duration,
    },
    /// Another replica is sending it, with this fingerprint.
    InFlight(Fingerprint),
}

/// What a completion did: the `result` label of the completions metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The claim was still ours: replaced by the answer, or released.
    Completed,
    /// The claim had vanished: the 2xx answer was written all the same.
    Restored,
    /// Another replica's claim or an answer holds the key: left alone.
    Superseded,
}

/// The Redis window.
#[derive(Clone, Debug)]
pub(crate) struct RedisWindow {
    store: SharedStore,
    ttl_ms: u64,
    claim: std::sync::Arc<Script>,
    complete: std::sync::Arc<Script>,
    peek: std::sync::Arc<Script>,
}

impl RedisWindow {
    /// Remembers answers for `ttl`.
    pub(crate) fn new(store: SharedStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl_ms: crate::clock::millis(ttl).max(1),
            claim: std::sync::Arc::new(Script::new(CLAIM)),
            complete: std::sync::Arc::new(Script::new(COMPLETE)),
            peek: std::sync::Arc::new(Script::new(PEEK)),
        }
    }

    /// The store, for its failure mode and warnings.
    pub(crate) fn store(&self) -> &SharedStore {
        &self.store
    }

    /// `{prefix}:dedup:{messageId}`.
    fn key(&self, message_id: &str) -> Vec<u8> {
        let prefix = self.store.prefix();
        let mut key = Vec::with_capacity(prefix.len() + 7 + message_id.len());
        key.extend_from_slice(prefix.as_bytes());
        key.extend_from_slice(b":dedup:");
        key.extend_from_slice(message_id.as_bytes());
        key
    }
}

/// A new claim for a send with `fingerprint`: its owner is random, so no two claims are equal.
pub(crate) fn claim_value(fingerprint: Fingerprint) -> Box<[u8]> {
    claim_value_of(fingerprint, fastrand::u128(..).to_be_bytes())
}

fn claim_value_of(fingerprint: Fingerprint, owner: [u8; 16]) -> Box<[u8]> {
    let mut value = Vec::with_capacity(CLAIM_LEN);
    value.push(CLAIM_TAG);
    value.extend_from_slice(&fingerprint.to_bytes());
    value.extend_from_slice(&owner);
    value.into_boxed_slice()
}

fn answer_value(answer: &Remembered) -> Vec<u8> {
    let content_type = answer
        .content_type
        .as_ref()
        .map_or(&[][..], HeaderValue::as_bytes);
    // Longer content types are not worth a wider field: store them as plain JSON's absence.
    let content_type = if content_type.len() > usize::from(u8::MAX) {
        &[][..]
    } else {
        content_type
    };
    let mut value = Vec::with_capacity(1 + 16 + 2 + 1 + content_type.len() + answer.body.len());
    value.push(ANSWER_TAG);
    value.extend_from_slice(&answer.fingerprint.to_bytes());
    value.extend_from_slice(&answer.status.as_u16().to_be_bytes());
    value.push(u8::try_from(content_type.len()).unwrap_or(0));
    value.extend_from_slice(content_type);
    value.extend_from_slice(&answer.body);
    value
}

/// Reads a value; `None` for anything this relay did not write (a foreign key under our
/// prefix), which is then treated as a claim by nobody we know of.
fn parse(value: &[u8], expires_in: Duration) -> Option<Held> {
    let (&tag, rest) = value.split_first()?;
    let fingerprint = Fingerprint::from_bytes(rest.get(..16)?.try_into().ok()?);
    match tag {
        CLAIM_TAG if value.len() == CLAIM_LEN => Some(Held::InFlight(fingerprint)),
        ANSWER_TAG => {
            let status = u16::from_be_bytes(rest.get(16..18)?.try_into().ok()?);
            let length = usize::from(*rest.get(18)?);
            let content_type = rest.get(19..19 + length)?;
            let body = rest.get(19 + length..)?;
            let answer = Remembered {
                fingerprint,
                status: StatusCode::from_u16(status).ok()?,
                content_type: if content_type.is_empty() {
                    None
                } else {
                    Some(HeaderValue::from_bytes(content_type).ok()?)
                },
                body: Bytes::copy_from_slice(body),
            };
            Some(Held::Remembered { answer, expires_in })
        }
        _ => None,
    }
}

/// A key's time left from `PTTL`: -1 (no expiry, not ours) and -2 (gone) read as none left.
fn time_left(pttl: i64) -> Duration {
    Duration::from_millis(u64::try_from(pttl).unwrap_or(0))
}

/// Reads a key and its time left, changing nothing (`GET /messages/{messageId}`).
const PEEK: &str = r"
local held = redis.call('GET', KEYS[1])
if held then
  return {held, redis.call('PTTL', KEYS[1])}
end
return nil
";

impl RedisWindow {
    /// The remembered answer of `message_id`, if the shared window holds one.
    pub(crate) async fn remembered(
        &self,
        message_id: &str,
    ) -> Result<Option<Remembered>, StoreError> {
        let key = self.key(message_id);
        let held: Option<(Vec<u8>, i64)> = self
            .store
            .script(StoreOp::Lookup, &self.peek, &[&key], &[])
            .await?;
        Ok(
            held.and_then(|(value, pttl)| match parse(&value, time_left(pttl))? {
                Held::Remembered { answer, .. } => Some(answer),
                _ => None,
            }),
        )
    }

    /// Sets `claim` on `message_id` for `lease` if nothing holds it, or says what does.
    pub(crate) async fn claim(
        &self,
        message_id: &str,
        claim: &[u8],
        lease: Duration,
    ) -> Result<Held, StoreError> {
        let lease_ms = crate::clock::millis(lease).max(1);
        let lease_ms = lease_ms.to_string();
        let key = self.key(message_id);
        let held: Option<(Vec<u8>, i64)> = self
            .store
            .script(
                StoreOp::Claim,
                &self.claim,
                &[&key],
                &[claim, lease_ms.as_bytes()],
            )
            .await?;
        match held {
            None => Ok(Held::Claimed),
            // Our own claim: the store sent the script again after losing the connection, and
            // the first one had been carried out.
            Some((value, _)) if *value == *claim => Ok(Held::Claimed),
            Some((value, pttl)) => parse(&value, time_left(pttl)).ok_or_else(|| {
                StoreError::Failed(format!(
                    "the key of this messageId holds a value this relay did not write \
                     (check {} is not shared with other software)",
                    crate::config::vars::REDIS_PREFIX.name
                ))
            }),
        }
    }

    /// Ends `claim`: remembers `answer` (a 2xx) or, with `None`, releases the claim; see
    /// [`COMPLETE`] for when it does either.
    pub(crate) async fn complete(
        &self,
        message_id: &str,
        claim: &[u8],
        answer: Option<&Remembered>,
    ) -> Result<Completion, StoreError> {
        let replacement = answer.map(answer_value).unwrap_or_default();
        let ttl = self.ttl_ms.to_string();
        let key = self.key(message_id);
        let done: i64 = self
            .store
            .script(
                StoreOp::Complete,
                &self.complete,
                &[&key],
                &[claim, &replacement, ttl.as_bytes()],
            )
            .await?;
        Ok(match done {
            1 => Completion::Completed,
            2 => Completion::Restored,
            _ => Completion::Superseded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let fingerprint = Fingerprint::of("media", b"x");
        let answer = Remembered {
            fingerprint,
            status: StatusCode::ACCEPTED,
            content_type: Some(HeaderValue::from_static("application/json;charset=UTF-8")),
            body: Bytes::from_static(b"{\"a\":1}"),
        };
        let second = Duration::from_secs(1);
        let Some(Held::Remembered {
            answer: back,
            expires_in,
        }) = parse(&answer_value(&answer), second)
        else {
            panic!("not an answer")
        };
        assert_eq!(back, answer);
        assert_eq!(expires_in, second);
        let plain = Remembered {
            content_type: None,
            ..answer
        };
        let Some(Held::Remembered { answer: back, .. }) = parse(&answer_value(&plain), second)
        else {
            panic!("not an answer")
        };
        assert_eq!(back, plain);
        let Some(Held::InFlight(back)) = parse(&claim_value_of(fingerprint, [7; 16]), second)
        else {
            panic!("not a claim")
        };
        assert_eq!(back, fingerprint);
    }

    #[test]
    fn no_two_claims_are_equal() {
        let fingerprint = Fingerprint::of("media", b"x");
        assert_ne!(claim_value(fingerprint), claim_value(fingerprint));
        assert_eq!(claim_value(fingerprint).len(), CLAIM_LEN);
    }

    #[test]
    fn a_key_without_an_expiry_or_gone_has_no_time_left() {
        assert_eq!(time_left(-1), Duration::ZERO);
        assert_eq!(time_left(-2), Duration::ZERO);
        assert_eq!(time_left(1_500), Duration::from_millis(1_500));
    }

    #[test]
    fn foreign_values_are_not_read_as_ours() {
        for value in [&b""[..], b"hello", b"C123", b"R0123456789abcdef"] {
            assert!(parse(value, Duration::ZERO).is_none(), "{value:?}");
        }
    }
}
