//! Model signals from the Candle classifiers: example-prompt similarity, classifier categories
//! and the jailbreak score, all from one encoder pass per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::classify::cascade::{CASCADE_FILE, CascadeConfig};
use crate::classify::{
    ClassifierService, ClassifyError, DistillOptions, Encoder, EncoderOptions, Head, ServiceConfig,
    StaticModel, StaticTier, Tier,
};
use crate::routing::{
    ModelCapabilities, ModelFindings, ModelSignals, Route, RoutingTable, SharedTable, SignalKind,
    SignalValue, SignalValues,
};

/// Label of the jailbreak head whose probability is the jailbreak score.
pub const JAILBREAK_LABEL: &str = "jailbreak";

/// Which loaded heads serve which signals.
#[derive(Clone, Debug, Default)]
pub struct HeadNames {
    /// Head behind `category` signals.
    pub category: Option<String>,
    /// Head behind `complexity` signals.
    pub complexity: Option<String>,
    /// Head behind jailbreak policies; must have a `jailbreak` label.
    pub jailbreak: Option<String>,
}

impl HeadNames {
    /// The head behind `classifier`'s signals, if one is loaded.
    pub fn of(&self, classifier: crate::api::Classifier) -> Option<&str> {
        match classifier {
            crate::api::Classifier::Category => self.category.as_deref(),
            crate::api::Classifier::Complexity => self.complexity.as_deref(),
        }
    }
}

/// The files behind a router's model signals: one encoder and the heads over it, each under
/// the role it serves. `run` and the policy what-if load them the same way.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    /// The encoder's directory (config.json, tokenizer.json, *.safetensors).
    pub encoder: PathBuf,
    /// Longest prompt the encoder reads, in tokens.
    pub max_tokens: usize,
    /// Head behind `category` signals.
    pub category_head: Option<PathBuf>,
    /// Head behind `classifier: complexity` signals.
    pub complexity_head: Option<PathBuf>,
    /// Head behind jailbreak policies (must have a `jailbreak` label).
    pub jailbreak_head: Option<PathBuf>,
    /// The static tier (`semantic-router distill`): put in front of the encoder for every head
    /// with a static twin in its `static/` subfolder.
    pub static_model: Option<PathBuf>,
}

/// Subfolder of a head that holds its static-tier twin (head files and `cascade.json`).
pub const STATIC_TWIN: &str = "static";

/// [`ModelSignals`] backed by a [`ClassifierService`].
pub struct CandleSignals {
    service: ClassifierService,
    heads: HeadNames,
    budget: Duration,
    examples: Arc<ExampleIndex>,
    fallbacks: Counter,
}

impl CandleSignals {
    /// Signals from `service`, waiting at most `budget` for the model per request.
    pub fn new(service: ClassifierService, heads: HeadNames, budget: Duration) -> Self {
        Self {
            service,
            heads,
            budget,
            examples: Arc::default(),
            fallbacks: Counter::default(),
        }
    }

    /// Loads the encoder and heads of `files`, starts the classifier service over them and
    /// says what the table can then compute. A head of another width than the encoder, or a
    /// jailbreak head without a `jailbreak` label, is refused: the router never serves
    /// nonsense scores.
    pub fn load(
        files: &ModelFiles,
        config: ServiceConfig,
        budget: Duration,
    ) -> Result<(Self, ModelCapabilities), ClassifyError> {
        let encoder = Encoder::load(
            &files.encoder,
            &EncoderOptions {
                max_tokens: files.max_tokens,
                ..EncoderOptions::default()
            },
        )?;
        let mut heads = Vec::new();
        let mut names = HeadNames::default();
        let mut capabilities = ModelCapabilities {
            embeddings: true,
            ..ModelCapabilities::default()
        };
        // Each head under its role's name; the service refuses one of another width.
        let load =
            |path: &Path, role: &str| Ok::<_, ClassifyError>(Head::load(path)?.with_name(role));
        if let Some(path) = &files.category_head {
            let head = load(path, "category")?;
            names.category = Some(head.name().to_owned());
            capabilities.category_labels = Some(head.labels().to_vec());
            heads.push(head);
        }
        if let Some(path) = &files.complexity_head {
            let head = load(path, "complexity")?;
            names.complexity = Some(head.name().to_owned());
            capabilities.complexity_labels = Some(head.labels().to_vec());
            heads.push(head);
        }
        if let Some(path) = &files.jailbreak_head {
            let head = load(path, "jailbreak")?;
            if !head.labels().iter().any(|l| l == JAILBREAK_LABEL) {
                return Err(ClassifyError::Config(format!(
                    "the jailbreak head {} has no {JAILBREAK_LABEL:?} label (it has {:?})",
                    path.display(),
                    head.labels()
                )));
            }
            names.jailbreak = Some(head.name().to_owned());
            capabilities.jailbreak = true;
            heads.push(head);
        }
        let static_tier = match &files.static_model {
            Some(dir) => Some(static_tier(dir, &encoder, files)?),
            None => None,
        };
        let service = ClassifierService::start_with(encoder, heads, static_tier, config)?;
        Ok((Self::new(service, names, budget), capabilities))
    }

    /// Registers the classifier's metrics and the fallback counter (requests that went on
    /// without model signals).
    pub fn register(&self, registry: &mut Registry) {
        self.service.register(registry);
        registry.register(
            "semantic_router_model_signal_fallbacks",
            "Requests decided without model signals because the model was overloaded or too slow",
            self.fallbacks.clone(),
        );
    }

    /// Keeps the example-prompt embeddings in step with the live table: every prompt of every
    /// route is embedded once, when a table that names it is published; an unchanged prompt is
    /// never embedded again. Runs until the table's sender is dropped.
    pub fn index_examples(
        &self,
        table: SharedTable,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let service = self.service.clone();
        let index = self.examples.clone();
        let mut generations: watch::Receiver<u64> = table.subscribe();
        async move {
            loop {
                if let Some(current) = table.load() {
                    index_prompts(&service, &index, &current).await;
                }
                if generations.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Embeds the example prompts of `table` now, once: for a one-off run over a fixed table
    /// (the live router keeps them current with [`index_examples`](Self::index_examples)).
    pub async fn index_table(&self, table: &RoutingTable) {
        index_prompts(&self.service, &self.examples, table).await;
    }
}

/// The static model in `dir` (distilled from `encoder` with the default options and saved
/// there first when the folder holds none, as `semantic-router distill` would) with the static
/// twin of every head of `files` that has one made on that model with a margin; a head
/// without one is always answered by the encoder.
fn static_tier(
    dir: &Path,
    encoder: &Encoder,
    files: &ModelFiles,
) -> Result<StaticTier, ClassifyError> {
    let model = if dir.join("static.json").is_file() {
        StaticModel::load(dir)?
    } else {
        tracing::info!(dir = %dir.display(), "no static model there yet: distilling the encoder (about a minute on two cores)");
        let started = Instant::now();
        let model = StaticModel::distill(encoder, &DistillOptions::default())?;
        model.save(dir)?;
        tracing::info!(dir = %dir.display(), id = %model.info().id, elapsed = ?started.elapsed(), "static model distilled");
        model
    };
    let id = model.info().id.clone();
    let mut tier = StaticTier::new(model);
    let roles = [
        ("category", &files.category_head),
        ("complexity", &files.complexity_head),
        ("jailbreak", &files.jailbreak_head),
    ];
    for (role, head) in roles {
        let Some(head) = head else { continue };
        let twin = head.join(STATIC_TWIN);
        if !twin.join(CASCADE_FILE).is_file() {
            tracing::warn!(head = %head.display(), "no static twin: the encoder answers this head");
            continue;
        }
        let cascade = CascadeConfig::read(&twin, &id)?;
        let Some(margin) = cascade.margin else {
            tracing::warn!(head = %head.display(), "the static twin has no margin: the encoder answers this head");
            continue;
        };
        tier = tier.with_head(role, Head::load(&twin)?.with_name(role), margin)?;
        tracing::info!(head = role, margin, "static tier in front of the encoder");
    }
    Ok(tier)
}

/// Embeds every example prompt `table` names that `index` lacks, and forgets the others.
async fn index_prompts(service: &ClassifierService, index: &ExampleIndex, table: &RoutingTable) {
    let mut wanted: Vec<String> = table
        .routes
        .iter()
        .flat_map(|r| r.signals.iter())
        .filter_map(|s| match &s.kind {
            SignalKind::Examples { prompts, .. } => Some(prompts.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect();
    wanted.sort();
    wanted.dedup();
    index.retain(&wanted);
    for prompt in wanted.iter().filter(|p| !index.contains(p)) {
        match service.embed(prompt).await {
            Ok(embedding) => index.insert(prompt.clone(), embedding),
            Err(e) => tracing::warn!("cannot embed example prompt {prompt:?}: {e}"),
        }
    }
    tracing::info!(prompts = wanted.len(), "example prompts embedded");
}

/// Embeddings of example prompts by text.
#[derive(Default)]
struct ExampleIndex(RwLock<HashMap<String, Arc<[f32]>>>);

impl ExampleIndex {
    fn contains(&self, text: &str) -> bool {
        self.0.read().map(|m| m.contains_key(text)).unwrap_or(false)
    }

    fn insert(&self, text: String, embedding: Arc<[f32]>) {
        if let Ok(mut m) = self.0.write() {
            m.insert(text, embedding);
        }
    }

    fn retain(&self, wanted: &[String]) {
        if let Ok(mut m) = self.0.write() {
            m.retain(|k, _| wanted.binary_search(k).is_ok());
        }
    }

    /// Highest cosine similarity of `embedding` to the prompts; `None` until every prompt of
    /// the set is embedded.
    fn best(&self, prompts: &[String], embedding: &[f32]) -> Option<f32> {
        let map = self.0.read().ok()?;
        prompts
            .iter()
            .map(|p| map.get(p).map(|e| dot(e, embedding)))
            .try_fold(f32::MIN, |best, s| s.map(|s| best.max(s)))
    }
}

/// Cosine similarity of unit vectors.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl ModelSignals for CandleSignals {
    fn evaluate<'a>(
        &'a self,
        route: &'a Route,
        text: &'a str,
        values: &'a mut SignalValues,
    ) -> BoxFuture<'a, ModelFindings> {
        Box::pin(async move {
            let needed: Vec<usize> = route
                .needed_signals()
                .filter(|&id| route.signals[id].kind.needs_model())
                .collect();
            let mut heads: Vec<&str> = Vec::new();
            for &id in &needed {
                if let SignalKind::Category { classifier, .. } = &route.signals[id].kind
                    && let Some(h) = self.heads.of(*classifier)
                    && !heads.contains(&h)
                {
                    heads.push(h);
                }
            }
            if let Some(h) = self
                .heads
                .jailbreak
                .as_deref()
                .filter(|_| route.jailbreak.is_some())
            {
                heads.push(h);
            }
            let deadline = Instant::now() + self.budget;
            // Example prompts and the semantic cache compare encoder embeddings: only a route
            // that needs neither may be answered by the static tier.
            let needs_embedding = route.cache.is_some()
                || needed
                    .iter()
                    .any(|&id| matches!(route.signals[id].kind, SignalKind::Examples { .. }));
            let analyzed = if needs_embedding {
                self.service
                    .analyze_until(text, &heads, Some(deadline))
                    .await
            } else {
                self.service
                    .analyze_heads_until(text, &heads, Some(deadline))
                    .await
            };
            let analysis = match analyzed {
                Ok(analysis) => analysis,
                Err(e) => {
                    self.fallbacks.inc();
                    tracing::debug!("deciding without model signals: {e}");
                    return ModelFindings::default();
                }
            };
            for id in needed {
                let value = match &route.signals[id].kind {
                    SignalKind::Examples { prompts, threshold } => self
                        .examples
                        .best(prompts, &analysis.embedding)
                        .map(|score| SignalValue {
                            matched: score >= *threshold,
                            score: Some(score),
                        }),
                    SignalKind::Category {
                        classifier,
                        labels,
                        threshold,
                    } => self
                        .heads
                        .of(*classifier)
                        .and_then(|h| analysis.heads.get(h))
                        .and_then(|scores| scores.first())
                        .map(|(top, p)| SignalValue {
                            matched: labels.contains(top) && *p >= *threshold,
                            score: Some(*p),
                        }),
                    _ => None,
                };
                if let Some(value) = value {
                    values.set(id, value);
                }
            }
            let jailbreak = self
                .heads
                .jailbreak
                .as_deref()
                .and_then(|h| analysis.heads.get(h))
                .and_then(|scores| scores.iter().find(|(l, _)| l == JAILBREAK_LABEL))
                .map(|(_, p)| *p);
            ModelFindings {
                jailbreak,
                // A cut prompt's embedding stands for part of it only, a static one is in
                // another space: neither is a cache key.
                embedding: (!analysis.truncated && analysis.tier == Tier::Encoder)
                    .then_some(analysis.embedding),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Architecture, tiny};

    #[test]
    fn a_missing_static_model_is_distilled_at_start_and_read_the_next_time() {
        let tmp = tempfile::tempdir().unwrap();
        let encoder = tmp.path().join("tiny");
        tiny::write_model(&encoder, Architecture::Bert, None).unwrap();
        let statics = tmp.path().join("static");
        let files = ModelFiles {
            encoder,
            max_tokens: 64,
            category_head: None,
            complexity_head: None,
            jailbreak_head: None,
            static_model: Some(statics.clone()),
        };
        let load = || CandleSignals::load(&files, ServiceConfig::default(), Duration::from_secs(1));
        let modified = || {
            std::fs::metadata(statics.join("static.safetensors"))
                .and_then(|m| m.modified())
                .unwrap()
        };
        load().expect("first start distills");
        let written = modified();
        std::thread::sleep(Duration::from_millis(20));
        load().expect("second start reads it");
        assert_eq!(
            modified(),
            written,
            "the second start did not distill again"
        );
    }
}
