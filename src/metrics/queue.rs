//! The metrics of queued sends (SPEC "Queued and scheduled sends", `/metrics`): sends queued
//! and their outcomes, the queue's depth and the age of the oldest due send. None is on the
//! synchronous send path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::backlog::Backlog;

pub(crate) const METRIC_QUEUED: &str = "lipachat_relay_queued_sends";
pub(crate) const METRIC_QUEUE_DEPTH: &str = "lipachat_relay_queue_depth";
pub(crate) const METRIC_QUEUE_OLDEST: &str = "lipachat_relay_queue_oldest_due";

/// What happened to a queued send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueuedResult {
    /// Answered 202 and held.
    Queued,
    /// Accepted by the gateway (or found already accepted).
    Sent,
    /// A gateway answer that is not retried: FAILED with it.
    Failed,
    /// Retried until `RELAY_QUEUE_MAX_AGE_SECS`: FAILED, `expired`.
    Expired,
    /// Cancelled by `DELETE /messages/{messageId}`.
    Cancelled,
    /// A try failed and another follows after a back-off.
    Retried,
}

impl QueuedResult {
    const ALL: [Self; 6] = [
        Self::Queued,
        Self::Sent,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
        Self::Retried,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Retried => "retried",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The queue's metrics.
pub(crate) struct QueueMetrics {
    sends: Family<ResultLabels, Counter>,
    depth: Backlog,
}

impl QueueMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            sends: Family::default(),
            depth: Backlog::register(
                registry,
                (
                    METRIC_QUEUE_DEPTH,
                    "Sends held in the queue (every replica's), due or not",
                ),
                (
                    METRIC_QUEUE_OLDEST,
                    "How long the oldest due send has been due",
                ),
            ),
        };
        registry.register(
            METRIC_QUEUED,
            "Queued sends (Prefer: respond-async) by result: queued, sent, failed, expired, \
             cancelled, retried",
            metrics.sends.clone(),
        );
        // Every series at zero from the start, so a dashboard sees them before the first one.
        for result in QueuedResult::ALL {
            drop(metrics.sends.get_or_create(&ResultLabels {
                result: result.as_str(),
            }));
        }
        metrics
    }

    pub(crate) fn record(&self, result: QueuedResult) {
        self.sends
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    /// Sends held, and how long (seconds) the oldest due one has been due.
    pub(crate) fn set_depth(&self, count: u64, oldest_secs: u64) {
        self.depth.set(count, oldest_secs);
    }
}
