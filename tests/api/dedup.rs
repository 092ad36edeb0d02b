//! SPEC "Deduplication": replay, coalescing, conflicts, what is and is not remembered.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Step, envelope, error_fields, media_body, spawn_app, spawn_app_with};

#[tokio::test]
async fn identical_request_is_replayed_without_calling_the_gateway() {
    let app = spawn_app().await;
    let first = app.post_media(&media_body("replay-1")).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.text().await.unwrap();

    let second = app.post_media(&media_body("replay-1")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert!(second.headers().get("x-relay-attempts").is_none());
    assert_eq!(second.text().await.unwrap(), first_body);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_make_one_upstream_call() {
    let app = spawn_app().await;
    app.gateway.set_default(Step::held());
    let all = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/media", app.base_url);
        async move {
            join_all((0..50).map(|_| {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(media_body("burst-1").to_string())
                    .send()
            }))
            .await
        }
    });
    app.gateway.next_request().await;
    // All 50 reach the relay while the one send is held; the metric says when.
    app.metric_reaches("lipachat_relay_in_flight 50").await;
    app.gateway.release(1);
    let responses = all.await.unwrap();
    let mut bodies = Vec::new();
    let mut replayed = 0;
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        if response.headers().get("idempotent-replayed").is_some() {
            replayed += 1;
        }
        bodies.push(response.text().await.unwrap());
    }
    assert_eq!(app.gateway.calls(), 1);
    assert_eq!(
        replayed, 49,
        "every caller but the leader is told it was coalesced"
    );
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn a_different_payload_with_the_same_id_is_422_in_flight_and_after() {
    let app = spawn_app().await;
    app.gateway.script([Step::held()]);
    let first = app.spawn_post_media("conflict-1");
    app.gateway.next_request().await;
    let mut other = media_body("conflict-1");
    other["caption"] = json!("a different caption");
    let response = app.post_media(&other).await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_fields(&envelope(response).await), ["messageId"]);

    app.gateway.release(1);
    assert_eq!(first.await.unwrap().status(), 200);
    let response = app.post_media(&other).await;
    assert_eq!(response.status(), 422);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn the_fingerprint_is_taken_after_normalisation() {
    let app = spawn_app().await;
    assert_eq!(app.post_media(&media_body("norm-1")).await.status(), 200);
    let mut same = media_body("norm-1");
    same["to"] = json!("+254 712-345-678");
    same["from"] = json!("+254 (110) 090747");
    same["mediaType"] = json!("image");
    let response = app.post_media(&same).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn gateway_failures_and_timeouts_are_not_remembered() {
    let app = spawn_app_with(&[
        ("RELAY_MAX_ATTEMPTS", "1"),
        ("RELAY_ATTEMPT_TIMEOUT_MS", "200"),
    ])
    .await;
    app.gateway.script([
        Step::status(400),
        Step::status(401),
        Step::status(503),
        Step::delayed(Duration::from_secs(2)),
    ]);
    let expected = [400, 401, 503, 504, 200];
    for status in expected {
        let response = app.post_media(&media_body("forget-1")).await;
        assert_eq!(response.status(), status);
        assert!(response.headers().get("idempotent-replayed").is_none());
    }
    assert_eq!(app.gateway.calls(), expected.len());
}

#[tokio::test]
async fn a_caller_that_disconnects_does_not_cancel_the_send() {
    let app = spawn_app().await;
    app.gateway.script([Step::held()]);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/media", app.base_url);
    let first = impatient
        .post(&url)
        .header("content-type", "application/json")
        .body(media_body("leave-1").to_string())
        .send();
    let (result, _) = tokio::join!(first, app.gateway.next_request());
    assert!(result.unwrap_err().is_timeout(), "the caller gave up first");

    app.gateway.release(1);
    let retry = app.post_media(&media_body("leave-1")).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let answer: Value = retry.json().await.unwrap();
    assert_eq!(answer["data"]["messageId"], "leave-1");
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn remembered_answers_expire_after_the_ttl() {
    let app = spawn_app_with(&[("RELAY_DEDUP_TTL_SECS", "1")]).await;
    assert_eq!(app.post_media(&media_body("ttl-1")).await.status(), 200);
    let replay = app.post_media(&media_body("ttl-1")).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    // The behaviour under test is a one-second window: wait it out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = app.post_media(&media_body("ttl-1")).await;
    assert!(fresh.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.gateway.calls(), 2);
}
