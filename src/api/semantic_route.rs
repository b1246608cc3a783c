//! `SemanticRoute`: the routing policy for the requests it governs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Routing policy for the requests it matches: the signals to compute on each prompt, ordered
/// decisions over those signals (first match wins), a default target and the semantic-cache
/// policy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "semantic-router.io",
    version = "v1alpha1",
    kind = "SemanticRoute",
    doc = "Routing policy for the LLM requests it matches: signals computed on each prompt, ordered decisions over them, a default target and the semantic-cache policy.",
    namespaced,
    status = "SemanticRouteStatus",
    shortname = "sroute",
    category = "semantic-router",
    cel,
    printcolumn = r#"{"name":"Ready", "type":"string", "jsonPath":".status.conditions[?(@.type==\"Ready\")].status", "description":"Every decision resolves and nothing is degraded"}"#,
    printcolumn = r#"{"name":"Reason", "type":"string", "jsonPath":".status.conditions[?(@.type==\"Ready\")].reason", "description":"Why it is (not) Ready"}"#,
    printcolumn = r#"{"name":"Default Pool", "type":"string", "jsonPath":".spec.defaultTarget.pool", "description":"Pool of the default target"}"#,
    printcolumn = r#"{"name":"Default Model", "type":"string", "jsonPath":".spec.defaultTarget.model", "description":"Model of the default target"}"#,
    printcolumn = r#"{"name":"Decisions", "type":"integer", "jsonPath":".status.decisions", "description":"Decisions in force"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Models", "type":"string", "priority":1, "jsonPath":".spec.match.models[*]", "description":"Requested model names this route governs"}"#,
    printcolumn = r#"{"name":"Scope", "type":"string", "priority":1, "jsonPath":".spec.match.scope", "description":"Whose requests its models are governed for: Cluster, or only its Namespace's"}"#,
    printcolumn = r#"{"name":"ResolvedRefs", "type":"string", "priority":1, "jsonPath":".status.conditions[?(@.type==\"ResolvedRefs\")].status", "description":"Every pool and model it names exists"}"#,
    printcolumn = r#"{"name":"Degraded", "type":"string", "priority":1, "jsonPath":".status.conditions[?(@.type==\"Degraded\")].status", "description":"In force, but not all of it works as written"}"#,
    printcolumn = r#"{"name":"Generation", "type":"integer", "priority":1, "jsonPath":".metadata.generation", "description":"The spec's generation"}"#,
    printcolumn = r#"{"name":"Observed", "type":"integer", "priority":1, "jsonPath":".status.observedGeneration", "description":"The generation the status describes (behind Generation: the router has not seen the change)"}"#
)]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.decisions) || self.decisions.all(d, !has(d.when) || ((has(d.when.all) ? d.when.all : []) + (has(d.when.any) ? d.when.any : []) + (has(d.when.not) ? d.when.not : [])).all(n, has(self.signals) && ((has(self.signals.keywords) && self.signals.keywords.exists(s, s.name == n)) || (has(self.signals.examples) && self.signals.examples.exists(s, s.name == n)) || (has(self.signals.categories) && self.signals.categories.exists(s, s.name == n)) || (has(self.signals.headers) && self.signals.headers.exists(s, s.name == n)))))")
        .message("every signal a decision's when names (all, any, not) must be defined in spec.signals (keywords, examples, categories or headers)")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct SemanticRouteSpec {
    /// Which requests this route governs. A request is governed when its `model` is one of
    /// `models` and every header match holds.
    pub r#match: RouteMatch,

    /// Named signals computed on the prompt; decisions refer to them by name. Names are unique
    /// across all signal kinds.
    #[serde(default)]
    pub signals: Signals,

    /// Ordered decisions: the first whose `when` holds picks the target.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub decisions: Vec<Decision>,

    /// Where a request goes when no decision matches, or when a signal it needs is unavailable.
    pub default_target: Target,

    /// Semantic cache: answer a prompt close enough to one already answered from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

/// Which requests a route governs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Requested model names (the body's `model`) this route governs, e.g. `auto`.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub models: Vec<String>,

    /// Header conditions that must all hold, e.g. a tenant header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,

    /// Whose requests the route governs its models for. `Cluster` (the default): every
    /// request's. `Namespace`: only requests the gateway marks as this namespace's, with the
    /// `x-route-namespace` header (set by the gateway per listener, host or verified token;
    /// never taken from a client), so every team can have its own `auto`. A namespace's route
    /// goes before a cluster-wide one for its requests.
    #[serde(default, skip_serializing_if = "AliasScope::is_cluster")]
    #[schemars(extend("default" = "Cluster"))]
    pub scope: AliasScope,
}

/// Header that names the namespace whose routes govern a request (see [`RouteMatch::scope`]).
pub const NAMESPACE_HEADER: &str = "x-route-namespace";

/// Whose requests a route's model names are for.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum AliasScope {
    /// Every request's, whatever its namespace.
    #[default]
    Cluster,
    /// Only requests marked with the route's namespace in `x-route-namespace`.
    Namespace,
}

impl AliasScope {
    fn is_cluster(&self) -> bool {
        *self == Self::Cluster
    }
}

/// A condition on one request header.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name, case-insensitive.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    /// The header holds one of these values exactly.
    #[schemars(length(min = 1, max = 32), inner(length(max = 4096)))]
    pub values: Vec<String>,
}

/// The signals a route computes. Only signals that some decision uses are computed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = kube::core::Rule::new("(self.keywords.map(s, s.name) + self.examples.map(s, s.name) + self.categories.map(s, s.name) + self.headers.map(s, s.name)).all(n, (self.keywords.map(s, s.name) + self.examples.map(s, s.name) + self.categories.map(s, s.name) + self.headers.map(s, s.name)).filter(m, m == n).size() == 1)")
        .message("signal names must be unique across keywords, examples, categories and headers")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct Signals {
    /// Keyword sets: true when the prompt contains the keywords.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub keywords: Vec<KeywordSignal>,

    /// Example-prompt sets: true when the prompt's embedding is similar enough to one of the
    /// examples. Defines an intent in the resource itself, no training needed.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub examples: Vec<ExampleSignal>,

    /// Classifier categories: true when the category classifier's label is one of `labels` with
    /// enough confidence.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub categories: Vec<CategorySignal>,

    /// Header signals: true when a request header holds one of the values (e.g. a team).
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<HeaderSignal>,

    /// Jailbreak detection on every governed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jailbreak: Option<JailbreakPolicy>,
}

/// A keyword signal.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeywordSignal {
    /// Signal name, referred to by decisions.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Words or phrases to look for in the prompt.
    #[schemars(length(min = 1, max = 256), inner(length(min = 1, max = 256)))]
    pub keywords: Vec<String>,
    /// `Any`: one keyword is enough; `All`: every keyword must appear.
    #[serde(default)]
    pub operator: KeywordOperator,
    /// Match case exactly.
    #[serde(default)]
    pub case_sensitive: bool,
}

/// How keywords combine.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum KeywordOperator {
    /// At least one keyword appears.
    #[default]
    Any,
    /// Every keyword appears.
    All,
}

/// An example-prompt signal.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExampleSignal {
    /// Signal name, referred to by decisions.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Example prompts of the intent.
    #[schemars(length(min = 1, max = 128), inner(length(min = 1, max = 4096)))]
    pub prompts: Vec<String>,
    /// Cosine similarity at or above which the signal holds.
    #[serde(default = "default_similarity")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f32,
}

fn default_similarity() -> f32 {
    0.75
}

/// A classifier-category signal.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CategorySignal {
    /// Signal name, referred to by decisions.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The classifier read: `category` (the domain head, e.g. `math`, `law`) or `complexity`
    /// (`reasoning` for prompts that need multi-step reasoning, `simple` otherwise).
    #[serde(default)]
    pub classifier: Classifier,
    /// Classifier labels that make the signal hold (e.g. `math`, `physics`).
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 128)))]
    pub labels: Vec<String>,
    /// The probability the classifier must give these labels together (a prompt split between
    /// `math` and `physics` is still sure to be one of them).
    #[serde(default = "default_confidence")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f32,
}

/// A classifier the router loads (`run --category-head`, `--complexity-head`).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Classifier {
    /// The domain classifier (`--category-head`).
    #[default]
    Category,
    /// The complexity classifier (`--complexity-head`).
    Complexity,
}

impl Classifier {
    /// The name used in flags and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Classifier::Category => "category",
            Classifier::Complexity => "complexity",
        }
    }
}

fn default_confidence() -> f32 {
    0.5
}

/// A header signal.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderSignal {
    /// Signal name, referred to by decisions.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Header name, case-insensitive.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub header: String,
    /// The signal holds when the header has one of these values exactly.
    #[schemars(length(min = 1, max = 32), inner(length(max = 4096)))]
    pub values: Vec<String>,
}

/// Jailbreak detection.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JailbreakPolicy {
    /// Jailbreak score at or above which the action is taken.
    #[serde(default = "default_jailbreak_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f32,
    /// `Block` answers 403 before the request reaches a model; `Flag` only adds a header.
    #[serde(default)]
    pub action: JailbreakAction,
}

fn default_jailbreak_threshold() -> f32 {
    0.8
}

/// What to do with a prompt judged a jailbreak attempt.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum JailbreakAction {
    /// Answer 403 with an OpenAI-shaped error.
    #[default]
    Block,
    /// Pass the request on with `x-semantic-router-jailbreak: flagged`.
    Flag,
}

/// One decision: when its condition holds, the request goes to one of its targets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = kube::core::Rule::new("self.targets.exists(t, t.weight > 0)")
        .message("at least one target must have a weight above 0")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Decision name, unique in the route; reported in `x-semantic-router-decision`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Human description of the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// The condition over signals. An empty `when` always holds.
    #[serde(default)]
    pub when: When,

    /// Targets, chosen by weight.
    #[schemars(length(min = 1, max = 16))]
    pub targets: Vec<WeightedTarget>,

    /// Tried in order when no primary target has a ready endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub fallback_targets: Vec<Target>,
}

/// A condition over named signals: every signal in `all` holds, at least one in `any` holds
/// (when `any` is not empty), and none in `not` holds.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct When {
    /// Signals that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    pub all: Vec<String>,
    /// Signals of which at least one must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    pub any: Vec<String>,
    /// Signals of which none may hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63)))]
    pub not: Vec<String>,
}

/// Where a request goes: a model in a pool, with a reasoning mode.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Name of a `ModelPool`, in the route's namespace unless `namespace` says otherwise.
    #[schemars(length(min = 1, max = 253))]
    pub pool: String,
    /// Namespace of the pool, when not the route's own; that pool must list the route's
    /// namespace in its `allowedRouteNamespaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub namespace: Option<String>,
    /// A model the pool serves.
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// Reasoning mode written into the request for the model's family.
    #[serde(default)]
    pub reasoning: Reasoning,
}

/// A target with a weight, for splits such as canaries.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedTarget {
    /// The target.
    #[serde(flatten)]
    pub target: Target,
    /// Relative share of requests. 0 takes the target out of rotation.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Reasoning mode for a target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.effort) || self.enabled")
        .message("effort applies only when reasoning is enabled")
        .reason(kube::core::Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct Reasoning {
    /// Turn the model's reasoning (thinking) on. Off is written explicitly for families that
    /// think by default.
    #[serde(default)]
    pub enabled: bool,
    /// Reasoning effort for families that take one (`gpt-oss`, `openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<ReasoningEffort>,
}

/// Reasoning effort.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    /// Least reasoning.
    Low,
    /// The usual amount.
    Medium,
    /// Most reasoning.
    High,
}

/// Semantic-cache policy for a route.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.tenantHeader) || !self.tenantHeader.matches('^(?i)x-semantic-router-')")
        .message("tenantHeader cannot be one of the router's own x-semantic-router-* headers")
        .reason(kube::core::Reason::FieldValueInvalid),
)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicy {
    /// Serve cache hits for this route.
    #[serde(default)]
    pub enabled: bool,
    /// Cosine similarity at or above which a cached answer is served.
    #[serde(default = "default_cache_similarity")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub similarity_threshold: f32,
    /// Seconds an answer stays in the cache.
    #[serde(default = "default_cache_ttl")]
    #[schemars(range(min = 1, max = 604_800))]
    pub ttl_seconds: u32,
    /// Request header naming the tenant, e.g. `authorization` (one cache per API key) or a
    /// team header the gateway sets after authenticating the caller. Answers are served only
    /// to requests with the same value (kept hashed, never stored), and requests without the
    /// header are not cached. Unset: every caller of this route shares its answers. Name a
    /// header clients cannot forge, or one tenant can read another's answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub tenant_header: Option<String>,
}

fn default_cache_similarity() -> f32 {
    0.92
}

fn default_cache_ttl() -> u32 {
    3600
}

/// Observed state of a `SemanticRoute`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SemanticRouteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Decisions in force (those whose targets resolved).
    #[serde(default)]
    pub decisions: u32,
    /// `Ready`: every decision resolves and nothing is degraded (`Unknown`/`Pending` until the
    /// router has looked). `Accepted`: the route is valid and in the routing table.
    /// `ResolvedRefs`: every pool and model it names exists. `Degraded`: in force, but the
    /// router warned (a signal it cannot compute, a decision that can never match).
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
