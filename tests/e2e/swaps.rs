//! Policy swaps under load: steady traffic through real Envoy and the router while the policy
//! is swapped 100 times, alternating two that send the same prompt to different models: the
//! manifests directory rewritten (file source), or `kubectl apply` on the real test API server
//! (Kubernetes source). No request fails, and every response is consistent with one of
//! the two tables: the decision's headers, the model server that answered and the model named
//! in the body it was sent all agree. Each response names the table generation it was decided
//! on: one generation is one table, and a client's next request is never decided on an older
//! one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dataplane::{Stack, ask, header};

const SMALL: &str = "  defaultTarget:\n    pool: qwen3-small\n    model: Qwen/Qwen3-1.7B\n    reasoning: {enabled: false}";
const LARGE: &str = "  defaultTarget:\n    pool: qwen3-large-h100\n    model: Qwen/Qwen3-30B-A3B\n    reasoning: {enabled: true}";

/// What one response said about where it went.
struct Seen {
    status: u16,
    server: String,
    model: String,
    reasoning: String,
    sent_model: String,
    /// `x-semantic-router-generation`; `None` when missing or not a number.
    generation: Option<u64>,
}

impl Seen {
    /// Decided, sent and answered under one table: the small model with reasoning off, or
    /// the large one with it on.
    fn consistent(&self) -> bool {
        let one = |server: &str, model: &str, reasoning: &str| {
            self.server == server
                && self.model == model
                && self.sent_model == model
                && self.reasoning == reasoning
        };
        one("small", "Qwen/Qwen3-1.7B", "off") || one("large", "Qwen/Qwen3-30B-A3B", "on")
    }
}

/// Sends requests until `stop` (at most 50 per swap, at most 60 s and a second per swap).
async fn drive(url: String, stop: Arc<AtomicBool>) -> Vec<Seen> {
    let client = reqwest::Client::new();
    let swaps = knob("SWAPS", 100);
    let deadline = Instant::now() + Duration::from_secs(60 + swaps as u64);
    let most = 50 * swaps.max(100);
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) && seen.len() < most && Instant::now() < deadline {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(ask("auto", "Tell me a joke about penguins").to_string())
            .send()
            .await;
        let Ok(response) = response else {
            seen.push(Seen {
                status: 0,
                server: String::new(),
                model: String::new(),
                reasoning: String::new(),
                sent_model: String::new(),
                generation: None,
            });
            continue;
        };
        let status = response.status().as_u16();
        let server = header(&response, "x-sim-name").to_owned();
        let model = header(&response, "x-semantic-router-model").to_owned();
        let reasoning = header(&response, "x-semantic-router-reasoning").to_owned();
        let generation = header(&response, "x-semantic-router-generation")
            .parse()
            .ok();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        seen.push(Seen {
            status,
            server,
            model,
            reasoning,
            sent_model: body["model"].as_str().unwrap_or_default().to_owned(),
            generation,
        });
    }
    seen
}

/// The table generation the router's metrics report.
async fn generation(stack: &Stack) -> f64 {
    stack
        .router
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with("semantic_router_routing_table_generation "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `SWAPS` and `SWAP_CLIENTS` from the environment, else 100 swaps and 4 clients: the bench
/// command (`make bench-swaps`) runs more of both on a release build.
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Four clients drive requests through `stack` while `swap(n)` puts policy `n % 2` in place
/// (0: large, 1: small) 100 times, 150 ms apart: longer than the file source waits for a
/// burst to settle (100 ms). Then checks that nothing failed, nothing mixed two tables, both
/// tables served, and the router ends on the small one. `SWAPS` must be even for that.
async fn a_hundred_swaps_under_load<F, Fut>(stack: &Stack, source: &str, mut swap: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = generation(stack).await;
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/v1/chat/completions", stack.envoy.url());
    let started = Instant::now();
    let clients: Vec<_> = (0..knob("SWAP_CLIENTS", 4))
        .map(|_| tokio::spawn(drive(url.clone(), stop.clone())))
        .collect();
    for n in 0..knob("SWAPS", 100) / 2 * 2 {
        swap(n).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for client in clients {
        let answers = client.await.expect("client task");
        let generations: Vec<u64> = answers.iter().filter_map(|s| s.generation).collect();
        assert!(
            generations.is_sorted(),
            "a client's request was decided on an older table than its previous one: \
             {generations:?}"
        );
        seen.extend(answers);
    }
    let mut servers_by_generation: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.status == 200) {
        let generation = s
            .generation
            .expect("every routed response names its generation");
        servers_by_generation
            .entry(generation)
            .or_default()
            .insert(&s.server);
    }
    let split: Vec<_> = servers_by_generation
        .iter()
        .filter(|(_, servers)| servers.len() > 1)
        .collect();
    assert!(split.is_empty(), "one generation, two tables: {split:?}");
    assert!(
        servers_by_generation.len() >= 2,
        "requests saw one table only: {servers_by_generation:?}"
    );

    let failed = seen.iter().filter(|s| s.status != 200).count();
    let mixed: Vec<String> = seen
        .iter()
        .filter(|s| s.status == 200 && !s.consistent())
        .map(|s| format!("{} {} {} {}", s.server, s.model, s.reasoning, s.sent_model))
        .collect();
    let on_large = seen.iter().filter(|s| s.server == "large").count();
    let swaps = generation(stack).await - before;
    eprintln!(
        "policy swaps under load ({source}): {} requests in {:.1} s, {failed} failed, {} mixed, \
         {on_large} on the large model, {swaps} tables published, {} generations seen",
        seen.len(),
        started.elapsed().as_secs_f64(),
        mixed.len(),
        servers_by_generation.len()
    );
    assert_eq!(failed, 0, "{}", stack.logs());
    assert!(mixed.is_empty(), "responses mixing two tables: {mixed:?}");
    assert!(
        on_large > 0 && on_large < seen.len(),
        "both tables served traffic"
    );
    // On a loaded machine reloads outlast the gap and several rewrites become one table.
    assert!(swaps >= 10.0, "the swaps reached the router: {swaps}");
    // The last policy put in place is the small one; the router ends on it.
    crate::support::eventually(
        "the router ends on the small policy",
        Duration::from_secs(10),
        || async {
            let last = stack.chat(ask("auto", "Tell me a joke"), &[]).await;
            header(&last, "x-sim-name") == "small"
        },
    )
    .await;
}

/// The sample route and the same route sending everything to the large model.
fn policies(stack: &Stack) -> (String, String) {
    let route = stack.manifests.path().join("route.yaml");
    let small = std::fs::read_to_string(route).unwrap();
    assert!(small.contains(SMALL), "the sample's default target moved");
    let large = small.replace(SMALL, LARGE);
    (large, small)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_policy_swaps_under_load_fail_nothing_and_never_mix_two_tables() {
    let stack = Stack::start(&[]);
    let policies = policies(&stack);
    let route = stack.manifests.path().join("route.yaml");
    // Each swap is a whole file renamed into place, as `kubectl`-free GitOps tools write.
    let staged = stack.manifests.path().join(".route.yaml.next");
    a_hundred_swaps_under_load(&stack, "manifest files", |n| {
        let text = if n % 2 == 0 { &policies.0 } else { &policies.1 };
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &route).unwrap();
        std::future::ready(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_kubectl_applies_under_load_fail_nothing_and_never_mix_two_tables() {
    let server = crate::controller::cluster().await;
    let stack = Stack::start_kube(&server).await;
    let (large, small) = policies(&stack);
    let dir = tempfile::tempdir().unwrap();
    let files = [dir.path().join("large.yaml"), dir.path().join("small.yaml")];
    std::fs::write(&files[0], large).unwrap();
    std::fs::write(&files[1], small).unwrap();
    a_hundred_swaps_under_load(&stack, "kubectl apply", |n| {
        let file = files[n % 2].to_str().unwrap().to_owned();
        let server = &server;
        async move {
            server.kubectl_ok(&["apply", "-f", &file]).await;
        }
    })
    .await;
}
