//! `POST /message/text` (Lipachat's "Sending Messages" page, newer title "Free-Form Messages";
//! SPEC "Every Lipachat send"): a free-form text, inside the 24-hour window.
//!
//! The page documents one field of its own, `message` ("The message being sent."), and its
//! example sends it; it is required. Its only length rule is the SPEC's (Meta's text body
//! limit): at most 4096 characters. Lipachat documents no minimum, so an empty text is the
//! gateway's to judge.

use utoipa::ToSchema;

use super::common::SendCommon;

use crate::validate::{Check, longer_than};

pub const MAX_MESSAGE_CHARS: usize = 4096;

/// The type's own fields, in the order they are forwarded.
pub const FIELDS: &[&str] = &["message"];

/// The text rules.
pub fn check(check: &mut Check<'_>) {
    if let Some(message) = check.required_string("message", check.get("message"))
        && longer_than(&message, MAX_MESSAGE_CHARS)
    {
        check.error(
            "message",
            format!("must be at most {MAX_MESSAGE_CHARS} characters"),
        );
    }
}

// The OpenAPI schema only: the request is read raw, never into these types.
/// `POST /message/text` (Lipachat's "Sending Messages"): a free-form text, inside the 24-hour
/// window.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(
    dead_code,
    reason = "describes the request for the OpenAPI document only"
)]
pub(crate) struct TextRequest {
    #[serde(flatten)]
    common: SendCommon,
    /// The text sent: at most 4096 characters (WhatsApp's limit).
    #[schema(max_length = 4096, example = "Hello world")]
    message: String,
}

#[cfg(test)]
mod tests {
    use crate::sends::SendKind;
    use crate::sends::test_support::{errors, fields, run};
    use serde_json::{Value, json};

    /// The page's example, with phone numbers in place of its placeholders.
    fn example() -> Value {
        json!({
            "message": "Hello world",
            "messageId": "e66fc7b8-680f-4887-8dc8-ee062d65b54f",
            "to": "254712345678",
            "from": "254110090747"
        })
    }

    #[test]
    fn the_documented_example_is_forwarded_in_order() {
        let request = run(SendKind::Text, &example()).unwrap();
        assert_eq!(
            std::str::from_utf8(&request.body).unwrap(),
            r#"{"messageId":"e66fc7b8-680f-4887-8dc8-ee062d65b54f","message":"Hello world","from":"254110090747","to":"254712345678"}"#
        );
    }

    #[test]
    fn message_is_required() {
        let mut body = example();
        body.as_object_mut().unwrap().remove("message");
        assert_eq!(
            errors(SendKind::Text, &body),
            [("message".into(), "is required".into())]
        );
        body["message"] = Value::Null;
        assert_eq!(fields(SendKind::Text, &body), ["message"]);
    }

    #[test]
    fn message_must_be_a_string() {
        let mut body = example();
        body["message"] = json!(["Hello"]);
        assert_eq!(
            errors(SendKind::Text, &body),
            [("message".into(), "must be a string".into())]
        );
    }

    #[test]
    fn message_is_at_most_4096_characters() {
        let mut body = example();
        body["message"] = json!("é".repeat(4096));
        assert!(
            run(SendKind::Text, &body).is_ok(),
            "4096 characters, more bytes"
        );
        body["message"] = json!("a".repeat(4097));
        assert_eq!(
            errors(SendKind::Text, &body),
            [("message".into(), "must be at most 4096 characters".into())]
        );
    }

    #[test]
    fn an_empty_message_is_left_to_the_gateway() {
        let mut body = example();
        body["message"] = json!("");
        assert!(run(SendKind::Text, &body).is_ok());
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
