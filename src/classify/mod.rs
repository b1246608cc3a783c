//! The router's models: BERT-family encoders run with Candle, classification heads over their
//! embeddings, and the batching service the data plane calls.
//!
//! A leaf module: it knows nothing of gRPC, Envoy or Kubernetes. The flow is
//! [`Encoder::load`] (once, at start) → [`ClassifierService::start`] (worker threads, queue,
//! cache) → [`ClassifierService::analyze`] per request, which yields the embedding and every
//! requested head's probabilities from one encoder pass.
//!
//! - [`encoder`]: load a model folder (BERT/MiniLM, ModernBERT, DeBERTa-v2), tokenize with a
//!   token budget, forward, mean-pool, L2-normalise.
//! - `int8`: a BERT body on the int8 encoder (crate `semantic-router-int8`), the default
//!   [`Precision`] on the CPU.
//! - [`hub`]: a model named by its Hugging Face Hub id, from the local Hub cache or
//!   downloaded into it.
//! - [`head`]: our own linear / one-hidden-layer heads stored as `head.safetensors` +
//!   `labels.json`; a fine-tuned checkpoint's own classifier is served too.
//! - [`service`]: the async API; inference off the runtime on OS threads, dynamic batching,
//!   a bounded queue that sheds (`Overloaded`, `DeadlineExceeded`), an exact-text LRU cache.
//! - [`cli`]: the `semantic-router classify` report; [`distill_cli`]: `semantic-router distill`.
//! - [`dataset`], [`embedding_store`], [`train`], [`evaluate`]: labelled JSONL, embeddings
//!   kept on disk per encoder, training a calibrated head, and measuring one.
//! - [`static_model`]: the static tier, token vectors distilled from an encoder: a lookup and
//!   a weighted mean per text instead of a forward pass; [`cascade`]: when its heads' static
//!   twins answer alone (`cascade.json`) and how that margin is chosen.
//! - [`tiny`]: tiny random-weight models for tests.

mod backbone;
mod cache;
pub mod cascade;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod device;
pub mod distill_cli;
pub mod embedding_store;
pub mod encoder;
pub mod error;
pub mod evaluate;
pub mod head;
pub mod heads_cli;
pub mod hub;
mod int8;
pub mod metrics;
mod pca;
mod pooling;
mod queue;
mod ranking;
mod seq_head;
pub mod service;
pub mod static_model;
pub mod tiny;
pub mod tokenize;
pub mod train;

pub use cli::classify_report;
pub use config::Architecture;
pub use device::default_device;
pub use encoder::{Encoder, EncoderOptions, EncoderOutput, Precision};
pub use error::{ClassifyError, Result};
pub use head::Head;
pub use hub::{HubOptions, ModelSource};
pub use metrics::ClassifierMetrics;
pub use ranking::Ranking;
pub use service::{Analysis, ClassifierService, ServiceConfig, StaticTier, Tier, default_workers};
pub use static_model::{DistillOptions, StaticModel, StaticOutput};
pub use tokenize::{DEFAULT_MAX_TOKENS, TextTokenizer, Tokens, Truncation};
