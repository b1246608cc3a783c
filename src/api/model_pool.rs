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
    printcolumn = r#"{"name":"Ready", "type":"string", "jsonPath":".status.conditions[?(@.type==\"Ready\")].status", "description":"Ready endpoints and nothing degraded"}"#,
    printcolumn = r#"{"name":"Endpoints", "type":"integer", "jsonPath":".status.readyEndpoints", "description":"Ready endpoints"}"#,
    printcolumn = r#"{"name":"Models", "type":"string", "jsonPath":".spec.models[*].name", "description":"Models served by the pool"}"#,
    printcolumn = r#"{"name":"Picking", "type":"string", "jsonPath":".spec.endpointPicking.policy", "description":"Endpoint-picking policy"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason", "type":"string", "priority":1, "jsonPath":".status.conditions[?(@.type==\"Ready\")].reason", "description":"Why it is (not) Ready"}"#,
    printcolumn = r#"{"name":"Degraded", "type":"string", "priority":1, "jsonPath":".status.conditions[?(@.type==\"Degraded\")].status", "description":"Serving, but the router warned"}"#,
    printcolumn = r#"{"name":"Generation", "type":"integer", "priority":1, "jsonPath":".metadata.generation", "description":"The spec's generation"}"#,
    printcolumn = r#"{"name":"Observed", "type":"integer", "priority":1, "jsonPath":".status.observedGeneration", "description":"The generation the status describes"}"#
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

    /// Whether a request that names one of the pool's models itself (rather than an alias a
    /// SemanticRoute governs) may be sent here. Set false for a pool only a route's decisions
    /// may use, e.g. one team's experiment cluster. Default true.
    #[serde(default = "default_direct_requests")]
    pub direct_requests: bool,

    /// Namespaces whose SemanticRoutes may target this pool, besides its own (`*`: every
    /// namespace), in the spirit of Gateway API's ReferenceGrant: the pool's owners decide
    /// who sends it traffic. Empty (the default): only routes of the pool's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 63),
            regex(pattern = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?|\\*)$")
        )
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub allowed_route_namespaces: Vec<String>,
}

fn default_direct_requests() -> bool {
    true
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

/// How the router picks endpoints of a pool, and when it stops sending to them.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPicking {
    /// How one endpoint is chosen for each request. `LoadAware` (the default) sends each
    /// request to the endpoint with the lowest load score: queue depth, running requests and
    /// KV-cache use scraped from the model servers (see `metrics`), blended with the requests
    /// this router has in flight to each endpoint; with no metrics it is least-in-flight.
    /// `PrefixAffinity` is load-aware, but a request whose prompt starts like a recent one goes
    /// to the endpoint that served that prefix (its KV cache likely still holds it) while that
    /// endpoint's load stays within `prefixAffinity.loadTolerance` of the least-loaded one.
    /// `SessionAffinity` keeps every request carrying the same session header on one healthy
    /// endpoint, load-aware for the first request of a session and for requests without it.
    /// `RoundRobin` takes each endpoint in turn; `Random` picks uniformly at random. Every
    /// policy skips ejected endpoints (see `health`) and endpoints past `maxQueueDepth`.
    #[serde(default)]
    pub policy: PickPolicy,

    /// How many further endpoints to list after the chosen one, for Envoy to try on retry
    /// (connect failure or 5xx), best first.
    #[serde(default = "default_fallbacks")]
    #[schemars(range(min = 0, max = 8))]
    pub fallbacks: u8,

    /// Saturation: an endpoint whose queue (waiting requests scraped from the model server,
    /// plus the requests this router sent it since that scrape; without fresh metrics, the
    /// requests this router has in flight to it) has reached this depth gets no new requests.
    /// When every endpoint of every pool a request may go to (its target and the decision's
    /// fallback targets) is saturated, the router answers 429 with an OpenAI-shaped
    /// `rate_limit_error` and the header `x-semantic-router-shed-reason: saturated` instead of
    /// piling on. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_queue_depth: Option<u32>,

    /// Weights of the load score that `LoadAware`, `PrefixAffinity` and `SessionAffinity`
    /// minimise.
    #[serde(default)]
    pub load: LoadScore,

    /// Parameters of `PrefixAffinity`.
    #[serde(default)]
    pub prefix_affinity: PrefixAffinity,

    /// Parameters of `SessionAffinity`.
    #[serde(default)]
    pub session_affinity: SessionAffinity,

    /// Passive health checking: endpoints that fail are ejected for a while.
    #[serde(default)]
    pub health: PassiveHealth,
}

impl Default for EndpointPicking {
    fn default() -> Self {
        Self {
            policy: PickPolicy::default(),
            fallbacks: default_fallbacks(),
            max_queue_depth: None,
            load: LoadScore::default(),
            prefix_affinity: PrefixAffinity::default(),
            session_affinity: SessionAffinity::default(),
            health: PassiveHealth::default(),
        }
    }
}

fn default_fallbacks() -> u8 {
    1
}

/// How one endpoint is chosen among a pool's ready endpoints.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PickPolicy {
    /// The endpoint with the lowest load score (least in flight without metrics).
    #[default]
    LoadAware,
    /// Load-aware, preferring the endpoint that recently served the same prompt prefix.
    PrefixAffinity,
    /// One endpoint per session header value, load-aware otherwise.
    SessionAffinity,
    /// Each endpoint in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
}

/// Weights of an endpoint's load score. The score is `waitingWeight` × waiting requests +
/// `runningWeight` × running requests + `kvCacheWeight` × KV-cache use (0 to 1), from the
/// model server's last scrape; requests this router sent to the endpoint since that scrape
/// count as waiting. Figures older than three scrape intervals are ignored: then (and for a
/// pool without `metrics`) the score is `waitingWeight` × the requests this router has in
/// flight to the endpoint.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadScore {
    /// Weight of one waiting (queued, not yet running) request.
    #[serde(default = "default_waiting_weight")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub waiting_weight: f64,
    /// Weight of one running request (in the model server's batch).
    #[serde(default = "default_running_weight")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub running_weight: f64,
    /// Weight of a full KV cache (usage 1.0); half as much at 50%.
    #[serde(default = "default_kv_cache_weight")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub kv_cache_weight: f64,
}

impl Default for LoadScore {
    fn default() -> Self {
        Self {
            waiting_weight: default_waiting_weight(),
            running_weight: default_running_weight(),
            kv_cache_weight: default_kv_cache_weight(),
        }
    }
}

fn default_waiting_weight() -> f64 {
    1.0
}

fn default_running_weight() -> f64 {
    0.5
}

fn default_kv_cache_weight() -> f64 {
    4.0
}

/// Parameters of `PrefixAffinity` picking. The prompt (model name, then every message's role
/// and text in order) is cut into blocks; each block is identified by a hash chained over all
/// blocks before it, so two prompts share a block only when they share everything up to it.
/// The router remembers which endpoint last served each block.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrefixAffinity {
    /// Size of a block, in bytes of prompt text (UTF-8; about 4 bytes per token of English).
    /// Prompts shorter than one block get no affinity. At most the first 256 blocks of a prompt
    /// are considered.
    #[serde(default = "default_block_size")]
    #[schemars(range(min = 16, max = 65536))]
    pub block_size: u32,
    /// How much higher (in load-score units, about one waiting request each) the load of the
    /// endpoint that served the prefix may be than the least-loaded endpoint's for the request
    /// to still go there. Past it, the least-loaded endpoint gets the request (and the prefix).
    #[serde(default = "default_load_tolerance")]
    #[schemars(range(min = 0.0, max = 100000.0))]
    pub load_tolerance: f64,
    /// Blocks remembered per pool; the least recently used are forgotten first.
    #[serde(default = "default_prefix_entries")]
    #[schemars(range(min = 1, max = 4_000_000))]
    pub max_blocks: u32,
}

impl Default for PrefixAffinity {
    fn default() -> Self {
        Self {
            block_size: default_block_size(),
            load_tolerance: default_load_tolerance(),
            max_blocks: default_prefix_entries(),
        }
    }
}

fn default_block_size() -> u32 {
    128
}

fn default_load_tolerance() -> f64 {
    4.0
}

fn default_prefix_entries() -> u32 {
    65_536
}

/// Parameters of `SessionAffinity` picking. A session stays on its endpoint while that
/// endpoint is in the pool, not ejected and not saturated; otherwise it moves to the
/// least-loaded endpoint and stays there.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    /// Request header whose value names the session (case-insensitive).
    #[serde(default = "default_session_header")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: String,
    /// Sessions remembered per pool; the least recently used are forgotten first.
    #[serde(default = "default_max_sessions")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_sessions: u32,
}

impl Default for SessionAffinity {
    fn default() -> Self {
        Self {
            header: default_session_header(),
            max_sessions: default_max_sessions(),
        }
    }
}

fn default_session_header() -> String {
    "x-session-id".to_owned()
}

fn default_max_sessions() -> u32 {
    100_000
}

/// Passive health checking from the responses the router sees: connect failures (the
/// request was retried on the next endpoint, or no response came at all) and 5xx answers.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealth {
    /// Consecutive failures after which an endpoint is ejected: it gets no requests while
    /// another endpoint of the pool is not ejected.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_failures: u32,
    /// Seconds an endpoint stays ejected the first time; each further ejection without a
    /// success in between lasts this much longer, up to ten times as long.
    #[serde(default = "default_ejection_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub ejection_seconds: u32,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            ejection_seconds: default_ejection_seconds(),
        }
    }
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_ejection_seconds() -> u32 {
    30
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
    /// Seconds between scrapes. Each scrape times out after the interval or 2 seconds,
    /// whichever is shorter; figures older than three intervals no longer count.
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
    /// `Ready`: the pool has at least one ready endpoint and nothing is degraded
    /// (`Unknown`/`Pending` until the router has looked). `Degraded`: serving, but the router
    /// warned (e.g. a static address it skips).
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
