//! The shared window (SPEC "Shared deduplication: across restarts and replicas"): one key per
//! `messageId` in Redis, Valkey or a Redis Cluster, shared by every replica and every restart.
//!
//! - Claim: one atomic `SET key claim NX PX lease GET` (Redis 7.0 or Valkey 7.2 and later).
//!   It either sets the claim (nothing was there: this replica leads) or returns what holds
//!   the key without changing it: another replica's claim in flight, or a remembered answer.
//! - Complete: one script that compares the key with this leader's claim and, only if it is
//!   still ours, replaces it with the remembered answer for `RELAY_DEDUP_TTL_SECS` (a 2xx) or
//!   deletes it (anything else). A claim whose lease lapsed and was taken by another replica
//!   is left alone.
//!
//! Each operation touches one key, so it works unchanged on a Cluster. Values are compact
//! binary: `C` + fingerprint (16 bytes) + owner (16 bytes) for a claim, `R` + fingerprint +
//! status (2 bytes) + content-type length (1 byte) + content type + body for an answer.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use redis::Script;

use super::{Claim, ClaimToken, Deduplicate, Remembered};
use crate::fingerprint::Fingerprint;
use crate::metrics::StoreOp;
use crate::store::{SharedStore, StoreError};

const CLAIM: u8 = b'C';
const ANSWER: u8 = b'R';
/// Tag, fingerprint and owner: the claim's whole value, compared on completion.
const CLAIM_LEN: usize = 1 + 16 + 16;

/// Replaces (ARGV[2] non-empty, for ARGV[3] ms) or deletes the key, only if it still holds
/// this leader's claim (ARGV[1]). Returns 1 if it did.
const COMPLETE: &str = r"
local held = redis.call('GET', KEYS[1])
if held ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// The Redis window.
#[derive(Clone, Debug)]
pub struct RedisWindow {
    store: SharedStore,
    ttl_ms: u64,
    complete: std::sync::Arc<Script>,
}

impl RedisWindow {
    /// Remembers answers for `ttl`.
    pub fn new(store: SharedStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            complete: std::sync::Arc::new(Script::new(COMPLETE)),
        }
    }

    /// The store, for its failure mode and warnings.
    pub fn store(&self) -> &SharedStore {
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

fn claim_value(fingerprint: Fingerprint, owner: [u8; 16]) -> Vec<u8> {
    let mut value = Vec::with_capacity(CLAIM_LEN);
    value.push(CLAIM);
    value.extend_from_slice(&fingerprint.to_bytes());
    value.extend_from_slice(&owner);
    value
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
    value.push(ANSWER);
    value.extend_from_slice(&answer.fingerprint.to_bytes());
    value.extend_from_slice(&answer.status.as_u16().to_be_bytes());
    value.push(u8::try_from(content_type.len()).unwrap_or(0));
    value.extend_from_slice(content_type);
    value.extend_from_slice(&answer.body);
    value
}

/// Reads a value; `None` for anything this relay did not write (a foreign key under our
/// prefix), which is then treated as a claim by nobody we know of.
fn parse(value: &[u8]) -> Option<Claim> {
    let (&tag, rest) = value.split_first()?;
    let fingerprint = Fingerprint::from_bytes(rest.get(..16)?.try_into().ok()?);
    match tag {
        CLAIM if value.len() == CLAIM_LEN => Some(Claim::InFlight(fingerprint)),
        ANSWER => {
            let status = u16::from_be_bytes(rest.get(16..18)?.try_into().ok()?);
            let length = usize::from(*rest.get(18)?);
            let content_type = rest.get(19..19 + length)?;
            let body = rest.get(19 + length..)?;
            Some(Claim::Remembered(Remembered {
                fingerprint,
                status: StatusCode::from_u16(status).ok()?,
                content_type: if content_type.is_empty() {
                    None
                } else {
                    Some(HeaderValue::from_bytes(content_type).ok()?)
                },
                body: Bytes::copy_from_slice(body),
            }))
        }
        _ => None,
    }
}

impl Deduplicate for RedisWindow {
    async fn claim(
        &self,
        message_id: &str,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let owner = fastrand::u128(..).to_be_bytes();
        let claim = claim_value(fingerprint, owner);
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(message_id))
            .arg(claim.as_slice())
            .arg("NX")
            .arg("PX")
            .arg(lease_ms)
            .arg("GET");
        let held: Option<Vec<u8>> = self.store.query(StoreOp::Claim, &cmd).await?;
        match held {
            None => Ok(Claim::Claimed(ClaimToken::Shared(claim.into_boxed_slice()))),
            // Our own claim: the store sent the command again after losing the connection,
            // and the first one had been carried out.
            Some(value) if value == claim => {
                Ok(Claim::Claimed(ClaimToken::Shared(claim.into_boxed_slice())))
            }
            Some(value) => parse(&value).ok_or_else(|| {
                StoreError::Failed(format!(
                    "the key of this messageId holds a value this relay did not write \
                     (check {} is not shared with other software)",
                    crate::config::ENV_REDIS_PREFIX
                ))
            }),
        }
    }

    async fn complete(
        &self,
        message_id: &str,
        token: &ClaimToken,
        answer: Option<&Remembered>,
    ) -> Result<(), StoreError> {
        let ClaimToken::Shared(claim) = token else {
            return Ok(());
        };
        let replacement = answer.map(answer_value).unwrap_or_default();
        let ttl = self.ttl_ms.to_string();
        let key = self.key(message_id);
        let _replaced: i64 = self
            .store
            .script(
                StoreOp::Complete,
                &self.complete,
                &[&key],
                &[claim, &replacement, ttl.as_bytes()],
            )
            .await?;
        Ok(())
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
        let Some(Claim::Remembered(back)) = parse(&answer_value(&answer)) else {
            panic!("not an answer")
        };
        assert_eq!(back, answer);
        let plain = Remembered {
            content_type: None,
            ..answer
        };
        let Some(Claim::Remembered(back)) = parse(&answer_value(&plain)) else {
            panic!("not an answer")
        };
        assert_eq!(back, plain);
        let Some(Claim::InFlight(back)) = parse(&claim_value(fingerprint, [7; 16])) else {
            panic!("not a claim")
        };
        assert_eq!(back, fingerprint);
    }

    #[test]
    fn foreign_values_are_not_read_as_ours() {
        for value in [&b""[..], b"hello", b"C123", b"R0123456789abcdef"] {
            assert!(parse(value).is_none(), "{value:?}");
        }
    }
}
