//! `semantic-router distill`: turn an encoder into the static tier's token vectors.

use std::path::PathBuf;
use std::time::Instant;

use super::encoder::{Encoder, EncoderOptions, Precision};
use super::heads_cli::HeadsError;
use super::hub::{HubOptions, ModelSource};
use super::static_model::{DistillOptions, StaticModel};

/// `semantic-router distill`.
#[derive(clap::Args, Debug, Clone)]
pub struct DistillArgs {
    /// Encoder to distill: a directory or a Hugging Face model id, as `train --encoder`.
    #[arg(long, value_name = "DIR|HUB_ID")]
    pub encoder: ModelSource,
    /// Folder the static model is written to: static.safetensors, tokenizer.json, static.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Dimensions kept (principal components of the token vectors).
    #[arg(long, default_value_t = 256)]
    pub dims: usize,
    /// Tokens per encoder pass.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Smooth-inverse-frequency coefficient (smaller: common tokens count less).
    #[arg(long, default_value_t = 1e-4)]
    pub sif_coefficient: f64,
    /// Token budget of a text read by the static tier (its head and tail are kept beyond it).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl DistillArgs {
    /// Distills the encoder, writes the model and returns a summary.
    pub fn run(&self) -> Result<String, HeadsError> {
        let dir = self.encoder.resolve(&HubOptions::from_env())?;
        // Distilled once, offline: from the checkpoint's exact arithmetic.
        let encoder = Encoder::load(
            &dir,
            &EncoderOptions {
                precision: Precision::F32,
                ..EncoderOptions::default()
            },
        )?;
        let started = Instant::now();
        let model = StaticModel::distill(
            &encoder,
            &DistillOptions {
                dims: self.dims,
                batch: self.batch,
                sif_coefficient: self.sif_coefficient,
                max_tokens: self.max_tokens,
                progress: !self.quiet,
            },
        )?;
        model.save(&self.out)?;
        let info = model.info();
        Ok(format!(
            "wrote {}: {} tokens × {} dims from {} (id {}) in {:.1} s",
            self.out.display(),
            info.vocab,
            info.dims,
            info.source,
            info.id,
            started.elapsed().as_secs_f64()
        ))
    }
}
