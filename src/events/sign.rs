//! Standard Webhooks signatures (SPEC "Events out"): what the relay puts in
//! `webhook-signature`, and the check `events-receive` makes on the way in.
//!
//! The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the MAC HMAC-SHA256 keyed by
//! the secret's decoded bytes, written as `v1,<standard base64>`; the header may carry several
//! space-separated signatures (a key being rotated) and one match is enough. The decision a
//! reader must know: a timestamp is compared with the clock and refused more than
//! [`TOLERANCE_SECS`] either way *before* any MAC is computed, and the MAC is compared in
//! constant time, so a receiver can be neither replayed nor used as a signing oracle.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::config::SigningSecret;
use crate::headers::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP};

/// How far a `webhook-timestamp` may be from the receiver's clock, either way: the
/// specification's five minutes, which every one of its libraries uses.
pub(crate) const TOLERANCE_SECS: u64 = 5 * 60;

/// The signature scheme's version prefix (symmetric HMAC-SHA256).
const VERSION: &str = "v1";

/// Why a delivery's signature was refused. Safe to print: no variant carries the secret or
/// the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    /// A header is absent or empty.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not whole Unix seconds.
    #[error("{HEADER_WEBHOOK_TIMESTAMP} is not Unix seconds")]
    BadTimestamp,
    /// `webhook-timestamp` is more than [`TOLERANCE_SECS`] behind the clock.
    #[error("{HEADER_WEBHOOK_TIMESTAMP} is {0} s old (more than {TOLERANCE_SECS} s)")]
    TooOld(u64),
    /// `webhook-timestamp` is more than [`TOLERANCE_SECS`] ahead of the clock.
    #[error("{HEADER_WEBHOOK_TIMESTAMP} is {0} s in the future (more than {TOLERANCE_SECS} s)")]
    TooNew(u64),
    /// No `v1` signature in `webhook-signature` matches the id, timestamp and body.
    #[error("no {VERSION} signature in {HEADER_WEBHOOK_SIGNATURE} matches")]
    NoMatchingSignature,
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the `webhook-signature` value.
pub(crate) fn sign(secret: &SigningSecret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, id, timestamp, body);
    format!("{VERSION},{}", BASE64.encode(tag))
}

/// Checks a delivery's three headers against its body at Unix time `now`. `timestamp` and
/// `signatures` are the header values as received (an absent header is passed as `""`).
pub(crate) fn verify(
    secret: &SigningSecret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: u64,
) -> Result<(), VerifyError> {
    for (name, value) in [
        (HEADER_WEBHOOK_ID, id),
        (HEADER_WEBHOOK_TIMESTAMP, timestamp),
        (HEADER_WEBHOOK_SIGNATURE, signatures),
    ] {
        if value.trim().is_empty() {
            return Err(VerifyError::MissingHeader(name));
        }
    }
    let timestamp = parse_timestamp(timestamp)?;
    let skew = now.abs_diff(timestamp);
    if skew > TOLERANCE_SECS {
        return Err(if timestamp < now {
            VerifyError::TooOld(skew)
        } else {
            VerifyError::TooNew(skew)
        });
    }
    let expected = mac(secret, id, timestamp, body);
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, encoded)| BASE64.decode(encoded).ok())
        // The length of a MAC is public; its bytes are what a timing attack would learn.
        .any(|candidate| bool::from(candidate.as_slice().ct_eq(&expected)));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// Whole Unix seconds, digits only (as every implementation of the specification writes
/// them). The signature is checked over this number written back, as its libraries do.
fn parse_timestamp(text: &str) -> Result<u64, VerifyError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::BadTimestamp);
    }
    text.parse().map_err(|_| VerifyError::BadTimestamp)
}

fn mac(secret: &SigningSecret, id: &str, timestamp: u64, body: &[u8]) -> [u8; 32] {
    #[allow(
        clippy::expect_used,
        reason = "HMAC takes a key of any length: new_from_slice cannot fail"
    )]
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's published test vectors, from its reference libraries'
    // test suites (github.com/standard-webhooks/standard-webhooks at commit
    // b2fa7b8719fb75d326b591077f5d1b385cfcdfae):
    // libraries/python/tests/test_webhooks.py `test_sign_function` (the same vector is
    // in libraries/javascript/src/webhook.test.ts), and libraries/rust/src/lib.rs `test_sign`.
    // The specification's text (spec/standard-webhooks.md) shows the signed content and the
    // header format but publishes no secret, so these are the vectors there are.
    const PYTHON_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const PYTHON_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const PYTHON_TIMESTAMP: u64 = 1_614_265_330;
    const PYTHON_BODY: &str = r#"{"test": 2432232314}"#;
    const PYTHON_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const RUST_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const RUST_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const RUST_TIMESTAMP: u64 = 1_649_367_553;
    const RUST_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
    const RUST_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn secret(text: &str) -> SigningSecret {
        SigningSecret::parse(text).unwrap()
    }

    fn python_verify(timestamp: &str, signatures: &str, body: &str) -> Result<(), VerifyError> {
        verify(
            &secret(PYTHON_SECRET),
            PYTHON_ID,
            timestamp,
            signatures,
            body.as_bytes(),
            PYTHON_TIMESTAMP,
        )
    }

    #[test]
    fn signing_gives_the_specifications_published_vectors() {
        let vectors = [
            (
                PYTHON_SECRET,
                PYTHON_ID,
                PYTHON_TIMESTAMP,
                PYTHON_BODY,
                PYTHON_SIGNATURE,
            ),
            (
                RUST_SECRET,
                RUST_ID,
                RUST_TIMESTAMP,
                RUST_BODY,
                RUST_SIGNATURE,
            ),
        ];
        for (key, id, timestamp, body, signature) in vectors {
            assert_eq!(
                sign(&secret(key), id, timestamp, body.as_bytes()),
                signature
            );
        }
    }

    #[test]
    fn the_published_vectors_verify() {
        assert_eq!(
            python_verify("1614265330", PYTHON_SIGNATURE, PYTHON_BODY),
            Ok(())
        );
        let rust = verify(
            &secret(RUST_SECRET),
            RUST_ID,
            "1649367553",
            RUST_SIGNATURE,
            RUST_BODY.as_bytes(),
            RUST_TIMESTAMP + 10,
        );
        assert_eq!(rust, Ok(()));
    }

    #[test]
    fn a_changed_body_id_or_timestamp_does_not_verify() {
        let tampered = python_verify("1614265330", PYTHON_SIGNATURE, r#"{"test": 2432232315}"#);
        assert_eq!(tampered, Err(VerifyError::NoMatchingSignature));
        let other_id = verify(
            &secret(PYTHON_SECRET),
            "msg_other",
            "1614265330",
            PYTHON_SIGNATURE,
            PYTHON_BODY.as_bytes(),
            PYTHON_TIMESTAMP,
        );
        assert_eq!(other_id, Err(VerifyError::NoMatchingSignature));
        let other_time = python_verify("1614265331", PYTHON_SIGNATURE, PYTHON_BODY);
        assert_eq!(other_time, Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn another_secret_does_not_verify() {
        let other = verify(
            &secret(RUST_SECRET),
            PYTHON_ID,
            "1614265330",
            PYTHON_SIGNATURE,
            PYTHON_BODY.as_bytes(),
            PYTHON_TIMESTAMP,
        );
        assert_eq!(other, Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn one_matching_signature_among_several_is_enough() {
        // The published one with an unknown version, a wrong v1 and garbage around it, as
        // the Python suite's `test_multi_sig_payload_is_valid` sends them.
        let header = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,{sig} not-a-signature \
             v1,!!! {PYTHON_SIGNATURE}",
            sig = PYTHON_SIGNATURE.trim_start_matches("v1,")
        );
        assert_eq!(python_verify("1614265330", &header, PYTHON_BODY), Ok(()));
    }

    #[test]
    fn a_signature_under_another_version_does_not_count() {
        let v1a = PYTHON_SIGNATURE.replacen("v1,", "v1a,", 1);
        assert_eq!(
            python_verify("1614265330", &v1a, PYTHON_BODY),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_truncated_signature_does_not_verify() {
        for partial in ["v1,", "v1,g0hM9SsE", &PYTHON_SIGNATURE[..8]] {
            assert_eq!(
                python_verify("1614265330", partial, PYTHON_BODY),
                Err(VerifyError::NoMatchingSignature),
                "{partial}"
            );
        }
    }

    #[test]
    fn missing_headers_are_named() {
        let check = |id: &str, timestamp: &str, signatures: &str| {
            verify(
                &secret(PYTHON_SECRET),
                id,
                timestamp,
                signatures,
                PYTHON_BODY.as_bytes(),
                PYTHON_TIMESTAMP,
            )
        };
        assert_eq!(
            check("", "1614265330", PYTHON_SIGNATURE),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            check(PYTHON_ID, "", PYTHON_SIGNATURE),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            check(PYTHON_ID, "1614265330", " "),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
    }

    #[test]
    fn a_timestamp_that_is_not_unix_seconds_is_refused() {
        for text in ["hello", "-1614265330", "+1614265330", "1614265330.5", "1e9"] {
            assert_eq!(
                python_verify(text, PYTHON_SIGNATURE, PYTHON_BODY),
                Err(VerifyError::BadTimestamp),
                "{text}"
            );
        }
        assert_eq!(
            python_verify("99999999999999999999999", PYTHON_SIGNATURE, PYTHON_BODY),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn timestamps_five_minutes_either_way_are_accepted_and_no_further() {
        let body = b"{}";
        let key = secret(RUST_SECRET);
        let now = 1_700_000_000;
        let at = |timestamp: u64| {
            let signature = sign(&key, RUST_ID, timestamp, body);
            verify(&key, RUST_ID, &timestamp.to_string(), &signature, body, now)
        };
        assert_eq!(at(now - TOLERANCE_SECS), Ok(()));
        assert_eq!(at(now + TOLERANCE_SECS), Ok(()));
        assert_eq!(
            at(now - TOLERANCE_SECS - 1),
            Err(VerifyError::TooOld(TOLERANCE_SECS + 1))
        );
        assert_eq!(
            at(now + TOLERANCE_SECS + 1),
            Err(VerifyError::TooNew(TOLERANCE_SECS + 1))
        );
    }

    #[test]
    fn errors_never_show_the_secret_or_the_signature() {
        let error = python_verify("1614265330", PYTHON_SIGNATURE, "{}").unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(!text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{text}");
        assert!(!text.contains("g0hM9SsE"), "{text}");
    }
}
