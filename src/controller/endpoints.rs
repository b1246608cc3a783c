//! Ready endpoints of in-cluster pools, from EndpointSlices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::ModelPool;
use crate::routing::{DEFAULT_NAMESPACE, ObjectKey, object_key};

/// Label Kubernetes puts on the EndpointSlices of a Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Ready endpoints per pool that uses a `service` or a `selector`. A `service` pool takes the
/// EndpointSlices of that Service; a `selector` pool the EndpointSlices in its namespace whose
/// labels the selector matches, at its `targetPort`. Endpoints whose `ready` condition is
/// false are left out; the lists are sorted and free of duplicates.
pub fn discover(
    pools: &[ModelPool],
    slices: &[EndpointSlice],
) -> BTreeMap<ObjectKey, Vec<SocketAddr>> {
    let mut out = BTreeMap::new();
    for pool in pools {
        let source = &pool.spec.endpoints;
        let key = object_key(pool);
        let (port, filter) = if let Some(service) = &source.service {
            (service.port, SliceFilter::Service(&service.name))
        } else if let (Some(selector), Some(port)) = (&source.selector, source.target_port) {
            (port, SliceFilter::Selector(selector))
        } else {
            continue;
        };
        let mut ready = BTreeSet::new();
        for slice in slices
            .iter()
            .filter(|s| namespace(s) == key.namespace && filter.matches(s))
        {
            for endpoint in slice.endpoints.iter().flatten() {
                let is_ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !is_ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        ready.insert(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        out.insert(key, ready.into_iter().collect());
    }
    out
}

/// Which EndpointSlices belong to a pool.
enum SliceFilter<'a> {
    /// The slices of this Service.
    Service(&'a str),
    /// The slices whose labels match.
    Selector(&'a LabelSelector),
}

impl SliceFilter<'_> {
    fn matches(&self, slice: &EndpointSlice) -> bool {
        let labels = slice.metadata.labels.as_ref();
        match self {
            SliceFilter::Service(name) => {
                labels
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(*name)
            }
            SliceFilter::Selector(selector) => selector_matches(selector, labels),
        }
    }
}

fn namespace(slice: &EndpointSlice) -> &str {
    slice
        .metadata
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// Whether `labels` satisfy a Kubernetes label selector (`matchLabels` and
/// `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`). An empty selector
/// matches everything; an unknown operator matches nothing.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let plain = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    plain && expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(
        namespace: &str,
        labels: &[(&str, &str)],
        endpoints: &[(&str, Option<bool>)],
    ) -> EndpointSlice {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": namespace, "labels": labels},
            "addressType": "IPv4",
            "endpoints": endpoints.iter().map(|(ip, ready)| serde_json::json!({
                "addresses": [ip], "conditions": {"ready": ready}
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn pool(endpoints: serde_json::Value) -> ModelPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "semantic-router.io/v1alpha1", "kind": "ModelPool",
            "metadata": {"name": "p", "namespace": "prod"},
            "spec": {"models": [{"name": "m"}], "endpoints": endpoints}
        }))
        .unwrap()
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn service_pool_takes_ready_endpoints_of_its_service() {
        let pools = [pool(
            serde_json::json!({"service": {"name": "vllm", "port": 8000}}),
        )];
        let slices = [
            slice(
                "prod",
                &[(SERVICE_NAME_LABEL, "vllm")],
                &[
                    ("10.0.0.2", Some(true)),
                    ("10.0.0.1", None),
                    ("10.0.0.9", Some(false)),
                ],
            ),
            slice(
                "prod",
                &[(SERVICE_NAME_LABEL, "other")],
                &[("10.0.1.1", Some(true))],
            ),
            slice(
                "dev",
                &[(SERVICE_NAME_LABEL, "vllm")],
                &[("10.0.2.1", Some(true))],
            ),
        ];
        let found = discover(&pools, &slices);
        assert_eq!(
            found[&ObjectKey::new("prod", "p")],
            addrs(&["10.0.0.1:8000", "10.0.0.2:8000"])
        );
    }

    #[test]
    fn selector_pool_takes_matching_slices_at_target_port() {
        let pools = [pool(serde_json::json!({
            "selector": {"matchLabels": {"app": "vllm"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["canary"]}]},
            "targetPort": 9000
        }))];
        let slices = [
            slice("prod", &[("app", "vllm")], &[("10.0.0.1", Some(true))]),
            slice(
                "prod",
                &[("app", "vllm"), ("tier", "canary")],
                &[("10.0.0.2", Some(true))],
            ),
            slice("prod", &[("app", "sglang")], &[("10.0.0.3", Some(true))]),
        ];
        let found = discover(&pools, &slices);
        assert_eq!(
            found[&ObjectKey::new("prod", "p")],
            addrs(&["10.0.0.1:9000"])
        );
    }

    #[test]
    fn static_pools_are_not_discovered() {
        let pools = [pool(
            serde_json::json!({"static": {"addresses": ["10.0.0.1:80"]}}),
        )];
        assert!(discover(&pools, &[]).is_empty());
    }

    #[test]
    fn selector_operators() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let sel =
            |json: serde_json::Value| -> LabelSelector { serde_json::from_value(json).unwrap() };
        assert!(selector_matches(&sel(serde_json::json!({})), Some(&labels)));
        assert!(selector_matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]})
            ),
            Some(&labels)
        ));
        assert!(selector_matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]})
            ),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "a", "operator": "NotIn", "values": ["1"]}]})
            ),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["0"]}]})
            ),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &sel(serde_json::json!({"matchLabels": {"a": "2"}})),
            None
        ));
    }
}
