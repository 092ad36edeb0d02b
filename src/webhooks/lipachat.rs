//! Lipachat's own shapes (its "Webhooks" page): an inbound message — `messageId`, `from`, `to`,
//! `profileName`, `type` and the type's object — and a status callback. The page names status
//! callbacks but shows no sample; the relay assumes an object with `messageId` and `status`
//! (SENT, DELIVERED, READ or FAILED, any letter case) and, for a failure, the details under
//! `error` (an object) or `errors` (a list; the first is kept), each with `code`, `title`,
//! `message`. The mock gateway posts exactly this shape.

use serde_json::{Map, Value};

use super::{Callback, error_detail, raw};
use crate::status::{Status, Update};

/// The callbacks of a body in Lipachat's shape, or `None` when it is not one.
pub(super) fn parse(object: &Map<String, Value>) -> Option<Callback> {
    let message_id = object.get("messageId")?.as_str()?.trim();
    if message_id.is_empty() {
        return None;
    }
    if let Some(word) = object.get("status").and_then(Value::as_str) {
        let status = Status::parse(word).filter(|status| callback_status(*status))?;
        let mut update = Update::now(status);
        if status == Status::Failed {
            let detail = object
                .get("error")
                .or_else(|| object.get("errors").and_then(|list| list.get(0)));
            update.error = Some(detail.map(error_detail).unwrap_or_default());
        }
        return Some(Callback::Status {
            message_id: message_id.to_owned(),
            update,
        });
    }
    let is_message = object.get("from").is_some_and(Value::is_string)
        && object.get("type").is_some_and(Value::is_string);
    is_message.then(|| Callback::Received {
        key: message_id.to_owned(),
        data: raw(&Value::Object(object.clone())),
    })
}

/// The statuses a provider reports (QUEUED and CANCELLED are the relay's own).
pub(super) fn callback_status(status: Status) -> bool {
    matches!(
        status,
        Status::Sent | Status::Delivered | Status::Read | Status::Failed
    )
}
