//! One head's answer for one text: each label's probability, most probable first. The labels
//! are shared with the head, so an answer copies no label text.

use std::sync::Arc;

/// Every label of a head with its probability, most probable first (ties keep label order).
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking {
    labels: Arc<[String]>,
    /// Label index and probability, most probable first.
    order: Vec<(usize, f32)>,
}

impl Ranking {
    /// `labels` paired with `probabilities` (in label order) and ranked.
    pub fn new(labels: Arc<[String]>, probabilities: &[f32]) -> Self {
        let mut order: Vec<(usize, f32)> = probabilities
            .iter()
            .copied()
            .enumerate()
            .take(labels.len())
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        Self { labels, order }
    }

    /// The most probable label and its probability.
    pub fn top(&self) -> Option<(&str, f32)> {
        self.iter().next()
    }

    /// Every label with its probability, most probable first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f32)> {
        self.order
            .iter()
            .map(|&(i, p)| (self.labels[i].as_str(), p))
    }

    /// The probability of `label`, if the head has it.
    pub fn probability(&self, label: &str) -> Option<f32> {
        self.iter().find(|(l, _)| *l == label).map(|(_, p)| p)
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the head has no labels.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_probable_first_and_ties_keep_label_order() {
        let labels: Arc<[String]> = ["a", "b", "c"].map(String::from).into();
        let ranking = Ranking::new(labels, &[0.25, 0.5, 0.25]);
        assert_eq!(
            ranking.iter().collect::<Vec<_>>(),
            [("b", 0.5), ("a", 0.25), ("c", 0.25)]
        );
        assert_eq!(ranking.top(), Some(("b", 0.5)));
        assert_eq!(ranking.probability("c"), Some(0.25));
        assert_eq!(ranking.probability("z"), None);
        assert_eq!(ranking.len(), 3);
    }
}
