//! `POST /contact` (Lipachat's "Sending Contacts" page; SPEC "Every Lipachat send"): one
//! contact card.
//!
//! The page's table and example agree on `name.formattedName` and on `phones` entries with a
//! `phone` and a `type`: all required, all strings. `waId` is documented as optional (without
//! it WhatsApp shows an "Invite to WhatsApp" button). The table writes the phone as
//! `phones[0].phone[0].phone`, a nested array; the example, the only request the page shows,
//! is flat (`phones[].phone` is the number), and that is the shape accepted. Phone `type`
//! values are only examples ("cell, mobile, main, iPhone, home, work, etc."; the request
//! sends "Cell"), so any string goes; the phone itself is not reformatted, since it is shown
//! to the recipient as written. No count of phones is documented, so none is checked.

use utoipa::ToSchema;

use super::common::SendCommon;

use crate::validate::{Check, FieldPath};

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["name", "phones"];

/// The contact rules.
pub(crate) fn check(check: &mut Check<'_>) {
    let name = FieldPath::Top("name");
    if let Some(object) = check.required_object(name, check.get("name")) {
        check.required_string_type(name.key("formattedName"), object.get("formattedName"));
    }
    let phones = FieldPath::Top("phones");
    let Some(entries) = check.required_array(phones, check.get("phones")) else {
        return;
    };
    check.each_object(phones, entries, |check, at, phone| {
        check.required_string_type(at.key("phone"), phone.get("phone"));
        check.required_string_type(at.key("type"), phone.get("type"));
        check.optional_string_type(at.key("waId"), phone.get("waId"));
    });
}

// The OpenAPI schema only: the request is read raw, never into these types.
/// `POST /contact` (Lipachat's "Sending Contacts"): one contact card.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ContactRequest {
    #[serde(flatten)]
    common: SendCommon,
    name: ContactName,
    phones: Vec<ContactPhone>,
}

/// The contact's name.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ContactName {
    /// Shown in the message next to the profile arrow.
    #[schema(example = "Test User")]
    formatted_name: String,
}

/// One of the contact's phone numbers.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ContactPhone {
    /// The number, as shown.
    #[schema(example = "254712345678")]
    phone: String,
    /// The kind of number, e.g. cell, mobile, main, iPhone, home, work.
    #[serde(rename = "type")]
    #[schema(example = "Cell")]
    kind: String,
    /// The WhatsApp user id; without it the card shows an "Invite to WhatsApp" button.
    wa_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::sends::SendKind;
    use crate::sends::test_support::Edit::{Remove, Set};
    use crate::sends::test_support::{Example, fields, forwarded};
    use serde_json::json;

    /// The page's example, with a phone number in place of its placeholder.
    fn example() -> Example {
        Example::page(
            SendKind::Contact,
            "ca739107-4b0d-4581-acb1-4c4af70555de",
            json!({
                "name": {"formattedName": "Test User"},
                "phones": [{"phone": "254712345678", "type": "Cell", "waId": "254712345678"}]
            }),
        )
    }

    #[test]
    fn the_documented_example_is_forwarded_unchanged() {
        example().assert_forwarded_as(
            r#"{"messageId":"ca739107-4b0d-4581-acb1-4c4af70555de","name":{"formattedName":"Test User"},"phones":[{"phone":"254712345678","type":"Cell","waId":"254712345678"}],"from":"254110090747","to":"254712345678"}"#,
        );
    }

    #[test]
    fn name_is_an_object_with_a_formatted_name() {
        example().assert_required("name", json!("Test User"), "must be an object");
        let formatted_name = "name.formattedName";
        example().assert_required(formatted_name, json!(["Test"]), "must be a string");
        let no_formatted_name = json!({"firstName": "Test"});
        example().assert_steps(&[(
            Set("name", no_formatted_name),
            &[(formatted_name, "is required")],
        )]);
    }

    #[test]
    fn phones_is_a_required_array() {
        let not_an_array = json!({"phone": "254712345678", "type": "Cell"});
        example().assert_required("phones", not_an_array, "must be an array");
    }

    #[test]
    fn each_phone_needs_a_number_and_a_type() {
        let phones = json!([
            {"type": "Cell"},
            {"phone": 254712345678u64, "type": "Cell"},
            {"phone": "254712345678"},
            "254712345678"
        ]);
        let expected = [
            ("phones[0].phone", "is required"),
            ("phones[1].phone", "must be a string"),
            ("phones[2].type", "is required"),
            ("phones[3]", "must be an object"),
        ];
        example().assert_steps(&[(Set("phones", phones), &expected)]);
    }

    #[test]
    fn wa_id_is_optional_but_a_string() {
        let wa_id = "phones[0].waId";
        let not_a_string = json!(254712345678u64);
        example().assert_steps(&[
            (Remove(wa_id), &[]),
            (Set(wa_id, not_a_string), &[(wa_id, "must be a string")]),
        ]);
    }

    #[test]
    fn any_phone_type_and_any_count_of_phones() {
        let phones = json!([
            {"phone": "+254 712 345 678", "type": "work"},
            {"phone": "254700000001", "type": "iPhone"}
        ]);
        example().assert_steps(&[
            (Set("phones", phones), &[]),
            (Set("phones", json!([])), &[]),
        ]);
    }

    #[test]
    fn unknown_fields_are_kept_at_every_level() {
        let mut body = example().body();
        body["emails"] = json!([{"email": "test@example.com"}]);
        body["name"]["firstName"] = json!("Test");
        body["phones"][0]["label"] = json!(1);
        assert_eq!(forwarded(SendKind::Contact, &body), body);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"messageId": "m", "name": {}, "phones": [{}], "to": "254712345678",
            "from": "254110090747"});
        assert_eq!(
            fields(SendKind::Contact, &body),
            ["name.formattedName", "phones[0].phone", "phones[0].type"]
        );
    }
}
