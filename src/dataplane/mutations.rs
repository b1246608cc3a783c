//! Small builders for the ext_proc messages the service sends back to Envoy.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use super::error::RequestError;
use super::metrics::RouteLabels;
use super::processor::Cached;

/// Header that carries the endpoint-picker protocol's destination (`ip:port[,ip:port…]`).
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";
/// Header that says whether a cached route's answer came from the cache (`hit`) or not (`miss`).
pub const CACHE_HEADER: &str = "x-semantic-router-cache";
/// Dynamic-metadata namespace of the endpoint-picker protocol.
pub const DESTINATION_NAMESPACE: &str = "envoy.lb";

/// A header that replaces any value the request had.
pub fn set_header(key: &str, value: impl Into<Vec<u8>>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            raw_value: value.into(),
            ..HeaderValue::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// A header mutation setting these headers.
pub fn header_mutation(headers: Vec<HeaderValueOption>) -> Option<HeaderMutation> {
    header_changes(headers, Vec::new())
}

/// A header mutation setting `set` and removing `remove`; `None` when it changes nothing.
pub fn header_changes(set: Vec<HeaderValueOption>, remove: Vec<String>) -> Option<HeaderMutation> {
    let changes = !set.is_empty() || !remove.is_empty();
    changes.then_some(HeaderMutation {
        set_headers: set,
        remove_headers: remove,
    })
}

/// Whether a header belongs to the families only the router and the proxy may write:
/// `x-semantic-router-*` and the endpoint-picker protocol's `x-gateway-destination-endpoint*`.
/// A client's own are never believed, forwarded or logged.
pub fn is_router_header(name: &str) -> bool {
    name.starts_with("x-semantic-router-") || name.starts_with(DESTINATION_HEADER)
}

/// A header mutation setting `set` and removing the request's own router headers
/// (`received`, lower-case names) that `set` does not overwrite.
pub fn replacing_router_headers(
    set: Vec<HeaderValueOption>,
    received: &[String],
) -> Option<HeaderMutation> {
    let remove: Vec<String> = received
        .iter()
        .filter(|name| {
            !set.iter()
                .any(|h| h.header.as_ref().is_some_and(|h| h.key == **name))
        })
        .cloned()
        .collect();
    header_changes(set, remove)
}

/// Continue the request headers, optionally with a mutation and a route-cache clear.
pub fn request_headers(common: CommonResponse) -> ProcessingResponse {
    response(Response::RequestHeaders(HeadersResponse {
        response: Some(common),
    }))
}

/// Continue the response headers, setting `set` and removing `remove`.
pub fn response_headers(set: Vec<HeaderValueOption>, remove: Vec<String>) -> ProcessingResponse {
    response(Response::ResponseHeaders(HeadersResponse {
        response: Some(CommonResponse {
            header_mutation: header_changes(set, remove),
            ..CommonResponse::default()
        }),
    }))
}

/// Answer a request body chunk.
pub fn request_body(common: CommonResponse) -> ProcessingResponse {
    response(Response::RequestBody(BodyResponse {
        response: Some(common),
    }))
}

/// Answer a response body chunk.
pub fn response_body(common: CommonResponse) -> ProcessingResponse {
    response(Response::ResponseBody(BodyResponse {
        response: Some(common),
    }))
}

/// A body mutation that, in full-duplex streaming, sends `body` as the next chunk.
pub fn streamed_body(body: Vec<u8>, end_of_stream: bool) -> CommonResponse {
    CommonResponse {
        body_mutation: Some(BodyMutation {
            mutation: Some(body_mutation::Mutation::StreamedResponse(
                StreamedBodyResponse {
                    body,
                    end_of_stream,
                    ..StreamedBodyResponse::default()
                },
            )),
        }),
        ..CommonResponse::default()
    }
}

/// A body mutation that replaces the whole (buffered) body.
pub fn replaced_body(body: Vec<u8>) -> Option<BodyMutation> {
    Some(BodyMutation {
        mutation: Some(body_mutation::Mutation::Body(body)),
    })
}

/// A body mutation that, in STREAMED mode, replaces the current chunk with `body` (which
/// may be empty).
pub fn chunk_replaced(body: Vec<u8>) -> BodyMutation {
    BodyMutation {
        mutation: Some(if body.is_empty() {
            body_mutation::Mutation::ClearBody(true)
        } else {
            body_mutation::Mutation::Body(body)
        }),
    }
}

/// Continue trailers unchanged.
pub fn request_trailers() -> ProcessingResponse {
    response(Response::RequestTrailers(TrailersResponse::default()))
}

/// Continue response trailers unchanged.
pub fn response_trailers() -> ProcessingResponse {
    response(Response::ResponseTrailers(TrailersResponse::default()))
}

/// The client-facing answer for a refused request: its status, an OpenAI-shaped body, and the
/// router's path header.
pub fn immediate(error: &RequestError) -> ProcessingResponse {
    let path = if matches!(error, RequestError::Blocked) {
        "blocked"
    } else {
        "error"
    };
    response(Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(error.status()),
        }),
        headers: header_mutation(vec![
            set_header("content-type", "application/json"),
            set_header("x-semantic-router-path", path),
            set_header("x-semantic-router-error", error.code()),
        ]),
        body: error.to_body(),
        details: format!("semantic_router_{}", error.code()),
        ..ImmediateResponse::default()
    }))
}

/// The answer to a request the semantic cache answers: 200 with the cached completion (JSON,
/// or SSE for a streamed request) and the router's decision headers.
pub fn cached(answer: &Cached) -> ProcessingResponse {
    let content_type = if answer.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    response(Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus { code: 200 }),
        headers: header_mutation(
            [
                vec![set_header("content-type", content_type)],
                route_headers(&answer.labels, "cache"),
                vec![set_header(CACHE_HEADER, "hit")],
            ]
            .concat(),
        ),
        body: answer.body.clone(),
        details: "semantic_router_cache_hit".to_owned(),
        ..ImmediateResponse::default()
    }))
}

/// The headers that tell the client how its request was routed: decision, model, pool and
/// the path it took (`upstream`, `cache`).
pub fn route_headers(labels: &RouteLabels, path: &'static str) -> Vec<HeaderValueOption> {
    vec![
        set_header("x-semantic-router-decision", labels.decision.clone()),
        set_header("x-semantic-router-model", labels.model.clone()),
        set_header("x-semantic-router-pool", labels.pool.clone()),
        set_header("x-semantic-router-path", path),
    ]
}

/// The answer to `GET /v1/models`: every model a client may ask for through the router (the
/// aliases routes govern and the models pools serve), in OpenAI's list shape.
pub fn model_list(names: &[&str]) -> ProcessingResponse {
    let data: Vec<serde_json::Value> = names
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "semantic-router"}))
        .collect();
    let body = serde_json::json!({"object": "list", "data": data}).to_string();
    response(Response::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus { code: 200 }),
        headers: header_mutation(vec![
            set_header("content-type", "application/json"),
            set_header("x-semantic-router-path", "models"),
        ]),
        body: body.into_bytes(),
        details: "semantic_router_model_list".to_owned(),
        ..ImmediateResponse::default()
    }))
}

/// Dynamic metadata `envoy.lb: {x-gateway-destination-endpoint: list}`.
pub fn destination_metadata(endpoints: &str) -> Struct {
    let inner = Struct {
        fields: [(
            DESTINATION_HEADER.to_owned(),
            Value {
                kind: Some(Kind::StringValue(endpoints.to_owned())),
            },
        )]
        .into(),
    };
    Struct {
        fields: [(
            DESTINATION_NAMESPACE.to_owned(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into(),
    }
}

fn response(response: Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..ProcessingResponse::default()
    }
}
