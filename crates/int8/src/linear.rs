//! A linear layer `y = x·Wᵀ + b` with int8 weights and activations quantised per row at run
//! time, multiplied with the CPU's byte dot products (AVX-512BW or AVX2 `maddubs`, chosen
//! at run time by `pulp`; plain integer loops elsewhere).
//!
//! Weights are symmetric, one scale per output, in -63..=63; each input row is mapped from
//! its own [min, max] onto 0..=255. `maddubs` multiplies unsigned by signed bytes and adds
//! pairs into 16 bits, which 2 × 255 × 63 cannot saturate; of the two ways to fit (ONNX
//! Runtime narrows the activations instead), this one measured closer to f32 on MiniLM,
//! whose activations vary more than its weights. Asymmetric, because the input of BERT's
//! second FFN layer is a GELU's output, nearly all of it above -0.17; the row's minimum
//! comes back exactly through each output's weight sum.

#[cfg(target_arch = "x86_64")]
use pulp::x86::{V3, V4};
use rayon::prelude::*;

/// Bytes per step of the widest kernel; rows are padded to a multiple of it.
const STEP: usize = 64;
/// Largest quantised activation.
const LEVELS: f32 = 255.0;
/// Largest magnitude of a quantised weight.
const WEIGHT_MAX: f32 = 63.0;
/// Rows of input and of weights multiplied together per tile.
const TILE: usize = 4;

/// A linear layer's weights in int8.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    inputs: usize,
    padded: usize,
    outputs: usize,
    /// `outputs × padded`, zero past `inputs`.
    weights: Vec<i8>,
    /// Per output: the weight scale.
    scales: Vec<f32>,
    /// Per output: `Σ w`, to add back each row's minimum.
    sums: Vec<i32>,
    bias: Vec<f32>,
}

impl Int8Linear {
    /// Quantises `weight` (`outputs × inputs`, row-major, as PyTorch stores `Linear`).
    pub fn new(weight: &[f32], bias: Option<&[f32]>, outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        let padded = inputs.div_ceil(STEP) * STEP;
        let mut weights = vec![0i8; outputs * padded];
        let mut scales = Vec::with_capacity(outputs);
        let mut sums = Vec::with_capacity(outputs);
        for (row, quantised) in weight.chunks(inputs).zip(weights.chunks_mut(padded)) {
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = if max > 0.0 { max / WEIGHT_MAX } else { 1.0 };
            let mut sum = 0i32;
            for (q, w) in quantised.iter_mut().zip(row) {
                *q = (w / scale).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8;
                sum += i32::from(*q);
            }
            scales.push(scale);
            sums.push(sum);
        }
        Self {
            inputs,
            padded,
            outputs,
            weights,
            scales,
            sums,
            bias: bias.map_or_else(|| vec![0.0; outputs], <[f32]>::to_vec),
        }
    }

    /// `input` is `rows × inputs`; returns `rows × outputs`. Rows are split across rayon's
    /// threads when there are enough of them.
    pub fn forward(&self, input: &[f32]) -> Vec<f32> {
        self.forward_map(input, |y| y)
    }

    /// [`Self::forward`] with `map` applied to each output as it is written (an activation:
    /// no second pass over a large output).
    pub fn forward_map(
        &self,
        input: &[f32],
        map: impl Fn(f32) -> f32 + Copy + Send + Sync,
    ) -> Vec<f32> {
        let rows = input.len() / self.inputs;
        let mut out = vec![0f32; rows * self.outputs];
        let per_task = rows
            .div_ceil(rayon::current_num_threads())
            .max(ROWS_PER_TASK);
        out.par_chunks_mut(per_task * self.outputs)
            .zip(input.par_chunks(per_task * self.inputs))
            .for_each(|(out, input)| self.forward_rows(input, out, map));
        out
    }

    /// One task's rows of [`Self::forward_map`].
    fn forward_rows(&self, input: &[f32], out: &mut [f32], map: impl Fn(f32) -> f32) {
        let (bytes, ranges) = quantise_rows(input, self.inputs, self.padded);
        let mut output = Output {
            map,
            values: out,
            ranges: &ranges,
            layer: self,
        };
        dot_products(&bytes, &self.weights, self.padded, &mut output);
    }
}

/// Fewest rows worth a task of their own.
const ROWS_PER_TASK: usize = 8;

/// Where the integer sums go: scaled back to floats, bias added.
struct Output<'a, F> {
    map: F,
    values: &'a mut [f32],
    ranges: &'a [Range],
    layer: &'a Int8Linear,
}

/// How a row was quantised: `x ≈ min + step × q`.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: f32,
    step: f32,
}

impl Range {
    /// One output from its integer dot product: the row's range and the output's weight
    /// sum, scale and bias.
    #[inline(always)]
    fn dequantise(self, sum: i32, weight_sum: i32, scale: f32, bias: f32) -> f32 {
        (self.step * sum as f32 + self.min * weight_sum as f32) * scale + bias
    }
}

/// Each row of `input` (`inputs` wide) as bytes in 0..=[`LEVELS`] (`padded` wide, zero
/// after), and how to read them back.
fn quantise_rows(input: &[f32], inputs: usize, padded: usize) -> (Vec<u8>, Vec<Range>) {
    let rows = input.len() / inputs;
    let mut bytes = vec![0u8; rows * padded];
    let mut ranges = Vec::with_capacity(rows);
    for (row, quantised) in input.chunks(inputs).zip(bytes.chunks_mut(padded)) {
        let (min, max) = row
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        let step = if max > min { (max - min) / LEVELS } else { 1.0 };
        let inverse = 1.0 / step;
        for (q, x) in quantised.iter_mut().zip(row) {
            // Non-negative, so adding a half and truncating rounds to nearest.
            *q = ((x - min) * inverse + 0.5) as u8;
        }
        ranges.push(Range { min, step });
    }
    (bytes, ranges)
}

/// `out[i][j] = Σ a[i]·w[j]` over rows `padded` bytes wide, with the best kernel this CPU has.
fn dot_products(a: &[u8], w: &[i8], padded: usize, out: &mut impl Sink) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(simd) = V4::try_new() {
            return simd.vectorize(
                #[inline(always)]
                || tiled(Avx512(simd), a, w, padded, out),
            );
        }
        if let Some(simd) = V3::try_new() {
            return simd.vectorize(
                #[inline(always)]
                || tiled(Avx2(simd), a, w, padded, out),
            );
        }
    }
    tiled(Portable, a, w, padded, out);
}

/// Takes each dot product as the tiles yield it.
trait Sink {
    fn outputs(&self) -> usize;
    fn put(&mut self, row: usize, output: usize, sum: i32);

    /// `TILE` neighbouring outputs of a row at once.
    #[inline(always)]
    fn put_row(&mut self, row: usize, first: usize, sums: &[i32; TILE]) {
        for (c, sum) in sums.iter().enumerate() {
            self.put(row, first + c, *sum);
        }
    }
}

impl<F: Fn(f32) -> f32> Sink for Output<'_, F> {
    #[inline(always)]
    fn outputs(&self) -> usize {
        self.layer.outputs
    }

    #[inline(always)]
    fn put(&mut self, row: usize, output: usize, sum: i32) {
        let layer = self.layer;
        self.values[row * layer.outputs + output] = (self.map)(self.ranges[row].dequantise(
            sum,
            layer.sums[output],
            layer.scales[output],
            layer.bias[output],
        ));
    }

    #[inline(always)]
    fn put_row(&mut self, row: usize, first: usize, sums: &[i32; TILE]) {
        let layer = self.layer;
        let range = self.ranges[row];
        let out = &mut self.values[row * layer.outputs + first..][..TILE];
        let weight_sums = &layer.sums[first..][..TILE];
        let scales = &layer.scales[first..][..TILE];
        let bias = &layer.bias[first..][..TILE];
        for c in 0..TILE {
            out[c] = (self.map)(range.dequantise(sums[c], weight_sums[c], scales[c], bias[c]));
        }
    }
}

/// Dot products of up to `MR` activation rows with up to `NR` weight rows at once.
trait Tile: Copy {
    fn tile<const MR: usize, const NR: usize>(
        self,
        a: [&[u8]; MR],
        w: [&[i8]; NR],
    ) -> [[i32; NR]; MR];
}

/// Walks the output in `TILE × TILE` blocks, weight rows outermost so each block of weights
/// is read once while the (smaller) activations stay in cache.
#[inline(always)]
fn tiled<T: Tile>(kernel: T, a: &[u8], w: &[i8], padded: usize, out: &mut impl Sink) {
    let rows = a.len() / padded;
    let outputs = out.outputs();
    let a_row = |i: usize| &a[i * padded..(i + 1) * padded];
    let w_row = |j: usize| &w[j * padded..(j + 1) * padded];
    let mut j = 0;
    while j < outputs {
        let wide = j + TILE <= outputs;
        let mut i = 0;
        while i < rows {
            let tall = i + TILE <= rows;
            match (tall, wide) {
                (true, true) => {
                    let sums = kernel.tile::<TILE, TILE>(
                        std::array::from_fn(|r| a_row(i + r)),
                        std::array::from_fn(|c| w_row(j + c)),
                    );
                    for (r, sums) in sums.iter().enumerate() {
                        out.put_row(i + r, j, sums);
                    }
                }
                (false, true) => {
                    let [sums] =
                        kernel.tile::<1, TILE>([a_row(i)], std::array::from_fn(|c| w_row(j + c)));
                    out.put_row(i, j, &sums);
                }
                (true, false) => {
                    let sums =
                        kernel.tile::<TILE, 1>(std::array::from_fn(|r| a_row(i + r)), [w_row(j)]);
                    for (r, [sum]) in sums.iter().enumerate() {
                        out.put(i + r, j, *sum);
                    }
                }
                (false, false) => {
                    let [[sum]] = kernel.tile::<1, 1>([a_row(i)], [w_row(j)]);
                    out.put(i, j, sum);
                }
            }
            i += if tall { TILE } else { 1 };
        }
        j += if wide { TILE } else { 1 };
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512(V4);

#[cfg(target_arch = "x86_64")]
impl Tile for Avx512 {
    #[inline(always)]
    fn tile<const MR: usize, const NR: usize>(
        self,
        a: [&[u8]; MR],
        w: [&[i8]; NR],
    ) -> [[i32; NR]; MR] {
        let V4 {
            sse2,
            avx,
            avx2,
            avx512f,
            avx512bw,
            ..
        } = self.0;
        let ones = avx512f._mm512_set1_epi16(1);
        let mut acc = [[avx512f._mm512_setzero_si512(); NR]; MR];
        let a = a.map(|row| row.as_chunks::<64>().0);
        let w = w.map(|row| row.as_chunks::<64>().0);
        for step in 0..a[0].len() {
            let weights: [_; NR] = std::array::from_fn(|c| pulp::cast(w[c][step]));
            for (acc, a) in acc.iter_mut().zip(&a) {
                let x = pulp::cast(a[step]);
                for (acc, weights) in acc.iter_mut().zip(&weights) {
                    let pairs = avx512bw._mm512_maddubs_epi16(x, *weights);
                    *acc = avx512f._mm512_add_epi32(*acc, avx512bw._mm512_madd_epi16(pairs, ones));
                }
            }
        }
        let mut sums = [[0i32; NR]; MR];
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            if let (Ok(four), Ok(out)) = (
                <&[_; 4]>::try_from(&acc[..]),
                <&mut [i32; 4]>::try_from(&mut sums[..]),
            ) {
                // Four sums at once: interleave and add, then fold the 128-bit lanes.
                let [a, b, c, d] = *four;
                let ab = avx512f._mm512_add_epi32(
                    avx512f._mm512_unpacklo_epi32(a, b),
                    avx512f._mm512_unpackhi_epi32(a, b),
                );
                let cd = avx512f._mm512_add_epi32(
                    avx512f._mm512_unpacklo_epi32(c, d),
                    avx512f._mm512_unpackhi_epi32(c, d),
                );
                let abcd = avx512f._mm512_add_epi32(
                    avx512f._mm512_unpacklo_epi64(ab, cd),
                    avx512f._mm512_unpackhi_epi64(ab, cd),
                );
                let half = avx2._mm256_add_epi32(
                    avx512f._mm512_castsi512_si256(abcd),
                    avx512f._mm512_extracti64x4_epi64::<1>(abcd),
                );
                *out = pulp::cast(sse2._mm_add_epi32(
                    avx._mm256_castsi256_si128(half),
                    avx2._mm256_extracti128_si256::<1>(half),
                ));
            } else {
                for (sum, v) in sums.iter_mut().zip(acc) {
                    let lanes: [i32; 16] = pulp::cast(*v);
                    *sum = lanes.iter().sum();
                }
            }
        }
        sums
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2(V3);

#[cfg(target_arch = "x86_64")]
impl Tile for Avx2 {
    #[inline(always)]
    fn tile<const MR: usize, const NR: usize>(
        self,
        a: [&[u8]; MR],
        w: [&[i8]; NR],
    ) -> [[i32; NR]; MR] {
        let V3 {
            sse2, avx, avx2, ..
        } = self.0;
        let ones = avx._mm256_set1_epi16(1);
        let mut acc = [[avx._mm256_setzero_si256(); NR]; MR];
        let a = a.map(|row| row.as_chunks::<32>().0);
        let w = w.map(|row| row.as_chunks::<32>().0);
        for step in 0..a[0].len() {
            let weights: [_; NR] = std::array::from_fn(|c| pulp::cast(w[c][step]));
            for (acc, a) in acc.iter_mut().zip(&a) {
                let x = pulp::cast(a[step]);
                for (acc, weights) in acc.iter_mut().zip(&weights) {
                    let pairs = avx2._mm256_maddubs_epi16(x, *weights);
                    *acc = avx2._mm256_add_epi32(*acc, avx2._mm256_madd_epi16(pairs, ones));
                }
            }
        }
        let mut sums = [[0i32; NR]; MR];
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            if let (Ok(four), Ok(out)) = (
                <&[_; 4]>::try_from(&acc[..]),
                <&mut [i32; 4]>::try_from(&mut sums[..]),
            ) {
                // As the AVX-512 kernel does, on two 128-bit lanes.
                let [a, b, c, d] = *four;
                let ab = avx2._mm256_add_epi32(
                    avx2._mm256_unpacklo_epi32(a, b),
                    avx2._mm256_unpackhi_epi32(a, b),
                );
                let cd = avx2._mm256_add_epi32(
                    avx2._mm256_unpacklo_epi32(c, d),
                    avx2._mm256_unpackhi_epi32(c, d),
                );
                let abcd = avx2._mm256_add_epi32(
                    avx2._mm256_unpacklo_epi64(ab, cd),
                    avx2._mm256_unpackhi_epi64(ab, cd),
                );
                *out = pulp::cast(sse2._mm_add_epi32(
                    avx._mm256_castsi256_si128(abcd),
                    avx2._mm256_extracti128_si256::<1>(abcd),
                ));
            } else {
                for (sum, v) in sums.iter_mut().zip(acc) {
                    let lanes: [i32; 8] = pulp::cast(*v);
                    *sum = lanes.iter().sum();
                }
            }
        }
        sums
    }
}

/// Plain integer loops, for CPUs without the kernels above.
#[derive(Clone, Copy)]
struct Portable;

impl Tile for Portable {
    #[inline(always)]
    fn tile<const MR: usize, const NR: usize>(
        self,
        a: [&[u8]; MR],
        w: [&[i8]; NR],
    ) -> [[i32; NR]; MR] {
        a.map(|a| {
            w.map(|w| {
                a.iter()
                    .zip(w)
                    .map(|(x, w)| i32::from(*x) * i32::from(*w))
                    .sum()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), uniform in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn exact(input: &[f32], weight: &[f32], bias: &[f32], inputs: usize) -> Vec<f32> {
        input
            .chunks(inputs)
            .flat_map(|x| {
                weight
                    .chunks(inputs)
                    .zip(bias)
                    .map(|(w, b)| x.iter().zip(w).map(|(x, w)| x * w).sum::<f32>() + b)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn matches_f32_within_quantisation_error_at_every_tile_shape() {
        // 7 rows and 6 outputs exercise full tiles and both tails; 100 inputs the padding.
        for (rows, outputs, inputs) in [(7, 6, 100), (4, 4, 64), (1, 1, 384), (9, 13, 200)] {
            let input = values(1 + rows as u64, rows * inputs);
            let weight: Vec<f32> = values(99 + outputs as u64, outputs * inputs)
                .iter()
                .map(|w| w * 0.1)
                .collect();
            let bias = values(7, outputs);
            let layer = Int8Linear::new(&weight, Some(&bias), outputs, inputs);
            let got = layer.forward(&input);
            let want = exact(&input, &weight, &bias, inputs);
            assert_eq!(got.len(), want.len());
            // Each product is off by at most half a step of each factor: bound the sum.
            let bound = 0.1 * inputs as f32 * (0.5 / 63.0 + 1.0 / 255.0) * 0.25;
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= bound, "{g} vs {w} (bound {bound})");
            }
        }
    }

    /// The integer sums themselves, `rows × outputs`.
    struct Sums(Vec<i32>, usize);

    impl Sink for Sums {
        fn outputs(&self) -> usize {
            self.1
        }

        fn put(&mut self, row: usize, output: usize, sum: i32) {
            self.0[row * self.1 + output] = sum;
        }
    }

    #[test]
    fn every_kernel_gives_the_same_integers() {
        let (rows, outputs, padded) = (6, 5, 128);
        let a: Vec<u8> = (0..rows * padded).map(|i| (i * 37 % 128) as u8).collect();
        let w: Vec<i8> = (0..outputs * padded)
            .map(|i| ((i * 53 % 255) as i32 - 127) as i8)
            .collect();
        let mut portable = Sums(vec![0; rows * outputs], outputs);
        tiled(Portable, &a, &w, padded, &mut portable);
        let mut best = Sums(vec![0; rows * outputs], outputs);
        dot_products(&a, &w, padded, &mut best);
        assert_eq!(portable.0, best.0);
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = V3::try_new() {
            let mut avx2 = Sums(vec![0; rows * outputs], outputs);
            simd.vectorize(|| tiled(Avx2(simd), &a, &w, padded, &mut avx2));
            assert_eq!(portable.0, avx2.0);
        }
    }

    #[test]
    fn a_zero_row_stays_zero_plus_bias() {
        let layer = Int8Linear::new(&[0.5, -0.25, 0.0, 1.0], Some(&[1.0, 2.0]), 2, 2);
        assert_eq!(layer.forward(&[0.0, 0.0]), vec![1.0, 2.0]);
    }
}
