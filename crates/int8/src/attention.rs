//! Scaled dot-product attention in f32, with each group of queries sharing the loads of
//! keys and values, and each text's query rows split across threads.
//!
//! Scores come out in powers of two (`log2 e` is folded into the keys' scale), so that
//! softmax's exponentials are [`exp2`]s, and the output rows are divided by softmax's sum
//! instead of every weight.

use rayon::prelude::*;

use crate::LANES;
use crate::math::exp2;

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
        // `e^(q·k / √size) = 2^(q·k · log2 e / √size)`.
        let scale = std::f32::consts::LOG2_E / (size as f32).sqrt();
        let rows = out.len() / hidden;
        // Keys scaled and transposed in blocks of `size × KEYS` (zeros past the text), so
        // that a block of scores is a sum of rows held in registers; values likewise in
        // blocks of `keys × WIDTH` columns (zeros past the head's).
        let padded = length.div_ceil(KEYS) * KEYS;
        let width = size.div_ceil(WIDTH) * WIDTH;
        let mut keys = vec![[0f32; KEYS]; size * padded / KEYS];
        let mut values = vec![[0f32; WIDTH]; length * width / WIDTH];
        let mut scores = vec![0f32; GROUP * padded];
        for head in 0..heads {
            let offset = head * size;
            for t in 0..length {
                let row = &qkv[t * 3 * hidden + offset..];
                let block = &mut keys[t / KEYS * size..][..size];
                for (keys, k) in block.iter_mut().zip(&row[hidden..][..size]) {
                    keys[t % KEYS] = k * scale;
                }
                for (block, v) in row[2 * hidden..][..size].chunks(WIDTH).enumerate() {
                    values[block * length + t][..v.len()].copy_from_slice(v);
                }
            }
            // Queries in groups (the last one repeating its final row), so that each key
            // and value loaded serves every query of the group.
            for group in (0..rows).step_by(GROUP) {
                let queries: [&[f32]; GROUP] = std::array::from_fn(|g| {
                    let row = first + (group + g).min(rows - 1);
                    &qkv[row * 3 * hidden + offset..][..size]
                });
                for (block, keys) in keys.chunks(size).enumerate() {
                    let sums = weighted_rows(queries, keys);
                    for (scores, sums) in scores.chunks_mut(padded).zip(&sums) {
                        scores[block * KEYS..][..KEYS].copy_from_slice(sums);
                    }
                }
                // Softmax's weights left unnormalised: the output rows are divided instead.
                let mut totals = [0f32; GROUP];
                for (total, scores) in totals.iter_mut().zip(scores.chunks_mut(padded)) {
                    *total = exponentiate(&mut scores[..length]);
                }
                let weights: [&[f32]; GROUP] =
                    std::array::from_fn(|g| &scores[g * padded..][..length]);
                for (block, values) in values.chunks(length).enumerate() {
                    let sums = weighted_rows(weights, values);
                    let columns = WIDTH.min(size - block * WIDTH);
                    for (g, (sums, total)) in sums.iter().zip(totals).enumerate().take(rows - group)
                    {
                        let out = &mut out[(group + g) * hidden + offset + block * WIDTH..];
                        for (o, s) in out[..columns].iter_mut().zip(sums) {
                            *o = s / total;
                        }
                    }
                }
            }
        }
    }
}

/// Query rows attended together.
const GROUP: usize = 4;

/// Columns of values summed together: two vector registers, so that each query of a group
/// feeds two independent chains of fused multiply-adds, eight in all, enough to keep both
/// of a core's FMA units busy.
const WIDTH: usize = 2 * LANES;

/// Keys scored together: four vector registers, so that each query element loaded feeds
/// four chains.
const KEYS: usize = 4 * LANES;

/// For each `g`: `Σ_t weights[g][t] · rows[t]`; the sums are independent chains of fused
/// multiply-adds sharing each row's load.
#[inline(always)]
fn weighted_rows<const W: usize>(weights: [&[f32]; GROUP], rows: &[[f32; W]]) -> [[f32; W]; GROUP] {
    let weights = weights.map(|w| &w[..rows.len()]);
    let mut sums = [[0f32; W]; GROUP];
    for (t, row) in rows.iter().enumerate() {
        for (sum, weights) in sums.iter_mut().zip(&weights) {
            let w = weights[t];
            for (a, r) in sum.iter_mut().zip(row) {
                *a = w.mul_add(*r, *a);
            }
        }
    }
    sums
}

/// Replaces each score `s` (a power of two) by `2^(s - max)` and returns their sum: softmax
/// before its division, in [`LANES`] separate maxima and sums so that the compiler may
/// vectorise it.
#[inline(always)]
fn exponentiate(scores: &mut [f32]) -> f32 {
    let (chunks, tail) = scores.as_chunks::<LANES>();
    let mut maxima = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (m, s) in maxima.iter_mut().zip(chunk) {
            *m = m.max(*s);
        }
    }
    let max = maxima
        .into_iter()
        .chain(tail.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    let (chunks, tail) = scores.as_chunks_mut::<LANES>();
    let mut sums = [0f32; LANES];
    for chunk in chunks {
        for (sum, s) in sums.iter_mut().zip(chunk) {
            *s = exp2(*s - max);
            *sum += *s;
        }
    }
    for s in tail.iter_mut() {
        *s = exp2(*s - max);
    }
    sums.iter().sum::<f32>() + tail.iter().sum::<f32>()
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
            // Heads of 64 (BERT-base) and 65 columns: two and three blocks of values.
            (128, 2, vec![70], 70),
            (130, 2, vec![3, 9], 9),
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
