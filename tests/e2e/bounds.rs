//! Every store that client input fills stops at its bound: the semantic cache, the encoder's
//! embedding cache, and each pool's prefix-affinity and session-affinity maps, driven with more
//! distinct prompts and sessions than any of them holds, through real Envoy and the router.
//! The soak (`cargo bench --bench soak`) runs the same stores for a million requests.

use std::net::SocketAddr;

use serde_json::json;

use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
use crate::support::metric_sample;
use crate::support::stack::{Router, Sim};

/// Pool `prefix` (prefix affinity, at most 16 blocks) for requests with `x-pool: prefix`,
/// pool `sessions` (session affinity, at most 10 sessions) for the rest, and every answer of
/// route `auto` cached (only an identical prompt hits).
fn policy(dir: &std::path::Path, prefix: SocketAddr, sessions: SocketAddr) {
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: prefix, namespace: default}}
spec:
  models: [{{name: m}}]
  endpoints: {{static: {{addresses: ["{prefix}"]}}}}
  endpointPicking: {{policy: PrefixAffinity, prefixAffinity: {{blockSize: 16, maxBlocks: 16}}}}
---
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: sessions, namespace: default}}
spec:
  models: [{{name: m}}]
  endpoints: {{static: {{addresses: ["{sessions}"]}}}}
  endpointPicking: {{policy: SessionAffinity, sessionAffinity: {{maxSessions: 10}}}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto, namespace: default}}
spec:
  match: {{models: [auto]}}
  signals:
    headers: [{{name: to-prefix, header: x-pool, values: [prefix]}}]
  decisions:
  - {{name: prefix, when: {{any: [to-prefix]}}, targets: [{{pool: prefix, model: m}}]}}
  defaultTarget: {{pool: sessions, model: m}}
  cache: {{enabled: true, similarityThreshold: 0.9999}}
"#
        ),
    )
    .unwrap();
}

/// The four stores' sizes, as the router exports them.
#[derive(Debug, PartialEq)]
struct Sizes {
    answers: f64,
    embeddings: f64,
    blocks: f64,
    sessions: f64,
}

async fn sizes(router: &Router) -> Sizes {
    let metrics = router.metrics().await;
    let read = |series: &str| metric_sample(&metrics, series).unwrap_or(-1.0);
    Sizes {
        answers: read("semantic_router_semantic_cache_entries"),
        embeddings: read("semantic_router_classifier_cache_entries"),
        blocks: read(r#"semantic_router_pool_prefix_blocks{pool="prefix"}"#),
        sessions: read(r#"semantic_router_pool_sessions{pool="sessions"}"#),
    }
}

/// Sends `count` requests, each with its own prompt (long enough for several blocks) and its
/// own session, `offset` numbering them; half go to the prefix pool. Every one must succeed.
async fn drive(client: &reqwest::Client, envoy: &Envoy, offset: usize, count: usize) {
    for i in offset..offset + count {
        let prompt = format!("Question number {i}: tell me something about the number {i}.");
        let mut request = client
            .post(format!("{}/v1/chat/completions", envoy.url()))
            .header("content-type", "application/json")
            .header("x-session-id", format!("session-{i}"))
            .body(
                json!({"model": "auto",
                       "messages": [{"role": "user", "content": prompt}]})
                .to_string(),
            );
        if i % 2 == 0 {
            request = request.header("x-pool", "prefix");
        }
        let response = request.send().await.expect("envoy answers");
        assert_eq!(response.status(), 200, "request {i}");
        response.bytes().await.expect("the whole answer");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_filled_by_client_input_stops_at_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let encoder = tmp.path().join("tiny");
    semantic_router::classify::tiny::write_model(
        &encoder,
        semantic_router::classify::Architecture::Bert,
        None,
    )
    .unwrap();
    let (prefix, sessions) = (Sim::start("prefix"), Sim::start("sessions"));
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    policy(&manifests, prefix.addr, sessions.addr);
    let router = Router::start(
        &manifests,
        &[
            "--encoder",
            encoder.to_str().unwrap(),
            "--classify-cache",
            "20",
            "--cache-max-entries",
            "15",
            "--classify-budget-ms",
            "20000",
        ],
    );
    let envoy = Envoy::start(EnvoyConfig {
        listen_port: free_port(),
        admin_port: free_port(),
        ext_proc_addr: router.extproc,
        ext_proc_replicas: Vec::new(),
        endpoints: vec![prefix.addr, sessions.addr],
        passthrough: sessions.addr,
        gateway_clusters: Vec::new(),
        with_ext_proc: true,
        buffered: false,
    });
    let client = reqwest::Client::new();

    drive(&client, &envoy, 0, 60).await;
    let full = sizes(&router).await;
    assert_eq!((full.answers, full.embeddings), (15.0, 20.0), "{full:?}");
    // The affinity maps forget a generation at a time: between half full and full.
    assert!((8.0..=16.0).contains(&full.blocks), "{full:?}");
    assert!((5.0..=10.0).contains(&full.sessions), "{full:?}");

    drive(&client, &envoy, 60, 60).await;
    let after = sizes(&router).await;
    assert_eq!((after.answers, after.embeddings), (15.0, 20.0), "{after:?}");
    assert!((8.0..=16.0).contains(&after.blocks), "{after:?}");
    assert!((5.0..=10.0).contains(&after.sessions), "{after:?}");
}
