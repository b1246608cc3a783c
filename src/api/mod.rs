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
