//! [`ClassifierService`]: the async front of the models. One encoder pass per text feeds the
//! embedding and every head; repeated texts come from the cache; the model runs on a
//! dedicated pool of OS threads behind a bounded, batching queue, so the async runtime never
//! blocks on a forward pass and a caller never waits longer than its deadline. An optional
//! [`StaticTier`] answers, inline and without the queue, the callers that need heads only
//! whenever its static twins are sure ([`ClassifierService::analyze_heads_until`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use super::cache::EmbeddingCache;
use super::cascade::{HeadQuery, margin};
use super::encoder::{Encoder, EncoderOutput};
use super::error::{ClassifyError, Result};
use super::head::Head;
use super::metrics::ClassifierMetrics;
use super::queue::{BatchQueue, Job, Worker};
use super::ranking::Ranking;
use super::static_model::StaticModel;
use super::tokenize::TextTokenizer;

/// How the service runs the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// OS threads running forward passes. Each pass already spreads its matrix products over
    /// every core, so the default is one thread per 4 cores (at least one).
    pub workers: usize,
    /// Most texts in one forward pass; 1 turns batching off.
    pub max_batch_size: usize,
    /// How long the oldest queued text may wait for company before its batch runs
    /// (microseconds matter: this is added to an idle service's latency).
    pub max_wait: Duration,
    /// Most texts waiting for the model; beyond it calls fail at once with
    /// [`ClassifyError::Overloaded`].
    pub queue_capacity: usize,
    /// Texts whose encoder output is kept (LRU); 0 disables the cache.
    pub cache_capacity: usize,
    /// Deadline of calls that do not pass their own (`None`: wait as long as it takes).
    pub default_timeout: Option<Duration>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            workers: default_workers(),
            max_batch_size: 32,
            max_wait: Duration::from_micros(500),
            queue_capacity: 128,
            cache_capacity: 4096,
            default_timeout: None,
        }
    }
}

/// Most tokens in one segment of a long prompt ([`ClassifierService::embed_segments_until`]):
/// about a paragraph. 64 matched example sets better than 128 or 256 (`cargo bench --bench
/// long_prompts`, section 3).
pub const SEGMENT_TOKENS: usize = 64;

/// Most segments read of one prompt: 1,024 tokens at most.
pub const SEGMENTS: usize = 16;

/// One worker per 4 available cores, at least one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 4)
        .unwrap_or(1)
        .max(1)
}

/// Everything one encoder pass says about a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Mean-pooled, L2-normalised embedding (cosine similarity = dot product).
    pub embedding: Arc<[f32]>,
    /// Each requested head's answer, in the order asked, under the name the service knows it
    /// by ([`head`](Self::head) finds one by name).
    pub heads: Vec<(Arc<str>, Ranking)>,
    /// Tokens the model saw, special tokens included.
    pub tokens: usize,
    /// Whether the text was cut to the token budget (its start and end are kept).
    pub truncated: bool,
    /// Whether the encoder output came from the cache.
    pub cached: bool,
    /// The tier whose embedding and heads these are.
    pub tier: Tier,
}

impl Analysis {
    /// The answer of the head named `name`, if it was asked for.
    pub fn head(&self, name: &str) -> Option<&Ranking> {
        self.heads
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, ranking)| ranking)
    }
}

/// Which model produced an [`Analysis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The transformer encoder.
    Encoder,
    /// The static tier (its embedding lives in the static model's space, not the encoder's).
    Static,
    /// The static tier's answer, not sure enough to stand alone, taken because the encoder
    /// shed the text (queue full or deadline passed): a guess beats no model signals.
    StaticGuess,
}

/// The static tier in front of the encoder: a static model and, per head name, the static
/// twin of that head with the margin at which it answers alone.
#[derive(Debug)]
pub struct StaticTier {
    model: StaticModel,
    heads: HashMap<Arc<str>, (Head, f32)>,
}

impl StaticTier {
    /// A tier with no heads yet.
    pub fn new(model: StaticModel) -> Self {
        Self {
            model,
            heads: HashMap::new(),
        }
    }

    /// Lets `head` answer for the encoder head `name` when its top-two margin is at least
    /// `margin`. A head of another width than the static model is refused.
    pub fn with_head(mut self, name: &str, head: Head, margin: f32) -> Result<Self> {
        if head.input_dim() != self.model.dimension() {
            return Err(ClassifyError::HeadDimension {
                head: head.name().to_string(),
                expected: head.input_dim(),
                actual: self.model.dimension(),
            });
        }
        self.heads.insert(name.into(), (head, margin));
        Ok(self)
    }

    /// The static model.
    pub fn model(&self) -> &StaticModel {
        &self.model
    }

    /// Every queried head's answer, with whether the tier is sure of all of them; `None` when
    /// a queried head has no twin.
    fn answer(&self, text: &str, queries: &[HeadQuery<'_>]) -> Result<Option<(Analysis, bool)>> {
        if queries.is_empty() || !queries.iter().all(|q| self.heads.contains_key(q.head)) {
            return Ok(None);
        }
        let output = self.model.embed(text)?;
        let mut results = Vec::with_capacity(queries.len());
        let mut all_sure = true;
        for query in queries {
            let Some((name, (head, threshold))) = self.heads.get_key_value(query.head) else {
                return Ok(None);
            };
            let probabilities = head.probabilities(&output.embedding)?;
            let ranking = head.ranking(&probabilities);
            all_sure &= if query.groups.is_empty() {
                margin(&probabilities) >= *threshold
            } else {
                query.groups.iter().all(|g| g.settled(&ranking, *threshold))
            };
            results.push((name.clone(), ranking));
        }
        let analysis = Analysis {
            embedding: output.embedding,
            heads: results,
            tokens: output.tokens,
            truncated: output.truncated,
            cached: false,
            tier: Tier::Static,
        };
        Ok(Some((analysis, all_sure)))
    }
}

enum HeadKind {
    /// One of our heads over the embedding.
    Own(Head),
    /// The checkpoint's own classifier (its labels), computed in the forward pass.
    Checkpoint(Arc<[String]>),
}

struct Shared {
    encoder: Arc<Encoder>,
    /// The encoder's tokenizer with a budget of [`SEGMENT_TOKENS`], which cuts segments.
    segmenter: TextTokenizer,
    static_tier: Option<StaticTier>,
    heads: HashMap<Arc<str>, HeadKind>,
    queue: Arc<BatchQueue>,
    cache: Arc<EmbeddingCache>,
    metrics: ClassifierMetrics,
    default_timeout: Option<Duration>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The workers finish their current batch and exit.
        self.queue.close();
    }
}

/// The classifier service; cheap to clone, all clones share the model, queue and cache.
#[derive(Clone)]
pub struct ClassifierService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClassifierService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifierService")
            .field("encoder", &self.shared.encoder)
            .field("heads", &self.head_names())
            .finish_non_exhaustive()
    }
}

impl ClassifierService {
    /// Starts the worker threads around a loaded encoder and heads. Heads must take the
    /// encoder's embedding size and have distinct names (the checkpoint's own head, if any,
    /// is served under [`Encoder::checkpoint_head`]'s name).
    pub fn start(encoder: Encoder, heads: Vec<Head>, config: ServiceConfig) -> Result<Self> {
        Self::start_with(encoder, heads, None, config)
    }

    /// Like [`start`](Self::start), with a static tier in front of the encoder for
    /// [`analyze_heads_until`](Self::analyze_heads_until). Its heads must name heads the
    /// service runs.
    pub fn start_with(
        encoder: Encoder,
        heads: Vec<Head>,
        static_tier: Option<StaticTier>,
        config: ServiceConfig,
    ) -> Result<Self> {
        let positive = [
            ("workers", config.workers),
            ("max_batch_size", config.max_batch_size),
            ("queue_capacity", config.queue_capacity),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ClassifyError::Config(format!("{name} must be at least 1")));
        }
        let mut by_name: HashMap<Arc<str>, HeadKind> = HashMap::new();
        if let Some((name, labels)) = encoder.checkpoint_head() {
            by_name.insert(name.into(), HeadKind::Checkpoint(labels.into()));
        }
        for head in heads {
            if head.input_dim() != encoder.dimension() {
                return Err(ClassifyError::HeadDimension {
                    head: head.name().to_string(),
                    expected: head.input_dim(),
                    actual: encoder.dimension(),
                });
            }
            let name: Arc<str> = head.name().into();
            if by_name.insert(name.clone(), HeadKind::Own(head)).is_some() {
                return Err(ClassifyError::Config(format!(
                    "two heads are named {name:?}"
                )));
            }
        }

        if let Some(unknown) = static_tier
            .iter()
            .flat_map(|t| t.heads.keys())
            .find(|name| !by_name.contains_key(*name))
        {
            return Err(ClassifyError::UnknownHead(unknown.to_string()));
        }
        let segmenter = encoder
            .tokenizer()
            .with_max_tokens(SEGMENT_TOKENS.min(encoder.max_tokens()))?;
        let metrics = ClassifierMetrics::default();
        let encoder = Arc::new(encoder);
        let queue = Arc::new(BatchQueue::new(
            config.queue_capacity,
            config.workers,
            metrics.clone(),
        ));
        let cache = Arc::new(EmbeddingCache::new(config.cache_capacity));
        for i in 0..config.workers {
            let worker = Worker {
                queue: queue.clone(),
                encoder: encoder.clone(),
                cache: cache.clone(),
                metrics: metrics.clone(),
                max_batch: config.max_batch_size,
                max_wait: config.max_wait,
            };
            let spawned = std::thread::Builder::new()
                .name(format!("classify-{i}"))
                .spawn(move || worker.run());
            if let Err(e) = spawned {
                // Let the workers already started exit.
                queue.close();
                return Err(ClassifyError::Config(format!(
                    "cannot start a worker thread: {e}"
                )));
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                encoder,
                segmenter,
                static_tier,
                heads: by_name,
                queue,
                cache,
                metrics,
                default_timeout: config.default_timeout,
            }),
        })
    }

    /// The embedding of `text` (mean-pooled, L2-normalised).
    pub async fn embed(&self, text: &str) -> Result<Arc<[f32]>> {
        Ok(self.analyze(text, &[]).await?.embedding)
    }

    /// The embeddings of `text`'s segments ([`TextTokenizer::segments`]: runs of whole lines of
    /// up to [`SEGMENT_TOKENS`] tokens, at most [`SEGMENTS`]), each queued as a text of its own,
    /// so they share batches and the cache; fails as a whole once `deadline` passes. For
    /// comparing a prompt over the token budget with short texts part by part: on long
    /// held-out prompts the best segment finds the right example set far more often than the
    /// truncated prompt does (`cargo bench --bench long_prompts`, section 3).
    pub async fn embed_segments_until(
        &self,
        text: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<Arc<[f32]>>> {
        let segments = self.shared.segmenter.segments(text, SEGMENTS)?;
        self.shared.metrics.segmented.inc();
        let analyses = futures::future::try_join_all(
            segments
                .iter()
                .map(|segment| self.analyze_until(segment, &[], deadline)),
        )
        .await?;
        Ok(analyses.into_iter().map(|a| a.embedding).collect())
    }

    /// Every label of `head` with its probability, most probable first.
    pub async fn classify(&self, text: &str, head: &str) -> Result<Ranking> {
        let analysis = self.analyze(text, &[head]).await?;
        analysis
            .heads
            .into_iter()
            .next()
            .map(|(_, ranking)| ranking)
            .ok_or_else(|| ClassifyError::UnknownHead(head.to_owned()))
    }

    /// The embedding and the given heads' results from one encoder pass, within the default
    /// timeout.
    pub async fn analyze(&self, text: &str, heads: &[&str]) -> Result<Analysis> {
        let deadline = self.shared.default_timeout.map(|t| Instant::now() + t);
        self.analyze_until(text, heads, deadline).await
    }

    /// Like [`analyze`](Self::analyze), but fails with [`ClassifyError::DeadlineExceeded`] as
    /// soon as `deadline` passes (a cached text is answered even then: it costs nothing).
    pub async fn analyze_until(
        &self,
        text: &str,
        heads: &[&str],
        deadline: Option<Instant>,
    ) -> Result<Analysis> {
        let shared = &self.shared;
        if let Some(unknown) = heads.iter().find(|h| !shared.heads.contains_key(**h)) {
            return Err(ClassifyError::UnknownHead(unknown.to_string()));
        }
        let key = shared.cache.key(text);
        let cached = shared.cache.get(key);
        shared.metrics.cache_lookup(cached.is_some());
        let (output, cached) = match cached {
            Some(output) => (output, true),
            None => (self.encode(text, key, deadline).await?, false),
        };
        let mut results = Vec::with_capacity(heads.len());
        for &name in heads {
            let Some((name, kind)) = shared.heads.get_key_value(name) else {
                return Err(ClassifyError::UnknownHead(name.to_string()));
            };
            let ranking = match kind {
                HeadKind::Own(head) => head.classify(&output.embedding)?,
                HeadKind::Checkpoint(labels) => {
                    let probabilities = output.class_probabilities.as_deref().unwrap_or(&[]);
                    Ranking::new(labels.clone(), probabilities)
                }
            };
            results.push((name.clone(), ranking));
        }
        Ok(Analysis {
            embedding: output.embedding.clone(),
            heads: results,
            tokens: output.tokens,
            truncated: output.truncated,
            cached,
            tier: Tier::Encoder,
        })
    }

    /// The queried heads' results, from the static tier when it is sure of every query (no
    /// queue, no forward pass) and `enough` accepts its answer, else from the encoder as
    /// [`analyze_until`](Self::analyze_until); when the encoder sheds the text, the static
    /// tier's unsure answer ([`Tier::StaticGuess`]) rather than none. For callers that need the heads only, or that
    /// check in `enough` that the heads settle what they need: a static answer's embedding is
    /// not in the encoder's space, and its group questions are answered by
    /// [`LabelGroup::holds`].
    ///
    /// [`LabelGroup::holds`]: super::cascade::LabelGroup::holds
    pub async fn analyze_heads_until(
        &self,
        text: &str,
        queries: &[HeadQuery<'_>],
        deadline: Option<Instant>,
        enough: impl FnOnce(&Analysis) -> bool,
    ) -> Result<Analysis> {
        let mut guess = None;
        if let Some(tier) = &self.shared.static_tier
            && !queries.is_empty()
        {
            if let Some((answer, sure)) = tier.answer(text, queries)? {
                if sure && enough(&answer) {
                    self.shared.metrics.tier_answer("static");
                    return Ok(answer);
                }
                guess = Some(answer);
            }
            self.shared.metrics.tier_answer("encoder");
        }
        let heads: Vec<&str> = queries.iter().map(|q| q.head).collect();
        match self.analyze_until(text, &heads, deadline).await {
            Err(e) if e.is_shed() => {
                let Some(mut guess) = guess else {
                    return Err(e);
                };
                self.shared.metrics.tier_answer("static_guess");
                guess.tier = Tier::StaticGuess;
                Ok(guess)
            }
            analyzed => analyzed,
        }
    }

    /// The static tier's model, when the service has one.
    pub fn static_model(&self) -> Option<&StaticModel> {
        self.shared.static_tier.as_ref().map(StaticTier::model)
    }

    /// Queues `text` for the model and waits for its output or the deadline.
    async fn encode(
        &self,
        text: &str,
        key: super::cache::TextKey,
        deadline: Option<Instant>,
    ) -> Result<Arc<EncoderOutput>> {
        let metrics = &self.shared.metrics;
        let shed = |err: ClassifyError| {
            if err.is_shed() {
                metrics.shed(err.kind());
            }
            err
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(shed(ClassifyError::DeadlineExceeded));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            text: text.to_string(),
            key,
            deadline,
            enqueued: Instant::now(),
            reply,
        };
        self.shared.queue.push(job).map_err(shed)?;
        // Dropping `answer` (on timeout, or when our caller drops this future) tells the
        // workers to skip the job.
        let received = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), answer)
                .await
                .map_err(|_| shed(ClassifyError::DeadlineExceeded))?,
            None => answer.await,
        };
        received.map_err(|_| ClassifyError::ShutDown)?.map_err(shed)
    }

    /// Names of the heads the service can run.
    pub fn head_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.shared.heads.keys().map(|k| &**k).collect();
        names.sort_unstable();
        names
    }

    /// The encoder behind the service.
    pub fn encoder(&self) -> &Encoder {
        &self.shared.encoder
    }

    /// Texts run through the encoder so far (cache hits do not count).
    pub fn encoded_texts(&self) -> u64 {
        self.shared.metrics.encoded.get()
    }

    /// The service's metrics (the same series [`register`](Self::register) exposes).
    pub fn metrics(&self) -> &ClassifierMetrics {
        &self.shared.metrics
    }

    /// Registers the service's metrics under `semantic_router_classifier_*`.
    pub fn register(&self, registry: &mut Registry) {
        self.shared.metrics.register(registry);
    }

    /// Stops the service: queued calls fail with [`ClassifyError::ShutDown`], new calls too,
    /// and the worker threads exit after their current batch.
    pub fn shutdown(&self) {
        self.shared.queue.close();
    }
}
