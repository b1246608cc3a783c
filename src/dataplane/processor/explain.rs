//! Why a request would be routed where it is: the decision, the rule that fired, the target
//! and every signal's value, without sending the request anywhere (`/v1/explain`, the
//! `explain` subcommand).

use serde::Serialize;

use super::{Chosen, Destination, Next, Processor, ProxyHints, RequestView, UseCache};
use crate::dataplane::error::RequestError;
use crate::dataplane::openai::InferenceRequest;
use crate::routing::{Route, SignalKind};

/// Everything behind a decision, for `explain` and debugging.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// Namespace/name of the governing route, if any.
    pub route: Option<String>,
    /// The decision that fired (`default` when none did).
    pub decision: Option<String>,
    /// The condition of that decision, as written.
    pub rule: Option<String>,
    /// The target chosen.
    pub target: Option<ExplainedTarget>,
    /// Every signal of the route and its value (`null` when not computed).
    pub signals: Vec<ExplainedSignal>,
    /// Jailbreak score, when the route screens for jailbreaks and a model scored it.
    pub jailbreak: Option<f32>,
    /// The error the client would get, if any.
    pub error: Option<String>,
    /// Whether the route's jailbreak policy blocks the request (403).
    pub blocked: bool,
}

/// A target in an explanation.
#[derive(Debug, Serialize)]
pub struct ExplainedTarget {
    /// Pool name.
    pub pool: String,
    /// Model name.
    pub model: String,
    /// Reasoning mode.
    pub reasoning: &'static str,
    /// Endpoints or cluster the request would go to.
    pub destination: Option<String>,
}

/// A signal in an explanation.
#[derive(Debug, Serialize)]
pub struct ExplainedSignal {
    /// Name.
    pub name: String,
    /// `keywords`, `header`, `examples` or `category`.
    pub kind: &'static str,
    /// Whether it holds; `None` when not computed.
    pub matched: Option<bool>,
    /// Score, for model signals.
    pub score: Option<f32>,
}

impl Processor {
    /// Explains the decision for a request without sending it anywhere; the error the client
    /// would get when the body itself is unusable.
    pub async fn explain(&self, request: RequestView<'_>) -> Result<Explanation, RequestError> {
        let mut explanation = Explanation {
            route: None,
            decision: None,
            rule: None,
            target: None,
            signals: Vec::new(),
            jailbreak: None,
            error: None,
            blocked: false,
        };
        let parsed = InferenceRequest::parse(request.kind, request.body)?;
        let Some(decided) = self
            .decide(
                &parsed,
                request.headers,
                &ProxyHints::default(),
                UseCache::No,
            )
            .await
        else {
            return Ok(explanation);
        };
        let route = &decided.route;
        explanation.route = Some(route.key.to_string());
        explanation.jailbreak = decided.jailbreak;
        explanation.decision = Some(route.decision_name(decided.decision).to_owned());
        explanation.rule = decided.decision.map(|i| describe_rule(route, i));
        explanation.signals = route
            .signals
            .iter()
            .enumerate()
            .map(|(id, s)| {
                let value = decided.signals.get(id);
                ExplainedSignal {
                    name: s.name.clone(),
                    kind: match s.kind {
                        SignalKind::Keywords { .. } => "keywords",
                        SignalKind::Header { .. } => "header",
                        SignalKind::Examples { .. } => "examples",
                        SignalKind::Category { .. } => "category",
                    },
                    matched: value.map(|v| v.matched),
                    score: value.and_then(|v| v.score),
                }
            })
            .collect();
        match decided.next {
            Next::Send {
                chosen:
                    Chosen {
                        target,
                        destination,
                        ..
                    },
                ..
            } => {
                explanation.target = Some(ExplainedTarget {
                    pool: target.pool.key.name.clone(),
                    model: target.model.name.clone(),
                    reasoning: target.labels.reasoning,
                    destination: Some(match destination {
                        Destination::Endpoints(_) => {
                            destination.endpoint_list().unwrap_or_default()
                        }
                        Destination::Cluster(c) => format!("cluster {c}"),
                    }),
                })
            }
            // Explanations never read the cache.
            Next::Answer { .. } => {}
            Next::Refuse(refusal) => {
                explanation.blocked = refusal.error == RequestError::Blocked;
                explanation.error = Some(refusal.error.to_string());
            }
        }
        Ok(explanation)
    }
}

/// The condition of a decision, written back with signal names.
fn describe_rule(route: &Route, decision: usize) -> String {
    let when = &route.decisions[decision].when;
    let names = |ids: &[usize]| -> String {
        ids.iter()
            .map(|&id| route.signals[id].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !when.all.is_empty() {
        parts.push(format!("all [{}]", names(&when.all)));
    }
    if !when.any.is_empty() {
        parts.push(format!("any [{}]", names(&when.any)));
    }
    if !when.not.is_empty() {
        parts.push(format!("not [{}]", names(&when.not)));
    }
    if parts.is_empty() {
        "always".to_owned()
    } else {
        parts.join(" and ")
    }
}
