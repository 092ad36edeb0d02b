//! Idempotency on `messageId` (SPEC "Deduplication" and "Shared deduplication").
//!
//! Two kinds of state, kept apart:
//!
//! - **Sends in flight in this process**: a small table (bounded by `RELAY_MAX_IN_FLIGHT`,
//!   since every leader holds a slot) mapping a `messageId` to its fingerprint and a watch
//!   channel. The first request for a `messageId` becomes its *local leader*; identical ones
//!   arriving meanwhile subscribe and get the leader's [`Outcome`] (coalescing); another
//!   payload gets 422. A leader that ends without completing (panic, cancellation, runtime
//!   shutdown) drops its [`Lead`], which frees the entry: its waiters get 502 and the next
//!   request leads.
//! - **The window of finished sends**: the moka cache of this process ([`memory`]) and, with
//!   `RELAY_REDIS_URL`, the window every replica shares ([`redis`]). A local leader claims its
//!   `messageId` there before it sends: the claim may come back as a remembered answer
//!   (replay), a claim in flight on another replica (wait for it), or another payload (422).
//!   On completion a 2xx answer is remembered in both, anything else releases the claim.
//!
//! **Slow is not down** (SPEC "Shared deduplication"). A store reply that timed out does not
//! prove the command did not run: Redis may apply it when a stall (a fork, an fsync) ends.
//! So the claim's value is made here, before it is sent, and a claim whose reply timed out is
//! *possibly taken*: in `open` mode the send goes on holding that value, and its completion
//! compare-and-sets it like any other; in `closed` mode the caller gets 503 and the value is
//! released (compare-and-delete) in the background. A completion that fails is retried in the
//! background ([`complete`]) until it lands or the lease ends. A request that has seen another
//! replica's claim in flight keeps waiting for it through store errors until its deadline
//! (504): it never falls open and sends alongside that leader. Only a store that was not
//! reached at all ([`StoreError::Unreached`]: the connection was refused, nothing was sent)
//! leaves no claim to complete.
//!
//! [`Dedup::begin`] is one short critical section on the table's lock: look for a send in
//! flight, then look in the moka window, then take the entry. A leader remembers its answer in
//! moka before it takes the lock to leave the table, so a newcomer sees either the entry (and
//! waits) or the answer (and replays): one moka lookup per request, and no second send. The
//! watch channel that carries an outcome to waiters is made only when a first waiter comes,
//! so a send nobody waits on costs no channel.

mod complete;
mod lead;
mod lookup;
pub(crate) mod memory;
pub(crate) mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::sync::watch;

use crate::config::FailureMode;
use crate::fingerprint::Fingerprint;
use crate::metrics::{Metrics, StoreOp};
use crate::outcome::{GatewayReply, Outcome, SendFailure, UpstreamError};
use crate::store::StoreError;
use complete::Completer;
pub(crate) use lead::Lead;
use memory::MemoryWindow;
use redis::{Held, RedisWindow};

/// How long a claim outlives its send's deadline and two store round trips.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// The lease of a claim made with `left` of its send's deadline: the send, then a completion
/// that may take two store timeouts (one try, and a retry), then a margin — so the lease
/// always outlasts the send and a slow completion still finds the claim ours.
pub fn lease(left: Duration, store_timeout: Duration) -> Duration {
    left.saturating_add(store_timeout.saturating_mul(2))
        .saturating_add(LEASE_MARGIN)
}
/// First and longest pause between looks at a send in flight on another replica.
pub(crate) const POLL_FIRST: Duration = Duration::from_millis(10);
pub(crate) const POLL_MAX: Duration = Duration::from_millis(250);

/// A remembered 2xx answer: what a replay sends back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Remembered {
    /// The fingerprint of the send it answered.
    pub fingerprint: Fingerprint,
    /// The gateway's status.
    pub status: StatusCode,
    /// `None` for plain `application/json`, which nearly every answer has.
    pub content_type: Option<HeaderValue>,
    /// The gateway's body, in its own allocation.
    pub body: Bytes,
}

/// The content type nearly every gateway answer has; not stored per entry.
const JSON: &str = "application/json";

impl Remembered {
    /// The answer to remember for a send. The body is copied into its own allocation: the
    /// reply's `Bytes` may be a view into a connection's read buffer, which would otherwise be
    /// kept alive for the whole TTL.
    pub(crate) fn of(fingerprint: Fingerprint, reply: &GatewayReply) -> Self {
        Self {
            fingerprint,
            status: reply.status,
            content_type: reply
                .content_type
                .clone()
                .filter(|v| v.as_bytes() != JSON.as_bytes()),
            body: Bytes::copy_from_slice(&reply.body),
        }
    }

    /// The content type to replay.
    pub(crate) fn content_type(&self) -> HeaderValue {
        self.content_type
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static(JSON))
    }

    /// As a gateway reply, for coalesced waiters.
    pub(crate) fn to_reply(&self) -> GatewayReply {
        GatewayReply {
            status: self.status,
            content_type: Some(self.content_type()),
            body: self.body.clone(),
            is_json: true,
            retry_after: None,
        }
    }
}

/// Proof of a claim, for completing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClaimToken {
    /// Held in this process only (memory window, or the shared store was not reached).
    Local,
    /// A claim in the shared window (set, or possibly set by a reply that timed out): the
    /// exact value, compared on completion, and when its lease ends.
    Shared { value: Box<[u8]>, until: Instant },
}

/// The answer of [`Dedup::begin`].
#[derive(Debug)]
pub(crate) enum Begin {
    /// A new send: forward it, then `Lead::complete`.
    Lead(Lead),
    /// The same payload is in flight in this process: wait for its outcome.
    Wait(Waiter),
    /// The same payload was answered 2xx: replay it.
    Replay(Remembered),
    /// No send may go: 422 (another payload), 503 (store down, closed mode), 504 (deadline
    /// ran out waiting for another replica).
    Refused(SendFailure),
}

/// The outcome channel of a send in flight, made for its first waiter.
type OutcomeSender = watch::Sender<Option<Outcome>>;

/// A coalesced caller's handle on the leader's outcome.
#[derive(Debug)]
pub(crate) struct Waiter(watch::Receiver<Option<Outcome>>);

impl Waiter {
    /// The leader's outcome; 502 ([`SendFailure::Abandoned`]) if it ended without one.
    pub(crate) async fn outcome(mut self) -> Outcome {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Err(SendFailure::Abandoned)),
            Err(_) => Err(SendFailure::Abandoned),
        }
    }
}

/// The coordinator: in-flight table, moka window, optional shared window.
#[derive(Clone, Debug)]
pub(crate) struct Dedup(Arc<Inner>);

/// Sends in flight in this process, by `messageId`.
type Table = HashMap<Arc<str>, Pending, foldhash::fast::RandomState>;

#[derive(Debug)]
struct Inner {
    in_flight: Mutex<Table>,
    memory: MemoryWindow,
    shared: Option<RedisWindow>,
    completer: Completer,
    metrics: Arc<Metrics>,
    next_seq: AtomicU64,
}

#[derive(Debug)]
struct Pending {
    fingerprint: Fingerprint,
    /// Which leader this entry is; a leader only ever removes its own.
    seq: u64,
    /// `None` until a caller waits on this send.
    waiters: Option<OutcomeSender>,
}

impl Dedup {
    /// A coordinator over the moka window alone (the benches measure it).
    pub(crate) fn in_memory(memory: MemoryWindow, metrics: Arc<Metrics>) -> Self {
        Self::new(memory, None, metrics)
    }

    /// A coordinator over the moka window and, if given, the shared window.
    pub(crate) fn new(
        memory: MemoryWindow,
        shared: Option<RedisWindow>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self(Arc::new(Inner {
            in_flight: Mutex::new(HashMap::default()),
            memory,
            completer: Completer::new(Arc::clone(&metrics)),
            shared,
            metrics,
            next_seq: AtomicU64::new(1),
        }))
    }

    /// Answers remembered in this process's window.
    pub(crate) fn entries(&self) -> u64 {
        self.0.memory.entries()
    }

    /// Sends in flight in this process.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.0.table().len()
    }

    /// Decides what a request with this `messageId` and fingerprint does, and never waits: a
    /// new send's claim in the shared window is the leader's first step ([`Lead::claim`]),
    /// inside the send that outlives its caller.
    pub(crate) fn begin(&self, message_id: &str, fingerprint: Fingerprint) -> Begin {
        let mut table = self.0.table();
        if let Some(pending) = table.get_mut(message_id) {
            if pending.fingerprint != fingerprint {
                return Begin::Refused(SendFailure::Conflict);
            }
            let receiver = match &pending.waiters {
                Some(sender) => sender.subscribe(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    pending.waiters = Some(sender);
                    receiver
                }
            };
            return Begin::Wait(Waiter(receiver));
        }
        if let Some(answer) = self.0.memory.get(message_id) {
            return match resolve(answer, fingerprint) {
                Resolved::Replay(answer) => Begin::Replay(answer),
                Resolved::Refused(failure) => Begin::Refused(failure),
            };
        }
        let key: Arc<str> = Arc::from(message_id);
        let seq = self.0.next_seq.fetch_add(1, Ordering::Relaxed);
        table.insert(
            Arc::clone(&key),
            Pending {
                fingerprint,
                seq,
                waiters: None,
            },
        );
        Begin::Lead(Lead {
            dedup: self.clone(),
            message_id: key,
            fingerprint,
            seq,
            finished: false,
            token: None,
        })
    }

    /// The local leader's claim in the shared window (the moka window was read in `begin`,
    /// under the table's lock).
    async fn claim(
        &self,
        message_id: &Arc<str>,
        fingerprint: Fingerprint,
        deadline: Instant,
    ) -> Result<ClaimToken, Resolved> {
        let Some(shared) = &self.0.shared else {
            return Ok(ClaimToken::Local);
        };
        let mut pause = POLL_FIRST;
        // Once another replica's claim has been seen, a store error is not a reason to send.
        let mut seen_in_flight = false;
        loop {
            // What is left of this deadline, now: a request that waited for another replica
            // and then takes over its lapsed claim has less of it than when it began.
            let left = deadline.saturating_duration_since(Instant::now());
            let lease = lease(left, shared.store().timeout());
            let value = redis::claim_value(fingerprint);
            // The configured deadline and timeout are bounded; saturate rather than panic.
            let until = Instant::now().checked_add(lease).unwrap_or(deadline);
            match shared.claim(message_id, &value, lease).await {
                Ok(Held::Claimed) => return Ok(ClaimToken::Shared { value, until }),
                Ok(Held::Remembered { answer, expires_in }) => {
                    // Answers never change: keep it here, for as long as Redis does, so the
                    // next replay is local.
                    if answer.fingerprint == fingerprint {
                        let id = Arc::clone(message_id);
                        self.0.memory.insert_copy(id, answer.clone(), expires_in);
                    }
                    return Err(resolve(answer, fingerprint));
                }
                Ok(Held::InFlight(other)) if other != fingerprint => {
                    return Err(Resolved::Refused(SendFailure::Conflict));
                }
                Ok(Held::InFlight(_)) => seen_in_flight = true,
                Err(error) if seen_in_flight => {
                    shared
                        .store()
                        .warn("cannot look at a send in flight", &error);
                }
                Err(error) => {
                    let token = ClaimToken::Shared { value, until };
                    return self.store_failed(shared, message_id, token, &error);
                }
            }
            // Coalesced across replicas: look again until the leader completes, its lease
            // lapses (then this request claims it), or this deadline ends.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Resolved::Refused(SendFailure::Upstream(
                    UpstreamError::DeadlineExceeded,
                )));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// A claim that failed: `RELAY_REDIS_FAILURE` decides. Unless the store was not reached
    /// at all, the claim may have been applied: open mode goes on holding it (the completion
    /// compare-and-sets it), closed mode releases it in the background.
    fn store_failed(
        &self,
        shared: &RedisWindow,
        message_id: &Arc<str>,
        possibly_taken: ClaimToken,
        error: &StoreError,
    ) -> Result<ClaimToken, Resolved> {
        shared.store().warn("cannot claim a messageId", error);
        let reached = !matches!(error, StoreError::Unreached(_));
        match shared.store().failure_mode() {
            FailureMode::Open => {
                self.0.metrics.record_fail_open(StoreOp::Claim);
                Ok(if reached {
                    possibly_taken
                } else {
                    ClaimToken::Local
                })
            }
            FailureMode::Closed => {
                if reached && let ClaimToken::Shared { value, until } = possibly_taken {
                    let id = Arc::clone(message_id);
                    self.0
                        .completer
                        .retry(shared.clone(), id, value, None, until);
                }
                Err(Resolved::Refused(SendFailure::StoreUnavailable))
            }
        }
    }
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Every change under this lock is one insert or remove, so a panic elsewhere cannot
        // leave it half-done: a poisoned lock is still consistent.
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A claim that ended before any send.
#[derive(Debug)]
pub(crate) enum Resolved {
    /// The shared window (or a leader that just finished) has the answer: replay it.
    Replay(Remembered),
    /// 422, 503 (store down, closed mode) or 504 (deadline ran out waiting for a replica).
    Refused(SendFailure),
}

fn resolve(answer: Remembered, fingerprint: Fingerprint) -> Resolved {
    if answer.fingerprint == fingerprint {
        Resolved::Replay(answer)
    } else {
        Resolved::Refused(SendFailure::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dedup() -> Dedup {
        Dedup::new(
            MemoryWindow::new(100, Duration::from_secs(60)),
            None,
            Arc::new(Metrics::new()),
        )
    }

    fn reply(status: u16) -> Outcome {
        Ok(GatewayReply {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from_static(br#"{"status":"success"}"#),
            is_json: true,
            retry_after: None,
        })
    }

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::of("media", &[n])
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    /// A second `begin` for `id` while it is led: it must wait.
    fn wait(dedup: &Dedup, id: &str) -> Waiter {
        match dedup.begin(id, fp(1)) {
            Begin::Wait(waiter) => waiter,
            other => panic!("expected wait for {id}, got {other:?}"),
        }
    }

    async fn lead(dedup: &Dedup, id: &str) -> Lead {
        match dedup.begin(id, fp(1)) {
            Begin::Lead(mut lead) => {
                lead.claim(later()).await.unwrap();
                lead
            }
            other => panic!("expected lead for {id}, got {other:?}"),
        }
    }

    #[test]
    fn a_lease_outlasts_the_send_and_two_store_round_trips() {
        let ms = Duration::from_millis;
        assert_eq!(lease(ms(30_000), ms(250)), ms(30_000 + 500) + LEASE_MARGIN);
        // A store timeout longer than the margin still fits: the lease grows with it.
        assert_eq!(lease(ms(1_000), ms(5_000)), ms(11_000) + LEASE_MARGIN);
        assert_eq!(
            lease(Duration::MAX, ms(1)),
            Duration::MAX,
            "saturates, never panics"
        );
    }

    #[tokio::test]
    async fn first_request_leads() {
        assert!(matches!(dedup().begin("a", fp(1)), Begin::Lead(_)));
    }

    #[tokio::test]
    async fn duplicate_in_flight_waits_for_the_leaders_outcome() {
        let dedup = dedup();
        let leader = lead(&dedup, "a").await;
        let waiter = wait(&dedup, "a");
        leader.complete(&reply(200)).await;
        assert_eq!(waiter.outcome().await.unwrap().status, StatusCode::OK);
    }

    #[tokio::test]
    async fn success_is_remembered_and_replayed() {
        let dedup = dedup();
        lead(&dedup, "a").await.complete(&reply(200)).await;
        let Begin::Replay(answer) = dedup.begin("a", fp(1)) else {
            panic!("expected replay")
        };
        assert_eq!(answer.body, Bytes::from_static(br#"{"status":"success"}"#));
        assert_eq!(dedup.in_flight(), 0);
    }

    #[tokio::test]
    async fn different_payload_conflicts_in_flight_and_after() {
        let dedup = dedup();
        let leader = lead(&dedup, "a").await;
        assert!(matches!(
            dedup.begin("a", fp(2)),
            Begin::Refused(SendFailure::Conflict)
        ));
        leader.complete(&reply(200)).await;
        assert!(matches!(
            dedup.begin("a", fp(2)),
            Begin::Refused(SendFailure::Conflict)
        ));
    }

    #[tokio::test]
    async fn failures_are_forgotten() {
        let dedup = dedup();
        for outcome in [
            reply(503),
            reply(400),
            Err(SendFailure::Upstream(UpstreamError::AttemptTimeout)),
        ] {
            lead(&dedup, "a").await.complete(&outcome).await;
        }
        assert!(matches!(dedup.begin("a", fp(1)), Begin::Lead(_)));
    }

    /// A leader that `end`s without an outcome frees its entry, and its waiter gets
    /// `Abandoned`.
    async fn assert_abandoned_when(end: impl AsyncFnOnce(Lead)) {
        let dedup = dedup();
        let leader = lead(&dedup, "a").await;
        let waiter = wait(&dedup, "a");
        end(leader).await;
        assert_eq!(waiter.outcome().await.unwrap_err(), SendFailure::Abandoned);
        assert_eq!(dedup.in_flight(), 0);
        assert!(matches!(dedup.begin("a", fp(1)), Begin::Lead(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_frees_its_entry_and_its_waiters_get_abandoned() {
        assert_abandoned_when(async |leader| drop(leader)).await;
    }

    #[tokio::test]
    async fn a_leader_whose_task_panics_frees_its_entry() {
        assert_abandoned_when(async |leader| {
            let task = tokio::spawn(async move {
                let _leader = leader;
                panic!("the send panicked");
            });
            assert!(task.await.unwrap_err().is_panic());
        })
        .await;
    }

    #[tokio::test]
    async fn in_flight_sends_are_never_evicted_by_a_full_window() {
        let dedup = Dedup::new(
            MemoryWindow::new(2, Duration::from_secs(60)),
            None,
            Arc::new(Metrics::new()),
        );
        let held = lead(&dedup, "held").await;
        for n in 0..50 {
            lead(&dedup, &format!("m-{n}"))
                .await
                .complete(&reply(200))
                .await;
        }
        assert!(matches!(dedup.begin("held", fp(1)), Begin::Wait(_)));
        held.complete(&reply(200)).await;
        assert!(matches!(dedup.begin("held", fp(1)), Begin::Replay(_)));
    }

    #[tokio::test]
    async fn every_waiter_gets_the_outcome_and_the_entry_is_gone() {
        let dedup = dedup();
        let leader = lead(&dedup, "a").await;
        let waiters: Vec<Waiter> = (0..3).map(|_| wait(&dedup, "a")).collect();
        leader.complete(&reply(200)).await;
        for waiter in waiters {
            assert_eq!(waiter.outcome().await.unwrap().status, StatusCode::OK);
        }
        assert_eq!(dedup.in_flight(), 0);
        assert!(matches!(dedup.begin("a", fp(1)), Begin::Replay(_)));
    }

    #[tokio::test]
    async fn replay_carries_the_status_body_and_content_type() {
        let dedup = dedup();
        lead(&dedup, "a")
            .await
            .complete(&Ok(GatewayReply {
                status: StatusCode::ACCEPTED,
                content_type: Some(HeaderValue::from_static("application/json;charset=UTF-8")),
                body: Bytes::from_static(b"{\"x\":1}"),
                is_json: true,
                retry_after: None,
            }))
            .await;
        let Begin::Replay(answer) = dedup.begin("a", fp(1)) else {
            panic!("expected replay")
        };
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.body, Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(answer.content_type(), "application/json;charset=UTF-8");
    }

    #[tokio::test]
    async fn a_non_json_2xx_is_not_remembered() {
        let dedup = dedup();
        let outcome = Ok(GatewayReply {
            is_json: false,
            ..reply(200).unwrap()
        });
        lead(&dedup, "a").await.complete(&outcome).await;
        assert!(matches!(dedup.begin("a", fp(1)), Begin::Lead(_)));
    }
}
