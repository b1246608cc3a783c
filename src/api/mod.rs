//! The public API: `SemanticRoute` and `ModelPool` custom resources (`semantic-router.io/v1alpha1`).
//!
//! These types are the one source of truth for the CRD schema; `crds/` is generated from them.

mod model_pool;
mod semantic_route;

pub use model_pool::*;
pub use semantic_route::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of our resources.
pub const GROUP: &str = "semantic-router.io";

/// Every CRD this operator owns, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![ModelPool::crd(), SemanticRoute::crd()]
        .into_iter()
        .map(for_kubernetes)
        .collect()
}

/// Adapts a derived schema to what the API server expects: integer formats it knows
/// (`int32`/`int64` rather than schemars' `uint*`), descriptions as flowing text so
/// `kubectl explain` wraps them itself, decimal defaults as written (`0.92`, not the f32's
/// `0.9200000166893005`), and a `Pending` status until the router has looked.
fn for_kubernetes(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match (key.as_str(), &mut *v) {
                        ("format", serde_json::Value::String(f)) => {
                            let known = match f.as_str() {
                                "uint8" | "uint16" | "uint32" | "int8" | "int16" => "int32",
                                "uint64" | "uint" => "int64",
                                other => other,
                            };
                            *f = known.to_owned();
                        }
                        ("description", serde_json::Value::String(d)) => *d = reflow(d),
                        ("default", serde_json::Value::Number(n)) if !n.is_i64() && !n.is_u64() => {
                            if let Some(short) = n.as_f64().and_then(shortest_f32) {
                                *n = short;
                            }
                        }
                        _ => walk(v),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).unwrap_or_default();
    walk(&mut value);
    if let Some(versions) = value["spec"]["versions"].as_array_mut() {
        for version in versions {
            let status = &mut version["schema"]["openAPIV3Schema"]["properties"]["status"];
            if status.is_object() {
                status["default"] = pending_status();
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
}

/// The status an object reads as before the router first writes one (the Gateway API's
/// convention): `Ready` `Unknown` with reason `Pending`.
fn pending_status() -> serde_json::Value {
    serde_json::json!({
        "conditions": [{
            "type": "Ready",
            "status": "Unknown",
            "reason": "Pending",
            "message": "Waiting for the router to look at this object",
            "lastTransitionTime": "1970-01-01T00:00:00Z",
        }]
    })
}

/// `value` as the shortest decimal that reads back as the same f32, when it is one.
fn shortest_f32(value: f64) -> Option<serde_json::Number> {
    let single = value as f32;
    if f64::from(single) != value {
        return None;
    }
    single
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
}

/// Joins the lines of each paragraph; paragraphs stay separated by a blank line.
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.lines().map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The CRDs as one multi-document YAML stream, the form `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
