//! The compiled, immutable routing table the data plane reads on every request.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::api::{
    CachePolicy, EndpointPicking, JailbreakPolicy, KeywordOperator, MetricsScrape, Reasoning,
    ReasoningFamily,
};

use super::ObjectKey;
use super::keywords::KeywordSet;

/// Everything the data plane needs to route, compiled from the resources it was built from.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Increases with every table published by one process.
    pub generation: u64,
    /// Pools by namespace/name.
    pub pools: BTreeMap<ObjectKey, Arc<Pool>>,
    /// Routes in precedence order: the first that matches a request governs it.
    pub routes: Vec<Arc<Route>>,
    /// Where a request that names a served model itself goes when no route governs it: by
    /// model, every pool that serves it and takes direct requests, in pool order.
    pub direct: BTreeMap<String, Vec<Target>>,
}

/// A compiled `ModelPool`.
#[derive(Debug)]
pub struct Pool {
    /// Namespace/name of the pool.
    pub key: ObjectKey,
    /// Models the pool serves, by name.
    pub models: BTreeMap<String, Model>,
    /// How requests reach the pool.
    pub backend: PoolBackend,
    /// Endpoint-picking policy and its parameters (fallbacks, load weights, affinity,
    /// health, saturation).
    pub picking: EndpointPicking,
    /// Scraping of the endpoints' model-server metrics, for load-aware picking.
    pub metrics: Option<MetricsScrape>,
    /// Free-form attributes (accelerator, cluster).
    pub labels: BTreeMap<String, String>,
    /// Whether requests naming one of its models directly (no route governs them) may go here.
    pub direct_requests: bool,
    /// Namespaces besides its own whose routes may target it (`*`: every one).
    pub allowed_route_namespaces: Vec<String>,
}

impl Pool {
    /// Whether routes of `namespace` may target this pool.
    pub fn admits_routes_of(&self, namespace: &str) -> bool {
        self.key.namespace == namespace
            || self
                .allowed_route_namespaces
                .iter()
                .any(|n| n == "*" || n == namespace)
    }
}

/// A model served by a pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Name as the model server expects it.
    pub name: String,
    /// Family, which decides the reasoning fields.
    pub reasoning_family: ReasoningFamily,
}

/// How requests reach a pool.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolBackend {
    /// The router picks one of these endpoints.
    Endpoints(Vec<SocketAddr>),
    /// An inference gateway picks; the router names the Envoy cluster.
    Gateway {
        /// Envoy cluster that reaches the gateway.
        cluster: String,
    },
}

/// A compiled `SemanticRoute`.
#[derive(Debug)]
pub struct Route {
    /// Namespace/name of the route.
    pub key: ObjectKey,
    /// Requested model names it governs.
    pub models: Vec<String>,
    /// Header conditions that must all hold (lower-case names).
    pub headers: Vec<(String, Vec<String>)>,
    /// Signals, indexed by [`SignalId`].
    pub signals: Vec<Signal>,
    /// Jailbreak policy, when set.
    pub jailbreak: Option<JailbreakPolicy>,
    /// Decisions in order; only those whose targets resolved.
    pub decisions: Vec<Decision>,
    /// Target when no decision matches.
    pub default_target: Target,
    /// Semantic cache policy.
    pub cache: Option<CachePolicy>,
    /// Signals some decision reads, ascending: only these are computed per request.
    needed: Vec<SignalId>,
    /// Whether a request needs the model: a needed signal takes one, jailbreak screening,
    /// or the semantic cache (keyed by the prompt's embedding).
    needs_model: bool,
}

impl Route {
    /// A route; what its requests need computed is derived here, once per table.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: ObjectKey,
        models: Vec<String>,
        headers: Vec<(String, Vec<String>)>,
        signals: Vec<Signal>,
        jailbreak: Option<JailbreakPolicy>,
        decisions: Vec<Decision>,
        default_target: Target,
        cache: Option<CachePolicy>,
    ) -> Self {
        let mut read = vec![false; signals.len()];
        for d in &decisions {
            for id in d.when.signals() {
                read[id] = true;
            }
        }
        let needed: Vec<SignalId> = (0..signals.len()).filter(|&id| read[id]).collect();
        let needs_model = jailbreak.is_some()
            || cache.as_ref().is_some_and(|c| c.enabled)
            || needed.iter().any(|&id| signals[id].kind.needs_model());
        Self {
            key,
            models,
            headers,
            signals,
            jailbreak,
            decisions,
            default_target,
            cache,
            needed,
            needs_model,
        }
    }

    /// Signals some decision reads; only these need computing.
    pub fn needed_signals(&self) -> impl Iterator<Item = SignalId> + '_ {
        self.needed.iter().copied()
    }

    /// Whether the request needs a model: a needed signal takes one, the route screens for
    /// jailbreaks, or it caches answers.
    pub fn needs_model(&self) -> bool {
        self.needs_model
    }
}

/// Index of a signal in its route's [`Route::signals`].
pub type SignalId = usize;

/// A named signal of a route.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// Name decisions refer to.
    pub name: String,
    /// What computes it.
    pub kind: SignalKind,
}

/// What computes a signal.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalKind {
    /// Keywords in the prompt (already lower-cased unless case-sensitive).
    Keywords {
        /// Words or phrases, compiled for one scan of the prompt.
        keywords: KeywordSet,
        /// Any or all.
        operator: KeywordOperator,
        /// Match case exactly.
        case_sensitive: bool,
    },
    /// A request header with one of these values (lower-case header name).
    Header {
        /// Header name.
        name: String,
        /// Accepted values.
        values: Vec<String>,
    },
    /// Embedding similarity to example prompts (computed by a model).
    Examples {
        /// The example prompts.
        prompts: ExamplePrompts,
        /// Similarity threshold.
        threshold: f32,
    },
    /// A classifier category (computed by a model).
    Category {
        /// The classifier read.
        classifier: crate::api::Classifier,
        /// Labels that make it hold.
        labels: Vec<String>,
        /// Confidence threshold.
        threshold: f32,
    },
}

/// A signal's example prompts and a digest of them, made at compile time, so a request finds
/// their embeddings by one number rather than by hashing every prompt's text.
#[derive(Clone, Debug, PartialEq)]
pub struct ExamplePrompts {
    prompts: Vec<String>,
    digest: u64,
}

impl ExamplePrompts {
    /// The set of `prompts`, in order.
    pub fn new(prompts: Vec<String>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        prompts.hash(&mut hasher);
        Self {
            digest: hasher.finish(),
            prompts,
        }
    }

    /// The prompts, in order.
    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// Equal for equal prompt lists within one process.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

impl SignalKind {
    /// Whether a model computes this signal (so it costs inference time).
    pub fn needs_model(&self) -> bool {
        matches!(
            self,
            SignalKind::Examples { .. } | SignalKind::Category { .. }
        )
    }
}

/// A compiled decision.
#[derive(Debug)]
pub struct Decision {
    /// Name, reported in `x-semantic-router-decision`.
    pub name: String,
    /// Condition over signals.
    pub when: Condition,
    /// Weighted targets (weight > 0 only), with the running total for picking.
    pub targets: Vec<(Target, u64)>,
    /// Sum of weights.
    pub total_weight: u64,
    /// Tried in order when no primary target has a ready endpoint.
    pub fallbacks: Vec<Target>,
}

/// A compiled `when`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    /// All must hold.
    pub all: Vec<SignalId>,
    /// At least one must hold, when not empty.
    pub any: Vec<SignalId>,
    /// None may hold.
    pub not: Vec<SignalId>,
}

impl Condition {
    /// True when the condition holds for every request.
    pub fn is_unconditional(&self) -> bool {
        self.all.is_empty() && self.any.is_empty() && self.not.is_empty()
    }

    /// Every signal it reads.
    pub fn signals(&self) -> impl Iterator<Item = SignalId> + '_ {
        self.all.iter().chain(&self.any).chain(&self.not).copied()
    }
}

/// The decision label of a request that named a served model itself (no route governs it).
pub const DIRECT: &str = "direct";
/// The decision label of a request no decision matched (the route's default target).
pub const DEFAULT_DECISION: &str = "default";

/// A resolved target: a model in a pool, with a reasoning mode.
#[derive(Clone, Debug)]
pub struct Target {
    /// The pool.
    pub pool: Arc<Pool>,
    /// The model, as the pool serves it.
    pub model: Model,
    /// Reasoning mode to write.
    pub reasoning: Reasoning,
    /// What a request sent here is reported as, built with the table.
    pub labels: Labels,
}

impl Target {
    /// The target of `model` in `pool` for the decision named `decision`.
    pub fn new(pool: Arc<Pool>, model: Model, reasoning: Reasoning, decision: &str) -> Self {
        let labels = Labels {
            decision: Arc::from(decision),
            model: Arc::from(model.name.as_str()),
            pool: Arc::from(pool.key.name.as_str()),
            reasoning: applied_reasoning_label(&reasoning, model.reasoning_family),
        };
        Self {
            pool,
            model,
            reasoning,
            labels,
        }
    }
}

/// The names a request to a target is reported under, in headers and metrics: built once per
/// table, so a routed request copies reference counts, not strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    /// The decision's name, [`DEFAULT_DECISION`] or [`DIRECT`].
    pub decision: Arc<str>,
    /// The model written into the body.
    pub model: Arc<str>,
    /// The pool's name.
    pub pool: Arc<str>,
    /// The reasoning mode ([`reasoning_label`]).
    pub reasoning: &'static str,
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.pool.key == other.pool.key
            && self.model == other.model
            && self.reasoning == other.reasoning
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} @ {} (reasoning {})",
            self.model.name, self.pool.key.name, self.labels.reasoning
        )
    }
}

/// The label of the reasoning a target applies: [`UNSUPPORTED_REASONING`] when reasoning is on
/// for a model without a reasoning switch (the body is left as it is), else
/// [`reasoning_label`].
fn applied_reasoning_label(reasoning: &Reasoning, family: ReasoningFamily) -> &'static str {
    if reasoning.enabled && family == ReasoningFamily::None {
        UNSUPPORTED_REASONING
    } else {
        reasoning_label(reasoning)
    }
}

/// The reasoning label of a target that turns reasoning on for a model whose family has no
/// switch: nothing in the body changes, so reporting `on` would mislead.
pub const UNSUPPORTED_REASONING: &str = "unsupported";

/// Short label of a reasoning mode: `off`, `on`, or the effort.
pub fn reasoning_label(reasoning: &Reasoning) -> &'static str {
    use crate::api::ReasoningEffort::*;
    match (reasoning.enabled, reasoning.effort) {
        (false, _) => "off",
        (true, None) => "on",
        (true, Some(Low)) => "low",
        (true, Some(Medium)) => "medium",
        (true, Some(High)) => "high",
    }
}

impl fmt::Display for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "routing table generation {}: {} pools, {} routes",
            self.generation,
            self.pools.len(),
            self.routes.len()
        )?;
        for pool in self.pools.values() {
            let models: Vec<&str> = pool.models.keys().map(String::as_str).collect();
            let backend = match &pool.backend {
                PoolBackend::Endpoints(e) => format!("{} endpoints", e.len()),
                PoolBackend::Gateway { cluster } => format!("gateway cluster {cluster}"),
            };
            writeln!(
                f,
                "  pool {}: models [{}], {}",
                pool.key,
                models.join(", "),
                backend
            )?;
        }
        for route in &self.routes {
            writeln!(
                f,
                "  route {} governs model [{}]:",
                route.key,
                route.models.join(", ")
            )?;
            for d in &route.decisions {
                let targets: Vec<String> = d.targets.iter().map(|(t, _)| t.to_string()).collect();
                writeln!(f, "    decision {} -> {}", d.name, targets.join(" | "))?;
            }
            writeln!(f, "    default -> {}", route.default_target)?;
        }
        Ok(())
    }
}

/// The live table, swapped atomically; readers never wait on the writer.
#[derive(Clone)]
pub struct SharedTable {
    current: Arc<ArcSwapOption<RoutingTable>>,
    loaded: watch::Sender<u64>,
    models: Arc<std::sync::RwLock<super::ModelCapabilities>>,
}

impl Default for SharedTable {
    fn default() -> Self {
        Self {
            current: Arc::default(),
            loaded: watch::channel(0).0,
            models: Arc::default(),
        }
    }
}

impl SharedTable {
    /// The current table, if one has been loaded.
    pub fn load(&self) -> Option<Arc<RoutingTable>> {
        self.current.load_full()
    }

    /// Publishes a new table, stamping it with the next generation; returns that generation.
    pub fn publish(&self, mut table: RoutingTable) -> u64 {
        let generation = *self.loaded.borrow() + 1;
        table.generation = generation;
        self.current.store(Some(Arc::new(table)));
        self.loaded.send_replace(generation);
        generation
    }

    /// Records what the loaded models can compute; sources compile against it.
    pub fn set_models(&self, models: super::ModelCapabilities) {
        if let Ok(mut m) = self.models.write() {
            *m = models;
        }
    }

    /// What the loaded models can compute.
    pub fn models(&self) -> super::ModelCapabilities {
        self.models.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Watches the generation of the published table (0 until the first).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.loaded.subscribe()
    }
}
