//! The compiler: resources in, an immutable [`RoutingTable`] and per-resource diagnostics out.
//!
//! Pure: the same resources always give the same table. Both the file source and the Kubernetes
//! watcher feed it, so routing behaves the same on a laptop and in a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{self, ModelPool, SemanticRoute};

use super::diagnostics::{ConditionType, Diagnostic, Kind, ObjectKey, Reason, Severity};
use super::keywords::KeywordSet;

mod claims;
mod targets;
use super::table::{
    Condition, DEFAULT_DECISION, Decision, ExamplePrompts, Model, Pool, PoolBackend, Route,
    RoutingTable, Signal, SignalKind,
};
use claims::{Claims, match_headers, precedence};
use targets::{direct_targets, resolve};

/// Namespace of a resource that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The resources a table is compiled from.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// Every `ModelPool`.
    pub pools: Vec<ModelPool>,
    /// Every `SemanticRoute`.
    pub routes: Vec<SemanticRoute>,
    /// Ready endpoints discovered in-cluster for pools that use a selector or a Service.
    pub discovered: BTreeMap<ObjectKey, Vec<SocketAddr>>,
    /// The models this router loaded, which decide the signals it can compute.
    pub models: ModelCapabilities,
}

/// What the router's loaded models can compute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCapabilities {
    /// An encoder is loaded: `examples` signals work.
    pub embeddings: bool,
    /// Labels of the loaded category head, if any: `categories` signals work for these.
    pub category_labels: Option<Vec<String>>,
    /// Labels of the loaded complexity head, if any.
    pub complexity_labels: Option<Vec<String>>,
    /// A jailbreak head is loaded: jailbreak policies work.
    pub jailbreak: bool,
}

impl ModelCapabilities {
    /// The labels of the loaded head for `classifier`, if one is loaded.
    pub fn labels_of(&self, classifier: crate::api::Classifier) -> Option<&[String]> {
        match classifier {
            crate::api::Classifier::Category => self.category_labels.as_deref(),
            crate::api::Classifier::Complexity => self.complexity_labels.as_deref(),
        }
    }
}

/// A compiled table and what the compiler found on the way.
#[derive(Debug)]
pub struct Compiled {
    /// The table; generation 0 until published.
    pub table: RoutingTable,
    /// Findings, per resource.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    /// Diagnostics of one resource.
    pub fn diagnostics_for<'a>(
        &'a self,
        kind: Kind,
        key: &'a ObjectKey,
    ) -> impl Iterator<Item = &'a Diagnostic> + 'a {
        self.diagnostics
            .iter()
            .filter(move |d| d.kind == kind && &d.object == key)
    }

    /// Diagnostics that leave something out of the table.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

/// Namespace/name of a resource.
pub fn object_key<K: kube::Resource>(obj: &K) -> ObjectKey {
    let meta = obj.meta();
    ObjectKey::new(
        meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Compiles resources into a routing table.
pub fn compile(resources: &Resources) -> Compiled {
    let mut out = Diagnostics::default();
    let pools: BTreeMap<ObjectKey, Arc<Pool>> = resources
        .pools
        .iter()
        .map(|p| {
            let pool = compile_pool(p, &resources.discovered, &mut out);
            (pool.key.clone(), Arc::new(pool))
        })
        .collect();

    let mut ordered: Vec<&SemanticRoute> = resources.routes.iter().collect();
    ordered.sort_by_key(|r| precedence(r));

    let mut claimed = Claims::default();
    let mut routes = Vec::new();
    for route in ordered {
        if let Some(compiled) =
            compile_route(route, &resources.models, &pools, &mut claimed, &mut out)
        {
            routes.push(Arc::new(compiled));
        }
    }

    let direct = direct_targets(&pools);
    Compiled {
        table: RoutingTable {
            generation: 0,
            pools,
            routes,
            direct,
        },
        diagnostics: out.0,
    }
}

#[derive(Default)]
struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    fn push(
        &mut self,
        kind: Kind,
        object: &ObjectKey,
        condition: ConditionType,
        reason: Reason,
        severity: Severity,
        message: String,
    ) {
        self.0.push(Diagnostic {
            kind,
            object: object.clone(),
            condition,
            reason,
            severity,
            message,
        });
    }
}

fn compile_pool(
    pool: &ModelPool,
    discovered: &BTreeMap<ObjectKey, Vec<SocketAddr>>,
    out: &mut Diagnostics,
) -> Pool {
    let key = object_key(pool);
    let spec = &pool.spec;
    let models = spec
        .models
        .iter()
        .map(|m| {
            let model = Model {
                name: m.name.clone(),
                reasoning_family: m.reasoning_family,
            };
            (m.name.clone(), model)
        })
        .collect();

    let source = &spec.endpoints;
    let backend = if let Some(gateway) = &source.gateway {
        PoolBackend::Gateway {
            cluster: gateway.cluster_name.clone(),
        }
    } else if let Some(fixed) = &source.r#static {
        let mut endpoints = Vec::new();
        for address in &fixed.addresses {
            match address.parse::<SocketAddr>() {
                Ok(addr) => endpoints.push(addr),
                Err(_) => out.push(
                    Kind::ModelPool,
                    &key,
                    ConditionType::Ready,
                    Reason::InvalidAddress,
                    Severity::Warning,
                    format!(
                        "static address {address:?} of pool {key} is not an ip:port and is skipped; \
                         use an IP address, or a gateway for a DNS name"
                    ),
                ),
            }
        }
        PoolBackend::Endpoints(endpoints)
    } else {
        PoolBackend::Endpoints(discovered.get(&key).cloned().unwrap_or_default())
    };

    if matches!(&backend, PoolBackend::Endpoints(e) if e.is_empty()) {
        out.push(
            Kind::ModelPool,
            &key,
            ConditionType::Ready,
            Reason::NoReadyEndpoints,
            Severity::Error,
            format!(
                "pool {key} has no ready endpoint; requests routed to it get 503 unless a decision \
                 has a fallback target; check the pool's endpoints"
            ),
        );
    }

    Pool {
        key,
        models,
        backend,
        picking: spec.endpoint_picking.clone(),
        metrics: spec.metrics.clone(),
        labels: spec.labels.clone(),
        direct_requests: spec.direct_requests,
        allowed_route_namespaces: spec.allowed_route_namespaces.clone(),
    }
}

fn compile_route(
    route: &SemanticRoute,
    models: &ModelCapabilities,
    pools: &BTreeMap<ObjectKey, Arc<Pool>>,
    claimed: &mut Claims,
    out: &mut Diagnostics,
) -> Option<Route> {
    let key = object_key(route);
    let spec = &route.spec;
    let err = |out: &mut Diagnostics, condition, reason, message: String| {
        out.push(
            Kind::SemanticRoute,
            &key,
            condition,
            reason,
            Severity::Error,
            message,
        )
    };

    let signals = compile_signals(&spec.signals);
    report_unloaded_signals(
        &key,
        &signals,
        spec.signals.jailbreak.is_some(),
        spec.cache.as_ref().is_some_and(|c| c.enabled),
        models,
        out,
    );
    let mut seen = BTreeSet::new();
    let duplicates: BTreeSet<&str> = signals
        .iter()
        .filter(|s| !seen.insert(s.name.as_str()))
        .map(|s| s.name.as_str())
        .collect();
    if !duplicates.is_empty() {
        let names: Vec<&str> = duplicates.into_iter().collect();
        err(
            out,
            ConditionType::Accepted,
            Reason::DuplicateSignalName,
            format!(
                "route {key} defines signal name(s) {} more than once; give each signal its own name",
                names.join(", ")
            ),
        );
        return None;
    }

    let headers = match_headers(route, &key);

    let mut decisions = Vec::new();
    let mut structural_error = false;
    for decision in &spec.decisions {
        let when = match compile_when(&decision.when, &signals) {
            Ok(when) => when,
            Err(unknown) => {
                err(
                    out,
                    ConditionType::Accepted,
                    Reason::UnknownSignal,
                    format!(
                        "decision {:?} of route {key} refers to signal {unknown:?}, which the route \
                         does not define; add it under spec.signals or fix the name",
                        decision.name
                    ),
                );
                structural_error = true;
                continue;
            }
        };
        let mut targets = Vec::new();
        let mut total_weight = 0u64;
        for wt in decision.targets.iter().filter(|t| t.weight > 0) {
            if let Some(target) = resolve(&wt.target, &decision.name, &key, pools, out) {
                total_weight += u64::from(wt.weight);
                targets.push((target, total_weight));
            }
        }
        let fallbacks = decision
            .fallback_targets
            .iter()
            .filter_map(|t| resolve(t, &decision.name, &key, pools, out))
            .collect();
        if targets.is_empty() {
            err(
                out,
                ConditionType::ResolvedRefs,
                Reason::NoResolvedTarget,
                format!(
                    "decision {:?} of route {key} has no target that resolves and is left out; \
                     requests it would take go to the next decision or the default",
                    decision.name
                ),
            );
            continue;
        }
        decisions.push(Decision {
            name: decision.name.clone(),
            when,
            targets,
            total_weight,
            fallbacks,
        });
    }
    if structural_error {
        return None;
    }
    report_unreachable(&decisions, &key, out);

    let Some(default_target) = resolve(&spec.default_target, DEFAULT_DECISION, &key, pools, out)
    else {
        err(
            out,
            ConditionType::Accepted,
            Reason::DefaultTargetUnresolved,
            format!(
                "the default target of route {key} does not resolve, so the route is not in force; \
                 point defaultTarget at an existing pool and one of its models"
            ),
        );
        return None;
    };

    let models = claimed.claim(route, &key, &headers, out);
    if models.is_empty() {
        return None;
    }

    Some(Route::new(
        key,
        models,
        headers,
        signals,
        spec.signals.jailbreak.clone(),
        decisions,
        default_target,
        spec.cache.clone().map(|mut cache| {
            // Request headers are looked up by their lower-case names.
            cache.tenant_header = cache.tenant_header.map(|h| h.to_ascii_lowercase());
            cache
        }),
    ))
}

fn compile_signals(signals: &api::Signals) -> Vec<Signal> {
    let keywords = signals.keywords.iter().map(|k| Signal {
        name: k.name.clone(),
        kind: SignalKind::Keywords {
            keywords: KeywordSet::new(k.keywords.iter().map(|w| {
                if k.case_sensitive {
                    w.clone()
                } else {
                    w.to_lowercase()
                }
            })),
            operator: k.operator,
            case_sensitive: k.case_sensitive,
        },
    });
    let headers = signals.headers.iter().map(|h| Signal {
        name: h.name.clone(),
        kind: SignalKind::Header {
            name: h.header.to_ascii_lowercase(),
            values: h.values.clone(),
        },
    });
    let examples = signals.examples.iter().map(|e| Signal {
        name: e.name.clone(),
        kind: SignalKind::Examples {
            prompts: ExamplePrompts::new(e.prompts.clone()),
            threshold: e.threshold,
        },
    });
    let categories = signals.categories.iter().map(|c| Signal {
        name: c.name.clone(),
        kind: SignalKind::Category {
            classifier: c.classifier,
            labels: c.labels.clone(),
            threshold: c.threshold,
        },
    });
    keywords
        .chain(headers)
        .chain(examples)
        .chain(categories)
        .collect()
}

/// Resolves signal names to ids; `Err` carries the first unknown name.
fn compile_when(when: &api::When, signals: &[Signal]) -> Result<Condition, String> {
    let ids = |names: &[String]| -> Result<Vec<usize>, String> {
        names
            .iter()
            .map(|n| {
                signals
                    .iter()
                    .position(|s| &s.name == n)
                    .ok_or_else(|| n.clone())
            })
            .collect()
    };
    Ok(Condition {
        all: ids(&when.all)?,
        any: ids(&when.any)?,
        not: ids(&when.not)?,
    })
}

/// Warns about signals the router's models cannot compute (decisions that read them never
/// match until the model is loaded), and about a semantic cache without an encoder.
fn report_unloaded_signals(
    key: &ObjectKey,
    signals: &[Signal],
    jailbreak: bool,
    cache: bool,
    models: &ModelCapabilities,
    out: &mut Diagnostics,
) {
    let mut warn = |message: String| {
        out.push(
            Kind::SemanticRoute,
            key,
            ConditionType::Accepted,
            Reason::SignalNotLoaded,
            Severity::Warning,
            message,
        )
    };
    for signal in signals {
        match &signal.kind {
            SignalKind::Examples { .. } if !models.embeddings => warn(format!(
                "signal {:?} of route {key} compares prompt embeddings, but the router has no \
                 encoder; decisions that need it do not match until the router runs with --encoder",
                signal.name
            )),
            SignalKind::Category {
                classifier, labels, ..
            } => match models.labels_of(*classifier) {
                None => warn(format!(
                    "signal {:?} of route {key} needs a {classifier} classifier, but the router \
                     has none; run it with --{classifier}-head",
                    signal.name,
                    classifier = classifier.as_str()
                )),
                Some(known) => {
                    let unknown: Vec<&str> = labels
                        .iter()
                        .filter(|l| !known.contains(l))
                        .map(String::as_str)
                        .collect();
                    if !unknown.is_empty() {
                        warn(format!(
                            "signal {:?} of route {key} names labels [{}] that the loaded \
                             {classifier} head does not have; it knows [{}]",
                            signal.name,
                            unknown.join(", "),
                            known.join(", "),
                            classifier = classifier.as_str()
                        ));
                    }
                }
            },
            _ => {}
        }
    }
    if jailbreak && !models.jailbreak {
        warn(format!(
            "route {key} screens for jailbreaks, but the router has no jailbreak classifier; \
             prompts are not screened until it runs with --jailbreak-head"
        ));
    }
    if cache && !models.embeddings {
        warn(format!(
            "route {key} enables the semantic cache, which compares prompt embeddings, but the \
             router has no encoder; nothing is cached until it runs with --encoder"
        ));
    }
}

/// Warns about decisions that an earlier, unconditional or identical decision always shadows.
fn report_unreachable(decisions: &[Decision], key: &ObjectKey, out: &mut Diagnostics) {
    for (i, later) in decisions.iter().enumerate() {
        let shadow = decisions[..i]
            .iter()
            .find(|earlier| earlier.when.is_unconditional() || earlier.when == later.when);
        if let Some(earlier) = shadow {
            out.push(
                Kind::SemanticRoute,
                key,
                ConditionType::Accepted,
                Reason::UnreachableDecision,
                Severity::Warning,
                format!(
                    "decision {:?} of route {key} can never match: decision {:?} before it matches \
                     every request it would; reorder or narrow them",
                    later.name, earlier.name
                ),
            );
        }
    }
}
