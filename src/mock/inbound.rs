//! `POST /mock/inbound` (SPEC "Mock gateway"): a customer's message, posted to the callback
//! URL in the shape of Lipachat's "Webhooks" page — `messageId`, `from`, `to`,
//! `profileName`, `type` and the type's content — so a test can play the customer's side.
//!
//! Only TEXT, the one a test needs to drive a conversation. The input is checked as a caller
//! would expect of the real thing, field by field (a 400 names the field), and the numbers are
//! posted as digits, as Lipachat writes them.

use serde_json::{Value, json};

use crate::phone::PhoneNumber;

/// Where a test asks the mock to post an inbound message.
pub(crate) const PATH_INBOUND: &str = "/mock/inbound";
/// The `profileName` of every inbound message.
pub(crate) const PROFILE_NAME: &str = "Mock Customer";
/// Longest text, in characters: WhatsApp's limit on a text message.
pub(crate) const MAX_TEXT_CHARS: usize = 4096;

/// An inbound message to post.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Inbound {
    from: PhoneNumber,
    to: PhoneNumber,
    text: String,
}

/// Why a `POST /mock/inbound` body was refused: the field and what it must be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) field: &'static str,
    pub(crate) reason: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl Inbound {
    /// Reads `{"from", "to", "text"}`: two phone numbers (8 to 15 digits, `+`, spaces, dashes
    /// and parentheses allowed) and a text of 1 to [`MAX_TEXT_CHARS`] characters.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, Refused> {
        let value: Value = serde_json::from_slice(body).map_err(|_| Refused {
            field: "body",
            reason: "must be a JSON object with from, to and text",
        })?;
        let Some(object) = value.as_object() else {
            return Err(Refused {
                field: "body",
                reason: "must be a JSON object with from, to and text",
            });
        };
        let number = |field: &'static str| {
            let text = object.get(field).and_then(Value::as_str).ok_or(Refused {
                field,
                reason: "is required: a phone number as a string",
            })?;
            PhoneNumber::parse(text).map_err(|reason| Refused { field, reason })
        };
        let from = number("from")?;
        let to = number("to")?;
        let text = object
            .get("text")
            .and_then(Value::as_str)
            .filter(|text| !text.trim().is_empty() && text.chars().count() <= MAX_TEXT_CHARS)
            .ok_or(Refused {
                field: "text",
                reason: "must be a string of 1 to 4096 characters, not only spaces",
            })?;
        Ok(Self {
            from,
            to,
            text: text.to_owned(),
        })
    }

    /// The callback's body, under a new `messageId`.
    pub(crate) fn callback(&self, message_id: &str) -> Value {
        json!({
            "messageId": message_id,
            "from": self.from.digits(),
            "to": self.to.digits(),
            "profileName": PROFILE_NAME,
            "type": "TEXT",
            "text": self.text,
        })
    }
}

/// A new inbound `messageId`: a random UUID (version 4), as Lipachat's ids look.
pub(crate) fn new_message_id() -> String {
    // The version (4) and variant (10xx) bits of RFC 9562, over random bits.
    let bits = (fastrand::u128(..) & !(0xF000_u128 << 64) & !(0xC000_u128 << 48))
        | (0x4000_u128 << 64)
        | (0x8000_u128 << 48);
    let hex = format!("{bits:032x}");
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Inbound, Refused> {
        Inbound::parse(body.to_string().as_bytes())
    }

    #[test]
    fn a_text_becomes_the_documented_inbound_shape_with_digits() {
        let inbound =
            parse(json!({"from": "+254 712 345 678", "to": "254110090747", "text": "Hi"})).unwrap();
        assert_eq!(
            inbound.callback("id-1"),
            json!({"messageId": "id-1", "from": "254712345678", "to": "254110090747",
                   "profileName": "Mock Customer", "type": "TEXT", "text": "Hi"})
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let ok = json!({"from": "254712345678", "to": "254110090747", "text": "Hi"});
        let field = |body: Value| parse(body).unwrap_err().field;
        for (name, bad) in [
            ("from", json!(null)),
            ("from", json!("12")),
            ("to", json!(254_110_090_747_u64)),
            ("to", json!("abc")),
            ("text", json!("  ")),
            ("text", json!("a".repeat(MAX_TEXT_CHARS + 1))),
            ("text", json!(7)),
        ] {
            let mut body = ok.clone();
            body[name] = bad;
            assert_eq!(field(body), name);
        }
        let mut without_text = ok.clone();
        without_text.as_object_mut().unwrap().remove("text");
        assert_eq!(field(without_text), "text");
        assert_eq!(field(json!([1])), "body");
        assert_eq!(Inbound::parse(b"not json").unwrap_err().field, "body");
        assert!(
            parse(json!({"from": "254712345678", "to": "254110090747",
                             "text": "a".repeat(MAX_TEXT_CHARS)}))
            .is_ok()
        );
    }

    #[test]
    fn message_ids_are_version_4_uuids_and_differ() {
        let id = new_message_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(
            matches!(parts[3].chars().next(), Some('8' | '9' | 'a' | 'b')),
            "{id}"
        );
        assert_ne!(new_message_id(), id);
    }
}
