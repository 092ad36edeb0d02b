//! The events the relay POSTs to `RELAY_EVENTS_URL`, as OpenAPI 3.1 `webhooks` (SPEC "Events
//! out"): one entry per event type, each with the Standard Webhooks headers and the envelope.
//! Written as JSON: utoipa's document type has no `webhooks` member.

use serde_json::{Value, json};

use crate::events::EventType;

/// The `webhooks` member of the document.
pub(super) fn webhooks() -> Value {
    let mut hooks = serde_json::Map::new();
    for kind in EventType::ALL {
        let (summary, data) = match kind {
            EventType::MessageStatus => (
                "A message's status record changed (the whole record)",
                json!({"$ref": "#/components/schemas/MessageStatus"}),
            ),
            EventType::MessageReceived => (
                "A customer's message, as the provider posted it",
                json!({"type": "object"}),
            ),
            EventType::WebhookUnrecognised => (
                "A callback the relay did not recognise, as received",
                json!({}),
            ),
        };
        let header = |name: &str, description: &str| {
            json!({"name": name, "in": "header", "required": true,
                   "description": description, "schema": {"type": "string"}})
        };
        hooks.insert(
            kind.name().to_owned(),
            json!({"post": {
                "summary": summary,
                "tags": ["events"],
                "parameters": [
                    header("webhook-id", "The event's id: the same on every attempt and replica"),
                    header("webhook-timestamp", "Unix seconds of this attempt"),
                    header("webhook-signature",
                        "v1, and the base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\" keyed by \
                         the base64-decoded RELAY_EVENTS_SECRET"),
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["type", "timestamp", "data"],
                    "properties": {
                        "type": {"type": "string", "const": kind.name()},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "data": data,
                    },
                }}}},
                "responses": {
                    "2XX": {"description": "Delivered: no more attempts"},
                    "410": {"description": "Gone: the event is dead, no more attempts"},
                    "default": {"description": "Retried with back-off until RELAY_EVENTS_MAX_AGE_SECS"},
                },
            }}),
        );
    }
    Value::Object(hooks)
}
