//! The delivery worker: takes pending events from where they wait, attempts each (`deliver`),
//! and keeps the ones that failed in a local schedule until their next attempt — a
//! `tokio_util` `DelayQueue`, so thousands of waiting retries cost one timer.
//!
//! Memory: events arrive on the outbox's channel. Redis: the worker polls the stream's
//! consumer group for new events every [`POLL`] (never a blocking read: the store multiplexes
//! every Redis call over one connection), takes over events another replica has left silent
//! for [`STALE_AFTER`], and every [`KEEP_EVERY`] tells the stream it still holds its own, so a
//! live replica's slow retries are not taken from it. An event leaves the outbox only when it
//! is delivered (2xx) or dead (410, or older than `RELAY_EVENTS_MAX_AGE_SECS`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use super::Event;
use super::deliver::{Attempt, Deliverer, backoff};
use super::memory::MemoryOutbox;
use super::redis::{RedisOutbox, Taken};
use crate::clock::now_ms;
use crate::metrics::{EventResult, Metrics};

/// How often the stream is read for new events.
const POLL: Duration = Duration::from_millis(200);
/// How long a replica's event may sit silent before another replica takes it (SPEC: 30 s).
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(30);
/// How often a replica renews its hold on the events it is retrying.
const KEEP_EVERY: Duration = Duration::from_secs(10);
/// Attempts in flight at once.
const CONCURRENT: usize = 32;
/// Events read from the stream per call.
const BATCH: usize = 64;

/// Where the worker takes events from.
pub(crate) enum Source {
    Memory(MemoryOutbox, mpsc::UnboundedReceiver<Event>),
    Redis(RedisOutbox),
}

/// An event this worker holds: its stream entry (Redis) and its failures so far.
struct Held {
    entry: Option<String>,
    event: Event,
    failures: u32,
}

/// Delivers until `stop` is cancelled. Events not yet delivered then stay in Redis (another
/// replica, or this one restarted, takes them) or are lost with the process (memory).
pub(crate) async fn run(
    source: Source,
    deliverer: Deliverer,
    max_age: Duration,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let deliverer = Arc::new(deliverer);
    let mut worker = Worker {
        schedule: DelayQueue::new(),
        attempts: JoinSet::new(),
        held: HashSet::new(),
        finished: Vec::new(),
        ages: BTreeSet::new(),
        max_age,
        metrics,
    };
    let (memory, mut channel, redis) = match source {
        Source::Memory(outbox, channel) => (Some(outbox), Some(channel), None),
        Source::Redis(outbox) => (None, None, Some(outbox)),
    };
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keep = tokio::time::interval(KEEP_EVERY);
    keep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Due events start only while there is room: the rest stay in the schedule.
        let room = worker.attempts.len() < CONCURRENT;
        tokio::select! {
            () = stop.cancelled() => break,
            Some(event) = recv(&mut channel) => {
                worker.hold(Held { entry: None, event, failures: 0 }, Duration::ZERO);
            }
            Some(due) = std::future::poll_fn(|cx| worker.schedule.poll_expired(cx)), if room => {
                let held = due.into_inner();
                let deliverer = Arc::clone(&deliverer);
                worker.attempts.spawn(async move {
                    let attempt = deliverer.attempt(&held.event).await;
                    (held, attempt)
                });
            }
            Some(joined) = worker.attempts.join_next() => {
                if let Ok((held, attempt)) = joined {
                    worker.settle(held, attempt, memory.as_ref(), redis.as_ref()).await;
                }
            }
            _ = poll.tick(), if redis.is_some() => {
                if let Some(outbox) = &redis {
                    worker.flush(outbox).await;
                    match outbox.take_new(BATCH).await {
                        Ok(taken) => worker.take(taken),
                        Err(error) => tracing::warn!(%error, "cannot read the event stream"),
                    }
                }
            }
            _ = keep.tick() => {
                worker.renew(memory.as_ref(), redis.as_ref()).await;
            }
        }
    }
}

async fn recv(channel: &mut Option<mpsc::UnboundedReceiver<Event>>) -> Option<Event> {
    match channel {
        Some(channel) => channel.recv().await,
        None => std::future::pending().await,
    }
}

struct Worker {
    schedule: DelayQueue<Held>,
    attempts: JoinSet<(Held, Attempt)>,
    /// Stream entries held (scheduled or in flight), so a takeover never doubles one.
    held: HashSet<String>,
    /// Stream entries finished since the last poll: removed together, one round trip.
    finished: Vec<String>,
    /// (made at, id) of every event held: the oldest is the first.
    ages: BTreeSet<(u64, String)>,
    max_age: Duration,
    metrics: Arc<Metrics>,
}

impl Worker {
    fn hold(&mut self, held: Held, after: Duration) {
        if let Some(entry) = &held.entry {
            self.held.insert(entry.clone());
        }
        self.ages
            .insert((held.event.created_ms, held.event.id.clone()));
        self.schedule.insert(held, after);
    }

    fn take(&mut self, taken: Vec<Taken>) {
        for Taken { entry, event } in taken {
            if !self.held.contains(&entry) {
                let held = Held {
                    entry: Some(entry),
                    event,
                    failures: 0,
                };
                self.hold(held, Duration::ZERO);
            }
        }
    }

    /// After an attempt: done, dead, or scheduled again.
    async fn settle(
        &mut self,
        mut held: Held,
        attempt: Attempt,
        memory: Option<&MemoryOutbox>,
        redis: Option<&RedisOutbox>,
    ) {
        let kind = held.event.kind.name();
        let metrics = Arc::clone(&self.metrics);
        let lifecycle = &metrics.lifecycle;
        let reason = match attempt {
            Attempt::Delivered => {
                lifecycle.event(kind, EventResult::Delivered);
                return self.finish(held, memory, redis).await;
            }
            Attempt::Gone => "the receiver answered 410 Gone".to_owned(),
            Attempt::Failed {
                retry_after,
                reason,
            } => {
                held.failures = held.failures.saturating_add(1);
                let wait = backoff(held.failures, retry_after);
                if age(&held.event) + wait < self.max_age {
                    lifecycle.event(kind, EventResult::Retried);
                    tracing::debug!(id = %held.event.id, %reason, ?wait, "event delivery failed; will retry");
                    return self.hold(held, wait);
                }
                format!("undelivered after {} attempts ({reason})", held.failures)
            }
        };
        lifecycle.event(kind, EventResult::Dead);
        tracing::warn!(id = %held.event.id, r#type = kind, %reason, "event dead");
        self.finish(held, memory, redis).await;
    }

    async fn finish(
        &mut self,
        held: Held,
        memory: Option<&MemoryOutbox>,
        redis: Option<&RedisOutbox>,
    ) {
        self.ages
            .remove(&(held.event.created_ms, held.event.id.clone()));
        if let Some(outbox) = memory {
            outbox.settled();
        }
        if let (Some(_), Some(entry)) = (redis, held.entry) {
            // Removed from the stream at the next poll, with the others finished meanwhile.
            self.finished.push(entry);
        }
    }

    /// Removes the finished entries from the stream. One that cannot be removed stays pending
    /// and is delivered again after a takeover (at least once).
    async fn flush(&mut self, outbox: &RedisOutbox) {
        if self.finished.is_empty() {
            return;
        }
        let finished = std::mem::take(&mut self.finished);
        if let Err(error) = outbox.done_all(&finished).await {
            tracing::warn!(%error, events = finished.len(), "cannot remove finished events from the stream");
        }
        for entry in &finished {
            self.held.remove(entry);
        }
    }

    /// Renews the hold on this replica's entries, takes over silent ones, updates the gauges.
    async fn renew(&mut self, memory: Option<&MemoryOutbox>, redis: Option<&RedisOutbox>) {
        let metrics = Arc::clone(&self.metrics);
        let lifecycle = &metrics.lifecycle;
        if let Some(outbox) = memory {
            lifecycle.set_pending(outbox.pending() as u64, self.oldest_age().as_secs());
        }
        let Some(outbox) = redis else { return };
        let entries: Vec<String> = self.held.iter().cloned().collect();
        if !entries.is_empty()
            && let Err(error) = outbox.keep(&entries).await
        {
            tracing::warn!(%error, "cannot renew the hold on pending events");
        }
        match outbox.take_stale(STALE_AFTER, BATCH).await {
            Ok(taken) => self.take(taken),
            Err(error) => tracing::warn!(%error, "cannot take over silent events"),
        }
        if let Ok((count, oldest)) = outbox.pending().await {
            let oldest = oldest.map_or(0, |created| now_ms().saturating_sub(created) / 1000);
            lifecycle.set_pending(count, oldest);
        }
    }

    /// The age of the oldest event this worker holds (memory mode's gauge).
    fn oldest_age(&self) -> Duration {
        self.ages.first().map_or(Duration::ZERO, |(created, _)| {
            Duration::from_millis(now_ms().saturating_sub(*created))
        })
    }
}

/// How long ago the event was made (on any replica).
fn age(event: &Event) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(event.created_ms))
}
