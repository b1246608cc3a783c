//! The transformer body of each supported architecture, built by candle-transformers from a
//! checkpoint's tensors, behind one `forward` that maps a padded batch to hidden states.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{bert, debertav2, modernbert};

use super::config::ArchConfig;
use super::encoder::Precision;
use super::int8::Int8Body;
use super::tokenize::PaddedBatch;

/// One encoder body.
pub(crate) enum Backbone {
    Bert(bert::BertModel),
    /// BERT with int8 linear layers.
    Int8Bert(Box<Int8Body>),
    ModernBert(modernbert::ModernBert),
    DebertaV2 {
        model: Box<debertav2::DebertaV2Model>,
        type_ids: bool,
    },
}

/// Where a checkpoint keeps the encoder body: saved encoder-only checkpoints have no prefix,
/// task checkpoints (`...ForSequenceClassification`) put it under the family's prefix.
pub(crate) fn body_prefix(vb: &VarBuilder, arch: &ArchConfig) -> Option<&'static str> {
    let (prefix, probe) = match arch {
        ArchConfig::Bert(_) => ("bert", "embeddings.word_embeddings.weight"),
        ArchConfig::ModernBert(_) => ("model", "embeddings.tok_embeddings.weight"),
        ArchConfig::DebertaV2(_) => ("deberta", "embeddings.word_embeddings.weight"),
    };
    vb.contains_tensor(&format!("{prefix}.{probe}"))
        .then_some(prefix)
}

impl Backbone {
    /// Builds the body from the checkpoint's tensors; with `int8`, a BERT body's linear
    /// layers are quantised (other architectures stay f32: see [`Self::precision`]).
    pub fn load(vb: &VarBuilder<'static>, arch: &ArchConfig, int8: bool) -> Result<Self> {
        let prefix = body_prefix(vb, arch);
        Ok(match arch {
            ArchConfig::Bert(c) if int8 => {
                let body = match prefix {
                    Some(p) => vb.pp(p),
                    None => vb.clone(),
                };
                Self::Int8Bert(Box::new(Int8Body::load(&body, c)?))
            }
            // BertModel finds a `bert.` prefix itself.
            ArchConfig::Bert(c) => Self::Bert(bert::BertModel::load(vb.clone(), c)?),
            ArchConfig::ModernBert(c) => {
                // candle's ModernBert always reads `model.*`; map an unprefixed checkpoint.
                let vb = if prefix.is_some() {
                    vb.clone()
                } else {
                    vb.clone().rename_f(|name: &str| {
                        name.strip_prefix("model.").unwrap_or(name).to_string()
                    })
                };
                Self::ModernBert(modernbert::ModernBert::load(vb, c)?)
            }
            ArchConfig::DebertaV2(c) => {
                let body = match prefix {
                    Some(p) => vb.pp(p),
                    None => vb.clone(),
                };
                Self::DebertaV2 {
                    model: Box::new(debertav2::DebertaV2Model::load(body, c)?),
                    type_ids: c.type_vocab_size > 0,
                }
            }
        })
    }

    /// The arithmetic of its linear layers.
    pub fn precision(&self) -> Precision {
        match self {
            Self::Int8Bert(_) => Precision::Int8,
            Self::Bert(_) | Self::ModernBert(_) | Self::DebertaV2 { .. } => Precision::F32,
        }
    }

    /// Hidden states `[batch, longest, hidden]` of a padded batch.
    pub fn forward(&self, batch: &PaddedBatch) -> Result<Tensor> {
        match self {
            Self::Bert(m) => m.forward(&batch.ids, &batch.type_ids, Some(&batch.mask)),
            Self::Int8Bert(m) => m.forward(&batch.ids, &batch.type_ids, &batch.mask),
            Self::ModernBert(m) => m.forward(&batch.ids, &batch.mask),
            Self::DebertaV2 { model, type_ids } => {
                let types = type_ids.then(|| batch.type_ids.clone());
                model.forward(&batch.ids, types, Some(batch.mask.clone()))
            }
        }
    }
}
