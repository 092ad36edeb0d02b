//! Readiness and drain (SPEC "Operations": SIGTERM or SIGINT), from tokio-util parts.
//!
//! [`Shutdown`] is a `CancellationToken`, cancelled when the drain begins, and the `TaskTracker`
//! every new send is spawned on. `/readyz` and the handlers read the token (503 from then on),
//! a send waiting for its rate slot ends its wait on it, and `serve` waits on the tracker for
//! the sends already under way before it closes connections ([`crate::server`] drains those
//! with the same two types). Tests call [`Shutdown::begin`] directly rather than send signals.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The drain every send task joins. Clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shutdown {
    /// Cancelled once the drain begins.
    begun: CancellationToken,
    /// The send tasks under way.
    sends: TaskTracker,
}

impl Shutdown {
    /// A drain not yet begun, with no sends.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts draining: `/readyz` turns 503, new sends are refused and rate waits end.
    pub(crate) fn begin(&self) {
        // Closed, the tracker's `wait` ends once the sends under way have.
        self.sends.close();
        self.begun.cancel();
    }

    /// Whether the drain has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.begun.is_cancelled()
    }

    /// The token cancelled when the drain begins, for waits that must end with it.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.begun
    }

    /// Resolves once [`Shutdown::begin`] has been called.
    pub(crate) async fn begun(&self) {
        self.begun.cancelled().await;
    }

    /// Runs a send as a task of its own, which the drain waits for. It goes on if whoever
    /// awaits the handle goes away.
    pub(crate) fn spawn<F>(&self, send: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.sends.spawn(send)
    }

    /// Sends under way.
    pub(crate) fn sends(&self) -> usize {
        self.sends.len()
    }

    /// Resolves when the drain has begun and no send is under way, or after `grace`,
    /// whichever is first. Returns whether every send finished.
    pub(crate) async fn wait_for_sends(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.sends.wait()).await.is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT will drain");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait is polled while the send is under way and must still be pending; it is
    /// completed only by the send's end. Paused time turns a missed wake-up into the grace
    /// time running out, `false`, rather than a hang.
    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_sends_under_way() {
        let shutdown = Shutdown::new();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let send = shutdown.spawn(async move {
            let _ = finished.await;
        });
        shutdown.begin();
        assert!(shutdown.is_draining());
        assert_eq!(shutdown.sends(), 1);
        let mut waiter = std::pin::pin!(shutdown.wait_for_sends(Duration::from_secs(10)));
        assert!(futures::poll!(waiter.as_mut()).is_pending());
        let started = tokio::time::Instant::now();
        finish.send(()).unwrap();
        assert!(waiter.await);
        assert_eq!(started.elapsed(), Duration::ZERO);
        send.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_grace_time() {
        let shutdown = Shutdown::new();
        let _send = shutdown.spawn(std::future::pending::<()>());
        shutdown.begin();
        assert!(!shutdown.wait_for_sends(Duration::from_secs(25)).await);
    }

    #[tokio::test]
    async fn a_send_goes_on_when_its_handle_is_dropped() {
        let shutdown = Shutdown::new();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let (done, ended) = tokio::sync::oneshot::channel::<()>();
        drop(shutdown.spawn(async move {
            let _ = finished.await;
            let _ = done.send(());
        }));
        finish.send(()).unwrap();
        ended.await.unwrap();
    }
}
