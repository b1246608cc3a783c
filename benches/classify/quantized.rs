//! 5. Candle's quantized matrix products against f32 at MiniLM's shapes.

use std::time::Instant;

use candle_core::{Device, Tensor};

/// 5. Every linear layer of MiniLM at 64 and 512 tokens: `tokens × in → out`, f32 against
///    Candle's quantized kernels, best of 30 runs (quantisation error as max |Δ| too).
pub fn run() {
    use candle_core::Module;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    println!("\n== linear layers: f32 vs Candle quantized (best of 30, ms) ==");
    println!(
        "{:>18} | {:>7} | {:>15} | {:>15} | {:>15}",
        "tokens x in -> out", "f32", "Q8_0 (max err)", "Q4_0 (max err)", "F16 (max err)"
    );
    let best = |f: &dyn Fn()| {
        f();
        (0..30)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    for (m, k, n) in [
        (64, 384, 384),
        (64, 384, 1536),
        (64, 1536, 384),
        (512, 384, 1536),
    ] {
        let weight = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).expect("weight");
        let input = Tensor::randn(0f32, 1.0, (1, m, k), &Device::Cpu).expect("input");
        let transposed = weight.t().expect("transpose");
        let exact = input.broadcast_matmul(&transposed).expect("f32 matmul");
        let f32_time = best(&|| {
            input.broadcast_matmul(&transposed).expect("f32 matmul");
        });
        let mut cells = Vec::new();
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0, GgmlDType::F16] {
            let q = QMatMul::from_qtensor(QTensor::quantize(&weight, dtype).expect("quantize"))
                .expect("qmatmul");
            let error = (q.forward(&input).expect("q forward") - &exact)
                .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
                .expect("error");
            let time = best(&|| {
                q.forward(&input).expect("q forward");
            });
            cells.push(format!("{:>6.3} ({:.3})", time.as_secs_f64() * 1e3, error));
        }
        println!(
            "{:>18} | {:>7.3} | {:>15} | {:>15} | {:>15}",
            format!("{m} x {k} -> {n}"),
            f32_time.as_secs_f64() * 1e3,
            cells[0],
            cells[1],
            cells[2]
        );
    }
}
