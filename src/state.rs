//! What every handler shares (STYLE "Building the app"): [`AppState`], one `Clone` of cheap
//! handles, and the [`Slot`] a request holds while it uses one of `RELAY_MAX_IN_FLIGHT`.
//! Both `app` (which builds the router) and `routes` (the handlers) use this module; neither
//! uses the other's internals.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::dedup::Dedup;
use crate::dedup::memory::MemoryWindow;
use crate::dedup::redis::RedisWindow;
use crate::events::deliver::Deliverer;
use crate::events::worker::Source;
use crate::lifecycle::Lifecycle;
use crate::limit::Limits;
use crate::metrics::{InFlightGuard, Metrics};
use crate::queue::Queue;
use crate::queue::worker::Pipeline;
use crate::shutdown::Shutdown;
use crate::store::{SharedStore, StoreSetupError};
use crate::templates::ListingCache;
use crate::upstream::{ClientBuildError, GatewayClient};

/// What every request shares, behind one `Arc`: extractors clone the state per request, and
/// a clone should be one reference count, not one per handle.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    pub(crate) config: Arc<Config>,
    pub(crate) gateway: GatewayClient,
    pub(crate) dedup: Dedup,
    pub(crate) limits: Limits,
    pub(crate) metrics: Arc<Metrics>,
    /// The drain: readiness, and the tracker every new send is spawned on.
    pub(crate) shutdown: Shutdown,
    pub(crate) openapi: Bytes,
    /// The gateway's template listings, by business number (`GET /templates`).
    pub(crate) templates: ListingCache,
    /// Status records and events, when the webhook listener or events are on.
    pub(crate) lifecycle: Option<Lifecycle>,
    /// Queued sends, when Redis is configured.
    pub(crate) queue: Option<Queue>,
    /// Where the events' delivery worker takes events from, until it starts.
    events_source: Mutex<Option<Source>>,
    /// `RELAY_MAX_IN_FLIGHT` slots.
    slots: Arc<Semaphore>,
}

/// Why the state could not be built; reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error(transparent)]
    Store(#[from] StoreSetupError),
}

impl AppState {
    /// Builds the state for a configuration. Makes no connection: the gateway's and the
    /// shared store's are opened on first use.
    pub fn new(config: Config) -> Result<Self, StateError> {
        let metrics = Arc::new(Metrics::new());
        let gateway = GatewayClient::new(&config, Arc::clone(&metrics))?;
        let store = SharedStore::new(&config.redis, Arc::clone(&metrics))?;
        let memory = MemoryWindow::new(config.dedup_capacity, config.dedup_ttl);
        let shared = store
            .clone()
            .map(|store| RedisWindow::new(store, config.dedup_ttl));
        let dedup = Dedup::new(memory, shared, Arc::clone(&metrics));
        let limits = Limits::new(config.limits, store.clone(), Arc::clone(&metrics));
        let (lifecycle, events_source) =
            match Lifecycle::new(&config, store.as_ref(), Arc::clone(&metrics)) {
                Some((lifecycle, source)) => (Some(lifecycle), source),
                None => (None, None),
            };
        let queue = match (&store, &lifecycle) {
            (Some(store), Some(lifecycle)) => Some(Queue::new(
                store.clone(),
                lifecycle.clone(),
                Arc::clone(&metrics),
                config.status.queue_max_age,
                config.dedup_ttl,
            )),
            _ => None,
        };
        let openapi = Bytes::from(crate::openapi::document_json(config.default_from.is_some()));
        let slots = Arc::new(Semaphore::new(config.max_in_flight));
        Ok(Self(Arc::new(Shared {
            config: Arc::new(config),
            gateway,
            dedup,
            limits,
            metrics,
            shutdown: Shutdown::new(),
            openapi,
            templates: ListingCache::default(),
            lifecycle,
            queue,
            events_source: Mutex::new(events_source),
            slots,
        })))
    }

    /// A `RELAY_MAX_IN_FLIGHT` slot, or `None` when all are taken.
    pub(crate) fn take_slot(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some(Slot::new(permit, self.metrics.in_flight()))
    }
}

impl AppState {
    /// Starts the events' delivery worker, once; `None` when events are off (or it runs).
    pub(crate) fn start_events_worker(&self) -> Option<tokio::task::JoinHandle<()>> {
        let events = self.config.events.as_ref()?;
        let source = self
            .events_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let deliverer = match Deliverer::new(events) {
            Ok(deliverer) => deliverer,
            Err(error) => {
                tracing::error!(%error, "cannot build the events client; no events will be sent");
                return None;
            }
        };
        let task = crate::events::worker::run(
            source,
            deliverer,
            events.max_age,
            Arc::clone(&self.metrics),
            // It runs until `serve` returns (the sends drained) and drops its handle.
            tokio_util::sync::CancellationToken::new(),
        );
        Some(tokio::spawn(task))
    }

    /// Starts the queue's worker; `None` without Redis. It stops taking sends when the drain
    /// begins; the sends it is working on are on the drain's tracker.
    pub(crate) fn start_queue_worker(&self) -> Option<tokio::task::JoinHandle<()>> {
        let queue = self.queue.clone()?;
        let lifecycle = self.lifecycle.clone()?;
        let store_timeout = self.config.redis.timeout;
        let pipeline = Pipeline {
            dedup: self.dedup.clone(),
            limits: self.limits.clone(),
            gateway: self.gateway.clone(),
            lifecycle,
            metrics: Arc::clone(&self.metrics),
            shutdown: self.shutdown.clone(),
            lease: crate::dedup::lease(self.config.deadline, store_timeout),
        };
        Some(tokio::spawn(crate::queue::worker::run(queue, pipeline)))
    }

    /// Events waiting for delivery in this process's memory: counted when an event is
    /// recorded, before the webhook that caused it is answered, so a test can wait for every
    /// event to be delivered. Not part of the API.
    #[doc(hidden)]
    pub fn events_pending_in_memory(&self) -> usize {
        self.lifecycle
            .as_ref()
            .map_or(0, Lifecycle::pending_in_memory)
    }

    /// Whether shutdown has begun: `/readyz` answers 503 and new sends are refused.
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_draining()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// A `RELAY_MAX_IN_FLIGHT` slot and its place in the in-flight gauge, held until dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _gauge: InFlightGuard,
}

impl Slot {
    /// Wraps a permit of the slots' semaphore.
    pub(crate) fn new(permit: OwnedSemaphorePermit, gauge: InFlightGuard) -> Self {
        Self {
            _permit: permit,
            _gauge: gauge,
        }
    }
}
