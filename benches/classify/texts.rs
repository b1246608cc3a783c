//! The floor (a bare Candle forward) and random texts of an exact token count.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use rand::seq::IndexedRandom;
use semantic_router::classify::Encoder;

/// The floor: candle-transformers' BertModel with mean pooling and normalisation, nothing else.
pub struct Floor {
    model: BertModel,
}

impl Floor {
    pub fn load(dir: &Path) -> Self {
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(dir.join("config.json")).expect("config.json"),
        )
        .expect("bert config");
        let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .expect("safetensors");
        Self {
            model: BertModel::load(vb, &config).expect("BertModel"),
        }
    }

    pub fn embed(&self, ids: &[u32]) -> Vec<f32> {
        let run = || -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
            let types = ids.zeros_like()?;
            let mask = ids.ones_like()?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let pooled = hidden.mean(1)?;
            let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
            pooled.broadcast_div(&norm)?.squeeze(0)?.to_vec1()
        };
        run().expect("floor forward")
    }
}

/// Whole-word vocabulary entries, for texts of an exact token count.
pub struct Words(Vec<String>);

impl Words {
    pub fn load(dir: &Path) -> Self {
        let tokenizer =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
        let mut words: Vec<String> = tokenizer
            .get_vocab(false)
            .into_keys()
            .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()))
            .collect();
        words.sort();
        Self(words)
    }

    /// A fresh random text of exactly `tokens` tokens (special tokens included).
    pub fn text(&self, encoder: &Encoder, tokens: usize) -> String {
        let mut rng = rand::rng();
        loop {
            let text: Vec<&str> = (0..tokens - 2)
                .filter_map(|_| self.0.choose(&mut rng).map(String::as_str))
                .collect();
            let text = text.join(" ");
            // Random words from ~20k make every text distinct; a few vocabulary entries split
            // into several tokens, so check the count and retry.
            if encoder.tokenize(&text).map(|t| t.len()).ok() == Some(tokens) {
                return text;
            }
        }
    }
}
