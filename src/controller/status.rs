//! Status of our resources, rebuilt whole from what the compiler found on every pass.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{ModelPool, ModelPoolStatus, SemanticRoute, SemanticRouteStatus};
use crate::routing::{
    Compiled, ConditionType, Diagnostic, Kind, PoolBackend, RoutingTable, Severity, object_key,
};

/// The status a route should have after this compilation.
pub fn route_status(
    route: &SemanticRoute,
    compiled: &Compiled,
    table: &RoutingTable,
) -> SemanticRouteStatus {
    let key = object_key(route);
    let diagnostics: Vec<&Diagnostic> = compiled
        .diagnostics_for(Kind::SemanticRoute, &key)
        .collect();
    let in_force = table.routes.iter().find(|r| r.key == key);
    let previous = route
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = route.metadata.generation;
    let accepted = condition(
        ConditionType::Accepted,
        &diagnostics,
        "Accepted",
        "the route is in the routing table",
        generation,
        previous,
    );
    let resolved = condition(
        ConditionType::ResolvedRefs,
        &diagnostics,
        "ResolvedRefs",
        "every pool and model the route names exists",
        generation,
        previous,
    );
    let degraded = degraded(&diagnostics, generation, previous);
    let decisions = in_force.map_or(0, |r| u32::try_from(r.decisions.len()).unwrap_or(u32::MAX));
    let ready = ready(
        &[&accepted, &resolved, &degraded],
        &format!("routing as written: {decisions} decision(s) in force"),
        generation,
        previous,
    );
    SemanticRouteStatus {
        observed_generation: generation,
        decisions,
        conditions: vec![ready, accepted, resolved, degraded],
    }
}

/// The status a pool should have after this compilation.
pub fn pool_status(pool: &ModelPool, compiled: &Compiled, table: &RoutingTable) -> ModelPoolStatus {
    let key = object_key(pool);
    let diagnostics: Vec<&Diagnostic> = compiled.diagnostics_for(Kind::ModelPool, &key).collect();
    let ready_endpoints = match table.pools.get(&key).map(|p| &p.backend) {
        Some(PoolBackend::Endpoints(e)) => u32::try_from(e.len()).unwrap_or(u32::MAX),
        _ => 0,
    };
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = pool.metadata.generation;
    let ok_message = if matches!(
        table.pools.get(&key).map(|p| &p.backend),
        Some(PoolBackend::Gateway { .. })
    ) {
        "the pool is reached through its gateway".to_owned()
    } else {
        format!("{ready_endpoints} ready endpoint(s)")
    };
    let endpoints = condition(
        ConditionType::Ready,
        &diagnostics,
        "Ready",
        &ok_message,
        generation,
        previous,
    );
    let degraded = degraded(&diagnostics, generation, previous);
    let ready = ready(&[&endpoints, &degraded], &ok_message, generation, previous);
    ModelPoolStatus {
        observed_generation: generation,
        ready_endpoints,
        conditions: vec![ready, degraded],
    }
}

/// `Ready`: True when every detail condition is healthy (True, or False for `Degraded`);
/// otherwise False with the first unhealthy one's reason and every unhealthy message.
fn ready(
    details: &[&Condition],
    ok_message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let unhealthy: Vec<&&Condition> = details.iter().filter(|c| !healthy(c)).collect();
    let (status, reason, message) = match unhealthy.first() {
        None => ("True", "Ready".to_owned(), ok_message.to_owned()),
        Some(first) => (
            "False",
            first.reason.clone(),
            unhealthy
                .iter()
                .map(|c| c.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    new_condition(
        ConditionType::Ready.as_str(),
        status,
        reason,
        message,
        generation,
        previous,
    )
}

/// `Degraded`: True with the first warning's reason and every warning's message when the
/// compiler warned (the object is in force, but not all of it works as written).
fn degraded(
    diagnostics: &[&Diagnostic],
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let warnings: Vec<&&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .collect();
    let (status, reason, message) = match warnings.first() {
        None => (
            "False",
            "AsExpected".to_owned(),
            "nothing degraded".to_owned(),
        ),
        Some(first) => (
            "True",
            first.reason.as_str().to_owned(),
            warnings
                .iter()
                .map(|d| d.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    new_condition(DEGRADED, status, reason, message, generation, previous)
}

/// The condition type of warnings.
const DEGRADED: &str = "Degraded";

/// Whether a condition says all is well: `Degraded` False, any other True.
fn healthy(c: &Condition) -> bool {
    if c.type_ == DEGRADED {
        c.status == "False"
    } else {
        c.status == "True"
    }
}

/// One detail condition: False with the first error's reason and every error's message, else
/// True (warnings go to `Degraded`).
fn condition(
    kind: ConditionType,
    diagnostics: &[&Diagnostic],
    ok_reason: &str,
    ok_message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let errors: Vec<&&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.condition == kind && d.severity == Severity::Error)
        .collect();
    let (status, reason, message) = match errors.first() {
        Some(first) => (
            "False",
            first.reason.as_str().to_owned(),
            errors
                .iter()
                .map(|d| d.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        None => ("True", ok_reason.to_owned(), ok_message.to_owned()),
    };
    new_condition(kind.as_str(), status, reason, message, generation, previous)
}

/// A condition that keeps the previous transition time when its status did not change.
fn new_condition(
    type_: &str,
    status: &str,
    reason: String,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether two statuses say the same thing, ignoring transition times.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (
                &x.type_,
                &x.status,
                &x.reason,
                &x.message,
                x.observed_generation,
            ) == (
                &y.type_,
                &y.status,
                &y.reason,
                &y.message,
                y.observed_generation,
            )
        })
}

/// A condition change worth a Kubernetes Event on the object, so `kubectl describe` and
/// event-based alerting see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionEvent {
    /// A Warning when a condition turned False; Normal when it recovered.
    pub warning: bool,
    /// The condition's reason (CamelCase).
    pub reason: String,
    /// The condition's message.
    pub note: String,
}

/// The Events a status change deserves: a Warning for each condition that turned unhealthy
/// (False, or True for `Degraded`) and was not unhealthy for the same reason before, a Normal
/// one for each that recovered. Unchanged conditions, conditions healthy from the start, and a
/// second condition with the same reason (`Ready` summing up a detail) say nothing.
pub fn condition_events(previous: &[Condition], next: &[Condition]) -> Vec<ConditionEvent> {
    let mut seen: Vec<&str> = Vec::new();
    next.iter()
        .filter_map(|c| {
            if seen.contains(&c.reason.as_str()) {
                return None;
            }
            seen.push(&c.reason);
            let before = previous.iter().find(|p| p.type_ == c.type_);
            let was_unhealthy = before.is_some_and(|p| !healthy(p) && p.status != "Unknown");
            let same_failure = was_unhealthy && before.is_some_and(|p| p.reason == c.reason);
            let warning = match (healthy(c), c.status.as_str()) {
                (_, "Unknown") => return None,
                (false, _) if !same_failure => true,
                (true, _) if was_unhealthy => false,
                _ => return None,
            };
            Some(ConditionEvent {
                warning,
                reason: c.reason.clone(),
                note: c.message.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::fixtures::{compile_all, math_route, route, two_pools};

    #[test]
    fn accepted_route_is_true_on_both_conditions() {
        let mut r = math_route();
        r.metadata.generation = Some(3);
        let compiled = compile_all(two_pools(), vec![r.clone()]);
        let status = route_status(&r, &compiled, &compiled.table);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.decisions, 1);
        let c: Vec<(&str, &str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            c,
            [
                ("Ready", "True", "Ready"),
                ("Accepted", "True", "Accepted"),
                ("ResolvedRefs", "True", "ResolvedRefs"),
                ("Degraded", "False", "AsExpected"),
            ]
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
    }

    #[test]
    fn dangling_pool_is_resolved_refs_false_with_the_reason() {
        let r = route(
            "auto",
            "match: {models: [auto]}\ndecisions:\n- {name: d, targets: [{pool: gone, model: m}]}\ndefaultTarget: {pool: small, model: small}",
        );
        let compiled = compile_all(two_pools(), vec![r.clone()]);
        let status = route_status(&r, &compiled, &compiled.table);
        let resolved = &status.conditions[2];
        assert_eq!(
            (resolved.status.as_str(), resolved.reason.as_str()),
            ("False", "PoolNotFound")
        );
        assert!(
            resolved.message.contains("\"gone\""),
            "{}",
            resolved.message
        );
        assert_eq!(
            status.conditions[1].status, "True",
            "the default keeps the route in force"
        );
        assert_eq!(status.decisions, 0);
        let ready = &status.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "False", "PoolNotFound"),
            "a decision that does not resolve makes the route not Ready"
        );
    }

    #[test]
    fn a_warning_is_degraded_and_not_ready_but_in_force() {
        let r = route(
            "auto",
            "match: {models: [auto]}\nsignals: {categories: [{name: stem, labels: [math]}]}\ndecisions:\n- {name: always, targets: [{pool: small, model: small}]}\n- {name: d, when: {any: [stem]}, targets: [{pool: small, model: small}]}\ndefaultTarget: {pool: small, model: small}",
        );
        let compiled = compile_all(two_pools(), vec![r.clone()]);
        let status = route_status(&r, &compiled, &compiled.table);
        let by_type = |t: &str| {
            let c = status.conditions.iter().find(|c| c.type_ == t).unwrap();
            (c.status.as_str(), c.reason.as_str())
        };
        assert_eq!(by_type("Accepted"), ("True", "Accepted"));
        assert_eq!(by_type("Degraded"), ("True", "UnreachableDecision"));
        assert_eq!(by_type("Ready"), ("False", "UnreachableDecision"));
        assert!(
            !status.conditions[1].message.contains("warning"),
            "warnings live in Degraded, not in Accepted's message"
        );
        let events = condition_events(&[], &status.conditions);
        assert_eq!(events.len(), 1, "one Warning per reason: {events:?}");
        assert!(events[0].warning);
    }

    #[test]
    fn pool_without_endpoints_is_not_ready_and_transition_time_is_kept() {
        let mut pools = two_pools();
        pools[0].spec.endpoints =
            serde_json::from_value(serde_json::json!({"service": {"name": "s", "port": 80}}))
                .unwrap();
        let compiled = compile_all(pools.clone(), vec![]);
        let status = pool_status(&pools[0], &compiled, &compiled.table);
        assert_eq!(status.ready_endpoints, 0);
        assert_eq!(
            (
                status.conditions[0].status.as_str(),
                status.conditions[0].reason.as_str()
            ),
            ("False", "NoReadyEndpoints")
        );

        let mut again = pools[0].clone();
        let mut old = status.clone();
        old.conditions[0].last_transition_time = Time(Timestamp::UNIX_EPOCH);
        again.status = Some(old);
        let next = pool_status(&again, &compiled, &compiled.table);
        assert_eq!(
            next.conditions[0].last_transition_time,
            Time(Timestamp::UNIX_EPOCH)
        );
        assert!(same_conditions(&next.conditions, &status.conditions));

        let ready = pool_status(&pools[1], &compiled, &compiled.table);
        assert_eq!(
            (ready.ready_endpoints, ready.conditions[0].status.as_str()),
            (2, "True")
        );
    }

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{type_} is {status}: {reason}"),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn events_mark_failures_and_recoveries_not_steady_states() {
        let ok = [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs"),
        ];
        assert!(
            condition_events(&[], &ok).is_empty(),
            "healthy from the start"
        );
        assert!(condition_events(&ok, &ok).is_empty());

        let broken = [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "False", "PoolNotFound"),
        ];
        let events = condition_events(&ok, &broken);
        assert_eq!(
            events,
            [ConditionEvent {
                warning: true,
                reason: "PoolNotFound".into(),
                note: "ResolvedRefs is False: PoolNotFound".into()
            }]
        );
        assert_eq!(
            condition_events(&[], &broken).len(),
            1,
            "broken from the start"
        );
        assert!(
            condition_events(&broken, &broken).is_empty(),
            "same failure: no repeat"
        );

        let other = [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "False", "ModelNotServed"),
        ];
        let events = condition_events(&broken, &other);
        assert_eq!(
            (events.len(), events[0].reason.as_str()),
            (1, "ModelNotServed")
        );

        let events = condition_events(&broken, &ok);
        assert_eq!(events.len(), 1);
        assert!(!events[0].warning, "a recovery is Normal");
        assert_eq!(events[0].reason, "ResolvedRefs");
    }
}
