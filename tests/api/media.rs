//! SPEC "POST /media": validation, forwarding, and the answers table.

use serde_json::{Value, json};

use crate::helpers::{
    FakeGateway, Step, envelope, error_fields, free_port, media_body, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn every_media_type_is_forwarded_and_the_gateway_answer_returned() {
    let app = spawn_app().await;
    for (i, media_type) in ["image", "VIDEO", "Audio", "DOCUMENT", "sticker"]
        .iter()
        .enumerate()
    {
        let mut body = media_body(&format!("type-{i}"));
        body["mediaType"] = json!(media_type);
        let response = app.post_media(&body).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-relay-attempts"], "1");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["data"]["status"], "SENT");
        assert_eq!(answer["data"]["messageId"], format!("type-{i}"));
        let sent = app.gateway.next_request().await;
        assert_eq!(sent.body["mediaType"], media_type.to_uppercase());
    }
    assert_eq!(app.gateway.calls(), 5);
}

#[tokio::test]
async fn the_gateway_path_is_an_alias() {
    let app = spawn_app().await;
    let response = app
        .post_raw(
            "/api/v1/whatsapp/media",
            "application/json",
            media_body("alias-1").to_string(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn the_secret_is_injected_and_a_client_api_key_is_not_forwarded() {
    let app = spawn_app().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [
        ("apiKey", "client-supplied-key"),
        ("x-request-id", "req-abc"),
        ("traceparent", traceparent),
        ("tracestate", "vendor=1"),
    ];
    let response = app.post_media_with(&headers, &media_body("key-1")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-abc");
    let sent = app.gateway.next_request().await;
    let keys: Vec<_> = sent.headers.get_all("apikey").iter().collect();
    assert_eq!(keys, [app.api_key.as_str()]);
    assert_eq!(sent.headers["x-request-id"], "req-abc");
    assert_eq!(sent.headers["traceparent"], traceparent);
    assert_eq!(sent.headers["tracestate"], "vendor=1");
    assert_eq!(sent.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_request_id_is_made_when_the_caller_has_none() {
    let app = spawn_app().await;
    let response = app.post_media(&media_body("rid-1")).await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    let sent = app.gateway.next_request().await;
    assert_eq!(sent.headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn normalised_fields_and_unknown_fields_are_forwarded() {
    let app = spawn_app_with(&[("LIPACHAT_DEFAULT_FROM", "+254 700 000 001")]).await;
    let body = json!({
        "messageId": "norm-1", "mediaType": "document", "mediaUrl": "https://x.example/a.pdf",
        "filename": "a.pdf", "to": "+254 (712) 345-678", "campaign": {"id": 7}
    });
    assert_eq!(app.post_media(&body).await.status(), 200);
    let sent = app.gateway.next_request().await;
    assert_eq!(sent.body["mediaType"], "DOCUMENT");
    assert_eq!(sent.body["to"], "254712345678");
    assert_eq!(sent.body["from"], "254700000001");
    assert_eq!(sent.body["filename"], "a.pdf");
    assert_eq!(sent.body["campaign"], json!({"id": 7}));
    assert!(sent.body.get("apiKey").is_none());
}

#[tokio::test]
async fn each_validation_rule_is_reported_on_its_field() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Value)> = vec![
        ("messageId", json!("")),
        ("messageId", json!("x".repeat(129))),
        ("messageId", json!("bad\u{7}id")),
        ("messageId", json!(42)),
        ("mediaType", json!("GIF")),
        ("mediaUrl", json!("http://cdn.example.com/a.png")),
        ("mediaUrl", json!("https://")),
        (
            "mediaUrl",
            json!(format!("https://x.example/{}", "a".repeat(2040))),
        ),
        ("caption", json!("c".repeat(1025))),
        ("caption", json!(["not", "a", "string"])),
        ("filename", json!("a.pdf")),
        ("to", json!("12345")),
        ("to", json!("2547-abc-345678")),
        ("from", json!("1234567890123456")),
    ];
    for (field, value) in cases {
        let mut body = media_body("rule-1");
        body[field] = value.clone();
        let response = app.post_media(&body).await;
        assert_eq!(response.status(), 400, "{field} = {value}");
        let answer = envelope(response).await;
        assert_eq!(
            error_fields(&answer),
            [field],
            "{field} = {value}: {answer}"
        );
    }
    for field in ["messageId", "mediaType", "mediaUrl", "to", "from"] {
        let mut body = media_body("rule-2");
        body.as_object_mut().unwrap().remove(field);
        let answer = envelope(app.post_media(&body).await).await;
        assert_eq!(error_fields(&answer), [field]);
    }
    assert_eq!(app.gateway.calls(), 0, "nothing invalid goes upstream");
}

#[tokio::test]
async fn several_failures_are_reported_together() {
    let app = spawn_app().await;
    let body = json!({"messageId": 1, "mediaType": "gif", "mediaUrl": "ftp://x", "to": "1"});
    let answer = envelope(app.post_media(&body).await).await;
    assert_eq!(
        error_fields(&answer),
        ["messageId", "mediaType", "mediaUrl", "to", "from"]
    );
}

#[tokio::test]
async fn a_failed_validation_uses_up_nothing() {
    let app = spawn_app().await;
    let mut bad = media_body("reuse-1");
    bad["to"] = json!("1");
    assert_eq!(app.post_media(&bad).await.status(), 400);
    let response = app.post_media(&media_body("reuse-1")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn malformed_json_is_a_400_envelope_with_no_field_errors() {
    let app = spawn_app().await;
    for body in ["{\"messageId\": ", "[]", "\"text\"", ""] {
        let response = app
            .post_raw("/media", "application/json", body.into())
            .await;
        assert_eq!(response.status(), 400, "{body:?}");
        let answer = envelope(response).await;
        assert!(answer["errors"].is_null());
    }
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let app = spawn_app().await;
    let body = media_body("ct-1").to_string();
    for content_type in ["text/plain", "application/xml", "multipart/form-data"] {
        let response = app.post_raw("/media", content_type, body.clone()).await;
        assert_eq!(response.status(), 415, "{content_type}");
        envelope(response).await;
    }
    let response = app
        .client
        .post(format!("{}/media", app.base_url))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = app
        .post_raw("/media", "application/vnd.api+json; charset=utf-8", body)
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(&[("RELAY_MAX_BODY_BYTES", "512")]).await;
    let mut body = media_body("big-1");
    body["caption"] = json!("c".repeat(600));
    let response = app.post_media(&body).await;
    assert_eq!(response.status(), 413);
    envelope(response).await;
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn gateway_400_and_401_are_passed_through_byte_for_byte() {
    let app = spawn_app().await;
    let spring = r#"{"timestamp":"2026-11-25T10:00:00.000+00:00","status":400,"error":"Bad Request","path":"/api/v1/whatsapp/media"}"#;
    let unauthorised = r#"{"timestamp":"2026-11-25T10:00:00","data":null,"status":"success","message":"Invalid credentials","errors":null}"#;
    app.gateway.script([
        Step::body(400, "application/json", spring),
        Step::body(401, "application/json", unauthorised),
    ]);
    let response = app.post_media(&media_body("pass-1")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.text().await.unwrap(), spring);
    let response = app.post_media(&media_body("pass-2")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-relay-attempts"], "1");
    assert_eq!(response.text().await.unwrap(), unauthorised);
}

#[tokio::test]
async fn html_or_empty_gateway_answers_are_502() {
    let app = spawn_app().await;
    app.gateway.script([
        Step::body(200, "text/html", "<html><body>Bad gateway</body></html>"),
        Step::body(200, "application/json", ""),
    ]);
    for id in ["html-1", "empty-1"] {
        let response = app.post_media(&media_body(id)).await;
        assert_eq!(response.status(), 502, "{id}");
        envelope(response).await;
    }
    // Neither was remembered: the next try goes upstream again.
    assert_eq!(app.post_media(&media_body("html-1")).await.status(), 200);
    assert_eq!(app.gateway.calls(), 3);
}

#[tokio::test]
async fn an_unreachable_gateway_is_502() {
    let port = free_port().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(&[("LIPACHAT_BASE_URL", &base), ("RELAY_MAX_ATTEMPTS", "2")]).await;
    let response = app.post_media(&media_body("down-1")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-relay-attempts"], "2");
    let answer = envelope(response).await;
    assert!(!answer.to_string().contains(&app.api_key));
}

#[tokio::test]
async fn a_base_url_with_a_trailing_slash_reaches_the_media_path() {
    let gateway = FakeGateway::start().await;
    let base = format!("{}/", gateway.base_url());
    let app = spawn_app_with(&[("LIPACHAT_BASE_URL", &base)]).await;
    assert_eq!(app.post_media(&media_body("prefix-1")).await.status(), 200);
    assert_eq!(gateway.calls(), 1);
}
