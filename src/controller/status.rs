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
    SemanticRouteStatus {
        observed_generation: generation,
        decisions: in_force.map_or(0, |r| u32::try_from(r.decisions.len()).unwrap_or(u32::MAX)),
        conditions: vec![
            condition(
                ConditionType::Accepted,
                &diagnostics,
                "Accepted",
                "the route is in the routing table",
                generation,
                previous,
            ),
            condition(
                ConditionType::ResolvedRefs,
                &diagnostics,
                "ResolvedRefs",
                "every pool and model the route names exists",
                generation,
                previous,
            ),
        ],
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
    ModelPoolStatus {
        observed_generation: generation,
        ready_endpoints,
        conditions: vec![condition(
            ConditionType::Ready,
            &diagnostics,
            "Ready",
            &ok_message,
            generation,
            previous,
        )],
    }
}

/// One condition: False with the first error's reason and every error's message, else True;
/// warnings are appended to the message. Keeps the previous transition time when the status
/// did not change.
fn condition(
    kind: ConditionType,
    diagnostics: &[&Diagnostic],
    ok_reason: &str,
    ok_message: &str,
    generation: Option<i64>,
    previous: &[Condition],
) -> Condition {
    let relevant: Vec<&&Diagnostic> = diagnostics.iter().filter(|d| d.condition == kind).collect();
    let errors: Vec<&&&Diagnostic> = relevant
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    let warnings: Vec<&str> = relevant
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(|d| d.message.as_str())
        .collect();
    let (status, reason, mut message) = match errors.first() {
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
    if !warnings.is_empty() {
        message = format!("{message}; warning: {}", warnings.join("; "));
    }
    let type_ = kind.as_str().to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_,
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

/// The Events a status change deserves: a Warning for each condition that is False now and
/// was not False for the same reason before, a Normal one for each that went from False to
/// True. Unchanged conditions, and conditions True from the start, say nothing.
pub fn condition_events(previous: &[Condition], next: &[Condition]) -> Vec<ConditionEvent> {
    next.iter()
        .filter_map(|c| {
            let before = previous.iter().find(|p| p.type_ == c.type_);
            let was_false = before.is_some_and(|p| p.status == "False");
            let same_failure = was_false && before.is_some_and(|p| p.reason == c.reason);
            let warning = match c.status.as_str() {
                "False" if !same_failure => true,
                "True" if was_false => false,
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
                ("Accepted", "True", "Accepted"),
                ("ResolvedRefs", "True", "ResolvedRefs")
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
        let resolved = &status.conditions[1];
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
            status.conditions[0].status, "True",
            "the default keeps the route in force"
        );
        assert_eq!(status.decisions, 0);
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
