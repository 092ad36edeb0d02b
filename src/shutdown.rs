//! Readiness and drain (SPEC "Operations": SIGTERM or SIGINT).
//!
//! [`Drain`] is shared by `/readyz`, the `/media` handler and `serve`: `begin` flips readiness
//! at once, new sends are refused with 503, and `serve` waits for the sends already under way
//! (tracked by [`SendGuard`]s, which live in the send's own task) before closing connections.
//! Tests call `begin` directly rather than sending signals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The shared drain state.
#[derive(Clone, Default, Debug)]
pub struct Drain(Arc<DrainInner>);

#[derive(Default, Debug)]
struct DrainInner {
    draining: AtomicBool,
    sends: AtomicUsize,
    /// Woken when draining begins and whenever the last send ends.
    changed: Notify,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: `/readyz` turns 503 and new sends are refused.
    pub fn begin(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Counts a send until the guard drops.
    pub fn track_send(&self) -> SendGuard {
        self.0.sends.fetch_add(1, Ordering::SeqCst);
        SendGuard(self.clone())
    }

    /// Sends under way.
    pub fn sends(&self) -> usize {
        self.0.sends.load(Ordering::SeqCst)
    }

    /// Resolves once `begin` has been called.
    pub async fn begun(&self) {
        loop {
            let notified = self.0.changed.notified();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when no send is under way, or after `grace`, whichever is first. Returns
    /// whether every send finished.
    pub async fn wait_for_sends(&self, grace: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.0.changed.notified();
                if self.sends() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, idle).await.is_ok()
    }
}

/// Held by a send's task; dropping it may complete the drain.
#[derive(Debug)]
pub struct SendGuard(Drain);

impl Drop for SendGuard {
    fn drop(&mut self) {
        if self.0.0.sends.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.0.changed.notify_waiters();
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
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
    /// completed only by the guard's drop. (A waiter spawned on the current-thread runtime
    /// would first run after the drop, and pass even if it never waited.) Paused time turns a
    /// missed wake-up into the grace time running out, `false`, rather than a hang.
    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_sends_under_way() {
        let drain = Drain::new();
        let guard = drain.track_send();
        drain.begin();
        assert!(drain.is_draining());
        let mut waiter = std::pin::pin!(drain.wait_for_sends(Duration::from_secs(10)));
        assert!(futures::poll!(waiter.as_mut()).is_pending());
        let started = tokio::time::Instant::now();
        drop(guard);
        assert!(waiter.await);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_the_grace_time() {
        let drain = Drain::new();
        let _guard = drain.track_send();
        assert!(!drain.wait_for_sends(Duration::from_secs(25)).await);
    }
}
