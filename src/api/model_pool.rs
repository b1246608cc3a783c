//! `ModelPool`: one set of serving endpoints and the models they serve.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A set of model-serving endpoints (vLLM, SGLang, an llm-d gateway) and the models they serve,
/// e.g. "Qwen3-30B-A3B on the production H100 cluster". `SemanticRoute` decisions target a pool
/// and one of its models.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "semantic-router.io",
    version = "v1alpha1",
    kind = "ModelPool",
    doc = "A set of model-serving endpoints and the models they serve; SemanticRoute decisions target a pool and one of its models.",
    namespaced,
    status = "ModelPoolStatus",
    shortname = "mpool",
    category = "semantic-router",
    cel,
    printcolumn(
        name = "Models",
        type_ = "string",
        json_path = ".spec.models[*].name",
        description = "Models served by the pool"
    ),
    printcolumn(
        name = "Endpoints",
        type_ = "integer",
        json_path = ".status.readyEndpoints",
        description = "Ready endpoints"
    ),
    printcolumn = r#"{"name":"Ready", "type":"string", "jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ModelPoolSpec {
    /// Models served by every endpoint of this pool. Names are what the model server expects in
    /// the request body's `model` field.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub models: Vec<PoolModel>,

    /// Where the pool's endpoints come from: exactly one of `selector`, `service`, `static` or
    /// `gateway`.
    pub endpoints: EndpointSource,

    /// How the router picks one endpoint of the pool for each request.
    #[serde(default)]
    pub endpoint_picking: EndpointPicking,

    /// Scraping of model-server metrics (queue depth, KV-cache use) that load-aware picking reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsScrape>,

    /// Free-form attributes of the pool's infrastructure (e.g. `accelerator: H100`,
    /// `cluster: prod-east`), shown in decisions and usable by policy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One model that a pool serves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolModel {
    /// Model name as the model server expects it in the body's `model` field
    /// (e.g. `Qwen/Qwen3-30B-A3B`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// How the model switches reasoning on and off, which decides the body fields the router
    /// writes: `qwen3` (`chat_template_kwargs.enable_thinking`), `deepseek`
    /// (`chat_template_kwargs.thinking`), `gpt-oss` and `openai` (`reasoning_effort`), or `none`.
    #[serde(default)]
    pub reasoning_family: ReasoningFamily,

    /// Context window in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_window: Option<u32>,

    /// Price per million input (prompt) tokens, in the currency the platform reports in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub input_cost_per_million: Option<f64>,

    /// Price per million output (completion) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub output_cost_per_million: Option<f64>,
}

/// The body fields a model family uses to turn reasoning on or off.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReasoningFamily {
    /// Qwen3: `chat_template_kwargs.enable_thinking`.
    Qwen3,
    /// DeepSeek V3.1+: `chat_template_kwargs.thinking`.
    Deepseek,
    /// gpt-oss: `reasoning_effort`.
    GptOss,
    /// OpenAI reasoning models: `reasoning_effort`.
    Openai,
    /// The model has no reasoning switch; the body is left as it is.
    #[default]
    None,
}

/// Where a pool's endpoints come from. Exactly one source is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = kube::core::Rule::new("[has(self.selector), has(self.service), has(self.static), has(self.gateway)].filter(x, x).size() == 1")
        .message("exactly one of selector, service, static or gateway must be set")
        .reason(kube::core::Reason::FieldValueInvalid),
    validation = kube::core::Rule::new("has(self.selector) == has(self.targetPort)")
        .message("targetPort is required with selector, and only with selector")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSource {
    /// In-cluster Pods selected by label, discovered through their EndpointSlices. Only ready
    /// endpoints receive traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Port the selected Pods serve on. Required with `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<u16>,

    /// A Service in the pool's namespace; its EndpointSlices give the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,

    /// Fixed `host:port` addresses, for endpoints outside this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#static: Option<StaticEndpoints>,

    /// An inference gateway (e.g. llm-d) that picks its own endpoints. The router chooses the
    /// model and hands the request to the Envoy cluster named here; it does not pick an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,
}

/// A Service whose EndpointSlices list the pool's endpoints.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Name of the Service, in the pool's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Port of the model server on each endpoint.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// Fixed endpoint addresses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticEndpoints {
    /// Endpoint addresses as `ip:port` or `hostname:port`.
    #[schemars(
        length(min = 1, max = 256),
        inner(
            length(min = 3, max = 261),
            regex(pattern = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")
        )
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub addresses: Vec<String>,
}

/// An inference gateway that does its own endpoint picking.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Envoy cluster that reaches the gateway; the router puts it in the
    /// `x-semantic-router-cluster` header for Envoy's route to match.
    #[schemars(length(min = 1, max = 253))]
    pub cluster_name: String,
}

/// Endpoint-picking policy for a pool.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPicking {
    /// `RoundRobin` spreads requests evenly; `Random` picks uniformly at random.
    #[serde(default)]
    pub policy: PickPolicy,
    /// How many further endpoints to list after the chosen one, for Envoy to try on retry.
    #[serde(default = "default_fallbacks")]
    #[schemars(range(min = 0, max = 8))]
    pub fallbacks: u8,
}

fn default_fallbacks() -> u8 {
    1
}

/// How one endpoint is chosen among a pool's ready endpoints.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PickPolicy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
}

/// Scraping of a model server's Prometheus metrics.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsScrape {
    /// Which metric names to read: `vllm` (`vllm:num_requests_waiting`, ...) or `sglang`.
    #[serde(default)]
    pub engine: ServingEngine,
    /// HTTP path of the metrics endpoint on each model server.
    #[serde(default = "default_metrics_path")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^/"))]
    pub path: String,
    /// Seconds between scrapes.
    #[serde(default = "default_scrape_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

fn default_scrape_interval() -> u32 {
    5
}

/// The model server software, which decides metric names.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum ServingEngine {
    /// vLLM (and llm-d model servers).
    #[default]
    Vllm,
    /// SGLang.
    Sglang,
}

/// Observed state of a `ModelPool`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelPoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Endpoints ready to receive traffic.
    #[serde(default)]
    pub ready_endpoints: u32,
    /// `Ready`: the pool has at least one ready endpoint and is usable by routes.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
