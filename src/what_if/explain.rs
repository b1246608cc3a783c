//! `semantic-router explain`: how a policy routes one request body, with no cluster and no
//! models, as the admin server's `POST /v1/explain` answers for the live table.

use std::path::PathBuf;
use std::sync::Arc;

use super::{WhatIfError, load_policy};
use crate::dataplane::error::RequestError;
use crate::dataplane::headers::RequestHeaders;
use crate::dataplane::openai::ApiKind;
use crate::dataplane::picker::PolicyPicker;
use crate::dataplane::processor::{Processor, RequestView};
use crate::routing::{NoModels, SharedTable, compile};

/// The API a body is for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Api {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Completions,
}

impl From<Api> for ApiKind {
    fn from(api: Api) -> Self {
        match api {
            Api::Chat => Self::Chat,
            Api::Completions => Self::Completions,
        }
    }
}

/// The policy and request `explain` reads; the body comes on stdin.
#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Directory of SemanticRoute and ModelPool manifests.
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// A request header, `name: value`; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The API the body is for.
    #[arg(long, value_enum, default_value_t = Api::Chat)]
    pub api: Api,
}

/// Why `explain` cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The policy does not load, or the runtime does not start.
    #[error(transparent)]
    Policy(#[from] WhatIfError),
    /// A `--header` is not `name: value`.
    #[error("header {0:?} is not `name: value`")]
    Header(String),
    /// The body is not a request the router can route.
    #[error("the request body cannot be routed: {0}")]
    Request(#[from] RequestError),
}

impl ExplainArgs {
    /// The policy's diagnostics (one line each, so a mistake shows beside its effect) and
    /// the decision for `body` as pretty JSON.
    pub fn run(&self, body: &[u8]) -> Result<(Vec<String>, String), ExplainError> {
        let compiled = compile(&load_policy(&self.manifests)?);
        let diagnostics = compiled
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        let shared = SharedTable::default();
        shared.publish(compiled.table);
        let pairs = self
            .headers
            .iter()
            .map(|h| {
                h.split_once(':')
                    .map(|(name, value)| (name.trim(), value.trim()))
                    .ok_or_else(|| ExplainError::Header(h.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let headers = RequestHeaders::from_pairs(pairs);
        let processor = Processor::new(shared, Arc::new(PolicyPicker::new()), Arc::new(NoModels));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(WhatIfError::Runtime)?;
        let explanation = runtime.block_on(processor.explain(RequestView {
            kind: self.api.into(),
            headers: &headers,
            body,
        }))?;
        let json = serde_json::to_string_pretty(&explanation).map_err(WhatIfError::Json)?;
        Ok((diagnostics, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(headers: &[&str]) -> ExplainArgs {
        ExplainArgs {
            manifests: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples"),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            api: Api::Chat,
        }
    }

    #[test]
    fn the_sample_policy_explains_a_math_prompt_with_its_diagnostics() {
        let body =
            br#"{"model":"auto","messages":[{"role":"user","content":"prove the integral of x"}]}"#;
        let (diagnostics, json) = args(&["x-team: a"]).run(body).expect("explained");
        let explanation: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(explanation["decision"], "reasoning");
        assert!(
            diagnostics.iter().any(|d| d.contains("SignalNotLoaded")),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn a_header_without_a_colon_and_a_body_that_is_not_json_are_refused() {
        let body = br#"{"model":"auto","messages":[]}"#;
        assert!(matches!(
            args(&["bad"]).run(body),
            Err(ExplainError::Header(h)) if h == "bad"
        ));
        assert!(matches!(
            args(&[]).run(b"not json"),
            Err(ExplainError::Request(_))
        ));
    }
}
