//! HTTP handlers: `send` for every send type, `templates` for the template listing, `ops` for
//! health, metrics and the API document.

pub mod ops;
pub mod send;
pub mod templates;
