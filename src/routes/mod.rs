//! HTTP handlers: `send` for every send type, `ops` for health, metrics and the API document.

pub mod ops;
pub mod send;
