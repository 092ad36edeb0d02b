//! Request validation and normalisation (SPEC "POST /media" validation table, and "Every
//! Lipachat send": the common fields of every send type).
//!
//! Works on the raw JSON object rather than a typed struct: a wrong JSON type is then an
//! error of that field, every field error is reported at once, and unknown fields are
//! forwarded unchanged (their raw JSON text is copied, never re-parsed). This module checks
//! what every send has (`messageId`, `to`, `from`) and hands the rest of the object to the
//! send type's own check ([`crate::sends`]). The output is the exact body to forward and its
//! fingerprint, so nothing downstream parses or serialises the request again.
//!
//! Its rooms: [`raw`] reads the JSON (objects, arrays, strings, numbers, raw), [`check`] is the
//! engine each send type writes its rules with ([`Check`]), [`encode`] writes the forwarded
//! body in a fixed order, so the fingerprint does not depend on the caller's key order.
//!
//! Checks run on every request, so they allocate little: nested objects and arrays are read
//! raw (one `Vec` of borrowed slices each), strings are decoded only when a rule needs their
//! text, and a nested field's name (`buttons[1].title`) is a [`FieldPath`] on the stack,
//! written out only when it has an error.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::fingerprint::Fingerprint;
use crate::phone::PhoneNumber;
pub(crate) use check::{Check, Forward};
use encode::encode;
pub(crate) use raw::RawObject;

mod check;
mod encode;
mod raw;

pub(crate) const MAX_MESSAGE_ID_CHARS: usize = 128;

/// One failing field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct FieldError {
    /// The request field at fault, as spelled in the JSON (`buttons[1].title` when nested).
    #[schema(value_type = String, example = "mediaUrl")]
    pub field: Cow<'static, str>,
    /// What is wrong with it.
    #[schema(value_type = String, example = "must be an https:// URL")]
    pub message: Cow<'static, str>,
}

impl FieldError {
    /// An error of `field`.
    pub(crate) fn new(
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A field's name in the request, as written in an error: `template`, `template.name`,
/// `buttons[1].title`. Each level borrows its parent from the stack, so naming a nested field
/// costs nothing until an error needs the text.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FieldPath<'p> {
    /// A top-level field.
    Top(&'static str),
    /// A key of the parent object.
    Key(&'p FieldPath<'p>, &'static str),
    /// An element of the parent array.
    Index(&'p FieldPath<'p>, usize),
}

impl<'p> FieldPath<'p> {
    /// The field `name` of this object.
    pub(crate) fn key(&'p self, name: &'static str) -> Self {
        Self::Key(self, name)
    }

    /// The element `index` of this array.
    pub(crate) fn index(&'p self, index: usize) -> Self {
        Self::Index(self, index)
    }
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Top(name) => f.write_str(name),
            Self::Key(parent, name) => write!(f, "{parent}.{name}"),
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

impl From<FieldPath<'_>> for Cow<'static, str> {
    fn from(path: FieldPath<'_>) -> Self {
        match path {
            FieldPath::Top(name) => Cow::Borrowed(name),
            nested => Cow::Owned(nested.to_string()),
        }
    }
}

/// Whether `text` has more than `max` characters (counted only when its bytes could be).
pub(crate) fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

/// Why a body was refused before anything went upstream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// Not JSON, or not a JSON object; the text says where.
    MalformedJson(String),
    /// The object broke one or more field rules.
    Fields(Vec<FieldError>),
}

/// A send type's own rules: what [`validate`] checks beyond the common fields.
pub(crate) struct Rules {
    /// The send type's name, part of the fingerprint.
    pub name: &'static str,
    /// Its own top-level fields, in the order they are forwarded (a repeated one is an error;
    /// a null one is absent).
    pub fields: &'static [&'static str],
    /// Checks those fields, records errors, and says which to forward normalised.
    pub check: fn(&mut Check<'_>),
}

/// A valid, normalised send: the body to forward and what dedup, limits and logs need.
#[derive(Debug, Clone)]
pub(crate) struct SendRequest {
    pub message_id: Box<str>,
    pub from: PhoneNumber,
    pub to: PhoneNumber,
    /// The exact JSON sent upstream.
    pub body: Bytes,
    pub fingerprint: Fingerprint,
}

/// Validates and normalises one request body under a send type's rules.
pub(crate) fn validate(
    spec: &Rules,
    body: &[u8],
    default_from: Option<&PhoneNumber>,
) -> Result<SendRequest, Invalid> {
    let object: RawObject<'_> = serde_json::from_slice(body)
        .map_err(|e| Invalid::MalformedJson(describe_json_error(&e)))?;
    let mut check = Check {
        object: &object,
        errors: Vec::new(),
        forward: Vec::new(),
    };
    for (index, key) in object.keys().enumerate() {
        let known = COMMON_FIELDS.contains(&key) || spec.fields.contains(&key);
        if known && object.keys().take(index).any(|earlier| earlier == key) {
            check.error(key.to_owned(), "must appear only once");
        }
    }

    let message_id = check
        .required_string("messageId", object.get("messageId"))
        .and_then(|id| check_message_id(id, &mut check));
    (spec.check)(&mut check);
    let to = check
        .required_string("to", object.get("to"))
        .and_then(|t| phone("to", &t, &mut check));
    let from = match object.get("from") {
        None => match default_from {
            Some(number) => Some(number.clone()),
            None => {
                check.error(
                    "from",
                    "is required (no LIPACHAT_DEFAULT_FROM is configured)",
                );
                None
            }
        },
        some => check
            .required_string("from", some)
            .and_then(|f| phone("from", &f, &mut check)),
    };

    let Check {
        mut errors,
        forward,
        ..
    } = check;
    let (Some(message_id), Some(to), Some(from), true) = (message_id, to, from, errors.is_empty())
    else {
        // Field order in the answer: the order the SPEC's tables list them.
        errors.sort_by_key(|e| field_rank(spec.fields, &e.field));
        return Err(Invalid::Fields(errors));
    };

    let body = encode(&object, &message_id, &forward, &from, &to, spec.fields);
    let fingerprint = Fingerprint::of(spec.name, &body);
    Ok(SendRequest {
        message_id: message_id.into_owned().into_boxed_str(),
        from,
        to,
        body: Bytes::from(body),
        fingerprint,
    })
}

/// The fields every send has.
pub(crate) const COMMON_FIELDS: [&str; 3] = ["messageId", "from", "to"];

/// messageId first, the type's fields in their order, then to and from, then the rest.
fn field_rank(fields: &[&str], field: &str) -> usize {
    let top = field.split(['.', '[']).next().unwrap_or(field);
    match top {
        "messageId" => 0,
        "to" => fields.len() + 1,
        "from" => fields.len() + 2,
        _ => fields
            .iter()
            .position(|f| *f == top)
            .map_or(fields.len() + 3, |i| i + 1),
    }
}

/// serde_json's message, without the position noise for a body that is not an object.
fn describe_json_error(error: &serde_json::Error) -> String {
    if error.classify() == serde_json::error::Category::Data {
        "the request body must be a JSON object".to_owned()
    } else {
        format!("the request body is not valid JSON ({error})")
    }
}

fn check_message_id<'a>(id: Cow<'a, str>, check: &mut Check<'_>) -> Option<Cow<'a, str>> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_MESSAGE_ID_CHARS {
        check.error(
            "messageId",
            format!("must be 1 to {MAX_MESSAGE_ID_CHARS} characters"),
        );
        return None;
    }
    if id.chars().any(char::is_control) {
        check.error("messageId", "must not contain control characters");
        return None;
    }
    Some(id)
}

fn phone(field: &'static str, text: &str, check: &mut Check<'_>) -> Option<PhoneNumber> {
    PhoneNumber::parse(text)
        .map_err(|message| check.error(field, message))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sends::SendKind;
    use crate::sends::test_support::{fields, media_example as valid, run};
    use serde_json::{Value, json};

    #[test]
    fn common_fields_are_normalised() {
        let request = run(SendKind::Media, &valid()).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["from"], "254110090747");
        assert_eq!(sent["to"], "254712345678");
        assert_eq!(&*request.message_id, "m-1");
        assert_eq!(request.to.digits(), "254712345678");
    }

    #[test]
    fn unknown_fields_are_forwarded_unchanged() {
        let body = br#"{"messageId":"m-1","mediaType":"IMAGE","mediaUrl":"https://x.example/a",
            "extra": {"nested": [1, 2.50, "x"]},"from":"254110090747","to":"254712345678"}"#;
        let request = validate(SendKind::Media.rules(), body, None).unwrap();
        let text = std::str::from_utf8(&request.body).unwrap();
        assert!(
            text.ends_with(r#","extra":{"nested": [1, 2.50, "x"]}}"#),
            "{text}"
        );
    }

    #[test]
    fn fingerprint_ignores_phone_format_and_key_order() {
        let a = run(SendKind::Media, &valid()).unwrap();
        let b = validate(
            SendKind::Media.rules(),
            br#"{"to":"254712345678","from":"254110090747","caption":"hi",
                "mediaUrl":"https://cdn.example.com/a.png","mediaType":"IMAGE","messageId":"m-1"}"#,
            None,
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.body, b.body);
    }

    #[test]
    fn malformed_json_is_not_a_field_error() {
        assert!(matches!(
            validate(SendKind::Media.rules(), b"{not json", None),
            Err(Invalid::MalformedJson(_))
        ));
        assert!(matches!(
            validate(SendKind::Media.rules(), b"[1,2]", None),
            Err(Invalid::MalformedJson(m)) if m.contains("JSON object")
        ));
    }

    #[test]
    fn message_id_rules() {
        for bad in [
            json!(""),
            json!("a".repeat(129)),
            json!("a\nb"),
            json!("\u{85}"),
            json!(7),
        ] {
            let mut body = valid();
            body["messageId"] = bad;
            assert_eq!(fields(SendKind::Media, &body), ["messageId"]);
        }
        let mut body = valid();
        body["messageId"] = json!("é".repeat(128));
        assert!(
            run(SendKind::Media, &body).is_ok(),
            "128 characters, more bytes, is allowed"
        );
    }

    #[test]
    fn phone_numbers_need_8_to_15_digits() {
        for bad in ["1234567", "1234567890123456", "2547abc12345"] {
            let mut body = valid();
            body["to"] = json!(bad);
            assert_eq!(fields(SendKind::Media, &body), ["to"]);
        }
    }

    #[test]
    fn from_comes_from_the_default_when_absent() {
        let mut body = valid();
        body.as_object_mut().unwrap().remove("from");
        assert_eq!(fields(SendKind::Media, &body), ["from"]);
        let default = PhoneNumber::parse("254700000001").unwrap();
        let request = validate(
            SendKind::Media.rules(),
            body.to_string().as_bytes(),
            Some(&default),
        )
        .unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["from"], "254700000001");
    }

    #[test]
    fn duplicate_known_fields_are_rejected() {
        let body = br#"{"messageId":"a","messageId":"b","mediaType":"IMAGE",
            "mediaUrl":"https://x.example/a","from":"254110090747","to":"254712345678"}"#;
        assert!(matches!(
            validate(SendKind::Media.rules(), body, None),
            Err(Invalid::Fields(e)) if e[0].field == "messageId"
        ));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body = br#"{"messageId":"a\u0062c","mediaType":"IMAGE",
            "mediaUrl":"https:\/\/x.example\/a","from":"254110090747","to":"254712345678"}"#;
        let request = validate(SendKind::Media.rules(), body, None).unwrap();
        assert_eq!(&*request.message_id, "abc");
    }

    #[test]
    fn nested_field_names_are_written_as_paths() {
        let top = FieldPath::Top("template");
        let buttons = top.key("components");
        let buttons = buttons.key("buttons");
        let second = buttons.index(1);
        assert_eq!(
            Cow::from(second.key("url")),
            "template.components.buttons[1].url"
        );
        assert!(matches!(Cow::from(top), Cow::Borrowed("template")));
    }

    #[test]
    fn longer_than_counts_characters_not_bytes() {
        assert!(!longer_than(&"é".repeat(4), 4));
        assert!(longer_than("abcde", 4));
        assert!(!longer_than("abcd", 4));
    }

    #[test]
    fn whitespace_around_values_is_not_part_of_them() {
        let body = b"{ \"messageId\" :  \"m-1\" \n, \"mediaType\":\t\"IMAGE\"  ,\"mediaUrl\" : \"https://x.example/a\" , \"from\" : \"254110090747\" , \"to\":\"254712345678\"\r\n}";
        let request = validate(SendKind::Media.rules(), body, None).unwrap();
        assert_eq!(&*request.message_id, "m-1");
    }
}
