//! 3. The static tier against the bare forward, and the category cascade's latency.

use std::path::Path;
use std::time::{Duration, Instant};

use semantic_router::classify::cascade::{CascadeConfig, HeadQuery};
use semantic_router::classify::{
    ClassifierService, DistillOptions, Encoder, EncoderOptions, Head, Precision, ServiceConfig,
    StaticModel, StaticTier, Tier,
};

use crate::measure::{ms, percentile};
use crate::texts::{Floor, Words};

/// 3. The int8 encoder (forward, pooling, normalisation) and the static tier
///    (`.models/all-MiniLM-L6-v2-static`, distilled here when missing) against the bare f32
///    forward at the same tokens; then the category cascade (the default head and its static
///    twin, on the int8 encoder) over the hand-written realistic prompts: latency and deferred
///    share.
pub fn run(dir: &Path, floor: &Floor, words: &Words, runtime: &tokio::runtime::Runtime) {
    let static_dir = dir.with_file_name("all-MiniLM-L6-v2-static");
    let load = |precision| {
        let options = EncoderOptions {
            max_tokens: 512,
            precision,
            ..EncoderOptions::default()
        };
        Encoder::load(dir, &options).expect("load MiniLM")
    };
    let encoder = load(Precision::Int8);
    let model = match StaticModel::load(&static_dir) {
        Ok(model) => model,
        Err(_) => {
            println!(
                "\n(distilling {} first, about a minute)",
                static_dir.display()
            );
            let model = StaticModel::distill(&load(Precision::F32), &DistillOptions::default())
                .expect("distill");
            model.save(&static_dir).expect("save the static model");
            model
        }
    };
    println!(
        "\n== int8 encoder and static tier ({} dims) vs bare f32 forward, batch 1 ==",
        model.dimension()
    );
    println!(
        "{:>6} | {:>10} {:>10} | {:>10} {:>10} {:>7} | {:>10} {:>10} {:>8}",
        "tokens",
        "floor p50",
        "floor p99",
        "int8 p50",
        "int8 p99",
        "x p50",
        "static p50",
        "static p99",
        "x p50"
    );
    for (tokens, floor_n) in [(16, 40), (64, 30), (128, 20), (512, 12)] {
        let texts: Vec<String> = (0..200).map(|_| words.text(&encoder, tokens)).collect();
        let mut fast: Vec<Duration> = texts
            .iter()
            .map(|t| {
                let started = Instant::now();
                model.embed(t).expect("static embed");
                started.elapsed()
            })
            .collect();
        // Alternating, so that machine noise hits both alike.
        let (mut bare, mut int8) = (Vec::new(), Vec::new());
        for t in &texts[..floor_n] {
            let tokens = encoder.tokenize(t).expect("tokenize");
            let started = Instant::now();
            floor.embed(&tokens.ids);
            bare.push(started.elapsed());
            let started = Instant::now();
            encoder
                .encode_tokens(std::slice::from_ref(&tokens))
                .expect("int8 forward");
            int8.push(started.elapsed());
        }
        let (f50, f99) = (percentile(&mut bare, 0.5), percentile(&mut bare, 0.99));
        let (i50, i99) = (percentile(&mut int8, 0.5), percentile(&mut int8, 0.99));
        let (s50, s99) = (percentile(&mut fast, 0.5), percentile(&mut fast, 0.99));
        println!(
            "{tokens:>6} | {:>10} {:>10} | {:>10} {:>10} {:>6.2}x | {:>10} {:>10} {:>7.0}x",
            ms(f50),
            ms(f99),
            ms(i50),
            ms(i99),
            f50.as_secs_f64() / i50.as_secs_f64(),
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
            .block_on(service.analyze_heads_until(
                text,
                &[HeadQuery::ranking("category")],
                None,
                |_| true,
            ))
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
