//! `semantic-router train` and `semantic-router eval`: make a head from labelled JSONL, and
//! measure one.

use std::path::{Path, PathBuf};

use super::dataset::{Dataset, DatasetError};
use super::embedding_store::EmbeddingStore;
use super::encoder::{Encoder, EncoderOptions};
use super::error::{ClassifyError, Result as ClassifyResult};
use super::evaluate::Evaluation;
use super::head::Head;
use super::hub::{HubOptions, ModelSource};
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
    /// A report could not be written.
    #[error("cannot write {path}: {detail}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// The encoder and embedding store both commands read.
#[derive(clap::Args, Debug, Clone)]
pub struct EncoderArgs {
    /// Encoder: a directory (config.json, tokenizer.json, *.safetensors) or a Hugging Face
    /// model id `org/name[@revision]`, as `run --encoder` takes it.
    #[arg(long, value_name = "DIR|HUB_ID", value_parser = parse_source)]
    pub encoder: ModelSource,
    /// Longest text the encoder reads, in tokens (as `run --classify-max-tokens`).
    #[arg(long, default_value_t = super::DEFAULT_MAX_TOKENS)]
    pub max_tokens: usize,
    /// Where embeddings are kept between runs, per encoder and text (a second run over the
    /// same texts never runs the encoder).
    #[arg(long, value_name = "DIR", env = "SR_EMBEDDING_CACHE", default_value_os_t = default_cache())]
    pub embedding_cache: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
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
    /// The encoder the head reads.
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

fn parse_source(value: &str) -> Result<ModelSource, std::convert::Infallible> {
    Ok(ModelSource::parse(value))
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("semantic-router/embeddings")
}

impl EncoderArgs {
    fn load(&self) -> ClassifyResult<(Encoder, EmbeddingStore)> {
        let dir = self.encoder.resolve(&HubOptions::from_env())?;
        let encoder = Encoder::load(
            &dir,
            &EncoderOptions {
                max_tokens: self.max_tokens,
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
        let (encoder, mut store) = self.encoder.load()?;
        tracing::info!(
            train = train_set.examples.len(),
            validation = validation.examples.len(),
            labels = train_set.labels.len(),
            kept = store.len(),
            "embedding the examples"
        );
        let progress = !self.encoder.quiet;
        let train_embeddings = store.embed_all(&encoder, &train_set.texts(), progress)?;
        let validation_embeddings = store.embed_all(&encoder, &validation.texts(), progress)?;
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
        ))
    }
}

impl EvalArgs {
    /// Evaluates the head and returns the table (or JSON).
    pub fn run(&self) -> Result<String, HeadsError> {
        let Some(path) = &self.head else {
            return Err(HeadsError::NoHead);
        };
        let head = Head::load(path)?;
        let (encoder, mut store) = self.encoder.load()?;
        if head.input_dim() != encoder.dimension() {
            return Err(ClassifyError::HeadDimension {
                head: path.display().to_string(),
                expected: head.input_dim(),
                actual: encoder.dimension(),
            }
            .into());
        }
        let data = Dataset::read_for(&self.data, head.labels())?;
        let positive = positive_index(self.positive.as_deref(), head.labels())?;
        let embeddings = store.embed_all(&encoder, &data.texts(), !self.encoder.quiet)?;
        let probabilities = embeddings
            .iter()
            .map(|e| head.probabilities(e))
            .collect::<ClassifyResult<Vec<_>>>()?;
        let evaluation = Evaluation::new(head.labels(), &probabilities, &data.targets(), positive);
        if self.json {
            serde_json::to_string_pretty(&evaluation).map_err(|e| HeadsError::Write {
                path: PathBuf::from("-"),
                detail: e.to_string(),
            })
        } else {
            Ok(format!(
                "{} on {}\n{evaluation}",
                path.display(),
                self.data.display()
            ))
        }
    }
}
