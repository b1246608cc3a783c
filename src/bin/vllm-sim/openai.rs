//! The OpenAI wire format: parsing inference requests, shaping answers, chunks and errors.
//! Every error the simulator returns goes through [`ApiError`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Words of the prompt echoed back in an answer.
const SUMMARY_WORDS: usize = 8;

/// Words that pad an answer out to its token count.
const FILLER: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// An OpenAI-shaped error: `{"error":{"message","type","param","code"}}` with its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code,
            message: message.into(),
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "model_not_found",
            message: format!("The model `{model}` does not exist."),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: "not_found",
            message: message.into(),
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            code: "payload_too_large",
            message: format!("request body is larger than {limit} bytes"),
        }
    }

    /// A failure drawn by `--fail-rate`.
    pub fn random_failure() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            code: "internal_error",
            message: "simulated internal error (--fail-rate)".into(),
        }
    }

    /// A failure asked for with `x-sim-fail`.
    pub fn injected(status: StatusCode) -> Self {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        Self {
            status,
            kind,
            code: "injected_failure",
            message: format!(
                "simulated failure with status {} (x-sim-fail)",
                status.as_u16()
            ),
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": null,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The prompt as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// All prompt text, the key of the prefix cache.
    pub text: String,
    /// Approximate prompt tokens: whitespace-separated words (or token ids when given).
    pub tokens: u64,
    /// The first words of the last user turn, echoed back in the answer.
    pub summary: String,
}

/// What one inference request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceRequest {
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    /// `max_completion_tokens` or `max_tokens`, when given.
    pub max_tokens: Option<u64>,
    pub prompt: Prompt,
}

/// Parses and validates a request body; `default_model` stands in for a missing `model`.
pub fn parse_request(
    endpoint: Endpoint,
    body: &[u8],
    default_model: &str,
) -> Result<InferenceRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "request body must be a JSON object",
        ));
    };
    let model = match obj.get("model") {
        None | Some(Value::Null) => default_model.to_string(),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(invalid("`model` must be a string")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream` must be a boolean")),
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let max_tokens = max_tokens(&obj)?;
    let prompt = match endpoint {
        Endpoint::Chat => chat_prompt(obj.get("messages"))?,
        Endpoint::Completions => completion_prompt(obj.get("prompt"))?,
    };
    Ok(InferenceRequest {
        endpoint,
        model,
        stream,
        include_usage,
        max_tokens,
        prompt,
    })
}

fn invalid(message: &str) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

fn max_tokens(obj: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    for key in ["max_completion_tokens", "max_tokens"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                return match v.as_u64() {
                    Some(n) if n > 0 => Ok(Some(n)),
                    _ => Err(invalid(&format!("`{key}` must be a positive integer"))),
                };
            }
        }
    }
    Ok(None)
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn summarize(text: &str) -> String {
    text.split_whitespace()
        .take(SUMMARY_WORDS)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text of one message's `content`: a string, a list of parts, or null.
fn content_text(content: Option<&Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" ")),
        Some(_) => Err(invalid(
            "message `content` must be a string, a list of parts or null",
        )),
    }
}

fn chat_prompt(messages: Option<&Value>) -> Result<Prompt, ApiError> {
    let Some(Value::Array(messages)) = messages else {
        return Err(invalid("`messages` must be a list of messages"));
    };
    if messages.is_empty() {
        return Err(invalid("`messages` must not be empty"));
    }
    let mut texts = Vec::with_capacity(messages.len());
    let mut last_user = None;
    for m in messages {
        let Some(role) = m.get("role").and_then(Value::as_str) else {
            return Err(invalid("each message needs a string `role`"));
        };
        let text = content_text(m.get("content"))?;
        if role == "user" {
            last_user = Some(texts.len());
        }
        texts.push(text);
    }
    let summary = summarize(&texts[last_user.unwrap_or(texts.len() - 1)]);
    let text = texts.join("\n");
    Ok(Prompt {
        tokens: words(&text),
        text,
        summary,
    })
}

fn completion_prompt(prompt: Option<&Value>) -> Result<Prompt, ApiError> {
    let bad = || invalid("`prompt` must be a string, a list of strings or a list of token ids");
    match prompt {
        Some(Value::String(s)) => Ok(Prompt {
            text: s.clone(),
            tokens: words(s),
            summary: summarize(s),
        }),
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_string) {
                // A batch of prompts is answered once, as if joined.
                let text = items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(Prompt {
                    tokens: words(&text),
                    summary: summarize(&text),
                    text,
                })
            } else {
                let ids = token_ids(items).ok_or_else(bad)?;
                let text = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
                Ok(Prompt {
                    tokens: ids.len() as u64,
                    summary: summarize(&text),
                    text,
                })
            }
        }
        _ => Err(bad()),
    }
}

/// Token ids from `[1, 2]` or `[[1, 2], [3]]`.
fn token_ids(items: &[Value]) -> Option<Vec<u64>> {
    let mut ids = Vec::new();
    for item in items {
        match item {
            Value::Array(inner) => {
                for v in inner {
                    ids.push(v.as_u64()?);
                }
            }
            v => ids.push(v.as_u64()?),
        }
    }
    Some(ids)
}

/// The pieces of an answer, one per output token; joined they read
/// "sim NAME answered model M: <first words of the prompt> lorem ipsum ...".
pub fn answer_pieces(name: &str, model: &str, summary: &str, tokens: usize) -> Vec<String> {
    let mut sentence = format!("sim {name} answered model {model}");
    if !summary.is_empty() {
        sentence.push_str(": ");
        sentence.push_str(summary);
    }
    sentence
        .split_whitespace()
        .chain(FILLER.iter().copied().cycle())
        .take(tokens)
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_string()
            } else {
                format!(" {w}")
            }
        })
        .collect()
}

/// Identity shared by an answer and all its chunks.
#[derive(Debug, Clone)]
pub struct Meta {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Meta {
    pub fn new(endpoint: Endpoint, model: &str, created: u64) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{:016x}", rand::random::<u64>()),
            created,
            model: model.to_string(),
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!(self.object(chunk)));
        m.insert("created".into(), json!(self.created));
        m.insert("model".into(), json!(self.model));
        m.insert("choices".into(), choices);
        m
    }
}

pub fn usage(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// A whole (non-streamed) answer.
pub fn full_response(meta: &Meta, text: &str, finish_reason: &str, usage: Value) -> Value {
    let choice = match meta.endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason,
        }),
        Endpoint::Completions => json!({
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish_reason,
        }),
    };
    let mut m = meta.envelope(false, json!([choice]));
    m.insert("usage".into(), usage);
    Value::Object(m)
}

/// The chunk carrying output token `index`; the last one carries the finish reason.
/// With `include_usage`, chunks carry `"usage": null` as OpenAI's do.
pub fn token_chunk(
    meta: &Meta,
    index: usize,
    piece: &str,
    finish_reason: Option<&str>,
    include_usage: bool,
) -> Value {
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            let delta = if index == 0 {
                json!({"role": "assistant", "content": piece})
            } else {
                json!({"content": piece})
            };
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason})
        }
        Endpoint::Completions => {
            json!({"index": 0, "text": piece, "logprobs": null, "finish_reason": finish_reason})
        }
    };
    let mut m = meta.envelope(true, json!([choice]));
    if include_usage {
        m.insert("usage".into(), Value::Null);
    }
    Value::Object(m)
}

/// The final chunk of a stream with `stream_options.include_usage`: no choices, usage.
pub fn usage_chunk(meta: &Meta, usage: Value) -> Value {
    let mut m = meta.envelope(true, json!([]));
    m.insert("usage".into(), usage);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_parses_prompt_model_and_options() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
            "max_tokens":4,"messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"what is rust"}]},
            {"role":"assistant","content":null}]}"#;
        let r = parse_request(Endpoint::Chat, body, "d").unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream && r.include_usage);
        assert_eq!(r.max_tokens, Some(4));
        assert_eq!(r.prompt.tokens, 5);
        assert_eq!(r.prompt.summary, "what is rust");
    }

    #[test]
    fn completion_prompt_forms() {
        let p = |b: &str| parse_request(Endpoint::Completions, b.as_bytes(), "d");
        assert_eq!(p(r#"{"prompt":"a b c"}"#).unwrap().prompt.tokens, 3);
        assert_eq!(p(r#"{"prompt":"a b c"}"#).unwrap().model, "d");
        assert_eq!(p(r#"{"prompt":["a b","c"]}"#).unwrap().prompt.tokens, 3);
        assert_eq!(p(r#"{"prompt":[1,2,3,4]}"#).unwrap().prompt.tokens, 4);
        assert_eq!(p(r#"{"prompt":[[1,2],[3]]}"#).unwrap().prompt.tokens, 3);
        assert!(p(r#"{"prompt":[]}"#).is_err());
        assert!(p(r#"{"prompt":{"x":1}}"#).is_err());
        assert!(p(r#"{}"#).is_err());
    }

    #[test]
    fn malformed_requests_are_400_with_openai_shape() {
        let e = parse_request(Endpoint::Chat, b"{not json", "d").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["code"], "invalid_json");
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        for body in [
            r#"[1]"#,
            r#"{"messages":[]}"#,
            r#"{"messages":"hi"}"#,
            r#"{"model":3,"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            r#"{"messages":[{"content":"x"}]}"#,
        ] {
            let e = parse_request(Endpoint::Chat, body.as_bytes(), "d").unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
        }
    }

    #[test]
    fn answer_names_backend_and_model_and_has_one_piece_per_token() {
        let pieces = answer_pieces("b1", "m", "hello there", 12);
        assert_eq!(pieces.len(), 12);
        let text: String = pieces.concat();
        assert!(
            text.starts_with("sim b1 answered model m: hello there lorem"),
            "{text}"
        );
        assert_eq!(text.split_whitespace().count(), 12);
        assert_eq!(answer_pieces("b1", "m", "", 2).concat(), "sim b1");
    }

    #[test]
    fn chunks_have_openai_shape() {
        let meta = Meta::new(Endpoint::Chat, "m", 7);
        let first = token_chunk(&meta, 0, "sim", None, true);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(first["usage"].is_null() && first.get("usage").is_some());
        let last = token_chunk(&meta, 3, " x", Some("stop"), false);
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert!(last.get("usage").is_none());
        let u = usage_chunk(&meta, usage(2, 3));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 5);
        let c = Meta::new(Endpoint::Completions, "m", 7);
        assert_eq!(
            token_chunk(&c, 0, "a", None, false)["choices"][0]["text"],
            "a"
        );
    }
}
