//! `POST /interactive/buttons` (Lipachat's "Sending Buttons" page; SPEC "Every Lipachat
//! send"): a body text with 1 to 3 quick-reply buttons.
//!
//! The page's table names the body text `message`, its example sends `text`: both are
//! accepted (either or both, each a string) and one of them is required, since table and
//! example both carry a body text. `buttons` holds 1 to 3 buttons (stated twice on the page),
//! each an object with the string `id` and `title` that table and example both give. The page
//! sets no length for ids or titles and does not ask for them to be unique, so neither is
//! checked.

use utoipa::ToSchema;

use super::common::SendCommon;

use crate::validate::{Check, FieldPath};

pub(crate) const MIN_BUTTONS: usize = 1;
pub(crate) const MAX_BUTTONS: usize = 3;

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["text", "message", "buttons"];

/// The buttons rules.
pub(crate) fn check(check: &mut Check<'_>) {
    check.required_string_either(
        (FieldPath::Top("text"), check.get("text")),
        (FieldPath::Top("message"), check.get("message")),
    );
    let Some(buttons) = check.required_array("buttons", check.get("buttons")) else {
        return;
    };
    if !(MIN_BUTTONS..=MAX_BUTTONS).contains(&buttons.len()) {
        check.error(
            "buttons",
            format!("must have {MIN_BUTTONS} to {MAX_BUTTONS} buttons"),
        );
    }
    check.each_object(FieldPath::Top("buttons"), buttons, |check, at, button| {
        check.required_string_type(at.key("id"), button.get("id"));
        check.required_string_type(at.key("title"), button.get("title"));
    });
}

// The OpenAPI schema only: the request is read raw, never into these types.
/// `POST /interactive/buttons` (Lipachat's "Sending Buttons"): a body text (as `text`, the
/// page's example, or `message`, its table; at least one) and 1 to 3 quick-reply buttons.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ButtonsRequest {
    #[serde(flatten)]
    common: SendCommon,
    /// The body text (the name the page's example uses).
    #[schema(example = "Hello John Doe, are you interested to learn more about our products?")]
    text: Option<String>,
    /// The body text (the name the page's table uses).
    message: Option<String>,
    /// 1 to 3 buttons.
    #[schema(min_items = 1, max_items = 3)]
    buttons: Vec<ReplyButton>,
}

/// A quick-reply button.
#[derive(ToSchema)]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ReplyButton {
    /// The button's id in your app, e.g. `1` or `YES_BTN`.
    id: String,
    /// The text shown on the button.
    title: String,
}

#[cfg(test)]
mod tests {
    use crate::sends::SendKind;
    use crate::sends::test_support::Edit::Set;
    use crate::sends::test_support::{Example, assert_errors, fields, forwarded};
    use serde_json::{Value, json};

    /// The page's example, with a phone number in place of its placeholder.
    fn example() -> Example {
        Example::page(
            SendKind::Buttons,
            "875d25c2-0cb1-4270-a536-7b6dc16568b5",
            json!({
                "text": "Hello John Doe, are you interested to learn more about our products?",
                "buttons": [
                    {"id": "1", "title": "YES"},
                    {"id": "2", "title": "NO"},
                    {"id": "3", "title": "Maybe"}
                ]
            }),
        )
    }

    #[test]
    fn the_documented_example_is_forwarded_unchanged() {
        let sent = forwarded(SendKind::Buttons, &example().body());
        assert_eq!(sent, example().body());
    }

    #[test]
    fn a_body_text_is_required_under_either_name() {
        let missing = "is required (or give it as message)";
        example().assert_required_either("text", "message", missing);
        let mut body = example().body();
        body["text"] = Value::Null;
        body["message"] = Value::Null;
        assert_eq!(fields(SendKind::Buttons, &body), ["text"]);
    }

    #[test]
    fn each_body_text_given_must_be_a_string() {
        let mut body = example().body();
        body["message"] = json!(1);
        assert_errors(SendKind::Buttons, &body, &[("message", "must be a string")]);
        body["text"] = json!({"body": "x"});
        assert_eq!(fields(SendKind::Buttons, &body), ["text", "message"]);
    }

    #[test]
    fn one_to_three_buttons() {
        let four = json!([
            {"id": "1", "title": "A"}, {"id": "2", "title": "B"},
            {"id": "3", "title": "C"}, {"id": "4", "title": "D"}
        ]);
        let wrong_count = [("buttons", "must have 1 to 3 buttons")];
        example().assert_steps(&[
            (Set("buttons", json!([])), &wrong_count),
            (Set("buttons", json!([{"id": "1", "title": "YES"}])), &[]),
            (Set("buttons", four), &wrong_count),
        ]);
    }

    #[test]
    fn buttons_is_a_required_array() {
        let not_an_array = json!({"id": "1", "title": "YES"});
        example().assert_required("buttons", not_an_array, "must be an array");
    }

    #[test]
    fn each_button_needs_a_string_id_and_title() {
        let mut body = example().body();
        body["buttons"] = json!([
            {"id": "1", "title": "YES"},
            {"id": 2, "title": "NO"},
            {"id": "3"},
            "Maybe"
        ]);
        assert_errors(
            SendKind::Buttons,
            &body,
            &[
                ("buttons", "must have 1 to 3 buttons"),
                ("buttons[1].id", "must be a string"),
                ("buttons[2].title", "is required"),
                ("buttons[3]", "must be an object"),
            ],
        );
    }

    #[test]
    fn unknown_fields_are_kept_at_every_level() {
        let mut body = example().body();
        body["footer"] = json!("Reply within 24h");
        body["buttons"][0]["payload"] = json!({"x": 1});
        assert_eq!(forwarded(SendKind::Buttons, &body), body);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"messageId": "", "buttons": [{}], "to": "x", "from": 5});
        assert_eq!(
            fields(SendKind::Buttons, &body),
            [
                "messageId",
                "text",
                "buttons[0].id",
                "buttons[0].title",
                "to",
                "from"
            ]
        );
    }
}
