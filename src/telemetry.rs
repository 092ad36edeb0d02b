//! Logs: subscriber set-up, the one line per `/media` request, and masking (SPEC "Logs").
//!
//! Redaction lives here so it can be audited in one place: phone numbers go through
//! [`mask_phone`], captions and media URLs are never put in a field at info, and the API key
//! is never handed to this module at all.

use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;
use crate::metrics::RequestOutcome;
use crate::validate::PhoneNumber;

/// What the handler learnt about a request, carried to the log layer in the response's
/// extensions.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub outcome: RequestOutcome,
    pub message_id: Option<Box<str>>,
    /// Masked only when a line is written.
    pub to: Option<PhoneNumber>,
    pub attempts: u32,
}

impl RequestRecord {
    pub fn new(outcome: RequestOutcome) -> Self {
        Self {
            outcome,
            message_id: None,
            to: None,
            attempts: 0,
        }
    }
}

/// Error from [`init`]: a bad `RUST_LOG`.
#[derive(Debug, thiserror::Error)]
#[error("RUST_LOG: {0}")]
pub struct LogSetupError(String);

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), JSON or text to stdout.
pub fn init(format: LogFormat) -> Result<(), LogSetupError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| LogSetupError(e.to_string()))?
        }
        _ => EnvFilter::new("info"),
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
        LogFormat::Text => builder.try_init(),
    };
    // A subscriber already installed (a test binary) is fine: logs go there.
    let _ = result;
    Ok(())
}

/// `254712345678` → `2547******78`: the country and operator prefix and the last two digits.
pub fn mask_phone(digits: &str) -> String {
    let count = digits.chars().count();
    if count <= 6 {
        return "*".repeat(count);
    }
    digits
        .chars()
        .enumerate()
        .map(|(i, c)| if i < 4 || i >= count - 2 { c } else { '*' })
        .collect()
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Writes the one info line of a finished `/media` request.
pub fn log_request(
    request_id: &str,
    trace_id: Option<&str>,
    status: u16,
    latency: Duration,
    record: &RequestRecord,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let to = record.to.as_ref().map(|number| mask_phone(number.digits()));
    tracing::info!(
        request_id,
        trace_id,
        message_id = record.message_id.as_deref(),
        to = to.as_deref(),
        outcome = record.outcome.as_str(),
        dedup = record.outcome.dedup_result(),
        status,
        attempts = record.attempts,
        latency_ms,
        "media request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_masked_in_the_middle() {
        assert_eq!(mask_phone("254712345678"), "2547******78");
        assert_eq!(mask_phone("25471234"), "2547**34");
        assert_eq!(mask_phone("12345"), "*****");
    }

    #[test]
    fn trace_id_is_read_from_traceparent() {
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
