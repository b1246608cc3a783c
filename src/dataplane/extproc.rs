//! The Envoy `ext_proc` gRPC service: one task per HTTP request stream, carrying what the
//! headers phase learned into the body and response phases.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
};
use futures::stream::{self, BoxStream, StreamExt};
use tonic::{Status, Streaming};

use crate::routing::Headers;

use super::epp::{self, DESTINATION_HEADER, SERVED_KEY};
use super::error::RequestError;
use super::headers::{RequestHeaders, header_text};
use super::metrics::{Metrics, OutcomeLabels, RouteLabels};
use super::mutations::{
    self, replaced_body, replacing_router_headers, route_headers, set_header, streamed_body,
};
use super::openai::ApiKind;
use super::picker::InFlight;
use super::processor::{Destination, Outcome, Processor, ProxyHints, RequestView, Routed};
use super::respond::refuse;
use super::response_tap::{ResponseHead, ResponseTap};

/// Limits of the request path.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body accepted, in bytes; larger gets 413.
    pub max_body_bytes: usize,
}

/// The ext_proc service.
#[derive(Clone)]
pub struct ExtProc {
    inner: Arc<Inner>,
}

struct Inner {
    processor: Arc<Processor>,
    metrics: Arc<Metrics>,
    limits: Limits,
}

impl ExtProc {
    /// A service deciding with `processor` and recording into `metrics`.
    pub fn new(processor: Arc<Processor>, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                processor,
                metrics,
                limits,
            }),
        }
    }
}

impl ExtProc {
    /// Answers one stream's messages in order, as [`process`](ExternalProcessor::process)
    /// does but without gRPC: the answers to each message. The fuzz targets drive it.
    pub(crate) async fn answer_in_turn(
        &self,
        messages: Vec<ProcessingRequest>,
    ) -> Vec<Vec<ProcessingResponse>> {
        let mut state = StreamState::default();
        let mut answers = Vec::with_capacity(messages.len());
        for message in messages {
            answers.push(state.handle(message, &self.inner).await);
        }
        answers
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ExtProc {
    type ProcessStream = BoxStream<'static, Result<ProcessingResponse, Status>>;

    /// Answers each message of the stream as it is read, inside the task that writes the
    /// answers: no task or channel of its own, so a message costs no extra wake-up.
    async fn process(
        &self,
        request: tonic::Request<Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
        let start = (
            request.into_inner(),
            StreamState::default(),
            self.inner.clone(),
        );
        let answers = stream::unfold(start, |(mut inbound, mut state, inner)| async move {
            let message = inbound.message().await.ok()??;
            let answers = state.handle(message, &inner).await;
            Some((answers, (inbound, state, inner)))
        })
        .flat_map(stream::iter)
        .map(Ok);
        Ok(tonic::Response::new(answers.boxed()))
    }
}

/// What one HTTP request's stream has learned so far.
struct StreamState {
    request_mode: BodySendMode,
    response_mode: BodySendMode,
    /// The inference API of a request the router processes; `None` passes through.
    kind: Option<ApiKind>,
    headers: RequestHeaders,
    body: Vec<u8>,
    /// The request was answered (routed, passed or refused); later body chunks are ignored.
    decided: bool,
    /// What the proxy's metadata allows (the subset hint), from the request phase.
    hints: ProxyHints,
    /// The routed request's response, as the router watches it; `None` for any other.
    tap: Option<ResponseTap>,
    /// Router-family headers the client sent, removed before the request goes on.
    spoofed: Vec<String>,
}

impl Default for StreamState {
    fn default() -> Self {
        Self {
            request_mode: BodySendMode::Buffered,
            response_mode: BodySendMode::None,
            kind: None,
            headers: RequestHeaders::default(),
            body: Vec::new(),
            decided: false,
            hints: ProxyHints::default(),
            tap: None,
            spoofed: Vec::new(),
        }
    }
}

impl StreamState {
    fn duplex(&self) -> bool {
        self.request_mode == BodySendMode::FullDuplexStreamed
    }

    async fn handle(
        &mut self,
        message: ProcessingRequest,
        inner: &Inner,
    ) -> Vec<ProcessingResponse> {
        if let Some(config) = &message.protocol_config {
            self.request_mode =
                BodySendMode::try_from(config.request_body_mode).unwrap_or(BodySendMode::Buffered);
            self.response_mode =
                BodySendMode::try_from(config.response_body_mode).unwrap_or(BodySendMode::None);
        }
        let Some(request) = message.request else {
            return Vec::new();
        };
        if !self.decided
            && self.hints.subset.is_none()
            && let Some(metadata) = &message.metadata_context
        {
            self.hints.subset = epp::subset_hint(metadata);
        }
        match request {
            Request::RequestHeaders(h) => self.on_request_headers(h, inner).await,
            Request::RequestBody(b) => self.on_request_body(b, inner).await,
            Request::RequestTrailers(_) => {
                let mut out = Vec::new();
                if self.kind.is_some() && !self.decided {
                    out = self.decide(inner).await;
                }
                out.push(mutations::request_trailers());
                out
            }
            Request::ResponseHeaders(h) => {
                let served = message.metadata_context.as_ref().and_then(epp::served);
                vec![self.on_response_headers(&h, served, inner)]
            }
            Request::ResponseBody(b) => vec![self.on_response_body(b, inner)],
            Request::ResponseTrailers(_) => {
                if let Some(tap) = &mut self.tap {
                    tap.trailers(&inner.metrics);
                }
                vec![mutations::response_trailers()]
            }
        }
    }

    async fn on_request_headers(
        &mut self,
        message: HttpHeaders,
        inner: &Inner,
    ) -> Vec<ProcessingResponse> {
        self.headers = RequestHeaders::from_proxy(message.headers);
        self.spoofed = self
            .headers
            .names()
            .filter(|name| mutations::is_router_header(name))
            .map(str::to_owned)
            .collect();
        let post = self.headers.get(":method").is_some_and(|m| m == "POST");
        let path = self.headers.get(":path").unwrap_or("");
        self.kind = ApiKind::from_path(path).filter(|_| post);
        let get = self.headers.get(":method").is_some_and(|m| m == "GET");
        if get
            && path.split('?').next() == Some("/v1/models")
            && let Some(table) = inner.processor.table().load()
        {
            self.decided = true;
            return vec![mutations::model_list(&table.model_names())];
        }
        if self.kind.is_none() {
            self.decided = true;
            return vec![mutations::request_headers(self.untouched())];
        }
        if message.end_of_stream {
            return self.decide(inner).await;
        }
        if self.duplex() {
            // Held until the body is complete, so headers and body are answered together.
            Vec::new()
        } else {
            // The body phase can still set headers, but not remove the client's own.
            vec![mutations::request_headers(self.untouched())]
        }
    }

    /// Continue the request as it is, less the client's router-family headers.
    fn untouched(&self) -> CommonResponse {
        CommonResponse {
            header_mutation: replacing_router_headers(Vec::new(), &self.spoofed),
            ..CommonResponse::default()
        }
    }

    async fn on_request_body(
        &mut self,
        message: HttpBody,
        inner: &Inner,
    ) -> Vec<ProcessingResponse> {
        if self.decided {
            return vec![if self.duplex() {
                mutations::request_body(streamed_body(message.body, message.end_of_stream))
            } else {
                mutations::request_body(CommonResponse::default())
            }];
        }
        let limit = inner.limits.max_body_bytes;
        if self.body.len() + message.body.len() > limit {
            self.decided = true;
            return vec![refuse(
                &RequestError::BodyTooLarge { limit }.into(),
                &inner.metrics,
            )];
        }
        self.body.extend_from_slice(&message.body);
        // In BUFFERED mode the one body message is the whole body, even when trailers follow
        // (Envoy then sends it with end_of_stream false and waits for the answer).
        if message.end_of_stream || !self.duplex() {
            self.decide(inner).await
        } else {
            Vec::new()
        }
    }

    /// The request body is complete: decide and answer headers and body.
    async fn decide(&mut self, inner: &Inner) -> Vec<ProcessingResponse> {
        self.decided = true;
        let Some(kind) = self.kind else {
            return Vec::new();
        };
        let started = Instant::now();
        let outcome = inner
            .processor
            .process_hinted(
                RequestView {
                    kind,
                    headers: &self.headers,
                    body: &self.body,
                },
                &self.hints,
            )
            .await;
        let body = std::mem::take(&mut self.body);
        match outcome {
            Outcome::Refused(refusal) => vec![refuse(&refusal, &inner.metrics)],
            Outcome::Cached(cached) => {
                inner
                    .metrics
                    .requests
                    .get_or_create(&OutcomeLabels::routed(
                        &RouteLabels::from(&cached.labels),
                        "cache",
                    ))
                    .inc();
                tracing::debug!(
                    decision = %cached.labels.decision,
                    model = %cached.labels.model,
                    similarity = cached.similarity,
                    "answered from the semantic cache"
                );
                vec![mutations::cached(&cached)]
            }
            Outcome::PassThrough => {
                inner
                    .metrics
                    .requests
                    .get_or_create(&OutcomeLabels::unrouted("passthrough"))
                    .inc();
                if self.duplex() {
                    vec![
                        mutations::request_headers(self.untouched()),
                        mutations::request_body(streamed_body(body, true)),
                    ]
                } else {
                    vec![mutations::request_body(CommonResponse::default())]
                }
            }
            Outcome::Routed(mut routed) => {
                let in_flight = routed
                    .pick
                    .take()
                    .and_then(|pick| InFlight::start(inner.processor.picker().clone(), pick));
                let tap = ResponseTap::new(&mut routed, in_flight);
                let labels = tap.metric_labels();
                inner
                    .metrics
                    .decision_seconds
                    .get_or_create(labels)
                    .observe(started.elapsed().as_secs_f64());
                inner
                    .metrics
                    .requests
                    .get_or_create(&OutcomeLabels::routed(labels, "upstream"))
                    .inc();
                self.tap = Some(tap);
                self.forward(*routed)
            }
        }
    }

    /// The answer that sends a routed request on with its new body and destination.
    fn forward(&self, routed: Routed) -> Vec<ProcessingResponse> {
        let mut headers = route_headers(&routed.labels, routed.generation, "upstream");
        if routed.jailbreak_flagged {
            headers.push(set_header("x-semantic-router-jailbreak", "flagged"));
        }
        headers.push(set_header("content-length", routed.body.len().to_string()));
        let metadata = match &routed.destination {
            Destination::Endpoints(_) => {
                let list = routed.destination.endpoint_list().unwrap_or_default();
                let metadata = epp::destination_metadata(&list);
                headers.push(set_header(DESTINATION_HEADER, list));
                Some(metadata)
            }
            Destination::Cluster(cluster) => {
                headers.push(set_header("x-semantic-router-cluster", cluster.clone()));
                None
            }
        };
        let common = CommonResponse {
            header_mutation: replacing_router_headers(headers, &self.spoofed),
            clear_route_cache: true,
            ..CommonResponse::default()
        };
        if self.duplex() {
            let mut first = mutations::request_headers(common);
            first.dynamic_metadata = metadata;
            vec![
                first,
                mutations::request_body(streamed_body(routed.body, true)),
            ]
        } else {
            let mut only = mutations::request_body(CommonResponse {
                body_mutation: replaced_body(routed.body),
                ..common
            });
            only.dynamic_metadata = metadata;
            vec![only]
        }
    }

    fn on_response_headers(
        &mut self,
        message: &HttpHeaders,
        served: Option<std::net::SocketAddr>,
        inner: &Inner,
    ) -> ProcessingResponse {
        let Some(tap) = &mut self.tap else {
            return mutations::response_headers(Vec::new(), Vec::new());
        };
        let mut head = ResponseHead {
            served,
            end_of_stream: message.end_of_stream,
            ..ResponseHead::default()
        };
        let mut served_header = None;
        for header in message.headers.iter().flat_map(|h| &h.headers) {
            let Some(value) = header_text(header) else {
                continue;
            };
            if header.key.eq_ignore_ascii_case(":status") {
                head.status = value.parse().ok();
            } else if header.key.eq_ignore_ascii_case("content-type") {
                head.sse = value.starts_with("text/event-stream");
            } else if header.key.eq_ignore_ascii_case(SERVED_KEY) {
                served_header = epp::first_addr(value);
            }
        }
        head.served = head.served.or(served_header);
        let (set, remove) = tap.headers(head, &inner.metrics);
        mutations::response_headers(set, remove)
    }

    fn on_response_body(&mut self, message: HttpBody, inner: &Inner) -> ProcessingResponse {
        let replaced = self
            .tap
            .as_mut()
            .and_then(|tap| tap.body(&message.body, message.end_of_stream, &inner.metrics));
        if self.response_mode == BodySendMode::FullDuplexStreamed {
            let body = replaced.unwrap_or(message.body);
            mutations::response_body(streamed_body(body, message.end_of_stream))
        } else {
            mutations::response_body(CommonResponse {
                body_mutation: replaced.map(mutations::chunk_replaced),
                ..CommonResponse::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
    use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response;
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        ProtocolConfiguration, body_mutation::Mutation,
    };
    use envoy_types::pb::google::protobuf::value::Kind;
    use serde_json::{Value, json};

    use super::*;
    use crate::dataplane::epp::{DESTINATION_NAMESPACE, SUBSET_KEY, SUBSET_NAMESPACE};
    use crate::dataplane::picker::PolicyPicker;
    use crate::dataplane::respond::ShedReason;
    use crate::routing::NoModels;
    use crate::routing::SharedTable;
    use crate::routing::fixtures::{compile_all, math_route, two_pools};

    fn inner(max_body_bytes: usize) -> Inner {
        let table = SharedTable::default();
        table.publish(compile_all(two_pools(), vec![math_route()]).table);
        Inner {
            processor: Arc::new(Processor::new(
                table,
                Arc::new(PolicyPicker::default()),
                Arc::new(NoModels),
            )),
            metrics: Arc::new(Metrics::new()),
            limits: Limits { max_body_bytes },
        }
    }

    fn headers(
        method: &str,
        path: &str,
        end_of_stream: bool,
        mode: BodySendMode,
    ) -> ProcessingRequest {
        let header = |k: &str, v: &str| HeaderValue {
            key: k.into(),
            raw_value: v.as_bytes().to_vec(),
            ..HeaderValue::default()
        };
        ProcessingRequest {
            protocol_config: Some(ProtocolConfiguration {
                request_body_mode: mode as i32,
                response_body_mode: BodySendMode::Streamed as i32,
                ..ProtocolConfiguration::default()
            }),
            request: Some(Request::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![header(":method", method), header(":path", path)],
                }),
                end_of_stream,
                ..HttpHeaders::default()
            })),
            ..ProcessingRequest::default()
        }
    }

    fn body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(Request::RequestBody(HttpBody {
                body: bytes.to_vec(),
                end_of_stream,
                ..HttpBody::default()
            })),
            ..ProcessingRequest::default()
        }
    }

    fn chat(prompt: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]}),
        )
        .unwrap()
    }

    fn set_headers(common: &CommonResponse) -> HashMap<String, String> {
        common
            .header_mutation
            .iter()
            .flat_map(|m| &m.set_headers)
            .filter_map(|h| h.header.as_ref())
            .map(|h| {
                (
                    h.key.clone(),
                    String::from_utf8_lossy(&h.raw_value).into_owned(),
                )
            })
            .collect()
    }

    fn common(response: &ProcessingResponse) -> &CommonResponse {
        match response.response.as_ref().unwrap() {
            Response::RequestHeaders(h) | Response::ResponseHeaders(h) => {
                h.response.as_ref().unwrap()
            }
            Response::RequestBody(b) | Response::ResponseBody(b) => b.response.as_ref().unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn new_body(common: &CommonResponse) -> Value {
        let bytes = match common
            .body_mutation
            .as_ref()
            .and_then(|m| m.mutation.as_ref())
        {
            Some(Mutation::Body(b)) => b,
            Some(Mutation::StreamedResponse(s)) => &s.body,
            other => panic!("no body mutation: {other:?}"),
        };
        serde_json::from_slice(bytes).unwrap()
    }

    #[tokio::test]
    async fn duplex_answers_headers_and_body_together_after_the_body_ends() {
        let inner = inner(1 << 20);
        let mut s = StreamState::default();
        let first = s
            .handle(
                headers(
                    "POST",
                    "/v1/chat/completions",
                    false,
                    BodySendMode::FullDuplexStreamed,
                ),
                &inner,
            )
            .await;
        assert!(first.is_empty(), "headers are held until the body ends");
        let whole = chat("find the integral of x");
        let (a, b) = whole.split_at(10);
        assert!(s.handle(body(a, false), &inner).await.is_empty());
        let out = s.handle(body(b, true), &inner).await;
        assert_eq!(out.len(), 2);
        let head = common(&out[0]);
        assert!(head.clear_route_cache);
        let set = set_headers(head);
        assert_eq!(set["x-semantic-router-decision"], "reasoning");
        assert_eq!(set["x-semantic-router-model"], "large");
        let published = inner.processor.table().load().unwrap().generation;
        assert_eq!(set["x-semantic-router-generation"], published.to_string());
        assert!(set[DESTINATION_HEADER].starts_with("10.0.0."));
        assert!(
            out[0]
                .dynamic_metadata
                .as_ref()
                .unwrap()
                .fields
                .contains_key("envoy.lb")
        );
        let rewritten = new_body(common(&out[1]));
        assert_eq!(rewritten["model"], "large");
        assert_eq!(rewritten["chat_template_kwargs"]["enable_thinking"], true);
        assert_eq!(
            set["content-length"],
            serde_json::to_vec(&rewritten).unwrap().len().to_string()
        );
    }

    #[tokio::test]
    async fn buffered_answers_headers_at_once_and_mutates_in_the_body_phase() {
        let inner = inner(1 << 20);
        let mut s = StreamState::default();
        let first = s
            .handle(
                headers(
                    "POST",
                    "/v1/chat/completions",
                    false,
                    BodySendMode::Buffered,
                ),
                &inner,
            )
            .await;
        assert_eq!(first.len(), 1);
        assert!(!common(&first[0]).clear_route_cache);
        let out = s.handle(body(&chat("hello"), true), &inner).await;
        assert_eq!(out.len(), 1);
        let c = common(&out[0]);
        assert!(c.clear_route_cache);
        assert_eq!(set_headers(c)["x-semantic-router-model"], "small");
        assert_eq!(
            new_body(c)["chat_template_kwargs"]["enable_thinking"],
            false
        );
    }

    #[tokio::test]
    async fn other_paths_pass_and_duplex_chunks_are_echoed() {
        let inner = inner(1 << 20);
        let mut s = StreamState::default();
        let out = s
            .handle(
                headers("GET", "/health", false, BodySendMode::FullDuplexStreamed),
                &inner,
            )
            .await;
        assert_eq!(out.len(), 1);
        assert!(set_headers(common(&out[0])).is_empty());
        let out = s.handle(body(b"abc", true), &inner).await;
        match common(&out[0])
            .body_mutation
            .as_ref()
            .and_then(|m| m.mutation.as_ref())
        {
            Some(Mutation::StreamedResponse(r)) => {
                assert_eq!((r.body.as_slice(), r.end_of_stream), (&b"abc"[..], true))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn oversized_and_malformed_bodies_are_refused() {
        let inner = inner(64);
        let mut s = StreamState::default();
        s.handle(
            headers(
                "POST",
                "/v1/chat/completions",
                false,
                BodySendMode::FullDuplexStreamed,
            ),
            &inner,
        )
        .await;
        let out = s.handle(body(&[b' '; 65], false), &inner).await;
        match out[0].response.as_ref().unwrap() {
            Response::ImmediateResponse(r) => assert_eq!(r.status.as_ref().unwrap().code, 413),
            other => panic!("{other:?}"),
        }

        let inner = self::inner(1 << 20);
        let mut s = StreamState::default();
        let out = s
            .handle(
                headers(
                    "POST",
                    "/v1/completions",
                    true,
                    BodySendMode::FullDuplexStreamed,
                ),
                &inner,
            )
            .await;
        match out[0].response.as_ref().unwrap() {
            Response::ImmediateResponse(r) => {
                assert_eq!(r.status.as_ref().unwrap().code, 400);
                let error: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(error["error"]["code"], "invalid_json");
            }
            other => panic!("{other:?}"),
        }
    }

    fn inner_with(picker: Arc<PolicyPicker>) -> Inner {
        let table = SharedTable::default();
        table.publish(compile_all(two_pools(), vec![math_route()]).table);
        Inner {
            processor: Arc::new(Processor::new(table, picker, Arc::new(NoModels))),
            metrics: Arc::new(Metrics::new()),
            limits: Limits {
                max_body_bytes: 1 << 20,
            },
        }
    }

    fn string(s: &str) -> envoy_types::pb::google::protobuf::Value {
        envoy_types::pb::google::protobuf::Value {
            kind: Some(Kind::StringValue(s.to_owned())),
        }
    }

    /// Filter metadata `namespace: {key: value}`.
    fn metadata(
        namespace: &str,
        key: &str,
        value: envoy_types::pb::google::protobuf::Value,
    ) -> Metadata {
        use envoy_types::pb::google::protobuf::Struct;
        Metadata {
            filter_metadata: [(
                namespace.to_owned(),
                Struct {
                    fields: [(key.to_owned(), value)].into(),
                },
            )]
            .into(),
            ..Metadata::default()
        }
    }

    fn subset(addrs: &[&str]) -> Metadata {
        use envoy_types::pb::google::protobuf::ListValue;
        let list = envoy_types::pb::google::protobuf::Value {
            kind: Some(Kind::ListValue(ListValue {
                values: addrs.iter().map(|a| string(a)).collect(),
            })),
        };
        metadata(SUBSET_NAMESPACE, SUBSET_KEY, list)
    }

    /// Sends a duplex math request (pool `large`: 10.0.0.2 and 10.0.0.3) with this request
    /// metadata; the answers.
    async fn math(
        s: &mut StreamState,
        inner: &Inner,
        meta: Option<Metadata>,
    ) -> Vec<ProcessingResponse> {
        let mut first = headers(
            "POST",
            "/v1/chat/completions",
            false,
            BodySendMode::FullDuplexStreamed,
        );
        first.metadata_context = meta;
        assert!(s.handle(first, inner).await.is_empty());
        s.handle(body(&chat("find the integral of x"), true), inner)
            .await
    }

    fn response_headers(status: &str, served: Option<&str>) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(Request::ResponseHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: ":status".into(),
                        raw_value: status.as_bytes().to_vec(),
                        ..HeaderValue::default()
                    }],
                }),
                end_of_stream: false,
                ..HttpHeaders::default()
            })),
            metadata_context: served
                .map(|s| metadata(DESTINATION_NAMESPACE, SERVED_KEY, string(s))),
            ..ProcessingRequest::default()
        }
    }

    fn response_end() -> ProcessingRequest {
        ProcessingRequest {
            request: Some(Request::ResponseBody(HttpBody {
                body: b"{}".to_vec(),
                end_of_stream: true,
                ..HttpBody::default()
            })),
            ..ProcessingRequest::default()
        }
    }

    #[tokio::test]
    async fn the_subset_hint_in_request_metadata_bounds_the_destination() {
        let inner = inner_with(Arc::new(PolicyPicker::default()));
        for _ in 0..4 {
            let mut s = StreamState::default();
            let out = math(
                &mut s,
                &inner,
                Some(subset(&["10.0.0.3:8000", "192.0.2.1:80"])),
            )
            .await;
            let set = set_headers(common(&out[0]));
            assert_eq!(set[DESTINATION_HEADER], "10.0.0.3:8000");
        }
        for (hint, reason) in [
            (subset(&[]), "subset-empty"),
            (subset(&["not-an-address"]), "subset-empty"),
            (subset(&["192.0.2.1:80"]), "outside-subset"),
        ] {
            let mut s = StreamState::default();
            let out = math(&mut s, &inner, Some(hint)).await;
            match out[0].response.as_ref().unwrap() {
                Response::ImmediateResponse(r) => {
                    assert_eq!(r.status.as_ref().unwrap().code, 503);
                    let headers: HashMap<_, _> = r
                        .headers
                        .iter()
                        .flat_map(|m| &m.set_headers)
                        .filter_map(|h| h.header.as_ref())
                        .map(|h| {
                            (
                                h.key.as_str(),
                                String::from_utf8_lossy(&h.raw_value).into_owned(),
                            )
                        })
                        .collect();
                    assert_eq!(headers[ShedReason::HEADER], reason);
                    assert_eq!(headers["x-semantic-router-error"], "no_ready_endpoint");
                }
                other => panic!("{other:?}"),
            }
        }
        // Without a hint (or with an unrelated namespace) the whole pool is eligible.
        let mut s = StreamState::default();
        let out = math(
            &mut s,
            &inner,
            Some(metadata("other", SUBSET_KEY, string("x"))),
        )
        .await;
        assert!(set_headers(common(&out[0]))[DESTINATION_HEADER].starts_with("10.0.0."));
    }

    #[tokio::test]
    async fn load_is_accounted_to_the_served_endpoint_until_the_response_ends() {
        let picker = Arc::new(PolicyPicker::default());
        let inner = inner_with(picker.clone());
        let settings = crate::api::EndpointPicking::default();
        let in_flight = |ip: [u8; 4]| {
            picker
                .view(SocketAddr::from((ip, 8000)), &settings)
                .map_or(0, |v| v.in_flight)
        };
        let mut s = StreamState::default();
        let out = math(&mut s, &inner, None).await;
        let list = set_headers(common(&out[0]))[DESTINATION_HEADER].clone();
        let listed: Vec<SocketAddr> = list.split(',').map(|a| a.parse().unwrap()).collect();
        assert_eq!(listed.len(), 2, "one fallback by default");
        let ip = |a: SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v4) => v4.octets(),
            _ => unreachable!(),
        };
        assert_eq!((in_flight(ip(listed[0])), in_flight(ip(listed[1]))), (1, 0));
        // Envoy retried on the fallback, which answered.
        s.handle(
            response_headers("200", Some(&listed[1].to_string())),
            &inner,
        )
        .await;
        assert_eq!((in_flight(ip(listed[0])), in_flight(ip(listed[1]))), (0, 1));
        s.handle(response_end(), &inner).await;
        assert_eq!(in_flight(ip(listed[1])), 0);
        drop(s);
        assert_eq!(in_flight(ip(listed[1])), 0, "finished once");
    }

    #[tokio::test]
    async fn cancelled_streams_never_eject_and_server_errors_do() {
        let picker = Arc::new(PolicyPicker::default());
        let inner = inner_with(picker.clone());
        let settings = crate::api::EndpointPicking::default();
        let view = || {
            picker
                .view(SocketAddr::from(([10, 0, 0, 2], 8000)), &settings)
                .unwrap()
        };
        for _ in 0..3 * settings.health.consecutive_failures {
            let mut s = StreamState::default();
            let out = math(&mut s, &inner, Some(subset(&["10.0.0.2:8000"]))).await;
            assert_eq!(
                set_headers(common(&out[0]))[DESTINATION_HEADER],
                "10.0.0.2:8000"
            );
            // The client hangs up: Envoy closes the stream before any response headers.
        }
        assert!(
            !view().ejected,
            "a downstream cancel says nothing of the endpoint"
        );
        assert_eq!(view().in_flight, 0);
        for _ in 0..settings.health.consecutive_failures {
            let mut s = StreamState::default();
            math(&mut s, &inner, Some(subset(&["10.0.0.2:8000"]))).await;
            // Envoy's own 503 after the connect attempts failed reaches the response path.
            s.handle(response_headers("503", None), &inner).await;
        }
        assert!(view().ejected);
        let mut s = StreamState::default();
        let out = math(&mut s, &inner, None).await;
        assert_eq!(
            set_headers(common(&out[0]))[DESTINATION_HEADER],
            "10.0.0.3:8000",
            "the ejected endpoint is skipped, also as a fallback"
        );
    }

    /// Duplex request headers with extra client headers.
    fn headers_with(extra: &[(&str, &str)]) -> ProcessingRequest {
        let mut request = headers(
            "POST",
            "/v1/chat/completions",
            false,
            BodySendMode::FullDuplexStreamed,
        );
        if let Some(Request::RequestHeaders(h)) = &mut request.request {
            let map = h.headers.get_or_insert_with(Default::default);
            for (k, v) in extra {
                map.headers.push(HeaderValue {
                    key: (*k).into(),
                    raw_value: v.as_bytes().to_vec(),
                    ..HeaderValue::default()
                });
            }
        }
        request
    }

    fn removed(common: &CommonResponse) -> Vec<String> {
        let mut names: Vec<String> = common
            .header_mutation
            .iter()
            .flat_map(|m| m.remove_headers.clone())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn client_sent_router_headers_are_replaced_or_removed() {
        let inner = inner(1 << 20);
        let spoofed = [
            ("x-semantic-router-decision", "evil"),
            ("x-semantic-router-jailbreak", "clean"),
            ("x-gateway-destination-endpoint-served", "10.9.9.9:80"),
            ("x-team", "kept"),
        ];
        // Routed: the router's own values win, the rest of the family goes.
        let mut s = StreamState::default();
        assert!(s.handle(headers_with(&spoofed), &inner).await.is_empty());
        let out = s.handle(body(&chat("hello"), true), &inner).await;
        let head = common(&out[0]);
        assert_eq!(set_headers(head)["x-semantic-router-decision"], "default");
        assert_eq!(
            removed(head),
            [
                "x-gateway-destination-endpoint-served",
                "x-semantic-router-jailbreak"
            ]
        );
        // Passed on (no table yet): all of the family goes.
        let empty = Inner {
            processor: Arc::new(Processor::new(
                SharedTable::default(),
                Arc::new(PolicyPicker::default()),
                Arc::new(NoModels),
            )),
            metrics: Arc::new(Metrics::new()),
            limits: Limits {
                max_body_bytes: 1 << 20,
            },
        };
        let mut s = StreamState::default();
        s.handle(headers_with(&spoofed), &empty).await;
        let out = s.handle(body(&chat("hello"), true), &empty).await;
        assert_eq!(removed(common(&out[0])).len(), 3);
    }

    #[tokio::test]
    async fn usage_the_router_asked_for_is_counted_and_hidden() {
        let inner = inner(1 << 20);
        let mut s = StreamState::default();
        s.handle(headers_with(&[]), &inner).await;
        let request = serde_json::to_vec(&json!({"model": "auto", "stream": true,
            "messages": [{"role": "user", "content": "find the integral of x"}]}))
        .unwrap();
        let out = s.handle(body(&request, true), &inner).await;
        let forwarded = match common(&out[1])
            .body_mutation
            .as_ref()
            .and_then(|m| m.mutation.as_ref())
        {
            Some(Mutation::StreamedResponse(r)) => {
                serde_json::from_slice::<Value>(&r.body).unwrap()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(forwarded["stream_options"]["include_usage"], true);

        let mut sse = response_headers("200", None);
        if let Some(Request::ResponseHeaders(h)) = &mut sse.request {
            h.headers
                .get_or_insert_with(Default::default)
                .headers
                .push(HeaderValue {
                    key: "content-type".into(),
                    raw_value: b"text/event-stream".to_vec(),
                    ..HeaderValue::default()
                });
        }
        let out = s.handle(sse, &inner).await;
        assert_eq!(removed(common(&out[0])), ["content-length"]);
        let chunk = |bytes: &[u8], end_of_stream| ProcessingRequest {
            request: Some(Request::ResponseBody(HttpBody {
                body: bytes.to_vec(),
                end_of_stream,
                ..HttpBody::default()
            })),
            ..ProcessingRequest::default()
        };
        let sent = |out: &[ProcessingResponse]| match common(&out[0])
            .body_mutation
            .as_ref()
            .and_then(|m| m.mutation.as_ref())
        {
            None => None,
            Some(Mutation::Body(b)) => Some(String::from_utf8(b.clone()).unwrap()),
            Some(Mutation::ClearBody(true)) => Some(String::new()),
            other => panic!("{other:?}"),
        };
        let token = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n";
        let out = s.handle(chunk(token.as_bytes(), false), &inner).await;
        assert_eq!(
            sent(&out).as_deref(),
            Some("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n")
        );
        let usage =
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":9}}\n\n";
        let out = s.handle(chunk(usage.as_bytes(), false), &inner).await;
        assert_eq!(sent(&out).as_deref(), Some(""));
        let out = s.handle(chunk(b"data: [DONE]\n\n", true), &inner).await;
        assert_eq!(sent(&out), None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &{
            let mut r = prometheus_client::registry::Registry::default();
            inner.metrics.register(&mut r);
            r
        })
        .unwrap();
        assert!(
            text.contains(r#"kind="completion"} 9"#),
            "the hidden usage was counted: {text}"
        );
    }

    proptest::proptest! {
        /// Any bytes, in any chunking, get exactly one well-formed answer, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512), split in 0usize..512, duplex in proptest::bool::ANY) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let inner = inner(256);
                let mode = if duplex { BodySendMode::FullDuplexStreamed } else { BodySendMode::Buffered };
                let mut s = StreamState::default();
                s.handle(headers("POST", "/v1/chat/completions", false, mode), &inner).await;
                let (a, b) = bytes.split_at(split.min(bytes.len()));
                let mut out = Vec::new();
                if duplex {
                    out.extend(s.handle(body(a, false), &inner).await);
                    out.extend(s.handle(body(b, true), &inner).await);
                } else {
                    out.extend(s.handle(body(&bytes, true), &inner).await);
                }
                let answered = out.iter().any(|r| matches!(r.response, Some(Response::ImmediateResponse(_) | Response::RequestBody(_))));
                assert!(answered, "{out:?}");
            });
        }
    }
}
