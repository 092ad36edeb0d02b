//! SPEC "Shared deduplication", "Slow is not down": Redis stalls (`CLIENT PAUSE`, what a
//! BGSAVE fork or an AOF fsync does on a busy host) longer than `RELAY_REDIS_TIMEOUT_MS`,
//! against real `redis-server` processes and two relays sharing them.
//!
//! A stall does not prove that a command did not run: Redis applies what it had read once the
//! pause ends. Each case checks the promise that matters to a caller — one gateway call per
//! `messageId` — and that nothing is left behind that makes a retry wait out its deadline.
//!
//! The stall's end is awaited, not slept through: a `SET` from `redis-cli` is held by either
//! pause mode and answers when it ends.

use crate::helpers::{Step, media_body};
use crate::redis_or_skip;
use crate::redis_server::RedisServer;
use crate::shared_dedup::{
    CLAIMS_OK, Relay, metric_of, post_to, read, send, shared_vars, two_replicas, unique_prefix,
    wait_for_metric,
};

const CLAIM_TIMEOUTS: &str =
    "lipachat_relay_store_operations_total{op=\"claim\",result=\"timeout\"}";

/// The relays' settings for these cases: a short Redis timeout (so a stall outlasts it) and a
/// short deadline (so a case that would wait out an orphan claim fails in seconds).
fn slow_vars<'a>(url: &'a str, prefix: &'a str, failure: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut vars = shared_vars(url, prefix);
    vars.extend([
        ("RELAY_REDIS_TIMEOUT_MS", "100"),
        ("RELAY_DEADLINE_MS", "5000"),
        ("RELAY_REDIS_FAILURE", failure),
    ]);
    vars
}

/// One send through each relay before the stall, as a relay that has been running has: its
/// connection to Redis is up. (A connection still being made when the stall begins has not
/// sent the claim at all; its completion then lands only on its next background try, and a
/// duplicate arriving in between finds nothing to wait on.)
async fn warm_up(a: &impl Relay, b: &impl Relay) {
    assert_eq!(send(a, &media_body("warm-a")).await.status, 200);
    assert_eq!(send(b, &media_body("warm-b")).await.status, 200);
}

/// Stalls Redis for `millis` in `mode` (`WRITE` or `ALL`).
async fn stall(redis: &RedisServer, millis: u32, mode: &str) {
    let answer = redis
        .cli(&["CLIENT", "PAUSE", &millis.to_string(), mode])
        .await;
    assert_eq!(answer.trim(), "OK", "CLIENT PAUSE: {answer}");
}

/// Returns once Redis takes writes again: a write is held until the pause ends.
async fn stall_over(redis: &RedisServer) {
    let answer = redis.cli(&["SET", "slow-redis-probe", "1"]).await;
    assert_eq!(answer.trim(), "OK", "the probe write: {answer}");
}

/// (a) Open mode, a 600 ms stall during A's claim: A answers 200 from its own send, and after
/// the stall B replays A's answer — one gateway call, no claim left for B to wait out.
async fn check_open_mode_stall_during_a_claim(mode: &str) {
    let redis = redis_or_skip!(RedisServer::start());
    let (url, prefix) = (redis.url(), unique_prefix());
    let (a, b) = two_replicas(&slow_vars(&url, &prefix, "open")).await;
    let id = format!("slow-open-{mode}");
    warm_up(&a, &b).await;
    let calls = a.gateway.calls();

    stall(&redis, 600, mode).await;
    let first = send(&a, &media_body(&id)).await;
    assert_eq!(first.status, 200, "A goes on in open mode: {first:?}");
    stall_over(&redis).await;

    let replay = send(&b, &media_body(&id)).await;
    assert_eq!(
        replay.status, 200,
        "B must not wait out a claim: {replay:?}"
    );
    assert!(replay.replayed, "B replays A's answer: {replay:?}");
    assert_eq!(replay.body, first.body, "byte for byte");
    assert_eq!(a.gateway.calls(), calls + 1, "one gateway call in all");
}

#[tokio::test]
async fn open_mode_a_claim_stalled_by_a_write_pause_is_completed_and_replayed_by_the_other_replica()
{
    check_open_mode_stall_during_a_claim("WRITE").await;
}

#[tokio::test]
async fn open_mode_a_claim_stalled_by_a_full_pause_is_completed_and_replayed_by_the_other_replica()
{
    check_open_mode_stall_during_a_claim("ALL").await;
}

/// (b) Closed mode, the same stall: A answers 503, and the caller's retry after the stall is
/// sent (no orphan claim makes it wait out its deadline) — one gateway call.
async fn check_closed_mode_stall_during_a_claim(mode: &str) {
    let redis = redis_or_skip!(RedisServer::start());
    let (url, prefix) = (redis.url(), unique_prefix());
    let (a, b) = two_replicas(&slow_vars(&url, &prefix, "closed")).await;
    let id = format!("slow-closed-{mode}");
    warm_up(&a, &b).await;
    let calls = a.gateway.calls();

    stall(&redis, 600, mode).await;
    let refused = send(&a, &media_body(&id)).await;
    assert_eq!(refused.status, 503, "closed mode refuses: {refused:?}");
    stall_over(&redis).await;
    assert_eq!(
        a.gateway.calls(),
        calls,
        "nothing was sent during the stall"
    );

    let retry = send(&a, &media_body(&id)).await;
    assert_eq!(retry.status, 200, "the retry is sent at once: {retry:?}");
    let replay = send(&b, &media_body(&id)).await;
    assert!(replay.replayed, "and shared: {replay:?}");
    assert_eq!(a.gateway.calls(), calls + 1, "one gateway call in all");
}

#[tokio::test]
async fn closed_mode_a_claim_stalled_by_a_write_pause_leaves_no_orphan_claim() {
    check_closed_mode_stall_during_a_claim("WRITE").await;
}

#[tokio::test]
async fn closed_mode_a_claim_stalled_by_a_full_pause_leaves_no_orphan_claim() {
    check_closed_mode_stall_during_a_claim("ALL").await;
}

/// (c) B waits on A's live claim; Redis stalls for 500 ms while it waits and while A
/// completes. B never sends alongside A: one gateway call, and B gets A's answer or a 504.
async fn check_a_waiter_keeps_waiting_through_a_stall(mode: &str) {
    let redis = redis_or_skip!(RedisServer::start());
    let (url, prefix) = (redis.url(), unique_prefix());
    let (a, b) = two_replicas(&slow_vars(&url, &prefix, "open")).await;
    let id = format!("slow-waiter-{mode}");
    let calls = a.gateway.calls();
    let claims = metric_of(&b, CLAIMS_OK).await;
    let timeouts = metric_of(&b, CLAIM_TIMEOUTS).await;

    a.gateway.take_received().await;
    a.gateway.script([Step::held()]);
    let to_a = tokio::spawn(post_to(a.http(), a.url(), &media_body(&id)));
    a.gateway.next_request().await;
    let to_b = tokio::spawn(post_to(b.http(), b.url(), &media_body(&id)));
    // B has seen A's claim in flight...
    wait_for_metric(&[b.url()], CLAIMS_OK, claims + 1.0).await;
    stall(&redis, 500, mode).await;
    // ...and one of its looks at it has timed out in the stall.
    wait_for_metric(&[b.url()], CLAIM_TIMEOUTS, timeouts + 1.0).await;
    // A's send ends during the stall: its completion cannot land until Redis is back.
    a.gateway.release(1);
    let from_a = read(to_a.await.unwrap().unwrap()).await;
    assert_eq!(from_a.status, 200, "{from_a:?}");
    stall_over(&redis).await;

    let from_b = read(to_b.await.unwrap().unwrap()).await;
    assert_eq!(
        a.gateway.calls(),
        calls + 1,
        "B must never send alongside A"
    );
    match from_b.status {
        200 => {
            assert!(from_b.replayed, "{from_b:?}");
            assert_eq!(from_b.body, from_a.body, "B gets A's answer");
        }
        504 => {}
        other => panic!("B answered {other}: {from_b:?}"),
    }
}

#[tokio::test]
async fn a_waiter_on_another_replicas_claim_keeps_waiting_through_a_write_pause() {
    check_a_waiter_keeps_waiting_through_a_stall("WRITE").await;
}

#[tokio::test]
async fn a_waiter_on_another_replicas_claim_keeps_waiting_through_a_full_pause() {
    check_a_waiter_keeps_waiting_through_a_stall("ALL").await;
}
