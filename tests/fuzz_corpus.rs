//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets'
//! bodies in `semantic_router::fuzz`, with a bounded number of cheap deterministic mutations of
//! each seed (bit flips, truncations, cuts, repeats, splices with another seed), so every
//! `make test` runs each target for a moment without building the instrumented fuzzers.
//! `make fuzz` runs the coverage-guided fuzzers themselves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use semantic_router::fuzz;

/// Mutations tried per seed.
const MUTATIONS: usize = 128;
/// Time one target may take at most, whatever its corpus size.
const TARGET_BUDGET: Duration = Duration::from_secs(10);

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no seeds in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), seeded per seed file.
struct Rng(u64);

impl Rng {
    fn new(bytes: &[u8]) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ bytes.len() as u64;
        for &b in bytes {
            state = (state ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self(state | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that matter to the parsers: JSON and SSE structure, and invalid UTF-8.
const INTERESTING: &[u8] = b"{}[]\":,\n\r\\0-e \xff\xc3";

fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    let len = out.len();
    match rng.below(6) {
        0 if len > 0 => {
            let at = rng.below(len);
            out[at] ^= 1 << rng.below(8);
        }
        1 => out.truncate(rng.below(len + 1)),
        2 if len > 0 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(16)).min(len);
            out.drain(at..end);
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(64)).min(len);
            let piece = out[at..end].to_vec();
            out.splice(at..at, piece);
        }
        4 => {
            let at = rng.below(len + 1);
            out.truncate(at);
            out.extend_from_slice(&other[rng.below(other.len() + 1)..]);
        }
        _ => {
            let at = rng.below(len + 1);
            out.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
        }
    }
    out
}

fn replay(target: &str, run: fn(&[u8])) {
    let seeds = seeds(target);
    let started = Instant::now();
    for (i, (path, seed)) in seeds.iter().enumerate() {
        // A failing input is named, so it can be saved and turned into a unit test.
        let named = |input: &[u8]| {
            let ok = std::panic::catch_unwind(|| run(input)).is_ok();
            assert!(
                ok,
                "{target} panicked on {} or a mutation of it: {input:?}",
                path.display()
            );
        };
        named(seed);
        let other = &seeds[(i + 1) % seeds.len()].1;
        let mut rng = Rng::new(seed);
        for _ in 0..MUTATIONS {
            if started.elapsed() > TARGET_BUDGET {
                return;
            }
            named(&mutate(seed, other, &mut rng));
        }
    }
}

#[test]
fn openai_body() {
    replay("openai_body", fuzz::openai_body);
}

#[test]
fn sse_usage() {
    replay("sse_usage", fuzz::sse_usage);
}

#[test]
fn ext_proc_sequence() {
    replay("ext_proc_sequence", fuzz::ext_proc_sequence);
}

#[test]
fn compile_resources() {
    replay("compile_resources", fuzz::compile_resources);
}
