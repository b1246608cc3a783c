//! Text to token ids: the model's own `tokenizer.json`, truncated to a token budget, and
//! right-padding of a batch to its longest member.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::{ClassifyError, Result};

/// Default token budget per text (special tokens included).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// The token ids of one text, ready for the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, special tokens (`[CLS]`, `[SEP]`) included.
    pub ids: Vec<u32>,
    /// Token type (segment) ids, same length as `ids`.
    pub type_ids: Vec<u32>,
    /// Whether the text was longer than the budget and lost its tail.
    pub truncated: bool,
}

impl Tokens {
    /// Number of tokens, special tokens included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens at all (only possible with a tokenizer that adds none).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A `tokenizers` tokenizer configured for single-text classification.
///
/// Truncation keeps the FIRST `max_tokens` tokens (special tokens included), the usual
/// choice for classifiers: the start of a prompt states the task. Callers that prefer the end
/// of a conversation pass the last user turn as the text. Padding is left to the batcher, which
/// pads to the longest text of each batch rather than to a fixed length.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("max_tokens", &self.max_tokens)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and sets the token budget (at least 2: room for the special tokens).
    pub fn load(path: &Path, max_tokens: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(ClassifyError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
            ));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| ClassifyError::invalid(path, format!("not a tokenizer: {e}")))?;
        Self::new(inner, max_tokens)
    }

    /// Wraps a tokenizer, replacing whatever truncation and padding it was saved with.
    pub fn new(mut inner: Tokenizer, max_tokens: usize) -> Result<Self> {
        if max_tokens < 2 {
            return Err(ClassifyError::Config(format!(
                "max_tokens must be at least 2, got {max_tokens}"
            )));
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ClassifyError::Config(format!("truncation: {e}")))?;
        inner.with_padding(None);
        Ok(Self { inner, max_tokens })
    }

    /// The token budget per text.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes one text (special tokens added, truncated to the budget).
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        let encoding = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| ClassifyError::Tokenize(e.to_string()))?;
        Ok(Tokens {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }
}

/// A batch right-padded to its longest member, as tensors of shape `[batch, longest]`.
pub(crate) struct PaddedBatch {
    pub ids: Tensor,
    pub type_ids: Tensor,
    /// 1 for a real token, 0 for padding (u32).
    pub mask: Tensor,
}

impl PaddedBatch {
    /// Pads `batch` with `pad_id` (type id 0, mask 0) to the longest member.
    pub fn new(batch: &[&Tokens], pad_id: u32, device: &Device) -> candle_core::Result<Self> {
        let longest = batch.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let n = batch.len();
        let mut ids = Vec::with_capacity(n * longest);
        let mut type_ids = Vec::with_capacity(n * longest);
        let mut mask = Vec::with_capacity(n * longest);
        for tokens in batch {
            let pad = longest - tokens.len();
            ids.extend_from_slice(&tokens.ids);
            ids.extend(std::iter::repeat_n(pad_id, pad));
            type_ids.extend_from_slice(&tokens.type_ids);
            type_ids.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(1u32, tokens.len()));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (n, longest), device)?,
            type_ids: Tensor::from_vec(type_ids, (n, longest), device)?,
            mask: Tensor::from_vec(mask, (n, longest), device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tiny;

    fn tokenizer(max: usize) -> TextTokenizer {
        TextTokenizer::new(tiny::tokenizer().expect("tiny tokenizer"), max).expect("tokenizer")
    }

    #[test]
    fn adds_special_tokens_and_keeps_the_first_tokens() {
        let t = tokenizer(5);
        let short = t.tokenize("hello there").expect("tokens");
        assert_eq!(short.len(), 4, "[CLS] hello there [SEP]");
        assert!(!short.truncated);
        let long = t
            .tokenize("what is two plus three times four")
            .expect("tokens");
        assert_eq!(long.len(), 5);
        assert!(long.truncated);
        let prefix = t.tokenize("what is two").expect("tokens");
        assert_eq!(long.ids, prefix.ids, "truncation keeps the first tokens");
    }

    #[test]
    fn rejects_a_budget_without_room_for_special_tokens() {
        let err = TextTokenizer::new(tiny::tokenizer().expect("tiny"), 1).expect_err("too small");
        assert_eq!(err.kind(), "config");
    }

    #[test]
    fn pads_to_the_longest() {
        let t = tokenizer(32);
        let a = t.tokenize("hello").expect("a");
        let b = t.tokenize("what is two plus two").expect("b");
        let batch = PaddedBatch::new(&[&a, &b], 0, &Device::Cpu).expect("batch");
        assert_eq!(batch.ids.dims(), &[2, b.len()]);
        let mask = batch.mask.to_vec2::<u32>().expect("mask");
        assert_eq!(mask[0].iter().sum::<u32>() as usize, a.len());
        assert_eq!(mask[1].iter().sum::<u32>() as usize, b.len());
    }
}
