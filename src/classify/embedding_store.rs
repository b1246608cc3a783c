//! Embeddings kept on disk, keyed by encoder and text, so training and evaluating a head a
//! second time never runs the encoder on a text it has seen.
//!
//! One folder per encoder (named by a digest of its config, tokenizer, weight files and token
//! budget) holds `embeddings.bin`: records of a 32-byte SHA-256 of the text followed by the
//! embedding as little-endian `f32`s. Records are only ever appended, a whole batch in one
//! `write` to a file opened for appending, so runs sharing a store do not interleave. On
//! opening, the file is cut at the first record that is torn (a run stopped mid-write) or is
//! not a unit vector (the encoder's embeddings are L2-normalised), so a damaged store is
//! repaired rather than read wrong.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::encoder::{Encoder, Precision};
use super::error::{ClassifyError, Result};

/// Texts encoded per forward pass while filling the store.
const BATCH: usize = 32;

type TextKey = [u8; 32];

/// The on-disk embeddings of one encoder.
pub struct EmbeddingStore {
    path: PathBuf,
    dim: usize,
    known: HashMap<TextKey, Arc<[f32]>>,
}

impl EmbeddingStore {
    /// The store for `encoder` under `root` (created when missing).
    pub fn open(root: &Path, encoder: &Encoder) -> Result<Self> {
        let dir = root.join(encoder_key(encoder)?);
        std::fs::create_dir_all(&dir).map_err(|e| ClassifyError::io(&dir, e))?;
        let path = dir.join("embeddings.bin");
        let dim = encoder.dimension();
        let mut known = HashMap::new();
        let record_len = 32 + 4 * dim;
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut good = 0;
                for record in bytes.chunks_exact(record_len) {
                    let (key, values) = record.split_at(32);
                    let embedding: Arc<[f32]> = values
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
                    if !(0.99..=1.01).contains(&norm) {
                        break;
                    }
                    known.insert(key.try_into().unwrap_or([0; 32]), embedding);
                    good += record_len;
                }
                if good != bytes.len() {
                    tracing::warn!(
                        path = %path.display(),
                        kept = known.len(),
                        dropped_bytes = bytes.len() - good,
                        "embedding store damaged after its last sound record; cutting it there"
                    );
                    // Later records must start on a record boundary.
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(good as u64))
                        .map_err(|e| ClassifyError::io(&path, e))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClassifyError::io(&path, e)),
        }
        Ok(Self { path, dim, known })
    }

    /// Embeddings kept so far.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether nothing is kept yet.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// The embedding of every text, in order: from the store, or encoded (in batches, with a
    /// progress bar on stderr when `progress`) and appended to it.
    pub fn embed_all(
        &mut self,
        encoder: &Encoder,
        texts: &[&str],
        progress: bool,
    ) -> Result<Vec<Arc<[f32]>>> {
        let keys: Vec<TextKey> = texts.iter().map(|t| text_key(t)).collect();
        let mut missing: Vec<(TextKey, &str)> = Vec::new();
        let mut queued = std::collections::HashSet::new();
        for (key, text) in keys.iter().zip(texts) {
            if !self.known.contains_key(key) && queued.insert(*key) {
                missing.push((*key, text));
            }
        }
        if !missing.is_empty() {
            self.encode_missing(encoder, &mut missing, progress)?;
        }
        keys.iter()
            .map(|k| {
                self.known.get(k).cloned().ok_or_else(|| {
                    ClassifyError::Config("an embedding went missing from the store".into())
                })
            })
            .collect()
    }

    fn encode_missing(
        &mut self,
        encoder: &Encoder,
        missing: &mut [(TextKey, &str)],
        progress: bool,
    ) -> Result<()> {
        // Similar lengths in one batch pad less.
        missing.sort_by_key(|(_, t)| t.len());
        let bar = progress_bar(progress, missing.len(), "embedding", "texts");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| ClassifyError::io(&self.path, e))?;
        for batch in missing.chunks(BATCH) {
            let texts: Vec<&str> = batch.iter().map(|(_, t)| *t).collect();
            let encoded = encoder.encode(&texts)?;
            let mut records = Vec::with_capacity(batch.len() * (32 + 4 * self.dim));
            for ((key, _), output) in batch.iter().zip(encoded) {
                self.record(&mut records, key, &output.embedding)?;
                self.known.insert(*key, output.embedding);
            }
            file.write_all(&records)
                .map_err(|e| ClassifyError::io(&self.path, e))?;
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }

    fn record(&self, out: &mut Vec<u8>, key: &TextKey, embedding: &[f32]) -> Result<()> {
        if embedding.len() != self.dim {
            return Err(ClassifyError::Config(format!(
                "the encoder gave {} values, its dimension is {}",
                embedding.len(),
                self.dim
            )));
        }
        out.extend_from_slice(key);
        for v in embedding {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }
}

fn text_key(text: &str) -> TextKey {
    Sha256::digest(text.as_bytes()).into()
}

/// A progress bar over `len` items (hidden unless `show`): `{verb} [bar] n/len {unit}`.
pub(crate) fn progress_bar(show: bool, len: usize, verb: &str, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{verb} {{bar:30}} {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}

/// A digest of what decides an encoder's embeddings: its config and tokenizer, the names
/// and sizes of its weight files, its token budget and dimension.
pub(crate) fn encoder_key(encoder: &Encoder) -> Result<String> {
    let dir = encoder.dir();
    let mut hash = Sha256::new();
    for name in ["config.json", "tokenizer.json"] {
        let path = dir.join(name);
        hash.update(std::fs::read(&path).map_err(|e| ClassifyError::io(&path, e))?);
    }
    let mut weights: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map_err(|e| ClassifyError::io(dir, e))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().to_string_lossy().into_owned();
            name.ends_with(".safetensors")
                .then(|| Some((name, entry.metadata().ok()?.len())))
                .flatten()
        })
        .collect();
    weights.sort();
    for (name, size) in weights {
        hash.update(name.as_bytes());
        hash.update(size.to_le_bytes());
    }
    hash.update((encoder.max_tokens() as u64).to_le_bytes());
    // How a long text is cut (keeping head and tail) decides its embedding too.
    hash.update(b"head-and-tail truncation");
    hash.update((encoder.dimension() as u64).to_le_bytes());
    // int8 embeddings differ from f32 ones; an f32 key stays as it was.
    if encoder.precision() == Precision::Int8 {
        hash.update(b"int8");
    }
    let digest = hash.finalize();
    Ok(digest[..12].iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Architecture, EncoderOptions};

    #[test]
    fn a_second_run_reads_the_store_and_a_torn_record_is_ignored() {
        let model = tempfile::tempdir().unwrap();
        crate::classify::tiny::write_model(model.path(), Architecture::Bert, None).unwrap();
        let encoder = Encoder::load(model.path(), &EncoderOptions::default()).unwrap();
        let root = tempfile::tempdir().unwrap();
        let texts = ["alpha", "beta", "alpha"];
        let mut store = EmbeddingStore::open(root.path(), &encoder).unwrap();
        let first = store.embed_all(&encoder, &texts, false).unwrap();
        assert_eq!(store.len(), 2, "a repeated text is encoded once");
        assert_eq!(first[0], first[2]);

        let path = store.path.clone();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, bytes).unwrap();
        let mut again = EmbeddingStore::open(root.path(), &encoder).unwrap();
        assert_eq!(again.len(), 2);
        let second = again.embed_all(&encoder, &texts[..2], false).unwrap();
        assert_eq!(second, first[..2]);
        again.embed_all(&encoder, &["gamma"], false).unwrap();
        let reopened = EmbeddingStore::open(root.path(), &encoder).unwrap();
        assert_eq!(reopened.len(), 3, "records after the torn one line up");

        // A record that is not a unit vector (interleaved writes, a bad disk) ends the store.
        let mut bytes = std::fs::read(&path).unwrap();
        let record_len = 32 + 4 * encoder.dimension();
        bytes[record_len + 32..record_len + 36].copy_from_slice(&9.0f32.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let repaired = EmbeddingStore::open(root.path(), &encoder).unwrap();
        assert_eq!(repaired.len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), record_len as u64);
    }
}
