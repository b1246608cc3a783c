//! The endpoint-picking benchmark: what picking costs per request, and what it buys.
//!
//! 1. **Cost, in process.** One pick plus its accounting (`InFlight` start, response, end) per
//!    request, for every policy, in pools of 10, 100 and 1,000 endpoints with fresh scraped
//!    figures; then the whole decision (`Processor::process`: parse, rules, pick, rewrite) on a
//!    rules-only policy whose pool has 1 endpoint and round-robin versus 100 endpoints and
//!    load-aware / prefix-affinity picking. The difference is what picking adds to the hop;
//!    it is read against the added latency of the rules-only hop measured here (Envoy + router
//!    versus the backend direct, sequential requests) and PERFORMANCE.md's 0.3 ms floor.
//!    Target: at 100 endpoints picking adds at most 5% to the rules-only hop.
//! 2. **Effect, through Envoy and the router.** Four `vllm-sim` model servers whose time to
//!    first token grows with their load (`--queue-latency-ms`) and shrinks on a prefix-cache
//!    hit (`--prefix-cache-speedup`, a small cache per server), two of them kept busy by
//!    traffic that does not pass the router (skewed load). The same open-loop offered load of
//!    streamed chat requests (twelve long conversation prefixes, a new question each time) is
//!    sent through Envoy + the router once per policy (fresh servers each time): p50/p99 time
//!    to first token and end-to-end latency (from each request's intended send time), and
//!    throughput. Target: load-aware + prefix affinity beats round-robin on p99 TTFT.
//!
//! Run: `cargo bench --bench picking` (builds the router and the simulator in release; needs
//! Envoy from `make tools`). Knobs: `PICK_RATE` (req/s, 40), `PICK_SECS` (measured seconds
//! per policy, 12), `PICK_WARMUP_SECS` (3), `PICK_E2E=0` skips part 2. It prints numbers and
//! verdicts and asserts nothing.

#[path = "../tests/e2e/support/envoy.rs"]
mod envoy;

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envoy::{Envoy, EnvoyConfig, free_addr, free_port};
use semantic_router::api::{EndpointPicking, PickPolicy};
use semantic_router::dataplane::headers::RequestHeaders;
use semantic_router::dataplane::openai::ApiKind;
use semantic_router::dataplane::picker::{
    EndpointPicker, Figures, InFlight, PickRequest, PolicyPicker,
};
use semantic_router::dataplane::processor::{Outcome, Processor, RequestView};
use semantic_router::routing::{
    NoModels, ObjectKey, Pool, PoolBackend, Resources, SharedTable, compile,
};

const POLICIES: [PickPolicy; 5] = [
    PickPolicy::RoundRobin,
    PickPolicy::Random,
    PickPolicy::LoadAware,
    PickPolicy::PrefixAffinity,
    PickPolicy::SessionAffinity,
];

/// A system prompt of about 1 KB, as many agents and RAG pipelines send.
fn long_system(conversation: usize) -> String {
    format!(
        "Conversation {conversation}. You are the support assistant of a company that rents \
         out holiday flats. Answer in the customer's language, quote the booking terms you rely \
         on, never invent prices, and hand over to a person when the customer asks for one. {}",
        "The booking terms: arrival after 15:00, departure before 10:00, a deposit of two \
         nights, free cancellation until fourteen days before arrival, pets on request. "
            .repeat(6)
    )
}

// ---------------------------------------------------------------------------------------
// Part 1: cost in process

fn pool(n: usize, policy: PickPolicy) -> Pool {
    let endpoints = (0..n)
        .map(|i| {
            SocketAddr::from((
                [10, (i / 250) as u8, (i % 250) as u8, 1],
                8000 + (i % 7) as u16,
            ))
        })
        .collect();
    Pool {
        key: ObjectKey::new("bench", format!("pool-{n}-{policy:?}")),
        models: Default::default(),
        backend: PoolBackend::Endpoints(endpoints),
        picking: EndpointPicking {
            policy,
            ..EndpointPicking::default()
        },
        metrics: None,
        labels: Default::default(),
        direct_requests: true,
        allowed_route_namespaces: Vec::new(),
    }
}

/// Nanoseconds per request (median of five batches) of pick + start + response + end.
fn pick_cost(n: usize, policy: PickPolicy) -> f64 {
    let picker = Arc::new(PolicyPicker::new());
    let handle: Arc<dyn EndpointPicker> = picker.clone();
    let pool = pool(n, policy);
    let PoolBackend::Endpoints(endpoints) = &pool.backend else {
        unreachable!()
    };
    let system = long_system(1);
    let questions: Vec<String> = (0..64).map(|i| format!("question {i}?")).collect();
    let sessions: Vec<RequestHeaders> = (0..64)
        .map(|i| RequestHeaders::from_pairs([("x-session-id", format!("session-{i}"))]))
        .collect();
    // Fresh figures everywhere, so the load path is the one a scraped pool takes.
    picker.pick(&pool, &PickRequest::default()).ok();
    for (i, &e) in endpoints.iter().enumerate() {
        picker.set_figures(
            e,
            Figures {
                waiting: (i * 7 % 5) as u32,
                running: (i * 3 % 11) as u32,
                kv_cache: (i % 10) as f64 / 10.0,
            },
            3_600_000,
        );
    }
    let one = |i: usize| {
        let prompt = [
            "system",
            system.as_str(),
            "user",
            questions[i % 64].as_str(),
        ];
        let request = PickRequest {
            model: "m",
            prompt: &prompt,
            headers: Some(&sessions[i % 64]),
            subset: None,
        };
        let pick = handle.pick(&pool, &request).expect("a pick");
        let mut flight = InFlight::start(handle.clone(), black_box(pick)).expect("endpoints");
        flight.respond(200, None);
    };
    let per_batch = (2_000_000 / n.max(1)).clamp(2_000, 50_000);
    for i in 0..per_batch / 4 {
        one(i);
    }
    let mut batches: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            for i in 0..per_batch {
                one(i);
            }
            started.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[2]
}

fn policy_yaml(endpoints: &[SocketAddr], policy: PickPolicy) -> String {
    let addresses: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: gpu, namespace: default}}
spec:
  models: [{{name: sim-model}}]
  endpoints: {{static: {{addresses: [{}]}}}}
  endpointPicking: {{policy: {policy:?}, fallbacks: 1}}
  metrics: {{engine: vllm, path: /metrics, intervalSeconds: 1}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto, namespace: default}}
spec:
  match: {{models: ["auto"]}}
  signals:
    keywords:
    - name: stem
      keywords: ["integral", "derivative", "equation", "prove", "theorem", "step by step"]
  decisions:
  - name: reasoning
    when: {{any: ["stem"]}}
    targets: [{{pool: gpu, model: sim-model, reasoning: {{enabled: true}}}}]
  defaultTarget: {{pool: gpu, model: sim-model}}
"#,
        addresses.join(", ")
    )
}

fn processor(endpoints: &[SocketAddr], policy: PickPolicy) -> (Processor, Arc<PolicyPicker>) {
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&policy_yaml(endpoints, policy))
            .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
            .collect();
    let resources = Resources {
        pools: vec![serde_yaml::from_value(docs[0].clone()).expect("a pool")],
        routes: vec![serde_yaml::from_value(docs[1].clone()).expect("a route")],
        ..Resources::default()
    };
    let table = SharedTable::default();
    table.publish(compile(&resources).table);
    let picker = Arc::new(PolicyPicker::new());
    (
        Processor::new(table, picker.clone(), Arc::new(NoModels)),
        picker,
    )
}

/// Microseconds per request (median of five batches) of the whole decision plus accounting.
fn decision_cost(endpoints: usize, policy: PickPolicy) -> f64 {
    let addrs: Vec<SocketAddr> = (0..endpoints)
        .map(|i| SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 8000)))
        .collect();
    let (processor, picker) = processor(&addrs, policy);
    let handle: Arc<dyn EndpointPicker> = picker.clone();
    let bodies: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            serde_json::to_vec(&serde_json::json!({
                "model": "auto", "max_tokens": 256, "stream": false,
                "messages": [{"role": "system", "content": long_system(i % 8)},
                             {"role": "user", "content": format!("When can I arrive, question {i}?")}]
            }))
            .expect("JSON")
        })
        .collect();
    let headers = RequestHeaders::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let one = |i: usize| {
            let processor = &processor;
            let bodies = &bodies;
            let headers = &headers;
            let handle = handle.clone();
            async move {
                let outcome = processor
                    .process(RequestView {
                        kind: ApiKind::Chat,
                        headers,
                        body: &bodies[i % 64],
                    })
                    .await;
                let Outcome::Routed(mut routed) = outcome else {
                    panic!("not routed: {outcome:?}")
                };
                if let Some(pick) = routed.pick.take() {
                    let mut flight = InFlight::start(handle, pick).expect("endpoints");
                    flight.respond(200, None);
                }
                black_box(routed);
            }
        };
        for i in 0..2_000 {
            one(i).await;
        }
        let mut batches = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            for i in 0..5_000 {
                one(i).await;
            }
            batches.push(started.elapsed().as_secs_f64() * 1e6 / 5_000.0);
        }
        batches.sort_by(f64::total_cmp);
        batches[2]
    })
}

// ---------------------------------------------------------------------------------------
// Part 2: through Envoy and the router

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, args: &[String], log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    Proc(
        Command::new(bin)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}")),
    )
}

fn wait_http(url: &str, what: &str, log: &Path) {
    let client = http::blocking_get_ok;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !client(url) {
        assert!(
            Instant::now() < deadline,
            "{what} not ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[path = "../tests/support/http.rs"]
mod http;

/// Simulators, the router on a one-pool policy, Envoy in front.
struct Stack {
    sims: Vec<(SocketAddr, Proc)>,
    _router: Proc,
    envoy: Envoy,
    _dir: tempfile::TempDir,
}

fn start_stack(sim_args: &[&str], count: usize, policy: PickPolicy) -> Stack {
    let dir = tempfile::Builder::new()
        .prefix("picking-bench-")
        .tempdir()
        .expect("temp dir");
    let sims: Vec<(SocketAddr, Proc)> = (0..count)
        .map(|i| {
            let addr = free_addr();
            let log = dir.path().join(format!("s{i}.log"));
            let mut args: Vec<String> = vec![
                "--name".into(),
                format!("s{i}"),
                "--listen".into(),
                addr.to_string(),
            ];
            args.extend(sim_args.iter().map(|s| s.to_string()));
            let proc = spawn(env!("CARGO_BIN_EXE_vllm-sim"), &args, &log);
            wait_http(&format!("http://{addr}/health"), "vllm-sim", &log);
            (addr, proc)
        })
        .collect();
    let addrs: Vec<SocketAddr> = sims.iter().map(|(a, _)| *a).collect();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("dir");
    std::fs::write(manifests.join("policy.yaml"), policy_yaml(&addrs, policy)).expect("policy");
    let (extproc, admin) = (free_addr(), free_addr());
    let log = dir.path().join("router.log");
    let router = spawn(
        env!("CARGO_BIN_EXE_semantic-router"),
        &[
            "run".into(),
            "--manifests".into(),
            manifests.display().to_string(),
            "--extproc-listen".into(),
            extproc.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--log".into(),
            "warn".into(),
        ],
        &log,
    );
    wait_http(&format!("http://{admin}/readyz"), "router", &log);
    let envoy = Envoy::start(EnvoyConfig {
        listen_port: free_port(),
        admin_port: free_port(),
        ext_proc_addr: extproc,
        ext_proc_replicas: Vec::new(),
        endpoints: addrs.clone(),
        passthrough: addrs[0],
        gateway_clusters: Vec::new(),
        with_ext_proc: true,
        buffered: false,
    });
    Stack {
        sims,
        _router: router,
        envoy,
        _dir: dir,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Milliseconds per sequential non-streamed request to `url` (p50, p99).
async fn sequential(client: &reqwest::Client, url: &str, requests: usize) -> (f64, f64) {
    let body = serde_json::json!({"model": "auto", "max_tokens": 1,
        "messages": [{"role": "user", "content": long_system(0)}]})
    .to_string();
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let response = client
            .post(format!("{url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("an answer");
        assert!(response.status().is_success(), "{}", response.status());
        response.bytes().await.expect("a body");
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// The added latency of the rules-only hop: Envoy + router versus the backend direct.
fn measure_hop(runtime: &tokio::runtime::Runtime) -> (f64, f64) {
    let stack = start_stack(&["--itl-ms", "0"], 1, PickPolicy::RoundRobin);
    let client = reqwest::Client::new();
    let direct = format!("http://{}", stack.sims[0].0);
    runtime.block_on(async {
        sequential(&client, &direct, 300).await;
        sequential(&client, &stack.envoy.url(), 300).await;
        let (d50, d99) = sequential(&client, &direct, 1500).await;
        let (r50, r99) = sequential(&client, &stack.envoy.url(), 1500).await;
        (r50 - d50, r99 - d99)
    })
}

#[derive(Default)]
struct LoadResult {
    ttft: Vec<f64>,
    e2e: Vec<f64>,
    errors: usize,
    sent: usize,
    by_sim: HashMap<String, usize>,
    elapsed: f64,
}

/// One streamed request; (TTFT ms, end-to-end ms, sim) from its intended start.
async fn stream_one(
    client: &reqwest::Client,
    url: &str,
    body: String,
    intended: Instant,
) -> Option<(f64, f64, String)> {
    let mut response = client
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let sim = response
        .headers()
        .get("x-sim-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut ttft = None;
    while let Some(chunk) = response.chunk().await.ok()? {
        if ttft.is_none() && !chunk.is_empty() {
            ttft = Some(intended.elapsed().as_secs_f64() * 1e3);
        }
    }
    Some((ttft?, intended.elapsed().as_secs_f64() * 1e3, sim))
}

/// Keeps `workers` requests running on `sim` (each holds a slot for `hold_ms`) until `stop`.
async fn background(
    client: reqwest::Client,
    sim: SocketAddr,
    workers: usize,
    hold_ms: u64,
    stop: Arc<AtomicBool>,
) {
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client
                        .post(format!("http://{sim}/v1/chat/completions"))
                        .header("x-sim-delay-ms", hold_ms.to_string())
                        .body(r#"{"model":"sim-model","max_tokens":1,"messages":[{"role":"user","content":"busy"}]}"#)
                        .send()
                        .await
                        .and_then(|r| r.error_for_status());
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// A fixed pseudo-random shuffle (splitmix64), so the conversation sequence has no period
/// a round-robin over the servers could line up with.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct LoadSettings {
    rate: f64,
    secs: f64,
    warmup: f64,
}

const SIM_ARGS: [&str; 14] = [
    "--ttft-ms",
    "60",
    "--itl-ms",
    "4",
    "--output-tokens",
    "12",
    "--queue-latency-ms",
    "12",
    "--prefix-cache-speedup",
    "10",
    "--prefix-block-chars",
    "64",
    "--prefix-cache-blocks",
    "120",
];
const CONVERSATIONS: usize = 12;

fn run_load(
    runtime: &tokio::runtime::Runtime,
    policy: PickPolicy,
    settings: &LoadSettings,
) -> LoadResult {
    let stack = start_stack(&SIM_ARGS, 4, policy);
    let url = stack.envoy.url();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("a client");
    let stop = Arc::new(AtomicBool::new(false));
    runtime.block_on(async {
        // Skew: s0 and s1 are busy with traffic that does not pass the router.
        let skew = [
            tokio::spawn(background(
                client.clone(),
                stack.sims[0].0,
                8,
                400,
                stop.clone(),
            )),
            tokio::spawn(background(
                client.clone(),
                stack.sims[1].0,
                4,
                400,
                stop.clone(),
            )),
        ];
        let phase = |secs: f64, record: bool| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let mut result = LoadResult::default();
                let started = Instant::now();
                let total = (secs * settings.rate) as usize;
                let mut tasks = Vec::with_capacity(total);
                for i in 0..total {
                    let intended = started + Duration::from_secs_f64(i as f64 / settings.rate);
                    tokio::time::sleep_until(intended.into()).await;
                    let conversation = (mix(i as u64) % CONVERSATIONS as u64) as usize;
                    let body = serde_json::json!({
                        "model": "auto", "stream": true,
                        "messages": [{"role": "system", "content": long_system(conversation)},
                                     {"role": "user", "content": format!("Question {i}: can I arrive late?")}]
                    })
                    .to_string();
                    let (client, url) = (client.clone(), url.clone());
                    tasks.push(tokio::spawn(async move {
                        stream_one(&client, &url, body, intended).await
                    }));
                }
                for task in tasks {
                    result.sent += 1;
                    match task.await.ok().flatten() {
                        Some((ttft, e2e, sim)) => {
                            result.ttft.push(ttft);
                            result.e2e.push(e2e);
                            *result.by_sim.entry(sim).or_default() += 1;
                        }
                        None => result.errors += 1,
                    }
                }
                result.elapsed = started.elapsed().as_secs_f64();
                if record { Some(result) } else { None }
            }
        };
        phase(settings.warmup, false).await;
        let mut result = phase(settings.secs, true).await.expect("recorded");
        stop.store(true, Ordering::Relaxed);
        for t in skew {
            let _ = t.await;
        }
        result.ttft.sort_by(f64::total_cmp);
        result.e2e.sort_by(f64::total_cmp);
        result
    })
}

fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("picking: skipped (run it with `cargo bench --bench picking`)");
        return;
    }
    let env = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v: &f64| *v > 0.0)
            .unwrap_or(default)
    };

    println!("== 1. Picking cost per request, in process (pick + in-flight accounting) ==");
    println!(
        "{:<16} {:>12} {:>12} {:>12}",
        "policy", "10 endpoints", "100", "1,000"
    );
    for policy in POLICIES {
        let costs: Vec<f64> = [10, 100, 1000]
            .iter()
            .map(|&n| pick_cost(n, policy))
            .collect();
        println!(
            "{:<16} {:>9.0} ns {:>9.0} ns {:>9.0} ns",
            format!("{policy:?}"),
            costs[0],
            costs[1],
            costs[2]
        );
    }

    println!();
    println!("== Whole decision in process (parse, rules, pick, rewrite, accounting) ==");
    let base = decision_cost(1, PickPolicy::RoundRobin);
    let load = decision_cost(100, PickPolicy::LoadAware);
    let prefix = decision_cost(100, PickPolicy::PrefixAffinity);
    println!("rules only, 1 endpoint, RoundRobin      {base:>8.2} µs");
    println!(
        "rules, 100 endpoints, LoadAware         {load:>8.2} µs  (+{:.2} µs)",
        load - base
    );
    println!(
        "rules, 100 endpoints, PrefixAffinity    {prefix:>8.2} µs  (+{:.2} µs)",
        prefix - base
    );

    let e2e = std::env::var("PICK_E2E").map_or(true, |v| v != "0");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let added = (load - base).max(prefix - base).max(0.0) / 1000.0;
    if e2e {
        let (hop50, hop99) = measure_hop(&runtime);
        println!();
        println!(
            "rules-only hop measured here (Envoy + router vs direct, sequential): +{hop50:.3} ms p50, +{hop99:.3} ms p99"
        );
        let share = added / hop50.max(1e-6) * 100.0;
        println!(
            "picking at 100 endpoints adds {:.4} ms = {share:.2}% of the measured hop p50 \
             (target ≤ 5%: {})",
            added,
            if share <= 5.0 { "met" } else { "MISSED" }
        );
    }
    let floor_share = added / 0.3 * 100.0;
    println!(
        "picking at 100 endpoints adds {:.4} ms = {floor_share:.2}% of PERFORMANCE.md's 0.3 ms hop floor (target ≤ 5%: {})",
        added,
        if floor_share <= 5.0 { "met" } else { "MISSED" }
    );

    if !e2e {
        return;
    }
    let settings = LoadSettings {
        rate: env("PICK_RATE", 40.0),
        secs: env("PICK_SECS", 12.0),
        warmup: env("PICK_WARMUP_SECS", 3.0),
    };
    println!();
    println!(
        "== 2. Through Envoy + router: 4 simulators ({}), s0 and s1 kept busy by 8 and 4 \
         outside requests; {} req/s streamed for {} s per policy (after {} s warm-up), {} \
         conversation prefixes of ~1.2 KB ==",
        SIM_ARGS.join(" "),
        settings.rate,
        settings.secs,
        settings.warmup,
        CONVERSATIONS
    );
    println!(
        "{:<16} {:>6} {:>5} {:>9} {:>10} {:>10} {:>10} {:>10}  share s0/s1/s2/s3",
        "policy", "sent", "err", "req/s", "TTFT p50", "TTFT p99", "e2e p50", "e2e p99"
    );
    let mut p99 = HashMap::new();
    for policy in [
        PickPolicy::RoundRobin,
        PickPolicy::Random,
        PickPolicy::LoadAware,
        PickPolicy::PrefixAffinity,
    ] {
        let r = run_load(&runtime, policy, &settings);
        let share: Vec<String> = (0..4)
            .map(|i| {
                let n = r.by_sim.get(&format!("s{i}")).copied().unwrap_or(0);
                format!("{:.0}%", n as f64 * 100.0 / r.ttft.len().max(1) as f64)
            })
            .collect();
        println!(
            "{:<16} {:>6} {:>5} {:>9.1} {:>7.1} ms {:>7.1} ms {:>7.1} ms {:>7.1} ms  {}",
            format!("{policy:?}"),
            r.sent,
            r.errors,
            r.ttft.len() as f64 / r.elapsed,
            percentile(&r.ttft, 0.5),
            percentile(&r.ttft, 0.99),
            percentile(&r.e2e, 0.5),
            percentile(&r.e2e, 0.99),
            share.join("/")
        );
        p99.insert(format!("{policy:?}"), percentile(&r.ttft, 0.99));
    }
    let (prefix, rr) = (p99["PrefixAffinity"], p99["RoundRobin"]);
    println!();
    println!(
        "p99 TTFT, load-aware + prefix affinity vs round-robin: {prefix:.1} ms vs {rr:.1} ms ({:.2}x; target: lower: {})",
        rr / prefix,
        if prefix < rr { "met" } else { "MISSED" }
    );
}
