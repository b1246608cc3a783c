//! `run`'s semantic-cache flags ([`CacheArgs`]) and the [`CacheBackend`] they make.
//!
//! The password never comes from a flag: a file (`--cache-redis-password-file`, e.g. a
//! mounted Secret) or the `SR_CACHE_REDIS_PASSWORD` environment variable.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::backend::CacheBackend;
use super::redis::{RedisCache, RedisCacheError, RedisConfig};
use super::store::{CacheLimits, SemanticCache};

/// The environment variable a Redis password may come from.
pub const PASSWORD_ENV: &str = "SR_CACHE_REDIS_PASSWORD";

/// Where the semantic cache keeps answers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// This process's memory: nothing shared, nothing kept across restarts.
    #[default]
    Memory,
    /// A Redis with vector search (Redis Stack, RediSearch), shared by every replica.
    Redis,
}

/// The semantic cache's flags (a route turns caching on with `spec.cache`).
#[derive(clap::Args, Clone, Debug)]
pub struct CacheArgs {
    /// Where answers are kept: `memory` (one process) or `redis` (shared by every replica;
    /// needs --cache-redis-url). With Redis slow or down, lookups are misses within
    /// --cache-redis-timeout-ms and requests go upstream.
    #[arg(long, value_enum, default_value_t = BackendKind::Memory, env = "SR_CACHE_BACKEND")]
    pub cache_backend: BackendKind,

    /// Most answers the in-memory cache keeps, across routes (least recently used go first).
    #[arg(long, default_value_t = 4096, env = "SR_CACHE_MAX_ENTRIES")]
    pub cache_max_entries: usize,

    /// Most mebibytes of answers (and their embeddings) the in-memory cache keeps.
    #[arg(long, default_value_t = 64, env = "SR_CACHE_MAX_MIB")]
    pub cache_max_mib: usize,

    /// The Redis for `--cache-backend redis`: `redis://host:port[/db]`, or `rediss://` for
    /// TLS. No password in it (see --cache-redis-password-file).
    #[arg(
        long,
        value_name = "URL",
        env = "SR_CACHE_REDIS_URL",
        required_if_eq("cache_backend", "redis")
    )]
    pub cache_redis_url: Option<String>,

    /// A file whose first line is the Redis password (e.g. a mounted Secret); otherwise the
    /// SR_CACHE_REDIS_PASSWORD environment variable, if set.
    #[arg(long, value_name = "FILE", env = "SR_CACHE_REDIS_PASSWORD_FILE")]
    pub cache_redis_password_file: Option<PathBuf>,

    /// PEM roots to trust for a `rediss://` Redis instead of the system's.
    #[arg(long, value_name = "FILE", env = "SR_CACHE_REDIS_CA_FILE")]
    pub cache_redis_ca_file: Option<PathBuf>,

    /// Prefix of every Redis key and index name (replicas sharing answers use the same one).
    #[arg(
        long,
        default_value = "semantic-router:",
        env = "SR_CACHE_REDIS_KEY_PREFIX"
    )]
    pub cache_redis_key_prefix: String,

    /// Milliseconds a Redis lookup may take before the request goes on as a miss (counted in
    /// semantic_router_semantic_cache_redis_errors_total{kind="timeout"}).
    #[arg(long, default_value_t = 5, env = "SR_CACHE_REDIS_TIMEOUT_MS")]
    pub cache_redis_timeout_ms: u64,

    /// Answers waiting to be written to Redis at most; more are dropped (counted).
    #[arg(long, default_value_t = 1024, env = "SR_CACHE_REDIS_WRITE_QUEUE")]
    pub cache_redis_write_queue: usize,
}

impl CacheArgs {
    /// The backend these flags name, its metrics registered in `registry`. Redis is connected
    /// lazily: the router starts and serves (misses) while it is absent. Must be called inside
    /// a Tokio runtime.
    pub fn backend(&self, registry: &mut Registry) -> Result<CacheBackend, RedisCacheError> {
        match self.cache_backend {
            BackendKind::Memory => {
                let cache = SemanticCache::new(CacheLimits {
                    max_entries: self.cache_max_entries,
                    max_bytes: self.cache_max_mib.saturating_mul(1 << 20),
                });
                cache.register(registry);
                Ok(Arc::new(cache).into())
            }
            BackendKind::Redis => {
                let cache = RedisCache::connect(self.redis_config()?)?;
                cache.register(registry);
                Ok(Arc::new(cache).into())
            }
        }
    }

    fn redis_config(&self) -> Result<RedisConfig, RedisCacheError> {
        let url = self
            .cache_redis_url
            .clone()
            .ok_or_else(|| RedisCacheError::Url("--cache-redis-url is not set".to_owned()))?;
        let mut config = RedisConfig {
            ca_file: self.cache_redis_ca_file.clone(),
            key_prefix: self.cache_redis_key_prefix.clone(),
            call_timeout: Duration::from_millis(self.cache_redis_timeout_ms),
            write_queue: self.cache_redis_write_queue,
            ..RedisConfig::new(url)
        };
        if let Some(file) = &self.cache_redis_password_file {
            config = config.password_from_file(file)?;
        } else if std::env::var_os(PASSWORD_ENV).is_some() {
            config = config.password_from_env(PASSWORD_ENV)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cache: CacheArgs,
    }

    #[test]
    fn redis_needs_a_url_and_takes_its_password_from_a_file() {
        assert!(Cli::try_parse_from(["x", "--cache-backend", "redis"]).is_err());
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").expect("write");
        let cli = Cli::try_parse_from([
            "x",
            "--cache-backend",
            "redis",
            "--cache-redis-url",
            "redis://127.0.0.1:1",
            "--cache-redis-password-file",
            file.to_str().expect("utf-8 path"),
            "--cache-redis-timeout-ms",
            "7",
        ])
        .expect("parses");
        let config = cli.cache.redis_config().expect("a config");
        assert_eq!(config.call_timeout, Duration::from_millis(7));
        assert_eq!(config.password.as_ref().map(|s| s.reveal()), Some("s3cret"));
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn memory_is_the_default_and_registers_its_metrics() {
        let cli = Cli::try_parse_from(["x"]).expect("parses");
        let mut registry = Registry::default();
        let backend = cli.cache.backend(&mut registry).expect("a backend");
        assert!(matches!(backend, CacheBackend::Memory(_)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("semantic_router_semantic_cache_entries"),
            "{text}"
        );
    }
}
