//! The metrics of what happens after SENT (SPEC "After SENT", `/metrics`): webhooks received
//! by kind and result, events by type and result, events pending and the age of the oldest.
//! None of these is on the send path's hot loop, so they are label families looked up when
//! recorded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::backlog::Backlog;

pub(crate) const METRIC_WEBHOOKS: &str = "lipachat_relay_webhooks";
pub(crate) const METRIC_EVENTS: &str = "lipachat_relay_events";
pub(crate) const METRIC_EVENTS_PENDING: &str = "lipachat_relay_events_pending";
pub(crate) const METRIC_EVENTS_OLDEST: &str = "lipachat_relay_events_oldest_pending";

/// What a webhook carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WebhookKind {
    /// A status callback (Lipachat's or Meta's shape).
    Status,
    /// A customer's message.
    Received,
    /// Anything else.
    Unrecognised,
    /// Nothing was read: wrong token, bad content type, malformed or too large.
    None,
}

impl WebhookKind {
    const ALL: [Self; 4] = [Self::Status, Self::Received, Self::Unrecognised, Self::None];

    fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Received => "received",
            Self::Unrecognised => "unrecognised",
            Self::None => "none",
        }
    }
}

/// How a webhook was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WebhookResult {
    /// 200: recorded (or already recorded: a repeat changes nothing).
    Recorded,
    /// 404: the token did not match.
    WrongToken,
    /// 400, 413 or 415.
    Refused,
    /// 503: it could not be recorded; the provider retries.
    Unavailable,
}

impl WebhookResult {
    const ALL: [Self; 4] = [
        Self::Recorded,
        Self::WrongToken,
        Self::Refused,
        Self::Unavailable,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::WrongToken => "wrong_token",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// What became of one event delivery attempt, or of an event that could not wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventResult {
    Delivered,
    Retried,
    Dead,
    /// Not recorded: the in-memory outbox was full (a send's SENT event: the send itself
    /// went out).
    Dropped,
}

impl EventResult {
    const ALL: [Self; 4] = [Self::Delivered, Self::Retried, Self::Dead, Self::Dropped];

    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Dead => "dead",
            Self::Dropped => "dropped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    r#type: &'static str,
    result: &'static str,
}

/// The lifecycle's metrics.
pub(crate) struct LifecycleMetrics {
    webhooks: Family<WebhookLabels, Counter>,
    events: Family<EventLabels, Counter>,
    pending: Backlog,
}

impl LifecycleMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            webhooks: Family::default(),
            events: Family::default(),
            pending: Backlog::register(
                registry,
                (METRIC_EVENTS_PENDING, "Events waiting for delivery"),
                (
                    METRIC_EVENTS_OLDEST,
                    "Age of the oldest event waiting for delivery",
                ),
            ),
        };
        registry.register(
            METRIC_WEBHOOKS,
            "Webhooks received on the webhook listener, by kind and result",
            metrics.webhooks.clone(),
        );
        registry.register(
            METRIC_EVENTS,
            "Event deliveries by type and result (delivered, retried, dead, dropped)",
            metrics.events.clone(),
        );
        // Every series at zero from the start, so a dashboard sees them before the first one.
        for kind in WebhookKind::ALL {
            for result in WebhookResult::ALL {
                drop(metrics.webhooks.get_or_create(&WebhookLabels {
                    kind: kind.as_str(),
                    result: result.as_str(),
                }));
            }
        }
        for kind in crate::events::EventType::ALL {
            for result in EventResult::ALL {
                drop(metrics.events.get_or_create(&EventLabels {
                    r#type: kind.name(),
                    result: result.as_str(),
                }));
            }
        }
        metrics
    }

    pub(crate) fn webhook(&self, kind: WebhookKind, result: WebhookResult) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                kind: kind.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    pub(crate) fn event(&self, kind: &'static str, result: EventResult) {
        self.events
            .get_or_create(&EventLabels {
                r#type: kind,
                result: result.as_str(),
            })
            .inc();
    }

    /// Events waiting, and the age in seconds of the oldest.
    pub(crate) fn set_pending(&self, count: u64, oldest_secs: u64) {
        self.pending.set(count, oldest_secs);
    }
}
