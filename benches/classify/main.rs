//! Classifier benchmark on the real all-MiniLM-L6-v2 (`.models/`, from `make tools`).
//!
//! 1. Batch 1, at 16 / 64 / 256 tokens: our signal path (`ClassifierService::embed` on a fresh
//!    text each time, so never a cache hit: tokenize, queue, worker thread, forward, pool,
//!    normalise, reply) against the floor, a bare Candle `BertModel` forward + mean pooling +
//!    normalisation on the same tokens, measured alternately in the same run.
//! 2. Throughput at 64 tokens with 1, 8 and 32 concurrent closed-loop callers, batching on
//!    (max batch 32) and off (max batch 1).
//!
//! 3. The int8 encoder (the default) and the static tier against the bare f32 forward at
//!    16 / 64 / 128 / 512 tokens, and the category cascade (default head behind its static
//!    twin, on the int8 encoder) over the realistic prompts.
//!
//! 4. Throughput of each default head behind its static twin at 1 / 8 / 32 concurrent callers:
//!    the static tier alone and the cascade, with the share the static tier answered.
//!
//! 5. MiniLM's linear layers: f32 against our int8 layer (`semantic-router-int8`) and
//!    Candle's quantized products (Q8_0, Q4_0, F16), which are slower than f32 here: why the
//!    int8 encoder has kernels of its own.
//!
//! Targets (PERFORMANCE.md): signal path ≤ 1.3× the floor at batch 1; batching ≥ 1.3× the
//! unbatched throughput at 8 concurrent. Prints numbers; asserts nothing.
//! The `cpu` columns are process CPU time per request: on a machine shared with other work
//! they compare the paths more steadily than wall time.
//! One module a section's job: `static_tier` (3), `cascade` (4), `quantized` (5); `texts`
//! (the floor and the random texts), `measure` (closed loops, CPU time, percentiles).
//! Run: `cargo bench --bench classify` (about a minute and a half after the release build).

mod cascade;
mod measure;
mod quantized;
mod static_tier;
mod texts;

use std::path::Path;
use std::time::Instant;

use semantic_router::classify::{
    ClassifierService, Encoder, EncoderOptions, Precision, ServiceConfig,
};

use measure::{embed_loop, mean_batch, ms, percentile, process_cpu};
use texts::{Floor, Words};

const TOKEN_COUNTS: [(usize, usize); 3] = [(16, 150), (64, 80), (256, 24)];
/// Prompt length, in tokens, of every throughput measurement.
pub const THROUGHPUT_TOKENS: usize = 64;
/// Seconds per measuring window; each configuration gets `THROUGHPUT_ROUNDS` of them.
/// Windows must span several batches: at 32 concurrent a batch of 32 texts takes ~0.5 s.
pub const THROUGHPUT_SECS: f64 = 3.0;
const THROUGHPUT_ROUNDS: usize = 2;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "{} is missing: run `make tools` (hack/fetch-minilm.sh)",
            dir.display()
        );
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let floor = Floor::load(&dir);
    let words = Words::load(&dir);
    println!(
        "classify bench: all-MiniLM-L6-v2 f32 on {} CPU threads (candle), {:?} worker(s) by default",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        semantic_router::classify::default_workers()
    );

    println!("\n== batch 1: signal path vs bare Candle forward (same tokens, alternating) ==");
    println!(
        "{:>6} {:>5} | {:>10} {:>10} | {:>10} {:>10} | {:>7} {:>7} | {:>9} {:>9}",
        "tokens",
        "n",
        "floor p50",
        "floor p99",
        "ours p50",
        "ours p99",
        "x p50",
        "x p99",
        "floor cpu",
        "ours cpu"
    );
    let service = start(&dir, ServiceConfig::default());
    for (tokens, iterations) in TOKEN_COUNTS {
        let mut ours = Vec::with_capacity(iterations);
        let mut bare = Vec::with_capacity(iterations);
        let (mut our_cpu, mut bare_cpu) = (0.0, 0.0);
        for i in 0..iterations + 3 {
            let text = words.text(service.encoder(), tokens);
            let ids = service.encoder().tokenize(&text).expect("tokenize").ids;
            let (t, c) = (Instant::now(), process_cpu());
            runtime.block_on(service.embed(&text)).expect("embed");
            let (our, our_c) = (t.elapsed(), process_cpu() - c);
            let (t, c) = (Instant::now(), process_cpu());
            floor.embed(&ids);
            let (base, base_c) = (t.elapsed(), process_cpu() - c);
            if i >= 3 {
                ours.push(our);
                bare.push(base);
                our_cpu += our_c;
                bare_cpu += base_c;
            }
        }
        let (f50, f99) = (percentile(&mut bare, 0.5), percentile(&mut bare, 0.99));
        let (o50, o99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
        let n = iterations as f64;
        println!(
            "{tokens:>6} {iterations:>5} | {:>10} {:>10} | {:>10} {:>10} | {:>6.2}x {:>6.2}x | {:>6.1} ms {:>6.1} ms",
            ms(f50),
            ms(f99),
            ms(o50),
            ms(o99),
            o50.as_secs_f64() / f50.as_secs_f64(),
            o99.as_secs_f64() / f99.as_secs_f64(),
            bare_cpu / n * 1e3,
            our_cpu / n * 1e3,
        );
    }
    drop(service);

    println!(
        "\n== throughput at {THROUGHPUT_TOKENS} tokens, closed loop, {THROUGHPUT_ROUNDS} alternating windows of {THROUGHPUT_SECS} s =="
    );
    println!(
        "{:>10} | {:>24} | {:>24} | {:>15}",
        "", "batched (max 32)", "unbatched (max 1)", "gain"
    );
    println!(
        "{:>10} | {:>8} {:>9} {:>5} | {:>8} {:>9} {:>5} | {:>7} {:>7}",
        "concurrent", "req/s", "cpu/req", "batch", "req/s", "cpu/req", "batch", "req/s", "cpu"
    );
    for concurrency in [1, 8, 32] {
        // Both services stay up; their windows alternate so machine noise hits both alike.
        let batched = start(&dir, throughput_config(32));
        let unbatched = start(&dir, throughput_config(1));
        let mut rates = [0.0f64; 2];
        let mut cpu_per_request = [0.0f64; 2];
        for round in 0..THROUGHPUT_ROUNDS {
            for (i, service) in [&batched, &unbatched].into_iter().enumerate() {
                let warmup = if round == 0 { 1.0 } else { 0.5 };
                let window = runtime.block_on(embed_loop(service, &words, concurrency, warmup));
                rates[i] += window.rate / THROUGHPUT_ROUNDS as f64;
                cpu_per_request[i] += window.cpu_per_request / THROUGHPUT_ROUNDS as f64;
            }
        }
        println!(
            "{concurrency:>10} | {:>8.1} {:>6.1} ms {:>5.1} | {:>8.1} {:>6.1} ms {:>5.1} | {:>6.2}x {:>6.2}x",
            rates[0],
            cpu_per_request[0] * 1e3,
            mean_batch(&batched),
            rates[1],
            cpu_per_request[1] * 1e3,
            mean_batch(&unbatched),
            rates[0] / rates[1],
            cpu_per_request[1] / cpu_per_request[0]
        );
    }
    static_tier::run(&dir, &floor, &words, &runtime);
    cascade::run(&dir, &runtime);
    quantized::run();
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
}

/// The service settings of the throughput runs: a deep queue, batches of up to `max_batch_size`.
pub fn throughput_config(max_batch_size: usize) -> ServiceConfig {
    ServiceConfig {
        max_batch_size,
        queue_capacity: 256,
        ..ServiceConfig::default()
    }
}

/// The f32 encoder's service: the floor's arithmetic, so sections 1 and 2 measure the
/// service around it (section 3 sets the int8 encoder beside the floor).
fn start(dir: &Path, config: ServiceConfig) -> ClassifierService {
    let options = EncoderOptions {
        max_tokens: 512,
        precision: Precision::F32,
        ..EncoderOptions::default()
    };
    let encoder = Encoder::load(dir, &options).expect("load MiniLM");
    ClassifierService::start(encoder, vec![], config).expect("service")
}
