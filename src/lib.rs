//! lipachat-relay: a sidecar that sends WhatsApp messages through the Lipachat gateway so that
//! callers never hold its secret. Every module is private; the surface is the re-exports at
//! the bottom of this file.
//!
//! The request path, top to bottom (SPEC "HTTP API of the relay"):
//!
//! | room | job |
//! | --- | --- |
//! | `app` | the axum `Router` of each send type's path and alias, ops and `/templates`; `serve` |
//! | `state` | `AppState` (what handlers share) and `Slot` (a `RELAY_MAX_IN_FLIGHT` slot) |
//! | `routes/` | `send` (validate → dedup → rate limit → forward → answer), `templates`, `ops` |
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
//! Leaves shared by several rooms: `phone`, `fingerprint`, `outcome` (how a send and a
//! request end), `headers` (every header name), `throttle` (one rate-limited warning).
//! Around the path: `server/` (the accept loop: `accept`, head/body/idle `timer`, `fd`
//! limits), `config/` (the one table of variables in `vars`, secrets in `secret`, exit 2 on
//! bad input), `telemetry` (logs and masking), `metrics/` (Prometheus), `shutdown` (the
//! `CancellationToken` + `TaskTracker` drain), `mock` (the Lipachat-compatible mock gateway)
//! and `openapi/` (the document, assembled from what each room declares).
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod app;
mod clock;
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

pub use app::{app, serve, serve_all};
pub use config::{
    ApiKey, Config, ConfigError, KeyRequirement, LogFormat, SigningSecret, WebhookToken,
    events_secret_from_env,
};
pub use events::receive::receive_events;
pub use sends::{SEND_TYPES, SendKind, SendType};
pub use server::{FdLimit, Options as ServerOptions, fd_limit, raise_fd_limit};
pub use shutdown::signal;
pub use state::AppState;
pub use telemetry::{LogSetupError, init as init_logs};

/// The configuration variables: the one table (name, default, range, help) and the ones the
/// binary names itself.
pub mod variables {
    pub use crate::config::vars::{
        LISTEN, MAX_CONNECTIONS, MOCK_CALLBACK_URL, MOCK_LISTEN, VARIABLES, VARS, Var,
        WEBHOOK_LISTEN, help,
    };
}

/// Internals that the integration tests and the benches reach into, one layer down: not
/// part of the API, hidden from the docs, and re-exported here only so that `src/` keeps its
/// modules private.
#[doc(hidden)]
pub mod internals {
    pub use crate::{
        dedup::memory::MemoryWindow,
        dedup::{Begin, Dedup, Remembered, lease},
        fingerprint::Fingerprint,
        limit::redis::RESERVE as RATE_SCRIPT,
        metrics::Metrics,
        outcome::GatewayReply,
        phone::PhoneNumber,
    };

    pub use crate::config::SigningSecret;

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, exactly as events out are
    /// signed. Public only so the interoperability test (tests/api/events_interop.rs) can
    /// hand our signature to an independent Standard Webhooks implementation.
    pub fn sign_event(secret: &SigningSecret, id: &str, timestamp: u64, body: &[u8]) -> String {
        crate::events::sign::sign(secret, id, timestamp, body)
    }

    /// Validates `body` as a send of `kind`; says whether it passed (the parts bench
    /// measures this step).
    pub fn validate(kind: crate::SendKind, body: &[u8]) -> bool {
        crate::validate::validate(kind.rules(), body, None).is_ok()
    }
}
