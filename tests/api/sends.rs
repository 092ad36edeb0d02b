//! SPEC "Every Lipachat send, not only media": each type's documented example goes to its
//! gateway path with the secret, each documented rule refuses on its own and together with
//! others, unknown fields pass, dedup spans every path, and the mock gateway answers every
//! path.

use lipachat_relay::{SEND_TYPES, SendKind, SendType};
use serde_json::{Value, json};

use crate::helpers::{envelope, error_fields, random_key, spawn_app, spawn_app_with, start_mock};

/// Lipachat's own example request for a send type, from its page, with phone numbers in
/// place of the placeholders (`254XXXXX`). The template page's example is stored only up to
/// `"languageCod`; it is completed with the language `en` its table shows. The location page
/// has none: its table's example values stand in.
fn example(kind: SendKind) -> Value {
    match kind {
        SendKind::Media => json!({
            "messageId": "5d3f62c3-eb8f-4150-8941-bdceb0f429bb",
            "to": "254712345678",
            "from": "254110090747",
            "mediaType": "IMAGE",
            "mediaUrl": "https://picsum.photos/id/237/200/300",
            "caption": ""
        }),
        SendKind::Text => json!({
            "message": "Hello world",
            "messageId": "e66fc7b8-680f-4887-8dc8-ee062d65b54f",
            "to": "254712345678",
            "from": "254110090747"
        }),
        SendKind::Template => json!({
            "messageId": "d13ce19b-678f-4a94-a910-441cfbb25b9b",
            "to": "254712345678",
            "from": "254110090747",
            "template": {"name": "offer_830", "languageCode": "en"}
        }),
        SendKind::Buttons => json!({
            "text": "Hello John Doe, are you interested to learn more about our products?",
            "buttons": [
                {"id": "1", "title": "YES"},
                {"id": "2", "title": "NO"},
                {"id": "3", "title": "Maybe"}
            ],
            "messageId": "875d25c2-0cb1-4270-a536-7b6dc16568b5",
            "to": "254712345678",
            "from": "254110090747"
        }),
        SendKind::List => json!({
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
        }),
        SendKind::Contact => json!({
            "messageId": "ca739107-4b0d-4581-acb1-4c4af70555de",
            "to": "254712345678",
            "from": "254110090747",
            "name": {"formattedName": "Test User"},
            "phones": [{"phone": "254712345678", "type": "Cell", "waId": "254712345678"}]
        }),
        // The location page has no example: its table's own values, a name and an address.
        SendKind::Location => json!({
            "messageId": "0c6a4a9e-5d1b-4a57-9b0e-3f0f1d9b7c21",
            "to": "254712345678",
            "from": "254110090747",
            "latitude": 35.929673,
            "longtitude": -78.948237,
            "name": "Lipachat office",
            "address": "Durham, North Carolina"
        }),
        SendKind::RequestLocation => json!({
            "messageId": "b3e1e37c-e50b-48b2-8972-6cc659ac33d2",
            "to": "254712345678",
            "from": "254110090747",
            "text": "Let's start with your pickup. You can either manually *enter an address* or *share your current location*."
        }),
        SendKind::Flows => json!({
            "messageId": "1a85c604-0f08-4182-8011-407ba84598c5",
            "to": "254717746565",
            "from": "254110090747",
            "text": "Thank you share your details and one of our agents will be in touch",
            "flowId": "YOUR_FLOW_ID",
            "flowCta": "Share Details!",
            "screen": "First screen in your JSON request",
            "data": {"service": "", "serviceOption": "", "package": ""}
        }),
    }
}

/// The example with another messageId. The list and contact pages' examples share one
/// messageId, so a test sending both needs this: the second would be a 422.
fn example_with_id(kind: SendKind, message_id: &str) -> Value {
    let mut body = example(kind);
    body["messageId"] = json!(message_id);
    body
}

/// A change to a valid body.
type Change = fn(&mut Value);

/// A change to a valid body and the fields it makes fail.
type Case = (SendKind, Change, &'static [&'static str]);

fn remove(value: &mut Value, name: &str) {
    value.as_object_mut().unwrap().remove(name);
}

fn rows(count: usize) -> Value {
    (0..count)
        .map(|i| json!({"id": format!("r{i}"), "title": format!("Row {i}")}))
        .collect()
}

/// Each documented rule, alone.
const RULES: &[Case] = &[
    (SendKind::Text, |b| remove(b, "message"), &["message"]),
    (SendKind::Text, |b| b["message"] = json!(42), &["message"]),
    (
        SendKind::Text,
        |b| b["message"] = json!("a".repeat(4097)),
        &["message"],
    ),
    (SendKind::Template, |b| remove(b, "template"), &["template"]),
    (
        SendKind::Template,
        |b| b["template"] = json!("offer_830"),
        &["template"],
    ),
    (
        SendKind::Template,
        |b| remove(&mut b["template"], "name"),
        &["template.name"],
    ),
    (
        SendKind::Template,
        |b| remove(&mut b["template"], "languageCode"),
        &["template.languageCode"],
    ),
    (
        SendKind::Template,
        |b| b["template"]["category"] = json!("PROMOTION"),
        &["template.category"],
    ),
    (
        SendKind::Template,
        |b| b["template"]["components"] = json!([{"type": "BODY"}]),
        &["template.components"],
    ),
    (
        SendKind::Template,
        |b| b["template"]["components"] = json!({"header": {"format": "AUDIO"}}),
        &["template.components.header.format"],
    ),
    (
        SendKind::Template,
        |b| {
            b["template"]["components"] =
                json!({"buttons": [{"type": "PHONE_NUMBER", "text": "Call"}]});
        },
        &["template.components.buttons[0].phoneNumber"],
    ),
    (
        SendKind::Template,
        |b| {
            b["template"]["components"] =
                json!({"buttons": [{"type": "QUICK_REPLY"}, {"type": "URL", "text": "Shop"}]});
        },
        &["template.components.buttons[1].url"],
    ),
    (SendKind::Buttons, |b| remove(b, "text"), &["text"]),
    (
        SendKind::Buttons,
        |b| b["buttons"] = json!([]),
        &["buttons"],
    ),
    (
        SendKind::Buttons,
        |b| {
            let fourth = json!({"id": "4", "title": "Later"});
            b["buttons"].as_array_mut().unwrap().push(fourth);
        },
        &["buttons"],
    ),
    (
        SendKind::Buttons,
        |b| remove(&mut b["buttons"][1], "id"),
        &["buttons[1].id"],
    ),
    (
        SendKind::Buttons,
        |b| b["buttons"][2]["title"] = json!(3),
        &["buttons[2].title"],
    ),
    (SendKind::List, |b| remove(b, "body"), &["body"]),
    (
        SendKind::List,
        |b| b["headerText"] = json!(["Welcome"]),
        &["headerText"],
    ),
    (
        SendKind::List,
        |b| b["buttons"] = json!(vec![json!({"sectionTitle": "S", "sectionItems": []}); 11]),
        &["buttons"],
    ),
    (
        SendKind::List,
        |b| b["buttons"][1]["sectionItems"] = rows(9),
        &["buttons"],
    ),
    (
        SendKind::List,
        |b| remove(&mut b["buttons"][0], "sectionItems"),
        &["buttons[0].sectionItems"],
    ),
    (
        SendKind::List,
        |b| remove(&mut b["buttons"][1]["sectionItems"][0], "title"),
        &["buttons[1].sectionItems[0].title"],
    ),
    (SendKind::Contact, |b| remove(b, "name"), &["name"]),
    (
        SendKind::Contact,
        |b| b["name"] = json!({}),
        &["name.formattedName"],
    ),
    (SendKind::Contact, |b| remove(b, "phones"), &["phones"]),
    (
        SendKind::Contact,
        |b| remove(&mut b["phones"][0], "type"),
        &["phones[0].type"],
    ),
    (
        SendKind::Contact,
        |b| b["phones"][0]["waId"] = json!(254712345678u64),
        &["phones[0].waId"],
    ),
    (SendKind::Location, |b| remove(b, "latitude"), &["latitude"]),
    (
        SendKind::Location,
        |b| b["latitude"] = json!("35.929673"),
        &["latitude"],
    ),
    (
        SendKind::Location,
        |b| b["latitude"] = json!(-90.5),
        &["latitude"],
    ),
    (
        SendKind::Location,
        |b| remove(b, "longtitude"),
        &["longtitude"],
    ),
    (
        SendKind::Location,
        |b| b["longtitude"] = json!(180.000001),
        &["longtitude"],
    ),
    (
        SendKind::Location,
        |b| {
            remove(b, "longtitude");
            b["longitude"] = json!(-181);
        },
        &["longitude"],
    ),
    (
        SendKind::Location,
        |b| b["longitude"] = json!(-78.948237),
        &["longitude"],
    ),
    (SendKind::Location, |b| b["name"] = json!(7), &["name"]),
    (
        SendKind::Location,
        |b| b["address"] = json!(["Durham"]),
        &["address"],
    ),
    (SendKind::RequestLocation, |b| remove(b, "text"), &["text"]),
    (
        SendKind::RequestLocation,
        |b| b["text"] = json!(false),
        &["text"],
    ),
    (
        SendKind::RequestLocation,
        |b| b["text"] = json!("a".repeat(1025)),
        &["text"],
    ),
    (SendKind::Flows, |b| remove(b, "text"), &["text"]),
    (SendKind::Flows, |b| remove(b, "flowId"), &["flowId"]),
    (SendKind::Flows, |b| b["flowId"] = json!(42), &["flowId"]),
    (SendKind::Flows, |b| remove(b, "flowCta"), &["flowCta"]),
    (
        SendKind::Flows,
        |b| b["flowCta"] = json!("Share all your details"),
        &["flowCta"],
    ),
    (SendKind::Flows, |b| remove(b, "screen"), &["screen"]),
    (SendKind::Flows, |b| b["data"] = json!("service"), &["data"]),
];

/// Several rules broken at once, common fields included.
const SEVERAL: &[Case] = &[
    (
        SendKind::Text,
        |b| {
            b["message"] = json!(["x"]);
            b["to"] = json!("12");
            remove(b, "messageId");
        },
        &["messageId", "message", "to"],
    ),
    (
        SendKind::Template,
        |b| {
            b["template"] = json!({"category": "X", "components": {"footer": {"text": 1}}});
            remove(b, "from");
        },
        &[
            "template.name",
            "template.languageCode",
            "template.category",
            "template.components.footer.text",
            "from",
        ],
    ),
    (
        SendKind::Buttons,
        |b| {
            remove(b, "text");
            b["buttons"] = json!([{"id": 1}, {}, {}, "x"]);
        },
        &[
            "text",
            "buttons",
            "buttons[0].id",
            "buttons[0].title",
            "buttons[1].id",
            "buttons[1].title",
            "buttons[2].id",
            "buttons[2].title",
            "buttons[3]",
        ],
    ),
    (
        SendKind::List,
        |b| {
            b["message"] = json!(false);
            b["buttonText"] = json!(1);
            b["buttons"][0]["sectionItems"] = rows(10);
            remove(&mut b["buttons"][1], "sectionTitle");
        },
        &[
            "message",
            "buttonText",
            "buttons[1].sectionTitle",
            "buttons",
        ],
    ),
    (
        SendKind::Contact,
        |b| {
            b["name"] = json!("Test User");
            b["phones"] = json!([{"type": "Cell"}, {"phone": "1", "type": "Cell", "waId": 1}]);
        },
        &["name", "phones[0].phone", "phones[1].waId"],
    ),
    (
        SendKind::Location,
        |b| {
            b["latitude"] = json!(100);
            b["longitude"] = json!(1);
            b["address"] = json!(1);
            remove(b, "messageId");
        },
        &["messageId", "latitude", "longitude", "address"],
    ),
    (
        SendKind::RequestLocation,
        |b| {
            b["text"] = json!("a".repeat(1025));
            b["to"] = json!("2547");
            b["from"] = json!(254110090747u64);
        },
        &["text", "to", "from"],
    ),
    (
        SendKind::Flows,
        |b| {
            remove(b, "text");
            b["flowCta"] = json!("x".repeat(21));
            b["screen"] = json!({"id": "DETAILS"});
            b["data"] = json!([]);
        },
        &["text", "flowCta", "screen", "data"],
    ),
];

async fn refused_with(kind: SendKind, change: Change, expected: &[&str]) {
    let app = spawn_app().await;
    let mut body = example(kind);
    change(&mut body);
    let response = app.post_json(kind.spec().path, &body).await;
    assert_eq!(response.status(), 400, "{kind:?} {body}");
    let answer = envelope(response).await;
    assert_eq!(error_fields(&answer), expected, "{kind:?} {answer}");
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn every_documented_example_goes_to_its_gateway_path_with_the_secret_only() {
    let app = spawn_app().await;
    for send_type in &SEND_TYPES {
        let body = example_with_id(
            send_type.kind,
            &format!("example-{}", send_type.kind.name()),
        );
        let response = app
            .client
            .post(format!("{}{}", app.base_url, send_type.path))
            .header("content-type", "application/json")
            .header("apiKey", "client-supplied-key")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", send_type.path);
        assert_eq!(response.headers()["x-relay-attempts"], "1");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["data"]["status"], "SENT");
        assert_eq!(answer["data"]["messageId"], body["messageId"]);
        let sent = app.gateway.next_request().await;
        assert_eq!(sent.path, send_type.gateway_path);
        let keys: Vec<_> = sent.headers.get_all("apikey").iter().collect();
        assert_eq!(keys, [app.api_key.as_str()], "{}", send_type.path);
        assert_eq!(sent.body, body, "{}", send_type.path);
    }
    assert_eq!(app.gateway.calls(), SEND_TYPES.len());
}

#[tokio::test]
async fn every_gateway_path_is_an_alias_of_its_relay_path() {
    let app = spawn_app().await;
    for send_type in &SEND_TYPES {
        let body = example_with_id(send_type.kind, &format!("alias-{}", send_type.kind.name()));
        let response = app.post_json(send_type.gateway_path, &body).await;
        assert_eq!(response.status(), 200, "{}", send_type.gateway_path);
        let sent = app.gateway.next_request().await;
        assert_eq!(sent.path, send_type.gateway_path);
        assert_eq!(sent.body, body);
    }
}

#[tokio::test]
async fn the_tables_names_for_a_body_text_and_a_language_are_accepted() {
    let app = spawn_app().await;
    let renames: [(SendKind, Change); 3] = [
        (SendKind::Buttons, |b| {
            b["message"] = b["text"].take();
            remove(b, "text");
        }),
        (SendKind::List, |b| {
            b["message"] = b["body"].take();
            remove(b, "body");
        }),
        (SendKind::Template, |b| {
            remove(&mut b["template"], "languageCode");
            b["template"]["language"] = json!("en");
        }),
    ];
    for (kind, rename) in renames {
        let mut body = example(kind);
        rename(&mut body);
        let response = app.post_json(kind.spec().path, &body).await;
        assert_eq!(response.status(), 200, "{kind:?}");
        assert_eq!(app.gateway.next_request().await.body, body);
    }
}

#[tokio::test]
async fn a_location_given_as_longitude_goes_as_the_pages_longtitude() {
    let app = spawn_app().await;
    let mut body = example(SendKind::Location);
    body["longitude"] = body["longtitude"].take();
    remove(&mut body, "longtitude");
    let response = app.post_json("/location", &body).await;
    assert_eq!(response.status(), 200);
    let sent = app.gateway.next_request().await;
    assert_eq!(sent.path, "/api/v1/whatsapp/location");
    assert_eq!(sent.body, example(SendKind::Location));
    // The same send under the other spelling: a replay, not a second message.
    let again = app
        .post_json("/api/v1/whatsapp/location", &example(SendKind::Location))
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn a_flows_data_object_is_forwarded_as_sent() {
    let app = spawn_app().await;
    let body = r#"{"messageId":"flow-raw-1","to":"254717746565","from":"254110090747",
        "text":"Details?","flowId":"2044724355999872","flowCta":"Share Details!",
        "screen":"DETAILS","data":{"zeta": 1.50, "alpha": [true, null]}}"#;
    let response = app
        .post_raw("/interactive/flows", "application/json", body.to_owned())
        .await;
    assert_eq!(response.status(), 200);
    let sent = app.gateway.next_request().await;
    assert_eq!(
        sent.body["data"],
        json!({"zeta": 1.50, "alpha": [true, null]})
    );
}

#[tokio::test]
async fn each_documented_rule_refuses_on_its_own() {
    for (kind, change, expected) in RULES {
        refused_with(*kind, *change, expected).await;
    }
    let covered: Vec<SendKind> = RULES.iter().map(|(kind, ..)| *kind).collect();
    for kind in SendKind::ALL.into_iter().filter(|k| *k != SendKind::Media) {
        assert!(covered.contains(&kind), "no rule case for {kind:?}");
    }
}

#[tokio::test]
async fn several_broken_rules_are_reported_together() {
    for (kind, change, expected) in SEVERAL {
        refused_with(*kind, *change, expected).await;
    }
}

#[tokio::test]
async fn a_rule_error_says_what_is_wrong() {
    let app = spawn_app().await;
    let mut body = example(SendKind::Buttons);
    body["buttons"][1]["title"] = json!(2);
    let answer = envelope(app.post_json("/interactive/buttons", &body).await).await;
    assert_eq!(
        answer["errors"],
        json!([{"field": "buttons[1].title", "message": "must be a string"}])
    );
    let mut body = example(SendKind::Text);
    body["message"] = json!("a".repeat(4097));
    let answer = envelope(app.post_json("/message/text", &body).await).await;
    assert_eq!(
        answer["errors"][0]["message"],
        "must be at most 4096 characters"
    );
    let mut body = example(SendKind::Location);
    body["longitude"] = json!(-78.948237);
    body["latitude"] = json!(90.5);
    let answer = envelope(app.post_json("/location", &body).await).await;
    assert_eq!(
        answer["errors"],
        json!([
            {"field": "latitude", "message": "must be between -90 and 90"},
            {"field": "longitude",
             "message": "must not be given with longtitude (the same field, spelled as the page spells it)"}
        ])
    );
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn unknown_fields_are_forwarded_unchanged_for_every_type() {
    let app = spawn_app().await;
    for send_type in &SEND_TYPES {
        let mut body = example_with_id(send_type.kind, &format!("extra-{}", send_type.kind.name()));
        body["extra"] = json!({"nested": [1, "two", null], "flag": true});
        body["campaign"] = json!("spring-2026");
        let response = app.post_json(send_type.path, &body).await;
        assert_eq!(response.status(), 200, "{}", send_type.path);
        let sent = app.gateway.next_request().await;
        assert_eq!(sent.body, body, "{}", send_type.path);
    }
}

#[tokio::test]
async fn every_type_is_replayed_without_calling_the_gateway_again() {
    let app = spawn_app().await;
    for (index, send_type) in SEND_TYPES.iter().enumerate() {
        let body = example_with_id(send_type.kind, &format!("replay-{}", send_type.kind.name()));
        let first = app.post_json(send_type.path, &body).await;
        assert_eq!(first.status(), 200);
        let first_body = first.text().await.unwrap();
        // Once by its path, once by its alias: the same send.
        let again = app.post_json(send_type.gateway_path, &body).await;
        assert_eq!(again.status(), 200, "{}", send_type.gateway_path);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.text().await.unwrap(), first_body);
        assert_eq!(app.gateway.calls(), index + 1);
    }
    let metrics = app.metrics().await;
    for kind in SendKind::ALL {
        let line = format!(
            "lipachat_relay_requests_total{{type=\"{}\",outcome=\"replayed\"}} 1",
            kind.name()
        );
        assert!(metrics.contains(&line), "{line}");
    }
}

#[tokio::test]
async fn a_message_id_reused_on_another_path_is_a_conflict() {
    let app = spawn_app().await;
    let first = app
        .post_json(
            "/message/text",
            &example_with_id(SendKind::Text, "shared-1"),
        )
        .await;
    assert_eq!(first.status(), 200);
    for send_type in SEND_TYPES.iter().filter(|t| t.kind != SendKind::Text) {
        let body = example_with_id(send_type.kind, "shared-1");
        for path in [send_type.path, send_type.gateway_path] {
            let response = app.post_json(path, &body).await;
            assert_eq!(response.status(), 422, "{path}");
            envelope(response).await;
        }
    }
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn the_list_and_contact_pages_share_a_message_id_so_sending_both_is_a_conflict() {
    let app = spawn_app().await;
    let list = app
        .post_json("/interactive/list", &example(SendKind::List))
        .await;
    assert_eq!(list.status(), 200);
    let contact = app.post_json("/contact", &example(SendKind::Contact)).await;
    assert_eq!(contact.status(), 422);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn a_path_and_its_alias_are_the_same_type() {
    let app = spawn_app().await;
    let body = example_with_id(SendKind::Media, "same-type-1");
    assert_eq!(app.post_json("/media", &body).await.status(), 200);
    let replay = app.post_json("/api/v1/whatsapp/media", &body).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.gateway.calls(), 1);
}

async fn post_to_mock(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("apiKey", key);
    }
    request.send().await.unwrap()
}

/// A body the mock cannot accept: the type's main field removed.
fn unacceptable(send_type: &SendType) -> Value {
    let mut body = example(send_type.kind);
    let field = match send_type.kind {
        SendKind::Media => "mediaUrl",
        SendKind::Text => "message",
        SendKind::Template => "template",
        SendKind::Buttons | SendKind::List => "buttons",
        SendKind::Contact => "phones",
        SendKind::Location => "latitude",
        SendKind::RequestLocation => "text",
        SendKind::Flows => "flowId",
    };
    remove(&mut body, field);
    body
}

#[tokio::test]
async fn the_mock_gateway_answers_every_path_like_the_gateway() {
    let key = random_key();
    let base = start_mock(&key).await;
    let client = reqwest::Client::new();
    for send_type in &SEND_TYPES {
        let url = format!("{base}{}", send_type.gateway_path);
        let body = example_with_id(send_type.kind, &format!("mock-{}", send_type.kind.name()));
        for wrong in [None, Some("not-the-key")] {
            let refused = post_to_mock(&client, &url, wrong, &body).await;
            assert_eq!(refused.status(), 401, "{url}");
            let answer: Value = refused.json().await.unwrap();
            assert_eq!(answer["message"], "Invalid credentials");
            assert!(answer["data"].is_null());
        }
        let bad = post_to_mock(&client, &url, Some(&key), &unacceptable(send_type)).await;
        assert_eq!(bad.status(), 400, "{url}");
        let answer: Value = bad.json().await.unwrap();
        assert_eq!(answer["error"], "Bad Request");
        assert_eq!(answer["status"], 400);
        assert_eq!(answer["path"], send_type.gateway_path);
        let sent = post_to_mock(&client, &url, Some(&key), &body).await;
        assert_eq!(sent.status(), 200, "{url}");
        let answer: Value = sent.json().await.unwrap();
        assert_eq!(answer["data"]["status"], "SENT");
        assert_eq!(answer["data"]["messageId"], body["messageId"]);
        assert!(
            answer["data"]["waId"]
                .as_str()
                .unwrap()
                .starts_with("wamid.")
        );
    }
    let listed: Value = client
        .get(format!("{base}/mock/sends"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: Vec<Value> = SEND_TYPES
        .iter()
        .map(|t| json!({"messageId": format!("mock-{}", t.kind.name()), "path": t.gateway_path}))
        .collect();
    assert_eq!(listed["sends"], json!(expected));
    assert_eq!(listed["count"], SEND_TYPES.len());
}

#[tokio::test]
async fn the_relay_and_the_mock_gateway_agree_on_every_type() {
    let key = random_key();
    let base = start_mock(&key).await;
    let app = spawn_app_with(&[("LIPACHAT_API_KEY", &key), ("LIPACHAT_BASE_URL", &base)]).await;
    for send_type in &SEND_TYPES {
        // Phone numbers as people write them: the relay sends digits, which the mock needs.
        let mut body = example_with_id(send_type.kind, &format!("agree-{}", send_type.kind.name()));
        body["to"] = json!("+254 712 345-678");
        let response = app.post_json(send_type.path, &body).await;
        assert_eq!(response.status(), 200, "{}", send_type.path);
    }
    let listed: Value = app
        .client
        .get(format!("{base}/mock/sends"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&str> = listed["sends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = SEND_TYPES.iter().map(|t| t.gateway_path).collect();
    assert_eq!(paths, expected);
}
