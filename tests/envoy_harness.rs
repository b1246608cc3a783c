//! Tests of the Envoy test harness (`tests/e2e/support/envoy.rs`) and, through it, of the
//! Envoy configuration the router runs behind (`config/samples/envoy.yaml` and its template):
//! real Envoy 1.40 from `.venv` (run `make tools` first), tiny axum backends on free ports,
//! and, for the ext_proc path, a minimal fake processor speaking the router's contract.

#[path = "e2e/support/envoy.rs"]
mod envoy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use futures::StreamExt as _;
use serde_json::{Value, json};

use envoy::{Envoy, EnvoyConfig, free_addr, render_config, validate_config_file};

// ---------------------------------------------------------------------------------------
// Tiny model-server stand-ins.

#[derive(Clone)]
struct Backend {
    port: u16,
    /// Answer every request with 503 (a failing endpoint that still accepts connections).
    fail: bool,
    hits: Arc<AtomicUsize>,
}

/// A backend that answers with its own port and what it received; `"stream": true` in the
/// body gets three SSE events 300 ms apart.
async fn backend_handler(
    State(b): State<Backend>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    b.hits.fetch_add(1, Ordering::SeqCst);
    if b.fail {
        return Response::builder()
            .status(503)
            .body(Body::from(format!(
                "{{\"error\":\"backend {} failing\"}}",
                b.port
            )))
            .unwrap();
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if parsed.get("stream") == Some(&Value::Bool(true)) {
        let port = b.port;
        let events = futures::stream::iter(0..3).then(move |i| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, Infallible>(Bytes::from(format!(
                "data: {{\"port\":{port},\"i\":{i}}}\n\n"
            )))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let out = json!({
        "port": b.port,
        "method": method.as_str(),
        "path": uri.path(),
        "body": String::from_utf8_lossy(&body),
        "content_length": header("content-length"),
        "dest": header("x-gateway-destination-endpoint"),
        "pool": header("x-semantic-router-pool"),
        "cluster": header("x-semantic-router-cluster"),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(out.to_string()))
        .unwrap()
}

async fn start_backend(fail: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let state = Backend {
        port: addr.port(),
        fail,
        hits: hits.clone(),
    };
    let app = axum::Router::new()
        .fallback(backend_handler)
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post_chat(url: &str, headers: &[(&str, String)], body: Value) -> (u16, HeaderMap, String) {
    let mut req = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("request through envoy");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn port_of(body: &str) -> u64 {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no port in {body}"))
}

/// Access-log lines are flushed every 0.1 s; wait (bounded) for one containing `needle`.
async fn log_line(envoy: &Envoy, needle: &str) -> String {
    for _ in 0..50 {
        if let Some(line) = envoy.logs().lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no envoy log line containing {needle:?}:\n{}", envoy.logs());
}

// ---------------------------------------------------------------------------------------
// The sample config and the template stay one document.

fn sample_values() -> EnvoyConfig {
    EnvoyConfig {
        listen_port: 8801,
        admin_port: 9901,
        ext_proc_addr: "127.0.0.1:50051".parse().unwrap(),
        ext_proc_replicas: Vec::new(),
        endpoints: vec![
            "127.0.0.1:8001".parse().unwrap(),
            "127.0.0.1:8002".parse().unwrap(),
            "127.0.0.1:8003".parse().unwrap(),
        ],
        passthrough: "127.0.0.1:8001".parse().unwrap(),
        gateway_clusters: vec![],
        with_ext_proc: true,
        buffered: false,
    }
}

#[test]
fn sample_config_is_the_template_rendered() {
    let sample_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/envoy.yaml");
    let sample: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&sample_path).unwrap()).unwrap();
    let rendered: serde_yaml::Value =
        serde_yaml::from_str(&render_config(&sample_values())).unwrap();
    assert!(
        sample == rendered,
        "config/samples/envoy.yaml and tests/e2e/envoy.template.yaml (rendered with the sample's \
         ports) differ; edit both:\n--- rendered ---\n{}",
        render_config(&sample_values())
    );
}

#[test]
fn sample_and_rendered_configs_pass_envoy_validation() {
    validate_config_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/envoy.yaml"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (with_ext_proc, buffered) in [(true, false), (true, true), (false, false)] {
        let cfg = EnvoyConfig {
            with_ext_proc,
            buffered,
            gateway_clusters: vec![("llm-d-test".into(), "127.0.0.1:8004".parse().unwrap())],
            endpoints: vec![
                "127.0.0.1:8001".parse().unwrap(),
                "[::1]:8002".parse().unwrap(),
            ],
            ..sample_values()
        };
        let path = dir
            .path()
            .join(format!("envoy-{with_ext_proc}-{buffered}.yaml"));
        std::fs::write(&path, render_config(&cfg)).unwrap();
        validate_config_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.contains("envoy.filters.http.ext_proc"), with_ext_proc);
        assert_eq!(text.contains("early_header_mutation"), with_ext_proc);
        assert_eq!(text.contains("request_body_mode: BUFFERED"), buffered);
        assert_eq!(
            text.contains("request_body_mode: FULL_DUPLEX_STREAMED"),
            with_ext_proc && !buffered
        );
    }
}

// ---------------------------------------------------------------------------------------
// Routing without the ext_proc filter: the test sets the router's headers itself.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_destination_header_without_ext_proc() {
    let (a, a_hits) = start_backend(false).await;
    let (b, _) = start_backend(false).await;
    let (c, _) = start_backend(false).await;
    let (failing, failing_hits) = start_backend(true).await;
    let closed = free_addr(); // an endpoint Envoy knows, with nothing listening

    let envoy = Envoy::start(EnvoyConfig {
        listen_port: envoy::free_port(),
        admin_port: envoy::free_port(),
        ext_proc_addr: free_addr(),
        ext_proc_replicas: Vec::new(),
        endpoints: vec![a, b, c, failing, closed],
        passthrough: a,
        gateway_clusters: vec![("llm-d-test".into(), c)],
        with_ext_proc: false,
        buffered: false,
    });
    let url = envoy.url();
    let dest = |v: String| vec![("x-gateway-destination-endpoint", v)];

    // An inference path without routing headers passes through to the default upstream;
    // any other path is answered 404 by Envoy and reaches no backend.
    let resp = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert_eq!(port_of(&body), u64::from(a.port()), "{body}");
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);
    for path in ["/health", "/metrics", "/v1/chat/completions/extra"] {
        let resp = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(a_hits.load(Ordering::SeqCst), 1);

    // The named endpoint gets it, body intact.
    let (status, _, body) = post_chat(&url, &dest(b.to_string()), json!({"model": "m"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(port_of(&body), u64::from(b.port()));
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["body"], r#"{"model":"m"}"#);

    // Ordered fallbacks: the first endpoint refuses connections, the retry reaches the second.
    let (status, _, body) = post_chat(
        &url,
        &dest(format!("{closed},{c}")),
        json!({"model": "fallback-closed"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(port_of(&body), u64::from(c.port()));
    let line = log_line(&envoy, &format!("dest=\"{closed},{c}\"")).await;
    assert!(
        line.contains("attempts=2") && line.contains(&format!("served={c}")),
        "{line}"
    );

    // The first endpoint answers 503: the 5xx retry reaches the second.
    let (status, _, body) = post_chat(
        &url,
        &dest(format!("{failing}, {b}")),
        json!({"model": "fallback-5xx"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(port_of(&body), u64::from(b.port()));
    assert_eq!(failing_hits.load(Ordering::SeqCst), 1);

    // Fail closed: a list that runs out, or an address Envoy does not know, is a 503 and
    // never an endpoint the router did not name.
    let before = a_hits.load(Ordering::SeqCst);
    let (status, _, body) = post_chat(&url, &dest(closed.to_string()), json!({})).await;
    assert_eq!(status, 503, "{body}");
    let (status, _, body) = post_chat(&url, &dest("127.0.0.9:1".into()), json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        a_hits.load(Ordering::SeqCst),
        before,
        "a fallback reached an unnamed endpoint"
    );

    // A gateway pool: the cluster named by x-semantic-router-cluster.
    let (status, _, body) = post_chat(
        &url,
        &[("x-semantic-router-cluster", "llm-d-test".to_string())],
        json!({"model": "gw"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(port_of(&body), u64::from(c.port()));
    let (status, _, _) = post_chat(
        &url,
        &[("x-semantic-router-cluster", "no-such".to_string())],
        json!({}),
    )
    .await;
    assert_eq!(status, 503);
}

// ---------------------------------------------------------------------------------------
// With the ext_proc filter: a fake processor that answers like the router does.

mod fake_ext_proc {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{
        HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
    };
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders,
        ProcessingRequest, ProcessingResponse, StreamedBodyResponse, TrailersResponse,
        body_mutation, external_processor_server::ExternalProcessor,
        external_processor_server::ExternalProcessorServer, processing_request,
        processing_response,
    };
    use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
    use tonic::{Request, Status, Streaming};

    /// What the fake router decides: model "gateway" -> the gateway cluster, anything else
    /// -> `destination` (a comma list), with the body's model rewritten.
    #[derive(Clone)]
    pub struct Fake {
        pub destination: String,
        pub gateway_cluster: String,
        /// Response-body chunks seen, and the served endpoint Envoy reported, per request.
        pub response_chunks: Arc<AtomicUsize>,
        pub served: Arc<Mutex<Vec<String>>>,
        /// Requests whose headers reached the processor with a destination already set.
        pub client_destinations_seen: Arc<AtomicUsize>,
    }

    fn header(
        headers: &Option<envoy_types::pb::envoy::config::core::v3::HeaderMap>,
        name: &str,
    ) -> Option<String> {
        headers
            .as_ref()?
            .headers
            .iter()
            .find(|h| h.key == name)
            .map(|h| {
                if h.raw_value.is_empty() {
                    h.value.clone()
                } else {
                    String::from_utf8_lossy(&h.raw_value).into_owned()
                }
            })
    }

    fn set(key: &str, value: &str) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                raw_value: value.as_bytes().to_vec(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }
    }

    fn string(s: &str) -> PbValue {
        PbValue {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn headers_response(request: bool, common: CommonResponse) -> ProcessingResponse {
        let h = HeadersResponse {
            response: Some(common),
        };
        ProcessingResponse {
            response: Some(if request {
                processing_response::Response::RequestHeaders(h)
            } else {
                processing_response::Response::ResponseHeaders(h)
            }),
            ..Default::default()
        }
    }

    impl Fake {
        /// The answers to a complete request (headers + whole body): headers response with
        /// the decision, then the rewritten body.
        fn decide(&self, body: &[u8]) -> Vec<ProcessingResponse> {
            let mut json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let mut set_headers = vec![];
            let mut metadata = None;
            if json["model"] == "gateway" {
                set_headers.push(set("x-semantic-router-cluster", &self.gateway_cluster));
            } else {
                set_headers.push(set("x-gateway-destination-endpoint", &self.destination));
                set_headers.push(set("x-semantic-router-pool", "pool-b"));
                let mut lb = Struct::default();
                lb.fields.insert(
                    "x-gateway-destination-endpoint".into(),
                    string(&self.destination),
                );
                let mut md = Struct::default();
                md.fields.insert(
                    "envoy.lb".into(),
                    PbValue {
                        kind: Some(Kind::StructValue(lb)),
                    },
                );
                metadata = Some(md);
            }
            json["model"] = Value::String("chosen-model".into());
            let new_body = serde_json::to_vec(&json).unwrap();
            set_headers.push(set("content-length", &new_body.len().to_string()));
            let mut headers = headers_response(
                true,
                CommonResponse {
                    header_mutation: Some(HeaderMutation {
                        set_headers,
                        ..Default::default()
                    }),
                    clear_route_cache: true,
                    ..Default::default()
                },
            );
            headers.dynamic_metadata = metadata;
            let body = ProcessingResponse {
                response: Some(processing_response::Response::RequestBody(BodyResponse {
                    response: Some(CommonResponse {
                        body_mutation: Some(BodyMutation {
                            mutation: Some(body_mutation::Mutation::StreamedResponse(
                                StreamedBodyResponse {
                                    body: new_body,
                                    end_of_stream: true,
                                    ..Default::default()
                                },
                            )),
                        }),
                        ..Default::default()
                    }),
                })),
                ..Default::default()
            };
            vec![headers, body]
        }

        fn on_response_headers(
            &self,
            req: &ProcessingRequest,
            _h: &HttpHeaders,
        ) -> ProcessingResponse {
            let served = req
                .metadata_context
                .as_ref()
                .and_then(|m| m.filter_metadata.get("envoy.lb"))
                .and_then(|s| s.fields.get("x-gateway-destination-endpoint-served"))
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "-".into());
            self.served.lock().unwrap().push(served.clone());
            headers_response(
                false,
                CommonResponse {
                    header_mutation: Some(HeaderMutation {
                        set_headers: vec![set("x-test-served", &served)],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
        }
    }

    #[tonic::async_trait]
    impl ExternalProcessor for Fake {
        type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

        async fn process(
            &self,
            request: Request<Streaming<ProcessingRequest>>,
        ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
            let mut inbound = request.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let me = self.clone();
            tokio::spawn(async move {
                let mut body = Vec::new();
                while let Ok(Some(msg)) = inbound.message().await {
                    let answers = match &msg.request {
                        Some(processing_request::Request::RequestHeaders(h)) => {
                            if header(&h.headers, "x-gateway-destination-endpoint").is_some() {
                                me.client_destinations_seen.fetch_add(1, Ordering::SeqCst);
                            }
                            if h.end_of_stream {
                                // No body (GET /health): pass through untouched.
                                vec![headers_response(true, CommonResponse::default())]
                            } else {
                                // Duplex: answer the headers only once the body has ended.
                                vec![]
                            }
                        }
                        Some(processing_request::Request::RequestBody(b)) => {
                            body.extend_from_slice(&b.body);
                            if b.end_of_stream {
                                me.decide(&body)
                            } else {
                                vec![]
                            }
                        }
                        Some(processing_request::Request::RequestTrailers(_)) => {
                            let mut out = me.decide(&body);
                            out.push(ProcessingResponse {
                                response: Some(processing_response::Response::RequestTrailers(
                                    TrailersResponse::default(),
                                )),
                                ..Default::default()
                            });
                            out
                        }
                        Some(processing_request::Request::ResponseHeaders(h)) => {
                            vec![me.on_response_headers(&msg, h)]
                        }
                        Some(processing_request::Request::ResponseBody(_)) => {
                            me.response_chunks.fetch_add(1, Ordering::SeqCst);
                            vec![ProcessingResponse {
                                response: Some(processing_response::Response::ResponseBody(
                                    BodyResponse::default(),
                                )),
                                ..Default::default()
                            }]
                        }
                        _ => vec![],
                    };
                    for a in answers {
                        if tx.send(Ok(a)).await.is_err() {
                            return;
                        }
                    }
                }
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        }
    }

    pub async fn start(fake: Fake) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(ExternalProcessorServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap()
        });
        addr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_proc_decision_after_body_routes_and_streams() {
    let (a, _) = start_backend(false).await;
    let (b, _) = start_backend(false).await;
    let (c, c_hits) = start_backend(false).await;
    let closed = free_addr();
    let fake = fake_ext_proc::Fake {
        destination: format!("{closed},{b}"),
        gateway_cluster: "llm-d-test".into(),
        response_chunks: Arc::new(AtomicUsize::new(0)),
        served: Arc::new(Mutex::new(vec![])),
        client_destinations_seen: Arc::new(AtomicUsize::new(0)),
    };
    let ext_proc_addr = fake_ext_proc::start(fake.clone()).await;
    let envoy = Envoy::start(EnvoyConfig {
        listen_port: envoy::free_port(),
        admin_port: envoy::free_port(),
        ext_proc_addr,
        ext_proc_replicas: Vec::new(),
        endpoints: vec![a, b, c, closed],
        passthrough: a,
        gateway_clusters: vec![("llm-d-test".into(), a)],
        with_ext_proc: true,
        buffered: false,
    });
    let url = envoy.url();

    // The processor's destination wins over one the client sent (removed before routing);
    // the first endpoint is closed, so the retry serves it from the second. The body
    // rewritten by the processor arrives whole, with its content-length.
    let (status, headers, body) = post_chat(
        &url,
        &[("x-gateway-destination-endpoint", c.to_string())],
        json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", envoy.logs());
    assert_eq!(port_of(&body), u64::from(b.port()), "{body}");
    assert_eq!(
        c_hits.load(Ordering::SeqCst),
        0,
        "client-sent destination was honoured"
    );
    assert_eq!(
        fake.client_destinations_seen.load(Ordering::SeqCst),
        0,
        "not removed before ext_proc"
    );
    let echoed: Value = serde_json::from_str(&body).unwrap();
    let forwarded: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(forwarded["model"], "chosen-model");
    assert_eq!(
        echoed["content_length"].as_str(),
        Some(echoed["body"].as_str().unwrap().len().to_string().as_str())
    );
    assert_eq!(echoed["pool"], "pool-b");
    // Envoy told the processor which endpoint served (override_host's selected_host_key).
    assert_eq!(headers["x-test-served"], b.to_string().as_str());

    // SSE passes through chunk by chunk (response body STREAMED): the first event arrives
    // long before the last is produced (events are 300 ms apart).
    let started = Instant::now();
    let resp = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "auto", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut first_at = None;
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("SSE stalled")
    {
        first_at.get_or_insert_with(|| started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let total = started.elapsed();
    let first_at = first_at.expect("no SSE bytes");
    assert_eq!(text.matches("data: ").count(), 3, "{text}");
    assert!(text.contains(&format!("\"port\":{}", b.port())), "{text}");
    assert!(
        first_at + Duration::from_millis(450) < total,
        "first event at {first_at:?}, stream done at {total:?}: not streamed"
    );
    assert!(fake.response_chunks.load(Ordering::SeqCst) >= 3);

    // A gateway pool: routed by cluster name, no destination endpoint.
    let (status, _, body) = post_chat(&url, &[], json!({"model": "gateway"})).await;
    assert_eq!(status, 200, "{body}");
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["port"], u64::from(a.port()));
    assert_eq!(echoed["cluster"], "llm-d-test");

    // A non-inference path passes through untouched to the default upstream.
    let resp = client()
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["port"], u64::from(a.port()));
    assert_eq!(echoed["dest"], Value::Null);
    let line = log_line(&envoy, "\"GET /v1/models").await;
    assert!(line.contains("route=passthrough"), "{line}");
    // Shown with --nocapture: one access-log line per request above.
    eprintln!("{}", envoy.logs());
}
