//! Our own small classification heads over the pooled embedding, so one encoder pass feeds
//! any number of them.
//!
//! A head lives in a folder: `head.safetensors` and `labels.json` (a JSON array of label
//! names, in output order). The tensors are
//! - linear: `output.weight` `[labels, dim]`, `output.bias` `[labels]`;
//! - one hidden layer: `hidden.weight` `[width, dim]`, `hidden.bias` `[width]`, ReLU, then
//!   `output.weight` `[labels, width]`, `output.bias` `[labels]`.
//!
//! The input is the L2-normalised mean-pooled embedding the encoder produces; the output is a
//! softmax over the labels. Heads are a few thousand multiply-adds, so they run as plain Rust
//! on the caller's thread (also for cached embeddings), not in the model pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::error::{ClassifyError, Result};
use super::ranking::Ranking;

/// A dense layer, row-major `weight[out][in]`.
#[derive(Debug, Clone, PartialEq)]
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Dense {
    fn new(weight: Vec<f32>, bias: Vec<f32>, inputs: usize) -> Option<Self> {
        (inputs > 0 && !bias.is_empty() && weight.len() == bias.len() * inputs).then_some(Self {
            weight,
            bias,
            inputs,
        })
    }

    fn outputs(&self) -> usize {
        self.bias.len()
    }

    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, b)| b + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>())
            .collect()
    }
}

/// A small classifier over an embedding: linear, or one ReLU hidden layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    name: String,
    labels: Arc<[String]>,
    hidden: Option<Dense>,
    output: Dense,
}

impl Head {
    /// A linear head: `weight` is `[labels.len(), dim]` row-major, `bias` `[labels.len()]`.
    pub fn linear(
        name: impl Into<String>,
        labels: Vec<String>,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<Self> {
        let name = name.into();
        let dim = weight.len().checked_div(bias.len()).unwrap_or(0);
        let output = Dense::new(weight, bias, dim)
            .ok_or_else(|| ClassifyError::Config(format!("head {name:?}: bad linear shape")))?;
        Self::build(name, labels, None, output)
    }

    /// A head with one ReLU hidden layer of `hidden_bias.len()` units.
    pub fn mlp(
        name: impl Into<String>,
        labels: Vec<String>,
        (hidden_weight, hidden_bias): (Vec<f32>, Vec<f32>),
        (output_weight, output_bias): (Vec<f32>, Vec<f32>),
    ) -> Result<Self> {
        let name = name.into();
        let bad = || ClassifyError::Config(format!("head {name:?}: bad layer shapes"));
        let dim = hidden_weight
            .len()
            .checked_div(hidden_bias.len())
            .unwrap_or(0);
        let hidden = Dense::new(hidden_weight, hidden_bias, dim).ok_or_else(bad)?;
        let output = Dense::new(output_weight, output_bias, hidden.outputs()).ok_or_else(bad)?;
        Self::build(name, labels, Some(hidden), output)
    }

    fn build(
        name: String,
        labels: Vec<String>,
        hidden: Option<Dense>,
        output: Dense,
    ) -> Result<Self> {
        if labels.len() != output.outputs() {
            return Err(ClassifyError::Config(format!(
                "head {name:?}: {} labels for {} outputs",
                labels.len(),
                output.outputs()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(ClassifyError::Config(format!(
                "head {name:?}: duplicate label {dup:?}"
            )));
        }
        Ok(Self {
            name,
            labels: labels.into(),
            hidden,
            output,
        })
    }

    /// Loads `dir/head.safetensors` and `dir/labels.json`; the head is named after the folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "head".to_string());
        let labels_path = dir.join("labels.json");
        let text = std::fs::read_to_string(&labels_path)
            .map_err(|e| ClassifyError::io(&labels_path, e))?;
        let labels: Vec<String> = serde_json::from_str(&text).map_err(|e| {
            ClassifyError::invalid(
                &labels_path,
                format!("expected a JSON array of strings: {e}"),
            )
        })?;
        let weights_path = dir.join("head.safetensors");
        if !weights_path.is_file() {
            return Err(ClassifyError::io(
                &weights_path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "head.safetensors not found"),
            ));
        }
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| ClassifyError::invalid(&weights_path, e.to_string()))?;
        let invalid = |m: String| ClassifyError::invalid(&weights_path, m);
        let layer = |prefix: &str| -> Result<Option<Dense>> {
            let (Some(w), Some(b)) = (
                tensors.get(&format!("{prefix}.weight")),
                tensors.get(&format!("{prefix}.bias")),
            ) else {
                return Ok(None);
            };
            let flat = |t: &Tensor| {
                t.to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all()?.to_vec1())
            };
            let (outs, ins) = w
                .dims2()
                .map_err(|_| invalid(format!("{prefix}.weight is not a matrix")))?;
            let w = flat(w).map_err(|e| invalid(e.to_string()))?;
            let b = flat(b).map_err(|e| invalid(e.to_string()))?;
            if b.len() != outs {
                return Err(invalid(format!(
                    "{prefix}.bias has {} values, expected {outs}",
                    b.len()
                )));
            }
            Dense::new(w, b, ins)
                .map(Some)
                .ok_or_else(|| invalid(format!("{prefix} is empty")))
        };
        let output = layer("output")?
            .ok_or_else(|| invalid("missing output.weight / output.bias".to_string()))?;
        let hidden = layer("hidden")?;
        if let Some(h) = &hidden
            && h.outputs() != output.inputs
        {
            return Err(invalid(format!(
                "hidden has {} outputs but output takes {}",
                h.outputs(),
                output.inputs
            )));
        }
        Self::build(name, labels, hidden, output).map_err(|e| match e {
            ClassifyError::Config(m) => invalid(m),
            other => other,
        })
    }

    /// Writes the head as `dir/head.safetensors` + `dir/labels.json` (creating `dir`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ClassifyError::io(dir, e))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        let mut put = |prefix: &str, d: &Dense| -> candle_core::Result<()> {
            let w = Tensor::from_slice(&d.weight, (d.outputs(), d.inputs), &Device::Cpu)?;
            let b = Tensor::from_slice(&d.bias, d.outputs(), &Device::Cpu)?;
            tensors.insert(format!("{prefix}.weight"), w);
            tensors.insert(format!("{prefix}.bias"), b);
            Ok(())
        };
        let weights_path = dir.join("head.safetensors");
        let as_err = |e: candle_core::Error| ClassifyError::invalid(&weights_path, e.to_string());
        if let Some(h) = &self.hidden {
            put("hidden", h).map_err(as_err)?;
        }
        put("output", &self.output).map_err(as_err)?;
        candle_core::safetensors::save(&tensors, &weights_path).map_err(as_err)?;
        let labels_path = dir.join("labels.json");
        let json = serde_json::to_string_pretty(&*self.labels)
            .map_err(|e| ClassifyError::invalid(&labels_path, e.to_string()))?;
        std::fs::write(&labels_path, json).map_err(|e| ClassifyError::io(&labels_path, e))
    }

    /// Renames the head (the service addresses heads by name).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The head's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Labels in output order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Size of the embedding the head takes.
    pub fn input_dim(&self) -> usize {
        self.hidden.as_ref().unwrap_or(&self.output).inputs
    }

    /// Probabilities of every label, in label order.
    pub fn probabilities(&self, embedding: &[f32]) -> Result<Vec<f32>> {
        if embedding.len() != self.input_dim() {
            return Err(ClassifyError::HeadDimension {
                head: self.name.clone(),
                expected: self.input_dim(),
                actual: embedding.len(),
            });
        }
        let logits = match &self.hidden {
            Some(h) => {
                let mut x = h.apply(embedding);
                x.iter_mut().for_each(|v| *v = v.max(0.0));
                self.output.apply(&x)
            }
            None => self.output.apply(embedding),
        };
        Ok(softmax(&logits))
    }

    /// Every label with its probability, most probable first.
    pub fn classify(&self, embedding: &[f32]) -> Result<Ranking> {
        Ok(self.ranking(&self.probabilities(embedding)?))
    }

    /// `probabilities` (in label order, as [`probabilities`](Self::probabilities) gives them)
    /// ranked under this head's labels.
    pub fn ranking(&self, probabilities: &[f32]) -> Ranking {
        Ranking::new(self.labels.clone(), probabilities)
    }
}

/// Numerically stable softmax.
pub(crate) fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn linear_head_ranks_and_sums_to_one() {
        // 2 labels over a 3-dim input: label b reads dimension 1.
        let head = Head::linear(
            "h",
            labels(&["a", "b"]),
            vec![1.0, 0.0, 0.0, 0.0, 4.0, 0.0],
            vec![0.0, 0.0],
        )
        .expect("head");
        let out = head.classify(&[0.0, 1.0, 0.0]).expect("classify");
        assert_eq!(out.top().map(|(l, _)| l), Some("b"));
        let total: f32 = out.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn mlp_head_round_trips_through_a_folder() {
        let dir = tempfile::tempdir().expect("tmp");
        let head = Head::mlp(
            "ignored",
            labels(&["x", "y", "z"]),
            (
                (0..8).map(|i| i as f32 * 0.1 - 0.3).collect(),
                vec![0.1, -0.1],
            ),
            (
                (0..6).map(|i| 0.5 - i as f32 * 0.2).collect(),
                vec![0.0, 0.1, 0.2],
            ),
        )
        .expect("head");
        let path = dir.path().join("topic");
        head.save(&path).expect("save");
        let back = Head::load(&path).expect("load");
        assert_eq!(back.name(), "topic");
        assert_eq!(back.input_dim(), 4);
        assert_eq!(back.with_name("ignored"), head);
    }

    #[test]
    fn rejects_mismatched_shapes_and_inputs() {
        assert!(Head::linear("h", labels(&["a"]), vec![1.0, 2.0], vec![0.0, 0.0]).is_err());
        assert!(Head::linear("h", labels(&["a", "a"]), vec![1.0, 2.0], vec![0.0, 0.0]).is_err());
        let head =
            Head::linear("h", labels(&["a", "b"]), vec![1.0, 2.0], vec![0.0, 0.0]).expect("head");
        let err = head.classify(&[1.0, 2.0]).expect_err("wrong dimension");
        assert_eq!(err.kind(), "head_dimension");
    }

    #[test]
    fn load_reports_missing_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = Head::load(dir.path()).expect_err("empty folder");
        assert_eq!(err.kind(), "io");
        std::fs::write(dir.path().join("labels.json"), r#"["a"]"#).expect("write");
        let err = Head::load(dir.path()).expect_err("no weights");
        assert!(err.to_string().contains("head.safetensors"), "{err}");
    }

    #[test]
    fn softmax_is_stable_for_large_logits() {
        let p = softmax(&[1000.0, 1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6);
    }
}
