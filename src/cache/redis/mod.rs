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
//! never from the URL, and is never printed (`Debug` redacts it). `rediss://` URLs speak TLS
//! (rustls), trusting the system's roots or [`RedisConfig::ca_file`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, IntoConnectionInfo, TlsCertificates, Value};
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

mod config;
mod reply;

pub use config::{RedisCacheError, RedisConfig, Secret};
use reply::{documents, vector_bytes};

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
            Some(secret) => {
                let settings = info.redis_settings().clone().set_password(secret.reveal());
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let client = match &config.ca_file {
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|source| RedisCacheError::CaFile {
                    path: path.display().to_string(),
                    source,
                })?;
                let roots = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                Client::build_with_tls(info, roots)
            }
            None => Client::open(info),
        }
        .map_err(|e| RedisCacheError::Url(e.to_string()))?;
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
