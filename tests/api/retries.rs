//! SPEC "Retries, timeouts, overload": what is retried, Retry-After, deadlines, the budget.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use crate::helpers::{Step, TestApp, envelope, media_body, spawn_app_with};

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let app = spawn_app_with(&[]).await;
    app.gateway
        .script([Step::status(503), Step::status(503), Step::sent()]);
    let response = app.post_media(&media_body("retry-1")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-relay-attempts"], "3");
    assert_eq!(app.gateway.calls(), 3);
    // Every attempt resends the same messageId: the gateway's deduplication key.
    for _ in 0..3 {
        assert_eq!(
            app.gateway.next_request().await.body["messageId"],
            "retry-1"
        );
    }
}

#[tokio::test]
async fn every_retryable_status_is_retried() {
    let app = spawn_app_with(&[("RELAY_MAX_ATTEMPTS", "2")]).await;
    for (i, status) in [429, 500, 502, 503, 504].into_iter().enumerate() {
        app.gateway.script([Step::status(status), Step::sent()]);
        let response = app.post_media(&media_body(&format!("each-{i}"))).await;
        assert_eq!(response.status(), 200, "{status}");
        assert_eq!(response.headers()["x-relay-attempts"], "2");
    }
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let app = spawn_app_with(&[]).await;
    for status in [400, 401, 403, 404, 409] {
        app.gateway.script([Step::status(status)]);
        let response = app
            .post_media(&media_body(&format!("no-retry-{status}")))
            .await;
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["x-relay-attempts"], "1");
    }
    assert_eq!(app.gateway.calls(), 5);
}

#[tokio::test]
async fn the_last_gateway_answer_is_returned_when_attempts_run_out() {
    let app = spawn_app_with(&[("RELAY_MAX_ATTEMPTS", "2")]).await;
    let last = r#"{"timestamp":"t","status":502,"error":"Bad Gateway","path":"/x"}"#;
    app.gateway
        .script([Step::status(500), Step::body(502, "application/json", last)]);
    let response = app.post_media(&media_body("last-1")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-relay-attempts"], "2");
    assert_eq!(response.text().await.unwrap(), last);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = spawn_app_with(&[]).await;
    app.gateway
        .script([Step::status(429).retry_after("1"), Step::sent()]);
    let started = Instant::now();
    let response = app.post_media(&media_body("after-1")).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_returns_that_answer() {
    let app = spawn_app_with(&[("RELAY_DEADLINE_MS", "2000")]).await;
    app.gateway.script([Step::status(503).retry_after("120")]);
    let started = Instant::now();
    let response = app.post_media(&media_body("after-2")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "120");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(app.gateway.calls(), 1);
}

/// A relay with these attempt timeout and deadline sends `message_id` to a gateway that takes
/// 5 s to answer: the relay, its answer, and how long the answer took.
async fn send_to_a_slow_gateway(
    attempt_timeout_ms: &str,
    deadline_ms: &str,
    message_id: &str,
) -> (TestApp, reqwest::Response, Duration) {
    let app = spawn_app_with(&[
        ("RELAY_ATTEMPT_TIMEOUT_MS", attempt_timeout_ms),
        ("RELAY_DEADLINE_MS", deadline_ms),
    ])
    .await;
    app.gateway
        .set_default(Step::delayed(Duration::from_secs(5)));
    let started = Instant::now();
    let response = app.post_media(&media_body(message_id)).await;
    (app, response, started.elapsed())
}

#[tokio::test]
async fn attempt_timeouts_end_in_504_within_the_deadline() {
    let (app, response, elapsed) = send_to_a_slow_gateway("150", "1000", "slow-1").await;
    assert_eq!(response.status(), 504);
    envelope(response).await;
    assert!(
        elapsed < Duration::from_millis(1250),
        "answered after {elapsed:?}"
    );
    assert!(app.gateway.calls() >= 2, "timed-out attempts are retried");
}

#[tokio::test]
async fn the_deadline_bounds_a_single_slow_attempt() {
    let (app, response, elapsed) = send_to_a_slow_gateway("10000", "300", "slow-2").await;
    assert_eq!(response.status(), 504);
    assert!(elapsed < Duration::from_millis(800));
    assert_eq!(app.gateway.calls(), 1);
}

/// The budget: retries may add 20 % of recent first attempts plus a floor of 1/s over a 10 s
/// window (10). 200 requests against a gateway that always answers 503 may therefore make at
/// most 200 + 40 + 10 = 250 calls; without a budget they would make 600.
#[tokio::test]
async fn the_retry_budget_keeps_an_outage_from_tripling_the_load() {
    // 200 sends to one pair: the pair limit (45 at once) is off, so that every one goes out.
    let app = spawn_app_with(&[
        ("RELAY_MAX_ATTEMPTS", "3"),
        ("RELAY_MAX_IN_FLIGHT", "64"),
        ("RELAY_PAIR_INTERVAL_MS", "0"),
    ])
    .await;
    app.gateway.set_default(Step::status(503));
    let statuses: Vec<u16> = stream::iter(0..200)
        .map(|i| {
            let app = &app;
            async move {
                app.post_media(&media_body(&format!("storm-{i}")))
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 503));
    let calls = app.gateway.calls();
    println!("200 requests against an always-503 gateway made {calls} upstream calls");
    assert!(calls <= 250, "{calls} upstream calls");
    assert!(calls > 200, "some retries were still allowed");
    let metrics = app.metrics().await;
    assert!(!metrics.contains("lipachat_relay_retry_budget_exhausted_total 0"));
}
