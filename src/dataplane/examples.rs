//! Embeddings of the routing table's example prompts: embedded once when a table names them,
//! and kept per example set as one matrix, so a request scores a set with one lookup by its
//! digest and a scan of contiguous rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::cache::dot;
use crate::classify::{ClassifierService, ClassifyError};
use crate::routing::{ExamplePrompts, RoutingTable, SignalKind};

/// One example set's embeddings, row after row.
struct Matrix {
    dims: usize,
    rows: Vec<f32>,
}

impl Matrix {
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

/// The example prompts' embeddings the live table needs.
#[derive(Default)]
pub(super) struct ExampleIndex {
    /// Each embedded prompt by text, so an unchanged prompt is never embedded again; only
    /// indexing reads it.
    texts: Mutex<HashMap<String, Arc<[f32]>>>,
    /// Each fully embedded set by digest: what requests read.
    sets: RwLock<HashMap<u64, Matrix>>,
}

impl ExampleIndex {
    /// Highest cosine similarity of `embedding` to the set's prompts; `None` until every
    /// prompt of the set is embedded.
    pub(super) fn best(&self, set: &ExamplePrompts, embedding: &[f32]) -> Option<f32> {
        self.sets.read().ok()?.get(&set.digest())?.best(embedding)
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
        let (Ok(texts), Ok(mut sets)) = (self.texts.lock(), self.sets.write()) else {
            return;
        };
        sets.retain(|digest, _| wanted.contains_key(digest));
        for (digest, set) in &wanted {
            if sets.contains_key(digest) {
                continue;
            }
            let rows: Option<Vec<&Arc<[f32]>>> =
                set.prompts().iter().map(|p| texts.get(p)).collect();
            if let Some(rows) = rows {
                let dims = rows.first().map_or(0, |r| r.len());
                let rows = rows.iter().flat_map(|r| r.iter().copied()).collect();
                sets.insert(*digest, Matrix { dims, rows });
            }
        }
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
