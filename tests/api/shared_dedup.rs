//! SPEC "Shared deduplication: across restarts and replicas", against real Redis (no mocks of
//! it): two relays sharing one `redis-server` (or a 3-master Redis Cluster) and one fake
//! gateway; Redis stopped and restarted under them; a refused password; and relay processes
//! killed with SIGKILL mid-send, then restarted.
//!
//! Every test uses its own `RELAY_REDIS_PREFIX`, so nothing it writes is seen by another.
//! Waits are on events (the fake gateway's request channel, a process's `/healthz`); where a
//! relay offers no event (a store round trip happening in another task), `/metrics` is polled
//! every 10 ms under [`EVENT_TIMEOUT`].

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use lipachat_relay::internals::lease;
use lipachat_relay::{AppState, serve};
use lipachat_relay::{Config, KeyRequirement};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::helpers::{
    EVENT_TIMEOUT, FakeGateway, Received, Served, Step, TestApp, drain_output, envelope,
    error_fields, free_port, kill_9, media_body, random_key, serve_against, serve_binary_on,
    spawn_app_with, stderr_text, stdout_text, terminate_and_wait, wait_until,
};
use crate::redis_or_skip;
use crate::redis_server::{RedisCluster, RedisServer};

const STORE_OPS: &str = "lipachat_relay_store_operations_total";
pub(crate) const CLAIMS_OK: &str =
    "lipachat_relay_store_operations_total{op=\"claim\",result=\"ok\"}";
const FAIL_OPEN: &str = "lipachat_relay_store_fail_open_total";

/// A key prefix no other test uses.
pub(crate) fn unique_prefix() -> String {
    format!("t-{:016x}", fastrand::u64(..))
}

/// `{prefix}:dedup:{messageId}`, as the relay writes it.
pub(crate) fn dedup_key(prefix: &str, message_id: &str) -> String {
    format!("{prefix}:dedup:{message_id}")
}

/// A relay in this process, pointed at another relay's fake gateway (a second replica).
pub(crate) struct Replica {
    base_url: String,
    client: reqwest::Client,
    _shutdown: oneshot::Sender<()>,
}

pub(crate) async fn spawn_replica(
    gateway: &FakeGateway,
    api_key: &str,
    vars: &[(&str, &str)],
) -> Replica {
    let base = gateway.base_url();
    let mut all: Vec<(&str, &str)> = vec![
        ("LIPACHAT_API_KEY", api_key),
        ("LIPACHAT_BASE_URL", &base),
        ("RELAY_LISTEN", "127.0.0.1:0"),
    ];
    all.extend_from_slice(vars);
    let config = Config::from_vars(all, KeyRequirement::Required).unwrap();
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, state, async {
        let _ = signal.await;
    }));
    Replica {
        base_url: format!("http://{address}"),
        client: reqwest::Client::new(),
        _shutdown: shutdown,
    }
}

/// What the tests need of a relay, in-process app or replica alike.
pub(crate) trait Relay {
    fn url(&self) -> &str;
    fn http(&self) -> &reqwest::Client;
}

impl Relay for TestApp {
    fn url(&self) -> &str {
        &self.base_url
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Relay for Replica {
    fn url(&self) -> &str {
        &self.base_url
    }
    fn http(&self) -> &reqwest::Client {
        &self.client
    }
}

/// A POST of `body` to `/media` on `base`, as a future that owns everything it needs (so it
/// can be spawned while the test goes on).
pub(crate) fn post_to(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static {
    client
        .post(format!("{base}/media"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
}

pub(crate) async fn post(relay: &impl Relay, body: &Value) -> reqwest::Response {
    post_to(relay.http(), relay.url(), body)
        .await
        .expect("the relay did not answer")
}

/// A whole answer, read.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) replayed: bool,
    /// `x-relay-attempts`: how often the relay called the gateway for this request.
    attempts: u32,
    content_type: String,
    pub(crate) body: String,
}

pub(crate) async fn read(response: reqwest::Response) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let replayed = header("idempotent-replayed").is_some_and(|v| v == "true");
    let content_type = header("content-type").unwrap_or_default();
    let attempts = header("x-relay-attempts").map_or(0, |v| v.parse().unwrap());
    let status = response.status().as_u16();
    Answer {
        status,
        replayed,
        attempts,
        content_type,
        body: response.text().await.unwrap(),
    }
}

pub(crate) async fn send(relay: &impl Relay, body: &Value) -> Answer {
    read(post(relay, body).await).await
}

pub(crate) async fn metrics_of(relay: &impl Relay) -> String {
    metrics_at(relay.http(), relay.url()).await
}

/// The `/metrics` text of the relay at `url`.
async fn metrics_at(client: &reqwest::Client, url: &str) -> String {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of every sample whose name (with labels) starts with `prefix`.
pub(crate) fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#') && line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

pub(crate) async fn metric_of(relay: &impl Relay, prefix: &str) -> f64 {
    metric(&metrics_of(relay).await, prefix)
}

/// Waits until the sum of `prefix` over the relays' `/metrics` reaches `at_least` (a store
/// round trip in another task has no event to wait on).
pub(crate) async fn wait_for_metric(urls: &[&str], prefix: &str, at_least: f64) {
    let client = reqwest::Client::new();
    wait_until(format!("{prefix} reaches {at_least}"), || async {
        let mut sum = 0.0;
        for url in urls {
            sum += metric(&metrics_at(&client, url).await, prefix);
        }
        sum >= at_least
    })
    .await;
}

/// Replica A (with the fake gateway) and replica B, both on the shared store `vars` name.
pub(crate) async fn two_replicas(vars: &[(&str, &str)]) -> (TestApp, Replica) {
    let a = spawn_app_with(vars).await;
    let b = spawn_replica(&a.gateway, &a.api_key, vars).await;
    (a, b)
}

/// The relay's log lines, captured in this (current-thread) test runtime.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(bytes)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

// --- the cases every shared store must pass (standalone and Cluster) ------------------------

/// The same messageId sent to both replicas at once: one gateway call, both callers answered.
async fn check_concurrent_sends_make_one_gateway_call(a: &TestApp, b: &Replica, id: &str) {
    let calls = a.gateway.calls();
    let claims = metric_of(a, CLAIMS_OK).await + metric_of(b, CLAIMS_OK).await;
    a.gateway.take_received().await;
    a.gateway.script([Step::held()]);
    let to_a = tokio::spawn(post_to(a.http(), a.url(), &media_body(id)));
    let to_b = tokio::spawn(post_to(b.http(), b.url(), &media_body(id)));
    // One of them leads: its send reaches the gateway and is held there.
    a.gateway.next_request().await;
    // The other has looked in the shared window and found that claim in flight.
    wait_for_metric(&[a.url(), b.url()], CLAIMS_OK, claims + 2.0).await;
    assert_eq!(a.gateway.calls(), calls + 1, "only the leader may send");
    a.gateway.release(1);
    let both = tokio::time::timeout(EVENT_TIMEOUT, async {
        (
            read(to_a.await.unwrap().unwrap()).await,
            read(to_b.await.unwrap().unwrap()).await,
        )
    })
    .await
    .expect("a caller was never answered");
    let (from_a, from_b) = both;
    assert_eq!((from_a.status, from_b.status), (200, 200));
    assert_eq!(from_a.body, from_b.body, "both callers get the one answer");
    assert!(
        from_a.replayed ^ from_b.replayed,
        "exactly the waiter is marked replayed: {from_a:?} {from_b:?}"
    );
    let answer: Value = serde_json::from_str(&from_a.body).unwrap();
    assert_eq!(answer["data"]["messageId"], id);
    assert_eq!(a.gateway.calls(), calls + 1, "one gateway call in all");
}

/// messageIds per recovery round after a Cluster restart: enough that each of the three nodes
/// holds some of them.
const SPREAD: usize = 24;

/// Sent through A, replayed through B byte for byte.
async fn check_send_through_a_replays_through_b(a: &TestApp, b: &Replica, id: &str) {
    let calls = a.gateway.calls();
    let first = send(a, &media_body(id)).await;
    assert_eq!(first.status, 200);
    assert!(!first.replayed);
    let replay = post(b, &media_body(id)).await;
    assert!(replay.headers().get("x-relay-attempts").is_none());
    let replay = read(replay).await;
    assert_eq!(replay.status, 200);
    assert!(replay.replayed, "B must say it replayed");
    assert_eq!(replay.body, first.body, "byte-identical body");
    assert_eq!(replay.content_type, first.content_type);
    assert_eq!(a.gateway.calls(), calls + 1);
}

/// Another payload under a messageId that A holds: 422 from B, in flight and after.
async fn check_another_payload_through_b_is_422(a: &TestApp, b: &Replica, id: &str) {
    let calls = a.gateway.calls();
    let mut other = media_body(id);
    other["caption"] = json!("another caption");
    a.gateway.take_received().await;
    a.gateway.script([Step::held()]);
    let first = tokio::spawn(post_to(a.http(), a.url(), &media_body(id)));
    a.gateway.next_request().await;
    let in_flight = post(b, &other).await;
    assert_eq!(in_flight.status(), 422);
    assert_eq!(error_fields(&envelope(in_flight).await), ["messageId"]);
    a.gateway.release(1);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    let after = post(b, &other).await;
    assert_eq!(after.status(), 422);
    assert_eq!(error_fields(&envelope(after).await), ["messageId"]);
    assert_eq!(a.gateway.calls(), calls + 1);
}

/// Sends `n` new messageIds (`{name}-0` and on) through A at once: each is answered 200 and
/// none bypasses the store. The messageIds.
async fn burst_through_the_store(a: &TestApp, name: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    let bodies: Vec<Value> = ids.iter().map(|id| media_body(id)).collect();
    let answers = join_all(bodies.iter().map(|body| send(a, body))).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(metric_of(a, FAIL_OPEN).await, 0.0, "no send bypassed Redis");
    ids
}

// --- standalone Redis --------------------------------------------------------------------

pub(crate) fn shared_vars<'a>(url: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("RELAY_REDIS_URL", url), ("RELAY_REDIS_PREFIX", prefix)]
}

/// A `redis-server`, the key prefix of this test, and replicas A and B sharing it with `extra`
/// variables besides; `None` where Redis cannot run here (for `redis_or_skip!`).
async fn replicas_on_redis(
    extra: &[(&str, &str)],
) -> Option<(RedisServer, String, TestApp, Replica)> {
    let redis = RedisServer::start().await?;
    let (url, prefix) = (redis.url(), unique_prefix());
    let mut vars = shared_vars(&url, &prefix);
    vars.extend_from_slice(extra);
    let (a, b) = two_replicas(&vars).await;
    Some((redis, prefix, a, b))
}

#[tokio::test]
async fn the_same_message_id_to_two_replicas_at_once_makes_one_gateway_call() {
    let (redis, prefix, a, b) = redis_or_skip!(replicas_on_redis(&[]));
    check_concurrent_sends_make_one_gateway_call(&a, &b, "both-1").await;
    // Whichever leads, the remembered answer is now in Redis.
    let held = redis.cli(&["exists", &dedup_key(&prefix, "both-1")]).await;
    assert_eq!(held.trim(), "1");
}

#[tokio::test]
async fn a_send_through_one_replica_is_replayed_through_the_other() {
    let (_redis, _, a, b) = redis_or_skip!(replicas_on_redis(&[]));
    check_send_through_a_replays_through_b(&a, &b, "across-1").await;
}

#[tokio::test]
async fn another_payload_through_the_other_replica_is_422() {
    let (_redis, _, a, b) = redis_or_skip!(replicas_on_redis(&[]));
    check_another_payload_through_b_is_422(&a, &b, "other-1").await;
}

#[tokio::test]
async fn a_failed_send_through_one_replica_is_not_remembered_on_the_other() {
    let (_redis, _, a, b) = redis_or_skip!(replicas_on_redis(&[("RELAY_MAX_ATTEMPTS", "1")]));
    a.gateway.script([
        Step::status(400),
        Step::sent(),
        Step::status(503),
        Step::sent(),
    ]);
    for (id, status) in [("fail-400", 400), ("fail-503", 503)] {
        let failed = send(&a, &media_body(id)).await;
        assert_eq!(failed.status, status);
        let fresh = send(&b, &media_body(id)).await;
        assert_eq!(fresh.status, 200, "{id}: B sends it again");
        assert!(!fresh.replayed, "{id}");
    }
    assert_eq!(a.gateway.calls(), 4);
}

#[tokio::test]
async fn a_replay_from_the_moka_window_costs_no_redis_round_trip() {
    let (redis, _, a, b) = redis_or_skip!(replicas_on_redis(&[]));
    assert_eq!(send(&a, &media_body("local-1")).await.status, 200);
    let set_calls = || async {
        let stats = redis.cli(&["info", "commandstats"]).await;
        stats
            .lines()
            .find(|line| line.starts_with("cmdstat_set:"))
            .unwrap_or_default()
            .to_owned()
    };

    let before = metric_of(&b, STORE_OPS).await;
    let first = send(&b, &media_body("local-1")).await;
    assert!(first.replayed);
    let after_first = metric_of(&b, STORE_OPS).await;
    assert_eq!(
        after_first,
        before + 1.0,
        "the first replay on B reads Redis once"
    );

    let redis_before = set_calls().await;
    for _ in 0..3 {
        let again = send(&b, &media_body("local-1")).await;
        assert!(again.replayed);
        assert_eq!(again.body, first.body);
    }
    assert_eq!(
        metric_of(&b, STORE_OPS).await,
        after_first,
        "later replays on B are served from its moka window"
    );
    assert_eq!(set_calls().await, redis_before, "Redis saw no SET for them");
    assert_eq!(a.gateway.calls(), 1);
}

#[tokio::test]
async fn a_burst_of_new_sends_at_a_fresh_relay_all_claim_in_redis() {
    let (redis, prefix, a, _b) = redis_or_skip!(replicas_on_redis(&[]));
    let ids = burst_through_the_store(&a, "burst", 10).await;
    for id in &ids {
        let held = redis.cli(&["exists", &dedup_key(&prefix, id)]).await;
        assert_eq!(held.trim(), "1", "{id}");
    }
}

// --- Redis down, and back ------------------------------------------------------------------

async fn assert_health_is_independent_of_redis(urls: &[&str]) {
    let client = reqwest::Client::new();
    for url in urls {
        for path in ["/healthz", "/readyz"] {
            let status = client
                .get(format!("{url}{path}"))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "{url}{path} while Redis is down");
        }
    }
}

/// [`replicas_on_redis`] with `RELAY_REDIS_FAILURE` set to `mode`: a send through A replays
/// through B (messageId `{mode}-before`), then Redis is stopped.
async fn sharing_then_redis_stopped(mode: &str) -> Option<(RedisServer, String, TestApp, Replica)> {
    let (mut redis, prefix, a, b) = replicas_on_redis(&[("RELAY_REDIS_FAILURE", mode)]).await?;
    check_send_through_a_replays_through_b(&a, &b, &format!("{mode}-before")).await;
    redis.stop().await;
    Some((redis, prefix, a, b))
}

#[tokio::test]
async fn with_redis_stopped_open_mode_keeps_serving_and_shares_again_when_it_returns() {
    let (logs, _guard) = Logs::capture();
    let (mut redis, prefix, a, b) = redis_or_skip!(sharing_then_redis_stopped("open"));
    let calls = a.gateway.calls();
    let during = send(&a, &media_body("open-during")).await;
    assert_eq!(during.status, 200, "open mode serves without Redis");
    assert!(!during.replayed);
    assert_eq!(a.gateway.calls(), calls + 1);
    assert!(
        metric_of(&a, FAIL_OPEN).await >= 1.0,
        "the fail-open metric moves"
    );
    // This process still remembers it, in memory.
    assert!(send(&a, &media_body("open-during")).await.replayed);
    assert_health_is_independent_of_redis(&[a.url(), b.url()]).await;
    let text = logs.text();
    assert!(
        text.lines()
            .any(|line| line.contains("WARN") && line.contains("shared store")),
        "no warning about the store:\n{text}"
    );

    redis.restart().await;
    let fail_open = metric_of(&a, FAIL_OPEN).await;
    // The first send after Redis is back is shared again: no restart, no lost send.
    check_send_through_a_replays_through_b(&a, &b, "open-after").await;
    assert_eq!(
        metric_of(&a, FAIL_OPEN).await,
        fail_open,
        "the first send after recovery went through Redis"
    );
    let held = redis
        .cli(&["exists", &dedup_key(&prefix, "open-after")])
        .await;
    assert_eq!(held.trim(), "1");
}

#[tokio::test]
async fn with_redis_stopped_closed_mode_answers_503_and_shares_again_when_it_returns() {
    let (mut redis, _, a, b) = redis_or_skip!(sharing_then_redis_stopped("closed"));
    let calls = a.gateway.calls();
    let refused = post(&a, &media_body("closed-during")).await;
    assert_eq!(refused.status(), 503);
    let retry_after = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
    envelope(refused).await;
    assert_eq!(a.gateway.calls(), calls, "nothing was sent");
    // A remembered answer in this process's window still replays without Redis.
    assert!(send(&b, &media_body("closed-before")).await.replayed);
    assert_health_is_independent_of_redis(&[a.url(), b.url()]).await;
    assert_eq!(metric_of(&a, FAIL_OPEN).await, 0.0);

    redis.restart().await;
    check_send_through_a_replays_through_b(&a, &b, "closed-during").await;
}

#[tokio::test]
async fn a_relay_started_while_redis_is_down_serves_and_shares_once_it_is_up() {
    let mut redis = redis_or_skip!(RedisServer::start());
    redis.stop().await;
    let (url, prefix) = (redis.url(), unique_prefix());
    let open = shared_vars(&url, &prefix);
    let (a, b) = two_replicas(&open).await;
    let mut closed = shared_vars(&url, &prefix);
    closed.push(("RELAY_REDIS_FAILURE", "closed"));
    let c = spawn_replica(&a.gateway, &a.api_key, &closed).await;

    assert_health_is_independent_of_redis(&[a.url(), b.url(), c.url()]).await;
    assert_eq!(send(&a, &media_body("start-1")).await.status, 200);
    assert!(metric_of(&a, FAIL_OPEN).await >= 1.0);
    assert_eq!(send(&c, &media_body("start-2")).await.status, 503);

    redis.restart().await;
    check_send_through_a_replays_through_b(&a, &b, "start-3").await;
    let replay = send(&c, &media_body("start-3")).await;
    assert!(replay.replayed, "the closed replica shares too: {replay:?}");
}

/// `redis-cli -a PASSWORD ...` without the warning about passwords on the command line.
async fn cli_as(redis: &RedisServer, password: &str, args: &[&str]) -> String {
    let mut all = vec!["-a", password, "--no-auth-warning"];
    all.extend_from_slice(args);
    redis.cli(&all).await
}

#[tokio::test]
async fn a_refused_password_is_a_store_failure_and_never_shown() {
    let (logs, _guard) = Logs::capture();
    let right = format!("right-{:032x}", fastrand::u128(..));
    let wrong = format!("wrong-{:032x}", fastrand::u128(..));
    let redis = redis_or_skip!(RedisServer::start_with(
        vec!["--requirepass".into(), right.clone()],
        "auth"
    ));
    let url = format!("redis://:{wrong}@127.0.0.1:{}", redis.port);
    let prefix = unique_prefix();
    let mut closed = shared_vars(&url, &prefix);
    closed.push(("RELAY_REDIS_FAILURE", "closed"));
    let a = spawn_app_with(&closed).await;
    let refused = post(&a, &media_body("auth-1")).await;
    assert_eq!(refused.status(), 503);
    let body = refused.text().await.unwrap();
    assert!(
        !body.contains(&wrong),
        "the password is in an answer: {body}"
    );
    let metrics = metrics_of(&a).await;
    assert!(!metrics.contains(&wrong));
    let text = logs.text();
    assert!(text.contains("shared store"), "no warning:\n{text}");
    assert!(
        !text.contains(&wrong),
        "the password is in a log line:\n{text}"
    );
    assert!(!text.contains(&right));

    // Once the server accepts the relay's password, the relay uses it without a restart:
    // it tries a refused password again at most every 500 ms, so the test resends (closed
    // mode: nothing reaches the gateway meanwhile) every 20 ms until one goes through.
    cli_as(&redis, &right, &["config", "set", "requirepass", &wrong]).await;
    let fixed = Instant::now();
    let recovered = async {
        let mut attempt = 0;
        loop {
            let id = format!("auth-2-{attempt}");
            let answer = send(&a, &media_body(&id)).await;
            if answer.status == 200 {
                return id;
            }
            assert_eq!(answer.status, 503, "{answer:?}");
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let id = tokio::time::timeout(EVENT_TIMEOUT, recovered)
        .await
        .expect("the relay never used Redis again");
    assert!(
        fixed.elapsed() < Duration::from_secs(2),
        "recovery took {:?}",
        fixed.elapsed()
    );
    let held = cli_as(&redis, &wrong, &["exists", &dedup_key(&prefix, &id)]).await;
    assert_eq!(
        held.trim(),
        "1",
        "the send after the fix went through Redis"
    );
    assert_eq!(
        a.gateway.calls(),
        1,
        "only the send that went through Redis"
    );
    assert!(!logs.text().contains(&wrong));
}

#[tokio::test]
async fn the_binary_logs_a_refused_password_without_the_password() {
    let right = format!("right-{:032x}", fastrand::u128(..));
    let wrong = format!("wrong-{:032x}", fastrand::u128(..));
    let redis = redis_or_skip!(RedisServer::start_with(
        vec!["--requirepass".into(), right.clone()],
        "auth"
    ));
    let gateway = FakeGateway::start().await;
    let key = random_key();
    let url = format!("redis://:{wrong}@127.0.0.1:{}", redis.port);
    let prefix = unique_prefix();
    let mut relay = serve_against(
        &gateway.base_url(),
        &key,
        &[
            ("RELAY_REDIS_URL", &url),
            ("RELAY_REDIS_PREFIX", &prefix),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let answer = relay.post_media(&media_body("auth-bin-1")).await;
    assert_eq!(answer.status(), 200, "open mode sends without the store");
    assert!(!answer.text().await.unwrap().contains(&wrong));
    let metrics = metrics_at(&relay.client, &relay.url).await;
    assert!(metric(&metrics, FAIL_OPEN) >= 1.0);
    assert!(!metrics.contains(&wrong));

    terminate_and_wait(&mut relay.child).await;
    let all = stdout_text(&mut relay.child).await + &stderr_text(&mut relay.child).await;
    assert!(
        all.lines()
            .any(|line| line.contains("WARN") && line.contains("shared store")),
        "no warning about the store:\n{all}"
    );
    assert!(!all.contains(&wrong), "the password is in the log:\n{all}");
    assert!(!all.contains(&right));
    assert!(!all.contains(&key), "the API key is in the log");
}

// --- Redis Cluster ---------------------------------------------------------------------------

#[tokio::test]
async fn on_a_three_master_cluster_the_shared_window_holds() {
    let cluster = redis_or_skip!(RedisCluster::start());
    let (urls, prefix) = (cluster.urls(), unique_prefix());
    let mut vars = shared_vars(&urls, &prefix);
    vars.push(("RELAY_REDIS_CLUSTER", "true"));
    let (a, b) = two_replicas(&vars).await;

    // A fresh relay's first burst: every send claims in the cluster, none bypasses it.
    let ids = burst_through_the_store(&a, "cluster-burst", 12).await;
    let mut masters_used = 0;
    let mut keys = 0;
    // Only the dedup keys: the rate limits keep keys of their own in the cluster too.
    let pattern = format!("{prefix}:dedup:*");
    for node in &cluster.nodes {
        let listed = node.cli(&["--scan", "--pattern", &pattern]).await;
        let count = u32::try_from(listed.lines().filter(|l| !l.is_empty()).count()).unwrap();
        keys += count;
        masters_used += u32::from(count > 0);
    }
    assert_eq!(keys, 12, "every send is remembered in the cluster");
    assert!(masters_used >= 2, "the keys spread over the masters");

    check_concurrent_sends_make_one_gateway_call(&a, &b, "cluster-both").await;
    check_send_through_a_replays_through_b(&a, &b, "cluster-across").await;
    check_another_payload_through_b_is_422(&a, &b, "cluster-other").await;
    for id in &ids {
        assert!(send(&b, &media_body(id)).await.replayed, "{id}");
    }
    assert_eq!(metric_of(&b, FAIL_OPEN).await, 0.0);
}

#[tokio::test]
async fn when_the_whole_cluster_restarts_the_relays_share_again_without_a_restart() {
    let (logs, _guard) = Logs::capture();
    let mut cluster = redis_or_skip!(RedisCluster::start());
    let (urls, prefix) = (cluster.urls(), unique_prefix());
    let mut vars = shared_vars(&urls, &prefix);
    vars.push(("RELAY_REDIS_CLUSTER", "true"));
    // Limits off: the recovery rounds send dozens of messages to one pair, and the pair
    // limit's 429 is not what this test is about.
    vars.extend([("RELAY_SENDER_RATE", "0"), ("RELAY_PAIR_INTERVAL_MS", "0")]);
    let (a, b) = two_replicas(&vars).await;
    check_send_through_a_replays_through_b(&a, &b, "cluster-before").await;

    for node in &mut cluster.nodes {
        node.stop().await;
    }
    let during = send(&a, &media_body("cluster-during")).await;
    assert_eq!(during.status, 200, "open mode serves without the cluster");
    assert!(metric_of(&a, FAIL_OPEN).await >= 1.0);
    assert_health_is_independent_of_redis(&[a.url(), b.url()]).await;

    // Each node comes back with its slots (its nodes.conf), empty.
    for node in &mut cluster.nodes {
        node.restart().await;
    }
    cluster.wait_until_ok().await;
    // The relays follow on their own: the Cluster client repairs its node connections in the
    // background, backing off up to 1 s, so the first calls after the restart may still fail
    // open, and one node's connection may be back before another's. Every 20 ms a round of
    // new messageIds (spread over the slots, so over the three nodes) goes through A and
    // again through B, until B replays every one of a round.
    let back = Instant::now();
    let recovered = async {
        let mut round = 0;
        loop {
            let mut all = true;
            for slot in 0..SPREAD {
                let id = format!("cluster-after-{round}-{slot}");
                assert_eq!(send(&a, &media_body(&id)).await.status, 200);
                all &= send(&b, &media_body(&id)).await.replayed;
            }
            if all {
                return;
            }
            round += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, recovered)
        .await
        .unwrap_or_else(|_| panic!("the relays never shared again\n{}", logs.text()));
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "recovery took {:?}",
        back.elapsed()
    );
    check_send_through_a_replays_through_b(&a, &b, "cluster-after").await;
    eprintln!(
        "cluster restart: shared again {:?} after it was back",
        back.elapsed()
    );
}

// --- relay processes killed with SIGKILL -------------------------------------------------------

/// A relay process (the real binary) on a fixed port, so a restart takes its place; its
/// output is drained.
async fn start_relay(listen: &str, vars: &[(&str, &str)]) -> Served {
    let mut all = vec![("RUST_LOG", "warn")];
    all.extend_from_slice(vars);
    let mut relay = serve_binary_on(listen, &all).await;
    drain_output(&mut relay.child);
    relay
}

/// Counts a request the gateway received under its messageId.
fn count(counts: &mut HashMap<String, usize>, request: &Received) {
    let id = request.body["messageId"].as_str().unwrap().to_owned();
    *counts.entry(id).or_default() += 1;
}

/// Counts every request the gateway has received and not yet counted.
async fn count_received(gateway: &FakeGateway, counts: &mut HashMap<String, usize>) {
    for request in gateway.take_received().await {
        count(counts, &request);
    }
}

/// How a caller's resends of one messageId went.
#[derive(Debug)]
struct Resends {
    /// The 200 that ended them.
    answer: Answer,
    /// 504s with no gateway call: the resend waited on another process's claim until its
    /// own deadline.
    waited: u32,
    /// 504s with `x-relay-attempts`: the relay took over the lapsed claim with little of its
    /// deadline left and began a send that ran out of it. The send may or may not have
    /// reached the gateway; it is not remembered, so the next resend sends again.
    cut_off: u32,
}

/// A caller's resend loop: POSTs until the relay answers 200, bounded by `limit`.
async fn resend_until_sent(
    client: reqwest::Client,
    base: String,
    id: String,
    limit: Duration,
) -> Resends {
    let resend = async {
        let (mut waited, mut cut_off) = (0, 0);
        loop {
            let answer = read(post_to(&client, &base, &media_body(&id)).await.unwrap()).await;
            match (answer.status, answer.attempts) {
                (200, _) => {
                    return Resends {
                        answer,
                        waited,
                        cut_off,
                    };
                }
                (504, 0) => waited += 1,
                (504, _) => cut_off += 1,
                (other, _) => panic!("{id}: unexpected {other}: {}", answer.body),
            }
        }
    };
    tokio::time::timeout(limit, resend)
        .await
        .expect("the resend never succeeded")
}

#[tokio::test]
async fn a_relay_killed_mid_send_leaves_a_claim_that_lapses_with_its_lease() {
    // Short, so the test is quick; long enough that a resend taking over after the lease
    // has about a second left for its send (see `Resends::cut_off`).
    const DEADLINE_MS: u64 = 1500;
    // RELAY_REDIS_TIMEOUT_MS's default: the lease outlasts two store round trips too.
    const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
    let full_lease = lease(Duration::from_millis(DEADLINE_MS), REDIS_TIMEOUT);
    let redis = redis_or_skip!(RedisServer::start());
    let gateway = FakeGateway::start().await;
    let (url, prefix, key) = (redis.url(), unique_prefix(), random_key());
    let base = gateway.base_url();
    let listen = format!("127.0.0.1:{}", free_port());
    let deadline = DEADLINE_MS.to_string();
    let vars = [
        ("LIPACHAT_API_KEY", key.as_str()),
        ("LIPACHAT_BASE_URL", &base),
        ("RELAY_REDIS_URL", &url),
        ("RELAY_REDIS_PREFIX", &prefix),
        ("RELAY_DEADLINE_MS", &deadline),
    ];
    let client = reqwest::Client::new();
    let mut first = start_relay(&listen, &vars).await;

    // Completed before the kill.
    let done = read(first.post_media(&media_body("done-1")).await).await;
    assert_eq!(done.status, 200);
    let mut counts = HashMap::new();
    count_received(&gateway, &mut counts).await;
    // In flight at the kill: held at the gateway.
    gateway.script([Step::held()]);
    let lost = tokio::spawn(post_to(&client, &first.url, &media_body("flight-1")));
    count(&mut counts, &gateway.next_request().await);
    // Killed well within its deadline, so the send never ended.
    kill_9(&mut first.child).await;
    assert!(
        lost.await.unwrap().is_err(),
        "the caller lost its connection"
    );
    let claim = dedup_key(&prefix, "flight-1");
    let lease_ms: i64 = redis.cli(&["pttl", &claim]).await.trim().parse().unwrap();
    let lease_ends = Instant::now() + Duration::from_millis(lease_ms.max(0) as u64);
    assert!(
        lease_ms > 0 && lease_ms <= full_lease.as_millis() as i64,
        "the dead relay's claim lasts its lease, the deadline plus two store timeouts and the \
         margin: {lease_ms} ms"
    );

    let second = start_relay(&listen, &vars).await;
    // The completed send: replayed after the restart, sent once.
    let replay = read(second.post_media(&media_body("done-1")).await).await;
    assert!(replay.replayed);
    assert_eq!(replay.body, done.body);
    assert_eq!(gateway.calls(), 2);

    // The send in flight: the caller resends until it is answered. While the dead relay's
    // claim lasts, each resend waits on it and ends in 504 without a send; then one resend
    // takes the claim over and sends (held at the gateway, to look at its claim).
    gateway.script([Step::held()]);
    let mut waited = 0;
    let resending = async {
        loop {
            let started = Instant::now();
            let mut resend = tokio::spawn(post_to(&client, &second.url, &media_body("flight-1")));
            tokio::select! {
                request = gateway.next_request() => return (started, resend, request),
                answer = &mut resend => {
                    let answer = read(answer.unwrap().unwrap()).await;
                    assert_eq!((answer.status, answer.attempts), (504, 0), "{answer:?}");
                    waited += 1;
                }
            }
        }
    };
    let (started, resend, request) = tokio::time::timeout(
        Duration::from_millis(DEADLINE_MS * 4) + full_lease * 2,
        resending,
    )
    .await
    .expect("no resend ever took over");
    let took_over = Instant::now();
    count(&mut counts, &request);
    assert!(
        took_over >= lease_ends,
        "the new send went {:?} before the lease ended",
        lease_ends - took_over
    );
    assert!(waited >= 1, "the resend had to wait for the lease");
    // The new claim's lease is what is left of the resend's deadline, plus the margin (the
    // relay's deadline began a little after `started`: 100 ms of slack for that).
    let new_lease: u64 = redis.cli(&["pttl", &claim]).await.trim().parse().unwrap();
    let left = Duration::from_millis(DEADLINE_MS).saturating_sub(started.elapsed());
    assert!(
        Duration::from_millis(new_lease) <= lease(left, REDIS_TIMEOUT) + Duration::from_millis(100),
        "lease {new_lease} ms, but only {left:?} of the deadline is left"
    );
    gateway.release(1);
    let sent = read(resend.await.unwrap().unwrap()).await;
    assert_eq!((sent.status, sent.attempts), (200, 1), "{sent:?}");
    assert!(!sent.replayed);
    count_received(&gateway, &mut counts).await;
    assert_eq!(
        counts["flight-1"], 2,
        "once by the dead relay, once after its lease"
    );
    assert_eq!(counts["done-1"], 1);
    let again = read(second.post_media(&media_body("flight-1")).await).await;
    assert!(again.replayed);
    eprintln!(
        "kill -9 mid-send: the dead relay's claim had {lease_ms} ms left; the resend waited \
         {waited} time(s) (504, no send), then took over {:?} into its deadline with a \
         {new_lease} ms lease and sent once",
        took_over - started
    );
}

/// One messageId of the experiment: was its first send answered before the kill, and how
/// did its caller's resends go.
struct Row {
    id: String,
    completed: bool,
    resends: Resends,
}

/// The experiment: `kill -9` with 20 sends in flight (10 answered, 10 held at the
/// gateway), restart, the callers resend all 20. Returns what the gateway saw per messageId
/// and how each caller's resends went.
async fn twenty_in_flight_then_kill_9(
    redis: Option<&RedisServer>,
) -> (HashMap<String, usize>, Vec<Row>) {
    let gateway = FakeGateway::start().await;
    let key = random_key();
    let base = gateway.base_url();
    let listen = format!("127.0.0.1:{}", free_port());
    let (url, prefix) = (redis.map(RedisServer::url), unique_prefix());
    let mut vars = vec![
        ("LIPACHAT_API_KEY", key.as_str()),
        ("LIPACHAT_BASE_URL", &base),
        ("RELAY_DEADLINE_MS", "3000"),
    ];
    if let Some(url) = &url {
        vars.extend([
            ("RELAY_REDIS_URL", url.as_str()),
            ("RELAY_REDIS_PREFIX", prefix.as_str()),
        ]);
    }
    let client = reqwest::Client::new();
    let mut first = start_relay(&listen, &vars).await;

    gateway.set_default(Step::held());
    let ids: Vec<String> = (0..20).map(|n| format!("exp-{n:02}")).collect();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for id in &ids {
        let call = post_to(&client, &first.url, &media_body(id));
        let done_tx = done_tx.clone();
        let id = id.clone();
        tokio::spawn(async move {
            if let Ok(response) = call.await
                && response.status() == 200
            {
                let _ = done_tx.send(id);
            }
        });
    }
    let mut counts = HashMap::new();
    // All 20 reached the gateway; let 10 of them answer, and wait for their callers.
    while counts.values().sum::<usize>() < 20 {
        count(&mut counts, &gateway.next_request().await);
    }
    gateway.release(10);
    let mut completed = Vec::new();
    while completed.len() < 10 {
        let id = tokio::time::timeout(EVENT_TIMEOUT, done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        completed.push(id);
    }
    // The other 10 are still held at the gateway (well within the 3 s deadline).
    kill_9(&mut first.child).await;

    gateway.set_default(Step::sent());
    let second = start_relay(&listen, &vars).await;
    let limit = Duration::from_secs(15);
    let resends = join_all(
        ids.iter()
            .map(|id| resend_until_sent(client.clone(), second.url.clone(), id.clone(), limit)),
    )
    .await;
    count_received(&gateway, &mut counts).await;
    let rows = ids
        .into_iter()
        .zip(resends)
        .map(|(id, resends)| Row {
            completed: completed.contains(&id),
            id,
            resends,
        })
        .collect();
    (counts, rows)
}

fn print_experiment(title: &str, counts: &HashMap<String, usize>, rows: &[Row]) {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "messageId  before the kill      resends: 504 waiting / 504 cut off / then  gateway saw"
    );
    for row in rows {
        let answer = &row.resends.answer;
        let _ = writeln!(
            out,
            "{:<10} {:<20} {:>16} / {:>10} / {:<12} {}",
            row.id,
            if row.completed {
                "answered 200"
            } else {
                "in flight, killed"
            },
            row.resends.waited,
            row.resends.cut_off,
            if answer.replayed {
                "200 replayed"
            } else {
                "200 sent"
            },
            counts.get(&row.id).copied().unwrap_or(0)
        );
    }
}

#[tokio::test]
async fn kill_9_with_twenty_in_flight_without_redis_sends_every_message_again() {
    let (counts, rows) = twenty_in_flight_then_kill_9(None).await;
    print_experiment("without RELAY_REDIS_URL", &counts, &rows);
    assert!(
        counts.values().all(|&n| n == 2),
        "every messageId went to the gateway twice: {counts:?}"
    );
    assert!(rows.iter().all(|row| !row.resends.answer.replayed));
}

#[tokio::test]
async fn kill_9_with_twenty_in_flight_with_redis_sends_completed_ones_once() {
    let redis = redis_or_skip!(RedisServer::start());
    let (counts, rows) = twenty_in_flight_then_kill_9(Some(&redis)).await;
    print_experiment("with RELAY_REDIS_URL", &counts, &rows);
    for row in &rows {
        let (id, resends) = (&row.id, &row.resends);
        if row.completed {
            assert_eq!(counts[id], 1, "{id} completed before the kill: sent once");
            assert!(resends.answer.replayed, "{id}: its resend is a replay");
            assert_eq!(resends.waited + resends.cut_off, 0, "{id}");
        } else {
            // Once by the dead relay; then, after its lease, once more by the new one (plus
            // any send the new relay started too late to finish within its deadline, which
            // its caller was told about with a 504 carrying x-relay-attempts).
            let saw = counts[id];
            assert!(
                (2..=2 + resends.cut_off as usize).contains(&saw),
                "{id}: {saw}"
            );
            assert!(!resends.answer.replayed, "{id}");
            assert!(resends.waited >= 1, "{id}: its resend waited for the lease");
        }
    }
}
