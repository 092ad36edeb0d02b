//! When to try the gateway again (SPEC "Retries, timeouts, overload").
//!
//! Retried: connection errors, attempt timeouts, 429, 500, 502, 503, 504. Never another
//! status. Back-off is exponential with full jitter, unless the gateway sent `Retry-After`,
//! which wins; a wait that would end past the deadline stops retrying and the answer in hand is
//! returned as is. A shared [`TpsBudget`] caps retries at 20 % of recent first attempts (plus
//! a small floor), so a failing gateway sees about 1.2× its normal load rather than 3×.
//! Every attempt resends the same `messageId`, the gateway's own deduplication key.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, StatusCode};
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::UpstreamRequest;
use crate::metrics::Metrics;
use crate::outcome::{GatewayReply, UpstreamError};

/// First back-off ceiling; doubles per attempt.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Back-off ceiling for late attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Retries may add this share of the first attempts seen in the budget window.
pub(crate) const BUDGET_RETRY_RATIO: f32 = 0.2;
/// Retries always allowed per second, so a quiet sidecar can still retry a lone failure.
pub(crate) const BUDGET_MIN_PER_SEC: u32 = 1;
/// How long a first attempt's credit lasts.
pub(crate) const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The budget shared by every request of one relay.
pub(crate) fn budget() -> TpsBudget {
    TpsBudget::new(BUDGET_WINDOW, BUDGET_MIN_PER_SEC, BUDGET_RETRY_RATIO)
}

/// Statuses worth another attempt: throttling and the gateway's own transient failures.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// Full-jitter exponential back-off before attempt `attempt + 1` (`attempt` ≥ 1 made so far).
pub(crate) fn backoff(attempt: u32, unit: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    let ceiling = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_MAX);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// `Retry-After` as seconds or an HTTP date; a date in the past means "now".
pub(crate) fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The per-request retry decision; cloned by tower for every request.
#[derive(Clone)]
pub(crate) struct RetryPolicy {
    max_attempts: u32,
    budget: Arc<TpsBudget>,
    metrics: Arc<Metrics>,
}

impl RetryPolicy {
    pub(crate) fn new(max_attempts: u32, budget: Arc<TpsBudget>, metrics: Arc<Metrics>) -> Self {
        Self {
            max_attempts,
            budget,
            metrics,
        }
    }

    /// How long to wait before the next attempt, or `None` to stop with the result in hand.
    fn next_delay(
        &self,
        request: &UpstreamRequest,
        result: &Result<GatewayReply, UpstreamError>,
    ) -> Option<Duration> {
        let retry_after = match result {
            Ok(reply) if is_retryable_status(reply.status) => reply.retry_after,
            Ok(_) => return None,
            Err(UpstreamError::Unreachable(_) | UpstreamError::AttemptTimeout) => None,
            // The gateway answered: sending again would not shorten it.
            Err(UpstreamError::DeadlineExceeded | UpstreamError::AnswerTooLarge) => return None,
        };
        let attempts = request.attempts();
        if attempts >= self.max_attempts {
            return None;
        }
        let delay = retry_after.unwrap_or_else(|| backoff(attempts, fastrand::f64()));
        // A Retry-After may be anything up to 2^64-1 seconds: an instant past the end of the
        // clock does not fit the deadline either, so it stops retrying rather than overflow.
        let resume = Instant::now().checked_add(delay)?;
        if resume >= request.deadline() {
            return None;
        }
        if !self.budget.withdraw() {
            self.metrics.record_budget_exhausted();
            return None;
        }
        Some(delay)
    }
}

impl Policy<UpstreamRequest, GatewayReply, UpstreamError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut UpstreamRequest,
        result: &mut Result<GatewayReply, UpstreamError>,
    ) -> Option<Self::Future> {
        let delay = self.next_delay(request, result)?;
        tracing::debug!(
            attempt = request.attempts(),
            delay_ms = crate::clock::millis(delay),
            "retrying the gateway"
        );
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, request: &UpstreamRequest) -> Option<UpstreamRequest> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderMap;
    use tokio::task::JoinHandle;
    use tower::{Service, ServiceExt};
    use tower_test::mock;

    fn reply(status: u16, retry_after: Option<Duration>) -> GatewayReply {
        GatewayReply {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: None,
            body: Bytes::from_static(b"{}"),
            is_json: true,
            retry_after,
        }
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 422, 501] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_below_it() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let v = HeaderValue::from_static("7");
        assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(5));
        let v = HeaderValue::from_str(&date).unwrap();
        assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(5)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        let v = HeaderValue::from_str(&past).unwrap();
        assert_eq!(parse_retry_after(&v, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
    }

    /// A request whose first attempt has been made, as the policy sees it when it decides.
    fn attempted_once() -> UpstreamRequest {
        let req = request(Duration::from_secs(30));
        req.0
            .attempts
            .store(1, std::sync::atomic::Ordering::Relaxed);
        req
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy::new(max_attempts, Arc::new(budget()), Arc::new(Metrics::new()))
    }

    fn request(deadline: Duration) -> UpstreamRequest {
        UpstreamRequest::new(
            crate::sends::SendKind::Media,
            Bytes::new(),
            &HeaderMap::new(),
            Instant::now() + deadline,
        )
    }

    /// A mock inner service that counts attempts like `GatewayService` does.
    fn counting(
        inner: mock::Mock<UpstreamRequest, GatewayReply>,
    ) -> impl Service<UpstreamRequest, Response = GatewayReply, Error = UpstreamError, Future: Send>
    + Clone {
        tower::service_fn(move |req: UpstreamRequest| {
            req.0
                .attempts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut inner = inner.clone();
            async move {
                inner
                    .ready()
                    .await
                    .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
                inner
                    .call(req)
                    .await
                    .map_err(|e| UpstreamError::Unreachable(e.to_string()))
            }
        })
    }

    type Gateway = mock::Handle<UpstreamRequest, GatewayReply>;

    /// `req` sent through the retry layer (at most `max_attempts`) to a scripted gateway: the
    /// task that ends with the relay's answer, and the handle that plays the gateway.
    fn send(
        max_attempts: u32,
        req: &UpstreamRequest,
    ) -> (JoinHandle<Result<GatewayReply, UpstreamError>>, Gateway) {
        let (inner, gateway) = mock::pair::<UpstreamRequest, GatewayReply>();
        let service = tower::retry::Retry::new(policy(max_attempts), counting(inner));
        (tokio::spawn(service.oneshot(req.clone())), gateway)
    }

    /// Sends a request through at most `max_attempts`, answers its attempts with `statuses`
    /// in turn, and asserts the status the relay ends with and the attempts it counted.
    async fn assert_retries(max_attempts: u32, statuses: &[u16], last: StatusCode, attempts: u32) {
        let req = request(Duration::from_secs(30));
        let (pending, mut gateway) = send(max_attempts, &req);
        for status in statuses {
            let (_, attempt) = gateway.next_request().await.unwrap();
            attempt.send_response(reply(*status, None));
        }
        assert_eq!(pending.await.unwrap().unwrap().status, last);
        assert_eq!(req.attempts(), attempts);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_success() {
        assert_retries(3, &[503, 502, 200], StatusCode::OK, 3).await;
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_retried() {
        assert_retries(3, &[400], StatusCode::BAD_REQUEST, 1).await;
    }

    #[tokio::test(start_paused = true)]
    async fn last_answer_is_returned_when_attempts_run_out() {
        assert_retries(2, &[500, 503], StatusCode::SERVICE_UNAVAILABLE, 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let (pending, mut gateway) = send(3, &request(Duration::from_secs(30)));
        let (_, first) = gateway.next_request().await.unwrap();
        let sent_at = tokio::time::Instant::now();
        first.send_response(reply(429, Some(Duration::from_secs(4))));
        let (_, second) = gateway.next_request().await.unwrap();
        assert!(sent_at.elapsed() >= Duration::from_secs(4));
        second.send_response(reply(200, None));
        assert_eq!(pending.await.unwrap().unwrap().status, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_the_deadline_returns_the_answer_as_is() {
        let req = request(Duration::from_secs(5));
        let (pending, mut gateway) = send(3, &req);
        let (_, first) = gateway.next_request().await.unwrap();
        first.send_response(reply(503, Some(Duration::from_secs(60))));
        let answer = pending.await.unwrap().unwrap();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(req.attempts(), 1);
    }

    #[test]
    fn retry_after_of_any_size_never_overflows() {
        let policy = policy(3);
        let req = attempted_once();
        let now = SystemTime::now();
        for value in [
            "18446744073709551615",
            "9223372036854775807",
            "9223372036854775808",
            "4294967296",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "-1",
            "1e99",
            "garbage",
            "",
        ] {
            let retry_after = parse_retry_after(&HeaderValue::from_str(value).unwrap(), now);
            let reply = reply(503, retry_after);
            // Too far to fit the deadline (or unreadable, then back-off applies): never a panic.
            let delay = policy.next_delay(&req, &Ok(reply));
            assert!(delay.is_none_or(|d| d < Duration::from_secs(30)), "{value}");
        }
    }

    #[tokio::test]
    async fn an_empty_budget_stops_retries() {
        let policy = policy(10);
        // Drain the floor: min_per_sec × window retries are allowed with no deposits.
        while policy.budget.withdraw() {}
        let req = attempted_once();
        assert_eq!(policy.next_delay(&req, &Ok(reply(503, None))), None);
        assert_eq!(policy.metrics.budget_exhausted(), 1);
    }
}
