//! Example-prompt routing with the real all-MiniLM-L6-v2 encoder, end to end through Envoy:
//! unseen math questions reach the reasoning pool, everything else the small one.

use std::time::Duration;

use crate::dataplane::{Stack, ask, header};
use crate::support::{eventually, repo_root};

#[tokio::test(flavor = "multi_thread")]
async fn unseen_math_questions_go_to_the_reasoning_pool() {
    let minilm = repo_root().join(".models/all-MiniLM-L6-v2");
    assert!(
        minilm.join("model.safetensors").exists(),
        "run `make tools` first (hack/fetch-minilm.sh)"
    );
    let stack = Stack::start(&["--encoder", minilm.to_str().unwrap()]);
    eventually(
        "example prompts embedded",
        Duration::from_secs(30),
        || async {
            let explained = stack
                .router
                .explain("auto", "How many minutes are in 3.5 hours?", &[])
                .await;
            explained["signals"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["name"] == "math-intent" && s["score"].is_number())
            })
        },
    )
    .await;

    // None of these contain a `stem` or `code` keyword: only the embedding can route them.
    for question in [
        "What is 15 percent of 240?",
        "A rectangle is 8 m long and 3 m wide. What is its perimeter?",
        "How many minutes are in 3.5 hours?",
    ] {
        let response = stack.chat(ask("auto", question), &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-sim-name"), "large", "{question}");
        assert_eq!(header(&response, "x-semantic-router-decision"), "reasoning");
    }
    for chat in [
        "Hello, how are you today?",
        "Write me a haiku about autumn",
        "Tell me a joke",
    ] {
        let response = stack.chat(ask("auto", chat), &[]).await;
        assert_eq!(header(&response, "x-sim-name"), "small", "{chat}");
    }
    let received = stack.large.requests().await;
    assert_eq!(received.len(), 3);
    assert!(
        received
            .iter()
            .all(|r| r["body"]["chat_template_kwargs"]["enable_thinking"] == true)
    );

    let metrics = stack.router.metrics().await;
    assert!(
        metrics.contains("semantic_router_classifier_inference_duration_seconds"),
        "{metrics}"
    );
}
