//! `lipachat-relay events-receive`: a small receiver for the relay's events (SPEC "Events
//! out"), for trying events out and for the tests that prove our signatures interoperate.
//!
//! Every POST, on any path, is checked as Standard Webhooks says ([`super::sign::verify`]).
//! A valid one is answered 204 and printed to stdout as one JSON line
//! `{"id", "timestamp", "event"}` (the `webhook-id`, the `webhook-timestamp`, the body); an
//! invalid one is answered 401 with `{"error": "<why>"}` and reported on stderr. With
//! `--fail-first N`, the first N valid deliveries of each `webhook-id` are answered 503, so
//! the relay's retries can be watched.
//!
//! The decision a reader must know: stdout carries verified events only, one line each,
//! flushed at once, so it can be piped into `jq` or a script; everything else goes to stderr,
//! and neither ever shows the secret.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use moka::sync::Cache;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;

use super::sign::verify;
use crate::clock::now_secs;
use crate::config::SigningSecret;
use crate::headers::{HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP};

/// `webhook-id`s whose deliveries `--fail-first` counts at most: memory stays bounded
/// however long the receiver runs.
const IDS_REMEMBERED: u64 = 100_000;

/// Runs the receiver on `listener` until `shutdown` completes: verifies each POST with
/// `secret`, prints the valid ones to stdout as JSON lines, and answers 503 to the first
/// `fail_first` valid deliveries of each `webhook-id`.
pub(crate) async fn receive_events(
    listener: TcpListener,
    secret: SigningSecret,
    fail_first: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let router = router(secret, fail_first, Box::new(std::io::stdout()));
    eprintln!("events-receive: listening on {address}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// What every request shares.
struct Receiver {
    secret: SigningSecret,
    fail_first: u32,
    /// Valid deliveries seen per `webhook-id` (only with `--fail-first`).
    deliveries: Cache<String, u32>,
    /// Where verified events go: stdout, or a buffer in the tests. Locked only to write one
    /// line, never across an `.await`.
    out: Mutex<Box<dyn Write + Send>>,
}

/// One line of output.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    timestamp: u64,
    event: &'a RawValue,
}

fn router(secret: SigningSecret, fail_first: u32, out: Box<dyn Write + Send>) -> Router {
    let receiver = Receiver {
        secret,
        fail_first,
        deliveries: Cache::new(IDS_REMEMBERED),
        out: Mutex::new(out),
    };
    Router::new()
        .fallback(receive)
        .with_state(Arc::new(receiver))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return answer(StatusCode::METHOD_NOT_ALLOWED, "only POST is received");
    }
    // An absent header, or one that is not text, is passed on as empty: `verify` names it.
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    let id = header(HEADER_WEBHOOK_ID);
    let timestamp = header(HEADER_WEBHOOK_TIMESTAMP);
    if let Err(error) = verify(
        &receiver.secret,
        id,
        timestamp,
        header(HEADER_WEBHOOK_SIGNATURE),
        &body,
        now_secs(),
    ) {
        eprintln!("events-receive: refused {id:?}: {error}");
        return answer(StatusCode::UNAUTHORIZED, &error.to_string());
    }
    let Ok(event) = one_line(&body) else {
        eprintln!("events-receive: refused {id:?}: the body is not JSON");
        return answer(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    if let Some(delivery) = receiver.failing(id) {
        eprintln!(
            "events-receive: answered 503 to {id:?}, delivery {delivery} of the first {} \
             (--fail-first)",
            receiver.fail_first
        );
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "failing on purpose (--fail-first)",
        );
    }
    let line = Line {
        // `verify` took it as whole seconds, so it reads back.
        timestamp: timestamp.trim().parse().unwrap_or_default(),
        id,
        event: &event,
    };
    match receiver.print(&line) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            // Not printed is not received: the sender will try again.
            eprintln!("events-receive: cannot write {id:?} to stdout: {error}");
            answer(StatusCode::INTERNAL_SERVER_ERROR, "cannot write the event")
        }
    }
}

impl Receiver {
    /// With `--fail-first N`: counts this delivery of `id`, and says which it is while it is
    /// one of the first N.
    fn failing(&self, id: &str) -> Option<u32> {
        if self.fail_first == 0 {
            return None;
        }
        let delivery = self
            .deliveries
            .entry_by_ref(id)
            .and_upsert_with(|seen| seen.map_or(1, |seen| seen.into_value().saturating_add(1)))
            .into_value();
        (delivery <= self.fail_first).then_some(delivery)
    }

    fn print(&self, line: &Line<'_>) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(line)?;
        text.push(b'\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("the output lock is poisoned"))?;
        out.write_all(&text)?;
        out.flush()
    }
}

/// The body as one line of JSON: as sent when it is one line already (the relay's are),
/// written compactly when it spans several.
fn one_line(body: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    let raw: Box<RawValue> = serde_json::from_slice(body)?;
    if raw.get().contains(['\n', '\r']) {
        let value: serde_json::Value = serde_json::from_str(raw.get())?;
        return RawValue::from_string(value.to_string());
    }
    Ok(raw)
}

fn answer(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;
    use crate::events::sign::sign;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    fn secret() -> SigningSecret {
        SigningSecret::parse(SECRET).unwrap()
    }

    fn app(fail_first: u32) -> (Router, Captured) {
        let out = Captured::default();
        (router(secret(), fail_first, Box::new(out.clone())), out)
    }

    fn signed(id: &str, body: &str) -> Request<Body> {
        let timestamp = now_secs();
        let signature = sign(&secret(), id, timestamp, body.as_bytes());
        Request::post("/events")
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (status, json)
    }

    #[tokio::test]
    async fn a_valid_event_is_204_and_printed_as_one_json_line() {
        let (router, out) = app(0);
        let body = r#"{"type":"message.status","data":{"status":"READ"}}"#;
        let request = signed(ID, body);
        let timestamp: u64 = request.headers()["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(send(&router, request).await.0, StatusCode::NO_CONTENT);
        let lines = out.lines();
        assert_eq!(
            lines,
            [json!({"id": ID, "timestamp": timestamp,
                    "event": {"type": "message.status", "data": {"status": "READ"}}})]
        );
    }

    #[tokio::test]
    async fn a_body_over_several_lines_is_printed_on_one() {
        let (router, out) = app(0);
        let body = "{\n  \"type\": \"message.received\",\n  \"data\": {}\n}\n";
        assert_eq!(
            send(&router, signed(ID, body)).await.0,
            StatusCode::NO_CONTENT
        );
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(out.lines()[0]["event"]["type"], "message.received");
    }

    #[tokio::test]
    async fn a_bad_signature_is_401_with_the_reason_and_not_printed() {
        let (router, out) = app(0);
        let mut request = signed(ID, r#"{"a":1}"#);
        *request.body_mut() = Body::from(r#"{"a":2}"#);
        let (status, body) = send(&router, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({"error": "no v1 signature in webhook-signature matches"})
        );
        assert!(out.lines().is_empty());
    }

    #[tokio::test]
    async fn a_missing_header_is_401_naming_it() {
        let (router, _) = app(0);
        let mut request = signed(ID, "{}");
        request.headers_mut().remove("webhook-timestamp");
        let (status, body) = send(&router, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, json!({"error": "missing webhook-timestamp header"}));
    }

    #[tokio::test]
    async fn a_stale_timestamp_is_401() {
        let (router, _) = app(0);
        let old = now_secs() - 3600;
        let request = Request::post("/")
            .header("webhook-id", ID)
            .header("webhook-timestamp", old.to_string())
            .header("webhook-signature", sign(&secret(), ID, old, b"{}"))
            .body(Body::from("{}"))
            .unwrap();
        let (status, body) = send(&router, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].as_str().unwrap().contains("old"), "{body}");
    }

    #[tokio::test]
    async fn a_signed_body_that_is_not_json_is_400() {
        let (router, out) = app(0);
        let (status, _) = send(&router, signed(ID, "not json")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(out.lines().is_empty());
    }

    #[tokio::test]
    async fn only_post_is_received() {
        let (router, _) = app(0);
        let request = Request::get("/").body(Body::empty()).unwrap();
        assert_eq!(
            send(&router, request).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn fail_first_answers_503_to_the_first_deliveries_of_each_id() {
        let (router, out) = app(2);
        let statuses = async |id: &str| {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                statuses.push(send(&router, signed(id, "{}")).await.0.as_u16());
            }
            statuses
        };
        assert_eq!(statuses("msg_a").await, [503, 503, 204]);
        assert_eq!(statuses("msg_b").await, [503, 503, 204]);
        let ids: Vec<Value> = out.lines().iter().map(|line| line["id"].clone()).collect();
        assert_eq!(ids, [json!("msg_a"), json!("msg_b")]);
    }

    #[tokio::test]
    async fn fail_first_counts_only_valid_deliveries() {
        let (router, _) = app(1);
        let mut forged = signed("msg_c", "{}");
        forged
            .headers_mut()
            .insert("webhook-signature", "v1,AAAA".parse().unwrap());
        assert_eq!(send(&router, forged).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            send(&router, signed("msg_c", "{}")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            send(&router, signed("msg_c", "{}")).await.0,
            StatusCode::NO_CONTENT
        );
    }
}
