//! Prometheus metrics of the data plane.

use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::routing::Labels;

/// Labels of a routed request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Decision name, `default` or `direct`.
    pub decision: Arc<str>,
    /// Model written into the body.
    pub model: Arc<str>,
    /// Pool name.
    pub pool: Arc<str>,
}

impl From<&Labels> for RouteLabels {
    fn from(labels: &Labels) -> Self {
        Self {
            decision: labels.decision.clone(),
            model: labels.model.clone(),
            pool: labels.pool.clone(),
        }
    }
}

/// Labels of a request counted by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Decision, model and pool; empty when no decision was made.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// `upstream`, `cache`, `passthrough` or `error`.
    pub outcome: &'static str,
}

impl OutcomeLabels {
    /// A routed request's outcome.
    pub fn routed(route: &RouteLabels, outcome: &'static str) -> Self {
        Self {
            route: route.clone(),
            outcome,
        }
    }

    /// The outcome of a request no decision was made for.
    pub fn unrouted(outcome: &'static str) -> Self {
        static NONE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
        Self {
            route: RouteLabels {
                decision: NONE.clone(),
                model: NONE.clone(),
                pool: NONE.clone(),
            },
            outcome,
        }
    }
}

/// Labels of an error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Machine-readable reason (the OpenAI error code).
    pub reason: &'static str,
}

/// Labels of counted tokens.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Decision, model and pool.
    #[prometheus(flatten)]
    pub route: RouteLabels,
    /// `prompt` or `completion`.
    pub kind: &'static str,
}

/// Every metric the data plane records.
pub struct Metrics {
    /// Requests by decision, model, pool and outcome.
    pub requests: Family<OutcomeLabels, Counter>,
    /// Time from the full request body to the routing decision, in seconds.
    pub decision_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Usage tokens reported by model servers.
    pub tokens: Family<TokenLabels, Counter>,
    /// Requests the router answered with an error, by reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Generation of the routing table in force.
    pub table_generation: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics.
    pub fn new() -> Self {
        Self {
            requests: Family::default(),
            decision_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
            }),
            tokens: Family::default(),
            errors: Family::default(),
            table_generation: Gauge::default(),
        }
    }

    /// Registers every metric under the `semantic_router` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("semantic_router");
        r.register(
            "requests",
            "Inference requests by decision, model, pool and outcome",
            self.requests.clone(),
        );
        r.register(
            "decision_duration_seconds",
            "Time from the complete request body to the routing decision",
            self.decision_seconds.clone(),
        );
        r.register(
            "tokens",
            "Usage tokens reported by model servers, by decision, model, pool and kind",
            self.tokens.clone(),
        );
        r.register(
            "errors",
            "Requests the router answered with an error, by reason",
            self.errors.clone(),
        );
        r.register(
            "routing_table_generation",
            "Generation of the routing table in force",
            self.table_generation.clone(),
        );
    }
}
