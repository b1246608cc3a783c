//! What the cache keeps of a chat completion, and how it answers with it.
//!
//! Only plain answers are kept: one choice, an assistant message with text content, finished
//! with `stop`. Tool calls, several choices, truncated (`length`) or filtered answers are
//! not: serving them again would be wrong more often than right. The same [`Answer`] is
//! written back as a JSON completion or as an SSE stream, whichever the new request asked
//! for, so a streamed answer can serve a non-streamed request and the other way round.

use serde_json::{Value, json};

use crate::stream::SseLines;

/// One cached answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The model that answered.
    pub model: String,
    /// The assistant message's text.
    pub content: String,
    /// Why generation stopped (`stop`).
    pub finish_reason: String,
}

impl Answer {
    /// Approximate bytes the answer holds.
    pub fn size(&self) -> usize {
        self.model.len() + self.content.len() + self.finish_reason.len()
    }

    /// A non-streamed `chat.completion` body. Usage is zero: answering cost no tokens.
    pub fn to_json(&self, id: &str, created: u64) -> Vec<u8> {
        json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.content},
                "finish_reason": self.finish_reason,
            }],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        })
        .to_string()
        .into_bytes()
    }

    /// A streamed answer: the content in one chunk, the finish reason in the next, a usage
    /// chunk when the request asked for one, then `[DONE]`.
    pub fn to_sse(&self, id: &str, created: u64, include_usage: bool) -> Vec<u8> {
        let chunk = |choices: Value| {
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": choices,
            })
        };
        let mut events = vec![
            chunk(json!([{
                "index": 0,
                "delta": {"role": "assistant", "content": self.content},
                "finish_reason": null,
            }])),
            chunk(json!([{"index": 0, "delta": {}, "finish_reason": self.finish_reason}])),
        ];
        if include_usage {
            let mut usage = chunk(json!([]));
            usage["usage"] = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
            events.push(usage);
        }
        let mut out = String::new();
        for event in events {
            out.push_str("data: ");
            out.push_str(&event.to_string());
            out.push_str("\n\n");
        }
        out.push_str("data: [DONE]\n\n");
        out.into_bytes()
    }

    /// The answer in a non-streamed chat completion body, if it is one worth keeping.
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let value: Value = serde_json::from_slice(body).ok()?;
        let [choice] = value.get("choices")?.as_array()?.as_slice() else {
            return None;
        };
        let message = choice.get("message")?;
        if has_tool_calls(message)
            || message.get("role").and_then(Value::as_str) != Some("assistant")
        {
            return None;
        }
        Self::kept(
            value.get("model")?.as_str()?,
            message.get("content")?.as_str()?.to_owned(),
            choice.get("finish_reason")?.as_str()?,
        )
    }

    /// The answer in a streamed chat completion (the whole SSE body), if it is one worth
    /// keeping: the deltas' content joined, the finish reason of the last chunk.
    pub fn from_sse(body: &[u8]) -> Option<Self> {
        let mut lines = SseLines::default();
        let mut answer = SseAnswer::new(usize::MAX);
        lines.feed(body, &mut |data| answer.event(data));
        lines.finish(&mut |data| answer.event(data));
        answer.finish()
    }

    fn kept(model: &str, content: String, finish_reason: &str) -> Option<Self> {
        (finish_reason == "stop" && !content.is_empty()).then(|| Self {
            model: model.to_owned(),
            content,
            finish_reason: finish_reason.to_owned(),
        })
    }
}

fn has_tool_calls(message: &Value) -> bool {
    message
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty())
}

/// Builds an [`Answer`] from a streamed chat completion's events as they pass, without
/// holding the stream back; a stream whose events pass the byte limit reads as none.
#[derive(Debug)]
pub struct SseAnswer {
    model: Option<String>,
    content: String,
    finish: Option<String>,
    done: bool,
    /// Something was read that makes the stream no answer worth keeping.
    rejected: bool,
    /// Event bytes still allowed.
    budget: usize,
}

impl SseAnswer {
    /// A reader of at most `limit` bytes of events.
    pub fn new(limit: usize) -> Self {
        Self {
            model: None,
            content: String::new(),
            finish: None,
            done: false,
            rejected: false,
            budget: limit,
        }
    }

    /// Reads one event: the payload of a `data:` line.
    pub fn event(&mut self, data: &[u8]) {
        if self.rejected {
            return;
        }
        let Some(budget) = self.budget.checked_sub(data.len()) else {
            self.reject();
            return;
        };
        self.budget = budget;
        let data = data.trim_ascii_start();
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            self.reject();
            return;
        };
        if self.model.is_none() {
            self.model = event
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        for choice in event
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                self.reject();
                return;
            }
            if let Some(delta) = choice.get("delta") {
                if has_tool_calls(delta) {
                    self.reject();
                    return;
                }
                if let Some(piece) = delta.get("content").and_then(Value::as_str) {
                    self.content.push_str(piece);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(reason.to_owned());
            }
        }
    }

    /// The answer, once the stream has ended with `[DONE]`, if it is one worth keeping.
    pub fn finish(self) -> Option<Answer> {
        if self.rejected || !self.done {
            return None;
        }
        Answer::kept(&self.model?, self.content, &self.finish?)
    }

    fn reject(&mut self) {
        self.rejected = true;
        self.content = String::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            model: "Qwen/Qwen3-1.7B".into(),
            content: "Raleigh.".into(),
            finish_reason: "stop".into(),
        }
    }

    #[test]
    fn json_and_sse_round_trip() {
        let a = answer();
        assert_eq!(Answer::from_json(&a.to_json("id-1", 7)), Some(a.clone()));
        assert_eq!(
            Answer::from_sse(&a.to_sse("id-1", 7, false)),
            Some(a.clone())
        );
        let with_usage = String::from_utf8(a.to_sse("id-1", 7, true)).expect("utf-8");
        assert!(with_usage.contains("\"usage\""), "{with_usage}");
        assert!(with_usage.ends_with("data: [DONE]\n\n"));
        assert_eq!(Answer::from_sse(with_usage.as_bytes()), Some(a));
    }

    #[test]
    fn streamed_deltas_are_joined() {
        let body = concat!(
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Ral\"}}]}\r\n\r\n",
            "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"eigh.\"},\"finish_reason\":\"stop\"}]}\n\n",
            ": a comment\n",
            "data: [DONE]\n\n"
        );
        let a = Answer::from_sse(body.as_bytes()).expect("answer");
        assert_eq!((a.model.as_str(), a.content.as_str()), ("m", "Raleigh."));
    }

    #[test]
    fn only_plain_finished_answers_are_kept() {
        let json = |choices: &str| format!(r#"{{"model":"m","choices":{choices}}}"#);
        let ok =
            r#"[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]"#;
        assert!(Answer::from_json(json(ok).as_bytes()).is_some());
        for bad in [
            r#"[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"length"}]"#,
            r#"[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t"}]},"finish_reason":"stop"}]"#,
            r#"[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"b"},"finish_reason":"stop"}]"#,
            r#"[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop"}]"#,
            r#"[]"#,
        ] {
            assert!(Answer::from_json(json(bad).as_bytes()).is_none(), "{bad}");
        }
        assert!(Answer::from_json(b"{\"error\":{\"message\":\"x\"}}").is_none());
        let unfinished = "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Ral\"}}]}\n\n";
        assert!(
            Answer::from_sse(unfinished.as_bytes()).is_none(),
            "a cut stream"
        );
    }

    #[test]
    fn a_stream_over_the_limit_is_no_answer() {
        let body = answer().to_sse("id", 1, false);
        let events = |limit| {
            let mut lines = SseLines::default();
            let mut reader = SseAnswer::new(limit);
            lines.feed(&body, &mut |d| reader.event(d));
            reader.finish()
        };
        assert_eq!(events(body.len()), Some(answer()));
        assert_eq!(events(20), None);
    }
}
