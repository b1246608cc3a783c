//! The decision engine: which route governs a request, which signals it needs, and where the
//! request goes. Deterministic: the caller supplies the random draw for weighted splits.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::api::JailbreakAction;

use super::table::{
    Condition, DEFAULT_DECISION, Decision, Route, RoutingTable, SignalId, SignalKind, Target,
};

/// Request headers by lower-case name.
pub trait Headers {
    /// The value of a header, if present.
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

/// The value of one signal for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignalValue {
    /// Whether the signal holds.
    pub matched: bool,
    /// The score behind it (similarity, confidence), for signals that have one.
    pub score: Option<f32>,
}

impl SignalValue {
    /// A yes/no value without a score.
    pub fn flag(matched: bool) -> Self {
        Self {
            matched,
            score: None,
        }
    }
}

/// Signal values of one request, indexed like [`Route::signals`]; `None` is not computed or
/// unavailable (a model too slow, say).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalValues(pub Vec<Option<SignalValue>>);

impl SignalValues {
    /// The value of a signal.
    pub fn get(&self, id: SignalId) -> Option<SignalValue> {
        self.0.get(id).copied().flatten()
    }

    /// Sets the value of a signal.
    pub fn set(&mut self, id: SignalId, value: SignalValue) {
        if self.0.len() <= id {
            self.0.resize(id + 1, None);
        }
        self.0[id] = Some(value);
    }
}

/// Where a request goes and why.
#[derive(Debug)]
pub struct Verdict<'a> {
    /// Index in [`Route::decisions`] of the decision that matched; `None` when the default
    /// target applies.
    pub decision: Option<usize>,
    /// The chosen target.
    pub target: &'a Target,
    /// Targets to try, in order, when the chosen one has no ready endpoint.
    pub fallbacks: &'a [Target],
}

impl Verdict<'_> {
    /// The decision's name, or `default`.
    pub fn decision_name(&self) -> &str {
        &self.target.labels.decision
    }

    /// The target, then its fallbacks: the order a request tries them in.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        std::iter::once(self.target).chain(self.fallbacks)
    }
}

impl RoutingTable {
    /// The route that governs a request for `model` with these headers, if any.
    pub fn governing_route(&self, model: &str, headers: &impl Headers) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.governs(model, headers))
    }

    /// Where a request that names `model` itself goes when no route governs it: every pool
    /// that serves the model and takes direct requests, in table order (the first that can
    /// take the request serves it). The body's reasoning fields are the client's own.
    pub fn direct_targets(&self, model: &str) -> &[Target] {
        self.direct.get(model).map_or(&[], Vec::as_slice)
    }

    /// Every model name a client may ask for through the router: the aliases routes govern and
    /// the models of pools that take direct requests, sorted and without duplicates.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .routes
            .iter()
            .flat_map(|r| r.models.iter().map(String::as_str))
            .chain(
                self.pools
                    .values()
                    .filter(|p| p.direct_requests)
                    .flat_map(|p| p.models.keys().map(String::as_str)),
            )
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl Route {
    /// Whether this route governs a request for `model` with these headers.
    pub fn governs(&self, model: &str, headers: &impl Headers) -> bool {
        self.models.iter().any(|m| m == model)
            && self.headers.iter().all(|(name, values)| {
                headers
                    .get(name)
                    .is_some_and(|v| values.iter().any(|x| x == v))
            })
    }

    /// What the route's jailbreak policy does with a prompt scored `score`: `None` without a
    /// policy, without a score, or below the threshold.
    pub fn screen(&self, score: Option<f32>) -> Option<JailbreakAction> {
        let policy = self.jailbreak.as_ref()?;
        (score? >= policy.threshold).then_some(policy.action)
    }

    /// The name of decision `index` of this route, or `default`.
    pub fn decision_name(&self, index: Option<usize>) -> &str {
        index.map_or(DEFAULT_DECISION, |i| self.decisions[i].name.as_str())
    }

    /// Computes the needed signals that take no model: keywords over `prompt`, and headers.
    pub fn evaluate_rule_signals(&self, prompt: &str, headers: &impl Headers) -> SignalValues {
        let mut values = SignalValues(vec![None; self.signals.len()]);
        let mut lowered: Option<String> = None;
        for id in self.needed_signals() {
            let value = match &self.signals[id].kind {
                SignalKind::Keywords {
                    keywords,
                    operator,
                    case_sensitive,
                } => {
                    let text = if *case_sensitive {
                        prompt
                    } else {
                        lowered.get_or_insert_with(|| prompt.to_lowercase())
                    };
                    SignalValue::flag(keywords.holds(text, *operator))
                }
                SignalKind::Header { name, values } => {
                    let matched = headers
                        .get(name)
                        .is_some_and(|v| values.iter().any(|x| x == v));
                    SignalValue::flag(matched)
                }
                SignalKind::Examples { .. } | SignalKind::Category { .. } => continue,
            };
            values.set(id, value);
        }
        values
    }

    /// Whether `signals` already settle which decision applies, whatever the unavailable ones
    /// turn out to be: each decision before the first that holds is known not to. A caller
    /// may then skip computing the rest ([`decide`](Self::decide) gives the same verdict).
    pub fn decided_by(&self, signals: &SignalValues) -> bool {
        for decision in &self.decisions {
            match holds(&decision.when, signals) {
                Some(true) => return true,
                Some(false) => {}
                None => return false,
            }
        }
        true
    }

    /// Picks the target: the first decision whose condition holds, else the default. A
    /// decision that reads an unavailable signal does not match. `draw` is a uniformly random
    /// number that picks among weighted targets.
    pub fn decide(&self, signals: &SignalValues, draw: u64) -> Verdict<'_> {
        for (index, decision) in self.decisions.iter().enumerate() {
            if holds(&decision.when, signals) == Some(true) {
                return Verdict {
                    decision: Some(index),
                    target: pick_weighted(decision, draw),
                    fallbacks: &decision.fallbacks,
                };
            }
        }
        Verdict {
            decision: None,
            target: &self.default_target,
            fallbacks: &[],
        }
    }
}

/// Evaluates a condition in three-valued logic, so an unavailable signal (`None`) matters
/// only when the known ones do not settle the answer: `any` holds once one signal holds,
/// `all` fails once one fails, whatever the rest. `None` when the answer depends on an
/// unavailable signal; such a decision does not match.
pub fn holds(when: &Condition, signals: &SignalValues) -> Option<bool> {
    let value = |id: &SignalId| signals.get(*id).map(|v| v.matched);
    let all = and(when.all.iter().map(value));
    let any = if when.any.is_empty() {
        Some(true)
    } else {
        or(when.any.iter().map(value))
    };
    let none = or(when.not.iter().map(value)).map(|held| !held);
    and([all, any, none].into_iter())
}

/// Kleene AND: false wins, then unknown, then true.
fn and(values: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in values {
        match v {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    (!unknown).then_some(true)
}

/// Kleene OR: true wins, then unknown, then false.
fn or(values: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in values {
        match v {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    (!unknown).then_some(false)
}

/// The target whose cumulative-weight interval holds `draw mod total`.
fn pick_weighted(decision: &Decision, draw: u64) -> &Target {
    let point = draw % decision.total_weight.max(1);
    decision
        .targets
        .iter()
        .find(|(_, upto)| point < *upto)
        .or(decision.targets.last())
        .map(|(t, _)| t)
        .expect("compiler keeps only decisions with at least one target")
}

/// What the models found beyond named signals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelFindings {
    /// Jailbreak score in 0..1, when the route asks for jailbreak detection and a jailbreak
    /// model answered in time.
    pub jailbreak: Option<f32>,
    /// The prompt's embedding, when the encoder read all of it (the semantic cache's key).
    pub embedding: Option<Arc<[f32]>>,
}

/// Computes what needs a model (example similarity, classifier categories, jailbreak score),
/// with one encoder pass per request. Signals it cannot compute in time stay unset, and
/// decisions that read them do not match.
pub trait ModelSignals: Send + Sync {
    /// Fills in the model signals `route` needs for `text`, and scores jailbreak when the
    /// route has a jailbreak policy.
    fn evaluate<'a>(
        &'a self,
        route: &'a Route,
        text: &'a str,
        values: &'a mut SignalValues,
    ) -> BoxFuture<'a, ModelFindings>;
}

/// Model signals when no model is loaded: none are computed.
pub struct NoModels;

impl ModelSignals for NoModels {
    fn evaluate<'a>(
        &'a self,
        _: &'a Route,
        _: &'a str,
        _: &'a mut SignalValues,
    ) -> BoxFuture<'a, ModelFindings> {
        Box::pin(async { ModelFindings::default() })
    }
}
