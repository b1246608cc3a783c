//! An encoder loaded from a local model folder: tokenizer, transformer body and, for a
//! fine-tuned checkpoint, its classification head. Loading (config, weights, model, tokenizer)
//! happens once in [`Encoder::load`]; use is tokenize → forward → pool → normalise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::backbone::Backbone;
use super::config::{Architecture, ModelConfig};
use super::device::default_device;
use super::error::{ClassifyError, Result};
use super::pooling::{l2_normalize, mean_pool};
use super::seq_head::{SequenceHead, classifier_outputs};
use super::tokenize::{DEFAULT_MAX_TOKENS, PaddedBatch, TextTokenizer, Tokens};

/// How to load an encoder.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    /// Token budget per text, special tokens included; a longer text keeps its start and end. Capped at
    /// the model's `max_position_embeddings`. Default 256.
    pub max_tokens: usize,
    /// Device to run on; `None` picks [`default_device`] (the CPU unless built with `cuda`).
    pub device: Option<Device>,
    /// Name under which the checkpoint's own classification head (if any) is served; default:
    /// the model folder's name.
    pub head_name: Option<String>,
    /// Arithmetic of the body's linear layers.
    pub precision: Precision,
}

/// Arithmetic of the encoder's linear layers.
///
/// int8 is the default: on all-MiniLM-L6-v2 it runs about twice as fast as f32 on two cores
/// (`cargo bench --bench classify`) and moves every default head's accuracy by under one
/// point (README, "The int8 encoder").
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats, through Candle: the checkpoint's exact arithmetic.
    F32,
    /// int8 weights and activations for a BERT-family body on the CPU (MiniLM); other
    /// architectures and GPUs stay f32, with a warning.
    #[default]
    Int8,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            device: None,
            head_name: None,
            precision: Precision::default(),
        }
    }
}

/// What one forward pass yields for one text.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOutput {
    /// Mean-pooled, L2-normalised embedding (length: the encoder's hidden size).
    pub embedding: Arc<[f32]>,
    /// Probabilities of the checkpoint's own classifier, in label order, when it has one.
    pub class_probabilities: Option<Arc<[f32]>>,
    /// Tokens the model saw, special tokens included.
    pub tokens: usize,
    /// Whether the text was cut to the token budget.
    pub truncated: bool,
}

/// A loaded encoder; immutable and shareable across threads.
pub struct Encoder {
    dir: PathBuf,
    architecture: Architecture,
    backbone: Backbone,
    head: Option<CheckpointHead>,
    tokenizer: TextTokenizer,
    device: Device,
    hidden_size: usize,
    pad_id: u32,
    precision: Precision,
}

struct CheckpointHead {
    name: String,
    labels: Vec<String>,
    head: SequenceHead,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("dir", &self.dir)
            .field("architecture", &self.architecture)
            .field("hidden_size", &self.hidden_size)
            .field("max_tokens", &self.tokenizer.max_tokens())
            .field("head", &self.head.as_ref().map(|h| (&h.name, &h.labels)))
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Loads the model in `dir`: `config.json` (architecture from `model_type` /
    /// `architectures`), `tokenizer.json`, and every `*.safetensors` file (weights are read into
    /// memory; the crate forbids the `unsafe` that memory-mapping needs). A `classifier.weight`
    /// tensor makes the checkpoint's own head available, labelled by `id2label`.
    pub fn load(dir: &Path, options: &EncoderOptions) -> Result<Self> {
        let config = ModelConfig::read(dir)?;
        let mut max_tokens = options.max_tokens;
        if config.max_positions > 0 && max_tokens > config.max_positions {
            tracing::warn!(
                model = %dir.display(),
                max_tokens,
                limit = config.max_positions,
                "token budget exceeds the model's positions; capping it"
            );
            max_tokens = config.max_positions;
        }
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), max_tokens)?;
        let device = options.device.clone().unwrap_or_else(default_device);
        let vb = read_weights(dir, &device)?;
        let int8 = options.precision == Precision::Int8 && device.is_cpu();
        let backbone =
            Backbone::load(&vb, &config.arch, int8).map_err(|e| ClassifyError::model(dir, e))?;
        let precision = backbone.precision();
        if precision != options.precision {
            tracing::warn!(
                model = %dir.display(),
                asked = ?options.precision,
                running = ?precision,
                "the int8 encoder runs BERT-family models on the CPU only; this one runs in f32"
            );
        }
        let head = match classifier_outputs(&vb) {
            None => None,
            Some(classes) => {
                let labels = match &config.labels {
                    Some(labels) if labels.len() == classes => labels.clone(),
                    Some(labels) => {
                        return Err(ClassifyError::invalid(
                            &config.path,
                            format!(
                                "id2label has {} labels but the classifier has {classes} outputs",
                                labels.len()
                            ),
                        ));
                    }
                    None => (0..classes).map(|i| format!("LABEL_{i}")).collect(),
                };
                let head = SequenceHead::load(
                    &vb,
                    &config.arch,
                    config.hidden_size,
                    classes,
                    config.classifier_pooling,
                )
                .map_err(|e| ClassifyError::model(dir, e))?;
                let name = options
                    .head_name
                    .clone()
                    .unwrap_or_else(|| folder_name(dir));
                Some(CheckpointHead { name, labels, head })
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            architecture: config.architecture,
            backbone,
            head,
            tokenizer,
            device,
            hidden_size: config.hidden_size,
            pad_id: config.pad_token_id,
            precision,
        })
    }

    /// The folder the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The detected architecture.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// Embedding size (the model's hidden size).
    pub fn dimension(&self) -> usize {
        self.hidden_size
    }

    /// Token budget per text.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_tokens()
    }

    /// The arithmetic its linear layers run in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Name and labels of the checkpoint's own classification head, if it has one.
    pub fn checkpoint_head(&self) -> Option<(&str, &[String])> {
        self.head
            .as_ref()
            .map(|h| (h.name.as_str(), h.labels.as_slice()))
    }

    /// The model's tokenizer, with its token budget.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Tokenizes one text with the model's tokenizer and budget.
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        self.tokenizer.tokenize(text)
    }

    /// Encodes a batch of texts in one forward pass.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<EncoderOutput>> {
        let tokens = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        self.encode_tokens(&tokens)
    }

    /// Encodes already tokenized texts in one forward pass, padded to the longest.
    pub fn encode_tokens(&self, batch: &[Tokens]) -> Result<Vec<EncoderOutput>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let refs: Vec<&Tokens> = batch.iter().collect();
        let (embeddings, probabilities) = self.forward(&refs).map_err(ClassifyError::inference)?;
        let mut probabilities = probabilities.map(Vec::into_iter);
        Ok(batch
            .iter()
            .zip(embeddings)
            .map(|(tokens, embedding)| EncoderOutput {
                embedding: embedding.into(),
                class_probabilities: probabilities
                    .as_mut()
                    .and_then(Iterator::next)
                    .map(Arc::from),
                tokens: tokens.len(),
                truncated: tokens.truncated,
            })
            .collect())
    }

    /// The forward pass: rows of embeddings and, with a checkpoint head, of probabilities.
    fn forward(&self, batch: &[&Tokens]) -> candle_core::Result<(Rows, Option<Rows>)> {
        let padded = PaddedBatch::new(batch, self.pad_id, &self.device)?;
        let hidden = self.backbone.forward(&padded)?;
        let pooled = mean_pool(&hidden, &padded.mask)?;
        let embeddings = l2_normalize(&pooled)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let probabilities = match &self.head {
            Some(h) => Some(
                h.head
                    .forward(&hidden, &pooled)?
                    .to_dtype(DType::F32)?
                    .to_vec2::<f32>()?,
            ),
            None => None,
        };
        Ok((embeddings, probabilities))
    }
}

/// One row of floats per text.
type Rows = Vec<Vec<f32>>;

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}

/// The `*.safetensors` files in `dir`, sorted by name.
pub(crate) fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| ClassifyError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| ClassifyError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "safetensors") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every `*.safetensors` in `dir` (sorted by name) into one tensor map.
fn read_weights(dir: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    let files = safetensors_files(dir)?;
    if files.is_empty() {
        return Err(ClassifyError::invalid(
            dir,
            "no *.safetensors weights in the folder",
        ));
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| ClassifyError::io(file, e))?;
        let loaded = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| ClassifyError::invalid(file, format!("not safetensors: {e}")))?;
        tensors.extend(loaded);
    }
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}
