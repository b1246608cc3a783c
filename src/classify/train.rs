//! Trains a head over frozen embeddings with candle-nn: a linear layer or one ReLU hidden
//! layer, class-weighted cross-entropy, AdamW, early stopping on validation loss, then a
//! temperature fitted on validation and folded into the output layer, so the head's
//! probabilities are calibrated. Deterministic for a seed: weights start from a seeded
//! generator and minibatches follow it.

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Linear, Module, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::error::{ClassifyError, Result};
use super::evaluate::{Evaluation, calibration_error, fit_temperature};
use super::head::Head;

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Width of the hidden layer; 0 trains a linear head.
    pub hidden: usize,
    /// Most passes over the training data.
    pub max_epochs: usize,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Weigh each class by the inverse of its share, so rare classes count as much.
    pub class_weights: bool,
    /// Seed of the initial weights and the minibatch order.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            hidden: 0,
            max_epochs: 200,
            patience: 12,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            batch_size: 64,
            class_weights: true,
            seed: 42,
        }
    }
}

/// Embeddings (rows of equal width) and their label indices.
pub struct Examples<'a> {
    /// One embedding per example.
    pub embeddings: &'a [std::sync::Arc<[f32]>],
    /// The label index of each.
    pub targets: &'a [usize],
}

/// What training found, written beside the head as `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    /// The labels, in output order.
    pub labels: Vec<String>,
    /// The options used.
    pub options: TrainOptions,
    /// Training examples per label.
    pub train_counts: Vec<usize>,
    /// Validation examples per label.
    pub validation_counts: Vec<usize>,
    /// Epochs run, and the one whose weights were kept.
    pub epochs: usize,
    /// The epoch kept (lowest validation loss).
    pub best_epoch: usize,
    /// Validation loss at that epoch.
    pub validation_loss: f64,
    /// The fitted temperature (folded into the output layer).
    pub temperature: f32,
    /// Expected calibration error on validation before the temperature.
    pub calibration_error_before: f64,
    /// The calibrated head on the validation set.
    pub validation: Evaluation,
}

/// A trained head and its report.
pub struct Trained {
    /// The calibrated head.
    pub head: Head,
    /// How it was trained and how it does on validation.
    pub report: TrainReport,
}

/// Trains a head named `name` for `labels` on `train`, stopping and calibrating on
/// `validation`; `positive` names the label binary scores are reported for.
pub fn train(
    name: &str,
    labels: &[String],
    train: &Examples<'_>,
    validation: &Examples<'_>,
    positive: Option<usize>,
    options: &TrainOptions,
) -> Result<Trained> {
    let dim = train
        .embeddings
        .first()
        .map(|e| e.len())
        .ok_or_else(|| ClassifyError::Config("no training examples".into()))?;
    if validation.embeddings.is_empty() {
        return Err(ClassifyError::Config("no validation examples".into()));
    }
    let k = labels.len();
    let device = Device::Cpu;
    let as_err = |e: candle_core::Error| ClassifyError::Config(format!("training: {e}"));
    let x = matrix(train.embeddings, dim, &device).map_err(as_err)?;
    let y = targets(train.targets, &device).map_err(as_err)?;
    let vx = matrix(validation.embeddings, dim, &device).map_err(as_err)?;
    let vy = targets(validation.targets, &device).map_err(as_err)?;
    let train_counts = counts(k, train.targets);
    let weights = class_weights(&train_counts, options.class_weights);
    let weights = Tensor::new(weights.as_slice(), &device).map_err(as_err)?;
    let ones = Tensor::ones(k, DType::F32, &device).map_err(as_err)?;

    let mut rng = StdRng::seed_from_u64(options.seed);
    let net = Net::new(dim, options.hidden, k, &mut rng, &device).map_err(as_err)?;
    let mut optimizer = AdamW::new(
        net.vars(),
        ParamsAdamW {
            lr: options.learning_rate,
            weight_decay: options.weight_decay,
            ..ParamsAdamW::default()
        },
    )
    .map_err(as_err)?;

    let mut order: Vec<u32> = (0..train.targets.len() as u32).collect();
    let mut best = (f64::INFINITY, 0usize, net.snapshot().map_err(as_err)?);
    let mut epoch = 0;
    while epoch < options.max_epochs && epoch - best.1 <= options.patience {
        epoch += 1;
        order.shuffle(&mut rng);
        for batch in order.chunks(options.batch_size.max(1)) {
            let index = Tensor::new(batch, &device).map_err(as_err)?;
            let bx = x.index_select(&index, 0).map_err(as_err)?;
            let by = y.index_select(&index, 0).map_err(as_err)?;
            let loss =
                weighted_loss(&net.forward(&bx).map_err(as_err)?, &by, &weights).map_err(as_err)?;
            optimizer.backward_step(&loss).map_err(as_err)?;
        }
        let loss = weighted_loss(&net.forward(&vx).map_err(as_err)?, &vy, &ones)
            .and_then(|l| l.to_scalar::<f32>())
            .map_err(as_err)?;
        if f64::from(loss) < best.0 {
            best = (f64::from(loss), epoch, net.snapshot().map_err(as_err)?);
        }
    }
    let (validation_loss, best_epoch, kept) = best;
    net.restore(&kept).map_err(as_err)?;

    let logits = net
        .forward(&vx)
        .and_then(|l| l.to_vec2::<f32>())
        .map_err(as_err)?;
    let before: Vec<Vec<f32>> = logits.iter().map(|l| softmax(l, 1.0)).collect();
    let temperature = fit_temperature(&logits, validation.targets);
    let head = net
        .into_head(name, labels.to_vec(), temperature)
        .map_err(as_err)?
        .map_err(|e| ClassifyError::Config(format!("training: {e}")))?;
    let probabilities = validation
        .embeddings
        .iter()
        .map(|e| head.probabilities(e))
        .collect::<Result<Vec<_>>>()?;
    Ok(Trained {
        report: TrainReport {
            labels: labels.to_vec(),
            options: options.clone(),
            train_counts,
            validation_counts: counts(k, validation.targets),
            epochs: epoch,
            best_epoch,
            validation_loss,
            temperature,
            calibration_error_before: calibration_error(&before, validation.targets),
            validation: Evaluation::new(labels, &probabilities, validation.targets, positive),
        },
        head,
    })
}

fn matrix(
    rows: &[std::sync::Arc<[f32]>],
    dim: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut flat = Vec::with_capacity(rows.len() * dim);
    for row in rows {
        if row.len() != dim {
            candle_core::bail!("embeddings of widths {} and {dim}", row.len());
        }
        flat.extend_from_slice(row);
    }
    Tensor::from_vec(flat, (rows.len(), dim), device)
}

fn targets(targets: &[usize], device: &Device) -> candle_core::Result<Tensor> {
    let t: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
    Tensor::new(t.as_slice(), device)
}

fn counts(k: usize, targets: &[usize]) -> Vec<usize> {
    let mut c = vec![0; k];
    for &t in targets {
        c[t] += 1;
    }
    c
}

/// `n / (k * count)` per class (1 for all without weighting; 0 for an absent class).
fn class_weights(counts: &[usize], weighted: bool) -> Vec<f32> {
    let n: usize = counts.iter().sum();
    counts
        .iter()
        .map(|&c| match (weighted, c) {
            (_, 0) => 0.0,
            (false, _) => 1.0,
            (true, c) => n as f32 / (counts.len() * c) as f32,
        })
        .collect()
}

/// Cross-entropy with each example weighed by its class's weight.
fn weighted_loss(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let w = weights.index_select(targets, 0)?;
    (picked * &w)?.sum_all()?.neg()? / w.sum_all()?.to_scalar::<f32>()? as f64
}

fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits
        .iter()
        .map(|v| ((v - max) / temperature).exp())
        .collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|v| v / sum).collect()
}

/// The trainable layers.
struct Net {
    hidden: Option<(Var, Var)>,
    output: (Var, Var),
}

/// Values of every parameter, to keep the best epoch's.
type Snapshot = Vec<Tensor>;

impl Net {
    fn new(
        dim: usize,
        hidden: usize,
        k: usize,
        rng: &mut StdRng,
        device: &Device,
    ) -> candle_core::Result<Self> {
        // Uniform in ±1/sqrt(fan_in), as torch's Linear starts.
        let mut layer = |inputs: usize, outputs: usize| -> candle_core::Result<(Var, Var)> {
            let bound = 1.0 / (inputs as f32).sqrt();
            let mut values =
                |n| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
            Ok((
                Var::from_tensor(&Tensor::from_vec(
                    values(outputs * inputs),
                    (outputs, inputs),
                    device,
                )?)?,
                Var::from_tensor(&Tensor::from_vec(values(outputs), outputs, device)?)?,
            ))
        };
        Ok(if hidden == 0 {
            Self {
                hidden: None,
                output: layer(dim, k)?,
            }
        } else {
            Self {
                hidden: Some(layer(dim, hidden)?),
                output: layer(hidden, k)?,
            }
        })
    }

    fn layers(&self) -> impl Iterator<Item = &(Var, Var)> {
        self.hidden.iter().chain(std::iter::once(&self.output))
    }

    fn vars(&self) -> Vec<Var> {
        self.layers()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let linear =
            |(w, b): &(Var, Var)| Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        let x = match &self.hidden {
            Some(h) => linear(h).forward(x)?.relu()?,
            None => x.clone(),
        };
        linear(&self.output).forward(&x)
    }

    fn snapshot(&self) -> candle_core::Result<Snapshot> {
        self.vars().iter().map(|v| v.as_tensor().copy()).collect()
    }

    fn restore(&self, snapshot: &Snapshot) -> candle_core::Result<()> {
        for (var, value) in self.vars().iter().zip(snapshot) {
            var.set(value)?;
        }
        Ok(())
    }

    /// The head, its output layer divided by `temperature`.
    fn into_head(
        self,
        name: &str,
        labels: Vec<String>,
        temperature: f32,
    ) -> candle_core::Result<Result<Head>> {
        let flat = |t: &Var| -> candle_core::Result<Vec<f32>> {
            t.as_tensor().flatten_all()?.to_vec1::<f32>()
        };
        let scaled = |t: &Var| -> candle_core::Result<Vec<f32>> {
            Ok(flat(t)?.into_iter().map(|v| v / temperature).collect())
        };
        let output = (scaled(&self.output.0)?, scaled(&self.output.1)?);
        Ok(match &self.hidden {
            None => Head::linear(name, labels, output.0, output.1),
            Some((w, b)) => Head::mlp(name, labels, (flat(w)?, flat(b)?), output),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Two separable clusters in 8 dimensions, with some overlap noise.
    fn clusters(n: usize, seed: u64) -> (Vec<Arc<[f32]>>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = i % 3;
            let row: Vec<f32> = (0..8)
                .map(|d| if d == label { 1.0 } else { 0.0 } + rng.random_range(-0.4..0.4))
                .collect();
            rows.push(Arc::from(row));
            labels.push(label);
        }
        (rows, labels)
    }

    fn names() -> Vec<String> {
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn learns_separable_data_deterministically() {
        let (x, y) = clusters(300, 1);
        let (vx, vy) = clusters(90, 2);
        let options = TrainOptions {
            max_epochs: 40,
            ..TrainOptions::default()
        };
        let fit = |positive, options: &TrainOptions| {
            let (train_set, validation) = (
                Examples {
                    embeddings: &x,
                    targets: &y,
                },
                Examples {
                    embeddings: &vx,
                    targets: &vy,
                },
            );
            train("toy", &names(), &train_set, &validation, positive, options).unwrap()
        };
        let first = fit(None, &options);
        assert!(
            first.report.validation.accuracy.value > 0.95,
            "{}",
            first.report.validation
        );
        assert_eq!(first.head, fit(None, &options).head, "same seed, same head");
        assert_eq!(first.head.labels(), names());

        let mlp = fit(
            Some(0),
            &TrainOptions {
                hidden: 16,
                max_epochs: 40,
                seed: 7,
                ..TrainOptions::default()
            },
        );
        assert!(mlp.report.validation.accuracy.value > 0.95);
        assert!(mlp.report.validation.binary.is_some());
        assert_eq!(mlp.head.input_dim(), 8);
    }

    #[test]
    fn rare_classes_get_more_weight() {
        assert_eq!(class_weights(&[90, 10], true), [100.0 / 180.0, 5.0]);
        assert_eq!(class_weights(&[90, 0], false), [1.0, 0.0]);
    }
}
