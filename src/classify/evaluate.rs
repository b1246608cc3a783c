//! How good a head is on labelled data: accuracy and macro-F1 with 95% intervals, a
//! per-class table, the confusion matrix, calibration error and, for a binary head, AUC and
//! recall at fixed false-positive rates. Intervals: Wilson for proportions, a seeded
//! bootstrap for the rest, so a report is reproducible.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Bootstrap resamples behind each interval.
const RESAMPLES: usize = 400;
/// Bins of the expected calibration error.
const CALIBRATION_BINS: usize = 15;
/// False-positive rates at which a binary head's recall is reported.
pub const FPR_POINTS: [f64; 3] = [0.01, 0.02, 0.05];

/// A value with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The value on the data.
    pub value: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1}% [{:.1}, {:.1}]",
            100.0 * self.value,
            100.0 * self.low,
            100.0 * self.high
        )
    }
}

/// One label's row of the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// The label.
    pub label: String,
    /// Of the examples predicted as this label, the share that carry it.
    pub precision: f64,
    /// Of the examples that carry this label, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Examples that carry the label.
    pub support: usize,
}

/// Recall at one false-positive rate, and the score threshold that gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecallAtFpr {
    /// The false-positive rate allowed.
    pub fpr: f64,
    /// Recall there, with its interval.
    pub recall: Estimate,
    /// Lowest score flagged: flag when the positive probability is at least this.
    pub threshold: f32,
}

/// What a binary head's scores for its positive label say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BinaryScores {
    /// The positive label.
    pub positive: String,
    /// Area under the ROC curve.
    pub auc: Estimate,
    /// Recall at each of [`FPR_POINTS`].
    pub recall_at_fpr: Vec<RecallAtFpr>,
}

/// The evaluation of a head on one labelled set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: usize,
    /// Share predicted right.
    pub accuracy: Estimate,
    /// Mean of the per-class F1.
    pub macro_f1: Estimate,
    /// Expected calibration error of the top probability (0: calibrated).
    pub calibration_error: f64,
    /// Per label, in label order.
    pub classes: Vec<ClassScores>,
    /// `confusion[true][predicted]`, in label order.
    pub confusion: Vec<Vec<usize>>,
    /// For a binary head.
    pub binary: Option<BinaryScores>,
}

impl Evaluation {
    /// Evaluates `probabilities` (one row per example, in `labels` order) against `targets`;
    /// with `positive`, a label index, also the binary scores for it.
    pub fn new(
        labels: &[String],
        probabilities: &[Vec<f32>],
        targets: &[usize],
        positive: Option<usize>,
    ) -> Self {
        let predictions: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
        let matrix = confusion(labels.len(), &predictions, targets);
        let classes = class_scores(labels, &matrix);
        let n = targets.len();
        let correct = predictions
            .iter()
            .zip(targets)
            .filter(|(p, t)| p == t)
            .count();
        let macro_f1 = mean(classes.iter().map(|c| c.f1));
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let macro_f1 = bootstrap(n, &mut rng, macro_f1, |sample| {
            let p: Vec<usize> = sample.iter().map(|&i| predictions[i]).collect();
            let t: Vec<usize> = sample.iter().map(|&i| targets[i]).collect();
            mean(
                class_scores(labels, &confusion(labels.len(), &p, &t))
                    .iter()
                    .map(|c| c.f1),
            )
        });
        let binary = positive.map(|k| {
            let scores: Vec<f32> = probabilities.iter().map(|p| p[k]).collect();
            let positives: Vec<bool> = targets.iter().map(|&t| t == k).collect();
            binary_scores(&labels[k], &scores, &positives, &mut rng)
        });
        Self {
            examples: n,
            accuracy: wilson(correct, n),
            macro_f1,
            calibration_error: calibration_error(probabilities, targets),
            classes,
            confusion: matrix,
            binary,
        }
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "examples      {}", self.examples)?;
        writeln!(f, "accuracy      {}", self.accuracy)?;
        writeln!(f, "macro-F1      {}", self.macro_f1)?;
        writeln!(
            f,
            "calibration   {:.3} expected calibration error",
            self.calibration_error
        )?;
        if let Some(b) = &self.binary {
            writeln!(f, "AUC ({})  {}", b.positive, b.auc)?;
            for r in &b.recall_at_fpr {
                writeln!(
                    f,
                    "recall at {:.0}% false positives  {}  (threshold {:.3})",
                    100.0 * r.fpr,
                    r.recall,
                    r.threshold
                )?;
            }
        }
        let width = self
            .classes
            .iter()
            .map(|c| c.label.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "\n{:<width$}  precision  recall     F1  support",
            "label"
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "{:<width$}  {:>9.3}  {:>6.3}  {:>5.3}  {:>7}",
                c.label, c.precision, c.recall, c.f1, c.support
            )?;
        }
        writeln!(
            f,
            "\nconfusion (rows: true label, columns: predicted, in the order above)"
        )?;
        for (c, row) in self.classes.iter().zip(&self.confusion) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:>5}")).collect();
            writeln!(f, "{:<width$} {}", c.label, cells.join(""))?;
        }
        Ok(())
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

fn confusion(labels: usize, predictions: &[usize], targets: &[usize]) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; labels]; labels];
    for (&p, &t) in predictions.iter().zip(targets) {
        m[t][p] += 1;
    }
    m
}

fn class_scores(labels: &[String], confusion: &[Vec<usize>]) -> Vec<ClassScores> {
    labels
        .iter()
        .enumerate()
        .map(|(k, label)| {
            let tp = confusion[k][k] as f64;
            let support: usize = confusion[k].iter().sum();
            let predicted: usize = confusion.iter().map(|row| row[k]).sum();
            let precision = ratio(tp, predicted as f64);
            let recall = ratio(tp, support as f64);
            ClassScores {
                label: label.clone(),
                precision,
                recall,
                f1: ratio(2.0 * precision * recall, precision + recall),
                support,
            }
        })
        .collect()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    ratio(sum, n as f64)
}

/// Wilson 95% interval of `hits` out of `n`.
pub fn wilson(hits: usize, n: usize) -> Estimate {
    if n == 0 {
        return Estimate {
            value: 0.0,
            low: 0.0,
            high: 0.0,
        };
    }
    let (z, n, p) = (1.96_f64, n as f64, hits as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    Estimate {
        value: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// `value` with the 2.5th and 97.5th percentiles of `statistic` over resamples (indices
/// drawn with replacement).
fn bootstrap(
    n: usize,
    rng: &mut StdRng,
    value: f64,
    statistic: impl Fn(&[usize]) -> f64,
) -> Estimate {
    if n == 0 {
        return Estimate {
            value,
            low: value,
            high: value,
        };
    }
    let mut stats: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let sample: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            statistic(&sample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    Estimate {
        value,
        low: stats[RESAMPLES * 25 / 1000],
        high: stats[RESAMPLES * 975 / 1000 - 1],
    }
}

/// Expected calibration error of the top probability over equal-width bins.
pub fn calibration_error(probabilities: &[Vec<f32>], targets: &[usize]) -> f64 {
    let mut bins = vec![(0usize, 0.0f64, 0usize); CALIBRATION_BINS];
    for (p, &t) in probabilities.iter().zip(targets) {
        let top = argmax(p);
        let confidence = f64::from(p[top]);
        let bin = ((confidence * CALIBRATION_BINS as f64) as usize).min(CALIBRATION_BINS - 1);
        bins[bin].0 += 1;
        bins[bin].1 += confidence;
        bins[bin].2 += usize::from(top == t);
    }
    let n = targets.len() as f64;
    bins.iter()
        .filter(|(count, _, _)| *count > 0)
        .map(|&(count, confidence, correct)| {
            let c = count as f64;
            (c / n) * (confidence / c - correct as f64 / c).abs()
        })
        .sum()
}

fn binary_scores(
    positive: &str,
    scores: &[f32],
    positives: &[bool],
    rng: &mut StdRng,
) -> BinaryScores {
    let auc = bootstrap(scores.len(), rng, auc(scores, positives), |sample| {
        let s: Vec<f32> = sample.iter().map(|&i| scores[i]).collect();
        let p: Vec<bool> = sample.iter().map(|&i| positives[i]).collect();
        auc(&s, &p)
    });
    let recall_at_fpr = FPR_POINTS
        .iter()
        .map(|&fpr| {
            let threshold = threshold_at_fpr(scores, positives, fpr);
            let (hits, total) = scores
                .iter()
                .zip(positives)
                .filter(|(_, p)| **p)
                .fold((0, 0), |(h, n), (s, _)| {
                    (h + usize::from(*s >= threshold), n + 1)
                });
            RecallAtFpr {
                fpr,
                recall: wilson(hits, total),
                threshold,
            }
        })
        .collect();
    BinaryScores {
        positive: positive.to_owned(),
        auc,
        recall_at_fpr,
    }
}

/// Probability that a random positive scores above a random negative (ties count half).
pub fn auc(scores: &[f32], positives: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mid-ranks over ties, then the Mann-Whitney U statistic.
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    let n_pos = positives.iter().filter(|p| **p).count() as f64;
    let n_neg = positives.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return 0.5;
    }
    let rank_sum: f64 = ranks
        .iter()
        .zip(positives)
        .filter(|(_, p)| **p)
        .map(|(r, _)| r)
        .sum();
    (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// The lowest threshold whose false-positive rate (negatives scoring at or above it) stays
/// within `fpr`.
pub fn threshold_at_fpr(scores: &[f32], positives: &[bool], fpr: f64) -> f32 {
    let mut negatives: Vec<f32> = scores
        .iter()
        .zip(positives)
        .filter(|(_, p)| !**p)
        .map(|(s, _)| *s)
        .collect();
    negatives.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * negatives.len() as f64).floor() as usize;
    match negatives.get(allowed) {
        // Just above the highest negative that must not be flagged.
        Some(&s) => next_up(s),
        None => 0.0,
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    f32::from_bits(if x >= 0.0 { bits + 1 } else { bits - 1 })
}

/// The temperature that makes softmax(logits / T) best calibrated on `targets` (least
/// negative log-likelihood over a log-spaced grid from 0.05 to 20).
pub fn fit_temperature(logits: &[Vec<f32>], targets: &[usize]) -> f32 {
    let nll = |t: f64| -> f64 {
        logits
            .iter()
            .zip(targets)
            .map(|(row, &y)| {
                let scaled: Vec<f64> = row.iter().map(|&v| f64::from(v) / t).collect();
                let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let log_sum = scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + max;
                log_sum - scaled[y]
            })
            .sum()
    };
    let grid = (0..=240).map(|i| 0.05 * 400f64.powf(f64::from(i) / 240.0));
    grid.map(|t| (t, nll(t)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(1.0, |(t, _)| t as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scores_and_confusion_of_a_known_case() {
        let probabilities = vec![
            vec![0.9, 0.1],
            vec![0.8, 0.2],
            vec![0.3, 0.7],
            vec![0.6, 0.4],
        ];
        let e = Evaluation::new(&labels(&["a", "b"]), &probabilities, &[0, 0, 1, 1], Some(1));
        assert_eq!(e.confusion, [[2, 0], [1, 1]]);
        assert_eq!(e.accuracy.value, 0.75);
        assert!(e.accuracy.low < 0.75 && e.accuracy.high > 0.75);
        assert!((e.classes[0].precision - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(e.classes[1].recall, 0.5);
        let b = e.binary.unwrap();
        assert_eq!(b.auc.value, 1.0, "every positive outscores every negative");
        assert_eq!(b.recall_at_fpr[0].recall.value, 1.0);
        assert!(b.recall_at_fpr[0].threshold > 0.2 && b.recall_at_fpr[0].threshold <= 0.4);
    }

    #[test]
    fn auc_counts_ties_half_and_reverses() {
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert_eq!(auc(&[0.1, 0.9], &[true, false]), 0.0);
        assert_eq!(
            auc(&[0.1, 0.2, 0.3, 0.4], &[false, true, false, true]),
            0.75
        );
    }

    #[test]
    fn the_threshold_keeps_false_positives_within_the_rate() {
        let scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let positives = vec![false; 100];
        let t = threshold_at_fpr(&scores, &positives, 0.05);
        let flagged = scores.iter().filter(|&&s| s >= t).count();
        assert_eq!(flagged, 5);
    }

    #[test]
    fn temperature_softens_overconfident_logits() {
        // Right only half the time, yet very sure: a temperature well above 1 fits.
        let logits = vec![
            vec![8.0, 0.0],
            vec![8.0, 0.0],
            vec![0.0, 8.0],
            vec![0.0, 8.0],
        ];
        let t = fit_temperature(&logits, &[0, 1, 1, 0]);
        assert!(t > 5.0, "{t}");
        let sure = fit_temperature(&logits, &[0, 0, 1, 1]);
        assert!(sure < 1.0, "{sure}");
    }

    #[test]
    fn calibration_error_is_zero_when_confidence_matches_accuracy() {
        let p = vec![vec![0.5, 0.5]; 4];
        assert!(calibration_error(&p, &[0, 1, 0, 1]) < 1e-9);
        let sure = vec![vec![1.0, 0.0]; 2];
        assert!((calibration_error(&sure, &[1, 1]) - 1.0).abs() < 1e-9);
    }
}
