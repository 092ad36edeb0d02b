//! Completions that land (SPEC "Shared deduplication", "Slow is not down"): a leader's
//! completion — remember its 2xx, or release its claim — is tried once inline; if the store
//! fails or is slow, it is retried in the background until it lands or the claim's lease
//! ends, so a stall never leaves a claim that other replicas wait out and then send again.
//!
//! Retries are spaced from [`RETRY_FIRST`], doubling to [`RETRY_MAX`], with jitter. They run
//! on the same multiplexed connection as the claim they complete, so Redis applies a claim
//! that a stall held back before the completion that follows it. Every result is counted in
//! `lipachat_relay_dedup_completions_total{result}`; a completion given up (its lease ended,
//! or [`MAX_BACKGROUND`] were already retrying) is counted and logged with its `messageId`,
//! never dropped silently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::Remembered;
use super::redis::{Completion, RedisWindow};
use crate::metrics::{CompletionResult, Metrics};

/// First pause before a completion is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between tries.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Completions retrying at once, at most: a bound on the tasks a long stall can pile up.
const MAX_BACKGROUND: usize = 65_536;

/// Runs completions, inline first and then in the background.
#[derive(Debug)]
pub(super) struct Completer {
    metrics: Arc<Metrics>,
    background: Arc<Semaphore>,
}

impl Completer {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            background: Arc::new(Semaphore::new(MAX_BACKGROUND)),
        }
    }

    /// Completes `claim` now; if that fails, goes on in the background (see [`Self::retry`]).
    pub(super) async fn complete(
        &self,
        shared: &RedisWindow,
        message_id: Arc<str>,
        claim: Box<[u8]>,
        answer: Option<Remembered>,
        until: Instant,
    ) {
        match shared.complete(&message_id, &claim, answer.as_ref()).await {
            Ok(done) => record(&self.metrics, done),
            Err(error) => {
                shared
                    .store()
                    .warn("cannot record a send's outcome yet; retrying", &error);
                self.retry(shared.clone(), message_id, claim, answer, until);
            }
        }
    }

    /// Retries the completion of `claim` in the background until it lands or `until` (the
    /// claim's lease end) has passed.
    pub(super) fn retry(
        &self,
        shared: RedisWindow,
        message_id: Arc<str>,
        claim: Box<[u8]>,
        answer: Option<Remembered>,
        until: Instant,
    ) {
        let metrics = Arc::clone(&self.metrics);
        metrics.record_completion(CompletionResult::Retried);
        let Ok(permit) = Arc::clone(&self.background).try_acquire_owned() else {
            give_up(&metrics, &message_id, "too many completions are retrying");
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            give_up(&metrics, &message_id, "the runtime is shutting down");
            return;
        };
        runtime.spawn(async move {
            let _permit = permit;
            let mut pause = RETRY_FIRST;
            loop {
                let wait = jittered(pause);
                if Instant::now() + wait >= until {
                    give_up(&metrics, &message_id, "its lease ended first");
                    return;
                }
                tokio::time::sleep(wait).await;
                match shared.complete(&message_id, &claim, answer.as_ref()).await {
                    Ok(done) => return record(&metrics, done),
                    Err(error) => shared
                        .store()
                        .warn("cannot record a send's outcome", &error),
                }
                pause = (pause * 2).min(RETRY_MAX);
            }
        });
    }
}

/// `pause` plus up to half of it again, so replicas that failed together retry apart.
fn jittered(pause: Duration) -> Duration {
    let half = u64::try_from(pause.as_micros() / 2).unwrap_or(0);
    pause + Duration::from_micros(fastrand::u64(0..=half))
}

fn record(metrics: &Metrics, done: Completion) {
    metrics.record_completion(match done {
        Completion::Completed => CompletionResult::Completed,
        Completion::Restored => CompletionResult::Restored,
        Completion::Superseded => CompletionResult::Superseded,
    });
}

fn give_up(metrics: &Metrics, message_id: &str, why: &str) {
    metrics.record_completion(CompletionResult::GaveUp);
    tracing::warn!(
        message_id,
        "shared store: gave up recording a send's outcome: {why}; its claim lapses with its lease"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_spaced_between_the_pause_and_half_again() {
        for pause in [RETRY_FIRST, RETRY_MAX] {
            for _ in 0..100 {
                let wait = jittered(pause);
                assert!(wait >= pause && wait <= pause + pause / 2, "{wait:?}");
            }
        }
    }
}
