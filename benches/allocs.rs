//! Allocations per request in the router's ext_proc service, rules only (no model).
//!
//! The library's real service (`ExtProc` over a `Processor` on the hop benchmark's rules-only
//! policy) is served by tonic on 127.0.0.1 in this process, on its own tokio runtime, and
//! driven by an ext_proc gRPC client on another. A counting global allocator (a wrapper around
//! `std::alloc::System`) counts allocation calls and bytes only on the threads of the
//! router's runtime (a thread-local flag set in its `on_thread_start`), so the client, the
//! message building and this harness are not counted. The hop benchmark's do-nothing floor
//! (`benches/hop/floor.rs`) is measured the same way after it, on its own counted runtime, to
//! show what any tonic ext_proc stream costs.
//!
//! Each request is one ext_proc stream carrying what Envoy sends for one chat completion with
//! the hop benchmark's filter (`request_body_mode: FULL_DUPLEX_STREAMED`,
//! `response_body_mode: STREAMED`), one message at a time with its answers awaited:
//! 1. *request*: the request headers (with `protocol_config`) and the whole body with
//!    `end_of_stream`, both sent at once; the two answers (headers, body) awaited;
//! 2. *response*: the response headers (with the `envoy.lb` metadata the router set, as Envoy
//!    forwards it), its answer, then the response body with `end_of_stream`, its answer;
//! 3. *close*: the client half-closes and reads the stream to its end.
//!
//! Requests go one after another, so the counts of a phase are what the router's threads did
//! between its start and its last answer. Work a thread does after sending an answer is
//! counted in the next phase (a few calls at most: the stream's end is its own phase). It also
//! prints the CPU time of the router's runtime threads per request (from /proc schedstat) and
//! the client-side round-trip time, both only as context for the counts.
//!
//! Run it with `cargo bench --bench allocs` (`make bench` runs it too). Knobs (environment):
//! `ALLOCS_REQUESTS` (20000), `ALLOCS_WARMUP` (2000). It prints numbers and asserts nothing.

#[path = "hop/cpu.rs"]
#[allow(dead_code)] // shared with the hop benchmark, which reads other processes' CPU too
mod cpu;
#[path = "hop/floor.rs"]
mod floor;
#[path = "hop/workload.rs"]
mod workload;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Answer;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse, ProtocolConfiguration,
};
use envoy_types::pb::google::protobuf::value::Kind as ValueKind;
use semantic_router::controller::manifests::load_dir;
use semantic_router::dataplane::extproc::{ExtProc, Limits};
use semantic_router::dataplane::metrics::Metrics;
use semantic_router::dataplane::picker::PolicyPicker;
use semantic_router::dataplane::processor::Processor;
use semantic_router::routing::{NoModels, SharedTable, compile};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};

use cpu::CpuOf;
use floor::{FLOOR_THREAD, start_floor};
use workload::{CHAT_PATH, COMPLETION, chat_body, router_manifests};

/// Name of the router runtime's threads: the ones counted, and whose CPU time is read.
const ROUTER_THREAD: &str = "allocs-router";
/// Where the policy's pools point; nothing is sent there (the service is driven directly).
const BACKEND: &str = "127.0.0.1:18000";

// ---------------------------------------------------------------------------------------
// The counting allocator.

/// `System`, counting allocation calls and bytes made on threads that opted in.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's allocations are counted (set on the router runtime's threads).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    // `try_with`: a thread being torn down has no flag left, and is not counted.
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// The one unsafe item (so `[lints]` may `deny` unsafe code, not `forbid` it, or this bench
// cannot build): a global allocator must implement the unsafe `GlobalAlloc` trait. Each
// method forwards to `System` with the caller's arguments, so `System`'s contract holds.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller's `alloc` contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller's `alloc_zeroed` contract, passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller's `realloc` contract, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters at one instant.
#[derive(Clone, Copy, Default)]
struct Counts {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
}

impl Counts {
    fn now() -> Self {
        Self {
            allocs: ALLOCS.load(Ordering::Relaxed),
            reallocs: REALLOCS.load(Ordering::Relaxed),
            bytes: BYTES.load(Ordering::Relaxed),
        }
    }

    fn since(self, before: Counts) -> Counts {
        Counts {
            allocs: self.allocs - before.allocs,
            reallocs: self.reallocs - before.reallocs,
            bytes: self.bytes - before.bytes,
        }
    }

    fn add(&mut self, other: Counts) {
        self.allocs += other.allocs;
        self.reallocs += other.reallocs;
        self.bytes += other.bytes;
    }
}

// ---------------------------------------------------------------------------------------
// The router's service, built with the library's public API.

/// The ext_proc service as `semantic-router run` builds it for a rules-only policy: the
/// policy's table compiled and published, the policy's endpoint picker and no model signals
/// (the semantic cache is left out: no route of this policy uses it). The one place that
/// follows the library's constructors.
fn router_service() -> Result<ExtProc, String> {
    let dir = tempfile::Builder::new()
        .prefix("allocs-policy-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let backend: SocketAddr = BACKEND.parse().expect("a literal address");
    std::fs::write(dir.path().join("policy.yaml"), router_manifests(backend))
        .map_err(|e| format!("write the policy: {e}"))?;
    let resources = load_dir(dir.path()).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("the policy does not load:\n{}", lines.join("\n"))
    })?;
    let compiled = compile(&resources);
    if !compiled.diagnostics.is_empty() {
        let lines: Vec<String> = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        return Err(format!("the policy has findings:\n{}", lines.join("\n")));
    }
    let table = SharedTable::default();
    table.publish(compiled.table);
    let picker = Arc::new(PolicyPicker::new());
    if let Some(current) = table.load() {
        picker.follow(&current);
    }
    let processor = Processor::new(table, picker, Arc::new(NoModels));
    Ok(ExtProc::new(
        Arc::new(processor),
        Arc::new(Metrics::new()),
        Limits {
            max_body_bytes: 8 << 20,
        },
    ))
}

/// Serves `service` on 127.0.0.1 on `runtime`, as the router serves it (HTTP/2 keep-alive,
/// no Nagle): its address.
fn serve(runtime: &Runtime, service: ExtProc) -> Result<SocketAddr, String> {
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    runtime.spawn(async move {
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ExternalProcessorServer::new(service))
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
        if let Err(e) = served {
            eprintln!("allocs: the ext_proc server stopped: {e}");
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------
// What Envoy sends for one request.

fn header(key: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: key.into(),
        raw_value: value.as_bytes().to_vec(),
        ..HeaderValue::default()
    }
}

/// The four messages of one request, as Envoy sends them with the hop benchmark's filter.
struct Messages {
    request_headers: ProcessingRequest,
    request_body: ProcessingRequest,
    response_body: ProcessingRequest,
}

impl Messages {
    fn new(authority: &str) -> Self {
        let body = chat_body();
        let request_headers = ProcessingRequest {
            protocol_config: Some(ProtocolConfiguration {
                request_body_mode: BodySendMode::FullDuplexStreamed as i32,
                response_body_mode: BodySendMode::Streamed as i32,
                ..ProtocolConfiguration::default()
            }),
            request: Some(Phase::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![
                        header(":authority", authority),
                        header(":path", CHAT_PATH),
                        header(":method", "POST"),
                        header(":scheme", "http"),
                        header("content-type", "application/json"),
                        header("accept", "application/json"),
                        header("x-team", "engineering"),
                        header("content-length", &body.len().to_string()),
                        header("x-forwarded-proto", "http"),
                        header("x-request-id", "5f0c6f5e-4d3b-4a51-9f7e-2f7a1c8b9d10"),
                    ],
                }),
                end_of_stream: false,
                ..HttpHeaders::default()
            })),
            ..ProcessingRequest::default()
        };
        let request_body = ProcessingRequest {
            request: Some(Phase::RequestBody(HttpBody {
                body,
                end_of_stream: true,
                ..HttpBody::default()
            })),
            ..ProcessingRequest::default()
        };
        let response_body = ProcessingRequest {
            request: Some(Phase::ResponseBody(HttpBody {
                body: COMPLETION.as_bytes().to_vec(),
                end_of_stream: true,
                ..HttpBody::default()
            })),
            ..ProcessingRequest::default()
        };
        Self {
            request_headers,
            request_body,
            response_body,
        }
    }

    /// The response headers, carrying the `envoy.lb` metadata the router set in its headers
    /// answer (Envoy forwards it: `receiving_namespaces` and `forwarding_namespaces` name it).
    fn response_headers(routed: &ProcessingResponse) -> ProcessingRequest {
        let filter_metadata = routed
            .dynamic_metadata
            .iter()
            .flat_map(|s| &s.fields)
            .filter_map(|(namespace, value)| match &value.kind {
                Some(ValueKind::StructValue(s)) => Some((namespace.clone(), s.clone())),
                _ => None,
            })
            .collect();
        ProcessingRequest {
            request: Some(Phase::ResponseHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![
                        header(":status", "200"),
                        header("content-type", "application/json"),
                        header("content-length", &COMPLETION.len().to_string()),
                        header("date", "Wed, 02 Dec 2026 12:00:00 GMT"),
                        header("x-envoy-upstream-service-time", "1"),
                    ],
                }),
                end_of_stream: false,
                ..HttpHeaders::default()
            })),
            metadata_context: Some(Metadata {
                filter_metadata,
                ..Metadata::default()
            }),
            ..ProcessingRequest::default()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Driving the service.

/// What one request cost the service's threads, by phase.
#[derive(Default)]
struct Cost {
    request: Counts,
    response: Counts,
    close: Counts,
}

type Client = ExternalProcessorClient<Channel>;

async fn answer(
    inbound: &mut tonic::Streaming<ProcessingResponse>,
    what: &str,
) -> Result<ProcessingResponse, String> {
    match inbound.message().await {
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(format!("the stream ended before the {what} answer")),
        Err(e) => Err(format!("the {what} answer: {e}")),
    }
}

/// The value the router set for `name` in a headers answer, if any.
fn set_header(response: &ProcessingResponse, name: &str) -> Option<String> {
    let Some(Answer::RequestHeaders(headers)) = &response.response else {
        return None;
    };
    headers
        .response
        .as_ref()?
        .header_mutation
        .as_ref()?
        .set_headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == name)
        .map(|h| String::from_utf8_lossy(&h.raw_value).into_owned())
}

/// One request's stream, phase by phase; returns its cost and the value of the `named` header
/// the headers answer set.
async fn one_request(
    client: &mut Client,
    messages: &Messages,
    named: &str,
) -> Result<(Cost, String), String> {
    let (tx, rx) = mpsc::channel(4);
    let (headers, body) = (
        messages.request_headers.clone(),
        messages.request_body.clone(),
    );
    let mut cost = Cost::default();

    let start = Counts::now();
    tx.send(headers).await.map_err(|_| "send headers")?;
    tx.send(body).await.map_err(|_| "send body")?;
    let mut inbound = client
        .process(ReceiverStream::new(rx))
        .await
        .map_err(|e| format!("open the stream: {e}"))?
        .into_inner();
    let routed = answer(&mut inbound, "request headers").await?;
    answer(&mut inbound, "request body").await?;
    let answered = Counts::now();
    cost.request = answered.since(start);

    let response_headers = Messages::response_headers(&routed);
    let response_body = messages.response_body.clone();
    let before = Counts::now();
    tx.send(response_headers)
        .await
        .map_err(|_| "send response headers")?;
    answer(&mut inbound, "response headers").await?;
    tx.send(response_body)
        .await
        .map_err(|_| "send response body")?;
    answer(&mut inbound, "response body").await?;
    let responded = Counts::now();
    cost.response = responded.since(before);

    drop(tx);
    if let Some(extra) = inbound
        .message()
        .await
        .map_err(|e| format!("the end of the stream: {e}"))?
    {
        return Err(format!("an answer after the last one: {extra:?}"));
    }
    cost.close = Counts::now().since(responded);

    let value = set_header(&routed, named)
        .ok_or_else(|| format!("the request was not routed (no {named}): {routed:?}"))?;
    Ok((cost, value))
}

fn var(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            eprintln!("allocs: ignoring {name}={v:?} (want a positive integer)");
            default
        }),
        Err(_) => default,
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("allocs: skipped (run it with `cargo bench --bench allocs`)");
        return;
    }
    if let Err(e) = run() {
        eprintln!("allocs: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let requests = var("ALLOCS_REQUESTS", 20_000);
    let warmup = var("ALLOCS_WARMUP", 2_000);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Each service on its own counted runtime, shaped like the binary's default one (a worker
    // per CPU); only one of them is sent requests at a time.
    let counted_runtime = |name: &'static str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .on_thread_start(|| COUNTED.with(|c| c.set(true)))
            .enable_all()
            .build()
            .map_err(|e| format!("the {name} runtime: {e}"))
    };
    let router_rt = counted_runtime(ROUTER_THREAD)?;
    let floor_rt = counted_runtime(FLOOR_THREAD)?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the client runtime: {e}"))?;

    let router_addr = serve(&router_rt, router_service()?)?;
    let floor_addr = start_floor(&floor_rt, BACKEND.parse().expect("a literal address"));
    let messages = Messages::new(BACKEND);
    let drive = |addr, thread, named| Drive {
        addr,
        cpu: CpuOf::ThreadsOfThisProcess(thread),
        named,
        warmup,
        requests,
    };
    let router =
        client_rt.block_on(drive(router_addr, ROUTER_THREAD, DECISION_HEADER).run(&messages))?;
    let floor =
        client_rt.block_on(drive(floor_addr, FLOOR_THREAD, DESTINATION_HEADER).run(&messages))?;
    report(requests, warmup, workers, &router, &floor);
    Ok(())
}

/// The header the router names its decision in.
const DECISION_HEADER: &str = "x-semantic-router-decision";
/// The header both services name the destination in (the floor sets nothing else).
const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// One service driven for `warmup` and then `requests` requests.
struct Drive {
    addr: SocketAddr,
    /// Whose CPU time is read around the measured requests.
    cpu: CpuOf,
    /// The header whose value the headers answer must set (proof the request was routed).
    named: &'static str,
    warmup: usize,
    requests: usize,
}

/// What the measured requests of one service cost.
struct Driven {
    total: Cost,
    /// The value of the named header in the last answer.
    named: String,
    cpu_us: Option<f64>,
    round_trips: Vec<Duration>,
    took: Duration,
}

impl Drive {
    async fn run(self, messages: &Messages) -> Result<Driven, String> {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let mut client = ExternalProcessorClient::new(channel);
        let mut named = String::new();
        for _ in 0..self.warmup {
            named = one_request(&mut client, messages, self.named).await?.1;
        }
        let cpu_before = self.cpu.read();
        let started = Instant::now();
        let mut total = Cost::default();
        let mut round_trips = Vec::with_capacity(self.requests);
        for _ in 0..self.requests {
            let sent = Instant::now();
            let (cost, _) = one_request(&mut client, messages, self.named).await?;
            round_trips.push(sent.elapsed());
            total.request.add(cost.request);
            total.response.add(cost.response);
            total.close.add(cost.close);
        }
        let took = started.elapsed();
        let cpu_after = self.cpu.read();
        round_trips.sort_unstable();
        Ok(Driven {
            total,
            named,
            cpu_us: cpu_before
                .zip(cpu_after)
                .map(|(b, a)| a.saturating_sub(b) as f64 / 1e3 / self.requests as f64),
            round_trips,
            took,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The report.

fn report(requests: usize, warmup: usize, workers: usize, router: &Driven, floor: &Driven) {
    let n = requests as f64;
    println!(
        "allocs: allocations per rules-only request in the router's ext_proc service \
         (in-process, counted on its runtime threads only; prints numbers, asserts nothing)"
    );
    println!(
        "  {requests} requests after {warmup} warm-up, one at a time; each service on its own \
         runtime of {workers} worker threads"
    );
    println!(
        "  request: POST {CHAT_PATH}, {} B body (FULL_DUPLEX_STREAMED); response {} B (STREAMED)",
        chat_body().len(),
        COMPLETION.len()
    );
    println!(
        "  router: decision {:?}; floor (the hop bench's do-nothing ext_proc, for scale): destination {:?}",
        router.named, floor.named
    );
    println!();
    println!(
        "  {:<44} | {:>10} {:>8} {:>10} | {:>10} {:>8} {:>10}",
        "per request", "router", "realloc", "bytes", "floor", "realloc", "bytes"
    );
    let phases = |d: &Driven| {
        let t = &d.total;
        let mut whole = t.request;
        whole.add(t.response);
        whole.add(t.close);
        [t.request, t.response, t.close, whole]
    };
    let names = [
        "request (headers + body -> 2 answers)",
        "response (headers -> answer, body -> answer)",
        "close (half-close -> end of stream)",
        "whole request",
    ];
    for ((name, r), f) in names.iter().zip(phases(router)).zip(phases(floor)) {
        let calls = |c: Counts| (c.allocs + c.reallocs) as f64 / n;
        println!(
            "  {:<44} | {:>10.1} {:>8.1} {:>10.0} | {:>10.1} {:>8.1} {:>10.0}",
            name,
            calls(r),
            r.reallocs as f64 / n,
            r.bytes as f64 / n,
            calls(f),
            f.reallocs as f64 / n,
            f.bytes as f64 / n,
        );
    }
    let [.., r] = phases(router);
    let [.., f] = phases(floor);
    println!(
        "  router/floor, whole request: {:.2}x the allocation calls, {:.2}x the bytes",
        (r.allocs + r.reallocs) as f64 / (f.allocs + f.reallocs) as f64,
        r.bytes as f64 / f.bytes as f64
    );
    println!();
    for (name, d) in [("router", router), ("floor", floor)] {
        let at = |p: f64| {
            let all = &d.round_trips;
            let rank = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len());
            all[rank - 1].as_secs_f64() * 1e3
        };
        println!(
            "  {name:<6}: runtime CPU per request {}; round trip p50 {:.3} ms, p99 {:.3} ms, \
             {:.0} req/s one at a time (context only)",
            d.cpu_us
                .map_or_else(|| "-".into(), |us| format!("{us:.1} us")),
            at(0.50),
            at(0.99),
            n / d.took.as_secs_f64()
        );
    }
}
