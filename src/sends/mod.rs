//! The send types (SPEC "Every Lipachat send, not only media"): one table drives the router,
//! the gateway path each send is forwarded to, validation, metrics, the OpenAPI document and
//! the mock gateway. Adding a send type is one [`SendKind`] variant, one entry in
//! [`SEND_TYPES`] and one module with its check.
//!
//! Every type shares the pipeline (validate → dedup → rate limit → retries → the gateway's
//! answer) and the common fields (`messageId`, `to`, `from`); each module checks only what
//! its Lipachat page documents, and its `//!` says which page and what it chose where the
//! page's table and example disagree. The rule of thumb for "required": a field that the
//! page's table and its example both carry (under either name), unless the page calls it
//! optional; a field only one of them shows is checked for its type when given.

pub(crate) mod buttons;
pub(crate) mod common;
pub(crate) mod contact;
pub(crate) mod flows;
pub(crate) mod list;
pub(crate) mod location;
pub(crate) mod media;
pub(crate) mod request_location;
pub(crate) mod template;
pub(crate) mod text;

use crate::validate::Rules;

/// A send type; its position in [`SEND_TYPES`] is its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendKind {
    /// `POST /media`.
    Media,
    /// `POST /message/text`.
    Text,
    /// `POST /template`.
    Template,
    /// `POST /interactive/buttons`.
    Buttons,
    /// `POST /interactive/list`.
    List,
    /// `POST /contact`.
    Contact,
    /// `POST /location`.
    Location,
    /// `POST /request_location`.
    RequestLocation,
    /// `POST /interactive/flows`.
    Flows,
}

impl SendKind {
    /// Every send type, in table order.
    pub const ALL: [Self; 9] = [
        Self::Media,
        Self::Text,
        Self::Template,
        Self::Buttons,
        Self::List,
        Self::Contact,
        Self::Location,
        Self::RequestLocation,
        Self::Flows,
    ];

    /// Its row of the table.
    pub fn spec(self) -> &'static SendType {
        &SEND_TYPES[self.index()]
    }

    /// Its position in [`SendKind::ALL`] and [`SEND_TYPES`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The `type` label and log field.
    pub fn name(self) -> &'static str {
        self.spec().rules.name
    }

    /// Its validation rules.
    pub(crate) fn rules(self) -> &'static Rules {
        &self.spec().rules
    }
}

/// One send type.
pub struct SendType {
    /// Which type this row is.
    pub kind: SendKind,
    /// The relay's own path.
    pub path: &'static str,
    /// The gateway's path: where the relay forwards, and the relay's alias of `path`, so
    /// existing clients only change the base URL.
    pub gateway_path: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Its name, fields and check.
    pub(crate) rules: Rules,
}

/// The table, in [`SendKind`] order.
pub static SEND_TYPES: [SendType; 9] = [
    SendType {
        kind: SendKind::Media,
        path: "/media",
        gateway_path: "/api/v1/whatsapp/media",
        summary: "Send a WhatsApp media message (image, video, audio, document, sticker)",
        rules: Rules {
            name: "media",
            fields: media::FIELDS,
            check: media::check,
        },
    },
    SendType {
        kind: SendKind::Text,
        path: "/message/text",
        gateway_path: "/api/v1/whatsapp/message/text",
        summary: "Send a free-form WhatsApp text message (inside the 24-hour window)",
        rules: Rules {
            name: "text",
            fields: text::FIELDS,
            check: text::check,
        },
    },
    SendType {
        kind: SendKind::Template,
        path: "/template",
        gateway_path: "/api/v1/whatsapp/template",
        summary: "Send a pre-approved WhatsApp template (allowed outside the 24-hour window)",
        rules: Rules {
            name: "template",
            fields: template::FIELDS,
            check: template::check,
        },
    },
    SendType {
        kind: SendKind::Buttons,
        path: "/interactive/buttons",
        gateway_path: "/api/v1/whatsapp/interactive/buttons",
        summary: "Send a WhatsApp message with 1 to 3 quick-reply buttons",
        rules: Rules {
            name: "buttons",
            fields: buttons::FIELDS,
            check: buttons::check,
        },
    },
    SendType {
        kind: SendKind::List,
        path: "/interactive/list",
        gateway_path: "/api/v1/whatsapp/interactive/list",
        summary: "Send a WhatsApp interactive list (up to 10 sections, 10 rows in all)",
        rules: Rules {
            name: "list",
            fields: list::FIELDS,
            check: list::check,
        },
    },
    SendType {
        kind: SendKind::Contact,
        path: "/contact",
        gateway_path: "/api/v1/whatsapp/contact",
        summary: "Send a WhatsApp contact card",
        rules: Rules {
            name: "contact",
            fields: contact::FIELDS,
            check: contact::check,
        },
    },
    SendType {
        kind: SendKind::Location,
        path: "/location",
        // Assumed: the page's stored text shows no URL; its siblings' pattern is followed.
        gateway_path: "/api/v1/whatsapp/location",
        summary: "Send a WhatsApp location pin (latitude, longitude, optional name and address)",
        rules: Rules {
            name: "location",
            fields: location::FIELDS,
            check: location::check,
        },
    },
    SendType {
        kind: SendKind::RequestLocation,
        path: "/request_location",
        gateway_path: "/api/v1/whatsapp/request_location",
        summary: "Ask the user to share their location (a text with WhatsApp's location button)",
        rules: Rules {
            name: "request_location",
            fields: request_location::FIELDS,
            check: request_location::check,
        },
    },
    SendType {
        kind: SendKind::Flows,
        path: "/interactive/flows",
        gateway_path: "/api/v1/whatsapp/interactive/flows",
        summary: "Send a published WhatsApp Flow, opened by a call-to-action button",
        rules: Rules {
            name: "flows",
            fields: flows::FIELDS,
            check: flows::check,
        },
    },
];

#[cfg(test)]
pub(crate) mod test_support;

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

    #[test]
    fn type_names_are_unique_and_gateway_paths_are_the_relay_paths_under_the_prefix() {
        let mut names: Vec<&str> = SendKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SendKind::ALL.len());
        for send_type in &SEND_TYPES {
            assert_eq!(
                send_type.gateway_path,
                format!("/api/v1/whatsapp{}", send_type.path)
            );
        }
    }
}
