//! The relay's HTTP/1 server (SPEC "Connections and slow clients"): the accept loop, the
//! head and idle timeouts, the connection limit, and the last step of the drain.
//!
//! `axum::serve` can neither time a request head nor bound connections, so the relay drives
//! hyper itself, as `axum::serve` does (a task per connection, the `Router` cloned per
//! request), and adds:
//!
//! - **Head and idle timeouts from the one timer hyper keeps anyway.** hyper's
//!   `header_read_timeout` starts whenever hyper begins to wait for a request head: on a new
//!   connection, and again right after each answer on a kept-alive one (hyper 1.x,
//!   `proto/h1/conn.rs`, `poll_read_head`, which asks its `hyper::rt::Timer` for a new sleep each time).
//!   Left alone it would close every idle keep-alive connection after
//!   `RELAY_HEADER_TIMEOUT_MS`. So each connection gets a timer of its own whose sleeps know
//!   which wait they time: the first head gets `RELAY_HEADER_TIMEOUT_MS` from the accept; a
//!   later one gets `RELAY_IDLE_TIMEOUT_SECS` until its first byte arrives (the socket counts
//!   its reads), then `RELAY_HEADER_TIMEOUT_MS` from that byte. hyper closes the connection
//!   when either runs out. The body has its own whole-body time in the handler
//!   (`routes::send::read_body`), which answers 408.
//! - **`RELAY_MAX_CONNECTIONS`**, a semaphore: once a connection arrives with every slot taken,
//!   the loop holds it, stops accepting (the next ones wait in the kernel's backlog), logs it
//!   (rate-limited) and sheds the connections that are waiting for a request (exactly those
//!   hold a head sleep), again every `SHED_INTERVAL` until a slot is free. Shedding is for a
//!   connection that waits, not for reaching the limit, so kept-alive clients are not closed
//!   just because they are many. A connection with a request in progress is never shed. The
//!   limit is capped below the file-descriptor limit: `connection_cap`.
//! - **Accept errors never end the loop.** Out of file descriptors it logs (rate-limited), sheds
//!   and backs off for `ACCEPT_BACKOFF`; a connection gone before it was accepted is skipped.
//! - **The drain**: when `close` resolves, the loop stops accepting and every connection closes
//!   gracefully (hyper finishes the answer under way; idle ones close at once); when `stop`
//!   resolves, whatever is left is cut. `CancellationToken`s carry both, a `TaskTracker` counts
//!   the connections.
//!
//! Per request this costs what any head timeout costs in hyper (it boxes a sleep per head),
//! plus a counter bump per socket read and, on each wake-up of a connection's task, a poll of
//! that connection's own cancellation token (in place of `axum::serve`'s shared shutdown
//! watch). Everything else is allocated once per connection.
//!
//! The rooms: `accept` holds the loop, the limit, shedding and accept errors; `timer` the head
//! and idle timers and the counting socket; `fd` the file-descriptor limit and the cap it
//! puts on connections. This file holds what the server takes from the configuration and the
//! life of one connection.

mod accept;
pub(crate) mod fd;
mod timer;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tower::Service as _;

use crate::config::Config;
use accept::Signals;
use fd::connection_cap;
pub(crate) use fd::fd_limit;
use timer::{Activity, RequestTimer, Socket};

/// While the loop is at the connection limit, how often it sheds waiting connections. Each
/// round wakes every connection once; a liveness probe waits about this long at most.
pub(crate) const SHED_INTERVAL: Duration = Duration::from_millis(100);

/// How long the loop waits after an accept error other than a connection already gone.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the server takes from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// `RELAY_HEADER_TIMEOUT_MS`.
    pub header_timeout: Duration,
    /// `RELAY_IDLE_TIMEOUT_SECS`.
    pub idle_timeout: Duration,
    /// `RELAY_MAX_CONNECTIONS`, capped by `connection_cap`.
    pub max_connections: usize,
}

impl Options {
    /// The options for `config` under a soft file-descriptor limit of `fd_limit`.
    pub(crate) fn new(config: &Config, fd_limit: Option<u64>) -> Self {
        let connections = config.connections;
        Self {
            header_timeout: connections.header_timeout,
            idle_timeout: connections.idle_timeout,
            max_connections: connection_cap(
                connections.max_connections,
                config.max_in_flight,
                fd_limit,
            ),
        }
    }
}

/// Serves `router` on `listener` until `close` resolves, then closes every connection
/// gracefully; returns once they are all closed, or once `stop` resolves, cutting the rest.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: Options,
    close: impl Future<Output = ()>,
    stop: impl Future<Output = ()>,
) {
    accept::run(listener, router, options, close, stop).await;
}

/// One connection, from accept to close.
async fn connection(
    stream: TcpStream,
    router: Router,
    options: Options,
    signals: Arc<Signals>,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    // Small request/answer exchanges: Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let socket = Socket {
        stream,
        activity: Arc::clone(&activity),
    };
    let mut http = http1::Builder::new();
    http.timer(RequestTimer {
        activity: Arc::clone(&activity),
        header: options.header_timeout,
        idle: options.idle_timeout,
    })
    .header_read_timeout(options.header_timeout);
    let service = service_fn(move |request: hyper::Request<Incoming>| router.clone().call(request));
    let mut conn = pin!(http.serve_connection(TokioIo::new(socket), service));
    loop {
        let signal = signals.subscribe();
        tokio::select! {
            biased;
            result = conn.as_mut() => return ended(result),
            () = signal.cancelled() => {}
        }
        if signals.closing() || activity.awaiting_request() {
            break;
        }
    }
    // hyper closes an idle connection at once and a busy one after its answer.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        biased;
        result = conn.as_mut() => ended(result),
        () = stop.cancelled() => tracing::debug!("connection cut at the end of the grace time"),
    }
}

fn ended(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // Timeouts, resets, malformed requests: the client's doing, not worth more than debug.
        tracing::debug!(%error, "connection ended");
    }
}
