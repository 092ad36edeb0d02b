//! Head and idle timeouts from the one timer hyper keeps anyway (SPEC "Connections and slow
//! clients"): a connection's [`RequestTimer`] knows which wait each of hyper's head sleeps
//! times, from what the connection's [`Socket`] has read. The module doc of [`crate::server`]
//! tells the whole story.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a connection's socket and timer share. It is only touched from the connection's own
/// task; the atomics are there because hyper wants its timer `Sync`.
#[derive(Debug, Default)]
pub(super) struct Activity {
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
    pub(super) fn awaiting_request(&self) -> bool {
        self.heads.load(Ordering::Relaxed) > 0
    }
}

/// The TCP stream, counting the reads that bring data for the connection's [`HeadSleep`].
pub(super) struct Socket {
    pub(super) stream: TcpStream,
    pub(super) activity: Arc<Activity>,
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
pub(super) struct RequestTimer {
    pub(super) activity: Arc<Activity>,
    pub(super) header: Duration,
    pub(super) idle: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A new connection's timer (header timeout 1 s, idle 10 s), and the activity it reads.
    fn timer() -> (Arc<Activity>, RequestTimer) {
        let activity = Arc::new(Activity::default());
        let timer = RequestTimer {
            activity: Arc::clone(&activity),
            header: Duration::from_secs(1),
            idle: Duration::from_secs(10),
        };
        (activity, timer)
    }

    /// The same once its first request's head has arrived: a kept-alive connection's timer.
    fn kept_alive_timer() -> (Arc<Activity>, RequestTimer) {
        let (activity, timer) = timer();
        drop(head_wait(&timer));
        (activity, timer)
    }

    /// hyper's call: `sleep_until(now + header timeout)`.
    fn head_wait(timer: &RequestTimer) -> Pin<Box<dyn Sleep>> {
        timer.sleep_until(timer.now() + timer.header)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_gets_the_header_timeout_from_the_accept() {
        let (activity, timer) = timer();
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
        let (_, timer) = kept_alive_timer();
        let started = tokio::time::Instant::now();
        head_wait(&timer).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_gets_the_header_timeout_from_its_first_byte() {
        let (activity, timer) = kept_alive_timer();
        let started = tokio::time::Instant::now();
        let mut wait = head_wait(&timer);
        assert!(futures::poll!(wait.as_mut()).is_pending());
        tokio::time::sleep(Duration::from_secs(4)).await;
        activity.reads.fetch_add(1, Ordering::Relaxed);
        wait.await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
