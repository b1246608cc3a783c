//! Classifier benchmark on the real all-MiniLM-L6-v2 (`.models/`, from `make tools`).
//!
//! 1. Batch 1, at 16 / 64 / 256 tokens: our signal path (`ClassifierService::embed` on a fresh
//!    text each time, so never a cache hit: tokenize, queue, worker thread, forward, pool,
//!    normalise, reply) against the floor, a bare Candle `BertModel` forward + mean pooling +
//!    normalisation on the same tokens, measured alternately in the same run.
//! 2. Throughput at 64 tokens with 1, 8 and 32 concurrent closed-loop callers, batching on
//!    (max batch 32) and off (max batch 1).
//!
//! 3. The static tier against the bare forward at 16 / 64 / 128 / 512 tokens, and the category
//!    cascade (default head behind its static twin) over the realistic prompts.
//!
//! 4. Candle's quantized matrix products (Q8_0, Q4_0, F16) against f32 at MiniLM's shapes:
//!    the evidence behind not shipping an int8 encoder (they must beat f32 to be worth it).
//!
//! Targets (PERFORMANCE.md): signal path ≤ 1.3× the floor at batch 1; batching ≥ 1.3× the
//! unbatched throughput at 8 concurrent. Prints numbers; asserts nothing.
//! The `cpu` columns are process CPU time per request: on a machine shared with other work
//! they compare the paths more steadily than wall time.
//! Run: `cargo bench --bench classify` (about a minute and a half after the release build).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use rand::seq::IndexedRandom;
use semantic_router::classify::cascade::CascadeConfig;
use semantic_router::classify::{
    ClassifierService, DistillOptions, Encoder, EncoderOptions, Head, ServiceConfig, StaticModel,
    StaticTier, Tier,
};

const TOKEN_COUNTS: [(usize, usize); 3] = [(16, 150), (64, 80), (256, 24)];
const THROUGHPUT_TOKENS: usize = 64;
/// Seconds per measuring window; each configuration gets `THROUGHPUT_ROUNDS` of them.
/// Windows must span several batches: at 32 concurrent a batch of 32 texts takes ~0.5 s.
const THROUGHPUT_SECS: f64 = 3.0;
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
                let window = runtime.block_on(closed_loop(service, &words, concurrency, warmup));
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
    static_tier(&dir, &floor, &words, &runtime);
    quantized_matmuls();
    println!("\ntotal {:.0} s", started.elapsed().as_secs_f64());
}

/// 3. The static tier (`.models/all-MiniLM-L6-v2-static`, distilled here when missing) against
///    the bare forward at the same tokens; then the category cascade (the default head and its
///    static twin) over the hand-written realistic prompts: latency and deferred share.
fn static_tier(dir: &Path, floor: &Floor, words: &Words, runtime: &tokio::runtime::Runtime) {
    let static_dir = dir.with_file_name("all-MiniLM-L6-v2-static");
    let encoder = Encoder::load(
        dir,
        &EncoderOptions {
            max_tokens: 512,
            ..EncoderOptions::default()
        },
    )
    .expect("load MiniLM");
    let model = match StaticModel::load(&static_dir) {
        Ok(model) => model,
        Err(_) => {
            println!(
                "\n(distilling {} first, about a minute)",
                static_dir.display()
            );
            let model =
                StaticModel::distill(&encoder, &DistillOptions::default()).expect("distill");
            model.save(&static_dir).expect("save the static model");
            model
        }
    };
    println!(
        "\n== static tier ({} dims) vs bare forward, batch 1 ==",
        model.dimension()
    );
    println!(
        "{:>6} | {:>10} {:>10} | {:>10} {:>10} | {:>8}",
        "tokens", "floor p50", "floor p99", "static p50", "static p99", "x p50"
    );
    for (tokens, floor_n) in [(16, 40), (64, 30), (128, 20), (512, 8)] {
        let texts: Vec<String> = (0..200).map(|_| words.text(&encoder, tokens)).collect();
        let mut fast: Vec<Duration> = texts
            .iter()
            .map(|t| {
                let started = Instant::now();
                model.embed(t).expect("static embed");
                started.elapsed()
            })
            .collect();
        let mut bare: Vec<Duration> = texts[..floor_n]
            .iter()
            .map(|t| {
                let ids = encoder.tokenize(t).expect("tokenize").ids;
                let started = Instant::now();
                floor.embed(&ids);
                started.elapsed()
            })
            .collect();
        let (f50, f99) = (percentile(&mut bare, 0.5), percentile(&mut bare, 0.99));
        let (s50, s99) = (percentile(&mut fast, 0.5), percentile(&mut fast, 0.99));
        println!(
            "{tokens:>6} | {:>10} {:>10} | {:>10} {:>10} | {:>7.0}x",
            ms(f50),
            ms(f99),
            ms(s50),
            ms(s99),
            f50.as_secs_f64() / s50.as_secs_f64()
        );
    }

    let heads = Path::new(env!("CARGO_MANIFEST_DIR")).join("heads/all-MiniLM-L6-v2/category");
    let twin = heads.join("static");
    let cascade: Option<CascadeConfig> = std::fs::read_to_string(twin.join("cascade.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(margin) = cascade
        .filter(|c| c.static_model == model.info().id)
        .and_then(|c| c.margin)
    else {
        println!("(no category twin for this static model: cascade skipped)");
        return;
    };
    let head = Head::load(&heads)
        .expect("category head")
        .with_name("category");
    let twin = Head::load(&twin).expect("category twin");
    let tier = StaticTier::new(model)
        .with_head("category", twin, margin)
        .expect("tier");
    let service =
        ClassifierService::start_with(encoder, vec![head], Some(tier), ServiceConfig::default())
            .expect("service");
    let realistic =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/heads/realistic/category.jsonl");
    let texts: Vec<String> = std::fs::read_to_string(&realistic)
        .expect("realistic prompts")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    let mut all = Vec::new();
    let mut answered = Vec::new();
    for text in &texts {
        let started = Instant::now();
        let analysis = runtime
            .block_on(service.analyze_heads_until(text, &["category"], None))
            .expect("cascade");
        let took = started.elapsed();
        all.push(took);
        if analysis.tier == Tier::Static {
            answered.push(took);
        }
    }
    let deferred = texts.len() - answered.len();
    println!(
        "\n== category cascade over {} realistic prompts (margin {margin:.3}, fresh texts) ==",
        texts.len()
    );
    println!(
        "all p50 {} p99 {} | static-answered p50 {} | deferred {deferred} ({:.0}%)",
        ms(percentile(&mut all, 0.5)),
        ms(percentile(&mut all, 0.99)),
        if answered.is_empty() {
            "-".to_owned()
        } else {
            ms(percentile(&mut answered, 0.5))
        },
        deferred as f64 * 100.0 / texts.len().max(1) as f64
    );
}

fn throughput_config(max_batch_size: usize) -> ServiceConfig {
    ServiceConfig {
        max_batch_size,
        queue_capacity: 256,
        ..ServiceConfig::default()
    }
}

fn start(dir: &Path, config: ServiceConfig) -> ClassifierService {
    let options = EncoderOptions {
        max_tokens: 512,
        ..EncoderOptions::default()
    };
    let encoder = Encoder::load(dir, &options).expect("load MiniLM");
    ClassifierService::start(encoder, vec![], config).expect("service")
}

/// 4. Every linear layer of MiniLM at 64 and 512 tokens: `tokens × in → out`, f32 against
///    Candle's quantized kernels, best of 30 runs (quantisation error as max |Δ| too).
fn quantized_matmuls() {
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

/// What one closed-loop window measured.
struct Window {
    /// Completed requests per second.
    rate: f64,
    /// Process CPU seconds per completed request (robust to other load on the machine).
    cpu_per_request: f64,
}

/// Throughput of `concurrency` callers each embedding fresh texts back to back.
async fn closed_loop(
    service: &ClassifierService,
    words: &Words,
    concurrency: usize,
    warmup: f64,
) -> Window {
    // Texts made up front so the loop measures the service, not text generation.
    // Enough for 80 requests/s (above this machine's ~60 at batch 32) over the whole run.
    let per_caller = ((warmup + THROUGHPUT_SECS) * 80.0 / concurrency as f64).ceil() as usize + 4;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut callers = Vec::new();
    for _ in 0..concurrency {
        let texts: Vec<String> = (0..per_caller)
            .map(|_| words.text(service.encoder(), THROUGHPUT_TOKENS))
            .collect();
        let (service, stop, done) = (service.clone(), stop.clone(), done.clone());
        callers.push(tokio::spawn(async move {
            for text in texts {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if service.embed(&text).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Warm up, then count completions over the window.
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let (start_count, started, cpu) = (done.load(Ordering::Relaxed), Instant::now(), process_cpu());
    tokio::time::sleep(Duration::from_secs_f64(THROUGHPUT_SECS)).await;
    let count = done.load(Ordering::Relaxed) - start_count;
    let (elapsed, cpu) = (started.elapsed().as_secs_f64(), process_cpu() - cpu);
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        let _ = c.await;
    }
    Window {
        rate: count as f64 / elapsed,
        cpu_per_request: cpu / count.max(1) as f64,
    }
}

/// The floor: candle-transformers' BertModel with mean pooling and normalisation, nothing else.
struct Floor {
    model: BertModel,
}

impl Floor {
    fn load(dir: &Path) -> Self {
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(dir.join("config.json")).expect("config.json"),
        )
        .expect("bert config");
        let weights = std::fs::read(dir.join("model.safetensors")).expect("weights");
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .expect("safetensors");
        Self {
            model: BertModel::load(vb, &config).expect("BertModel"),
        }
    }

    fn embed(&self, ids: &[u32]) -> Vec<f32> {
        let run = || -> candle_core::Result<Vec<f32>> {
            let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
            let types = ids.zeros_like()?;
            let mask = ids.ones_like()?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            let pooled = hidden.mean(1)?;
            let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
            pooled.broadcast_div(&norm)?.squeeze(0)?.to_vec1()
        };
        run().expect("floor forward")
    }
}

/// Whole-word vocabulary entries, for texts of an exact token count.
struct Words(Vec<String>);

impl Words {
    fn load(dir: &Path) -> Self {
        let tokenizer =
            tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer");
        let mut words: Vec<String> = tokenizer
            .get_vocab(false)
            .into_keys()
            .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()))
            .collect();
        words.sort();
        Self(words)
    }

    /// A fresh random text of exactly `tokens` tokens (special tokens included).
    fn text(&self, encoder: &Encoder, tokens: usize) -> String {
        let mut rng = rand::rng();
        loop {
            let text: Vec<&str> = (0..tokens - 2)
                .filter_map(|_| self.0.choose(&mut rng).map(String::as_str))
                .collect();
            let text = text.join(" ");
            // Random words from ~20k make every text distinct; a few vocabulary entries split
            // into several tokens, so check the count and retry.
            if encoder.tokenize(&text).map(|t| t.len()).ok() == Some(tokens) {
                return text;
            }
        }
    }
}

/// Mean texts per forward pass, from the service's exported metrics.
fn mean_batch(service: &ClassifierService) -> f64 {
    let mut registry = prometheus_client::registry::Registry::default();
    service.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let sum = value("semantic_router_classifier_batch_size_sum ");
    sum / value("semantic_router_classifier_batch_size_count ").max(1.0)
}

/// CPU seconds (user + system, all threads) this process has used; Linux `/proc`, 10 ms ticks.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5) (utime, stime) are the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}
