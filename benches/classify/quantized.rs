//! 5. MiniLM's linear layers: f32, our int8 layer, Candle's quantized products.

use std::time::Instant;

use candle_core::{Device, Tensor};

/// 5. Every linear layer of MiniLM at 64 and 512 tokens: `tokens × in → out`, f32 against
///    our int8 layer and Candle's quantized kernels, best of 30 runs (quantisation error as
///    max |Δ| too).
pub fn run() {
    use candle_core::Module;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use semantic_router_int8::Int8Linear;
    println!("\n== linear layers: f32 vs our int8 vs Candle quantized (best of 30, ms) ==");
    println!(
        "{:>18} | {:>7} | {:>15} | {:>15} | {:>15} | {:>15}",
        "tokens x in -> out",
        "f32",
        "int8 (max err)",
        "Q8_0 (max err)",
        "Q4_0 (max err)",
        "F16 (max err)"
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
        (512, 1536, 384),
    ] {
        let weight = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).expect("weight");
        let input = Tensor::randn(0f32, 1.0, (1, m, k), &Device::Cpu).expect("input");
        let transposed = weight.t().expect("transpose");
        let exact = input.broadcast_matmul(&transposed).expect("f32 matmul");
        let f32_time = best(&|| {
            input.broadcast_matmul(&transposed).expect("f32 matmul");
        });
        let mut cells = Vec::new();
        let flat =
            |t: &Tensor| -> Vec<f32> { t.flatten_all().and_then(|t| t.to_vec1()).expect("values") };
        let ours = Int8Linear::new(&flat(&weight), None, n, k);
        let rows = flat(&input);
        let error = ours
            .forward(&rows)
            .iter()
            .zip(flat(&exact))
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let time = best(&|| {
            ours.forward(&rows);
        });
        cells.push(format!("{:>6.3} ({:.3})", time.as_secs_f64() * 1e3, error));
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
            "{:>18} | {:>7.3} | {:>15} | {:>15} | {:>15} | {:>15}",
            format!("{m} x {k} -> {n}"),
            f32_time.as_secs_f64() * 1e3,
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        );
    }
}
