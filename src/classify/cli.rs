//! `semantic-router classify`: load a model (and heads) from disk, run one text, and print what
//! the router would see. A debugging aid for model and head folders; no service, no queue.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::encoder::{Encoder, EncoderOptions};
use super::error::Result;
use super::head::Head;
use super::ranking::Ranking;

/// Loads the encoder in `model_dir` and the heads in `head_dirs`, classifies `text`, and
/// returns a printable report: model, tokens used, embedding dimension and norm, every head's
/// labels with probabilities, and the load and inference times.
pub fn classify_report(
    model_dir: &Path,
    head_dirs: &[PathBuf],
    text: &str,
    max_tokens: usize,
) -> Result<String> {
    let started = Instant::now();
    let options = EncoderOptions {
        max_tokens,
        ..EncoderOptions::default()
    };
    let encoder = Encoder::load(model_dir, &options)?;
    let heads = head_dirs
        .iter()
        .map(|dir| Head::load(dir))
        .collect::<Result<Vec<_>>>()?;
    let loaded = started.elapsed();

    let started = Instant::now();
    let tokens = encoder.tokenize(text)?;
    let tokenized = started.elapsed();
    let started = Instant::now();
    let output = encoder
        .encode_tokens(std::slice::from_ref(&tokens))?
        .pop()
        .ok_or_else(|| super::ClassifyError::Tokenize("no output for the text".into()))?;
    let mut results = Vec::new();
    if let (Some((name, labels)), Some(p)) =
        (encoder.checkpoint_head(), &output.class_probabilities)
    {
        results.push((
            format!("{name} (checkpoint)"),
            Ranking::new(labels.into(), p),
        ));
    }
    for head in &heads {
        results.push((head.name().to_string(), head.classify(&output.embedding)?));
    }
    let inferred = started.elapsed();

    let norm = output.embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model:      {} ({}, device {:?})",
        model_dir.display(),
        encoder.architecture(),
        encoder.device()
    );
    let _ = writeln!(
        out,
        "tokens:     {} of max {}{}",
        output.tokens,
        encoder.max_tokens(),
        if output.truncated {
            " (truncated: its start and end were kept)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "embedding:  dimension {}, norm {norm:.6}",
        output.embedding.len()
    );
    for (name, ranked) in &results {
        let _ = writeln!(out, "head {name}:");
        for (label, p) in ranked.iter() {
            let _ = writeln!(out, "  {label:<24} {p:.4}");
        }
    }
    let _ = writeln!(
        out,
        "latency:    load {:.1} ms, tokenize {:.3} ms, inference {:.1} ms",
        loaded.as_secs_f64() * 1e3,
        tokenized.as_secs_f64() * 1e3,
        inferred.as_secs_f64() * 1e3
    );
    Ok(out)
}
