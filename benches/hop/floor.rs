//! The floor: the least an ext_proc processor that routes on the body can do (tonic,
//! FULL_DUPLEX_STREAMED: holds the headers answer until the body ends, parses the JSON body,
//! sets `model`, reserialises, answers headers with content-length + destination +
//! clear_route_cache and the body streamed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Answer;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ProcessingRequest,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Status, Streaming};

/// Name of the floor's runtime threads, so their CPU time can be read from /proc.
pub const FLOOR_THREAD: &str = "hop-floor";

#[derive(Clone)]
struct Floor {
    destination: Arc<str>,
}

#[tonic::async_trait]
impl ExternalProcessor for Floor {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: tonic::Request<Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let destination = self.destination.clone();
        tokio::spawn(async move {
            let mut body = Vec::new();
            while let Ok(Some(message)) = inbound.message().await {
                let Some(phase) = message.request else {
                    continue;
                };
                let answers = match phase {
                    Phase::RequestHeaders(h) if h.end_of_stream => {
                        vec![Answer::RequestHeaders(HeadersResponse::default())]
                    }
                    // Held: answered together with the body, one round trip.
                    Phase::RequestHeaders(_) => Vec::new(),
                    Phase::RequestBody(b) => {
                        body.extend_from_slice(&b.body);
                        if b.end_of_stream {
                            floor_route(&std::mem::take(&mut body), &destination)
                        } else {
                            Vec::new()
                        }
                    }
                    Phase::RequestTrailers(_) => {
                        vec![Answer::RequestTrailers(TrailersResponse::default())]
                    }
                    Phase::ResponseHeaders(_) => vec![Answer::ResponseHeaders(HeadersResponse {
                        response: Some(CommonResponse::default()),
                    })],
                    Phase::ResponseBody(_) => vec![Answer::ResponseBody(BodyResponse {
                        response: Some(CommonResponse::default()),
                    })],
                    Phase::ResponseTrailers(_) => {
                        vec![Answer::ResponseTrailers(TrailersResponse::default())]
                    }
                };
                for answer in answers {
                    let response = ProcessingResponse {
                        response: Some(answer),
                        ..ProcessingResponse::default()
                    };
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// Parse the body, set `model`, reserialise; answer the held headers (content-length,
/// destination, route cache cleared) and the body as one streamed chunk.
fn floor_route(body: &[u8], destination: &str) -> Vec<Answer> {
    let body = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("model".into(), "Qwen/Qwen3-1.7B".into());
            serde_json::to_vec(&map).expect("a parsed JSON map serialises")
        }
        _ => body.to_vec(),
    };
    let set = |key: &str, value: String| HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            raw_value: value.into_bytes(),
            ..HeaderValue::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    };
    let headers = CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: vec![
                set("content-length", body.len().to_string()),
                set("x-gateway-destination-endpoint", destination.to_owned()),
            ],
            remove_headers: Vec::new(),
        }),
        clear_route_cache: true,
        ..CommonResponse::default()
    };
    let streamed = CommonResponse {
        body_mutation: Some(BodyMutation {
            mutation: Some(body_mutation::Mutation::StreamedResponse(
                StreamedBodyResponse {
                    body,
                    end_of_stream: true,
                    ..StreamedBodyResponse::default()
                },
            )),
        }),
        ..CommonResponse::default()
    };
    vec![
        Answer::RequestHeaders(HeadersResponse {
            response: Some(headers),
        }),
        Answer::RequestBody(BodyResponse {
            response: Some(streamed),
        }),
    ]
}

/// The floor on `runtime`, sending every request to `backend`: its ext_proc address.
pub fn start_floor(runtime: &Runtime, backend: SocketAddr) -> SocketAddr {
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind the floor");
    let addr = listener.local_addr().expect("floor address");
    let floor = Floor {
        destination: backend.to_string().into(),
    };
    runtime.spawn(async move {
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ExternalProcessorServer::new(floor))
            // `serve_with_incoming` ignores the builder's `tcp_nodelay`; the incoming sets it.
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
        if let Err(e) = served {
            eprintln!("hop: floor stopped: {e}");
        }
    });
    addr
}
