//! Which device the models run on: the CPU unless the crate is built with `--features cuda`.

use candle_core::Device;

/// The device models run on by default.
///
/// Without the `cuda` feature this is always the CPU. With it, the first CUDA device, falling
/// back to the CPU (with a warning) when no GPU can be opened, so one binary serves both
/// kinds of node.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        match Device::new_cuda(0) {
            Ok(device) => return device,
            Err(err) => {
                tracing::warn!(error = %err, "no usable CUDA device; running the classifiers on the CPU")
            }
        }
    }
    Device::Cpu
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn default_build_runs_on_the_cpu() {
        assert!(super::default_device().is_cpu());
    }
}
