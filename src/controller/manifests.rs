//! Reads `SemanticRoute` and `ModelPool` manifests from a directory, the way `kubectl apply -f`
//! would, with the checks the API server would make.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use crate::api::{GROUP, ModelPool, SemanticRoute};
use crate::routing::{Resources, object_key};

/// Why a manifest could not be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A document is not valid YAML or does not match the kind's schema.
    #[error("{path}: document {document}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based index of the document in the file.
        document: usize,
        /// What is wrong.
        message: String,
    },
    /// Two documents describe the same resource.
    #[error("{path}: {kind} {key} is defined more than once")]
    Duplicate {
        /// The file of the second definition.
        path: PathBuf,
        /// Kind of the resource.
        kind: &'static str,
        /// Namespace/name.
        key: String,
    },
}

/// Loads every document of our kinds under `dir` (recursively, `*.yaml` and `*.yml`, in path
/// order). Documents of other kinds are skipped. Returns every problem found, not just the
/// first, so a person can fix them in one pass.
pub fn load_dir(dir: &Path) -> Result<Resources, Vec<ManifestError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    collect_yaml_files(dir, &mut files, &mut errors);
    files.sort();

    let mut resources = Resources::default();
    let mut seen = BTreeSet::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => {
                errors.push(ManifestError::Io { path, source });
                continue;
            }
        };
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let invalid = |message: String| ManifestError::Invalid {
                path: path.clone(),
                document: i + 1,
                message,
            };
            let value = match Value::deserialize(document) {
                Ok(value) => value,
                Err(e) => {
                    errors.push(invalid(e.to_string()));
                    break;
                }
            };
            match parse_document(value) {
                Ok(Some(parsed)) => {
                    let (kind, key) = match &parsed {
                        Parsed::Pool(p) => ("ModelPool", object_key(p)),
                        Parsed::Route(r) => ("SemanticRoute", object_key(r)),
                    };
                    if !seen.insert((kind, key.clone())) {
                        errors.push(ManifestError::Duplicate {
                            path: path.clone(),
                            kind,
                            key: key.to_string(),
                        });
                        continue;
                    }
                    match parsed {
                        Parsed::Pool(p) => resources.pools.push(p),
                        Parsed::Route(r) => resources.routes.push(r),
                    }
                }
                Ok(None) => {}
                Err(message) => errors.push(invalid(message)),
            }
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

enum Parsed {
    Pool(ModelPool),
    Route(SemanticRoute),
}

/// Parses one document; `Ok(None)` for documents that are not ours (or empty).
fn parse_document(value: Value) -> Result<Option<Parsed>, String> {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let Some(version) = api_version.and_then(|v| v.strip_prefix(GROUP)) else {
        return Ok(None);
    };
    if version != "/v1alpha1" {
        return Err(format!(
            "apiVersion {}{version} is not served; use {GROUP}/v1alpha1",
            GROUP
        ));
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let parsed = match kind.as_str() {
        "ModelPool" => {
            let pool: ModelPool = from_value(value)?;
            ModelPool::validate_cel(&pool).map_err(|e| e.to_string())?;
            Parsed::Pool(pool)
        }
        "SemanticRoute" => {
            let route: SemanticRoute = from_value(value)?;
            SemanticRoute::validate_cel(&route).map_err(|e| e.to_string())?;
            Parsed::Route(route)
        }
        other => {
            return Err(format!(
                "kind {other:?} is not one of ours; expected ModelPool or SemanticRoute"
            ));
        }
    };
    let meta = match &parsed {
        Parsed::Pool(p) => &p.metadata,
        Parsed::Route(r) => &r.metadata,
    };
    if meta.name.as_deref().unwrap_or_default().is_empty() {
        return Err(format!("{kind} has no metadata.name"));
    }
    Ok(Some(parsed))
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_yaml::from_value(value).map_err(|e| e.to_string())
}

fn collect_yaml_files(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<ManifestError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            errors.push(ManifestError::Io {
                path: dir.to_owned(),
                source,
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_yaml_files(&path, files, errors);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const POOL: &str = "apiVersion: semantic-router.io/v1alpha1\nkind: ModelPool\nmetadata: {name: p}\nspec:\n  models: [{name: m}]\n  endpoints: {static: {addresses: [\"127.0.0.1:1\"]}}\n";

    #[test]
    fn samples_load_and_compile_without_diagnostics() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
        let mut resources = load_dir(&dir).expect("samples load");
        // As `make run` starts the router: the encoder and the committed default heads, so
        // every label the sample names must be one those heads have.
        let heads = Path::new(env!("CARGO_MANIFEST_DIR")).join("heads/all-MiniLM-L6-v2");
        let labels = |head: &str| -> Option<Vec<String>> {
            let text = std::fs::read_to_string(heads.join(head).join("labels.json")).unwrap();
            Some(serde_json::from_str(&text).unwrap())
        };
        resources.models.embeddings = true;
        resources.models.category_labels = labels("category");
        resources.models.complexity_labels = labels("complexity");
        resources.models.jailbreak =
            labels("jailbreak").is_some_and(|l| l.iter().any(|x| x == "jailbreak"));
        assert_eq!(resources.pools.len(), 3);
        assert_eq!(resources.routes.len(), 1);
        let compiled = crate::routing::compile(&resources);
        assert!(
            compiled.diagnostics.is_empty(),
            "{:#?}",
            compiled.diagnostics
        );
    }

    #[test]
    fn other_kinds_and_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            &format!("{POOL}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n"),
        );
        write(dir.path(), "envoy.yaml", "static_resources: {}\n");
        write(dir.path(), "notes.txt", "not yaml {");
        let resources = load_dir(dir.path()).unwrap();
        assert_eq!(resources.pools.len(), 1);
        assert_eq!(resources.pools[0].metadata.namespace, None);
    }

    #[test]
    fn broken_yaml_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "good.yaml", POOL);
        write(
            dir.path(),
            "broken.yaml",
            "apiVersion: semantic-router.io/v1alpha1\nkind: [\n",
        );
        let errors = load_dir(dir.path()).unwrap_err();
        assert_eq!(errors.len(), 1);
        let message = errors[0].to_string();
        assert!(message.contains("broken.yaml"), "{message}");
    }

    #[test]
    fn schema_and_cel_violations_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "typo.yaml", &POOL.replace("models:", "modelz:"));
        write(
            dir.path(),
            "two-sources.yaml",
            &POOL
                .replace("name: p}", "name: q}")
                .replace("{static:", "{gateway: {clusterName: c}, static:"),
        );
        let errors = load_dir(dir.path()).unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:#?}");
        assert!(
            messages[0].contains("two-sources.yaml") && messages[0].contains("exactly one of"),
            "{messages:#?}"
        );
        assert!(
            messages[1].contains("typo.yaml") && messages[1].contains("models"),
            "{messages:#?}"
        );
    }

    #[test]
    fn duplicates_and_unknown_kinds_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", POOL);
        write(
            dir.path(),
            "b.yaml",
            &format!(
                "{POOL}---\napiVersion: semantic-router.io/v1alpha1\nkind: Gadget\nmetadata: {{name: g}}\n"
            ),
        );
        let errors = load_dir(dir.path()).unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            messages[0].contains("b.yaml") && messages[0].contains("more than once"),
            "{messages:#?}"
        );
        assert!(messages[1].contains("Gadget"), "{messages:#?}");
    }

    #[test]
    fn missing_directory_is_an_error() {
        let errors = load_dir(Path::new("/nonexistent/manifests")).unwrap_err();
        assert!(errors[0].to_string().contains("/nonexistent/manifests"));
    }
}
