//! HTTP handlers: `media` for the relay itself, `ops` for health, metrics and the API document.

pub mod media;
pub mod ops;
