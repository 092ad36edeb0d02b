//! lipachat-relay: a sidecar that sends WhatsApp media through the Lipachat gateway so that
//! callers never hold its secret.
//!
//! The request path, top to bottom (SPEC "HTTP API of the relay"):
//!
//! - [`app`] builds the axum `Router`: request id → request log → (for `/media`) load shedding
//!   → the handler in [`routes::media`].
//! - [`validate`] turns the raw JSON object into a normalised [`validate::MediaRequest`] (the
//!   body to forward and its fingerprint) or every [`validate::FieldError`] at once.
//! - [`dedup`] decides whether the send is new, a replay, a duplicate in flight (coalesced) or a
//!   conflict, keyed on `messageId`.
//! - [`upstream`] forwards through deadline → retry (policy + budget) → attempt timeout →
//!   reqwest, injecting the `apiKey` (the only module that sees the secret).
//! - [`error`] writes every answer the relay makes itself, in the gateway's envelope shape.
//!
//! Around it: [`config`] (environment → typed `Config`, exit 2 on bad input), [`telemetry`]
//! (logs and masking), [`metrics`] (Prometheus), [`shutdown`] (readiness and drain),
//! [`mock`] (the Lipachat-compatible mock gateway) and [`openapi`].
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod config;
pub mod dedup;
pub mod error;
pub mod metrics;
pub mod mock;
pub mod openapi;
pub mod routes;
pub mod shutdown;
pub mod telemetry;
pub mod upstream;
pub mod validate;

pub use app::{AppState, app, serve};
pub use config::{Config, ConfigError};
