//! Fault injection (SPEC "Retries, timeouts, overload", "Connections and slow clients"): a
//! raw-TCP gateway that misbehaves the way each test scripts it, and hostile clients on raw
//! sockets. Every test checks that the relay is alive afterwards, the status each caller got,
//! and how often (and how many at once) the gateway was called.
//!
//! Waits are on events: the fake reports each request on a channel and its open calls on a
//! watch. Where a timeout itself is under test, the time it took is bounded both ways: never
//! before the configured value, and not much after it ([`MARGIN`], generous for a loaded CI).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::helpers::{
    EVENT_TIMEOUT, Step, TestApp, envelope, log_line, log_lines, media_body, random_key,
    serve_against, spawn_app_with, spawn_post, terminate_and_wait, wait_for_status, wait_until,
};

/// How late a timeout may fire and still pass: timers, scheduling and a busy CI machine. Still
/// well under the gap between each test's configured value and the default (5 s head, 10 s
/// body, 25 s shutdown grace), so a value that was not applied fails.
const MARGIN: Duration = Duration::from_millis(2_500);

/// The rate limits would make many sends to one pair wait; these tests are about other limits.
const NO_RATE_LIMITS: [(&str, &str); 2] =
    [("RELAY_SENDER_RATE", "0"), ("RELAY_PAIR_INTERVAL_MS", "0")];

// ---------------------------------------------------------------------------------------------
// The misbehaving gateway
// ---------------------------------------------------------------------------------------------

/// What the fake gateway does with one request it has read in full.
#[derive(Clone, Debug)]
enum Fault {
    /// A SENT envelope, 200.
    Sent,
    /// This status, content type and body, with an optional `Retry-After`.
    Answer {
        status: u16,
        content_type: &'static str,
        body: String,
        retry_after: Option<String>,
    },
    /// A head promising 100 bytes of body, 10 of them, then a TCP reset.
    ResetMidBody,
    /// Nothing at all: the connection is closed right after the request is read.
    CloseAfterRequest,
    /// Never answers; the call ends when the relay gives up on the connection.
    Hang,
    /// Waits for a permit from [`RawGateway::release`], then answers SENT.
    Held,
}

impl Fault {
    /// A JSON error answer, as a gateway under load would send it.
    fn status(status: u16) -> Self {
        Self::Answer {
            status,
            content_type: "application/json",
            body: error_body(status),
            retry_after: None,
        }
    }

    fn with_retry_after(self, value: &str) -> Self {
        match self {
            Self::Answer {
                status,
                content_type,
                body,
                ..
            } => Self::Answer {
                status,
                content_type,
                body,
                retry_after: Some(value.to_owned()),
            },
            other => other,
        }
    }
}

/// The body of [`Fault::status`].
fn error_body(status: u16) -> String {
    json!({"timestamp": "2026-11-25T00:00:00Z", "status": status, "error": "scripted"}).to_string()
}

struct GatewayShared {
    script: Mutex<VecDeque<Fault>>,
    default: Fault,
    calls: AtomicUsize,
    peak: AtomicUsize,
    /// Calls read in full and not yet answered, closed or given up on by the relay.
    open: watch::Sender<usize>,
    gate: Semaphore,
    received: mpsc::UnboundedSender<String>,
}

/// A gateway on a raw socket, so it can fail in ways no HTTP framework would let it.
struct RawGateway {
    address: SocketAddr,
    shared: Arc<GatewayShared>,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

impl RawGateway {
    async fn start(default: Fault) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(GatewayShared {
            script: Mutex::new(VecDeque::new()),
            default,
            calls: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            open: watch::Sender::new(0),
            gate: Semaphore::new(0),
            received: sender,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepting = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(converse(stream, Arc::clone(&accepting)));
            }
        });
        Self {
            address,
            shared,
            received: tokio::sync::Mutex::new(receiver),
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Faults to apply, in order, before the default.
    fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.script.lock().unwrap().extend(faults);
    }

    fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// The most calls that were open at once.
    fn peak(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    fn release(&self, n: usize) {
        self.shared.gate.add_permits(n);
    }

    /// The messageId of the next request the gateway reads.
    async fn next_call(&self) -> String {
        let mut received = self.received.lock().await;
        tokio::time::timeout(EVENT_TIMEOUT, received.recv())
            .await
            .expect("the gateway received no request in time")
            .expect("the gateway stopped")
    }

    /// Waits until exactly `n` calls are open.
    async fn until_open(&self, n: usize) {
        let mut open = self.shared.open.subscribe();
        tokio::time::timeout(EVENT_TIMEOUT, open.wait_for(|open| *open == n))
            .await
            .unwrap_or_else(|_| panic!("the gateway never had {n} calls open"))
            .unwrap();
    }
}

/// Counts a call as open until dropped.
struct OpenCall(Arc<GatewayShared>);

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.open.send_modify(|open| *open -= 1);
    }
}

/// One connection from the relay: read a request, misbehave as scripted, repeat.
async fn converse(mut stream: TcpStream, shared: Arc<GatewayShared>) {
    let mut pending = Vec::new();
    while let Some(body) = read_message(&mut stream, &mut pending).await {
        let fault = shared
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| shared.default.clone());
        shared.calls.fetch_add(1, Ordering::SeqCst);
        shared.open.send_modify(|open| {
            *open += 1;
            shared.peak.fetch_max(*open, Ordering::SeqCst);
        });
        let _call = OpenCall(Arc::clone(&shared));
        let message_id = serde_json::from_slice::<Value>(&body).unwrap_or_default()["messageId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let _ = shared.received.send(message_id.clone());
        let keep_alive = match fault {
            Fault::Sent => answer_sent(&mut stream, &message_id).await,
            Fault::Held => {
                shared.gate.acquire().await.unwrap().forget();
                answer_sent(&mut stream, &message_id).await
            }
            Fault::Answer {
                status,
                content_type,
                body,
                retry_after,
            } => {
                let extra = retry_after
                    .map(|value| format!("retry-after: {value}\r\n"))
                    .unwrap_or_default();
                write_answer(&mut stream, status, content_type, &extra, &body).await
            }
            Fault::ResetMidBody => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            content-length: 100\r\n\r\n{\"timestamp\"";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.flush().await;
                stream.set_zero_linger().unwrap();
                false
            }
            Fault::CloseAfterRequest => false,
            Fault::Hang => {
                // Until the relay closes its end (or sends anything, which it must not).
                let _ = stream.read(&mut [0; 1]).await;
                false
            }
        };
        if !keep_alive {
            return;
        }
    }
}

async fn answer_sent(stream: &mut TcpStream, message_id: &str) -> bool {
    let body = json!({"timestamp": "2026-11-25T00:00:00Z",
                      "data": {"messageId": message_id, "waId": "wamid.TEST", "status": "SENT",
                               "statusDesc": "sent"},
                      "status": "success", "message": "", "errors": null})
    .to_string();
    write_answer(stream, 200, "application/json", "", &body).await
}

async fn write_answer(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &str,
) -> bool {
    let answer = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await.is_ok()
}

/// Reads one HTTP/1.1 message (head and Content-Length body), keeping what follows it.
/// Returns the head's first line and the body; `None` at the end of the stream.
async fn read_head_and_body(
    stream: &mut (impl AsyncReadExt + Unpin),
    pending: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, value)| value.trim().parse::<usize>().unwrap());
            let total = end + 4 + length;
            while pending.len() < total {
                if !read_more(stream, pending).await {
                    return None;
                }
            }
            let body = pending[end + 4..total].to_vec();
            pending.drain(..total);
            let first_line = head.lines().next().unwrap_or_default().to_owned();
            return Some((first_line, body));
        }
        if !read_more(stream, pending).await {
            return None;
        }
    }
}

async fn read_more(stream: &mut (impl AsyncReadExt + Unpin), pending: &mut Vec<u8>) -> bool {
    let mut chunk = [0; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            pending.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn read_message(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    read_head_and_body(stream, pending)
        .await
        .map(|(_, body)| body)
}

// ---------------------------------------------------------------------------------------------
// Helpers for the relay side
// ---------------------------------------------------------------------------------------------

async fn relay_for(gateway: &RawGateway, vars: &[(&str, &str)]) -> TestApp {
    let base = gateway.base_url();
    let mut all: Vec<(&str, &str)> = vec![("LIPACHAT_BASE_URL", base.as_str())];
    all.extend(NO_RATE_LIMITS);
    all.extend_from_slice(vars);
    spawn_app_with(&all).await
}

fn relay_address(app: &TestApp) -> SocketAddr {
    app.base_url.trim_start_matches("http://").parse().unwrap()
}

async fn assert_alive(app: &TestApp) {
    let health = tokio::time::timeout(EVENT_TIMEOUT, app.get("/healthz"))
        .await
        .expect("/healthz did not answer");
    assert_eq!(health.status(), 200);
}

/// A status and body read off a raw connection to the relay.
async fn read_answer(stream: &mut (impl AsyncReadExt + Unpin)) -> (u16, Value) {
    let mut pending = Vec::new();
    let (line, body) =
        tokio::time::timeout(EVENT_TIMEOUT, read_head_and_body(stream, &mut pending))
            .await
            .expect("no answer in time")
            .expect("the connection closed without an answer");
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Waits for the relay to close the connection (end of stream or reset), at most `within`;
/// returns when, measured from `since`. Nothing may arrive before the close.
async fn closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    since: Instant,
    within: Duration,
) -> Duration {
    let mut buffer = [0; 256];
    let read = tokio::time::timeout(within, stream.read(&mut buffer))
        .await
        .unwrap_or_else(|_| panic!("the relay did not close the connection within {within:?}"));
    if let Ok(n) = read {
        assert_eq!(
            n,
            0,
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&buffer[..n])
        );
    }
    since.elapsed()
}

/// Asserts that a timeout of `configured` took that long and not much more.
fn assert_took(what: &str, elapsed: Duration, configured: Duration) {
    assert!(
        elapsed >= configured,
        "{what} after {elapsed:?}, before {configured:?}"
    );
    assert!(
        elapsed <= configured + MARGIN,
        "{what} after {elapsed:?}, configured {configured:?}"
    );
}

/// Writes `bytes` one at a time, `every` apart, until done or the relay stops reading.
async fn trickle(mut writer: impl AsyncWrite + Unpin, bytes: &[u8], every: Duration) {
    for byte in bytes {
        if writer.write_all(&[*byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// One counter or gauge from the relay's /metrics, by its whole series name.
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until a series reads `value`: the relay records some outcomes after the caller's
/// answer (or after the caller left), so there is no answer to wait on.
async fn until_metric(app: &TestApp, series: &str, value: u64) {
    wait_until(format!("{series} reads {value}"), || async {
        metric(app, series).await == value
    })
    .await;
}

const SENT: &str = "lipachat_relay_requests_total{type=\"media\",outcome=\"sent\"}";
const SHED: &str = "lipachat_relay_requests_total{type=\"media\",outcome=\"shed\"}";
const DETACHED: &str = "lipachat_relay_detached_sends_total";
const IN_FLIGHT: &str = "lipachat_relay_in_flight";

// ---------------------------------------------------------------------------------------------
// A gateway that misbehaves
// ---------------------------------------------------------------------------------------------

const RETRYABLE: [u16; 5] = [429, 500, 502, 503, 504];

/// Retry-After values too far away to wait for: the answer comes back as is, at once.
#[tokio::test]
async fn huge_retry_after_on_every_retryable_status_returns_that_answer() {
    for value in [
        "18446744073709551615",
        "9223372036854775807",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let gateway = RawGateway::start(Fault::Sent).await;
        let app = relay_for(
            &gateway,
            &[("RELAY_MAX_ATTEMPTS", "3"), ("RELAY_DEADLINE_MS", "5000")],
        )
        .await;
        for (i, status) in RETRYABLE.into_iter().enumerate() {
            gateway.script([Fault::status(status).with_retry_after(value)]);
            let response = app.post_media(&media_body(&format!("huge-{i}"))).await;
            assert_eq!(response.status().as_u16(), status, "{value}");
            assert_eq!(response.headers()["x-relay-attempts"], "1", "{value}");
            // The gateway's advice travels on, in whole seconds, however large.
            let seconds: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(seconds > 1_000_000_000, "{value}: {seconds}");
            assert_eq!(
                response.text().await.unwrap(),
                error_body(status),
                "{value}"
            );
        }
        assert_eq!(gateway.calls(), RETRYABLE.len(), "{value}");
        assert_eq!(gateway.peak(), 1);
        assert_alive(&app).await;
    }
}

/// Retry-After values that are not a number of seconds or a date: back-off applies.
#[tokio::test]
async fn unreadable_retry_after_on_every_retryable_status_falls_back_to_back_off() {
    for value in ["garbage", "-1", "1e99", "Fri, 31 Dec 99999 23:59:59 GMT"] {
        let gateway = RawGateway::start(Fault::Sent).await;
        let app = relay_for(&gateway, &[("RELAY_MAX_ATTEMPTS", "2")]).await;
        for (i, status) in RETRYABLE.into_iter().enumerate() {
            gateway.script([Fault::status(status).with_retry_after(value), Fault::Sent]);
            let response = app.post_media(&media_body(&format!("odd-{i}"))).await;
            assert_eq!(response.status(), 200, "{value} on {status}");
            assert_eq!(response.headers()["x-relay-attempts"], "2");
        }
        assert_eq!(gateway.calls(), 2 * RETRYABLE.len(), "{value}");
        assert_eq!(gateway.peak(), 1);
        assert_alive(&app).await;
    }
}

/// The same through the built binary: the process must survive, not just a task.
#[tokio::test]
async fn the_process_survives_a_retry_after_of_2_to_the_64() {
    let gateway =
        RawGateway::start(Fault::status(503).with_retry_after("18446744073709551615")).await;
    let mut relay = serve_against(&gateway.base_url(), &random_key(), &NO_RATE_LIMITS).await;
    for i in 0..3 {
        let response = relay.post_media(&media_body(&format!("abort-{i}"))).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "18446744073709551615");
    }
    assert_eq!(gateway.calls(), 3);
    wait_for_status(&format!("{}/healthz", relay.url), 200).await;
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "the relay exited"
    );
}

/// A failed attempt is logged at warn with the caller's request id and the cause; the
/// start-up line names the gateway as a URL, not as Rust's `Debug` of one.
#[tokio::test]
async fn a_failed_attempt_is_logged_with_its_request_id_and_cause() {
    let gateway = RawGateway::start(Fault::CloseAfterRequest).await;
    let base = gateway.base_url();
    let mut relay = serve_against(&base, &random_key(), &[("RELAY_MAX_ATTEMPTS", "1")]).await;
    let response = relay
        .post_json_with(
            "/media",
            &[("x-request-id", "req-fault-1")],
            &media_body("logged-1"),
        )
        .await;
    assert_eq!(response.status(), 502);
    assert_eq!(gateway.calls(), 1);
    terminate_and_wait(&mut relay.child).await;
    let lines = log_lines(&mut relay.child).await;
    let failed = log_line(&lines, "gateway attempt failed");
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert_eq!(failed["request_id"], "req-fault-1", "{failed}");
    let cause = failed["error"].as_str().unwrap();
    assert!(cause.starts_with("gateway unreachable: "), "{failed}");
    assert!(
        !cause.contains(&base),
        "the URL is not part of the cause: {failed}"
    );
    assert_eq!(log_line(&lines, "starting")["gateway"], format!("{base}/"));
}

#[tokio::test]
async fn a_reset_in_the_middle_of_the_answer_is_retried_then_502() {
    let gateway = RawGateway::start(Fault::ResetMidBody).await;
    let app = relay_for(&gateway, &[("RELAY_MAX_ATTEMPTS", "2")]).await;
    let response = app.post_media(&media_body("reset-1")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-relay-attempts"], "2");
    envelope(response).await;
    assert_eq!(gateway.calls(), 2);

    gateway.script([Fault::ResetMidBody, Fault::Sent]);
    let response = app.post_media(&media_body("reset-2")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(gateway.calls(), 4);
    assert_eq!(gateway.peak(), 1);
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_gateway_that_closes_after_reading_the_request_is_retried_then_502() {
    let gateway = RawGateway::start(Fault::CloseAfterRequest).await;
    let app = relay_for(&gateway, &[("RELAY_MAX_ATTEMPTS", "3")]).await;
    let response = app.post_media(&media_body("close-1")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-relay-attempts"], "3");
    envelope(response).await;
    assert_eq!(gateway.calls(), 3);
    assert_eq!(gateway.peak(), 1);
    assert_alive(&app).await;
}

#[tokio::test]
async fn a_hanging_gateway_ends_in_504_and_every_hung_call_is_let_go() {
    let gateway = RawGateway::start(Fault::Hang).await;
    let app = relay_for(
        &gateway,
        &[
            ("RELAY_MAX_ATTEMPTS", "2"),
            ("RELAY_ATTEMPT_TIMEOUT_MS", "200"),
            ("RELAY_DEADLINE_MS", "1000"),
        ],
    )
    .await;
    let started = Instant::now();
    let response = app.post_media(&media_body("hang-1")).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()["x-relay-attempts"], "2");
    envelope(response).await;
    assert!(
        elapsed >= Duration::from_millis(400),
        "answered after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1000) + MARGIN,
        "answered after {elapsed:?}"
    );
    assert_eq!(gateway.calls(), 2);
    assert_eq!(gateway.peak(), 1);
    // Each timed-out attempt dropped its connection: nothing is left hanging at the gateway.
    gateway.until_open(0).await;
    assert_alive(&app).await;
}

#[tokio::test]
async fn an_empty_200_is_a_502_and_not_retried() {
    let gateway = RawGateway::start(Fault::Answer {
        status: 200,
        content_type: "application/json",
        body: String::new(),
        retry_after: None,
    })
    .await;
    let app = relay_for(&gateway, &[]).await;
    let response = app.post_media(&media_body("empty-1")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-relay-attempts"], "1");
    envelope(response).await;
    assert_eq!(gateway.calls(), 1);
    assert_alive(&app).await;
}

#[tokio::test]
async fn an_html_page_is_a_502_retried_only_on_a_retryable_status() {
    let page = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    let html = |status| Fault::Answer {
        status,
        content_type: "text/html",
        body: page.to_owned(),
        retry_after: None,
    };
    let gateway = RawGateway::start(Fault::Sent).await;
    let app = relay_for(&gateway, &[("RELAY_MAX_ATTEMPTS", "2")]).await;

    gateway.script([html(200)]);
    let response = app.post_media(&media_body("html-1")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-relay-attempts"], "1");
    assert!(!envelope(response).await.to_string().contains("<html>"));

    gateway.script([html(502), html(502)]);
    let response = app.post_media(&media_body("html-2")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-relay-attempts"], "2");
    envelope(response).await;
    assert_eq!(gateway.calls(), 3);
    assert_alive(&app).await;
}

/// The second finding: 10 waves of 20 callers that give up while their send is under
/// way, against a gateway that answers only when the test lets it. The 8 slots move into the
/// sends whose callers left, so the gateway never sees more than 8 at once, the in-flight gauge
/// shows them, and each is counted when it ends.
///
/// The callers gave up after a 100 ms client timeout; here they give up at a known
/// point instead (once the gateway holds their sends and the 12 others have their 503), which
/// is the same event for the relay (the connection closes mid-send) without racing the
/// scheduler: with a 100 ms timer, a busy machine let whole waves time out before any answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_who_give_up_cannot_push_the_gateway_past_the_in_flight_limit() {
    let gateway = RawGateway::start(Fault::Held).await;
    let app = relay_for(&gateway, &[("RELAY_MAX_IN_FLIGHT", "8")]).await;
    for wave in 0..10_u64 {
        let (answered, mut answers) = mpsc::unbounded_channel();
        let callers: Vec<_> = (0..20)
            .map(|i| {
                let request = app
                    .client
                    .post(format!("{}/media", app.base_url))
                    .header("content-type", "application/json")
                    .body(media_body(&format!("wave-{wave}-{i}")).to_string());
                let answered = answered.clone();
                tokio::spawn(async move {
                    let status = request.send().await.unwrap().status().as_u16();
                    answered.send(status).unwrap();
                })
            })
            .collect();
        for _ in 0..8 {
            gateway.next_call().await;
        }
        gateway.until_open(8).await;
        let mut statuses = Vec::new();
        for _ in 0..12 {
            let status = tokio::time::timeout(EVENT_TIMEOUT, answers.recv()).await;
            statuses.push(status.expect("a caller got no answer").unwrap());
        }
        assert_eq!(statuses, vec![503; 12], "wave {wave}");
        // The 8 others are still waiting for the gateway: they give up now.
        for caller in callers {
            caller.abort();
        }
        until_metric(&app, DETACHED, 8 * (wave + 1)).await;
        assert!(answers.try_recv().is_err(), "wave {wave}: a 21st answer");
        assert_eq!(metric(&app, IN_FLIGHT).await, 8, "wave {wave}");
        assert_eq!(gateway.peak(), 8, "wave {wave}");
        // Counted when they end, not when their callers left.
        assert_eq!(metric(&app, SENT).await, 8 * wave);

        gateway.release(8);
        until_metric(&app, SENT, 8 * (wave + 1)).await;
        until_metric(&app, IN_FLIGHT, 0).await;
        gateway.until_open(0).await;
    }
    assert_eq!(gateway.calls(), 80);
    assert_eq!(gateway.peak(), 8);
    assert_eq!(metric(&app, SHED).await, 120);
    assert_eq!(metric(&app, DETACHED).await, 80);
    assert_alive(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile clients
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_or_silent_head_is_disconnected_after_the_header_timeout() {
    let header = Duration::from_millis(400);
    let app = spawn_app_with(&[
        ("RELAY_HEADER_TIMEOUT_MS", "400"),
        ("RELAY_IDLE_TIMEOUT_SECS", "30"),
    ])
    .await;
    let address = relay_address(&app);
    let started = Instant::now();
    let mut silent = TcpStream::connect(address).await.unwrap();
    let (mut reader, writer) = TcpStream::connect(address).await.unwrap().into_split();
    let head = b"POST /media HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n";
    let trickling =
        tokio::spawn(async move { trickle(writer, head, Duration::from_millis(50)).await });
    let within = header + MARGIN;
    let (silent_after, slow_after) = tokio::join!(
        closed(&mut silent, started, within),
        closed(&mut reader, started, within)
    );
    assert_took("silent connection closed", silent_after, header);
    assert_took("trickled head cut off", slow_after, header);
    trickling.abort();
    assert_eq!(app.gateway.calls(), 0);
    assert_alive(&app).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    // A header timeout shorter than the idle one must not cut the wait between requests.
    let app = spawn_app_with(&[
        ("RELAY_HEADER_TIMEOUT_MS", "300"),
        ("RELAY_IDLE_TIMEOUT_SECS", "1"),
    ])
    .await;
    let mut stream = TcpStream::connect(relay_address(&app)).await.unwrap();
    let mut last_request = Instant::now();
    for _ in 0..2 {
        // Taken before the request, so the relay's idle time cannot have started earlier.
        last_request = Instant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(&mut stream).await.0, 200);
    }
    let after = closed(&mut stream, last_request, idle + MARGIN).await;
    assert_took("idle connection closed", after, idle);
    assert_eq!(app.gateway.calls(), 0);
    assert_alive(&app).await;
}

#[tokio::test]
async fn the_next_head_on_a_kept_connection_gets_the_header_timeout_from_its_first_byte() {
    let header = Duration::from_millis(300);
    let app = spawn_app_with(&[
        ("RELAY_HEADER_TIMEOUT_MS", "300"),
        ("RELAY_IDLE_TIMEOUT_SECS", "3"),
    ])
    .await;
    let mut stream = TcpStream::connect(relay_address(&app)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut stream).await.0, 200);
    // Idle for longer than the header timeout: that is idle time, not head time. (A sleep,
    // because the time that passes is what is under test.)
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (mut reader, writer) = stream.into_split();
    let started = Instant::now();
    let trickling = tokio::spawn(async move {
        trickle(
            writer,
            b"GET /healthz HTTP/1.1\r\nhost: relay\r\n",
            Duration::from_millis(50),
        )
        .await;
    });
    let after = closed(&mut reader, started, header + MARGIN).await;
    assert_took("trickled second head cut off", after, header);
    trickling.abort();
    assert_eq!(app.gateway.calls(), 0);
    assert_alive(&app).await;
}

/// The third finding: 8 uploads trickled at 2 bytes/s under RELAY_MAX_IN_FLIGHT=8
/// made every normal request 503. Now they hold no slot while they trickle, and get 408 once
/// RELAY_BODY_TIMEOUT_MS has passed since their head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_get_408_and_hold_no_slot_meanwhile() {
    let body_timeout = Duration::from_millis(1000);
    let app = spawn_app_with(&[
        ("RELAY_MAX_IN_FLIGHT", "8"),
        ("RELAY_BODY_TIMEOUT_MS", "1000"),
        ("RELAY_SENDER_RATE", "0"),
        ("RELAY_PAIR_INTERVAL_MS", "0"),
    ])
    .await;
    let address = relay_address(&app);
    let mut uploads = Vec::new();
    for i in 0..8 {
        let body = media_body(&format!("trickle-{i}")).to_string();
        let head = format!(
            "POST /media HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        let (mut reader, mut writer) = TcpStream::connect(address).await.unwrap().into_split();
        writer.write_all(head.as_bytes()).await.unwrap();
        let sent_head = Instant::now();
        let trickling = tokio::spawn(async move {
            trickle(writer, body.as_bytes(), Duration::from_millis(500)).await;
        });
        uploads.push(tokio::spawn(async move {
            let answer = read_answer(&mut reader).await;
            let after = sent_head.elapsed();
            trickling.abort();
            (answer, after)
        }));
    }
    // While all 8 trickle: no slot is taken, and normal sends go through.
    assert_eq!(metric(&app, IN_FLIGHT).await, 0);
    let normal = (0..8).map(|i| {
        let app = &app;
        async move {
            app.post_media(&media_body(&format!("normal-{i}")))
                .await
                .status()
                .as_u16()
        }
    });
    assert_eq!(futures::future::join_all(normal).await, vec![200; 8]);
    for upload in uploads {
        let ((status, body), after) = upload.await.unwrap();
        assert_eq!(status, 408, "{body}");
        assert_eq!(body["status"], "error", "{body}");
        assert!(body["data"].is_null(), "{body}");
        assert_took("408", after, body_timeout);
    }
    assert_eq!(app.gateway.calls(), 8);
    assert_eq!(metric(&app, IN_FLIGHT).await, 0);
    assert_alive(&app).await;
}

/// At RELAY_MAX_CONNECTIONS the relay stops accepting, and sheds the connections with no
/// request in progress (idle keep-alive ones and ones that never sent a byte), so /healthz gets
/// in. The connection whose send is in progress is kept and gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_idle_connections_are_shed_so_healthz_answers() {
    let app = spawn_app_with(&[
        ("RELAY_MAX_CONNECTIONS", "16"),
        ("RELAY_HEADER_TIMEOUT_MS", "20000"),
        ("RELAY_IDLE_TIMEOUT_SECS", "60"),
    ])
    .await;
    app.gateway.script([Step::held()]);
    let address = relay_address(&app);
    let busy = spawn_post(
        &reqwest::Client::new(),
        format!("{}/media", app.base_url),
        &media_body("busy-1"),
    );
    app.gateway.next_request().await;
    // Silent ones first: the exchanges on the kept-alive ones after them show that the relay
    // has accepted them all by the time the 17th comes.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    for _ in 0..7 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(&mut stream).await.0, 200);
        idle.push(stream);
    }
    // The 17th connection: it waits in the backlog until idle ones are shed.
    let started = Instant::now();
    let health = tokio::time::timeout(
        EVENT_TIMEOUT,
        reqwest::get(format!("{}/healthz", app.base_url)),
    )
    .await
    .expect("/healthz starved at the connection limit")
    .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        started.elapsed() < MARGIN,
        "/healthz took {:?}",
        started.elapsed()
    );
    for stream in &mut idle {
        closed(stream, started, EVENT_TIMEOUT).await;
    }
    app.gateway.release(1);
    assert_eq!(busy.await.unwrap().status(), 200);
    assert_eq!(app.gateway.calls(), 1);
    assert_alive(&app).await;
}

/// When every connection has a request in progress, a new one waits in the backlog (it is
/// neither refused nor accepted past the limit) and is served once a connection is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_with_every_connection_busy_a_new_one_waits_its_turn() {
    let app = spawn_app_with(&[
        ("RELAY_MAX_CONNECTIONS", "2"),
        ("RELAY_SENDER_RATE", "0"),
        ("RELAY_PAIR_INTERVAL_MS", "0"),
    ])
    .await;
    app.gateway.set_default(Step::held());
    let send = |id: &'static str| {
        // A client each, so each send has its own connection.
        let client = reqwest::Client::new();
        let url = format!("{}/media", app.base_url);
        tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(media_body(id).to_string())
                .send()
                .await
                .unwrap();
            response.status()
        })
    };
    let first = send("busy-a");
    let second = send("busy-b");
    app.gateway.next_request().await;
    app.gateway.next_request().await;
    let health = tokio::spawn(reqwest::get(format!("{}/healthz", app.base_url)));
    // Not answered while both connections are busy (bounded: this asserts a wait).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !health.is_finished(),
        "a third connection was served past the limit of 2"
    );
    app.gateway.release(1);
    let health = tokio::time::timeout(EVENT_TIMEOUT, health)
        .await
        .expect("/healthz was not served once a connection was free")
        .unwrap()
        .unwrap();
    assert_eq!(health.status(), 200);
    app.gateway.release(1);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    assert_eq!(app.gateway.calls(), 2);
    assert_alive(&app).await;
}

#[tokio::test]
async fn draining_closes_idle_connections_at_once() {
    let mut app = spawn_app_with(&[
        ("RELAY_SHUTDOWN_GRACE_SECS", "10"),
        ("RELAY_IDLE_TIMEOUT_SECS", "60"),
        ("RELAY_HEADER_TIMEOUT_MS", "60000"),
    ])
    .await;
    let address = relay_address(&app);
    let mut kept = TcpStream::connect(address).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut kept).await.0, 200);
    let mut silent = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    app.shutdown().await;
    assert!(
        started.elapsed() < MARGIN,
        "serve returned after {:?}",
        started.elapsed()
    );
    closed(&mut kept, started, MARGIN).await;
    closed(&mut silent, started, MARGIN).await;
}

/// A client still sending its body when the drain starts does not keep the process up past
/// RELAY_SHUTDOWN_GRACE_SECS + 1 s.
#[tokio::test]
async fn a_body_still_trickling_is_cut_at_the_end_of_the_grace_time() {
    let mut app = spawn_app_with(&[
        ("RELAY_SHUTDOWN_GRACE_SECS", "1"),
        ("RELAY_BODY_TIMEOUT_MS", "60000"),
    ])
    .await;
    let body = media_body("late-1").to_string();
    // Expect: 100-continue makes "the handler is reading the body" an event the client sees.
    let head = format!(
        "POST /media HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\n\
         expect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (mut reader, mut writer) = TcpStream::connect(relay_address(&app))
        .await
        .unwrap()
        .into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0; 25];
    tokio::time::timeout(EVENT_TIMEOUT, reader.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let trickling = tokio::spawn(async move {
        trickle(writer, body.as_bytes(), Duration::from_millis(200)).await;
    });
    let started = Instant::now();
    app.shutdown().await;
    assert_took("serve returned", started.elapsed(), Duration::from_secs(2));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(MARGIN, reader.read_to_end(&mut rest))
        .await
        .expect("the connection outlived the grace time");
    trickling.abort();
}

#[tokio::test]
async fn a_wrong_method_on_a_send_path_is_405_and_counted_nowhere() {
    let app = spawn_app_with(&[]).await;
    let response = app.get("/media").await;
    assert_eq!(response.status(), 405);
    assert_eq!(
        metric(
            &app,
            "lipachat_relay_requests_total{type=\"media\",outcome=\"invalid\"}"
        )
        .await,
        0
    );
    assert_alive(&app).await;
}
