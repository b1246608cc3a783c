//! Targets as the table holds them: a route's targets resolved against the pools, each with
//! its labels, and the direct targets of requests no route governs.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Diagnostics;
use crate::api;
use crate::routing::diagnostics::{ConditionType, Kind, ObjectKey, Reason, Severity};
use crate::routing::table::{DEFAULT_DECISION, DIRECT, Pool, Target};

/// Every pool taking direct requests, by the models it serves, in pool order.
pub(super) fn direct_targets(
    pools: &BTreeMap<ObjectKey, Arc<Pool>>,
) -> BTreeMap<String, Vec<Target>> {
    let mut direct: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    for pool in pools.values().filter(|p| p.direct_requests) {
        for model in pool.models.values() {
            let mut target = Target::new(
                pool.clone(),
                model.clone(),
                api::Reasoning::default(),
                DIRECT,
            );
            // The body's reasoning fields are the client's own.
            target.labels.reasoning = "client";
            direct.entry(model.name.clone()).or_default().push(target);
        }
    }
    direct
}

/// The target a route names, for the decision named `decision`, if its pool and model exist.
pub(super) fn resolve(
    target: &api::Target,
    decision: &str,
    route: &ObjectKey,
    pools: &BTreeMap<ObjectKey, Arc<Pool>>,
    out: &mut Diagnostics,
) -> Option<Target> {
    let namespace = target.namespace.as_ref().unwrap_or(&route.namespace);
    let pool_key = ObjectKey::new(namespace.clone(), target.pool.clone());
    let Some(pool) = pools.get(&pool_key) else {
        out.push(
            Kind::SemanticRoute,
            route,
            ConditionType::ResolvedRefs,
            Reason::PoolNotFound,
            Severity::Error,
            format!(
                "route {route} targets pool {:?}, which does not exist in namespace {namespace:?}; \
                 create the ModelPool or fix the name",
                target.pool
            ),
        );
        return None;
    };
    if !pool.admits_routes_of(&route.namespace) {
        out.push(
            Kind::SemanticRoute,
            route,
            ConditionType::ResolvedRefs,
            Reason::RefNotPermitted,
            Severity::Error,
            format!(
                "route {route} targets pool {pool_key}, whose namespace does not admit routes of \
                 {:?}; the pool's owners can add it to the pool's spec.allowedRouteNamespaces",
                route.namespace
            ),
        );
        return None;
    }
    let Some(model) = pool.models.get(&target.model) else {
        let served: Vec<&str> = pool.models.keys().map(String::as_str).collect();
        out.push(
            Kind::SemanticRoute,
            route,
            ConditionType::ResolvedRefs,
            Reason::ModelNotServed,
            Severity::Error,
            format!(
                "route {route} targets model {:?} in pool {:?}, which serves only [{}]",
                target.model,
                target.pool,
                served.join(", ")
            ),
        );
        return None;
    };
    if target.reasoning.enabled && model.reasoning_family == api::ReasoningFamily::None {
        out.push(
            Kind::SemanticRoute,
            route,
            ConditionType::Accepted,
            Reason::ReasoningUnsupported,
            Severity::Warning,
            format!(
                "{} turns reasoning on for model {:?} of pool {pool_key}, whose reasoningFamily is \
                 none, so the request body is left as it is; set the pool's \
                 models[].reasoningFamily (qwen3, deepseek, gpt-oss, openai) or turn reasoning off",
                if decision == DEFAULT_DECISION {
                    "the default target".to_owned()
                } else {
                    format!("decision {decision:?}")
                },
                model.name
            ),
        );
    }
    Some(Target::new(
        pool.clone(),
        model.clone(),
        target.reasoning.clone(),
        decision,
    ))
}
