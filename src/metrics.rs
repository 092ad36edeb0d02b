//! Every metric name and the functions that record them (SPEC "Operations", `/metrics`).
//!
//! prometheus-client rather than the `metrics` facade: its registry is a value, not a global
//! recorder, so two relays in one test binary keep separate counts. Per-outcome counters are
//! resolved once at start-up, so recording a request is an atomic add, not a label lookup.
//! Labels are low-cardinality by construction: an outcome, or a gateway status code.

use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub const METRIC_REQUESTS: &str = "lipachat_relay_requests";
pub const METRIC_UPSTREAM_ATTEMPTS: &str = "lipachat_relay_upstream_attempts";
pub const METRIC_REQUEST_DURATION: &str = "lipachat_relay_request_duration";
pub const METRIC_UPSTREAM_DURATION: &str = "lipachat_relay_upstream_duration";
pub const METRIC_IN_FLIGHT: &str = "lipachat_relay_in_flight";
pub const METRIC_DEDUP_ENTRIES: &str = "lipachat_relay_dedup_entries";
pub const METRIC_BUDGET_EXHAUSTED: &str = "lipachat_relay_retry_budget_exhausted";
pub const METRIC_BUILD_INFO: &str = "lipachat_relay_build_info";

/// OpenTelemetry's advised boundaries for HTTP durations, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How a `/media` request ended: the `outcome` label and the log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// The gateway answered 2xx.
    Sent,
    /// Answered from the dedup store without calling the gateway.
    Replayed,
    /// Waited on an identical request already in flight.
    Coalesced,
    /// Same `messageId`, different payload (422).
    Conflict,
    /// Malformed JSON, validation failure, wrong content type or too large (400/413/415).
    Invalid,
    /// The gateway answered with a 4xx of its own, passed through.
    Rejected,
    /// The gateway failed: 5xx passed through, unreachable or non-JSON (502).
    UpstreamError,
    /// Deadline or attempt timeouts (504).
    Timeout,
    /// Load shed or draining (503).
    Shed,
}

impl RequestOutcome {
    pub const ALL: [Self; 9] = [
        Self::Sent,
        Self::Replayed,
        Self::Coalesced,
        Self::Conflict,
        Self::Invalid,
        Self::Rejected,
        Self::UpstreamError,
        Self::Timeout,
        Self::Shed,
    ];

    /// What the dedup store decided: `new` (went to the gateway), `replayed`, `coalesced`,
    /// `conflict`, or `none` for a request refused before the store was asked.
    pub fn dedup_result(self) -> &'static str {
        match self {
            Self::Replayed => "replayed",
            Self::Coalesced => "coalesced",
            Self::Conflict => "conflict",
            Self::Invalid | Self::Shed => "none",
            Self::Sent | Self::Rejected | Self::UpstreamError | Self::Timeout => "new",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Replayed => "replayed",
            Self::Coalesced => "coalesced",
            Self::Conflict => "conflict",
            Self::Invalid => "invalid",
            Self::Rejected => "rejected",
            Self::UpstreamError => "upstream_error",
            Self::Timeout => "timeout",
            Self::Shed => "shed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The `status` label of an upstream attempt.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum UpstreamStatus {
    Code(u16),
    /// The attempt hit `RELAY_ATTEMPT_TIMEOUT_MS`.
    Timeout,
    /// Connecting, sending or reading failed.
    Unreachable,
}

impl EncodeLabelValue for UpstreamStatus {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(encoder, "{code}"),
            Self::Timeout => encoder.write_str("timeout"),
            Self::Unreachable => encoder.write_str("unreachable"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: UpstreamStatus,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The relay's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: [Counter; RequestOutcome::ALL.len()],
    upstream_attempts: Family<StatusLabels, Counter>,
    request_duration: Histogram,
    upstream_duration: Histogram,
    in_flight: Gauge,
    dedup_entries: Gauge,
    budget_exhausted: Counter,
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
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let by_outcome = Family::<OutcomeLabels, Counter>::default();
        let requests = RequestOutcome::ALL.map(|outcome| {
            by_outcome
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        registry.register(METRIC_REQUESTS, "Requests to /media by outcome", by_outcome);
        let upstream_attempts = Family::<StatusLabels, Counter>::default();
        registry.register(
            METRIC_UPSTREAM_ATTEMPTS,
            "Gateway attempts by HTTP status (or timeout, unreachable)",
            upstream_attempts.clone(),
        );
        let request_duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            METRIC_REQUEST_DURATION,
            "Time to answer a /media request",
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
            "Requests to /media being handled now",
            in_flight.clone(),
        );
        let dedup_entries = Gauge::default();
        registry.register(
            METRIC_DEDUP_ENTRIES,
            "messageIds held by the dedup store (in flight or remembered)",
            dedup_entries.clone(),
        );
        let budget_exhausted = Counter::default();
        registry.register(
            METRIC_BUDGET_EXHAUSTED,
            "Retries skipped because the retry budget was empty",
            budget_exhausted.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(METRIC_BUILD_INFO, "Build information", build_info);
        Self {
            registry,
            requests,
            upstream_attempts,
            request_duration,
            upstream_duration,
            in_flight,
            dedup_entries,
            budget_exhausted,
        }
    }

    /// One finished `/media` request.
    pub fn record_request(&self, outcome: RequestOutcome, latency: Duration) {
        if let Some(counter) = RequestOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .and_then(|i| self.requests.get(i))
        {
            counter.inc();
        }
        self.request_duration.observe(latency.as_secs_f64());
    }

    /// One gateway attempt.
    pub fn record_attempt(&self, status: UpstreamStatus, latency: Duration) {
        self.upstream_attempts
            .get_or_create(&StatusLabels { status })
            .inc();
        self.upstream_duration.observe(latency.as_secs_f64());
    }

    /// A retry the budget refused.
    pub fn record_budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    /// Retries refused so far (for tests and the log).
    pub fn budget_exhausted(&self) -> u64 {
        self.budget_exhausted.get()
    }

    /// Tracks one `/media` request while it is handled.
    pub fn in_flight(&self) -> InFlightGuard<'_> {
        self.in_flight.inc();
        InFlightGuard(&self.in_flight)
    }

    /// The Prometheus text exposition; `dedup_entries` is sampled now.
    pub fn encode(&self, dedup_entries: u64) -> String {
        self.dedup_entries
            .set(i64::try_from(dedup_entries).unwrap_or(i64::MAX));
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Decrements the in-flight gauge when the request is over, however it ends.
pub struct InFlightGuard<'a>(&'a Gauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_series_after_traffic() {
        let metrics = Metrics::new();
        metrics.record_request(RequestOutcome::Replayed, Duration::from_millis(3));
        metrics.record_attempt(UpstreamStatus::Code(503), Duration::from_millis(30));
        metrics.record_attempt(UpstreamStatus::Timeout, Duration::from_millis(30));
        let text = metrics.encode(7);
        for needle in [
            "lipachat_relay_requests_total{outcome=\"replayed\"} 1",
            "lipachat_relay_requests_total{outcome=\"sent\"} 0",
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
        let metrics = Metrics::new();
        {
            let _guard = metrics.in_flight();
            assert!(metrics.encode(0).contains("lipachat_relay_in_flight 1"));
        }
        assert!(metrics.encode(0).contains("lipachat_relay_in_flight 0"));
    }
}
