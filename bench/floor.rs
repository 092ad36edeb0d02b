//! The floor for bench/run.sh: the bare axum + reqwest forwarder, the least any relay built on
//! this stack can cost. `POST /media` sends the body to `FLOOR_UPSTREAM` with the `apiKey`
//! header and hands back the gateway's status, content type and body; `GET /healthz` is 200.
//! Nothing else: no validation, dedup, rate limits, metrics, logs, retries or timeouts.
//!
//! The relay's own work (everything this file leaves out) is measured against it: same
//! reqwest dependency and features, same allocator (jemalloc) and the same runtime choice as
//! `runtime_builder()` in src/main.rs, so pinned to one core both run tokio's current-thread
//! scheduler. Configured by FLOOR_LISTEN (address), FLOOR_UPSTREAM (the gateway's full media
//! URL) and FLOOR_API_KEY. A failed send answers 502 and a bad request axum's own rejection:
//! nothing a request can do makes it panic.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};

/// The relay's allocator, so the comparison is of the code, not of malloc.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ENV_LISTEN: &str = "FLOOR_LISTEN";
const ENV_UPSTREAM: &str = "FLOOR_UPSTREAM";
const ENV_API_KEY: &str = "FLOOR_API_KEY";
const HEADER_API_KEY: HeaderName = HeaderName::from_static("apikey");
const JSON: HeaderValue = HeaderValue::from_static("application/json");

struct Floor {
    client: reqwest::Client,
    /// Parsed once: a `Url` clone per request, as the relay does.
    upstream: reqwest::Url,
    api_key: HeaderValue,
}

async fn media(State(floor): State<Arc<Floor>>, body: Bytes) -> Response {
    let sent = floor
        .client
        .post(floor.upstream.clone())
        .header(HEADER_API_KEY, floor.api_key.clone())
        .header(CONTENT_TYPE, JSON)
        .body(body)
        .send()
        .await;
    let Ok(answer) = sent else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let content_type = answer.headers().get(CONTENT_TYPE).cloned();
    let Ok(bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = (status, bytes).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}

fn var(name: &'static str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name}: is required"))
}

fn floor() -> Result<(SocketAddr, Floor), String> {
    let listen = var(ENV_LISTEN)?;
    let listen = listen
        .parse()
        .map_err(|e| format!("{ENV_LISTEN}: {e}, got {listen:?}"))?;
    let upstream = var(ENV_UPSTREAM)?;
    let upstream = reqwest::Url::parse(&upstream)
        .map_err(|e| format!("{ENV_UPSTREAM}: {e}, got {upstream:?}"))?;
    let mut api_key = HeaderValue::from_str(&var(ENV_API_KEY)?)
        .map_err(|_| format!("{ENV_API_KEY}: not a valid header value"))?;
    api_key.set_sensitive(true);
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let floor = Floor {
        client,
        upstream,
        api_key,
    };
    Ok((listen, floor))
}

/// src/main.rs's `runtime_builder()`: one thread when the process may use one CPU.
fn runtime_builder() -> tokio::runtime::Builder {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

async fn serve(listen: SocketAddr, floor: Floor) -> Result<(), String> {
    let app = Router::new()
        .route("/media", post(media))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .with_state(Arc::new(floor));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{ENV_LISTEN}: cannot listen on {listen}: {e}"))?;
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("server error: {e}"))
}

fn main() -> ExitCode {
    let served = floor().and_then(|(listen, floor)| {
        let runtime = runtime_builder()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        runtime.block_on(serve(listen, floor))
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floor: {error}");
            ExitCode::FAILURE
        }
    }
}
