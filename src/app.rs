//! The application: shared state, the router, and `serve` with its drain (STYLE "Building
//! the app"). `main`, `--mock-upstream` and every test build the same app.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use http::{HeaderValue, Request};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::config::Config;
use crate::dedup::DedupStore;
use crate::metrics::Metrics;
use crate::routes::media::{self, PATH_MEDIA, PATH_MEDIA_ALIAS};
use crate::routes::ops;
use crate::shutdown::Drain;
use crate::upstream::{ClientBuildError, GatewayClient};

/// What every request shares, behind one `Arc`: extractors clone the state per request, and
/// a clone should be one reference count, not one per handle.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub gateway: GatewayClient,
    pub dedup: DedupStore,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    pub openapi: Bytes,
}

impl AppState {
    /// Builds the state for a configuration; fails only if the HTTP client cannot be built.
    pub fn new(config: Config) -> Result<Self, ClientBuildError> {
        let metrics = Arc::new(Metrics::new());
        let gateway = GatewayClient::new(&config, Arc::clone(&metrics))?;
        let dedup = DedupStore::new(config.dedup_capacity, config.dedup_ttl);
        let openapi = Bytes::from(crate::openapi::document_json(config.default_from.is_some()));
        Ok(Self(Arc::new(Shared {
            config: Arc::new(config),
            gateway,
            dedup,
            metrics,
            drain: Drain::new(),
            openapi,
        })))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Request ids: 128 random bits as 32 hex digits (fastrand: no syscall per request).
#[derive(Clone, Copy, Default)]
pub struct MakeRandomId;

impl MakeRequestId for MakeRandomId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = format!("{:032x}", fastrand::u128(..));
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The router. Does no I/O.
pub fn app(state: AppState) -> Router {
    let limit = Arc::new(Semaphore::new(state.config.max_in_flight));
    let media = Router::new()
        .route(PATH_MEDIA, post(media::send_media))
        .route(PATH_MEDIA_ALIAS, post(media::send_media))
        .layer(
            ServiceBuilder::new()
                // Outermost: every /media answer, shed ones included, gets its log line and
                // its count.
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    media::log_request,
                ))
                // Turns the load-shed error below into our 503 envelope with Retry-After.
                .layer(HandleErrorLayer::new(media::overloaded))
                // Refuses at once instead of queueing when the limit below is reached.
                .load_shed()
                // One semaphore for both paths (a per-route limit would double the total).
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(limit))
                // Read by the `Bytes` extractor, whose 413 rejection the handler maps.
                .layer(DefaultBodyLimit::max(state.config.max_body_bytes)),
        );
    let ops = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi));
    media.merge(ops).with_state(state).layer(
        ServiceBuilder::new()
            // The caller's x-request-id, or a new one, before anything logs.
            .layer(SetRequestIdLayer::x_request_id(MakeRandomId))
            // Echoed on every answer, ours and the gateway's.
            .layer(PropagateRequestIdLayer::x_request_id()),
    )
}

/// Serves until `shutdown` resolves, then drains: `/readyz` turns 503, new sends get 503,
/// sends under way finish (up to `RELAY_SHUTDOWN_GRACE_SECS`), and connections close.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain = state.drain.clone();
    let grace = state.config.shutdown_grace;
    let router = app(state);
    let drained = {
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
    let listener = listener.tap_io(|stream| {
        // Small request/answer exchanges: Nagle would only add latency.
        let _ = stream.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown(drained);
    // Once sends are done, axum closes idle connections and waits for open requests; a
    // client holding one open must not keep the process past its grace time.
    let deadline = async {
        drain.begun().await;
        tokio::time::sleep(grace + Duration::from_secs(1)).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("grace time over; closing with connections still open");
            Ok(())
        }
    }
}
