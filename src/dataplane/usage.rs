//! Token usage read from model responses, so tokens can be counted per decision, model and
//! pool.
//!
//! A non-streaming response carries `usage` in its JSON body ([`usage_from_json`]). A
//! streamed (SSE) response carries it in a final chunk when the client set
//! `stream_options.include_usage` (vLLM may also send running totals on every chunk);
//! [`SseUsageScanner`] watches the chunks go by and keeps the last usage it saw. Both read
//! only: the response reaches the client unchanged and is never held back.
//!
//! The field names of the Responses API (`input_tokens` / `output_tokens`, nested under
//! `response` in its stream events) are read too.

use serde::Deserialize;

use crate::stream::{SseLines, contains};

/// Tokens one request consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Tokens in the prompt (input).
    pub prompt_tokens: u64,
    /// Tokens the model generated (output, including reasoning tokens).
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The `usage` object as OpenAI-style servers write it.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(alias = "input_tokens")]
    prompt_tokens: Option<u64>,
    #[serde(alias = "output_tokens")]
    completion_tokens: Option<u64>,
}

/// The part of a response body or stream event that may carry usage; all else is skipped.
#[derive(Deserialize)]
struct WithUsage {
    usage: Option<RawUsage>,
    /// Responses API stream events (`response.completed`) nest the response.
    response: Option<Nested>,
}

#[derive(Deserialize)]
struct Nested {
    usage: Option<RawUsage>,
}

impl WithUsage {
    fn into_usage(self) -> Option<Usage> {
        let raw = self.usage.or(self.response.and_then(|r| r.usage))?;
        // A usage object with neither count (or `usage: null`) says nothing.
        if raw.prompt_tokens.is_none() && raw.completion_tokens.is_none() {
            return None;
        }
        Some(Usage {
            prompt_tokens: raw.prompt_tokens.unwrap_or(0),
            completion_tokens: raw.completion_tokens.unwrap_or(0),
        })
    }
}

/// Usage from a whole (non-streaming) JSON response body; `None` when the body is not JSON
/// or carries no usage.
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(body).ok()?.into_usage()
}

/// Finds usage in an SSE response stream as its chunks pass, without changing or holding
/// them: [`SseLines`] reads the lines, and each `data:` line is read on its own (servers put
/// each JSON event on one line); `data: [DONE]`, comments and other fields are skipped.
///
/// Feed every body chunk in order with [`feed`](Self::feed), call
/// [`finish`](Self::finish) at end of stream, then read [`usage`](Self::usage). A line longer
/// than the cap (64 KiB by default) is skipped; usage chunks are small, so nothing of interest
/// is lost.
#[derive(Clone, Debug, Default)]
pub struct SseUsageScanner {
    lines: SseLines,
    usage: Option<Usage>,
}

impl SseUsageScanner {
    /// A scanner with the default line cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanner that skips lines longer than `max_line` bytes.
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            lines: SseLines::new(max_line),
            usage: None,
        }
    }

    /// Read the next chunk of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let usage = &mut self.usage;
        self.lines.feed(chunk, &mut |data| note_usage(data, usage));
    }

    /// The stream ended: read a last line that had no line ending.
    pub fn finish(&mut self) {
        let usage = &mut self.usage;
        self.lines.finish(&mut |data| note_usage(data, usage));
    }

    /// The last usage the stream reported, if any.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// Keeps the usage an SSE `data:` payload carries, if it carries one.
pub fn note_usage(data: &[u8], usage: &mut Option<Usage>) {
    // Cheap filter before parsing: most chunks are tokens, and `[DONE]` is not JSON.
    if data.first() == Some(&b'{')
        && contains(data, b"\"usage\"")
        && let Some(found) = usage_from_json(data)
    {
        *usage = Some(found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usage(p: u64, c: u64) -> Usage {
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
        }
    }

    fn scan(chunks: &[&[u8]]) -> Option<Usage> {
        let mut s = SseUsageScanner::new();
        for c in chunks {
            s.feed(c);
        }
        s.finish();
        s.usage()
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        ": keep-alive comment\n\n",
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn json_body() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],
            "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,
                     "completion_tokens_details":{"reasoning_tokens":3}}}"#;
        assert_eq!(usage_from_json(body), Some(usage(5, 7)));
        assert_eq!(usage_from_json(body).unwrap().total_tokens(), 12);
    }

    #[test]
    fn json_body_without_usage() {
        assert_eq!(usage_from_json(br#"{"id":"x"}"#), None);
        assert_eq!(usage_from_json(br#"{"usage":null}"#), None);
        assert_eq!(usage_from_json(br#"{"usage":{}}"#), None);
        assert_eq!(usage_from_json(br#"{"usage":"lots"}"#), None);
        assert_eq!(usage_from_json(br#"{"usage":{"prompt_tokens":-1}}"#), None);
        assert_eq!(usage_from_json(b"not json"), None);
        assert_eq!(usage_from_json(b""), None);
        assert_eq!(usage_from_json(b"[1]"), None);
        // Embeddings report only prompt tokens.
        assert_eq!(
            usage_from_json(br#"{"usage":{"prompt_tokens":9,"total_tokens":9}}"#),
            Some(usage(9, 0))
        );
    }

    #[test]
    fn responses_api_names() {
        assert_eq!(
            usage_from_json(br#"{"usage":{"input_tokens":3,"output_tokens":4}}"#),
            Some(usage(3, 4))
        );
        let event = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":8,\"output_tokens\":2}}}\n\n";
        assert_eq!(scan(&[event]), Some(usage(8, 2)));
    }

    #[test]
    fn stream_whole_and_byte_by_byte() {
        assert_eq!(scan(&[STREAM.as_bytes()]), Some(usage(12, 34)));
        let bytes: Vec<&[u8]> = STREAM.as_bytes().chunks(1).collect();
        assert_eq!(scan(&bytes), Some(usage(12, 34)));
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let crlf = STREAM.replace('\n', "\r\n");
        assert_eq!(scan(&[crlf.as_bytes()]), Some(usage(12, 34)));
        let bytes: Vec<&[u8]> = crlf.as_bytes().chunks(1).collect();
        assert_eq!(scan(&bytes), Some(usage(12, 34)));
        let cr = STREAM.replace('\n', "\r");
        assert_eq!(scan(&[cr.as_bytes()]), Some(usage(12, 34)));
    }

    #[test]
    fn no_usage_in_stream() {
        let s = "data: {\"choices\":[],\"usage\":null}\n\ndata: [DONE]\n\n";
        assert_eq!(scan(&[s.as_bytes()]), None);
        assert_eq!(scan(&[]), None);
    }

    #[test]
    fn last_usage_wins() {
        // vLLM's continuous_usage_stats: running totals on every chunk.
        let s = concat!(
            "data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n",
            "data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n",
            "data: {\"usage\":null}\n\n",
        );
        assert_eq!(scan(&[s.as_bytes()]), Some(usage(4, 2)));
    }

    #[test]
    fn data_without_space_and_final_line_without_newline() {
        let s = "data:{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
        let mut scanner = SseUsageScanner::new();
        scanner.feed(s.as_bytes());
        assert_eq!(scanner.usage(), None, "line not ended yet");
        scanner.finish();
        assert_eq!(scanner.usage(), Some(usage(1, 2)));
    }

    #[test]
    fn long_lines_are_skipped_and_memory_stays_bounded() {
        let mut s = SseUsageScanner::with_max_line(64);
        let long = format!(
            "data: {{\"pad\":\"{}\",\"usage\":{{\"prompt_tokens\":99,\"completion_tokens\":99}}}}",
            "x".repeat(200)
        );
        // Fed in small pieces: the partial buffer never exceeds the cap.
        for piece in long.as_bytes().chunks(10) {
            s.feed(piece);
            assert!(s.lines.buffered() <= 64);
        }
        s.feed(b"\n\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n");
        assert_eq!(s.usage(), Some(usage(1, 1)));
        // Skipped the same way when it arrives in one chunk.
        let mut s = SseUsageScanner::with_max_line(64);
        s.feed(format!("{long}\n").as_bytes());
        assert_eq!(s.usage(), None);
        assert_eq!(s.lines.buffered(), 0);
    }

    #[test]
    fn a_line_that_overflows_only_when_completed_is_skipped() {
        let mut s = SseUsageScanner::with_max_line(40);
        s.feed(b"data: {\"usage\":{\"prompt_tokens\":");
        s.feed(b"5,\"completion_tokens\":6}}\n");
        assert_eq!(s.usage(), None);
        s.feed(b"data: {\"usage\":{\"prompt_tokens\":1}}\n");
        assert_eq!(s.usage(), Some(usage(1, 0)));
    }

    /// An SSE stream of token chunks with one usage chunk near the end.
    fn arb_stream() -> impl Strategy<Value = (String, Usage)> {
        (
            prop::collection::vec("[a-zA-Z0-9 ]{0,12}", 0..8),
            any::<u32>(),
            any::<u32>(),
            prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            any::<bool>(),
        )
            .prop_map(|(tokens, p, c, eol, comment)| {
                let mut s = String::new();
                for t in tokens {
                    s.push_str(&format!(
                        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}],\"usage\":null}}{eol}{eol}"
                    ));
                    if comment {
                        s.push_str(&format!(": ping{eol}{eol}"));
                    }
                }
                s.push_str(&format!(
                    "event: message{eol}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c}}}}}{eol}{eol}data: [DONE]{eol}{eol}"
                ));
                (s, usage(u64::from(p), u64::from(c)))
            })
    }

    proptest! {
        #[test]
        fn split_anywhere_same_usage(
            (stream, expected) in arb_stream(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let bytes = stream.as_bytes();
            prop_assert_eq!(scan(&[bytes]), Some(expected));

            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort_unstable();
            let chunks: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
            prop_assert_eq!(scan(&chunks), Some(expected));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            let mut s = SseUsageScanner::with_max_line(32);
            for c in &chunks {
                s.feed(c);
                prop_assert!(s.lines.buffered() <= 32);
            }
            s.finish();
            let _ = s.usage();
        }
    }
}
