//! Meta's Cloud API shape, which some providers pass through unchanged:
//! `entry[].changes[].value.statuses[]` (each with `id`, the wamid, a `status` and, when it
//! failed, `errors[]`) and `.messages[]` (each a customer's message with its own `id`). A
//! status names only the wamid: the listener finds our `messageId` through the `waId` the
//! gateway returned for that send.

use serde_json::{Map, Value};

use super::lipachat::callback_status;
use super::{Callback, error_detail, raw};
use crate::status::{Status, Update};

/// The callbacks of a body in Meta's shape, or `None` when it is not one (or holds nothing
/// the relay reads: it is then passed on whole as unrecognised).
pub(super) fn parse(object: &Map<String, Value>) -> Option<Vec<Callback>> {
    let entries = object.get("entry")?.as_array()?;
    let mut callbacks = Vec::new();
    let values = entries
        .iter()
        .filter_map(|entry| entry.get("changes")?.as_array())
        .flatten()
        .filter_map(|change| change.get("value"));
    for value in values {
        for status in list(value, "statuses") {
            callbacks.extend(status_callback(status));
        }
        for message in list(value, "messages") {
            if let Some(id) = message.get("id").and_then(Value::as_str) {
                callbacks.push(Callback::Received {
                    key: id.to_owned(),
                    data: raw(message),
                });
            }
        }
    }
    (!callbacks.is_empty()).then_some(callbacks)
}

fn list<'a>(value: &'a Value, name: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(name)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn status_callback(status: &Value) -> Option<Callback> {
    let wa_id = status.get("id")?.as_str()?.trim();
    let word = status.get("status")?.as_str()?;
    let status_of = Status::parse(word).filter(|s| callback_status(*s))?;
    if wa_id.is_empty() {
        return None;
    }
    let mut update = Update::now(status_of);
    if status_of == Status::Failed {
        let detail = status.get("errors").and_then(|errors| errors.get(0));
        update.error = Some(detail.map(error_detail).unwrap_or_default());
    }
    Some(Callback::StatusByWaId {
        wa_id: wa_id.to_owned(),
        update,
    })
}
