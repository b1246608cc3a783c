//! Scaled dot-product attention in f32, with each group of queries sharing the loads of
//! keys and values, and each text's query rows split across threads.

use rayon::prelude::*;

use crate::LANES;
use crate::math::{exp, sum};

/// Scaled dot-product attention over each text's own tokens, per head. `qkv` holds each
/// token's query, key and value side by side (`3 × hidden` per token, texts padded to
/// `longest` tokens); returns `hidden` per token. Each text's query rows are split across
/// rayon's threads.
pub fn attention(
    qkv: &[f32],
    hidden: usize,
    heads: usize,
    lengths: &[usize],
    longest: usize,
) -> Vec<f32> {
    let mut context = vec![0f32; lengths.len() * longest * hidden];
    let per_task = longest
        .div_ceil(rayon::current_num_threads())
        .max(QUERIES_PER_TASK);
    for ((text, &length), context) in lengths
        .iter()
        .enumerate()
        .zip(context.chunks_mut(longest * hidden))
    {
        let qkv = &qkv[text * longest * 3 * hidden..][..longest * 3 * hidden];
        context
            .par_chunks_mut(per_task * hidden)
            .enumerate()
            .for_each(|(task, out)| {
                pulp::Arch::new().dispatch(Attend {
                    hidden,
                    heads,
                    qkv,
                    // Padding attends too (pooling discards its rows) but is never attended.
                    length: length.clamp(1, longest),
                    first: task * per_task,
                    out,
                });
            });
    }
    context
}

/// Fewest query rows worth a task of their own.
const QUERIES_PER_TASK: usize = 8;

/// Attention for a run of one text's query rows, every head.
struct Attend<'a> {
    hidden: usize,
    heads: usize,
    /// The text's rows of query, key and value.
    qkv: &'a [f32],
    /// Tokens that may be attended: the text's own.
    length: usize,
    /// The first query row of `out`.
    first: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for Attend<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Self {
            hidden,
            heads,
            qkv,
            length,
            first,
            out,
        } = self;
        let size = hidden / heads;
        let scale = 1.0 / (size as f32).sqrt();
        let token = |t: usize| &qkv[t * 3 * hidden..][..3 * hidden];
        // Keys transposed (`size × keys`, keys padded to whole chunks) so that a chunk of
        // scores is a sum of rows held in registers; values contiguous (`keys × size`).
        let padded = length.div_ceil(LANES) * LANES;
        let mut keys = vec![0f32; size * padded];
        let mut values = vec![0f32; length * size];
        let mut scores = vec![0f32; GROUP * padded];
        for head in 0..heads {
            let offset = head * size;
            for t in 0..length {
                let row = token(t);
                for (d, k) in row[hidden + offset..][..size].iter().enumerate() {
                    keys[d * padded + t] = *k;
                }
                values[t * size..][..size].copy_from_slice(&row[2 * hidden + offset..][..size]);
            }
            let rows = out.len() / hidden;
            // Queries in groups (the last one repeating its final row), so that each key
            // and value loaded serves every query of the group.
            for group in (0..rows).step_by(GROUP) {
                let members: [usize; GROUP] = std::array::from_fn(|g| (group + g).min(rows - 1));
                let queries = members.map(|r| &token(first + r)[offset..][..size]);
                for chunk in 0..padded / LANES {
                    let sums = weighted_rows(queries, &keys[chunk * LANES..], padded);
                    for (scores, sums) in scores.chunks_mut(padded).zip(sums) {
                        scores[chunk * LANES..][..LANES].copy_from_slice(&sums.map(|s| s * scale));
                    }
                }
                for scores in scores.chunks_mut(padded) {
                    let scores = &mut scores[..length];
                    let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
                    scores.iter_mut().for_each(|s| *s = exp(*s - max));
                    let total = sum(scores);
                    scores.iter_mut().for_each(|s| *s /= total);
                }
                let weights: [&[f32]; GROUP] =
                    std::array::from_fn(|g| &scores[g * padded..][..length]);
                for block in 0..size / LANES {
                    let sums = weighted_rows(weights, &values[block * LANES..], size);
                    for (g, sums) in sums.iter().enumerate().take(rows - group) {
                        out[(group + g) * hidden + offset + block * LANES..][..LANES]
                            .copy_from_slice(sums);
                    }
                }
                for d in size / LANES * LANES..size {
                    for (g, weights) in weights.iter().enumerate().take(rows - group) {
                        out[(group + g) * hidden + offset + d] = weights
                            .iter()
                            .zip(values.chunks(size))
                            .map(|(p, v)| p * v[d])
                            .sum();
                    }
                }
            }
        }
    }
}

/// Query rows attended together.
const GROUP: usize = 4;

/// For each `g`: `Σ_t weights[g][t] · rows[t · stride..][..LANES]`; the groups' sums are
/// independent chains of fused multiply-adds sharing each row's load.
#[inline(always)]
fn weighted_rows(weights: [&[f32]; GROUP], rows: &[f32], stride: usize) -> [[f32; LANES]; GROUP] {
    let mut sums = [[0f32; LANES]; GROUP];
    let steps = weights[0].len();
    for t in 0..steps {
        let row = &rows[t * stride..][..LANES];
        for (sum, weights) in sums.iter_mut().zip(&weights) {
            let w = weights[t];
            for (a, r) in sum.iter_mut().zip(row) {
                *a = w.mul_add(*r, *a);
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention as the textbook writes it, one query and one head at a time.
    fn naive(
        qkv: &[f32],
        hidden: usize,
        heads: usize,
        lengths: &[usize],
        longest: usize,
    ) -> Vec<f32> {
        let size = hidden / heads;
        let mut out = vec![0f32; lengths.len() * longest * hidden];
        for (text, &length) in lengths.iter().enumerate() {
            let token = |t: usize| &qkv[(text * longest + t) * 3 * hidden..][..3 * hidden];
            for head in 0..heads {
                let o = head * size;
                for i in 0..longest {
                    let q = &token(i)[o..][..size];
                    let scores: Vec<f32> = (0..length)
                        .map(|t| {
                            let k = &token(t)[hidden + o..][..size];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (size as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f32 = e.iter().sum();
                    for d in 0..size {
                        out[(text * longest + i) * hidden + o + d] = (0..length)
                            .map(|t| e[t] / total * token(t)[2 * hidden + o + d])
                            .sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_textbook_for_padded_texts_and_odd_sizes() {
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        // 40 tokens: several query groups and key chunks; 2 x 20 heads: a size with a tail.
        for (hidden, heads, lengths, longest) in [
            (64, 2, vec![40, 13], 40),
            (40, 2, vec![5, 1, 9], 9),
            (32, 1, vec![17], 17),
            (384, 12, vec![11], 11),
            (384, 12, vec![100, 60], 100),
        ] {
            let qkv: Vec<f32> = (0..lengths.len() * longest * 3 * hidden)
                .map(|_| 3.0 * next())
                .collect();
            let got = attention(&qkv, hidden, heads, &lengths, longest);
            let want = naive(&qkv, hidden, heads, &lengths, longest);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-4,
                    "{g} vs {w} ({hidden}, {heads}, {lengths:?})"
                );
            }
        }
    }
}
