//! The fields every send has (SPEC "Every Lipachat send": `messageId`, `to`, `from` follow the
//! media rules), as the OpenAPI document describes them: the schema every send type's request
//! schema flattens in. The patterns mirror what `validate` accepts; `openapi`'s tests hold
//! them to it.

use utoipa::ToSchema;
use utoipa::openapi::ObjectBuilder;
use utoipa::openapi::schema::Type;

use crate::validate::MAX_MESSAGE_ID_CHARS;

/// A phone number with country code: 8–15 digits once `+`, spaces, dashes and parentheses are
/// stripped.
pub(crate) const PHONE_PATTERN: &str = r"^[ +()-]*([0-9][ +()-]*){8,15}$";
/// 1–128 characters ([`MAX_MESSAGE_ID_CHARS`]), none of them a control character.
pub(crate) const MESSAGE_ID_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]{1,128}$";

/// Fields every send has. Unknown fields are forwarded to the gateway unchanged; `apiKey` is
/// not needed. A JSON null counts as absent.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct SendCommon {
    /// The deduplication key (described by [`message_id`]).
    #[schema(schema_with = message_id)]
    message_id: String,
    /// The sender (described by [`sending_number`]).
    #[schema(schema_with = sending_number)]
    from: Option<String>,
    /// The recipient (described by [`recipient`]).
    #[schema(schema_with = recipient)]
    to: String,
}

/// `messageId`, from the same constants `validate` checks it with.
fn message_id() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_MESSAGE_ID_CHARS))
        .pattern(Some(MESSAGE_ID_PATTERN))
        .description(Some(format!(
            "The caller's unique id for this message: the deduplication key, across every send \
             type. 1–{MAX_MESSAGE_ID_CHARS} characters, no control characters."
        )))
        .examples(["order-1234-receipt"])
}

/// A phone number: the schema of `from` and `to`.
fn phone() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(PHONE_PATTERN))
}

/// A business number, with an example.
pub(crate) fn sender() -> ObjectBuilder {
    phone().examples(["254110090747"])
}

fn sending_number() -> ObjectBuilder {
    sender().description(Some(
        "Sender, with country code. Required unless the relay has `LIPACHAT_DEFAULT_FROM`.",
    ))
}

fn recipient() -> ObjectBuilder {
    phone()
        .description(Some("Recipient, with country code."))
        .examples(["+254 712 345 678"])
}
