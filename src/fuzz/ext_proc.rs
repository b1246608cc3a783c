//! The ext_proc service fed a message sequence: request headers, body chunks and trailers,
//! response headers, body chunks and trailers, in any order and chunks of any size, in either
//! request body mode.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::body_mutation::Mutation;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse,
    ProtocolConfiguration,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use super::{Input, resources_from_yaml};
use crate::dataplane::epp::{DESTINATION_NAMESPACE, SERVED_KEY, SUBSET_KEY, SUBSET_NAMESPACE};
use crate::dataplane::extproc::{ExtProc, Limits};
use crate::dataplane::metrics::Metrics;
use crate::dataplane::openai::{ApiKind, InferenceRequest};
use crate::dataplane::picker::PolicyPicker;
use crate::dataplane::processor::Processor;
use crate::routing::{NoModels, SharedTable, compile};

/// The policy every stream is decided on: the sample pools and route, rules only.
const POLICY: [&str; 2] = [
    include_str!("../../config/samples/pools.yaml"),
    include_str!("../../config/samples/route.yaml"),
];
/// Request bodies over this size are refused (small, so the limit is reached).
const MAX_BODY: usize = 16 << 10;
/// Operations read from one input at most.
const MAX_OPS: usize = 64;
/// Chunk sizes an operation may choose; the last takes all that is left.
const SIZES: [usize; 16] = [
    0,
    1,
    2,
    3,
    5,
    8,
    13,
    32,
    64,
    100,
    256,
    512,
    1024,
    4096,
    MAX_BODY,
    usize::MAX,
];
const MODES: [BodySendMode; 4] = [
    BodySendMode::Streamed,
    BodySendMode::FullDuplexStreamed,
    BodySendMode::Buffered,
    BodySendMode::None,
];
const PATHS: [(&str, &str); 4] = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions?x=1"),
    ("GET", "/v1/models"),
    ("POST", "/v1/embeddings"),
];
/// An endpoint of the sample pools, for subset hints and served reports.
const ENDPOINT: &str = "127.0.0.1:8002";

thread_local! {
    /// The runtime and service, built once per thread (compiling the policy dominates).
    static SERVICE: Option<(tokio::runtime::Runtime, ExtProc)> = build();
}

fn build() -> Option<(tokio::runtime::Runtime, ExtProc)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let resources = resources_from_yaml(POLICY.join("\n---\n").as_bytes());
    let table = SharedTable::default();
    table.publish(compile(&resources).table);
    let processor = Processor::new(table, Arc::new(PolicyPicker::new()), Arc::new(NoModels));
    let service = ExtProc::new(
        Arc::new(processor),
        Arc::new(Metrics::new()),
        Limits {
            max_body_bytes: MAX_BODY,
        },
    );
    Some((runtime, service))
}

/// The input is `mode, split (u16 LE), n, n operation bytes, payload`; the payload's first
/// `split` bytes are the request body and the rest the response body, which the body
/// operations send in order.
///
/// `mode`: bit 0 the request body mode (FULL_DUPLEX_STREAMED, else BUFFERED), bits 1-2 the
/// response body mode, bits 3-4 the method and path, bit 5 an `x-team: research` header.
/// Each operation: bits 0-2 what to send (request headers, request body chunk, request
/// trailers, response headers, response body chunk, response trailers, a protocol
/// configuration, a subset hint), bit 3 `end_of_stream`, bits 4-7 the chunk size (or the
/// status, content type and served endpoint of response headers, or the modes). With `n` = 0
/// the sequence is what Envoy sends for one request: headers, the whole body, response
/// headers (200, SSE when the body starts with `data:`), the whole response body.
///
/// Asserts: a response-phase message gets exactly one answer, of its phase; a request-phase
/// message gets answers of request phases or an immediate response, trailers last; every
/// answer has a response; a routed body parses as a request of its API, with its
/// `content-length` set to its length.
pub fn ext_proc_sequence(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let split = usize::from(input.u16());
    let n = usize::from(input.byte()).min(MAX_OPS);
    let ops = input.take(n).to_vec();
    let payload = input.rest();
    let (request_body, response_body) = payload.split_at(split.min(payload.len()));

    let (method, path) = PATHS[usize::from(mode >> 3 & 3)];
    let kind = ApiKind::from_path(path).filter(|_| method == "POST");
    let mut stream = Stream {
        request_body,
        response_body,
        request_mode: if mode & 1 != 0 {
            BodySendMode::FullDuplexStreamed
        } else {
            BodySendMode::Buffered
        },
        response_mode: MODES[usize::from(mode >> 1 & 3)],
        method,
        path,
        research: mode & 0x20 != 0,
    };
    let messages = if ops.is_empty() {
        stream.as_envoy_sends()
    } else {
        ops.iter().map(|&op| stream.message(op)).collect()
    };

    let phases: Vec<Phase> = messages.iter().map(Phase::of).collect();
    for (phase, answers) in phases.into_iter().zip(answer(messages)) {
        check(phase, &answers, kind);
    }
}

/// The service's answers to each message, on this thread's runtime.
fn answer(messages: Vec<ProcessingRequest>) -> Vec<Vec<ProcessingResponse>> {
    SERVICE.with(|service| match service {
        Some((runtime, service)) => runtime.block_on(service.answer_in_turn(messages)),
        None => Vec::new(),
    })
}

/// What is left to send of one request and its response.
struct Stream<'a> {
    request_body: &'a [u8],
    response_body: &'a [u8],
    request_mode: BodySendMode,
    response_mode: BodySendMode,
    method: &'a str,
    path: &'a str,
    research: bool,
}

impl Stream<'_> {
    fn as_envoy_sends(&mut self) -> Vec<ProcessingRequest> {
        let sse = self.response_body.starts_with(b"data:");
        let response_headers = 0b0000_0011 | if sse { 0x10 } else { 0 };
        [0b1111_0000, 0b1111_1001, response_headers, 0b1111_1100]
            .into_iter()
            .map(|op| self.message(op))
            .collect()
    }

    fn message(&mut self, op: u8) -> ProcessingRequest {
        let end_of_stream = op & 8 != 0;
        let high = op >> 4;
        let size = SIZES[usize::from(high)];
        let mut message = ProcessingRequest::default();
        message.request = Some(match op & 7 {
            0 => {
                message.protocol_config = Some(self.protocol_config());
                let mut headers = vec![header(":method", self.method), header(":path", self.path)];
                headers.push(header("content-type", "application/json"));
                if self.research {
                    headers.push(header("x-team", "research"));
                }
                headers.push(header("x-semantic-router-decision", "spoofed"));
                Request::RequestHeaders(http_headers(headers, end_of_stream))
            }
            1 => Request::RequestBody(body(take(&mut self.request_body, size), end_of_stream)),
            2 => Request::RequestTrailers(HttpTrailers::default()),
            3 => {
                let mut headers = Vec::new();
                match high & 3 {
                    0 => headers.push(header(":status", "200")),
                    1 => headers.push(header(":status", "500")),
                    2 => headers.push(header(":status", "20x")),
                    _ => {}
                }
                if high & 4 != 0 {
                    headers.push(header("content-type", "text/event-stream; charset=utf-8"));
                } else {
                    headers.push(header("content-type", "application/json"));
                }
                if high & 8 != 0 {
                    headers.push(header(SERVED_KEY, ENDPOINT));
                    message.metadata_context = Some(metadata(DESTINATION_NAMESPACE, SERVED_KEY));
                }
                Request::ResponseHeaders(http_headers(headers, end_of_stream))
            }
            4 => Request::ResponseBody(body(take(&mut self.response_body, size), end_of_stream)),
            5 => Request::ResponseTrailers(HttpTrailers::default()),
            6 => {
                self.request_mode = MODES[usize::from(high & 3)];
                self.response_mode = MODES[usize::from(high >> 2)];
                message.protocol_config = Some(self.protocol_config());
                return message;
            }
            _ => {
                message.metadata_context = Some(metadata(SUBSET_NAMESPACE, SUBSET_KEY));
                Request::RequestBody(body(take(&mut self.request_body, size), end_of_stream))
            }
        });
        message
    }

    fn protocol_config(&self) -> ProtocolConfiguration {
        ProtocolConfiguration {
            request_body_mode: self.request_mode as i32,
            response_body_mode: self.response_mode as i32,
            ..ProtocolConfiguration::default()
        }
    }
}

/// The first `size` bytes of `rest`, or all of it.
fn take<'a>(rest: &mut &'a [u8], size: usize) -> &'a [u8] {
    let (taken, left) = rest.split_at(size.min(rest.len()));
    *rest = left;
    taken
}

fn header(key: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        raw_value: value.as_bytes().to_vec(),
        ..HeaderValue::default()
    }
}

fn http_headers(headers: Vec<HeaderValue>, end_of_stream: bool) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap { headers }),
        end_of_stream,
        ..HttpHeaders::default()
    }
}

fn body(bytes: &[u8], end_of_stream: bool) -> HttpBody {
    HttpBody {
        body: bytes.to_vec(),
        end_of_stream,
        ..HttpBody::default()
    }
}

/// Metadata `namespace: {key: ENDPOINT}`.
fn metadata(namespace: &str, key: &str) -> Metadata {
    let value = Value {
        kind: Some(Kind::StringValue(ENDPOINT.to_owned())),
    };
    let fields = [(key.to_owned(), value)].into_iter().collect();
    Metadata {
        filter_metadata: [(namespace.to_owned(), Struct { fields })]
            .into_iter()
            .collect(),
        ..Metadata::default()
    }
}

/// Which phase a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    None,
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

impl Phase {
    fn of(message: &ProcessingRequest) -> Self {
        match &message.request {
            None => Self::None,
            Some(Request::RequestHeaders(_)) => Self::RequestHeaders,
            Some(Request::RequestBody(_)) => Self::RequestBody,
            Some(Request::RequestTrailers(_)) => Self::RequestTrailers,
            Some(Request::ResponseHeaders(_)) => Self::ResponseHeaders,
            Some(Request::ResponseBody(_)) => Self::ResponseBody,
            Some(Request::ResponseTrailers(_)) => Self::ResponseTrailers,
        }
    }
}

fn check(phase: Phase, answers: &[ProcessingResponse], kind: Option<ApiKind>) {
    let responses: Vec<&Response> = answers
        .iter()
        .map(|a| a.response.as_ref().expect("every answer has a response"))
        .collect();
    match phase {
        Phase::None => assert!(responses.is_empty(), "{responses:?}"),
        Phase::ResponseHeaders => {
            assert!(
                matches!(responses[..], [Response::ResponseHeaders(_)]),
                "{responses:?}"
            )
        }
        Phase::ResponseBody => {
            assert!(
                matches!(responses[..], [Response::ResponseBody(_)]),
                "{responses:?}"
            )
        }
        Phase::ResponseTrailers => {
            assert!(
                matches!(responses[..], [Response::ResponseTrailers(_)]),
                "{responses:?}"
            )
        }
        Phase::RequestHeaders | Phase::RequestBody | Phase::RequestTrailers => {
            for response in &responses {
                assert!(
                    matches!(
                        response,
                        Response::RequestHeaders(_)
                            | Response::RequestBody(_)
                            | Response::RequestTrailers(_)
                            | Response::ImmediateResponse(_)
                    ),
                    "{phase:?} answered with {response:?}"
                );
            }
            if phase == Phase::RequestTrailers {
                assert!(matches!(
                    responses.last(),
                    Some(Response::RequestTrailers(_))
                ));
            }
            check_routed(&responses, kind);
        }
    }
}

/// A routed answer names the new body's length, and the body is a request of its API.
fn check_routed(responses: &[&Response], kind: Option<ApiKind>) {
    let commons = responses.iter().filter_map(|r| match r {
        Response::RequestHeaders(h) => h.response.as_ref(),
        Response::RequestBody(b) => b.response.as_ref(),
        _ => None,
    });
    let mut length = None;
    let mut body = None;
    for common in commons {
        length = length.or_else(|| set_header(common, "content-length"));
        body = body.or_else(|| new_body(common));
    }
    let (Some(length), Some(body)) = (length, body) else {
        return;
    };
    assert_eq!(
        length,
        body.len().to_string(),
        "content-length of the routed body"
    );
    let kind = kind.expect("only inference requests are routed");
    if let Err(e) = InferenceRequest::parse(kind, body) {
        panic!("the routed body does not parse: {e}");
    }
}

fn set_header(common: &CommonResponse, name: &str) -> Option<String> {
    common
        .header_mutation
        .as_ref()?
        .set_headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned())
}

fn new_body(common: &CommonResponse) -> Option<&[u8]> {
    match common.body_mutation.as_ref()?.mutation.as_ref()? {
        Mutation::Body(b) => Some(b),
        Mutation::StreamedResponse(s) => Some(&s.body),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default sequence reaches routing: a chat request for `auto` is routed and named.
    #[test]
    fn the_default_sequence_routes_a_chat_request() {
        let body =
            br#"{"model":"auto","messages":[{"role":"user","content":"find the integral of x"}]}"#;
        for mode in [0, 1] {
            let mut stream = Stream {
                request_body: body,
                response_body: b"{}",
                request_mode: if mode == 1 {
                    BodySendMode::FullDuplexStreamed
                } else {
                    BodySendMode::Buffered
                },
                response_mode: BodySendMode::Streamed,
                method: "POST",
                path: "/v1/chat/completions",
                research: false,
            };
            let answers = answer(stream.as_envoy_sends());
            let routed = answers.iter().flatten().any(|a| {
                match &a.response {
                    Some(Response::RequestHeaders(h)) => h.response.as_ref(),
                    Some(Response::RequestBody(b)) => b.response.as_ref(),
                    _ => None,
                }
                .and_then(|c| set_header(c, "x-semantic-router-decision"))
                .is_some_and(|d| d == "reasoning")
            });
            assert!(routed, "mode {mode}: {answers:?}");
        }
    }
}
