//! The forwarded body, written by hand in a fixed order (SPEC "Deduplication": the fingerprint
//! is taken after normalisation): `messageId`, the type's own fields in the order of its
//! `fields` (normalised where its check says so, the caller's raw JSON otherwise), `from`,
//! `to`, then every other field sorted by key. A fixed order makes the fingerprint independent
//! of the caller's key order.

use serde_json::value::RawValue;

use super::raw::RawObject;
use super::{COMMON_FIELDS, Forward};
use crate::phone::PhoneNumber;

/// Writes the forwarded JSON by hand (see the module doc for the order).
pub(super) fn encode(
    object: &RawObject<'_>,
    message_id: &str,
    forward: &[(&'static str, Forward<'_>)],
    from: &PhoneNumber,
    to: &PhoneNumber,
    type_fields: &[&str],
) -> Vec<u8> {
    // Known fields are written in their place (a null one is absent); the rest follow.
    let mut rest: Vec<(&str, &RawValue)> = object
        .entries()
        .filter(|(key, _)| !(COMMON_FIELDS.contains(key) || type_fields.contains(key)))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(
        64 + object
            .entries()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>(),
    );
    out.push(b'{');
    string_field(&mut out, "messageId", message_id);
    for key in type_fields {
        let raw = match forward.iter().find(|(name, _)| name == key) {
            Some((_, Forward::Str(text))) => {
                out.push(b',');
                string_field(&mut out, key, text);
                continue;
            }
            Some((_, Forward::Raw(raw))) => Some(*raw),
            Some((_, Forward::Omit)) => None,
            None => object.get(key),
        };
        if let Some(raw) = raw {
            out.push(b',');
            raw_field(&mut out, key, raw);
        }
    }
    out.push(b',');
    string_field(&mut out, "from", from.digits());
    out.push(b',');
    string_field(&mut out, "to", to.digits());
    for (key, value) in rest {
        out.push(b',');
        raw_field(&mut out, key, value);
    }
    out.push(b'}');
    out
}

fn string_field(out: &mut Vec<u8>, key: &str, value: &str) {
    json_string(out, key);
    out.push(b':');
    json_string(out, value);
}

fn raw_field(out: &mut Vec<u8>, key: &str, value: &RawValue) {
    json_string(out, key);
    out.push(b':');
    out.extend_from_slice(value.get().as_bytes());
}

fn json_string(out: &mut Vec<u8>, value: &str) {
    // Most strings need no escape (no quote, backslash or control character): copy them.
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a &str into a Vec cannot fail: serde_json only errors on I/O or non-string keys.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_escaped_only_when_they_need_it() {
        for text in [
            "plain",
            "",
            "é€",
            "quote\"",
            "back\\slash",
            "line\nbreak",
            "\u{1}",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, text);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text}");
        }
    }
}
