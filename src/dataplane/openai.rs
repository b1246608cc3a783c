//! OpenAI-style request bodies (`/v1/chat/completions`, `/v1/completions`): parse and
//! validate once, read the text the signals classify, rewrite `model` and the reasoning
//! switch for the chosen model family, serialise again.
//!
//! The body is kept as a `serde_json::Map`, not a typed struct, so every field the router
//! does not know (tools, `response_format`, vLLM extensions, fields OpenAI adds next year)
//! reaches the backend exactly as the client sent it. Validation checks only what the
//! router reads or writes, plus the shape every backend requires, so a malformed request
//! fails here with a clear 400 instead of slower at the backend.
//!
//! Re-serialisation is semantically lossless but not byte-identical: serde_json's
//! `preserve_order` feature is not enabled in this crate, so object keys come back sorted,
//! whitespace is dropped, and numbers are written canonically (`1e2` becomes `100.0`).
//! Backends do not care; the caller must set `content-length` from [`InferenceRequest::to_bytes`].

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::error::RequestError;
use crate::api::{Reasoning, ReasoningEffort, ReasoningFamily};

/// Which OpenAI API an inference request uses; decides how its body is validated and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiKind {
    /// `POST /v1/chat/completions`: a `messages` conversation.
    Chat,
    /// `POST /v1/completions`: a raw `prompt`.
    Completions,
}

impl ApiKind {
    /// The API a request path names, ignoring any query string; `None` for every other path
    /// (those pass through the router untouched).
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        match path {
            "/v1/chat/completions" => Some(Self::Chat),
            "/v1/completions" => Some(Self::Completions),
            _ => None,
        }
    }

    /// The canonical path of this API.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
        }
    }
}

/// A validated inference request body, parsed once and rewritten in place.
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceRequest {
    kind: ApiKind,
    body: Map<String, Value>,
}

impl InferenceRequest {
    /// Parse and validate a request body for `kind`.
    ///
    /// Checks: the body is a JSON object; `model` is a non-empty string; `stream`, if
    /// present, is a boolean. Chat: `messages` is a non-empty array of objects, each with a
    /// string `role` and a `content` that is a string, `null`/absent, or an array of content
    /// parts (objects with a string `type`; `text` parts carry a string `text`);
    /// `chat_template_kwargs`, if present, is an object. Completions: `prompt` is a string,
    /// a non-empty array of strings, or token ids (an array of integers or of integer
    /// arrays), as the OpenAI API allows.
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidJson`] for a body that is not JSON; `MissingField`,
    /// `WrongType` or `InvalidValue` naming the offending field path (e.g.
    /// `messages[2].content`) for one that breaks the rules above.
    pub fn parse(kind: ApiKind, body: &[u8]) -> Result<Self, RequestError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson {
            detail: e.to_string(),
        })?;
        let Value::Object(body) = value else {
            return Err(wrong_type("body", "a JSON object"));
        };
        validate_model(&body)?;
        match body.get("stream") {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(_) => return Err(wrong_type("stream", "a boolean")),
        }
        match kind {
            ApiKind::Chat => {
                validate_messages(&body)?;
                match body.get("chat_template_kwargs") {
                    None | Some(Value::Null | Value::Object(_)) => {}
                    Some(_) => return Err(wrong_type("chat_template_kwargs", "an object")),
                }
            }
            ApiKind::Completions => validate_prompt(&body)?,
        }
        Ok(Self { kind, body })
    }

    /// The API this request uses.
    pub fn kind(&self) -> ApiKind {
        self.kind
    }

    /// The `model` field: what the client asked for (an alias such as `auto`, or a model
    /// name) before [`rewrite`](Self::rewrite), the routed model after.
    pub fn model(&self) -> &str {
        self.body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Whether the client asked for a streamed (SSE) response.
    pub fn stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Whether a streamed response will end with a usage chunk
    /// (`stream_options.include_usage: true`); without it a stream carries no token counts.
    pub fn stream_includes_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Asks a streamed request's server for usage (`stream_options.include_usage: true`) when
    /// the client did not; true when it was added, so the stream must be given back without
    /// it. A `stream_options` that is not an object is left to the server to refuse.
    pub fn request_usage(&mut self) -> bool {
        if !self.stream() || self.stream_includes_usage() {
            return false;
        }
        let options = self
            .body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        match options {
            Value::Object(options) => {
                options.insert("include_usage".into(), Value::Bool(true));
                true
            }
            _ => false,
        }
    }

    /// The prompt as the model server reads it, in pieces: each message's role and text parts in
    /// order for a chat, the prompt for a completion. Borrowed from the body; nothing is copied.
    pub fn prompt_pieces(&self) -> Vec<&str> {
        let body = &self.body;
        let mut pieces = Vec::new();
        match self.kind {
            ApiKind::Chat => {
                for message in body
                    .get("messages")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(role) = message.get("role").and_then(Value::as_str) {
                        pieces.push(role);
                    }
                    match message.get("content") {
                        Some(Value::String(text)) => pieces.push(text),
                        Some(Value::Array(parts)) => pieces.extend(
                            parts
                                .iter()
                                .filter_map(|p| p.get("text").and_then(Value::as_str)),
                        ),
                        _ => {}
                    }
                }
            }
            ApiKind::Completions => match body.get("prompt") {
                Some(Value::String(text)) => pieces.push(text),
                Some(Value::Array(items)) => pieces.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            },
        }
        pieces
    }

    /// The text the signals classify: for Chat the last `user` message (its text parts
    /// joined with `"\n"`; image and other parts skipped), for Completions the prompt (an
    /// array of prompts joined with `"\n"`, token-id prompts give no text). Empty when
    /// there is no such text. Borrowed when the text is one string in the body.
    pub fn prompt_text(&self) -> Cow<'_, str> {
        match self.kind {
            ApiKind::Chat => self
                .body
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|messages| {
                    messages
                        .iter()
                        .rev()
                        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                })
                .and_then(|m| m.get("content"))
                .map_or(Cow::Borrowed(""), content_text),
            ApiKind::Completions => match self.body.get("prompt") {
                Some(Value::String(s)) => Cow::Borrowed(s),
                Some(Value::Array(items)) => {
                    join_texts(items.iter().filter_map(Value::as_str).collect())
                }
                _ => Cow::Borrowed(""),
            },
        }
    }

    /// What a Chat answer depends on besides the prompt, for the semantic cache's scope: the
    /// body without `model`, the stream switches, `user` and the last message, which must be
    /// the user's. `None` when the request cannot be answered from a cache: not Chat, or the
    /// conversation does not end with a user message.
    pub fn cache_context(&self) -> Option<String> {
        if self.kind != ApiKind::Chat {
            return None;
        }
        let messages = self.body.get("messages")?.as_array()?;
        let (last, earlier) = messages.split_last()?;
        if last.get("role").and_then(Value::as_str) != Some("user") {
            return None;
        }
        serde_json::to_string(&CacheContext {
            body: &self.body,
            earlier,
        })
        .ok()
    }

    /// Point the request at the routed `model` and set its reasoning switch the way the
    /// model's family reads it. Every other field stays as the client sent it.
    ///
    /// Reasoning is written explicitly both ways, so a template that thinks by default
    /// (or a client's own setting) never decides against the route:
    /// - `Qwen3`: `chat_template_kwargs.enable_thinking = enabled`.
    /// - `Deepseek`: `chat_template_kwargs.thinking = enabled`.
    ///
    ///   Both merge into an existing `chat_template_kwargs` object, keeping its other keys.
    /// - `GptOss` and `Openai`: `reasoning_effort` = the route's effort, `"medium"` when
    ///   enabled without one. Neither family can switch reasoning off, so "off" is the
    ///   least effort every such model accepts: `"low"`. (Removing the field instead would
    ///   give the model's default, medium, the opposite of what the route asked for.)
    /// - `None`: no reasoning field is touched.
    ///
    /// Completions requests get only the `model`: there is no chat template for the
    /// template switches to reach, and strict backends reject `reasoning_effort` there.
    pub fn rewrite(&mut self, model: &str, family: ReasoningFamily, reasoning: &Reasoning) {
        self.body
            .insert("model".to_owned(), Value::String(model.to_owned()));
        if self.kind != ApiKind::Chat {
            return;
        }
        match family {
            ReasoningFamily::Qwen3 => self.set_template_kwarg("enable_thinking", reasoning.enabled),
            ReasoningFamily::Deepseek => self.set_template_kwarg("thinking", reasoning.enabled),
            ReasoningFamily::GptOss | ReasoningFamily::Openai => {
                let effort = if reasoning.enabled {
                    reasoning.effort.unwrap_or(ReasoningEffort::Medium)
                } else {
                    ReasoningEffort::Low
                };
                self.body.insert(
                    "reasoning_effort".to_owned(),
                    Value::String(effort_str(effort).to_owned()),
                );
            }
            ReasoningFamily::None => {}
        }
    }

    /// The body as JSON bytes, to send upstream. Set `content-length` from its length.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A map of `Value`s parsed from JSON always serialises (string keys, finite numbers).
        serde_json::to_vec(&self.body).expect("a serde_json::Map always serialises")
    }

    /// The whole body, read-only, for code that needs a field this type has no accessor
    /// for (cache keys, header-free policy matches).
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.body
    }

    fn set_template_kwarg(&mut self, key: &str, on: bool) {
        let kwargs = self
            .body
            .entry("chat_template_kwargs")
            .or_insert_with(|| Value::Object(Map::new()));
        // `parse` allows only an object or null here; null means "none given".
        if !kwargs.is_object() {
            *kwargs = Value::Object(Map::new());
        }
        if let Value::Object(kwargs) = kwargs {
            kwargs.insert(key.to_owned(), Value::Bool(on));
        }
    }
}

fn effort_str(effort: ReasoningEffort) -> &'static str {
    match effort {
        ReasoningEffort::Low => "low",
        ReasoningEffort::Medium => "medium",
        ReasoningEffort::High => "high",
    }
}

/// Text of a message `content`: the string itself, or the text parts joined.
fn content_text(content: &Value) -> Cow<'_, str> {
    match content {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(parts) => join_texts(
            parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => Cow::Borrowed(""),
    }
}

fn join_texts(texts: Vec<&str>) -> Cow<'_, str> {
    match texts.as_slice() {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.join("\n")),
    }
}

fn missing(field: impl Into<String>) -> RequestError {
    RequestError::MissingField {
        field: field.into(),
    }
}

fn wrong_type(field: impl Into<String>, expected: &'static str) -> RequestError {
    RequestError::WrongType {
        field: field.into(),
        expected,
    }
}

fn invalid(field: impl Into<String>, problem: &'static str) -> RequestError {
    RequestError::InvalidValue {
        field: field.into(),
        problem,
    }
}

fn validate_model(body: &Map<String, Value>) -> Result<(), RequestError> {
    match body.get("model") {
        None | Some(Value::Null) => Err(missing("model")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(invalid("model", "must not be empty")),
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(wrong_type("model", "a string")),
    }
}

fn validate_messages(body: &Map<String, Value>) -> Result<(), RequestError> {
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(wrong_type("messages", "an array of messages")),
    };
    if messages.is_empty() {
        return Err(invalid("messages", "must contain at least one message"));
    }
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(wrong_type(format!("messages[{i}]"), "an object"));
        };
        match message.get("role") {
            None | Some(Value::Null) => return Err(missing(format!("messages[{i}].role"))),
            Some(Value::String(_)) => {}
            Some(_) => return Err(wrong_type(format!("messages[{i}].role"), "a string")),
        }
        match message.get("content") {
            // Absent or null: an assistant turn that only calls tools.
            None | Some(Value::Null | Value::String(_)) => {}
            Some(Value::Array(parts)) => validate_parts(i, parts)?,
            Some(_) => {
                return Err(wrong_type(
                    format!("messages[{i}].content"),
                    "a string, an array of content parts, or null",
                ));
            }
        }
    }
    Ok(())
}

fn validate_parts(i: usize, parts: &[Value]) -> Result<(), RequestError> {
    for (j, part) in parts.iter().enumerate() {
        let path = || format!("messages[{i}].content[{j}]");
        let Value::Object(part) = part else {
            return Err(wrong_type(path(), "an object"));
        };
        match part.get("type") {
            None | Some(Value::Null) => return Err(missing(format!("{}.type", path()))),
            Some(Value::String(t)) if t == "text" => match part.get("text") {
                None | Some(Value::Null) => return Err(missing(format!("{}.text", path()))),
                Some(Value::String(_)) => {}
                Some(_) => return Err(wrong_type(format!("{}.text", path()), "a string")),
            },
            // image_url, input_audio, file, refusal, …: the backend checks those.
            Some(Value::String(_)) => {}
            Some(_) => return Err(wrong_type(format!("{}.type", path()), "a string")),
        }
    }
    Ok(())
}

fn validate_prompt(body: &Map<String, Value>) -> Result<(), RequestError> {
    let items = match body.get("prompt") {
        None | Some(Value::Null) => return Err(missing("prompt")),
        Some(Value::String(_)) => return Ok(()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(wrong_type("prompt", "a string or an array of strings")),
    };
    let Some(first) = items.first() else {
        return Err(invalid("prompt", "must not be empty"));
    };
    let is_token = |v: &Value| v.as_u64().is_some();
    // The first item decides which of the three array forms this is; the rest must match.
    let (fits, expected): (&dyn Fn(&Value) -> bool, _) = match first {
        Value::Number(_) => (&is_token, "a token id (a non-negative integer)"),
        Value::Array(_) => (
            &|v: &Value| v.as_array().is_some_and(|ids| ids.iter().all(is_token)),
            "an array of token ids",
        ),
        _ => (&Value::is_string, "a string"),
    };
    match items.iter().position(|item| !fits(item)) {
        Some(i) => Err(wrong_type(format!("prompt[{i}]"), expected)),
        None => Ok(()),
    }
}

/// A Chat body as the cache scope reads it, borrowed: every field but `model`, the stream
/// switches and `user`, with `messages` less the last (the prompt). It serializes to the same
/// text as that object built and printed, without copying the conversation.
struct CacheContext<'a> {
    body: &'a Map<String, Value>,
    earlier: &'a [Value],
}

impl serde::Serialize for CacheContext<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.body {
            match key.as_str() {
                "messages" => map.serialize_entry(key, self.earlier)?,
                "model" | "stream" | "stream_options" | "user" => {}
                _ => map.serialize_entry(key, value)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn chat(body: Value) -> Result<InferenceRequest, RequestError> {
        InferenceRequest::parse(ApiKind::Chat, body.to_string().as_bytes())
    }

    fn completions(body: Value) -> Result<InferenceRequest, RequestError> {
        InferenceRequest::parse(ApiKind::Completions, body.to_string().as_bytes())
    }

    fn basic_chat() -> Value {
        json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn cache_context_reads_as_the_object_it_stands_for_so_stored_scopes_stay_valid() {
        let body = json!({"model": "auto", "frequency_penalty": 0.5, "logprobs": true,
            "max_tokens": 64, "n": 1, "stream": true, "user": "u1", "temperature": 0.2,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [{"role": "system", "content": "be terse"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "hi"}]});
        let mut object = body.as_object().unwrap().clone();
        for key in ["model", "stream", "user"] {
            object.remove(key);
        }
        object["messages"].as_array_mut().unwrap().pop();
        assert_eq!(
            chat(body).unwrap().cache_context(),
            Some(Value::Object(object).to_string())
        );
    }

    #[test]
    fn cache_context_is_everything_but_the_prompt_and_the_stream_switches() {
        let a = chat(json!({"model": "auto", "temperature": 0, "messages": [
            {"role": "system", "content": "be terse"}, {"role": "user", "content": "capital of NC?"}]}))
        .unwrap();
        let b = chat(json!({"model": "other", "stream": true, "temperature": 0, "user": "u1", "messages": [
            {"role": "system", "content": "be terse"}, {"role": "user", "content": "NC's capital city?"}]}))
        .unwrap();
        assert_eq!(a.cache_context(), b.cache_context());
        assert!(a.cache_context().is_some_and(|c| !c.contains("capital")));
        let other_system = chat(json!({"model": "auto", "temperature": 0, "messages": [
            {"role": "system", "content": "be verbose"}, {"role": "user", "content": "capital of NC?"}]}))
        .unwrap();
        assert_ne!(a.cache_context(), other_system.cache_context());
        let other_params = chat(json!({"model": "auto", "temperature": 1, "messages": [
            {"role": "system", "content": "be terse"}, {"role": "user", "content": "capital of NC?"}]}))
        .unwrap();
        assert_ne!(a.cache_context(), other_params.cache_context());
        let ends_with_assistant = chat(json!({"model": "auto", "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}]}))
        .unwrap();
        assert_eq!(ends_with_assistant.cache_context(), None);
        assert_eq!(
            completions(json!({"model": "m", "prompt": "x"}))
                .unwrap()
                .cache_context(),
            None
        );
    }

    fn on(effort: Option<ReasoningEffort>) -> Reasoning {
        Reasoning {
            enabled: true,
            effort,
        }
    }

    fn off() -> Reasoning {
        Reasoning {
            enabled: false,
            effort: None,
        }
    }

    /// Rewrite `body` and return what goes upstream, parsed back.
    fn rewritten(body: Value, family: ReasoningFamily, reasoning: Reasoning) -> Value {
        let mut req = chat(body).unwrap();
        req.rewrite("routed", family, &reasoning);
        serde_json::from_slice(&req.to_bytes()).unwrap()
    }

    fn err_field(e: RequestError) -> (&'static str, String) {
        (e.code(), e.param().unwrap_or_default().to_owned())
    }

    #[test]
    fn api_kind_from_path() {
        assert_eq!(
            ApiKind::from_path("/v1/chat/completions"),
            Some(ApiKind::Chat)
        );
        assert_eq!(
            ApiKind::from_path("/v1/chat/completions?debug=1"),
            Some(ApiKind::Chat)
        );
        assert_eq!(
            ApiKind::from_path("/v1/completions"),
            Some(ApiKind::Completions)
        );
        assert_eq!(
            ApiKind::from_path("/v1/completions?x"),
            Some(ApiKind::Completions)
        );
        assert_eq!(ApiKind::from_path("/v1/models"), None);
        assert_eq!(ApiKind::from_path("/v1/chat/completions/x"), None);
        assert_eq!(ApiKind::from_path(""), None);
        for kind in [ApiKind::Chat, ApiKind::Completions] {
            assert_eq!(ApiKind::from_path(kind.path()), Some(kind));
        }
    }

    #[test]
    fn usage_is_requested_only_for_streams_without_it() {
        let mut r = chat(
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"continuous_usage_stats": false}}),
        )
        .unwrap();
        assert!(r.request_usage());
        assert_eq!(
            r.as_json()["stream_options"],
            json!({"continuous_usage_stats": false, "include_usage": true})
        );
        assert!(!r.request_usage(), "already there");
        let mut r = chat(basic_chat()).unwrap();
        assert!(!r.request_usage(), "not a stream");
        assert!(r.as_json().get("stream_options").is_none());
        let mut r = chat(
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": false}}),
        )
        .unwrap();
        assert!(r.request_usage(), "asked not to: the router still counts");
        let mut r =
            completions(json!({"model": "m", "stream": true, "prompt": "x", "stream_options": 3}))
                .unwrap();
        assert!(!r.request_usage());
        assert_eq!(r.as_json()["stream_options"], 3);
    }

    #[test]
    fn prompt_pieces_are_every_role_and_text_in_order() {
        let chat = InferenceRequest::parse(
            ApiKind::Chat,
            br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            chat.prompt_pieces(),
            ["system", "be brief", "user", "a", "b", "assistant"]
        );
        let completion =
            InferenceRequest::parse(ApiKind::Completions, br#"{"model":"m","prompt":["x","y"]}"#)
                .unwrap();
        assert_eq!(completion.prompt_pieces(), ["x", "y"]);
    }

    #[test]
    fn accessors() {
        let req = chat(json!({
            "model": "auto", "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .unwrap();
        assert_eq!(req.kind(), ApiKind::Chat);
        assert_eq!(req.model(), "auto");
        assert!(req.stream());
        assert!(req.stream_includes_usage());
        assert_eq!(req.prompt_text(), "hi");

        let req = chat(basic_chat()).unwrap();
        assert!(!req.stream());
        assert!(!req.stream_includes_usage());
        let req = chat(json!({"model": "m", "stream": null, "messages": [{"role": "user"}]}));
        assert!(!req.unwrap().stream());
    }

    #[test]
    fn qwen3_both_ways() {
        let v = rewritten(basic_chat(), ReasoningFamily::Qwen3, on(None));
        assert_eq!(v["model"], "routed");
        assert_eq!(v["chat_template_kwargs"], json!({"enable_thinking": true}));
        let v = rewritten(basic_chat(), ReasoningFamily::Qwen3, off());
        assert_eq!(v["chat_template_kwargs"], json!({"enable_thinking": false}));
        assert!(v.get("reasoning_effort").is_none());
    }

    #[test]
    fn deepseek_both_ways() {
        let v = rewritten(basic_chat(), ReasoningFamily::Deepseek, on(None));
        assert_eq!(v["chat_template_kwargs"], json!({"thinking": true}));
        let v = rewritten(basic_chat(), ReasoningFamily::Deepseek, off());
        assert_eq!(v["chat_template_kwargs"], json!({"thinking": false}));
    }

    #[test]
    fn gpt_oss_and_openai_effort() {
        for family in [ReasoningFamily::GptOss, ReasoningFamily::Openai] {
            let v = rewritten(basic_chat(), family, on(Some(ReasoningEffort::High)));
            assert_eq!(v["reasoning_effort"], "high");
            let v = rewritten(basic_chat(), family, on(None));
            assert_eq!(v["reasoning_effort"], "medium");
            // Off cannot mean "no reasoning" here: the least effort, overriding the client.
            let mut body = basic_chat();
            body["reasoning_effort"] = json!("high");
            let v = rewritten(body, family, off());
            assert_eq!(v["reasoning_effort"], "low");
            assert!(v.get("chat_template_kwargs").is_none());
        }
    }

    #[test]
    fn family_none_touches_only_model() {
        let mut body = basic_chat();
        body["reasoning_effort"] = json!("high");
        body["chat_template_kwargs"] = json!({"enable_thinking": true});
        let v = rewritten(body.clone(), ReasoningFamily::None, off());
        body["model"] = json!("routed");
        assert_eq!(v, body);
    }

    #[test]
    fn merges_into_existing_chat_template_kwargs() {
        let mut body = basic_chat();
        body["chat_template_kwargs"] = json!({"enable_thinking": true, "custom": [1, 2]});
        let v = rewritten(body, ReasoningFamily::Qwen3, off());
        assert_eq!(
            v["chat_template_kwargs"],
            json!({"enable_thinking": false, "custom": [1, 2]})
        );

        let mut body = basic_chat();
        body["chat_template_kwargs"] = json!({"x": "y"});
        let v = rewritten(body, ReasoningFamily::Deepseek, on(None));
        assert_eq!(
            v["chat_template_kwargs"],
            json!({"x": "y", "thinking": true})
        );

        let mut body = basic_chat();
        body["chat_template_kwargs"] = Value::Null;
        let v = rewritten(body, ReasoningFamily::Qwen3, on(None));
        assert_eq!(v["chat_template_kwargs"], json!({"enable_thinking": true}));
    }

    #[test]
    fn completions_rewrite_only_model() {
        for family in [
            ReasoningFamily::Qwen3,
            ReasoningFamily::Deepseek,
            ReasoningFamily::GptOss,
            ReasoningFamily::Openai,
        ] {
            let mut req = completions(json!({"model": "auto", "prompt": "x", "n": 2})).unwrap();
            req.rewrite("routed", family, &on(None));
            let v: Value = serde_json::from_slice(&req.to_bytes()).unwrap();
            assert_eq!(v, json!({"model": "routed", "prompt": "x", "n": 2}));
        }
    }

    #[test]
    fn other_fields_survive() {
        let body = json!({
            "model": "auto",
            "messages": [{"role": "user", "content": "hi", "name": "bob"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "temperature": 0.25, "max_tokens": 100, "seed": -7, "big": 18446744073709551615u64,
            "logit_bias": {"50256": -100}, "unicode": "héllo \u{1F600}"
        });
        let v = rewritten(body.clone(), ReasoningFamily::Qwen3, on(None));
        let mut expected = body;
        expected["model"] = json!("routed");
        expected["chat_template_kwargs"] = json!({"enable_thinking": true});
        assert_eq!(v, expected);
    }

    #[test]
    fn invalid_json_and_body_shape() {
        for bytes in [&b""[..], b"{", b"not json", b"{\"model\":}", b"\xff\xfe"] {
            let e = InferenceRequest::parse(ApiKind::Chat, bytes).unwrap_err();
            assert_eq!(e.code(), "invalid_json", "{bytes:?}");
        }
        for body in [json!([]), json!("x"), json!(1), json!(null)] {
            assert_eq!(
                err_field(chat(body).unwrap_err()),
                ("invalid_field_type", "body".into())
            );
        }
    }

    #[test]
    fn chat_validation_errors_name_the_field() {
        let cases = [
            (
                json!({"messages": [{"role": "user"}]}),
                "missing_model",
                "model",
            ),
            (
                json!({"model": null, "messages": [{"role": "user"}]}),
                "missing_model",
                "model",
            ),
            (
                json!({"model": 5, "messages": [{"role": "user"}]}),
                "invalid_field_type",
                "model",
            ),
            (
                json!({"model": " ", "messages": [{"role": "user"}]}),
                "invalid_field_value",
                "model",
            ),
            (json!({"model": "m"}), "missing_messages", "messages"),
            (
                json!({"model": "m", "messages": {}}),
                "invalid_field_type",
                "messages",
            ),
            (
                json!({"model": "m", "messages": []}),
                "invalid_field_value",
                "messages",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}),
                "invalid_field_type",
                "stream",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}], "chat_template_kwargs": []}),
                "invalid_field_type",
                "chat_template_kwargs",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user"}, "hi"]}),
                "invalid_field_type",
                "messages[1]",
            ),
            (
                json!({"model": "m", "messages": [{"content": "hi"}]}),
                "missing_field",
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [{"role": 1}]}),
                "invalid_field_type",
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "u"},
                    {"role": "user", "content": 42}
                ]}),
                "invalid_field_type",
                "messages[2].content",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": ["hi"]}]}),
                "invalid_field_type",
                "messages[0].content[0]",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
                "missing_field",
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": 3}]}]}),
                "invalid_field_type",
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "a"}, {"type": "text"}
                ]}]}),
                "missing_field",
                "messages[0].content[1].text",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [
                    {"type": "text", "text": ["a"]}
                ]}]}),
                "invalid_field_type",
                "messages[0].content[0].text",
            ),
        ];
        for (body, code, field) in cases {
            let got = err_field(chat(body.clone()).unwrap_err());
            assert_eq!(got, (code, field.to_owned()), "{body}");
        }
    }

    #[test]
    fn completions_validation_errors_name_the_field() {
        let cases = [
            (json!({"prompt": "x"}), "missing_model", "model"),
            (json!({"model": "m"}), "missing_prompt", "prompt"),
            (
                json!({"model": "m", "prompt": 1}),
                "invalid_field_type",
                "prompt",
            ),
            (
                json!({"model": "m", "prompt": []}),
                "invalid_field_value",
                "prompt",
            ),
            (
                json!({"model": "m", "prompt": ["a", 1]}),
                "invalid_field_type",
                "prompt[1]",
            ),
            (
                json!({"model": "m", "prompt": [1, "a"]}),
                "invalid_field_type",
                "prompt[1]",
            ),
            (
                json!({"model": "m", "prompt": [1, -2]}),
                "invalid_field_type",
                "prompt[1]",
            ),
            (
                json!({"model": "m", "prompt": [[1], [2.5]]}),
                "invalid_field_type",
                "prompt[1]",
            ),
            (
                json!({"model": "m", "prompt": [{}]}),
                "invalid_field_type",
                "prompt[0]",
            ),
            (
                json!({"model": "m", "prompt": "x", "stream": 1}),
                "invalid_field_type",
                "stream",
            ),
        ];
        for (body, code, field) in cases {
            let got = err_field(completions(body.clone()).unwrap_err());
            assert_eq!(got, (code, field.to_owned()), "{body}");
        }
        // Completions do not need chat fields, and chat fields are not checked there.
        completions(json!({"model": "m", "prompt": "x", "chat_template_kwargs": 1})).unwrap();
    }

    #[test]
    fn multimodal_content_parts() {
        let req = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "Answer briefly."},
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
            ]}]}),
        )
        .unwrap();
        assert_eq!(req.prompt_text(), "What is in this image?\nAnswer briefly.");

        let req = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
            ]}]}),
        )
        .unwrap();
        assert_eq!(req.prompt_text(), "");
    }

    #[test]
    fn prompt_text_is_last_user_turn() {
        let req = chat(json!({"model": "m", "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "tool output", "tool_call_id": "1"}
        ]}))
        .unwrap();
        assert_eq!(req.prompt_text(), "second question");
        assert!(matches!(req.prompt_text(), Cow::Borrowed(_)));

        let req = chat(json!({"model": "m", "messages": [{"role": "system", "content": "s"}]}));
        assert_eq!(req.unwrap().prompt_text(), "");
    }

    #[test]
    fn completions_prompt_text() {
        let req = completions(json!({"model": "m", "prompt": "once upon"})).unwrap();
        assert_eq!(req.prompt_text(), "once upon");
        let req = completions(json!({"model": "m", "prompt": ["a", "b"]})).unwrap();
        assert_eq!(req.prompt_text(), "a\nb");
        let req = completions(json!({"model": "m", "prompt": [1, 2, 3]})).unwrap();
        assert_eq!(req.prompt_text(), "");
        let req = completions(json!({"model": "m", "prompt": [[1, 2], [3]]})).unwrap();
        assert_eq!(req.prompt_text(), "");
    }

    // ---- property tests ----

    /// Any JSON value. Floats are multiples of 1/8 so they print and parse back exactly
    /// (serde_json's default float parser is not guaranteed round-trip exact).
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1_000_000i64..1_000_000).prop_map(|n| Value::from(n as f64 / 8.0)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects shaped like requests, with arbitrary values where the validators look, so
    /// the property reaches deep validation paths, not only "body is not an object".
    fn arb_request_like() -> impl Strategy<Value = Value> {
        // Mostly well-formed values with the odd arbitrary one, so that a fair share of
        // cases gets through validation and the rest fail at every depth.
        let text = || ".{0,8}".prop_map(Value::String);
        let part = (
            prop_oneof![4 => Just(json!("text")), 2 => Just(json!("image_url")), 1 => arb_json()],
            prop_oneof![8 => text(), 1 => arb_json()],
        )
            .prop_map(|(t, text)| json!({"type": t, "text": text}));
        let content = prop_oneof![
            8 => text(),
            8 => prop::collection::vec(part, 0..4).prop_map(Value::Array),
            2 => Just(Value::Null),
            1 => arb_json(),
        ];
        let role =
            prop_oneof![8 => Just(json!("user")), 8 => Just(json!("assistant")), 1 => arb_json()];
        let message = prop_oneof![
            30 => (role, content).prop_map(|(role, content)| json!({"role": role, "content": content})),
            1 => arb_json(),
        ];
        let messages = prop_oneof![
            12 => prop::collection::vec(message, 0..4).prop_map(Value::Array),
            1 => arb_json(),
        ];
        let prompt = prop_oneof![
            4 => text(),
            4 => prop::collection::vec(text(), 0..4).prop_map(Value::Array),
            2 => prop::collection::vec(any::<u16>().prop_map(Value::from), 0..4).prop_map(Value::Array),
            1 => prop::collection::vec(arb_json(), 0..4).prop_map(Value::Array),
            1 => arb_json(),
        ];
        let stream = prop_oneof![8 => any::<bool>().prop_map(Value::Bool), 4 => Just(Value::Null), 1 => arb_json()];
        let kwargs = prop_oneof![
            8 => prop::collection::btree_map("[a-z_]{1,8}", arb_json(), 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            4 => Just(Value::Null),
            1 => arb_json(),
        ];
        (
            prop_oneof![12 => ".{1,8}".prop_map(Value::String), 1 => arb_json()],
            messages,
            prompt,
            stream,
            kwargs,
        )
            .prop_map(|(model, messages, prompt, stream, kwargs)| {
                json!({
                    "model": model, "messages": messages, "prompt": prompt,
                    "stream": stream, "chat_template_kwargs": kwargs
                })
            })
    }

    fn arb_family() -> impl Strategy<Value = ReasoningFamily> {
        prop_oneof![
            Just(ReasoningFamily::Qwen3),
            Just(ReasoningFamily::Deepseek),
            Just(ReasoningFamily::GptOss),
            Just(ReasoningFamily::Openai),
            Just(ReasoningFamily::None),
        ]
    }

    fn arb_reasoning() -> impl Strategy<Value = Reasoning> {
        let effort = prop_oneof![
            Just(None),
            Just(Some(ReasoningEffort::Low)),
            Just(Some(ReasoningEffort::Medium)),
            Just(Some(ReasoningEffort::High)),
        ];
        (any::<bool>(), effort).prop_map(|(enabled, effort)| Reasoning {
            enabled,
            effort: effort.filter(|_| enabled),
        })
    }

    /// Whatever `parse` accepts must read, rewrite and serialise back to something it accepts.
    fn exercise(kind: ApiKind, bytes: &[u8], family: ReasoningFamily, reasoning: &Reasoning) {
        match InferenceRequest::parse(kind, bytes) {
            Ok(mut req) => {
                let _ = (req.model(), req.stream(), req.stream_includes_usage());
                let _ = req.prompt_text();
                req.rewrite("m", family, reasoning);
                // Not compared whole: arbitrary long decimals need not parse back bit-exact.
                let again = InferenceRequest::parse(kind, &req.to_bytes()).unwrap();
                assert_eq!(again.model(), "m");
                assert_eq!(again.prompt_text(), req.prompt_text());
            }
            Err(e) => {
                assert!((400..600).contains(&e.status()));
                let _ = e.to_body();
            }
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            family in arb_family(),
            reasoning in arb_reasoning(),
        ) {
            exercise(ApiKind::Chat, &bytes, family, &reasoning);
            exercise(ApiKind::Completions, &bytes, family, &reasoning);
        }

        #[test]
        fn parse_never_panics_on_near_json(
            text in r#"[\[\]{}":,0-9a-z \-.e\\]{0,64}"#,
            family in arb_family(),
            reasoning in arb_reasoning(),
        ) {
            exercise(ApiKind::Chat, text.as_bytes(), family, &reasoning);
            exercise(ApiKind::Completions, text.as_bytes(), family, &reasoning);
        }

        #[test]
        fn parse_never_panics_on_json_values(
            value in prop_oneof![arb_json(), arb_request_like()],
            family in arb_family(),
            reasoning in arb_reasoning(),
        ) {
            let bytes = serde_json::to_vec(&value).unwrap();
            exercise(ApiKind::Chat, &bytes, family, &reasoning);
            exercise(ApiKind::Completions, &bytes, family, &reasoning);
        }

        #[test]
        fn rewrite_keeps_every_other_field(
            model in "[A-Za-z0-9._/-]{1,20}",
            new_model in "[A-Za-z0-9._/-]{1,20}",
            messages in prop::collection::vec(
                (
                    prop_oneof![Just("system"), Just("user"), Just("assistant"), Just("tool")],
                    prop_oneof![
                        ".{0,16}".prop_map(Value::String),
                        Just(Value::Null),
                        prop::collection::vec(
                            prop_oneof![
                                ".{0,8}".prop_map(|t| json!({"type": "text", "text": t})),
                                "[a-z]{1,8}".prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
                            ],
                            0..3,
                        ).prop_map(Value::Array),
                    ],
                ).prop_map(|(role, content)| json!({"role": role, "content": content})),
                1..5,
            ),
            stream in prop::option::of(any::<bool>()),
            extras in prop::collection::btree_map(
                "[a-z_]{1,12}".prop_filter("not a field the router reads or writes", |k| ![
                    "model", "messages", "stream", "chat_template_kwargs", "reasoning_effort",
                ].contains(&k.as_str())),
                arb_json(),
                0..6,
            ),
            kwargs in prop::option::of(prop::collection::btree_map(
                "[a-z_]{1,10}".prop_filter("not a reasoning switch", |k| k != "enable_thinking" && k != "thinking"),
                arb_json(),
                0..4,
            )),
            family in arb_family(),
            reasoning in arb_reasoning(),
        ) {
            let mut body: Map<String, Value> = extras.clone().into_iter().collect();
            body.insert("model".into(), json!(model));
            body.insert("messages".into(), json!(messages));
            if let Some(stream) = stream {
                body.insert("stream".into(), json!(stream));
            }
            if let Some(kwargs) = &kwargs {
                body.insert("chat_template_kwargs".into(), json!(kwargs));
            }
            let bytes = serde_json::to_vec(&body).unwrap();

            let mut req = InferenceRequest::parse(ApiKind::Chat, &bytes).unwrap();
            req.rewrite(&new_model, family, &reasoning);
            let out = InferenceRequest::parse(ApiKind::Chat, &req.to_bytes()).unwrap();
            let out = out.as_json();

            prop_assert_eq!(out.get("model"), Some(&json!(new_model)));
            prop_assert_eq!(out.get("messages"), Some(&json!(messages)));
            let expected_stream = stream.map(Value::Bool);
            prop_assert_eq!(out.get("stream"), expected_stream.as_ref());
            for (key, value) in &extras {
                prop_assert_eq!(out.get(key), Some(value), "extra field {}", key);
            }

            let switch = match family {
                ReasoningFamily::Qwen3 => Some("enable_thinking"),
                ReasoningFamily::Deepseek => Some("thinking"),
                _ => None,
            };
            let mut expected_kwargs: Option<Map<String, Value>> =
                kwargs.map(|k| k.into_iter().collect());
            if let Some(switch) = switch {
                expected_kwargs
                    .get_or_insert_with(Map::new)
                    .insert(switch.into(), json!(reasoning.enabled));
            }
            let expected_kwargs = expected_kwargs.map(Value::Object);
            prop_assert_eq!(out.get("chat_template_kwargs"), expected_kwargs.as_ref());

            let expected_effort = match family {
                ReasoningFamily::GptOss | ReasoningFamily::Openai => Some(json!(
                    if !reasoning.enabled { "low" } else { effort_str(reasoning.effort.unwrap_or(ReasoningEffort::Medium)) }
                )),
                _ => None,
            };
            prop_assert_eq!(out.get("reasoning_effort"), expected_effort.as_ref());

            let known = ["model", "messages", "stream", "chat_template_kwargs", "reasoning_effort"];
            let unexpected: Vec<&String> = out
                .keys()
                .filter(|k| !known.contains(&k.as_str()) && !extras.contains_key(*k))
                .collect();
            prop_assert!(unexpected.is_empty(), "fields appeared: {:?}", unexpected);
        }
    }
}
