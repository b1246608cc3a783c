//! The cascade between the tiers: the static tier answers when its head is sure enough (the
//! margin between its two most probable labels clears a threshold), otherwise the text goes to
//! the encoder. The threshold is chosen on validation data so that the cascade stays within a
//! tolerance of the encoder's own accuracy while deferring as little as it can.
//!
//! A caller that only needs to know how likely the label is one of a few (a route's category
//! signal) asks a [`HeadQuery`] with [`LabelGroup`]s: the static tier then answers when the
//! two-way split, in the group or not, clears the same margin. Most confusions are between
//! neighbouring labels of one group, so far fewer texts go on to the encoder.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{ClassifyError, Result};
use super::ranking::Ranking;
use super::static_model::read_json;

/// The file beside a static-tier head that says when it answers alone.
pub const CASCADE_FILE: &str = "cascade.json";

/// `cascade.json` beside a static-tier head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeConfig {
    /// [`StaticInfo::id`](super::static_model::StaticInfo::id) of the static model the head
    /// was trained on.
    pub static_model: String,
    /// The static head answers when its top-two probability margin is at least this; `None`
    /// (no encoder head to compare with when it was trained) means always defer.
    pub margin: Option<f32>,
    /// On validation: the encoder head's accuracy, the cascade's, and the share deferred.
    pub validation: Option<CascadeValidation>,
}

impl CascadeConfig {
    /// The `cascade.json` of the static head in `dir`, refused unless it was trained on the
    /// static model `static_id`.
    pub fn read(dir: &Path, static_id: &str) -> Result<Self> {
        let file = dir.join(CASCADE_FILE);
        let config: Self = read_json(&file)?;
        if config.static_model != static_id {
            return Err(ClassifyError::invalid(
                &file,
                format!(
                    "{} was trained on static model {}, not on {static_id}: train it again or \
                     pass the model it was made with",
                    dir.display(),
                    config.static_model
                ),
            ));
        }
        Ok(config)
    }
}

/// How the chosen threshold did on validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeValidation {
    /// Examples.
    pub examples: usize,
    /// The encoder head alone.
    pub encoder_accuracy: f64,
    /// The static head alone.
    pub static_accuracy: f64,
    /// The cascade at the chosen margin.
    pub cascade_accuracy: f64,
    /// Share of examples sent on to the encoder.
    pub deferred_share: f64,
}

/// The top-two margin of a probability vector (the top probability for a single label).
pub fn margin(probabilities: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::MIN, 0f32);
    for &p in probabilities {
        if p > first {
            second = first.max(0.0);
            first = p;
        } else if p > second {
            second = p;
        }
    }
    (first - second).max(0.0)
}

/// What a caller needs from one head. With no groups: its ranking, which the static tier gives
/// only when its top-two margin clears the head's threshold. With groups: only each group's
/// answer, which the static tier gives when every group is settled ([`LabelGroup::settled`]).
#[derive(Debug, Clone, Default)]
pub struct HeadQuery<'a> {
    /// The head's name.
    pub head: &'a str,
    /// The questions asked of it; empty asks for the whole ranking.
    pub groups: Vec<LabelGroup<'a>>,
}

impl<'a> HeadQuery<'a> {
    /// The whole ranking of `head`.
    pub fn ranking(head: &'a str) -> Self {
        Self {
            head,
            groups: Vec::new(),
        }
    }
}

/// "Is the label one of `labels`, with at least `threshold` together?" asked of one head.
#[derive(Debug, Clone, Copy)]
pub struct LabelGroup<'a> {
    /// The labels that make the answer yes.
    pub labels: &'a [String],
    /// The confidence the answer needs.
    pub threshold: f32,
}

impl LabelGroup<'_> {
    /// The probability that the label is one of the group's.
    pub fn mass(&self, ranking: &Ranking) -> f32 {
        self.labels
            .iter()
            .filter_map(|l| ranking.probability(l))
            .sum()
    }

    /// The answer a `ranking` gives: the group's mass reaches the threshold.
    pub fn holds(&self, ranking: &Ranking) -> bool {
        self.mass(ranking) >= self.threshold
    }

    /// Whether a static-tier `ranking` settles the question at `margin`: the two-way split
    /// (the group's mass against the rest) clears it, and on the same side of the threshold as
    /// of one half, so a mass between the two is never taken as sure.
    pub fn settled(&self, ranking: &Ranking, margin: f32) -> bool {
        let mass = self.mass(ranking);
        (2.0 * mass - 1.0).abs() >= margin && (mass >= 0.5) == (mass >= self.threshold)
    }
}

/// One validation example as both tiers saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// The static head's top-two margin.
    pub margin: f32,
    /// Whether the static head's top label is right.
    pub static_right: bool,
    /// Whether the encoder head's top label is right.
    pub encoder_right: bool,
}

/// The smallest margin, `floor` or above, whose cascade accuracy is at least the encoder's minus
/// `tolerance`, with how it did. Always succeeds: deferring everything is the encoder's
/// accuracy.
pub fn choose_margin(
    judged: &[Judged],
    tolerance: f64,
    floor: f32,
) -> (Option<f32>, CascadeValidation) {
    let n = judged.len();
    let count = |f: fn(&Judged) -> bool| judged.iter().filter(|j| f(j)).count();
    let encoder_right = count(|j| j.encoder_right);
    let static_right = count(|j| j.static_right);
    let share = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let target = share(encoder_right) - tolerance;
    let mut sorted: Vec<&Judged> = judged.iter().collect();
    sorted.sort_by(|a, b| b.margin.total_cmp(&a.margin));
    // Accepting the k surest: static answers those, the encoder the rest.
    let (mut best_k, mut best_right) = (0, encoder_right);
    let (mut static_k, mut encoder_k) = (0, 0);
    for k in 1..=n {
        let j = sorted[k - 1];
        static_k += usize::from(j.static_right);
        encoder_k += usize::from(j.encoder_right);
        // Only where the next margin is lower: ties are accepted together.
        let boundary = (k == n || sorted[k].margin < j.margin) && j.margin >= floor;
        let right = static_k + encoder_right - encoder_k;
        if boundary && share(right) >= target {
            (best_k, best_right) = (k, right);
        }
    }
    let margin = (best_k > 0).then(|| sorted[best_k - 1].margin);
    let validation = CascadeValidation {
        examples: n,
        encoder_accuracy: share(encoder_right),
        static_accuracy: share(static_right),
        cascade_accuracy: share(best_right),
        deferred_share: share(n - best_k),
    };
    (margin, validation)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn judged(margin: f32, static_right: bool, encoder_right: bool) -> Judged {
        Judged {
            margin,
            static_right,
            encoder_right,
        }
    }

    #[test]
    fn margin_is_the_gap_between_the_top_two() {
        assert!((margin(&[0.1, 0.7, 0.2]) - 0.5).abs() < 1e-6);
        assert!((margin(&[0.5, 0.5]) - 0.0).abs() < 1e-6);
        assert!((margin(&[0.9]) - 0.9).abs() < 1e-6);
    }

    #[test]
    fn the_threshold_defers_the_unsure_and_keeps_the_accuracy() {
        // Sure and right static answers at high margins; wrong ones below 0.5.
        let examples = [
            judged(0.9, true, true),
            judged(0.8, true, true),
            judged(0.7, true, false),
            judged(0.4, false, true),
            judged(0.3, false, true),
            judged(0.2, true, true),
        ];
        // Accepting down to 0.4 trades one static error for one static rescue: still as
        // accurate as the encoder alone, with a third deferred.
        let (margin, validation) = choose_margin(&examples, 0.0, 0.0);
        assert_eq!(margin, Some(0.4));
        assert!((validation.deferred_share - 2.0 / 6.0).abs() < 1e-9);
        assert!(validation.cascade_accuracy >= validation.encoder_accuracy);
        // A floor above the chosen margin wins.
        let (margin, validation) = choose_margin(&examples, 0.0, 0.75);
        assert_eq!(margin, Some(0.8));
        assert!((validation.deferred_share - 4.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn a_group_is_settled_by_its_mass_even_when_its_labels_split_it() {
        let labels: Arc<[String]> = ["math", "physics", "law"]
            .map(String::from)
            .into_iter()
            .collect();
        let stem = ["math".to_owned(), "physics".to_owned()];
        let group = LabelGroup {
            labels: &stem,
            threshold: 0.5,
        };
        // Unsure between math and physics, sure it is one of them.
        let split = Ranking::new(labels.clone(), &[0.48, 0.47, 0.05]);
        assert!(margin(&[0.48, 0.47, 0.05]) < 0.1);
        assert!(group.settled(&split, 0.8) && group.holds(&split));
        // Sure it is neither.
        let law = Ranking::new(labels.clone(), &[0.04, 0.03, 0.93]);
        assert!(group.settled(&law, 0.8) && !group.holds(&law));
        // Half and half: not settled.
        let unsure = Ranking::new(labels.clone(), &[0.3, 0.25, 0.45]);
        assert!(!group.settled(&unsure, 0.8));
        // A mass past one half but short of the threshold is never sure.
        let strict = LabelGroup {
            labels: &stem,
            threshold: 0.97,
        };
        assert!(!strict.settled(&split, 0.8));
        let sure = Ranking::new(labels, &[0.5, 0.48, 0.02]);
        assert!(strict.settled(&sure, 0.8) && strict.holds(&sure));
    }

    #[test]
    fn a_hopeless_static_head_defers_everything() {
        let examples = [judged(0.9, false, true), judged(0.8, false, true)];
        let (margin, validation) = choose_margin(&examples, 0.0, 0.0);
        assert_eq!(margin, None);
        assert_eq!(validation.deferred_share, 1.0);
        assert_eq!(validation.cascade_accuracy, 1.0);
    }
}
