//! The Helm chart (`charts/semantic-router/`) checked by the tools that consume it: `helm lint`
//! and `helm template` (Helm 4 from `make tools`), `kubernetes-validate --strict` on every
//! built-in object, `envoy --mode validate` on the bundled Envoy's config, the real test API
//! server for the CRDs, the samples and the gateway options' custom resources, and the router
//! binary itself started with the arguments the chart renders.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::envoy::{Envoy, EnvoyConfig, free_port, validate_config_file};
use crate::support::stack::{Router, Sim};
use crate::support::{ApiServer, eventually, repo_root, tool, yaml_documents, yaml_files};

const RELEASE: &str = "sr";
const NAMESPACE: &str = "semantic-router";

/// The value sets every rendering test covers: defaults, OpenShift, each gateway option, and
/// every optional object switched on.
pub const VALUE_SETS: &[(&str, &[&str])] = &[
    ("defaults", &[]),
    (
        "openshift",
        &["openshift.enabled=true", "gateway.mode=envoy"],
    ),
    ("bundled envoy (ORIGINAL_DST)", &["gateway.mode=envoy"]),
    ("static tier", &["encoder.staticTier.enabled=true"]),
    (
        "bundled envoy (override_host)",
        &[
            "gateway.mode=envoy",
            "gateway.envoy.endpointServices[0].host=vllm-large.models.svc.cluster.local",
            "gateway.envoy.endpointServices[0].port=8000",
        ],
    ),
    (
        "envoy gateway",
        &[
            "gateway.mode=envoyGateway",
            "gateway.envoyGateway.gatewayName=inference",
            "gateway.envoyGateway.gatewayNamespace=gateways",
        ],
    ),
    (
        "inference pool",
        &[
            "gateway.mode=inferencePool",
            "gateway.inferencePool.selector.app=vllm",
        ],
    ),
    (
        "everything optional on",
        &[
            "gateway.mode=envoy",
            "networkPolicy.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.dashboard.enabled=true",
            "encoder.cache.existingClaim=hf-cache",
            "router.watchNamespace=models",
        ],
    ),
    (
        "one replica, no encoder",
        &[
            "replicaCount=1",
            "leaderElection.enabled=false",
            "encoder.enabled=false",
            "podDisruptionBudget.enabled=false",
        ],
    ),
];

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/semantic-router")
}

/// `.tools/helm/helm` with `args`, from the repository root.
pub fn helm(args: &[&str]) -> Output {
    Command::new(tool(".tools/helm/helm"))
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("run helm")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` with `--set` values (and CRDs when asked): the rendered documents as JSON.
pub fn render(sets: &[&str], include_crds: bool) -> Vec<Value> {
    let out = render_raw(sets, include_crds);
    assert!(
        out.status.success(),
        "helm template --set {sets:?} failed:\n{}",
        text(&out)
    );
    let yaml = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    parse_documents(&yaml)
}

fn render_raw(sets: &[&str], include_crds: bool) -> Output {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        NAMESPACE,
    ];
    if include_crds {
        args.push("--include-crds");
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args)
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("helm rendered invalid YAML: {e}\n{yaml}"))
        })
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::to_value(doc).expect("rendered YAML is JSON-compatible"))
        .collect()
}

/// Objects of built-in Kubernetes kinds (core group or a `*.k8s.io` group other than CRDs).
fn is_builtin(doc: &Value) -> bool {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let third_party = ["gateway.networking.k8s.io", "inference.networking.k8s.io"];
    (group.is_empty() || group.ends_with(".k8s.io") && !third_party.contains(&group))
        && doc["kind"] != "CustomResourceDefinition"
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let all: Vec<String> = docs
                .iter()
                .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} rendered; got {all:?}")
        })
}

fn full_name() -> String {
    format!("{RELEASE}-semantic-router")
}

#[test]
fn chart_lints_clean() {
    let chart = chart_dir();
    for (what, sets) in VALUE_SETS {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        for set in *sets {
            args.extend(["--set", set]);
        }
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint ({what}) failed:\n{}",
            text(&out)
        );
    }
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let generated = std::fs::read_to_string(repo_root().join("crds/semantic-router.yaml"))
        .expect("read crds/semantic-router.yaml");
    let in_chart = std::fs::read_to_string(chart_dir().join("crds/semantic-router.yaml"))
        .expect("read charts/semantic-router/crds/semantic-router.yaml");
    assert!(
        generated == in_chart,
        "charts/semantic-router/crds/semantic-router.yaml differs from crds/semantic-router.yaml: \
         run `make crds` (it writes both)"
    );
}

#[test]
fn chart_rbac_is_config_rbac() {
    let config: Vec<Value> = yaml_documents(&repo_root().join("config/rbac/rbac.yaml"))
        .into_iter()
        .map(|d| serde_json::to_value(d).unwrap())
        .collect();
    let rendered = render(&[], false);
    let rules = |docs: &[Value], kind: &str| -> Vec<Value> {
        let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "expected one {kind}");
        found[0]["rules"].as_array().expect("rules").clone()
    };
    for kind in ["ClusterRole", "Role"] {
        assert_eq!(
            rules(&rendered, kind),
            rules(&config, kind),
            "the chart's {kind} rules differ from config/rbac/rbac.yaml: change both"
        );
    }
    // Bindings name the chart's ServiceAccount in the release namespace.
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let binding = rendered.iter().find(|d| d["kind"] == kind).unwrap();
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": full_name(), "namespace": NAMESPACE}]),
            "{kind}"
        );
    }
}

/// Every pod spec the documents hold (Deployments), with the object's name.
fn pod_specs(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_owned(),
                &d["spec"]["template"]["spec"],
            )
        })
        .collect()
}

/// OpenShift restricted-v2 (and the Kubernetes "restricted" standard): no fixed UID or GID,
/// non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, read-only root.
fn assert_restricted(name: &str, pod: &Value) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{name}: pod runAsNonRoot");
    assert_eq!(
        psc["seccompProfile"]["type"], "RuntimeDefault",
        "{name}: pod seccomp"
    );
    for field in ["runAsUser", "runAsGroup", "fsGroup", "supplementalGroups"] {
        assert!(
            psc.get(field).is_none(),
            "{name}: pod fixes {field} (restricted-v2 assigns it)"
        );
    }
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod.get(key).is_none(), "{name}: {key}");
    }
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        .collect();
    assert!(!containers.is_empty(), "{name}: no containers");
    for c in containers {
        let cname = format!("{name}/{}", c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{cname}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{cname}");
        assert_eq!(sc["runAsNonRoot"], true, "{cname}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{cname}");
        assert!(sc["capabilities"].get("add").is_none(), "{cname}: adds");
        assert!(sc.get("privileged").is_none_or(|p| p == false), "{cname}");
        for field in ["runAsUser", "runAsGroup"] {
            assert!(sc.get(field).is_none(), "{cname}: fixes {field}");
        }
        // Writable places are emptyDirs (or the cache volume), never the image.
        for mount in c["volumeMounts"].as_array().into_iter().flatten() {
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
                .unwrap_or_else(|| panic!("{cname}: mount of unknown volume {mount}"));
            assert!(
                volume.get("emptyDir").is_some() || mount["readOnly"] == true,
                "{cname}: writable mount {mount} is not an emptyDir"
            );
        }
    }
}

#[test]
fn every_pod_spec_passes_restricted_v2() {
    for (what, sets) in VALUE_SETS {
        let docs = render(sets, false);
        let pods = pod_specs(&docs);
        assert!(!pods.is_empty(), "{what}: no pod spec rendered");
        for (name, pod) in pods {
            assert_restricted(&format!("{what}: {name}"), pod);
        }
    }
}

#[test]
fn every_builtin_object_is_valid_for_kubernetes_1_37() {
    let validate = tool(".venv/bin/kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, sets)) in VALUE_SETS.iter().enumerate() {
        let docs = render(sets, false);
        let builtin: Vec<&Value> = docs.iter().filter(|d| is_builtin(d)).collect();
        assert!(builtin.len() >= 5, "{what}: only {} objects", builtin.len());
        let file = dir.path().join(format!("set-{i}.yaml"));
        let yaml: String = builtin
            .iter()
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
            .collect();
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.37.0", "--no-warn"])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        let report = text(&out);
        assert!(
            out.status.success() && !report.contains("ERROR"),
            "kubernetes-validate --strict ({what}) failed:\n{report}"
        );
        assert_eq!(
            report.matches("passed for resource").count(),
            builtin.len(),
            "{what}: not every object was validated:\n{report}"
        );
    }
}

/// The router's container in the rendered Deployment.
fn router_container(docs: &[Value]) -> &Value {
    let deployment = find(docs, "Deployment", &full_name());
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "router")
        .expect("a router container")
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

#[test]
fn router_deployment_wires_health_grace_and_election() {
    let docs = render(
        &[
            "router.shutdownGraceSeconds=25",
            "router.preStopSleepSeconds=7",
        ],
        false,
    );
    let deployment = find(&docs, "Deployment", &full_name());
    let pod = &deployment["spec"]["template"]["spec"];
    let router = router_container(&docs);
    let args = args_of(router);
    assert!(
        args.contains(&"--shutdown-grace-seconds=25".to_owned()),
        "{args:?}"
    );
    assert!(
        !args.contains(&"--no-leader-election".to_owned()),
        "{args:?}"
    );
    // The encoder runs int8 unless the values ask for f32.
    assert!(
        args.contains(&"--classify-precision=int8".to_owned()),
        "{args:?}"
    );
    // preStop sleep + the router's grace + 5 s to exit.
    assert_eq!(pod["terminationGracePeriodSeconds"], 37);
    assert_eq!(router["lifecycle"]["preStop"]["sleep"]["seconds"], 7);
    assert_eq!(router["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(router["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(router["readinessProbe"]["httpGet"]["port"], "admin");
    let env: BTreeMap<&str, &Value> = router["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env["SR_LEASE_NAME"]["value"], full_name());
    assert_eq!(env["HF_HUB_OFFLINE"]["value"], "1");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    assert!(
        spread
            .iter()
            .any(|s| s["topologyKey"] == "kubernetes.io/hostname")
    );
    // The init container fills the cache the router then reads offline.
    let init = &pod["initContainers"][0];
    assert_eq!(init["args"][0], "classify");
    assert!(
        init["env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != "HF_HUB_OFFLINE")
    );
    let pdb = find(&docs, "PodDisruptionBudget", &full_name());
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    // With a pre-filled claim: no download, the claim read-only.
    let docs = render(&["encoder.cache.existingClaim=hf-cache"], false);
    let pod = &find(&docs, "Deployment", &full_name())["spec"]["template"]["spec"];
    assert!(pod.get("initContainers").is_none(), "{pod}");
    let cache = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "hf-cache")
        .unwrap();
    assert_eq!(
        cache["persistentVolumeClaim"],
        json!({"claimName": "hf-cache", "readOnly": true})
    );
}

#[test]
fn redis_cache_values_wire_the_url_and_mount_the_password_and_ca() {
    let docs = render(&[], false);
    let args = args_of(router_container(&docs));
    assert!(
        args.contains(&"--cache-backend=memory".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--cache-max-entries=4096".to_owned()),
        "{args:?}"
    );

    let docs = render(
        &[
            "router.semanticCache.backend=redis",
            "router.semanticCache.redis.url=rediss://redis.cache.svc:6380",
            "router.semanticCache.redis.passwordSecret.name=redis-auth",
            "router.semanticCache.redis.passwordSecret.key=token",
            "router.semanticCache.redis.caSecret.name=redis-ca",
        ],
        false,
    );
    let router = router_container(&docs);
    let args = args_of(router);
    for expected in [
        "--cache-backend=redis",
        "--cache-redis-url=rediss://redis.cache.svc:6380",
        "--cache-redis-timeout-ms=5",
        "--cache-redis-password-file=/var/run/secrets/semantic-router/redis-password/password",
        "--cache-redis-ca-file=/var/run/secrets/semantic-router/redis-ca/ca.crt",
    ] {
        assert!(args.contains(&expected.to_owned()), "{expected}: {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--cache-max-")),
        "{args:?}"
    );
    let pod = &find(&docs, "Deployment", &full_name())["spec"]["template"]["spec"];
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("a {name} volume: {pod}"))
            .clone()
    };
    assert_eq!(
        volume("redis-password")["secret"],
        json!({"secretName": "redis-auth", "items": [{"key": "token", "path": "password"}]})
    );
    assert_eq!(volume("redis-ca")["secret"]["secretName"], "redis-ca");
    let mounts = router["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == "redis-password"
        && m["mountPath"] == "/var/run/secrets/semantic-router/redis-password"
        && m["readOnly"] == true));

    // Without a URL, or with a password in it, the chart refuses to render.
    for bad in [
        vec!["router.semanticCache.backend=redis"],
        vec![
            "router.semanticCache.backend=redis",
            "router.semanticCache.redis.url=redis://:hunter2@redis:6379",
        ],
    ] {
        let out = render_raw(&bad, false);
        assert!(!out.status.success(), "{bad:?} rendered");
        assert!(
            text(&out).contains("/router/semanticCache/redis/url"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn the_static_tier_value_gives_the_router_a_writable_folder_to_distill_into() {
    let docs = render(&[], false);
    let args = args_of(router_container(&docs));
    assert!(
        !args.iter().any(|a| a.starts_with("--static-model")),
        "{args:?}"
    );

    let docs = render(&["encoder.staticTier.enabled=true"], false);
    let router = router_container(&docs);
    assert!(
        args_of(router).contains(&"--static-model=/var/cache/semantic-router/static".to_owned()),
        "{router}"
    );
    let mounts = router["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["name"] == "static-tier"
            && m["mountPath"] == "/var/cache/semantic-router"
            && m["readOnly"].is_null()),
        "{mounts:?}"
    );
    let pod = &find(&docs, "Deployment", &full_name())["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "static-tier")
        .expect("a static-tier volume");
    assert_eq!(volume["emptyDir"]["sizeLimit"], "64Mi");
}

/// Writes the bundled Envoy's rendered config to a file and runs `envoy --mode validate`.
#[test]
fn bundled_envoy_config_is_valid_for_envoy() {
    let dir = tempfile::tempdir().unwrap();
    for (what, sets) in VALUE_SETS {
        if !sets.contains(&"gateway.mode=envoy") {
            continue;
        }
        let docs = render(sets, false);
        let config =
            find(&docs, "ConfigMap", &format!("{}-envoy", full_name()))["data"]["envoy.yaml"]
                .as_str()
                .expect("envoy.yaml in the ConfigMap")
                .to_owned();
        assert!(
            config.contains("request_body_mode: FULL_DUPLEX_STREAMED"),
            "{what}"
        );
        let overrides = sets
            .iter()
            .any(|s| s.starts_with("gateway.envoy.endpointServices"));
        if overrides {
            assert!(config.contains("override_host"), "{what}: {config}");
        } else {
            assert!(config.contains("type: ORIGINAL_DST"), "{what}: {config}");
            assert!(config.contains("http_header_name: x-gateway-destination-endpoint"));
        }
        let file = dir.path().join("envoy.yaml");
        std::fs::write(&file, &config).unwrap();
        validate_config_file(&file).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

#[test]
fn schema_rejects_bad_values_with_the_path() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["replicaCount=0"], &["/replicaCount", "minimum"]),
        (
            &["gateway.mode=istio"],
            &["/gateway/mode", "'envoyGateway'"],
        ),
        (
            &["gateway.mode=envoyGateway"],
            &["/gateway/envoyGateway/gatewayName"],
        ),
        (&["gateway.mode=inferencePool"], &["/gateway/inferencePool"]),
        (&["openshift.enabled=true"], &["/gateway/mode", "'envoy'"]),
        (
            &["leaderElection.enabled=false"],
            &["/replicaCount", "maximum"],
        ),
        (&["encoder.model=not a model id"], &["/encoder/model"]),
        (
            &["encoder.classify.precision=int4"],
            &["/encoder/classify/precision"],
        ),
        (&["ports.admin=70000"], &["/ports/admin", "maximum"]),
        (&["router.logFormat=xml"], &["/router/logFormat"]),
        (
            &["router.shutdownGraceSeconds=-1"],
            &["/router/shutdownGraceSeconds"],
        ),
        (
            &["gateway.envoy.listenPort=80"],
            &["/gateway/envoy/listenPort"],
        ),
        (&["image.repository="], &["/image/repository"]),
        (&["replicas=3"], &["additional properties 'replicas'"]),
    ];
    for (sets, expected) in cases {
        let out = render_raw(sets, false);
        let message = text(&out);
        assert!(!out.status.success(), "helm accepted {sets:?}");
        assert!(
            message.contains("values don't meet the specifications"),
            "{message}"
        );
        for e in *expected {
            assert!(
                message.contains(e),
                "{sets:?}: message lacks {e:?}:\n{message}"
            );
        }
    }
}

/// Applies YAML documents with `kubectl apply --server-side` and returns kubectl's output.
async fn apply_docs(server: &ApiServer, docs: &[&Value], name: &str) -> String {
    let file = server.dir().join(format!("{name}.yaml"));
    let yaml: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    std::fs::write(&file, yaml).unwrap();
    server
        .kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()])
        .await
}

async fn wait_established(server: &ApiServer, names: &[&str]) {
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=30s"];
    let crds: Vec<String> = names.iter().map(|n| format!("crd/{n}")).collect();
    args.extend(crds.iter().map(String::as_str));
    server.kubectl_ok(&args).await;
}

/// The chart's CRDs (from `helm template --include-crds`) install on the real API server, the
/// sample resources are accepted by them, and the custom resources of the gateway options apply
/// as objects of their kinds (stand-in CRDs: tests/e2e/crds/gateways/README.md).
#[tokio::test(flavor = "multi_thread")]
async fn rendered_crds_samples_and_gateway_resources_apply_to_the_api_server() {
    let server = ApiServer::start().await;
    let docs = render(&[], true);
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 2, "the chart renders our two CRDs");
    apply_docs(&server, &crds, "crds").await;
    let third_party = repo_root().join("tests/e2e/crds/gateways");
    for file in yaml_files(&third_party) {
        server
            .kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()])
            .await;
    }
    wait_established(
        &server,
        &[
            "modelpools.semantic-router.io",
            "semanticroutes.semantic-router.io",
            "inferencepools.inference.networking.k8s.io",
            "envoyextensionpolicies.gateway.envoyproxy.io",
            "referencegrants.gateway.networking.k8s.io",
        ],
    )
    .await;

    let samples: Vec<Value> = yaml_files(&repo_root().join("config/samples"))
        .iter()
        .flat_map(|f| yaml_documents(f))
        .map(|d| serde_json::to_value(d).unwrap())
        .filter(|d| d["apiVersion"] == "semantic-router.io/v1alpha1")
        .collect();
    assert!(samples.len() >= 4, "config/samples/ has our resources");
    let refs: Vec<&Value> = samples.iter().collect();
    apply_docs(&server, &refs, "samples").await;

    // (The test API server has no core/v1: namespaces need not exist.)
    for (what, sets) in VALUE_SETS {
        let docs = render(sets, false);
        let custom: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                let g = d["apiVersion"].as_str().unwrap_or_default();
                g.starts_with("gateway.envoyproxy.io/")
                    || g.starts_with("gateway.networking.k8s.io/")
                    || g.starts_with("inference.networking.k8s.io/")
            })
            .collect();
        if custom.is_empty() {
            continue;
        }
        let out = apply_docs(&server, &custom, "gateway").await;
        assert_eq!(out.lines().count(), custom.len(), "{what}: {out}");
    }
    // What the policy and the pool point at, as the server stored them.
    let policy = server
        .kubectl_ok(&[
            "get",
            "-n",
            "gateways",
            "envoyextensionpolicy",
            &full_name(),
            "-o",
            "json",
        ])
        .await;
    let policy: Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(
        policy["spec"]["extProc"][0]["processingMode"]["request"]["body"],
        "FullDuplexStreamed"
    );
    let pool = server
        .kubectl_ok(&[
            "get",
            "-n",
            NAMESPACE,
            "inferencepool",
            &full_name(),
            "-o",
            "json",
        ])
        .await;
    let pool: Value = serde_json::from_str(&pool).unwrap();
    assert_eq!(
        pool["spec"]["endpointPickerRef"]["name"],
        format!("{}-extproc", full_name())
    );
}

const POLICY: &str = r#"
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {name: small, namespace: default}
spec:
  models: [{name: small-model, reasoningFamily: qwen3}]
  endpoints: {static: {addresses: ["SIM_ADDR"]}}
---
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {name: empty, namespace: default}
spec:
  models: [{name: empty-model}]
  endpoints: {service: {name: nothing-here, port: 8000}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {name: auto, namespace: default}
spec:
  match: {models: [auto]}
  signals:
    keywords: [{name: calculus, keywords: [integral]}]
    categories: [{name: stem, labels: [math, physics], threshold: 0.5}]
  decisions:
  - name: reasoning
    when: {any: [calculus, stem]}
    targets: [{pool: small, model: small-model, reasoning: {enabled: true}}]
  defaultTarget: {pool: small, model: small-model, reasoning: {enabled: false}}
  cache: {enabled: true, similarityThreshold: 0.97, ttlSeconds: 60}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {name: dangling, namespace: default}
spec:
  match: {models: [dangling]}
  defaultTarget: {pool: no-such-pool, model: small-model}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {name: shadowed, namespace: default}
spec:
  match: {models: [shadowed]}
  signals:
    keywords: [{name: calculus, keywords: [integral]}]
  decisions:
  - {name: first, when: {any: [calculus]}, targets: [{pool: small, model: small-model}]}
  - {name: second, when: {any: [calculus]}, targets: [{pool: small, model: small-model}]}
  defaultTarget: {pool: small, model: small-model}
"#;

/// The router as the chart runs it, against a real API server: the binary accepts the rendered
/// arguments and environment and takes the Lease under the chart's name (listen addresses moved
/// to free 127.0.0.1 ports, the encoder and heads taken from this checkout instead of the Hub
/// cache and the image). On the status it writes, the Argo CD health checks of config/argocd/
/// run in lua5.1; under traffic through Envoy, every metric the chart's alerts and dashboard
/// query is in its /metrics.
#[tokio::test(flavor = "multi_thread")]
async fn the_router_as_the_chart_runs_it() {
    let server = crate::controller::cluster().await;
    let sim = Sim::start("small");
    let policy = POLICY.replace("SIM_ADDR", &sim.addr.to_string());
    let docs: Vec<Value> = parse_documents(&policy);
    apply_docs(&server, &docs.iter().collect::<Vec<_>>(), "policy").await;
    // Before any router ran: no status yet.
    let unseen = [
        get_json(&server, "semanticroute/auto").await,
        get_json(&server, "modelpool/small").await,
    ];

    let rendered = render(&[], false);
    let router = router_container(&rendered);
    let heads = repo_root().join("heads/all-MiniLM-L6-v2");
    let encoder = repo_root().join(".models/all-MiniLM-L6-v2");
    tool(".models/all-MiniLM-L6-v2/model.safetensors");
    let args: Vec<String> = args_of(router)
        .into_iter()
        .filter(|a| {
            a != "run" && !a.starts_with("--extproc-listen") && !a.starts_with("--admin-listen")
        })
        .map(|a| {
            if a.starts_with("--encoder=") {
                format!("--encoder={}", encoder.display())
            } else if let Some((flag, head)) =
                a.split_once("=/usr/share/semantic-router/heads/all-MiniLM-L6-v2/")
            {
                format!("{flag}={}", heads.join(head).display())
            } else {
                a
            }
        })
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("--category-head=/")),
        "{args:?}"
    );
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let running = Router::start_kube_with_env(server.kubeconfig(), &extra, &rendered_env(router));
    let server_ref = &server;
    eventually("the Lease", Duration::from_secs(20), || async move {
        server_ref
            .kubectl(&["get", "-n", NAMESPACE, "lease", &full_name()])
            .await
            .status
            .success()
    })
    .await;
    assert!(
        running.process.logs().contains("\"level\":\"INFO\""),
        "--log-format=json: {}",
        running.process.logs()
    );

    // Argo CD health from real status.
    eventually(
        "status on every object",
        Duration::from_secs(20),
        || async move {
            let mut all = true;
            for what in [
                "semanticroute/auto",
                "semanticroute/dangling",
                "semanticroute/shadowed",
                "modelpool/small",
                "modelpool/empty",
            ] {
                let obj = get_json(server_ref, what).await;
                all &= obj["status"]["observedGeneration"] == obj["metadata"]["generation"];
            }
            all
        },
    )
    .await;
    let route_check = repo_root().join("config/argocd/health/semanticroute.lua");
    let pool_check = repo_root().join("config/argocd/health/modelpool.lua");
    for obj in &unseen {
        let check = if obj["kind"] == "ModelPool" {
            &pool_check
        } else {
            &route_check
        };
        let (status, message) = argocd_health(check, obj);
        assert_eq!(status, "Progressing", "{obj}: {message}");
    }
    let (status, message) =
        argocd_health(&route_check, &get_json(&server, "semanticroute/auto").await);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Healthy", "routing as written: 1 decision(s) in force")
    );
    // In force, but a decision can never match: Degraded, not Healthy.
    let shadowed = get_json(&server, "semanticroute/shadowed").await;
    let (status, message) = argocd_health(&route_check, &shadowed);
    assert_eq!(status, "Degraded", "{shadowed}");
    assert!(
        message.starts_with("Degraded UnreachableDecision: ") && message.contains("\"second\""),
        "{message}"
    );
    let dangling = get_json(&server, "semanticroute/dangling").await;
    let (status, message) = argocd_health(&route_check, &dangling);
    assert_eq!(status, "Degraded", "{message}");
    assert!(message.contains("ResolvedRefs PoolNotFound: "), "{message}");
    assert!(
        message.contains("Accepted DefaultTargetUnresolved: "),
        "{message}"
    );
    assert!(message.contains("no-such-pool"), "{message}");
    let (status, message) = argocd_health(&pool_check, &get_json(&server, "modelpool/small").await);
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Healthy", "1 ready endpoint(s)")
    );
    let empty = get_json(&server, "modelpool/empty").await;
    let (status, message) = argocd_health(&pool_check, &empty);
    let ready = empty["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .expect("a Ready condition");
    assert_eq!(
        status,
        if ready["status"] == "True" {
            "Healthy"
        } else {
            "Degraded"
        },
        "{empty}"
    );
    if ready["status"] == "False" {
        assert_eq!(
            message,
            format!(
                "{}: {}",
                ready["reason"].as_str().unwrap(),
                ready["message"].as_str().unwrap()
            )
        );
    }
    // A newer generation than the router has seen is Progressing again.
    let mut stale = get_json(&server, "semanticroute/auto").await;
    stale["metadata"]["generation"] =
        json!(stale["status"]["observedGeneration"].as_i64().unwrap() + 1);
    assert_eq!(argocd_health(&route_check, &stale).0, "Progressing");

    // Traffic through Envoy, then every metric the alerts and the dashboard name.
    let envoy = Envoy::start(EnvoyConfig {
        listen_port: free_port(),
        admin_port: free_port(),
        ext_proc_addr: running.extproc,
        ext_proc_replicas: Vec::new(),
        endpoints: vec![sim.addr],
        passthrough: sim.addr,
        gateway_clusters: Vec::new(),
        with_ext_proc: true,
        buffered: false,
    });
    let client = reqwest::Client::new();
    for (model, prompt) in [
        ("auto", "what is the integral of x squared?"),
        ("auto", "what is the integral of x squared?"),
        ("auto", "say hello"),
        ("small-model", "hi"),
        ("no-such-model", "hi"),
    ] {
        client
            .post(format!("{}/v1/chat/completions", envoy.url()))
            .header("content-type", "application/json")
            .body(
                json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
                    .to_string(),
            )
            .send()
            .await
            .expect("envoy answers");
    }
    let exported = exported_metrics(&running.metrics().await);
    let mut queried = metric_names_in(&rules_yaml());
    queried.extend(metric_names_in(&dashboard_json()));
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the alerts or the dashboard query metrics the router does not export: {missing:?}\n\
         exported: {exported:?}"
    );
}

async fn get_json(server: &ApiServer, what: &str) -> Value {
    serde_json::from_str(&server.kubectl_ok(&["get", what, "-o", "json"]).await)
        .expect("kubectl prints JSON")
}

/// A command installed on PATH by `make tools` (Debian packages).
fn path_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH: run `make tools` (hack/install-tools.sh)")
        })
}

/// `value` as a Lua table constructor (null fields left out, as Argo CD's conversion does).
fn to_lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for ch in s.chars() {
                match ch {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\{:03}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(to_lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", to_lua(&Value::String(k.clone())), to_lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs an Argo CD health check (a Lua chunk that reads `obj` and returns `{status, message}`)
/// with lua5.1, as Argo CD does: `(status, message)`.
fn argocd_health(check: &std::path::Path, obj: &Value) -> (String, String) {
    let body =
        std::fs::read_to_string(check).unwrap_or_else(|e| panic!("{}: {e}", check.display()));
    let script = format!(
        "obj = {}\nlocal function health()\n{body}\nend\nlocal hs = health()\n\
         io.write(hs.status, \"\\n\", hs.message or \"\")\n",
        to_lua(obj)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("check.lua");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(path_tool("lua5.1"))
        .arg(&file)
        .output()
        .expect("run lua5.1");
    assert!(
        out.status.success(),
        "lua5.1 {}: {}",
        check.display(),
        text(&out)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (status, message) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status),
        "{}: not an Argo CD health status: {stdout:?}",
        check.display()
    );
    (status.to_owned(), message.to_owned())
}

/// Metric names a scrape exports: every `# TYPE` family with the sample suffixes of its type.
fn exported_metrics(scrape: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total", ""],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Every `semantic_router_*` metric a text (PromQL in rules or a dashboard) names.
fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("semantic_router_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The PrometheusRule's rule groups as a Prometheus rule file.
fn rules_yaml() -> String {
    let docs = render(&["metrics.prometheusRule.enabled=true"], false);
    let rule = find(&docs, "PrometheusRule", &full_name());
    serde_yaml::to_string(&json!({"groups": rule["spec"]["groups"]})).unwrap()
}

/// The dashboard JSON as the chart's ConfigMap carries it.
fn dashboard_json() -> String {
    let docs = render(&["metrics.dashboard.enabled=true"], false);
    find(&docs, "ConfigMap", &format!("{}-dashboard", full_name()))["data"]["semantic-router.json"]
        .as_str()
        .expect("the dashboard in the ConfigMap")
        .to_owned()
}

#[test]
fn alert_rules_pass_promtool_and_each_alert_fires() {
    let promtool = path_tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let rules_text = rules_yaml();
    std::fs::write(dir.path().join("rules.yaml"), &rules_text).unwrap();
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(dir.path().join("rules.yaml"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );

    // The test file, with exp_annotations filled in from the rendered rules.
    let rules: Value = serde_yaml::from_str(&rules_text).unwrap();
    let alerts: BTreeMap<String, &Value> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["alert"].as_str().unwrap().to_owned(), &r["annotations"]))
        .collect();
    let source = repo_root().join("tests/e2e/promtool/alerts.test.yaml");
    let mut tests: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&source).unwrap()).unwrap();
    let mut fired = std::collections::BTreeSet::new();
    for test in tests["tests"].as_array_mut().unwrap() {
        for case in test["alert_rule_test"].as_array_mut().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let annotations = alerts
                .get(&name)
                .unwrap_or_else(|| panic!("no alert {name}"));
            for alert in case["exp_alerts"].as_array_mut().unwrap() {
                fired.insert(name.clone());
                let mut filled = serde_json::Map::new();
                for (key, template) in annotations.as_object().unwrap() {
                    let mut value = template.as_str().unwrap().to_owned();
                    for (label, v) in alert["exp_labels"].as_object().unwrap() {
                        value = value
                            .replace(&format!("{{{{ $labels.{label} }}}}"), v.as_str().unwrap());
                    }
                    assert!(
                        !value.contains("{{"),
                        "{name}: {key} keeps a template: {value}"
                    );
                    filled.insert(key.clone(), json!(value));
                }
                alert["exp_annotations"] = Value::Object(filled);
            }
        }
    }
    assert_eq!(
        fired,
        alerts.keys().cloned().collect(),
        "{}: every alert needs a series that fires it",
        source.display()
    );
    let test_file = dir.path().join("alerts.test.yaml");
    std::fs::write(&test_file, serde_yaml::to_string(&tests).unwrap()).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&test_file)
        .output()
        .expect("run promtool");
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
}

#[test]
fn dashboard_is_grafana_json_over_prometheus() {
    let dashboard: Value = serde_json::from_str(&dashboard_json()).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "semantic-router");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "duplicate panel id"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                !metric_names_in(expr).is_empty(),
                "{}: {expr}",
                panel["title"]
            );
            assert_eq!(target["datasource"]["uid"], "${datasource}");
        }
    }
}

#[test]
fn argocd_cm_carries_the_tested_health_checks() {
    let dir = repo_root().join("config/argocd");
    let cm: Value = serde_json::to_value(&yaml_documents(&dir.join("argocd-cm.yaml"))[0]).unwrap();
    for (kind, file) in [
        ("SemanticRoute", "semanticroute.lua"),
        ("ModelPool", "modelpool.lua"),
    ] {
        let key = format!("resource.customizations.health.semantic-router.io_{kind}");
        let lua = std::fs::read_to_string(dir.join("health").join(file)).unwrap();
        assert_eq!(
            cm["data"][&key].as_str(),
            Some(lua.as_str()),
            "{key} differs from health/{file}"
        );
    }
    // Sync waves: the chart before the policies.
    let wave = |file: &str| -> i64 {
        let app: Value =
            serde_json::to_value(&yaml_documents(&dir.join("apps").join(file))[0]).unwrap();
        assert_eq!(app["kind"], "Application");
        app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
            .as_str()
            .and_then(|w| w.parse().ok())
            .expect("a sync wave")
    };
    assert!(wave("router.yaml") < wave("policies.yaml"));
}

/// The literal `env` entries of a container, with the downward-API ones filled in as the
/// kubelet would for pod `<fullname>-0` in the release namespace.
fn rendered_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let name = e["name"].as_str()?.to_owned();
            if let Some(v) = e["value"].as_str() {
                return Some((name, v.to_owned()));
            }
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str()? {
                "metadata.namespace" => Some((name, NAMESPACE.to_owned())),
                "metadata.name" => Some((name, format!("{}-0", full_name()))),
                _ => None,
            }
        })
        .filter(|(name, _)| name != "HF_HUB_CACHE")
        .collect()
}
