//! What a policy did with a request log: outcome per request, shares per decision and target,
//! reasoning and blocked shares, estimated cost and agreement with labels; and two policies
//! side by side.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::requests::LoggedRequest;
use crate::classify::evaluate::{Estimate, wilson};
use crate::dataplane::error::RequestError;
use crate::dataplane::processor::Explanation;
use crate::routing::{ObjectKey, Resources};

/// Prompt characters per token in the cost estimate (the usual rule of thumb for English).
pub const CHARS_PER_TOKEN: f64 = 4.0;

/// What the cost estimate takes for granted; printed with every report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assumptions {
    /// Output tokens of every routed request.
    pub output_tokens: u32,
    /// Input tokens are the prompt's characters divided by this.
    pub chars_per_token: f64,
}

/// What a line's label names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabelKind {
    /// The decision's name (`default` when none fired, `blocked` for a block).
    Decision,
    /// The model the request goes to (`blocked` for a block).
    Model,
    /// Whether reasoning is on: `reasoning`, `on`, `true` or `yes` mean on.
    Reasoning,
    /// Whether the request is blocked: `jailbreak`, `blocked`, `true` or `yes` mean blocked.
    Blocked,
}

impl LabelKind {
    fn noun(self) -> &'static str {
        match self {
            LabelKind::Decision => "decision",
            LabelKind::Model => "model",
            LabelKind::Reasoning => "reasoning mode",
            LabelKind::Blocked => "block",
        }
    }
}

/// A routed request's target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TargetName {
    /// Pool name.
    pub pool: String,
    /// Model name.
    pub model: String,
    /// `off`, `on` or the effort.
    pub reasoning: String,
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} @ {} (reasoning {})",
            self.model, self.pool, self.reasoning
        )
    }
}

/// What the policy does with one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Sent to a target.
    Routed {
        /// Namespace/name of the governing route.
        route: String,
        /// The decision that fired (`default` when none did).
        decision: String,
        /// Where it goes.
        target: TargetName,
        /// Characters of the prompt the model reads.
        input_chars: usize,
    },
    /// Blocked as a jailbreak before any model sees it.
    Blocked {
        /// Namespace/name of the governing route.
        route: String,
    },
    /// Governed, but refused for another reason.
    Refused {
        /// Namespace/name of the governing route.
        route: String,
        /// The decision that fired.
        decision: String,
        /// What the client gets.
        error: String,
    },
    /// No route governs the model the request names.
    NoRoute,
    /// The body is not a valid request (the client gets 400).
    Invalid {
        /// What the client gets.
        error: String,
    },
}

impl Outcome {
    /// The outcome of an explanation.
    pub fn of(explained: Result<Explanation, RequestError>, input_chars: usize) -> Self {
        let explanation = match explained {
            Ok(e) => e,
            Err(e) => {
                return Outcome::Invalid {
                    error: e.to_string(),
                };
            }
        };
        let Some(route) = explanation.route else {
            return Outcome::NoRoute;
        };
        if explanation.blocked {
            return Outcome::Blocked { route };
        }
        let decision = explanation.decision.unwrap_or_else(|| "default".to_owned());
        match explanation.target {
            Some(t) => Outcome::Routed {
                route,
                decision,
                target: TargetName {
                    pool: t.pool,
                    model: t.model,
                    reasoning: t.reasoning.to_owned(),
                },
                input_chars,
            },
            None => Outcome::Refused {
                route,
                decision,
                error: explanation.error.unwrap_or_default(),
            },
        }
    }

    fn target(&self) -> Option<&TargetName> {
        match self {
            Outcome::Routed { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Whether the outcome is what `label` (of `kind`) expects.
    fn agrees(&self, kind: LabelKind, label: &str) -> bool {
        let yes = |words: &[&str]| words.iter().any(|w| label.eq_ignore_ascii_case(w));
        match kind {
            LabelKind::Decision => match self {
                Outcome::Routed { decision, .. } | Outcome::Refused { decision, .. } => {
                    decision == label
                }
                Outcome::Blocked { .. } => label == "blocked",
                Outcome::NoRoute | Outcome::Invalid { .. } => false,
            },
            LabelKind::Model => match self {
                Outcome::Routed { target, .. } => target.model == label,
                Outcome::Blocked { .. } => label == "blocked",
                _ => false,
            },
            LabelKind::Reasoning => {
                let on = self.target().is_some_and(|t| t.reasoning != "off");
                on == yes(&["reasoning", "on", "true", "yes"])
            }
            LabelKind::Blocked => {
                matches!(self, Outcome::Blocked { .. })
                    == yes(&["jailbreak", "blocked", "true", "yes"])
            }
        }
    }
}

/// A row of a share table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// What the row counts.
    pub name: String,
    /// Requests.
    pub requests: usize,
    /// Share of all requests.
    pub share: f64,
}

/// A target's row: its share and what a request to it costs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetRow {
    /// The target.
    pub target: TargetName,
    /// Requests.
    pub requests: usize,
    /// Share of all requests.
    pub share: f64,
    /// Mean cost of 1,000 of its requests; `None` when its pool states no prices.
    pub cost_per_1000: Option<f64>,
}

/// How often the outcome was what the label said.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agreement {
    /// What the labels name.
    pub labels: LabelKind,
    /// Requests with a label.
    pub labelled: usize,
    /// Share of those whose outcome agrees, with its 95% interval.
    pub agreed: Estimate,
}

/// One policy's figures over a request log.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The policy's directory.
    pub policy: PathBuf,
    /// Requests replayed.
    pub requests: usize,
    /// What the cost estimate assumes.
    pub assumptions: Assumptions,
    /// Share of each decision, and of requests blocked, ungoverned or invalid.
    pub decisions: Vec<Row>,
    /// Share and cost of each target.
    pub targets: Vec<TargetRow>,
    /// Share of requests sent with reasoning on.
    pub reasoning_share: f64,
    /// Share of requests blocked as jailbreaks.
    pub blocked_share: f64,
    /// Estimated cost of 1,000 requests, in the pools' currency (blocked, refused and
    /// invalid requests cost nothing; a pool without prices counts as free).
    pub cost_per_1000: f64,
    /// Routed requests whose pool states no price.
    pub unpriced_requests: usize,
    /// Agreement with the labels, when lines have them.
    pub agreement: Option<Agreement>,
    /// Each request's outcome, in the log's order.
    pub outcomes: Vec<Outcome>,
}

/// Prices per million input and output tokens, by pool and model.
type Prices = BTreeMap<(ObjectKey, String), (Option<f64>, Option<f64>)>;

impl Report {
    /// The figures of `outcomes`, one per request of `log`, under `resources`.
    pub fn new(
        policy: &Path,
        resources: &Resources,
        log: &[LoggedRequest],
        outcomes: &[Outcome],
        assumptions: &Assumptions,
        labels: LabelKind,
    ) -> Self {
        let n = outcomes.len();
        let share = |count: usize| if n == 0 { 0.0 } else { count as f64 / n as f64 };
        let prices = prices(resources);
        let routes: BTreeSet<&str> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Routed { route, .. }
                | Outcome::Blocked { route }
                | Outcome::Refused { route, .. } => Some(route.as_str()),
                _ => None,
            })
            .collect();
        let mut decisions: BTreeMap<String, usize> = BTreeMap::new();
        let mut targets: BTreeMap<&TargetName, (usize, Option<f64>)> = BTreeMap::new();
        let (mut total_cost, mut unpriced, mut reasoning, mut blocked) = (0.0, 0, 0, 0);
        for outcome in outcomes {
            let decision = match outcome {
                Outcome::Routed {
                    route, decision, ..
                }
                | Outcome::Refused {
                    route, decision, ..
                } if routes.len() > 1 => format!("{route}: {decision}"),
                Outcome::Routed { decision, .. } | Outcome::Refused { decision, .. } => {
                    decision.clone()
                }
                Outcome::Blocked { .. } => "(blocked as a jailbreak)".to_owned(),
                Outcome::NoRoute => "(no route: model sent as named)".to_owned(),
                Outcome::Invalid { .. } => "(invalid body: 400)".to_owned(),
            };
            *decisions.entry(decision).or_default() += 1;
            match outcome {
                Outcome::Routed {
                    route,
                    target,
                    input_chars,
                    ..
                } => {
                    let cost = cost(&prices, route, target, *input_chars, assumptions);
                    let entry = targets.entry(target).or_default();
                    entry.0 += 1;
                    if let Some(c) = cost {
                        *entry.1.get_or_insert(0.0) += c;
                        total_cost += c;
                    } else {
                        unpriced += 1;
                    }
                    if target.reasoning != "off" {
                        reasoning += 1;
                    }
                }
                Outcome::Blocked { .. } => blocked += 1,
                _ => {}
            }
        }
        let mut decisions: Vec<Row> = decisions
            .into_iter()
            .map(|(name, requests)| Row {
                name,
                requests,
                share: share(requests),
            })
            .collect();
        decisions.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.name.cmp(&b.name)));
        let mut targets: Vec<TargetRow> = targets
            .into_iter()
            .map(|(target, (requests, cost))| TargetRow {
                target: target.clone(),
                requests,
                share: share(requests),
                cost_per_1000: cost.map(|c| 1000.0 * c / requests as f64),
            })
            .collect();
        targets.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.target.cmp(&b.target)));
        let labelled: Vec<bool> = log
            .iter()
            .zip(outcomes)
            .filter_map(|(r, o)| r.label.as_deref().map(|l| o.agrees(labels, l)))
            .collect();
        let agreement = (!labelled.is_empty()).then(|| Agreement {
            labels,
            labelled: labelled.len(),
            agreed: wilson(labelled.iter().filter(|a| **a).count(), labelled.len()),
        });
        Self {
            policy: policy.to_owned(),
            requests: n,
            assumptions: assumptions.clone(),
            decisions,
            targets,
            reasoning_share: share(reasoning),
            blocked_share: share(blocked),
            cost_per_1000: if n == 0 {
                0.0
            } else {
                1000.0 * total_cost / n as f64
            },
            unpriced_requests: unpriced,
            agreement,
            outcomes: outcomes.to_vec(),
        }
    }
}

fn prices(resources: &Resources) -> Prices {
    resources
        .pools
        .iter()
        .flat_map(|pool| {
            let key = crate::routing::object_key(pool);
            pool.spec.models.iter().map(move |m| {
                (
                    (key.clone(), m.name.clone()),
                    (m.input_cost_per_million, m.output_cost_per_million),
                )
            })
        })
        .collect()
}

/// The estimated cost of one request to `target` (a pool of the route's namespace); `None`
/// when the pool states no price for the model.
fn cost(
    prices: &Prices,
    route: &str,
    target: &TargetName,
    input_chars: usize,
    assumptions: &Assumptions,
) -> Option<f64> {
    let namespace = route.split_once('/').map_or("", |(ns, _)| ns);
    let key = (
        ObjectKey::new(namespace, target.pool.as_str()),
        target.model.clone(),
    );
    let (input, output) = prices.get(&key)?;
    if input.is_none() && output.is_none() {
        return None;
    }
    let input_tokens = (input_chars as f64 / assumptions.chars_per_token).ceil();
    Some(
        (input_tokens * input.unwrap_or(0.0)
            + f64::from(assumptions.output_tokens) * output.unwrap_or(0.0))
            / 1e6,
    )
}

/// A share as a percentage with one decimal.
pub(super) fn percent(share: f64) -> String {
    format!("{:.1}%", 100.0 * share)
}

impl fmt::Display for Assumptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cost assumes {} output tokens a request (--output-tokens) and one input token per \
             {} prompt characters; endpoints' load and health are not replayed",
            self.output_tokens, self.chars_per_token
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy {}\n", self.policy.display())?;
        let width = self
            .decisions
            .iter()
            .map(|r| r.name.len())
            .chain(self.targets.iter().map(|t| t.target.to_string().len()))
            .max()
            .unwrap_or(0)
            .max(8);
        writeln!(
            f,
            "{:<width$}  {:>8}  {:>6}",
            "decision", "requests", "share"
        )?;
        for row in &self.decisions {
            writeln!(
                f,
                "{:<width$}  {:>8}  {:>6}",
                row.name,
                row.requests,
                percent(row.share)
            )?;
        }
        writeln!(
            f,
            "\n{:<width$}  {:>8}  {:>6}  {:>12}",
            "target", "requests", "share", "cost/1k req"
        )?;
        for row in &self.targets {
            writeln!(
                f,
                "{:<width$}  {:>8}  {:>6}  {:>12}",
                row.target.to_string(),
                row.requests,
                percent(row.share),
                row.cost_per_1000
                    .map_or_else(|| "no price".to_owned(), |c| format!("{c:.4}"))
            )?;
        }
        writeln!(f, "\nreasoning on     {}", percent(self.reasoning_share))?;
        writeln!(f, "blocked          {}", percent(self.blocked_share))?;
        write!(f, "cost per 1,000   {:.4}", self.cost_per_1000)?;
        if self.unpriced_requests > 0 {
            write!(
                f,
                " ({} requests to pools without prices count as free)",
                self.unpriced_requests
            )?;
        }
        writeln!(f)?;
        if let Some(a) = &self.agreement {
            writeln!(
                f,
                "agreement        {} of {} labelled (labels name the {})",
                a.agreed,
                a.labelled,
                a.labels.noun()
            )?;
        }
        write!(f, "\n{}", self.assumptions)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dataplane::openai::ApiKind;

    pub(in crate::what_if) fn routed(
        decision: &str,
        model: &str,
        reasoning: &str,
        chars: usize,
    ) -> Outcome {
        Outcome::Routed {
            route: "default/auto".into(),
            decision: decision.into(),
            target: TargetName {
                pool: if model == "big" { "large" } else { "small" }.into(),
                model: model.into(),
                reasoning: reasoning.into(),
            },
            input_chars: chars,
        }
    }

    pub(in crate::what_if) fn logged(label: Option<&str>) -> LoggedRequest {
        LoggedRequest {
            line: 1,
            kind: ApiKind::Chat,
            body: Vec::new(),
            headers: Default::default(),
            label: label.map(str::to_owned),
        }
    }

    pub(in crate::what_if) fn resources() -> Resources {
        let pools: Vec<crate::api::ModelPool> = serde_yaml::from_str::<Vec<_>>(
            r#"
- apiVersion: semantic-router.io/v1alpha1
  kind: ModelPool
  metadata: {name: small, namespace: default}
  spec:
    models: [{name: tiny, inputCostPerMillion: 1.0, outputCostPerMillion: 2.0}]
    endpoints: {static: {addresses: ["127.0.0.1:1"]}}
- apiVersion: semantic-router.io/v1alpha1
  kind: ModelPool
  metadata: {name: large, namespace: default}
  spec:
    models: [{name: big}]
    endpoints: {static: {addresses: ["127.0.0.1:2"]}}
"#,
        )
        .unwrap();
        Resources {
            pools,
            ..Resources::default()
        }
    }

    pub(in crate::what_if) const ASSUMED: Assumptions = Assumptions {
        output_tokens: 100,
        chars_per_token: 4.0,
    };

    #[test]
    fn shares_costs_and_agreement_add_up() {
        let outcomes = vec![
            routed("default", "tiny", "off", 400),
            routed("default", "tiny", "off", 0),
            routed("reasoning", "big", "on", 40),
            Outcome::Blocked {
                route: "default/auto".into(),
            },
        ];
        let log = vec![
            logged(Some("simple")),
            logged(Some("reasoning")),
            logged(Some("reasoning")),
            logged(None),
        ];
        let r = Report::new(
            Path::new("p"),
            &resources(),
            &log,
            &outcomes,
            &ASSUMED,
            LabelKind::Reasoning,
        );
        assert_eq!(r.requests, 4);
        assert_eq!(r.decisions[0].name, "default");
        assert_eq!(r.decisions[0].share, 0.5);
        assert!(r.decisions.iter().any(|d| d.name.contains("blocked")));
        assert_eq!(r.reasoning_share, 0.25);
        assert_eq!(r.blocked_share, 0.25);
        // tiny: (100 input tokens * 1 + 100 output * 2) / 1e6, and (0 + 200) / 1e6.
        let tiny = &r.targets[0];
        assert_eq!(tiny.target.model, "tiny");
        assert!((tiny.cost_per_1000.unwrap() - 1000.0 * 250e-6).abs() < 1e-9);
        assert_eq!(r.targets[1].cost_per_1000, None);
        assert_eq!(r.unpriced_requests, 1);
        assert!((r.cost_per_1000 - 1000.0 * 500e-6 / 4.0).abs() < 1e-9);
        let a = r.agreement.as_ref().unwrap();
        assert_eq!(a.labelled, 3);
        assert!((a.agreed.value - 2.0 / 3.0).abs() < 1e-9);
        let text = r.to_string();
        assert!(text.contains("no price"), "{text}");
        assert!(text.contains("100 output tokens"), "{text}");
    }

    #[test]
    fn each_label_kind_reads_its_labels() {
        let small = routed("default", "tiny", "off", 1);
        let blocked = Outcome::Blocked {
            route: "default/auto".into(),
        };
        assert!(small.agrees(LabelKind::Decision, "default"));
        assert!(small.agrees(LabelKind::Model, "tiny"));
        assert!(small.agrees(LabelKind::Reasoning, "simple"));
        assert!(!small.agrees(LabelKind::Blocked, "jailbreak"));
        assert!(small.agrees(LabelKind::Blocked, "benign"));
        assert!(blocked.agrees(LabelKind::Blocked, "Jailbreak"));
        assert!(blocked.agrees(LabelKind::Model, "blocked"));
        assert!(!Outcome::NoRoute.agrees(LabelKind::Decision, "default"));
    }
}
