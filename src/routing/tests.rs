use std::collections::HashMap;
use std::net::SocketAddr;

use proptest::prelude::*;

use super::fixtures::{compile_all, math_route, pool, route, two_pools};
use super::*;

fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn only_diagnostic(compiled: &Compiled) -> &Diagnostic {
    assert_eq!(
        compiled.diagnostics.len(),
        1,
        "diagnostics: {:#?}",
        compiled.diagnostics
    );
    &compiled.diagnostics[0]
}

fn route_with(decisions: &str, default: &str) -> crate::api::SemanticRoute {
    route(
        "auto",
        &format!(
            "match: {{models: [auto]}}\nsignals:\n  keywords: [{{name: math, keywords: [integral]}}]\ndecisions:\n{decisions}\ndefaultTarget: {default}"
        ),
    )
}

#[test]
fn valid_resources_compile_without_diagnostics() {
    let compiled = compile_all(two_pools(), vec![math_route()]);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:#?}",
        compiled.diagnostics
    );
    let table = &compiled.table;
    assert_eq!(table.pools.len(), 2);
    assert_eq!(table.routes.len(), 1);
    let route = &table.routes[0];
    assert_eq!(route.decisions.len(), 1);
    assert_eq!(route.default_target.pool.key.name, "small");
    let large = &table.pools[&ObjectKey::new("default", "large")];
    let expected: Vec<SocketAddr> = vec![
        "10.0.0.2:8000".parse().unwrap(),
        "10.0.0.3:8000".parse().unwrap(),
    ];
    assert_eq!(large.backend, PoolBackend::Endpoints(expected));
}

#[test]
fn missing_pool_drops_the_decision_and_keeps_the_default() {
    let r = route_with(
        "- {name: big, when: {any: [math]}, targets: [{pool: nope, model: large}]}",
        "{pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let reasons: Vec<Reason> = compiled.diagnostics.iter().map(|d| d.reason).collect();
    assert_eq!(reasons, [Reason::PoolNotFound, Reason::NoResolvedTarget]);
    assert!(
        compiled
            .diagnostics
            .iter()
            .all(|d| d.condition == ConditionType::ResolvedRefs && d.severity == Severity::Error)
    );
    assert!(compiled.diagnostics[0].message.contains("\"nope\""));
    let route = &compiled.table.routes[0];
    assert!(route.decisions.is_empty());
    assert_eq!(route.default_target.model.name, "small");
}

#[test]
fn model_not_served_names_what_the_pool_serves() {
    let r = route_with(
        "- {name: big, when: {any: [math]}, targets: [{pool: large, model: huge}, {pool: large, model: large}]}",
        "{pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let d = only_diagnostic(&compiled);
    assert_eq!(d.reason, Reason::ModelNotServed);
    assert!(d.message.contains("serves only [large]"), "{}", d.message);
    let decision = &compiled.table.routes[0].decisions[0];
    assert_eq!(decision.targets.len(), 1, "the resolvable target stays");
}

#[test]
fn unresolved_default_leaves_the_route_out() {
    let r = route_with(
        "- {name: big, targets: [{pool: large, model: large}]}",
        "{pool: gone, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let reasons: Vec<(ConditionType, Reason)> = compiled
        .diagnostics
        .iter()
        .map(|d| (d.condition, d.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (ConditionType::ResolvedRefs, Reason::PoolNotFound),
            (ConditionType::Accepted, Reason::DefaultTargetUnresolved)
        ]
    );
    assert!(compiled.table.routes.is_empty());
}

#[test]
fn unknown_signal_rejects_the_route() {
    let r = route_with(
        "- {name: big, when: {all: [maths]}, targets: [{pool: large, model: large}]}",
        "{pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let d = only_diagnostic(&compiled);
    assert_eq!(
        (d.condition, d.reason),
        (ConditionType::Accepted, Reason::UnknownSignal)
    );
    assert!(d.message.contains("\"maths\""));
    assert!(compiled.table.routes.is_empty());
}

#[test]
fn duplicate_signal_names_reject_the_route() {
    let r = route(
        "auto",
        "match: {models: [auto]}\nsignals:\n  keywords: [{name: x, keywords: [a]}]\n  headers: [{name: x, header: h, values: [v]}]\ndefaultTarget: {pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    assert_eq!(
        only_diagnostic(&compiled).reason,
        Reason::DuplicateSignalName
    );
    assert!(compiled.table.routes.is_empty());
}

#[test]
fn shadowed_decision_is_a_warning() {
    let r = route_with(
        "- {name: everything, targets: [{pool: large, model: large}]}\n- {name: math, when: {any: [math]}, targets: [{pool: small, model: small}]}",
        "{pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let d = only_diagnostic(&compiled);
    assert_eq!(
        (d.reason, d.severity),
        (Reason::UnreachableDecision, Severity::Warning)
    );
    assert_eq!(compiled.table.routes[0].decisions.len(), 2);
}

#[test]
fn reasoning_on_for_a_model_without_a_switch_is_a_warning_and_labelled_as_applied() {
    let pools = vec![
        pool(
            "small",
            "models: [{name: small, reasoningFamily: qwen3}]\nendpoints: {static: {addresses: [\"10.0.0.1:8000\"]}}",
        ),
        // reasoningFamily defaults to none.
        pool(
            "large",
            "models: [{name: large}]\nendpoints: {static: {addresses: [\"10.0.0.2:8000\"]}}",
        ),
    ];
    let r = route_with(
        "- {name: math, when: {any: [math]}, targets: [{pool: large, model: large, reasoning: {enabled: true, effort: high}}]}",
        "{pool: small, model: small}",
    );
    let compiled = compile_all(pools, vec![r]);
    let d = only_diagnostic(&compiled);
    assert_eq!(
        (d.condition, d.reason, d.severity),
        (
            ConditionType::Accepted,
            Reason::ReasoningUnsupported,
            Severity::Warning
        )
    );
    assert!(
        d.message.contains("decision \"math\"") && d.message.contains("reasoningFamily"),
        "{}",
        d.message
    );
    let route = &compiled.table.routes[0];
    assert_eq!(route.decisions.len(), 1, "in force as written");
    let (target, _) = &route.decisions[0].targets[0];
    assert_eq!(
        target.labels.reasoning,
        crate::routing::table::UNSUPPORTED_REASONING
    );
    assert_eq!(route.default_target.labels.reasoning, "off");
}

#[test]
fn identical_conditions_shadow_too() {
    let r = route_with(
        "- {name: a, when: {any: [math]}, targets: [{pool: large, model: large}]}\n- {name: b, when: {any: [math]}, targets: [{pool: small, model: small}]}",
        "{pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    assert_eq!(
        only_diagnostic(&compiled).reason,
        Reason::UnreachableDecision
    );
}

#[test]
fn second_route_for_the_same_requests_is_conflicted() {
    let mut second = math_route();
    second.metadata.name = Some("zz-later".into());
    let compiled = compile_all(two_pools(), vec![second, math_route()]);
    let d = only_diagnostic(&compiled);
    assert_eq!(d.reason, Reason::Conflicted);
    assert_eq!(d.object.name, "zz-later");
    assert!(
        d.message
            .contains("route default/auto already governs model \"auto\"")
            && d.message
                .contains("default/auto sorts first by namespace/name"),
        "{}",
        d.message
    );
    assert_eq!(compiled.table.routes.len(), 1);
    assert_eq!(compiled.table.routes[0].key.name, "auto");
}

#[test]
fn the_older_of_two_routes_for_the_same_requests_wins_and_the_message_says_so() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let at = |s: &str| Some(Time(s.parse().expect("a timestamp")));
    let mut older = math_route();
    older.metadata.name = Some("zz-older".into());
    older.metadata.creation_timestamp = at("2026-01-01T00:00:00Z");
    let mut newer = math_route();
    newer.metadata.creation_timestamp = at("2026-06-01T00:00:00Z");
    let compiled = compile_all(two_pools(), vec![newer, older]);
    let d = only_diagnostic(&compiled);
    assert_eq!(
        (d.reason, d.object.name.as_str()),
        (Reason::Conflicted, "auto")
    );
    assert!(
        d.message.contains("route default/zz-older already governs")
            && d.message.contains(
                "it was created first (2026-01-01T00:00:00Z; route default/auto at 2026-06-01T00:00:00Z)"
            ),
        "{}",
        d.message
    );
    assert_eq!(compiled.table.routes[0].key.name, "zz-older");
}

#[test]
fn header_specific_route_takes_precedence() {
    let general = math_route();
    let team = route(
        "team",
        "match: {models: [auto], headers: [{name: X-Team, values: [research]}]}\ndefaultTarget: {pool: large, model: large}",
    );
    let compiled = compile_all(two_pools(), vec![general, team]);
    assert!(
        compiled.diagnostics.is_empty(),
        "{:#?}",
        compiled.diagnostics
    );
    let table = &compiled.table;
    let research = headers(&[("x-team", "research")]);
    let other = headers(&[("x-team", "ops")]);
    assert_eq!(
        table.governing_route("auto", &research).unwrap().key.name,
        "team"
    );
    assert_eq!(
        table.governing_route("auto", &other).unwrap().key.name,
        "auto"
    );
    assert!(table.governing_route("gpt-4", &research).is_none());
}

/// `resource` moved to `namespace`.
fn in_namespace<T: kube::Resource>(mut resource: T, namespace: &str) -> T {
    resource.meta_mut().namespace = Some(namespace.into());
    resource
}

#[test]
fn every_namespace_can_have_its_own_alias_for_its_own_requests() {
    let scoped = |namespace| {
        let route = route(
            "auto",
            "match: {models: [auto], scope: Namespace}\ndefaultTarget: {pool: large, model: large}",
        );
        in_namespace(route, namespace)
    };
    let pools = two_pools()
        .into_iter()
        .flat_map(|p| {
            ["team-a", "team-b"]
                .map(|ns| in_namespace(p.clone(), ns))
                .into_iter()
                .chain([p])
        })
        .collect();
    let compiled = compile_all(
        pools,
        vec![math_route(), scoped("team-a"), scoped("team-b")],
    );
    assert!(
        compiled.diagnostics.is_empty(),
        "no conflict: {:#?}",
        compiled.diagnostics
    );
    let table = &compiled.table;
    let governing = |marks: &[(&str, &str)]| {
        let route = table.governing_route("auto", &headers(marks));
        route.map(|r| r.key.namespace.clone())
    };
    assert_eq!(
        governing(&[("x-route-namespace", "team-a")]).as_deref(),
        Some("team-a")
    );
    assert_eq!(
        governing(&[("x-route-namespace", "team-b")]).as_deref(),
        Some("team-b")
    );
    assert_eq!(
        governing(&[("x-route-namespace", "team-c")]).as_deref(),
        Some("default")
    );
    assert_eq!(
        governing(&[]).as_deref(),
        Some("default"),
        "unmarked: the cluster-wide route"
    );
}

#[test]
fn a_pool_of_another_namespace_serves_only_routes_its_owners_admit() {
    let team_route = in_namespace(
        route(
            "auto",
            "match: {models: [auto], scope: Namespace}\ndefaultTarget: {pool: small, namespace: default, model: small}",
        ),
        "team-a",
    );
    let compiled = compile_all(two_pools(), vec![team_route.clone()]);
    let d = &compiled.diagnostics[0];
    assert_eq!(
        (d.condition, d.reason, d.object.namespace.as_str()),
        (
            ConditionType::ResolvedRefs,
            Reason::RefNotPermitted,
            "team-a"
        )
    );
    assert!(
        d.message.contains("spec.allowedRouteNamespaces"),
        "{}",
        d.message
    );
    assert!(compiled.table.routes.is_empty());

    for grant in ["team-a", "*"] {
        let mut pools = two_pools();
        pools[0].spec.allowed_route_namespaces = vec![grant.into()];
        let compiled = compile_all(pools, vec![team_route.clone()]);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:#?}",
            compiled.diagnostics
        );
        assert_eq!(
            compiled.table.routes[0].default_target.pool.key.to_string(),
            "default/small"
        );
    }
}

#[test]
fn two_routes_of_one_namespace_for_the_same_alias_still_conflict() {
    let scoped = |name: &str| {
        route(
            name,
            "match: {models: [auto], scope: Namespace}\ndefaultTarget: {pool: small, model: small}",
        )
    };
    let compiled = compile_all(two_pools(), vec![scoped("first"), scoped("second")]);
    let d = only_diagnostic(&compiled);
    assert_eq!(
        (d.reason, d.object.name.as_str()),
        (Reason::Conflicted, "second")
    );
}

#[test]
fn pool_without_endpoints_is_not_ready() {
    let p = pool(
        "incluster",
        "models: [{name: m}]\nendpoints: {selector: {matchLabels: {app: vllm}}, targetPort: 8000}",
    );
    let compiled = compile_all(vec![p.clone()], vec![]);
    let d = only_diagnostic(&compiled);
    assert_eq!(
        (d.condition, d.reason),
        (ConditionType::Ready, Reason::NoReadyEndpoints)
    );

    let addr: SocketAddr = "10.1.0.7:8000".parse().unwrap();
    let discovered = [(ObjectKey::new("default", "incluster"), vec![addr])].into();
    let compiled = compile(&Resources {
        pools: vec![p],
        routes: vec![],
        discovered,
        ..Resources::default()
    });
    assert!(compiled.diagnostics.is_empty());
    let pool = &compiled.table.pools[&ObjectKey::new("default", "incluster")];
    assert_eq!(pool.backend, PoolBackend::Endpoints(vec![addr]));
}

#[test]
fn hostname_address_is_skipped_with_a_warning() {
    let p = pool(
        "remote",
        "models: [{name: m}]\nendpoints: {static: {addresses: [\"vllm.example.com:8000\", \"10.0.0.9:8000\"]}}",
    );
    let compiled = compile_all(vec![p], vec![]);
    let d = only_diagnostic(&compiled);
    assert_eq!(
        (d.reason, d.severity),
        (Reason::InvalidAddress, Severity::Warning)
    );
    let pool = compiled.table.pools.values().next().unwrap();
    assert_eq!(
        pool.backend,
        PoolBackend::Endpoints(vec!["10.0.0.9:8000".parse().unwrap()])
    );
}

#[test]
fn gateway_pool_names_its_cluster() {
    let p = pool(
        "llmd",
        "models: [{name: m}]\nendpoints: {gateway: {clusterName: llm-d-east}}",
    );
    let compiled = compile_all(vec![p], vec![]);
    assert!(compiled.diagnostics.is_empty());
    let pool = compiled.table.pools.values().next().unwrap();
    assert_eq!(
        pool.backend,
        PoolBackend::Gateway {
            cluster: "llm-d-east".into()
        }
    );
}

#[test]
fn zero_weight_targets_take_no_traffic() {
    let r = route_with(
        "- {name: split, targets: [{pool: large, model: large, weight: 0}, {pool: small, model: small, weight: 3}]}",
        "{pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let route = &compiled.table.routes[0];
    for draw in 0..50 {
        let v = route.decide(&SignalValues::default(), draw);
        assert_eq!(v.target.pool.key.name, "small");
    }
}

#[test]
fn keywords_pick_the_reasoning_decision() {
    let compiled = compile_all(two_pools(), vec![math_route()]);
    let route = &compiled.table.routes[0];
    let none = headers(&[]);

    let math = route.evaluate_rule_signals("Compute the Integral of x^2", &none);
    let v = route.decide(&math, 0);
    assert_eq!(v.decision_name(), "reasoning");
    assert_eq!(v.target.model.name, "large");
    assert!(v.target.reasoning.enabled);

    let chat = route.evaluate_rule_signals("what is the capital of North Carolina?", &none);
    let v = route.decide(&chat, 0);
    assert_eq!(v.decision_name(), "default");
    assert_eq!(v.target.model.name, "small");
    assert!(!v.target.reasoning.enabled);
}

#[test]
fn only_needed_signals_are_computed() {
    let compiled = compile_all(two_pools(), vec![math_route()]);
    let route = &compiled.table.routes[0];
    let needed: Vec<&str> = route
        .needed_signals()
        .map(|id| route.signals[id].name.as_str())
        .collect();
    assert_eq!(needed, ["math"], "the header signal is defined but unused");
    let values = route.evaluate_rule_signals("integral", &headers(&[("x-team", "research")]));
    let research = route
        .signals
        .iter()
        .position(|s| s.name == "research")
        .unwrap();
    assert_eq!(values.get(research), None);
    assert!(!route.needs_model());
}

#[test]
fn unavailable_signal_skips_the_decision() {
    let r = route(
        "auto",
        r#"match: {models: [auto]}
signals:
  examples: [{name: mathy, prompts: ["solve x"]}]
decisions:
- {name: m, when: {any: [mathy]}, targets: [{pool: large, model: large}]}
defaultTarget: {pool: small, model: small}"#,
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let route = &compiled.table.routes[0];
    assert!(route.needs_model());
    let values = route.evaluate_rule_signals("solve x", &headers(&[]));
    assert_eq!(route.decide(&values, 0).decision_name(), "default");
    let mut values = values;
    values.set(
        0,
        SignalValue {
            matched: true,
            score: Some(0.9),
        },
    );
    assert_eq!(route.decide(&values, 0).decision_name(), "m");
}

#[test]
fn known_signals_settle_a_condition_despite_unavailable_ones() {
    let when = Condition {
        all: vec![],
        any: vec![0, 1],
        not: vec![2],
    };
    let v = |values: &[Option<bool>]| {
        SignalValues(values.iter().map(|v| v.map(SignalValue::flag)).collect())
    };
    assert_eq!(
        holds(&when, &v(&[None, Some(true), Some(false)])),
        Some(true)
    );
    assert_eq!(holds(&when, &v(&[None, Some(false), Some(false)])), None);
    assert_eq!(
        holds(&when, &v(&[Some(true), None, Some(true)])),
        Some(false)
    );
    assert_eq!(holds(&when, &v(&[Some(true), None, None])), None);
    let all = Condition {
        all: vec![0, 1],
        ..Condition::default()
    };
    assert_eq!(holds(&all, &v(&[Some(false), None])), Some(false));
    assert_eq!(holds(&all, &v(&[Some(true), None])), None);
}

#[test]
fn a_decision_is_settled_once_every_decision_before_the_first_that_holds_is_known_not_to() {
    // Decisions: `first` on signal 0, `second` on signal 1 or 2; signals 1 and 2 unknown.
    let r = route(
        "auto",
        "match: {models: [auto]}\nsignals:\n  keywords: [{name: a, keywords: [a]}, {name: b, keywords: [b]}, {name: c, keywords: [c]}]\ndecisions:\n- {name: first, when: {any: [a]}, targets: [{pool: large, model: large}]}\n- {name: second, when: {any: [b, c]}, targets: [{pool: large, model: large}]}\ndefaultTarget: {pool: small, model: small}",
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let route = &compiled.table.routes[0];
    let v = |values: &[Option<bool>]| {
        SignalValues(values.iter().map(|v| v.map(SignalValue::flag)).collect())
    };
    // The first holds: nothing else matters.
    assert!(route.decided_by(&v(&[Some(true), None, None])));
    // The first fails and the second hinges on an unknown signal.
    assert!(!route.decided_by(&v(&[Some(false), Some(false), None])));
    // Unknown first: even a holding second is not enough.
    assert!(!route.decided_by(&v(&[None, Some(true), Some(true)])));
    // Known to hold, or known to fall through to the default.
    let second = v(&[Some(false), None, Some(true)]);
    assert!(route.decided_by(&second));
    assert_eq!(route.decide(&second, 0).decision_name(), "second");
    let default = v(&[Some(false), Some(false), Some(false)]);
    assert!(route.decided_by(&default));
    assert_eq!(route.decide(&default, 0).decision_name(), "default");
}

#[test]
fn a_semantic_cache_without_an_encoder_is_a_warning() {
    let r = route(
        "auto",
        "match: {models: [auto]}\ncache: {enabled: true}\ndefaultTarget: {pool: small, model: small}",
    );
    let none = compile(&Resources {
        pools: two_pools(),
        routes: vec![r.clone()],
        ..Resources::default()
    });
    let d = only_diagnostic(&none);
    assert_eq!(
        (d.reason, d.severity),
        (Reason::SignalNotLoaded, Severity::Warning)
    );
    assert!(
        d.message.contains("semantic cache") && d.message.contains("--encoder"),
        "{}",
        d.message
    );
    let loaded = compile_all(two_pools(), vec![r]);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert!(
        loaded.table.routes[0].needs_model(),
        "the cache keys on the prompt's embedding"
    );
}

#[test]
fn signals_the_router_cannot_compute_are_warnings() {
    let r = route(
        "auto",
        r#"match: {models: [auto]}
signals:
  examples: [{name: mathy, prompts: ["solve x"]}]
  categories: [{name: sci, labels: [physics, biology]}]
  jailbreak: {threshold: 0.9}
decisions:
- {name: m, when: {any: [mathy, sci]}, targets: [{pool: large, model: large}]}
defaultTarget: {pool: small, model: small}"#,
    );
    let none = compile(&Resources {
        pools: two_pools(),
        routes: vec![r.clone()],
        ..Resources::default()
    });
    let reasons: Vec<(Reason, Severity)> = none
        .diagnostics
        .iter()
        .map(|d| (d.reason, d.severity))
        .collect();
    assert_eq!(
        reasons,
        vec![(Reason::SignalNotLoaded, Severity::Warning); 3]
    );
    assert!(
        none.diagnostics[0].message.contains("--encoder"),
        "{}",
        none.diagnostics[0].message
    );
    assert_eq!(none.table.routes.len(), 1, "the route stays in force");

    let loaded = compile_all(two_pools(), vec![r]);
    let d = only_diagnostic(&loaded);
    assert_eq!(d.reason, Reason::SignalNotLoaded);
    assert!(d.message.contains("[biology]"), "{}", d.message);
}

#[test]
fn all_any_not_combine() {
    let r = route(
        "auto",
        r#"match: {models: [auto]}
signals:
  keywords:
  - {name: a, keywords: [alpha]}
  - {name: b, keywords: [beta]}
  - {name: c, keywords: [gamma]}
  - {name: every, keywords: [alpha, beta], operator: All, caseSensitive: true}
decisions:
- {name: d, when: {all: [a], any: [b, c], not: [every]}, targets: [{pool: large, model: large}]}
- {name: e, when: {all: [every]}, targets: [{pool: large, model: large}]}
defaultTarget: {pool: small, model: small}"#,
    );
    let compiled = compile_all(two_pools(), vec![r]);
    let route = &compiled.table.routes[0];
    let decide = |prompt: &str| {
        let values = route.evaluate_rule_signals(prompt, &headers(&[]));
        route.decide(&values, 0).decision_name().to_owned()
    };
    assert_eq!(decide("alpha gamma"), "d");
    assert_eq!(decide("alpha"), "default", "any needs one of b, c");
    assert_eq!(decide("alpha beta"), "e", "not excludes d");
    assert_eq!(decide("ALPHA BETA"), "d", "case-sensitive keywords miss");
}

#[test]
fn keywords_match_whole_words() {
    assert!(contains_word("use sql here", "sql"));
    assert!(contains_word("sql", "sql"));
    assert!(contains_word("(sql)", "sql"));
    assert!(!contains_word("mysql server", "sql"));
    assert!(!contains_word("sqlite", "sql"));
    assert!(contains_word("think step by step.", "step by step"));
    assert!(!contains_word("anything", ""));
}

#[test]
fn model_names_cover_aliases_and_pool_models() {
    let compiled = compile_all(two_pools(), vec![math_route()]);
    assert_eq!(compiled.table.model_names(), ["auto", "large", "small"]);
}

#[test]
fn shared_table_publishes_generations() {
    let shared = SharedTable::default();
    assert!(shared.load().is_none());
    let rx = shared.subscribe();
    assert_eq!(shared.publish(compile_all(two_pools(), vec![]).table), 1);
    assert_eq!(shared.publish(RoutingTable::default()), 2);
    assert_eq!(*rx.borrow(), 2);
    assert_eq!(shared.load().unwrap().generation, 2);
}

fn split_route(weights: &[u32]) -> crate::api::SemanticRoute {
    let targets: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let pool = if i % 2 == 0 { "small" } else { "large" };
            format!(
                "{{pool: {pool}, model: {pool}, weight: {w}, reasoning: {{enabled: {}}}}}",
                i % 4 >= 2
            )
        })
        .collect();
    route_with(
        &format!("- {{name: split, targets: [{}]}}", targets.join(", ")),
        "{pool: small, model: small}",
    )
}

proptest! {
    /// Over one full cycle of draws, every target gets exactly its weight's share.
    #[test]
    fn weighted_split_is_exact_over_a_cycle(weights in prop::collection::vec(1u32..50, 1..5)) {
        let compiled = compile_all(two_pools(), vec![split_route(&weights)]);
        let route = &compiled.table.routes[0];
        let decision = &route.decisions[0];
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        prop_assert_eq!(decision.total_weight, total);
        let mut counts = vec![0u64; weights.len()];
        for draw in 0..total * 3 {
            let v = route.decide(&SignalValues::default(), draw);
            let i = decision.targets.iter().position(|(t, _)| std::ptr::eq(t, v.target)).unwrap();
            counts[i] += 1;
        }
        for (count, w) in counts.iter().zip(&weights) {
            prop_assert_eq!(*count, 3 * u64::from(*w));
        }
    }

    /// With random draws, shares stay within 3 percentage points of the weights.
    #[test]
    fn weighted_split_within_tolerance(weights in prop::collection::vec(1u32..1000, 2..4), seed in any::<u64>()) {
        use rand::{Rng, SeedableRng};
        let compiled = compile_all(two_pools(), vec![split_route(&weights)]);
        let route = &compiled.table.routes[0];
        let decision = &route.decisions[0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = 20_000;
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..n {
            let v = route.decide(&SignalValues::default(), rng.random());
            let i = decision.targets.iter().position(|(t, _)| std::ptr::eq(t, v.target)).unwrap();
            counts[i] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (count, w) in counts.iter().zip(&weights) {
            let got = f64::from(*count) / f64::from(n);
            let want = f64::from(*w) / f64::from(total);
            prop_assert!((got - want).abs() < 0.03, "got {got}, want {want}");
        }
    }

    /// The verdict is the first decision whose condition holds, else the default; same input,
    /// same verdict.
    #[test]
    fn verdict_is_first_holding_decision(values in prop::collection::vec(prop::option::of(any::<bool>()), 3), draw in any::<u64>()) {
        let r = route(
            "auto",
            r#"match: {models: [auto]}
signals:
  keywords: [{name: a, keywords: [a]}, {name: b, keywords: [b]}, {name: c, keywords: [c]}]
decisions:
- {name: one, when: {all: [a, b]}, targets: [{pool: large, model: large}]}
- {name: two, when: {any: [b, c], not: [a]}, targets: [{pool: small, model: small}]}
- {name: three, when: {not: [c]}, targets: [{pool: large, model: large}]}
defaultTarget: {pool: small, model: small}"#,
        );
        let compiled = compile_all(two_pools(), vec![r]);
        let route = &compiled.table.routes[0];
        let signals = SignalValues(values.iter().map(|v| v.map(SignalValue::flag)).collect());
        let verdict = route.decide(&signals, draw);
        let expected = route.decisions.iter().find(|d| holds(&d.when, &signals) == Some(true));
        prop_assert_eq!(verdict.decision.map(|i| &route.decisions[i].name), expected.map(|d| &d.name));
        let again = route.decide(&signals, draw);
        prop_assert_eq!(verdict.target, again.target);
    }

    /// Compilation does not depend on the order resources arrive in.
    #[test]
    fn compile_is_order_independent(rotate in 0usize..4, reverse in any::<bool>()) {
        let mut second = math_route();
        second.metadata.name = Some("other".into());
        let mut routes = vec![math_route(), second, route(
            "bad",
            "match: {models: [x]}\ndefaultTarget: {pool: nope, model: small}",
        )];
        let mut pools = two_pools();
        let n = routes.len();
        routes.rotate_left(rotate % n);
        if reverse {
            pools.reverse();
            routes.reverse();
        }
        let baseline = compile_all(two_pools(), vec![math_route()]);
        let compiled = compile_all(pools, routes);
        prop_assert_eq!(compiled.table.routes[0].key.name.as_str(), "auto");
        prop_assert_eq!(compiled.table.to_string(), baseline.table.to_string());
        let mut reasons: Vec<_> = compiled.diagnostics.iter().map(|d| (d.object.name.clone(), d.reason)).collect();
        reasons.sort();
        prop_assert_eq!(reasons, vec![
            ("bad".to_string(), Reason::PoolNotFound),
            ("bad".to_string(), Reason::DefaultTargetUnresolved),
            ("other".to_string(), Reason::Conflicted),
        ]);
    }

    /// A keyword surrounded by spaces is always found.
    #[test]
    fn inserted_word_is_found(prefix in "[a-z ]{0,20}", suffix in "[a-z ]{0,20}", word in "[a-z]{1,8}") {
        let text = format!("{prefix} {word} {suffix}");
        prop_assert!(contains_word(&text, &word));
    }
}

#[test]
fn complexity_signals_read_the_complexity_head() {
    let r = route(
        "auto",
        r#"match: {models: [auto]}
signals:
  categories: [{name: hard, classifier: complexity, labels: [reasoning, deep]}]
decisions:
- {name: m, when: {any: [hard]}, targets: [{pool: large, model: large}]}
defaultTarget: {pool: small, model: small}"#,
    );
    let loaded = compile_all(two_pools(), vec![r.clone()]);
    let d = only_diagnostic(&loaded);
    assert!(
        d.message.contains("[deep]") && d.message.contains("complexity head"),
        "{}",
        d.message
    );
    match &loaded.table.routes[0].signals[0].kind {
        SignalKind::Category { classifier, .. } => {
            assert_eq!(*classifier, crate::api::Classifier::Complexity)
        }
        other => panic!("{other:?}"),
    }
    let none = compile(&Resources {
        pools: two_pools(),
        routes: vec![r],
        ..Resources::default()
    });
    assert!(
        none.diagnostics[0].message.contains("--complexity-head"),
        "{}",
        none.diagnostics[0].message
    );
}
