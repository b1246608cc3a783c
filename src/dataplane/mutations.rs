//! Small builders for the ext_proc messages the service sends back to Envoy.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;

use super::epp::DESTINATION_HEADER;
use super::processor::Cached;
use crate::routing::Labels;

/// Header that says whether a cached route's answer came from the cache (`hit`) or not (`miss`).
pub const CACHE_HEADER: &str = "x-semantic-router-cache";
/// Header naming the generation of the routing table a request was decided on: this replica's
/// count of tables published (`semantic_router_table_generation`), for telling which policy
/// version answered while one is being rolled out.
pub const GENERATION_HEADER: &str = "x-semantic-router-generation";
/// Header that says which way the router answered: `upstream`, `cache`, `error`, `blocked`,
/// `models`.
pub const PATH_HEADER: &str = "x-semantic-router-path";

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
                route_headers(&answer.labels, answer.generation, "cache"),
                vec![set_header(CACHE_HEADER, "hit")],
            ]
            .concat(),
        ),
        body: answer.body.clone(),
        details: "semantic_router_cache_hit".to_owned(),
        ..ImmediateResponse::default()
    }))
}

/// The headers that tell the backend and the client how a request was routed: decision,
/// model, pool, reasoning mode, the table generation and the path it took (`upstream`, `cache`).
pub fn route_headers(
    labels: &Labels,
    generation: u64,
    path: &'static str,
) -> Vec<HeaderValueOption> {
    vec![
        set_header("x-semantic-router-decision", labels.decision.as_bytes()),
        set_header("x-semantic-router-model", labels.model.as_bytes()),
        set_header("x-semantic-router-pool", labels.pool.as_bytes()),
        set_header("x-semantic-router-reasoning", labels.reasoning),
        set_header(GENERATION_HEADER, generation.to_string()),
        set_header(PATH_HEADER, path),
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
            set_header(PATH_HEADER, "models"),
        ]),
        body: body.into_bytes(),
        details: "semantic_router_model_list".to_owned(),
        ..ImmediateResponse::default()
    }))
}

/// A processing response carrying `response`.
pub fn response(response: Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..ProcessingResponse::default()
    }
}
