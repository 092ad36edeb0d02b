//! The send types (SPEC "Every Lipachat send, not only media"): one table drives the router,
//! the gateway path each send is forwarded to, validation, metrics, the OpenAPI document and
//! the mock gateway. Adding a send type is one [`SendKind`] variant, one entry in
//! [`SEND_TYPES`] and one module with its check.
//!
//! Every type shares the pipeline (validate → dedup → rate limit → retries → the gateway's
//! answer) and the common fields (`messageId`, `to`, `from`); each module checks only what
//! its Lipachat page documents.

pub mod media;

use crate::validate::Rules;

/// A send type; its position in [`SEND_TYPES`] is its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendKind {
    Media,
}

impl SendKind {
    /// Every send type, in table order.
    pub const ALL: [Self; 1] = [Self::Media];

    /// Its row of the table.
    pub fn spec(self) -> &'static SendType {
        &SEND_TYPES[self.index()]
    }

    /// Its position in [`SendKind::ALL`] and [`SEND_TYPES`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `type` label and log field.
    pub fn name(self) -> &'static str {
        self.spec().rules.name
    }

    /// Its validation rules.
    pub fn rules(self) -> &'static Rules {
        &self.spec().rules
    }
}

/// One send type.
pub struct SendType {
    pub kind: SendKind,
    /// The relay's own path.
    pub path: &'static str,
    /// The gateway's path: where the relay forwards, and the relay's alias of `path`, so
    /// existing clients only change the base URL.
    pub gateway_path: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    pub rules: Rules,
}

/// The table, in [`SendKind`] order.
pub static SEND_TYPES: [SendType; 1] = [SendType {
    kind: SendKind::Media,
    path: "/media",
    gateway_path: "/api/v1/whatsapp/media",
    summary: "Send a WhatsApp media message (image, video, audio, document, sticker)",
    rules: Rules {
        name: "media",
        fields: media::FIELDS,
        check: media::check,
    },
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_kind_order_with_unique_paths() {
        for (index, kind) in SendKind::ALL.into_iter().enumerate() {
            assert_eq!(SEND_TYPES[index].kind, kind);
            assert_eq!(kind.index(), index);
        }
        let mut paths: Vec<&str> = SEND_TYPES
            .iter()
            .flat_map(|t| [t.path, t.gateway_path])
            .collect();
        let count = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), count);
    }
}
