//! `POST /template` (Lipachat's "Sending Message Templates" page; SPEC "Every Lipachat
//! send"): a pre-approved template, the only message allowed outside the 24-hour window.
//!
//! The page's stored text ends inside its first example (after `"languageCod`), so the rules
//! come from its table, its visible example, and the SPEC:
//! - `template` is a required object with a string `name` (SPEC, table, example).
//! - The language is required as the table's `language` or the example's `languageCode`
//!   (table and example both carry one; either name or both are accepted, each a string).
//! - `category`, when given, is MARKETING, UTILITY or AUTHENTICATION ("Accepted values are"),
//!   spelled as documented: nested values are forwarded as sent, never rewritten.
//! - `components`, when given, is an object (the table's dot paths `components.header.…`):
//!   `header` {`format` TEXT, IMAGE, VIDEO or DOCUMENT; strings `text`, `filename`,
//!   `example`}, `body` {string `text`, array `examples`}, `footer` {string `text`} and
//!   `buttons` [{`type` PHONE_NUMBER, URL or QUICK_REPLY; strings `text`, `phoneNumber`,
//!   `url`, `example`}], each part optional. A PHONE_NUMBER button needs its `phoneNumber`
//!   and a URL button its `url` ("Should be passed if button type passed is …").
//!
//! Not checked, on purpose: "`header.example` should be present if the text has a variable"
//! and "`body.examples` should match the number of variables". The send table is a copy of
//! the create-a-template table, where examples are sample values for Meta's review, and the
//! cut-off example would have shown whether a send carries them at all. Template names'
//! character rule is documented for creating a template only.

use utoipa::ToSchema;
use utoipa::openapi::ObjectBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, SchemaType, Type};

use super::common::SendCommon;

use crate::validate::{Check, FieldPath};

pub(crate) const CATEGORIES: &[&str] = &["MARKETING", "UTILITY", "AUTHENTICATION"];
pub(crate) const HEADER_FORMATS: &[&str] = &["TEXT", "IMAGE", "VIDEO", "DOCUMENT"];
pub(crate) const BUTTON_TYPES: &[&str] = &["PHONE_NUMBER", "URL", "QUICK_REPLY"];

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["template"];

/// The template rules.
pub(crate) fn check(check: &mut Check<'_>) {
    let field = FieldPath::Top("template");
    let Some(template) = check.required_object(field, check.get("template")) else {
        return;
    };
    check.required_string_type(field.key("name"), template.get("name"));
    check.required_string_either(
        (field.key("languageCode"), template.get("languageCode")),
        (field.key("language"), template.get("language")),
    );
    check.optional_choice(field.key("category"), template.get("category"), CATEGORIES);

    let at = field.key("components");
    let Some(components) = check.optional_object(at, template.get("components")) else {
        return;
    };
    let header_at = at.key("header");
    if let Some(header) = check.optional_object(header_at, components.get("header")) {
        check.optional_choice(
            header_at.key("format"),
            header.get("format"),
            HEADER_FORMATS,
        );
        for name in ["text", "filename", "example"] {
            check.optional_string_type(header_at.key(name), header.get(name));
        }
    }
    let body_at = at.key("body");
    if let Some(body) = check.optional_object(body_at, components.get("body")) {
        check.optional_string_type(body_at.key("text"), body.get("text"));
        check.optional_array(body_at.key("examples"), body.get("examples"));
    }
    let footer_at = at.key("footer");
    if let Some(footer) = check.optional_object(footer_at, components.get("footer")) {
        check.optional_string_type(footer_at.key("text"), footer.get("text"));
    }
    let buttons_at = at.key("buttons");
    let buttons = check.optional_array(buttons_at, components.get("buttons"));
    let buttons = buttons.unwrap_or_default();
    check.each_object(buttons_at, buttons, |check, at, button| {
        let kind = check.optional_choice(at.key("type"), button.get("type"), BUTTON_TYPES);
        for name in ["text", "phoneNumber", "url", "example"] {
            check.optional_string_type(at.key(name), button.get(name));
        }
        let needed = match kind {
            Some("PHONE_NUMBER") => Some(("phoneNumber", "is required when type is PHONE_NUMBER")),
            Some("URL") => Some(("url", "is required when type is URL")),
            _ => None,
        };
        if let Some((name, message)) = needed
            && button.get(name).is_none()
        {
            check.error(at.key(name), message);
        }
    });
}

// The OpenAPI schema only: the request is read raw, never into these types.
/// `POST /template` (Lipachat's "Sending Message Templates"): a pre-approved template, the only
/// message allowed outside the 24-hour window.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct TemplateRequest {
    #[serde(flatten)]
    common: SendCommon,
    template: Template,
}

/// The template to send: its name and language (as `languageCode`, the page's example, or
/// `language`, its table; at least one), and optionally its category and components.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct Template {
    /// The approved template's name.
    #[schema(example = "offer_830")]
    name: String,
    /// Language code, e.g. `en` (the name the page's example uses).
    #[schema(example = "en")]
    language_code: Option<String>,
    /// Language code, e.g. `en` (the name the page's table uses).
    language: Option<String>,
    category: Option<TemplateCategory>,
    components: Option<TemplateComponents>,
}

/// A template's category, spelled as documented.
#[derive(ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) enum TemplateCategory {
    Marketing,
    Utility,
    Authentication,
}

/// A template's parts, each optional.
#[derive(ToSchema)]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct TemplateComponents {
    header: Option<TemplateHeader>,
    body: Option<TemplateBody>,
    footer: Option<TemplateFooter>,
    buttons: Option<Vec<TemplateButton>>,
}

/// A template header.
#[derive(ToSchema)]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct TemplateHeader {
    format: Option<HeaderFormat>,
    /// Text of a TEXT header.
    text: Option<String>,
    /// File name of a DOCUMENT header.
    filename: Option<String>,
    /// Sample value of the header's variable, if it has one.
    example: Option<String>,
}

/// A template header's format, spelled as documented.
#[derive(ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) enum HeaderFormat {
    Text,
    Image,
    Video,
    Document,
}

/// A template body.
#[derive(ToSchema)]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct TemplateBody {
    /// Body text, with variables such as `{{1}}`.
    text: Option<String>,
    #[schema(schema_with = any_array)]
    examples: Option<Vec<serde_json::Value>>,
}

/// A template footer.
#[derive(ToSchema)]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct TemplateFooter {
    text: Option<String>,
}

/// A template button. A PHONE_NUMBER button needs `phoneNumber`, a URL button `url`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct TemplateButton {
    #[serde(rename = "type")]
    kind: Option<TemplateButtonType>,
    /// The button's text.
    text: Option<String>,
    /// The number a PHONE_NUMBER button calls.
    phone_number: Option<String>,
    /// The address a URL button opens.
    url: Option<String>,
    /// Sample value, for PHONE_NUMBER and URL buttons.
    example: Option<String>,
}

/// A template button's type, spelled as documented.
#[derive(ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) enum TemplateButtonType {
    PhoneNumber,
    Url,
    QuickReply,
}

/// `body.examples`: an array of any values, or null.
pub(crate) fn any_array() -> ArrayBuilder {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .description(Some("One value per variable of the text."))
        .items(ArrayItems::RefOrSchema(Box::new(
            utoipa::openapi::Object::with_type(SchemaType::AnyValue).into(),
        )))
}

/// A template button's target by its type (sends::template): PHONE_NUMBER needs
/// `phoneNumber`, URL needs `url`, QUICK_REPLY and a button without a type need none.
pub(crate) fn template_button_targets() -> Vec<ObjectBuilder> {
    let typed = |kind: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([kind])),
            )
            .required("type")
    };
    let string = || ObjectBuilder::new().schema_type(Type::String);
    vec![
        typed("PHONE_NUMBER")
            .property("phoneNumber", string())
            .required("phoneNumber"),
        typed("URL").property("url", string()).required("url"),
        typed("QUICK_REPLY"),
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .property("type", ObjectBuilder::new().schema_type(Type::Null)),
    ]
}

#[cfg(test)]
mod tests {
    use crate::sends::SendKind;
    use crate::sends::test_support::Edit::{Remove, Set};
    use crate::sends::test_support::{Example, assert_forwarded_as, fields, forwarded};
    use serde_json::{Value, json};

    /// The page's example as far as it is stored (it ends after `"languageCod`), completed
    /// with the language `en` the table shows, and phone numbers for its placeholders.
    fn example() -> Example {
        Example::page(
            SendKind::Template,
            "d13ce19b-678f-4a94-a910-441cfbb25b9b",
            json!({"template": {"name": "offer_830", "languageCode": "en"}}),
        )
    }

    /// Every documented part of a template, each valid.
    fn full() -> Example {
        Example::page(
            SendKind::Template,
            "t-1",
            json!({"template": {
                "name": "offer_830",
                "language": "en",
                "category": "MARKETING",
                "components": {
                    "header": {"format": "TEXT", "text": "{{1}} offer", "example": "July"},
                    "body": {"text": "Hello {{1}}, your balance is {{2}}",
                             "examples": ["John", "2000"]},
                    "footer": {"text": "Reply STOP to opt out"},
                    "buttons": [
                        {"type": "PHONE_NUMBER", "text": "Call us", "phoneNumber": "+254110090747"},
                        {"type": "URL", "text": "Shop", "url": "https://example.com/{{1}}",
                         "example": "https://example.com/offer"},
                        {"type": "QUICK_REPLY", "text": "Stop"}
                    ]
                }
            }}),
        )
    }

    #[test]
    fn the_documented_example_is_forwarded_unchanged() {
        assert_forwarded_as(
            SendKind::Template,
            br#"{"messageId": "d13ce19b-678f-4a94-a910-441cfbb25b9b", "to": "254712345678",
            "from": "254110090747", "template": {"name": "offer_830", "languageCode": "en"}}"#,
            r#"{"messageId":"d13ce19b-678f-4a94-a910-441cfbb25b9b","template":{"name": "offer_830", "languageCode": "en"},"from":"254110090747","to":"254712345678"}"#,
        );
    }

    #[test]
    fn every_documented_part_is_accepted_and_forwarded_unchanged() {
        assert_eq!(forwarded(SendKind::Template, &full().body()), full().body());
    }

    #[test]
    fn template_is_a_required_object() {
        example().assert_required("template", json!("offer_830"), "must be an object");
    }

    #[test]
    fn the_template_needs_its_name() {
        example().assert_required("template.name", json!(830), "must be a string");
    }

    #[test]
    fn the_language_is_required_under_either_name() {
        let missing = "is required (or give it as template.language)";
        example().assert_required_either("template.languageCode", "template.language", missing);
        example().assert_steps(&[
            (
                Remove("template.languageCode"),
                &[("template.languageCode", missing)],
            ),
            (
                Set("template.language", json!(["en"])),
                &[("template.language", "must be a string")],
            ),
        ]);
    }

    #[test]
    fn category_is_one_of_the_three_as_spelled() {
        let not_one = (
            "template.category",
            "must be one of MARKETING, UTILITY, AUTHENTICATION",
        );
        example().assert_steps(&[
            (Set("template.category", json!("MARKETING")), &[]),
            (Set("template.category", json!("UTILITY")), &[]),
            (Set("template.category", json!("AUTHENTICATION")), &[]),
            (Set("template.category", json!("marketing")), &[not_one]),
            (Set("template.category", json!("SERVICE")), &[not_one]),
            (
                Set("template.category", json!(1)),
                &[("template.category", "must be a string")],
            ),
            (Set("template.category", json!("PROMO")), &[not_one]),
        ]);
    }

    #[test]
    fn components_and_its_parts_are_objects() {
        let parts = json!({"header": "x", "body": [], "footer": 1, "buttons": {}});
        example().assert_steps(&[
            (
                Set("template.components", json!([{"type": "BODY"}])),
                &[("template.components", "must be an object")],
            ),
            (
                Set("template.components", parts),
                &[
                    ("template.components.header", "must be an object"),
                    ("template.components.body", "must be an object"),
                    ("template.components.footer", "must be an object"),
                    ("template.components.buttons", "must be an array"),
                ],
            ),
        ]);
    }

    #[test]
    fn header_format_is_one_of_the_four() {
        let format = "template.components.header.format";
        full().assert_steps(&[
            (Set(format, json!("TEXT")), &[]),
            (Set(format, json!("IMAGE")), &[]),
            (Set(format, json!("VIDEO")), &[]),
            (Set(format, json!("DOCUMENT")), &[]),
            (
                Set(format, json!("AUDIO")),
                &[(format, "must be one of TEXT, IMAGE, VIDEO, DOCUMENT")],
            ),
        ]);
    }

    #[test]
    fn documented_strings_and_arrays_are_type_checked() {
        let mut body = full().body();
        let components = &mut body["template"]["components"];
        components["header"]["text"] = json!(1);
        components["header"]["filename"] = json!(["a.pdf"]);
        components["header"]["example"] = json!({});
        components["body"]["text"] = json!(true);
        components["body"]["examples"] = json!("John");
        components["footer"]["text"] = json!(2);
        assert_eq!(
            fields(SendKind::Template, &body),
            [
                "template.components.header.text",
                "template.components.header.filename",
                "template.components.header.example",
                "template.components.body.text",
                "template.components.body.examples",
                "template.components.footer.text",
            ]
        );
    }

    #[test]
    fn phone_number_and_url_buttons_need_their_target() {
        let call = "template.components.buttons[0].phoneNumber";
        let url = "template.components.buttons[1].url";
        full().assert_steps(&[
            (
                Remove(call),
                &[(call, "is required when type is PHONE_NUMBER")],
            ),
            (
                Set(url, Value::Null),
                &[
                    (call, "is required when type is PHONE_NUMBER"),
                    (url, "is required when type is URL"),
                ],
            ),
        ]);
    }

    #[test]
    fn button_type_and_strings_are_checked() {
        let mut body = full().body();
        body["template"]["components"]["buttons"] = json!([
            {"type": "CALL", "text": "x"},
            {"type": "QUICK_REPLY", "text": 1, "phoneNumber": 2, "url": 3, "example": 4},
            "Stop"
        ]);
        assert_eq!(
            fields(SendKind::Template, &body),
            [
                "template.components.buttons[0].type",
                "template.components.buttons[1].text",
                "template.components.buttons[1].phoneNumber",
                "template.components.buttons[1].url",
                "template.components.buttons[1].example",
                "template.components.buttons[2]",
            ]
        );
    }

    #[test]
    fn variables_and_examples_are_left_to_the_gateway() {
        full().assert_steps(&[
            (Set("template.components.body.examples", json!([])), &[]),
            (Remove("template.components.header.example"), &[]),
        ]);
    }

    #[test]
    fn unknown_fields_are_kept_at_every_level() {
        let mut body = full().body();
        body["template"]["namespace"] = json!("ns");
        body["template"]["components"]["body"]["placeholders"] = json!(["John"]);
        body["template"]["components"]["buttons"][2]["payload"] = json!("STOP");
        body["campaign"] = json!(7);
        assert_eq!(forwarded(SendKind::Template, &body), body);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"messageId": "m", "template": {"category": "X",
            "components": {"header": {"format": "GIF"}}}, "to": "1"});
        assert_eq!(
            fields(SendKind::Template, &body),
            [
                "template.name",
                "template.languageCode",
                "template.category",
                "template.components.header.format",
                "to",
                "from"
            ]
        );
    }
}
