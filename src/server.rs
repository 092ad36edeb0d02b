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
//!   `proto/h1/conn.rs`, `poll_read_head`, which asks its [`Timer`] for a new sleep each time).
//!   Left alone it would close every idle keep-alive connection after
//!   `RELAY_HEADER_TIMEOUT_MS`. So each connection gets a [`Timer`] of its own whose sleeps know
//!   which wait they time: the first head gets `RELAY_HEADER_TIMEOUT_MS` from the accept; a
//!   later one gets `RELAY_IDLE_TIMEOUT_SECS` until its first byte arrives (the socket counts
//!   its reads), then `RELAY_HEADER_TIMEOUT_MS` from that byte. hyper closes the connection
//!   when either runs out. The body has its own whole-body time in the handler
//!   (`routes::send::read_body`), which answers 408.
//! - **`RELAY_MAX_CONNECTIONS`**, a semaphore: once a connection arrives with every slot taken,
//!   the loop holds it, stops accepting (the next ones wait in the kernel's backlog), logs it
//!   (rate-limited) and sheds the connections that are waiting for a request (exactly those
//!   hold a head sleep), again every [`SHED_INTERVAL`] until a slot is free. Shedding is for a
//!   connection that waits, not for reaching the limit, so kept-alive clients are not closed
//!   just because they are many. A connection with a request in progress is never shed. The
//!   limit is capped below the file-descriptor limit: [`connection_cap`].
//! - **Accept errors never end the loop.** Out of file descriptors it logs (rate-limited), sheds
//!   and backs off for [`ACCEPT_BACKOFF`]; a connection gone before it was accepted is skipped.
//! - **The drain**: when `close` resolves, the loop stops accepting and every connection closes
//!   gracefully (hyper finishes the answer under way; idle ones close at once); when `stop`
//!   resolves, whatever is left is cut. `CancellationToken`s carry both, a `TaskTracker` counts
//!   the connections.
//!
//! Per request this costs what any head timeout costs in hyper (it boxes a sleep per head),
//! plus a counter bump per socket read and, on each wake-up of a connection's task, a poll of
//! that connection's own cancellation token (in place of `axum::serve`'s shared shutdown
//! watch). Everything else is allocated once per connection.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service as _;

use crate::config::Config;

/// While the loop is at the connection limit, how often it sheds waiting connections. Each
/// round wakes every connection once; a liveness probe waits about this long at most.
pub const SHED_INTERVAL: Duration = Duration::from_millis(100);

/// How long the loop waits after an accept error other than a connection already gone.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per condition (connection limit, accept errors) in this time.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// File descriptors kept for everything but client connections and gateway connections: the
/// listener, the runtime's epoll and wakers, stdio, Redis connections, DNS look-ups, files.
pub const FD_RESERVE: u64 = 64;

/// `EMFILE` and `ENFILE` (the process's or the system's file table is full): 24 and 23 on
/// Linux and the BSDs.
const OUT_OF_FILES: [i32; 2] = [24, 23];

/// What the server takes from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `RELAY_HEADER_TIMEOUT_MS`.
    pub header_timeout: Duration,
    /// `RELAY_IDLE_TIMEOUT_SECS`.
    pub idle_timeout: Duration,
    /// `RELAY_MAX_CONNECTIONS`, capped by [`connection_cap`].
    pub max_connections: usize,
}

impl Options {
    /// The options for `config` under a soft file-descriptor limit of `fd_limit`.
    pub fn new(config: &Config, fd_limit: Option<u64>) -> Self {
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

/// The soft limit on open files, before and after [`raise_fd_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft limit on open files to the hard limit, which needs no privilege. Called
/// once at start, before the listener is bound.
pub fn raise_fd_limit() -> io::Result<FdLimit> {
    let (before, _) = rlimit::Resource::NOFILE.get()?;
    let now = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(FdLimit { before, now })
}

/// The current soft limit on open files, where the platform has one.
pub fn fd_limit() -> Option<u64> {
    rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft)
}

/// `RELAY_MAX_CONNECTIONS`, capped so that client connections leave room under the
/// file-descriptor limit for [`FD_RESERVE`] and one gateway connection per send in flight.
/// The room kept is at most half the limit, so a low limit still serves clients; beyond the
/// estimate, accept errors are the backstop (logged, shed, retried).
pub fn connection_cap(configured: usize, max_in_flight: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let in_flight = u64::try_from(max_in_flight).unwrap_or(u64::MAX);
    let reserve = FD_RESERVE.saturating_add(in_flight).min(limit / 2);
    let room = usize::try_from(limit - reserve).unwrap_or(usize::MAX);
    configured.min(room).max(1)
}

/// Serves `router` on `listener` until `close` resolves, then closes every connection
/// gracefully; returns once they are all closed, or once `stop` resolves, cutting the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: Options,
    close: impl Future<Output = ()>,
    stop: impl Future<Output = ()>,
) {
    run(listener, router, options, close, stop).await;
}

/// Where connections come from: the listener, or a test's stand-in that fails on cue.
trait Accept {
    fn accept(&mut self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

async fn run(
    mut listener: impl Accept,
    router: Router,
    options: Options,
    close: impl Future<Output = ()>,
    stop: impl Future<Output = ()>,
) {
    let mut acceptor = Acceptor::new(options);
    {
        let mut close = pin!(close);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut close => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(error) if is_connection_gone(&error) => {
                    tracing::debug!(%error, "a connection was gone before it was accepted");
                    continue;
                }
                Err(error) => {
                    acceptor.accept_failed(&error);
                    tokio::select! {
                        biased;
                        () = &mut close => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                    continue;
                }
            };
            // At the limit, this connection waits here (and the next ones in the backlog)
            // while room is made for it.
            let slot = tokio::select! {
                biased;
                () = &mut close => break,
                slot = acceptor.slot() => slot,
            };
            acceptor.spawn(stream, router.clone(), slot);
        }
    }
    // New connections are refused from here on rather than left in the backlog.
    drop(listener);
    acceptor.close(stop).await;
}

/// Errors about the one connection being accepted, not about the listener.
fn is_connection_gone(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The accept loop's state. Only the loop's task touches it.
struct Acceptor {
    options: Options,
    /// `max_connections` permits; a connection's task holds one until it ends.
    slots: Arc<Semaphore>,
    signals: Arc<Signals>,
    /// Cancelled when `stop` resolves: connections still open are cut.
    stop: CancellationToken,
    connections: TaskTracker,
    last_shed: Option<Instant>,
    at_limit: Throttle,
    accept_errors: Throttle,
}

impl Acceptor {
    fn new(options: Options) -> Self {
        Self {
            options,
            slots: Arc::new(Semaphore::new(options.max_connections)),
            signals: Arc::new(Signals::new()),
            stop: CancellationToken::new(),
            connections: TaskTracker::new(),
            last_shed: None,
            at_limit: Throttle::default(),
            accept_errors: Throttle::default(),
        }
    }

    /// A slot for a connection just accepted: at once below the limit; at the limit, once a
    /// connection ends, shedding the ones waiting for a request meanwhile.
    async fn slot(&mut self) -> OwnedSemaphorePermit {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return slot;
        }
        if let Some(skipped) = self.at_limit.allow(Instant::now()) {
            tracing::warn!(
                max_connections = self.options.max_connections,
                skipped,
                "connection limit reached: new connections wait; closing connections that \
                 wait for a request"
            );
        }
        loop {
            self.shed();
            match tokio::time::timeout(SHED_INTERVAL, Arc::clone(&self.slots).acquire_owned()).await
            {
                Ok(Ok(slot)) => return slot,
                // The semaphore is never closed; were it, no slot would ever come.
                Ok(Err(_)) => return std::future::pending().await,
                Err(_) => {}
            }
        }
    }

    /// Closes the connections waiting for a request, at most once per [`SHED_INTERVAL`].
    fn shed(&mut self) {
        let now = Instant::now();
        if self
            .last_shed
            .is_some_and(|last| now.duration_since(last) < SHED_INTERVAL)
        {
            return;
        }
        self.last_shed = Some(now);
        self.signals.shed();
    }

    fn accept_failed(&mut self, error: &io::Error) {
        let out_of_files = error
            .raw_os_error()
            .is_some_and(|code| OUT_OF_FILES.contains(&code));
        if let Some(skipped) = self.accept_errors.allow(Instant::now()) {
            let open = self
                .options
                .max_connections
                .saturating_sub(self.slots.available_permits());
            if out_of_files {
                tracing::warn!(
                    %error,
                    skipped,
                    open,
                    fd_limit = fd_limit(),
                    "out of file descriptors: cannot accept; closing connections that wait \
                     for a request, then accepting again"
                );
            } else {
                tracing::error!(%error, skipped, open, "accept failed; accepting again");
            }
        }
        if out_of_files {
            self.shed();
        }
    }

    fn spawn(&self, stream: TcpStream, router: Router, slot: OwnedSemaphorePermit) {
        self.connections.spawn(connection(
            stream,
            router,
            self.options,
            Arc::clone(&self.signals),
            self.stop.clone(),
            slot,
        ));
    }

    /// Closes every connection gracefully and waits for them, until `stop` resolves.
    async fn close(self, stop: impl Future<Output = ()>) {
        self.signals.close_all();
        self.connections.close();
        tokio::select! {
            () = self.connections.wait() => {}
            () = stop => {
                tracing::warn!(
                    connections = self.connections.len(),
                    "grace time over; closing with connections still open"
                );
                self.stop.cancel();
                self.connections.wait().await;
            }
        }
    }
}

/// What connections are told, as cancellation tokens: each connection holds a child of the
/// current shedding round, itself a child of `all`. Shedding cancels the round (every
/// connection wakes once, and those with a request in progress take a child of the next
/// round); the drain cancels `all`. A token per connection keeps its wake-ups off any lock
/// shared with other connections.
struct Signals {
    all: CancellationToken,
    round: Mutex<CancellationToken>,
}

impl Signals {
    fn new() -> Self {
        let all = CancellationToken::new();
        let round = Mutex::new(all.child_token());
        Self { all, round }
    }

    /// A connection's token for the current round.
    fn subscribe(&self) -> CancellationToken {
        self.round
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .child_token()
    }

    fn shed(&self) {
        let next = self.all.child_token();
        let round = std::mem::replace(
            &mut *self.round.lock().unwrap_or_else(PoisonError::into_inner),
            next,
        );
        round.cancel();
    }

    fn close_all(&self) {
        self.all.cancel();
    }

    fn closing(&self) -> bool {
        self.all.is_cancelled()
    }
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

/// What a connection's socket and timer share. It is only touched from the connection's own
/// task; the atomics are there because hyper wants its timer `Sync`.
#[derive(Debug, Default)]
struct Activity {
    /// Socket reads that returned data.
    reads: AtomicU64,
    /// Live head sleeps: hyper holds one exactly while it waits for a request head.
    heads: AtomicUsize,
    /// Whether hyper has waited for a head before: only the first wait has no idle part.
    kept_alive: AtomicBool,
}

impl Activity {
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Whether the connection is between requests (or has part of a head only).
    fn awaiting_request(&self) -> bool {
        self.heads.load(Ordering::Relaxed) > 0
    }
}

/// The TCP stream, counting the reads that bring data for the connection's [`HeadSleep`].
struct Socket {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper writes head and body with one writev when the stream can.
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A connection's timer. hyper's HTTP/1 server asks it only for its header read timeout, with
/// `sleep_until(now + RELAY_HEADER_TIMEOUT_MS)` each time it begins to wait for a head.
struct RequestTimer {
    activity: Arc<Activity>,
    header: Duration,
    idle: Duration,
}

impl Timer for RequestTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let kept_alive = self.activity.kept_alive.swap(true, Ordering::Relaxed);
        let (deadline, idle_reads) = if kept_alive {
            // The wait began as the last answer went out: idle time first.
            let began = deadline.checked_sub(self.header).unwrap_or(deadline);
            (later(began, self.idle), Some(self.activity.reads()))
        } else {
            (deadline, None)
        };
        Box::pin(HeadSleep {
            sleep: tokio::time::sleep_until(deadline.into()),
            header: self.header,
            idle_reads,
            waiting: Waiting::new(Arc::clone(&self.activity)),
        })
    }

    fn now(&self) -> Instant {
        // Tokio's clock, so that paused-time tests see the same time as the sleeps.
        tokio::time::Instant::now().into_std()
    }
}

/// `at + duration`. Configured durations are at most about 31 years, which always fits; were
/// one not to, the wait ends at once rather than panic.
fn later(at: Instant, duration: Duration) -> Instant {
    at.checked_add(duration).unwrap_or(at)
}

pin_project_lite::pin_project! {
    /// hyper's wait for a request head: see the module's doc.
    struct HeadSleep {
        #[pin]
        sleep: tokio::time::Sleep,
        header: Duration,
        // While a kept-alive connection is idle: the socket's reads when the wait began.
        idle_reads: Option<u64>,
        waiting: Waiting,
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        // hyper polls this after every read that leaves the head incomplete.
        if let Some(reads) = *this.idle_reads
            && this.waiting.0.reads() != reads
        {
            // The first byte of the next head is in: from here, the header timeout.
            *this.idle_reads = None;
            let now = tokio::time::Instant::now();
            this.sleep
                .as_mut()
                .reset(later(now.into_std(), *this.header).into());
        }
        this.sleep.poll(cx)
    }
}

impl Sleep for HeadSleep {}

/// Counts a head sleep in [`Activity::heads`] while it lives.
struct Waiting(Arc<Activity>);

impl Waiting {
    fn new(activity: Arc<Activity>) -> Self {
        activity.heads.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.heads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Rate-limits one warning: a line at most every [`WARN_INTERVAL`], saying how many it
/// stands for.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttle {
    /// `Some(occurrences not logged since the last line)` when a line may be written now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn the_connection_limit_leaves_room_for_gateway_connections_and_files() {
        // Plenty of descriptors: the configured value stands.
        assert_eq!(connection_cap(4096, 1024, Some(1_048_576)), 4096);
        // 20000 - 64 - 1024.
        assert_eq!(connection_cap(100_000, 1024, Some(20_000)), 18_912);
        // A common default of 1024: the reserve is at most half of it.
        assert_eq!(connection_cap(4096, 1024, Some(1024)), 512);
        assert_eq!(connection_cap(4096, 8, Some(1024)), 952);
        // Never zero, and no limit means the configured value.
        assert_eq!(connection_cap(4096, 1024, Some(1)), 1);
        assert_eq!(connection_cap(4096, 1024, Some(0)), 1);
        assert_eq!(connection_cap(4096, 1024, None), 4096);
        assert_eq!(connection_cap(4096, usize::MAX, Some(u64::MAX)), 4096);
    }

    #[test]
    fn a_throttled_warning_says_how_many_it_stands_for() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.allow(start), Some(0));
        assert_eq!(throttle.allow(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.allow(start + Duration::from_secs(9)), None);
        assert_eq!(throttle.allow(start + WARN_INTERVAL), Some(2));
        assert_eq!(throttle.allow(start + WARN_INTERVAL), None);
    }

    fn timer(activity: &Arc<Activity>) -> RequestTimer {
        RequestTimer {
            activity: Arc::clone(activity),
            header: Duration::from_secs(1),
            idle: Duration::from_secs(10),
        }
    }

    /// hyper's call: `sleep_until(now + header timeout)`.
    fn head_wait(timer: &RequestTimer) -> Pin<Box<dyn Sleep>> {
        timer.sleep_until(timer.now() + timer.header)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_gets_the_header_timeout_from_the_accept() {
        let activity = Arc::new(Activity::default());
        let timer = timer(&activity);
        let started = tokio::time::Instant::now();
        let wait = head_wait(&timer);
        assert!(activity.awaiting_request());
        // Bytes that do not complete the head change nothing for the first one.
        activity.reads.fetch_add(1, Ordering::Relaxed);
        wait.await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(!activity.awaiting_request());
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_gets_the_idle_timeout_while_nothing_arrives() {
        let activity = Arc::new(Activity::default());
        let timer = timer(&activity);
        drop(head_wait(&timer));
        let started = tokio::time::Instant::now();
        head_wait(&timer).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_gets_the_header_timeout_from_its_first_byte() {
        let activity = Arc::new(Activity::default());
        let timer = timer(&activity);
        drop(head_wait(&timer));
        let started = tokio::time::Instant::now();
        let mut wait = head_wait(&timer);
        assert!(futures::poll!(wait.as_mut()).is_pending());
        tokio::time::sleep(Duration::from_secs(4)).await;
        activity.reads.fetch_add(1, Ordering::Relaxed);
        wait.await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    /// A log writer for one test: the lines land in a buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// The real listener, failing its first `failures` accepts with `error`.
    struct Failing {
        listener: TcpListener,
        failures: usize,
        error: fn() -> io::Error,
    }

    impl Accept for Failing {
        async fn accept(&mut self) -> io::Result<TcpStream> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err((self.error)());
            }
            Accept::accept(&mut self.listener).await
        }
    }

    async fn get_health(address: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn running_out_of_file_descriptors_is_logged_once_and_accepting_resumes() {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let failing = Failing {
            listener,
            failures: 3,
            // EMFILE
            error: || io::Error::from_raw_os_error(24),
        };
        let router = Router::new().route("/healthz", get(|| async { "ok" }));
        let options = Options {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
        };
        let (closed, close) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(
            failing,
            router,
            options,
            async {
                let _ = close.await;
            },
            std::future::pending(),
        ));
        let started = Instant::now();
        let answer = get_health(address).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() >= ACCEPT_BACKOFF * 3,
            "{:?}",
            started.elapsed()
        );
        closed.send(()).unwrap();
        server.await.unwrap();
        let text = logs.text();
        assert_eq!(
            text.matches("out of file descriptors").count(),
            1,
            "one line for three failures:\n{text}"
        );
    }

    #[tokio::test]
    async fn a_connection_gone_before_its_accept_is_skipped_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let failing = Failing {
            listener,
            failures: 50,
            error: || io::Error::from(io::ErrorKind::ConnectionAborted),
        };
        let router = Router::new().route("/healthz", get(|| async { "ok" }));
        let options = Options {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
        };
        let server = tokio::spawn(run(
            failing,
            router,
            options,
            std::future::pending(),
            std::future::pending(),
        ));
        let started = Instant::now();
        let answer = get_health(address).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() < ACCEPT_BACKOFF,
            "{:?}",
            started.elapsed()
        );
        server.abort();
    }

    #[tokio::test]
    async fn shedding_wakes_every_connection_once_and_draining_all_of_them() {
        let signals = Signals::new();
        let first = signals.subscribe();
        let second = signals.subscribe();
        signals.shed();
        assert!(first.is_cancelled() && second.is_cancelled());
        let next = signals.subscribe();
        assert!(!next.is_cancelled());
        assert!(!signals.closing());
        signals.close_all();
        assert!(next.is_cancelled());
        assert!(signals.closing());
        assert!(signals.subscribe().is_cancelled());
    }
}
