//! The one error type of the classifier module.
//!
//! Every variant is cheap to clone (causes are behind `Arc`), because one failed batch answers
//! every caller in it with the same error.

use std::path::PathBuf;
use std::sync::Arc;

/// Result of the classifier module.
pub type Result<T, E = ClassifyError> = std::result::Result<T, E>;

/// What can go wrong loading or running the router's models.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClassifyError {
    /// A model, tokenizer or head file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file was read but its content is not what the loader needs.
    #[error("invalid {path}: {message}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, as a sentence.
        message: String,
    },
    /// `config.json` names an architecture this module cannot run.
    #[error(
        "unsupported model architecture {found:?} in {path} (supported: bert, modernbert, deberta-v2)"
    )]
    UnsupportedArchitecture {
        /// The `config.json`.
        path: PathBuf,
        /// The `model_type` / `architectures` found.
        found: String,
    },
    /// Candle could not build the model from its weights (a missing tensor, a wrong shape).
    #[error("cannot build the model from {path}: {source}")]
    Model {
        /// The model folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<candle_core::Error>,
    },
    /// The tokenizer failed on a text.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// A forward pass failed.
    #[error("inference failed: {0}")]
    Inference(#[source] Arc<candle_core::Error>),
    /// A Hub model is not (completely) in the local cache and the network may not be used.
    #[error(
        "model {model} is not in the Hugging Face cache {cache} (missing: {missing}) and HF_HUB_OFFLINE is set; \
         fill the cache once with network access, point HF_HUB_CACHE at a cache that holds it, or pass a local folder"
    )]
    NotCached {
        /// `repo@revision`.
        model: String,
        /// The cache folder searched.
        cache: PathBuf,
        /// The files it lacks.
        missing: String,
    },
    /// The Hub could not be asked for a model, or refused it.
    #[error("cannot fetch model {model} from {endpoint}: {message}")]
    Hub {
        /// `repo@revision`.
        model: String,
        /// The Hub's base URL.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The caller asked for a head the service does not have.
    #[error("unknown classification head {0:?}")]
    UnknownHead(String),
    /// A head's input size does not match the encoder's embedding size.
    #[error(
        "head {head:?} takes {expected}-wide embeddings but the encoder gives {actual}: use the encoder it was trained for, or train one for this encoder (semantic-router train)"
    )]
    HeadDimension {
        /// The head's name.
        head: String,
        /// The head's input size.
        expected: usize,
        /// The encoder's embedding size.
        actual: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid classifier configuration: {0}")]
    Config(String),
    /// The queue in front of the model is full; the caller should fall back, not wait.
    #[error("classifier overloaded: {capacity} requests already queued")]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The request's deadline passed before its result was ready.
    #[error("classification deadline exceeded")]
    DeadlineExceeded,
    /// The service was shut down (or its worker died) before answering.
    #[error("classifier service is shut down")]
    ShutDown,
}

impl ClassifyError {
    /// A short, stable, machine-readable name of the variant, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::InvalidFile { .. } => "invalid_file",
            Self::UnsupportedArchitecture { .. } => "unsupported_architecture",
            Self::Model { .. } => "model",
            Self::NotCached { .. } => "not_cached",
            Self::Hub { .. } => "hub",
            Self::Tokenize(_) => "tokenize",
            Self::Inference(_) => "inference",
            Self::UnknownHead(_) => "unknown_head",
            Self::HeadDimension { .. } => "head_dimension",
            Self::Config(_) => "config",
            Self::Overloaded { .. } => "overloaded",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ShutDown => "shut_down",
        }
    }

    /// Whether the model was not asked at all because of load (a full queue or a passed
    /// deadline): the caller should take its default and count it as shed, not as a fault.
    pub fn is_shed(&self) -> bool {
        matches!(self, Self::Overloaded { .. } | Self::DeadlineExceeded)
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::InvalidFile {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn model(path: impl Into<PathBuf>, source: candle_core::Error) -> Self {
        Self::Model {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn inference(source: candle_core::Error) -> Self {
        Self::Inference(Arc::new(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shed_errors_are_the_load_ones() {
        assert!(ClassifyError::Overloaded { capacity: 1 }.is_shed());
        assert!(ClassifyError::DeadlineExceeded.is_shed());
        assert!(!ClassifyError::ShutDown.is_shed());
        assert!(!ClassifyError::UnknownHead("x".into()).is_shed());
    }

    #[test]
    fn kinds_are_snake_case_names() {
        assert_eq!(ClassifyError::DeadlineExceeded.kind(), "deadline_exceeded");
        assert_eq!(
            ClassifyError::Overloaded { capacity: 3 }.kind(),
            "overloaded"
        );
        let err = ClassifyError::io("/x", std::io::Error::other("boom"));
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("/x"));
    }
}
