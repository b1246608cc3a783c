//! Our CRDs (`crds/`) and sample resources (`config/samples/`) against a real API server: the
//! CRDs install and become Established, the samples are created and listed by `kubectl`, and the
//! API server enforces every validation rule of the schema (CEL rules and OpenAPI constraints).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Client, Resource};
use semantic_router::api::{ModelPool, SemanticRoute};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::support::{ApiServer, install_crds, load_crds, repo_root, yaml_documents, yaml_files};

const API_VERSION: &str = "semantic-router.io/v1alpha1";

/// An API server with our CRDs installed, and a client for it.
async fn server_with_crds() -> (ApiServer, Client) {
    let server = ApiServer::start().await;
    let client = server.client();
    install_crds(&client).await;
    (server, client)
}

/// Every document of `config/samples/*.yaml` in our API group, as JSON.
fn samples() -> Vec<Value> {
    let docs: Vec<Value> = yaml_files(&repo_root().join("config/samples"))
        .iter()
        .flat_map(|file| yaml_documents(file))
        .map(|doc| serde_json::to_value(doc).expect("sample YAML is JSON-compatible"))
        .filter(|doc| doc["apiVersion"] == API_VERSION)
        .collect();
    assert!(
        !docs.is_empty(),
        "config/samples/ holds no {API_VERSION} resources"
    );
    docs
}

/// The sample of `kind` named `name`.
fn sample(kind: &str, name: &str) -> Value {
    samples()
        .into_iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("config/samples/ has no {kind} {name}"))
}

/// A valid pool with static endpoints.
fn pool() -> Value {
    sample("ModelPool", "qwen3-small")
}

/// A valid route with header and keyword signals and two decisions.
fn route() -> Value {
    sample("SemanticRoute", "auto")
}

fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("default")
}

/// The dynamic API for `obj`'s kind (`ModelPool` or `SemanticRoute`) in its namespace.
fn dynamic_api(client: &Client, obj: &Value) -> Api<DynamicObject> {
    let resource = match obj["kind"].as_str() {
        Some("ModelPool") => ApiResource::erase::<ModelPool>(&()),
        Some("SemanticRoute") => ApiResource::erase::<SemanticRoute>(&()),
        other => panic!("not one of our kinds: {other:?}"),
    };
    Api::namespaced_with(client.clone(), namespace(obj), &resource)
}

/// Creates `obj` (a `ModelPool` or `SemanticRoute` as JSON) through the dynamic API, so that
/// objects our Rust types cannot express reach the server as they are.
async fn create(client: &Client, obj: &Value) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_json::from_value(obj.clone()).expect("a Kubernetes object");
    dynamic_api(client, obj)
        .create(&PostParams::default(), &object)
        .await
}

/// Asserts that the API server refuses to create `obj` as invalid (422) and stores nothing;
/// returns the server's message.
async fn rejection(client: &Client, obj: &Value) -> String {
    let status = match create(client, obj).await {
        Ok(_) => panic!("the API server accepted an invalid object:\n{obj:#}"),
        Err(kube::Error::Api(status)) => status,
        Err(e) => panic!("create failed for another reason than validation: {e}"),
    };
    assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
    assert_eq!(status.reason, "Invalid", "{status:?}");
    let name = obj["metadata"]["name"].as_str().expect("object has a name");
    assert!(
        dynamic_api(client, obj)
            .get_opt(name)
            .await
            .expect("get")
            .is_none(),
        "a rejected object was stored"
    );
    status.message
}

/// Asserts that the API server refuses to create `obj` as invalid and that its message
/// contains every string of `expected` (the rule's message, the field path).
async fn assert_rejected(client: &Client, obj: Value, expected: &[&str]) {
    let message = rejection(client, &obj).await;
    for text in expected {
        assert!(
            message.contains(text),
            "the API server's message does not contain {text:?}:\n{message}"
        );
    }
}

/// Creates a typed object and checks that the server hands back the same spec: no field of
/// our types is pruned or changed by the schema's defaulting.
async fn create_typed<K>(client: &Client, doc: &Value) -> String
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + HasSpec,
{
    let object: K = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("sample does not parse as our type: {e}\n{doc:#}"));
    let api: Api<K> = Api::namespaced(client.clone(), namespace(doc));
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("the API server rejected a sample: {e}\n{doc:#}"));
    assert_eq!(
        serde_json::to_value(created.spec()).unwrap(),
        serde_json::to_value(object.spec()).unwrap(),
        "the API server changed the spec of {}",
        object.meta().name.as_deref().unwrap_or_default()
    );
    format!(
        "{}.{}/{}",
        K::kind(&()).to_lowercase(),
        K::group(&()),
        object.meta().name.as_deref().unwrap()
    )
}

/// The spec of one of our resources.
trait HasSpec {
    type Spec: Serialize;
    fn spec(&self) -> &Self::Spec;
}

impl HasSpec for ModelPool {
    type Spec = semantic_router::api::ModelPoolSpec;
    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
}

impl HasSpec for SemanticRoute {
    type Spec = semantic_router::api::SemanticRouteSpec;
    fn spec(&self) -> &Self::Spec {
        &self.spec
    }
}

/// Whitespace collapsed to single spaces, to compare text that `kubectl` re-wraps.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let (_server, client) = server_with_crds().await;
    let listed = Api::<CustomResourceDefinition>::all(client)
        .list(&ListParams::default())
        .await
        .expect("list CRDs");
    let mut names: Vec<String> = listed
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "modelpools.semantic-router.io",
            "semanticroutes.semantic-router.io"
        ]
    );
    for crd in &listed.items {
        let conditions = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .expect("status");
        for wanted in ["Established", "NamesAccepted"] {
            assert!(
                conditions
                    .iter()
                    .any(|c| c.type_ == wanted && c.status == "True"),
                "{:?} is not {wanted}: {conditions:?}",
                crd.metadata.name
            );
        }
        // A non-structural schema or an API-approval problem shows up as a True condition.
        for bad in [
            "NonStructuralSchema",
            "KubernetesAPIApprovalPolicyConformant",
        ] {
            assert!(
                !conditions
                    .iter()
                    .any(|c| c.type_ == bad && c.status == "True"),
                "{:?}: {conditions:?}",
                crd.metadata.name
            );
        }
    }
}

#[tokio::test]
async fn samples_are_created_and_listed_by_kubectl() {
    let (server, client) = server_with_crds().await;
    let mut expected = Vec::new();
    for doc in samples() {
        expected.push(match doc["kind"].as_str() {
            Some("ModelPool") => create_typed::<ModelPool>(&client, &doc).await,
            Some("SemanticRoute") => create_typed::<SemanticRoute>(&client, &doc).await,
            other => panic!("config/samples/ has a {API_VERSION} object of unknown kind {other:?}"),
        });
    }
    expected.sort();

    let listed = server
        .kubectl_ok(&[
            "get",
            "semanticroutes,modelpools",
            "--all-namespaces",
            "-o",
            "name",
        ])
        .await;
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort();
    assert_eq!(listed, expected);

    // Short names and printer columns.
    let table = server
        .kubectl_ok(&["get", "mpool", "--all-namespaces"])
        .await;
    assert!(
        table.contains("MODELS") && table.contains("ENDPOINTS") && table.contains("READY"),
        "{table}"
    );
    assert!(
        table.contains("qwen3-small") && table.contains("Qwen/Qwen3-1.7B"),
        "{table}"
    );
    // No router has looked yet: Ready Unknown, reason Pending, on every object.
    assert!(table.contains("Unknown"), "{table}");
    let table = server
        .kubectl_ok(&["get", "sroute", "--all-namespaces"])
        .await;
    for column in [
        "READY",
        "REASON",
        "DEFAULT POOL",
        "DEFAULT MODEL",
        "DECISIONS",
        "AGE",
    ] {
        assert!(table.contains(column), "{column}: {table}");
    }
    let row = table
        .lines()
        .find(|l| l.contains("auto"))
        .expect("the auto route");
    assert!(
        row.contains("Unknown") && row.contains("Pending") && row.contains("qwen3-small"),
        "{row}"
    );
    let wide = server
        .kubectl_ok(&["get", "sroute", "--all-namespaces", "-o", "wide"])
        .await;
    for column in [
        "MODELS",
        "SCOPE",
        "RESOLVEDREFS",
        "DEGRADED",
        "GENERATION",
        "OBSERVED",
    ] {
        assert!(wide.contains(column), "{column}: {wide}");
    }
    let row = wide
        .lines()
        .find(|l| l.contains("auto"))
        .expect("the auto route");
    assert!(!row.contains("[\""), "models as plain text: {row}");
    assert!(
        row.contains("Cluster"),
        "an unset scope reads as its default: {row}"
    );

    // A defaulted number reads as written.
    server
        .kubectl_ok(&[
            "patch",
            "sroute",
            "auto",
            "--type=merge",
            "-p",
            r#"{"spec":{"cache":{"enabled":true}}}"#,
        ])
        .await;
    let route = server
        .kubectl_ok(&[
            "get",
            "sroute",
            "auto",
            "-o",
            "jsonpath={.spec.cache.similarityThreshold}",
        ])
        .await;
    assert_eq!(route.trim(), "0.92");
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() {
    let (server, _client) = server_with_crds().await;
    let crd = load_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "ModelPool")
        .expect("a ModelPool CRD in crds/");
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap();
    let endpoints = &schema.properties.as_ref().unwrap()["spec"]
        .properties
        .as_ref()
        .unwrap()["endpoints"];

    // The server publishes a new CRD's OpenAPI a moment after it is Established.
    let deadline = Instant::now() + Duration::from_secs(30);
    let output = loop {
        let out = server
            .kubectl(&["explain", "modelpool.spec.endpoints"])
            .await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl explain modelpool.spec.endpoints failed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let shown = words(&output);
    let mut documented = vec![
        endpoints
            .description
            .clone()
            .expect("endpoints has a description"),
    ];
    for (field, prop) in endpoints.properties.as_ref().expect("endpoints has fields") {
        assert!(
            shown.contains(field.as_str()),
            "explain does not list {field}:\n{output}"
        );
        documented.push(
            prop.description
                .clone()
                .unwrap_or_else(|| panic!("{field} has no description")),
        );
    }
    for doc in documented {
        assert!(
            shown.contains(&words(&doc)),
            "explain does not show {doc:?}:\n{output}"
        );
    }
}

/// The valid counterparts of the rules below are accepted, so the rules are not too strict.
#[tokio::test]
async fn valid_variants_are_accepted() {
    let (_server, client) = server_with_crds().await;
    let sources = [
        json!({"selector": {"matchLabels": {"app": "vllm"}}, "targetPort": 8000}),
        json!({"service": {"name": "vllm", "port": 8000}}),
        json!({"static": {"addresses": ["10.0.0.1:8000", "vllm.example.com:443", "[::1]:8000"]}}),
        json!({"gateway": {"clusterName": "llm-d"}}),
    ];
    for (i, source) in sources.into_iter().enumerate() {
        let mut p = pool();
        p["metadata"]["name"] = json!(format!("pool-{i}"));
        p["spec"]["endpoints"] = source;
        create(&client, &p)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{p:#}"));
    }

    let mut r = route();
    // A canary split with one target out of rotation, effort with reasoning on, and signals of
    // every kind with distinct names.
    r["spec"]["decisions"][1]["targets"] = json!([
        {"pool": "qwen3-large-h100", "model": "Qwen/Qwen3-30B-A3B", "weight": 0},
        {"pool": "qwen3-large-a100", "model": "Qwen/Qwen3-30B-A3B", "weight": 10,
         "reasoning": {"enabled": true, "effort": "high"}},
    ]);
    // (Added beside the sample's own, which its decisions name.)
    r["spec"]["signals"]["examples"]
        .as_array_mut()
        .expect("examples")
        .push(json!({"name": "greeting", "prompts": ["hi"], "threshold": 1.0}));
    r["spec"]["signals"]["categories"]
        .as_array_mut()
        .expect("categories")
        .push(json!({"name": "math", "labels": ["math"], "threshold": 0.0}));
    create(&client, &r)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{r:#}"));
}

// --- CEL rules (x-kubernetes-validations) -------------------------------------------------------

#[tokio::test]
async fn pool_with_two_endpoint_sources_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut p = pool();
    p["spec"]["endpoints"]["service"] = json!({"name": "vllm", "port": 8000});
    assert_rejected(
        &client,
        p,
        &[
            "spec.endpoints",
            "exactly one of selector, service, static or gateway must be set",
        ],
    )
    .await;
}

#[tokio::test]
async fn pool_without_endpoint_source_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut p = pool();
    p["spec"]["endpoints"] = json!({});
    assert_rejected(
        &client,
        p,
        &[
            "spec.endpoints",
            "exactly one of selector, service, static or gateway must be set",
        ],
    )
    .await;
}

#[tokio::test]
async fn selector_without_target_port_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut p = pool();
    p["spec"]["endpoints"] = json!({"selector": {"matchLabels": {"app": "vllm"}}});
    assert_rejected(
        &client,
        p,
        &[
            "spec.endpoints",
            "targetPort is required with selector, and only with selector",
        ],
    )
    .await;
}

#[tokio::test]
async fn target_port_without_selector_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut p = pool();
    p["spec"]["endpoints"]["targetPort"] = json!(8000);
    assert_rejected(
        &client,
        p,
        &[
            "spec.endpoints",
            "targetPort is required with selector, and only with selector",
        ],
    )
    .await;
}

#[tokio::test]
async fn duplicate_signal_names_across_kinds_are_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut r = route();
    // `stem` is already a keyword signal.
    r["spec"]["signals"]["categories"] = json!([{"name": "stem", "labels": ["math"]}]);
    let message = rejection(&client, &r).await;
    assert!(message.contains("spec.signals"), "{message}");
    // With `reason: FieldValueDuplicate` the API server answers a bare "spec.signals: Duplicate
    // value" and drops the rule's message; with another reason the message is shown.
    assert!(
        message.contains("Duplicate value")
            || message.contains(
                "signal names must be unique across keywords, examples, categories and headers"
            ),
        "{message}"
    );
}

#[tokio::test]
async fn decision_with_only_zero_weights_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut r = route();
    r["spec"]["decisions"][1]["targets"][0]["weight"] = json!(0);
    assert_rejected(
        &client,
        r,
        &[
            "spec.decisions[1]",
            "at least one target must have a weight above 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn reasoning_effort_without_reasoning_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let effort_off = json!({"enabled": false, "effort": "high"});
    // The rule sits on every `reasoning`: the default target, a (flattened) weighted target and
    // a fallback target.
    for (path, shown) in [
        (
            "/spec/defaultTarget/reasoning",
            "spec.defaultTarget.reasoning",
        ),
        (
            "/spec/decisions/0/targets/0/reasoning",
            "spec.decisions[0].targets[0].reasoning",
        ),
        (
            "/spec/decisions/0/fallbackTargets/0/reasoning",
            "spec.decisions[0].fallbackTargets[0].reasoning",
        ),
    ] {
        let mut r = route();
        *r.pointer_mut(path)
            .unwrap_or_else(|| panic!("sample route has no {path}")) = effort_off.clone();
        assert_rejected(
            &client,
            r,
            &[shown, "effort applies only when reasoning is enabled"],
        )
        .await;
    }
}

// --- OpenAPI schema rules -----------------------------------------------------------------------

#[tokio::test]
async fn unknown_reasoning_family_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut p = pool();
    p["spec"]["models"][0]["reasoningFamily"] = json!("llama");
    assert_rejected(
        &client,
        p,
        &[
            "spec.models[0].reasoningFamily",
            "Unsupported value: \"llama\"",
            "\"qwen3\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_cache_tenant_header_of_the_routers_own_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut r = route();
    r["spec"]["cache"] = json!({"enabled": true, "tenantHeader": "X-Semantic-Router-Decision"});
    assert_rejected(
        &client,
        r,
        &[
            "spec.cache",
            "tenantHeader cannot be one of the router's own x-semantic-router-* headers",
        ],
    )
    .await;
    let mut r = route();
    r["spec"]["cache"] = json!({"enabled": true, "tenantHeader": "authorization"});
    create(&client, &r)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{r:#}"));
}

#[tokio::test]
async fn threshold_above_one_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut r = route();
    r["spec"]["signals"]["examples"] =
        json!([{"name": "greeting", "prompts": ["hello there"], "threshold": 1.5}]);
    assert_rejected(
        &client,
        r,
        &[
            "spec.signals.examples[0].threshold",
            "should be less than or equal to 1",
        ],
    )
    .await;
}

#[tokio::test]
async fn negative_weight_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut r = route();
    r["spec"]["decisions"][0]["targets"][0]["weight"] = json!(-1);
    assert_rejected(
        &client,
        r,
        &[
            "spec.decisions[0].targets[0].weight",
            "should be greater than or equal to 0",
        ],
    )
    .await;
}

#[tokio::test]
async fn duplicate_decision_names_are_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut r = route();
    let first = r["spec"]["decisions"][0]["name"].clone();
    r["spec"]["decisions"][1]["name"] = first;
    assert_rejected(&client, r, &["spec.decisions[1]", "Duplicate value"]).await;
}

#[tokio::test]
async fn bad_static_address_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut p = pool();
    p["spec"]["endpoints"]["static"]["addresses"] = json!(["no port here"]);
    assert_rejected(
        &client,
        p,
        &["spec.endpoints.static.addresses[0]", "should match"],
    )
    .await;
}

// --- the harness itself -------------------------------------------------------------------------

/// `stop`/`restart` take the API server away and bring it back on the same port with the same
/// etcd data, and a client made before keeps working.
#[tokio::test]
async fn api_server_restart_keeps_port_and_data() {
    let (mut server, client) = server_with_crds().await;
    let p = pool();
    let name = p["metadata"]["name"].as_str().unwrap().to_owned();
    let created = create(&client, &p).await.expect("create a sample pool");
    let api = dynamic_api(&client, &p);

    server.stop().await;
    assert!(!server.is_running());
    assert!(
        api.get(&name).await.is_err(),
        "the API server still answers after stop()"
    );

    server.restart().await;
    assert!(server.is_running());
    let pool = api
        .get(&name)
        .await
        .expect("the pool, through the old client, after restart");
    assert_eq!(pool.metadata.uid, created.metadata.uid);
    assert_eq!(pool.data["spec"], created.data["spec"]);
}

#[tokio::test]
async fn a_decision_naming_an_undefined_signal_is_rejected() {
    let (_server, client) = server_with_crds().await;
    let mut r = route();
    let decisions = r["spec"]["decisions"].as_array_mut().expect("decisions");
    decisions[0]["when"] = json!({"any": ["stem", "no-such-signal"]});
    assert_rejected(&client, r, &["spec", "must be defined in spec.signals"]).await;
}
