//! Rate limits that match WhatsApp's (SPEC "Rate limits that match WhatsApp's"): per `from`
//! (`RELAY_SENDER_RATE` a second, bursts of one second's worth) and per (`from`, `to`)
//! (`RELAY_PAIR_INTERVAL_MS`, bursts of `RELAY_PAIR_BURST`), GCRA, in this process
//! ([`memory`], the `governor` crate) or shared by every replica through Redis ([`redis`]).
//! `0` switches either off; with both off [`Limits::acquire`] returns at once.
//!
//! Only new sends take a slot: the handler calls [`Limits::acquire`] once per send, after the
//! dedup window has made it the leader (so replays, coalesced and invalid requests take none)
//! and before the first gateway attempt (so retries of the same send take none). A send that
//! needs to wait does so while the wait fits in `RELAY_RATE_MAX_WAIT_MS` and in what is left of
//! its deadline once one gateway attempt is set aside (so a wait never ends in a 504),
//! holding its `RELAY_MAX_IN_FLIGHT` slot; otherwise it is refused at once with
//! the scope and how long until a slot frees ([`SendFailure::RateLimited`], a 429). A drain
//! ends the wait with [`SendFailure::Draining`] (503).
//!
//! **Both limits at once, in one process.** governor takes a cell when it allows and has no
//! peek, so checking two limiters one after the other can spend a cell of the first when the
//! second refuses. The pair is checked first and the sender second:
//! - A pair that refuses takes nothing, so one hot recipient (a client looping on one number)
//!   never eats into its sender's budget for everyone else. The other order would spend a
//!   sender cell on every such refusal.
//! - When the pair allows and the sender then refuses beyond the wait allowed, that pair cell
//!   is spent on a send that did not go: the pair's next send may wait one interval more than
//!   it had to. Conservative, and only for a sender already over its rate.
//! - When the sender asks for a wait that fits, the send keeps its pair cell and waits for the
//!   sender alone. That cell is stamped up to the wait (at most `RELAY_RATE_MAX_WAIT_MS`)
//!   before the send leaves, so the pair's next send may follow it by that much less than
//!   the interval: the one place these limits lean towards sending more. It takes a sender
//!   already over its rate, and is worth less than one send while the wait allowed is shorter
//!   than the pair interval (5 s and 6 s by default). Re-checking the pair after the wait
//!   instead would spend a second pair cell on every such send.
//!
//! A waiter sleeps until the time governor named and checks again (governor cannot reserve a
//! future cell), so waiters of one key are not served strictly in arrival order; a re-check is
//! a few atomic operations. The shared limits reserve instead, in one script over both keys, so
//! the order question does not arise there (see [`redis`]).
//!
//! **Clock.** The in-process limiters read `tokio::time::Instant` ([`memory::TokioClock`]), so
//! the tests below run on paused time; deadlines and budgets are read from the same clock.
//!
//! **Memory.** Idle keys are dropped by [`Limits::sweep`]: governor's `retain_recent` (a key
//! whose theoretical arrival time has passed reads the same as a missing one) then
//! `shrink_to_fit`. `serve` spawns [`Limits::sweep_periodically`], which sweeps every
//! [`SWEEP_INTERVAL`] on the blocking pool (a sweep walks every key), so the tables hold the
//! senders and pairs active in the last interval, burst and sweep. Shared keys expire in Redis.
//!
//! **Redis unreachable.** `RELAY_REDIS_FAILURE=open`: the send goes on under this process's
//! limits (counted in `store_fail_open{op="limit"}`, with a rate-limited warning); each replica
//! then keeps the limits on its own traffic only, so the fleet may send up to replicas × the
//! limits until Redis answers again. `closed`: 503 ([`SendFailure::StoreUnavailable`]).

pub(crate) mod memory;
pub(crate) mod redis;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{FailureMode, RateLimitConfig};
use crate::metrics::{Metrics, StoreOp};
use crate::outcome::{LimitScope, SendFailure};
use crate::phone::PhoneNumber;
use crate::store::SharedStore;
use memory::LocalLimits;
use redis::{Reservation, SharedLimits};

/// How often idle keys are dropped from the in-process limiters. A pair key lives at least
/// one interval past its last send anyway (6 s by default), so sweeping more often would free
/// little.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The limits of one relay: a cheap handle.
#[derive(Clone, Debug)]
pub(crate) struct Limits(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    config: RateLimitConfig,
    /// This process's limiters: the only ones without Redis, the fallback with it.
    local: LocalLimits,
    shared: Option<SharedLimits>,
    metrics: Arc<Metrics>,
}

/// Time a send waited, by the limit that made it wait.
#[derive(Clone, Copy, Debug, Default)]
struct Waited {
    sender: Duration,
    pair: Duration,
}

impl Waited {
    fn add(&mut self, scope: LimitScope, wait: Duration) {
        match scope {
            LimitScope::Sender => self.sender += wait,
            LimitScope::Pair => self.pair += wait,
        }
    }

    fn total(self) -> Duration {
        self.sender + self.pair
    }

    /// The limit that accounts for most of the wait.
    fn scope(self) -> LimitScope {
        if self.pair >= self.sender {
            LimitScope::Pair
        } else {
            LimitScope::Sender
        }
    }
}

impl Limits {
    /// The limits of `config`, shared through `store` when there is one.
    pub(crate) fn new(
        config: RateLimitConfig,
        store: Option<SharedStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self(Arc::new(Inner {
            local: LocalLimits::new(&config),
            shared: store.map(|store| SharedLimits::new(store, &config)),
            config,
            metrics,
        }))
    }

    /// Both limits switched off.
    pub(crate) fn is_off(&self) -> bool {
        self.0.config.sender_rate == 0 && self.0.config.pair_interval.is_zero()
    }

    /// Waits for a slot for one new send from `from` to `to`, or refuses it. Returns how long
    /// it waited. `deadline` is the latest the send may leave: its own deadline less the time
    /// kept for one gateway attempt (`GatewayClient::last_departure`).
    pub(crate) async fn acquire(
        &self,
        from: &PhoneNumber,
        to: &PhoneNumber,
        deadline: std::time::Instant,
        drain: &CancellationToken,
    ) -> Result<Duration, SendFailure> {
        if self.is_off() {
            return Ok(Duration::ZERO);
        }
        let wait = Budget {
            started: Instant::now(),
            deadline: Instant::from_std(deadline),
            max_wait: self.0.config.max_wait,
        };
        let result = match &self.0.shared {
            Some(shared) => self.acquire_shared(shared, from, to, &wait, drain).await,
            None => self.acquire_local(from, to, &wait, drain).await,
        };
        let metrics = &self.0.metrics;
        match result {
            Ok(waited) => {
                let total = waited.total();
                if !total.is_zero() {
                    metrics.record_rate_delayed(waited.scope(), total);
                }
                Ok(total)
            }
            Err(failure) => {
                if let SendFailure::RateLimited { scope, .. } = failure {
                    metrics.record_rate_refused(scope);
                }
                Err(failure)
            }
        }
    }

    /// Pair first, then sender: the module doc says why.
    async fn acquire_local(
        &self,
        from: &PhoneNumber,
        to: &PhoneNumber,
        budget: &Budget,
        drain: &CancellationToken,
    ) -> Result<Waited, SendFailure> {
        let local = &self.0.local;
        let mut waited = Waited::default();
        while let Err(wait) = local.check_pair(from, to) {
            waited.add(
                LimitScope::Pair,
                budget.wait(LimitScope::Pair, wait, drain).await?,
            );
        }
        while let Err(wait) = local.check_sender(from) {
            waited.add(
                LimitScope::Sender,
                budget.wait(LimitScope::Sender, wait, drain).await?,
            );
        }
        Ok(waited)
    }

    async fn acquire_shared(
        &self,
        shared: &SharedLimits,
        from: &PhoneNumber,
        to: &PhoneNumber,
        budget: &Budget,
        drain: &CancellationToken,
    ) -> Result<Waited, SendFailure> {
        match shared.reserve(from, to, budget.left()).await {
            Ok(Reservation::Go { wait, scope }) => {
                let mut waited = Waited::default();
                if !wait.is_zero() {
                    // The slot is ours already: a drain now leaves it unused (conservative).
                    let started = Instant::now();
                    sleep(wait, drain).await?;
                    waited.add(scope, started.elapsed());
                }
                Ok(waited)
            }
            Ok(Reservation::Refused { scope, retry_after }) => {
                Err(SendFailure::RateLimited { scope, retry_after })
            }
            Err(error) => {
                let store = shared.store();
                store.warn("cannot take a rate-limit slot", &error);
                match store.failure_mode() {
                    FailureMode::Open => {
                        self.0.metrics.record_fail_open(StoreOp::Limit);
                        self.acquire_local(from, to, budget, drain).await
                    }
                    FailureMode::Closed => Err(SendFailure::StoreUnavailable),
                }
            }
        }
    }

    /// Drops idle keys from the in-process limiters and frees their memory.
    pub(crate) fn sweep(&self) {
        self.0.local.sweep();
    }

    /// Sweeps every [`SWEEP_INTERVAL`] until dropped (`serve` holds the task).
    pub(crate) async fn sweep_periodically(self) {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let limits = self.clone();
            // A sweep walks every key: on the blocking pool it never stalls a request's worker.
            let _ = tokio::task::spawn_blocking(move || limits.sweep()).await;
        }
    }
}

/// How long one send may still wait: `RELAY_RATE_MAX_WAIT_MS` from when it asked, and its
/// deadline.
struct Budget {
    started: Instant,
    deadline: Instant,
    max_wait: Duration,
}

impl Budget {
    /// What is left of it now.
    fn left(&self) -> Duration {
        let now = Instant::now();
        self.max_wait
            .saturating_sub(now.saturating_duration_since(self.started))
            .min(self.deadline.saturating_duration_since(now))
    }

    /// Sleeps `wait` if it fits, and returns the time slept; refuses for `scope` if not.
    async fn wait(
        &self,
        scope: LimitScope,
        wait: Duration,
        drain: &CancellationToken,
    ) -> Result<Duration, SendFailure> {
        if wait > self.left() {
            return Err(SendFailure::RateLimited {
                scope,
                retry_after: wait,
            });
        }
        let started = Instant::now();
        sleep(wait, drain).await?;
        Ok(started.elapsed())
    }
}

/// Sleeps `wait`, unless draining begins first.
async fn sleep(wait: Duration, drain: &CancellationToken) -> Result<(), SendFailure> {
    tokio::select! {
        // A drain already begun wins over a sleep that is also over.
        biased;
        () = drain.cancelled() => Err(SendFailure::Draining),
        () = tokio::time::sleep(wait) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(
        sender_rate: u32,
        pair_ms: u64,
        pair_burst: u32,
        max_wait_ms: u64,
    ) -> RateLimitConfig {
        RateLimitConfig {
            sender_rate,
            pair_interval: Duration::from_millis(pair_ms),
            pair_burst,
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    fn limits(config: RateLimitConfig) -> Limits {
        Limits::new(config, None, Arc::new(Metrics::new()))
    }

    /// A distinct valid number per `i`.
    fn number(i: u64) -> PhoneNumber {
        PhoneNumber::parse(&(254_700_000_000 + i).to_string()).unwrap()
    }

    /// A deadline `after` from now, on tokio's (pausable) clock.
    fn deadline(after: Duration) -> std::time::Instant {
        (Instant::now() + after).into_std()
    }

    impl Limits {
        async fn take(&self, from: u64, to: u64) -> Result<Duration, SendFailure> {
            self.acquire(
                &number(from),
                &number(to),
                deadline(30 * SECOND),
                &CancellationToken::new(),
            )
            .await
        }
    }

    fn refused(scope: LimitScope, retry_after: Duration) -> Result<Duration, SendFailure> {
        Err(SendFailure::RateLimited { scope, retry_after })
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_burst_goes_at_once_and_the_next_send_waits_one_interval() {
        let limits = limits(config(0, 6_000, 45, 10_000));
        let start = Instant::now();
        for _ in 0..45 {
            assert_eq!(limits.take(1, 2).await, Ok(Duration::ZERO));
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        let waited = limits.take(1, 2).await.unwrap();
        assert!(
            waited >= 6 * SECOND && waited < 6 * SECOND + Duration::from_millis(2),
            "{waited:?}"
        );
        assert_eq!(start.elapsed(), waited);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_burst_is_one_seconds_worth_then_sends_are_spaced() {
        let limits = limits(config(10, 0, 1, 5_000));
        for to in 0..10 {
            assert_eq!(limits.take(1, to).await, Ok(Duration::ZERO));
        }
        let waited = limits.take(1, 10).await.unwrap();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_millis(102),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_beyond_the_max_is_refused_at_once_with_the_time_to_the_slot() {
        let limits = limits(config(0, 6_000, 2, 5_000));
        let start = Instant::now();
        limits.take(1, 2).await.unwrap();
        limits.take(1, 2).await.unwrap();
        assert_eq!(
            limits.take(1, 2).await,
            refused(LimitScope::Pair, 6 * SECOND)
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");

        let limits = self::limits(config(2, 0, 1, 0));
        limits.take(1, 2).await.unwrap();
        limits.take(1, 3).await.unwrap();
        assert_eq!(
            limits.take(1, 4).await,
            refused(LimitScope::Sender, Duration::from_millis(500))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_the_wait_too() {
        let limits = limits(config(0, 6_000, 1, 10_000));
        limits.take(1, 2).await.unwrap();
        let short = deadline(3 * SECOND);
        let result = limits
            .acquire(&number(1), &number(2), short, &CancellationToken::new())
            .await;
        assert_eq!(result, refused(LimitScope::Pair, 6 * SECOND));
    }

    #[tokio::test(start_paused = true)]
    async fn different_pairs_and_different_senders_do_not_share_slots() {
        let limits = limits(config(0, 6_000, 1, 0));
        limits.take(1, 2).await.unwrap();
        assert!(limits.take(1, 2).await.is_err());
        assert_eq!(
            limits.take(1, 3).await,
            Ok(Duration::ZERO),
            "another recipient"
        );
        assert_eq!(
            limits.take(4, 2).await,
            Ok(Duration::ZERO),
            "another sender"
        );

        let limits = self::limits(config(1, 0, 1, 0));
        limits.take(1, 2).await.unwrap();
        assert_eq!(limits.take(1, 3).await, refused(LimitScope::Sender, SECOND));
        assert_eq!(
            limits.take(4, 3).await,
            Ok(Duration::ZERO),
            "another sender"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_switches_each_limit_off() {
        let off = limits(config(0, 0, 45, 0));
        assert!(off.is_off());
        for _ in 0..1_000 {
            assert_eq!(off.take(1, 2).await, Ok(Duration::ZERO));
        }
        assert_eq!(off.0.local.len(), (0, 0));

        let pair_only = limits(config(0, 6_000, 1, 0));
        for to in 0..1_000 {
            assert_eq!(pair_only.take(1, to).await, Ok(Duration::ZERO));
        }
        let sender_only = limits(config(1_000, 0, 1, 0));
        for _ in 0..1_000 {
            assert_eq!(sender_only.take(1, 2).await, Ok(Duration::ZERO));
        }
        assert_eq!(sender_only.0.local.len(), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_pair_spends_nothing_of_its_senders_budget() {
        // Sender: one send a second. Pair: one a minute.
        let limits = limits(config(1, 60_000, 1, 0));
        limits.take(1, 2).await.unwrap();
        tokio::time::advance(SECOND).await;
        for _ in 0..100 {
            assert!(matches!(
                limits.take(1, 2).await,
                Err(SendFailure::RateLimited {
                    scope: LimitScope::Pair,
                    ..
                })
            ));
        }
        assert_eq!(
            limits.take(1, 3).await,
            Ok(Duration::ZERO),
            "the sender's cell is still there for another recipient"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_a_wait_with_draining() {
        let limits = limits(config(0, 6_000, 1, 10_000));
        limits.take(1, 2).await.unwrap();
        let drain = CancellationToken::new();
        let start = Instant::now();
        let waiting = tokio::spawn({
            let limits = limits.clone();
            let drain = drain.clone();
            async move {
                limits
                    .acquire(&number(1), &number(2), deadline(30 * SECOND), &drain)
                    .await
            }
        });
        tokio::time::sleep(SECOND).await;
        drain.cancel();
        assert_eq!(waiting.await.unwrap(), Err(SendFailure::Draining));
        assert_eq!(
            start.elapsed(),
            SECOND,
            "ended at the drain, not at the slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delays_and_refusals_are_counted_by_scope() {
        let metrics = Arc::new(Metrics::new());
        let limits = Limits::new(config(0, 1_000, 1, 1_000), None, Arc::clone(&metrics));
        limits.take(1, 2).await.unwrap();
        limits.take(1, 2).await.unwrap();
        let limits = Limits::new(config(1, 0, 1, 0), None, Arc::clone(&metrics));
        limits.take(1, 2).await.unwrap();
        limits.take(1, 2).await.unwrap_err();
        let text = metrics.encode(0);
        for line in [
            r#"lipachat_relay_rate_limited_total{scope="pair",action="delayed"} 1"#,
            r#"lipachat_relay_rate_limited_total{scope="pair",action="refused"} 0"#,
            r#"lipachat_relay_rate_limited_total{scope="sender",action="refused"} 1"#,
            "lipachat_relay_rate_wait_seconds_count 1",
            "lipachat_relay_rate_wait_seconds_sum 1.0",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    /// A shared store on a loopback port nobody listens on.
    fn unreachable_store(failure: &str, metrics: &Arc<Metrics>) -> SharedStore {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let vars = [
            ("LIPACHAT_API_KEY", "k"),
            ("RELAY_REDIS_URL", url.as_str()),
            ("RELAY_REDIS_FAILURE", failure),
        ];
        let config =
            crate::config::Config::from_vars(vars, crate::config::KeyRequirement::Required)
                .unwrap();
        SharedStore::new(&config.redis, Arc::clone(metrics))
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn redis_unreachable_is_503_when_closed_and_in_process_limits_when_open() {
        let metrics = Arc::new(Metrics::new());
        let store = unreachable_store("closed", &metrics);
        let closed = Limits::new(config(0, 60_000, 1, 0), Some(store), Arc::clone(&metrics));
        assert_eq!(closed.take(1, 2).await, Err(SendFailure::StoreUnavailable));

        let store = unreachable_store("open", &metrics);
        let open = Limits::new(config(0, 60_000, 1, 0), Some(store), Arc::clone(&metrics));
        assert_eq!(open.take(1, 2).await, Ok(Duration::ZERO));
        assert!(matches!(
            open.take(1, 2).await,
            Err(SendFailure::RateLimited {
                scope: LimitScope::Pair,
                ..
            })
        ));
        assert_eq!(open.0.local.len(), (0, 1));
        let text = metrics.encode(0);
        assert!(
            text.contains(r#"lipachat_relay_store_fail_open_total{op="limit"} 2"#),
            "{text}"
        );
    }

    /// Pairs that pass through and then go idle are dropped by a sweep. 1M pairs in release;
    /// 200k in debug builds, where a million `DashMap` inserts take several seconds.
    #[tokio::test(start_paused = true)]
    async fn idle_senders_and_pairs_are_swept_so_memory_stays_bounded() {
        let count: u64 = if cfg!(debug_assertions) {
            200_000
        } else {
            1_000_000
        };
        let limits = limits(config(80, 6_000, 45, 0));
        for i in 0..count {
            // Distinct senders and recipients: both tables get `count` keys.
            assert_eq!(limits.take(i, count + i).await, Ok(Duration::ZERO));
        }
        let count = usize::try_from(count).unwrap();
        assert_eq!(limits.0.local.len(), (count, count));
        limits.sweep();
        assert_eq!(limits.0.local.len(), (count, count), "nothing idle yet");
        // A pair key is idle once its TAT (one interval after its send) is an interval old.
        tokio::time::advance(12 * SECOND + Duration::from_millis(1)).await;
        limits.sweep();
        assert_eq!(limits.0.local.len(), (0, 0));
    }
}
