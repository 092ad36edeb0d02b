//! Request validation and normalisation (SPEC "POST /media", validation table).
//!
//! Works on the raw JSON object rather than a typed struct: a wrong JSON type is then an
//! error of that field, every field error is reported at once, and unknown fields are
//! forwarded unchanged (their raw JSON text is copied, never re-parsed). The output is the
//! exact body to forward plus its fingerprint, so nothing downstream parses or serialises
//! the request again.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::dedup::Fingerprint;

pub const MAX_MESSAGE_ID_CHARS: usize = 128;
pub const MAX_MEDIA_URL_CHARS: usize = 2048;
pub const MAX_CAPTION_CHARS: usize = 1024;
pub const MAX_FILENAME_CHARS: usize = 240;
pub const MIN_PHONE_DIGITS: usize = 8;
pub const MAX_PHONE_DIGITS: usize = 15;

/// The media kinds the gateway accepts, sent upper-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaType {
    pub const ALL: [MediaType; 5] = [
        Self::Image,
        Self::Video,
        Self::Audio,
        Self::Document,
        Self::Sticker,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "IMAGE",
            Self::Video => "VIDEO",
            Self::Audio => "AUDIO",
            Self::Document => "DOCUMENT",
            Self::Sticker => "STICKER",
        }
    }

    /// Any letter case is accepted.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

/// A phone number with country code, digits only (8–15 of them).
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(Box<str>);

impl PhoneNumber {
    /// Strips `+`, spaces, dashes and parentheses; what remains must be 8–15 ASCII digits.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let mut digits = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '0'..='9' => digits.push(c),
                '+' | ' ' | '-' | '(' | ')' => {}
                _ => {
                    return Err("must be a phone number: digits, with optional + ( ) - and spaces");
                }
            }
        }
        if !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits.len()) {
            return Err("must have 8 to 15 digits, country code included");
        }
        Ok(Self(digits.into_boxed_str()))
    }

    /// The digits, as sent upstream.
    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Phone numbers are personal data: even Debug shows them masked.
        write!(f, "PhoneNumber({})", crate::telemetry::mask_phone(&self.0))
    }
}

/// One failing field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The request field at fault, as spelled in the JSON.
    #[schema(value_type = String, example = "mediaUrl")]
    pub field: &'static str,
    /// What is wrong with it.
    #[schema(value_type = String, example = "must be an absolute https:// URL with a host")]
    pub message: Cow<'static, str>,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Why a body was refused before anything went upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON, or not a JSON object; the text says where.
    MalformedJson(String),
    /// The object broke one or more field rules.
    Fields(Vec<FieldError>),
}

/// A valid, normalised request: the body to forward and what dedup and logs need.
#[derive(Debug, Clone)]
pub struct MediaRequest {
    pub message_id: Box<str>,
    pub media_type: MediaType,
    pub to: PhoneNumber,
    /// The exact JSON sent upstream (known fields normalised, unknown fields sorted by key).
    pub body: Bytes,
    pub fingerprint: Fingerprint,
}

/// The raw object: each key with its raw JSON value, in the caller's order.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

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

/// The known fields as found: `None` when absent (or JSON `null`).
#[derive(Default)]
struct KnownFields<'a> {
    message_id: Option<&'a RawValue>,
    media_type: Option<&'a RawValue>,
    media_url: Option<&'a RawValue>,
    caption: Option<&'a RawValue>,
    filename: Option<&'a RawValue>,
    to: Option<&'a RawValue>,
    from: Option<&'a RawValue>,
}

/// Validates and normalises one request body.
pub fn validate(body: &[u8], default_from: Option<&PhoneNumber>) -> Result<MediaRequest, Invalid> {
    let object: RawObject<'_> = serde_json::from_slice(body)
        .map_err(|e| Invalid::MalformedJson(describe_json_error(&e)))?;

    let mut known = KnownFields::default();
    let mut unknown: Vec<(&str, &RawValue)> = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in &object.0 {
        let slot = match key.as_ref() {
            "messageId" => &mut known.message_id,
            "mediaType" => &mut known.media_type,
            "mediaUrl" => &mut known.media_url,
            "caption" => &mut known.caption,
            "filename" => &mut known.filename,
            "to" => &mut known.to,
            "from" => &mut known.from,
            other => {
                unknown.push((other, value));
                continue;
            }
        };
        if slot.is_some() {
            errors.push(FieldError::new(field_name(key), "must appear only once"));
        }
        *slot = (value.get() != "null").then_some(*value);
    }

    let message_id = required_string("messageId", known.message_id, &mut errors)
        .and_then(|id| check_message_id(id, &mut errors));
    let media_type = required_string("mediaType", known.media_type, &mut errors).and_then(|t| {
        let parsed = MediaType::parse(&t);
        if parsed.is_none() {
            errors.push(FieldError::new(
                "mediaType",
                "must be one of IMAGE, VIDEO, AUDIO, DOCUMENT, STICKER",
            ));
        }
        parsed
    });
    let media_url = required_string("mediaUrl", known.media_url, &mut errors)
        .and_then(|url| check_media_url(url, &mut errors));
    let caption = optional_string("caption", known.caption, &mut errors).and_then(|c| {
        if c.chars().count() > MAX_CAPTION_CHARS {
            errors.push(FieldError::new(
                "caption",
                "must be at most 1024 characters",
            ));
            return None;
        }
        Some(c)
    });
    let filename = optional_string("filename", known.filename, &mut errors)
        .and_then(|f| check_filename(f, media_type, &mut errors));
    let to =
        required_string("to", known.to, &mut errors).and_then(|t| phone("to", &t, &mut errors));
    let from = match known.from {
        None => match default_from {
            Some(number) => Some(number.clone()),
            None => {
                errors.push(FieldError::new(
                    "from",
                    "is required (no LIPACHAT_DEFAULT_FROM is configured)",
                ));
                None
            }
        },
        some => {
            required_string("from", some, &mut errors).and_then(|f| phone("from", &f, &mut errors))
        }
    };

    let (Some(message_id), Some(media_type), Some(media_url), Some(to), Some(from), true) = (
        message_id,
        media_type,
        media_url,
        to,
        from,
        errors.is_empty(),
    ) else {
        return Err(Invalid::Fields(errors));
    };

    unknown.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let body = encode(&Normalised {
        message_id: &message_id,
        media_type,
        media_url: &media_url,
        caption: caption.as_deref(),
        filename: filename.as_deref(),
        from: &from,
        to: &to,
        unknown: &unknown,
    });
    let fingerprint = Fingerprint::of(&body);
    Ok(MediaRequest {
        message_id: message_id.into_owned().into_boxed_str(),
        media_type,
        to,
        body: Bytes::from(body),
        fingerprint,
    })
}

/// serde_json's message, without the position noise for a body that is not an object.
fn describe_json_error(error: &serde_json::Error) -> String {
    if error.classify() == serde_json::error::Category::Data {
        "the request body must be a JSON object".to_owned()
    } else {
        format!("the request body is not valid JSON ({error})")
    }
}

/// The static name of a known field (for error entries).
fn field_name(key: &str) -> &'static str {
    match key {
        "messageId" => "messageId",
        "mediaType" => "mediaType",
        "mediaUrl" => "mediaUrl",
        "caption" => "caption",
        "filename" => "filename",
        "to" => "to",
        _ => "from",
    }
}

fn required_string<'a>(
    field: &'static str,
    value: Option<&'a RawValue>,
    errors: &mut Vec<FieldError>,
) -> Option<Cow<'a, str>> {
    match value {
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(raw) => string_value(field, raw, errors),
    }
}

fn optional_string<'a>(
    field: &'static str,
    value: Option<&'a RawValue>,
    errors: &mut Vec<FieldError>,
) -> Option<Cow<'a, str>> {
    value.and_then(|raw| string_value(field, raw, errors))
}

fn string_value<'a>(
    field: &'static str,
    raw: &'a RawValue,
    errors: &mut Vec<FieldError>,
) -> Option<Cow<'a, str>> {
    match serde_json::from_str::<CowStr<'a>>(raw.get()) {
        Ok(s) => Some(s.0),
        Err(_) => {
            errors.push(FieldError::new(field, "must be a string"));
            None
        }
    }
}

fn check_message_id<'a>(id: Cow<'a, str>, errors: &mut Vec<FieldError>) -> Option<Cow<'a, str>> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_MESSAGE_ID_CHARS {
        errors.push(FieldError::new("messageId", "must be 1 to 128 characters"));
        return None;
    }
    if id.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "messageId",
            "must not contain control characters",
        ));
        return None;
    }
    Some(id)
}

fn check_media_url<'a>(url: Cow<'a, str>, errors: &mut Vec<FieldError>) -> Option<Cow<'a, str>> {
    if url.chars().count() > MAX_MEDIA_URL_CHARS {
        errors.push(FieldError::new(
            "mediaUrl",
            "must be at most 2048 characters",
        ));
        return None;
    }
    // The documented shape is itself a valid absolute https URL: no second parse needed.
    if !has_media_url_shape(&url) {
        errors.push(FieldError::new(
            "mediaUrl",
            "must be an absolute https:// URL with a host (printable ASCII, no spaces)",
        ));
        return None;
    }
    Some(url)
}

/// The shape the OpenAPI pattern documents: `https://` in any case, a DNS host whose labels
/// are letters, digits and inner hyphens and whose last label starts with a letter (so it is
/// never read as an IP address), an optional port up to 65535, then an optional path of
/// printable ASCII without spaces.
pub fn has_media_url_shape(url: &str) -> bool {
    let Some(rest) = url
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .and_then(|_| url.get(8..))
    else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    let labels_ok = host.split('.').all(label_ok)
        && host
            .rsplit('.')
            .next()
            .is_some_and(|last| last.as_bytes().first().is_some_and(u8::is_ascii_alphabetic));
    let port_ok = port.is_none_or(|p| {
        let digits = p.as_bytes();
        match digits.len() {
            1..=4 => digits.iter().all(u8::is_ascii_digit),
            5 => digits.first() != Some(&b'0') && p.parse::<u32>().is_ok_and(|n| n <= 65_535),
            _ => false,
        }
    });
    labels_ok && port_ok
}

fn check_filename<'a>(
    name: Cow<'a, str>,
    media_type: Option<MediaType>,
    errors: &mut Vec<FieldError>,
) -> Option<Cow<'a, str>> {
    let message = if media_type.is_some_and(|t| t != MediaType::Document) {
        "is only allowed with mediaType DOCUMENT"
    } else if name.is_empty() || name.chars().count() > MAX_FILENAME_CHARS {
        "must be 1 to 240 characters"
    } else if name.contains(['/', '\\']) {
        "must not contain / or \\"
    } else {
        return Some(name);
    };
    errors.push(FieldError::new("filename", message));
    None
}

fn phone(field: &'static str, text: &str, errors: &mut Vec<FieldError>) -> Option<PhoneNumber> {
    PhoneNumber::parse(text)
        .map_err(|message| errors.push(FieldError::new(field, message)))
        .ok()
}

/// What goes upstream, before encoding.
struct Normalised<'a> {
    message_id: &'a str,
    media_type: MediaType,
    media_url: &'a str,
    caption: Option<&'a str>,
    filename: Option<&'a str>,
    from: &'a PhoneNumber,
    to: &'a PhoneNumber,
    unknown: &'a [(&'a str, &'a RawValue)],
}

/// Writes the forwarded JSON by hand: known fields in a fixed order, then unknown fields with
/// their raw text. Fixed order makes the fingerprint independent of the caller's key order.
fn encode(n: &Normalised<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        160 + n.message_id.len()
            + n.media_url.len()
            + n.caption.map_or(0, str::len)
            + n.unknown
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>(),
    );
    out.push(b'{');
    string_field(&mut out, "messageId", n.message_id);
    out.push(b',');
    string_field(&mut out, "mediaType", n.media_type.as_str());
    out.push(b',');
    string_field(&mut out, "mediaUrl", n.media_url);
    if let Some(caption) = n.caption {
        out.push(b',');
        string_field(&mut out, "caption", caption);
    }
    if let Some(filename) = n.filename {
        out.push(b',');
        string_field(&mut out, "filename", filename);
    }
    out.push(b',');
    string_field(&mut out, "from", n.from.digits());
    out.push(b',');
    string_field(&mut out, "to", n.to.digits());
    for (key, value) in n.unknown {
        out.push(b',');
        json_string(&mut out, key);
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    out
}

fn string_field(out: &mut Vec<u8>, key: &str, value: &str) {
    json_string(out, key);
    out.push(b':');
    json_string(out, value);
}

fn json_string(out: &mut Vec<u8>, value: &str) {
    // Writing a &str into a Vec cannot fail: serde_json only errors on I/O or non-string keys.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn run(value: &Value) -> Result<MediaRequest, Invalid> {
        validate(value.to_string().as_bytes(), None)
    }

    fn field_errors(value: &Value) -> Vec<FieldError> {
        match run(value) {
            Err(Invalid::Fields(errors)) => errors,
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    fn fields(value: &Value) -> Vec<&'static str> {
        field_errors(value).iter().map(|e| e.field).collect()
    }

    #[test]
    fn valid_request_is_normalised() {
        let request = run(&valid()).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["mediaType"], "IMAGE");
        assert_eq!(sent["from"], "254110090747");
        assert_eq!(sent["to"], "254712345678");
        assert_eq!(sent["caption"], "hi");
        assert_eq!(&*request.message_id, "m-1");
    }

    #[test]
    fn unknown_fields_are_forwarded_unchanged() {
        let mut body = valid();
        body["extra"] = json!({"nested": [1, 2.50, "x"]});
        let request = run(&body).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["extra"], json!({"nested": [1, 2.50, "x"]}));
    }

    #[test]
    fn fingerprint_ignores_case_phone_format_and_key_order() {
        let a = run(&valid()).unwrap();
        let b = validate(
            br#"{"to":"254712345678","from":"254110090747","caption":"hi",
                "mediaUrl":"https://cdn.example.com/a.png","mediaType":"IMAGE","messageId":"m-1"}"#,
            None,
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.body, b.body);
    }

    #[test]
    fn fingerprint_changes_with_the_payload() {
        let mut other = valid();
        other["caption"] = json!("bye");
        assert_ne!(
            run(&valid()).unwrap().fingerprint,
            run(&other).unwrap().fingerprint
        );
    }

    #[test]
    fn malformed_json_is_not_a_field_error() {
        assert!(matches!(
            validate(b"{not json", None),
            Err(Invalid::MalformedJson(_))
        ));
        assert!(matches!(
            validate(b"[1,2]", None),
            Err(Invalid::MalformedJson(m)) if m.contains("JSON object")
        ));
    }

    #[test]
    fn every_failing_field_is_reported_together() {
        let body = json!({"mediaType": "GIF", "mediaUrl": "http://x.example", "to": "12"});
        assert_eq!(
            fields(&body),
            ["messageId", "mediaType", "mediaUrl", "to", "from"]
        );
    }

    #[test]
    fn wrong_json_type_is_an_error_of_that_field() {
        let mut body = valid();
        body["to"] = json!(254712345678u64);
        let errors = field_errors(&body);
        assert_eq!(errors, [FieldError::new("to", "must be a string")]);
    }

    #[test]
    fn message_id_rules() {
        for bad in [
            json!(""),
            json!("a".repeat(129)),
            json!("a\nb"),
            json!("\u{85}"),
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
    fn media_type_accepts_any_case_of_the_five() {
        for t in ["image", "Video", "AUDIO", "document", "sticker"] {
            let mut body = valid();
            body["mediaType"] = json!(t);
            let request = run(&body).unwrap();
            assert_eq!(request.media_type.as_str(), t.to_uppercase());
        }
    }

    #[test]
    fn media_url_shape_follows_the_documented_pattern() {
        for good in [
            "https://cdn.example.com/a.png",
            "HTTPS://a",
            "https://a-b.c1.example:8443/x?y=1#z",
            "https://x.io:65535",
            "https://x.io:0",
        ] {
            assert!(has_media_url_shape(good), "{good}");
        }
        for bad in [
            "http://x.io",
            "https://",
            "https://1.2.3.4/a",
            "https://-x.io",
            "https://x-.io",
            "https://x..io",
            "https://x.io:65536",
            "https://x.io:00080",
            "https://x.io:",
            "https://x.io/a b",
            "https://x.io/caf\u{e9}",
            "https://user@x.io",
            "https://x.io?q",
        ] {
            assert!(!has_media_url_shape(bad), "{bad}");
        }
    }

    #[test]
    fn media_url_must_be_https_with_a_host_and_short() {
        for bad in [
            json!("http://cdn.example.com/a.png"),
            json!("https://"),
            json!("cdn.example.com/a.png"),
            json!(format!("https://cdn.example.com/{}", "a".repeat(2040))),
        ] {
            let mut body = valid();
            body["mediaUrl"] = bad;
            assert_eq!(fields(&body), ["mediaUrl"]);
        }
    }

    #[test]
    fn caption_is_limited_to_1024_characters() {
        let mut body = valid();
        body["caption"] = json!("c".repeat(1025));
        assert_eq!(fields(&body), ["caption"]);
        body["caption"] = json!("c".repeat(1024));
        assert!(run(&body).is_ok());
    }

    #[test]
    fn filename_only_with_document_and_without_slashes() {
        let mut body = valid();
        body["filename"] = json!("a.pdf");
        assert_eq!(fields(&body), ["filename"]);
        body["mediaType"] = json!("DOCUMENT");
        assert!(run(&body).is_ok());
        for bad in [json!("a/b.pdf"), json!("a\\b.pdf"), json!("f".repeat(241))] {
            body["filename"] = bad;
            assert_eq!(fields(&body), ["filename"]);
        }
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
        let request = validate(body.to_string().as_bytes(), Some(&default)).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(sent["from"], "254700000001");
    }

    #[test]
    fn duplicate_known_fields_are_rejected() {
        let body = br#"{"messageId":"a","messageId":"b","mediaType":"IMAGE",
            "mediaUrl":"https://x.example/a","from":"254110090747","to":"254712345678"}"#;
        assert!(
            matches!(validate(body, None), Err(Invalid::Fields(e)) if e[0].field == "messageId")
        );
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let body = br#"{"messageId":"a\u0062c","mediaType":"IMAGE",
            "mediaUrl":"https:\/\/x.example\/a","from":"254110090747","to":"254712345678"}"#;
        let request = validate(body, None).unwrap();
        assert_eq!(&*request.message_id, "abc");
    }
}
