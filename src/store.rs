//! The shared store (SPEC "Shared deduplication", "Rate limits", "After SENT"): one Redis or
//! Valkey server, or a Redis Cluster, reached through the `redis` crate, for the dedup window,
//! the rate limits, the status records and the events outbox of every replica.
//!
//! The `redis` crate (not `fred`): it is the most used Rust client, its `ConnectionManager`
//! multiplexes every request over one connection and reconnects on its own after an I/O
//! error, and its async Cluster client routes each key to its slot and follows topology
//! changes. Connections are made lazily, so the relay starts (and serves in `open` mode) while
//! Redis is down, and uses it again as soon as it answers, without a restart.
//!
//! Every round trip is bounded by `RELAY_REDIS_TIMEOUT_MS` (connecting included) and counted in
//! the store metrics; what to do when one fails (`RELAY_REDIS_FAILURE`) is the caller's
//! decision. The URLs may carry a password: it is never logged, and error texts are scrubbed
//! of it. Every request shares one multiplexed connection, so no command here ever blocks
//! (no `BLOCK`, no `BLPOP`): it would stall every other caller behind it.
//!
//! Calls: [`SharedStore::script`], [`SharedStore::command`], and [`SharedStore::batch`]
//! (several steps in one round trip, see `batch`).
//!
//! Recovery, without a restart: a call that fails on a refused connection (or, for the dedup
//! steps and the emit, which are safe to repeat, a lost one) is tried once more within the
//! same timeout, on the connection the manager has started meanwhile, so the first call after
//! Redis returns already succeeds. A refused password is the one failure the manager
//! keeps for good, so after one the manager is replaced (at most once per
//! [`RECONNECT_INTERVAL`]). A Cluster connection is made by one task for all callers, who
//! wait for it within their timeout.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisError, RedisFuture, Script, ScriptInvocation, Value,
};
use tokio::sync::watch;

use crate::config::{FailureMode, RedisConfig};
use crate::metrics::{Metrics, StoreOp, StoreResult};
use crate::throttle::Throttle;

mod batch;
#[cfg(test)]
pub(crate) mod test_server;

pub(crate) use batch::{Step, is_error, reply};

/// Connecting gets a little more than one round trip, so a slow TLS handshake still works.
const CONNECT_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);
/// How often a failed Cluster connection is tried again, or a standalone connection whose
/// password was refused is replaced, at most.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// Why a store round trip failed. The text never holds the URL's password.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum StoreError {
    /// No answer within `RELAY_REDIS_TIMEOUT_MS`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connection lost, refused password, or a server error: the command may have run.
    #[error("{0}")]
    Failed(String),
    /// The store was not reached (connection refused, no Cluster connection yet): the
    /// command was never sent.
    #[error("{0}")]
    Unreached(String),
}

/// A cheap handle on the shared store.
#[derive(Clone)]
pub(crate) struct SharedStore(Arc<Inner>);

struct Inner {
    connection: Connection,
    prefix: Box<str>,
    timeout: Duration,
    failure: FailureMode,
    metrics: Arc<Metrics>,
    /// Passwords of the configured URLs, scrubbed from error texts.
    secrets: Vec<String>,
    /// Rate limit of [`SharedStore::warn`].
    warnings: Throttle,
}

enum Connection {
    Single(SingleSlot),
    Cluster(ClusterSlot),
}

/// A standalone server: the manager connects lazily and reconnects by itself after an I/O
/// error, but keeps a refused password for good; then it is replaced.
struct SingleSlot {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: RwLock<ConnectionManager>,
    last_rebuild: std::sync::Mutex<Option<Instant>>,
}

/// A Cluster: connected by one task at a time, on first use and again after a failed attempt.
struct ClusterSlot {
    client: ClusterClient,
    state: watch::Sender<ClusterState>,
    connect_timeout: Duration,
}

#[derive(Clone, Default)]
struct ClusterState {
    connection: Option<ClusterConnection>,
    connecting: bool,
    last_attempt: Option<Instant>,
    /// Why the last attempt failed (scrubbed).
    error: Option<String>,
}

/// A configuration the client refused (bad TLS settings, say); reported at start-up.
#[derive(Debug, thiserror::Error)]
#[error("RELAY_REDIS_URL: {0}")]
pub struct StoreSetupError(String);

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("prefix", &self.0.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// A store for `config`, or `None` when no URL is set. Makes no connection yet.
    pub(crate) fn new(
        config: &RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Self>, StoreSetupError> {
        let Some(urls) = &config.urls else {
            return Ok(None);
        };
        let secrets: Vec<String> = urls
            .expose()
            .iter()
            .filter_map(|url| url.password().map(str::to_owned))
            .filter(|password| !password.is_empty())
            .collect();
        let scrub = |error: RedisError| StoreSetupError(scrub(&error.to_string(), &secrets));
        let connect_timeout = config.timeout.max(CONNECT_TIMEOUT_FLOOR);
        let addresses: Vec<&str> = urls.expose().iter().map(url::Url::as_str).collect();
        let connection = if config.cluster {
            let client = ClusterClient::builder(addresses)
                .retries(1)
                .connection_timeout(connect_timeout)
                .response_timeout(connect_timeout)
                .build()
                .map_err(scrub)?;
            Connection::Cluster(ClusterSlot {
                client,
                state: watch::Sender::new(ClusterState::default()),
                connect_timeout,
            })
        } else {
            let client = redis::Client::open(addresses.first().copied().unwrap_or_default())
                .map_err(scrub)?;
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500))
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(None);
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                .map_err(scrub)?;
            Connection::Single(SingleSlot {
                client,
                config,
                manager: RwLock::new(manager),
                last_rebuild: std::sync::Mutex::new(None),
            })
        };
        Ok(Some(Self(Arc::new(Inner {
            connection,
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            failure: config.failure,
            metrics,
            secrets,
            warnings: Throttle::new(),
        }))))
    }

    /// `RELAY_REDIS_PREFIX`, to start every key with.
    pub(crate) fn prefix(&self) -> &str {
        &self.0.prefix
    }

    /// `RELAY_REDIS_FAILURE`.
    pub(crate) fn failure_mode(&self) -> FailureMode {
        self.0.failure
    }

    /// `RELAY_REDIS_TIMEOUT_MS`.
    pub(crate) fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// One script (EVALSHA, loaded on first use), bounded and counted. A claim, a completion
    /// or an emit may reach Redis twice after a lost connection (see [`may_repeat`]); other
    /// operations are repeated only when the connection was refused.
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        op: StoreOp,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<T, StoreError> {
        let invocation = &invocation(script, keys, args);
        self.call(op, move |mut connection| async move {
            invocation.invoke_async::<T>(&mut connection).await
        })
        .await
    }

    /// One command, bounded and counted like [`Self::script`]; an error reply is an error.
    pub(crate) async fn command<T: FromRedisValue>(
        &self,
        op: StoreOp,
        command: &Cmd,
    ) -> Result<T, StoreError> {
        self.call(op, move |mut connection| async move {
            command.query_async::<T>(&mut connection).await
        })
        .await
    }

    /// One call made by `attempt` on a connection: bounded, counted, and tried again as
    /// [`Self::recovers`] says.
    async fn call<T, F>(
        &self,
        op: StoreOp,
        attempt: impl FnMut(Handle) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let result = self.bounded(self.attempts(op, attempt)).await;
        self.record(op, started, &result);
        result
    }

    /// `attempt`, tried a second time when [`Self::recovers`] says so.
    async fn attempts<T, F>(
        &self,
        op: StoreOp,
        mut attempt: impl FnMut(Handle) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let mut retried = false;
        loop {
            let connection = self.connection().await?;
            match attempt(connection).await {
                Err(error) if !retried && self.recovers(op, &error) => retried = true,
                result => return result.map_err(|error| self.failed(&error)),
            }
        }
    }

    /// Whether to try `op` a second time after `error`: the connection was refused (the
    /// manager has begun a new one), or the password was refused and the manager has just
    /// been replaced — the command never ran —, or the connection was lost and `op` is safe
    /// to run twice. (The Cluster client repairs node connections in the background, backing
    /// off to 1 s, and retries within a call by itself.)
    fn recovers(&self, op: StoreOp, error: &RedisError) -> bool {
        match &self.0.connection {
            Connection::Single(slot) if error.kind() == ErrorKind::AuthenticationFailed => {
                slot.rebuild()
            }
            _ => may_repeat(op, error),
        }
    }

    fn failed(&self, error: &RedisError) -> StoreError {
        let text = scrub(&error.to_string(), &self.0.secrets);
        if error.is_connection_refusal() {
            StoreError::Unreached(text)
        } else {
            StoreError::Failed(text)
        }
    }

    /// The whole call, connecting included, within `RELAY_REDIS_TIMEOUT_MS`.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.0.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.0.timeout)))
    }

    fn record<T>(&self, op: StoreOp, started: Instant, result: &Result<T, StoreError>) {
        let outcome = match result {
            Ok(_) => StoreResult::Ok,
            Err(StoreError::Timeout(_)) => StoreResult::Timeout,
            Err(StoreError::Failed(_) | StoreError::Unreached(_)) => StoreResult::Error,
        };
        self.0
            .metrics
            .record_store_operation(op, outcome, started.elapsed());
    }

    async fn connection(&self) -> Result<Handle, StoreError> {
        match &self.0.connection {
            Connection::Single(slot) => Ok(Handle::Single(read(&slot.manager).clone())),
            Connection::Cluster(slot) => self.cluster(slot).await.map(Handle::Cluster),
        }
    }

    /// The Cluster connection. Without one, a single task connects (at most once per
    /// [`RECONNECT_INTERVAL`]) while every caller waits for its outcome; the task goes on if
    /// the callers give up, so a slow first connection still completes.
    async fn cluster(&self, slot: &ClusterSlot) -> Result<ClusterConnection, StoreError> {
        if let Some(connection) = &slot.state.borrow().connection {
            return Ok(connection.clone());
        }
        let mut start = false;
        slot.state.send_if_modified(|state| {
            let due = state
                .last_attempt
                .is_none_or(|at| at.elapsed() >= RECONNECT_INTERVAL);
            start = state.connection.is_none() && !state.connecting && due;
            if start {
                state.connecting = true;
                state.last_attempt = Some(Instant::now());
            }
            start
        });
        if start {
            let (client, state) = (slot.client.clone(), slot.state.clone());
            let (timeout, secrets) = (slot.connect_timeout, self.0.secrets.clone());
            tokio::spawn(async move {
                let result = tokio::time::timeout(timeout, client.get_async_connection()).await;
                state.send_modify(|state| {
                    state.connecting = false;
                    match result {
                        Ok(Ok(connection)) => {
                            state.connection = Some(connection);
                            state.error = None;
                        }
                        Ok(Err(error)) => {
                            let text = format!("cannot reach the cluster: {error}");
                            state.error = Some(scrub(&text, &secrets));
                        }
                        Err(_) => {
                            state.error =
                                Some(format!("cannot reach the cluster within {timeout:?}"));
                        }
                    }
                });
            });
        }
        let mut receiver = slot.state.subscribe();
        let state = receiver
            .wait_for(|state| state.connection.is_some() || !state.connecting)
            .await
            .map_err(|_| StoreError::Unreached("the cluster connection was dropped".to_owned()))?;
        match (&state.connection, &state.error) {
            (Some(connection), _) => Ok(connection.clone()),
            (None, Some(error)) => Err(StoreError::Unreached(error.clone())),
            (None, None) => Err(StoreError::Unreached(
                "not connected to the cluster yet".to_owned(),
            )),
        }
    }

    /// Logs a store failure at warn, at most once per [`crate::throttle::WARN_INTERVAL`] (the rest are
    /// counted and reported with the next warning), so an outage does not flood the log.
    pub(crate) fn warn(&self, what: &str, error: &StoreError) {
        let Some(suppressed) = self.0.warnings.allow(Instant::now()) else {
            return;
        };
        tracing::warn!(
            %error,
            failure_mode = self.0.failure.as_str(),
            suppressed,
            "shared store: {what}"
        );
    }
}

impl SingleSlot {
    /// Replaces the manager (after a refused password, which it keeps for good), unless that
    /// was done less than [`RECONNECT_INTERVAL`] ago. Says whether it did.
    fn rebuild(&self) -> bool {
        {
            let mut last = self
                .last_rebuild
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < RECONNECT_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        // Cannot fail: the same client and configuration made the first manager.
        let Ok(manager) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        else {
            return false;
        };
        *self
            .manager
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = manager;
        true
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `op` may be sent again after `error`, an I/O error: always when the connection was
/// refused (nothing was sent); after a lost connection (the command may have run) only for the
/// dedup steps and the emit, which are safe to repeat — a claim that finds its own value is
/// ours, the completion is a compare-and-set, an event is recorded once per id — unlike
/// taking a rate-limit slot or merging a status (whose `changed` would read false).
fn may_repeat(op: StoreOp, error: &RedisError) -> bool {
    error.is_connection_refusal()
        || (error.is_io_error()
            && matches!(op, StoreOp::Claim | StoreOp::Complete | StoreOp::EventEmit))
}

fn invocation<'a>(script: &'a Script, keys: &[&[u8]], args: &[&[u8]]) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    for key in keys {
        invocation.key(*key);
    }
    for arg in args {
        invocation.arg(*arg);
    }
    invocation
}

/// The text with every configured password replaced.
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "***")
    })
}

/// A connection for one call.
enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> RedisError {
        RedisError::from(std::io::Error::from(kind))
    }

    #[test]
    fn a_refused_connection_is_retried_for_every_operation() {
        for op in StoreOp::ALL {
            assert!(
                may_repeat(op, &io(std::io::ErrorKind::ConnectionRefused)),
                "{op:?}"
            );
        }
    }

    #[test]
    fn a_lost_connection_is_retried_only_for_the_steps_safe_to_repeat() {
        let lost = io(std::io::ErrorKind::BrokenPipe);
        assert!(may_repeat(StoreOp::Claim, &lost));
        assert!(may_repeat(StoreOp::Complete, &lost));
        assert!(may_repeat(StoreOp::EventEmit, &lost));
        assert!(
            !may_repeat(StoreOp::Limit, &lost),
            "a slot must not be taken twice"
        );
        assert!(
            !may_repeat(StoreOp::StatusMerge, &lost),
            "a repeated merge reads unchanged, and its event would be lost"
        );
    }

    #[test]
    fn a_server_error_is_not_retried() {
        let error = RedisError::from((ErrorKind::Client, "no"));
        assert!(!may_repeat(StoreOp::Claim, &error));
    }

    #[test]
    fn passwords_are_scrubbed_from_error_texts() {
        let text = scrub(
            "auth failed for redis://:hunter2@h:6379",
            &["hunter2".to_owned()],
        );
        assert_eq!(text, "auth failed for redis://:***@h:6379");
    }
}
