//! The soak: a million requests through real Envoy and the release router on the sample
//! policy, with the router's resident memory sampled throughout. The question it answers: does
//! memory stay flat under long, varied traffic, with every store keyed by client input held at
//! its bound (README, "What a request sees")?
//!
//! The sample manifests (`config/samples/`), each pool on two `vllm-sim` servers, the small
//! pool picking by session affinity and the large one by prefix affinity (as in the sample),
//! and the `auto` route caching its answers. The encoder is a tiny random BERT written by the
//! bench, so the example-prompt signal, the embedding cache and the semantic cache all run
//! without MiniLM's compute (MiniLM's weights are a fixed cost, not a growth; a million
//! MiniLM passes would take hours on two cores). The request mix, chosen by request number:
//! - 20% a handful of popular questions (semantic-cache hits after the first);
//! - 20% streamed, half asking for usage;
//! - 20% math with one of 20,000 long system prompts (prefix affinity; the large pool);
//! - 5% the research team's (a demo token whose claim Envoy turns into the header signal; the
//!   A100 pool); 5% naming a pool's model directly;
//! - 2% malformed (bad JSON, wrong types, invalid UTF-8, empty), which must get a 4xx;
//! - the rest distinct questions (cache misses that fill it, and its evictions);
//! - every request with one of 200,000 session ids.
//!
//! Printed: a row per sample (requests done, RSS, the stores' sizes from `/metrics`), then
//! the requests by status, failures (a 5xx, a transport error, a malformed body not refused)
//! the requests by decision and pool as the router counted them, and the RSS summary after
//! warm-up against the ±10% target. Warm-up lasts until every store is at its bound (each
//! affinity map turned over once) and at least `SOAK_WARMUP_PERCENT` of the requests.
//!
//! Run: `cargo build --release --bin semantic-router && cargo bench --bench soak`.
//! Knobs: `SOAK_REQUESTS` (1,000,000), `SOAK_CONNS` (32 concurrent clients), `SOAK_MAX_SECS`
//! (3600: the load stops there whatever is left), `SOAK_SAMPLE_SECS` (5), `SOAK_WARMUP_PERCENT`
//! (10), `HOP_ROUTER_BIN`,
//! `ENVOY_BIN`. Prints numbers, asserts nothing.

#[path = "../tests/e2e/support/envoy.rs"]
mod envoy;
#[path = "../tests/support/http.rs"]
mod http;
#[path = "hop/release.rs"]
mod release;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy::{Envoy, EnvoyConfig, free_addr, free_port};
use release::start_router;
use semantic_router::classify::{Architecture, tiny};

/// A child process killed by pid when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Settings {
    requests: u64,
    conns: u64,
    max: Duration,
    sample: Duration,
    warmup_percent: u64,
}

impl Settings {
    fn from_env() -> Self {
        let num = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or(default)
        };
        Self {
            requests: num("SOAK_REQUESTS", 1_000_000),
            conns: num("SOAK_CONNS", 32).max(1),
            max: Duration::from_secs(num("SOAK_MAX_SECS", 3600)),
            sample: Duration::from_secs(num("SOAK_SAMPLE_SECS", 5).max(1)),
            warmup_percent: num("SOAK_WARMUP_PERCENT", 10).min(100),
        }
    }
}

fn start_sim(name: &str) -> (Process, SocketAddr) {
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
        .args(["--name", name, "--listen", &addr.to_string()])
        .args(["--output-tokens", "8"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vllm-sim");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http::blocking_get_ok(&format!("http://{addr}/health")) {
        assert!(Instant::now() < deadline, "{name} was not up in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Process(child), addr)
}

/// The sample manifests, each pool on its two simulators, the small pool picking by session,
/// and the `auto` route caching.
fn policy(pools: &[[SocketAddr; 2]; 3]) -> String {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let mut text = std::fs::read_to_string(samples.join("pools.yaml")).expect("sample pools");
    for (port, [a, b]) in ["8001", "8002", "8003"].iter().zip(pools) {
        text = text.replace(
            &format!("\"127.0.0.1:{port}\""),
            &format!("\"{a}\", \"{b}\""),
        );
    }
    let small = "    static:\n      addresses: [\"".to_owned() + &pools[0][0].to_string();
    let at = text.find(&small).expect("the small pool's endpoints");
    let end = at + text[at..].find('\n').unwrap_or(0) + 1;
    let end = end + text[end..].find('\n').unwrap_or(0) + 1;
    text.insert_str(end, "  endpointPicking: {policy: SessionAffinity}\n");
    let route = std::fs::read_to_string(samples.join("route.yaml")).expect("sample route");
    // The tiny encoder's embeddings all look alike, so no decision reads example similarity
    // (the encoder still runs on every request of the route, for the cache).
    let route = route
        .replacen(
            "  decisions:\n",
            "  cache: {enabled: true}\n  decisions:\n",
            1,
        )
        .replacen("\"math-intent\", ", "", 1);
    format!("{text}\n---\n{route}")
}

/// The rendered Envoy config without its access log (a million lines of it would only cost).
fn without_access_log(config: String) -> String {
    let (Some(start), Some(end)) = (
        config.find("          access_log:"),
        config.find("          route_config:"),
    ) else {
        return config;
    };
    format!("{}{}", &config[..start], &config[end..])
}

/// A well-mixed number from `i`, so the mix does not march in step with the clients.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Request `i`: its body, extra headers, and whether it is malformed on purpose.
fn request(i: u64, token: &str) -> (Vec<u8>, Vec<(&'static str, String)>, bool) {
    let r = mix(i);
    let session = ("x-session-id", format!("session-{}", r % 200_000));
    let chat = |content: String| serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": content}]});
    let (body, mut headers, malformed) = match (r >> 20) % 100 {
        0 | 1 => {
            let bad: &[u8] = match i % 4 {
                0 => br#"{"model": "auto", "messages": [{"role": "user", "content": "#,
                1 => br#"{"model": "auto", "messages": 5}"#,
                2 => b"{\"model\": \"auto\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}",
                _ => b"",
            };
            (bad.to_vec(), Vec::new(), true)
        }
        2..=21 => {
            let popular = chat(format!("What is the capital of country number {}?", r % 20));
            (popular.to_string().into_bytes(), Vec::new(), false)
        }
        22..=41 => {
            let mut body = chat(format!("Tell me a short story about the number {i}."));
            body["stream"] = true.into();
            if i.is_multiple_of(2) {
                body["stream_options"] = serde_json::json!({"include_usage": true});
            }
            (body.to_string().into_bytes(), Vec::new(), false)
        }
        42..=61 => {
            let system = format!(
                "You are assistant number {}. {}",
                r % 20_000,
                "Answer carefully, show each step and keep units consistent. ".repeat(30)
            );
            let body = serde_json::json!({"model": "auto", "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("What is the derivative of x^{}?", i % 1000)},
            ]});
            (body.to_string().into_bytes(), Vec::new(), false)
        }
        62..=66 => {
            let body = chat(format!("Prove theorem number {i} step by step."));
            let team = vec![("authorization", format!("Bearer {token}"))];
            (body.to_string().into_bytes(), team, false)
        }
        67..=71 => {
            let body = serde_json::json!({"model": "Qwen/Qwen3-1.7B",
                "messages": [{"role": "user", "content": format!("Say hello {i}")}]});
            (body.to_string().into_bytes(), Vec::new(), false)
        }
        _ => {
            let body = chat(format!(
                "How many people lived in district {i} in the year {}?",
                1900 + r % 100
            ));
            (body.to_string().into_bytes(), Vec::new(), false)
        }
    };
    headers.push(session);
    (body, headers, malformed)
}

/// What the clients saw, shared between them.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    failed: AtomicU64,
    hits: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    first_failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if first.len() < 5 {
            first.push(what);
        }
    }
}

/// One client: sends requests by number until every one is taken or the deadline passes.
async fn client(
    url: String,
    token: Arc<str>,
    next: Arc<AtomicU64>,
    settings: Arc<Settings>,
    tally: Arc<Tally>,
    deadline: Instant,
) {
    let http = reqwest::Client::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= settings.requests || Instant::now() >= deadline {
            return;
        }
        let (body, headers, malformed) = request(i, &token);
        let mut send = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            send = send.header(name, value);
        }
        match send.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if response
                    .headers()
                    .get("x-semantic-router-cache")
                    .is_some_and(|v| v == "hit")
                {
                    tally.hits.fetch_add(1, Ordering::Relaxed);
                }
                let read = response.bytes().await;
                *tally
                    .statuses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(status)
                    .or_default() += 1;
                let expected = if malformed {
                    (400..500).contains(&status)
                } else {
                    status == 200
                };
                if read.is_err() || !expected {
                    tally.fail(format!(
                        "request {i}: {status} (malformed: {malformed}), body read: {:?}",
                        read.err()
                    ));
                }
            }
            Err(e) => tally.fail(format!("request {i}: {e}")),
        }
        tally.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A demo token for the research team (`hack/demo-token.sh`, signed with the key the test
/// Envoy config trusts).
fn research_token() -> Arc<str> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/demo-token.sh");
    let out = Command::new(&script)
        .arg("research")
        .output()
        .expect("run hack/demo-token.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// Prints what the router decides for one request of each kind of the mix (`/v1/explain`).
async fn explain_the_mix(admin: SocketAddr) {
    let http = reqwest::Client::new();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..2_000u64 {
        let kind = (mix(i) >> 20) % 100;
        let kind = [0, 2, 22, 42, 62, 67, 72]
            .iter()
            .rposition(|&k| kind >= k)
            .unwrap_or(0);
        if kind == 0 || kind == 4 || !seen.insert(kind) {
            continue;
        }
        let (body, _, _) = request(i, "");
        let Ok(answer) = http
            .post(format!("http://{admin}/v1/explain"))
            .body(body)
            .send()
            .await
        else {
            continue;
        };
        let explained: serde_json::Value = answer.json().await.unwrap_or_default();
        let held: Vec<&str> = explained["signals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["matched"] == true)
            .filter_map(|s| s["name"].as_str())
            .collect();
        println!(
            "  request {i}: decision {}, pool {}, signals held {held:?}{}",
            explained["decision"],
            explained["target"]["pool"],
            explained["error"]
                .as_str()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        );
    }
}

/// The router's resident set in KiB, from `/proc`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One sample: seconds in, requests done, RSS in MiB, and the stores' sizes.
struct Sample {
    secs: f64,
    done: u64,
    rss_mib: f64,
    stores: [f64; 4],
}

const STORES: [(&str, &str); 4] = [
    ("answers", "semantic_router_semantic_cache_entries "),
    ("embeddings", "semantic_router_classifier_cache_entries "),
    (
        "sessions",
        "semantic_router_pool_sessions{pool=\"qwen3-small\"} ",
    ),
    (
        "blocks",
        "semantic_router_pool_prefix_blocks{pool=\"qwen3-large-h100\"} ",
    ),
];

async fn sample(admin: SocketAddr, pid: u32, started: Instant, done: u64) -> Sample {
    let metrics = match reqwest::get(format!("http://{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let read = |prefix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    Sample {
        secs: started.elapsed().as_secs_f64(),
        done,
        rss_mib: rss_kib(pid).map_or(f64::NAN, |k| k as f64 / 1024.0),
        stores: STORES.map(|(_, prefix)| read(prefix)),
    }
}

fn print_sample(s: &Sample) {
    let [a, e, ses, b] = s.stores;
    println!(
        "{:>8.0} {:>10} {:>9.1} {:>8} {:>10} {:>9} {:>8}",
        s.secs, s.done, s.rss_mib, a, e, ses, b
    );
}

/// Requests done by the first sample at which every store had reached its bound: each cache
/// full, and each affinity map turned over once (it shrank, a generation forgotten). Before
/// that the stores are still growing, and so is the memory they hold.
fn stores_full(samples: &[Sample]) -> Option<u64> {
    let mut turned = [false; 4];
    for pair in samples.windows(2) {
        let (before, s) = (&pair[0], &pair[1]);
        for ((turned, now), was) in turned.iter_mut().zip(s.stores).zip(before.stores) {
            *turned |= now < was;
        }
        // The caches never shrink under this load: full once they stop growing.
        let caches_full = (0..2).all(|i| s.stores[i] == before.stores[i] && s.stores[i] > 0.0);
        if caches_full && turned[2] && turned[3] {
            return Some(s.done);
        }
    }
    None
}

fn summarise(samples: &[Sample], warmup_percent: u64, requests: u64) {
    let Some(full) = stores_full(samples) else {
        println!("RSS: the stores never all reached their bounds; run longer to judge");
        return;
    };
    let warmup = full.max(requests * warmup_percent / 100);
    println!(
        "warm-up: {warmup} requests (every store at its bound by request {full}, \
         SOAK_WARMUP_PERCENT {warmup_percent})"
    );
    let after: Vec<f64> = samples
        .iter()
        .filter(|s| s.done >= warmup)
        .map(|s| s.rss_mib)
        .filter(|r| r.is_finite())
        .collect();
    if after.len() < 2 {
        println!(
            "RSS: too few samples after warm-up ({} requests) to judge",
            warmup
        );
        return;
    }
    let mut sorted = after.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let spread = ((max - median).max(median - min)) / median * 100.0;
    let (first, last) = (after[0], after[after.len() - 1]);
    println!(
        "RSS after warm-up ({} samples): median {median:.1} MiB, min {min:.1}, max {max:.1}, first {first:.1}, last {last:.1}; \
         widest deviation from the median {spread:.1}% (target ±10%: {})",
        after.len(),
        if spread <= 10.0 { "met" } else { "NOT met" }
    );
}

#[tokio::main]
async fn main() {
    let settings = Arc::new(Settings::from_env());
    let tmp = tempfile::tempdir().expect("temp dir");
    let encoder = tmp.path().join("tiny-encoder");
    tiny::write_model(&encoder, Architecture::Bert, None).expect("write the tiny encoder");
    let mut sims = Vec::new();
    let mut pools = [[free_addr(); 2]; 3];
    for (p, pool) in pools.iter_mut().enumerate() {
        for (e, addr) in pool.iter_mut().enumerate() {
            let (process, bound) = start_sim(&format!("p{p}e{e}"));
            *addr = bound;
            sims.push(process);
        }
    }
    let policy = policy(&pools);
    let router = start_router(
        &release::router_bin(),
        &policy,
        &["--encoder".into(), encoder.clone().into()],
        Duration::from_secs(60),
    );
    let (pid, admin, extproc) = (router.child.id(), router.admin, router.extproc);
    let envoy = Envoy::start_edited(
        EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: extproc,
            ext_proc_replicas: Vec::new(),
            endpoints: pools.iter().flatten().copied().collect(),
            passthrough: pools[0][0],
            gateway_clusters: Vec::new(),
            with_ext_proc: true,
            buffered: false,
        },
        without_access_log,
    );
    let url = format!("{}/v1/chat/completions", envoy.url());
    let token = research_token();
    println!("the mix, as the router explains it (the research kind needs Envoy's token check):");
    explain_the_mix(admin).await;
    println!(
        "soak: {} requests, {} clients, at most {:?}; router pid {pid}, sampled every {:?}",
        settings.requests, settings.conns, settings.max, settings.sample
    );
    println!(
        "{:>8} {:>10} {:>9} {:>8} {:>10} {:>9} {:>8}",
        "secs", "requests", "rss MiB", STORES[0].0, STORES[1].0, STORES[2].0, STORES[3].0
    );

    let started = Instant::now();
    let deadline = started + settings.max;
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..settings.conns)
        .map(|_| {
            tokio::spawn(client(
                url.clone(),
                token.clone(),
                next.clone(),
                settings.clone(),
                tally.clone(),
                deadline,
            ))
        })
        .collect();
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let finished = finished.clone();
        tokio::spawn(async move {
            for client in clients {
                let _ = client.await;
            }
            finished.store(true, Ordering::Relaxed);
        })
    };
    let mut samples = vec![sample(admin, pid, started, 0).await];
    print_sample(&samples[0]);
    while !finished.load(Ordering::Relaxed) && Instant::now() < deadline + Duration::from_secs(60) {
        let next_sample = Instant::now() + settings.sample;
        while Instant::now() < next_sample && !finished.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = sample(admin, pid, started, tally.done.load(Ordering::Relaxed)).await;
        print_sample(&s);
        samples.push(s);
    }
    let _ = watcher.await;
    let elapsed = started.elapsed();
    let done = tally.done.load(Ordering::Relaxed);
    println!(
        "\n{done} requests in {:.0} s ({:.0}/s); failed: {}; semantic-cache hits: {}",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        tally.failed.load(Ordering::Relaxed),
        tally.hits.load(Ordering::Relaxed)
    );
    println!(
        "by status: {:?}",
        tally.statuses.lock().unwrap_or_else(|e| e.into_inner())
    );
    for failure in tally
        .first_failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!("  failure: {failure}");
    }
    if let Ok(metrics) = reqwest::get(format!("http://{admin}/metrics")).await {
        let text = metrics.text().await.unwrap_or_default();
        println!("the router's count:");
        for line in text
            .lines()
            .filter(|l| l.starts_with("semantic_router_requests_total"))
        {
            println!("  {line}");
        }
    }
    summarise(&samples, settings.warmup_percent, settings.requests);
    drop(envoy);
    drop(router);
    drop(sims);
}
