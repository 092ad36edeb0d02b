//! HTTP handlers: `send` for every send type, `templates` for the template listing, `ops` for
//! health, metrics and the API document.

pub(crate) mod messages;
pub(crate) mod ops;
pub(crate) mod send;
pub(crate) mod templates;
