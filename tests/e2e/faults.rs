//! Faults, each with a defined behaviour, through real Envoy and the router: a model server
//! that accepts a request and never answers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
use crate::support::eventually;
use crate::support::stack::Router;

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
    std::fs::write(
        manifests.path().join("policy.yaml"),
        format!(
            r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: silent, namespace: default}}
spec:
  models: [{{name: m}}]
  endpoints: {{static: {{addresses: ["{silent}"]}}}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto, namespace: default}}
spec:
  match: {{models: [auto]}}
  defaultTarget: {{pool: silent, model: m}}
"#
        ),
    )
    .unwrap();
    let router = Router::start(manifests.path(), &[]);
    let envoy = Envoy::start_edited(
        EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: router.extproc,
            ext_proc_replicas: Vec::new(),
            endpoints: vec![silent],
            passthrough: silent,
            gateway_clusters: Vec::new(),
            with_ext_proc: true,
            buffered: false,
        },
        short_idle_timeout,
    );
    let in_flight =
        format!("semantic_router_endpoint_in_flight{{pool=\"silent\",endpoint=\"{silent}\"}} ");
    let in_flight_now = || async {
        router
            .metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&in_flight).map(str::to_owned))
            .unwrap_or_default()
    };

    let client = reqwest::Client::new();
    let request = client
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
        || async { in_flight_now().await == "1" },
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
        Some("silent"),
        "the router saw the response and named the route"
    );
    eventually(
        "the endpoint's in-flight count back to 0",
        Duration::from_secs(5),
        || async { in_flight_now().await == "0" },
    )
    .await;
}
