//! A log of requests to replay through a policy: JSONL, one request a line, each either a
//! plain prompt (`{"text": ...}`), an OpenAI body (`{"messages": ...}` or `{"prompt": ...}`),
//! or a body with its headers (`{"body": {...}, "headers": {...}}`); any of them with an
//! optional `"label"`. Errors name the file and line.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dataplane::headers::RequestHeaders;
use crate::dataplane::openai::ApiKind;

/// Why a request log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestLogError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not one of the request shapes.
    #[error(
        "{path}:{line}: {problem}; each line must be {{\"text\": \"...\"}}, an OpenAI body \
         ({{\"messages\": [...]}} or {{\"prompt\": ...}}) or {{\"body\": {{...}}, \"headers\": {{...}}}}, \
         with an optional \"label\""
    )]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// The file holds no requests.
    #[error("{path} holds no requests")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One request of the log, as the router would receive it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRequest {
    /// 1-based line in the file.
    pub line: usize,
    /// The API, from the body's shape (`prompt`: completions, otherwise chat).
    pub kind: ApiKind,
    /// The body, serialised as a client sends it.
    pub body: Vec<u8>,
    /// Request headers.
    pub headers: RequestHeaders,
    /// The expected outcome, when the line gives one.
    pub label: Option<String>,
}

/// Reads `path`; a plain prompt becomes a one-message chat for `model`, and so does a body
/// without a `model` field.
pub fn read(path: &Path, model: &str) -> Result<Vec<LoggedRequest>, RequestLogError> {
    let text = std::fs::read_to_string(path).map_err(|source| RequestLogError::Io {
        path: path.to_owned(),
        source,
    })?;
    let requests = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse_line(i + 1, l, model).map_err(|problem| RequestLogError::Line {
                path: path.to_owned(),
                line: i + 1,
                problem,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if requests.is_empty() {
        return Err(RequestLogError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(requests)
}

/// Line number `number`, reading `line`.
fn parse_line(number: usize, line: &str, model: &str) -> Result<LoggedRequest, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".to_owned());
    };
    let label = match object.remove("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err("\"label\" is not a string".to_owned()),
    };
    let headers = match object.remove("headers") {
        None | Some(Value::Null) => RequestHeaders::default(),
        Some(Value::Object(h)) => RequestHeaders::from_pairs(
            h.into_iter()
                .map(|(name, value)| match value {
                    Value::String(v) => Ok((name, v)),
                    _ => Err(format!("header {name:?} is not a string")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err("\"headers\" is not an object".to_owned()),
    };
    let mut body = match (object.remove("body"), object.remove("text")) {
        (Some(_), Some(_)) => return Err("both \"body\" and \"text\" are given".to_owned()),
        (Some(Value::Object(body)), None) => body,
        (Some(_), None) => return Err("\"body\" is not an object".to_owned()),
        (None, Some(Value::String(text))) => chat_of(text),
        (None, Some(_)) => return Err("\"text\" is not a string".to_owned()),
        (None, None) if object.contains_key("messages") || object.contains_key("prompt") => {
            std::mem::take(&mut object)
        }
        (None, None) => return Err("no \"text\", \"messages\", \"prompt\" or \"body\"".to_owned()),
    };
    if let Some(extra) = object.keys().next() {
        return Err(format!("unknown field {extra:?} beside the request"));
    }
    body.entry("model")
        .or_insert_with(|| Value::String(model.to_owned()));
    let kind = if body.contains_key("prompt") && !body.contains_key("messages") {
        ApiKind::Completions
    } else {
        ApiKind::Chat
    };
    Ok(LoggedRequest {
        line: number,
        kind,
        body: serde_json::to_vec(&Value::Object(body)).map_err(|e| e.to_string())?,
        headers,
        label,
    })
}

/// A chat of one user message.
fn chat_of(text: String) -> Map<String, Value> {
    let mut message = Map::new();
    message.insert("role".into(), Value::String("user".into()));
    message.insert("content".into(), Value::String(text));
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(vec![Value::Object(message)]),
    );
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Headers;

    fn body(r: &LoggedRequest) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn every_shape_becomes_a_request_the_router_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"text": "hi", "label": "small"}"#,
                "\n\n",
                r#"{"model": "gpt-x", "messages": [{"role": "user", "content": "yo"}]}"#,
                "\n",
                r#"{"prompt": "once upon", "label": "x"}"#,
                "\n",
                r#"{"body": {"messages": [{"role": "user", "content": "a"}]}, "headers": {"X-Team": "research"}}"#,
                "\n",
            ),
        )
        .unwrap();
        let log = read(&path, "auto").unwrap();
        assert_eq!(log.len(), 4);
        assert_eq!(
            body(&log[0]),
            serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        );
        assert_eq!(log[0].label.as_deref(), Some("small"));
        assert_eq!(log[1].line, 3);
        assert_eq!(body(&log[1])["model"], "gpt-x");
        assert_eq!(log[1].label, None);
        assert_eq!(log[2].kind, ApiKind::Completions);
        assert_eq!(body(&log[2]).get("label"), None);
        assert_eq!(log[3].headers.get("x-team"), Some("research"));
        assert_eq!(body(&log[3])["model"], "auto");
    }

    #[test]
    fn a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        for (line, problem) in [
            ("{\"text\": 3}", "\"text\" is not a string"),
            ("[1]", "not a JSON object"),
            ("{\"text\": \"a\", \"extra\": 1}", "unknown field \"extra\""),
            ("{\"label\": \"a\"}", "no \"text\""),
            ("{oops", "not JSON"),
        ] {
            std::fs::write(&path, format!("{{\"text\": \"fine\"}}\n{line}\n")).unwrap();
            let e = read(&path, "auto").unwrap_err().to_string();
            assert!(e.contains("log.jsonl:2: "), "{e}");
            assert!(e.contains(problem), "{e} lacks {problem}");
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read(&path, "auto"),
            Err(RequestLogError::Empty { .. })
        ));
    }
}
