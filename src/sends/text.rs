//! `POST /message/text` (Lipachat's "Sending Messages" page, newer title "Free-Form Messages";
//! SPEC "Every Lipachat send"): a free-form text, inside the 24-hour window.
//!
//! The page documents one field of its own, `message` ("The message being sent."), and its
//! example sends it; it is required. Its only length rule is the SPEC's (Meta's text body
//! limit): at most 4096 characters. Lipachat documents no minimum, so an empty text is the
//! gateway's to judge.

use utoipa::ToSchema;

use super::common::SendCommon;

use crate::validate::Check;

pub(crate) const MAX_MESSAGE_CHARS: usize = 4096;

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["message"];

/// The text rules.
pub(crate) fn check(check: &mut Check<'_>) {
    check.required_text("message", MAX_MESSAGE_CHARS);
}

// The OpenAPI schema only: the request is read raw, never into these types.
/// `POST /message/text` (Lipachat's "Sending Messages"): a free-form text, inside the 24-hour
/// window.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct TextRequest {
    #[serde(flatten)]
    common: SendCommon,
    /// The text sent: at most 4096 characters (WhatsApp's limit).
    #[schema(max_length = 4096, example = "Hello world")]
    message: String,
}

#[cfg(test)]
mod tests {
    use super::MAX_MESSAGE_CHARS;
    use crate::sends::SendKind;
    use crate::sends::test_support::{Example, fields};
    use serde_json::json;

    /// The page's example, with phone numbers in place of its placeholders.
    fn example() -> Example {
        Example::page(
            SendKind::Text,
            "e66fc7b8-680f-4887-8dc8-ee062d65b54f",
            json!({
                "message": "Hello world"
            }),
        )
    }

    #[test]
    fn the_documented_example_is_forwarded_in_order() {
        example().assert_forwarded_as(
            r#"{"messageId":"e66fc7b8-680f-4887-8dc8-ee062d65b54f","message":"Hello world","from":"254110090747","to":"254712345678"}"#,
        );
    }

    #[test]
    fn message_is_a_required_string_of_at_most_4096_characters() {
        assert_eq!(MAX_MESSAGE_CHARS, 4096);
        example().assert_required_text("message", MAX_MESSAGE_CHARS);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"message": 7, "to": "12"});
        assert_eq!(
            fields(SendKind::Text, &body),
            ["messageId", "message", "to", "from"]
        );
    }
}
