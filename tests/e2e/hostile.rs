//! What a hostile client tries through the sample Envoy config and the router, and what it
//! gets: no other paths of a model server, no spoofed routing headers, no team without a
//! verified token, no model the router does not serve, no tokens left uncounted.

use std::time::Duration;

use serde_json::{Value, json};

use crate::dataplane::{Stack, ask, header, only_request};
use crate::support::{demo_token, untrusted_key};

/// Every header of the router's and the endpoint picker's families a client might forge.
const SPOOFED: &[(&str, &str)] = &[
    ("x-semantic-router-decision", "spoofed-decision"),
    ("x-semantic-router-model", "spoofed-model"),
    ("x-semantic-router-pool", "spoofed-pool"),
    ("x-semantic-router-path", "spoofed-path"),
    ("x-semantic-router-reasoning", "spoofed-reasoning"),
    ("x-semantic-router-jailbreak", "spoofed-jailbreak"),
    ("x-semantic-router-cache", "spoofed-cache"),
    ("x-semantic-router-cluster", "spoofed-cluster"),
    ("x-semantic-router-shed-reason", "spoofed-shed"),
    ("x-gateway-destination-endpoint", "10.9.9.9:80"),
    ("x-gateway-destination-endpoint-subset", "10.9.9.8:80"),
    ("x-gateway-destination-endpoint-served", "10.9.9.7:80"),
];

/// Every request the three simulators received since they were cleared.
async fn received(stack: &Stack) -> Vec<Value> {
    let mut all = Vec::new();
    for sim in [&stack.small, &stack.large, &stack.a100] {
        all.extend(sim.requests().await);
    }
    all
}

/// Envoy's access log, once its flush interval has passed.
async fn access_log(stack: &Stack) -> String {
    tokio::time::sleep(Duration::from_millis(400)).await;
    stack.envoy.logs()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_inference_api_reaches_a_model_server() {
    let stack = Stack::start(&[]);
    let url = stack.envoy.url();
    for (method, path) in [
        ("GET", "/sim/requests"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/chat/completions/../../sim/requests"),
    ] {
        let request = match method {
            "GET" => stack.client.get(format!("{url}{path}")),
            _ => stack.client.post(format!("{url}{path}")).body("{}"),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        assert_eq!(header(&response, "content-type"), "application/json");
        let body: Value = response.json().await.expect("an OpenAI-shaped error");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
    }
    assert!(
        received(&stack).await.is_empty(),
        "no model server saw any of them"
    );
    assert!(access_log(&stack).await.contains("route=not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_is_served_by_its_pool_or_refused_by_the_router() {
    let stack = Stack::start(&[]);

    // Served by two pools; the A100 pool takes only its route's decisions (directRequests:
    // false), so the H100 pool serves it, body as sent.
    let direct = stack
        .chat(ask("Qwen/Qwen3-30B-A3B", "What is 2 + 2?"), &[])
        .await;
    assert_eq!(direct.status(), 200, "{}", stack.logs());
    assert_eq!(header(&direct, "x-sim-name"), "large");
    assert_eq!(header(&direct, "x-semantic-router-decision"), "direct");
    assert_eq!(
        header(&direct, "x-semantic-router-pool"),
        "qwen3-large-h100"
    );
    let forwarded = only_request(&stack.large).await;
    assert_eq!(forwarded["body"]["model"], "Qwen/Qwen3-30B-A3B");
    assert!(forwarded["body"].get("chat_template_kwargs").is_none());
    assert_eq!(
        forwarded["headers"]["x-gateway-destination-endpoint"],
        stack.large.addr.to_string()
    );
    let metrics = stack.router.metrics().await;
    assert!(
        metrics.contains(r#"semantic_router_tokens_total{decision="direct",model="Qwen/Qwen3-30B-A3B",pool="qwen3-large-h100",kind="completion"}"#),
        "{metrics}"
    );

    // Nothing serves it: the router's own 404, no backend asked.
    let unknown = stack.chat(ask("gpt-4o", "hello"), &[]).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(header(&unknown, "x-semantic-router-path"), "error");
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-4o")
    );
    assert!(stack.small.requests().await.is_empty());
    assert!(stack.a100.requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_router_headers_reach_neither_backends_nor_the_log() {
    let stack = Stack::start(&[]);
    let routed = stack.chat(ask("auto", "hello there"), SPOOFED).await;
    assert_eq!(routed.status(), 200, "{}", stack.logs());
    assert_eq!(header(&routed, "x-semantic-router-decision"), "default");
    assert_eq!(header(&routed, "x-sim-name"), "small");
    let direct = stack
        .chat(ask("Qwen/Qwen3-1.7B", "hello there"), SPOOFED)
        .await;
    assert_eq!(direct.status(), 200);
    let unknown_path = {
        let mut request = stack
            .client
            .get(format!("{}/server-info", stack.envoy.url()));
        for (k, v) in SPOOFED {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    };
    assert_eq!(unknown_path.status(), 404);

    let requests = received(&stack).await;
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let log = access_log(&stack).await;
    for (name, value) in SPOOFED {
        for r in &requests {
            assert_ne!(
                r["headers"][*name].as_str(),
                Some(*value),
                "{name} reached a backend"
            );
        }
        assert!(!log.contains(value), "{name}: {value} in the log:\n{log}");
    }
    assert!(log.contains("decision=default"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_comes_only_from_a_verified_token() {
    let stack = Stack::start(&[]);
    let prompt = || ask("auto", "Prove this theorem about primes.");

    let claimed = stack.chat(prompt(), &[("x-team", "research")]).await;
    assert_eq!(claimed.status(), 200);
    assert_eq!(
        header(&claimed, "x-semantic-router-decision"),
        "reasoning",
        "a header alone names no team"
    );

    let token = format!("Bearer {}", demo_token("research", None));
    let verified = stack.chat(prompt(), &[("authorization", &token)]).await;
    assert_eq!(verified.status(), 200, "{}", stack.logs());
    assert_eq!(
        header(&verified, "x-semantic-router-decision"),
        "research-reasoning"
    );
    assert_eq!(header(&verified, "x-sim-name"), "a100");
    let forwarded = only_request(&stack.a100).await;
    assert_eq!(forwarded["headers"]["x-team"], "research");
    assert!(
        forwarded["headers"].get("authorization").is_none(),
        "the token stays at the gateway"
    );

    let other = format!("Bearer {}", demo_token("marketing", None));
    let mixed = stack
        .chat(
            prompt(),
            &[("authorization", &other), ("x-team", "research")],
        )
        .await;
    assert_eq!(header(&mixed, "x-semantic-router-decision"), "reasoning");

    let dir = tempfile::tempdir().unwrap();
    let forged = format!(
        "Bearer {}",
        demo_token("research", Some(&untrusted_key(dir.path())))
    );
    let tampered = {
        let real = demo_token("marketing", None);
        let parts: Vec<&str> = real.split('.').collect();
        let forged_claims = demo_token("research", None);
        format!(
            "Bearer {}.{}.{}",
            parts[0],
            forged_claims.split('.').nth(1).unwrap(),
            parts[2]
        )
    };
    stack.a100.clear().await;
    for bad in [forged, tampered] {
        let refused = stack.chat(prompt(), &[("authorization", &bad)]).await;
        assert_eq!(refused.status(), 401);
    }
    assert!(stack.a100.requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_counted_and_arrive_as_the_client_asked() {
    let stack = Stack::start(&[]);
    let mut body = ask("auto", "Solve this equation step by step: 2x + 3 = 7");
    body["stream"] = json!(true);
    let response = stack.chat(body, &[]).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains("usage"), "{text}");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let content: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            let chunk: Value = serde_json::from_str(e).expect("each event is JSON");
            assert_eq!(chunk["choices"].as_array().map(Vec::len), Some(1), "{e}");
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(!content.is_empty());

    let forwarded = only_request(&stack.large).await;
    assert_eq!(
        forwarded["body"]["stream_options"]["include_usage"], true,
        "the router asked for usage"
    );
    let metrics = stack.router.metrics().await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"semantic_router_tokens_total{decision="reasoning",model="Qwen/Qwen3-30B-A3B",pool="qwen3-large-h100",kind="completion"}"#)
        })
        .unwrap_or_else(|| panic!("no completion tokens counted:\n{metrics}"));
    let counted: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted > 0, "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_takes_the_data_planes_limit_and_refuses_bad_json() {
    let stack = Stack::start(&["--max-body-bytes", "4096"]);
    let explain = |body: String| {
        stack
            .client
            .post(format!("http://{}/v1/explain", stack.router.admin))
            .body(body)
            .send()
    };
    let invalid = explain("{not json".to_owned()).await.unwrap();
    assert_eq!(invalid.status(), 400);
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    let missing = explain(r#"{"model":"auto"}"#.to_owned()).await.unwrap();
    assert_eq!(missing.status(), 400);

    let fits = ask("auto", &"x".repeat(3500)).to_string();
    assert!(fits.len() < 4096);
    assert_eq!(explain(fits).await.unwrap().status(), 200);
    let over = ask("auto", &"x".repeat(5000)).to_string();
    assert_eq!(explain(over).await.unwrap().status(), 413);
}
