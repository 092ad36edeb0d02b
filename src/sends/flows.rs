//! `POST /interactive/flows` (Lipachat's "Send a flow" page; SPEC "Every Lipachat send"): a
//! published WhatsApp Flow, opened by a button, inside the 24-hour window.
//!
//! The page's table and example agree on `text`, `flowId`, `flowCta` and `screen`: all
//! required, all strings. `flowCta` is the button's label, at most 20 characters (Meta's
//! limit; the page sets none). `data` is the flow's initial data: the page's table lists
//! `data.service`, `data.serviceOption` and `data.package`, which belong to its example flow,
//! not to every flow, so `data` is only checked to be an object and is forwarded as sent. The
//! page sets no length for `text` (WhatsApp's own limits are left to the gateway), and the flow
//! id and screen name are only known to the gateway, so their contents are not checked.

use utoipa::ToSchema;

use super::common::SendCommon;
use crate::validate::Check;

pub(crate) const MAX_FLOW_CTA_CHARS: usize = 20;

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["text", "flowId", "flowCta", "screen", "data"];

/// The flow rules.
pub(crate) fn check(check: &mut Check<'_>) {
    check.required_string_type("text", check.get("text"));
    check.required_string_type("flowId", check.get("flowId"));
    check.required_text("flowCta", MAX_FLOW_CTA_CHARS);
    check.required_string_type("screen", check.get("screen"));
    check.optional_object("data", check.get("data"));
}

// The OpenAPI schema only: the request is read raw, never into this type.
/// `POST /interactive/flows` (Lipachat's "Send a flow"): a published WhatsApp Flow, opened by
/// a button.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct FlowsRequest {
    #[serde(flatten)]
    common: SendCommon,
    /// The message body shown with the flow's button.
    #[schema(example = "Thank you share your details and one of our agents will be in touch")]
    text: String,
    /// The id of the published flow.
    #[schema(example = "2044724355999872")]
    flow_id: String,
    /// The label of the button that opens the flow: at most 20 characters.
    #[schema(max_length = 20, example = "Share Details!")]
    flow_cta: String,
    /// The flow's first screen.
    #[schema(example = "DETAILS")]
    screen: String,
    /// The flow's initial data, forwarded as sent.
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use crate::sends::SendKind;
    use crate::sends::test_support::Edit::{Remove, Set};
    use crate::sends::test_support::{Example, assert_forwarded_as, fields, forwarded, run};
    use serde_json::json;

    /// The page's example, with a UUID and the sandbox number for its placeholders.
    fn example() -> Example {
        Example::new(
            SendKind::Flows,
            json!({
                "messageId": "1a85c604-0f08-4182-8011-407ba84598c5",
                "to": "254717746565",
                "from": "254110090747",
                "text": "Thank you share your details and one of our agents will be in touch",
                "flowId": "YOUR_FLOW_ID",
                "flowCta": "Share Details!",
                "screen": "First screen in your JSON request",
                "data": {"service": "", "serviceOption": "", "package": ""}
            }),
        )
    }

    #[test]
    fn the_documented_example_is_forwarded_in_order_with_data_as_sent() {
        assert_forwarded_as(
            SendKind::Flows,
            br#"{"messageId": "1a85c604-0f08-4182-8011-407ba84598c5", "to": "254717746565",
            "from": "254110090747",
            "text": "Thank you share your details and one of our agents will be in touch",
            "flowId": "YOUR_FLOW_ID", "flowCta": "Share Details!",
            "screen": "First screen in your JSON request",
            "data": {"service": "", "serviceOption": "", "package": ""}}"#,
            r#"{"messageId":"1a85c604-0f08-4182-8011-407ba84598c5","text":"Thank you share your details and one of our agents will be in touch","flowId":"YOUR_FLOW_ID","flowCta":"Share Details!","screen":"First screen in your JSON request","data":{"service": "", "serviceOption": "", "package": ""},"from":"254110090747","to":"254717746565"}"#,
        );
        assert!(run(SendKind::Flows, &example().body()).is_ok());
    }

    #[test]
    fn text_flow_id_cta_and_screen_are_required_strings() {
        for name in ["text", "flowId", "flowCta", "screen"] {
            example().assert_required(name, json!(7), "must be a string");
        }
    }

    #[test]
    fn the_call_to_action_is_at_most_20_characters() {
        let too_long = [("flowCta", "must be at most 20 characters")];
        example().assert_steps(&[
            (Set("flowCta", json!("é".repeat(20))), &[]),
            (Set("flowCta", json!("Share your details now")), &too_long),
        ]);
    }

    #[test]
    fn data_is_an_optional_object_forwarded_as_is() {
        let mut body = example().body();
        body["data"] = json!({"anything": [1, {"nested": null}], "package": 3});
        assert_eq!(forwarded(SendKind::Flows, &body), body);
        example().assert_steps(&[
            (Remove("data"), &[]),
            (
                Set("data", json!(["service"])),
                &[("data", "must be an object")],
            ),
        ]);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let mut body = example().body();
        body["flowToken"] = json!("token-1");
        body["flowAction"] = json!("navigate");
        assert_eq!(forwarded(SendKind::Flows, &body), body);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"messageId": "m", "text": 1, "flowCta": "x".repeat(21),
            "screen": [], "data": "x", "to": "254712345678"});
        assert_eq!(
            fields(SendKind::Flows, &body),
            ["text", "flowId", "flowCta", "screen", "data", "from"]
        );
    }
}
