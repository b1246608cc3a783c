//! The static tier in front of the encoder, end to end through Envoy: with `--static-model`,
//! a route that needs heads only is answered by the static twins without a forward pass, as
//! is a route with example prompts when the twins settle its decision without them; one whose
//! decision hangs on its example prompts runs the encoder (they compare encoder embeddings). A tiny random model stands in for MiniLM (distilling MiniLM takes a minute);
//! the twins answer at margin 0, so every prompt they see is theirs.

use std::path::Path;
use std::time::Duration;

use semantic_router::classify::{Architecture, Head, tiny};

use crate::dataplane::{Stack, ask};
use crate::support::{eventually, metric_sample};

const CATEGORY: &[&str] = &[
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
];

/// A head that always prefers its first label (`benign` for jailbreak: nothing is blocked).
fn first_label_head(labels: &[&str], dim: usize) -> Head {
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    let mut bias = vec![0.0; labels.len()];
    bias[0] = 3.0;
    Head::linear("h", labels.clone(), vec![0.0; labels.len() * dim], bias).unwrap()
}

/// A head for the tiny encoder in `dir`, and its static twin (`dir/static`, 8 wide, answering
/// at margin 0 for the static model `id`).
fn head_with_twin(dir: &Path, labels: &[&str], id: &str) {
    first_label_head(labels, tiny::HIDDEN).save(dir).unwrap();
    let twin = dir.join("static");
    first_label_head(labels, 8).save(&twin).unwrap();
    let cascade = serde_json::json!({"static_model": id, "margin": 0.0, "validation": null});
    std::fs::write(twin.join("cascade.json"), cascade.to_string()).unwrap();
}

/// `name_total{tier="…"}` from a metrics page.
fn answers(metrics: &str, tier: &str) -> f64 {
    let series = format!("semantic_router_classifier_cascade_answers_total{{tier=\"{tier}\"}}");
    metric_sample(metrics, &series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sure_static_twins_answer_what_they_settle_and_the_encoder_what_hangs_on_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let encoder = tmp.path().join("tiny");
    tiny::write_model(&encoder, Architecture::Bert, None).unwrap();
    let statics = tmp.path().join("static");
    let distilled = std::process::Command::new(env!("CARGO_BIN_EXE_semantic-router"))
        .args(["distill", "--dims", "8", "--quiet", "--encoder"])
        .arg(&encoder)
        .arg("--out")
        .arg(&statics)
        .output()
        .unwrap();
    assert!(distilled.status.success(), "{distilled:?}");
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(statics.join("static.json")).unwrap())
            .unwrap();
    let id = info["id"].as_str().unwrap();
    let heads = tmp.path().join("heads");
    for (name, labels) in [
        ("category", CATEGORY),
        ("complexity", &["reasoning", "simple"][..]),
        ("jailbreak", &["benign", "jailbreak"][..]),
    ] {
        head_with_twin(&heads.join(name), labels, id);
    }
    let arg = |p: &Path| p.to_str().unwrap().to_owned();
    let flags = [
        "--encoder".to_owned(),
        arg(&encoder),
        "--category-head".to_owned(),
        arg(&heads.join("category")),
        "--complexity-head".to_owned(),
        arg(&heads.join("complexity")),
        "--jailbreak-head".to_owned(),
        arg(&heads.join("jailbreak")),
        "--static-model".to_owned(),
        arg(&statics),
        // Generous: a prompt decided without model signals on a loaded machine would count
        // neither tier.
        "--classify-budget-ms".to_owned(),
        "20000".to_owned(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let stack = Stack::start(&flags);

    // The sample route without its example prompts: categories, complexity and jailbreak.
    let route = stack.manifests.path().join("route.yaml");
    let sample = std::fs::read_to_string(&route).unwrap();
    let (before, rest) = sample.split_once("    examples:\n").unwrap();
    let (_, after) = rest.split_once("    # The default heads").unwrap();
    let heads_only = format!("{before}    # The default heads{after}")
        .replace(", \"math-intent\"", "")
        .replace("\"math-intent\", ", "");
    assert!(!heads_only.contains("math-intent"), "{heads_only}");
    std::fs::write(&route, &heads_only).unwrap();
    eventually("the heads-only route", Duration::from_secs(20), || async {
        let explained = stack.router.explain("auto", "hello", &[]).await;
        explained["signals"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["name"] != "math-intent"))
    })
    .await;
    let metrics = stack.router.metrics().await;
    let (static_before, encoder_before) =
        (answers(&metrics, "static"), answers(&metrics, "encoder"));
    for prompt in ["hello there", "integrate x squared", "plan a trip to Rome"] {
        let response = stack.chat(ask("auto", prompt), &[]).await;
        assert_eq!(response.status(), 200, "{}", stack.logs());
    }
    let metrics = stack.router.metrics().await;
    assert_eq!(
        answers(&metrics, "static") - static_before,
        3.0,
        "{metrics}"
    );
    assert_eq!(answers(&metrics, "encoder"), encoder_before, "{metrics}");

    // Back to the sample, example prompts and all. The twins settle its decision here (the
    // complexity twin always says `reasoning`, so `multi-step` holds and the `reasoning`
    // decision matches whatever `math-intent` says): no forward pass.
    let encoded = |metrics: &str| -> f64 {
        metric_sample(metrics, "semantic_router_classifier_encoded_texts_total").unwrap_or(0.0)
    };
    // The index logs each table whose example prompts it has embedded.
    let indexed = || stack.logs().matches("example prompts embedded").count();
    let before_swap = indexed();
    std::fs::write(&route, &sample).unwrap();
    eventually(
        "the sample route, its examples embedded",
        Duration::from_secs(20),
        || async { indexed() > before_swap },
    )
    .await;
    let metrics = stack.router.metrics().await;
    let (static_now, encoded_now) = (answers(&metrics, "static"), encoded(&metrics));
    let response = stack.chat(ask("auto", "good morning to you"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-semantic-router-decision"],
        "reasoning"
    );
    let metrics = stack.router.metrics().await;
    assert_eq!(answers(&metrics, "static"), static_now + 1.0, "{metrics}");
    assert_eq!(encoded(&metrics), encoded_now, "{metrics}");

    // Without `multi-step` in that decision, it hangs on `math-intent`, which compares encoder
    // embeddings: the twins are asked, and the encoder answers. One example prompt only, so
    // the static tier has no two prompts to learn a "surely not" bound from.
    let (head, rest) = sample.split_once("      prompts:\n").unwrap();
    let first = rest.lines().next().unwrap();
    let (_, tail) = rest.split_once("    # The default heads").unwrap();
    let hangs_on_examples = format!("{head}      prompts:\n{first}\n    # The default heads{tail}")
        .replace(
            "any: [\"stem\", \"code\", \"math-intent\", \"stem-domain\", \"multi-step\"]",
            "any: [\"stem\", \"code\", \"math-intent\", \"stem-domain\"]",
        );
    assert!(!hangs_on_examples.contains("\"math-intent\", \"stem-domain\", \"multi-step\""));
    assert_eq!(
        hangs_on_examples.matches("      - \"").count(),
        1,
        "{hangs_on_examples}"
    );
    std::fs::write(&route, &hangs_on_examples).unwrap();
    // Explaining runs the same path: once the swap is in, math-intent gets a score.
    eventually(
        "the route without multi-step in `reasoning`",
        Duration::from_secs(20),
        || async {
            let explained = stack.router.explain("auto", "good evening", &[]).await;
            explained["signals"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["name"] == "math-intent" && s["score"].is_number())
            })
        },
    )
    .await;
    let metrics = stack.router.metrics().await;
    let (static_now, deferred_now, encoded_now) = (
        answers(&metrics, "static"),
        answers(&metrics, "encoder"),
        encoded(&metrics),
    );
    let response = stack
        .chat(ask("auto", "good morning to you all"), &[])
        .await;
    assert_eq!(response.status(), 200);
    let metrics = stack.router.metrics().await;
    assert_eq!(answers(&metrics, "static"), static_now, "{metrics}");
    assert_eq!(
        answers(&metrics, "encoder"),
        deferred_now + 1.0,
        "{metrics}"
    );
    assert_eq!(encoded(&metrics), encoded_now + 1.0, "{metrics}");
}
