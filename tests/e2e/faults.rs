//! Faults, each with a defined behaviour, through real Envoy and the router: a model server
//! that accepts a request and never answers, one killed in the middle of a stream, and the
//! router itself killed and restarted, with Envoy's `failure_mode_allow` off (the sample's
//! default) and on, and an encoder too slow for the budget or with its queue full.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::dataplane::{Stack, ask, header};
use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
use crate::support::stack::{Router, Sim, SimOptions};
use crate::support::{eventually, metric_sample};

/// A policy sending model `auto` to pool `p` (model `m`) on `endpoint`.
fn policy(dir: &std::path::Path, endpoint: SocketAddr) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: p, namespace: default}}
spec:
  models: [{{name: m}}]
  endpoints: {{static: {{addresses: ["{endpoint}"]}}}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto, namespace: default}}
spec:
  match: {{models: [auto]}}
  defaultTarget: {{pool: p, model: m}}
"#
        ),
    )
    .unwrap();
}

/// Envoy in front of `router`, sending requests to `endpoint`.
fn envoy(router: &Router, endpoint: SocketAddr, edit: impl FnOnce(String) -> String) -> Envoy {
    Envoy::start_edited(
        EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: router.extproc,
            ext_proc_replicas: Vec::new(),
            endpoints: vec![endpoint],
            passthrough: endpoint,
            gateway_clusters: Vec::new(),
            with_ext_proc: true,
            buffered: false,
        },
        edit,
    )
}

/// The router's in-flight gauge for `endpoint` of pool `p`.
async fn in_flight(router: &Router, endpoint: SocketAddr) -> Option<f64> {
    let series =
        format!("semantic_router_endpoint_in_flight{{pool=\"p\",endpoint=\"{endpoint}\"}}");
    metric_sample(&router.metrics().await, &series)
}

/// A model server that accepts connections, reads what it is sent and never answers.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(socket.read(&mut buffer).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// The sample's idle timeout (300 s without a byte cuts a stream), shortened for the test.
fn short_idle_timeout(config: String) -> String {
    assert!(
        config.contains("idle_timeout: 300s"),
        "the template's idle timeout moved"
    );
    config.replace("idle_timeout: 300s", "idle_timeout: 1s")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_is_cut_at_the_idle_timeout_and_its_endpoint_freed() {
    let silent = silent_server().await;
    let manifests = tempfile::tempdir().unwrap();
    policy(manifests.path(), silent);
    let router = Router::start(manifests.path(), &[]);
    let envoy = envoy(&router, silent, short_idle_timeout);

    let request = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", envoy.url()))
        .header("content-type", "application/json")
        .body(r#"{"model":"auto","messages":[{"role":"user","content":"hello"}]}"#)
        .timeout(Duration::from_secs(20))
        .send();
    let started = Instant::now();
    let waiting = tokio::spawn(request);
    eventually(
        "the request is in flight to the silent server",
        Duration::from_secs(5),
        || async { in_flight(&router, silent).await == Some(1.0) },
    )
    .await;
    let response = waiting.await.unwrap().expect("Envoy answers the client");
    let waited = started.elapsed();

    assert_eq!(response.status().as_u16(), 504, "{}", envoy.logs());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "cut at the idle timeout, not before and not never: {waited:?}"
    );
    assert_eq!(
        response
            .headers()
            .get("x-semantic-router-pool")
            .and_then(|v| v.to_str().ok()),
        Some("p"),
        "the router saw the response and named the route"
    );
    eventually(
        "the endpoint's in-flight count back to 0",
        Duration::from_secs(5),
        || async { in_flight(&router, silent).await == Some(0.0) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_stream_ends_the_clients_stream_and_frees_its_endpoint() {
    // 40 tokens 100 ms apart: a stream of about 4 s, killed after its first events.
    let mut sim = Sim::start_with(
        "doomed",
        SimOptions {
            args: ["--itl-ms", "100", "--output-tokens", "40"]
                .map(str::to_owned)
                .to_vec(),
            ..SimOptions::default()
        },
    );
    let manifests = tempfile::tempdir().unwrap();
    policy(manifests.path(), sim.addr);
    let router = Router::start(manifests.path(), &[]);
    let envoy = envoy(&router, sim.addr, |config| config);

    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", envoy.url()))
        .header("content-type", "application/json")
        .body(
            r#"{"model":"auto","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}"#,
        )
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the stream starts");
    assert_eq!(response.status().as_u16(), 200);
    let first = response
        .chunk()
        .await
        .expect("a first event")
        .expect("not empty");
    assert!(first.starts_with(b"data: "), "{first:?}");
    assert_eq!(in_flight(&router, sim.addr).await, Some(1.0));

    sim.process.kill().expect("the server dies");
    let killed = Instant::now();
    let mut rest = Vec::new();
    let ended = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => rest.extend_from_slice(&chunk),
            Ok(None) => break "ended",
            Err(_) => break "broken",
        }
    };
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "the client's stream ends with the server, not at a timeout: {:?}",
        killed.elapsed()
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        !text.contains("data: [DONE]"),
        "a cut stream must not look complete ({ended}): {text}"
    );
    eventually(
        "the endpoint's in-flight count back to 0",
        Duration::from_secs(5),
        || async { in_flight(&router, sim.addr).await == Some(0.0) },
    )
    .await;
}

/// What a request through `stack` came back with: status, decision header, and the model the
/// small pool's server was sent (empty when it received nothing).
async fn try_chat(stack: &Stack) -> (u16, String, String) {
    stack.small.clear().await;
    let response = stack.chat(ask("auto", "hello there"), &[]).await;
    let status = response.status().as_u16();
    let decision = header(&response, "x-semantic-router-decision").to_owned();
    let sent = stack
        .small
        .requests()
        .await
        .first()
        .and_then(|r| r["body"]["model"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, decision, sent)
}

/// Kills the router of `stack` (SIGKILL), returns what a request then gets, and restarts it
/// on the same addresses; then the next requests are routed again.
async fn kill_and_restart_the_router(stack: &mut Stack) -> (u16, String, String) {
    let before = try_chat(stack).await;
    assert_eq!(before, (200, "default".into(), "Qwen/Qwen3-1.7B".into()));
    stack.router.process.kill().expect("the router dies");
    let started = Instant::now();
    let during = try_chat(stack).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at once, not at a timeout: {:?}",
        started.elapsed()
    );
    stack.router = stack.router.restart(stack.manifests.path(), &[]);
    eventually(
        "routed again once the router is back",
        Duration::from_secs(10),
        || async { try_chat(stack).await == before },
    )
    .await;
    during
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_router_envoy_refuses_by_default_and_routes_again_when_it_returns() {
    // The sample's `failure_mode_allow: false`: no request goes on unrouted (unscreened for
    // jailbreaks, to whatever its body names) while the router is away.
    let mut stack = Stack::start(&[]);
    let (status, decision, sent) = kill_and_restart_the_router(&mut stack).await;
    assert!(status >= 500, "refused while the router is away: {status}");
    assert_eq!(
        (decision.as_str(), sent.as_str()),
        ("", ""),
        "nothing reached a model server"
    );
}

/// `failure_mode_allow: true` in the rendered config.
fn allow_failures(config: String) -> String {
    assert!(config.contains("failure_mode_allow: false"));
    config.replace("failure_mode_allow: false", "failure_mode_allow: true")
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_mode_allow_lets_buffered_requests_go_on_unrouted_but_not_duplex_ones() {
    // Envoy 1.40 with FULL_DUPLEX_STREAMED request bodies (the sample's mode) answers 500
    // without the router even when failures are allowed.
    let mut duplex = Stack::start_edited(&[], false, allow_failures);
    let (status, decision, sent) = kill_and_restart_the_router(&mut duplex).await;
    assert_eq!(status, 500, "duplex: refused even with failure_mode_allow");
    assert_eq!((decision.as_str(), sent.as_str()), ("", ""));
    // With BUFFERED bodies the request goes on as the client wrote it, to the default route.
    let mut buffered = Stack::start_edited(&[], true, allow_failures);
    let (status, decision, sent) = kill_and_restart_the_router(&mut buffered).await;
    assert_eq!(status, 200, "buffered: served while the router is away");
    assert_eq!(decision, "", "not routed: no decision was made");
    assert_eq!(sent, "auto", "the body went on as the client wrote it");
}

/// `count` different long math questions (no keyword of the sample route in them): only the
/// encoder could send them to the reasoning model, and no embedding cache can answer one.
fn long_math_questions(count: usize) -> Vec<String> {
    let filler =
        "Please keep the answer short and show the working as plain sentences. ".repeat(30);
    (0..count)
        .map(|i| format!("{filler} What is {} percent of {}?", 10 + i, 200 + 7 * i))
        .collect()
}

/// The sample router on the real all-MiniLM-L6-v2 with `flags`, after `questions` were sent
/// all at once: each answer's status and pool, and how much each of `series` grew meanwhile.
async fn ask_at_once<const N: usize>(
    flags: &[&str],
    questions: &[String],
    series: [&str; N],
) -> (Vec<(u16, String)>, [f64; N]) {
    let minilm = crate::support::repo_root().join(".models/all-MiniLM-L6-v2");
    let mut args = vec!["--encoder", minilm.to_str().unwrap()];
    args.extend_from_slice(flags);
    let stack = Stack::start(&args);
    let read = |metrics: String| series.map(|s| metric_sample(&metrics, s).unwrap_or(0.0));
    let before = read(stack.router.metrics().await);
    let answers = futures::future::join_all(questions.iter().map(|q| async {
        let response = stack.chat(ask("auto", q), &[]).await;
        let pool = header(&response, "x-semantic-router-pool").to_owned();
        (response.status().as_u16(), pool)
    }))
    .await;
    let after = read(stack.router.metrics().await);
    (answers, std::array::from_fn(|i| after[i] - before[i]))
}

const FALLBACKS: &str = "semantic_router_model_signal_fallbacks_total";

#[tokio::test(flavor = "multi_thread")]
async fn an_encoder_slower_than_the_budget_leaves_requests_decided_without_model_signals() {
    // A forward pass over 300 tokens takes far longer than 1 ms: every request goes on at its
    // deadline with the route's default, and each is counted.
    let questions = long_math_questions(4);
    let late = r#"semantic_router_classifier_shed_total{reason="deadline_exceeded"}"#;
    let (answers, [fallbacks, shed]) = ask_at_once(
        &["--classify-budget-ms", "1"],
        &questions,
        [FALLBACKS, late],
    )
    .await;
    for answer in &answers {
        assert_eq!(answer, &(200, "qwen3-small".to_owned()), "{answers:?}");
    }
    assert_eq!((fallbacks, shed), (4.0, 4.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_encoder_queue_sheds_the_excess_at_once_and_counts_it() {
    // One prompt at a time on the encoder and one waiting: of twelve at once, the rest find
    // the queue full and are decided without model signals; none fails.
    let questions = long_math_questions(12);
    let flags = [
        "--classify-queue",
        "1",
        "--classify-max-batch",
        "1",
        "--classify-budget-ms",
        "20000",
    ];
    let full = r#"semantic_router_classifier_shed_total{reason="overloaded"}"#;
    let (answers, [fallbacks, shed]) = ask_at_once(&flags, &questions, [FALLBACKS, full]).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    // The sample route's example prompts go through the same queue and are retried when shed,
    // so the shed count may exceed the requests that fell back, never the other way round.
    assert!(fallbacks >= 1.0, "some requests found the queue full");
    assert!(
        fallbacks <= shed,
        "a request decided without model signals was shed ({fallbacks} > {shed})"
    );
    let small = answers
        .iter()
        .filter(|(_, pool)| pool == "qwen3-small")
        .count();
    assert!(
        small as f64 >= fallbacks,
        "a shed request takes the default: {answers:?}"
    );
}
