//! SPEC "After SENT: webhooks in, status, events out", in this process's memory: the webhook
//! listener, the status record's forward-only merge, events out and their signatures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use lipachat_relay::{AppState, Config, KeyRequirement, serve_all};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::helpers::{FakeGateway, Step, random_key, request, wait_until_within};

pub(crate) const TOKEN: &str = "test-token-0123456789abcdefghijklmnop";
/// `whsec_` and the base64 of 32 bytes.
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One delivery the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Value,
    /// The status the receiver answered.
    pub answered: u16,
}

/// An event receiver on 127.0.0.1 that answers `refuse` to the first deliveries of each id,
/// then 200, and records every delivery.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// How many attempts of each id are refused with 503 before one is taken.
    pub refuse_first: Arc<Mutex<usize>>,
    /// Refuse everything while set.
    pub refuse_all: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    /// Starts it; its URL.
    pub(crate) async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = axum::Router::new()
            .route("/events", post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{address}/events")
    }

    pub(crate) fn all(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// The deliveries that were answered 200, in the order they came.
    pub(crate) fn taken(&self) -> Vec<Delivery> {
        self.all()
            .into_iter()
            .filter(|delivery| delivery.answered == 200)
            .collect()
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut delivery = Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: 200,
    };
    let mut deliveries = receiver.deliveries.lock().unwrap();
    let earlier = deliveries.iter().filter(|d| d.id == delivery.id).count();
    let refuse = *receiver.refuse_first.lock().unwrap();
    let answer = if receiver
        .refuse_all
        .load(std::sync::atomic::Ordering::SeqCst)
        || earlier < refuse
    {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    delivery.answered = answer.as_u16();
    deliveries.push(delivery);
    answer
}

/// A relay in this process with its webhook listener, against a fake gateway.
pub(crate) struct LifecycleApp {
    pub base_url: String,
    pub webhook_url: String,
    pub gateway: FakeGateway,
    pub client: reqwest::Client,
    pub state: AppState,
    _shutdown: oneshot::Sender<()>,
}

pub(crate) async fn spawn(vars: &[(&str, &str)]) -> LifecycleApp {
    let gateway = FakeGateway::start().await;
    let mut all: Vec<(String, String)> = vec![
        ("LIPACHAT_API_KEY".into(), random_key()),
        ("LIPACHAT_BASE_URL".into(), gateway.base_url()),
        ("RELAY_WEBHOOK_LISTEN".into(), "127.0.0.1:0".into()),
        ("RELAY_WEBHOOK_TOKEN".into(), TOKEN.into()),
        ("RELAY_SENDER_RATE".into(), "0".into()),
        ("RELAY_PAIR_INTERVAL_MS".into(), "0".into()),
    ];
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = Config::from_vars(all, KeyRequirement::Required).unwrap();
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let webhook_url = format!(
        "http://{}/webhooks/lipachat/{TOKEN}",
        hooks.local_addr().unwrap()
    );
    let (shutdown, signal) = oneshot::channel::<()>();
    tokio::spawn(serve_all(listener, Some(hooks), state.clone(), async {
        let _ = signal.await;
    }));
    LifecycleApp {
        base_url,
        webhook_url,
        gateway,
        client: reqwest::Client::new(),
        state,
        _shutdown: shutdown,
    }
}

impl LifecycleApp {
    /// A text send, accepted by the fake gateway with this `waId`.
    pub(crate) async fn send(&self, message_id: &str, wa_id: &str) {
        self.gateway.script([Step::body(
            200,
            "application/json",
            &json!({"status": "success", "data": {"messageId": message_id, "waId": wa_id, "status": "SENT"}})
                .to_string(),
        )]);
        let response = self
            .client
            .post(format!("{}/message/text", self.base_url))
            .json(&json!({"messageId": message_id, "message": "hi",
                          "from": "254110090747", "to": "254712345678"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    pub(crate) async fn callback(&self, body: &Value) -> u16 {
        self.client
            .post(&self.webhook_url)
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub(crate) async fn record(&self, message_id: &str) -> (u16, Value) {
        let url = format!("{}/messages/{message_id}", self.base_url);
        let response = request(&self.client, Method::GET, &url).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Checks that the record of `message_id` is a text send, READ, under `wa_id`, with a time
    /// for each status of `times`.
    pub(crate) async fn assert_read(&self, message_id: &str, wa_id: &str, times: &[&str]) {
        let (code, record) = self.record(message_id).await;
        assert_eq!(code, 200);
        assert_eq!(record["status"], "READ");
        assert_eq!(record["type"], "text");
        assert_eq!(record["waId"], wa_id);
        let at = record["statuses"].as_object().unwrap();
        assert!(times.iter().all(|s| at.contains_key(*s)), "{record}");
    }

    /// Waits until every event recorded so far has been delivered (or is dead).
    pub(crate) async fn events_settled(&self) {
        let state = self.state.clone();
        // Three refusals back off about 1 + 2 + 4 s, with jitter.
        wait_until_within(Duration::from_secs(30), "every event settled", || {
            let state = state.clone();
            async move { state.events_pending_in_memory() == 0 }
        })
        .await;
    }
}

fn status(message_id: &str, word: &str) -> Value {
    json!({"messageId": message_id, "status": word, "timestamp": "2026-12-07T10:00:00Z"})
}

/// The statuses of the `message.status` events for one message, in delivery order.
fn statuses_of(deliveries: &[Delivery], message_id: &str) -> Vec<String> {
    let mut events: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.body["type"] == "message.status" && d.body["data"]["messageId"] == message_id)
        .collect();
    // Delivery runs concurrently: order them by the status they announce.
    events.sort_by_key(|d| {
        ["QUEUED", "SENT", "DELIVERED", "READ", "FAILED"]
            .iter()
            .position(|s| d.body["data"]["status"] == *s)
    });
    events
        .iter()
        .map(|d| d.body["data"]["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn app_with_receiver() -> (LifecycleApp, Receiver) {
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let app = spawn(&[("RELAY_EVENTS_URL", &url), ("RELAY_EVENTS_SECRET", SECRET)]).await;
    (app, receiver)
}

#[tokio::test]
async fn out_of_order_and_repeated_callbacks_leave_the_furthest_record_and_one_event_per_change() {
    let (app, receiver) = app_with_receiver().await;
    app.send("m-read", "wamid.read").await;
    for word in ["read", "delivered", "READ", "sent"] {
        assert_eq!(app.callback(&status("m-read", word)).await, 200);
    }
    app.send("m-failed", "wamid.failed").await;
    let failed = json!({"messageId": "m-failed", "status": "FAILED",
                        "error": {"code": 131026, "title": "Message undeliverable"}});
    for body in [&failed, &status("m-failed", "DELIVERED"), &failed] {
        assert_eq!(app.callback(body).await, 200);
    }
    app.events_settled().await;

    app.assert_read("m-read", "wamid.read", &["SENT", "DELIVERED"])
        .await;
    let (_, record) = app.record("m-failed").await;
    assert_eq!(record["status"], "FAILED");
    assert_eq!(record["error"]["code"], 131026);
    assert!(
        !record["statuses"]
            .as_object()
            .unwrap()
            .contains_key("DELIVERED")
    );

    let taken = receiver.taken();
    assert_eq!(statuses_of(&taken, "m-read"), ["SENT", "READ"]);
    assert_eq!(statuses_of(&taken, "m-failed"), ["SENT", "FAILED"]);
    assert_eq!(taken.len(), 4, "{taken:#?}");
}

#[tokio::test]
async fn meta_shaped_statuses_are_matched_through_the_wa_id() {
    let (app, receiver) = app_with_receiver().await;
    app.send("m-meta", "wamid.HBgM").await;
    let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {
        "statuses": [{"id": "wamid.HBgM", "status": "delivered", "timestamp": "1727862637"}]}}]}]});
    assert_eq!(app.callback(&body).await, 200);
    app.events_settled().await;
    let (_, record) = app.record("m-meta").await;
    assert_eq!(record["status"], "DELIVERED");
    assert_eq!(
        statuses_of(&receiver.taken(), "m-meta"),
        ["SENT", "DELIVERED"]
    );
}

#[tokio::test]
async fn unrecognised_bodies_are_200_and_passed_on_once_and_inbound_messages_are_received() {
    let (app, receiver) = app_with_receiver().await;
    let odd = json!({"event": "template_status", "name": "offer_830", "status": "APPROVED"});
    assert_eq!(app.callback(&odd).await, 200);
    assert_eq!(app.callback(&odd).await, 200);
    let inbound = json!({"messageId": "in-1", "from": "254700000001", "to": "254110090747",
                         "profileName": "A", "type": "TEXT", "text": "hello"});
    assert_eq!(app.callback(&inbound).await, 200);
    assert_eq!(app.callback(&inbound).await, 200);
    app.events_settled().await;
    let taken = receiver.taken();
    let types: Vec<&str> = taken
        .iter()
        .map(|d| d.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 2, "{taken:#?}");
    assert!(types.contains(&"webhook.unrecognised") && types.contains(&"message.received"));
    let unrecognised = taken
        .iter()
        .find(|d| d.body["type"] == "webhook.unrecognised")
        .unwrap();
    assert_eq!(unrecognised.body["data"], odd);
}

#[tokio::test]
async fn a_wrong_token_is_404_and_changes_nothing_bad_bodies_are_400_413_415() {
    let (app, receiver) = app_with_receiver().await;
    app.send("m-tok", "wamid.tok").await;
    let wrong = app.webhook_url.replace(TOKEN, &TOKEN.replace('t', "T"));
    let response = app
        .client
        .post(&wrong)
        .json(&status("m-tok", "READ"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(TOKEN) && text.contains("not found"),
        "{text}"
    );
    let raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(&app.webhook_url)
            .header("content-type", content_type)
            .body(body)
    };
    assert_eq!(
        raw("{nope", "application/json")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(raw("{}", "text/plain").send().await.unwrap().status(), 415);
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(70_000));
    let response = app
        .client
        .post(&app.webhook_url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    app.events_settled().await;
    let (_, record) = app.record("m-tok").await;
    assert_eq!(record["status"], "SENT");
    assert_eq!(statuses_of(&receiver.taken(), "m-tok"), ["SENT"]);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"lipachat_relay_webhooks_total{kind="none",result="wrong_token"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_one_stable_id_and_nothing_after_its_200() {
    let receiver = Receiver::default();
    *receiver.refuse_first.lock().unwrap() = 3;
    let url = receiver.start().await;
    let app = spawn(&[("RELAY_EVENTS_URL", &url), ("RELAY_EVENTS_SECRET", SECRET)]).await;
    app.send("m-retry", "wamid.retry").await;
    app.events_settled().await;
    let all = receiver.all();
    assert_eq!(all.len(), 4, "{all:#?}");
    assert!(
        all.iter()
            .all(|d| d.id == all[0].id && d.id.starts_with("msg_"))
    );
    assert!(all.iter().all(|d| d.signature.starts_with("v1,")));
    assert!(all.iter().all(|d| d.timestamp.parse::<u64>().is_ok()));
    assert_eq!(all[3].body["data"]["status"], "SENT");
}

#[tokio::test]
async fn without_the_listener_the_lookup_answers_from_the_dedup_window() {
    let app = crate::helpers::spawn_app().await;
    let response = app
        .post_media(&crate::helpers::media_body("m-window"))
        .await;
    assert_eq!(response.status(), 200);
    let record: Value = app.get("/messages/m-window").await.json().await.unwrap();
    assert_eq!(record["status"], "SENT");
    assert_eq!(record["messageId"], "m-window");
    assert!(record["statuses"]["SENT"].is_string());
    let missing = app.get("/messages/m-none").await;
    assert_eq!(missing.status(), 404);
}
