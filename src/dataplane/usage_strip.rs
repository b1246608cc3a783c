//! Hides from a client the usage the router asked for on its behalf.
//!
//! A streamed request without `stream_options.include_usage` reports no tokens, so the router
//! adds `include_usage: true` to the body it forwards and counts the usage chunk as it passes.
//! The client then must see the stream it asked for: [`UsageStripper`] drops the final
//! usage-only event (`"choices":[]` with a `usage` object) and the `"usage":null` that
//! OpenAI-style servers add to every other chunk.
//!
//! Events are complete only at a blank line, so the bytes of an event split across chunks are
//! held until it ends (never more than [`MAX_EVENT`]; a longer event is passed on as it is).
//! A chunk that ends on an event boundary and mentions no usage passes untouched.

use serde::Deserialize;

use crate::stream::{contains, find, sse_data};

/// Longest event held back while waiting for its end.
pub const MAX_EVENT: usize = 64 * 1024;

/// The `"usage":null` forms removed from other events, with the comma that joins them.
const NULL_USAGE: [&[u8]; 4] = [
    b",\"usage\":null",
    b"\"usage\":null,",
    b", \"usage\": null",
    b"\"usage\": null, ",
];

/// Rewrites an SSE response stream chunk by chunk; see the module documentation.
#[derive(Debug, Default)]
pub struct UsageStripper {
    /// Bytes of the event under way, from earlier chunks.
    pending: Vec<u8>,
}

impl UsageStripper {
    /// What to send on for this chunk: `None` to send it unchanged, else the bytes to send
    /// instead (possibly none). At `end_of_stream` everything held is released.
    pub fn chunk(&mut self, chunk: &[u8], end_of_stream: bool) -> Option<Vec<u8>> {
        if self.pending.is_empty()
            && !contains(chunk, b"\"usage\"")
            && (end_of_stream || ends_on_event_boundary(chunk))
        {
            return None;
        }
        // The held bytes end no event, so only a separator reaching into the new bytes can end
        // one: search those and the three before them, not all that is held (a long event in
        // tiny chunks would otherwise cost quadratic time).
        let searched = self.pending.len().saturating_sub(3);
        self.pending.extend_from_slice(chunk);
        if !end_of_stream
            && self.pending.len() <= MAX_EVENT
            && event_end(&self.pending[searched..]).is_none()
        {
            return Some(Vec::new());
        }
        let input = std::mem::take(&mut self.pending);
        let mut out = Vec::with_capacity(input.len());
        let mut rest = input.as_slice();
        while let Some(end) = event_end(rest) {
            let (event, tail) = rest.split_at(end);
            emit(event, &mut out);
            rest = tail;
        }
        if end_of_stream || rest.len() > MAX_EVENT {
            emit(rest, &mut out);
        } else {
            self.pending = rest.to_vec();
        }
        Some(out)
    }
}

/// Appends `event` to `out` as the client should see it.
fn emit(event: &[u8], out: &mut Vec<u8>) {
    if !contains(event, b"\"usage\"") {
        out.extend_from_slice(event);
    } else if !is_usage_only(event) {
        out.extend_from_slice(&without_null_usage(event));
    }
}

/// Whether the event's data is a usage-only chunk: no choices, a usage object.
fn is_usage_only(event: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chunk {
        choices: Option<Vec<serde::de::IgnoredAny>>,
        usage: Option<serde::de::IgnoredAny>,
    }
    data_lines(event).any(|data| {
        serde_json::from_slice::<Chunk>(data)
            .is_ok_and(|c| c.usage.is_some() && c.choices.is_some_and(|c| c.is_empty()))
    })
}

fn without_null_usage(event: &[u8]) -> Vec<u8> {
    let mut out = event.to_vec();
    for form in NULL_USAGE {
        while let Some(at) = find(&out, form) {
            out.drain(at..at + form.len());
        }
    }
    out
}

/// The payloads of the event's `data:` lines.
fn data_lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event
        .split(|&b| b == b'\n' || b == b'\r')
        .filter_map(sse_data)
}

/// The length of the first complete event (through its blank line), if one is complete.
///
/// One pass that stops at the first separator: the one that starts first also ends first (no
/// separator fits inside another's span), and a chunk of many events costs linear time.
fn event_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|at| {
        let rest = &bytes[at..];
        [&b"\n\n"[..], b"\r\r", b"\r\n\r\n"]
            .into_iter()
            .find(|sep| rest.starts_with(sep))
            .map(|sep| at + sep.len())
    })
}

/// Whether the chunk's events end exactly where it does. Ending in a blank line is not enough:
/// in `\n\n\n` the first two end an event and the third starts the next.
fn ends_on_event_boundary(mut chunk: &[u8]) -> bool {
    while let Some(end) = event_end(chunk) {
        chunk = &chunk[end..];
    }
    chunk.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stream as a server sends it when asked for usage.
    const WITH_USAGE: &str = concat!(
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    );
    /// The same stream as the client would have had without asking.
    const WITHOUT: &str = concat!(
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: [DONE]\n\n",
    );

    fn strip(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = UsageStripper::default();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            match s.chunk(c, i + 1 == chunks.len()) {
                Some(bytes) => out.extend(bytes),
                None => out.extend_from_slice(c),
            }
        }
        out
    }

    #[test]
    fn the_usage_chunk_and_null_usages_are_removed() {
        assert_eq!(
            String::from_utf8(strip(&[WITH_USAGE.as_bytes()])).unwrap(),
            WITHOUT
        );
    }

    #[test]
    fn chunks_without_usage_on_event_boundaries_pass_untouched() {
        let mut s = UsageStripper::default();
        assert_eq!(s.chunk(b"data: {\"choices\":[]}\n\n", false), None);
        assert_eq!(s.chunk(b"data: [DONE]\n\n", true), None);
    }

    #[test]
    fn usage_inside_content_is_kept() {
        let event =
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null, said he\"}}]}\n\n";
        assert_eq!(strip(&[event.as_bytes()]), event.as_bytes());
    }

    #[test]
    fn an_endless_event_is_not_held_forever() {
        let mut s = UsageStripper::default();
        let long = vec![b'x'; MAX_EVENT + 1];
        assert_eq!(s.chunk(&long, false), Some(long.clone()));
        assert!(s.pending.is_empty());
    }

    /// Found by fuzzing: a long event in tiny chunks, and a chunk of many events, took time
    /// quadratic in their length (each byte searched everything held; each event searched the
    /// rest of the chunk). Both are linear now: a few milliseconds here, minutes before.
    #[test]
    fn long_events_and_many_events_cost_linear_time() {
        let started = std::time::Instant::now();
        let mut s = UsageStripper::default();
        let mut out = Vec::new();
        let event = [b"data: ".as_slice(), &[b'x'; 32 << 10], b"\n\n"].concat();
        for byte in event.chunks(1) {
            out.extend(s.chunk(byte, false).unwrap_or_else(|| byte.to_vec()));
        }
        assert_eq!(out, event);
        let many = b"data: {\"usage\":null}\n\n".repeat(20_000);
        assert_eq!(s.chunk(&many, true).map(|b| b.len()), Some(many.len()));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// Found by fuzzing: a chunk ending in an odd run of line ends passed untouched as if it
    /// ended an event, so its last line end went to the client even when the event it starts
    /// was the usage chunk, which the whole stream drops with it.
    #[test]
    fn an_odd_run_of_line_ends_starts_the_next_event() {
        let usage = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2}}\n\n";
        for ends in ["\n\n\n", "\r\r\r"] {
            let first = format!("data: a{ends}");
            let whole = strip(&[format!("{first}{usage}").as_bytes()]);
            assert_eq!(strip(&[first.as_bytes(), usage.as_bytes()]), whole);
            assert_eq!(whole, format!("data: a{}", &ends[..2]).as_bytes());
        }
    }

    proptest! {
        /// However the stream is chunked, the client gets the stream it asked for.
        #[test]
        fn any_chunking_gives_the_same_stream(cuts in proptest::collection::vec(0usize..WITH_USAGE.len(), 0..8)) {
            let bytes = WITH_USAGE.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.dedup();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&bytes[at..c]);
                at = c;
            }
            chunks.push(&bytes[at..]);
            prop_assert_eq!(String::from_utf8(strip(&chunks)).unwrap(), WITHOUT);
        }
    }
}
