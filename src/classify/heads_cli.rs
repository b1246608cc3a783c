//! `semantic-router train` and `semantic-router eval`: make a head from labelled JSONL, and
//! measure one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::cascade::{CASCADE_FILE, CascadeConfig, Judged, choose_margin, margin};
use super::dataset::{Dataset, DatasetError};
use super::embedding_store::EmbeddingStore;
use super::encoder::{Encoder, EncoderOptions, Precision};
use super::error::{ClassifyError, Result as ClassifyResult};
use super::evaluate::{Evaluation, argmax};
use super::head::Head;
use super::hub::{HubOptions, ModelSource};
use super::static_model::StaticModel;
use super::train::{Examples, TrainOptions, train};

/// Why a `train` or `eval` run failed.
#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    /// The labelled data is unusable.
    #[error(transparent)]
    Data(#[from] DatasetError),
    /// The encoder, a head or the store failed.
    #[error(transparent)]
    Model(#[from] ClassifyError),
    /// `--positive` names no label.
    #[error("--positive {label:?} is not one of the labels {labels:?}")]
    UnknownPositive {
        /// The label asked for.
        label: String,
        /// The labels there are.
        labels: Vec<String>,
    },
    /// Neither a head nor a policy to evaluate.
    #[error("eval needs --head DIR (a head) or --manifests DIR (a policy)")]
    NoHead,
    /// `--tier static` without the static model.
    #[error("--tier static needs --static-model DIR (made by `semantic-router distill`)")]
    NoStaticModel,
    /// A report could not be written.
    #[error("cannot write {path}: {detail}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Which tier makes the embeddings a head reads.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmbeddingTier {
    /// The transformer encoder (one forward pass per text).
    #[default]
    Encoder,
    /// Static token vectors distilled from the encoder (`semantic-router distill`).
    Static,
}

/// The encoder and embedding store both commands read.
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    /// Encoder: a directory (config.json, tokenizer.json, *.safetensors) or a Hugging Face
    /// model id `org/name[@revision]`, as `run --encoder` takes it.
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub encoder: ModelSource,
    /// Longest text the encoder reads, in tokens (as `run --classify-max-tokens`).
    #[arg(long, default_value_t = super::DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// Arithmetic of the encoder's linear layers (as `run --classify-precision`).
    #[arg(long, value_enum, default_value_t = Precision::default())]
    pub precision: Precision,
    /// Where embeddings are kept between runs, per encoder and text (a second run over the
    /// same texts never runs the encoder).
    #[arg(long, value_name = "DIR", env = "SR_EMBEDDING_CACHE", default_value_os_t = default_cache())]
    pub embedding_cache: PathBuf,
    /// Which tier's embeddings the head reads.
    #[arg(long, value_enum, default_value_t = EmbeddingTier::Encoder)]
    pub tier: EmbeddingTier,
    /// The static model (`semantic-router distill --out DIR`): the tier of `--tier static`
    /// and of `eval --cascade`.
    #[arg(long, value_name = "DIR")]
    pub static_model: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What turns texts into the embeddings a head reads.
enum Embedder {
    Encoder {
        encoder: Box<Encoder>,
        store: EmbeddingStore,
    },
    Static(Box<StaticModel>),
}

impl Embedder {
    fn dimension(&self) -> usize {
        match self {
            Self::Encoder { encoder, .. } => encoder.dimension(),
            Self::Static(model) => model.dimension(),
        }
    }

    fn embed_all(&mut self, texts: &[&str], progress: bool) -> ClassifyResult<Vec<Arc<[f32]>>> {
        match self {
            Self::Encoder { encoder, store } => store.embed_all(encoder, texts, progress),
            Self::Static(model) => texts
                .iter()
                .map(|t| Ok(model.embed(t)?.embedding))
                .collect(),
        }
    }

    /// The static model's id, for a static tier.
    fn static_id(&self) -> Option<&str> {
        match self {
            Self::Encoder { .. } => None,
            Self::Static(model) => Some(&model.info().id),
        }
    }
}

/// `semantic-router train`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training data: JSONL lines `{"text": "...", "label": "..."}`.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Validation data (same format); without it, a stratified share of --data is held out.
    #[arg(long, value_name = "FILE")]
    pub validation: Option<PathBuf>,
    /// Share of each label held out for validation when no --validation is given.
    #[arg(long, default_value_t = 0.1)]
    pub validation_share: f64,
    /// Folder the head is written to: head.safetensors, labels.json, report.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Width of a ReLU hidden layer; 0 trains a linear head.
    #[arg(long, default_value_t = 0)]
    pub hidden: usize,
    /// Most passes over the training data (training stops earlier when validation loss
    /// stops improving).
    #[arg(long, default_value_t = 200)]
    pub max_epochs: usize,
    /// Epochs without a better validation loss before stopping.
    #[arg(long, default_value_t = 12)]
    pub patience: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub learning_rate: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Examples per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Weigh every example alike instead of by the inverse of its class's share.
    #[arg(long)]
    pub no_class_weights: bool,
    /// Seed of the split, the initial weights and the minibatch order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// For a binary head: the label whose AUC and recall at fixed false-positive rates are
    /// reported.
    #[arg(long, value_name = "LABEL")]
    pub positive: Option<String>,
    /// With `--tier static`: the encoder head this static head stands in front of; the
    /// cascade margin is then chosen on the validation data and written to cascade.json.
    #[arg(long, value_name = "DIR")]
    pub cascade_head: Option<PathBuf>,
    /// How far below the encoder head's validation accuracy the cascade may fall.
    #[arg(long, default_value_t = 0.0)]
    pub cascade_tolerance: f64,
    /// Smallest margin the cascade may choose: validation data rarely holds every phrasing
    /// users write, so an almost-tied static answer is deferred however validation went.
    #[arg(long, default_value_t = 0.3)]
    pub cascade_min_margin: f32,
    /// The encoder the head reads.
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

/// `semantic-router eval` of one head (the command's policy half is `what_if::PolicyArgs`).
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Head folder (head.safetensors + labels.json) to measure.
    #[arg(long, value_name = "DIR", required_unless_present = "manifests")]
    pub head: Option<PathBuf>,
    /// Labelled JSONL to measure the head on (`{"text", "label"}` lines); with --manifests, the
    /// request log to replay (plain prompts or OpenAI bodies, labels optional).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// For a binary head: the label whose AUC and recall at fixed false-positive rates are
    /// reported.
    #[arg(long, value_name = "LABEL")]
    pub positive: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A static-tier head (with cascade.json) to put in front of --head: it answers where its
    /// margin clears the threshold, the rest goes to the encoder. Needs --static-model.
    #[arg(long, value_name = "DIR")]
    pub cascade: Option<PathBuf>,
    /// The encoder the head reads.
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("semantic-router/embeddings")
}

impl EncoderArgs {
    /// The embedder of `--tier`.
    fn embedder(&self) -> Result<Embedder, HeadsError> {
        match self.tier {
            EmbeddingTier::Encoder => {
                let (encoder, store) = self.load()?;
                Ok(Embedder::Encoder {
                    encoder: Box::new(encoder),
                    store,
                })
            }
            EmbeddingTier::Static => Ok(Embedder::Static(Box::new(self.static_model()?))),
        }
    }

    fn static_model(&self) -> Result<StaticModel, HeadsError> {
        let dir = self
            .static_model
            .as_ref()
            .ok_or(HeadsError::NoStaticModel)?;
        Ok(StaticModel::load(dir)?)
    }

    fn load(&self) -> ClassifyResult<(Encoder, EmbeddingStore)> {
        let dir = self.encoder.resolve(&HubOptions::from_env())?;
        let encoder = Encoder::load(
            &dir,
            &EncoderOptions {
                max_tokens: self.max_tokens,
                precision: self.precision,
                ..EncoderOptions::default()
            },
        )?;
        let store = EmbeddingStore::open(&self.embedding_cache, &encoder)?;
        Ok((encoder, store))
    }
}

fn positive_index(positive: Option<&str>, labels: &[String]) -> Result<Option<usize>, HeadsError> {
    positive
        .map(|p| {
            labels
                .iter()
                .position(|l| l == p)
                .ok_or_else(|| HeadsError::UnknownPositive {
                    label: p.to_owned(),
                    labels: labels.to_vec(),
                })
        })
        .transpose()
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), HeadsError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| HeadsError::Write {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| HeadsError::Write {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

impl TrainArgs {
    /// Trains, writes the head and its report, and returns the report's summary.
    pub fn run(&self) -> Result<String, HeadsError> {
        let data = Dataset::read(&self.data)?;
        let (train_set, validation) = match &self.validation {
            Some(path) => {
                let validation = Dataset::read_for(path, &data.labels)?;
                (data, validation)
            }
            None => data.stratified_split(self.validation_share, self.seed),
        };
        train_set.require_every_label()?;
        let positive = positive_index(self.positive.as_deref(), &train_set.labels)?;
        let mut embedder = self.encoder.embedder()?;
        tracing::info!(
            train = train_set.examples.len(),
            validation = validation.examples.len(),
            labels = train_set.labels.len(),
            tier = ?self.encoder.tier,
            "embedding the examples"
        );
        let progress = !self.encoder.quiet;
        let train_embeddings = embedder.embed_all(&train_set.texts(), progress)?;
        let validation_embeddings = embedder.embed_all(&validation.texts(), progress)?;
        let name = self
            .out
            .file_name()
            .map_or_else(|| "head".to_owned(), |n| n.to_string_lossy().into_owned());
        let options = TrainOptions {
            hidden: self.hidden,
            max_epochs: self.max_epochs,
            patience: self.patience,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            class_weights: !self.no_class_weights,
            seed: self.seed,
        };
        let trained = train(
            &name,
            &train_set.labels,
            &Examples {
                embeddings: &train_embeddings,
                targets: &train_set.targets(),
            },
            &Examples {
                embeddings: &validation_embeddings,
                targets: &validation.targets(),
            },
            positive,
            &options,
        )?;
        trained.head.save(&self.out)?;
        write_json(&self.out.join("report.json"), &trained.report)?;
        let mut cascade_summary = String::new();
        if let Some(static_id) = embedder.static_id() {
            let config = self.cascade(
                static_id,
                &trained.head,
                &validation,
                &validation_embeddings,
            )?;
            if let Some(v) = &config.validation {
                cascade_summary = format!(
                    "\n\ncascade on validation: margin {}, deferred {:.1}%, accuracy {:.4} \
                     (encoder {:.4}, static {:.4})",
                    config
                        .margin
                        .map_or_else(|| "none (always defer)".into(), |m| format!("{m:.4}")),
                    v.deferred_share * 100.0,
                    v.cascade_accuracy,
                    v.encoder_accuracy,
                    v.static_accuracy
                );
            }
            write_json(&self.out.join(CASCADE_FILE), &config)?;
        }
        let r = &trained.report;
        Ok(format!(
            "wrote {} ({} labels, {}): {} epochs, kept epoch {}, temperature {:.2}, \
             calibration error {:.3} -> {:.3}\n\nvalidation\n{}",
            self.out.display(),
            r.labels.len(),
            if self.hidden == 0 {
                "linear".to_owned()
            } else {
                format!("{} hidden units", self.hidden)
            },
            r.epochs,
            r.best_epoch,
            r.temperature,
            r.calibration_error_before,
            r.validation.calibration_error,
            r.validation
        ) + &cascade_summary)
    }

    /// The cascade threshold of a static head: with `--cascade-head`, the smallest top-two
    /// margin at which the cascade keeps the encoder head's validation accuracy (within
    /// `--cascade-tolerance`); without it, none (always defer).
    fn cascade(
        &self,
        static_id: &str,
        head: &Head,
        validation: &Dataset,
        embeddings: &[Arc<[f32]>],
    ) -> Result<CascadeConfig, HeadsError> {
        let Some(encoder_head) = &self.cascade_head else {
            return Ok(CascadeConfig {
                static_model: static_id.to_owned(),
                margin: None,
                validation: None,
            });
        };
        let encoder_head = Head::load(encoder_head)?;
        let (encoder, mut store) = self.encoder.load()?;
        let encoder_embeddings =
            store.embed_all(&encoder, &validation.texts(), !self.encoder.quiet)?;
        let targets = validation.targets();
        let judged = embeddings
            .iter()
            .zip(&encoder_embeddings)
            .zip(&targets)
            .map(|((s, e), &target)| {
                let p = head.probabilities(s)?;
                let q = encoder_head.probabilities(e)?;
                Ok(Judged {
                    margin: margin(&p),
                    static_right: argmax(&p) == target,
                    encoder_right: argmax(&q) == target,
                })
            })
            .collect::<ClassifyResult<Vec<_>>>()?;
        let (margin, validation) =
            choose_margin(&judged, self.cascade_tolerance, self.cascade_min_margin);
        Ok(CascadeConfig {
            static_model: static_id.to_owned(),
            margin,
            validation: Some(validation),
        })
    }
}

impl EvalArgs {
    /// Evaluates the head (or the cascade of `--cascade` in front of it) and returns the
    /// table (or JSON).
    pub fn run(&self) -> Result<String, HeadsError> {
        let Some(path) = &self.head else {
            return Err(HeadsError::NoHead);
        };
        let head = Head::load(path)?;
        let mut embedder = self.encoder.embedder()?;
        check_width(path, &head, embedder.dimension())?;
        if let Some(id) = embedder.static_id() {
            CascadeConfig::read(path, id)?;
        }
        let data = Dataset::read_for(&self.data, head.labels())?;
        let positive = positive_index(self.positive.as_deref(), head.labels())?;
        let texts = data.texts();
        let embeddings = embedder.embed_all(&texts, !self.encoder.quiet)?;
        let mut probabilities = embeddings
            .iter()
            .map(|e| head.probabilities(e))
            .collect::<ClassifyResult<Vec<_>>>()?;
        let cascade = match &self.cascade {
            Some(dir) => Some(self.cascade(dir, &head, &texts, &mut probabilities)?),
            None => None,
        };
        let evaluation = Evaluation::new(head.labels(), &probabilities, &data.targets(), positive);
        match (self.json, cascade) {
            (true, None) => to_json(&evaluation),
            (true, Some(cascade)) => to_json(&serde_json::json!({
                "cascade": cascade,
                "evaluation": evaluation,
            })),
            (false, cascade) => Ok(format!(
                "{}{} on {}\n{}{evaluation}",
                path.display(),
                self.cascade
                    .as_ref()
                    .map_or_else(String::new, |c| format!(" behind {}", c.display())),
                self.data.display(),
                cascade.map_or_else(String::new, |c| format!(
                    "cascade: margin {}, deferred {} of {} ({:.1}%), static tier {:.1} µs per text\n",
                    c.margin.map_or_else(|| "none".into(), |m| format!("{m:.4}")),
                    c.deferred,
                    c.examples,
                    c.deferred_share * 100.0,
                    c.static_micros
                )),
            )),
        }
    }

    /// Replaces each text's probabilities with the static head's where it is sure enough.
    fn cascade(
        &self,
        dir: &Path,
        head: &Head,
        texts: &[&str],
        probabilities: &mut [Vec<f32>],
    ) -> Result<CascadeRun, HeadsError> {
        let model = self.encoder.static_model()?;
        let static_head = Head::load(dir)?;
        check_width(dir, &static_head, model.dimension())?;
        let config = CascadeConfig::read(dir, &model.info().id)?;
        if static_head.labels() != head.labels() {
            return Err(ClassifyError::Config(format!(
                "{} has labels {:?}, the head {:?}",
                dir.display(),
                static_head.labels(),
                head.labels()
            ))
            .into());
        }
        let started = Instant::now();
        let mut deferred = 0;
        for (text, p) in texts.iter().zip(probabilities.iter_mut()) {
            let q = static_head.probabilities(&model.embed(text)?.embedding)?;
            if config.margin.is_some_and(|m| margin(&q) >= m) {
                *p = q;
            } else {
                deferred += 1;
            }
        }
        let examples = texts.len();
        Ok(CascadeRun {
            margin: config.margin,
            examples,
            deferred,
            deferred_share: if examples == 0 {
                0.0
            } else {
                deferred as f64 / examples as f64
            },
            static_micros: started.elapsed().as_secs_f64() * 1e6 / examples.max(1) as f64,
        })
    }
}

/// What `eval --cascade` found.
#[derive(Debug, Clone, serde::Serialize)]
struct CascadeRun {
    margin: Option<f32>,
    examples: usize,
    deferred: usize,
    deferred_share: f64,
    /// Static embedding and head per text, on average.
    static_micros: f64,
}

fn to_json(value: &impl serde::Serialize) -> Result<String, HeadsError> {
    serde_json::to_string_pretty(value).map_err(|e| HeadsError::Write {
        path: PathBuf::from("-"),
        detail: e.to_string(),
    })
}

/// Refuses a head of another width than its embeddings.
fn check_width(path: &Path, head: &Head, dimension: usize) -> Result<(), HeadsError> {
    if head.input_dim() == dimension {
        return Ok(());
    }
    Err(ClassifyError::HeadDimension {
        head: path.display().to_string(),
        expected: head.input_dim(),
        actual: dimension,
    }
    .into())
}
