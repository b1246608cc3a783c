//! The compiler fed arbitrary `ModelPool` and `SemanticRoute` resources.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::Deserialize;
use serde_yaml::Value;

use super::Input;
use crate::api::{ModelPool, SemanticRoute};
use crate::routing::{Kind, ModelCapabilities, Resources, compile, object_key};

/// Documents read from one input at most.
const MAX_DOCUMENTS: usize = 64;

/// Byte 0 chooses the loaded models (bit 0 an encoder, bit 1 a category head, bit 2 a
/// complexity head, bit 3 a jailbreak head) and bit 4 gives every pool discovered endpoints;
/// the rest is YAML documents.
///
/// Asserts: every finding names a resource it was given; compiling the resources in reverse
/// order gives the same table and the same findings (precedence never depends on arrival).
pub fn compile_resources(data: &[u8]) {
    let mut input = Input::new(data);
    let choice = input.byte();
    let mut resources = resources_from_yaml(input.rest());
    resources.models = ModelCapabilities {
        embeddings: choice & 1 != 0,
        category_labels: (choice & 2 != 0).then(|| labels(&["math", "physics", "other"])),
        complexity_labels: (choice & 4 != 0).then(|| labels(&["simple", "reasoning"])),
        jailbreak: choice & 8 != 0,
    };
    if choice & 0x10 != 0 {
        let found: Vec<SocketAddr> = vec![SocketAddr::from(([10, 1, 0, 1], 8000))];
        for pool in &resources.pools {
            resources.discovered.insert(object_key(pool), found.clone());
        }
    }

    let compiled = compile(&resources);
    let pools: BTreeSet<_> = resources.pools.iter().map(object_key).collect();
    let routes: BTreeSet<_> = resources.routes.iter().map(object_key).collect();
    for d in &compiled.diagnostics {
        let known = match d.kind {
            Kind::ModelPool => &pools,
            Kind::SemanticRoute => &routes,
        };
        assert!(
            known.contains(&d.object),
            "a finding about nothing given: {d}"
        );
    }
    for route in &compiled.table.routes {
        assert!(routes.contains(&route.key));
    }

    resources.pools.reverse();
    resources.routes.reverse();
    let reversed = compile(&resources);
    assert_eq!(
        format!("{:?}", compiled.table),
        format!("{:?}", reversed.table),
        "the table depends on the order of the resources"
    );
    assert_eq!(
        sorted(&compiled.diagnostics),
        sorted(&reversed.diagnostics),
        "the findings depend on the order of the resources"
    );
}

/// The pools and routes among YAML documents, as the API server would hold them: each
/// document's `kind` decides its type, documents that do not fit or have no name are left out,
/// and only the first of two with the same namespace/name is kept. Schema only: the CEL rules
/// are not checked, so the compiler also meets what they would have refused.
pub fn resources_from_yaml(text: &[u8]) -> Resources {
    let mut resources = Resources::default();
    let mut seen = BTreeSet::new();
    for document in serde_yaml::Deserializer::from_slice(text).take(MAX_DOCUMENTS) {
        let Ok(value) = Value::deserialize(document) else {
            break;
        };
        let parsed = match value.get("kind").and_then(Value::as_str) {
            Some("ModelPool") => serde_yaml::from_value(value).map(Doc::Pool),
            Some("SemanticRoute") => serde_yaml::from_value(value).map(Doc::Route),
            _ => continue,
        };
        match parsed {
            Ok(Doc::Pool(pool))
                if named(&pool.metadata) && seen.insert((Kind::ModelPool, object_key(&pool))) =>
            {
                resources.pools.push(pool);
            }
            Ok(Doc::Route(route))
                if named(&route.metadata)
                    && seen.insert((Kind::SemanticRoute, object_key(&route))) =>
            {
                resources.routes.push(route);
            }
            _ => {}
        }
    }
    resources
}

enum Doc {
    Pool(ModelPool),
    Route(SemanticRoute),
}

fn named(meta: &kube::api::ObjectMeta) -> bool {
    meta.name.as_deref().is_some_and(|name| !name.is_empty())
}

fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

fn sorted(diagnostics: &[crate::routing::Diagnostic]) -> Vec<String> {
    let mut all: Vec<String> = diagnostics.iter().map(|d| format!("{d:?}")).collect();
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_manifests_read_as_the_file_source_reads_them() {
        let text = [
            include_str!("../../config/samples/pools.yaml"),
            include_str!("../../config/samples/route.yaml"),
        ]
        .join("\n---\n");
        let resources = resources_from_yaml(text.as_bytes());
        assert_eq!((resources.pools.len(), resources.routes.len()), (3, 1));
        compile_resources(&[[0x1f].as_slice(), text.as_bytes()].concat());
    }

    #[test]
    fn unnamed_and_repeated_resources_are_left_out() {
        let pool = "kind: ModelPool\nmetadata: {name: p}\nspec: {models: [{name: m}], endpoints: {static: {addresses: ['1.2.3.4:5']}}}\n";
        let unnamed = "---\nkind: ModelPool\nmetadata: {}\nspec: {models: [{name: m}], endpoints: {static: {addresses: []}}}\n";
        let text = format!("{pool}---\n{pool}{unnamed}");
        assert_eq!(resources_from_yaml(text.as_bytes()).pools.len(), 1);
    }
}
