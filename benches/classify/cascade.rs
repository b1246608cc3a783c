//! 4. Each default head behind its static twin, closed loop.

use std::path::Path;
use std::sync::Arc;

use semantic_router::classify::cascade::{CascadeConfig, HeadQuery, LabelGroup};
use semantic_router::classify::{
    ClassifierService, Encoder, EncoderOptions, Head, StaticModel, StaticTier, Tier,
};

use crate::measure::closed_loop;
use crate::{THROUGHPUT_SECS, throughput_config};

/// The domains `config/samples/route.yaml`'s `stem-domain` signal reads.
const STEM: [&str; 5] = [
    "math",
    "physics",
    "chemistry",
    "engineering",
    "computer science",
];

/// 4. Closed-loop throughput of each default head behind its static twin, over its realistic
///    prompts (each made fresh by a counter, so no cache answers) at 1 / 8 / 32 concurrent
///    callers: the static tier alone (margin 0: it answers everything) and the cascade (the
///    twin's margin; the rest goes to the encoder), with the share the static tier answered.
///    For the category head the cascade is also asked as a route's STEM signal asks it (`stem`:
///    is the label one of five STEM domains, at 0.5?), which the twin settles far more often.
pub fn run(dir: &Path, runtime: &tokio::runtime::Runtime) {
    let Ok(model) = StaticModel::load(&dir.with_file_name("all-MiniLM-L6-v2-static")) else {
        println!("(no static model: cascade throughput skipped)");
        return;
    };
    println!(
        "\n== cascade throughput over the realistic prompts, closed loop, {THROUGHPUT_SECS} s windows =="
    );
    println!(
        "{:>10} {:>8} | {:>10} | {:>8} {:>9} {:>7}",
        "head", "tier", "concurrent", "req/s", "cpu/req", "static"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in ["category", "complexity", "jailbreak"] {
        let heads = root.join("heads/all-MiniLM-L6-v2").join(name);
        let twin = heads.join("static");
        let Some(margin) = CascadeConfig::read(&twin, &model.info().id)
            .ok()
            .and_then(|c| c.margin)
        else {
            println!("{name:>10} (no twin for this static model: skipped)");
            continue;
        };
        let prompts: Arc<Vec<String>> = Arc::new(
            std::fs::read_to_string(root.join(format!("hack/heads/realistic/{name}.jsonl")))
                .expect("realistic prompts")
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["text"].as_str().map(str::to_owned))
                .collect(),
        );
        let mut tiers = vec![("static", 0.0, false), ("cascade", margin, false)];
        if name == "category" {
            tiers.push(("stem", margin, true));
        }
        for (tier, margin, grouped) in tiers {
            let encoder = Encoder::load(dir, &EncoderOptions::default()).expect("load MiniLM");
            let head = Head::load(&heads).expect("head").with_name(name);
            let static_tier = StaticTier::new(model.clone())
                .with_head(name, Head::load(&twin).expect("twin"), margin)
                .expect("tier");
            let service = ClassifierService::start_with(
                encoder,
                vec![head],
                Some(static_tier),
                throughput_config(32),
            )
            .expect("service");
            for concurrency in [1, 8, 32] {
                let prompts = prompts.clone();
                let service = service.clone();
                let stem: Arc<[String]> = if grouped {
                    STEM.map(String::from).into()
                } else {
                    Arc::from([])
                };
                let window = runtime.block_on(closed_loop(
                    concurrency,
                    1.0,
                    move |caller, i| {
                        let prompt = &prompts[(caller * 7 + i) % prompts.len()];
                        Some(format!("{prompt} ({caller}-{i})"))
                    },
                    move |text| {
                        let (service, stem) = (service.clone(), stem.clone());
                        async move {
                            let mut query = HeadQuery::ranking(name);
                            if !stem.is_empty() {
                                query.groups.push(LabelGroup {
                                    labels: &stem,
                                    threshold: 0.5,
                                });
                            }
                            let analysis = service
                                .analyze_heads_until(&text, &[query], None, |_| true)
                                .await
                                .ok()?;
                            Some(analysis.tier == Tier::Static)
                        }
                    },
                ));
                println!(
                    "{name:>10} {tier:>8} | {concurrency:>10} | {:>8.1} {:>6.2} ms {:>6.0}%",
                    window.rate,
                    window.cpu_per_request * 1e3,
                    window.answered_static * 100.0
                );
            }
        }
    }
}
