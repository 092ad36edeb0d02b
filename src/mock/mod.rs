//! The Lipachat-compatible mock gateway (SPEC "Mock gateway"): one fake for users' own
//! integration tests, the compose demo and `serve --mock-upstream`.
//!
//! It answers every send type's gateway path (from the table in `sends`) like the
//! documented gateway: 401 envelope for a missing or wrong `apiKey`, 400 Spring-style for a
//! body it cannot accept, otherwise 200 with a `SENT` envelope. "Cannot accept" is what
//! Lipachat's pages document for that type, which is what the relay's validation encodes, so
//! the mock runs the same check (one source for the rules) and adds what the relay's
//! normalising guarantees: phone numbers as digits and media types spelled as documented. `GET /mock/sends` lists the
//! accepted sends in order, with the path each came by, so a test can assert each went out
//! once. The list keeps the most recent `MAX_RECORDED_SENDS` so a long demo cannot grow
//! without bound. `GET /api/v1/template/{number}` answers every business number with the same
//! small list of templates, in the shape of the "Listing Message Templates" page.
//!
//! Its webhook side, when it has a callback URL ([`with_callbacks`]): `callbacks` posts each accepted
//! send's status callbacks and `inbound` the customer messages of `POST /mock/inbound`; `GET
//! /mock/callbacks` lists what was posted.

mod callbacks;
mod inbound;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::config::ApiKey;
use crate::error::now_rfc3339;
use crate::headers::HEADER_API_KEY;
use crate::phone::PhoneNumber;
use crate::sends::media::MediaType;
use crate::sends::{SEND_TYPES, SendKind};
use crate::upstream::GATEWAY_TEMPLATES_PATH;
use crate::validate::validate;
use callbacks::{Accepted, Callbacks};
pub(crate) use callbacks::{parse_callback_url, relay_webhook_url};
use inbound::{Inbound, PATH_INBOUND};
use url::Url;

/// Where the mock lists the sends it accepted.
pub(crate) const PATH_SENDS: &str = "/mock/sends";
/// Accepted sends remembered for `GET /mock/sends`.
pub(crate) const MAX_RECORDED_SENDS: usize = 100_000;
/// Where the mock lists the callbacks it posted.
pub(crate) const PATH_CALLBACKS: &str = "/mock/callbacks";

/// Which `apiKey` the mock accepts.
#[derive(Clone, Debug)]
pub enum Accept {
    /// Exactly this key.
    Key(ApiKey),
    /// Any non-empty key (the compose demo, which has no secret).
    AnyKey,
}

/// One accepted send.
#[derive(Clone, Debug)]
struct Sent {
    message_id: String,
    path: &'static str,
}

#[derive(Clone)]
struct MockState {
    accept: Accept,
    sends: Arc<Mutex<VecDeque<Sent>>>,
    callbacks: Callbacks,
}

/// The mock's router, posting no callbacks.
pub fn router(accept: Accept) -> Router {
    build(accept, Callbacks::disabled())
}

/// The mock's router, posting its status callbacks and inbound messages to `callback_url`
/// (`MOCK_CALLBACK_URL`, or the relay's own webhook URL), or none when it is `None`. Fails
/// only when the callbacks' HTTP client cannot be built.
pub fn with_callbacks(accept: Accept, callback_url: Option<Url>) -> std::io::Result<Router> {
    Ok(build(accept, Callbacks::new(callback_url)?))
}

fn build(accept: Accept, callbacks: Callbacks) -> Router {
    let state = MockState {
        accept,
        sends: Arc::new(Mutex::new(VecDeque::new())),
        callbacks,
    };
    let mut router = Router::new();
    for send_type in &SEND_TYPES {
        let kind = send_type.kind;
        router = router.route(
            send_type.gateway_path,
            post(
                move |state: State<MockState>, headers: HeaderMap, body: Bytes| {
                    send(state, kind, headers, body)
                },
            ),
        );
    }
    router
        .route(crate::templates::ALIAS_PATH, get(templates))
        .route(PATH_SENDS, get(sends))
        .route(PATH_CALLBACKS, get(callback_listing))
        .route(PATH_INBOUND, post(inbound))
        .route(
            "/healthz",
            get(|| async { json_response(StatusCode::OK, json!({"status": "ok"})) }),
        )
        .with_state(state)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Whether the request carries a key the mock accepts.
fn authorised(accept: &Accept, headers: &HeaderMap) -> bool {
    let presented = headers.get(HEADER_API_KEY).and_then(|v| v.to_str().ok());
    match (accept, presented) {
        (_, None) => false,
        (Accept::AnyKey, Some(key)) => !key.is_empty(),
        (Accept::Key(expected), Some(key)) => expected.expose() == key,
    }
}

fn invalid_credentials() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        json!({"timestamp": now_rfc3339(), "data": null, "status": "success",
               "message": "Invalid credentials", "errors": null}),
    )
}

fn bad_request(path: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"timestamp": now_rfc3339(), "status": 400, "error": "Bad Request",
               "path": path}),
    )
}

/// The Spring-style answer with a `message`, for the mock's own endpoints.
fn refused(status: StatusCode, path: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"timestamp": now_rfc3339(), "status": status.as_u16(),
               "error": status.canonical_reason().unwrap_or_default(),
               "message": message, "path": path}),
    )
}

async fn send(
    State(state): State<MockState>,
    kind: SendKind,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = kind.spec().gateway_path;
    if !authorised(&state.accept, &headers) {
        return invalid_credentials();
    }
    let Some(Acceptable { message_id, to }) = acceptable(kind, &body) else {
        return bad_request(path);
    };
    if let Ok(mut sends) = state.sends.lock() {
        if sends.len() == MAX_RECORDED_SENDS {
            sends.pop_front();
        }
        sends.push_back(Sent {
            message_id: message_id.clone(),
            path,
        });
    }
    let wa_id = format!("wamid.{:032X}", fastrand::u128(..));
    state.callbacks.after_send(&Accepted {
        message_id: &message_id,
        wa_id: &wa_id,
        to: &to,
    });
    json_response(
        StatusCode::OK,
        json!({"timestamp": now_rfc3339(),
               "data": {"messageId": message_id, "waId": wa_id, "status": "SENT",
                        "statusDesc": "Message sent"},
               "status": "success", "message": "", "errors": null}),
    )
}

/// What the mock keeps of a body it accepts.
#[derive(Debug, PartialEq, Eq)]
struct Acceptable {
    message_id: String,
    /// The recipient, digits only: it picks the failure callbacks.
    to: String,
}

/// The gateway's own checks on a body as the relay forwards it: the type's documented rules,
/// phone numbers as digits only, media types upper-case, `longtitude` as the location page spells
/// it.
fn acceptable(kind: SendKind, body: &[u8]) -> Option<Acceptable> {
    let request = validate(kind.rules(), body, None).ok()?;
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (text("to").is_some_and(digits) && text("from").is_some_and(digits)).then_some(())?;
    let spelled = match kind {
        SendKind::Media => MediaType::ALL
            .iter()
            .any(|t| Some(t.as_str()) == text("mediaType")),
        // The relay forwards `longitude` as the page's `longtitude`.
        SendKind::Location => value.get("longtitude").is_some() && value.get("longitude").is_none(),
        SendKind::Text
        | SendKind::Template
        | SendKind::Buttons
        | SendKind::List
        | SendKind::Contact
        | SendKind::RequestLocation
        | SendKind::Flows => true,
    };
    spelled.then_some(())?;
    Some(Acceptable {
        message_id: request.message_id.into(),
        to: text("to")?.to_owned(),
    })
}

/// `GET /api/v1/template/{number}`: the same two templates for every business number given
/// as digits (as the relay sends it), in the page's shape: the gateway's envelope around
/// `data.data`, Meta's template objects.
async fn templates(
    State(state): State<MockState>,
    number: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&state.accept, &headers) {
        return invalid_credentials();
    }
    let digits_only = number.is_ok_and(|Path(text)| {
        PhoneNumber::parse(&text).is_ok_and(|parsed| parsed.digits() == text)
    });
    if !digits_only {
        return bad_request(GATEWAY_TEMPLATES_PATH);
    }
    json_response(StatusCode::OK, template_listing())
}

/// The mock's fixed template listing.
pub fn template_listing() -> Value {
    json!({
        "timestamp": null,
        "data": {
            "data": [
                {
                    "name": "offer_830",
                    "components": [
                        {"type": "BODY", "text": "Hello {{1}}, your offer {{2}} is ready.",
                         "example": {"body_text": [["John", "830"]]}},
                        {"type": "BUTTONS", "buttons": [
                            {"type": "QUICK_REPLY", "text": "Yes"},
                            {"type": "QUICK_REPLY", "text": "Stop"}
                        ]}
                    ],
                    "language": "en",
                    "status": "APPROVED",
                    "category": "MARKETING",
                    "id": "1510667259557589",
                    "createdAt": null,
                    "rejected_reason": "NONE",
                    "quality_score": {"score": "UNKNOWN", "date": "1727275621"}
                },
                {
                    "name": "temp_lower_68",
                    "components": [
                        {"type": "HEADER", "format": "TEXT", "text": "{{1}} registration",
                         "example": {"header_text": ["July"]}},
                        {"type": "BODY",
                         "text": "Hi {{1}}, we have a new user registered click {{2}} to view.",
                         "example": {"body_text": [["John", "https://lipachat.com/offers/ASHSH"]]}}
                    ],
                    "language": "en",
                    "status": "APPROVED",
                    "category": "UTILITY",
                    "id": "2815665278588373",
                    "createdAt": null,
                    "rejected_reason": "NONE",
                    "quality_score": {"score": "UNKNOWN", "date": "1728979833"}
                }
            ]
        },
        "status": "success",
        "message": "",
        "errors": null
    })
}

async fn sends(State(state): State<MockState>) -> Response {
    let sent: Vec<Sent> = state
        .sends
        .lock()
        .map(|sends| sends.iter().cloned().collect())
        .unwrap_or_default();
    let ids: Vec<&str> = sent.iter().map(|s| s.message_id.as_str()).collect();
    let list: Vec<Value> = sent
        .iter()
        .map(|s| json!({"messageId": s.message_id, "path": s.path}))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"count": sent.len(), "messageIds": ids, "sends": list}),
    )
}

/// `GET /mock/callbacks`.
async fn callback_listing(State(state): State<MockState>) -> Response {
    json_response(StatusCode::OK, state.callbacks.listing())
}

/// `POST /mock/inbound`: 202 with the new `messageId` once the post is under way, 400 naming
/// the bad field, 409 when no callback URL is set.
async fn inbound(State(state): State<MockState>, body: Bytes) -> Response {
    let message = match Inbound::parse(&body) {
        Ok(message) => message,
        Err(refusal) => {
            return refused(StatusCode::BAD_REQUEST, PATH_INBOUND, &refusal.to_string());
        }
    };
    let message_id = inbound::new_message_id();
    if !state.callbacks.post_now(message.callback(&message_id)) {
        return refused(
            StatusCode::CONFLICT,
            PATH_INBOUND,
            "no callback URL: start the mock with MOCK_CALLBACK_URL set",
        );
    }
    json_response(StatusCode::ACCEPTED, json!({"messageId": message_id}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A body as the relay forwards it, for each type: the documented example.
    fn forwarded(kind: SendKind) -> Value {
        let mut body = match kind {
            SendKind::Media => json!({"mediaType": "IMAGE",
                "mediaUrl": "https://picsum.photos/id/237/200/300", "caption": ""}),
            SendKind::Text => json!({"message": "Hello world"}),
            SendKind::Template => json!({"template": {"name": "offer_830", "languageCode": "en"}}),
            SendKind::Buttons => json!({"text": "Interested?",
                "buttons": [{"id": "1", "title": "YES"}, {"id": "2", "title": "NO"}]}),
            SendKind::List => json!({"headerText": "Welcome", "body": "Choose",
                "buttonText": "Click Here", "buttons": [{"sectionTitle": "Airtime",
                "sectionItems": [{"id": "KPLC", "title": "KPLC", "description": "power"}]}]}),
            SendKind::Contact => json!({"name": {"formattedName": "Test User"},
                "phones": [{"phone": "254712345678", "type": "Cell"}]}),
            SendKind::Location => json!({"latitude": 35.929673, "longtitude": -78.948237}),
            SendKind::RequestLocation => json!({"text": "Share your current location"}),
            SendKind::Flows => json!({"text": "Share your details", "flowId": "YOUR_FLOW_ID",
                "flowCta": "Share Details!", "screen": "DETAILS", "data": {"service": ""}}),
        };
        body["messageId"] = json!("m-1");
        body["from"] = json!("254110090747");
        body["to"] = json!("254712345678");
        body
    }

    fn accepts(kind: SendKind, body: &Value) -> bool {
        acceptable(kind, body.to_string().as_bytes()).is_some()
    }

    #[test]
    fn every_type_accepts_its_documented_example() {
        for kind in SendKind::ALL {
            assert_eq!(
                acceptable(kind, forwarded(kind).to_string().as_bytes()),
                Some(Acceptable {
                    message_id: "m-1".to_owned(),
                    to: "254712345678".to_owned()
                }),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn every_type_refuses_a_body_without_its_own_required_field() {
        let required = [
            (SendKind::Media, "mediaUrl"),
            (SendKind::Text, "message"),
            (SendKind::Template, "template"),
            (SendKind::Buttons, "buttons"),
            (SendKind::List, "buttons"),
            (SendKind::Contact, "phones"),
            (SendKind::Location, "latitude"),
            (SendKind::RequestLocation, "text"),
            (SendKind::Flows, "flowId"),
        ];
        for (kind, field) in required {
            let mut body = forwarded(kind);
            body.as_object_mut().unwrap().remove(field);
            assert!(!accepts(kind, &body), "{kind:?} without {field}");
        }
    }

    #[test]
    fn every_type_applies_its_documented_limits() {
        let mut buttons = forwarded(SendKind::Buttons);
        buttons["buttons"] = json!([{"id": "1", "title": "A"}, {"id": "2", "title": "B"},
            {"id": "3", "title": "C"}, {"id": "4", "title": "D"}]);
        assert!(!accepts(SendKind::Buttons, &buttons));
        let mut text = forwarded(SendKind::Text);
        text["message"] = json!("a".repeat(4097));
        assert!(!accepts(SendKind::Text, &text));
        let mut list = forwarded(SendKind::List);
        list["buttons"][0]["sectionItems"] = json!(vec![json!({"id": "r", "title": "R"}); 11]);
        assert!(!accepts(SendKind::List, &list));
        let mut template = forwarded(SendKind::Template);
        template["template"].as_object_mut().unwrap().remove("name");
        assert!(!accepts(SendKind::Template, &template));
        let mut location = forwarded(SendKind::Location);
        location["latitude"] = json!(91);
        assert!(!accepts(SendKind::Location, &location));
        let mut request = forwarded(SendKind::RequestLocation);
        request["text"] = json!("a".repeat(1025));
        assert!(!accepts(SendKind::RequestLocation, &request));
        let mut flow = forwarded(SendKind::Flows);
        flow["flowCta"] = json!("a".repeat(21));
        assert!(!accepts(SendKind::Flows, &flow));
    }

    #[test]
    fn a_location_needs_the_pages_spelling_of_longtitude() {
        let mut body = forwarded(SendKind::Location);
        let value = body.as_object_mut().unwrap().remove("longtitude").unwrap();
        body["longitude"] = value;
        assert!(
            !accepts(SendKind::Location, &body),
            "the relay sends it as longtitude"
        );
    }

    #[test]
    fn every_type_needs_phone_numbers_as_digits_and_a_message_id() {
        for kind in SendKind::ALL {
            let mut body = forwarded(kind);
            body["to"] = json!("+254 712 345 678");
            assert!(!accepts(kind, &body), "{kind:?}");
            let mut body = forwarded(kind);
            body["messageId"] = json!("");
            assert!(!accepts(kind, &body), "{kind:?}");
            assert!(acceptable(kind, b"not json").is_none());
        }
    }

    #[test]
    fn media_needs_the_documented_spelling_and_https() {
        let mut body = forwarded(SendKind::Media);
        body["mediaUrl"] = json!("HTTPS://X.example");
        assert!(accepts(SendKind::Media, &body));
        body["mediaType"] = json!("image");
        assert!(
            !accepts(SendKind::Media, &body),
            "the relay sends it upper-case"
        );
        body["mediaType"] = json!("GIF");
        assert!(!accepts(SendKind::Media, &body));
        let mut http = forwarded(SendKind::Media);
        http["mediaUrl"] = json!("http://x.example/a");
        assert!(!accepts(SendKind::Media, &http));
    }
}
