//! SPEC "Rate limits that match WhatsApp's": which sends take a slot, waiting and refusing,
//! the 429 envelope, and (with real Redis) one budget shared by two replicas.
//!
//! Limits are about time, so some tests here sleep real time; each picks intervals with
//! margins of hundreds of milliseconds either side, so a loaded machine cannot flip them.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    Step, TestApp, envelope, error_fields, media_body, serve_against, spawn_app_with, stdout_text,
    terminate_and_wait,
};
use crate::redis_or_skip;
use crate::redis_server::{RedisCluster, RedisServer};

const FROM: &str = "254110090747";
const TO: &str = "254712345678";
const OTHER_TO: &str = "254733000001";

/// A send with its own `messageId` from `from` to `to`.
fn send(message_id: &str, from: &str, to: &str) -> Value {
    let mut body = media_body(message_id);
    body["from"] = json!(from);
    body["to"] = json!(to);
    body
}

/// Posts `bodies` at once, from a task of their own, and returns the responses' futures.
fn post_all(
    app: &TestApp,
    bodies: Vec<Value>,
) -> tokio::task::JoinHandle<Vec<reqwest::Result<reqwest::Response>>> {
    let client = app.client.clone();
    let url = format!("{}/media", app.base_url);
    tokio::spawn(async move {
        join_all(bodies.into_iter().map(|body| {
            client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
        }))
        .await
    })
}

/// A relay allowing `sender_rate` sends a second per sender (`0`: no limit) and one send per
/// pair every `pair_interval_ms` (a burst of one), with `extra` variables besides.
async fn with_limits(sender_rate: &str, pair_interval_ms: &str, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![
        ("RELAY_SENDER_RATE", sender_rate),
        ("RELAY_PAIR_INTERVAL_MS", pair_interval_ms),
        ("RELAY_PAIR_BURST", "1"),
    ];
    vars.extend_from_slice(extra);
    spawn_app_with(&vars).await
}

/// No waiting for a slot: a send that has none is refused at once.
const NO_WAIT: (&str, &str) = ("RELAY_RATE_MAX_WAIT_MS", "0");

#[tokio::test]
async fn replays_and_coalesced_duplicates_take_no_slot() {
    // One send per pair per minute: any second slot taken would be a 429.
    let app = with_limits("0", "60000", &[NO_WAIT]).await;
    assert_eq!(
        app.post_media(&send("once-1", FROM, TO)).await.status(),
        200
    );
    let replay = app.post_media(&send("once-1", FROM, TO)).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");

    app.gateway.set_default(Step::held());
    let burst = post_all(&app, vec![send("once-2", FROM, OTHER_TO); 5]);
    app.gateway.next_request().await;
    app.metric_reaches("lipachat_relay_in_flight 5").await;
    app.gateway.release(1);
    for response in burst.await.unwrap() {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(app.gateway.calls(), 2);

    // The pair's one slot went to the one send, not to its duplicates.
    app.gateway.set_default(Step::sent());
    let next = app.post_media(&send("once-3", FROM, OTHER_TO)).await;
    assert_eq!(next.status(), 429);
    assert!(
        app.metrics()
            .await
            .contains(r#"lipachat_relay_rate_limited_total{scope="pair",action="refused"} 1"#)
    );
}

#[tokio::test]
async fn retries_of_one_send_take_no_slot() {
    let app = with_limits("0", "60000", &[NO_WAIT]).await;
    app.gateway.script([Step::status(503), Step::sent()]);
    let response = app.post_media(&send("retried-1", FROM, TO)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-relay-attempts"], "2");
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn a_refusal_names_the_limit_and_says_when_to_retry() {
    let app = with_limits("0", "60000", &[]).await;
    app.post_media(&send("pair-1", FROM, TO)).await;
    let refused = app.post_media(&send("pair-2", FROM, TO)).await;
    assert_eq!(refused.status(), 429);
    // A minute to the next slot, beyond RELAY_RATE_MAX_WAIT_MS's default 5 s: refused at once.
    assert_eq!(refused.headers()["retry-after"], "60");
    assert_eq!(refused.headers()["content-type"], "application/json");
    assert!(refused.headers().get("x-relay-attempts").is_none());
    let body = envelope(refused).await;
    assert_eq!(error_fields(&body), ["to"]);

    let app = spawn_app_with(&[
        ("RELAY_SENDER_RATE", "1"),
        ("RELAY_PAIR_INTERVAL_MS", "0"),
        ("RELAY_RATE_MAX_WAIT_MS", "0"),
    ])
    .await;
    app.post_media(&send("sender-1", FROM, TO)).await;
    let refused = app.post_media(&send("sender-2", FROM, OTHER_TO)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = envelope(refused).await;
    assert_eq!(error_fields(&body), ["from"]);
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn a_refused_send_is_not_remembered_and_its_retry_goes_out() {
    let app = with_limits("0", "1000", &[NO_WAIT]).await;
    assert_eq!(app.post_media(&send("first", FROM, TO)).await.status(), 200);
    let refused = app.post_media(&send("second", FROM, TO)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let retry = app.post_media(&send("second", FROM, TO)).await;
    assert_eq!(retry.status(), 200);
    assert!(retry.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn a_refused_sends_coalesced_callers_all_get_its_429() {
    // Sender: one send a second. Pair: one every 2 s. A send may wait 2.1 s.
    let app = with_limits("1", "2000", &[("RELAY_RATE_MAX_WAIT_MS", "2100")]).await;
    let start = Instant::now();
    assert_eq!(app.post_media(&send("a", FROM, TO)).await.status(), 200);
    // "late" waits ~2 s for the pair; its duplicates coalesce onto it meanwhile.
    let late = post_all(&app, vec![send("late", FROM, TO); 5]);
    app.metric_reaches("lipachat_relay_in_flight 5").await;
    // At ~1.5 s the sender's next cell (free from 1 s) goes to another recipient, so when
    // "late" has its pair slot at 2 s, the sender's next is 0.5 s off: beyond the 0.1 s of
    // wait it has left.
    tokio::time::sleep_until((start + Duration::from_millis(1_500)).into()).await;
    assert_eq!(
        app.post_media(&send("b", FROM, OTHER_TO)).await.status(),
        200
    );
    for response in late.await.unwrap() {
        let response = response.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(error_fields(&envelope(response).await), ["from"]);
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"lipachat_relay_rate_limited_total{scope="sender",action="refused"} 1"#),
        "one send was refused, and five callers answered:\n{metrics}"
    );
    assert_eq!(app.gateway.calls(), 2);
}

#[tokio::test]
async fn a_send_waiting_for_its_slot_holds_an_in_flight_slot() {
    let app = with_limits("0", "1500", &[("RELAY_MAX_IN_FLIGHT", "1")]).await;
    assert_eq!(app.post_media(&send("first", FROM, TO)).await.status(), 200);
    let started = Instant::now();
    let waiting = post_all(&app, vec![send("waits", FROM, TO)]);
    app.metric_reaches("lipachat_relay_in_flight 1").await;
    let shed = app.post_media(&send("other", FROM, OTHER_TO)).await;
    assert_eq!(shed.status(), 503);
    assert!(shed.headers().get("retry-after").is_some());
    let waited = waiting.await.unwrap().pop().unwrap().unwrap();
    assert_eq!(waited.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(1_200));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"lipachat_relay_rate_limited_total{scope="pair",action="delayed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("lipachat_relay_rate_wait_seconds_count 1"));
}

#[tokio::test]
async fn a_drain_ends_a_rate_wait_with_503() {
    let mut app = with_limits("0", "20000", &[("RELAY_RATE_MAX_WAIT_MS", "25000")]).await;
    assert_eq!(app.post_media(&send("first", FROM, TO)).await.status(), 200);
    let started = Instant::now();
    let waiting = post_all(&app, vec![send("waits", FROM, TO)]);
    app.metric_reaches("lipachat_relay_in_flight 1").await;
    app.begin_shutdown();
    let response = waiting.await.unwrap().pop().unwrap().unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    envelope(response).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ended by the drain"
    );
    assert_eq!(app.gateway.calls(), 1);
}

#[tokio::test]
async fn the_gateways_own_429_and_metas_codes_pass_through_unchanged() {
    let app = spawn_app_with(&[("RELAY_MAX_ATTEMPTS", "1")]).await;
    let throttled = json!({"timestamp": "2026-11-25T00:00:00Z", "data": null, "status": "error",
        "message": "(#130429) Rate limit hit", "errors": [{"code": 130429}]})
    .to_string();
    app.gateway.script([
        Step::body(429, "application/json", &throttled).retry_after("7"),
        Step::body(
            400,
            "application/json",
            r#"{"status":"error","message":"(#131056) pair rate limit hit","errors":[{"code":131056}]}"#,
        ),
    ]);
    let response = app.post_media(&send("meta-1", FROM, TO)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.text().await.unwrap(), throttled);
    let response = app.post_media(&send("meta-2", FROM, TO)).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("131056"));
    assert!(
        app.metrics()
            .await
            .contains(r#"lipachat_relay_rate_limited_total{scope="pair",action="refused"} 0"#),
        "the gateway's refusals are not the relay's"
    );
}

#[tokio::test]
async fn the_request_log_line_carries_the_rate_wait() {
    let gateway = crate::helpers::FakeGateway::start().await;
    let mut relay = serve_against(
        &gateway.base_url(),
        &crate::helpers::random_key(),
        &[
            ("RELAY_SENDER_RATE", "0"),
            ("RELAY_PAIR_INTERVAL_MS", "400"),
            ("RELAY_PAIR_BURST", "1"),
        ],
    )
    .await;
    for id in ["log-1", "log-2"] {
        let response = relay.post_media(&send(id, FROM, TO)).await;
        assert_eq!(response.status(), 200);
    }
    terminate_and_wait(&mut relay.child).await;
    let stdout = stdout_text(&mut relay.child).await;
    let waits: Vec<f64> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "send request")
        .map(|line| line["rate_wait_ms"].as_f64().unwrap())
        .collect();
    assert_eq!(waits.len(), 2, "{stdout}");
    assert!(waits[0].abs() < f64::EPSILON, "{waits:?}");
    assert!((300.0..1_000.0).contains(&waits[1]), "{waits:?}");
}

/// Two relays on one Redis, one sender budget of 10 a second.
async fn two_replicas(redis: &RedisServer, max_wait_ms: &str) -> (TestApp, TestApp) {
    let url = redis.url();
    let vars = [
        ("RELAY_REDIS_URL", url.as_str()),
        ("RELAY_SENDER_RATE", "10"),
        ("RELAY_PAIR_INTERVAL_MS", "0"),
        ("RELAY_RATE_MAX_WAIT_MS", max_wait_ms),
    ];
    (spawn_app_with(&vars).await, spawn_app_with(&vars).await)
}

/// 40 sends from one number to 40 recipients, alternating between the replicas, all at once.
async fn forty_sends(one: &TestApp, two: &TestApp) -> Vec<reqwest::Response> {
    let bodies = |parity: usize| -> Vec<Value> {
        (0..40)
            .filter(|i| i % 2 == parity)
            .map(|i| send(&format!("shared-{i}"), FROM, &format!("2547330{i:05}")))
            .collect()
    };
    let (first, second) = (post_all(one, bodies(0)), post_all(two, bodies(1)));
    let mut responses: Vec<_> = first.await.unwrap();
    responses.extend(second.await.unwrap());
    responses.into_iter().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_sender_budget_and_space_the_rest() {
    let redis = redis_or_skip!(RedisServer::start());
    let (one, two) = two_replicas(&redis, "5000").await;
    for response in forty_sends(&one, &two).await {
        assert_eq!(response.status(), 200);
    }
    let mut times = Vec::new();
    for gateway in [&one.gateway, &two.gateway] {
        for _ in 0..20 {
            times.push(gateway.next_request().await.at);
        }
    }
    times.sort();
    let offsets: Vec<Duration> = times.iter().map(|at| *at - times[0]).collect();
    let within = |limit: u64| {
        offsets
            .iter()
            .filter(|o| **o < Duration::from_millis(limit))
            .count()
    };
    // Ten at once (the burst), and none of the rest before 100 ms. Each replica alone would
    // let ten go at once (20 in all) and its other ten over the next second.
    assert!(within(90) <= 11, "{offsets:?}");
    assert!(within(300) >= 10, "{offsets:?}");
    // The other 30 one every 100 ms, so the last near 3 s (one replica alone: 1 s).
    let last = offsets[39];
    assert!(
        last >= Duration::from_millis(2_700) && last <= Duration::from_millis(4_000),
        "{offsets:?}"
    );
    let spacing = (last - offsets[10]) / 29;
    assert!(
        spacing >= Duration::from_millis(85) && spacing <= Duration::from_millis(130),
        "{spacing:?}: {offsets:?}"
    );
    for app in [&one, &two] {
        let metrics = app.metrics().await;
        assert!(
            metrics.contains(r#"lipachat_relay_store_fail_open_total{op="limit"} 0"#),
            "the limits were Redis's:\n{metrics}"
        );
        assert!(
            metrics
                .contains(r#"lipachat_relay_rate_limited_total{scope="sender",action="delayed"}"#)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_refuse_beyond_the_shared_burst_when_nothing_may_wait() {
    let redis = redis_or_skip!(RedisServer::start());
    let (one, two) = two_replicas(&redis, "0").await;
    let mut sent = 0;
    for response in forty_sends(&one, &two).await {
        match response.status().as_u16() {
            200 => sent += 1,
            429 => assert_eq!(error_fields(&envelope(response).await), ["from"]),
            other => panic!("unexpected {other}"),
        }
    }
    // The shared burst of 10, plus a cell or two refilled while the 40 arrive; each replica
    // alone would have sent at least 20.
    assert!((10..=12).contains(&sent), "{sent} sent");
}

#[tokio::test]
async fn shared_limit_keys_share_a_hash_tag_and_expire_once_idle() {
    let redis = redis_or_skip!(RedisServer::start());
    let url = redis.url();
    // Cells long enough that `redis-cli` (a process spawn, slow on a loaded machine) reads
    // the keys before they expire: one send every 1,000 ms, one per pair every 1,500 ms.
    let app = with_limits("1", "1500", &[("RELAY_REDIS_URL", url.as_str())]).await;
    assert_eq!(app.post_media(&send("k-1", FROM, TO)).await.status(), 200);
    let sender = format!("lipachat-relay:rate:{{{FROM}}}:sender");
    let pair = format!("lipachat-relay:rate:{{{FROM}}}:pair:{TO}");
    for (key, most) in [(&sender, 1_000), (&pair, 1_500)] {
        let ttl: i64 = redis.cli(&["pttl", key]).await.trim().parse().unwrap();
        assert!(ttl > 0 && ttl <= most, "{key}: {ttl}");
    }
    // Once idle they go: each is gone within its cell (plus Redis's expiry sweep).
    let gone = async {
        for key in [&sender, &pair] {
            while redis.cli(&["exists", key]).await.trim() != "0" {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("a rate-limit key still there 5 s after the send");
}

#[tokio::test]
async fn with_redis_down_open_mode_keeps_the_limits_in_process() {
    let mut redis = redis_or_skip!(RedisServer::start());
    let url = redis.url();
    let app = with_limits(
        "0",
        "60000",
        &[
            NO_WAIT,
            ("RELAY_REDIS_URL", url.as_str()),
            ("RELAY_REDIS_FAILURE", "open"),
        ],
    )
    .await;
    redis.stop().await;
    assert_eq!(
        app.post_media(&send("down-1", FROM, TO)).await.status(),
        200
    );
    let refused = app.post_media(&send("down-2", FROM, TO)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(error_fields(&envelope(refused).await), ["to"]);
    assert!(
        app.metrics()
            .await
            .contains(r#"lipachat_relay_store_fail_open_total{op="limit"} 2"#)
    );
}

#[tokio::test]
async fn the_limit_script_runs_on_a_redis_cluster() {
    let cluster = redis_or_skip!(RedisCluster::start());
    let urls = cluster.urls();
    let app = with_limits(
        "2",
        "60000",
        &[
            ("RELAY_REDIS_URL", urls.as_str()),
            ("RELAY_REDIS_CLUSTER", "true"),
            NO_WAIT,
        ],
    )
    .await;
    let expect = [
        ("c-1", TO, 200, None),
        ("c-2", TO, 429, Some("to")),
        ("c-3", OTHER_TO, 200, None),
        ("c-4", "254733000002", 429, Some("from")),
    ];
    for (id, to, status, field) in expect {
        let response = app.post_media(&send(id, FROM, to)).await;
        assert_eq!(response.status(), status, "{id}");
        if let Some(field) = field {
            assert_eq!(error_fields(&envelope(response).await), [field], "{id}");
        }
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"lipachat_relay_store_fail_open_total{op="limit"} 0"#),
        "{metrics}"
    );
    // Every key of the sender on one node (one slot, thanks to the hash tag).
    let mut holders = Vec::new();
    for node in &cluster.nodes {
        let keys = node.cli(&["keys", "lipachat-relay:rate:*"]).await;
        if !keys.trim().is_empty() {
            holders.push(keys.lines().count());
        }
    }
    assert_eq!(
        holders,
        [3],
        "one sender key and two pair keys, on one node"
    );
}

/// The rate script run twice for one send — what a client library does when it sends a call
/// again after losing its reply — charges the send once: the second run finds the send's own
/// nonce and answers as the first did; another send is still held to the limit. The script is
/// run as the relay runs it (EVAL, two keys, the same arguments), on a real redis-server.
#[tokio::test]
async fn the_shared_rate_script_charges_a_repeated_send_once() {
    const INTERVAL_US: i64 = 60_000_000;
    let redis = redis_or_skip!(RedisServer::start());
    let script = lipachat_relay::internals::RATE_SCRIPT;
    let interval = INTERVAL_US.to_string();
    // Sender limit off, pair limit one send per minute with no burst, no wait allowed.
    let reserve = |nonce: &'static str| {
        let args = [
            "EVAL", script, "2", "t:sender", "t:pair", "0", "0", &interval, "0", "0", nonce,
        ];
        let redis = &redis;
        async move {
            let answer = redis.cli(&args).await;
            let numbers: Vec<i64> = answer.lines().map(|l| l.trim().parse().unwrap()).collect();
            assert_eq!(numbers.len(), 3, "{answer}");
            (numbers[0], numbers[1])
        }
    };
    let (verdict, wait) = reserve("7").await;
    assert_eq!((verdict, wait), (0, 0), "the first send goes at once");
    let (verdict, wait) = reserve("7").await;
    assert_eq!(
        (verdict, wait),
        (0, 0),
        "the same send again is not charged again"
    );
    let (verdict, wait) = reserve("8").await;
    assert_eq!(verdict, 1, "another send to the pair is refused");
    assert!(
        wait > 0 && wait <= INTERVAL_US,
        "one interval away, not two: {wait} µs"
    );
}
