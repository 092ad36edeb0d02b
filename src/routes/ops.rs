//! Operational endpoints (SPEC "Operations"): `/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`. They sit outside load shedding, so they keep answering under overload and
//! during a drain.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::CONTENT_TYPE;

use crate::state::AppState;

/// The content type of the OpenMetrics text that prometheus-client writes; Prometheus reads it.
pub(crate) const METRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`: 200 while the process serves.
pub(crate) async fn healthz() -> Response {
    json(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// `GET /readyz`: 200 until shutdown begins, then 503.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_draining() {
        json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
    } else {
        json(StatusCode::OK, r#"{"status":"ready"}"#)
    }
}

/// `GET /metrics`: Prometheus exposition.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.encode(state.dedup.entries());
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// `GET /openapi.json`: the API document, rendered once at start-up.
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "application/json")], state.openapi.clone()).into_response()
}

fn json(status: StatusCode, body: &'static str) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}
