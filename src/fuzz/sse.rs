//! The SSE line reader, the usage scanner and the usage stripper, fed one response stream cut
//! into chunks three ways.

use super::{Input, chunks};
use crate::dataplane::usage::{SseUsageScanner, Usage, usage_from_json};
use crate::dataplane::usage_strip::{MAX_EVENT, UsageStripper};
use crate::stream::{SseLines, contains};

/// Line caps to try: tiny ones make the over-long-line paths common.
const MAX_LINES: [usize; 4] = [1, 16, 256, SseLines::DEFAULT_MAX_LINE];

/// Byte 0 chooses the line cap (bits 0-1) and a chunk size (bits 2-7, 1 to 64 bytes); the rest
/// is a response stream.
///
/// Asserts: the scanner never holds more than its line cap; the `data:` payloads, the usage
/// found and the stripped stream (below [`MAX_EVENT`]) are the same whether the stream comes
/// whole, in chunks of that size or byte by byte; a stream that never says `"usage"` passes
/// the stripper unchanged.
pub fn sse_usage(data: &[u8]) {
    let mut input = Input::new(data);
    let choice = input.byte();
    let stream = input.rest();
    let max_line = MAX_LINES[usize::from(choice & 3)];
    let size = usize::from(choice >> 2) + 1;
    let _ = usage_from_json(stream);

    let whole = read(&[stream], max_line);
    let cut = read(&chunks(stream, size), max_line);
    assert_eq!(whole, cut, "chunks of {size}");
    let bytewise = read(&chunks(stream, 1), max_line);
    assert_eq!(whole, bytewise, "byte by byte");

    let stripped = strip(&[stream]);
    if !contains(stream, b"\"usage\"") {
        assert_eq!(stripped, stream);
    }
    if stream.len() <= MAX_EVENT {
        assert_eq!(strip(&chunks(stream, size)), stripped, "chunks of {size}");
        assert_eq!(strip(&chunks(stream, 1)), stripped, "byte by byte");
    }
}

/// What a stream yields read in `chunks`: its `data:` payloads and its usage.
fn read(chunks: &[&[u8]], max_line: usize) -> (Vec<Vec<u8>>, Option<Usage>) {
    let mut lines = SseLines::new(max_line);
    let mut payloads = Vec::new();
    let mut scanner = SseUsageScanner::with_max_line(max_line);
    for chunk in chunks {
        lines.feed(chunk, &mut |data| payloads.push(data.to_vec()));
        scanner.feed(chunk);
        assert!(
            lines.buffered() <= max_line,
            "{} > {max_line}",
            lines.buffered()
        );
    }
    lines.finish(&mut |data| payloads.push(data.to_vec()));
    scanner.finish();
    (payloads, scanner.usage())
}

/// The stream the client sees once the stripper has passed `chunks`.
fn strip(chunks: &[&[u8]]) -> Vec<u8> {
    let mut stripper = UsageStripper::default();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        match stripper.chunk(chunk, last) {
            Some(replaced) => out.extend_from_slice(&replaced),
            None => out.extend_from_slice(chunk),
        }
    }
    out
}
