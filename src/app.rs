//! The application: the router and `serve` with its drain (STYLE "Building the app"). `main`,
//! `--mock-upstream` and every test build the same app from an [`AppState`]; `serve` runs it on
//! the relay's own accept loop ([`crate::server`]).

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::{get, post};
use http::{HeaderValue, Request as HttpRequest};
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::routes::{messages, ops, send, templates};
use crate::sends::SEND_TYPES;
use crate::server;
use crate::state::AppState;

/// Request ids: 128 random bits as 32 hex digits (fastrand: no syscall per request), written
/// on the stack: the header value is the one allocation.
#[derive(Clone, Copy, Default)]
pub(crate) struct MakeRandomId;

impl MakeRequestId for MakeRandomId {
    fn make_request_id<B>(&mut self, _: &HttpRequest<B>) -> Option<RequestId> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bits = fastrand::u128(..);
        let mut id = [0u8; 32];
        for digit in id.iter_mut().rev() {
            *digit = HEX[(bits & 0xf) as usize];
            bits >>= 4;
        }
        HeaderValue::from_bytes(&id).ok().map(RequestId::new)
    }
}

/// The router. Does no I/O.
pub(crate) fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for send_type in &SEND_TYPES {
        let kind = send_type.kind;
        // One handler per type, on its own path and on the gateway's (the alias). Only POST
        // reaches it: other methods get axum's 405 and are neither logged nor counted.
        let handler =
            post(move |state: State<AppState>, request: Request| send::send(state, kind, request));
        router = router
            .route(send_type.path, handler.clone())
            .route(send_type.gateway_path, handler);
    }
    // The template listing takes a slot only when it calls the gateway.
    let router = router
        .route(crate::templates::PATH, get(templates::list))
        .route(crate::templates::ALIAS_PATH, get(templates::list_by_path));
    // The ops routes take no slot, so they keep answering under overload and while draining.
    let router = router
        .route(
            "/messages/{message_id}",
            get(messages::get).delete(messages::cancel),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi));
    router.with_state(state).layer(
        ServiceBuilder::new()
            // The caller's x-request-id, or a new one, before anything logs.
            .layer(SetRequestIdLayer::x_request_id(MakeRandomId))
            // Echoed on every answer, ours and the gateway's.
            .layer(PropagateRequestIdLayer::x_request_id()),
    )
}

/// Serves until `shutdown` resolves, then drains: `/readyz` turns 503, new sends get 503,
/// sends under way finish (up to `RELAY_SHUTDOWN_GRACE_SECS`), and connections close; nothing
/// is left 1 s after the grace time. The connections themselves (timeouts, limit) are
/// `server`'s.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_all(listener, None, state, shutdown).await
}

/// [`serve`], with the webhook listener (`RELAY_WEBHOOK_LISTEN`) when there is one, and the
/// events' delivery worker when `RELAY_EVENTS_URL` is set. The webhook listener stops taking
/// callbacks when the drain begins (the provider retries them on another replica); the worker
/// runs until the sends are drained, then stops: with Redis, what it had not delivered waits
/// in the stream.
pub async fn serve_all(
    listener: TcpListener,
    webhooks: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain = state.shutdown.clone();
    let grace = state.config.shutdown_grace;
    let _worker = state.start_events_worker().map(AbortOnDropHandle::new);
    // Takes queued sends while serving; it stops taking them when the drain begins.
    let _queue = state.start_queue_worker().map(AbortOnDropHandle::new);
    let _webhooks = webhooks.map(|listener| {
        let options = server::Options::new(&state.config, server::fd_limit());
        let router = crate::webhooks::router(state.clone());
        let begun = drain.clone();
        let stopped = drain.clone();
        let close = async move { begun.begun().await };
        let stop = async move {
            stopped.begun().await;
            tokio::time::sleep(grace.saturating_add(Duration::from_secs(1))).await;
        };
        AbortOnDropHandle::new(tokio::spawn(server::serve(
            listener, router, options, close, stop,
        )))
    });
    // Drops idle rate-limit keys while serving; the handle ends the task when `serve` returns.
    let _sweeper = (!state.limits.is_off())
        .then(|| AbortOnDropHandle::new(tokio::spawn(state.limits.clone().sweep_periodically())));
    let options = server::Options::new(&state.config, server::fd_limit());
    let router = app(state);
    let close = {
        let drain = drain.clone();
        async move {
            shutdown.await;
            drain.begin();
            tracing::info!(sends = drain.sends(), "draining");
            if !drain.wait_for_sends(grace).await {
                tracing::warn!(
                    sends = drain.sends(),
                    "grace time over with sends unfinished"
                );
            }
        }
    };
    // Once sends are done, idle connections close and busy ones after their answer; a client
    // holding one open must not keep the process past its grace time.
    let stop = async move {
        drain.begun().await;
        tokio::time::sleep(grace.saturating_add(Duration::from_secs(1))).await;
    };
    server::serve(listener, router, options, close, stop).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_lowercase_hex_digits_and_differ() {
        let request = HttpRequest::new(());
        let mut make = MakeRandomId;
        let ids: Vec<String> = (0..3)
            .map(|_| {
                let id = make.make_request_id(&request).unwrap();
                id.header_value().to_str().unwrap().to_owned()
            })
            .collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
    }
}
