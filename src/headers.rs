//! Every header name the relay reads or writes that `http` does not name for us (SPEC "HTTP API
//! of the relay", "Retries, timeouts, overload"). A leaf: the routes, the gateway client, the
//! mock and the OpenAPI document all take their names from here.

/// The gateway's key header; set only on the way out, never read from a caller.
pub(crate) const HEADER_API_KEY: &str = "apikey";
/// The request id: the caller's, or one the relay makes; forwarded and echoed.
pub(crate) const HEADER_REQUEST_ID: &str = "x-request-id";
/// W3C trace context, forwarded as is; its trace id goes into the log line.
pub(crate) const HEADER_TRACEPARENT: &str = "traceparent";
/// W3C trace state, forwarded as is.
pub(crate) const HEADER_TRACESTATE: &str = "tracestate";
/// `true` on an answer replayed from the dedup window or shared with a coalesced caller.
pub(crate) const HEADER_REPLAYED: &str = "idempotent-replayed";
/// How often the gateway was tried for this answer.
pub(crate) const HEADER_ATTEMPTS: &str = "x-relay-attempts";
/// Standard Webhooks: the event's id, the same on every attempt (events out).
pub(crate) const HEADER_WEBHOOK_ID: &str = "webhook-id";
/// Standard Webhooks: Unix seconds of the attempt (events out).
pub(crate) const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks: `v1,<base64 HMAC-SHA256>`, space-separated when several (events out).
pub(crate) const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";
