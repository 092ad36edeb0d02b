//! Logs: subscriber set-up, the one line per send request, and masking (SPEC "Logs").
//!
//! Redaction lives here so it can be audited in one place: phone numbers are masked
//! ([`crate::phone::mask_phone`]), captions, message texts and URLs are never put in a field at
//! info, and the API key is never handed to this module at all.

use std::io::IsTerminal;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;
use crate::config::vars::RUST_LOG;
use crate::outcome::{ListingResult, RequestOutcome};
use crate::phone::PhoneNumber;
use crate::sends::SendKind;

/// What the handler learnt about a request, for its log line and metrics.
#[derive(Clone, Debug)]
pub(crate) struct RequestRecord {
    pub kind: SendKind,
    pub outcome: RequestOutcome,
    pub message_id: Option<Box<str>>,
    /// Masked only when a line is written.
    pub to: Option<PhoneNumber>,
    pub attempts: u32,
    /// Time the send waited for its rate slot.
    pub rate_wait: Duration,
}

impl RequestRecord {
    pub(crate) fn new(kind: SendKind, outcome: RequestOutcome) -> Self {
        Self {
            kind,
            outcome,
            message_id: None,
            to: None,
            attempts: 0,
            rate_wait: Duration::ZERO,
        }
    }
}

/// Error from [`init`]: a bad `RUST_LOG`.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {0}", var = RUST_LOG.name)]
pub(crate) struct LogSetupError(String);

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), JSON or text to
/// stdout. Text has ANSI colours only when stdout is a terminal, never in files or pipes.
pub(crate) fn init(format: LogFormat) -> Result<(), LogSetupError> {
    let filter = match std::env::var(RUST_LOG.name) {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| LogSetupError(e.to_string()))?
        }
        _ => EnvFilter::new(RUST_LOG.default.unwrap_or_default()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::NONE)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    // A subscriber already installed (a test binary) is fine: logs go there.
    let _ = result;
    Ok(())
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
pub(crate) fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Writes the one info line of a finished send request. `detached` marks a send whose caller
/// had disconnected before it ended.
pub(crate) fn log_request(
    request_id: Option<&str>,
    trace_id: Option<&str>,
    status: u16,
    latency: Duration,
    record: &RequestRecord,
    detached: bool,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let rate_wait_ms = record.rate_wait.as_secs_f64() * 1000.0;
    let to = record.to.as_ref().map(PhoneNumber::masked);
    tracing::info!(
        request_id,
        trace_id,
        r#type = record.kind.name(),
        message_id = record.message_id.as_deref(),
        to = to.as_deref(),
        outcome = record.outcome.as_str(),
        dedup = record.outcome.dedup_result(),
        status,
        attempts = record.attempts,
        rate_wait_ms,
        latency_ms,
        caller_gone = detached,
        "send request"
    );
}

/// Writes the one info line of a `GET /templates` request; `from` comes masked.
pub(crate) fn log_listing(
    request_id: Option<&str>,
    from: Option<&str>,
    result: ListingResult,
    status: u16,
    attempts: u32,
    latency: Duration,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let latency_ms = latency.as_secs_f64() * 1000.0;
    tracing::info!(
        request_id,
        from,
        result = result.as_str(),
        status,
        attempts,
        latency_ms,
        "templates request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_read_from_traceparent() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
