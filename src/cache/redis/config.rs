//! How to reach Redis ([`RedisConfig`]: URL, password, TLS roots, deadlines) and why a call
//! failed ([`RedisCacheError`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a Redis cache call failed or could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisCacheError {
    /// The URL does not parse.
    #[error("the Redis URL does not parse: {0}")]
    Url(String),
    /// The URL carries a password, which would end up in process listings and logs.
    #[error(
        "the Redis URL carries a password: give it in a file or an environment variable instead"
    )]
    PasswordInUrl,
    /// The password file cannot be read.
    #[error("cannot read the Redis password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file for `rediss://` cannot be read.
    #[error("cannot read the Redis CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The password variable is not set (or not UTF-8).
    #[error("the environment variable {0} holding the Redis password is not set")]
    PasswordEnv(String),
    /// Redis did not answer within the deadline.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis (or the connection to it) failed.
    #[error("Redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis answered something a search does not return.
    #[error("Redis answered FT.SEARCH with an unexpected reply")]
    Reply,
}

impl RedisCacheError {
    /// The metric label of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Url(_)
            | Self::PasswordInUrl
            | Self::PasswordFile { .. }
            | Self::CaFile { .. }
            | Self::PasswordEnv(_) => "config",
            Self::Timeout(_) => "timeout",
            Self::Redis(_) => "redis",
            Self::Reply => "reply",
        }
    }
}

/// A password that is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The password itself, to hand to the client only.
    pub(crate) fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How to reach Redis and how long to wait for it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` or `rediss://` for TLS; no password in it.
    pub url: String,
    /// The password (see [`password_from_file`](Self::password_from_file),
    /// [`password_from_env`](Self::password_from_env)).
    pub password: Option<Secret>,
    /// PEM roots to trust for a `rediss://` server instead of the system's (e.g. a private
    /// CA mounted from a Secret).
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key and index name.
    pub key_prefix: String,
    /// Deadline of one lookup (index creation included); a miss when it passes.
    pub call_timeout: Duration,
    /// Deadline of one background write.
    pub write_timeout: Duration,
    /// Writes waiting at most; more are dropped (and counted).
    pub write_queue: usize,
    /// Nearest neighbours asked for per lookup (the guard may refuse the nearest).
    pub candidates: usize,
}

impl RedisConfig {
    /// Defaults for `url`: prefix `semantic-router:`, 5 ms lookups, 250 ms writes, 1024
    /// queued writes, 4 candidates.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            ca_file: None,
            key_prefix: "semantic-router:".to_owned(),
            call_timeout: Duration::from_millis(5),
            write_timeout: Duration::from_millis(250),
            write_queue: 1024,
            candidates: 4,
        }
    }

    /// The password from the first line of a file (e.g. a mounted Secret).
    pub fn password_from_file(mut self, path: &Path) -> Result<Self, RedisCacheError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RedisCacheError::PasswordFile {
                path: path.display().to_string(),
                source,
            })?;
        self.password = Some(Secret(text.lines().next().unwrap_or("").to_owned()));
        Ok(self)
    }

    /// The password from an environment variable.
    pub fn password_from_env(mut self, var: &str) -> Result<Self, RedisCacheError> {
        let value = std::env::var(var).map_err(|_| RedisCacheError::PasswordEnv(var.to_owned()))?;
        self.password = Some(Secret(value));
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::redis::RedisCache;

    #[test]
    fn the_password_is_never_printed_nor_taken_from_the_url() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2\n").expect("write");
        let config = RedisConfig::new("redis://127.0.0.1:1")
            .password_from_file(&file)
            .expect("read");
        assert_eq!(config.password, Some(Secret("hunter2".into())));
        assert!(!format!("{config:?}").contains("hunter2"));
        let err = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                RedisCache::connect(RedisConfig::new("redis://:hunter2@127.0.0.1:1")).err()
            });
        assert!(
            matches!(err, Some(RedisCacheError::PasswordInUrl)),
            "{err:?}"
        );
        assert!(matches!(
            RedisConfig::new("redis://x").password_from_env("SEMANTIC_ROUTER_NO_SUCH_VAR"),
            Err(RedisCacheError::PasswordEnv(_))
        ));
    }
}
