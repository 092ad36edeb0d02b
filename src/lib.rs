//! lipachat-relay: a sidecar that sends WhatsApp messages through the Lipachat gateway so that
//! callers never hold its secret. Every module is private; the surface is the re-exports at
//! the bottom of this file: the binary's commands, what the integration tests build a relay
//! from (`Config`, `AppState`, `serve`), the mock gateway and the variables' table.
//!
//! The request path, top to bottom (SPEC "HTTP API of the relay"):
//!
//! | room | job |
//! | --- | --- |
//! | `app` | the axum `Router` of each send type's path and alias, ops, `/templates` and `/messages`; `serve` |
//! | `state` | `AppState` (what handlers share) and `Slot` (a `RELAY_MAX_IN_FLIGHT` slot) |
//! | `routes/` | `send` (validate → dedup → rate limit → forward → answer), `messages` (`GET`/`DELETE /messages/{id}`), `templates`, `ops` |
//! | `validate/` | the common fields and entry point; `raw` JSON, the `check` engine, `encode` |
//! | `sends/` | the table of send types; one file per type: its rules and its OpenAPI schema |
//! | `dedup/` | `messageId` idempotency: in flight (`lead`), moka (`memory`), Redis (`redis`), completions that land (`complete`) |
//! | `limit/` | WhatsApp's sender and pair limits: `memory` (governor), `redis` (one script) |
//! | `store` | the one Redis connection (standalone or Cluster), timeouts, failure mode |
//! | `upstream/` | the gateway client: retry policy and budget (`retry`), attempt timeout, the secret |
//! | `queue/` | queued and scheduled sends (`Prefer: respond-async`): the Redis queue, its worker |
//! | `templates` | the template listing's five-minute cache |
//! | `error` | every answer the relay writes itself, in the gateway's envelope shape |
//!
//! After the gateway's answer (SPEC "What happened after SENT"):
//!
//! | room | job |
//! | --- | --- |
//! | `webhooks/` | the webhook listener (`RELAY_WEBHOOK_LISTEN`): its route and one parser per provider shape (`lipachat`, `meta`) |
//! | `lifecycle` | ties them together: a status record per send, one event per change |
//! | `status/` | the records, forward-only: `memory` (moka), `redis` (a hash and one merge script) |
//! | `events/` | events out: `sign` (Standard Webhooks), `deliver` (back-off), `memory`/`redis` (where they wait), `worker`, `receive` (the `events-receive` command) |
//!
//! Leaves shared by several rooms: `phone`, `fingerprint`, `outcome` (how a send and a
//! request end), `headers` (every header name), `throttle` (one rate-limited warning),
//! `clock` (Unix time). Around the path: `commands` (what `serve`, `mock-gateway` and
//! `events-receive` run; main.rs only parses and dispatches), `server/` (the accept loop:
//! `accept`, head/body/idle `timer`, `fd` limits), `config/` (the one table of variables in
//! `vars`, secrets in `secret`, exit 2 on bad input), `telemetry` (logs and masking),
//! `metrics/` (Prometheus), `shutdown` (the `CancellationToken` + `TaskTracker` drain), `mock`
//! (the Lipachat-compatible mock gateway), `openapi/` (the document, assembled from what each
//! room declares) and `parts` (the parts bench's steps, beside the rooms they time).
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod app;
mod clock;
mod commands;
mod config;
mod dedup;
mod error;
mod events;
mod fingerprint;
mod headers;
mod lifecycle;
mod limit;
mod metrics;
pub mod mock;
mod openapi;
mod outcome;
mod parts;
mod phone;
mod queue;
mod routes;
mod sends;
mod server;
mod shutdown;
mod state;
mod status;
mod store;
mod telemetry;
mod templates;
mod throttle;
mod upstream;
mod validate;
mod webhooks;

pub use app::{serve, serve_all};
pub use commands::{Failure, run_events_receive, run_mock_gateway, run_relay};
pub use config::{Config, KeyRequirement, error::ConfigError, secret::ApiKey};
pub use sends::{SEND_TYPES, SendKind, SendType};
pub use state::AppState;

/// The configuration variables: the one table (name, default, range, help) and the ones the
/// binary and the tests name themselves.
pub mod variables {
    pub use crate::config::vars::{
        LISTEN, MOCK_CALLBACK_URL, MOCK_LISTEN, VARIABLES, VARS, Var, help,
    };
}

/// Internals that the integration tests and the benches reach into: not part of the API,
/// hidden from the docs, and re-exported here only so that `src/` keeps its modules private.
/// The parts bench's steps are written in the crate (`parts`) for the same reason.
#[doc(hidden)]
pub mod internals {
    pub use crate::{dedup::lease, limit::redis::RESERVE as RATE_SCRIPT, parts::measure_parts};

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, exactly as events out are
    /// signed with `secret` (`whsec_…`, as `RELAY_EVENTS_SECRET` takes it; `None` when it is
    /// not one). Public only so the interoperability test (tests/api/events_interop.rs) can
    /// hand our signature to an independent Standard Webhooks implementation.
    pub fn sign_event(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> Option<String> {
        let secret = crate::config::SigningSecret::parse(secret).ok()?;
        Some(crate::events::sign::sign(&secret, id, timestamp, body))
    }
}
