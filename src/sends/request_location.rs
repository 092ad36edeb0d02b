//! `POST /request_location` (Lipachat's "Request Location" page; SPEC "Every Lipachat send"):
//! a text with WhatsApp's "Send location" button, inside the 24-hour window.
//!
//! The page documents one field of its own, `text` ("Message body text. Supports URLs.
//! Maximum 1024 characters."), and its example sends it: a required string of at most 1024
//! characters. No minimum is documented, so an empty text is the gateway's to judge.

use utoipa::ToSchema;

use super::common::SendCommon;
use crate::validate::Check;

pub(crate) const MAX_TEXT_CHARS: usize = 1024;

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["text"];

/// The request-location rules.
pub(crate) fn check(check: &mut Check<'_>) {
    check.required_text("text", MAX_TEXT_CHARS);
}

// The OpenAPI schema only: the request is read raw, never into this type.
/// `POST /request_location` (Lipachat's "Request Location"): a text with WhatsApp's "Send
/// location" button.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct RequestLocationRequest {
    #[serde(flatten)]
    common: SendCommon,
    /// The message shown above WhatsApp's "Send location" button; may hold URLs.
    #[schema(
        max_length = 1024,
        example = "Let's start with your pickup. Share your current location."
    )]
    text: String,
}

#[cfg(test)]
mod tests {
    use super::MAX_TEXT_CHARS;
    use crate::sends::SendKind;
    use crate::sends::test_support::{Example, fields, forwarded};
    use serde_json::json;

    /// The page's example, with a phone number in place of its placeholder.
    fn example() -> Example {
        Example::page(
            SendKind::RequestLocation,
            "b3e1e37c-e50b-48b2-8972-6cc659ac33d2",
            json!({
                "text": "Let's start with your pickup. You can either manually *enter an address* or *share your current location*."
            }),
        )
    }

    #[test]
    fn the_documented_example_is_forwarded_in_order() {
        example().assert_forwarded_as(
            r#"{"messageId":"b3e1e37c-e50b-48b2-8972-6cc659ac33d2","text":"Let's start with your pickup. You can either manually *enter an address* or *share your current location*.","from":"254110090747","to":"254712345678"}"#,
        );
    }

    #[test]
    fn text_is_a_required_string_of_at_most_1024_characters() {
        assert_eq!(MAX_TEXT_CHARS, 1024);
        example().assert_required_text("text", MAX_TEXT_CHARS);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let mut body = example().body();
        body["footer"] = json!("Reply STOP to opt out");
        assert_eq!(forwarded(SendKind::RequestLocation, &body), body);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"text": 1, "to": "12", "from": "254110090747"});
        assert_eq!(
            fields(SendKind::RequestLocation, &body),
            ["messageId", "text", "to"]
        );
    }
}
