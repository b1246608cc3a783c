//! `run`'s model options: which encoder and heads back the model signals, and how requests
//! share the encoder. Loaded once, before the router turns ready.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::signals::{CandleSignals, ModelFiles};
use crate::classify::{
    ClassifyError, DEFAULT_MAX_TOKENS, HubOptions, ModelSource, Precision, ServiceConfig,
};
use crate::routing::{ModelSignals, NoModels, SharedTable};

/// The model signals' encoder, heads and batching.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Encoder for model signals (example-prompt similarity, categories, jailbreak): a
    /// directory with config.json, tokenizer.json and *.safetensors (BERT, MiniLM, ModernBERT,
    /// DeBERTa-v2), or a Hugging Face model id `org/name[@revision]` taken from the Hub cache
    /// (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub) and downloaded into it
    /// when missing, unless HF_HUB_OFFLINE=1. Without it, decisions that need a model signal
    /// do not match.
    #[arg(long, value_name = "DIR|HUB_ID", env = "SR_ENCODER")]
    pub encoder: Option<ModelSource>,

    /// Head for `category` signals (head.safetensors + labels.json over the encoder).
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_CATEGORY_HEAD"
    )]
    pub category_head: Option<PathBuf>,

    /// Complexity head behind `categories` signals with `classifier: complexity` (its labels:
    /// `reasoning`, `simple`).
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_COMPLEXITY_HEAD"
    )]
    pub complexity_head: Option<PathBuf>,

    /// Head for jailbreak policies; its `jailbreak` label's probability is the score.
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_JAILBREAK_HEAD"
    )]
    pub jailbreak_head: Option<PathBuf>,

    /// Static tier (`semantic-router distill --out DIR`) in front of the encoder: a head with a
    /// static twin (`<head>/static/`, trained by `train --tier static`) is answered by it
    /// when it is sure, in microseconds; otherwise, and for routes with example prompts or
    /// the semantic cache, the encoder answers. A folder without a static model gets one
    /// distilled from the encoder at start (about a minute on two cores), read from then on.
    #[arg(
        long,
        value_name = "DIR",
        requires = "encoder",
        env = "SR_STATIC_MODEL"
    )]
    pub static_model: Option<PathBuf>,

    /// Longest prompt the encoder reads, in tokens (the last user turn). A longer one keeps its
    /// first quarter and last three quarters, and is compared with example prompts by its best
    /// 64-token run of lines.
    #[arg(long, default_value_t = DEFAULT_MAX_TOKENS, env = "SR_CLASSIFY_MAX_TOKENS")]
    pub classify_max_tokens: usize,

    /// Arithmetic of the encoder's linear layers: `int8` runs a BERT-family encoder
    /// (MiniLM) about twice as fast on the CPU, its embeddings within a cosine of ~0.99 of
    /// f32's (`semantic-router eval --precision int8` measures a head on it).
    #[arg(long, value_enum, default_value_t = Precision::default(), env = "SR_CLASSIFY_PRECISION")]
    pub classify_precision: Precision,

    /// Most prompts in one forward pass (1 disables batching).
    #[arg(long, default_value_t = 16, env = "SR_CLASSIFY_MAX_BATCH")]
    pub classify_max_batch: usize,

    /// Microseconds a prompt may wait for others to share its forward pass.
    #[arg(long, default_value_t = 500, env = "SR_CLASSIFY_MAX_WAIT_US")]
    pub classify_max_wait_us: u64,

    /// Prompts waiting for the model beyond which requests go on without model signals.
    #[arg(long, default_value_t = 128, env = "SR_CLASSIFY_QUEUE")]
    pub classify_queue: usize,

    /// Texts whose encoder output is kept in memory (least recently used first out), so a
    /// repeated prompt is not encoded again; 0 disables it. About 1.6 KB each with MiniLM.
    #[arg(long, default_value_t = 4096, env = "SR_CLASSIFY_CACHE")]
    pub classify_cache: usize,

    /// Milliseconds a request waits for model signals before it is decided without them
    /// (counted in semantic_router_model_signal_fallbacks_total).
    #[arg(long, default_value_t = 200, env = "SR_CLASSIFY_BUDGET_MS")]
    pub classify_budget_ms: u64,
}

impl ModelArgs {
    /// The model signals these options ask for, or none without an encoder. Tells `shared`
    /// what the models can answer, registers their metrics and keeps example prompts embedded
    /// as tables are published (so it must run inside the async runtime).
    pub fn load(
        &self,
        shared: &SharedTable,
        registry: &mut Registry,
    ) -> Result<Arc<dyn ModelSignals>, ClassifyError> {
        let Some(source) = &self.encoder else {
            return Ok(Arc::new(NoModels));
        };
        let started = Instant::now();
        let dir = source.resolve(&HubOptions::from_env())?;
        let files = ModelFiles {
            encoder: dir.clone(),
            max_tokens: self.classify_max_tokens,
            precision: self.classify_precision,
            category_head: self.category_head.clone(),
            complexity_head: self.complexity_head.clone(),
            jailbreak_head: self.jailbreak_head.clone(),
            static_model: self.static_model.clone(),
        };
        let (signals, capabilities) = CandleSignals::load(
            &files,
            ServiceConfig {
                max_batch_size: self.classify_max_batch,
                max_wait: Duration::from_micros(self.classify_max_wait_us),
                queue_capacity: self.classify_queue,
                cache_capacity: self.classify_cache,
                ..ServiceConfig::default()
            },
            Duration::from_millis(self.classify_budget_ms),
        )?;
        signals.register(registry);
        shared.set_models(capabilities);
        tracing::info!(
            encoder = %source, dir = %dir.display(), elapsed = ?started.elapsed(), "models loaded"
        );
        tokio::spawn(signals.index_examples(shared.clone()));
        Ok(Arc::new(signals))
    }
}
