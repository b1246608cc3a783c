//! The static tier: one vector per vocabulary token, distilled from an encoder in the manner
//! of Model2Vec, so a text's embedding is a lookup and a weighted mean (no attention, no
//! matrix products): microseconds where the encoder takes tens of milliseconds.
//!
//! Distilling runs every vocabulary token through the encoder alone (`[CLS] token [SEP]`),
//! centres the vectors and keeps their principal components, then weighs each token by
//! smooth inverse frequency (frequency estimated from its rank in the vocabulary, as Zipf's
//! law has it), so common words count less. A model folder holds `static.safetensors`
//! (`embeddings`, f16, `[vocab, dims]`), the encoder's `tokenizer.json` and `static.json`.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::embedding_store::{encoder_key, progress_bar};
use super::encoder::Encoder;
use super::error::{ClassifyError, Result};
use super::pca::centre_and_project;
use super::tokenize::{TextTokenizer, Tokens};

/// Tensor name of the token vectors in `static.safetensors`.
const TENSOR: &str = "embeddings";
/// Bumped whenever distilling changes what the vectors mean.
const FORMAT: u32 = 1;

/// How to distill.
#[derive(Debug, Clone, PartialEq)]
pub struct DistillOptions {
    /// Dimensions kept (principal components); at most the encoder's.
    pub dims: usize,
    /// Tokens per encoder pass.
    pub batch: usize,
    /// Smooth-inverse-frequency coefficient: a token of estimated frequency `p` weighs
    /// `a / (a + p)`.
    pub sif_coefficient: f64,
    /// Token budget of a text at use (special tokens included; head and tail kept beyond).
    pub max_tokens: usize,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for DistillOptions {
    fn default() -> Self {
        Self {
            dims: 256,
            batch: 256,
            sif_coefficient: 1e-4,
            max_tokens: 512,
            progress: false,
        }
    }
}

/// What a static model is and where it came from (`static.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticInfo {
    /// Format of the vectors; see [`FORMAT`].
    pub format: u32,
    /// Folder name of the encoder it was distilled from.
    pub source: String,
    /// Digest of that encoder's files and of the distill options: heads trained on this model
    /// record it, so a head never runs over vectors of another distillation.
    pub id: String,
    /// Vector width.
    pub dims: usize,
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// Smooth-inverse-frequency coefficient used.
    pub sif_coefficient: f64,
    /// Token budget of a text.
    pub max_tokens: usize,
}

/// A loaded static model; immutable and shareable across threads.
#[derive(Clone)]
pub struct StaticModel {
    info: StaticInfo,
    tokenizer: TextTokenizer,
    /// `vocab × dims`, row-major; special tokens' rows are zero.
    vectors: Arc<[f32]>,
}

impl std::fmt::Debug for StaticModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticModel")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// What the static tier says of one text.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticOutput {
    /// Weighted mean of the token vectors, L2-normalised.
    pub embedding: Arc<[f32]>,
    /// Tokens read, special tokens included.
    pub tokens: usize,
    /// Whether the text was cut to the token budget.
    pub truncated: bool,
}

impl StaticModel {
    /// Distills `encoder` into static token vectors.
    pub fn distill(encoder: &Encoder, options: &DistillOptions) -> Result<Self> {
        if options.dims == 0 || options.batch == 0 {
            return Err(ClassifyError::Config(
                "distill needs at least one dimension and one token per batch".into(),
            ));
        }
        let tokenizer = encoder.tokenizer();
        let vocab = tokenizer.vocab_size();
        let special = tokenizer.special_ids();
        let frame = encoder.tokenize("")?;
        let hidden = encoder.dimension();
        let bar = progress_bar(options.progress, vocab, "distilling", "tokens");
        let mut raw = Vec::with_capacity(vocab * hidden);
        let ids: Vec<u32> = (0..vocab as u32).collect();
        for chunk in ids.chunks(options.batch) {
            let batch: Vec<Tokens> = chunk.iter().map(|&id| framed(&frame, id)).collect();
            for output in encoder.encode_tokens(&batch)? {
                raw.extend_from_slice(&output.embedding);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let dims = options.dims.min(hidden);
        let mut vectors = centre_and_project(&raw, hidden, dims);
        let inverse_ranks: Vec<f64> = (0..vocab).map(|rank| 1.0 / (rank as f64 + 2.0)).collect();
        let total: f64 = inverse_ranks.iter().sum();
        for (rank, row) in vectors.chunks_exact_mut(dims).enumerate() {
            let weight = if special.binary_search(&(rank as u32)).is_ok() {
                0.0
            } else {
                let p = inverse_ranks[rank] / total;
                options.sif_coefficient / (options.sif_coefficient + p)
            };
            row.iter_mut().for_each(|v| *v *= weight as f32);
        }
        let info = StaticInfo {
            format: FORMAT,
            source: encoder
                .dir()
                .file_name()
                .map_or_else(|| "encoder".into(), |n| n.to_string_lossy().into_owned()),
            id: distill_id(encoder, options, dims)?,
            dims,
            vocab,
            sif_coefficient: options.sif_coefficient,
            max_tokens: options.max_tokens,
        };
        let tokenizer = tokenizer.with_max_tokens(options.max_tokens)?;
        Ok(Self {
            info,
            tokenizer,
            vectors: vectors.into(),
        })
    }

    /// Writes `static.safetensors`, `tokenizer.json` and `static.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ClassifyError::io(dir, e))?;
        let weights = dir.join("static.safetensors");
        let tensor = Tensor::from_slice(
            &self.vectors,
            (self.info.vocab, self.info.dims),
            &Device::Cpu,
        )
        .and_then(|t| t.to_dtype(DType::F16))
        .map_err(|e| ClassifyError::model(&weights, e))?;
        candle_core::safetensors::save(&[(TENSOR, tensor)].into_iter().collect(), &weights)
            .map_err(|e| ClassifyError::model(&weights, e))?;
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        let info = dir.join("static.json");
        let text = serde_json::to_string_pretty(&self.info)
            .map_err(|e| ClassifyError::invalid(&info, e.to_string()))?;
        std::fs::write(&info, text + "\n").map_err(|e| ClassifyError::io(&info, e))
    }

    /// Loads a folder [`save`](Self::save) wrote.
    pub fn load(dir: &Path) -> Result<Self> {
        let info_path = dir.join("static.json");
        let info: StaticInfo = read_json(&info_path)?;
        if info.format != FORMAT {
            return Err(ClassifyError::invalid(
                &info_path,
                format!(
                    "static model format {} is not {FORMAT}: distill it again",
                    info.format
                ),
            ));
        }
        let weights = dir.join("static.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| ClassifyError::io(&weights, e))?;
        let vectors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| ClassifyError::invalid(&weights, format!("not safetensors: {e}")))?
            .remove(TENSOR)
            .ok_or_else(|| ClassifyError::invalid(&weights, format!("no {TENSOR:?} tensor")))?;
        if vectors.dims() != [info.vocab, info.dims] {
            return Err(ClassifyError::invalid(
                &weights,
                format!(
                    "{TENSOR} is {:?}, static.json says [{}, {}]",
                    vectors.dims(),
                    info.vocab,
                    info.dims
                ),
            ));
        }
        let vectors: Vec<f32> = vectors
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| ClassifyError::model(&weights, e))?;
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), info.max_tokens)?;
        if tokenizer.vocab_size() != info.vocab {
            return Err(ClassifyError::invalid(
                dir,
                format!(
                    "tokenizer.json has {} tokens, the vectors {}",
                    tokenizer.vocab_size(),
                    info.vocab
                ),
            ));
        }
        Ok(Self {
            info,
            tokenizer,
            vectors: vectors.into(),
        })
    }

    /// What the model is and where it came from.
    pub fn info(&self) -> &StaticInfo {
        &self.info
    }

    /// Embedding width.
    pub fn dimension(&self) -> usize {
        self.info.dims
    }

    /// The embedding of `text`: the sum of its tokens' (weighted) vectors, L2-normalised.
    pub fn embed(&self, text: &str) -> Result<StaticOutput> {
        let tokens = self.tokenizer.tokenize(text)?;
        let dims = self.info.dims;
        let mut sum = vec![0f32; dims];
        for &id in &tokens.ids {
            let start = id as usize * dims;
            if let Some(row) = self.vectors.get(start..start + dims) {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 1e-12 {
            sum.iter_mut().for_each(|v| *v /= norm);
        }
        Ok(StaticOutput {
            embedding: sum.into(),
            tokens: tokens.len(),
            truncated: tokens.truncated,
        })
    }
}

/// A JSON file read into `T`; a missing file is an I/O error, bad content names the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| ClassifyError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ClassifyError::invalid(path, e.to_string()))
}

/// `[CLS] id [SEP]` (the frame of the empty text around one token).
fn framed(frame: &Tokens, id: u32) -> Tokens {
    let (open, close) = frame.ids.split_at(frame.ids.len().min(1));
    let ids: Vec<u32> = open
        .iter()
        .copied()
        .chain([id])
        .chain(close.iter().copied())
        .collect();
    Tokens {
        type_ids: vec![0; ids.len()],
        ids,
        truncated: false,
    }
}

fn distill_id(encoder: &Encoder, options: &DistillOptions, dims: usize) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(encoder_key(encoder)?);
    hash.update(format!(
        "format {FORMAT} dims {dims} sif {} max_tokens {}",
        options.sif_coefficient, options.max_tokens
    ));
    Ok(hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Architecture, EncoderOptions};

    fn tiny_encoder() -> (tempfile::TempDir, Encoder) {
        let dir = tempfile::tempdir().unwrap();
        crate::classify::tiny::write_model(dir.path(), Architecture::Bert, None).unwrap();
        let encoder = Encoder::load(dir.path(), &EncoderOptions::default()).unwrap();
        (dir, encoder)
    }

    #[test]
    fn distilled_vectors_round_trip_and_embed_to_unit_length() {
        let (_dir, encoder) = tiny_encoder();
        let options = DistillOptions {
            dims: 8,
            batch: 7,
            ..DistillOptions::default()
        };
        let model = StaticModel::distill(&encoder, &options).unwrap();
        assert_eq!(model.dimension(), 8);
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let loaded = StaticModel::load(out.path()).unwrap();
        assert_eq!(loaded.info(), model.info());

        let a = loaded.embed("the cat sat").unwrap();
        let norm = a.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
        // f16 storage keeps the direction.
        let b = model.embed("the cat sat").unwrap();
        let cosine: f32 = a
            .embedding
            .iter()
            .zip(b.embedding.iter())
            .map(|(x, y)| x * y)
            .sum();
        assert!(cosine > 0.999, "cosine {cosine}");
        // Different words, a different embedding; special tokens alone, none.
        let c = loaded.embed("dog").unwrap();
        assert_ne!(a.embedding, c.embedding);
        assert!(
            loaded
                .embed("")
                .unwrap()
                .embedding
                .iter()
                .all(|v| *v == 0.0)
        );
    }

    #[test]
    fn the_id_names_the_encoder_and_the_options() {
        let (_dir, encoder) = tiny_encoder();
        let small = DistillOptions {
            dims: 4,
            ..DistillOptions::default()
        };
        let a = StaticModel::distill(&encoder, &small).unwrap();
        let b = StaticModel::distill(&encoder, &small).unwrap();
        let c = StaticModel::distill(&encoder, &DistillOptions::default()).unwrap();
        assert_eq!(a.info().id, b.info().id);
        assert_ne!(a.info().id, c.info().id);
    }

    #[test]
    fn a_damaged_folder_is_refused_with_the_reason() {
        let (_dir, encoder) = tiny_encoder();
        let model = StaticModel::distill(&encoder, &DistillOptions::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let info = out.path().join("static.json");
        let text = std::fs::read_to_string(&info)
            .unwrap()
            .replace("\"format\": 1", "\"format\": 9");
        std::fs::write(&info, text).unwrap();
        let err = StaticModel::load(out.path()).unwrap_err().to_string();
        assert!(err.contains("distill it again"), "{err}");
    }
}
