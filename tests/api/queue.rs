//! SPEC "Queued and scheduled sends", with a real `redis-server`: `Prefer: respond-async` and
//! `Send-At`, cancel, rate limits that wait, failures that are final, and replicas (the real
//! binary) killed with SIGKILL while they hold queued sends.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    EVENT_TIMEOUT, FakeGateway, Served, Step, TestApp, drain_output, envelope, error_fields,
    kill_9, random_key, request, serve_against, spawn_app_with,
};
use crate::redis_server::RedisServer;

/// A text send of `message_id` to `to`.
fn text(message_id: &str, to: &str) -> Value {
    json!({"messageId": message_id, "message": "hello", "from": "254110090747", "to": to})
}

/// POSTs a text send to `base` with `Prefer: respond-async` and, if given, `Send-At`.
async fn queue(base: &str, body: &Value, send_at: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/message/text"))
        .header("content-type", "application/json")
        .header("prefer", "respond-async")
        .body(body.to_string());
    if let Some(at) = send_at {
        request = request.header("send-at", at);
    }
    request.send().await.expect("the relay did not answer")
}

/// [`queue`]s a text send of `message_id` to `to` at `base` and checks that it is taken: 202.
async fn queue_accepted(
    base: &str,
    message_id: &str,
    to: &str,
    send_at: Option<&str>,
) -> reqwest::Response {
    let response = queue(base, &text(message_id, to), send_at).await;
    assert_eq!(response.status(), 202, "{message_id}");
    response
}

/// The record of `message_id` at `base`: status code and body.
async fn record(base: &str, message_id: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/messages/{message_id}"))
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the record of `message_id` stands at `status`.
async fn wait_for_record(base: &str, message_id: &str, status: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let (_, body) = record(base, message_id).await;
        if body["status"] == status {
            return body;
        }
        assert!(
            started.elapsed() < limit,
            "{message_id} never reached {status} within {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `RELAY_REDIS_URL` and a prefix of this test's own.
fn redis_vars(redis: &RedisServer, prefix: &str) -> Vec<(String, String)> {
    vec![
        ("RELAY_REDIS_URL".into(), redis.url()),
        ("RELAY_REDIS_PREFIX".into(), prefix.into()),
    ]
}

/// A `redis-server` and a relay in this process on it, under a prefix of its own, with `extra`
/// variables; `None` where Redis cannot run here (for `redis_or_skip!`).
async fn app_on_redis(extra: &[(&str, &str)]) -> Option<(RedisServer, TestApp)> {
    let redis = RedisServer::start().await?;
    let prefix = format!("q{:x}", fastrand::u32(..));
    let mut vars = redis_vars(&redis, &prefix);
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_app_with(&vars).await;
    Some((redis, app))
}

/// The gateway requests received so far, by messageId.
async fn calls_by_id(gateway: &FakeGateway, counts: &mut HashMap<String, Vec<Instant>>) {
    for request in gateway.take_received().await {
        let id = request.body["messageId"].as_str().unwrap().to_owned();
        counts.entry(id).or_default().push(request.at);
    }
}

#[tokio::test]
async fn a_queued_send_is_answered_202_with_its_record_then_sent_once() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[]));
    let response = queue_accepted(&app.base_url, "q-1", "254712345678", None).await;
    let headers = response.headers().clone();
    assert_eq!(headers["preference-applied"], "respond-async");
    assert_eq!(headers["location"], "/messages/q-1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["messageId"], "q-1");
    assert_eq!(body["status"], "QUEUED");
    assert_eq!(body["type"], "text");
    let request = app.gateway.next_request().await;
    assert_eq!(request.body["messageId"], "q-1");
    let sent = wait_for_record(&app.base_url, "q-1", "SENT", EVENT_TIMEOUT).await;
    assert_eq!(sent["waId"], "wamid.TEST");
    assert!(sent["statuses"]["QUEUED"].is_string(), "{sent}");
    // Once sent, the same send is the usual replay; another payload is 422.
    let again = queue(&app.base_url, &text("q-1", "254712345678"), None).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let other = queue(&app.base_url, &text("q-1", "254799999999"), None).await;
    assert_eq!(other.status(), 422);
    assert_eq!(error_fields(&envelope(other).await), ["messageId"]);
    assert_eq!(app.gateway.calls(), 1);
    let metrics = app.metrics().await;
    assert!(metrics.contains("lipachat_relay_queued_sends_total{result=\"queued\"} 1"));
    assert!(metrics.contains("lipachat_relay_queued_sends_total{result=\"sent\"} 1"));
}

#[tokio::test]
async fn a_synchronous_send_with_redis_alone_pays_nothing_for_the_queue_or_a_record() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[]));
    let before = app.metrics().await;
    let sent = app
        .post_json("/message/text", &text("q-sync-redis", "254712345678"))
        .await;
    assert_eq!(sent.status(), 200);
    assert!(sent.headers().get("preference-applied").is_none());
    let after = app.metrics().await;
    let ops = |text: &str, op: &str| -> String {
        let prefix = format!("lipachat_relay_store_operations_total{{op=\"{op}\",result=\"ok\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap_or_default()
            .to_owned()
    };
    // The claim and completion as before; no status merge; the queue's polls are the worker's.
    assert_eq!(ops(&after, "status_merge"), "0");
    assert_ne!(ops(&before, "claim"), ops(&after, "claim"));
    // Known from the dedup window, as without Redis.
    let (code, found) = record(&app.base_url, "q-sync-redis").await;
    assert_eq!((code, &found["status"]), (200, &json!("SENT")));
}

#[tokio::test]
async fn a_send_at_two_seconds_ahead_is_sent_within_half_a_second_of_it() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[]));
    let at = SystemTime::now() + Duration::from_secs(2);
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    queue_accepted(&app.base_url, "q-at", "254712345678", Some(&stamp)).await;
    // The same send again while it waits: 202, its time unchanged.
    let later = humantime::format_rfc3339_millis(at + Duration::from_secs(60)).to_string();
    let again = queue_accepted(&app.base_url, "q-at", "254712345678", Some(&later)).await;
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["status"], "QUEUED");
    // Another payload under the same messageId while it waits: 422.
    let other = queue(&app.base_url, &text("q-at", "254700000000"), None).await;
    assert_eq!(other.status(), 422);
    let request = app.gateway.next_request().await;
    let arrived = SystemTime::now();
    assert_eq!(request.body["messageId"], "q-at");
    let early = at.duration_since(arrived).unwrap_or_default();
    let late = arrived.duration_since(at).unwrap_or_default();
    assert!(early.is_zero(), "sent {early:?} before its time");
    assert!(
        late <= Duration::from_millis(500),
        "sent {late:?} after its time"
    );
}

#[tokio::test]
async fn a_send_cancelled_before_its_time_is_never_sent() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[]));
    let at = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(2));
    let at = at.to_string();
    queue_accepted(&app.base_url, "q-cancel", "254712345678", Some(&at)).await;
    let cancelled = app.delete("/messages/q-cancel").await;
    assert_eq!(cancelled.status(), 200);
    let body: Value = cancelled.json().await.unwrap();
    assert_eq!(body["status"], "CANCELLED");
    // Again: the same answer.
    assert_eq!(app.delete("/messages/q-cancel").await.status(), 200);
    // Past its time, and some polls later, the gateway has seen nothing.
    queue_accepted(&app.base_url, "q-sent", "254712345679", Some(&at)).await;
    let request = app.gateway.next_request().await;
    assert_eq!(request.body["messageId"], "q-sent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.gateway.calls(), 1);
    let (_, record) = record(&app.base_url, "q-cancel").await;
    assert_eq!(record["status"], "CANCELLED");
    // Handed to the gateway: 409; unknown: 404.
    wait_for_record(&app.base_url, "q-sent", "SENT", EVENT_TIMEOUT).await;
    let late = app.delete("/messages/q-sent").await;
    assert_eq!(late.status(), 409);
    envelope(late).await;
    let unknown = app.delete("/messages/q-unknown").await;
    assert_eq!(unknown.status(), 404);
    envelope(unknown).await;
}

#[tokio::test]
async fn six_queued_sends_to_one_pair_are_all_sent_spaced_and_none_refused() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[
        ("RELAY_PAIR_BURST", "2"),
        ("RELAY_PAIR_INTERVAL_MS", "500"),
        // A synchronous send would be refused at once: a queued one waits.
        ("RELAY_RATE_MAX_WAIT_MS", "0"),
    ]));
    for n in 0..6 {
        queue_accepted(&app.base_url, &format!("q-pair-{n}"), "254712345678", None).await;
    }
    let mut arrivals = Vec::new();
    for _ in 0..6 {
        arrivals.push(app.gateway.next_request().await.at);
    }
    arrivals.sort();
    // Two at once (the burst), then one every 500 ms: the sixth at least 1.5 s after the first.
    let spread = arrivals[5] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(1400),
        "all six within {spread:?}"
    );
    for n in 0..6 {
        wait_for_record(&app.base_url, &format!("q-pair-{n}"), "SENT", EVENT_TIMEOUT).await;
    }
    assert_eq!(app.gateway.calls(), 6);
}

#[tokio::test]
async fn a_gateway_400_makes_a_queued_send_failed_after_one_call() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[]));
    let refusal = r#"{"status":"error","message":"to is not on WhatsApp","data":null}"#;
    app.gateway
        .set_default(Step::body(400, "application/json", refusal));
    queue_accepted(&app.base_url, "q-400", "254712345678", None).await;
    let failed = wait_for_record(&app.base_url, "q-400", "FAILED", EVENT_TIMEOUT).await;
    assert_eq!(failed["error"]["code"], 400);
    assert_eq!(failed["error"]["message"], "to is not on WhatsApp");
    // A retry would come after its back-off (at least 0.5 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn a_send_still_failing_after_the_queue_max_age_is_failed_expired() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[
        ("RELAY_QUEUE_MAX_AGE_SECS", "2"),
        ("RELAY_MAX_ATTEMPTS", "1"),
    ]));
    app.gateway.set_default(Step::status(503));
    queue_accepted(&app.base_url, "q-old", "254712345678", None).await;
    let failed = wait_for_record(&app.base_url, "q-old", "FAILED", EVENT_TIMEOUT).await;
    assert_eq!(failed["error"]["title"], "expired");
    // Tried, backed off, tried again: more than once, a handful at most in 2 s.
    let calls = app.gateway.calls();
    assert!((2..=5).contains(&calls), "{calls} calls");
    let metrics = app.metrics().await;
    assert!(metrics.contains("lipachat_relay_queued_sends_total{result=\"expired\"} 1"));
    assert!(!metrics.contains("lipachat_relay_queued_sends_total{result=\"retried\"} 0"));
}

#[tokio::test]
async fn the_queue_depth_counts_held_sends_until_they_are_cancelled() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[]));
    let at = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
    queue_accepted(
        &app.base_url,
        "q-depth",
        "254712345678",
        Some(&at.to_string()),
    )
    .await;
    app.metric_reaches("lipachat_relay_queue_depth 1\n").await;
    assert!(
        app.metrics()
            .await
            .contains("lipachat_relay_queue_oldest_due_seconds 0\n")
    );
    let cancelled = app.delete("/messages/q-depth").await;
    assert_eq!(cancelled.status(), 200);
    app.metric_reaches("lipachat_relay_queue_depth 0\n").await;
    assert!(
        app.metrics()
            .await
            .contains("lipachat_relay_queued_sends_total{result=\"cancelled\"} 1")
    );
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn send_at_is_refused_when_it_is_not_a_time_or_too_far_ahead() {
    let (_redis, app) = crate::redis_or_skip!(app_on_redis(&[]));
    let far = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(31 * 86_400));
    for value in ["tomorrow", far.to_string().as_str()] {
        let response = queue(&app.base_url, &text("q-bad", "254712345678"), Some(value)).await;
        assert_eq!(response.status(), 400, "{value}");
        assert_eq!(error_fields(&envelope(response).await), ["Send-At"]);
    }
    // An invalid body is refused at once, as without the preference.
    let invalid = queue(&app.base_url, &json!({"messageId": "q-bad"}), None).await;
    assert_eq!(invalid.status(), 400);
    assert_eq!(app.gateway.calls(), 0);
}

#[tokio::test]
async fn without_redis_the_preference_is_not_applied_and_send_at_names_the_redis_url() {
    let app = spawn_app_with(&[]).await;
    let response = queue(&app.base_url, &text("q-sync", "254712345678"), None).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("preference-applied").is_none());
    assert_eq!(app.gateway.calls(), 1);
    let at = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(60)).to_string();
    let response = queue(&app.base_url, &text("q-later", "254712345678"), Some(&at)).await;
    assert_eq!(response.status(), 400);
    let body = envelope(response).await;
    assert_eq!(error_fields(&body), ["Send-At"]);
    assert!(body.to_string().contains("RELAY_REDIS_URL"), "{body}");
    let cancel = app.delete("/messages/q-sync").await;
    assert_eq!(cancel.status(), 404);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn a_queued_send_announces_queued_then_sent_and_a_cancel_cancelled() {
    let redis = crate::redis_or_skip!(RedisServer::start());
    let receiver = crate::lifecycle::Receiver::default();
    let events = receiver.start().await;
    let url = redis.url();
    let prefix = format!("q{:x}", fastrand::u32(..));
    let app = crate::lifecycle::spawn(&[
        ("RELAY_REDIS_URL", url.as_str()),
        ("RELAY_REDIS_PREFIX", prefix.as_str()),
        ("RELAY_EVENTS_URL", events.as_str()),
        ("RELAY_EVENTS_SECRET", crate::lifecycle::SECRET),
    ])
    .await;
    let later = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
    let later = later.to_string();
    queue_accepted(&app.base_url, "q-ev-held", "254712345678", Some(&later)).await;
    queue_accepted(&app.base_url, "q-ev", "254712345679", None).await;
    let url = format!("{}/messages/q-ev-held", app.base_url);
    let cancel = request(&app.client, Method::DELETE, &url).await;
    assert_eq!(cancel.status(), 200);
    let wanted = [
        ("q-ev", "QUEUED"),
        ("q-ev", "SENT"),
        ("q-ev-held", "QUEUED"),
        ("q-ev-held", "CANCELLED"),
    ];
    let started = Instant::now();
    loop {
        let seen: Vec<(String, String)> = receiver
            .taken()
            .iter()
            .filter(|d| d.body["type"] == "message.status")
            .map(|d| {
                let data = &d.body["data"];
                let id = data["messageId"].as_str().unwrap_or_default().to_owned();
                (id, data["status"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        if wanted
            .iter()
            .all(|(id, status)| seen.iter().any(|(i, s)| i == id && s == status))
        {
            break;
        }
        assert!(started.elapsed() < EVENT_TIMEOUT, "events seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.gateway.calls(), 1);
}

// --- replicas killed with SIGKILL ----------------------------------------------------------------

/// A relay process (the real binary) against `gateway`, sharing `redis` under `prefix`; its
/// output is drained.
async fn start_replica(gateway: &FakeGateway, key: &str, redis: &str, prefix: &str) -> Served {
    let mut replica = serve_against(
        &gateway.base_url(),
        key,
        &[
            ("RELAY_REDIS_URL", redis),
            ("RELAY_REDIS_PREFIX", prefix),
            // A short lease: RELAY_DEADLINE_MS plus a few seconds.
            ("RELAY_DEADLINE_MS", "1500"),
            ("RELAY_MAX_ATTEMPTS", "1"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    drain_output(&mut replica.child);
    replica
}

#[tokio::test]
async fn queued_sends_of_a_killed_replica_reach_the_gateway_once_each_through_another() {
    let redis = crate::redis_or_skip!(RedisServer::start());
    let gateway = FakeGateway::start().await;
    gateway.set_default(Step::status(503));
    let key = random_key();
    let prefix = format!("q{:x}", fastrand::u32(..));
    let mut a = start_replica(&gateway, &key, &redis.url(), &prefix).await;
    let ids: Vec<String> = (0..5).map(|n| format!("q-kill-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let to = format!("25471234567{n}");
        assert_eq!(queue(&a.url, &text(id, &to), None).await.status(), 202);
    }
    // A has taken every one and met the 503.
    let mut calls = HashMap::new();
    let started = Instant::now();
    while calls.len() < 5 {
        assert!(started.elapsed() < EVENT_TIMEOUT, "503s only for {calls:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        calls_by_id(&gateway, &mut calls).await;
    }
    kill_9(&mut a.child).await;
    let b = start_replica(&gateway, &key, &redis.url(), &prefix).await;
    gateway.set_default(Step::sent());
    let back = Instant::now();
    for id in &ids {
        wait_for_record(&b.url, id, "SENT", Duration::from_secs(30)).await;
    }
    calls_by_id(&gateway, &mut calls).await;
    for id in &ids {
        let accepted = calls[id].iter().filter(|at| **at >= back).count();
        assert_eq!(
            accepted, 1,
            "{id} reached the gateway after its return {accepted} times"
        );
    }
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gateway.take_received().await.is_empty());
}

#[tokio::test]
async fn a_send_queued_on_a_replica_killed_before_it_was_due_is_sent_by_another() {
    let redis = crate::redis_or_skip!(RedisServer::start());
    let gateway = FakeGateway::start().await;
    let key = random_key();
    let prefix = format!("q{:x}", fastrand::u32(..));
    let mut a = start_replica(&gateway, &key, &redis.url(), &prefix).await;
    let b = start_replica(&gateway, &key, &redis.url(), &prefix).await;
    let at = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(2));
    let response = queue(
        &a.url,
        &text("q-shared", "254712345678"),
        Some(&at.to_string()),
    )
    .await;
    assert_eq!(response.status(), 202);
    kill_9(&mut a.child).await;
    let (code, queued) = record(&b.url, "q-shared").await;
    assert_eq!((code, &queued["status"]), (200, &json!("QUEUED")));
    let request = gateway.next_request().await;
    assert_eq!(request.body["messageId"], "q-shared");
    wait_for_record(&b.url, "q-shared", "SENT", EVENT_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.calls(), 1);
}
