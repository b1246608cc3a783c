//! Text to token ids: the model's own `tokenizer.json`, truncated to a token budget, and
//! right-padding of a batch to its longest member.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use super::error::{ClassifyError, Result};

/// Default token budget per text (special tokens included).
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// Share of the budget a long text keeps from its start; the rest comes from its end.
const HEAD_SHARE: usize = 4;

/// Bytes of text kept per budget token at each end of a very long text before tokenizing:
/// enough for any natural-language tokenization, and a bound on the tokenizer's work.
const BYTES_PER_TOKEN: usize = 16;

/// Which part of a text over the token budget the encoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// A quarter of the budget from the start, the rest from the end: the start of a prompt
    /// often states the task, and a long pasted document usually ends with the question.
    #[default]
    HeadAndTail,
    /// The start only, as most tokenizers cut: measured against the default in
    /// `cargo bench --bench long_prompts`.
    Head,
}

/// The token ids of one text, ready for the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, special tokens (`[CLS]`, `[SEP]`) included.
    pub ids: Vec<u32>,
    /// Token type (segment) ids, same length as `ids`.
    pub type_ids: Vec<u32>,
    /// Whether the text was longer than the budget and lost its middle.
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
/// A text over the budget is cut as its [`Truncation`] says (by default it keeps its first
/// quarter of `max_tokens` and its last three quarters, special tokens included). Padding is
/// left to the batcher, which pads to the longest text of each batch rather than to a fixed
/// length.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
    truncation: Truncation,
    /// Special tokens added to every text (`[CLS]` and `[SEP]` for BERT).
    specials: usize,
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
            .with_truncation(None)
            .map_err(|e| ClassifyError::Config(format!("truncation: {e}")))?;
        inner.with_padding(None);
        let specials = inner
            .encode_fast("", true)
            .map_err(|e| ClassifyError::Tokenize(e.to_string()))?
            .len();
        Ok(Self {
            inner,
            max_tokens,
            truncation: Truncation::default(),
            specials,
        })
    }

    /// The token budget per text.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The same tokenizer with another token budget.
    pub fn with_max_tokens(&self, max_tokens: usize) -> Result<Self> {
        Ok(Self::new(self.inner.clone(), max_tokens)?.with_truncation(self.truncation))
    }

    /// The same tokenizer, cutting long texts as `truncation` says.
    pub fn with_truncation(mut self, truncation: Truncation) -> Self {
        self.truncation = truncation;
        self
    }

    /// Writes the tokenizer as `tokenizer.json` (without truncation or padding).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| ClassifyError::invalid(path, format!("cannot write the tokenizer: {e}")))
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids of the special tokens (`[CLS]`, `[SEP]`, `[PAD]`, ...): markers, not words.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Tokenizes one text (special tokens added; head and tail kept when over the budget).
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        let ends = self.max_tokens * BYTES_PER_TOKEN;
        let bounded = head_and_tail(text, ends);
        let encoding = self
            .inner
            .encode_fast(bounded.as_ref(), true)
            .map_err(|e| ClassifyError::Tokenize(e.to_string()))?;
        let (ids, type_ids) = (encoding.get_ids(), encoding.get_type_ids());
        if ids.len() <= self.max_tokens {
            return Ok(Tokens {
                ids: ids.to_vec(),
                type_ids: type_ids.to_vec(),
                truncated: bounded.len() < text.len(),
            });
        }
        let head = match self.truncation {
            Truncation::HeadAndTail => (self.max_tokens / HEAD_SHARE).max(1),
            Truncation::Head => self.max_tokens - 1,
        };
        let tail = ids.len() - (self.max_tokens - head);
        let keep = |all: &[u32]| [&all[..head], &all[tail..]].concat();
        Ok(Tokens {
            ids: keep(ids),
            type_ids: keep(type_ids),
            truncated: true,
        })
    }

    /// `text` as runs of whole lines that each fit the budget (a longer line cut into
    /// [`windows`](Self::windows)), at most `limit` of them: past that, the first and the last
    /// `limit - 1`. A long prompt's parts as its author laid them out, so that the question
    /// under a pasted document, or an instruction hidden on a line of its own, is read apart
    /// from the text around it. Blank lines are dropped; a text within the budget is one
    /// segment.
    pub fn segments(&self, text: &str, limit: usize) -> Result<Vec<String>> {
        let bounded = self.bounded(text, limit);
        let fits = |text: &str| self.tokenize(text).map(|t| !t.truncated);
        let mut segments = Vec::new();
        let mut current = String::new();
        for line in bounded.lines().filter(|l| !l.trim().is_empty()) {
            if !current.is_empty() {
                let joined = format!("{current}\n{line}");
                if fits(&joined)? {
                    current = joined;
                    continue;
                }
                segments.push(std::mem::take(&mut current));
            }
            if fits(line)? {
                current = line.to_owned();
            } else {
                segments.extend(self.windows(line, limit)?);
            }
        }
        if !current.is_empty() || segments.is_empty() {
            segments.push(current);
        }
        keep_ends(&mut segments, limit);
        Ok(segments)
    }

    /// `text` cut into windows that each fit the budget, consecutive windows overlapping by a
    /// quarter of it, so that every part of a long text can be scored on its own (the best
    /// window's similarity stands for the text). At most `limit` windows: past that, the first
    /// and the last `limit - 1`. A text within the budget is its only window.
    pub fn windows(&self, text: &str, limit: usize) -> Result<Vec<String>> {
        let content = self.max_tokens.saturating_sub(self.specials);
        let bounded = self.bounded(text, limit);
        let encoding = self
            .inner
            .encode(bounded.as_ref(), false)
            .map_err(|e| ClassifyError::Tokenize(e.to_string()))?;
        let offsets = encoding.get_offsets();
        if content == 0 || offsets.len() <= content || limit <= 1 {
            return Ok(vec![text.to_owned()]);
        }
        let step = content - content / 4;
        let last = offsets.len() - content;
        let mut starts: Vec<usize> = (0..last).step_by(step).chain([last]).collect();
        keep_ends(&mut starts, limit);
        Ok(starts
            .into_iter()
            .map(|start| {
                let (from, to) = (offsets[start].0, offsets[start + content - 1].1);
                bounded.get(from..to).unwrap_or_default().to_owned()
            })
            .collect())
    }

    /// `text`, or as much of its start and end as `pieces` pieces of the budget can read: a
    /// bound on the tokenizer's work for a huge text.
    fn bounded<'t>(&self, text: &'t str, pieces: usize) -> std::borrow::Cow<'t, str> {
        head_and_tail(text, pieces.max(1) * self.max_tokens * BYTES_PER_TOKEN)
    }
}

/// Keeps the first of `pieces` and the last `limit - 1` when there are more than `limit`
/// (at least one is kept).
fn keep_ends<T>(pieces: &mut Vec<T>, limit: usize) {
    let limit = limit.max(1);
    if pieces.len() > limit {
        pieces.drain(1..pieces.len() + 1 - limit);
    }
}

/// `text`, or its first and last `ends` bytes (at character boundaries) joined by a space.
fn head_and_tail(text: &str, ends: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= 2 * ends {
        return text.into();
    }
    let mut head = ends;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - ends;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{} {}", &text[..head], &text[tail..]).into()
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
    fn adds_special_tokens_and_keeps_head_and_tail() {
        let t = tokenizer(8);
        let short = t.tokenize("hello there").expect("tokens");
        assert_eq!(short.len(), 4, "[CLS] hello there [SEP]");
        assert!(!short.truncated);
        let long = t
            .tokenize("what is two plus three times four plus two")
            .expect("tokens");
        assert_eq!(long.len(), 8);
        assert!(long.truncated);
        // [CLS] what | three times four plus two [SEP]: a quarter from the start, the rest
        // from the end, special tokens kept.
        let whole = tokenizer(64)
            .tokenize("what is two plus three times four plus two")
            .expect("tokens");
        assert_eq!(long.ids[..2], whole.ids[..2]);
        assert_eq!(long.ids[2..], whole.ids[whole.len() - 6..]);
    }

    #[test]
    fn head_truncation_keeps_the_start_and_the_closing_token() {
        let text = "what is two plus three times four plus two";
        let head = tokenizer(8).with_truncation(Truncation::Head);
        let cut = head.tokenize(text).expect("tokens");
        let whole = tokenizer(64).tokenize(text).expect("tokens");
        assert!(cut.truncated);
        assert_eq!(cut.ids[..7], whole.ids[..7]);
        assert_eq!(cut.ids.last(), whole.ids.last(), "[SEP] kept");
        let again = head.with_max_tokens(8).expect("tokenizer");
        assert_eq!(
            again.tokenize(text).expect("tokens"),
            cut,
            "the mode survives"
        );
    }

    #[test]
    fn windows_cover_a_long_text_in_overlapping_pieces_that_fit_the_budget() {
        let t = tokenizer(8);
        let text = "what is two plus three times four plus two plus three is four";
        let windows = t.windows(text, 8).expect("windows");
        // 13 words, 6 per window (8 less [CLS] and [SEP]), each starting 5 after the last;
        // the final one ends with the text.
        assert_eq!(
            windows,
            [
                "what is two plus three times",
                "times four plus two plus three",
                "plus two plus three is four"
            ]
        );
        for window in &windows {
            assert!(!t.tokenize(window).expect("tokens").truncated, "{window}");
        }
        assert_eq!(
            t.windows(text, 2).expect("windows"),
            [windows[0].as_str(), windows[2].as_str()],
            "over the limit: the first and the last"
        );
        assert_eq!(
            t.windows("two plus two", 8).expect("windows"),
            ["two plus two"]
        );
    }

    #[test]
    fn segments_are_runs_of_whole_lines_within_the_budget() {
        let t = tokenizer(8);
        let text = "what is two\nplus three\n\nwhat is four plus two plus three times two\nis four";
        // Lines join while they fit 6 words; the 9-word line is cut into windows.
        assert_eq!(
            t.segments(text, 8).expect("segments"),
            [
                "what is two\nplus three",
                "what is four plus two plus",
                "plus two plus three times two",
                "is four"
            ]
        );
        assert_eq!(
            t.segments(text, 2).expect("segments"),
            ["what is two\nplus three", "is four"],
            "over the limit: the first and the last"
        );
        assert_eq!(t.segments("", 8).expect("segments"), [""]);
    }

    #[test]
    fn a_huge_text_is_cut_before_it_is_tokenized() {
        let t = tokenizer(8);
        let text = format!("what {} is two", "plus ".repeat(100_000));
        let tokens = t.tokenize(&text).expect("tokens");
        assert_eq!(tokens.len(), 8);
        assert!(tokens.truncated);
        let end = tokenizer(64).tokenize("is two").expect("tokens");
        assert_eq!(
            tokens.ids[tokens.len() - 3..],
            end.ids[1..],
            "the end survives"
        );
        let accented = "aé".repeat(100);
        let cut = head_and_tail(&accented, 7);
        assert!(cut.len() <= 15, "{cut}");
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
