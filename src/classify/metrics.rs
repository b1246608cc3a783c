//! Prometheus metrics of the classifier service.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a request was not run on the model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `overloaded` (queue full) or `deadline_exceeded`.
    pub reason: &'static str,
}

/// Outcome of a cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Which tier answered a cascaded request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// `static` (the static tier was sure enough) or `encoder` (deferred).
    pub tier: &'static str,
}

/// Every metric the classifier records; clones share the same series.
#[derive(Clone)]
pub struct ClassifierMetrics {
    /// Duration of one batched forward pass (encode, pool, normalise, checkpoint head), in
    /// seconds; tokenization is not included.
    pub inference_seconds: Histogram,
    /// Texts per forward pass.
    pub batch_size: Histogram,
    /// Requests waiting in the queue.
    pub queue_depth: Gauge,
    /// Requests not run on the model, by reason.
    pub shed: Family<ShedLabels, Counter>,
    /// Embedding cache lookups, by result.
    pub cache: Family<CacheLabels, Counter>,
    /// Texts whose encoder output the embedding cache holds (bounded by its capacity).
    pub cache_entries: Gauge,
    /// Texts run through the encoder.
    pub encoded: Counter,
    /// Queued requests dropped because their caller had gone.
    pub abandoned: Counter,
    /// Cascaded requests, by the tier that answered.
    pub tier_answers: Family<TierLabels, Counter>,
    /// Prompts over the token budget read in segments (for example-prompt signals).
    pub segmented: Counter,
}

impl Default for ClassifierMetrics {
    fn default() -> Self {
        Self {
            // 0.5 ms .. ~8 s
            inference_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 15)),
            // 1 .. 128
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            queue_depth: Gauge::default(),
            shed: Family::default(),
            cache: Family::default(),
            cache_entries: Gauge::default(),
            encoded: Counter::default(),
            abandoned: Counter::default(),
            tier_answers: Family::default(),
            segmented: Counter::default(),
        }
    }
}

impl ClassifierMetrics {
    /// Registers every metric under the `semantic_router_classifier` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("semantic_router_classifier");
        r.register(
            "inference_duration_seconds",
            "Duration of one batched encoder forward pass",
            self.inference_seconds.clone(),
        );
        r.register(
            "batch_size",
            "Texts per encoder forward pass",
            self.batch_size.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting for the encoder",
            self.queue_depth.clone(),
        );
        r.register(
            "shed",
            "Requests not run on the encoder (queue full or deadline passed), by reason",
            self.shed.clone(),
        );
        r.register(
            "cache_lookups",
            "Embedding cache lookups, by result",
            self.cache.clone(),
        );
        r.register(
            "cache_entries",
            "Texts whose encoder output the embedding cache holds (at most its capacity)",
            self.cache_entries.clone(),
        );
        r.register(
            "encoded_texts",
            "Texts run through the encoder",
            self.encoded.clone(),
        );
        r.register(
            "abandoned",
            "Queued requests skipped because their caller had gone",
            self.abandoned.clone(),
        );
        r.register(
            "cascade_answers",
            "Requests offered to the static tier, by the tier that answered (encoder: deferred; static_guess: deferred, then the encoder shed it and the unsure static answer was taken)",
            self.tier_answers.clone(),
        );
        r.register(
            "segmented_prompts",
            "Prompts over the token budget read in segments of whole lines for example-prompt signals (one encoder pass per segment)",
            self.segmented.clone(),
        );
    }

    /// Counts one cascaded request answered by `tier`.
    pub fn tier_answer(&self, tier: &'static str) {
        self.tier_answers.get_or_create(&TierLabels { tier }).inc();
    }

    /// Cascaded requests `tier` answered so far.
    pub fn tier_answers(&self, tier: &'static str) -> u64 {
        self.tier_answers.get_or_create(&TierLabels { tier }).get()
    }

    pub(crate) fn shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ShedLabels { reason }).inc();
    }

    pub(crate) fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache.get_or_create(&CacheLabels { result }).inc();
    }
}
