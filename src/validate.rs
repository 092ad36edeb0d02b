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
//! The forwarded body is written in a fixed order: `messageId`, the type's own fields in the
//! order of its `fields` (normalised where its check says so, the caller's raw JSON otherwise),
//! `from`, `to`, then every other field sorted by key. A fixed order makes the fingerprint
//! independent of the caller's key order.
//!
//! Checks run on every request, so they allocate little: nested objects and arrays are read
//! raw (one `Vec` of borrowed slices each), strings are decoded only when a rule needs their
//! text, and a nested field's name (`buttons[1].title`) is a [`FieldPath`] on the stack,
//! written out only when it has an error.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::fingerprint::Fingerprint;
use crate::phone::PhoneNumber;

pub const MAX_MESSAGE_ID_CHARS: usize = 128;

/// One failing field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The request field at fault, as spelled in the JSON (`buttons[1].title` when nested).
    #[schema(value_type = String, example = "mediaUrl")]
    pub field: Cow<'static, str>,
    /// What is wrong with it.
    #[schema(value_type = String, example = "must be an https:// URL")]
    pub message: Cow<'static, str>,
}

impl FieldError {
    /// An error of `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
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
pub enum FieldPath<'p> {
    /// A top-level field.
    Top(&'static str),
    /// A key of the parent object.
    Key(&'p FieldPath<'p>, &'static str),
    /// An element of the parent array.
    Index(&'p FieldPath<'p>, usize),
}

impl<'p> FieldPath<'p> {
    /// The field `name` of this object.
    pub fn key(&'p self, name: &'static str) -> Self {
        Self::Key(self, name)
    }

    /// The element `index` of this array.
    pub fn index(&'p self, index: usize) -> Self {
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
pub fn longer_than(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().count() > max
}

/// Why a body was refused before anything went upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON, or not a JSON object; the text says where.
    MalformedJson(String),
    /// The object broke one or more field rules.
    Fields(Vec<FieldError>),
}

/// A send type's own rules: what [`validate`] checks beyond the common fields.
pub struct Rules {
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
pub struct SendRequest {
    pub message_id: Box<str>,
    pub from: PhoneNumber,
    pub to: PhoneNumber,
    /// The exact JSON sent upstream.
    pub body: Bytes,
    pub fingerprint: Fingerprint,
}

/// A raw JSON object: each key with its raw JSON value, in the caller's order.
pub struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    /// Parses an object, or `None` when the text is not a JSON object.
    pub fn parse(raw: &'a RawValue) -> Option<Self> {
        serde_json::from_str(raw.get()).ok()
    }

    /// The value of `name` (the first, if repeated); a JSON `null` counts as absent.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
            .filter(|value| value.get() != "null")
    }

    /// Every key, in the caller's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _)| key.as_ref())
    }
}

impl<'de> serde::Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key.0, value));
                }
                Ok(RawObject(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A raw JSON array's elements, or `None` when the text is not an array.
pub fn parse_array(raw: &RawValue) -> Option<Vec<&RawValue>> {
    struct Elements<'a>(Vec<&'a RawValue>);
    impl<'de> serde::Deserialize<'de> for Elements<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ArrayVisitor;
            impl<'de> Visitor<'de> for ArrayVisitor {
                type Value = Elements<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON array")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                    while let Some(item) = seq.next_element::<&'de RawValue>()? {
                        items.push(item);
                    }
                    Ok(Elements(items))
                }
            }
            deserializer.deserialize_seq(ArrayVisitor)
        }
    }
    serde_json::from_str::<Elements<'_>>(raw.get())
        .ok()
        .map(|e| e.0)
}

/// A raw JSON value as a string, or `None` when it is not one. Most strings have no escapes:
/// then the text between the quotes is the string (a `RawValue` is valid JSON, so it holds no
/// raw quote or control character), borrowed without a second parse; escaped ones go through
/// serde_json.
pub fn string_of(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<CowStr<'_>>(text).ok().map(|s| s.0)
}

/// A raw JSON value as a number, or `None` when it is not one. A JSON number opens with a
/// minus or a digit, and its grammar is a subset of what `f64` parses; one too large for an
/// `f64` comes back infinite, which every range check refuses.
pub fn number_of(raw: &RawValue) -> Option<f64> {
    let text = raw.get();
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        .then(|| text.parse::<f64>().ok())
        .flatten()
}

/// A string borrowed from the input when it has no escapes, owned otherwise.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A field a send type's check wants forwarded in normalised form.
pub enum Forward<'a> {
    /// Written as a JSON string.
    Str(Cow<'a, str>),
    /// Written as this raw JSON.
    Raw(&'a RawValue),
    /// Not written: the check forwards its value under another of the type's names (the
    /// location's `longitude`, sent as the page's `longtitude`).
    Omit,
}

/// Where a send type's check records its errors and normalised fields.
pub struct Check<'a> {
    /// The caller's object (common fields included).
    pub object: &'a RawObject<'a>,
    errors: Vec<FieldError>,
    forward: Vec<(&'static str, Forward<'a>)>,
}

impl<'a> Check<'a> {
    /// The value of a top-level field; `null` counts as absent.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.object.get(name)
    }

    /// Records an error.
    pub fn error(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Forwards `field`, one of the type's `fields`, with this normalised value instead of
    /// the caller's text.
    pub fn forward(&mut self, field: &'static str, value: Forward<'a>) {
        self.forward.push((field, value));
    }

    /// A required string: "is required" when absent, "must be a string" when not one.
    pub fn required_string(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Cow<'a, str>> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.string(field, raw),
        }
    }

    /// An optional string: `None` when absent; "must be a string" when not one.
    pub fn optional_string(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Cow<'a, str>> {
        value.and_then(|raw| self.string(field.into(), raw))
    }

    /// The value as a string, or "must be a string".
    pub fn string(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        raw: &'a RawValue,
    ) -> Option<Cow<'a, str>> {
        match string_of(raw) {
            Some(text) => Some(text),
            None => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    /// The value as an object, or "must be an object".
    pub fn object_of(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        raw: &'a RawValue,
    ) -> Option<RawObject<'a>> {
        let object = RawObject::parse(raw);
        if object.is_none() {
            self.error(field, "must be an object");
        }
        object
    }

    /// The value as an array, or "must be an array".
    pub fn array_of(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        raw: &'a RawValue,
    ) -> Option<Vec<&'a RawValue>> {
        let items = parse_array(raw);
        if items.is_none() {
            self.error(field, "must be an array");
        }
        items
    }

    /// A required object: "is required" when absent, "must be an object" when not one.
    pub fn required_object(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<RawObject<'a>> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.object_of(field, raw),
        }
    }

    /// An optional object: `None` when absent; "must be an object" when not one.
    pub fn optional_object(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<RawObject<'a>> {
        value.and_then(|raw| self.object_of(field, raw))
    }

    /// A required array: "is required" when absent, "must be an array" when not one.
    pub fn required_array(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Vec<&'a RawValue>> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.array_of(field, raw),
        }
    }

    /// An optional array: `None` when absent; "must be an array" when not one.
    pub fn optional_array(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Vec<&'a RawValue>> {
        value.and_then(|raw| self.array_of(field, raw))
    }

    /// A required number: "is required" when absent, "must be a number" when not one.
    pub fn required_number(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&RawValue>,
    ) -> Option<f64> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.number(field, raw),
        }
    }

    /// The value as a number, or "must be a number".
    pub fn number(&mut self, field: impl Into<Cow<'static, str>>, raw: &RawValue) -> Option<f64> {
        let number = number_of(raw);
        if number.is_none() {
            self.error(field, "must be a number");
        }
        number
    }

    /// A required string whose text no rule reads: checked without decoding it. True when
    /// it is one.
    pub fn required_string_type(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&RawValue>,
    ) -> bool {
        match value {
            None => {
                self.error(field, "is required");
                false
            }
            Some(raw) => self.string_type(field, raw),
        }
    }

    /// An optional string whose text no rule reads. True when present and a string.
    pub fn optional_string_type(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&RawValue>,
    ) -> bool {
        value.is_some_and(|raw| self.string_type(field, raw))
    }

    /// An optional string that must be one of `allowed`, exactly as spelled there. Returns the
    /// matching entry.
    pub fn optional_choice(
        &mut self,
        field: impl Into<Cow<'static, str>> + Copy,
        value: Option<&'a RawValue>,
        allowed: &'static [&'static str],
    ) -> Option<&'static str> {
        let text = self.optional_string(field, value)?;
        let found = allowed.iter().copied().find(|a| *a == text);
        if found.is_none() {
            self.error(field, format!("must be one of {}", allowed.join(", ")));
        }
        found
    }

    /// A required string the Lipachat page names two ways: at least one of the two must be
    /// given, and each given one must be a string. The first is the one an error names.
    pub fn required_string_either(
        &mut self,
        first: (FieldPath<'_>, Option<&RawValue>),
        second: (FieldPath<'_>, Option<&RawValue>),
    ) {
        let ((first, first_value), (second, second_value)) = (first, second);
        if first_value.is_none() && second_value.is_none() {
            self.error(first, format!("is required (or give it as {second})"));
            return;
        }
        self.optional_string_type(first, first_value);
        self.optional_string_type(second, second_value);
    }

    fn string_type(&mut self, field: impl Into<Cow<'static, str>>, raw: &RawValue) -> bool {
        // A RawValue is valid JSON, so one that opens with a quote is a string.
        let is_string = raw.get().starts_with('"');
        if !is_string {
            self.error(field, "must be a string");
        }
        is_string
    }
}

/// Validates and normalises one request body under a send type's rules.
pub fn validate(
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
pub const COMMON_FIELDS: [&str; 3] = ["messageId", "from", "to"];

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
        check.error("messageId", "must be 1 to 128 characters");
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

/// Writes the forwarded JSON by hand (see the module doc for the order).
fn encode(
    object: &RawObject<'_>,
    message_id: &str,
    forward: &[(&'static str, Forward<'_>)],
    from: &PhoneNumber,
    to: &PhoneNumber,
    type_fields: &[&str],
) -> Vec<u8> {
    // Known fields are written in their place (a null one is absent); the rest follow.
    let mut rest: Vec<(&str, &RawValue)> = object
        .0
        .iter()
        .map(|(key, value)| (key.as_ref(), *value))
        .filter(|(key, _)| !(COMMON_FIELDS.contains(key) || type_fields.contains(key)))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(
        64 + object
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>(),
    );
    out.push(b'{');
    string_field(&mut out, "messageId", message_id);
    for key in type_fields {
        let raw = match forward.iter().find(|(name, _)| name == key) {
            Some((_, Forward::Str(text))) => {
                out.push(b',');
                string_field(&mut out, key, text);
                continue;
            }
            Some((_, Forward::Raw(raw))) => Some(*raw),
            Some((_, Forward::Omit)) => None,
            None => object.get(key),
        };
        if let Some(raw) = raw {
            out.push(b',');
            raw_field(&mut out, key, raw);
        }
    }
    out.push(b',');
    string_field(&mut out, "from", from.digits());
    out.push(b',');
    string_field(&mut out, "to", to.digits());
    for (key, value) in rest {
        out.push(b',');
        raw_field(&mut out, key, value);
    }
    out.push(b'}');
    out
}

fn string_field(out: &mut Vec<u8>, key: &str, value: &str) {
    json_string(out, key);
    out.push(b':');
    json_string(out, value);
}

fn raw_field(out: &mut Vec<u8>, key: &str, value: &RawValue) {
    json_string(out, key);
    out.push(b':');
    out.extend_from_slice(value.get().as_bytes());
}

fn json_string(out: &mut Vec<u8>, value: &str) {
    // Most strings need no escape (no quote, backslash or control character): copy them.
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a &str into a Vec cannot fail: serde_json only errors on I/O or non-string keys.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sends::SendKind;
    use serde_json::{Value, json};

    fn valid() -> Value {
        json!({
            "messageId": "m-1",
            "mediaType": "image",
            "mediaUrl": "https://cdn.example.com/a.png",
            "caption": "hi",
            "from": "+254 110 090747",
            "to": "(254) 712-345-678"
        })
    }

    fn run(value: &Value) -> Result<SendRequest, Invalid> {
        validate(SendKind::Media.rules(), value.to_string().as_bytes(), None)
    }

    fn fields(value: &Value) -> Vec<String> {
        match run(value) {
            Err(Invalid::Fields(errors)) => errors.into_iter().map(|e| e.field.into()).collect(),
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn common_fields_are_normalised() {
        let request = run(&valid()).unwrap();
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
        let a = run(&valid()).unwrap();
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
            assert_eq!(fields(&body), ["messageId"]);
        }
        let mut body = valid();
        body["messageId"] = json!("é".repeat(128));
        assert!(run(&body).is_ok(), "128 characters, more bytes, is allowed");
    }

    #[test]
    fn phone_numbers_need_8_to_15_digits() {
        for bad in ["1234567", "1234567890123456", "2547abc12345"] {
            let mut body = valid();
            body["to"] = json!(bad);
            assert_eq!(fields(&body), ["to"]);
        }
    }

    #[test]
    fn from_comes_from_the_default_when_absent() {
        let mut body = valid();
        body.as_object_mut().unwrap().remove("from");
        assert_eq!(fields(&body), ["from"]);
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
    fn strings_are_read_with_and_without_escapes() {
        let raw = |text: &str| serde_json::from_str::<Box<RawValue>>(text).unwrap();
        assert_eq!(string_of(&raw(r#""plain""#)).as_deref(), Some("plain"));
        assert!(matches!(
            string_of(&raw(r#""plain""#)),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(string_of(&raw(r#""a\"b\u0063""#)).as_deref(), Some("a\"bc"));
        assert_eq!(string_of(&raw(r#""""#)).as_deref(), Some(""));
        assert_eq!(string_of(&raw(r#""é\n""#)).as_deref(), Some("é\n"));
        for not_a_string in ["7", "null", "[\"a\"]", "{\"a\":\"b\"}", "true"] {
            assert_eq!(string_of(&raw(not_a_string)), None, "{not_a_string}");
        }
    }

    #[test]
    fn whitespace_around_values_is_not_part_of_them() {
        let body = b"{ \"messageId\" :  \"m-1\" \n, \"mediaType\":\t\"IMAGE\"  ,\"mediaUrl\" : \"https://x.example/a\" , \"from\" : \"254110090747\" , \"to\":\"254712345678\"\r\n}";
        let request = validate(SendKind::Media.rules(), body, None).unwrap();
        assert_eq!(&*request.message_id, "m-1");
    }

    #[test]
    fn strings_are_written_escaped_only_when_they_need_it() {
        for text in [
            "plain",
            "",
            "é€",
            "quote\"",
            "back\\slash",
            "line\nbreak",
            "\u{1}",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, text);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text}");
        }
    }

    #[test]
    fn numbers_are_read_from_json_numbers_only() {
        let raw = |text: &str| serde_json::from_str::<Box<RawValue>>(text).unwrap();
        assert_eq!(number_of(&raw("35.929673")), Some(35.929673));
        assert_eq!(number_of(&raw("-78.948237")), Some(-78.948237));
        assert_eq!(number_of(&raw("0")), Some(0.0));
        assert_eq!(number_of(&raw("-1E+2")), Some(-100.0));
        assert_eq!(number_of(&raw("1e400")), Some(f64::INFINITY));
        for not_a_number in [r#""35.9""#, "null", "true", "[1]", r#"{"a":1}"#] {
            assert_eq!(number_of(&raw(not_a_number)), None, "{not_a_number}");
        }
    }

    #[test]
    fn arrays_and_objects_are_read_raw() {
        let raw: Box<RawValue> = serde_json::from_str(r#"[{"a":1}, "x", null]"#).unwrap();
        let items = parse_array(&raw).unwrap();
        assert_eq!(items.len(), 3);
        let object = RawObject::parse(items[0]).unwrap();
        assert_eq!(object.get("a").map(RawValue::get), Some("1"));
        assert!(parse_array(items[1]).is_none());
        assert!(RawObject::parse(items[1]).is_none());
    }
}
