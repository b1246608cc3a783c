//! The Kubernetes controller against a real API server: resources applied with kubectl drive
//! the live routing table, and the router writes honest status.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::stack::Router;
use crate::support::{ApiServer, eventually, install_crds, poll_until, repo_root};

const POOLS: &str = r#"
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {name: small, namespace: default}
spec:
  models: [{name: small-model, reasoningFamily: qwen3}]
  endpoints: {static: {addresses: ["127.0.0.1:18001"]}}
---
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {name: large, namespace: default}
spec:
  models: [{name: large-model, reasoningFamily: qwen3}]
  endpoints: {service: {name: vllm-large, port: 8000}}
"#;

const ROUTE: &str = r#"
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {name: auto, namespace: default}
spec:
  match: {models: [auto]}
  signals:
    keywords: [{name: math, keywords: [integral]}]
  decisions:
  - name: reasoning
    when: {any: [math]}
    targets: [{pool: large, model: large-model, reasoning: {enabled: true}}]
  defaultTarget: {pool: small, model: small-model}
"#;

const SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: vllm-large-abc
  namespace: default
  labels: {kubernetes.io/service-name: vllm-large}
addressType: IPv4
endpoints:
- addresses: ["10.1.0.7"]
  conditions: {ready: true}
- addresses: ["10.1.0.8"]
  conditions: {ready: false}
ports: [{port: 8000}]
"#;

/// An API server with our CRDs and the built-in kinds the controller watches.
pub(crate) async fn cluster() -> ApiServer {
    let server = ApiServer::start().await;
    install_crds(&server.client()).await;
    install_builtin_kinds(&server).await;
    server
}

/// The built-in kinds the controller watches (served by CRDs on the test API server).
async fn install_builtin_kinds(server: &ApiServer) {
    let builtin = repo_root().join("tests/e2e/crds/builtin.yaml");
    server
        .kubectl_ok(&["apply", "--server-side", "-f", builtin.to_str().unwrap()])
        .await;
    server
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/endpointslices.discovery.k8s.io",
            "crd/leases.coordination.k8s.io",
            "crd/events.events.k8s.io",
        ])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_our_crds_the_router_says_how_to_install_them_and_starts_once_they_are() {
    let server = ApiServer::start().await;
    install_builtin_kinds(&server).await;
    let mut router = Router::launch_kube(server.kubeconfig(), &["--no-leader-election"]);
    let explained = poll_until(Duration::from_secs(30), || async {
        router
            .process
            .logs()
            .contains("kubectl apply --server-side -f crds/semantic-router.yaml")
    })
    .await;
    let logs = router.process.logs();
    assert!(explained, "no word of the missing CRDs:\n{logs}");
    assert!(
        logs.contains("does not serve SemanticRoute") || logs.contains("does not serve ModelPool"),
        "{logs}"
    );
    assert!(!router.is_ready(), "not ready without the CRDs");

    install_crds(&server.client()).await;
    router.wait_ready();
}

/// `kubectl apply --server-side` of a YAML text.
async fn apply(server: &ApiServer, yaml: &str) {
    let file = server.dir().join(format!("apply-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    server
        .kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()])
        .await;
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn get(server: &ApiServer, what: &str) -> Value {
    serde_json::from_str(&server.kubectl_ok(&["get", what, "-o", "json"]).await).unwrap()
}

fn condition<'a>(object: &'a Value, kind: &str) -> &'a Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// `(type, reason)` of the Events recorded about `kind`/`name`, oldest first.
async fn events_about(server: &ApiServer, kind: &str, name: &str) -> Vec<(String, String)> {
    let list = get(server, "events.events.k8s.io").await;
    let mut events: Vec<(String, String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("eventTime"), text("type"), text("reason"))
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, t, r)| (t, r)).collect()
}

fn router(server: &ApiServer) -> Router {
    Router::start_kube(server.kubeconfig(), &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn applied_policy_routes_within_a_second_and_follows_updates_and_deletes() {
    let server = cluster().await;
    let router = router(&server);
    let before = router.explain("auto", "what is an integral?", &[]).await;
    assert!(before["route"].is_null(), "{before}");

    apply(&server, POOLS).await;
    apply(&server, SLICE).await;
    let applied = Instant::now();
    apply(&server, ROUTE).await;
    eventually("the route in the table", Duration::from_secs(5), || async {
        let explained = router.explain("auto", "what is an integral?", &[]).await;
        explained["decision"] == "reasoning" && explained["target"].is_object()
    })
    .await;
    let elapsed = applied.elapsed();
    let routed = router.explain("auto", "what is an integral?", &[]).await;
    eprintln!("kubectl apply of the route -> live table: {elapsed:?} (includes kubectl's own run)");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(
        routed["target"]["destination"], "10.1.0.7:8000",
        "ready EndpointSlice endpoints only"
    );

    apply(
        &server,
        &ROUTE.replace("keywords: [integral]", "keywords: [derivative]"),
    )
    .await;
    eventually("the update", Duration::from_secs(5), || async {
        router.explain("auto", "what is an integral?", &[]).await["decision"] == "default"
    })
    .await;

    server
        .kubectl_ok(&["delete", "semanticroute", "auto"])
        .await;
    eventually("the delete", Duration::from_secs(5), || async {
        router.explain("auto", "what is an integral?", &[]).await["route"].is_null()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_leader_election_changes_keep_flowing_and_status_is_written() {
    let server = cluster().await;
    let router = Router::start_kube(server.kubeconfig(), &["--no-leader-election"]);
    apply(&server, POOLS).await;
    apply(&server, SLICE).await;
    apply(&server, ROUTE).await;
    eventually("the route", Duration::from_secs(10), || async {
        router.explain("auto", "integral", &[]).await["decision"] == "reasoning"
    })
    .await;
    apply(
        &server,
        &ROUTE.replace("keywords: [integral]", "keywords: [derivative]"),
    )
    .await;
    eventually("the update", Duration::from_secs(10), || async {
        router.explain("auto", "integral", &[]).await["decision"] == "default"
    })
    .await;
    eventually("status written", Duration::from_secs(10), || async {
        let route = get(&server, "semanticroute/auto").await;
        route["status"]["observedGeneration"] == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_is_honest_and_tracks_generation() {
    let server = cluster().await;
    let _router = router(&server);
    apply(&server, POOLS).await;
    // The route only once the router has seen the pools: applied together, the route can
    // reach the router's watch first and be (rightly) unresolved for a moment, with Events.
    eventually("the pools seen", Duration::from_secs(10), || async {
        let (small, large) = (
            get(&server, "modelpool/small").await,
            get(&server, "modelpool/large").await,
        );
        [small, large].iter().all(|pool| {
            condition(pool, "Ready")["reason"]
                .as_str()
                .is_some_and(|r| r != "Pending")
        })
    })
    .await;
    apply(&server, ROUTE).await;

    eventually(
        "Accepted and ResolvedRefs on the route",
        Duration::from_secs(10),
        || async {
            let route = get(&server, "semanticroute/auto").await;
            condition(&route, "Accepted")["status"] == "True"
                && condition(&route, "ResolvedRefs")["status"] == "True"
                && route["status"]["observedGeneration"] == route["metadata"]["generation"]
        },
    )
    .await;
    let pool = get(&server, "modelpool/large").await;
    assert_eq!(condition(&pool, "Ready")["status"], "False", "{pool}");
    assert_eq!(condition(&pool, "Ready")["reason"], "NoReadyEndpoints");
    let warning = ("Warning".to_string(), "NoReadyEndpoints".to_string());
    eventually(
        "a Warning Event on the pool without endpoints",
        Duration::from_secs(10),
        || async { events_about(&server, "ModelPool", "large").await == [warning.clone()] },
    )
    .await;
    assert!(
        events_about(&server, "SemanticRoute", "auto")
            .await
            .is_empty(),
        "a route healthy from the start records nothing: {:?}",
        events_about(&server, "SemanticRoute", "auto").await
    );

    apply(&server, SLICE).await;
    eventually(
        "the pool Ready with one endpoint",
        Duration::from_secs(10),
        || async {
            let pool = get(&server, "modelpool/large").await;
            condition(&pool, "Ready")["status"] == "True" && pool["status"]["readyEndpoints"] == 1
        },
    )
    .await;
    eventually(
        "a Normal Event when the pool recovers",
        Duration::from_secs(10),
        || async {
            events_about(&server, "ModelPool", "large").await
                == [warning.clone(), ("Normal".into(), "Ready".into())]
        },
    )
    .await;

    apply(
        &server,
        &ROUTE.replace(
            "pool: large, model: large-model",
            "pool: huge, model: large-model",
        ),
    )
    .await;
    eventually(
        "ResolvedRefs=False naming the pool",
        Duration::from_secs(10),
        || async {
            let route = get(&server, "semanticroute/auto").await;
            let resolved = condition(&route, "ResolvedRefs");
            resolved["status"] == "False"
                && resolved["reason"] == "PoolNotFound"
                && resolved["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("\"huge\""))
                && route["metadata"]["generation"] == 2
                && route["status"]["observedGeneration"] == 2
                && resolved["observedGeneration"] == 2
        },
    )
    .await;
    let route = get(&server, "semanticroute/auto").await;
    assert_eq!(
        condition(&route, "Accepted")["status"],
        "True",
        "the default keeps it in force"
    );
    assert_eq!(route["status"]["decisions"], 0);
    eventually(
        "a Warning Event naming the failure on the route",
        Duration::from_secs(10),
        || async {
            events_about(&server, "SemanticRoute", "auto").await
                == [("Warning".into(), "PoolNotFound".into())]
        },
    )
    .await;

    let lease = get(&server, "lease.coordination.k8s.io/semantic-router").await;
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{lease}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_namespaces_each_govern_their_own_auto_for_their_own_requests() {
    let server = cluster().await;
    let router = router(&server);
    apply(&server, POOLS).await;
    apply(&server, ROUTE).await;
    apply(
        &server,
        r#"
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {name: small, namespace: team-a}
spec:
  models: [{name: team-a-model}]
  endpoints: {static: {addresses: ["127.0.0.1:18009"]}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {name: auto, namespace: team-a}
spec:
  match: {models: [auto], scope: Namespace}
  defaultTarget: {pool: small, model: team-a-model}
"#,
    )
    .await;
    let marked = [("x-route-namespace", "team-a")];
    eventually(
        "team-a's requests to its route",
        Duration::from_secs(10),
        || async { router.explain("auto", "hello", &marked).await["route"] == "team-a/auto" },
    )
    .await;
    let theirs = router.explain("auto", "hello", &marked).await;
    assert_eq!(theirs["target"]["model"], "team-a-model", "{theirs}");
    let unmarked = router.explain("auto", "hello", &[]).await;
    assert_eq!(unmarked["route"], "default/auto", "{unmarked}");
    let other = router
        .explain("auto", "hello", &[("x-route-namespace", "team-b")])
        .await;
    assert_eq!(
        other["route"], "default/auto",
        "another namespace's: {other}"
    );
    let route_in = |name: &'static str, namespace: &'static str| {
        let server = &server;
        async move {
            let args = ["get", "semanticroute", name, "-n", namespace, "-o", "json"];
            serde_json::from_str::<Value>(&server.kubectl_ok(&args).await).unwrap()
        }
    };
    for namespace in ["default", "team-a"] {
        eventually("both routes Accepted", Duration::from_secs(10), || async {
            condition(&route_in("auto", namespace).await, "Accepted")["status"] == "True"
        })
        .await;
    }
    let wide = server
        .kubectl_ok(&["get", "sroute", "--all-namespaces", "-o", "wide"])
        .await;
    let row_of = |namespace: &str| {
        wide.lines()
            .find(|l| l.starts_with(namespace) && l.contains("auto"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row_of("team-a").contains("Namespace"), "{wide}");
    assert!(row_of("default").contains("Cluster"), "{wide}");

    // A pool of another namespace serves a route only once its owners admit the route's.
    apply(
        &server,
        r#"
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {name: shared, namespace: team-a}
spec:
  match: {models: [shared], scope: Namespace}
  defaultTarget: {pool: small, namespace: default, model: small-model}
"#,
    )
    .await;
    eventually("RefNotPermitted", Duration::from_secs(10), || async {
        condition(&route_in("shared", "team-a").await, "ResolvedRefs")["reason"]
            == "RefNotPermitted"
    })
    .await;
    let refused = router.explain("shared", "hello", &marked).await;
    assert!(refused["route"].is_null(), "not in force: {refused}");
    let granting = POOLS.replacen(
        "endpoints: {static",
        "allowedRouteNamespaces: [team-a]\n  endpoints: {static",
        1,
    );
    apply(&server, &granting).await;
    eventually("the grant honoured", Duration::from_secs(10), || async {
        let explained = router.explain("shared", "hello", &marked).await;
        explained["target"]["pool"] == "small" && explained["route"] == "team-a/shared"
    })
    .await;
    let shared = route_in("shared", "team-a").await;
    assert_eq!(condition(&shared, "Ready")["status"], "True", "{shared}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_used_pool_leaves_the_default_in_force() {
    let server = cluster().await;
    let router = router(&server);
    apply(&server, POOLS).await;
    apply(&server, SLICE).await;
    apply(&server, ROUTE).await;
    eventually(
        "routing by the decision",
        Duration::from_secs(10),
        || async { router.explain("auto", "integral", &[]).await["decision"] == "reasoning" },
    )
    .await;
    server.kubectl_ok(&["delete", "modelpool", "large"]).await;
    eventually("the default in force", Duration::from_secs(10), || async {
        let explained = router.explain("auto", "integral", &[]).await;
        explained["decision"] == "default" && explained["target"]["pool"] == "small"
    })
    .await;
    eventually("ResolvedRefs=False", Duration::from_secs(10), || async {
        let route = get(&server, "semanticroute/auto").await;
        condition(&route, "ResolvedRefs")["reason"] == "PoolNotFound"
    })
    .await;
    // The route still routes (its default), but it is not Ready, and `kubectl get` says so.
    let route = get(&server, "semanticroute/auto").await;
    assert_eq!(condition(&route, "Ready")["status"], "False", "{route}");
    assert_eq!(condition(&route, "Ready")["reason"], "PoolNotFound");
    assert_eq!(
        route["status"]["conditions"][0]["type"], "Ready",
        "Ready first"
    );
    let row = server.kubectl_ok(&["get", "sroute", "auto"]).await;
    assert!(
        row.contains("False") && row.contains("PoolNotFound"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reasoning_for_a_model_without_a_switch_is_degraded_and_explained_as_applied() {
    let server = cluster().await;
    let router = router(&server);
    // The large model's pool says nothing of its family: `none`, the default.
    let pools = POOLS.replace(
        "{name: large-model, reasoningFamily: qwen3}",
        "{name: large-model}",
    );
    apply(&server, &pools).await;
    apply(&server, SLICE).await;
    apply(&server, ROUTE).await;
    eventually(
        "Degraded ReasoningUnsupported",
        Duration::from_secs(10),
        || async {
            let route = get(&server, "semanticroute/auto").await;
            condition(&route, "Degraded")["reason"] == "ReasoningUnsupported"
        },
    )
    .await;
    let route = get(&server, "semanticroute/auto").await;
    let degraded = condition(&route, "Degraded");
    assert_eq!(degraded["status"], "True", "{route}");
    assert!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"large-model\"") && m.contains("reasoningFamily")),
        "the message names the model and the field: {degraded}"
    );
    assert_eq!(condition(&route, "Ready")["status"], "False", "{route}");
    assert_eq!(condition(&route, "Ready")["reason"], "ReasoningUnsupported");
    assert_eq!(
        condition(&route, "Accepted")["status"],
        "True",
        "in force as written"
    );
    // The decision still routes, and says the body is left as it is rather than "on".
    let explained = router.explain("auto", "integral", &[]).await;
    assert_eq!(explained["decision"], "reasoning", "{explained}");
    assert_eq!(
        explained["target"]["reasoning"], "unsupported",
        "{explained}"
    );
    let row = server
        .kubectl_ok(&["get", "sroute", "auto", "-o", "wide"])
        .await;
    assert!(
        row.contains("False") && row.contains("ReasoningUnsupported"),
        "{row}"
    );
    eprintln!("kubectl get sroute auto -o wide, reasoning on a model without a switch:\n{row}");
    // Contains, not equals: applied together, the route can reach the router before its
    // pools and be (rightly) unresolved for a moment, with an Event of its own.
    let warning = ("Warning".to_string(), "ReasoningUnsupported".to_string());
    eventually("a Warning Event", Duration::from_secs(10), || async {
        events_about(&server, "SemanticRoute", "auto")
            .await
            .contains(&warning)
    })
    .await;

    // Naming the family mends it.
    apply(&server, POOLS).await;
    eventually("Ready again", Duration::from_secs(10), || async {
        let route = get(&server, "semanticroute/auto").await;
        condition(&route, "Ready")["status"] == "True"
            && condition(&route, "Degraded")["status"] == "False"
    })
    .await;
    assert_eq!(
        router.explain("auto", "integral", &[]).await["target"]["reasoning"],
        "on"
    );
}

/// Whether `kubectl wait --for=condition=Ready` finds the route Ready within `timeout`.
async fn kubectl_waits_ready(server: &ApiServer, timeout: &str) -> bool {
    server
        .kubectl(&[
            "wait",
            "--for=condition=Ready",
            "semanticroute/auto",
            &format!("--timeout={timeout}"),
        ])
        .await
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_no_router_has_seen_is_not_ready_to_kubectl_wait_and_shows_as_behind() {
    let server = cluster().await;
    let router = Router::start_kube(server.kubeconfig(), &["--no-leader-election"]);
    apply(&server, POOLS).await;
    apply(&server, SLICE).await;
    apply(&server, ROUTE).await;
    assert!(kubectl_waits_ready(&server, "20s").await);
    drop(router);

    apply(
        &server,
        &ROUTE.replace("keywords: [integral]", "keywords: [derivative]"),
    )
    .await;
    let route = get(&server, "semanticroute/auto").await;
    assert_eq!(route["metadata"]["generation"], 2);
    assert_eq!(route["status"]["observedGeneration"], 1, "{route}");
    // The last Ready is for generation 1: `kubectl wait` does not take it for this one.
    assert!(
        !kubectl_waits_ready(&server, "2s").await,
        "a Ready for an older generation must not satisfy kubectl wait"
    );
    let wide = server
        .kubectl_ok(&[
            "get",
            "sroute",
            "auto",
            "-o",
            "custom-columns=GENERATION:.metadata.generation,OBSERVED:.status.observedGeneration",
            "--no-headers",
        ])
        .await;
    assert_eq!(wide.split_whitespace().collect::<Vec<_>>(), ["2", "1"]);
    let header = server
        .kubectl_ok(&["get", "sroute", "auto", "-o", "wide"])
        .await;
    eprintln!("kubectl get sroute auto -o wide, edited while no router runs:\n{header}");
    let columns: Vec<&str> = header
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(
        columns.contains(&"GENERATION") && columns.contains(&"OBSERVED"),
        "-o wide shows how far behind status is: {header}"
    );

    let _router = Router::start_kube(server.kubeconfig(), &["--no-leader-election"]);
    assert!(kubectl_waits_ready(&server, "20s").await);
    let route = get(&server, "semanticroute/auto").await;
    assert_eq!(route["status"]["observedGeneration"], 2, "{route}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_table_keeps_serving_while_the_api_server_is_away() {
    let mut server = cluster().await;
    let router = router(&server);
    apply(&server, POOLS).await;
    apply(&server, SLICE).await;
    apply(&server, ROUTE).await;
    eventually(
        "routing by the decision",
        Duration::from_secs(10),
        || async { router.explain("auto", "integral", &[]).await["decision"] == "reasoning" },
    )
    .await;

    server.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let explained = router.explain("auto", "integral", &[]).await;
    assert_eq!(
        explained["decision"], "reasoning",
        "still routed by the last table"
    );
    eventually("watch errors counted", Duration::from_secs(10), || async {
        router
            .metrics()
            .await
            .lines()
            .any(|l| l.starts_with("semantic_router_kube_watch_errors_total") && !l.ends_with(" 0"))
    })
    .await;

    server.restart().await;
    apply(
        &server,
        &ROUTE.replace("keywords: [integral]", "keywords: [derivative]"),
    )
    .await;
    eventually(
        "the change after the API server returned",
        Duration::from_secs(20),
        || async { router.explain("auto", "integral", &[]).await["decision"] == "default" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_resources_are_refused_by_the_api_server() {
    let server = cluster().await;
    let file = server.dir().join("bad.yaml");
    std::fs::write(
        &file,
        POOLS.replace(
            "{static: {addresses: [\"127.0.0.1:18001\"]}}",
            "{static: {addresses: [\"127.0.0.1:18001\"]}, gateway: {clusterName: x}}",
        ),
    )
    .unwrap();
    let out = server
        .kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exactly one of selector, service, static or gateway"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_applied_with_kubectl_routes_requests_through_envoy() {
    use crate::support::envoy::{Envoy, EnvoyConfig, free_port};
    use crate::support::stack::Sim;

    let server = cluster().await;
    let (small, large) = (Sim::start("small"), Sim::start("large"));
    let router = router(&server);
    let envoy = Envoy::start(EnvoyConfig {
        listen_port: free_port(),
        admin_port: free_port(),
        ext_proc_addr: router.extproc,
        ext_proc_replicas: Vec::new(),
        endpoints: vec![small.addr, large.addr],
        passthrough: small.addr,
        gateway_clusters: Vec::new(),
        with_ext_proc: true,
        buffered: false,
    });
    let pools = POOLS
        .replace("127.0.0.1:18001", &small.addr.to_string())
        .replace(
            "{service: {name: vllm-large, port: 8000}}",
            &format!("{{static: {{addresses: [\"{}\"]}}}}", large.addr),
        );
    apply(&server, &pools).await;
    apply(&server, ROUTE).await;

    let client = reqwest::Client::new();
    let ask = |prompt: &'static str| {
        let client = client.clone();
        let url = format!("{}/v1/chat/completions", envoy.url());
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": prompt}]}).to_string())
                .send()
                .await
                .expect("envoy answers")
        }
    };
    eventually(
        "the kubectl-applied route in force",
        Duration::from_secs(10),
        || async {
            ask("solve the integral")
                .await
                .headers()
                .get("x-sim-name")
                .is_some_and(|v| v == "large")
        },
    )
    .await;
    let simple = ask("hello").await;
    assert_eq!(simple.status(), 200);
    assert_eq!(simple.headers()["x-sim-name"], "small");
    assert_eq!(simple.headers()["x-semantic-router-model"], "small-model");
    let received = small.requests().await;
    let last = received.last().expect("small received the request");
    assert_eq!(last["body"]["model"], "small-model");
    assert_eq!(
        last["body"]["chat_template_kwargs"]["enable_thinking"],
        false
    );
}
