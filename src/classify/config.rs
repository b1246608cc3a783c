//! Reading a model folder's `config.json`: which architecture it is, the Candle config for it,
//! and the label names of a sequence-classification checkpoint.
//!
//! Hugging Face configs omit fields that equal the library default and spell a few of them
//! differently across versions (`norm_eps` / `layer_norm_eps`), so the loader fills in the
//! upstream defaults before Candle's strict structs see the JSON.

use std::fmt;
use std::path::{Path, PathBuf};

use candle_transformers::models::{bert, debertav2, modernbert};
use serde_json::{Map, Value, json};

use super::error::{ClassifyError, Result};

/// The encoder families this module can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// BERT and its distilled relatives with the same layout (MiniLM, e5, bge, ...).
    Bert,
    /// ModernBERT (rotary positions, alternating local/global attention, GeGLU).
    ModernBert,
    /// DeBERTa-v2 / v3 (disentangled relative attention).
    DebertaV2,
}

impl Architecture {
    /// The Hugging Face `model_type` of the family.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::ModernBert => "modernbert",
            Self::DebertaV2 => "deberta-v2",
        }
    }

    /// Detects the family from `model_type`, else from the first of `architectures`.
    fn detect(config: &Value) -> Option<Self> {
        let from_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .and_then(
                |t| match t.to_ascii_lowercase().replace('_', "-").as_str() {
                    "bert" => Some(Self::Bert),
                    "modernbert" => Some(Self::ModernBert),
                    "deberta-v2" => Some(Self::DebertaV2),
                    _ => None,
                },
            );
        from_type.or_else(|| {
            let first = config.get("architectures")?.as_array()?.first()?.as_str()?;
            if first.starts_with("ModernBert") {
                Some(Self::ModernBert)
            } else if first.starts_with("DebertaV2") {
                Some(Self::DebertaV2)
            } else if first.starts_with("Bert") {
                Some(Self::Bert)
            } else {
                None
            }
        })
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Candle config of one architecture.
#[derive(Debug, Clone)]
pub(crate) enum ArchConfig {
    Bert(bert::Config),
    ModernBert(modernbert::Config),
    DebertaV2(Box<debertav2::Config>),
}

/// How a ModernBERT sequence-classification checkpoint pools its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClassifierPooling {
    /// The first (`[CLS]`) token.
    Cls,
    /// The mean over the attention mask.
    Mean,
}

/// Everything the loader needs from `config.json`.
#[derive(Debug, Clone)]
pub(crate) struct ModelConfig {
    pub path: PathBuf,
    pub architecture: Architecture,
    pub arch: ArchConfig,
    pub hidden_size: usize,
    pub max_positions: usize,
    pub pad_token_id: u32,
    /// `id2label` ordered by id, when the config has one.
    pub labels: Option<Vec<String>>,
    /// ModernBERT's `classifier_pooling` (upstream default: CLS).
    pub classifier_pooling: ClassifierPooling,
}

impl ModelConfig {
    /// Reads and interprets `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| ClassifyError::io(&path, e))?;
        Self::parse(&path, &text)
    }

    /// Interprets the text of a `config.json` (named `path` in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut value: Value = serde_json::from_str(text)
            .map_err(|e| ClassifyError::invalid(path, format!("not JSON: {e}")))?;
        let architecture =
            Architecture::detect(&value).ok_or_else(|| ClassifyError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found: describe_architecture(&value),
            })?;
        let labels = read_labels(path, &value)?;
        let classifier_pooling = match value.get("classifier_pooling").and_then(Value::as_str) {
            Some("mean") => ClassifierPooling::Mean,
            _ => ClassifierPooling::Cls,
        };
        let obj = value
            .as_object_mut()
            .ok_or_else(|| ClassifyError::invalid(path, "the top level is not an object"))?;
        fill_defaults(architecture, obj);
        let bad = |e: serde_json::Error| ClassifyError::invalid(path, e.to_string());
        let (arch, hidden_size, max_positions, pad_token_id) = match architecture {
            Architecture::Bert => {
                let c: bert::Config = serde_json::from_value(value).map_err(bad)?;
                let pad = to_u32(path, c.pad_token_id)?;
                let (hidden, positions) = (c.hidden_size, c.max_position_embeddings);
                (ArchConfig::Bert(c), hidden, positions, pad)
            }
            Architecture::ModernBert => {
                let c: modernbert::Config = serde_json::from_value(value).map_err(bad)?;
                let (hidden, positions, pad) =
                    (c.hidden_size, c.max_position_embeddings, c.pad_token_id);
                (ArchConfig::ModernBert(c), hidden, positions, pad)
            }
            Architecture::DebertaV2 => {
                let c: debertav2::Config = serde_json::from_value(value).map_err(bad)?;
                let pad = to_u32(path, c.pad_token_id.unwrap_or(0))?;
                let (hidden, positions) = (c.hidden_size, c.max_position_embeddings);
                (ArchConfig::DebertaV2(Box::new(c)), hidden, positions, pad)
            }
        };
        if hidden_size == 0 {
            return Err(ClassifyError::invalid(path, "hidden_size is 0"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            architecture,
            arch,
            hidden_size,
            max_positions,
            pad_token_id,
            labels,
            classifier_pooling,
        })
    }
}

fn to_u32(path: &Path, v: usize) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| ClassifyError::invalid(path, format!("pad_token_id {v} is too large")))
}

fn describe_architecture(config: &Value) -> String {
    let model_type = config.get("model_type").and_then(Value::as_str);
    let first = config
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    match (model_type, first) {
        (Some(t), Some(a)) => format!("{t} ({a})"),
        (Some(t), None) => t.to_string(),
        (None, Some(a)) => a.to_string(),
        (None, None) => "neither model_type nor architectures".to_string(),
    }
}

/// `id2label` (`{"0": "a", "1": "b"}`) as a list ordered by id; ids must be exactly `0..n`.
fn read_labels(path: &Path, config: &Value) -> Result<Option<Vec<String>>> {
    let Some(map) = config.get("id2label").and_then(Value::as_object) else {
        return Ok(None);
    };
    let mut labels: Vec<Option<String>> = vec![None; map.len()];
    for (id, label) in map {
        let index: usize = id.parse().map_err(|_| {
            ClassifyError::invalid(path, format!("id2label key {id:?} is not an integer"))
        })?;
        let label = label.as_str().ok_or_else(|| {
            ClassifyError::invalid(path, format!("id2label[{id}] is not a string"))
        })?;
        let slot = labels.get_mut(index).ok_or_else(|| {
            ClassifyError::invalid(
                path,
                format!("id2label ids must be 0..{}, found {id}", map.len()),
            )
        })?;
        *slot = Some(label.to_string());
    }
    labels
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(Some)
        .ok_or_else(|| ClassifyError::invalid(path, "id2label has duplicate ids"))
}

fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

/// Candle spells activations its own way; map the Hugging Face spellings onto them.
fn normalize_act(obj: &mut Map<String, Value>, key: &str) {
    if let Some(Value::String(act)) = obj.get(key) {
        let mapped = match act.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => "gelu_approximate",
            other => other,
        };
        obj.insert(key.to_string(), Value::String(mapped.to_string()));
    }
}

/// Fills the upstream (transformers) defaults of fields a saved config may omit.
fn fill_defaults(arch: Architecture, obj: &mut Map<String, Value>) {
    match arch {
        Architecture::Bert => {
            set_default(obj, "hidden_act", json!("gelu"));
            set_default(obj, "hidden_dropout_prob", json!(0.1));
            set_default(obj, "max_position_embeddings", json!(512));
            set_default(obj, "type_vocab_size", json!(2));
            set_default(obj, "initializer_range", json!(0.02));
            set_default(obj, "layer_norm_eps", json!(1e-12));
            set_default(obj, "pad_token_id", json!(0));
            normalize_act(obj, "hidden_act");
        }
        Architecture::ModernBert => {
            let eps = obj.get("norm_eps").cloned().unwrap_or(json!(1e-5));
            set_default(obj, "layer_norm_eps", eps);
            set_default(obj, "max_position_embeddings", json!(8192));
            set_default(obj, "pad_token_id", json!(50283));
            set_default(obj, "global_attn_every_n_layers", json!(3));
            set_default(obj, "global_rope_theta", json!(160000.0));
            set_default(obj, "local_attention", json!(128));
            set_default(obj, "local_rope_theta", json!(10000.0));
        }
        Architecture::DebertaV2 => {
            set_default(obj, "hidden_act", json!("gelu"));
            set_default(obj, "hidden_dropout_prob", json!(0.1));
            set_default(obj, "attention_probs_dropout_prob", json!(0.1));
            set_default(obj, "max_position_embeddings", json!(512));
            set_default(obj, "type_vocab_size", json!(0));
            set_default(obj, "initializer_range", json!(0.02));
            set_default(obj, "layer_norm_eps", json!(1e-7));
            set_default(obj, "relative_attention", json!(false));
            set_default(obj, "max_relative_positions", json!(-1));
            set_default(obj, "position_biased_input", json!(true));
            set_default(obj, "pos_att_type", json!([]));
            let hidden = obj.get("hidden_size").cloned().unwrap_or(Value::Null);
            set_default(obj, "pooler_hidden_size", hidden);
            set_default(obj, "pooler_dropout", json!(0.0));
            set_default(obj, "pooler_hidden_act", json!("gelu"));
            normalize_act(obj, "hidden_act");
            normalize_act(obj, "pooler_hidden_act");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelConfig> {
        ModelConfig::parse(Path::new("config.json"), text)
    }

    #[test]
    fn detects_bert_from_model_type_and_fills_defaults() {
        let c = parse(
            r#"{"model_type":"bert","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
                "num_attention_heads":2,"intermediate_size":16}"#,
        )
        .expect("config");
        assert_eq!(c.architecture, Architecture::Bert);
        assert_eq!(c.hidden_size, 8);
        assert_eq!(c.max_positions, 512);
        let ArchConfig::Bert(b) = &c.arch else {
            panic!("not bert")
        };
        assert_eq!(b.type_vocab_size, 2);
        assert!(c.labels.is_none());
    }

    #[test]
    fn detects_from_architectures_when_model_type_is_missing() {
        let v: Value =
            serde_json::from_str(r#"{"architectures":["ModernBertForMaskedLM"]}"#).expect("json");
        assert_eq!(Architecture::detect(&v), Some(Architecture::ModernBert));
        let v: Value =
            serde_json::from_str(r#"{"architectures":["DebertaV2ForSequenceClassification"]}"#)
                .expect("json");
        assert_eq!(Architecture::detect(&v), Some(Architecture::DebertaV2));
    }

    #[test]
    fn rejects_unknown_architectures_with_what_it_found() {
        let err = parse(r#"{"model_type":"gpt2","architectures":["GPT2LMHeadModel"]}"#)
            .expect_err("gpt2 is not an encoder we run");
        assert_eq!(err.kind(), "unsupported_architecture");
        assert!(err.to_string().contains("gpt2 (GPT2LMHeadModel)"), "{err}");
    }

    #[test]
    fn orders_labels_by_id() {
        let v: Value =
            serde_json::from_str(r#"{"id2label":{"1":"b","0":"a","2":"c"}}"#).expect("json");
        let labels = read_labels(Path::new("c"), &v).expect("labels");
        assert_eq!(labels, Some(vec!["a".into(), "b".into(), "c".into()]));
        let v: Value = serde_json::from_str(r#"{"id2label":{"0":"a","5":"b"}}"#).expect("json");
        assert!(read_labels(Path::new("c"), &v).is_err());
    }

    #[test]
    fn modernbert_takes_norm_eps() {
        let c = parse(
            r#"{"model_type":"modernbert","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
                "num_attention_heads":2,"intermediate_size":16,"norm_eps":1e-6,
                "classifier_pooling":"mean"}"#,
        )
        .expect("config");
        let ArchConfig::ModernBert(m) = &c.arch else {
            panic!("not modernbert")
        };
        assert_eq!(m.layer_norm_eps, 1e-6);
        assert_eq!(c.classifier_pooling, ClassifierPooling::Mean);
    }
}
