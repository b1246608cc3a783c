//! The classification head a fine-tuned `...ForSequenceClassification` checkpoint carries.
//!
//! It runs on the hidden states of the same forward pass that yields the embedding, so a
//! checkpoint's own head costs no second encoder pass. candle-transformers has whole
//! sequence-classification models for ModernBERT and DeBERTa-v2 (each running its own encoder
//! pass) and none for BERT; we build only the heads, with the upstream layouts:
//! - BERT: tanh(dense(`[CLS]`)) → classifier (`bert.pooler.dense`, `classifier`).
//! - ModernBERT: pool (`[CLS]` or mean, `classifier_pooling`) → dense → GELU → LayerNorm →
//!   classifier (`head.dense`, `head.norm`, `classifier`).
//! - DeBERTa-v2: act(dense(`[CLS]`)) → classifier (`pooler.dense`, `classifier`).

use candle_core::{D, IndexOp, Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder, layer_norm_no_bias, linear, linear_no_bias};
use candle_transformers::models::debertav2::DebertaV2ContextPooler;

use super::backbone::body_prefix;
use super::config::{ArchConfig, ClassifierPooling};

/// A checkpoint's classification head.
pub(crate) enum SequenceHead {
    Bert {
        pooler: Linear,
        classifier: Linear,
    },
    ModernBert {
        pooling: ClassifierPooling,
        dense: Linear,
        norm: LayerNorm,
        classifier: Linear,
    },
    DebertaV2 {
        pooler: Box<DebertaV2ContextPooler>,
        classifier: Linear,
    },
}

/// Number of classes of the checkpoint's `classifier`, or `None` when it has none.
pub(crate) fn classifier_outputs(vb: &VarBuilder) -> Option<usize> {
    if !vb.contains_tensor("classifier.weight") {
        return None;
    }
    vb.get_unchecked("classifier.weight")
        .ok()
        .and_then(|w| w.dims2().ok())
        .map(|(classes, _)| classes)
}

impl SequenceHead {
    /// Builds the head with `classes` outputs from the checkpoint's tensors.
    pub fn load(
        vb: &VarBuilder,
        arch: &ArchConfig,
        hidden: usize,
        classes: usize,
        pooling: ClassifierPooling,
    ) -> Result<Self> {
        let prefix = body_prefix(vb, arch);
        Ok(match arch {
            ArchConfig::Bert(_) => {
                let pooler_vb = match prefix {
                    Some(p) => vb.pp(p).pp("pooler.dense"),
                    None => vb.pp("pooler.dense"),
                };
                Self::Bert {
                    pooler: linear(hidden, hidden, pooler_vb)?,
                    classifier: linear(hidden, classes, vb.pp("classifier"))?,
                }
            }
            ArchConfig::ModernBert(c) => {
                let dense = if vb.contains_tensor("head.dense.bias") {
                    linear(hidden, hidden, vb.pp("head.dense"))?
                } else {
                    linear_no_bias(hidden, hidden, vb.pp("head.dense"))?
                };
                Self::ModernBert {
                    pooling,
                    dense,
                    norm: layer_norm_no_bias(hidden, c.layer_norm_eps, vb.pp("head.norm"))?,
                    classifier: linear(hidden, classes, vb.pp("classifier"))?,
                }
            }
            ArchConfig::DebertaV2(c) => {
                let pooler = DebertaV2ContextPooler::load(vb.clone(), c)?;
                let width = pooler.output_dim()?;
                Self::DebertaV2 {
                    pooler: Box::new(pooler),
                    classifier: linear(width, classes, vb.pp("classifier"))?,
                }
            }
        })
    }

    /// Class probabilities `[batch, classes]` from the hidden states `[batch, len, hidden]`
    /// and the (un-normalised) mean-pooled states `[batch, hidden]`.
    pub fn forward(&self, hidden: &Tensor, mean_pooled: &Tensor) -> Result<Tensor> {
        let logits = match self {
            Self::Bert { pooler, classifier } => {
                let cls = hidden.i((.., 0, ..))?.contiguous()?;
                classifier.forward(&pooler.forward(&cls)?.tanh()?)?
            }
            Self::ModernBert {
                pooling,
                dense,
                norm,
                classifier,
            } => {
                let pooled = match pooling {
                    ClassifierPooling::Cls => hidden.i((.., 0, ..))?.contiguous()?,
                    ClassifierPooling::Mean => mean_pooled.clone(),
                };
                let x = norm.forward(&dense.forward(&pooled)?.gelu_erf()?)?;
                classifier.forward(&x)?
            }
            Self::DebertaV2 { pooler, classifier } => {
                classifier.forward(&pooler.forward(hidden)?)?
            }
        };
        candle_nn::ops::softmax_last_dim(&logits.contiguous()?).or_else(|_| {
            // softmax_last_dim has no kernel on every backend; the generic one always works.
            candle_nn::ops::softmax(&logits, D::Minus1)
        })
    }
}
