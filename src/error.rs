//! Every answer the relay writes itself, and its status (SPEC "Answers" table).
//!
//! A JSON answer from the gateway is not an `ApiError`, whatever its status: it is relayed byte
//! for byte. `ApiError` covers only the relay's own answers, all in the gateway's envelope
//! shape so that callers keep one parser. Causes go to the log line, never into the body.

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::outcome::RequestOutcome;
use crate::outcome::{LimitScope, SendFailure, UpstreamError};
use crate::validate::{FieldError, Invalid};

/// Seconds a shed caller should wait before retrying.
pub(crate) const RETRY_AFTER_OVERLOADED_SECS: u32 = 1;
/// Seconds a caller refused during a drain should wait (another replica will answer).
pub(crate) const RETRY_AFTER_DRAINING_SECS: u32 = 5;
/// Seconds a caller refused while the shared store is down (closed mode) should wait.
pub(crate) const RETRY_AFTER_STORE_SECS: u32 = 1;

/// Seconds a provider refused a webhook should wait before posting it again.
pub(crate) const RETRY_AFTER_WEBHOOK_SECS: u32 = 5;

/// The relay's own answers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// 400: the body is not a JSON object.
    #[error("{0}")]
    MalformedJson(String),
    /// 400: one or more fields broke the rules; all are listed.
    #[error("the request failed validation")]
    Validation(Vec<FieldError>),
    /// 400: the body could not be read from the connection.
    #[error("the request body could not be read")]
    UnreadableBody,
    /// 408: the body did not arrive within `RELAY_BODY_TIMEOUT_MS` of the head.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// 413: over `RELAY_MAX_BODY_BYTES`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// 415: Content-Type missing or not JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 422: the `messageId` is held by a different payload.
    #[error("messageId was already used with a different payload")]
    IdempotencyConflict,
    /// 429: a rate limit had no slot within `RELAY_RATE_MAX_WAIT_MS` and the deadline.
    #[error("{}", rate_limit_message(*scope))]
    RateLimited {
        scope: LimitScope,
        retry_after: std::time::Duration,
    },
    /// 502: connecting to or reading from the gateway failed.
    #[error("the gateway could not be reached")]
    GatewayUnreachable,
    /// 502: the send leading this request ended without an outcome.
    #[error("the send this request waited on ended without an answer; retry")]
    Abandoned,
    /// 502: the gateway's answer is over 1 MiB.
    #[error("the gateway's answer is larger than 1 MiB")]
    GatewayAnswerTooLarge,
    /// 502: the gateway answered, but not with JSON.
    #[error("the gateway answered with something that is not JSON (HTTP {0})")]
    GatewayNotJson(u16),
    /// 503: over `RELAY_MAX_IN_FLIGHT`.
    #[error("the relay is at capacity; retry shortly")]
    Overloaded,
    /// 503: shutting down.
    #[error("the relay is shutting down; retry on another instance")]
    Draining,
    /// 503: the shared store is unreachable and `RELAY_REDIS_FAILURE=closed`.
    #[error("the shared deduplication store is unavailable; retry shortly")]
    StoreUnavailable,
    /// 404: no status record (and nothing remembered) for this `messageId`.
    #[error("no status is known for this messageId")]
    MessageNotFound,
    /// 409: a queued send cannot be cancelled: it was handed to the gateway already.
    #[error("this message was already handed to the gateway; it cannot be cancelled")]
    AlreadySent,
    /// 404: a path that is not served (on the webhook listener: a wrong token too).
    #[error("not found")]
    NotFound,
    /// 503: a webhook could not be recorded (the shared store failed, or the events waiting
    /// in memory reached `RELAY_EVENTS_MAX_PENDING`); the provider retries it.
    #[error("the callback could not be recorded; retry later")]
    NotRecorded,
    /// 503: a status record could not be read from the shared store.
    #[error("the status store is unavailable; retry shortly")]
    StatusUnavailable,
    /// 504: `RELAY_DEADLINE_MS` ran out.
    #[error("the gateway did not answer within the request deadline")]
    DeadlineExceeded,
    /// 504: every attempt hit `RELAY_ATTEMPT_TIMEOUT_MS`.
    #[error("every gateway attempt timed out")]
    AttemptsTimedOut,
}

impl ApiError {
    /// The status of each answer: one table to check against the SPEC.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::Validation(_) | Self::UnreadableBody => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::GatewayUnreachable
            | Self::GatewayAnswerTooLarge
            | Self::GatewayNotJson(_)
            | Self::Abandoned => StatusCode::BAD_GATEWAY,
            Self::MessageNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadySent => StatusCode::CONFLICT,
            Self::Overloaded
            | Self::Draining
            | Self::StoreUnavailable
            | Self::NotRecorded
            | Self::StatusUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::DeadlineExceeded | Self::AttemptsTimedOut => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `outcome` label of the request this answers.
    pub(crate) fn outcome(&self) -> RequestOutcome {
        match self {
            Self::MalformedJson(_)
            | Self::Validation(_)
            | Self::UnreadableBody
            | Self::BodyTimeout(_)
            | Self::BodyTooLarge { .. }
            | Self::UnsupportedMediaType => RequestOutcome::Invalid,
            Self::IdempotencyConflict => RequestOutcome::Conflict,
            Self::RateLimited { .. } => RequestOutcome::RateLimited,
            Self::GatewayUnreachable
            | Self::GatewayAnswerTooLarge
            | Self::GatewayNotJson(_)
            | Self::Abandoned => RequestOutcome::UpstreamError,
            Self::Overloaded | Self::Draining => RequestOutcome::Shed,
            Self::StoreUnavailable | Self::NotRecorded | Self::StatusUnavailable => {
                RequestOutcome::StoreUnavailable
            }
            // Not sends: their outcome is never counted as one.
            Self::MessageNotFound | Self::NotFound | Self::AlreadySent => RequestOutcome::Invalid,
            Self::DeadlineExceeded | Self::AttemptsTimedOut => RequestOutcome::Timeout,
        }
    }

    fn field_errors(self) -> Option<Vec<FieldError>> {
        match self {
            Self::Validation(errors) => Some(errors),
            Self::IdempotencyConflict => Some(vec![FieldError::new(
                "messageId",
                "was already used with a different payload",
            )]),
            Self::RateLimited { scope, .. } => Some(vec![FieldError::new(
                scope.field(),
                match scope {
                    LimitScope::Sender => "this sender is over RELAY_SENDER_RATE",
                    LimitScope::Pair => "this sender and recipient are over the pair rate limit",
                },
            )]),
            _ => None,
        }
    }

    /// Whole seconds, rounded up.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Overloaded => Some(RETRY_AFTER_OVERLOADED_SECS.into()),
            Self::Draining => Some(RETRY_AFTER_DRAINING_SECS.into()),
            Self::StoreUnavailable | Self::StatusUnavailable => Some(RETRY_AFTER_STORE_SECS.into()),
            Self::NotRecorded => Some(RETRY_AFTER_WEBHOOK_SECS.into()),
            Self::RateLimited { retry_after, .. } => Some(whole_seconds(*retry_after).max(1)),
            _ => None,
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        match invalid {
            Invalid::MalformedJson(message) => Self::MalformedJson(message),
            Invalid::Fields(errors) => Self::Validation(errors),
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Unreachable(_) => Self::GatewayUnreachable,
            UpstreamError::AttemptTimeout => Self::AttemptsTimedOut,
            UpstreamError::DeadlineExceeded => Self::DeadlineExceeded,
            UpstreamError::AnswerTooLarge => Self::GatewayAnswerTooLarge,
        }
    }
}

impl From<SendFailure> for ApiError {
    fn from(failure: SendFailure) -> Self {
        match failure {
            SendFailure::Upstream(error) => error.into(),
            SendFailure::RateLimited { scope, retry_after } => {
                Self::RateLimited { scope, retry_after }
            }
            SendFailure::StoreUnavailable => Self::StoreUnavailable,
            SendFailure::Conflict => Self::IdempotencyConflict,
            SendFailure::Abandoned => Self::Abandoned,
            SendFailure::Draining => Self::Draining,
        }
    }
}

fn rate_limit_message(scope: LimitScope) -> &'static str {
    match scope {
        LimitScope::Sender => {
            "the sender's rate limit has no slot within the wait allowed; retry after Retry-After"
        }
        LimitScope::Pair => {
            "the pair rate limit (sender to this recipient) has no slot within the wait allowed; \
             retry after Retry-After"
        }
    }
}

/// Whole seconds of `duration`, rounded up, saturating.
pub(crate) fn whole_seconds(duration: std::time::Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// The relay envelope: the gateway's shape with `status: "error"`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorEnvelope {
    /// When the relay answered, RFC 3339.
    #[schema(example = "2026-11-25T08:00:00.000Z")]
    pub timestamp: String,
    /// Always null on an error.
    #[schema(value_type = Option<Object>)]
    pub data: Option<()>,
    /// Always "error".
    #[schema(example = "error")]
    pub status: &'static str,
    /// One sentence saying what went wrong.
    pub message: String,
    /// One entry per failing field, or null when no field is at fault.
    pub errors: Option<Vec<FieldError>>,
}

impl ErrorEnvelope {
    /// An envelope stamped now.
    pub(crate) fn new(message: String, errors: Option<Vec<FieldError>>) -> Self {
        Self {
            timestamp: now_rfc3339(),
            data: None,
            status: "error",
            message,
            errors,
        }
    }
}

/// The current time, RFC 3339 with milliseconds, UTC.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let outcome = self.outcome();
        let retry_after = self.retry_after();
        let message = self.to_string();
        let envelope = ErrorEnvelope::new(message, self.field_errors());
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(outcome);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_spec_table() {
        let cases = [
            (ApiError::MalformedJson("x".into()), 400),
            (ApiError::Validation(vec![]), 400),
            (
                ApiError::BodyTimeout(std::time::Duration::from_secs(1)),
                408,
            ),
            (ApiError::BodyTooLarge { limit: 1 }, 413),
            (
                ApiError::RateLimited {
                    scope: LimitScope::Pair,
                    retry_after: std::time::Duration::from_millis(1),
                },
                429,
            ),
            (ApiError::Abandoned, 502),
            (ApiError::StoreUnavailable, 503),
            (ApiError::UnsupportedMediaType, 415),
            (ApiError::IdempotencyConflict, 422),
            (ApiError::GatewayUnreachable, 502),
            (ApiError::GatewayNotJson(200), 502),
            (ApiError::GatewayAnswerTooLarge, 502),
            (ApiError::Overloaded, 503),
            (ApiError::Draining, 503),
            (ApiError::DeadlineExceeded, 504),
            (ApiError::AttemptsTimedOut, 504),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn shed_answers_carry_retry_after() {
        let response = ApiError::Overloaded.into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let response = ApiError::Validation(vec![]).into_response();
        assert!(response.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn rate_limited_answers_name_the_field_and_round_retry_after_up() {
        let response = ApiError::RateLimited {
            scope: LimitScope::Sender,
            retry_after: std::time::Duration::from_millis(1_200),
        }
        .into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        let errors = ApiError::RateLimited {
            scope: LimitScope::Pair,
            retry_after: std::time::Duration::ZERO,
        }
        .field_errors()
        .unwrap();
        assert_eq!(errors[0].field, "to");
        assert_eq!(
            whole_seconds(std::time::Duration::MAX),
            u64::MAX,
            "saturates"
        );
    }

    #[test]
    fn conflict_names_the_message_id_field() {
        let errors = ApiError::IdempotencyConflict.field_errors().unwrap();
        assert_eq!(errors[0].field, "messageId");
    }
}
