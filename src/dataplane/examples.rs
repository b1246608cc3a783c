//! Embeddings of the routing table's example prompts: embedded once when a table names them,
//! and kept per example set as one matrix, so a request scores a set with one lookup by its
//! digest and a scan of contiguous rows.
//!
//! With a static tier, each set also keeps the prompts' static embeddings and how similar
//! each prompt is to its nearest neighbour in the set in both spaces. A request whose static
//! similarity to the set falls clearly below that of any two prompts the encoder finds similar
//! enough is taken not to match, without the encoder ([`ExampleIndex::surely_below`]): the
//! static tier answers "no" for a set, never "yes".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::cache::dot;
use crate::classify::{ClassifierService, ClassifyError, StaticModel};
use crate::routing::{ExamplePrompts, RoutingTable, SignalKind};

/// One example set's embeddings, row after row.
struct Matrix {
    dims: usize,
    rows: Vec<f32>,
}

impl Matrix {
    /// The rows of `rows`, which share one width.
    fn from_rows<R: AsRef<[f32]>>(rows: &[R]) -> Self {
        Self {
            dims: rows.first().map_or(0, |r| r.as_ref().len()),
            rows: rows
                .iter()
                .flat_map(|r| r.as_ref().iter().copied())
                .collect(),
        }
    }

    /// Row `i`.
    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dims..(i + 1) * self.dims]
    }

    /// Highest cosine similarity of the unit vector `embedding` to a row.
    fn best(&self, embedding: &[f32]) -> Option<f32> {
        if self.dims == 0 || embedding.len() != self.dims {
            return None;
        }
        self.rows
            .chunks_exact(self.dims)
            .map(|row| dot(row, embedding))
            .reduce(f32::max)
    }
}

/// How far below the least static similarity of two prompts that match each other a request's
/// must fall to be taken as no match. Static similarities run higher than the encoder's
/// (unrelated prompts score 0.5–0.6 against the sample's math examples); on the realistic sets
/// the lowest static similarity of a prompt the encoder matched was 0.06 above the bound.
const STATIC_MARGIN: f32 = 0.1;

/// One example set: its encoder embeddings, and its static view when there is a static tier.
struct ExampleSet {
    encoder: Matrix,
    statics: Option<StaticView>,
}

/// A set as the static tier sees it.
struct StaticView {
    matrix: Matrix,
    /// For each prompt, its best similarity to another prompt of the set: (static, encoder).
    neighbours: Vec<(f32, f32)>,
}

impl StaticView {
    /// The view of the prompts `texts`, whose encoder embeddings are `encoder`'s rows.
    fn new(model: &StaticModel, texts: &[String], encoder: &Matrix) -> Option<Self> {
        let rows: Vec<Arc<[f32]>> = texts
            .iter()
            .map(|t| model.embed(t).map(|o| o.embedding))
            .collect::<Result<_, _>>()
            .ok()?;
        let matrix = Matrix::from_rows(&rows);
        let nearest = |m: &Matrix, i: usize| {
            (0..texts.len())
                .filter(|&j| j != i)
                .map(|j| dot(m.row(i), m.row(j)))
                .reduce(f32::max)
        };
        let neighbours = (0..texts.len())
            .filter_map(|i| Some((nearest(&matrix, i)?, nearest(encoder, i)?)))
            .collect();
        Some(Self { matrix, neighbours })
    }

    /// The static similarity under which a request is taken not to reach `threshold` in the
    /// encoder's space: the least static similarity of two prompts that reach it, less
    /// [`STATIC_MARGIN`]; `None` (never sure) when no two prompts reach it.
    fn floor(&self, threshold: f32) -> Option<f32> {
        self.neighbours
            .iter()
            .filter(|(_, encoder)| *encoder >= threshold)
            .map(|(stat, _)| *stat)
            .reduce(f32::min)
            .map(|least| least - STATIC_MARGIN)
    }
}

/// The example prompts' embeddings the live table needs.
#[derive(Default)]
pub(super) struct ExampleIndex {
    /// Each embedded prompt by text, so an unchanged prompt is never embedded again; only
    /// indexing reads it.
    texts: Mutex<HashMap<String, Arc<[f32]>>>,
    /// Each fully embedded set by digest: what requests read.
    sets: RwLock<HashMap<u64, ExampleSet>>,
}

impl ExampleIndex {
    /// Highest cosine similarity of `embedding` to the set's prompts; `None` until every
    /// prompt of the set is embedded.
    pub(super) fn best(&self, set: &ExamplePrompts, embedding: &[f32]) -> Option<f32> {
        self.sets
            .read()
            .ok()?
            .get(&set.digest())?
            .encoder
            .best(embedding)
    }

    /// Whether a request with the static embedding `embedding` surely does not reach
    /// `threshold` against the set: its static similarity is under the set's floor for it.
    pub(super) fn surely_below(
        &self,
        set: &ExamplePrompts,
        threshold: f32,
        embedding: &[f32],
    ) -> bool {
        let Ok(sets) = self.sets.read() else {
            return false;
        };
        let Some(view) = sets.get(&set.digest()).and_then(|s| s.statics.as_ref()) else {
            return false;
        };
        match (view.floor(threshold), view.matrix.best(embedding)) {
            (Some(floor), Some(best)) => best < floor,
            _ => false,
        }
    }

    /// Embeds every example prompt `table` names that is not embedded yet, builds the sets'
    /// matrices, and forgets prompts and sets the table no longer names.
    pub(super) async fn index(&self, service: &ClassifierService, table: &RoutingTable) {
        let wanted: BTreeMap<u64, &ExamplePrompts> = table
            .routes
            .iter()
            .flat_map(|r| r.signals.iter())
            .filter_map(|s| match &s.kind {
                SignalKind::Examples { prompts, .. } => Some((prompts.digest(), prompts)),
                _ => None,
            })
            .collect();
        let mut missing: Vec<&String> = {
            let Ok(mut texts) = self.texts.lock() else {
                return;
            };
            let named: HashSet<&str> = wanted
                .values()
                .flat_map(|set| set.prompts())
                .map(String::as_str)
                .collect();
            texts.retain(|text, _| named.contains(text.as_str()));
            wanted
                .values()
                .flat_map(|set| set.prompts())
                .filter(|p| !texts.contains_key(*p))
                .collect()
        };
        missing.sort();
        missing.dedup();
        for prompt in missing {
            match embed_when_free(service, prompt).await {
                Ok(embedding) => {
                    if let Ok(mut texts) = self.texts.lock() {
                        texts.insert(prompt.clone(), embedding);
                    }
                }
                Err(e) => tracing::warn!("cannot embed example prompt {prompt:?}: {e}"),
            }
        }
        let Ok(built) = self.sets.read().map(|sets| {
            wanted
                .iter()
                .filter(|(digest, _)| !sets.contains_key(*digest))
                .map(|(digest, set)| (*digest, *set))
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        // New sets are built before the write lock, so requests reading the others never wait
        // on the static tier's embeddings.
        let Ok(texts) = self.texts.lock() else {
            return;
        };
        let built: Vec<(u64, ExampleSet)> = built
            .into_iter()
            .filter_map(|(digest, set)| {
                let rows: Option<Vec<&Arc<[f32]>>> =
                    set.prompts().iter().map(|p| texts.get(p)).collect();
                let encoder = Matrix::from_rows(&rows?);
                let statics = service
                    .static_model()
                    .and_then(|model| StaticView::new(model, set.prompts(), &encoder));
                Some((digest, ExampleSet { encoder, statics }))
            })
            .collect();
        let Ok(mut sets) = self.sets.write() else {
            return;
        };
        sets.retain(|digest, _| wanted.contains_key(digest));
        sets.extend(built);
        tracing::info!(
            sets = wanted.len(),
            prompts = texts.len(),
            "example prompts embedded"
        );
    }
}

/// The embedding of `prompt`, waiting out a full queue or a passed deadline: requests come
/// first and are shed under load, but an example left out would leave its whole set unscored
/// until the next table.
async fn embed_when_free(
    service: &ClassifierService,
    prompt: &str,
) -> Result<Arc<[f32]>, ClassifyError> {
    let mut pause = Duration::from_millis(10);
    loop {
        match service.embed(prompt).await {
            Err(e) if e.is_shed() => {
                tracing::debug!("example prompt {prompt:?} waits for the encoder: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            embedded => return embedded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_floor_sits_below_the_least_static_similarity_of_prompts_that_match() {
        let view = StaticView {
            matrix: Matrix {
                dims: 2,
                rows: vec![1.0, 0.0, 0.6, 0.8],
            },
            neighbours: vec![(0.7, 0.45), (0.62, 0.31), (0.9, 0.2)],
        };
        assert_eq!(view.floor(0.3), Some(0.62 - STATIC_MARGIN));
        assert_eq!(view.floor(0.4), Some(0.7 - STATIC_MARGIN));
        // No two prompts are that similar in the encoder's space: never sure.
        assert_eq!(view.floor(0.5), None);
    }

    #[test]
    fn a_matrix_scores_its_best_row_and_refuses_another_width() {
        let matrix = Matrix {
            dims: 2,
            rows: vec![1.0, 0.0, 0.6, 0.8],
        };
        assert_eq!(matrix.best(&[0.0, 1.0]), Some(0.8));
        assert_eq!(matrix.best(&[1.0, 0.0]), Some(1.0));
        assert_eq!(matrix.best(&[1.0, 0.0, 0.0]), None);
    }
}
