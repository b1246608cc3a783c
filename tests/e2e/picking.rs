//! Endpoint picking behind a real Envoy: simulated model servers whose `/metrics` the router
//! scrapes, and requests through Envoy and the router's ext_proc. Load-aware picking, prefix
//! and session affinity, passive ejection with Envoy retrying on the fallback list,
//! saturation (429), and the endpoint-picker protocol's subset hint sent by Envoy itself.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::envoy::{Envoy, EnvoyConfig, envoy_bin, free_port, render_config};
use crate::support::stack::{Router, Sim, SimOptions};
use crate::support::{eventually, metric_sample};

/// Simulators `s0`, `s1`, … in one pool `gpu` (model `sim-model`, scraped every second)
/// with the given `endpointPicking`, a route sending model `auto` there, and Envoy in front.
struct Stack {
    sims: Vec<Sim>,
    _manifests: tempfile::TempDir,
    router: Router,
    envoy: Envoy,
    client: reqwest::Client,
}

fn manifests(dir: &Path, sims: &[SocketAddr], picking: &str) {
    let addresses: Vec<String> = sims.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: gpu, namespace: default}}
spec:
  models: [{{name: sim-model}}]
  endpoints: {{static: {{addresses: [{}]}}}}
  endpointPicking: {picking}
  metrics: {{engine: vllm, path: /metrics, intervalSeconds: 1}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto, namespace: default}}
spec:
  match: {{models: [auto]}}
  defaultTarget: {{pool: gpu, model: sim-model}}
"#,
            addresses.join(", ")
        ),
    )
    .unwrap();
}

impl Stack {
    fn start(count: usize, picking: &str) -> Self {
        let sims: Vec<Sim> = (0..count).map(|i| Sim::start(&format!("s{i}"))).collect();
        let addrs: Vec<SocketAddr> = sims.iter().map(|s| s.addr).collect();
        let dir = tempfile::tempdir().unwrap();
        manifests(dir.path(), &addrs, picking);
        let router = Router::start(dir.path(), &[]);
        let envoy = Envoy::start(envoy_config(&router, &addrs));
        Self {
            sims,
            _manifests: dir,
            router,
            envoy,
            client: reqwest::Client::new(),
        }
    }

    fn name_of(&self, addr: SocketAddr) -> String {
        let i = self.sims.iter().position(|s| s.addr == addr).unwrap();
        format!("s{i}")
    }

    async fn chat(&self, prompt: &[Value], headers: &[(&str, &str)]) -> Answer {
        chat(&self.client, &self.envoy.url(), prompt, headers).await
    }

    /// Sends `question` alone until `check` holds for an answer (bounded by `timeout`); for
    /// waiting until the router has scraped new figures.
    async fn until(&self, what: &str, timeout: Duration, check: impl Fn(&Answer) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.chat(&[user("ping")], &[]).await;
            if check(&answer) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last answer {answer:?}\n{}",
                self.router.process.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn envoy_config(router: &Router, endpoints: &[SocketAddr]) -> EnvoyConfig {
    EnvoyConfig {
        listen_port: free_port(),
        admin_port: free_port(),
        ext_proc_addr: router.extproc,
        ext_proc_replicas: Vec::new(),
        endpoints: endpoints.to_vec(),
        passthrough: endpoints[0],
        gateway_clusters: Vec::new(),
        with_ext_proc: true,
        buffered: false,
    }
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

/// What a client saw.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `x-sim-name` of the simulator that answered (empty when none did).
    sim: String,
    shed_reason: String,
    body: Value,
}

async fn chat(
    client: &reqwest::Client,
    url: &str,
    messages: &[Value],
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": "auto", "max_tokens": 2, "messages": messages}).to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("envoy answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, sim, shed_reason) = (
        response.status().as_u16(),
        header("x-sim-name"),
        header("x-semantic-router-shed-reason"),
    );
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        sim,
        shed_reason,
        body,
    }
}

/// Waits until every endpoint was scraped since now: the pools scrape every second.
async fn scraped() {
    tokio::time::sleep(Duration::from_millis(1600)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_least_loaded_endpoint_gets_the_traffic() {
    let stack = Stack::start(3, "{policy: LoadAware}");
    stack.sims[0].set_load(0, 30, 0.9).await;
    stack.sims[1].set_load(0, 10, 0.5).await;
    scraped().await;
    for _ in 0..15 {
        let answer = stack.chat(&[user("hello")], &[]).await;
        assert_eq!((answer.status, answer.sim.as_str()), (200, "s2"));
    }
    // The load moves: so does the traffic.
    stack.sims[2].set_load(0, 50, 1.0).await;
    scraped().await;
    for _ in 0..10 {
        assert_eq!(stack.chat(&[user("hello")], &[]).await.sim, "s1");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_prefix_stays_on_its_endpoint_until_that_is_overloaded() {
    let stack = Stack::start(
        3,
        "{policy: PrefixAffinity, prefixAffinity: {blockSize: 64}}",
    );
    let system = json!({"role": "system", "content": "You answer questions about the attached \
        contract. Quote the clause you rely on, name the parties as the contract does, and say \
        when the contract is silent. ".repeat(6)});
    let ask = |q: &str| vec![system.clone(), user(q)];
    let first = stack.chat(&ask("Who pays for repairs?"), &[]).await;
    assert_eq!(first.status, 200);
    for q in [
        "When can the tenant leave?",
        "Is subletting allowed?",
        "Who insures the building?",
    ] {
        assert_eq!(
            stack.chat(&ask(q), &[]).await.sim,
            first.sim,
            "the same prefix goes to the endpoint that served it"
        );
    }
    // Other conversations spread over the pool.
    let mut others = std::collections::BTreeSet::new();
    for i in 0..6 {
        let opening = format!("Conversation {i}: let us talk about something else entirely.");
        others.insert(stack.chat(&[user(&opening)], &[]).await.sim);
    }
    assert!(others.len() >= 2, "{others:?}");
    // The prefix's endpoint gets overloaded: the prefix moves, and stays where it moved.
    let busy: usize = first.sim[1..].parse().unwrap();
    stack.sims[busy].set_load(0, 40, 0.95).await;
    let mut moved = String::new();
    let deadline = Instant::now() + Duration::from_secs(6);
    while moved.is_empty() || moved == first.sim {
        assert!(
            Instant::now() < deadline,
            "the prefix never left {}",
            first.sim
        );
        moved = stack.chat(&ask("And the deposit?"), &[]).await.sim;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for q in ["Can the rent rise?", "Who keeps the keys?"] {
        assert_eq!(stack.chat(&ask(q), &[]).await.sim, moved);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_stays_on_one_endpoint() {
    let stack = Stack::start(3, "{policy: SessionAffinity}");
    let mut homes = std::collections::BTreeSet::new();
    for session in ["alice-1", "bob-7", "carol-3"] {
        let home = stack
            .chat(&[user("hi")], &[("x-session-id", session)])
            .await
            .sim;
        for _ in 0..5 {
            let answer = stack
                .chat(&[user("more")], &[("x-session-id", session)])
                .await;
            assert_eq!(answer.sim, home, "session {session}");
        }
        homes.insert(home);
    }
    assert!(homes.len() >= 2, "sessions spread: {homes:?}");
}

/// Envoy's access-log lines of routed requests, oldest first: (upstream, attempts, dest).
fn routed_lines(envoy: &Envoy) -> Vec<(String, u32, String)> {
    envoy
        .logs()
        .lines()
        .filter(|l| l.contains("route=endpoint"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_owned()
            };
            (
                field("upstream="),
                field("attempts=").parse().unwrap_or(0),
                field("dest="),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_endpoint_is_ejected_and_no_request_fails() {
    let mut stack = Stack::start(
        3,
        "{policy: LoadAware, fallbacks: 2, health: {consecutiveFailures: 2, ejectionSeconds: 3}}",
    );
    for _ in 0..6 {
        assert_eq!(stack.chat(&[user("warm up")], &[]).await.status, 200);
    }
    let dead = stack.sims[1].addr;
    stack.sims[1].process.terminate().expect("s1 stops");
    // Until its last good figures age out (three scrape intervals) s1 may still count as
    // busy from a warm-up request a scrape caught; after four failed scrapes it is scored
    // by this router's own in-flight count, as idle as the others, so it takes its turn.
    let failures = format!(
        r#"semantic_router_endpoint_scrape_failures_total{{pool="gpu",endpoint="{dead}"}}"#
    );
    eventually(
        "four failed scrapes of the stopped s1",
        Duration::from_secs(15),
        || async { metric_sample(&stack.router.metrics().await, &failures) >= Some(4.0) },
    )
    .await;
    let before = routed_lines(&stack.envoy).len();
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(stack.chat(&[user("are you there?")], &[]).await);
    }
    assert!(
        answers.iter().all(|a| a.status == 200 && a.sim != "s1"),
        "every request was served (Envoy retried on the fallback): {answers:?}"
    );
    // Give the access log its flush interval.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = routed_lines(&stack.envoy)[before..].to_vec();
    assert_eq!(lines.len(), 30, "{lines:?}");
    let dead = dead.to_string();
    let retried: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, (_, attempts, _))| *attempts > 1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        retried.len(),
        2,
        "two connect failures eject it, then it is not tried first again: {lines:#?}"
    );
    let ejected_at = retried[1];
    for (upstream, attempts, dest) in &lines[ejected_at + 1..] {
        assert_eq!(*attempts, 1);
        assert_ne!(*upstream, dead);
        assert!(
            !dest.contains(&dead),
            "an ejected endpoint is not even a fallback: {dest}"
        );
    }
    let metrics = stack.router.metrics().await;
    let gauge = format!(r#"semantic_router_endpoint_ejected{{pool="gpu",endpoint="{dead}"}} 1"#);
    assert!(metrics.contains(&gauge), "{metrics}");
    // It comes back on the same address; after its ejection time it gets traffic again.
    let addr = dead.parse().unwrap();
    stack.sims[1] = Sim::start_with(
        "s1",
        SimOptions {
            listen: Some(addr),
            ..SimOptions::default()
        },
    );
    stack
        .until("s1 to be re-admitted", Duration::from_secs(8), |a| {
            a.sim == "s1"
        })
        .await;
    assert_eq!(stack.name_of(addr), "s1");
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_hang_up_eject_no_endpoint() {
    let stack = Stack::start(
        2,
        "{policy: RoundRobin, fallbacks: 1, health: {consecutiveFailures: 2, ejectionSeconds: 30}}",
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for _ in 0..6 {
        let cancelled = impatient
            .post(format!("{}/v1/chat/completions", stack.envoy.url()))
            .header("content-type", "application/json")
            .header("x-sim-delay-ms", "1500")
            .body(
                json!({"model": "auto", "max_tokens": 2, "messages": [user("slow one")]})
                    .to_string(),
            )
            .send()
            .await;
        assert!(cancelled.is_err_and(|e| e.is_timeout()));
    }
    // The router learns of each cancel when Envoy closes its stream.
    let idle = |metrics: &str| {
        let lines: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("semantic_router_endpoint_in_flight{"))
            .collect();
        lines.len() == 2 && lines.iter().all(|l| l.ends_with(" 0"))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = stack.router.metrics().await;
    while !idle(&last) {
        assert!(
            Instant::now() < deadline,
            "requests still in flight:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = stack.router.metrics().await;
    }
    for sim in &stack.sims {
        let ejected = format!(
            r#"semantic_router_endpoint_ejected{{pool="gpu",endpoint="{}"}} 0"#,
            sim.addr
        );
        assert!(last.contains(&ejected), "{ejected} not in\n{last}");
    }
    let mut served = Vec::new();
    for _ in 0..6 {
        let answer = stack.chat(&[user("quick one")], &[]).await;
        assert_eq!(answer.status, 200);
        served.push(answer.sim);
    }
    assert!(
        served.iter().any(|s| s == "s0") && served.iter().any(|s| s == "s1"),
        "both endpoints still serve: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_saturated_is_answered_429_with_a_reason() {
    let stack = Stack::start(2, "{policy: LoadAware, maxQueueDepth: 8}");
    stack.sims[0].set_load(0, 8, 0.0).await;
    stack.sims[1].set_load(0, 20, 0.0).await;
    stack
        .until(
            "the saturation to be scraped",
            Duration::from_secs(6),
            |a| a.status == 429,
        )
        .await;
    for sim in &stack.sims {
        sim.clear().await;
    }
    let answer = stack.chat(&[user("hello")], &[]).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.shed_reason, "saturated");
    assert_eq!(answer.body["error"]["code"], "overloaded");
    assert_eq!(answer.body["error"]["type"], "rate_limit_error");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("gpu (queue depth 8)"), "{message}");
    for sim in &stack.sims {
        assert!(
            sim.requests().await.is_empty(),
            "nothing piled onto a backend"
        );
    }
    let metrics = stack.router.metrics().await;
    assert!(
        metrics.contains(r#"semantic_router_errors_total{reason="overloaded"}"#),
        "{metrics}"
    );
    // One endpoint drains: it gets the traffic again.
    stack.sims[0].set_load(0, 0, 0.0).await;
    stack
        .until("s0 to drain", Duration::from_secs(6), |a| a.status == 200)
        .await;
    assert_eq!(stack.chat(&[user("hello")], &[]).await.sim, "s0");
}

/// Envoy with a `set_metadata` filter before ext_proc that sets the endpoint-picker protocol's
/// subset hint (`envoy.lb.subset_hint` / `x-gateway-destination-endpoint-subset`) to `subset`,
/// and ext_proc forwarding that namespace, as a proxy that constrains the picker would.
struct HintingEnvoy {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for HintingEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn hinting_envoy(config: EnvoyConfig, subset: &[SocketAddr]) -> HintingEnvoy {
    let rendered = render_config(&config);
    let filter_line = "          - name: envoy.filters.http.ext_proc\n";
    assert_eq!(rendered.matches(filter_line).count(), 1);
    let list: Vec<String> = subset.iter().map(|a| format!("\"{a}\"")).collect();
    let set_metadata = format!(
        "          - name: envoy.filters.http.set_metadata
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata:
              - metadata_namespace: envoy.lb.subset_hint
                value: {{x-gateway-destination-endpoint-subset: [{}]}}
",
        list.join(", ")
    );
    let forwarding = "forwarding_namespaces: {untyped: [envoy.lb]}";
    assert_eq!(rendered.matches(forwarding).count(), 1);
    let patched = rendered
        .replace(filter_line, &format!("{set_metadata}{filter_line}"))
        .replace(
            forwarding,
            "forwarding_namespaces: {untyped: [envoy.lb, envoy.lb.subset_hint]}",
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, patched).unwrap();
    let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
    let child = Command::new(envoy_bin())
        .arg("-c")
        .arg(&path)
        .args([
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("envoy starts");
    let envoy = HintingEnvoy {
        child,
        url: format!("http://127.0.0.1:{}", config.listen_port),
        _dir: dir,
    };
    let ready = format!("http://127.0.0.1:{}/ready", config.admin_port);
    let listener = SocketAddr::from(([127, 0, 0, 1], config.listen_port));
    eventually(
        "the hinting Envoy to be LIVE",
        Duration::from_secs(30),
        || {
            let ready = ready.clone();
            async move {
                let live = match reqwest::get(&ready).await {
                    Ok(r) => r.text().await.is_ok_and(|t| t.trim() == "LIVE"),
                    Err(_) => false,
                };
                live && tokio::net::TcpStream::connect(listener).await.is_ok()
            }
        },
    )
    .await;
    envoy
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxys_subset_hint_is_honoured() {
    let sims: Vec<Sim> = (0..3).map(|i| Sim::start(&format!("s{i}"))).collect();
    let addrs: Vec<SocketAddr> = sims.iter().map(|s| s.addr).collect();
    let dir = tempfile::tempdir().unwrap();
    manifests(dir.path(), &addrs, "{policy: LoadAware, fallbacks: 2}");
    let router = Router::start(dir.path(), &[]);
    let client = reqwest::Client::new();

    let only_s2 = hinting_envoy(envoy_config(&router, &addrs), &[addrs[2]]).await;
    for _ in 0..8 {
        let answer = chat(&client, &only_s2.url, &[user("hi")], &[]).await;
        assert_eq!(
            (answer.status, answer.sim.as_str()),
            (200, "s2"),
            "{answer:?}"
        );
    }
    let received = sims[2].requests().await;
    let dest = &received.last().unwrap()["headers"]["x-gateway-destination-endpoint"];
    assert_eq!(
        dest,
        &json!(addrs[2].to_string()),
        "fallbacks stay inside the subset"
    );

    let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (subset, reason) in [
        (vec![], "subset-empty"),
        (vec![elsewhere], "outside-subset"),
    ] {
        let envoy = hinting_envoy(envoy_config(&router, &addrs), &subset).await;
        let answer = chat(&client, &envoy.url, &[user("hi")], &[]).await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.shed_reason, reason);
        assert_eq!(answer.body["error"]["code"], "no_ready_endpoint");
    }
}

/// A pool with static endpoints and this `endpointPicking`, as JSON.
fn pool_with_picking(name: &str, picking: Value) -> Value {
    json!({
        "apiVersion": "semantic-router.io/v1alpha1", "kind": "ModelPool",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"models": [{"name": "m"}],
                 "endpoints": {"static": {"addresses": ["10.0.0.1:8000"]}},
                 "endpointPicking": picking}
    })
}

#[tokio::test]
async fn the_api_server_enforces_the_picking_ranges_and_fills_in_defaults() {
    use kube::api::{Api, ApiResource, DynamicObject, PostParams};
    use semantic_router::api::ModelPool;

    let server = crate::support::ApiServer::start().await;
    let client = server.client();
    crate::support::install_crds(&client).await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &ApiResource::erase::<ModelPool>(&()));
    let create = |obj: Value| {
        let api = api.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(obj).unwrap();
            api.create(&PostParams::default(), &object).await
        }
    };
    for (i, (picking, field)) in [
        (
            json!({"policy": "LeastBusy"}),
            "spec.endpointPicking.policy",
        ),
        (json!({"fallbacks": 9}), "spec.endpointPicking.fallbacks"),
        (
            json!({"maxQueueDepth": 0}),
            "spec.endpointPicking.maxQueueDepth",
        ),
        (
            json!({"load": {"waitingWeight": -1}}),
            "spec.endpointPicking.load.waitingWeight",
        ),
        (
            json!({"prefixAffinity": {"blockSize": 8}}),
            "spec.endpointPicking.prefixAffinity.blockSize",
        ),
        (
            json!({"sessionAffinity": {"header": "x session"}}),
            "spec.endpointPicking.sessionAffinity.header",
        ),
        (
            json!({"health": {"consecutiveFailures": 0}}),
            "spec.endpointPicking.health.consecutiveFailures",
        ),
        (
            json!({"health": {"ejectionSeconds": 7200}}),
            "spec.endpointPicking.health.ejectionSeconds",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        match create(pool_with_picking(&format!("bad-{i}"), picking)).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{status:?}");
                assert!(
                    status.message.contains(field),
                    "{field}: {}",
                    status.message
                );
            }
            other => panic!("{field}: accepted or failed otherwise: {other:?}"),
        }
    }
    let created = create(pool_with_picking(
        "good",
        json!({"policy": "PrefixAffinity", "maxQueueDepth": 32,
               "prefixAffinity": {"loadTolerance": 2.5}}),
    ))
    .await
    .expect("a valid pool is accepted");
    let picking = &created.data["spec"]["endpointPicking"];
    assert_eq!(picking["policy"], "PrefixAffinity");
    assert_eq!(picking["fallbacks"], 1);
    assert_eq!(picking["prefixAffinity"]["blockSize"], 128);
    assert_eq!(picking["prefixAffinity"]["loadTolerance"], 2.5);
    assert_eq!(picking["sessionAffinity"]["header"], "x-session-id");
    assert_eq!(picking["health"]["consecutiveFailures"], 5);
    let defaulted = create(json!({
        "apiVersion": "semantic-router.io/v1alpha1", "kind": "ModelPool",
        "metadata": {"name": "plain", "namespace": "default"},
        "spec": {"models": [{"name": "m"}],
                 "endpoints": {"static": {"addresses": ["10.0.0.1:8000"]}}}
    }))
    .await
    .expect("a pool without endpointPicking is accepted");
    assert_eq!(
        defaulted.data["spec"]["endpointPicking"]["policy"],
        "LoadAware"
    );
}
