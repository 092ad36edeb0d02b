//! lipachat-relay: a sidecar that sends WhatsApp messages through the Lipachat gateway so that
//! callers never hold its secret.
//!
//! The request path, top to bottom (SPEC "HTTP API of the relay"):
//!
//! - [`app()`] builds the axum `Router` from the table of send types in [`sends`], over one
//!   [`AppState`] (module `state`, which `app` and the handlers share): request id → the
//!   handlers in `routes` (`send`, `templates`, `ops`).
//! - [`validate`] turns the raw JSON object into a normalised [`validate::SendRequest`] (the
//!   body to forward and its fingerprint) or every [`validate::FieldError`] at once, with the
//!   send type's own rules from [`sends`].
//! - [`dedup`] decides whether the send is new, a replay, a duplicate in flight (coalesced) or a
//!   conflict, keyed on `messageId`: in this process's moka window and, with Redis, in the
//!   window every replica shares ([`store`]).
//! - [`limit`] keeps WhatsApp's per-sender and per-pair rate limits for new sends.
//! - [`upstream`] forwards through deadline → retry (policy + budget) → attempt timeout →
//!   reqwest, injecting the `apiKey` (the only module that sees the secret).
//! - `error` writes every answer the relay makes itself, in the gateway's envelope shape.
//! - `GET /templates` relays the gateway's template listing through the same client, kept five
//!   minutes in [`templates`]' cache.
//!
//! Leaf modules shared by several of those: [`phone`], [`fingerprint`], [`outcome`] (how a
//! send and a request end), `headers` (every header name) and `throttle` (one rate-limited
//! warning). Around it: [`serve()`] on [`server`] (the accept loop: head and idle timeouts,
//! connection limit, drain of connections), [`config`] (environment → typed `Config`, one
//! table of variables in [`config::vars`], exit 2 on bad input), [`telemetry`] (logs and
//! masking), [`metrics`] (Prometheus), [`shutdown`] (readiness, the drain of sends and the
//! signal), [`mock`] (the Lipachat-compatible mock gateway) and [`openapi`].
//!
//! The binary, the tests and the benches use [`app()`], [`serve()`], [`AppState`], [`Config`]
//! and the public modules below; the modules without `pub` are this crate's own.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod app;
pub mod config;
pub mod dedup;
mod error;
pub mod fingerprint;
mod headers;
pub mod limit;
pub mod metrics;
pub mod mock;
pub mod openapi;
pub mod outcome;
pub mod phone;
mod routes;
pub mod sends;
pub mod server;
pub mod shutdown;
mod state;
pub mod store;
pub mod telemetry;
pub mod templates;
mod throttle;
pub mod upstream;
pub mod validate;

pub use app::{app, serve};
pub use config::{Config, ConfigError};
pub use state::AppState;
