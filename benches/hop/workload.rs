//! What the benchmark sends and answers, and the policy the router routes it by: fixed
//! inputs shared by every configuration (and by the allocation benchmark).

use std::net::SocketAddr;

/// The path every request is sent to.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// A 154-word prompt that matches the `stem` keyword signal late ("step by step" is its last
/// keyword, so every other keyword is scanned first) and no `code` keyword.
pub const PROMPT: &str = "I am planning a two week trip through northern Italy next spring with my \
partner and our two children, who are eight and eleven years old. We want to spend time in \
Milan, Lake Como, Verona, Venice and Bologna, and we would like to travel mostly by train \
rather than renting a car. Our total budget is about six thousand euros, including hotels, \
trains, food and museum tickets, but not the flights. Could you help me decide how many nights \
to spend in each place, which trains to book in advance, and which sights are worth it with \
kids of that age? Please suggest a couple of rainy day alternatives in each city, tell me \
roughly what each part of the trip should cost, and point out where we could save money \
without missing the best experiences. Walk me through the plan step by step so I can compare \
it with my own draft.";

const SYSTEM: &str = "You are a careful travel assistant. Answer with concrete numbers, name \
the trains, stations and neighbourhoods, and keep every plan realistic for a young family of four.";

/// What the backend answers to every request: a small OpenAI-shaped completion with usage.
pub const COMPLETION: &str = r#"{"id":"chatcmpl-hop","object":"chat.completion","created":1700000000,"model":"Qwen/Qwen3-1.7B","choices":[{"index":0,"message":{"role":"assistant","content":"Here is a plan."},"finish_reason":"stop"}],"usage":{"prompt_tokens":231,"completion_tokens":5,"total_tokens":236}}"#;

/// The request body every configuration is sent: a chat completion asking for `auto`.
pub fn chat_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": 256,
        "temperature": 0.7,
        "stream": false,
    }))
    .expect("a JSON literal serialises")
}

/// The router's rules-only policy (keyword and header signals, three decisions), both pools
/// on `backend`.
pub fn router_manifests(backend: SocketAddr) -> String {
    format!(
        r#"apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: bench-small, namespace: default}}
spec:
  models:
  - {{name: Qwen/Qwen3-1.7B, reasoningFamily: qwen3, contextWindow: 32768}}
  endpoints:
    static: {{addresses: ["{backend}"]}}
---
apiVersion: semantic-router.io/v1alpha1
kind: ModelPool
metadata: {{name: bench-large, namespace: default}}
spec:
  models:
  - {{name: Qwen/Qwen3-30B-A3B, reasoningFamily: qwen3, contextWindow: 131072}}
  endpoints:
    static: {{addresses: ["{backend}"]}}
---
apiVersion: semantic-router.io/v1alpha1
kind: SemanticRoute
metadata: {{name: auto, namespace: default}}
spec:
  match: {{models: ["auto"]}}
  signals:
    headers:
    - {{name: team-research, header: x-team, values: ["research"]}}
    keywords:
    - name: stem
      keywords: ["integral", "derivative", "equation", "prove", "theorem", "probability",
                 "physics", "chemistry", "molecule", "velocity", "step by step"]
    - name: code
      keywords: ["python", "rust", "function", "compile", "stack trace", "algorithm", "sql"]
  decisions:
  - name: research-reasoning
    when: {{all: ["team-research"], any: ["stem", "code"]}}
    targets: [{{pool: bench-large, model: Qwen/Qwen3-30B-A3B, reasoning: {{enabled: true}}}}]
  - name: reasoning
    when: {{any: ["stem", "code"]}}
    targets: [{{pool: bench-large, model: Qwen/Qwen3-30B-A3B, reasoning: {{enabled: true}}}}]
  defaultTarget: {{pool: bench-small, model: Qwen/Qwen3-1.7B, reasoning: {{enabled: false}}}}
"#
    )
}
