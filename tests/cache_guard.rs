//! The false-hit guard on the contrast set (`src/cache/testdata/contrast.jsonl`: paraphrases
//! that should be served from the cache, near-misses that must not be), with the real
//! all-MiniLM-L6-v2 from `.models/` (`make tools`) giving the similarities. Prints hit rate
//! and false-hit rate at several thresholds with and without the guard; asserts the default.

use std::path::{Path, PathBuf};

use semantic_router::cache::Fingerprint;
use semantic_router::classify::{Encoder, EncoderOptions};

/// Most false hits allowed, with the guard.
const MAX_FALSE_HITS: f64 = 0.01;
/// (threshold, recorded hit-rate floor with the guard): the routes' default
/// (`spec.cache.similarityThreshold`) and the one `cache::guard` recommends.
const FLOORS: [(f32, f64); 2] = [(0.92, 0.60), (0.85, 0.67)];

struct Pair {
    same: bool,
    kind: String,
    a: String,
    b: String,
    similarity: f32,
    agrees: bool,
}

fn minilm_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `make tools` (hack/fetch-minilm.sh)",
        dir.display()
    );
    dir
}

fn pairs() -> Vec<Pair> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cache/testdata/contrast.jsonl");
    let text = std::fs::read_to_string(&path).expect("contrast set");
    let encoder = Encoder::load(
        &minilm_dir(),
        &EncoderOptions {
            max_tokens: 256,
            ..EncoderOptions::default()
        },
    )
    .expect("load all-MiniLM-L6-v2");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    rows.chunks(16)
        .flat_map(|chunk| {
            let texts: Vec<&str> = chunk
                .iter()
                .flat_map(|r| [r["a"].as_str().expect("a"), r["b"].as_str().expect("b")])
                .collect();
            let out = encoder.encode(&texts).expect("encode");
            chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let (ea, eb) = (&out[2 * i].embedding, &out[2 * i + 1].embedding);
                    let (a, b) = (texts[2 * i], texts[2 * i + 1]);
                    Pair {
                        same: r["same"].as_bool().expect("same"),
                        kind: r["kind"].as_str().unwrap_or("").to_owned(),
                        a: a.to_owned(),
                        b: b.to_owned(),
                        similarity: ea.iter().zip(eb.iter()).map(|(x, y)| x * y).sum(),
                        agrees: Fingerprint::of(a).agrees(&Fingerprint::of(b)),
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// (hit rate on paraphrases, false-hit rate on near-misses) at `threshold`.
fn rates(pairs: &[Pair], threshold: f32, guard: bool) -> (f64, f64) {
    let served = |p: &Pair| p.similarity >= threshold && (!guard || p.agrees);
    let rate = |same: bool| {
        let group: Vec<&Pair> = pairs.iter().filter(|p| p.same == same).collect();
        group.iter().filter(|p| served(p)).count() as f64 / group.len().max(1) as f64
    };
    (rate(true), rate(false))
}

#[test]
fn the_guard_keeps_false_hits_under_one_percent_on_the_contrast_set() {
    let pairs = pairs();
    let (same, near) = pairs.iter().fold(
        (0, 0),
        |(s, n), p| {
            if p.same { (s + 1, n) } else { (s, n + 1) }
        },
    );
    assert!(
        same >= 75 && near >= 75,
        "{same} paraphrases, {near} near-misses"
    );
    println!("contrast set: {same} paraphrases, {near} near-misses");
    println!("threshold  hit%(sim)  false%(sim)  hit%(sim+guard)  false%(sim+guard)");
    for t in [0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.95] {
        let (h, f) = rates(&pairs, t, false);
        let (hg, fg) = rates(&pairs, t, true);
        println!(
            "{t:.2}       {:5.1}      {:5.1}        {:5.1}            {:5.1}",
            100.0 * h,
            100.0 * f,
            100.0 * hg,
            100.0 * fg
        );
    }
    for p in &pairs {
        if p.same && !p.agrees {
            println!(
                "guard misses paraphrase ({:.3}): {:?} / {:?}",
                p.similarity, p.a, p.b
            );
        }
        if !p.same && p.agrees {
            println!(
                "guard lets through [{}] ({:.3}): {:?} / {:?}",
                p.kind, p.similarity, p.a, p.b
            );
        }
    }
    for (threshold, floor) in FLOORS {
        let (hit, false_hit) = rates(&pairs, threshold, true);
        assert!(
            false_hit <= MAX_FALSE_HITS,
            "false hits {:.1}% at {threshold}",
            100.0 * false_hit
        );
        assert!(hit >= floor, "hit rate {:.1}% at {threshold}", 100.0 * hit);
    }
    // Without the guard, the default threshold is far from safe: the guard is what helps.
    let (_, unguarded) = rates(&pairs, 0.92, false);
    assert!(unguarded > 0.1, "{unguarded}");
}
