//! [`CacheBackend`]: the one interface the data plane calls, over the in-memory store (the
//! default, for a single process) and Redis (one cache shared by every replica).

use std::sync::Arc;
use std::time::Duration;

use super::answer::Answer;
use super::guard::Fingerprint;
use super::redis::RedisCache;
use super::store::{Hit, Scope, SemanticCache};

/// Where answers are kept.
#[derive(Clone, Debug)]
pub enum CacheBackend {
    /// This process's memory ([`SemanticCache`]).
    Memory(Arc<SemanticCache>),
    /// A Redis shared by the replicas ([`RedisCache`]).
    Redis(Arc<RedisCache>),
}

impl CacheBackend {
    /// The most similar live answer in `scope` at or above `threshold` that the guard lets
    /// through; a miss when the backend fails or is slow (counted by the backend).
    pub async fn lookup(
        &self,
        scope: Scope,
        embedding: &[f32],
        fingerprint: &Fingerprint,
        threshold: f32,
    ) -> Option<Hit> {
        match self {
            Self::Memory(cache) => cache.lookup(scope, embedding, fingerprint, threshold),
            Self::Redis(cache) => cache.lookup(scope, embedding, fingerprint, threshold).await,
        }
    }

    /// Keeps `answer` for `ttl`; never blocks (Redis writes are queued, and dropped when the
    /// queue is full).
    pub fn insert(
        &self,
        scope: Scope,
        embedding: Arc<[f32]>,
        fingerprint: Fingerprint,
        answer: Answer,
        ttl: Duration,
    ) {
        match self {
            Self::Memory(cache) => cache.insert(scope, embedding, fingerprint, answer, ttl),
            Self::Redis(cache) => cache.insert(scope, embedding, fingerprint, answer, ttl),
        }
    }
}

impl From<Arc<SemanticCache>> for CacheBackend {
    fn from(cache: Arc<SemanticCache>) -> Self {
        Self::Memory(cache)
    }
}

impl From<Arc<RedisCache>> for CacheBackend {
    fn from(cache: Arc<RedisCache>) -> Self {
        Self::Redis(cache)
    }
}
