//! The accept loop (SPEC "Connections and slow clients"): `RELAY_MAX_CONNECTIONS`, shedding
//! the connections that wait for a request while at the limit, accept errors that never end the
//! loop, and the last step of the drain. The module doc of [`crate::server`] says why each is
//! there.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fd::{fd_limit, is_out_of_files};
use super::{ACCEPT_BACKOFF, Options, SHED_INTERVAL, connection};
use crate::throttle::Throttle;

/// Where connections come from: the listener, or a test's stand-in that fails on cue.
pub(super) trait Accept {
    fn accept(&mut self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

pub(super) async fn run(
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
            at_limit: Throttle::new(),
            accept_errors: Throttle::new(),
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
        let out_of_files = is_out_of_files(error);
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
pub(super) struct Signals {
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
    pub(super) fn subscribe(&self) -> CancellationToken {
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

    pub(super) fn closing(&self) -> bool {
        self.all.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
