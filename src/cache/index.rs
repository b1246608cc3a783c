//! [`Index`]: one scope's embeddings, row after row, and their nearest rows to a query.
//!
//! A lookup in two steps. Each row keeps a short binary code ([`CODE_BITS`] bits, the signs
//! of sparse random projections: near vectors get near codes), and a pass over the codes,
//! contiguous and a few words a row, picks the rows whose codes are nearest the query's in
//! Hamming distance. Only those are scored exactly, by dot product. A near-duplicate (the
//! only kind of match a cache serves) is far nearer in code than an unrelated row, so it is
//! almost never left out; the tests and `benches/cache.rs` measure how often.

use pulp::{Arch, Simd, WithSimd};

/// Words of a row's code.
const CODE_WORDS: usize = 2;

/// Bits of a row's code.
pub(super) const CODE_BITS: usize = CODE_WORDS * 64;

/// Rows a lookup scores exactly: enough that a near-duplicate is kept even among many rows
/// of similar code, few enough to cost a small part of the code pass.
pub(super) const RERANK: usize = 128;

type Code = [u64; CODE_WORDS];

/// Embeddings of one width, each under a slot (its row); removal moves the last row into
/// the gap.
#[derive(Debug, Default)]
pub(super) struct Index {
    dims: usize,
    rows: Vec<f32>,
    codes: Vec<Code>,
}

impl Index {
    /// An empty index of `dims`-wide embeddings.
    pub(super) fn new(dims: usize) -> Self {
        Self {
            dims,
            ..Self::default()
        }
    }

    /// Rows held.
    pub(super) fn len(&self) -> usize {
        self.codes.len()
    }

    /// Adds `embedding` (of this index's width) as the last row; its slot.
    pub(super) fn push(&mut self, embedding: &[f32]) -> usize {
        debug_assert_eq!(embedding.len(), self.dims);
        self.rows.extend_from_slice(embedding);
        self.codes.push(code(embedding));
        self.codes.len() - 1
    }

    /// Removes the row at `slot`; the last row moves into it.
    pub(super) fn swap_remove(&mut self, slot: usize) {
        let last = self.len() - 1;
        if slot != last {
            let (dims, from) = (self.dims, last * self.dims);
            self.rows.copy_within(from..from + dims, slot * dims);
        }
        self.rows.truncate(last * self.dims);
        self.codes.swap_remove(slot);
    }

    /// The embedding at `slot`.
    pub(super) fn row(&self, slot: usize) -> &[f32] {
        self.rows
            .get(slot * self.dims..(slot + 1) * self.dims)
            .unwrap_or_default()
    }

    /// The similarity and slot of the rows nearest `query`, of the [`RERANK`] nearest in
    /// code (every row, when that is no more). Two passes over the codes, neither of which
    /// allocates or branches much: one counts the rows at each distance, which gives the
    /// distance within which [`RERANK`] rows lie, and the next scores those rows.
    pub(super) fn nearest(&self, query: &[f32]) -> Vec<(f32, usize)> {
        if self.len() <= RERANK {
            return self.exact(query);
        }
        let query_code = code(query);
        let arch = Arch::new();
        let mut by_distance = [0usize; CODE_BITS + 1];
        arch.dispatch(EachDistance {
            codes: &self.codes,
            query: query_code,
            each: |_, d| by_distance[d as usize] += 1,
        });
        let (mut cutoff, mut nearer) = (0, 0);
        for (distance, &rows) in by_distance.iter().enumerate() {
            if nearer + rows >= RERANK {
                cutoff = distance as u32;
                break;
            }
            nearer += rows;
        }
        let mut at_cutoff = RERANK - nearer;
        let mut near = Vec::with_capacity(RERANK);
        arch.dispatch(EachDistance {
            codes: &self.codes,
            query: query_code,
            each: |slot, d| {
                if d < cutoff || (d == cutoff && at_cutoff > 0) {
                    at_cutoff -= usize::from(d == cutoff);
                    near.push(slot);
                }
            },
        });
        near.into_iter()
            .map(|slot| (dot(self.row(slot), query), slot))
            .collect()
    }

    /// The similarity of every row to `query`, by slot.
    pub(super) fn exact(&self, query: &[f32]) -> Vec<(f32, usize)> {
        (0..self.len())
            .map(|slot| (dot(self.row(slot), query), slot))
            .collect()
    }
}

/// Cosine similarity of unit vectors of equal length, summed in eight lanes so the
/// compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (a, b) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    let mut lanes = [0.0f32; 8];
    for (x, y) in a.0.iter().zip(b.0) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    let tail: f32 = a.1.iter().zip(b.1).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// One pass over `codes` calling `each` with every slot and its distance to `query`,
/// compiled for the best instruction set the CPU has (`popcnt` and AVX2 where present,
/// chosen at run time by `pulp`) because the baseline x86-64 target has no `popcnt`.
struct EachDistance<'a, F> {
    codes: &'a [Code],
    query: Code,
    each: F,
}

impl<F: FnMut(usize, u32)> WithSimd for EachDistance<'_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Self {
            codes,
            query,
            mut each,
        } = self;
        for (slot, code) in codes.iter().enumerate() {
            each(slot, hamming(code, &query));
        }
    }
}

/// Bits set in `a ^ b`.
#[inline(always)]
fn hamming(a: &Code, b: &Code) -> u32 {
    a.iter().zip(b).map(|(a, b)| (a ^ b).count_ones()).sum()
}

/// The code of `embedding`: bit `b` is the sign of the sum of coordinates `b`, `b +`
/// [`CODE_BITS`], … each with a fixed pseudo-random sign (so a common offset in the
/// embeddings does not set every bit alike).
fn code(embedding: &[f32]) -> Code {
    let mut sums = [0.0f32; CODE_BITS];
    for (chunk, signs) in embedding.chunks(CODE_BITS).zip(SIGNS.iter().cycle()) {
        for (bit, (sum, x)) in sums.iter_mut().zip(chunk).enumerate() {
            *sum += if (signs >> bit) & 1 == 1 { -x } else { *x };
        }
    }
    let mut code = [0u64; CODE_WORDS];
    for (bit, sum) in sums.iter().enumerate() {
        if *sum > 0.0 {
            code[bit / 64] |= 1 << (bit % 64);
        }
    }
    code
}

/// The sign of each coordinate in its sum, a `u128` per [`CODE_BITS`] coordinates (fixed
/// random bits; a change would only reshuffle which rows are scored).
const SIGNS: [u128; 4] = [
    0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834,
    0x1082_276b_f3a2_7251_f86c_6a11_d0c1_8e95,
    0x2545_f491_4f6c_dd1d_d6e8_feb8_6659_fd93,
    0xbf58_476d_1ce4_e5b9_94d0_49bb_1331_11eb,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }

        fn unit(&mut self, dims: usize) -> Vec<f32> {
            normalise((0..dims).map(|_| self.next()).collect())
        }
    }

    fn normalise(v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn best(scored: &[(f32, usize)]) -> Option<usize> {
        scored
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|&(_, slot)| slot)
    }

    #[test]
    fn the_code_pass_finds_the_exact_best_for_near_duplicates() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut index = Index::new(384);
        let stored: Vec<Vec<f32>> = (0..5000).map(|_| rng.unit(384)).collect();
        for v in &stored {
            index.push(v);
        }
        let (mut queries, mut agree) = (0, 0);
        // Noise from a paraphrase (cosine about 0.99) to the edge of a typical threshold
        // (about 0.92).
        for (i, noise) in (0..300).zip([0.02, 0.05, 0.075].into_iter().cycle()) {
            let target = &stored[(i * 7919) % stored.len()];
            let query = normalise(target.iter().map(|x| x + noise * rng.next()).collect());
            let exact = index.exact(&query);
            if exact.iter().all(|&(s, _)| s < 0.9) {
                continue;
            }
            queries += 1;
            agree += usize::from(best(&index.nearest(&query)) == best(&exact));
        }
        assert!(queries > 250, "{queries} queries near a row");
        assert!(agree * 100 >= queries * 99, "{agree} of {queries}");
    }

    #[test]
    fn exactly_the_rerank_count_is_scored_however_the_distances_tie() {
        let mut rng = Rng(7);
        let mut index = Index::new(16);
        let same = rng.unit(16);
        for _ in 0..RERANK * 2 {
            index.push(&same);
        }
        for _ in 0..RERANK {
            index.push(&rng.unit(16));
        }
        let scored = index.nearest(&same);
        assert_eq!(scored.len(), RERANK);
        assert!(
            scored.iter().all(|&(_, slot)| slot < RERANK * 2),
            "the tied nearest"
        );
    }

    #[test]
    fn removal_moves_the_last_row_into_the_gap() {
        let mut index = Index::new(2);
        for v in [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]] {
            index.push(&v);
        }
        index.swap_remove(0);
        assert_eq!(index.len(), 2);
        assert_eq!(index.row(0), [0.6, 0.8]);
        assert_eq!(index.row(1), [0.0, 1.0]);
        index.swap_remove(1);
        assert_eq!(index.row(0), [0.6, 0.8]);
        assert_eq!(index.row(1), [] as [f32; 0]);
        assert_eq!(best(&index.nearest(&[0.6, 0.8])), Some(0));
    }

    #[test]
    fn dot_and_hamming_count_every_element() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f32).sum::<f32>());
        assert_eq!(hamming(&[u64::MAX, 0], &[0, 0]), 64);
        assert_eq!(hamming(&[u64::MAX, u64::MAX], &[0, 0]), 128);
        assert_eq!(hamming(&[0b1011, 1 << 63], &[0, 0]), 4);
    }
}
