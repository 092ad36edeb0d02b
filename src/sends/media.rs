//! `POST /media` (SPEC "POST /media", Lipachat's "Sending Media" page): image, video, audio,
//! document or sticker by URL.

use utoipa::ToSchema;

use super::common::SendCommon;

use std::borrow::Cow;

use crate::validate::{Check, Forward};

pub(crate) const MAX_MEDIA_URL_CHARS: usize = 2048;
pub(crate) const MAX_CAPTION_CHARS: usize = 1024;
pub(crate) const MAX_FILENAME_CHARS: usize = 240;

/// The type's own fields, in the order they are forwarded.
pub(crate) const FIELDS: &[&str] = &["mediaType", "mediaUrl", "caption", "filename"];

/// The media kinds the gateway accepts, sent upper-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MediaType {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaType {
    pub(crate) const ALL: [MediaType; 5] = [
        Self::Image,
        Self::Video,
        Self::Audio,
        Self::Document,
        Self::Sticker,
    ];

    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Image => "IMAGE",
            Self::Video => "VIDEO",
            Self::Audio => "AUDIO",
            Self::Document => "DOCUMENT",
            Self::Sticker => "STICKER",
        }
    }

    /// Any letter case is accepted.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

/// The media rules; forwards `mediaType` upper-cased and the strings re-encoded.
pub(crate) fn check(check: &mut Check<'_>) {
    let media_type = check
        .required_string("mediaType", check.get("mediaType"))
        .and_then(|t| {
            let parsed = MediaType::parse(&t);
            if parsed.is_none() {
                check.error(
                    "mediaType",
                    "must be one of IMAGE, VIDEO, AUDIO, DOCUMENT, STICKER",
                );
            }
            parsed
        });
    if let Some(media_type) = media_type {
        check.forward(
            "mediaType",
            Forward::Str(Cow::Borrowed(media_type.as_str())),
        );
    }
    if let Some(url) = check.required_string("mediaUrl", check.get("mediaUrl")) {
        match media_url_problem(&url) {
            Some(problem) => check.error("mediaUrl", problem),
            None => check.forward("mediaUrl", Forward::Str(url)),
        }
    }
    if let Some(caption) = check.optional_string("caption", check.get("caption")) {
        if caption.chars().count() > MAX_CAPTION_CHARS {
            check.error(
                "caption",
                format!("must be at most {MAX_CAPTION_CHARS} characters"),
            );
        } else {
            check.forward("caption", Forward::Str(caption));
        }
    }
    if let Some(name) = check.optional_string("filename", check.get("filename")) {
        let problem: Option<Cow<'static, str>> =
            if media_type.is_some_and(|t| t != MediaType::Document) {
                Some("is only allowed with mediaType DOCUMENT".into())
            } else if name.is_empty() || name.chars().count() > MAX_FILENAME_CHARS {
                Some(format!("must be 1 to {MAX_FILENAME_CHARS} characters").into())
            } else if name.contains(['/', '\\']) {
                Some("must not contain / or \\".into())
            } else {
                None
            };
        match problem {
            Some(problem) => check.error("filename", problem),
            None => check.forward("filename", Forward::Str(name)),
        }
    }
}

/// What is wrong with a `mediaUrl`, or `None`. The accepted shape is the documented pattern:
/// `https://` in any case, a DNS host name whose labels are letters, digits and inner hyphens
/// and whose last label starts with a letter (so it is never an IP address), an optional port
/// up to 65535, then an optional path (which may carry a query) of printable ASCII without
/// spaces. Each refusal says which of these the URL breaks.
pub(crate) fn media_url_problem(url: &str) -> Option<Cow<'static, str>> {
    if url.chars().count() > MAX_MEDIA_URL_CHARS {
        return Some(format!("must be at most {MAX_MEDIA_URL_CHARS} characters").into());
    }
    url_shape_problem(url).map(Cow::Borrowed)
}

/// What is wrong with the shape of a `mediaUrl` that is not too long, or `None`.
fn url_shape_problem(url: &str) -> Option<&'static str> {
    let scheme_ok = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    let Some(rest) = url.get(8..).filter(|_| scheme_ok) else {
        let http = url
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
        return Some(if http {
            "must be an https:// URL (http:// is not accepted)"
        } else {
            "must be an absolute https:// URL"
        });
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Some("must not carry a user name or password (user@host)");
    }
    if authority.contains(['?', '#']) {
        return Some("needs a / between the host and a query or fragment (https://host/?q)");
    }
    if !authority.is_ascii() || authority.bytes().any(|b| !b.is_ascii_graphic()) {
        return Some("must have an ASCII host name (use its punycode form) and no spaces");
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Some("must have a host");
    }
    if host.starts_with('[')
        || host
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("must name a host, not an IP address");
    }
    if host.ends_with('.') {
        return Some("must not end its host name with a dot");
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return Some(
            "must have a host name of letters, digits and inner hyphens, separated by dots",
        );
    }
    if !host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.as_bytes().first().is_some_and(u8::is_ascii_alphabetic))
    {
        return Some("must name a host, not an IP address (its last label starts with a letter)");
    }
    let port_ok = port.is_none_or(|p| {
        let digits = p.as_bytes();
        match digits.len() {
            1..=4 => digits.iter().all(u8::is_ascii_digit),
            5 => digits.first() != Some(&b'0') && p.parse::<u32>().is_ok_and(|n| n <= 65_535),
            _ => false,
        }
    });
    if !port_ok {
        return Some("must have a port from 0 to 65535 after the colon");
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("must be printable ASCII without spaces (percent-encode the rest)");
    }
    None
}

// The OpenAPI schema only: the request is read raw, never into these types.
/// Fields every media send has (Lipachat's "Sending Media" page).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct MediaCommon {
    #[serde(flatten)]
    common: SendCommon,
    /// Absolute https:// URL of the media, with a host; percent-encode anything outside
    /// printable ASCII.
    #[schema(
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]*[A-Za-z0-9])?(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[!-~]*)?$",
        example = "https://cdn.example.com/receipt.png"
    )]
    media_url: String,
    /// Shown under the media.
    #[schema(max_length = 1024)]
    caption: Option<String>,
}

/// A DOCUMENT send, which may name the file.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct DocumentMediaRequest {
    #[serde(flatten)]
    common: MediaCommon,
    /// DOCUMENT, any letter case.
    #[schema(pattern = "^[Dd][Oo][Cc][Uu][Mm][Ee][Nn][Tt]$", example = "DOCUMENT")]
    media_type: String,
    /// The file name shown to the recipient: 1–240 characters, no `/` or `\`.
    #[schema(min_length = 1, max_length = 240, pattern = "^[^/\\\\]{1,240}$")]
    filename: Option<String>,
}

/// An IMAGE, VIDEO, AUDIO or STICKER send: no filename.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct OtherMediaRequest {
    #[serde(flatten)]
    common: MediaCommon,
    /// IMAGE, VIDEO, AUDIO or STICKER, any letter case.
    #[schema(
        pattern = "^([Ii][Mm][Aa][Gg][Ee]|[Vv][Ii][Dd][Ee][Oo]|[Aa][Uu][Dd][Ii][Oo]|[Ss][Tt][Ii][Cc][Kk][Ee][Rr])$",
        example = "IMAGE"
    )]
    media_type: String,
    /// Only allowed with DOCUMENT.
    #[schema(schema_with = null_only)]
    filename: Option<String>,
}

/// A media send. Unknown fields are forwarded to the gateway unchanged; `apiKey` is not
/// needed. A JSON null counts as absent.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) enum MediaRequest {
    Document(DocumentMediaRequest),
    Other(OtherMediaRequest),
}

pub(crate) fn null_only() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .description(Some(
            "Not allowed: filename goes only with mediaType DOCUMENT",
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sends::SendKind;
    use crate::sends::test_support::{
        assert_forwarded_as, errors, fields, media_example as valid, run,
    };
    use serde_json::{Value, json};

    #[test]
    fn valid_request_is_normalised_in_a_fixed_order() {
        assert_forwarded_as(
            SendKind::Media,
            valid().to_string().as_bytes(),
            r#"{"messageId":"m-1","mediaType":"IMAGE","mediaUrl":"https://cdn.example.com/a.png","caption":"hi","from":"254110090747","to":"254712345678"}"#,
        );
    }

    #[test]
    fn fingerprint_changes_with_the_payload() {
        let mut other = valid();
        other["caption"] = json!("bye");
        assert_ne!(
            run(SendKind::Media, &valid()).unwrap().fingerprint,
            run(SendKind::Media, &other).unwrap().fingerprint
        );
    }

    #[test]
    fn every_failing_field_is_reported_together() {
        let body = json!({"mediaType": "GIF", "mediaUrl": "http://x.example", "to": "12"});
        assert_eq!(
            fields(SendKind::Media, &body),
            ["messageId", "mediaType", "mediaUrl", "to", "from"]
        );
    }

    #[test]
    fn wrong_json_type_is_an_error_of_that_field() {
        let mut body = valid();
        body["to"] = json!(254712345678u64);
        assert_eq!(
            errors(SendKind::Media, &body),
            [("to".into(), "must be a string".into())]
        );
    }

    #[test]
    fn media_type_accepts_any_case_of_the_five() {
        for t in ["image", "Video", "AUDIO", "document", "sticker"] {
            let mut body = valid();
            body["mediaType"] = json!(t);
            let request = run(SendKind::Media, &body).unwrap();
            let sent: Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(sent["mediaType"], t.to_uppercase());
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
            assert!(media_url_problem(good).is_none(), "{good}");
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
            "https://x.io./a",
            "https://[::1]/a",
            "https://x.123",
        ] {
            assert!(media_url_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn each_media_url_refusal_says_what_is_wrong() {
        let cases = [
            ("http://cdn.example.com/a.png", "http:// is not accepted"),
            ("cdn.example.com/a.png", "absolute https://"),
            ("https://", "must have a host"),
            ("https://10.0.0.1/a.png", "not an IP address"),
            ("https://[::1]/a.png", "not an IP address"),
            ("https://user:pw@cdn.example.com/a", "user name or password"),
            ("https://cdn.example.com?x=1", "needs a / between"),
            ("https://cdn.example.com./a", "with a dot"),
            ("https://cdn.example.com:99999/a", "port"),
            ("https://cdn.example.com/a b", "printable ASCII"),
            ("https://bücher.example/a", "punycode"),
            (
                "https://cdn_x.example/a",
                "letters, digits and inner hyphens",
            ),
        ];
        for (url, says) in cases {
            let problem = media_url_problem(url).unwrap_or_else(|| panic!("{url} accepted"));
            assert!(problem.contains(says), "{url}: {problem}");
        }
        let long = format!("https://cdn.example.com/{}", "a".repeat(2040));
        assert_eq!(
            media_url_problem(&long).as_deref(),
            Some("must be at most 2048 characters")
        );
    }

    #[test]
    fn caption_is_limited_to_1024_characters() {
        let mut body = valid();
        body["caption"] = json!("c".repeat(1025));
        assert_eq!(fields(SendKind::Media, &body), ["caption"]);
        body["caption"] = json!("c".repeat(1024));
        assert!(run(SendKind::Media, &body).is_ok());
    }

    #[test]
    fn filename_only_with_document_and_without_slashes() {
        let mut body = valid();
        body["filename"] = json!("a.pdf");
        assert_eq!(fields(SendKind::Media, &body), ["filename"]);
        body["mediaType"] = json!("DOCUMENT");
        assert!(run(SendKind::Media, &body).is_ok());
        for bad in [
            json!("a/b.pdf"),
            json!("a\\b.pdf"),
            json!("f".repeat(241)),
            json!(""),
        ] {
            body["filename"] = bad;
            assert_eq!(fields(SendKind::Media, &body), ["filename"]);
        }
    }

    #[test]
    fn a_null_optional_field_is_absent() {
        let mut body = valid();
        body["caption"] = Value::Null;
        let request = run(SendKind::Media, &body).unwrap();
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert!(sent.get("caption").is_none());
    }
}
