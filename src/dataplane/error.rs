//! Every way the router refuses a client request, and the one place such a refusal becomes
//! what the client sees: an HTTP status and an OpenAI-shaped JSON error body.
//!
//! Clients written against the OpenAI API (and its SDKs) read
//! `{"error":{"message","type","param","code"}}`; answering in that shape means a refusal by
//! the router looks like a refusal by the model server, and the SDK raises its usual
//! exception with our message in it.

use serde::Serialize;

/// A request the router answers itself with an error instead of forwarding it.
///
/// Each variant carries the context a person needs to fix the request (the field path, the
/// limit, the pool). [`status`](Self::status), [`code`](Self::code) and
/// [`to_body`](Self::to_body) turn it into the immediate response; `code` doubles as the
/// metric label, so refusals are counted by kind.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not JSON (or not UTF-8).
    #[error(
        "The request body is not valid JSON ({detail}). Send a JSON object in the OpenAI API format."
    )]
    InvalidJson {
        /// What the JSON parser reported, with line and column.
        detail: String,
    },

    /// A required field is absent.
    #[error("The request is missing the required field '{field}'.")]
    MissingField {
        /// Path of the field, e.g. `model` or `messages[0].role`.
        field: String,
    },

    /// A field has the wrong JSON type.
    #[error("The field '{field}' must be {expected}.")]
    WrongType {
        /// Path of the field, e.g. `messages[2].content`; `body` for the body itself.
        field: String,
        /// What the field must be, as a phrase: "a string", "an array of strings".
        expected: &'static str,
    },

    /// A field has the right type but a value the API does not accept (an empty list).
    #[error("The field '{field}' {problem}.")]
    InvalidValue {
        /// Path of the field.
        field: String,
        /// What is wrong, as a predicate: "must not be empty".
        problem: &'static str,
    },

    /// The body is larger than the router accepts.
    #[error(
        "The request body is larger than the router's limit of {limit} bytes. Shorten the prompt or ask the operator to raise the limit."
    )]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },

    /// No route governs the requested model and no pool serves it.
    #[error(
        "The model '{model}' does not exist behind this router. GET /v1/models lists the models and aliases it serves."
    )]
    ModelNotFound {
        /// The model the request asked for.
        model: String,
    },

    /// The pool the decision picked has no endpoint ready to serve.
    #[error(
        "No ready endpoint in model pool '{pool}' can serve this request right now. Retry later; if it persists, the pool's endpoints are down."
    )]
    NoReadyEndpoint {
        /// Name of the `ModelPool`.
        pool: String,
    },

    /// The jailbreak detector flagged the prompt and the route blocks such prompts.
    #[error(
        "The request was blocked by the router's safety policy: the prompt was classified as a jailbreak attempt."
    )]
    Blocked,

    /// The router shed the request to protect the backends.
    #[error(
        "The router is overloaded and did not accept this request ({reason}). Retry with backoff."
    )]
    Overloaded {
        /// Why it shed, e.g. "pool gpt-oss-120b queue full".
        reason: String,
    },
}

impl RequestError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidJson { .. }
            | Self::MissingField { .. }
            | Self::WrongType { .. }
            | Self::InvalidValue { .. } => 400,
            Self::Blocked => 403,
            Self::ModelNotFound { .. } => 404,
            Self::BodyTooLarge { .. } => 413,
            Self::Overloaded { .. } => 429,
            Self::NoReadyEndpoint { .. } => 503,
        }
    }

    /// Machine-readable snake_case code: the body's `error.code` and the metric label.
    ///
    /// Missing `model`, `messages` and `prompt` get their own codes because they are the
    /// common client mistakes; every other missing field is `missing_field`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. } => "invalid_json",
            Self::MissingField { field } => match field.as_str() {
                "model" => "missing_model",
                "messages" => "missing_messages",
                "prompt" => "missing_prompt",
                _ => "missing_field",
            },
            Self::WrongType { .. } => "invalid_field_type",
            Self::InvalidValue { .. } => "invalid_field_value",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::NoReadyEndpoint { .. } => "no_ready_endpoint",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::Blocked => "jailbreak_detected",
            Self::Overloaded { .. } => "overloaded",
        }
    }

    /// The OpenAI error `type`, the class of error OpenAI SDKs switch on.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidJson { .. }
            | Self::MissingField { .. }
            | Self::WrongType { .. }
            | Self::InvalidValue { .. }
            | Self::ModelNotFound { .. }
            | Self::BodyTooLarge { .. } => "invalid_request_error",
            Self::Blocked => "permission_error",
            Self::Overloaded { .. } => "rate_limit_error",
            Self::NoReadyEndpoint { .. } => "server_error",
        }
    }

    /// The request field the error is about (OpenAI's `param`), if any.
    pub fn param(&self) -> Option<&str> {
        match self {
            Self::MissingField { field }
            | Self::WrongType { field, .. }
            | Self::InvalidValue { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The JSON body of the immediate response:
    /// `{"error":{"message":…,"type":…,"param":…,"code":…}}`.
    pub fn to_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: String,
            #[serde(rename = "type")]
            kind: &'static str,
            param: Option<&'a str>,
            code: &'static str,
        }
        let body = Body {
            error: Inner {
                message: self.to_string(),
                kind: self.error_type(),
                param: self.param(),
                code: self.code(),
            },
        };
        // Serialising plain strings into a Vec cannot fail; the fallback only keeps this
        // function total.
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"request refused","type":"server_error","param":null,"code":"internal"}}"#
                .to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn all() -> Vec<RequestError> {
        vec![
            RequestError::InvalidJson {
                detail: "expected value at line 1 column 1".into(),
            },
            RequestError::MissingField {
                field: "messages".into(),
            },
            RequestError::WrongType {
                field: "messages[2].content".into(),
                expected: "a string",
            },
            RequestError::InvalidValue {
                field: "messages".into(),
                problem: "must not be empty",
            },
            RequestError::BodyTooLarge { limit: 1024 },
            RequestError::NoReadyEndpoint {
                pool: "gpt-oss".into(),
            },
            RequestError::Blocked,
            RequestError::Overloaded {
                reason: "queue full".into(),
            },
            RequestError::ModelNotFound {
                model: "gpt-9".into(),
            },
        ]
    }

    #[test]
    fn statuses_and_codes() {
        let got: Vec<(u16, &str, &str)> = all()
            .iter()
            .map(|e| (e.status(), e.code(), e.error_type()))
            .collect();
        assert_eq!(
            got,
            vec![
                (400, "invalid_json", "invalid_request_error"),
                (400, "missing_messages", "invalid_request_error"),
                (400, "invalid_field_type", "invalid_request_error"),
                (400, "invalid_field_value", "invalid_request_error"),
                (413, "body_too_large", "invalid_request_error"),
                (503, "no_ready_endpoint", "server_error"),
                (403, "jailbreak_detected", "permission_error"),
                (429, "overloaded", "rate_limit_error"),
                (404, "model_not_found", "invalid_request_error"),
            ]
        );
    }

    #[test]
    fn missing_field_codes() {
        let code = |f: &str| RequestError::MissingField { field: f.into() }.code();
        assert_eq!(code("model"), "missing_model");
        assert_eq!(code("prompt"), "missing_prompt");
        assert_eq!(code("messages[0].role"), "missing_field");
    }

    #[test]
    fn body_is_openai_shaped() {
        for e in all() {
            let v: Value = serde_json::from_slice(&e.to_body()).unwrap();
            let err = &v["error"];
            assert_eq!(err["message"], json!(e.to_string()));
            assert_eq!(err["type"], json!(e.error_type()));
            assert_eq!(err["code"], json!(e.code()));
            assert_eq!(err["param"], json!(e.param()));
            assert_eq!(v.as_object().unwrap().len(), 1);
        }
    }

    #[test]
    fn field_errors_name_the_path() {
        let e = RequestError::WrongType {
            field: "messages[2].content".into(),
            expected: "a string, an array of content parts, or null",
        };
        assert_eq!(
            e.to_string(),
            "The field 'messages[2].content' must be a string, an array of content parts, or null."
        );
        let v: Value = serde_json::from_slice(&e.to_body()).unwrap();
        assert_eq!(v["error"]["param"], "messages[2].content");
    }

    #[test]
    fn messages_escape_cleanly() {
        let e = RequestError::InvalidJson {
            detail: "bad \"quote\" \n and newline".into(),
        };
        let v: Value = serde_json::from_slice(&e.to_body()).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("bad \"quote\"")
        );
    }
}
