//! `GET /templates?from=<number>` and its alias `GET /api/v1/template/{number}` (SPEC "Every
//! Lipachat send", last paragraph): the gateway's "Listing Message Templates" answer for a
//! business number, so a service can check a template's name, language and placeholders
//! without the key.
//!
//! The handler: refuse while draining → the number (`from`, or `LIPACHAT_DEFAULT_FROM`) → the
//! cache ([`crate::templates`]) → on a miss, a `RELAY_MAX_IN_FLIGHT` slot and the gateway,
//! through the senders' retry stack. A cached answer says how long it stays fresh in
//! `cache-control: max-age=<seconds left>` (no `Age` header, so a client reads it as is);
//! every other answer, which nothing caches, says `no-store`. A gateway answer that is not
//! 2xx JSON is passed on as the sends pass theirs: JSON byte for byte, anything else a 502.

use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Uri};

use crate::error::ApiError;
use crate::headers::HEADER_REQUEST_ID;
use crate::outcome::ListingResult;
use crate::phone::PhoneNumber;
use crate::state::AppState;
use crate::telemetry;
use crate::templates::NotCached;
use crate::upstream::UpstreamRequest;
use crate::validate::FieldError;

/// The query parameter naming the business number.
pub(crate) const QUERY_FROM: &str = "from";

/// `GET /templates?from=<number>`.
pub(crate) async fn list(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let number = number_from_query(uri.query(), state.config.default_from.as_ref());
    answer(&state, number, &headers).await
}

/// `GET /api/v1/template/{number}`: the gateway's own path.
pub(crate) async fn list_by_path(
    State(state): State<AppState>,
    number: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let number = match number {
        Ok(Path(text)) => parse("number", &text),
        Err(_) => Err(invalid("number", "must be a phone number")),
    };
    answer(&state, number, &headers).await
}

/// `from` from the query string (one of them), or the default sender.
pub(crate) fn number_from_query(
    query: Option<&str>,
    default_from: Option<&PhoneNumber>,
) -> Result<PhoneNumber, ApiError> {
    let mut given = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(name, _)| name == QUERY_FROM)
        .map(|(_, value)| value);
    match (given.next(), given.next()) {
        (Some(_), Some(_)) => Err(invalid(QUERY_FROM, "must appear only once")),
        (Some(text), None) => parse(QUERY_FROM, &text),
        (None, _) => default_from.cloned().ok_or_else(|| {
            invalid(
                QUERY_FROM,
                "is required (no LIPACHAT_DEFAULT_FROM is configured)",
            )
        }),
    }
}

fn parse(field: &'static str, text: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse(text).map_err(|message| invalid(field, message))
}

fn invalid(field: &'static str, message: &'static str) -> ApiError {
    ApiError::Validation(vec![FieldError::new(field, message)])
}

/// What one request ended with, for its answer, metrics and log line.
struct Outcome {
    response: Response,
    result: ListingResult,
    attempts: u32,
}

async fn answer(
    state: &AppState,
    number: Result<PhoneNumber, ApiError>,
    headers: &HeaderMap,
) -> Response {
    let started = Instant::now();
    let masked = number.as_ref().ok().map(PhoneNumber::masked);
    let Outcome {
        mut response,
        result,
        attempts,
    } = match number {
        Ok(number) => lookup(state, number, headers, started).await,
        Err(error) => refused(error),
    };
    if result != ListingResult::Cached && result != ListingResult::Fetched {
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    state.metrics.record_template_listing(result);
    telemetry::log_listing(
        headers.get(HEADER_REQUEST_ID).and_then(|v| v.to_str().ok()),
        masked.as_deref(),
        result,
        response.status().as_u16(),
        attempts,
        started.elapsed(),
    );
    response
}

fn refused(error: ApiError) -> Outcome {
    Outcome {
        response: error.into_response(),
        result: ListingResult::Failed,
        attempts: 0,
    }
}

async fn lookup(
    state: &AppState,
    number: PhoneNumber,
    headers: &HeaderMap,
    started: Instant,
) -> Outcome {
    if state.shutdown.is_draining() {
        return refused(ApiError::Draining);
    }
    if let Some(listing) = state.templates.cached(&number).await {
        return Outcome {
            response: cached(&listing),
            result: ListingResult::Cached,
            attempts: 0,
        };
    }
    // Only a call to the gateway takes a slot: a cached answer costs nothing.
    let Some(_slot) = state.take_slot() else {
        return refused(ApiError::Overloaded);
    };
    let deadline = state.gateway.deadline_from(started);
    let request = UpstreamRequest::templates(number.clone(), headers, deadline);
    let found = state
        .templates
        .get_or_fetch(number, state.gateway.forward(request.clone()))
        .await;
    let attempts = request.attempts();
    match found {
        Ok((listing, fresh)) => Outcome {
            response: cached(&listing),
            result: if fresh {
                ListingResult::Fetched
            } else {
                ListingResult::Cached
            },
            attempts,
        },
        Err(not_cached) => Outcome {
            response: not_cached_answer(&not_cached),
            result: ListingResult::Failed,
            attempts,
        },
    }
}

/// A cached listing, with the seconds it stays fresh.
fn cached(listing: &crate::templates::Listing) -> Response {
    let max_age = listing.max_age(Instant::now());
    let mut response = passthrough(
        listing.status,
        listing.content_type.clone(),
        listing.body.clone(),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        response.headers_mut().insert(CACHE_CONTROL, value);
    }
    response
}

/// The gateway's own answer when it is JSON, ours otherwise.
fn not_cached_answer(not_cached: &NotCached) -> Response {
    match not_cached {
        NotCached::Answer(reply) if reply.is_json => {
            passthrough(reply.status, reply.content_type.clone(), reply.body.clone())
        }
        NotCached::Answer(reply) => ApiError::GatewayNotJson(reply.status.as_u16()).into_response(),
        NotCached::Upstream(error) => ApiError::from(error.clone()).into_response(),
    }
}

fn passthrough(
    status: http::StatusCode,
    content_type: Option<HeaderValue>,
    body: bytes::Bytes,
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<PhoneNumber, ApiError>) -> (String, String) {
        match result {
            Err(ApiError::Validation(errors)) => (
                errors[0].field.clone().into_owned(),
                errors[0].message.clone().into_owned(),
            ),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn from_is_read_from_the_query_and_normalised() {
        let number = number_from_query(Some("from=%2B254%20110-090747"), None).unwrap();
        assert_eq!(number.digits(), "254110090747");
        let number = number_from_query(Some("x=1&from=254110090747&y"), None).unwrap();
        assert_eq!(number.digits(), "254110090747");
    }

    #[test]
    fn from_defaults_to_the_default_sender() {
        let default = PhoneNumber::parse("254700000001").unwrap();
        for query in [None, Some(""), Some("other=1")] {
            let number = number_from_query(query, Some(&default)).unwrap();
            assert_eq!(number, default);
        }
        let given = number_from_query(Some("from=254110090747"), Some(&default)).unwrap();
        assert_eq!(given.digits(), "254110090747");
    }

    #[test]
    fn from_is_required_without_a_default_sender() {
        assert_eq!(
            field_of(number_from_query(None, None)),
            (
                "from".into(),
                "is required (no LIPACHAT_DEFAULT_FROM is configured)".into()
            )
        );
    }

    #[test]
    fn a_bad_or_repeated_from_is_refused() {
        for query in ["from=12", "from=abc", "from=", "from=%FF%FE"] {
            assert_eq!(field_of(number_from_query(Some(query), None)).0, "from");
        }
        assert_eq!(
            field_of(number_from_query(
                Some("from=254110090747&from=254110090747"),
                None
            )),
            ("from".into(), "must appear only once".into())
        );
    }
}
