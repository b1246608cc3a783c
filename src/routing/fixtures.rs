//! Resources for the routing tests, written as the YAML a person would apply.

use crate::api::{ModelPool, SemanticRoute};

use super::{Compiled, Resources, compile};

/// A pool from YAML `spec` lines under a name.
pub fn pool(name: &str, spec: &str) -> ModelPool {
    let yaml = format!(
        "apiVersion: semantic-router.io/v1alpha1\nkind: ModelPool\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{}",
        indent(spec)
    );
    serde_yaml::from_str(&yaml).expect("test pool parses")
}

/// A route from YAML `spec` lines under a name.
pub fn route(name: &str, spec: &str) -> SemanticRoute {
    let yaml = format!(
        "apiVersion: semantic-router.io/v1alpha1\nkind: SemanticRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{}",
        indent(spec)
    );
    serde_yaml::from_str(&yaml).expect("test route parses")
}

fn indent(spec: &str) -> String {
    spec.lines().map(|l| format!("  {l}\n")).collect()
}

/// A small pool serving `small` and a large pool serving `large` (qwen3), one endpoint each.
pub fn two_pools() -> Vec<ModelPool> {
    vec![
        pool(
            "small",
            "models: [{name: small, reasoningFamily: qwen3}]\nendpoints: {static: {addresses: [\"10.0.0.1:8000\"]}}",
        ),
        pool(
            "large",
            "models: [{name: large, reasoningFamily: qwen3}]\nendpoints: {static: {addresses: [\"10.0.0.2:8000\", \"10.0.0.3:8000\"]}}",
        ),
    ]
}

/// A route for `auto`: math keywords to the large pool with reasoning, else the small pool.
pub fn math_route() -> SemanticRoute {
    route(
        "auto",
        r#"match: {models: [auto]}
signals:
  keywords:
  - {name: math, keywords: [integral, derivative, "step by step"]}
  headers:
  - {name: research, header: X-Team, values: [research]}
decisions:
- name: reasoning
  when: {any: [math]}
  targets: [{pool: large, model: large, reasoning: {enabled: true}}]
defaultTarget: {pool: small, model: small}"#,
    )
}

/// Compiles pools and routes with no discovered endpoints, for a router with every model
/// loaded (category labels `math`, `physics`, `chat`).
pub fn compile_all(pools: Vec<ModelPool>, routes: Vec<SemanticRoute>) -> Compiled {
    compile(&Resources {
        pools,
        routes,
        models: all_models(),
        ..Resources::default()
    })
}

/// Capabilities of a router with an encoder, category, complexity and jailbreak heads.
pub fn all_models() -> super::ModelCapabilities {
    super::ModelCapabilities {
        embeddings: true,
        category_labels: Some(vec!["math".into(), "physics".into(), "chat".into()]),
        complexity_labels: Some(vec!["reasoning".into(), "simple".into()]),
        jailbreak: true,
    }
}
