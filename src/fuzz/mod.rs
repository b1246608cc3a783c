//! The bodies of the coverage-guided fuzz targets (`fuzz/`, run with `make fuzz`), kept in the
//! library so `tests/fuzz_corpus.rs` replays the committed corpus through the same code on
//! every `make test`.
//!
//! Each function takes arbitrary bytes, must never panic, and asserts invariants where they are
//! cheap: a panic is a bug, in the code under test or in the invariant. The first bytes choose
//! the variant (API kind, chunk sizes, body modes), the rest is the payload, so a seed is
//! mostly the realistic input it stands for.

mod compile;
mod ext_proc;
mod openai;
mod sse;

pub use compile::{compile_resources, resources_from_yaml};
pub use ext_proc::ext_proc_sequence;
pub use openai::openai_body;
pub use sse::sse_usage;

/// A fuzz input read front to back: choices first, payload last. Past the end it reads zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next `n` bytes, or what is left.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// `data` cut into pieces of `size` bytes (the last may be shorter; at least one, maybe empty).
fn chunks(data: &[u8], size: usize) -> Vec<&[u8]> {
    if data.is_empty() {
        return vec![data];
    }
    data.chunks(size.max(1)).collect()
}
