//! A BERT body on the int8 encoder (`semantic-router-int8`): its tensors read from a
//! checkpoint, its input and output as Candle tensors like the other bodies'.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
use semantic_router_int8::{Activation, BertError, BertShape, Int8Bert};

/// A BERT body with int8 linear layers.
pub(crate) struct Int8Body(Int8Bert);

/// A failure of the int8 encoder as Candle's error, which the bodies share.
fn candle_error(e: BertError) -> candle_core::Error {
    candle_core::Error::Msg(format!("int8 encoder: {e}"))
}

impl Int8Body {
    /// Quantises the body under `vb` (at the body's prefix).
    pub fn load(vb: &VarBuilder, config: &Config) -> Result<Self> {
        if config.position_embedding_type != PositionEmbeddingType::Absolute {
            candle_core::bail!("the int8 encoder supports absolute position embeddings only");
        }
        let shape = BertShape {
            vocab: config.vocab_size,
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
            layers: config.num_hidden_layers,
            positions: config.max_position_embeddings,
            types: config.type_vocab_size.max(1),
            eps: config.layer_norm_eps as f32,
            activation: match config.hidden_act {
                HiddenAct::Gelu => Activation::Gelu,
                HiddenAct::GeluApproximate => Activation::GeluTanh,
                HiddenAct::Relu => Activation::Relu,
            },
        };
        let weight = |name: &str, dims: &[usize]| {
            vb.get(dims, name)
                .and_then(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1())
                .map_err(|e| e.to_string())
        };
        Int8Bert::new(shape, weight).map(Self).map_err(candle_error)
    }

    /// Hidden states `[batch, longest, hidden]` of a padded batch (the mask 1 for tokens, 0
    /// for the padding after them).
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, longest) = ids.dims2()?;
        let lengths: Vec<usize> = mask
            .to_vec2::<u32>()?
            .iter()
            .map(|row| row.iter().filter(|m| **m != 0).count())
            .collect();
        let states = self
            .0
            .forward(
                &ids.flatten_all()?.to_vec1()?,
                &type_ids.flatten_all()?.to_vec1()?,
                &lengths,
                longest,
            )
            .map_err(candle_error)?;
        Tensor::from_vec(
            states,
            (batch, longest, self.0.shape().hidden),
            &Device::Cpu,
        )
    }
}
