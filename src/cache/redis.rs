//! [`RedisCache`]: the semantic cache in Redis with vector search (Redis Stack / RediSearch),
//! so every replica serves the answers any of them kept, and a restart forgets nothing.
//!
//! Each answer is a hash under `{prefix}{width}:{scope}:{digest}` with a TTL: the embedding
//! (`v`, FLOAT32 bytes), the scope (`scope`, a TAG), the answer (`answer`, JSON), the prompt's
//! guard [`Fingerprint`] (`fp`) and its expiry (`expires`, Unix ms). One HNSW index
//! (`{prefix}idx:{width}`, cosine) per embedding width is created on first use, idempotently:
//! replicas starting together all succeed, and an index lost with a restarted Redis is made
//! again. A lookup is a KNN query filtered by scope; the similarity threshold is applied to
//! the returned cosine distance, then the guard.
//!
//! Redis is never on the critical path of a failure: every lookup runs under a deadline
//! ([`RedisConfig::call_timeout`], 5 ms by default) and is a miss when Redis is slow, down or
//! answers an error, counted by kind. Writes go through a bounded queue drained by a
//! background task; a full queue drops the write and counts it. The client reconnects by
//! itself once Redis is back. The password is read from a file or an environment variable,
//! never from the URL, and is never printed (`Debug` redacts it).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, IntoConnectionInfo, Value};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::answer::Answer;
use super::guard::Fingerprint;
use super::store::{Hit, Scope};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `hit`, `miss` or `error`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    /// `lookup` or `write`.
    op: &'static str,
    /// [`RedisCacheError::kind`].
    kind: &'static str,
}

#[derive(Default)]
struct Metrics {
    lookups: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    guarded: Counter,
    writes: Counter,
    dropped: Counter,
}

struct Write {
    scope: Scope,
    embedding: Arc<[f32]>,
    fingerprint: Fingerprint,
    answer: Answer,
    ttl: Duration,
}

/// What the lookups and the writer share.
struct Shared {
    conn: ConnectionManager,
    config: RedisConfig,
    metrics: Metrics,
    /// Embedding widths whose index is known to exist.
    indexes: Mutex<HashSet<usize>>,
}

/// The semantic cache in Redis; cheap to share (`Arc`), one per process.
pub struct RedisCache {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Write>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// A cache on the Redis at `config.url`. Connects lazily: Redis may be absent now and
    /// come later. Must be called inside a Tokio runtime (it spawns the writer task, which
    /// ends when the cache is dropped).
    pub fn connect(config: RedisConfig) -> Result<Self, RedisCacheError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| RedisCacheError::Url(e.to_string()))?;
        if info.redis_settings().password().is_some() {
            return Err(RedisCacheError::PasswordInUrl);
        }
        let info = match &config.password {
            Some(Secret(p)) => {
                let settings = info.redis_settings().clone().set_password(p);
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let client = Client::open(info).map_err(|e| RedisCacheError::Url(e.to_string()))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(config.write_timeout.max(config.call_timeout)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)?;
        let (writes, queue) = mpsc::channel(config.write_queue.max(1));
        let shared = Arc::new(Shared {
            conn,
            config,
            metrics: Metrics::default(),
            indexes: Mutex::new(HashSet::new()),
        });
        tokio::spawn(drain(shared.clone(), queue));
        Ok(Self { shared, writes })
    }

    /// Registers lookups, errors, guard refusals, writes and dropped writes under
    /// `semantic_router_semantic_cache_redis_*`.
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.shared.metrics;
        let r = registry.sub_registry_with_prefix("semantic_router_semantic_cache_redis");
        r.register(
            "lookups",
            "Redis semantic-cache lookups, by result",
            m.lookups.clone(),
        );
        r.register(
            "errors",
            "Redis semantic-cache calls that failed, by operation and kind (timeout, redis, reply)",
            m.errors.clone(),
        );
        r.register(
            "guard_rejections",
            "Candidates above the similarity threshold the false-hit guard refused",
            m.guarded.clone(),
        );
        r.register("writes", "Answers written to Redis", m.writes.clone());
        r.register(
            "dropped_writes",
            "Answers not written because the write queue was full",
            m.dropped.clone(),
        );
    }

    /// The nearest live answer in `scope` at or above `threshold` that the guard lets
    /// through; a miss (counted as an error) when Redis fails or misses the deadline.
    pub async fn lookup(
        &self,
        scope: Scope,
        embedding: &[f32],
        fingerprint: &Fingerprint,
        threshold: f32,
    ) -> Option<Hit> {
        let m = &self.shared.metrics;
        let result = self
            .try_lookup(scope, embedding, fingerprint, threshold)
            .await;
        let label = match &result {
            Ok(Some(_)) => "hit",
            Ok(None) => "miss",
            Err(e) => {
                m.errors
                    .get_or_create(&ErrorLabels {
                        op: "lookup",
                        kind: e.kind(),
                    })
                    .inc();
                tracing::debug!(error = %e, "semantic cache: Redis lookup failed; a miss");
                "error"
            }
        };
        m.lookups
            .get_or_create(&ResultLabels { result: label })
            .inc();
        result.ok().flatten()
    }

    /// [`lookup`](Self::lookup) with the failure, not counted.
    pub async fn try_lookup(
        &self,
        scope: Scope,
        embedding: &[f32],
        fingerprint: &Fingerprint,
        threshold: f32,
    ) -> Result<Option<Hit>, RedisCacheError> {
        let deadline = self.shared.config.call_timeout;
        let search = async {
            self.shared.ensure_index(embedding.len()).await?;
            self.shared
                .search(scope, embedding, fingerprint, threshold)
                .await
        };
        match tokio::time::timeout(deadline, search).await {
            Ok(result) => result,
            Err(_) => Err(RedisCacheError::Timeout(deadline)),
        }
    }

    /// Queues `answer` to be kept for `ttl`; never waits. A full queue drops it (counted).
    pub fn insert(
        &self,
        scope: Scope,
        embedding: Arc<[f32]>,
        fingerprint: Fingerprint,
        answer: Answer,
        ttl: Duration,
    ) {
        let write = Write {
            scope,
            embedding,
            fingerprint,
            answer,
            ttl,
        };
        if self.writes.try_send(write).is_err() {
            self.shared.metrics.dropped.inc();
        }
    }
}

/// The writer: one write at a time, each under its deadline; ends with the cache.
async fn drain(shared: Arc<Shared>, mut queue: mpsc::Receiver<Write>) {
    while let Some(write) = queue.recv().await {
        let deadline = shared.config.write_timeout;
        let result = match tokio::time::timeout(deadline, shared.write(&write)).await {
            Ok(result) => result,
            Err(_) => Err(RedisCacheError::Timeout(deadline)),
        };
        match result {
            Ok(()) => {
                shared.metrics.writes.inc();
            }
            Err(e) => {
                shared
                    .metrics
                    .errors
                    .get_or_create(&ErrorLabels {
                        op: "write",
                        kind: e.kind(),
                    })
                    .inc();
                tracing::debug!(error = %e, "semantic cache: Redis write failed; dropped");
            }
        }
    }
}

impl Shared {
    fn index(&self, width: usize) -> String {
        format!("{}idx:{width}", self.config.key_prefix)
    }

    fn key_prefix(&self, width: usize) -> String {
        format!("{}{width}:", self.config.key_prefix)
    }

    fn forget_index(&self, width: usize) {
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&width);
    }

    /// Creates the index for `width` unless it is known to exist; "already exists" (another
    /// replica was first) is success.
    async fn ensure_index(&self, width: usize) -> Result<(), RedisCacheError> {
        if self
            .indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&width)
        {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let created: Result<Value, _> = ::redis::cmd("FT.CREATE")
            .arg(self.index(width))
            .arg(&["ON", "HASH", "PREFIX", "1"])
            .arg(self.key_prefix(width))
            .arg(&[
                "SCHEMA", "scope", "TAG", "v", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32",
            ])
            .arg("DIM")
            .arg(width)
            .arg(&["DISTANCE_METRIC", "COSINE"])
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if says(&e, &["index", "already exists"]) => {}
            Err(e) => return Err(e.into()),
        }
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(width);
        Ok(())
    }

    async fn search(
        &self,
        scope: Scope,
        embedding: &[f32],
        fingerprint: &Fingerprint,
        threshold: f32,
    ) -> Result<Option<Hit>, RedisCacheError> {
        let k = self.config.candidates.max(1);
        let query = format!("(@scope:{{{:016x}}})=>[KNN {k} @v $q AS dist]", scope.id());
        let mut conn = self.conn.clone();
        let reply: Result<Value, _> = ::redis::cmd("FT.SEARCH")
            .arg(self.index(embedding.len()))
            .arg(query)
            .arg(&["PARAMS", "2", "q"])
            .arg(vector_bytes(embedding))
            .arg(&[
                "SORTBY", "dist", "RETURN", "4", "dist", "answer", "fp", "expires",
            ])
            .arg(&["LIMIT", "0"])
            .arg(k)
            .arg(&["DIALECT", "2"])
            .query_async(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                if says(&e, &["no such index"]) || says(&e, &["unknown", "index"]) {
                    // Redis lost its data (a restart without persistence): make it again.
                    self.forget_index(embedding.len());
                }
                return Err(e.into());
            }
        };
        let now = unix_ms();
        let mut guarded = 0;
        let mut best = None;
        for doc in documents(&reply)? {
            let similarity = 1.0 - doc.dist;
            if similarity < threshold || doc.expires <= now {
                continue;
            }
            if !doc.fingerprint.agrees(fingerprint) {
                guarded += 1;
                continue;
            }
            best = Some(Hit {
                answer: Arc::new(doc.answer),
                similarity,
            });
            break;
        }
        self.metrics.guarded.inc_by(guarded);
        Ok(best)
    }

    async fn write(&self, write: &Write) -> Result<(), RedisCacheError> {
        let width = write.embedding.len();
        self.ensure_index(width).await?;
        let bytes = vector_bytes(&write.embedding);
        // The same prompt in the same scope is one key: concurrent misses overwrite, not add.
        let mut digest = Sha256::new();
        digest.update(&bytes);
        digest.update(write.fingerprint.to_json().as_bytes());
        let digest = digest.finalize();
        let key = format!(
            "{}{:016x}:{}",
            self.key_prefix(width),
            write.scope.id(),
            hex(&digest[..12])
        );
        let ttl_ms = u64::try_from(write.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let answer = json!({
            "model": write.answer.model,
            "content": write.answer.content,
            "finish_reason": write.answer.finish_reason,
        })
        .to_string();
        let mut conn = self.conn.clone();
        let _: () = ::redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("v")
            .arg(bytes)
            .arg("scope")
            .arg(format!("{:016x}", write.scope.id()))
            .arg("answer")
            .arg(answer)
            .arg("fp")
            .arg(write.fingerprint.to_json())
            .arg("expires")
            .arg(unix_ms().saturating_add(ttl_ms))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// Whether a Redis error's text holds all of `words` (server errors come as a code and a
/// detail, e.g. `Index` + `already exists`).
fn says(e: &::redis::RedisError, words: &[&str]) -> bool {
    let text = e.to_string().to_lowercase();
    words.iter().all(|w| text.contains(w))
}

struct Document {
    dist: f32,
    answer: Answer,
    fingerprint: Fingerprint,
    expires: u64,
}

/// The documents of an `FT.SEARCH` reply (`[total, key, [field, value, ...], ...]`), in
/// order; one whose fields do not read is skipped.
fn documents(reply: &Value) -> Result<Vec<Document>, RedisCacheError> {
    let Value::Array(items) = reply else {
        return Err(RedisCacheError::Reply);
    };
    let mut out = Vec::new();
    for fields in items.iter().skip(2).step_by(2) {
        let Value::Array(fields) = fields else {
            return Err(RedisCacheError::Reply);
        };
        let (mut dist, mut answer, mut fp, mut expires) = (None, None, None, None);
        for pair in fields.chunks(2) {
            let [name, value] = pair else { continue };
            let (Some(name), Some(value)) = (text(name), text(value)) else {
                continue;
            };
            match name.as_str() {
                "dist" => dist = value.parse::<f32>().ok(),
                "answer" => answer = read_answer(&value),
                "fp" => fp = Fingerprint::from_json(&value),
                "expires" => expires = value.parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(dist), Some(answer), Some(fingerprint), Some(expires)) =
            (dist, answer, fp, expires)
        {
            out.push(Document {
                dist,
                answer,
                fingerprint,
                expires,
            });
        }
    }
    Ok(out)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

fn read_answer(text: &str) -> Option<Answer> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(Answer {
        model: v.get("model")?.as_str()?.to_owned(),
        content: v.get("content")?.as_str()?.to_owned(),
        finish_reason: v.get("finish_reason")?.as_str()?.to_owned(),
    })
}

/// An embedding as RediSearch's FLOAT32 vector: little-endian bytes.
fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_search_reply_reads_in_order_and_skips_what_does_not_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let fp = Fingerprint::of("capital of NC").to_json();
        let doc = |dist: &str, content: &str| {
            Value::Array(vec![
                bulk("dist"),
                bulk(dist),
                bulk("answer"),
                bulk(&format!(
                    r#"{{"model":"m","content":"{content}","finish_reason":"stop"}}"#
                )),
                bulk("fp"),
                bulk(&fp),
                bulk("expires"),
                bulk("99"),
            ])
        };
        let reply = Value::Array(vec![
            Value::Int(3),
            bulk("k1"),
            doc("0.01", "Raleigh."),
            bulk("k2"),
            Value::Array(vec![bulk("dist"), bulk("0.2")]),
            bulk("k3"),
            doc("0.3", "Columbia."),
        ]);
        let docs = documents(&reply).expect("reads");
        let contents: Vec<&str> = docs.iter().map(|d| d.answer.content.as_str()).collect();
        assert_eq!(contents, ["Raleigh.", "Columbia."]);
        assert!((docs[0].dist - 0.01).abs() < 1e-6);
        assert!(documents(&Value::Okay).is_err());
    }
}
