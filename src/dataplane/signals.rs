//! Model signals from the Candle classifiers: example-prompt similarity, classifier categories
//! and the jailbreak score, all from one encoder pass per request, or from the static tier
//! alone when its twins are sure and settle the route's decision.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::examples::ExampleIndex;
use crate::classify::cascade::{CASCADE_FILE, CascadeConfig, HeadQuery, LabelGroup};
use crate::classify::{
    Analysis, ClassifierService, ClassifyError, DistillOptions, Encoder, EncoderOptions, Head,
    Precision, ServiceConfig, StaticModel, StaticTier, Tier,
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
    /// Arithmetic of the encoder's linear layers.
    pub precision: Precision,
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
    /// [`JAILBREAK_LABEL`], owned: the label group a jailbreak policy asks of its head.
    jailbreak_label: String,
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
            jailbreak_label: JAILBREAK_LABEL.to_owned(),
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
                precision: files.precision,
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
                    index.index(&service, &current).await;
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
        self.examples.index(&self.service, table).await;
    }

    /// Sets the model signals `analysis` answers: the category groups, and example similarity
    /// (from the static tier, only a sure "no"). A prompt cut to the token budget is compared
    /// with the examples by its best `segment` when there are any.
    fn fill(
        &self,
        route: &Route,
        analysis: &Analysis,
        segments: &[Arc<[f32]>],
        values: &mut SignalValues,
    ) {
        let needed = route
            .needed_signals()
            .filter(|&id| route.signals[id].kind.needs_model());
        for id in needed {
            let value = match &route.signals[id].kind {
                SignalKind::Examples { prompts, threshold } => match analysis.tier {
                    Tier::Encoder => {
                        let embeddings = match segments {
                            [] => std::slice::from_ref(&analysis.embedding),
                            segments => segments,
                        };
                        embeddings
                            .iter()
                            .filter_map(|e| self.examples.best(prompts, e))
                            .reduce(f32::max)
                            .map(|score| SignalValue {
                                matched: score >= *threshold,
                                score: Some(score),
                            })
                    }
                    // The static tier only ever says "surely not"; its score is in another
                    // space, so none is reported. Its bound holds for whole prompts, not for
                    // the segments a prompt over the encoder's budget is matched by (the
                    // static tier's own budget may be larger).
                    Tier::Static | Tier::StaticGuess => (!analysis.truncated
                        && analysis.tokens <= self.service.encoder().max_tokens()
                        && self
                            .examples
                            .surely_below(prompts, *threshold, &analysis.embedding))
                    .then_some(SignalValue::flag(false)),
                },
                SignalKind::Category {
                    classifier,
                    labels,
                    threshold,
                } => {
                    let group = LabelGroup {
                        labels,
                        threshold: *threshold,
                    };
                    self.heads
                        .of(*classifier)
                        .and_then(|h| analysis.head(h))
                        .map(|ranking| SignalValue {
                            matched: group.holds(ranking),
                            score: Some(group.mass(ranking)),
                        })
                }
                _ => None,
            };
            if let Some(value) = value {
                values.set(id, value);
            }
        }
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

impl ModelSignals for CandleSignals {
    fn evaluate<'a>(
        &'a self,
        route: &'a Route,
        text: &'a str,
        values: &'a mut SignalValues,
    ) -> BoxFuture<'a, ModelFindings> {
        Box::pin(async move {
            let needed = || {
                route
                    .needed_signals()
                    .filter(|&id| route.signals[id].kind.needs_model())
            };
            // One query per head (category, complexity, jailbreak), each asking whether the
            // labels of every signal it serves hold: what the static tier may answer alone.
            let mut queries: Vec<HeadQuery<'_>> = Vec::with_capacity(3);
            let mut ask = |head: &'a str, group: LabelGroup<'a>| match queries
                .iter_mut()
                .find(|q| q.head == head)
            {
                Some(query) => query.groups.push(group),
                None => queries.push(HeadQuery {
                    head,
                    groups: vec![group],
                }),
            };
            for id in needed() {
                if let SignalKind::Category {
                    classifier,
                    labels,
                    threshold,
                } = &route.signals[id].kind
                    && let Some(head) = self.heads.of(*classifier)
                {
                    let threshold = *threshold;
                    ask(head, LabelGroup { labels, threshold });
                }
            }
            if let (Some(head), Some(policy)) = (self.heads.jailbreak.as_deref(), &route.jailbreak)
            {
                let labels = std::slice::from_ref(&self.jailbreak_label);
                let threshold = policy.threshold;
                ask(head, LabelGroup { labels, threshold });
            }
            let deadline = Instant::now() + self.budget;
            let needs_examples =
                needed().any(|id| matches!(route.signals[id].kind, SignalKind::Examples { .. }));
            // The semantic cache keys on an encoder embedding. Example prompts compare encoder
            // embeddings too, but the static tier's heads may settle the decision without them
            // (a sure STEM domain needs no similarity to math examples).
            let analyzed = if route.cache.is_some() {
                let heads: Vec<&str> = queries.iter().map(|q| q.head).collect();
                self.service
                    .analyze_until(text, &heads, Some(deadline))
                    .await
            } else {
                let known = &*values;
                self.service
                    .analyze_heads_until(text, &queries, Some(deadline), |answer| {
                        !needs_examples || {
                            let mut trial = known.clone();
                            self.fill(route, answer, &[], &mut trial);
                            route.decided_by(&trial)
                        }
                    })
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
            // A prompt over the budget lost its middle: its example similarity is read part by
            // part instead, within what is left of the budget (else from what the encoder read).
            let segments = if needs_examples && analysis.truncated && analysis.tier == Tier::Encoder
            {
                self.service
                    .embed_segments_until(text, Some(deadline))
                    .await
                    .inspect_err(|e| tracing::debug!("example similarity from the cut prompt: {e}"))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            self.fill(route, &analysis, &segments, values);
            let jailbreak = self
                .heads
                .jailbreak
                .as_deref()
                .and_then(|h| analysis.head(h))
                .and_then(|ranking| ranking.probability(JAILBREAK_LABEL));
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
    use crate::routing::fixtures::{compile_all, route, two_pools};

    /// A tiny random BERT written under `dir`, with no heads and no static tier.
    fn tiny_encoder(dir: &Path) -> ModelFiles {
        let encoder = dir.join("tiny");
        tiny::write_model(&encoder, Architecture::Bert, None).unwrap();
        ModelFiles {
            encoder,
            max_tokens: 64,
            precision: Precision::F32,
            category_head: None,
            complexity_head: None,
            jailbreak_head: None,
            static_model: None,
        }
    }

    #[tokio::test]
    async fn a_prompt_over_the_budget_matches_examples_by_its_best_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let (signals, _) = CandleSignals::load(
            &tiny_encoder(tmp.path()),
            ServiceConfig::default(),
            Duration::from_secs(5),
        )
        .unwrap();
        let spec = "match: {models: [auto]}\nsignals:\n  examples: [{name: mathy, prompts: [\"solve for x\"], threshold: 0.99}]\ndecisions:\n- {name: math, when: {any: [mathy]}, targets: [{pool: large, model: large}]}\ndefaultTarget: {pool: small, model: small}";
        let table = compile_all(two_pools(), vec![route("auto", spec)]).table;
        signals.index_table(&table).await;
        let route = &table.routes[0];
        // The example sits on a line of its own in the middle of a prompt far over the
        // 64-token budget, where head-and-tail truncation cuts it out.
        let filler = "hello there, how are you ".repeat(20);
        let prompt = format!("{filler}\nsolve for x\n{filler}");
        assert!(
            signals
                .service
                .encoder()
                .tokenize(&prompt)
                .unwrap()
                .truncated,
            "over the budget"
        );
        let mut values = SignalValues(vec![None; route.signals.len()]);
        let findings = signals.evaluate(route, &prompt, &mut values).await;
        let value = values.get(0).expect("scored");
        assert!(value.matched && value.score.unwrap() > 0.99, "{value:?}");
        assert!(findings.embedding.is_none(), "a cut prompt is no cache key");
        assert_eq!(signals.service.metrics().segmented.get(), 1);

        let SignalKind::Examples { prompts, .. } = &route.signals[0].kind else {
            panic!("an example signal");
        };
        let cut = signals.service.embed(&prompt).await.unwrap();
        let of_the_cut_prompt = signals.examples.best(prompts, &cut).unwrap();
        assert!(
            of_the_cut_prompt < 0.99,
            "what truncation keeps: {of_the_cut_prompt}"
        );
    }

    #[tokio::test]
    async fn example_signals_score_once_their_set_is_embedded_and_follow_a_new_table() {
        let tmp = tempfile::tempdir().unwrap();
        let files = tiny_encoder(tmp.path());
        let (signals, _) =
            CandleSignals::load(&files, ServiceConfig::default(), Duration::from_secs(5)).unwrap();
        let table = |prompts: &str| {
            let spec = format!(
                "match: {{models: [auto]}}\nsignals:\n  examples: [{{name: mathy, prompts: [{prompts}], threshold: 0.99}}]\ndecisions:\n- {{name: math, when: {{any: [mathy]}}, targets: [{{pool: large, model: large}}]}}\ndefaultTarget: {{pool: small, model: small}}"
            );
            compile_all(two_pools(), vec![route("auto", &spec)]).table
        };
        let score = |table: &RoutingTable, prompt: &'static str| {
            let route = table.routes[0].clone();
            let signals = &signals;
            async move {
                let mut values = SignalValues(vec![None; route.signals.len()]);
                signals.evaluate(&route, prompt, &mut values).await;
                values.get(0)
            }
        };
        let first = table("\"solve for x\", \"integrate this\"");
        assert_eq!(score(&first, "solve for x").await, None, "not embedded yet");
        signals.index_table(&first).await;
        let same = score(&first, "solve for x").await.expect("scored");
        assert!(same.matched && same.score.unwrap() > 0.99, "{same:?}");
        let other = score(&first, "hello there, how are you")
            .await
            .expect("scored");
        assert!(other.score.unwrap() < same.score.unwrap(), "{other:?}");

        let second = table("\"hello there, how are you\"");
        signals.index_table(&second).await;
        let now = score(&second, "hello there, how are you")
            .await
            .expect("scored");
        assert!(now.matched, "{now:?}");
        assert_eq!(
            score(&first, "solve for x").await,
            None,
            "a set the live table no longer names is forgotten"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn example_prompts_are_embedded_even_while_requests_keep_the_queue_full() {
        let tmp = tempfile::tempdir().unwrap();
        let files = tiny_encoder(tmp.path());
        let config = ServiceConfig {
            queue_capacity: 1,
            max_batch_size: 1,
            ..ServiceConfig::default()
        };
        let (signals, _) = CandleSignals::load(&files, config, Duration::from_secs(5)).unwrap();
        let signals = Arc::new(signals);
        let spec = "match: {models: [auto]}\nsignals:\n  examples: [{name: mathy, prompts: [\"one\", \"two\", \"three\", \"four\"], threshold: 0.99}]\ndecisions:\n- {name: math, when: {any: [mathy]}, targets: [{pool: large, model: large}]}\ndefaultTarget: {pool: small, model: small}";
        let table = compile_all(two_pools(), vec![route("auto", spec)]).table;
        // Four clients keep the one-place queue full for 300 ms while the set is embedded.
        let until = Instant::now() + Duration::from_millis(300);
        let shed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pressure: Vec<_> = (0..4)
            .map(|client| {
                let (signals, shed) = (signals.clone(), shed.clone());
                tokio::spawn(async move {
                    for i in 0..100_000 {
                        if Instant::now() >= until {
                            break;
                        }
                        let text = format!("client {client} request {i}");
                        if signals.service.embed(&text).await.is_err() {
                            shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        signals.index_table(&table).await;
        for client in pressure {
            client.await.unwrap();
        }
        assert!(
            shed.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "the queue was full"
        );
        let route = table.routes[0].clone();
        let mut values = SignalValues(vec![None; route.signals.len()]);
        signals.evaluate(&route, "three", &mut values).await;
        let value = values
            .get(0)
            .expect("the set was embedded despite the load");
        assert!(value.matched, "{value:?}");
    }

    #[test]
    fn a_missing_static_model_is_distilled_at_start_and_read_the_next_time() {
        let tmp = tempfile::tempdir().unwrap();
        let statics = tmp.path().join("static");
        let files = ModelFiles {
            static_model: Some(statics.clone()),
            ..tiny_encoder(tmp.path())
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
