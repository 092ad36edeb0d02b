//! SPEC "After SENT" with a real `redis-server` and two replicas: records shared, events
//! pending in the stream survive a replica's `kill -9`, one `webhook-id` on every attempt.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Served, drain_output, free_listen, kill_9, random_key, serve_against, start_mock,
    wait_until_within,
};
use crate::lifecycle::{Receiver, SECRET, TOKEN, spawn};
use crate::redis_server::RedisServer;

/// A status callback in Lipachat's shape.
fn status(message_id: &str, word: &str) -> Value {
    json!({"messageId": message_id, "status": word})
}

#[tokio::test]
async fn a_callback_posted_to_one_replica_updates_the_record_the_other_answers() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    let prefix = format!("t{:x}", fastrand::u32(..));
    let vars = [
        ("RELAY_REDIS_URL", url.as_str()),
        ("RELAY_REDIS_PREFIX", prefix.as_str()),
    ];
    let a = spawn(&vars).await;
    let b = spawn(&vars).await;
    a.send("m-shared", "wamid.shared").await;
    // B finds A's send by its waId (Meta's shape), and A answers what B recorded.
    let meta = json!({"entry": [{"changes": [{"value": {"statuses": [
        {"id": "wamid.shared", "status": "delivered"}]}}]}]});
    assert_eq!(b.callback(&meta).await, 200);
    assert_eq!(b.callback(&status("m-shared", "read")).await, 200);
    assert_eq!(b.callback(&status("m-shared", "delivered")).await, 200);
    a.assert_read("m-shared", "wamid.shared", &["SENT", "DELIVERED", "READ"])
        .await;
    let (code, _) = b.record("m-unknown").await;
    assert_eq!(code, 404);
}

/// A relay process with the webhook listener and events on, sharing `redis`; its output is
/// drained.
async fn start_process(
    gateway: &str,
    key: &str,
    redis: &str,
    prefix: &str,
    events: &str,
) -> Served {
    let mut process = serve_against(
        gateway,
        key,
        &[
            ("RELAY_WEBHOOK_LISTEN", &free_listen()),
            ("RELAY_WEBHOOK_TOKEN", TOKEN),
            ("RELAY_REDIS_URL", redis),
            ("RELAY_REDIS_PREFIX", prefix),
            ("RELAY_EVENTS_URL", events),
            ("RELAY_EVENTS_SECRET", SECRET),
        ],
    )
    .await;
    drain_output(&mut process.child);
    process
}

#[tokio::test]
async fn an_event_pending_on_a_killed_replica_is_delivered_by_the_other() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let receiver = Receiver::default();
    receiver.refuse_all.store(true, Ordering::SeqCst);
    let events = receiver.start().await;
    let key = random_key();
    let gateway = start_mock(&key).await;
    let prefix = format!("t{:x}", fastrand::u32(..));
    let mut a = start_process(&gateway, &key, &redis.url(), &prefix, &events).await;
    let sent = a
        .post_json_with(
            "/message/text",
            &[],
            &json!({"messageId": "m-kill", "message": "hi",
                    "from": "254110090747", "to": "254712345678"}),
        )
        .await;
    assert_eq!(sent.status(), 200);
    // A, the only replica yet, has taken the SENT event and retries it against a receiver
    // that refuses.
    wait_until_within(
        Duration::from_secs(10),
        "a first refused attempt",
        || async { !receiver.all().is_empty() },
    )
    .await;
    let first = receiver.all()[0].clone();
    assert_eq!(first.body["data"]["messageId"], "m-kill");
    let b = start_process(&gateway, &key, &redis.url(), &prefix, &events).await;
    kill_9(&mut a.child).await;
    receiver.refuse_all.store(false, Ordering::SeqCst);
    // 30 s of silence, then B's next renewal (every 10 s) takes it over and delivers it.
    wait_until_within(
        Duration::from_secs(75),
        "the event delivered by replica B",
        || async { receiver.all().iter().any(|d| d.answered == 200) },
    )
    .await;
    let all = receiver.all();
    assert!(all.iter().all(|d| d.id == first.id), "{all:#?}");
    assert_eq!(all.iter().filter(|d| d.answered == 200).count(), 1);
    drop(b);
}

#[tokio::test]
async fn with_redis_a_receiver_that_fails_three_times_gets_one_stable_id() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let receiver = Receiver::default();
    *receiver.refuse_first.lock().unwrap() = 3;
    let events = receiver.start().await;
    let url = redis.url();
    let prefix = format!("t{:x}", fastrand::u32(..));
    let vars = [
        ("RELAY_REDIS_URL", url.as_str()),
        ("RELAY_REDIS_PREFIX", prefix.as_str()),
        ("RELAY_EVENTS_URL", events.as_str()),
        ("RELAY_EVENTS_SECRET", SECRET),
    ];
    let a = spawn(&vars).await;
    let b = spawn(&vars).await;
    a.send("m-redis-retry", "wamid.rr").await;
    wait_until_within(
        Duration::from_secs(30),
        "a delivery answered 200",
        || async { receiver.all().iter().any(|d| d.answered == 200) },
    )
    .await;
    // Another callback's event, delivered after, shows the worker has moved on: nothing more
    // for the first id comes after its 200.
    assert_eq!(b.callback(&status("m-redis-retry", "DELIVERED")).await, 200);
    wait_until_within(Duration::from_secs(30), "the DELIVERED event", || async {
        receiver
            .all()
            .iter()
            .any(|d| d.answered == 200 && d.body["data"]["status"] == "DELIVERED")
    })
    .await;
    let sent: Vec<_> = receiver
        .all()
        .into_iter()
        .filter(|d| d.body["data"]["status"] == "SENT")
        .collect();
    assert_eq!(sent.len(), 4, "{sent:#?}");
    assert!(sent.iter().all(|d| d.id == sent[0].id));
    assert_eq!(sent[3].answered, 200);
}
