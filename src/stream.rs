//! Reading an HTTP body as it passes, without holding it back: a bounded buffer and the one
//! server-sent-events line reader. The data plane's usage accounting and the semantic cache
//! both read responses through these.

/// Bytes collected up to a limit. Past the limit the bytes are dropped and the buffer reads
/// as nothing, however the body was chunked.
#[derive(Clone, Debug, Default)]
pub struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Bounded {
    /// An empty buffer holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            over: false,
        }
    }

    /// Appends `chunk`; `false` once the limit is passed (then nothing more is kept).
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.over {
            return false;
        }
        if self.bytes.len() + chunk.len() > self.limit {
            self.over = true;
            self.bytes = Vec::new();
            return false;
        }
        self.bytes.extend_from_slice(chunk);
        true
    }

    /// What was collected; `None` when the limit was passed.
    pub fn bytes(&self) -> Option<&[u8]> {
        (!self.over).then_some(self.bytes.as_slice())
    }

    /// Bytes held now.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Empties the buffer and forgets that the limit was passed.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.over = false;
    }
}

/// Splits an SSE body into lines as its chunks arrive and hands on each `data:` payload.
///
/// Events may be split across chunks at any byte; lines may end in LF, CRLF or CR. Memory is
/// bounded: only the current unfinished line is kept, up to `max_line` bytes; a longer line is
/// skipped whole, however it was chunked (usage and answer events are small).
#[derive(Clone, Debug)]
pub struct SseLines {
    /// The current line so far, when it started in an earlier chunk.
    partial: Bounded,
    /// The current line outgrew the cap: drop bytes until its end.
    skipping: bool,
    /// The last chunk ended in CR; an LF opening the next chunk ends no second line.
    after_cr: bool,
}

impl Default for SseLines {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LINE)
    }
}

impl SseLines {
    /// The default cap on one buffered line.
    pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

    /// A reader that skips lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: Bounded::new(max_line),
            skipping: false,
            after_cr: false,
        }
    }

    /// Reads the next chunk, calling `on_data` with the payload of every `data:` line it
    /// completes.
    pub fn feed(&mut self, mut chunk: &[u8], on_data: &mut impl FnMut(&[u8])) {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.end_line(&chunk[..end], on_data);
            let was_cr = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if was_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if !self.skipping && !chunk.is_empty() && !self.partial.push(chunk) {
            self.skipping = true;
        }
    }

    /// Bytes held for the unfinished line (never more than its cap).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// The body ended: a last line without a line ending counts too.
    pub fn finish(&mut self, on_data: &mut impl FnMut(&[u8])) {
        self.end_line(&[], on_data);
        self.after_cr = false;
    }

    /// A line ended; `tail` is its part in the current chunk.
    fn end_line(&mut self, tail: &[u8], on_data: &mut impl FnMut(&[u8])) {
        if self.skipping {
            self.skipping = false;
            self.partial.clear();
            return;
        }
        if self.partial.is_empty() {
            // The whole line is in this chunk: read it in place, unless it is over the cap
            // (so chunking never changes the result).
            if tail.len() <= self.partial.limit
                && let Some(data) = sse_data(tail)
            {
                on_data(data);
            }
        } else if self.partial.push(tail)
            && let Some(data) = self.partial.bytes().and_then(sse_data)
        {
            on_data(data);
        }
        self.partial.clear();
    }
}

/// The payload of an SSE `data:` line (one optional space after the colon dropped).
pub fn sse_data(line: &[u8]) -> Option<&[u8]> {
    let data = line.strip_prefix(b"data:")?;
    Some(data.strip_prefix(b" ").unwrap_or(data))
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn data_lines(chunks: &[&[u8]], max_line: usize) -> Vec<Vec<u8>> {
        let mut lines = SseLines::new(max_line);
        let mut out = Vec::new();
        let mut keep = |d: &[u8]| out.push(d.to_vec());
        for c in chunks {
            lines.feed(c, &mut keep);
        }
        lines.finish(&mut keep);
        out
    }

    #[test]
    fn a_buffer_over_its_limit_reads_as_nothing() {
        let mut b = Bounded::new(4);
        assert!(b.push(b"ab"));
        assert!(!b.push(b"cde"));
        assert!(!b.push(b"f"));
        assert_eq!(b.bytes(), None);
        b.clear();
        assert!(b.push(b"abcd"));
        assert_eq!(b.bytes(), Some(&b"abcd"[..]));
    }

    #[test]
    fn data_lines_are_read_and_long_lines_skipped() {
        let body = b"data: one\r\n: comment\n\ndata:two\rdata: {long long long}\ndata: [DONE]";
        assert_eq!(
            data_lines(&[body], 12),
            vec![b"one".to_vec(), b"two".to_vec(), b"[DONE]".to_vec()]
        );
    }

    proptest! {
        /// However the body is cut into chunks, the same payloads come out.
        #[test]
        fn chunking_never_changes_the_payloads(cuts in proptest::collection::vec(0usize..60, 0..6)) {
            let body: &[u8] = b"data: a\r\n\r\ndata: {\"x\":1}\rdata: long line here\n\ndata: z";
            let whole = data_lines(&[body], 16);
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                let c = c.clamp(at, body.len());
                chunks.push(&body[at..c]);
                at = c;
            }
            chunks.push(&body[at..]);
            prop_assert_eq!(data_lines(&chunks, 16), whole);
        }
    }
}
