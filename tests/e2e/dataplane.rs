//! The data plane behind a real Envoy: requests from a client, through Envoy and the router's
//! ext_proc, to simulated model servers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::apiserver::ApiServer;
use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
use crate::support::stack::{Router, Sim};

/// Three simulated pools, the router on a policy naming them, and Envoy in front.
pub(crate) struct Stack {
    pub(crate) small: Sim,
    pub(crate) large: Sim,
    pub(crate) a100: Sim,
    pub(crate) manifests: tempfile::TempDir,
    pub(crate) router: Router,
    pub(crate) envoy: Envoy,
    pub(crate) client: reqwest::Client,
}

pub(crate) fn write_policy(dir: &Path, small: &Sim, large: &Sim, a100: &Sim) {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let pools = std::fs::read_to_string(samples.join("pools.yaml"))
        .unwrap()
        .replace("127.0.0.1:8001", &small.addr.to_string())
        .replace("127.0.0.1:8002", &large.addr.to_string())
        .replace("127.0.0.1:8003", &a100.addr.to_string());
    std::fs::write(dir.join("pools.yaml"), pools).unwrap();
    std::fs::copy(samples.join("route.yaml"), dir.join("route.yaml")).unwrap();
    std::fs::write(
        dir.join("offline.yaml"),
        r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {name: offline}
spec:
  models: [{name: offline-model}]
  endpoints: {selector: {matchLabels: {app: nothing}}, targetPort: 8000}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {name: offline}
spec:
  match: {models: [offline]}
  defaultTarget: {pool: offline, model: offline-model}
"#,
    )
    .unwrap();
}

impl Stack {
    pub(crate) fn start(router_flags: &[&str]) -> Self {
        Self::start_with(router_flags, false)
    }

    /// The same stack with Envoy's ext_proc filter in `request_body_mode: BUFFERED`.
    pub(crate) fn start_buffered() -> Self {
        Self::start_with(&[], true)
    }

    fn start_with(router_flags: &[&str], buffered: bool) -> Self {
        Self::start_edited(router_flags, buffered, |config| config)
    }

    /// The stack with Envoy's rendered config passed through `edit` first.
    pub(crate) fn start_edited(
        router_flags: &[&str],
        buffered: bool,
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let (small, large, a100) = (Sim::start("small"), Sim::start("large"), Sim::start("a100"));
        let manifests = tempfile::tempdir().unwrap();
        write_policy(manifests.path(), &small, &large, &a100);
        let router = Router::start(manifests.path(), router_flags);
        Self::front((small, large, a100), manifests, router, buffered, edit)
    }

    /// The same stack with the router watching `server`, the policy applied there with
    /// `kubectl apply -f` of the manifests directory.
    pub(crate) async fn start_kube(server: &ApiServer) -> Self {
        let (small, large, a100) = (Sim::start("small"), Sim::start("large"), Sim::start("a100"));
        let manifests = tempfile::tempdir().unwrap();
        write_policy(manifests.path(), &small, &large, &a100);
        server
            .kubectl_ok(&["apply", "-f", manifests.path().to_str().unwrap()])
            .await;
        let router = Router::start_kube(server.kubeconfig(), &["--no-leader-election"]);
        Self::front((small, large, a100), manifests, router, false, |config| {
            config
        })
    }

    /// Envoy (its rendered config passed through `edit`) in front of `router`, whose policy
    /// names the three simulated pools.
    fn front(
        (small, large, a100): (Sim, Sim, Sim),
        manifests: tempfile::TempDir,
        router: Router,
        buffered: bool,
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let config = EnvoyConfig {
            listen_port: free_port(),
            admin_port: free_port(),
            ext_proc_addr: router.extproc,
            ext_proc_replicas: Vec::new(),
            endpoints: vec![small.addr, large.addr, a100.addr],
            passthrough: small.addr,
            gateway_clusters: Vec::new(),
            with_ext_proc: true,
            buffered,
        };
        let envoy = Envoy::start_edited(config, edit);
        Self {
            small,
            large,
            a100,
            manifests,
            router,
            envoy,
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn chat(&self, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/v1/chat/completions", self.envoy.url()))
            .body(body.to_string())
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.expect("envoy answers")
    }

    /// Envoy's and the router's logs, for failure messages.
    pub(crate) fn logs(&self) -> String {
        format!(
            "--- envoy ---\n{}\n--- router ---\n{}",
            self.envoy.logs(),
            self.router.process.logs()
        )
    }

    pub(crate) async fn raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/chat/completions", self.envoy.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("envoy answers")
    }
}

pub(crate) fn ask(model: &str, prompt: &str) -> Value {
    json!({"model": model, "temperature": 0.2, "user": "u-42",
           "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]})
}

pub(crate) fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The only request `sim` received since it was last cleared.
pub(crate) async fn only_request(sim: &Sim) -> Value {
    let requests = sim.requests().await;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    requests.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_reach_the_right_pool_with_the_right_reasoning() {
    let stack = Stack::start(&[]);

    let simple = stack
        .chat(ask("auto", "What is the capital of North Carolina?"), &[])
        .await;
    assert_eq!(simple.status(), 200, "{}", stack.envoy.logs());
    assert_eq!(header(&simple, "x-sim-name"), "small");
    assert_eq!(
        header(&simple, "x-semantic-router-model"),
        "Qwen/Qwen3-1.7B"
    );
    assert_eq!(header(&simple, "x-semantic-router-decision"), "default");
    let received = only_request(&stack.small).await;
    let body = &received["body"];
    assert_eq!(body["model"], "Qwen/Qwen3-1.7B");
    assert_eq!(body["chat_template_kwargs"]["enable_thinking"], false);
    assert_eq!(body["temperature"], 0.2, "other fields are kept");
    assert_eq!(body["user"], "u-42");
    assert_eq!(
        body["messages"][1]["content"],
        "What is the capital of North Carolina?"
    );
    let headers = &received["headers"];
    assert_eq!(headers["x-semantic-router-pool"], "qwen3-small");
    assert_eq!(headers["x-semantic-router-reasoning"], "off");
    assert_eq!(
        headers["x-gateway-destination-endpoint"],
        stack.small.addr.to_string()
    );
    let length: usize = headers["content-length"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        length,
        serde_json::to_vec(body).unwrap().len(),
        "content-length fits the new body"
    );

    let math = stack
        .chat(
            ask(
                "auto",
                "Compute the integral of x^2 from 0 to 3, step by step.",
            ),
            &[],
        )
        .await;
    assert_eq!(math.status(), 200);
    assert_eq!(header(&math, "x-sim-name"), "large");
    assert_eq!(header(&math, "x-semantic-router-decision"), "reasoning");
    let body = &only_request(&stack.large).await["body"];
    assert_eq!(body["model"], "Qwen/Qwen3-30B-A3B");
    assert_eq!(body["chat_template_kwargs"]["enable_thinking"], true);

    let token = format!("Bearer {}", crate::support::demo_token("research", None));
    let research = stack
        .chat(
            ask("auto", "Prove this theorem about primes."),
            &[("authorization", &token)],
        )
        .await;
    assert_eq!(research.status(), 200);
    assert_eq!(header(&research, "x-sim-name"), "a100");
    assert_eq!(
        header(&research, "x-semantic-router-decision"),
        "research-reasoning"
    );
    assert_eq!(
        only_request(&stack.a100).await["body"]["model"],
        "Qwen/Qwen3-30B-A3B"
    );

    let metrics = stack.router.metrics().await;
    assert!(
        metrics.contains(r#"semantic_router_requests_total{decision="reasoning",model="Qwen/Qwen3-30B-A3B",pool="qwen3-large-h100",outcome="upstream"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("semantic_router_tokens_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("semantic_router_routing_table_generation 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_model_list_across_pools_and_aliases() {
    let stack = Stack::start(&[]);
    let response = stack
        .client
        .get(format!("{}/v1/models", stack.envoy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-semantic-router-path"), "models");
    let list: Value = response.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "Qwen/Qwen3-1.7B",
            "Qwen/Qwen3-30B-A3B",
            "auto",
            "offline",
            "offline-model"
        ]
    );
    for sim in [&stack.small, &stack.large, &stack.a100] {
        assert!(
            sim.requests().await.is_empty(),
            "the router answers the list itself"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_openai_shaped_errors() {
    let stack = Stack::start(&["--max-body-bytes", "4096"]);
    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (stack.raw("{not json").await, 400, "invalid_json"),
        (
            stack.raw(r#"{"model":"auto"}"#).await,
            400,
            "missing_messages",
        ),
        (
            stack.raw(r#"{"model":"auto","messages":"hi"}"#).await,
            400,
            "invalid_field_type",
        ),
        (
            stack.chat(ask("auto", &"long ".repeat(2000)), &[]).await,
            413,
            "body_too_large",
        ),
        (
            stack.chat(ask("offline", "hi"), &[]).await,
            503,
            "no_ready_endpoint",
        ),
    ];
    for (response, status, code) in cases {
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(header(&response, "x-semantic-router-path"), "error");
        let body: Value = response.json().await.expect("JSON error body");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(body["error"]["type"].is_string());
    }
    for sim in [&stack.small, &stack.large, &stack.a100] {
        assert!(
            sim.requests().await.is_empty(),
            "no refused request reaches a backend"
        );
    }
    let metrics = stack.router.metrics().await;
    assert!(
        metrics.contains(r#"semantic_router_errors_total{reason="body_too_large"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_responses_arrive_intact_and_are_counted() {
    let stack = Stack::start(&[]);
    let mut body = ask("auto", "Solve this equation step by step: 2x + 3 = 7");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = stack.chat(body, &[]).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("text/event-stream"));
    assert_eq!(header(&response, "x-sim-name"), "large");
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("each event is JSON"))
        .collect();
    assert!(chunks.len() >= 2, "{text}");
    let usage = &chunks.last().unwrap()["usage"];
    let completion = usage["completion_tokens"].as_u64().expect("usage chunk");
    let metrics = stack.router.metrics().await;
    let line = format!(
        r#"semantic_router_tokens_total{{decision="reasoning",model="Qwen/Qwen3-30B-A3B",pool="qwen3-large-h100",kind="completion"}} {completion}"#
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_change_reroutes_the_next_request_without_failures() {
    // One runtime thread: serving, the file watch and the swap share it, as on a small pod.
    let stack = Arc::new(Stack::start(&["--worker-threads", "1"]));
    let threads = stack.router.process.thread_names();
    let workers = threads.iter().filter(|t| *t == "tokio-rt-worker").count();
    assert_eq!(workers, 1, "{threads:?}");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stack, stop) = (stack.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = stack.chat(ask("auto", "hello there"), &[]).await;
                statuses.push((r.status().as_u16(), header(&r, "x-sim-name").to_owned()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let route = stack.manifests.path().join("route.yaml");
    let text = std::fs::read_to_string(&route).unwrap();
    let changed = text.replace(
        "  defaultTarget:\n    pool: qwen3-small\n    model: Qwen/Qwen3-1.7B",
        "  defaultTarget:\n    pool: qwen3-large-h100\n    model: Qwen/Qwen3-30B-A3B",
    );
    assert_ne!(text, changed);
    std::fs::write(&route, changed).unwrap();
    crate::support::eventually(
        "a request served by the new default",
        Duration::from_secs(5),
        || async {
            let r = stack.chat(ask("auto", "hello there"), &[]).await;
            header(&r, "x-sim-name") == "large"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.len() >= 5, "{statuses:?}");
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(statuses.first().unwrap().1, "small");
    assert_eq!(statuses.last().unwrap().1, "large");
    let switched = statuses.iter().position(|(_, n)| n == "large").unwrap();
    assert!(
        statuses[switched..].iter().all(|(_, n)| n == "large"),
        "no flapping back: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_and_graceful_shutdown() {
    let mut stack = Stack::start(&[]);
    let explained: Value = stack
        .client
        .post(format!("http://{}/v1/explain", stack.router.admin))
        .header("x-team", "research")
        .body(ask("auto", "What is the derivative of sin x?").to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(explained["decision"], "research-reasoning");
    assert_eq!(
        explained["rule"],
        "all [team-research] and any [stem, code, stem-domain, multi-step]"
    );
    assert_eq!(explained["target"]["pool"], "qwen3-large-a100");
    let signals = explained["signals"].as_array().unwrap();
    let stem = signals.iter().find(|s| s["name"] == "stem").unwrap();
    assert_eq!(stem["matched"], true);

    let status = stack
        .router
        .process
        .terminate()
        .expect("router exits on SIGTERM");
    assert!(status.success(), "{}", stack.router.process.logs());
}
