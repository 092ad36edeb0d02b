//! What a send ends with (SPEC "Answers"): a leaf module shared by the gateway client, which
//! produces [`GatewayReply`]s and [`UpstreamError`]s, the rate limits, the dedup stores, which
//! hand one [`Outcome`] to the leader of a send and every caller coalesced onto it, and the
//! error module, which turns a [`SendFailure`] into the relay's own answer. How a request
//! ended, [`RequestOutcome`] (and [`ListingResult`] for `GET /templates`), is here too: the
//! metrics, the log line and the error module label a request with it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

/// A gateway answer, whatever its status.
#[derive(Clone, Debug)]
pub(crate) struct GatewayReply {
    /// The gateway's status.
    pub status: StatusCode,
    /// The gateway's `Content-Type`, if any.
    pub content_type: Option<HeaderValue>,
    /// The gateway's body, as received (at most 1 MiB).
    pub body: Bytes,
    /// Whether the body parses as JSON: a non-JSON answer becomes a 502 of ours.
    pub is_json: bool,
    /// The gateway's `Retry-After`, read for the retry policy.
    pub retry_after: Option<Duration>,
}

impl GatewayReply {
    /// A 2xx JSON answer: the only kind that is remembered and replayed.
    pub(crate) fn is_success(&self) -> bool {
        self.status.is_success() && self.is_json
    }
}

/// The gateway's id for an accepted message: `data.waId` in its envelope (or `waId`).
pub(crate) fn wa_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        data: Option<Ids>,
        #[serde(rename = "waId")]
        wa_id: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Ids {
        #[serde(rename = "waId")]
        wa_id: Option<String>,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    envelope
        .data
        .and_then(|data| data.wa_id)
        .or(envelope.wa_id)
        .filter(|id| !id.is_empty())
}

/// Why no usable gateway answer came back. Clone, because coalesced waiters share it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// Connecting, sending or reading failed; the text is the cause chain, for the log.
    #[error("gateway unreachable: {0}")]
    Unreachable(String),
    /// The last attempt ran out of `RELAY_ATTEMPT_TIMEOUT_MS`.
    #[error("gateway attempt timed out")]
    AttemptTimeout,
    /// `RELAY_DEADLINE_MS` ran out, back-off included.
    #[error("request deadline exceeded")]
    DeadlineExceeded,
    /// The gateway's answer is longer than [`MAX_ANSWER_BYTES`]: not passed on, not
    /// remembered (the dedup window's memory bound is its capacity times this).
    #[error("the gateway's answer is larger than {MAX_ANSWER_BYTES} bytes")]
    AnswerTooLarge,
}

/// The longest gateway answer the relay reads: 1 MiB.
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Which rate limit refused a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LimitScope {
    /// `RELAY_SENDER_RATE`, per `from`.
    Sender,
    /// `RELAY_PAIR_INTERVAL_MS` / `RELAY_PAIR_BURST`, per (`from`, `to`).
    Pair,
}

impl LimitScope {
    /// Both scopes, for metrics resolved at start-up.
    pub(crate) const ALL: [Self; 2] = [Self::Sender, Self::Pair];

    /// The metric label and log value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sender => "sender",
            Self::Pair => "pair",
        }
    }

    /// The request field a refusal names.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::Sender => "from",
            Self::Pair => "to",
        }
    }
}

/// Why a send ended without a gateway answer to pass on.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SendFailure {
    /// The gateway could not be reached, timed out, or the deadline ran out.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A rate limit had no slot within `RELAY_RATE_MAX_WAIT_MS` and the deadline.
    #[error("rate limited ({}) for {retry_after:?}", scope.as_str())]
    RateLimited {
        scope: LimitScope,
        retry_after: Duration,
    },
    /// The shared store could not be reached and `RELAY_REDIS_FAILURE=closed`.
    #[error("the shared store is unavailable")]
    StoreUnavailable,
    /// The shared window holds this `messageId` with another payload.
    #[error("messageId held by another payload")]
    Conflict,
    /// The leader of the send ended without an outcome (panic, cancellation, shutdown).
    #[error("the send was abandoned")]
    Abandoned,
    /// Shutdown began while the send waited for its rate slot.
    #[error("draining")]
    Draining,
}

/// What a send ended with, shared by its leader and every coalesced caller.
pub(crate) type Outcome = Result<GatewayReply, SendFailure>;

/// How a request ended: the `outcome` label and the log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RequestOutcome {
    /// The gateway answered 2xx.
    Sent,
    /// Answered from the dedup window without calling the gateway.
    Replayed,
    /// Waited on an identical request already in flight.
    Coalesced,
    /// Same `messageId`, different payload (422).
    Conflict,
    /// Malformed JSON, validation failure, wrong content type, too large or too slow
    /// (400/408/413/415).
    Invalid,
    /// The gateway answered with a 4xx of its own, passed through.
    Rejected,
    /// The gateway failed: 5xx passed through, unreachable or non-JSON (502).
    UpstreamError,
    /// Deadline or attempt timeouts (504).
    Timeout,
    /// Load shed or draining (503).
    Shed,
    /// Refused by a rate limit (429).
    RateLimited,
    /// The shared store was unreachable with `RELAY_REDIS_FAILURE=closed` (503).
    StoreUnavailable,
    /// Held for later (`Prefer: respond-async`, 202).
    Queued,
}

impl RequestOutcome {
    pub(crate) const ALL: [Self; 12] = [
        Self::Sent,
        Self::Replayed,
        Self::Coalesced,
        Self::Conflict,
        Self::Invalid,
        Self::Rejected,
        Self::UpstreamError,
        Self::Timeout,
        Self::Shed,
        Self::RateLimited,
        Self::StoreUnavailable,
        Self::Queued,
    ];

    /// What the dedup window decided: `new` (went on to the gateway or its rate limit),
    /// `replayed`, `coalesced`, `conflict`, or `none` for a request refused before it was
    /// asked.
    pub(crate) fn dedup_result(self) -> &'static str {
        match self {
            Self::Replayed => "replayed",
            Self::Coalesced => "coalesced",
            Self::Conflict => "conflict",
            Self::Invalid | Self::Shed | Self::StoreUnavailable => "none",
            Self::Sent
            | Self::Rejected
            | Self::UpstreamError
            | Self::Timeout
            | Self::RateLimited
            | Self::Queued => "new",
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
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
            Self::RateLimited => "rate_limited",
            Self::StoreUnavailable => "store_unavailable",
            Self::Queued => "queued",
        }
    }

    /// The position in [`RequestOutcome::ALL`], for per-outcome tables.
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// How a `GET /templates` request was answered: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ListingResult {
    /// From the cache, without calling the gateway.
    Cached,
    /// The gateway's 2xx answer, now cached.
    Fetched,
    /// Anything else (refused, gateway error, unreachable): not cached.
    Failed,
}

impl ListingResult {
    pub(crate) const ALL: [Self; 3] = [Self::Cached, Self::Fetched, Self::Failed];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Cached => "cached",
            Self::Fetched => "fetched",
            Self::Failed => "failed",
        }
    }
}
