//! The label values and label sets of the relay's metrics: each enum is one label, spelled
//! once in its `as_str`, and each label set one family's labels.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) r#type: &'static str,
    pub(super) outcome: &'static str,
}

/// The `status` label of an upstream attempt.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum UpstreamStatus {
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
pub(super) struct ResultLabels {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabels {
    pub(super) status: UpstreamStatus,
}

/// A kind of shared-store round trip: the `op` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StoreOp {
    /// Claiming a `messageId` (or reading what holds it).
    Claim,
    /// Recording a send's outcome (remember or release).
    Complete,
    /// Taking a rate-limit slot.
    Limit,
    /// Merging an update into a status record (with its `waId` index and, for an accepted
    /// send, its event).
    StatusMerge,
    /// Reading a status record, or the `messageId` of a `waId`.
    StatusRead,
    /// Recording an event in the outbox stream.
    EventEmit,
    /// Taking events to deliver: new ones, or ones a silent replica held.
    EventTake,
    /// Telling the outbox that events taken are still being retried.
    EventKeep,
    /// Removing an event delivered or dead.
    EventDone,
    /// Counting the events waiting, for the metrics.
    EventPending,
    /// Reading a remembered answer for `GET /messages/{messageId}`.
    Lookup,
    /// Queued sends: enqueue, take, start, cancel, keep, finish, depth.
    Queue,
}

impl StoreOp {
    pub(crate) const ALL: [Self; 12] = [
        Self::Claim,
        Self::Complete,
        Self::Limit,
        Self::StatusMerge,
        Self::StatusRead,
        Self::EventEmit,
        Self::EventTake,
        Self::EventKeep,
        Self::EventDone,
        Self::EventPending,
        Self::Lookup,
        Self::Queue,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Complete => "complete",
            Self::Limit => "limit",
            Self::StatusMerge => "status_merge",
            Self::StatusRead => "status_read",
            Self::EventEmit => "event_emit",
            Self::EventTake => "event_take",
            Self::EventKeep => "event_keep",
            Self::EventDone => "event_done",
            Self::EventPending => "event_pending",
            Self::Lookup => "lookup",
            Self::Queue => "queue",
        }
    }

    pub(super) fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// How a store round trip ended: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum StoreResult {
    Ok,
    Error,
    Timeout,
}

impl StoreResult {
    pub(crate) const ALL: [Self; 3] = [Self::Ok, Self::Error, Self::Timeout];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }

    pub(super) fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// What became of a completion in the shared window: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CompletionResult {
    /// The claim was still this leader's: replaced by the answer, or released.
    Completed,
    /// The claim had vanished (a Redis restart, a failover): the 2xx was written anyway.
    Restored,
    /// Another replica's claim or an answer held the key: left alone.
    Superseded,
    /// A try failed or timed out: retried in the background.
    Retried,
    /// Not landed before the claim's lease ended: the claim lapses.
    GaveUp,
}

impl CompletionResult {
    pub(crate) const ALL: [Self; 5] = [
        Self::Completed,
        Self::Restored,
        Self::Superseded,
        Self::Retried,
        Self::GaveUp,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Restored => "restored",
            Self::Superseded => "superseded",
            Self::Retried => "retried",
            Self::GaveUp => "gave_up",
        }
    }

    pub(super) fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StoreLabels {
    pub(super) op: &'static str,
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OpLabels {
    pub(super) op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LimitLabels {
    pub(super) scope: &'static str,
    pub(super) action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
}
