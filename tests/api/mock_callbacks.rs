//! SPEC "Mock gateway", its webhook side: the status callbacks the mock posts for each send it
//! accepts (DELIVERED then READ, FAILED 131026 / 131047, the duplicate and READ-first quirks,
//! retries), `POST /mock/inbound`, `GET /mock/callbacks`, and `MOCK_CALLBACK_URL` in the
//! `mock-gateway` command. A small receiver on 127.0.0.1 records every callback on a channel,
//! so each test awaits what it expects rather than sleeping.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use lipachat_relay::mock::{Accept, with_callbacks};
use lipachat_relay::variables::MOCK_CALLBACK_URL;
use lipachat_relay::{ApiKey, SEND_TYPES, SendKind};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::helpers::{
    EVENT_TIMEOUT, binary, free_listen, free_port, log_line, log_lines, random_key, run_to_exit,
    spawn_app_with, start_serving, terminate_and_wait, wait_for_status, wait_until,
};

/// A callback as the receiver got it.
#[derive(Debug)]
struct Callback {
    body: Value,
    raw: String,
    headers: HeaderMap,
}

#[derive(Clone)]
struct ReceiverState {
    /// Statuses to answer, in order; 200 once used up, unless `fallback` says otherwise.
    script: Arc<Mutex<VecDeque<u16>>>,
    fallback: u16,
    /// `Some`: every request waits for a permit before it is answered.
    gate: Option<Arc<Semaphore>>,
    received: mpsc::UnboundedSender<Callback>,
}

/// The webhook receiver a user's service would run.
struct Receiver {
    url: String,
    gate: Option<Arc<Semaphore>>,
    received: mpsc::UnboundedReceiver<Callback>,
}

impl Receiver {
    /// Answers 200 to everything.
    async fn start() -> Self {
        Self::answering([], 200, false).await
    }

    /// Answers `script` in order, then `fallback`; with `hold`, not before [`Self::release`].
    async fn answering(script: impl IntoIterator<Item = u16>, fallback: u16, hold: bool) -> Self {
        let (sender, received) = mpsc::unbounded_channel();
        let gate = hold.then(|| Arc::new(Semaphore::new(0)));
        let state = ReceiverState {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            fallback,
            gate: gate.clone(),
            received: sender,
        };
        let router = Router::new()
            .route("/hook/{token}", post(receive))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            url: format!("http://{address}/hook/token-{:016x}", fastrand::u64(..)),
            gate,
            received,
        }
    }

    /// The next callback the receiver gets.
    async fn next(&mut self) -> Callback {
        tokio::time::timeout(EVENT_TIMEOUT, self.received.recv())
            .await
            .expect("no callback came in time")
            .expect("the receiver stopped")
    }

    /// The next `n` callbacks' bodies.
    async fn bodies(&mut self, n: usize) -> Vec<Value> {
        let mut bodies = Vec::with_capacity(n);
        for _ in 0..n {
            bodies.push(self.next().await.body);
        }
        bodies
    }

    fn release(&self) {
        if let Some(gate) = &self.gate {
            gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let _ = state.received.send(Callback {
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        headers,
    });
    if let Some(gate) = &state.gate {
        gate.acquire().await.unwrap().forget();
    }
    let next = state.script.lock().unwrap().pop_front();
    StatusCode::from_u16(next.unwrap_or(state.fallback)).unwrap()
}

/// A mock on a loopback port that accepts `key` and posts its callbacks to `url`.
async fn start_mock_posting_to(key: &str, url: &str) -> String {
    let router = with_callbacks(Accept::Key(ApiKey::new(key)), Some(url.parse().unwrap())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

fn text_path() -> &'static str {
    SEND_TYPES
        .iter()
        .find(|t| t.kind == SendKind::Text)
        .unwrap()
        .gateway_path
}

/// A text send straight to the mock, as the relay forwards it; returns the `waId` it got.
async fn send_text(base: &str, key: &str, message_id: &str, to: &str) -> String {
    let answer = reqwest::Client::new()
        .post(format!("{base}{}", text_path()))
        .header("apiKey", key)
        .header("content-type", "application/json")
        .body(
            json!({"messageId": message_id, "from": "254110090747", "to": to,
                   "message": "Your order has shipped"})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["data"]["status"], "SENT", "{body}");
    body["data"]["waId"].as_str().unwrap().to_owned()
}

async fn callbacks(base: &str) -> Value {
    reqwest::get(format!("{base}/mock/callbacks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn statuses(bodies: &[Value]) -> Vec<&str> {
    bodies
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect()
}

/// Waits until `/mock/callbacks` lists `count` callbacks, none of them still pending.
async fn settled(base: &str, count: usize) -> Vec<Value> {
    wait_until(format!("{count} callbacks settle"), || async {
        let listing = callbacks(base).await;
        listing["count"] == count
            && listing["callbacks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["outcome"] != "pending")
    })
    .await;
    callbacks(base).await["callbacks"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn an_accepted_send_is_delivered_then_read_in_the_documented_shape() {
    let key = random_key();
    let mut receiver = Receiver::start().await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    let wa_id = send_text(&base, &key, "order-1", "254712345678").await;
    let delivered = receiver.next().await;
    let read = receiver.next().await;

    for (callback, status) in [(&delivered, "DELIVERED"), (&read, "READ")] {
        let body = callback.body.as_object().unwrap();
        let mut fields: Vec<&str> = body.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["messageId", "status", "timestamp", "waId"],
            "{body:?}"
        );
        assert_eq!(body["messageId"], "order-1");
        assert_eq!(body["waId"], wa_id.as_str());
        assert_eq!(body["status"], status);
        let timestamp = body["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(timestamp).is_ok(), "{timestamp}");
        assert!(timestamp.ends_with('Z'), "{timestamp}");
        assert_eq!(callback.headers["content-type"], "application/json");
        assert!(
            !callback.raw.contains(&key),
            "the key leaked into a callback"
        );
        assert!(
            !format!("{:?}", callback.headers).contains(&key),
            "the key leaked into a callback's headers"
        );
    }
    let delivered_at = humantime::parse_rfc3339(delivered.body["timestamp"].as_str().unwrap());
    let read_at = humantime::parse_rfc3339(read.body["timestamp"].as_str().unwrap());
    assert_eq!(
        read_at
            .unwrap()
            .duration_since(delivered_at.unwrap())
            .unwrap(),
        std::time::Duration::from_millis(100),
        "READ is planned 100 ms after DELIVERED"
    );
    let listed = settled(&base, 2).await;
    assert_eq!(listed[0]["body"], delivered.body);
    assert_eq!(listed[1]["body"], read.body);
    for entry in &listed {
        assert_eq!(
            (&entry["attempts"], &entry["httpStatus"], &entry["outcome"]),
            (&json!(1), &json!(200), &json!("delivered"))
        );
    }
}

#[tokio::test]
async fn a_to_ending_in_0000_or_0047_gets_one_failed_callback_with_its_code() {
    let key = random_key();
    let mut receiver = Receiver::start().await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    let wa_id = send_text(&base, &key, "fail-1", "254712340000").await;
    let failed = receiver.next().await.body;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["messageId"], "fail-1");
    assert_eq!(failed["waId"], wa_id.as_str());
    assert_eq!(failed["error"]["code"], 131_026);
    assert_eq!(failed["error"]["title"], "Message undeliverable");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    send_text(&base, &key, "fail-2", "254712340047").await;
    let failed = receiver.next().await.body;
    assert_eq!(
        (&failed["status"], &failed["messageId"]),
        (&json!("FAILED"), &json!("fail-2"))
    );
    assert_eq!(failed["error"]["code"], 131_047);
    assert_eq!(failed["error"]["title"], "Re-engagement message");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("24 hours")
    );

    // Nothing else: neither send got a DELIVERED or a READ.
    let listed = settled(&base, 2).await;
    assert_eq!(
        statuses(&[listed[0]["body"].clone(), listed[1]["body"].clone()]),
        ["FAILED", "FAILED"]
    );
}

#[tokio::test]
async fn a_message_id_ending_in_d_gets_its_first_callback_twice() {
    let key = random_key();
    let mut receiver = Receiver::start().await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    send_text(&base, &key, "order-7d", "254712345678").await;
    let bodies = receiver.bodies(3).await;
    assert_eq!(statuses(&bodies), ["DELIVERED", "DELIVERED", "READ"]);
    assert_eq!(
        bodies[0], bodies[1],
        "the duplicate is the same callback again"
    );
    assert_eq!(settled(&base, 3).await.len(), 3);
}

#[tokio::test]
async fn a_message_id_ending_in_e_is_read_before_delivered() {
    let key = random_key();
    let mut receiver = Receiver::start().await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    send_text(&base, &key, "order-7E", "254712345678").await;
    let bodies = receiver.bodies(2).await;
    assert_eq!(statuses(&bodies), ["READ", "DELIVERED"]);
    assert_eq!(settled(&base, 2).await.len(), 2);
}

#[tokio::test]
async fn a_callback_answered_503_is_retried_until_a_2xx() {
    let key = random_key();
    let mut receiver = Receiver::answering([503, 503], 200, false).await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    send_text(&base, &key, "order-2", "254712345678").await;
    let bodies = receiver.bodies(4).await;
    assert_eq!(
        statuses(&bodies),
        ["DELIVERED", "DELIVERED", "DELIVERED", "READ"]
    );
    assert!(
        bodies[..3].iter().all(|b| *b == bodies[0]),
        "a retry repeats the body"
    );

    let listed = settled(&base, 2).await;
    assert_eq!(
        (
            &listed[0]["attempts"],
            &listed[0]["httpStatus"],
            &listed[0]["outcome"]
        ),
        (&json!(3), &json!(200), &json!("delivered"))
    );
    assert_eq!(listed[1]["attempts"], 1);
}

#[tokio::test]
async fn a_callback_never_answered_2xx_is_dropped_after_four_attempts() {
    let key = random_key();
    let mut receiver = Receiver::answering([], 500, false).await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    send_text(&base, &key, "order-3", "254712345678").await;
    let bodies = receiver.bodies(5).await;
    assert_eq!(
        statuses(&bodies),
        ["DELIVERED", "DELIVERED", "DELIVERED", "DELIVERED", "READ"],
        "four attempts, then the next callback"
    );
    let listed = settled(&base, 2).await;
    for entry in &listed {
        assert_eq!(
            (&entry["attempts"], &entry["httpStatus"], &entry["outcome"]),
            (&json!(4), &json!(500), &json!("dropped"))
        );
    }
}

#[tokio::test]
async fn an_unreachable_callback_url_is_dropped_with_no_status() {
    let key = random_key();
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let base = start_mock_posting_to(&key, &url).await;

    send_text(&base, &key, "order-4", "254712340000").await;
    let listed = settled(&base, 1).await;
    assert_eq!(
        (
            &listed[0]["attempts"],
            &listed[0]["httpStatus"],
            &listed[0]["outcome"]
        ),
        (&json!(4), &Value::Null, &json!("dropped"))
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_hold_the_sends() {
    let key = random_key();
    let mut receiver = Receiver::answering([], 200, true).await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    send_text(&base, &key, "order-5", "254712345678").await;
    let stuck = receiver.next().await;
    assert_eq!(stuck.body["messageId"], "order-5");
    // The first callback hangs at the receiver; the mock still answers sends at once.
    tokio::time::timeout(
        std::time::Duration::from_secs(1),
        send_text(&base, &key, "order-6", "254712345678"),
    )
    .await
    .expect("a send waited for a callback");
    receiver.release();
}

#[tokio::test]
async fn inbound_posts_a_text_message_in_the_documented_shape() {
    let key = random_key();
    let mut receiver = Receiver::start().await;
    let base = start_mock_posting_to(&key, &receiver.url).await;

    let answer = reqwest::Client::new()
        .post(format!("{base}/mock/inbound"))
        .json(&json!({"from": "+254 712 345 678", "to": "254110090747", "text": "Where is my order?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.unwrap();
    let message_id = answer["messageId"].as_str().unwrap();
    assert_eq!(message_id.len(), 36, "{message_id}");

    let inbound = receiver.next().await;
    assert_eq!(
        inbound.body,
        json!({"messageId": message_id, "from": "254712345678", "to": "254110090747",
               "profileName": "Mock Customer", "type": "TEXT", "text": "Where is my order?"})
    );
    let listed = settled(&base, 1).await;
    assert_eq!(listed[0]["body"], inbound.body);
    assert_eq!(listed[0]["outcome"], "delivered");
}

#[tokio::test]
async fn inbound_refuses_bad_input_naming_the_field() {
    let key = random_key();
    let receiver = Receiver::start().await;
    let base = start_mock_posting_to(&key, &receiver.url).await;
    let client = reqwest::Client::new();
    let good = json!({"from": "254712345678", "to": "254110090747", "text": "Hi"});
    let mut cases: Vec<(String, &str)> = vec![("not json".to_owned(), "body")];
    for (field, bad) in [
        ("from", json!("12")),
        ("to", json!(null)),
        ("text", json!("")),
    ] {
        let mut body = good.clone();
        body[field] = bad;
        cases.push((body.to_string(), field));
    }
    for (body, field) in cases {
        let answer = client
            .post(format!("{base}/mock/inbound"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{body}");
        let answer: Value = answer.json().await.unwrap();
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}: ")),
            "{body}: {answer}"
        );
        assert_eq!(answer["path"], "/mock/inbound");
    }
    assert_eq!(callbacks(&base).await["count"], 0, "nothing was posted");
}

#[tokio::test]
async fn without_a_callback_url_inbound_is_409_and_nothing_is_posted() {
    let key = random_key();
    let router = lipachat_relay::mock::router(Accept::Key(ApiKey::new(key.as_str())));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let base = format!("http://{address}");

    let answer = reqwest::Client::new()
        .post(format!("{base}/mock/inbound"))
        .json(&json!({"from": "254712345678", "to": "254110090747", "text": "Hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 409);
    let answer: Value = answer.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("MOCK_CALLBACK_URL"),
        "{answer}"
    );
    send_text(&base, &key, "order-8", "254712345678").await;
    assert_eq!(callbacks(&base).await, json!({"count": 0, "callbacks": []}));
}

#[tokio::test]
async fn a_send_through_the_relay_gets_callbacks_with_the_relays_wa_id() {
    let mut receiver = Receiver::start().await;
    let key = random_key();
    let base = start_mock_posting_to(&key, &receiver.url).await;
    let app = spawn_app_with(&[("LIPACHAT_API_KEY", &key), ("LIPACHAT_BASE_URL", &base)]).await;

    let answer = app
        .post_json(
            "/message/text",
            &json!({"messageId": "relayed-1", "from": "+254 110 090 747",
                    "to": "+254 712 345 678", "message": "Hello"}),
        )
        .await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let bodies = receiver.bodies(2).await;
    assert_eq!(statuses(&bodies), ["DELIVERED", "READ"]);
    assert_eq!(bodies[0]["waId"], answer["data"]["waId"]);
    assert_eq!(bodies[0]["messageId"], "relayed-1");
}

#[tokio::test]
async fn the_mock_gateway_command_posts_to_mock_callback_url() {
    let mut receiver = Receiver::start().await;
    let key = random_key();
    let listen = free_listen();
    let mut command = binary(&["mock-gateway"]);
    command
        .env("MOCK_LISTEN", &listen)
        .env("LIPACHAT_API_KEY", &key)
        .env(MOCK_CALLBACK_URL.name, &receiver.url);
    let _mock = command.spawn().unwrap();
    let base = format!("http://{listen}");
    wait_for_status(&format!("{base}/healthz"), 200).await;

    send_text(&base, &key, "cli-1", "254712345678").await;
    assert_eq!(statuses(&receiver.bodies(2).await), ["DELIVERED", "READ"]);
}

#[tokio::test]
async fn a_malformed_mock_callback_url_exits_2_without_quoting_it() {
    let mut command = binary(&["mock-gateway"]);
    command
        .env("MOCK_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            MOCK_CALLBACK_URL.name,
            "ftp://relay/webhooks/lipachat/secret-token",
        );
    let output = run_to_exit(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "lipachat-relay: MOCK_CALLBACK_URL: must be an http:// or https:// URL with a host"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stderr.contains("secret-token") && !stdout.contains("secret-token"));
}

/// The wiring only: the relay's webhook listener itself is tested where it lives.
#[tokio::test]
async fn serve_with_mock_upstream_gives_its_mock_callbacks_only_with_the_webhook_listener() {
    let token = format!("tok{:032x}", fastrand::u128(..));
    let webhook_listen = free_listen();
    for (webhooks, expected) in [(true, true), (false, false)] {
        let mut command = binary(&["serve", "--mock-upstream"]);
        if webhooks {
            command
                .env("RELAY_WEBHOOK_LISTEN", &webhook_listen)
                .env("RELAY_WEBHOOK_TOKEN", &token);
        }
        let mut relay = start_serving(command, &free_listen()).await;
        terminate_and_wait(&mut relay.child).await;
        let lines = log_lines(&mut relay.child).await;
        let started = log_line(&lines, "mock gateway started (in process)");
        assert_eq!(started["callbacks"], expected, "{started}");
        assert!(
            lines.iter().all(|line| !line.to_string().contains(&token)),
            "the webhook token leaked into a log line"
        );
    }
}
