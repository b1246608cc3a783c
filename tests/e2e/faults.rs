//! Faults, each with a defined behaviour, through real Envoy and the router: a model server
//! that accepts a request and never answers, and one killed in the middle of a stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
use crate::support::eventually;
use crate::support::stack::{Router, Sim, SimOptions};

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

/// The router's in-flight gauge for `endpoint` of pool `p`, as printed.
async fn in_flight(router: &Router, endpoint: SocketAddr) -> String {
    let prefix =
        format!("semantic_router_endpoint_in_flight{{pool=\"p\",endpoint=\"{endpoint}\"}} ");
    router
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_default()
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
        || async { in_flight(&router, silent).await == "1" },
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
        || async { in_flight(&router, silent).await == "0" },
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
    assert_eq!(in_flight(&router, sim.addr).await, "1");

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
        || async { in_flight(&router, sim.addr).await == "0" },
    )
    .await;
}
