//! SPEC "Operations" and overload: health, readiness and drain, shedding, metrics, OpenAPI.

use serde_json::Value;

use crate::helpers::{Step, envelope, media_body, spawn_app, spawn_app_with, wait_until};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_are_shed_at_once() {
    let app = spawn_app_with(&[("RELAY_MAX_IN_FLIGHT", "2")]).await;
    app.gateway.set_default(Step::held());
    let first = app.spawn_post_media("shed-1");
    let second = app.spawn_post_media("shed-2");
    app.gateway.next_request().await;
    app.gateway.next_request().await;

    let shed = app.post_media(&media_body("shed-3")).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    envelope(shed).await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert!(
        app.metrics()
            .await
            .contains("lipachat_relay_requests_total{type=\"media\",outcome=\"shed\"} 1")
    );

    app.gateway.release(2);
    assert_eq!(first.await.unwrap().status(), 200);
    assert_eq!(second.await.unwrap().status(), 200);
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn draining_refuses_new_sends_and_finishes_the_one_under_way() {
    let mut app = spawn_app().await;
    app.gateway.script([Step::held()]);
    let under_way = app.spawn_post_media("drain-1");
    app.gateway.next_request().await;
    app.begin_shutdown();
    wait_until("the drain begins", || async { app.state.is_draining() }).await;
    assert_eq!(app.get("/readyz").await.status(), 503);
    let refused = app.post_media(&media_body("drain-2")).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().get("retry-after").is_some());

    app.gateway.release(1);
    let answer = under_way.await.unwrap();
    assert_eq!(answer.status(), 200);
    app.shutdown().await;
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let app = spawn_app().await;
    app.gateway.script([Step::status(503), Step::sent()]);
    app.post_media(&media_body("m-1")).await;
    app.post_media(&media_body("m-1")).await;
    app.post_raw("/media", "text/plain", String::new()).await;
    let text = app.metrics().await;
    for expected in [
        "lipachat_relay_requests_total{type=\"media\",outcome=\"sent\"} 1",
        "lipachat_relay_requests_total{type=\"media\",outcome=\"replayed\"} 1",
        "lipachat_relay_requests_total{type=\"media\",outcome=\"invalid\"} 1",
        "lipachat_relay_upstream_attempts_total{status=\"503\"} 1",
        "lipachat_relay_upstream_attempts_total{status=\"200\"} 1",
        "lipachat_relay_request_duration_seconds_count 3",
        "lipachat_relay_upstream_duration_seconds_count 2",
        "lipachat_relay_dedup_entries 1",
        "lipachat_relay_in_flight 0",
        "lipachat_relay_build_info{version=\"",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    assert!(!text.contains("m-1"), "no messageId in a label");
}

#[tokio::test]
async fn the_committed_openapi_document_matches_the_served_one() {
    let app = spawn_app().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, serde_json::to_string_pretty(&served).unwrap() + "\n").unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("openapi.json is missing or not JSON; run UPDATE_OPENAPI=1 cargo test");
    assert_eq!(
        served, committed,
        "openapi.json drifted from the code; regenerate with UPDATE_OPENAPI=1 cargo test"
    );
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/media",
        "/api/v1/whatsapp/media",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(served["paths"][path].is_object(), "{path} undocumented");
    }
}
