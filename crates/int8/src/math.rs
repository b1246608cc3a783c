//! Elementwise functions and sums of the forward pass without libm calls, so the compiler
//! can vectorise the loops that use them.

use crate::LANES;

/// `e^x`, relative error below 2e-7 over the range softmax uses (x ≤ 0) and beyond.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp2(x.clamp(-87.0, 88.0) * std::f32::consts::LOG2_E)
}

/// `2^x`, relative error below 2e-7; [`exp`] without its multiplication, for callers that
/// can fold `log2 e` into a scale they apply anyway.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    // 2^x = 2^n · 2^f with n an integer and |f| ≤ 1/2. Adding 1.5 · 2^23 rounds x to an
    // integer held in the low bits of the sum, offset by 2^n's exponent bias (127): a bit
    // shift then makes 2^n, with no conversion to integers (which does not vectorise).
    const ROUND: f32 = 12_582_912.0 + 127.0;
    // Where 2^n and 2^n · 2^f stay normal floats.
    let x = x.clamp(-126.0, 127.0);
    let rounded = x + ROUND;
    let f = x - (rounded - ROUND);
    // 2^f by the Taylor series of e^(f·ln 2) to the 7th power: Σ (ln 2)^k / k! · f^k.
    let p = [
        1.525_273_4e-5,
        1.540_353e-4,
        1.333_355_8e-3,
        9.618_129e-3,
        5.550_411e-2,
        0.240_226_5,
        std::f32::consts::LN_2,
        1.0,
    ]
    .into_iter()
    .fold(0.0f32, |p, c| p.mul_add(f, c));
    p * f32::from_bits(rounded.to_bits() << 23)
}

/// `erf(x)`, absolute error below 2e-6 in f32 (Abramowitz and Stegun 7.1.28: 3e-7 exact).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let p = 1.0
        + a * (0.070_523_08
            + a * (0.042_282_01
                + a * (0.009_270_527
                    + a * (0.000_152_014_3 + a * (0.000_276_567_2 + a * 0.000_043_063_8)))));
    let p2 = p * p;
    let p4 = p2 * p2;
    let p8 = p4 * p4;
    let p16 = p8 * p8;
    (1.0 - 1.0 / p16).copysign(x)
}

/// GELU as BERT defines it: `x · Φ(x)` with the exact (erf) normal CDF.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's tanh approximation, for checkpoints that ask for it (`gelu_new`).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    // tanh(u) = 1 - 2 / (e^{2u} + 1)
    let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// `Σ f(x)`, in [`LANES`] separate sums so that the compiler may vectorise it.
#[inline(always)]
pub fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut lanes = [0f32; LANES];
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += f(*v);
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().map(|v| f(*v)).sum::<f32>()
}

/// `Σ x`, as [`sum_map`].
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    sum_map(x, |v| v)
}

/// `x += y`, elementwise.
#[inline(always)]
pub fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_standard_library() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!(
                (got - want).abs() <= 2e-6 * want,
                "exp({x}): {got} vs {want}"
            );
            if x.abs() <= 3.0 {
                let want = series_erf(f64::from(x));
                assert!((f64::from(erf(x)) - want).abs() < 2e-6, "erf({x})");
            } else {
                // erf(3) = 0.999_977_9 and erf only grows towards 1 beyond it.
                assert!((0.999_977..=1.0).contains(&erf(x).abs()), "erf({x})");
            }
        }
        assert_eq!(exp(-200.0), exp(-87.0));
    }

    #[test]
    fn exp2_matches_the_standard_library() {
        for i in -12_600..=12_700 {
            let x = i as f32 / 100.0;
            let (got, want) = (f64::from(exp2(x)), f64::from(x).exp2());
            assert!(
                (got - want).abs() <= 2e-7 * want,
                "exp2({x}): {got} vs {want}"
            );
        }
    }

    #[test]
    fn gelu_is_x_times_the_normal_cdf() {
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
    }

    /// erf by its Taylor series, exact to f64 rounding for |x| ≤ 3.
    fn series_erf(x: f64) -> f64 {
        // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}
