//! The operations of the document (SPEC "HTTP API of the relay"): each send path's POST, the
//! template listing's GET, and the answers they share, built once and used for a path and its
//! alias alike.

use utoipa::openapi::path::{Operation, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, Ref, Required, ResponseBuilder, Responses, ResponsesBuilder,
};

use crate::sends::common::sender;
use crate::sends::{SendKind, SendType};

/// The request schema of each send type.
pub(super) fn request_schema(kind: SendKind) -> &'static str {
    match kind {
        SendKind::Media => "MediaRequest",
        SendKind::Text => "TextRequest",
        SendKind::Template => "TemplateRequest",
        SendKind::Buttons => "ButtonsRequest",
        SendKind::List => "ListRequest",
        SendKind::Contact => "ContactRequest",
        SendKind::Location => "LocationRequest",
        SendKind::RequestLocation => "RequestLocationRequest",
        SendKind::Flows => "FlowsRequest",
    }
}

/// The POST operation of a send type, on its own path or (`alias`) on the gateway's. Both
/// come from here, so they share the request schema, the responses and their headers.
pub(super) fn send_operation(send_type: &SendType, alias: bool) -> Operation {
    let name = send_type.kind.name();
    let (operation_id, summary) = if alias {
        (
            format!("send_{name}_alias"),
            format!(
                "Alias of POST {}, so existing gateway clients only change the base URL",
                send_type.path
            ),
        )
    } else {
        (format!("send_{name}"), send_type.summary.to_owned())
    };
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(request_schema(send_type.kind))))
        .build();
    OperationBuilder::new()
        .tag("sends")
        .operation_id(Some(operation_id))
        .summary(Some(summary))
        .description(Some(format!(
            "Validates, deduplicates on messageId (across every send type), injects the apiKey \
             and forwards to the gateway's `{}`; returns the gateway's own answer byte for \
             byte. A replayed or coalesced answer carries `idempotent-replayed: true`.",
            send_type.gateway_path
        )))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", body)
                .required(Some(Required::True))
                .build(),
        ))
        .parameter(header_parameter(
            "Prefer",
            "`respond-async` (RFC 7240): hold the send and answer 202 with its status record \
             (with RELAY_REDIS_URL; without it the preference is not applied)",
        ))
        .parameter(header_parameter(
            "Send-At",
            "With `Prefer: respond-async`: an RFC 3339 time to send at, at most 30 days ahead \
             (a time in the past means now)",
        ))
        .responses(send_responses())
        .build()
}

/// An optional request header of type string.
fn header_parameter(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// The answers of every send path (SPEC "Answers").
pub(super) fn send_responses() -> Responses {
    let gateway = "GatewayEnvelope";
    let relay = "ErrorEnvelope";
    ResponsesBuilder::new()
        .response(
            "200",
            json_response("The gateway's answer (SENT)", gateway)
                .header("idempotent-replayed", string_header("`true` on a replayed or coalesced answer"))
                .header("x-relay-attempts", string_header("Gateway attempts made, when it was called")),
        )
        .response(
            "202",
            json_response(
                "Queued (`Prefer: respond-async`): the status record, QUEUED, or where the same \
                 send stands",
                "MessageStatus",
            )
            .header(
                "preference-applied",
                string_header("`respond-async`: the send is held"),
            )
            .header("location", string_header("`/messages/{messageId}`")),
        )
        .response(
            "400",
            json_response(
                "Malformed JSON or failed validation (relay), or the gateway's own 400",
                "BadRequestBody",
            ),
        )
        .response("401", json_response("The gateway refused the relay's key", gateway))
        .response("408", json_response("The body did not arrive within RELAY_BODY_TIMEOUT_MS", relay))
        .response("413", json_response("Body over RELAY_MAX_BODY_BYTES", relay))
        .response("415", json_response("Content-Type missing or not JSON", relay))
        .response("422", json_response("messageId already used with a different payload", relay))
        .response(
            "429",
            json_response("Over the sender's or the pair's rate limit", relay)
                .header("retry-after", string_header("Seconds to wait")),
        )
        .response(
            "502",
            json_response("Gateway unreachable or answered with something that is not JSON", relay),
        )
        .response(
            "503",
            json_response("Over RELAY_MAX_IN_FLIGHT, shutting down, or the shared store is down (RELAY_REDIS_FAILURE=closed)", relay)
                .header("retry-after", string_header("Seconds to wait")),
        )
        .response("504", json_response("Deadline or every attempt timed out", relay))
        .response(
            "default",
            any_other_answer("Any other gateway answer, relayed byte for byte"),
        )
        .build()
}

/// `GET /templates?from=` (`alias`: false) or `GET /api/v1/template/{number}`: the gateway's
/// template listing. `from` is required unless the relay has a default sender.
pub(super) fn templates_operation(alias: bool, has_default_from: bool) -> Operation {
    let (operation_id, summary, parameter) = if alias {
        (
            "list_templates_alias",
            "Alias of GET /templates?from=, the gateway's own path",
            ParameterBuilder::new()
                .name("number")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The business (WABA or sandbox) number"))
                .schema(Some(sender())),
        )
    } else {
        (
            "list_templates",
            "The gateway's message templates of a business number (cached 5 minutes)",
            ParameterBuilder::new()
                .name("from")
                .parameter_in(ParameterIn::Query)
                .required(if has_default_from {
                    Required::False
                } else {
                    Required::True
                })
                .description(Some(
                    "The business (WABA or sandbox) number; LIPACHAT_DEFAULT_FROM when absent",
                ))
                .schema(Some(sender())),
        )
    };
    let relay = "ErrorEnvelope";
    let responses = ResponsesBuilder::new()
        .response(
            "200",
            json_response(
                "The gateway's listing, from the cache or just fetched",
                "TemplateListing",
            )
            .header(
                "cache-control",
                string_header("`max-age=<seconds it stays cached>`"),
            ),
        )
        .response(
            "400",
            json_response(
                "A bad number (relay), or the gateway's own 400",
                "BadRequestBody",
            ),
        )
        .response(
            "401",
            json_response("The gateway refused the relay's key", "GatewayEnvelope"),
        )
        .response(
            "502",
            json_response(
                "Gateway unreachable or answered with something that is not JSON",
                relay,
            ),
        )
        .response(
            "503",
            json_response("Over RELAY_MAX_IN_FLIGHT or shutting down", relay)
                .header("retry-after", string_header("Seconds to wait")),
        )
        .response(
            "504",
            json_response("Deadline or every attempt timed out", relay),
        )
        .response(
            "default",
            any_other_answer("Any other gateway answer, relayed byte for byte (never cached)"),
        )
        .build();
    OperationBuilder::new()
        .tag("templates")
        .operation_id(Some(operation_id))
        .summary(Some(summary))
        .description(Some(
            "The gateway's \"Listing Message Templates\" answer for the number, with the \
             relay's apiKey; a 2xx answer is cached 5 minutes per number (`cache-control: \
             max-age` says how long it has left), anything else is passed on and not cached \
             (`cache-control: no-store`).",
        ))
        .parameter(parameter)
        .responses(responses)
        .build()
}

/// Any other JSON answer of the gateway's, passed on.
fn any_other_answer(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                .build(),
        )
        .header("x-request-id", request_id_header())
}

/// A JSON answer with this schema; every answer carries `x-request-id`.
pub(super) fn json_response(description: &str, schema: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .header("x-request-id", request_id_header())
}

pub(super) fn request_id_header() -> utoipa::openapi::Header {
    string_header("The caller's request id, or a new one")
}

pub(super) fn string_header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}
