//! Several store steps in one round trip (SPEC "After SENT": an accepted send's status record,
//! its `waId` index and its event go to Redis together).
//!
//! The decision: on a Cluster, redis-rs pipelines only within one slot (a pipeline whose keys
//! span slots is refused with CROSSSLOT before it is sent), and these steps' keys are in
//! different slots by nature (a record per `messageId`, an index per `waId`, one stream). So a
//! batch is one pipeline per slot, all sent at once: the caller waits for one round trip, as
//! on a standalone server, where it is one pipeline.

use std::time::Instant;

use redis::cluster_routing::Slot;
use redis::{Cmd, FromRedisValue, Script, ScriptInvocation, ServerErrorKind, Value};

use super::{Connection, SharedStore, StoreError, invocation};
use crate::metrics::StoreOp;

impl SharedStore {
    /// Scripts and commands in one round trip, bounded and counted as one `op`: one pipeline
    /// on a standalone server; on a Cluster, whose client pipelines only within one slot, one
    /// pipeline per slot, all sent at once. The replies come back in the steps' order, error
    /// replies included (`Value::ServerError`, for the caller to read: see [`reply`]); the
    /// scripts Redis had not loaded yet (NOSCRIPT: they did not run) are loaded and run in
    /// one more round trip. A failed call may have run some steps and not others.
    pub(crate) async fn batch(
        &self,
        op: StoreOp,
        steps: &[Step<'_>],
    ) -> Result<Vec<Value>, StoreError> {
        let started = Instant::now();
        let result = self
            .bounded(async {
                let groups = self.groups(steps);
                let replies = futures_util::future::join_all(
                    groups.iter().map(|group| self.pipeline(op, steps, group)),
                )
                .await;
                let mut values = vec![Value::Nil; steps.len()];
                for (group, replies) in groups.iter().zip(replies) {
                    for (&index, value) in group.iter().zip(replies?) {
                        if let Some(slot) = values.get_mut(index) {
                            *slot = value;
                        }
                    }
                }
                Ok(values)
            })
            .await;
        self.record(op, started, &result);
        result
    }

    /// The steps' indexes, grouped into the pipelines that carry them.
    fn groups(&self, steps: &[Step<'_>]) -> Vec<Vec<usize>> {
        match &self.0.connection {
            Connection::Single(_) => vec![(0..steps.len()).collect()],
            Connection::Cluster(_) => {
                let mut groups: Vec<(Slot, Vec<usize>)> = Vec::new();
                for (index, step) in steps.iter().enumerate() {
                    let slot = Slot::for_key(&step.key);
                    match groups.iter_mut().find(|(held, _)| *held == slot) {
                        Some((_, group)) => group.push(index),
                        None => groups.push((slot, vec![index])),
                    }
                }
                groups.into_iter().map(|(_, group)| group).collect()
            }
        }
    }

    /// One pipeline of the steps in `group`; then, if Redis had not loaded some of their
    /// scripts, one more with those scripts loaded and run again.
    async fn pipeline(
        &self,
        op: StoreOp,
        steps: &[Step<'_>],
        group: &[usize],
    ) -> Result<Vec<Value>, StoreError> {
        let mut pipeline = redis::pipe();
        for step in group.iter().filter_map(|&index| steps.get(index)) {
            match &step.action {
                Action::Script { invocation, .. } => pipeline.invoke_script(invocation),
                Action::Command(command) => pipeline.add_command(command.clone()),
            };
        }
        let mut values = self.send(op, &mut pipeline).await?;
        let unloaded: Vec<(&mut Value, &Script, &ScriptInvocation<'_>)> = values
            .iter_mut()
            .zip(group.iter().filter_map(|&index| steps.get(index)))
            .filter_map(|(value, step)| match &step.action {
                Action::Script { script, invocation } if not_loaded(value) => {
                    Some((value, *script, invocation))
                }
                _ => None,
            })
            .collect();
        if unloaded.is_empty() {
            return Ok(values);
        }
        let mut again = redis::pipe();
        for (_, script, invocation) in &unloaded {
            again.load_script(script).ignore().invoke_script(invocation);
        }
        let replies = self.send(op, &mut again).await?;
        for ((value, _, _), reply) in unloaded.into_iter().zip(replies) {
            *value = reply;
        }
        Ok(values)
    }

    /// `pipeline`'s replies, error replies included.
    async fn send(
        &self,
        op: StoreOp,
        pipeline: &mut redis::Pipeline,
    ) -> Result<Vec<Value>, StoreError> {
        let pipeline = &*pipeline.ignore_errors();
        let reply = self
            .attempts(op, move |mut connection| async move {
                pipeline.query_async::<Value>(&mut connection).await
            })
            .await?;
        match reply {
            Value::Array(values) => Ok(values),
            other => Err(StoreError::Failed(format!(
                "a pipeline's reply is not a list: {other:?}"
            ))),
        }
    }
}

/// NOSCRIPT: the script was not run, since Redis had not loaded it (a restart, a new node).
fn not_loaded(value: &Value) -> bool {
    matches!(value, Value::ServerError(error) if error.kind() == Some(ServerErrorKind::NoScript))
}

/// A reply of [`SharedStore::batch`] read as `T`; an error reply is [`StoreError::Failed`].
pub(crate) fn reply<T: FromRedisValue>(value: Value) -> Result<T, StoreError> {
    let value = value
        .extract_error()
        .map_err(|error| StoreError::Failed(error.to_string()))?;
    redis::from_redis_value(value).map_err(|error| StoreError::Failed(error.to_string()))
}

/// Whether `value` is the error reply with `code` (`NOGROUP`, `BUSYGROUP`, …).
pub(crate) fn is_error(value: &Value, code: &str) -> bool {
    matches!(value, Value::ServerError(error) if error.code() == code)
}

/// One step of a [`SharedStore::batch`]: a script or a command, and a key of it, whose slot
/// decides where it goes on a Cluster.
pub(crate) struct Step<'a> {
    key: Vec<u8>,
    action: Action<'a>,
}

enum Action<'a> {
    Script {
        script: &'a Script,
        invocation: ScriptInvocation<'a>,
    },
    Command(Cmd),
}

impl<'a> Step<'a> {
    /// `script` on `keys` (all in one slot), with `args`.
    pub(crate) fn script(script: &'a Script, keys: &[&[u8]], args: &[&[u8]]) -> Self {
        Self {
            key: keys.first().map(|key| key.to_vec()).unwrap_or_default(),
            action: Action::Script {
                script,
                invocation: invocation(script, keys, args),
            },
        }
    }

    /// `command`, whose key (or keys, all in one slot) include `key`.
    pub(crate) fn command(key: &[u8], command: Cmd) -> Self {
        Self {
            key: key.to_vec(),
            action: Action::Command(command),
        }
    }
}
