//! What the semantic cache adds to, or saves from, a request through real Envoy and the
//! release router with the real all-MiniLM-L6-v2 encoder: the in-memory store against a
//! Redis shared by replicas.
//!
//! For each backend (`memory`, then `redis` on a Redis Stack from `.tools/redis`), one router
//! and one Envoy in front of an in-process backend that answers at once. The policy caches
//! every answer of its route. Phases, one request at a time (latency is the router's and
//! Envoy's work, not a model's):
//! - `miss`: distinct questions, none cached yet: the embedding, a lookup that misses, the
//!   request upstream, and the answer kept;
//! - `hit`: the same questions again: the embedding and a lookup that hits, answered by the
//!   router without the backend.
//!
//! A rules-only route on the same router (no encoder work, no cache) is the baseline the two
//! are read against. The issue's target: a Redis hit adds at most 2 ms p99 over the in-memory
//! hit (the lookup figures at 100k entries are `cargo bench --bench cache`).
//!
//! Run: `cargo build --release --bin semantic-router && cargo bench --bench cache_hop` (or
//! `make bench`). Knobs: `CACHE_HOP_REQUESTS` (per phase, 200), `HOP_ROUTER_BIN`, `ENVOY_BIN`.
//! Every loop is bounded in count and time. Prints numbers, asserts nothing.

#[path = "../tests/e2e/support/envoy.rs"]
mod envoy;
#[path = "../tests/support/http.rs"]
mod http;
#[path = "../tests/support/redis.rs"]
mod redis_server;
#[path = "hop/release.rs"]
mod release;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy::{Envoy, EnvoyConfig, free_port};
use redis_server::Redis;
use release::{RouterProcess, router_bin};

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"small","choices":[{"index":0,"message":{"role":"assistant","content":"A short answer."},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}"#;

/// A backend answering every chat completion at once; counts what reached it.
async fn start_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    ANSWER,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// One pool on `backend`; `cached` (model `auto`) caches every answer, `plain` (model
/// `plain`) is rules only.
fn policy(backend: SocketAddr) -> String {
    format!(
        r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: small, namespace: default}}
spec:
  models: [{{name: small}}]
  endpoints: {{static: {{addresses: ["{backend}"]}}}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: cached, namespace: default}}
spec:
  match: {{models: ["auto"]}}
  cache: {{enabled: true, similarityThreshold: 0.85}}
  defaultTarget: {{pool: small, model: small}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: plain, namespace: default}}
spec:
  match: {{models: ["plain"]}}
  defaultTarget: {{pool: small, model: small}}
"#
    )
}

/// The release router on the cache policy over `backend`, with the encoder and `cache_flags`.
fn start_router(backend: SocketAddr, cache_flags: &[String]) -> RouterProcess {
    let minilm = Path::new(env!("CARGO_MANIFEST_DIR")).join(".models/all-MiniLM-L6-v2");
    let mut args: Vec<OsString> = vec![
        "--encoder".into(),
        minilm.into(),
        "--classify-budget-ms".into(),
        "5000".into(),
    ];
    args.extend(cache_flags.iter().map(OsString::from));
    release::start_router(
        &router_bin(),
        &policy(backend),
        &args,
        Duration::from_secs(60),
    )
}

fn question(i: usize) -> String {
    format!(
        "How many people lived in district number {i} of the city in the year {}?",
        1900 + i
    )
}

/// Sends `prompt` for `model`; its latency and the `x-semantic-router-cache` header.
async fn send(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    prompt: &str,
) -> (Duration, String) {
    let body =
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]});
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    let Ok(response) = response else {
        return (started.elapsed(), "error".into());
    };
    let cache = response
        .headers()
        .get("x-semantic-router-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let _ = response.bytes().await;
    (started.elapsed(), cache)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// One phase: `requests` sends of `prompt(i)` for `model`, at most 120 s; prints p50/p99 and
/// how many came back with each cache header.
async fn phase(
    label: &str,
    client: &reqwest::Client,
    url: &str,
    model: &str,
    requests: usize,
    prompt: impl Fn(usize) -> String,
) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut latencies = Vec::with_capacity(requests);
    let mut headers = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..requests {
        if Instant::now() > deadline {
            break;
        }
        let (latency, cache) = send(client, url, model, &prompt(i)).await;
        latencies.push(latency);
        *headers.entry(cache).or_default() += 1;
    }
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "  {label:<22} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  ({} requests, cache header: {headers:?})",
        latencies.len()
    );
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests: usize = std::env::var("CACHE_HOP_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (backend, seen) = start_backend().await;
    let redis = Redis::start();
    let backends: [(&str, Vec<String>); 2] = [
        ("memory", vec!["--cache-backend".into(), "memory".into()]),
        (
            "redis",
            vec![
                "--cache-backend".into(),
                "redis".into(),
                "--cache-redis-url".into(),
                redis.url(),
            ],
        ),
    ];
    println!("semantic cache through Envoy + the router (all-MiniLM-L6-v2), one request at a time");
    let mut hits = Vec::new();
    for (name, flags) in backends {
        let router = start_router(backend, &flags);
        let envoy = Envoy::start(EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: router.extproc,
            ext_proc_replicas: Vec::new(),
            endpoints: vec![backend],
            passthrough: backend,
            gateway_clusters: Vec::new(),
            with_ext_proc: true,
            buffered: false,
        });
        let url = format!("{}/v1/chat/completions", envoy.url());
        let client = reqwest::Client::new();
        // Warm-up: the encoder's first passes and the connections.
        for i in 0..20 {
            send(&client, &url, "auto", &format!("warm-up question {i}")).await;
        }
        println!("{name}:");
        let before = seen.load(Ordering::Relaxed);
        phase(
            "rules only (no cache)",
            &client,
            &url,
            "plain",
            requests,
            question,
        )
        .await;
        let miss = phase("miss (kept)", &client, &url, "auto", requests, question).await;
        // Let the last answers land (Redis writes are asynchronous).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let hit = phase("hit", &client, &url, "auto", requests, question).await;
        let upstream = seen.load(Ordering::Relaxed) - before;
        println!(
            "  requests that reached the backend: {upstream} (of {})",
            3 * requests
        );
        hits.push((name, miss, hit));
    }
    if let [(_, _, memory), (_, _, redis)] = hits.as_slice() {
        println!(
            "redis hit vs memory hit: p50 {:+.2} ms, p99 {:+.2} ms (target: p99 at most +2 ms)",
            redis.0 - memory.0,
            redis.1 - memory.1
        );
    }
}
