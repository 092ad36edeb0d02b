//! SPEC "Every Lipachat send", last paragraph: `GET /templates?from=` and its alias `GET
//! /api/v1/template/{number}` relay the gateway's template listing with the secret, through
//! the senders' retry stack, cached five minutes per number; errors are not cached.

use std::time::Duration;

use lipachat_relay::mock;
use serde_json::{Value, json};

use crate::helpers::{
    Step, envelope, error_fields, free_port, random_key, spawn_app, spawn_app_with, start_mock,
};

const NUMBER: &str = "254110090747";
const GATEWAY_PATH: &str = "/api/v1/template/254110090747";

/// The first template of the page's sample answer, in the page's envelope.
fn listing() -> String {
    json!({
        "timestamp": null,
        "data": {"data": [{
            "name": "test_media_companya",
            "components": [
                {"type": "HEADER", "format": "IMAGE",
                 "example": {"header_handle": ["https://scontent.whatsapp.net/v/t61.29466-34/328759101_n.jpg"]}},
                {"type": "BODY",
                 "text": "Hi {{1}}, you recently bought airtime with our platform. We would like to hear your feedback on the quality. May we proceed with thr survey?",
                 "example": {"body_text": [["example1"]]}},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Yes"},
                    {"type": "QUICK_REPLY", "text": "No"},
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
        }]},
        "status": "success",
        "message": "",
        "errors": null
    })
    .to_string()
}

fn listed() -> Step {
    Step::body(200, "application/json", &listing())
}

fn max_age(response: &reqwest::Response) -> u64 {
    let value = response.headers()["cache-control"].to_str().unwrap();
    value
        .strip_prefix("max-age=")
        .unwrap_or_else(|| panic!("cache-control: {value}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_listing_is_fetched_by_get_with_the_secret_only_and_passed_on() {
    let app = spawn_app().await;
    app.gateway.set_default(listed());
    let response = app
        .client
        .get(format!(
            "{}/templates?from=%2B254%20110%20090747",
            app.base_url
        ))
        .header("apiKey", "client-supplied-key")
        .header("x-request-id", "listing-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(max_age(&response), 300);
    assert_eq!(response.text().await.unwrap(), listing(), "byte for byte");
    let sent = app.gateway.next_request().await;
    assert_eq!(sent.method, "GET");
    assert_eq!(sent.path, GATEWAY_PATH);
    let keys: Vec<_> = sent.headers.get_all("apikey").iter().collect();
    assert_eq!(keys, [app.api_key.as_str()]);
    assert_eq!(sent.headers["x-request-id"], "listing-1");
}

#[tokio::test]
async fn the_listing_is_cached_per_number_across_the_path_and_its_alias() {
    let app = spawn_app().await;
    app.gateway.set_default(listed());
    let first = app.get(&format!("/templates?from={NUMBER}")).await;
    assert_eq!(first.status(), 200);
    for path in [
        format!("/templates?from={NUMBER}"),
        format!("/api/v1/template/{NUMBER}"),
        "/api/v1/template/+254-110-090747".to_owned(),
    ] {
        let again = app.get(&path).await;
        assert_eq!(again.status(), 200, "{path}");
        assert!(max_age(&again) <= 300);
        assert_eq!(again.text().await.unwrap(), listing());
    }
    assert_eq!(app.gateway.calls(), 1);
    let other = app.get("/api/v1/template/254700000001").await;
    assert_eq!(other.status(), 200);
    assert_eq!(app.gateway.calls(), 2);
    assert_eq!(
        app.gateway.take_received().await.last().unwrap().path,
        "/api/v1/template/254700000001"
    );
    let metrics = app.metrics().await;
    for line in [
        "lipachat_relay_template_listings_total{result=\"fetched\"} 2",
        "lipachat_relay_template_listings_total{result=\"cached\"} 3",
        "lipachat_relay_template_listings_total{result=\"failed\"} 0",
    ] {
        assert!(metrics.contains(line), "{line}");
    }
}

#[tokio::test]
async fn from_defaults_to_the_default_sender() {
    let app = spawn_app_with(&[("LIPACHAT_DEFAULT_FROM", "+254 700 000 001")]).await;
    app.gateway.set_default(listed());
    let response = app.get("/templates").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.gateway.next_request().await.path,
        "/api/v1/template/254700000001"
    );
}

#[tokio::test]
async fn gateway_errors_are_passed_on_and_not_cached() {
    let app = spawn_app().await;
    let refused = r#"{"timestamp":"2024-09-15T20:07:23.464199513","data":null,"status":"success","message":"Invalid credentials","errors":null}"#;
    app.gateway.script([
        Step::body(401, "application/json", refused),
        Step::body(
            404,
            "application/json",
            r#"{"status":404,"error":"Not Found"}"#,
        ),
        Step::body(200, "text/html", "<html>maintenance</html>"),
    ]);
    app.gateway.set_default(listed());
    let path = format!("/templates?from={NUMBER}");
    let first = app.get(&path).await;
    assert_eq!(first.status(), 401);
    assert_eq!(first.headers()["cache-control"], "no-store");
    assert_eq!(first.text().await.unwrap(), refused);
    let second = app.get(&path).await;
    assert_eq!(second.status(), 404);
    assert_eq!(second.headers()["cache-control"], "no-store");
    let third = app.get(&path).await;
    assert_eq!(third.status(), 502);
    assert_eq!(third.headers()["cache-control"], "no-store");
    envelope(third).await;
    let fourth = app.get(&path).await;
    assert_eq!(fourth.status(), 200);
    assert_eq!(max_age(&fourth), 300);
    let fifth = app.get(&path).await;
    assert_eq!(fifth.status(), 200);
    assert_eq!(
        app.gateway.calls(),
        4,
        "each error asked again; the success once"
    );
    assert!(
        app.metrics()
            .await
            .contains("lipachat_relay_template_listings_total{result=\"failed\"} 3")
    );
}

#[tokio::test]
async fn the_listing_goes_through_the_retry_stack() {
    let app = spawn_app().await;
    app.gateway.script([Step::status(503), listed()]);
    let response = app.get(&format!("/templates?from={NUMBER}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.gateway.calls(), 2);
    let received = app.gateway.take_received().await;
    assert!(received.iter().all(|r| r.path == GATEWAY_PATH));
}

#[tokio::test]
async fn an_unreachable_gateway_is_a_502_that_is_not_cached() {
    let base = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_app_with(&[("LIPACHAT_BASE_URL", &base), ("RELAY_MAX_ATTEMPTS", "1")]).await;
    let path = format!("/templates?from={NUMBER}");
    for _ in 0..2 {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 502);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = envelope(response).await;
        assert!(!body.to_string().contains(&app.api_key));
    }
}

#[tokio::test]
async fn a_slow_gateway_is_a_504_that_is_not_cached() {
    let app = spawn_app_with(&[("RELAY_DEADLINE_MS", "200"), ("RELAY_MAX_ATTEMPTS", "1")]).await;
    app.gateway.script([Step {
        delay: Duration::from_millis(1000),
        ..listed()
    }]);
    app.gateway.set_default(listed());
    let path = format!("/templates?from={NUMBER}");
    let slow = app.get(&path).await;
    assert_eq!(slow.status(), 504);
    envelope(slow).await;
    assert_eq!(app.get(&path).await.status(), 200);
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn concurrent_requests_for_one_number_share_one_gateway_call() {
    let app = spawn_app().await;
    app.gateway.set_default(Step {
        hold: true,
        ..listed()
    });
    let path = format!("/templates?from={NUMBER}");
    let requests = futures::future::join_all((0..5).map(|_| app.get(&path)));
    let release = async {
        app.gateway.next_request().await;
        app.gateway.release(1);
    };
    let (responses, ()) = tokio::join!(requests, release);
    for response in responses {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn a_bad_or_missing_number_is_a_400_without_calling_the_gateway() {
    let app = spawn_app().await;
    for (path, field) in [
        ("/templates", "from"),
        ("/templates?from=", "from"),
        ("/templates?from=2547", "from"),
        ("/templates?from=abc", "from"),
        ("/templates?from=254110090747&from=254700000001", "from"),
        ("/api/v1/template/abc", "number"),
        ("/api/v1/template/1234567890123456", "number"),
        ("/api/v1/template/%FF", "number"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = envelope(response).await;
        assert_eq!(error_fields(&body), [field], "{path}");
    }
    let body = envelope(app.get("/templates").await).await;
    assert_eq!(
        body["errors"][0]["message"],
        "is required (no LIPACHAT_DEFAULT_FROM is configured)"
    );
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn only_get_is_routed() {
    let app = spawn_app().await;
    let response = app
        .post_json(GATEWAY_PATH, &json!({"name": "new_template"}))
        .await;
    assert_eq!(response.status(), 405);
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn the_mock_gateway_answers_the_listing_in_the_documented_shape() {
    let key = random_key();
    let base = start_mock(&key).await;
    let client = reqwest::Client::new();
    let url = format!("{base}{GATEWAY_PATH}");
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let answer: Value = refused.json().await.unwrap();
    assert_eq!(answer["message"], "Invalid credentials");
    let bad = client
        .get(format!("{base}/api/v1/template/+254110090747"))
        .header("apiKey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "the relay sends digits only");
    let answer: Value = bad.json().await.unwrap();
    assert_eq!(answer["error"], "Bad Request");
    let listed = client
        .get(&url)
        .header("apiKey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let answer: Value = listed.json().await.unwrap();
    assert_eq!(answer["status"], "success");
    assert!(answer["errors"].is_null());
    let templates = answer["data"]["data"].as_array().unwrap();
    assert!(!templates.is_empty());
    for template in templates {
        for field in ["name", "language", "status", "category", "id"] {
            assert!(template[field].is_string(), "{field} in {template}");
        }
        assert!(template["components"].is_array());
    }
}

#[tokio::test]
async fn the_relay_lists_the_mock_gateways_templates() {
    let key = random_key();
    let base = start_mock(&key).await;
    let app = spawn_app_with(&[("LIPACHAT_API_KEY", &key), ("LIPACHAT_BASE_URL", &base)]).await;
    let response = app.get("/templates?from=%2B254%20110%20090747").await;
    assert_eq!(response.status(), 200);
    assert_eq!(max_age(&response), 300);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, mock::template_listing());
}
