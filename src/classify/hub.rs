//! Models named by a Hugging Face Hub id (`org/name[@revision]`) as well as by a local folder.
//!
//! A Hub model is looked up in the local Hub cache first (the layout `huggingface_hub` and
//! `hf-hub` share: `models--org--name/{refs,snapshots,blobs}`), so a node whose cache was
//! filled once — by this router, by Python, or by an init container — starts without the
//! network. Only when the cache lacks a file, and the network is allowed, are the missing
//! files downloaded, all from the one commit the Hub reports, with progress in the logs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hf_hub::api::Progress;
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use super::encoder::safetensors_files;
use super::error::{ClassifyError, Result};

/// The files a model folder must hold besides its weights.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
/// The index of a sharded checkpoint, naming every shard.
const SHARD_INDEX: &str = "model.safetensors.index.json";

/// Where an encoder comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local folder with `config.json`, `tokenizer.json` and `*.safetensors`.
    Dir(PathBuf),
    /// A Hugging Face Hub model repository at a revision (branch, tag or commit).
    Hub {
        /// The repository id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
        repo: String,
        /// Branch, tag or commit; `main` unless the value said `@revision`.
        revision: String,
    },
}

impl ModelSource {
    /// Reads a `--encoder` / `--model` value. A path that exists is a folder; so is anything
    /// that looks like a path (`./x`, `/x`, `a/b/c`). Otherwise a value that is a valid Hub id
    /// (`name` or `org/name`, optionally `@revision`) names a Hub model.
    pub fn parse(value: &str) -> Self {
        let path = Path::new(value);
        if path.exists() {
            return Self::Dir(path.to_path_buf());
        }
        let (repo, revision) = match value.split_once('@') {
            Some((repo, revision)) if !revision.is_empty() => (repo, revision),
            _ => (value, "main"),
        };
        if is_hub_id(repo) {
            Self::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            }
        } else {
            Self::Dir(path.to_path_buf())
        }
    }

    /// The local folder to load: the folder itself, or the Hub model's snapshot in the cache
    /// (downloaded first when it is incomplete and `options` allow the network).
    pub fn resolve(&self, options: &HubOptions) -> Result<PathBuf> {
        match self {
            Self::Dir(dir) => Ok(dir.clone()),
            Self::Hub { repo, revision } => resolve_hub(repo, revision, options),
        }
    }
}

/// Lets clap read `--encoder` / `--model` values as [`ModelSource::parse`] does.
impl std::str::FromStr for ModelSource {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Self::parse(value))
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::Hub { repo, revision } => write!(f, "{repo}@{revision}"),
        }
    }
}

/// `name` or `org/name`, each part of letters, digits, `-`, `_`, `.`, not starting with `.`.
fn is_hub_id(value: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.len() <= 96
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match value.split_once('/') {
        Some((org, name)) => part(org) && part(name),
        None => part(value),
    }
}

/// Where the Hub cache is, where the Hub is, and whether it may be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// The cache folder (the one holding `models--*`).
    pub cache_dir: PathBuf,
    /// Base URL of the Hub (or a mirror).
    pub endpoint: String,
    /// Never use the network: a model missing from the cache is an error.
    pub offline: bool,
    /// Access token for gated or private models.
    pub token: Option<String>,
}

impl HubOptions {
    /// The settings `huggingface_hub` users know, from the process environment:
    /// `HF_HUB_CACHE` (else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), `HF_ENDPOINT`,
    /// `HF_HUB_OFFLINE`, and `HF_TOKEN` (else the token file beside the cache).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Like [`from_env`](Self::from_env), reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|home| Path::new(&home).join("hub")))
            .unwrap_or_else(|| {
                let home = var("HOME").unwrap_or_else(|| ".".to_string());
                Path::new(&home).join(".cache/huggingface/hub")
            });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        let token = var("HF_TOKEN").or_else(|| Cache::new(cache_dir.clone()).token());
        Self {
            cache_dir,
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_string()),
            offline,
            token,
        }
    }
}

fn resolve_hub(repo: &str, revision: &str, options: &HubOptions) -> Result<PathBuf> {
    let cached = Snapshot::find(&options.cache_dir, repo, revision);
    if let Some(snapshot) = &cached {
        let missing = snapshot.missing();
        if missing.is_empty() {
            tracing::debug!(repo, revision, snapshot = %snapshot.dir.display(), "model found in the Hub cache");
            return Ok(snapshot.dir.clone());
        }
        if options.offline {
            return Err(not_cached(repo, revision, options, missing));
        }
    } else if options.offline {
        return Err(not_cached(
            repo,
            revision,
            options,
            vec!["the whole model".into()],
        ));
    }
    download(repo, revision, options)
}

fn not_cached(
    repo: &str,
    revision: &str,
    options: &HubOptions,
    missing: Vec<String>,
) -> ClassifyError {
    ClassifyError::NotCached {
        model: format!("{repo}@{revision}"),
        cache: options.cache_dir.clone(),
        missing: missing.join(", "),
    }
}

/// One revision's folder in the cache.
struct Snapshot {
    dir: PathBuf,
}

impl Snapshot {
    /// The snapshot `revision` points at: through `refs/<revision>`, or the commit itself.
    fn find(cache_dir: &Path, repo: &str, revision: &str) -> Option<Self> {
        let root = cache_dir.join(Repo::new(repo.to_string(), RepoType::Model).folder_name());
        let commit = std::fs::read_to_string(root.join("refs").join(revision))
            .ok()
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|| revision.to_string());
        let dir = root.join("snapshots").join(commit);
        dir.is_dir().then_some(Self { dir })
    }

    /// The files the encoder needs that the snapshot lacks.
    fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = REQUIRED
            .iter()
            .filter(|f| !self.dir.join(f).is_file())
            .map(|f| f.to_string())
            .collect();
        let shards = std::fs::read_to_string(self.dir.join(SHARD_INDEX))
            .ok()
            .map(|index| shard_names(&index));
        match shards {
            Some(shards) => {
                missing.extend(shards.into_iter().filter(|s| !self.dir.join(s).is_file()))
            }
            None if !safetensors_files(&self.dir).is_ok_and(|f| !f.is_empty()) => {
                missing.push("*.safetensors".to_string())
            }
            None => {}
        }
        missing
    }
}

/// The distinct shard files a `model.safetensors.index.json` names.
fn shard_names(index: &str) -> Vec<String> {
    let value: serde_json::Value = serde_json::from_str(index).unwrap_or_default();
    let mut names: Vec<String> = value
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .map(|map| {
            map.values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    names
}

/// Downloads what the encoder needs from the commit `revision` points at now, then records
/// `refs/<revision>` so the next start finds it offline.
fn download(repo: &str, revision: &str, options: &HubOptions) -> Result<PathBuf> {
    let model = format!("{repo}@{revision}");
    let hub_error = |e: hf_hub::api::sync::ApiError| ClassifyError::Hub {
        model: model.clone(),
        endpoint: options.endpoint.clone(),
        message: e.to_string(),
    };
    let started = Instant::now();
    let api = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone()))
        .with_endpoint(options.endpoint.clone())
        .with_token(options.token.clone())
        .with_progress(false)
        .with_retries(2)
        .build()
        .map_err(hub_error)?;
    let info = api
        .repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .info()
        .map_err(hub_error)?;
    let files =
        files_to_fetch(info.siblings.iter().map(|s| s.rfilename.as_str())).map_err(|message| {
            ClassifyError::Hub {
                model: model.clone(),
                endpoint: options.endpoint.clone(),
                message,
            }
        })?;
    tracing::info!(model, commit = %info.sha, files = ?files, cache = %options.cache_dir.display(), "downloading the model from the Hub");
    let pinned = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        info.sha.clone(),
    ));
    let snapshot = Snapshot::find(&options.cache_dir, repo, &info.sha);
    let mut dir = None;
    for file in &files {
        let path = match snapshot.as_ref().map(|s| s.dir.join(file)) {
            Some(path) if path.is_file() => path,
            _ => pinned
                .download_with_progress(file, LogProgress::default())
                .map_err(hub_error)?,
        };
        dir = path.parent().map(Path::to_path_buf);
    }
    let cache = Cache::new(options.cache_dir.clone());
    cache
        .repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .create_ref(&info.sha)
        .map_err(|e| ClassifyError::io(&options.cache_dir, e))?;
    let dir = dir.ok_or_else(|| ClassifyError::Hub {
        model: model.clone(),
        endpoint: options.endpoint.clone(),
        message: "nothing was downloaded".to_string(),
    })?;
    tracing::info!(model, commit = %info.sha, elapsed = ?started.elapsed(), snapshot = %dir.display(), "model downloaded");
    Ok(dir)
}

/// The files of a repository listing the encoder needs: config, tokenizer, the shard index if
/// any, and the top-level safetensors weights. An error says what the repository lacks.
fn files_to_fetch<'a>(listing: impl Iterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let top: Vec<&str> = listing.filter(|f| !f.contains('/')).collect();
    let mut files = Vec::new();
    for required in REQUIRED {
        if !top.contains(&required) {
            return Err(format!("the repository has no {required}"));
        }
        files.push(required.to_string());
    }
    if top.contains(&SHARD_INDEX) {
        files.push(SHARD_INDEX.to_string());
    }
    let mut weights: Vec<String> = top
        .iter()
        .filter(|f| f.ends_with(".safetensors"))
        .map(|f| f.to_string())
        .collect();
    if weights.is_empty() {
        return Err(
            "the repository has no *.safetensors weights (PyTorch .bin files are not loaded)"
                .to_string(),
        );
    }
    weights.sort();
    files.extend(weights);
    Ok(files)
}

/// Logs a download's progress at every tenth of the file.
#[derive(Default)]
struct LogProgress {
    file: String,
    size: usize,
    done: usize,
    next_tenth: usize,
}

impl Progress for LogProgress {
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_string();
        self.size = size;
        self.done = 0;
        self.next_tenth = 1;
    }

    fn update(&mut self, size: usize) {
        self.done += size;
        if self.size == 0 {
            return;
        }
        let tenths = self.done * 10 / self.size;
        if tenths >= self.next_tenth && tenths < 10 {
            tracing::info!(file = %self.file, bytes = self.done, total = self.size, "downloading: {}%", tenths * 10);
            self.next_tenth = tenths + 1;
        }
    }

    fn finish(&mut self) {
        tracing::debug!(file = %self.file, bytes = self.size, "downloaded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_folders_or_hub_ids() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let existing = tmp.path().to_str().expect("utf-8 path");
        assert_eq!(
            ModelSource::parse(existing),
            ModelSource::Dir(tmp.path().into())
        );
        assert_eq!(
            ModelSource::parse("sentence-transformers/all-MiniLM-L6-v2"),
            ModelSource::Hub {
                repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSource::parse("org/model@v1.0"),
            ModelSource::Hub {
                repo: "org/model".into(),
                revision: "v1.0".into()
            }
        );
        assert!(matches!(
            ModelSource::parse("bert-base-uncased"),
            ModelSource::Hub { .. }
        ));
        for path in [
            "./models/x",
            "/no/such/dir",
            "a/b/c",
            "../x",
            ".models/minilm",
        ] {
            assert_eq!(
                ModelSource::parse(path),
                ModelSource::Dir(path.into()),
                "{path}"
            );
        }
        assert_eq!(
            ModelSource::parse("org/model@v1").to_string(),
            "org/model@v1"
        );
    }

    #[test]
    fn environment_follows_huggingface_hub() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = HubOptions::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(o.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, "https://huggingface.co");
        assert!(!o.offline);
        let o = HubOptions::from_vars(vars(&[("HOME", "/home/u"), ("HF_HOME", "/hf")]));
        assert_eq!(o.cache_dir, Path::new("/hf/hub"));
        let o = HubOptions::from_vars(vars(&[
            ("HF_HOME", "/hf"),
            ("HF_HUB_CACHE", "/cache"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_ENDPOINT", "http://mirror:8080"),
            ("HF_TOKEN", "t"),
        ]));
        assert_eq!(o.cache_dir, Path::new("/cache"));
        assert!(o.offline);
        assert_eq!(o.endpoint, "http://mirror:8080");
        assert_eq!(o.token.as_deref(), Some("t"));
    }

    #[test]
    fn the_listing_must_hold_config_tokenizer_and_safetensors() {
        let files = files_to_fetch(
            [
                "config.json",
                "tokenizer.json",
                "model.safetensors",
                "onnx/model.safetensors",
                "pytorch_model.bin",
                "README.md",
            ]
            .into_iter(),
        )
        .expect("complete");
        assert_eq!(
            files,
            ["config.json", "tokenizer.json", "model.safetensors"]
        );
        let sharded = files_to_fetch(
            [
                "config.json",
                "tokenizer.json",
                "model-00002-of-00002.safetensors",
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
            ]
            .into_iter(),
        )
        .expect("sharded");
        assert_eq!(
            sharded[2..],
            [
                "model.safetensors.index.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        let err = files_to_fetch(["config.json", "vocab.txt", "model.safetensors"].into_iter())
            .expect_err("no tokenizer.json");
        assert!(err.contains("tokenizer.json"), "{err}");
        let err =
            files_to_fetch(["config.json", "tokenizer.json", "pytorch_model.bin"].into_iter())
                .expect_err("no safetensors");
        assert!(err.contains("safetensors"), "{err}");
    }

    #[test]
    fn shard_index_names_each_shard_once() {
        let index =
            r#"{"weight_map":{"a":"m-2.safetensors","b":"m-1.safetensors","c":"m-2.safetensors"}}"#;
        assert_eq!(shard_names(index), ["m-1.safetensors", "m-2.safetensors"]);
        assert!(shard_names("not json").is_empty());
    }
}
