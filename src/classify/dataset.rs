//! Labelled text for training and evaluating heads: JSONL lines `{"text": …, "label": …}`,
//! read with errors that name the file and line, and split by label.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

/// Why labelled data cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a `{"text": string, "label": string}` object.
    #[error(
        "{path}:{line}: {problem}; each line must be {{\"text\": \"...\", \"label\": \"...\"}}"
    )]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// The file holds no examples.
    #[error("{path} holds no labelled examples")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// An example's label is not one the head knows.
    #[error("{path}:{line}: label {label:?} is not one of {known:?}")]
    UnknownLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The label.
        label: String,
        /// The labels there are.
        known: Vec<String>,
    },
    /// A label has no examples in the training data.
    #[error("label {label:?} has no examples in the training data")]
    NoExamples {
        /// The label.
        label: String,
    },
    /// Fewer than two labels: nothing to classify.
    #[error("{path} has a single label ({label:?}); a head needs at least two")]
    OneLabel {
        /// The file.
        path: PathBuf,
        /// The only label.
        label: String,
    },
}

/// One labelled example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The text.
    pub text: String,
    /// The label's index in the dataset's label list.
    pub label: usize,
    /// 1-based line in the file it came from.
    pub line: usize,
}

/// Labelled examples and their label names (sorted).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Label names; an example's `label` indexes this.
    pub labels: Vec<String>,
    /// The examples in file order.
    pub examples: Vec<Example>,
}

#[derive(Deserialize)]
struct Line {
    text: String,
    label: String,
}

/// `(line number, text, label)` of every non-blank line of `path`.
fn read_lines(path: &Path) -> Result<Vec<(usize, String, String)>, DatasetError> {
    let content = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, raw) in content.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|e| DatasetError::Line {
            path: path.to_owned(),
            line: i + 1,
            problem: e.to_string(),
        })?;
        out.push((i + 1, line.text, line.label));
    }
    if out.is_empty() {
        return Err(DatasetError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

impl Dataset {
    /// Reads `path`; its labels are those it holds, sorted.
    pub fn read(path: &Path) -> Result<Self, DatasetError> {
        let lines = read_lines(path)?;
        let mut labels: Vec<String> = lines.iter().map(|(_, _, l)| l.clone()).collect();
        labels.sort();
        labels.dedup();
        if let [only] = labels.as_slice() {
            return Err(DatasetError::OneLabel {
                path: path.to_owned(),
                label: only.clone(),
            });
        }
        Self::with_labels(path, lines, labels)
    }

    /// Reads `path` against a head's `labels`: every example must carry one of them.
    pub fn read_for(path: &Path, labels: &[String]) -> Result<Self, DatasetError> {
        Self::with_labels(path, read_lines(path)?, labels.to_vec())
    }

    fn with_labels(
        path: &Path,
        lines: Vec<(usize, String, String)>,
        labels: Vec<String>,
    ) -> Result<Self, DatasetError> {
        let index: BTreeMap<&str, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let mut examples = Vec::with_capacity(lines.len());
        for (line, text, label) in lines {
            let Some(&label_index) = index.get(label.as_str()) else {
                return Err(DatasetError::UnknownLabel {
                    path: path.to_owned(),
                    line,
                    label,
                    known: labels.clone(),
                });
            };
            examples.push(Example {
                text,
                label: label_index,
                line,
            });
        }
        Ok(Self { labels, examples })
    }

    /// Examples per label, in label order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for e in &self.examples {
            counts[e.label] += 1;
        }
        counts
    }

    /// Fails when a label has no example (a head cannot learn it).
    pub fn require_every_label(&self) -> Result<(), DatasetError> {
        match self.counts().iter().position(|&c| c == 0) {
            Some(i) => Err(DatasetError::NoExamples {
                label: self.labels[i].clone(),
            }),
            None => Ok(()),
        }
    }

    /// Splits off `share` of each label's examples (at least one when a label has two or
    /// more) as validation, chosen by `seed`: `(train, validation)`.
    pub fn stratified_split(&self, share: f64, seed: u64) -> (Dataset, Dataset) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut train = Vec::new();
        let mut validation = Vec::new();
        for label in 0..self.labels.len() {
            let mut of_label: Vec<&Example> =
                self.examples.iter().filter(|e| e.label == label).collect();
            of_label.shuffle(&mut rng);
            let held = if of_label.len() < 2 {
                0
            } else {
                ((of_label.len() as f64 * share).round() as usize).clamp(1, of_label.len() - 1)
            };
            validation.extend(of_label[..held].iter().map(|e| (*e).clone()));
            train.extend(of_label[held..].iter().map(|e| (*e).clone()));
        }
        train.sort_by_key(|e| e.line);
        validation.sort_by_key(|e| e.line);
        let part = |examples| Dataset {
            labels: self.labels.clone(),
            examples,
        };
        (part(train), part(validation))
    }

    /// The texts, in example order.
    pub fn texts(&self) -> Vec<&str> {
        self.examples.iter().map(|e| e.text.as_str()).collect()
    }

    /// The label indices, in example order.
    pub fn targets(&self) -> Vec<usize> {
        self.examples.iter().map(|e| e.label).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        f
    }

    #[test]
    fn reads_lines_and_sorts_labels() {
        let f =
            file("{\"text\": \"a\", \"label\": \"yes\"}\n\n{\"text\": \"b\", \"label\": \"no\"}\n");
        let d = Dataset::read(f.path()).unwrap();
        assert_eq!(d.labels, ["no", "yes"]);
        assert_eq!(d.targets(), [1, 0]);
        assert_eq!(d.examples[1].line, 3);
    }

    #[test]
    fn bad_lines_are_named() {
        let f = file("{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": 3, \"label\": \"y\"}\n");
        let e = Dataset::read(f.path()).unwrap_err().to_string();
        assert!(e.contains(":2: invalid type"), "{e}");
        let f = file("{\"text\": \"a\"}\n");
        assert!(
            Dataset::read(f.path())
                .unwrap_err()
                .to_string()
                .contains(":1: missing field `label`")
        );
        let f = file("not json\n");
        assert!(matches!(
            Dataset::read(f.path()),
            Err(DatasetError::Line { line: 1, .. })
        ));
        let f = file("\n\n");
        assert!(matches!(
            Dataset::read(f.path()),
            Err(DatasetError::Empty { .. })
        ));
        let f = file("{\"text\": \"a\", \"label\": \"x\"}\n");
        assert!(matches!(
            Dataset::read(f.path()),
            Err(DatasetError::OneLabel { .. })
        ));
    }

    #[test]
    fn labels_a_head_does_not_know_are_refused() {
        let f = file("{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"z\"}\n");
        let known = vec!["x".to_owned(), "y".to_owned()];
        let e = Dataset::read_for(f.path(), &known).unwrap_err();
        assert!(
            matches!(e, DatasetError::UnknownLabel { line: 2, .. }),
            "{e}"
        );
        let f = file("{\"text\": \"a\", \"label\": \"x\"}\n");
        let d = Dataset::read_for(f.path(), &known).unwrap();
        assert!(matches!(
            d.require_every_label(),
            Err(DatasetError::NoExamples { label }) if label == "y"
        ));
    }

    #[test]
    fn the_split_keeps_every_label_on_both_sides_and_follows_the_seed() {
        let mut lines = String::new();
        for i in 0..40 {
            let label = if i % 4 == 0 { "rare" } else { "common" };
            lines.push_str(&format!("{{\"text\": \"t{i}\", \"label\": \"{label}\"}}\n"));
        }
        let f = file(&lines);
        let d = Dataset::read(f.path()).unwrap();
        let (train, validation) = d.stratified_split(0.2, 7);
        assert_eq!(validation.counts(), [6, 2]);
        assert_eq!(train.counts(), [24, 8]);
        assert_eq!(d.stratified_split(0.2, 7), (train, validation.clone()));
        assert_ne!(d.stratified_split(0.2, 8).1, validation);
    }
}
