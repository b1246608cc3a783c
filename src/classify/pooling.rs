//! Sentence embeddings from hidden states: the mean over real (unpadded) tokens, then unit
//! length, as sentence-transformers does for MiniLM, so cosine similarity is a dot product.

use candle_core::{Result, Tensor};

/// Mean of `hidden` `[batch, len, dim]` over the tokens where `mask` `[batch, len]` is 1.
pub(crate) fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1.0, f64::MAX)?;
    summed.broadcast_div(&counts)
}

/// Scales each row of `x` `[batch, dim]` to unit L2 norm (a zero row stays zero).
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norms = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mean_ignores_padding_and_normalises() -> Result<()> {
        let hidden = Tensor::new(
            &[
                [[1f32, 0.], [3., 0.], [100., 100.]],
                [[0., 2.], [0., 2.], [0., 2.]],
            ],
            &Device::Cpu,
        )?;
        let mask = Tensor::new(&[[1u32, 1, 0], [1, 1, 1]], &Device::Cpu)?;
        let pooled = mean_pool(&hidden, &mask)?;
        assert_eq!(pooled.to_vec2::<f32>()?, vec![vec![2., 0.], vec![0., 2.]]);
        let unit = l2_normalize(&pooled)?;
        assert_eq!(unit.to_vec2::<f32>()?, vec![vec![1., 0.], vec![0., 1.]]);
        Ok(())
    }
}
