//! Every metric name and the functions that record them (SPEC "Operations", `/metrics`).
//!
//! prometheus-client rather than the `metrics` facade: its registry is a value, not a global
//! recorder, so two relays in one test binary keep separate counts. Per-outcome counters are
//! resolved once at start-up, so recording a request is an atomic add, not a label lookup.
//! Labels are low-cardinality by construction: a send type, an outcome, a gateway status code,
//! a store operation or a rate-limit scope; never a messageId, phone number or URL. The labels
//! themselves are in `labels`.

mod backlog;
mod labels;
mod lifecycle;
mod queue;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::{Arc, OnceLock};

use crate::outcome::{LimitScope, ListingResult, RequestOutcome};
use crate::sends::SendKind;
use labels::{
    BuildLabels, LimitLabels, OpLabels, RequestLabels, ResultLabels, StatusLabels, StoreLabels,
};
pub(crate) use labels::{CompletionResult, StoreOp, StoreResult, UpstreamStatus};
pub(crate) use lifecycle::{EventResult, LifecycleMetrics, WebhookKind, WebhookResult};
pub(crate) use queue::{QueueMetrics, QueuedResult};

pub(crate) const METRIC_REQUESTS: &str = "lipachat_relay_requests";
pub(crate) const METRIC_UPSTREAM_ATTEMPTS: &str = "lipachat_relay_upstream_attempts";
pub(crate) const METRIC_REQUEST_DURATION: &str = "lipachat_relay_request_duration";
pub(crate) const METRIC_UPSTREAM_DURATION: &str = "lipachat_relay_upstream_duration";
pub(crate) const METRIC_IN_FLIGHT: &str = "lipachat_relay_in_flight";
pub(crate) const METRIC_DETACHED: &str = "lipachat_relay_detached_sends";
pub(crate) const METRIC_DEDUP_ENTRIES: &str = "lipachat_relay_dedup_entries";
pub(crate) const METRIC_BUDGET_EXHAUSTED: &str = "lipachat_relay_retry_budget_exhausted";
pub(crate) const METRIC_STORE_OPERATIONS: &str = "lipachat_relay_store_operations";
pub(crate) const METRIC_STORE_DURATION: &str = "lipachat_relay_store_duration";
pub(crate) const METRIC_STORE_FAIL_OPEN: &str = "lipachat_relay_store_fail_open";
pub(crate) const METRIC_DEDUP_COMPLETIONS: &str = "lipachat_relay_dedup_completions";
pub(crate) const METRIC_RATE_LIMITED: &str = "lipachat_relay_rate_limited";
pub(crate) const METRIC_RATE_WAIT: &str = "lipachat_relay_rate_wait";
pub(crate) const METRIC_BUILD_INFO: &str = "lipachat_relay_build_info";
pub(crate) const METRIC_TEMPLATE_LISTINGS: &str = "lipachat_relay_template_listings";

/// The HTTP statuses whose attempt counters are looked up once.
const STATUS_CODES: std::ops::RangeInclusive<u16> = 100..=599;

/// OpenTelemetry's advised boundaries for HTTP durations, in seconds.
pub(crate) const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Boundaries for shared-store round trips: a local Redis answers in well under a
/// millisecond, `RELAY_REDIS_TIMEOUT_MS` is 250 ms by default.
pub(crate) const STORE_BUCKETS: [f64; 10] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

/// The relay's metrics and their registry. Every labelled series the request path touches is
/// resolved here, at start-up, so recording is an atomic add, not a label lookup.
pub(crate) struct Metrics {
    registry: Registry,
    /// `[send type][outcome]`.
    requests: Vec<[Counter; RequestOutcome::ALL.len()]>,
    upstream_attempts: Family<StatusLabels, Counter>,
    /// The attempts counter of each HTTP status (100–599), looked up in the family once: a
    /// gateway attempt costs an atomic add, not a hashed label lookup.
    attempts_by_code: Box<[OnceLock<Counter>]>,
    /// The same for `timeout` and `unreachable`.
    attempts_failed: [Counter; 2],
    request_duration: Histogram,
    upstream_duration: Histogram,
    in_flight: Gauge,
    detached: Counter,
    dedup_entries: Gauge,
    budget_exhausted: Counter,
    /// `[op][result]`.
    store_operations: [[Counter; StoreResult::ALL.len()]; StoreOp::ALL.len()],
    store_duration: [Histogram; StoreOp::ALL.len()],
    store_fail_open: [Counter; StoreOp::ALL.len()],
    dedup_completions: [Counter; CompletionResult::ALL.len()],
    /// `[scope][delayed, refused]`.
    rate_limited: [[Counter; 2]; LimitScope::ALL.len()],
    rate_wait: Histogram,
    /// By [`ListingResult`], in `ALL` order.
    template_listings: [Counter; ListingResult::ALL.len()],
    /// Webhooks and events (after SENT).
    pub(crate) lifecycle: LifecycleMetrics,
    /// Queued sends.
    pub(crate) queue: QueueMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let by_outcome = Family::<RequestLabels, Counter>::default();
        let requests = SendKind::ALL
            .iter()
            .map(|kind| {
                RequestOutcome::ALL.map(|outcome| {
                    by_outcome
                        .get_or_create(&RequestLabels {
                            r#type: kind.name(),
                            outcome: outcome.as_str(),
                        })
                        .clone()
                })
            })
            .collect();
        registry.register(
            METRIC_REQUESTS,
            "Send requests by send type and outcome",
            by_outcome,
        );
        let upstream_attempts = Family::<StatusLabels, Counter>::default();
        registry.register(
            METRIC_UPSTREAM_ATTEMPTS,
            "Gateway attempts by HTTP status (or timeout, unreachable)",
            upstream_attempts.clone(),
        );
        let attempts_by_code = (STATUS_CODES).map(|_| OnceLock::new()).collect();
        let attempts_failed =
            [UpstreamStatus::Timeout, UpstreamStatus::Unreachable].map(|status| {
                upstream_attempts
                    .get_or_create(&StatusLabels { status })
                    .clone()
            });
        let request_duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            METRIC_REQUEST_DURATION,
            "Time to answer a send request",
            Unit::Seconds,
            request_duration.clone(),
        );
        let upstream_duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            METRIC_UPSTREAM_DURATION,
            "Time of one gateway attempt",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            METRIC_IN_FLIGHT,
            "Send requests holding a RELAY_MAX_IN_FLIGHT slot, sends whose caller left included",
            in_flight.clone(),
        );
        let detached = Counter::default();
        registry.register(
            METRIC_DETACHED,
            "Sends that went on after their caller disconnected",
            detached.clone(),
        );
        let dedup_entries = Gauge::default();
        registry.register(
            METRIC_DEDUP_ENTRIES,
            "Answers remembered in this process's dedup window",
            dedup_entries.clone(),
        );
        let budget_exhausted = Counter::default();
        registry.register(
            METRIC_BUDGET_EXHAUSTED,
            "Retries skipped because the retry budget was empty",
            budget_exhausted.clone(),
        );
        let by_store = Family::<StoreLabels, Counter>::default();
        let store_operations = StoreOp::ALL.map(|op| {
            StoreResult::ALL.map(|result| {
                by_store
                    .get_or_create(&StoreLabels {
                        op: op.as_str(),
                        result: result.as_str(),
                    })
                    .clone()
            })
        });
        registry.register(
            METRIC_STORE_OPERATIONS,
            "Shared-store (Redis) round trips by operation and result",
            by_store,
        );
        let store_duration_family =
            Family::<OpLabels, Histogram>::new_with_constructor(|| Histogram::new(STORE_BUCKETS));
        let store_duration = StoreOp::ALL.map(|op| {
            store_duration_family
                .get_or_create(&OpLabels { op: op.as_str() })
                .clone()
        });
        registry.register_with_unit(
            METRIC_STORE_DURATION,
            "Time of one shared-store round trip",
            Unit::Seconds,
            store_duration_family,
        );
        let fail_open = Family::<OpLabels, Counter>::default();
        let store_fail_open = StoreOp::ALL.map(|op| {
            fail_open
                .get_or_create(&OpLabels { op: op.as_str() })
                .clone()
        });
        registry.register(
            METRIC_STORE_FAIL_OPEN,
            "Sends that went on with this process's memory only because the shared store failed",
            fail_open,
        );
        let by_result = Family::<ResultLabels, Counter>::default();
        let dedup_completions = CompletionResult::ALL.map(|result| {
            by_result
                .get_or_create(&ResultLabels {
                    result: result.as_str(),
                })
                .clone()
        });
        registry.register(
            METRIC_DEDUP_COMPLETIONS,
            "Completions of shared-window claims (remember a 2xx or release), by result",
            by_result,
        );
        let by_scope = Family::<LimitLabels, Counter>::default();
        let rate_limited = LimitScope::ALL.map(|scope| {
            ["delayed", "refused"].map(|action| {
                by_scope
                    .get_or_create(&LimitLabels {
                        scope: scope.as_str(),
                        action,
                    })
                    .clone()
            })
        });
        registry.register(
            METRIC_RATE_LIMITED,
            "Sends delayed or refused by a rate limit, by scope (sender or pair)",
            by_scope,
        );
        let rate_wait = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            METRIC_RATE_WAIT,
            "Time a delayed send waited for its rate slot",
            Unit::Seconds,
            rate_wait.clone(),
        );
        let by_result = Family::<ResultLabels, Counter>::default();
        let template_listings = ListingResult::ALL.map(|result| {
            by_result
                .get_or_create(&ResultLabels {
                    result: result.as_str(),
                })
                .clone()
        });
        registry.register(
            METRIC_TEMPLATE_LISTINGS,
            "GET /templates requests by result (cached, fetched, failed)",
            by_result,
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(METRIC_BUILD_INFO, "Build information", build_info);
        let lifecycle = LifecycleMetrics::register(&mut registry);
        let queue = QueueMetrics::register(&mut registry);
        Self {
            lifecycle,
            queue,
            registry,
            requests,
            upstream_attempts,
            attempts_by_code,
            attempts_failed,
            request_duration,
            upstream_duration,
            in_flight,
            detached,
            dedup_entries,
            budget_exhausted,
            store_operations,
            store_duration,
            store_fail_open,
            dedup_completions,
            rate_limited,
            rate_wait,
            template_listings,
        }
    }

    /// One answered `GET /templates`.
    pub(crate) fn record_template_listing(&self, result: ListingResult) {
        if let Some(index) = ListingResult::ALL.iter().position(|r| *r == result)
            && let Some(counter) = self.template_listings.get(index)
        {
            counter.inc();
        }
    }

    /// One finished send request.
    pub(crate) fn record_request(
        &self,
        kind: SendKind,
        outcome: RequestOutcome,
        latency: Duration,
    ) {
        if let Some(counter) = self
            .requests
            .get(kind.index())
            .and_then(|by_outcome| by_outcome.get(outcome.index()))
        {
            counter.inc();
        }
        self.request_duration.observe(latency.as_secs_f64());
    }

    /// A send that went on after its caller disconnected.
    pub(crate) fn record_detached(&self) {
        self.detached.inc();
    }

    /// One gateway attempt.
    pub(crate) fn record_attempt(&self, status: UpstreamStatus, latency: Duration) {
        let slot = match status {
            UpstreamStatus::Code(code) => code
                .checked_sub(*STATUS_CODES.start())
                .and_then(|index| self.attempts_by_code.get(usize::from(index))),
            UpstreamStatus::Timeout => {
                self.attempts_failed[0].inc();
                None
            }
            UpstreamStatus::Unreachable => {
                self.attempts_failed[1].inc();
                None
            }
        };
        match (slot, status) {
            (Some(slot), _) => {
                slot.get_or_init(|| {
                    self.upstream_attempts
                        .get_or_create(&StatusLabels { status })
                        .clone()
                })
                .inc();
            }
            (None, UpstreamStatus::Code(_)) => {
                // A status outside 100–599: rare enough for the family's own lookup.
                self.upstream_attempts
                    .get_or_create(&StatusLabels { status })
                    .inc();
            }
            (None, _) => {}
        }
        self.upstream_duration.observe(latency.as_secs_f64());
    }

    /// A retry the budget refused.
    pub(crate) fn record_budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    /// Retries refused so far (for tests and the log).
    #[cfg(test)]
    pub(crate) fn budget_exhausted(&self) -> u64 {
        self.budget_exhausted.get()
    }

    /// One shared-store round trip.
    pub(crate) fn record_store_operation(
        &self,
        op: StoreOp,
        result: StoreResult,
        latency: Duration,
    ) {
        if let Some(counter) = self
            .store_operations
            .get(op.index())
            .and_then(|by_result| by_result.get(result.index()))
        {
            counter.inc();
        }
        if let Some(histogram) = self.store_duration.get(op.index()) {
            histogram.observe(latency.as_secs_f64());
        }
    }

    /// A send that went on without the shared store (`RELAY_REDIS_FAILURE=open`).
    pub(crate) fn record_fail_open(&self, op: StoreOp) {
        if let Some(counter) = self.store_fail_open.get(op.index()) {
            counter.inc();
        }
    }

    /// What became of one completion (or one try of it) in the shared window.
    pub(crate) fn record_completion(&self, result: CompletionResult) {
        if let Some(counter) = self.dedup_completions.get(result.index()) {
            counter.inc();
        }
    }

    /// A send that waited `wait` for its rate slot.
    pub(crate) fn record_rate_delayed(&self, scope: LimitScope, wait: Duration) {
        if let Some(counter) = self.rate_limited.get(scope_index(scope)) {
            counter[0].inc();
        }
        self.rate_wait.observe(wait.as_secs_f64());
    }

    /// A send a rate limit refused (429).
    pub(crate) fn record_rate_refused(&self, scope: LimitScope) {
        if let Some(counter) = self.rate_limited.get(scope_index(scope)) {
            counter[1].inc();
        }
    }

    /// Takes a `RELAY_MAX_IN_FLIGHT` slot's place in the in-flight gauge until dropped.
    pub(crate) fn in_flight(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.inc();
        InFlightGuard(Arc::clone(self))
    }

    /// The Prometheus text exposition; `dedup_entries` is sampled now.
    pub(crate) fn encode(&self, dedup_entries: u64) -> String {
        self.dedup_entries
            .set(i64::try_from(dedup_entries).unwrap_or(i64::MAX));
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn scope_index(scope: LimitScope) -> usize {
    LimitScope::ALL
        .iter()
        .position(|s| *s == scope)
        .unwrap_or(0)
}

/// Decrements the in-flight gauge when dropped, however the request or send ends.
pub(crate) struct InFlightGuard(Arc<Metrics>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_series_after_traffic() {
        let metrics = Metrics::new();
        metrics.record_request(
            SendKind::Media,
            RequestOutcome::Replayed,
            Duration::from_millis(3),
        );
        metrics.record_store_operation(StoreOp::Claim, StoreResult::Timeout, Duration::ZERO);
        metrics.record_attempt(UpstreamStatus::Code(503), Duration::from_millis(30));
        metrics.record_attempt(UpstreamStatus::Timeout, Duration::from_millis(30));
        let text = metrics.encode(7);
        for needle in [
            "lipachat_relay_requests_total{type=\"media\",outcome=\"replayed\"} 1",
            "lipachat_relay_requests_total{type=\"media\",outcome=\"sent\"} 0",
            "lipachat_relay_store_operations_total{op=\"claim\",result=\"timeout\"} 1",
            "lipachat_relay_rate_limited_total{scope=\"pair\",action=\"refused\"} 0",
            "lipachat_relay_upstream_attempts_total{status=\"503\"} 1",
            "lipachat_relay_upstream_attempts_total{status=\"timeout\"} 1",
            "lipachat_relay_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "lipachat_relay_upstream_duration_seconds_count 2",
            "lipachat_relay_dedup_entries 7",
            "lipachat_relay_in_flight 0",
            "lipachat_relay_retry_budget_exhausted_total 0",
            "lipachat_relay_build_info{version=\"",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn in_flight_guard_restores_the_gauge() {
        let metrics = Arc::new(Metrics::new());
        {
            let _guard = metrics.in_flight();
            assert!(metrics.encode(0).contains("lipachat_relay_in_flight 1"));
        }
        assert!(metrics.encode(0).contains("lipachat_relay_in_flight 0"));
    }
}
