//! `POST /interactive/list` (Lipachat's "Sending Interactive Lists" page; SPEC "Every
//! Lipachat send"): a body text and a menu of rows grouped in sections.
//!
//! The page's table names the body text `message`, its example sends `body`: both are
//! accepted and one is required, as for buttons. `headerText` and `buttonText` appear only in
//! the example: strings when given, not required. `buttons` is the array of sections, each
//! with a string `sectionTitle` and an array `sectionItems` of rows (table and example both
//! give them); a row has a string `id` and `title`, and an optional `description` ("Optional
//! description"). The newer version of the page limits a list to 10 sections and 10 rows in
//! all sections together (the older one said "any number"; the newer one, which matches
//! WhatsApp, stands). No minimum count and no lengths are documented, so none is checked.

use utoipa::ToSchema;

use super::common::SendCommon;

use crate::validate::{Check, FieldPath};

pub(crate) const MAX_SECTIONS: usize = 10;
pub(crate) const MAX_ROWS: usize = 10;

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["headerText", "body", "message", "buttonText", "buttons"];

/// The list rules.
pub(crate) fn check(check: &mut Check<'_>) {
    check.optional_string_type("headerText", check.get("headerText"));
    check.required_string_either(
        (FieldPath::Top("body"), check.get("body")),
        (FieldPath::Top("message"), check.get("message")),
    );
    check.optional_string_type("buttonText", check.get("buttonText"));
    let Some(sections) = check.required_array("buttons", check.get("buttons")) else {
        return;
    };
    if sections.len() > MAX_SECTIONS {
        check.error(
            "buttons",
            format!("must have at most {MAX_SECTIONS} sections"),
        );
    }
    let mut rows = 0;
    check.each_object(FieldPath::Top("buttons"), sections, |check, at, section| {
        check.required_string_type(at.key("sectionTitle"), section.get("sectionTitle"));
        let items = at.key("sectionItems");
        let Some(section_rows) = check.required_array(items, section.get("sectionItems")) else {
            return;
        };
        rows += section_rows.len();
        check.each_object(items, section_rows, |check, at, row| {
            check.required_string_type(at.key("id"), row.get("id"));
            check.required_string_type(at.key("title"), row.get("title"));
            check.optional_string_type(at.key("description"), row.get("description"));
        });
    });
    if rows > MAX_ROWS {
        check.error(
            "buttons",
            format!("must have at most {MAX_ROWS} rows in all sections together"),
        );
    }
}

// The OpenAPI schema only: the request is read raw, never into these types.
/// `POST /interactive/list` (Lipachat's "Sending Interactive Lists"): a body text (as `body`,
/// the page's example, or `message`, its table; at least one) and at most 10 sections with
/// at most 10 rows in all sections together.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ListRequest {
    #[serde(flatten)]
    common: SendCommon,
    #[schema(example = "Welcome to Lipachat")]
    header_text: Option<String>,
    /// The body text (the name the page's example uses).
    #[schema(example = "Please choose a product you would like below")]
    body: Option<String>,
    /// The body text (the name the page's table uses).
    message: Option<String>,
    /// The label of the button that opens the list.
    #[schema(example = "Click Here")]
    button_text: Option<String>,
    /// The sections: at most 10, with at most 10 rows in all of them together.
    #[schema(max_items = 10)]
    buttons: Vec<ListSection>,
}

/// A section of a list.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ListSection {
    section_title: String,
    /// The section's rows (at most 10 in all sections together).
    #[schema(max_items = 10)]
    section_items: Vec<ListRow>,
}

/// A row of a list.
#[derive(ToSchema)]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct ListRow {
    /// The row's id in your app.
    id: String,
    /// The text shown.
    title: String,
    /// Optional description.
    description: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::sends::SendKind;
    use crate::sends::test_support::Edit::Set;
    use crate::sends::test_support::{Example, fields, forwarded};
    use serde_json::{Value, json};

    /// The page's example, with a phone number in place of its placeholder.
    fn example() -> Example {
        Example::page(
            SendKind::List,
            "ca739107-4b0d-4581-acb1-4c4af70555de",
            json!({
                "headerText": "Welcome to Lipachat",
                "body": "Please choose a product you would like below",
                "buttonText": "Click Here",
                "buttons": [
                    {
                        "sectionTitle": "Airtime",
                        "sectionItems": [
                            {"id": "SAFARICOM_AIRTIME", "title": "Safaricom", "description": "mpesa network"},
                            {"id": "AIRTEL_AIRTIME", "title": "Airtel", "description": "airtel money"}
                        ]
                    },
                    {
                        "sectionTitle": "Bill Payment",
                        "sectionItems": [
                            {"id": "KPLC", "title": "KPLC", "description": "electricity"},
                            {"id": "NAIROBI_WATER", "title": "Nairobi Water", "description": "county gov water"}
                        ]
                    }
                ]
            }),
        )
    }

    fn rows(count: usize) -> Value {
        (0..count)
            .map(|i| json!({"id": format!("r{i}"), "title": format!("Row {i}")}))
            .collect()
    }

    const TOO_MANY_ROWS: (&str, &str) = (
        "buttons",
        "must have at most 10 rows in all sections together",
    );

    #[test]
    fn the_documented_example_is_forwarded_unchanged() {
        assert_eq!(
            forwarded(SendKind::List, &example().body()),
            example().body()
        );
    }

    #[test]
    fn a_body_text_is_required_under_either_name() {
        let missing = "is required (or give it as message)";
        example().assert_required_either("body", "message", missing);
    }

    #[test]
    fn header_and_button_text_are_optional_strings() {
        example().assert_optional_strings(&[("headerText", json!(1)), ("buttonText", json!(true))]);
    }

    #[test]
    fn at_most_10_sections() {
        let section = json!({"sectionTitle": "S", "sectionItems": rows(1)});
        let eleven = json!(vec![section.clone(); 11]);
        example().assert_steps(&[
            (Set("buttons", json!(vec![section; 10])), &[]),
            (
                Set("buttons", eleven),
                &[("buttons", "must have at most 10 sections"), TOO_MANY_ROWS],
            ),
        ]);
    }

    #[test]
    fn at_most_10_rows_in_all_sections_together() {
        let ten = json!([
            {"sectionTitle": "A", "sectionItems": rows(6)},
            {"sectionTitle": "B", "sectionItems": rows(4)}
        ]);
        example().assert_steps(&[
            (Set("buttons", ten), &[]),
            (Set("buttons[1].sectionItems", rows(5)), &[TOO_MANY_ROWS]),
        ]);
    }

    #[test]
    fn sections_need_a_title_and_an_array_of_rows() {
        let sections = json!([
            {"sectionItems": rows(1)},
            {"sectionTitle": "B", "sectionItems": {"id": "x", "title": "y"}},
            {"sectionTitle": 3},
            []
        ]);
        let expected = [
            ("buttons[0].sectionTitle", "is required"),
            ("buttons[1].sectionItems", "must be an array"),
            ("buttons[2].sectionTitle", "must be a string"),
            ("buttons[2].sectionItems", "is required"),
            ("buttons[3]", "must be an object"),
        ];
        example().assert_steps(&[(Set("buttons", sections), &expected)]);
    }

    #[test]
    fn rows_need_a_string_id_and_title_and_may_describe_themselves() {
        let rows = json!([
            {"id": "KPLC", "title": "KPLC"},
            {"title": "Water", "description": 1},
            {"id": "x", "title": null},
            "row"
        ]);
        let expected = [
            ("buttons[1].sectionItems[1].id", "is required"),
            ("buttons[1].sectionItems[1].description", "must be a string"),
            ("buttons[1].sectionItems[2].title", "is required"),
            ("buttons[1].sectionItems[3]", "must be an object"),
        ];
        example().assert_steps(&[(Set("buttons[1].sectionItems", rows), &expected)]);
    }

    #[test]
    fn no_minimum_is_documented() {
        let empty_section = json!([{"sectionTitle": "Empty", "sectionItems": []}]);
        example().assert_steps(&[
            (Set("buttons", json!([])), &[]),
            (Set("buttons", empty_section), &[]),
        ]);
    }

    #[test]
    fn unknown_fields_are_kept_at_every_level() {
        let mut body = example().body();
        body["footerText"] = json!("Lipachat");
        body["buttons"][0]["extra"] = json!([1]);
        body["buttons"][0]["sectionItems"][0]["extra"] = json!(null);
        assert_eq!(forwarded(SendKind::List, &body), body);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"messageId": "m", "buttons": [{"sectionTitle": "S",
            "sectionItems": [{"id": 1, "title": "t"}]}], "to": "254712345678"});
        assert_eq!(
            fields(SendKind::List, &body),
            ["body", "buttons[0].sectionItems[0].id", "from"]
        );
    }
}
