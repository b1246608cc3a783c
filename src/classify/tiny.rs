//! Tiny random-weight models for tests (this crate's and its users'): a WordPiece tokenizer
//! over a few dozen words and 32-wide, 2–3 layer encoders of every supported architecture,
//! written in the same layout as a Hugging Face checkpoint folder. They load in milliseconds
//! and need no download; their outputs mean nothing, only their shapes and invariants do.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap, layer_norm_no_bias, linear, linear_no_bias};
use candle_transformers::models::{bert, debertav2, modernbert};
use rand::Rng;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::config::{ArchConfig, Architecture, ModelConfig};
use super::error::{ClassifyError, Result};
use super::head::Head;

/// Hidden size of the tiny encoders.
pub const HIDDEN: usize = 32;
/// Position limit of the tiny encoders.
pub const MAX_POSITIONS: usize = 64;

/// The tiny vocabulary: special tokens first (`[PAD]` = 0), then lower-case words.
pub const VOCAB: &[&str] = &[
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "?",
    "!",
    ",",
    ".",
    "a",
    "the",
    "is",
    "of",
    "what",
    "how",
    "are",
    "you",
    "hello",
    "hi",
    "there",
    "good",
    "morning",
    "evening",
    "thanks",
    "please",
    "solve",
    "for",
    "x",
    "equation",
    "integral",
    "derivative",
    "two",
    "three",
    "four",
    "five",
    "plus",
    "minus",
    "times",
    "equals",
    "weather",
    "today",
    "tell",
    "me",
    "about",
    "and",
    "to",
    "in",
    "it",
    "##s",
    "##ing",
];

fn tokenizer_json() -> Value {
    let vocab: serde_json::Map<String, Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), json!(i)))
        .collect();
    let special = |id: usize| {
        json!({"id": id, "content": VOCAB[id], "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": (0..5).map(special).collect::<Vec<_>>(),
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// The tiny WordPiece tokenizer, in memory.
pub fn tokenizer() -> Result<Tokenizer> {
    Tokenizer::from_bytes(tokenizer_json().to_string())
        .map_err(|e| ClassifyError::Tokenize(format!("tiny tokenizer: {e}")))
}

/// The `config.json` of a tiny model; `labels` makes it a sequence-classification checkpoint.
pub fn config_json(arch: Architecture, labels: Option<&[&str]>) -> Value {
    let task = labels.is_some();
    let mut config = match arch {
        Architecture::Bert => json!({
            "architectures": [if task { "BertForSequenceClassification" } else { "BertModel" }],
            "model_type": "bert", "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "num_hidden_layers": 2,
        }),
        Architecture::ModernBert => json!({
            "architectures": [if task { "ModernBertForSequenceClassification" } else { "ModernBertModel" }],
            "model_type": "modernbert", "norm_eps": 1e-5, "num_hidden_layers": 3,
            "global_attn_every_n_layers": 2, "global_rope_theta": 160000.0,
            "local_attention": 8, "local_rope_theta": 10000.0, "classifier_pooling": "mean",
        }),
        Architecture::DebertaV2 => json!({
            "architectures": [if task { "DebertaV2ForSequenceClassification" } else { "DebertaV2Model" }],
            "model_type": "deberta-v2", "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "type_vocab_size": 0,
            "initializer_range": 0.02, "layer_norm_eps": 1e-7, "num_hidden_layers": 2,
            "relative_attention": true, "max_relative_positions": -1,
            "position_biased_input": false, "pos_att_type": ["p2c", "c2p"],
            "position_buckets": 16, "share_att_key": true, "norm_rel_ebd": "layer_norm",
            "pooler_dropout": 0, "pooler_hidden_act": "gelu", "pooler_hidden_size": HIDDEN,
        }),
    };
    if let Some(obj) = config.as_object_mut() {
        obj.insert("vocab_size".into(), json!(VOCAB.len()));
        obj.insert("hidden_size".into(), json!(HIDDEN));
        obj.insert("num_attention_heads".into(), json!(2));
        obj.insert("intermediate_size".into(), json!(2 * HIDDEN));
        obj.insert("max_position_embeddings".into(), json!(MAX_POSITIONS));
        obj.insert("pad_token_id".into(), json!(0));
        if let Some(labels) = labels {
            let id2label: serde_json::Map<String, Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), json!(l)))
                .collect();
            let label2id: serde_json::Map<String, Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.to_string(), json!(i)))
                .collect();
            obj.insert("id2label".into(), Value::Object(id2label));
            obj.insert("label2id".into(), Value::Object(label2id));
        }
    }
    config
}

/// Writes a tiny model folder (`config.json`, `tokenizer.json`, `model.safetensors` with
/// random weights) of `arch`; with `labels`, a sequence-classification checkpoint whose
/// tensor names follow the Hugging Face `...ForSequenceClassification` layout.
pub fn write_model(dir: &Path, arch: Architecture, labels: Option<&[&str]>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ClassifyError::io(dir, e))?;
    let config_path = dir.join("config.json");
    let config_text = serde_json::to_string_pretty(&config_json(arch, labels))
        .map_err(|e| ClassifyError::invalid(&config_path, e.to_string()))?;
    std::fs::write(&config_path, &config_text).map_err(|e| ClassifyError::io(&config_path, e))?;
    let tokenizer_path = dir.join("tokenizer.json");
    std::fs::write(&tokenizer_path, tokenizer_json().to_string())
        .map_err(|e| ClassifyError::io(&tokenizer_path, e))?;

    let config = ModelConfig::parse(&config_path, &config_text)?;
    let weights_path = dir.join("model.safetensors");
    let as_err = |e: candle_core::Error| ClassifyError::model(dir, e);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let classes = labels.map(<[&str]>::len);
    build_random(&vb, &config.arch, classes).map_err(as_err)?;
    let mut tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| ClassifyError::Config("tiny model: poisoned var map".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    if arch == Architecture::ModernBert && labels.is_none() {
        // A bare `ModernBertModel` checkpoint has no `model.` prefix; write it that way so the
        // loader's renaming is exercised.
        tensors = tensors
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("model.").unwrap_or(&k).to_string(), v))
            .collect();
    }
    candle_core::safetensors::save(&tensors, &weights_path).map_err(as_err)
}

/// Creates every tensor of the architecture (and of its head, with `classes`) in `vb`.
fn build_random(
    vb: &VarBuilder,
    arch: &ArchConfig,
    classes: Option<usize>,
) -> candle_core::Result<()> {
    match (arch, classes) {
        (ArchConfig::Bert(c), None) => {
            bert::BertModel::load(vb.clone(), c)?;
        }
        (ArchConfig::Bert(c), Some(n)) => {
            bert::BertModel::load(vb.pp("bert"), c)?;
            linear(HIDDEN, HIDDEN, vb.pp("bert.pooler.dense"))?;
            linear(HIDDEN, n, vb.pp("classifier"))?;
        }
        (ArchConfig::ModernBert(c), classes) => {
            modernbert::ModernBert::load(vb.clone(), c)?;
            if let Some(n) = classes {
                linear_no_bias(HIDDEN, HIDDEN, vb.pp("head.dense"))?;
                layer_norm_no_bias(HIDDEN, c.layer_norm_eps, vb.pp("head.norm"))?;
                linear(HIDDEN, n, vb.pp("classifier"))?;
            }
        }
        (ArchConfig::DebertaV2(c), None) => {
            debertav2::DebertaV2Model::load(vb.clone(), c)?;
        }
        (ArchConfig::DebertaV2(c), Some(n)) => {
            debertav2::DebertaV2Model::load(vb.pp("deberta"), c)?;
            debertav2::DebertaV2ContextPooler::load(vb.clone(), c)?;
            linear(HIDDEN, n, vb.pp("classifier"))?;
        }
    }
    Ok(())
}

/// A head with random weights over `input_dim` inputs: linear, or with a `hidden`-unit layer.
pub fn random_head(
    name: &str,
    input_dim: usize,
    labels: &[&str],
    hidden: Option<usize>,
) -> Result<Head> {
    let mut rng = rand::rng();
    let mut values =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    let k = labels.len();
    match hidden {
        None => Head::linear(name, labels, values(k * input_dim), values(k)),
        Some(width) => Head::mlp(
            name,
            labels,
            (values(width * input_dim), values(width)),
            (values(k * width), values(k)),
        ),
    }
}
