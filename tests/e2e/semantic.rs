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
    // A generous model budget: on a loaded CI machine a prompt decided without its embedding
    // takes the default, which is right for the router but not what this test is about.
    let stack = Stack::start(&[
        "--encoder",
        minilm.to_str().unwrap(),
        "--classify-budget-ms",
        "20000",
    ]);
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

#[tokio::test(flavor = "multi_thread")]
async fn paraphrases_are_answered_from_the_semantic_cache() {
    let minilm = repo_root().join(".models/all-MiniLM-L6-v2");
    // A generous model budget: on a loaded CI machine a prompt decided without its embedding
    // would skip the cache, which is right for the router but not what this test is about.
    let stack = Stack::start(&[
        "--encoder",
        minilm.to_str().unwrap(),
        "--classify-budget-ms",
        "20000",
    ]);
    // Turn the cache on in the sample route; the router swaps the table when the file changes.
    let route = stack.manifests.path().join("route.yaml");
    let policy = std::fs::read_to_string(&route).unwrap().replace(
        "\n  decisions:\n",
        "\n  cache: {enabled: true, similarityThreshold: 0.85}\n  decisions:\n",
    );
    std::fs::write(&route, policy).unwrap();
    eventually(
        "the cache policy in force",
        Duration::from_secs(30),
        || async {
            let response = stack
                .chat(ask("auto", "Write me a haiku about autumn"), &[])
                .await;
            header(&response, "x-semantic-router-cache") == "miss"
        },
    )
    .await;

    let first = stack
        .chat(ask("auto", "What is the capital of North Carolina?"), &[])
        .await;
    assert_eq!(header(&first, "x-semantic-router-cache"), "miss");
    assert_eq!(header(&first, "x-semantic-router-path"), "upstream");
    let decision = header(&first, "x-semantic-router-decision").to_owned();
    let body: serde_json::Value = first.json().await.unwrap();
    let answer = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();

    // The answer is kept once its response has ended; then a paraphrase never reaches a model.
    let paraphrase = ask("auto", "What's the capital city of North Carolina?");
    eventually("the answer kept", Duration::from_secs(10), || async {
        let response = stack.chat(paraphrase.clone(), &[]).await;
        header(&response, "x-semantic-router-cache") == "hit"
    })
    .await;
    let upstream = stack.small.requests().await.len() + stack.large.requests().await.len();
    let hit = stack.chat(paraphrase.clone(), &[]).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-semantic-router-path"), "cache");
    assert_eq!(header(&hit, "x-semantic-router-decision"), decision);
    assert!(header(&hit, "content-type").starts_with("application/json"));
    let body: serde_json::Value = hit.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], answer.as_str());
    assert_eq!(body["object"], "chat.completion");

    // A streamed request gets the same answer as SSE.
    let mut streamed = paraphrase.clone();
    streamed["stream"] = serde_json::json!(true);
    let response = stack.chat(streamed, &[]).await;
    assert_eq!(header(&response, "x-semantic-router-cache"), "hit");
    assert!(header(&response, "content-type").starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, answer);
    assert_eq!(
        stack.small.requests().await.len() + stack.large.requests().await.len(),
        upstream,
        "cache hits reach no model server"
    );

    // Another question, or the same one in another conversation, still goes to a model.
    let other = stack
        .chat(ask("auto", "Tell me a joke about cats"), &[])
        .await;
    assert_eq!(header(&other, "x-semantic-router-cache"), "miss");
    let mut other_context = paraphrase.clone();
    other_context["messages"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"role": "system", "content": "Answer in French."}),
    );
    let response = stack.chat(other_context, &[]).await;
    assert_eq!(header(&response, "x-semantic-router-cache"), "miss");

    let metrics = stack.router.metrics().await;
    assert!(metrics.contains("outcome=\"cache\""), "{metrics}");
    assert!(
        metrics.contains("semantic_router_semantic_cache_lookups_total{result=\"hit\"}"),
        "{metrics}"
    );
}
