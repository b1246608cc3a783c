//! Every CEL rule of the schema, evaluated locally the way the API server would, and the
//! generated CRDs checked against `crds/`.

use serde_json::{Value, json};

use super::*;

fn pool() -> Value {
    json!({
        "apiVersion": "semantic-router.io/v1alpha1", "kind": "ModelPool",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"models": [{"name": "m"}], "endpoints": {"static": {"addresses": ["10.0.0.1:8000"]}}}
    })
}

fn route() -> Value {
    json!({
        "apiVersion": "semantic-router.io/v1alpha1", "kind": "SemanticRoute",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {
            "match": {"models": ["auto"]},
            "signals": {"keywords": [{"name": "math", "keywords": ["integral"]}]},
            "decisions": [{"name": "d", "when": {"any": ["math"]},
                           "targets": [{"pool": "p", "model": "m", "weight": 1}]}],
            "defaultTarget": {"pool": "p", "model": "m"}
        }
    })
}

/// CEL errors of a pool after `edit`, as one string.
fn pool_errors(edit: impl FnOnce(&mut Value)) -> String {
    let mut value = pool();
    edit(&mut value);
    let pool: ModelPool = serde_json::from_value(value).expect("pool deserialises");
    ModelPool::validate_cel(&pool)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// CEL errors of a route after `edit`, as one string.
fn route_errors(edit: impl FnOnce(&mut Value)) -> String {
    let mut value = route();
    edit(&mut value);
    let route: SemanticRoute = serde_json::from_value(value).expect("route deserialises");
    SemanticRoute::validate_cel(&route)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn valid_resources_pass_every_rule() {
    assert_eq!(pool_errors(|_| {}), "");
    assert_eq!(route_errors(|_| {}), "");
}

#[test]
fn pool_needs_exactly_one_endpoint_source() {
    let two = pool_errors(|v| v["spec"]["endpoints"]["gateway"] = json!({"clusterName": "c"}));
    assert!(
        two.contains("exactly one of selector, service, static or gateway"),
        "{two}"
    );
    let none = pool_errors(|v| v["spec"]["endpoints"] = json!({}));
    assert!(none.contains("exactly one of"), "{none}");
}

#[test]
fn selector_and_target_port_come_together() {
    let without_port = pool_errors(|v| {
        v["spec"]["endpoints"] = json!({"selector": {"matchLabels": {"app": "vllm"}}})
    });
    assert!(
        without_port.contains("targetPort is required with selector"),
        "{without_port}"
    );
    let port_only = pool_errors(|v| v["spec"]["endpoints"]["targetPort"] = json!(8000));
    assert!(
        port_only.contains("targetPort is required with selector"),
        "{port_only}"
    );
    let both = pool_errors(|v| {
        v["spec"]["endpoints"] =
            json!({"selector": {"matchLabels": {"app": "vllm"}}, "targetPort": 8000})
    });
    assert_eq!(both, "");
}

#[test]
fn signal_names_are_unique_across_kinds() {
    let errors = route_errors(|v| {
        v["spec"]["signals"]["headers"] =
            json!([{"name": "math", "header": "x-team", "values": ["a"]}])
    });
    assert!(errors.contains("signal names must be unique"), "{errors}");
}

#[test]
fn a_decision_needs_a_weighted_target() {
    let errors = route_errors(|v| v["spec"]["decisions"][0]["targets"][0]["weight"] = json!(0));
    assert!(
        errors.contains("at least one target must have a weight above 0"),
        "{errors}"
    );
}

#[test]
fn effort_needs_reasoning_enabled() {
    let errors = route_errors(|v| {
        v["spec"]["defaultTarget"]["reasoning"] = json!({"enabled": false, "effort": "high"})
    });
    assert!(
        errors.contains("effort applies only when reasoning is enabled"),
        "{errors}"
    );
    let fine = route_errors(|v| {
        v["spec"]["defaultTarget"]["reasoning"] = json!({"enabled": true, "effort": "high"})
    });
    assert_eq!(fine, "");
}

#[test]
fn the_tenant_header_cannot_be_one_of_the_routers_own() {
    let cache = |tenant: &str| {
        route_errors(|v| {
            v["spec"]["cache"] = json!({"enabled": true, "tenantHeader": tenant});
        })
    };
    assert!(
        cache("X-Semantic-Router-Decision").contains("tenantHeader cannot be one of the router's"),
        "{}",
        cache("X-Semantic-Router-Decision")
    );
    assert_eq!(cache("x-team"), "");
    assert_eq!(cache("authorization"), "");
}

#[test]
fn crds_in_the_repository_match_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/semantic-router.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/semantic-router.yaml exists");
    let generated = crds_yaml().expect("CRDs serialise");
    assert!(
        committed == generated,
        "crds/ drifted from src/api: run `make crds` and commit the result"
    );
}

#[test]
fn crds_carry_names_columns_and_status() {
    for crd in crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["semantic-router".to_owned()][..])
        );
        assert!(names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        assert!(columns.iter().any(|c| c.name == "Age"), "{}", names.kind);
    }
}

#[test]
fn defaults_read_as_written_and_status_starts_pending() {
    let yaml = crds_yaml().expect("crds");
    assert!(
        yaml.contains("default: 0.92\n"),
        "the cache threshold's default"
    );
    assert!(!yaml.contains("0.9200000166893005"));
    for crd in crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let status = &schema["openAPIV3Schema"]["properties"]["status"]["default"];
        assert_eq!(
            status["conditions"][0]["type"], "Ready",
            "{}",
            crd.spec.names.kind
        );
        assert_eq!(status["conditions"][0]["status"], "Unknown");
        assert_eq!(status["conditions"][0]["reason"], "Pending");
    }
}

#[test]
fn a_decision_naming_an_undefined_signal_is_refused() {
    let errors = route_errors(|v| v["spec"]["decisions"][0]["when"] = json!({"all": ["mth"]}));
    assert!(
        errors.contains("must be defined in spec.signals"),
        "{errors}"
    );
    let errors = route_errors(|v| v["spec"]["decisions"][0]["when"] = json!({"not": ["math"]}));
    assert_eq!(errors, "", "a defined signal, in not");
    let errors = route_errors(|v| {
        v["spec"]["signals"] = json!({});
        v["spec"]["decisions"][0]["when"] = json!({});
    });
    assert_eq!(errors, "", "an empty when names nothing");
    let errors = route_errors(|v| {
        v["spec"].as_object_mut().unwrap().remove("signals");
    });
    assert!(
        errors.contains("must be defined"),
        "no signals at all: {errors}"
    );
}
