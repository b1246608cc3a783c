//! Delegating to an inference gateway (llm-d): the router picks the model, a second Envoy
//! standing in for the llm-d gateway picks the endpoint.

use serde_json::json;

use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
use crate::support::stack::{Router, Sim};

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_pool_hands_the_request_to_its_cluster_with_the_model_chosen() {
    let behind_gateway = Sim::start("llm-d-backend");
    let local = Sim::start("local");
    let gateway = Envoy::start(EnvoyConfig {
        listen_port: free_port(),
        admin_port: free_port(),
        ext_proc_addr: local.addr,
        ext_proc_replicas: Vec::new(),
        endpoints: vec![behind_gateway.addr],
        passthrough: local.addr,
        // The stand-in gateway's own route matches the header the router set, as an llm-d
        // HTTPRoute would.
        gateway_clusters: vec![("llm-d-east".to_owned(), behind_gateway.addr)],
        with_ext_proc: false,
        buffered: false,
    });
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests.path().join("policy.yaml"),
        format!(
            r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: llmd-east}}
spec:
  models: [{{name: openai/gpt-oss-120b, reasoningFamily: gpt-oss}}]
  endpoints: {{gateway: {{clusterName: llm-d-east}}}}
---
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: local}}
spec:
  models: [{{name: small}}]
  endpoints: {{static: {{addresses: ["{local}"]}}}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto}}
spec:
  match: {{models: [auto]}}
  signals:
    keywords: [{{name: hard, keywords: [prove]}}]
  decisions:
  - name: hard
    when: {{any: [hard]}}
    targets: [{{pool: llmd-east, model: openai/gpt-oss-120b, reasoning: {{enabled: true, effort: high}}}}]
  defaultTarget: {{pool: local, model: small}}
"#,
            local = local.addr
        ),
    )
    .unwrap();
    let router = Router::start(manifests.path(), &[]);
    let front = Envoy::start(EnvoyConfig {
        listen_port: free_port(),
        admin_port: free_port(),
        ext_proc_addr: router.extproc,
        ext_proc_replicas: Vec::new(),
        endpoints: vec![local.addr],
        passthrough: local.addr,
        gateway_clusters: vec![("llm-d-east".to_owned(), gateway.listen_addr())],
        with_ext_proc: true,
        buffered: false,
    });

    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", front.url()))
        .header("content-type", "application/json")
        .body(
            json!({"model": "auto", "messages": [{"role": "user", "content": "prove it"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", front.logs());
    assert_eq!(response.headers()["x-sim-name"], "llm-d-backend");
    let received = behind_gateway.requests().await;
    assert_eq!(received.len(), 1, "{received:#?}");
    let request = &received[0];
    assert_eq!(request["body"]["model"], "openai/gpt-oss-120b");
    assert_eq!(request["body"]["reasoning_effort"], "high");
    assert_eq!(
        request["headers"]["x-semantic-router-cluster"],
        "llm-d-east"
    );
    assert_eq!(
        request["headers"]["x-semantic-router-model"],
        "openai/gpt-oss-120b"
    );
    assert!(
        request["headers"]
            .get("x-gateway-destination-endpoint")
            .is_none(),
        "endpoint picking is the gateway's"
    );
    assert!(local.requests().await.is_empty());
}
