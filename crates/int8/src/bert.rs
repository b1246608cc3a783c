//! BERT's forward pass on plain vectors: linear layers in int8 ([`Int8Linear`]), the rest
//! (embeddings, attention, layer norms, GELU) in f32, compiled for the CPU's widest vectors
//! at run time. The same arithmetic as Hugging Face's `BertModel` with absolute positions.

use crate::attention::attention;
use crate::linear::Int8Linear;
use crate::math::{add, gelu, gelu_tanh, sum, sum_map};

/// The sizes and choices of a BERT body, as its `config.json` gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct BertShape {
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// Width of every hidden state.
    pub hidden: usize,
    /// Attention heads per layer; must divide `hidden`.
    pub heads: usize,
    /// Width of each layer's feed-forward inner state.
    pub intermediate: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Positions the model has embeddings for.
    pub positions: usize,
    /// Token types (segments) the model has embeddings for.
    pub types: usize,
    /// The layer norms' epsilon.
    pub eps: f32,
    /// The feed-forward activation.
    pub activation: Activation,
}

/// A feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · Φ(x)` with the exact normal CDF (`gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

/// What can go wrong building or running the model.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    /// The shape cannot describe a BERT.
    #[error("{0}")]
    Shape(String),
    /// A weight could not be read.
    #[error("weight {name}: {reason}")]
    Read {
        /// The checkpoint's name for it.
        name: String,
        /// Why not.
        reason: String,
    },
    /// A weight had the wrong number of values for its name.
    #[error("weight {name} has {got} values, expected {expected}")]
    Weight {
        /// The checkpoint's name for it.
        name: String,
        /// Values found.
        got: usize,
        /// Values its shape needs.
        expected: usize,
    },
    /// A token id or type outside the model's tables.
    #[error("token {id} (type {kind}) is outside the vocabulary")]
    Token {
        /// The token id.
        id: u32,
        /// Its type id.
        kind: u32,
    },
    /// A batch longer than the model's positions.
    #[error("{tokens} tokens exceed the model's {positions} positions")]
    TooLong {
        /// Tokens in the longest text.
        tokens: usize,
        /// Positions the model has.
        positions: usize,
    },
}

/// A BERT encoder body with int8 linear layers.
pub struct Int8Bert {
    shape: BertShape,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
}

struct Layer {
    /// Query, key and value in one product: `3 × hidden` outputs.
    qkv: Int8Linear,
    attention_output: Int8Linear,
    attention_norm: LayerNorm,
    intermediate: Int8Linear,
    output: Int8Linear,
    output_norm: LayerNorm,
}

struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// Normalises each row of `x` in place.
    #[inline(always)]
    fn apply(&self, x: &mut [f32]) {
        let n = self.weight.len() as f32;
        for row in x.chunks_mut(self.weight.len()) {
            let mean = sum(row) / n;
            row.iter_mut().for_each(|v| *v -= mean);
            let inverse = 1.0 / (sum_map(row, |v| v * v) / n + self.eps).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = *v * inverse * w + b;
            }
        }
    }
}

impl Int8Bert {
    /// Quantises a body of `shape` whose tensors `weight(name, dims)` returns flattened (or
    /// says why it cannot), under the names of a Hugging Face BERT checkpoint without its
    /// prefix (`embeddings.word_embeddings.weight`,
    /// `encoder.layer.0.attention.self.query.weight`…).
    pub fn new(
        shape: BertShape,
        weight: impl FnMut(&str, &[usize]) -> Result<Vec<f32>, String>,
    ) -> Result<Self, BertError> {
        let BertShape {
            hidden,
            heads,
            intermediate,
            ..
        } = shape;
        if heads == 0 || hidden % heads != 0 {
            return Err(BertError::Shape(format!(
                "hidden size {hidden} is not split evenly across {heads} heads"
            )));
        }
        let mut read = Reader {
            weight,
            hidden,
            eps: shape.eps,
        };
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let at = |name: &str| format!("encoder.layer.{i}.{name}");
            let mut qkv_weight = Vec::with_capacity(3 * hidden * hidden);
            let mut qkv_bias = Vec::with_capacity(3 * hidden);
            for part in ["query", "key", "value"] {
                let name = at(&format!("attention.self.{part}"));
                qkv_weight.extend(read.get(&format!("{name}.weight"), &[hidden, hidden])?);
                qkv_bias.extend(read.get(&format!("{name}.bias"), &[hidden])?);
            }
            layers.push(Layer {
                qkv: Int8Linear::new(&qkv_weight, Some(&qkv_bias), 3 * hidden, hidden),
                attention_output: read.linear(&at("attention.output.dense"), hidden, hidden)?,
                attention_norm: read.norm(&at("attention.output.LayerNorm"))?,
                intermediate: read.linear(&at("intermediate.dense"), intermediate, hidden)?,
                output: read.linear(&at("output.dense"), hidden, intermediate)?,
                output_norm: read.norm(&at("output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word: read.get("embeddings.word_embeddings.weight", &[shape.vocab, hidden])?,
            position: read.get(
                "embeddings.position_embeddings.weight",
                &[shape.positions, hidden],
            )?,
            token_type: read.get(
                "embeddings.token_type_embeddings.weight",
                &[shape.types, hidden],
            )?,
            embedding_norm: read.norm("embeddings.LayerNorm")?,
            layers,
            shape,
        })
    }

    /// The model's sizes.
    pub fn shape(&self) -> &BertShape {
        &self.shape
    }

    /// Hidden states (`hidden` per token) of a batch of texts padded to `longest` tokens:
    /// `ids` and `type_ids` hold `longest` per text, `lengths` each text's own tokens (the
    /// padding after them is never attended).
    pub fn forward(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        lengths: &[usize],
        longest: usize,
    ) -> Result<Vec<f32>, BertError> {
        if longest > self.shape.positions {
            return Err(BertError::TooLong {
                tokens: longest,
                positions: self.shape.positions,
            });
        }
        if ids.len() != lengths.len() * longest || type_ids.len() != ids.len() {
            return Err(BertError::Shape(format!(
                "{} ids and {} type ids for {} texts of {longest} tokens",
                ids.len(),
                type_ids.len(),
                lengths.len()
            )));
        }
        pulp::Arch::new().dispatch(Run {
            model: self,
            ids,
            type_ids,
            lengths,
            longest,
        })
    }

    #[inline(always)]
    fn run(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        lengths: &[usize],
        longest: usize,
    ) -> Result<Vec<f32>, BertError> {
        let hidden = self.shape.hidden;
        let mut x = vec![0f32; ids.len() * hidden];
        for (token, (row, (&id, &kind))) in x
            .chunks_mut(hidden)
            .zip(ids.iter().zip(type_ids))
            .enumerate()
        {
            let (word, kind_row) = (id as usize, kind as usize);
            if kind_row >= self.shape.types || word >= self.shape.vocab {
                return Err(BertError::Token { id, kind });
            }
            let word = &self.word[word * hidden..][..hidden];
            let place = &self.position[(token % longest) * hidden..][..hidden];
            let kind = &self.token_type[kind_row * hidden..][..hidden];
            for (((v, w), p), k) in row.iter_mut().zip(word).zip(place).zip(kind) {
                *v = w + p + k;
            }
        }
        self.embedding_norm.apply(&mut x);
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x);
            let context = attention(&qkv, hidden, self.shape.heads, lengths, longest);
            let mut attended = layer.attention_output.forward(&context);
            add(&mut attended, &x);
            layer.attention_norm.apply(&mut attended);
            let inner = match self.shape.activation {
                Activation::Gelu => layer.intermediate.forward_map(&attended, gelu),
                Activation::GeluTanh => layer.intermediate.forward_map(&attended, gelu_tanh),
                Activation::Relu => layer.intermediate.forward_map(&attended, |v| v.max(0.0)),
            };
            x = layer.output.forward(&inner);
            add(&mut x, &attended);
            layer.output_norm.apply(&mut x);
        }
        Ok(x)
    }
}

/// Reads a checkpoint's tensors by name, checking each one's size.
struct Reader<F> {
    weight: F,
    hidden: usize,
    eps: f32,
}

impl<F: FnMut(&str, &[usize]) -> Result<Vec<f32>, String>> Reader<F> {
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Vec<f32>, BertError> {
        let values = (self.weight)(name, dims).map_err(|reason| BertError::Read {
            name: name.to_string(),
            reason,
        })?;
        let expected = dims.iter().product();
        if values.len() != expected {
            return Err(BertError::Weight {
                name: name.to_string(),
                got: values.len(),
                expected,
            });
        }
        Ok(values)
    }

    fn linear(
        &mut self,
        name: &str,
        outputs: usize,
        inputs: usize,
    ) -> Result<Int8Linear, BertError> {
        let weight = self.get(&format!("{name}.weight"), &[outputs, inputs])?;
        let bias = self.get(&format!("{name}.bias"), &[outputs])?;
        Ok(Int8Linear::new(&weight, Some(&bias), outputs, inputs))
    }

    fn norm(&mut self, name: &str) -> Result<LayerNorm, BertError> {
        let hidden = self.hidden;
        Ok(LayerNorm {
            weight: self.get(&format!("{name}.weight"), &[hidden])?,
            bias: self.get(&format!("{name}.bias"), &[hidden])?,
            eps: self.eps,
        })
    }
}

/// The forward pass as one call compiled for the CPU's best instruction set.
struct Run<'a> {
    model: &'a Int8Bert,
    ids: &'a [u32],
    type_ids: &'a [u32],
    lengths: &'a [usize],
    longest: usize,
}

impl pulp::WithSimd for Run<'_> {
    type Output = Result<Vec<f32>, BertError>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
        self.model
            .run(self.ids, self.type_ids, self.lengths, self.longest)
    }
}
