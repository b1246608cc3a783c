//! The OpenAI request body parser and rewriter.

use serde_json::Value;

use super::Input;
use crate::api::{Reasoning, ReasoningEffort, ReasoningFamily};
use crate::dataplane::openai::{ApiKind, InferenceRequest};

const FAMILIES: [ReasoningFamily; 5] = [
    ReasoningFamily::Qwen3,
    ReasoningFamily::Deepseek,
    ReasoningFamily::GptOss,
    ReasoningFamily::Openai,
    ReasoningFamily::None,
];

const EFFORTS: [Option<ReasoningEffort>; 4] = [
    None,
    Some(ReasoningEffort::Low),
    Some(ReasoningEffort::Medium),
    Some(ReasoningEffort::High),
];

/// Byte 0 chooses the API (bit 0), the routed model's reasoning family (bits 1-3) and the
/// route's reasoning (bit 4 on, bits 5-6 effort); the rest is the body.
///
/// Asserts: a refusal is a 400 with a JSON error body; whatever parses can be read, asked
/// for usage and rewritten, and the rewritten body parses again with the routed model, the
/// same prompt, the same stream switches and the family's reasoning field set as routed.
pub fn openai_body(data: &[u8]) {
    let mut input = Input::new(data);
    let choice = input.byte();
    let body = input.rest();
    let kind = if choice & 1 == 0 {
        ApiKind::Chat
    } else {
        ApiKind::Completions
    };
    let family = FAMILIES[usize::from(choice >> 1 & 7) % FAMILIES.len()];
    let enabled = choice & 0x10 != 0;
    let reasoning = Reasoning {
        enabled,
        effort: EFFORTS[usize::from(choice >> 5 & 3)].filter(|_| enabled),
    };
    let _ = ApiKind::from_path(&String::from_utf8_lossy(body));
    match InferenceRequest::parse(kind, body) {
        Ok(request) => exercise(request, family, &reasoning),
        Err(e) => {
            assert_eq!(e.status(), 400, "{e}");
            let error: Value = serde_json::from_slice(&e.to_body()).expect("error body is JSON");
            assert!(error["error"]["code"].is_string(), "{error}");
        }
    }
}

fn exercise(mut request: InferenceRequest, family: ReasoningFamily, reasoning: &Reasoning) {
    let kind = request.kind();
    assert!(!request.model().trim().is_empty());
    let pieces: Vec<String> = request
        .prompt_pieces()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let text = request.prompt_text().into_owned();
    if let Some(context) = request.cache_context() {
        assert_eq!(kind, ApiKind::Chat);
        let context: Value = serde_json::from_str(&context).expect("cache context is JSON");
        for key in ["model", "stream", "stream_options", "user"] {
            assert!(context.get(key).is_none(), "{key} in the cache context");
        }
    }

    let had_usage = request.stream_includes_usage();
    let added = request.request_usage();
    assert!(!added || (request.stream() && !had_usage && request.stream_includes_usage()));
    let (stream, usage) = (request.stream(), request.stream_includes_usage());

    request.rewrite("routed/model", family, reasoning);
    let again = InferenceRequest::parse(kind, &request.to_bytes())
        .unwrap_or_else(|e| panic!("a rewritten body parses again: {e}"));
    assert_eq!(again.model(), "routed/model");
    assert_eq!(again.prompt_text(), text);
    assert_eq!(again.prompt_pieces(), pieces);
    assert_eq!(
        (again.stream(), again.stream_includes_usage()),
        (stream, usage)
    );

    let body = again.as_json();
    let kwarg = |key: &str| body.get("chat_template_kwargs").and_then(|k| k.get(key));
    match (kind, family) {
        (ApiKind::Chat, ReasoningFamily::Qwen3) => {
            assert_eq!(
                kwarg("enable_thinking"),
                Some(&Value::Bool(reasoning.enabled))
            );
        }
        (ApiKind::Chat, ReasoningFamily::Deepseek) => {
            assert_eq!(kwarg("thinking"), Some(&Value::Bool(reasoning.enabled)));
        }
        (ApiKind::Chat, ReasoningFamily::GptOss | ReasoningFamily::Openai) => {
            assert!(body.get("reasoning_effort").is_some_and(Value::is_string));
        }
        _ => {}
    }
}
