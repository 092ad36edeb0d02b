//! The gateway client (SPEC "Retries, timeouts, overload"): the only code that touches the
//! network or the secret.
//!
//! One shared reqwest client (keep-alive pool) sits under a tower stack, outermost first:
//! retry (policy + budget, in [`retry`]) → [`GatewayService`], one attempt bounded by
//! `RELAY_ATTEMPT_TIMEOUT_MS` or `RELAY_DEADLINE_MS`, whichever ends first. The
//! request is an `Arc` around a `Bytes` body, so cloning it for a retry is a reference count.
//! A gateway answer is never an error here, whatever its status: the handler passes it on.
//! Sends POST their body; the template listing (`GET /templates`) GETs its number's page
//! through the same stack, so it has the same retries, timeouts and secret handling.

pub(crate) mod retry;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::ServiceExt;
use tower::{Service, ServiceBuilder};

use crate::config::{Config, join_path};
use crate::headers::{HEADER_API_KEY, HEADER_REQUEST_ID, HEADER_TRACEPARENT, HEADER_TRACESTATE};
use crate::metrics::{Metrics, UpstreamStatus};
pub(crate) use crate::outcome::{GatewayReply, MAX_ANSWER_BYTES, UpstreamError};
use crate::phone::PhoneNumber;
use crate::sends::{SEND_TYPES, SendKind};
use retry::RetryPolicy;

/// The gateway's template listing, `GET {base}/api/v1/template/{number}` ("Listing Message
/// Templates").
pub(crate) const GATEWAY_TEMPLATES_PATH: &str = "/api/v1/template";

/// Connection set-up gets its own, shorter bound than a whole attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handler forwards: the normalised body and the headers that travel with it.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamRequest(Arc<RequestParts>);

/// Where a request goes.
#[derive(Debug)]
enum Target {
    /// POST the body to the send type's gateway path.
    Send(SendKind),
    /// GET the template listing of this business number.
    Templates(PhoneNumber),
}

#[derive(Debug)]
struct RequestParts {
    target: Target,
    body: Bytes,
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
    deadline: Instant,
    attempts: AtomicU32,
}

impl UpstreamRequest {
    /// Picks the forwarded headers from the caller's; everything else (a client `apiKey`
    /// included) stays behind.
    pub(crate) fn new(kind: SendKind, body: Bytes, caller: &HeaderMap, deadline: Instant) -> Self {
        Self::build(Target::Send(kind), body, caller, deadline)
    }

    /// The template listing of `number` (a GET, no body), with the caller's forwarded headers.
    pub(crate) fn templates(number: PhoneNumber, caller: &HeaderMap, deadline: Instant) -> Self {
        Self::build(Target::Templates(number), Bytes::new(), caller, deadline)
    }

    fn build(target: Target, body: Bytes, caller: &HeaderMap, deadline: Instant) -> Self {
        let pick = |name: &str| caller.get(name).cloned();
        Self(Arc::new(RequestParts {
            target,
            body,
            request_id: pick(HEADER_REQUEST_ID),
            traceparent: pick(HEADER_TRACEPARENT),
            tracestate: pick(HEADER_TRACESTATE),
            deadline,
            attempts: AtomicU32::new(0),
        }))
    }

    /// Attempts made so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }

    /// When the whole request must be over.
    pub(crate) fn deadline(&self) -> Instant {
        self.0.deadline
    }
}

/// One attempt: POST the body with the secret, read the whole answer, within the attempt
/// timeout or the request's deadline, whichever ends first. One timer per attempt: the
/// deadline needs no timer of its own, because an attempt never outlasts it and the retry
/// policy never sleeps past it. Cloned per request, so it is one `Arc`.
#[derive(Clone)]
pub(crate) struct GatewayService(Arc<ServiceParts>);

struct ServiceParts {
    client: reqwest::Client,
    /// The gateway URL of each send type, by [`SendKind::index`], parsed once.
    urls: Box<[reqwest::Url]>,
    /// The template listing's URL, without the number.
    templates_url: reqwest::Url,
    api_key: HeaderValue,
    attempt_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Service<UpstreamRequest> for GatewayService {
    type Response = GatewayReply;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayReply, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The reqwest pool queues internally; readiness is always immediate.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: UpstreamRequest) -> Self::Future {
        request.0.attempts.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(&self.0);
        Box::pin(async move {
            let started = Instant::now();
            let mut record = AttemptRecord {
                metrics: &this.metrics,
                started,
                status: None,
            };
            let attempt_end = started.checked_add(this.attempt_timeout);
            let (end, expired) = match attempt_end {
                Some(end) if end < request.deadline() => (end, UpstreamError::AttemptTimeout),
                _ => (request.deadline(), UpstreamError::DeadlineExceeded),
            };
            let end = tokio::time::Instant::from_std(end);
            let result = match tokio::time::timeout_at(end, this.send(&request)).await {
                Ok(result) => result,
                Err(_) => Err(expired),
            };
            record.status = Some(match &result {
                Ok(reply) => UpstreamStatus::Code(reply.status.as_u16()),
                Err(UpstreamError::AttemptTimeout | UpstreamError::DeadlineExceeded) => {
                    UpstreamStatus::Timeout
                }
                Err(error) => {
                    // The cause chain goes to the log, never into the caller's answer.
                    let request_id = request.0.request_id.as_ref().and_then(|v| v.to_str().ok());
                    tracing::warn!(request_id, %error, "gateway attempt failed");
                    UpstreamStatus::Unreachable
                }
            });
            result
        })
    }
}

/// Records one attempt when it ends. An attempt dropped before it ended (the runtime shut
/// down) is counted as a timeout.
struct AttemptRecord<'a> {
    metrics: &'a Metrics,
    started: Instant,
    status: Option<UpstreamStatus>,
}

impl Drop for AttemptRecord<'_> {
    fn drop(&mut self) {
        let status = self.status.unwrap_or(UpstreamStatus::Timeout);
        self.metrics.record_attempt(status, self.started.elapsed());
    }
}

impl ServiceParts {
    async fn send(&self, request: &UpstreamRequest) -> Result<GatewayReply, UpstreamError> {
        let parts = &request.0;
        let builder = match &parts.target {
            Target::Send(kind) => {
                let url = self.urls.get(kind.index()).ok_or_else(|| {
                    UpstreamError::Unreachable("no gateway URL for this send type".into())
                })?;
                self.client
                    .post(url.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(parts.body.clone())
            }
            Target::Templates(number) => {
                // A number is digits only, so appending it cannot change the URL's shape.
                let url = join_path(&self.templates_url, number.digits()).map_err(|_| {
                    UpstreamError::Unreachable("no gateway URL for this number".into())
                })?;
                self.client.get(url)
            }
        };
        let mut builder = builder.header(
            HeaderName::from_static(HEADER_API_KEY),
            self.api_key.clone(),
        );
        for (name, value) in [
            (HEADER_REQUEST_ID, &parts.request_id),
            (HEADER_TRACEPARENT, &parts.traceparent),
            (HEADER_TRACESTATE, &parts.tracestate),
        ] {
            if let Some(value) = value {
                builder = builder.header(HeaderName::from_static(name), value.clone());
            }
        }
        let response = builder
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(describe(&e)))?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        let body = read_answer(response, MAX_ANSWER_BYTES).await?;
        let is_json =
            !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        Ok(GatewayReply {
            status,
            content_type,
            body,
            is_json,
            retry_after,
        })
    }
}

/// The whole answer body, or [`UpstreamError::AnswerTooLarge`] past `limit` bytes (said by
/// its `Content-Length` or found while reading).
async fn read_answer(response: reqwest::Response, limit: usize) -> Result<Bytes, UpstreamError> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(UpstreamError::AnswerTooLarge);
    }
    let body = http::Response::from(response).into_body();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(UpstreamError::AnswerTooLarge),
        Err(error) => Err(UpstreamError::Unreachable(format!(
            "error reading the answer: {error}"
        ))),
    }
}

/// The error's kind and its chain of causes, without reqwest's URL prefix.
fn describe(error: &reqwest::Error) -> String {
    let mut text = String::from(if error.is_connect() {
        "connect error"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "error reading the answer"
    } else {
        "request error"
    });
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The whole stack: retry (policy + budget) over one attempt.
type Stack = tower::retry::Retry<RetryPolicy, GatewayService>;

/// The client handlers use: `forward` runs the whole stack under the deadline.
#[derive(Clone)]
pub(crate) struct GatewayClient {
    stack: Stack,
    budget: Arc<TpsBudget>,
    deadline: Duration,
    /// Time kept free for one attempt at the end of a rate-limit wait.
    attempt_reserve: Duration,
}

/// The time a send keeps for one gateway attempt when it waits for its rate slot: one
/// `RELAY_ATTEMPT_TIMEOUT_MS`, but at most half of `RELAY_DEADLINE_MS`, so that a deadline
/// shorter than an attempt still leaves room to wait.
pub(crate) fn attempt_reserve(attempt_timeout: Duration, deadline: Duration) -> Duration {
    attempt_timeout.min(deadline / 2)
}

/// A failure to build the HTTP client (TLS set-up); reported at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the gateway client: {0}")]
pub struct ClientBuildError(String);

impl GatewayClient {
    /// Builds the shared client. Without a key (only possible with `--mock-upstream` before
    /// its key is filled in) the header is empty and the gateway answers 401.
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ClientBuildError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(config.attempt_timeout))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("lipachat-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        let mut api_key = config
            .api_key
            .as_ref()
            .map_or(Ok(HeaderValue::from_static("")), |key| {
                HeaderValue::from_str(key.expose())
            })
            .map_err(|_| ClientBuildError("LIPACHAT_API_KEY is not a valid header value".into()))?;
        api_key.set_sensitive(true);
        let urls = SEND_TYPES
            .iter()
            .map(|send| join_path(&config.base_url, send.gateway_path))
            .collect::<Result<Box<[_]>, _>>()
            .map_err(|e| {
                ClientBuildError(format!("LIPACHAT_BASE_URL: cannot append a path ({e})"))
            })?;
        let templates_url = join_path(&config.base_url, GATEWAY_TEMPLATES_PATH).map_err(|e| {
            ClientBuildError(format!("LIPACHAT_BASE_URL: cannot append a path ({e})"))
        })?;
        let service = GatewayService(Arc::new(ServiceParts {
            client,
            urls,
            templates_url,
            api_key,
            attempt_timeout: config.attempt_timeout,
            metrics: Arc::clone(&metrics),
        }));
        let budget = Arc::new(retry::budget());
        let stack = ServiceBuilder::new()
            // Retry sits above the attempt, whose own timer bounds it, so each attempt gets a
            // fresh timeout and a timed-out attempt is itself retried.
            .retry(RetryPolicy::new(
                config.max_attempts,
                Arc::clone(&budget),
                metrics,
            ))
            .service(service);
        Ok(Self {
            stack,
            budget,
            deadline: config.deadline,
            attempt_reserve: attempt_reserve(config.attempt_timeout, config.deadline),
        })
    }

    /// The deadline of a request that arrived at `start` (the configured deadline is
    /// bounded, so this cannot overflow; it saturates rather than panic all the same).
    pub(crate) fn deadline_from(&self, start: Instant) -> Instant {
        start.checked_add(self.deadline).unwrap_or(start)
    }

    /// The latest a send with this `deadline` may leave its rate-limit wait and still have
    /// time for one attempt: a wait that ends later is refused at once (429), rather than
    /// leaving a send that runs out of its deadline (504).
    pub(crate) fn last_departure(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.attempt_reserve)
            .unwrap_or_else(Instant::now)
    }

    /// Sends one request through retry → attempt (timeout or deadline) → gateway.
    pub(crate) async fn forward(
        &self,
        request: UpstreamRequest,
    ) -> Result<GatewayReply, UpstreamError> {
        // Every first attempt earns retry credit; retries spend it (see retry::budget).
        self.budget.deposit();
        if Instant::now() >= request.deadline() {
            return Err(UpstreamError::DeadlineExceeded);
        }
        self.stack.clone().oneshot(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer whose length is known up front, or one streamed in chunks of unknown total.
    fn answer(body: Vec<u8>, declare_length: bool) -> reqwest::Response {
        let body = if declare_length {
            reqwest::Body::from(body)
        } else {
            let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = body
                .chunks(64 * 1024)
                .map(|chunk| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(chunk))))
                .collect();
            reqwest::Body::wrap(http_body_util::StreamBody::new(futures::stream::iter(
                chunks,
            )))
        };
        let response = reqwest::Response::from(http::Response::new(body));
        assert_eq!(response.content_length().is_some(), declare_length);
        response
    }

    #[tokio::test]
    async fn an_answer_of_one_mebibyte_is_read_whole() {
        let body = read_answer(answer(vec![b' '; MAX_ANSWER_BYTES], true), MAX_ANSWER_BYTES)
            .await
            .unwrap();
        assert_eq!(body.len(), MAX_ANSWER_BYTES);
    }

    #[tokio::test]
    async fn an_answer_over_one_mebibyte_is_refused_by_its_length_or_while_read() {
        for declare_length in [true, false] {
            let body = vec![b' '; MAX_ANSWER_BYTES + 1];
            let result = read_answer(answer(body, declare_length), MAX_ANSWER_BYTES).await;
            assert_eq!(result.unwrap_err(), UpstreamError::AnswerTooLarge);
        }
    }

    #[test]
    fn a_rate_wait_keeps_one_attempt_or_half_the_deadline_free() {
        let seconds = Duration::from_secs;
        assert_eq!(attempt_reserve(seconds(10), seconds(30)), seconds(10));
        assert_eq!(attempt_reserve(seconds(10), seconds(8)), seconds(4));
    }
}
