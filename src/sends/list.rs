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
    use crate::sends::test_support::{assert_errors, fields, forwarded, run};
    use serde_json::{Value, json};

    /// The page's example, with a phone number in place of its placeholder.
    fn example() -> Value {
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
            ],
            "messageId": "ca739107-4b0d-4581-acb1-4c4af70555de",
            "to": "254712345678",
            "from": "254110090747"
        })
    }

    fn rows(count: usize) -> Value {
        (0..count)
            .map(|i| json!({"id": format!("r{i}"), "title": format!("Row {i}")}))
            .collect()
    }

    #[test]
    fn the_documented_example_is_forwarded_unchanged() {
        assert_eq!(forwarded(SendKind::List, &example()), example());
    }

    #[test]
    fn the_tables_message_is_accepted_instead_of_body() {
        let mut body = example();
        let text = body.as_object_mut().unwrap().remove("body").unwrap();
        body["message"] = text;
        assert_eq!(forwarded(SendKind::List, &body), body);
    }

    #[test]
    fn a_body_text_is_required_under_either_name() {
        let mut body = example();
        body.as_object_mut().unwrap().remove("body");
        assert_errors(
            SendKind::List,
            &body,
            &[("body", "is required (or give it as message)")],
        );
    }

    #[test]
    fn header_and_button_text_are_optional_strings() {
        let mut body = example();
        let object = body.as_object_mut().unwrap();
        object.remove("headerText");
        object.remove("buttonText");
        assert!(run(SendKind::List, &body).is_ok());
        body["headerText"] = json!(1);
        body["buttonText"] = json!(true);
        assert_errors(
            SendKind::List,
            &body,
            &[
                ("headerText", "must be a string"),
                ("buttonText", "must be a string"),
            ],
        );
    }

    #[test]
    fn at_most_10_sections() {
        let mut body = example();
        let section = json!({"sectionTitle": "S", "sectionItems": rows(1)});
        body["buttons"] = json!(vec![section.clone(); 10]);
        assert!(run(SendKind::List, &body).is_ok());
        body["buttons"] = json!(vec![section; 11]);
        assert_errors(
            SendKind::List,
            &body,
            &[
                ("buttons", "must have at most 10 sections"),
                (
                    "buttons",
                    "must have at most 10 rows in all sections together",
                ),
            ],
        );
    }

    #[test]
    fn at_most_10_rows_in_all_sections_together() {
        let mut body = example();
        body["buttons"] = json!([
            {"sectionTitle": "A", "sectionItems": rows(6)},
            {"sectionTitle": "B", "sectionItems": rows(4)}
        ]);
        assert!(run(SendKind::List, &body).is_ok());
        body["buttons"][1]["sectionItems"] = rows(5);
        assert_errors(
            SendKind::List,
            &body,
            &[(
                "buttons",
                "must have at most 10 rows in all sections together",
            )],
        );
    }

    #[test]
    fn sections_need_a_title_and_an_array_of_rows() {
        let mut body = example();
        body["buttons"] = json!([
            {"sectionItems": rows(1)},
            {"sectionTitle": "B", "sectionItems": {"id": "x", "title": "y"}},
            {"sectionTitle": 3},
            []
        ]);
        assert_errors(
            SendKind::List,
            &body,
            &[
                ("buttons[0].sectionTitle", "is required"),
                ("buttons[1].sectionItems", "must be an array"),
                ("buttons[2].sectionTitle", "must be a string"),
                ("buttons[2].sectionItems", "is required"),
                ("buttons[3]", "must be an object"),
            ],
        );
    }

    #[test]
    fn rows_need_a_string_id_and_title_and_may_describe_themselves() {
        let mut body = example();
        body["buttons"][1]["sectionItems"] = json!([
            {"id": "KPLC", "title": "KPLC"},
            {"title": "Water", "description": 1},
            {"id": "x", "title": null},
            "row"
        ]);
        assert_errors(
            SendKind::List,
            &body,
            &[
                ("buttons[1].sectionItems[1].id", "is required"),
                ("buttons[1].sectionItems[1].description", "must be a string"),
                ("buttons[1].sectionItems[2].title", "is required"),
                ("buttons[1].sectionItems[3]", "must be an object"),
            ],
        );
    }

    #[test]
    fn no_minimum_is_documented() {
        let mut body = example();
        body["buttons"] = json!([]);
        assert!(run(SendKind::List, &body).is_ok());
        body["buttons"] = json!([{"sectionTitle": "Empty", "sectionItems": []}]);
        assert!(run(SendKind::List, &body).is_ok());
    }

    #[test]
    fn unknown_fields_are_kept_at_every_level() {
        let mut body = example();
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
