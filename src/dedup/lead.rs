//! The leader of a send (SPEC "Deduplication"): the one request per `messageId` that claims it,
//! sends it and records its outcome, for itself and every caller coalesced onto it. Ending
//! without an outcome (a panic, a cancelled task, shutdown) frees its entry and releases its
//! shared claim, so its waiters get 502 and the next request leads.

use std::sync::Arc;
use std::time::Instant;

use super::{ClaimToken, Dedup, OutcomeSender, Remembered, Resolved};
use crate::fingerprint::Fingerprint;
use crate::outcome::Outcome;

/// Held by the leader of a send. [`Lead::complete`] records the outcome; dropping it without
/// completing frees the entry, so its waiters get 502 and the next request leads.
#[derive(Debug)]
pub(crate) struct Lead {
    pub(super) dedup: Dedup,
    /// Shared with the table's key and the moka window's: one allocation.
    pub(super) message_id: Arc<str>,
    pub(super) fingerprint: Fingerprint,
    pub(super) seq: u64,
    pub(super) finished: bool,
    /// `None` until claimed in the windows.
    pub(super) token: Option<ClaimToken>,
}

impl Lead {
    /// Claims the `messageId` in the windows (`deadline` bounds a wait for another replica's
    /// send). When the claim ends the send before it starts — a replay, 422, 503 or 504 —
    /// the waiters get that outcome too and the leader is finished.
    pub(crate) async fn claim(&mut self, deadline: Instant) -> Result<(), Resolved> {
        let claimed = self
            .dedup
            .claim(&self.message_id, self.fingerprint, deadline)
            .await;
        match claimed {
            Ok(token) => {
                self.token = Some(token);
                Ok(())
            }
            Err(resolved) => {
                let outcome = match &resolved {
                    Resolved::Replay(answer) => Ok(answer.to_reply()),
                    Resolved::Refused(failure) => Err(failure.clone()),
                };
                self.finish(outcome);
                Err(resolved)
            }
        }
    }

    /// Remembers a 2xx answer (in memory, and in the shared window if the claim is there) or
    /// releases the claim, then wakes every waiter with `outcome`. Waiters are woken after
    /// the windows are updated, so a caller that retries at once sees the remembered answer.
    pub(crate) async fn complete(mut self, outcome: &Outcome) {
        let inner = &self.dedup.0;
        let answer = match outcome {
            Ok(reply) if reply.is_success() => Some(Remembered::of(self.fingerprint, reply)),
            _ => None,
        };
        if let Some(answer) = &answer {
            inner
                .memory
                .insert(Arc::clone(&self.message_id), answer.clone());
        }
        if let (Some(shared), Some(ClaimToken::Shared { value, until })) =
            (&inner.shared, self.token.take())
        {
            let id = Arc::clone(&self.message_id);
            inner
                .completer
                .complete(shared, id, value, answer, until)
                .await;
        }
        self.finish(outcome.clone());
    }

    /// Leaves the table and wakes the waiters, if any, with `outcome`.
    fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(waiters) = self.leave() {
            waiters.send_replace(Some(outcome));
        }
    }

    /// Removes this leader's entry; returns its waiters' channel.
    fn leave(&self) -> Option<OutcomeSender> {
        let mut table = self.dedup.0.table();
        if table
            .get(&*self.message_id)
            .is_some_and(|pending| pending.seq == self.seq)
        {
            return table
                .remove(&*self.message_id)
                .and_then(|pending| pending.waiters);
        }
        None
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Ended without an outcome: free the entry; dropping its channel tells every waiter.
        drop(self.leave());
        tracing::warn!(
            message_id = &*self.message_id,
            "a send ended without an outcome; its waiters get 502"
        );
        // Release the shared claim rather than leave it to its lease, when a runtime is still
        // there to do it.
        if let (Some(shared), Some(ClaimToken::Shared { value, until })) =
            (&self.dedup.0.shared, self.token.take())
        {
            let id = Arc::clone(&self.message_id);
            let completer = &self.dedup.0.completer;
            completer.retry(shared.clone(), id, value, None, until);
        }
    }
}
