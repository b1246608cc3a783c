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
/// (`int32`/`int64` rather than schemars' `uint*`), and descriptions as flowing text so
/// `kubectl explain` wraps them itself.
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
    serde_json::from_value(value).unwrap_or(crd)
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
