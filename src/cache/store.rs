//! [`SemanticCache`]: answers by embedding similarity, bounded in entries and bytes.
//!
//! Entries live in scopes ([`Scope`]: the route, the target model and the conversation before
//! the prompt), so an answer is only ever served for the same model and context. Each scope's
//! embeddings are kept together in an [`Index`], which finds the rows nearest a new prompt's
//! without scoring every one; a lookup returns the most similar at or above the threshold
//! whose prompt's [`Fingerprint`] agrees with the new prompt's (the false-hit guard,
//! [`super::guard`]).
//!
//! Lookups share a read lock and only mark what they used; inserts take the write lock. When
//! a bound is reached the expired entries go first, then the least recently used, each found
//! in order (a tree by expiry, a tree by last use) rather than by a scan. Expired entries are
//! never served, and are dropped when a lookup meets one or on the next insert.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::answer::Answer;
use super::backend::CacheBackend;
use super::guard::Fingerprint;
use super::shelves::{Entry, Inner, hash_of};

/// Where an answer may be served again: one route, one target model, one conversation
/// context (everything before the prompt), and optionally one tenant.
///
/// A stable hash (SHA-256), so replicas sharing a cache agree on it across builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(u64);

impl Scope {
    /// The scope of a request from its parts (hashed; the parts are not kept).
    pub fn new(route: &str, model: &str, context: &str) -> Self {
        Self(stable_hash(&[route, model, context]))
    }

    /// This scope narrowed to one tenant (e.g. a hash of the caller's API key): another
    /// tenant's answers are never served in it.
    pub fn with_tenant(self, tenant: &str) -> Self {
        Self(stable_hash(&[&self.0.to_string(), "tenant", tenant]))
    }

    /// The hash, as a shared backend stores it.
    pub(crate) fn id(self) -> u64 {
        self.0
    }
}

/// The first 8 bytes of SHA-256 over the length-prefixed parts.
fn stable_hash(parts: &[&str]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// How much the cache may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// Most answers kept.
    pub max_entries: usize,
    /// Most bytes kept (answer text plus embedding), approximately.
    pub max_bytes: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_entries: 4096,
            max_bytes: 64 << 20,
        }
    }
}

/// The semantic cache; shared by every request (internally locked).
pub struct SemanticCache {
    inner: RwLock<Inner>,
    limits: CacheLimits,
    metrics: CacheMetrics,
}

/// Outcome of a semantic-cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    /// `hit` or `miss`.
    result: &'static str,
}

#[derive(Default)]
struct CacheMetrics {
    lookups: Family<LookupLabels, Counter>,
    guarded: Counter,
    entries: Gauge,
    bytes: Gauge,
}

/// A cache hit.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The answer kept.
    pub answer: Arc<Answer>,
    /// Its prompt's cosine similarity to the new prompt.
    pub similarity: f32,
}

impl SemanticCache {
    /// An empty cache within `limits`.
    pub fn new(limits: CacheLimits) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            limits,
            metrics: CacheMetrics::default(),
        }
    }

    /// Registers lookups, entries and bytes under `semantic_router_semantic_cache_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("semantic_router_semantic_cache");
        r.register(
            "lookups",
            "Semantic-cache lookups, by result",
            self.metrics.lookups.clone(),
        );
        r.register(
            "guard_rejections",
            "Candidates above the similarity threshold the false-hit guard refused",
            self.metrics.guarded.clone(),
        );
        r.register("entries", "Answers kept", self.metrics.entries.clone());
        r.register(
            "bytes",
            "Approximate bytes of answers and embeddings kept",
            self.metrics.bytes.clone(),
        );
    }

    /// Counts a lookup and publishes the store's size.
    fn observe(&self, inner: &Inner, hit: Option<bool>) {
        if let Some(hit) = hit {
            let result = if hit { "hit" } else { "miss" };
            self.metrics
                .lookups
                .get_or_create(&LookupLabels { result })
                .inc();
        }
        self.metrics
            .entries
            .set(i64::try_from(inner.places.len()).unwrap_or(i64::MAX));
        self.metrics
            .bytes
            .set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most similar live answer in `scope` at or above `threshold` whose prompt's
    /// fingerprint agrees with `fingerprint` (the new prompt's).
    pub fn lookup(
        &self,
        scope: Scope,
        embedding: &[f32],
        fingerprint: &Fingerprint,
        threshold: f32,
    ) -> Option<Hit> {
        let now = Instant::now();
        let inner = self.read();
        let (mut guarded, mut met_expired) = (0, false);
        let best = inner
            .shelves
            .get(&(scope, embedding.len()))
            .and_then(|shelf| {
                shelf
                    .index
                    .nearest(embedding)
                    .into_iter()
                    .filter(|&(similarity, _)| similarity >= threshold)
                    .filter_map(|(similarity, slot)| Some((similarity, shelf.entries.get(slot)?)))
                    .filter(|(_, e)| {
                        let live = e.expires > now;
                        met_expired |= !live;
                        live
                    })
                    .filter(|(_, e)| {
                        let agrees = e.fingerprint.agrees(fingerprint);
                        guarded += u64::from(!agrees);
                        agrees
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0))
            });
        let hit = best.map(|(similarity, e)| {
            e.used.fetch_max(inner.tick(), Ordering::Relaxed);
            Hit {
                answer: e.answer.clone(),
                similarity,
            }
        });
        self.metrics.guarded.inc_by(guarded);
        self.observe(&inner, Some(hit.is_some()));
        drop(inner);
        if met_expired {
            let mut inner = self.write();
            inner.drop_expired(now);
            self.observe(&inner, None);
        }
        hit
    }

    /// Keeps `answer` for `ttl`, with its prompt's `fingerprint`; an answer for a
    /// near-identical prompt in the scope is replaced. Answers larger than the byte bound,
    /// and empty embeddings, are not kept.
    pub fn insert(
        &self,
        scope: Scope,
        embedding: Arc<[f32]>,
        fingerprint: Fingerprint,
        answer: Answer,
        ttl: Duration,
    ) {
        let bytes = answer.size() + std::mem::size_of_val(&*embedding);
        if bytes > self.limits.max_bytes || self.limits.max_entries == 0 || embedding.is_empty() {
            return;
        }
        let now = Instant::now();
        let key = (scope, embedding.len());
        let fingerprint_hash = hash_of(&fingerprint);
        let mut inner = self.write();
        inner.drop_expired(now);
        if let Some(id) = inner.same_prompt(key, fingerprint_hash, &fingerprint, &embedding) {
            inner.remove(id);
        }
        let tick = inner.tick();
        inner.next_id += 1;
        let entry = Entry {
            id: inner.next_id,
            fingerprint,
            fingerprint_hash,
            answer: Arc::new(answer),
            expires: now + ttl,
            queued: tick,
            used: AtomicU64::new(tick),
            bytes,
        };
        inner.add(key, entry, &embedding);
        inner.evict(self.limits);
        self.observe(&inner, None);
    }

    /// Answers kept now (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.read().places.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes kept.
    pub fn bytes(&self) -> usize {
        self.read().bytes
    }
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A miss waiting for its answer: the response, once complete, goes in with
/// [`fill`](Self::fill).
#[derive(Clone, Debug)]
pub struct Pending {
    cache: CacheBackend,
    scope: Scope,
    embedding: Arc<[f32]>,
    fingerprint: Fingerprint,
    ttl: Duration,
}

impl Pending {
    /// A miss in `cache` to fill for `scope`, `embedding` and the prompt's `fingerprint`
    /// (the one the lookup used), kept for `ttl`.
    pub fn new(
        cache: impl Into<CacheBackend>,
        scope: Scope,
        embedding: Arc<[f32]>,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> Self {
        Self {
            cache: cache.into(),
            scope,
            embedding,
            fingerprint,
            ttl,
        }
    }

    /// Keeps the answer the request got.
    pub fn fill(self, answer: Answer) {
        self.cache.insert(
            self.scope,
            self.embedding,
            self.fingerprint,
            answer,
            self.ttl,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Arc<[f32]> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn answer(text: &str) -> Answer {
        Answer {
            model: "m".into(),
            content: text.into(),
            finish_reason: "stop".into(),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// A fingerprint every other default one agrees with.
    fn same() -> Fingerprint {
        Fingerprint::default()
    }

    /// Unit vector along axis `i` of five.
    fn axis(i: usize) -> Arc<[f32]> {
        let mut v = [0.0; 5];
        v[i] = 1.0;
        unit(&v)
    }

    #[test]
    fn eviction_follows_the_last_use_across_scopes() {
        let cache = SemanticCache::new(CacheLimits {
            max_entries: 3,
            max_bytes: 1 << 20,
        });
        let (one, two) = (Scope::new("r", "m", ""), Scope::new("r", "other", ""));
        cache.insert(one, axis(0), same(), answer("a"), HOUR);
        cache.insert(two, axis(1), same(), answer("b"), HOUR);
        cache.insert(one, axis(2), same(), answer("c"), HOUR);
        // Using a, then b, leaves c the least recently used, then a.
        assert!(cache.lookup(one, &axis(0), &same(), 0.9).is_some());
        assert!(cache.lookup(two, &axis(1), &same(), 0.9).is_some());
        cache.insert(two, axis(3), same(), answer("d"), HOUR);
        cache.insert(one, axis(4), same(), answer("e"), HOUR);
        assert_eq!(cache.len(), 3);
        let served = |scope, i| {
            cache
                .lookup(scope, &axis(i), &same(), 0.9)
                .map(|h| h.answer.content.clone())
        };
        assert_eq!(served(one, 2), None, "c went first");
        assert_eq!(served(one, 0), None, "then a");
        assert_eq!(served(two, 1).as_deref(), Some("b"));
        assert_eq!(served(two, 3).as_deref(), Some("d"));
        assert_eq!(served(one, 4).as_deref(), Some("e"));
    }

    #[test]
    fn a_large_answer_evicts_as_many_as_its_bytes_need() {
        let probe = SemanticCache::new(CacheLimits::default());
        probe.insert(Scope::new("r", "m", ""), axis(0), same(), answer("x"), HOUR);
        let small = probe.bytes();
        let cache = SemanticCache::new(CacheLimits {
            max_entries: 100,
            max_bytes: 4 * small,
        });
        let scope = Scope::new("r", "m", "");
        for i in 0..4 {
            cache.insert(scope, axis(i), same(), answer("x"), HOUR);
        }
        assert!(cache.lookup(scope, &axis(0), &same(), 0.9).is_some());
        // Room for two small ones besides: the two least recently used (1 and 2) go.
        let large = answer(&"y".repeat(small + 1));
        cache.insert(scope, axis(4), same(), large, HOUR);
        assert_eq!(cache.len(), 3);
        assert!(cache.bytes() <= 4 * small);
        for (i, kept) in [(0, true), (1, false), (2, false), (3, true), (4, true)] {
            let hit = cache.lookup(scope, &axis(i), &same(), 0.9);
            assert_eq!(hit.is_some(), kept, "axis {i}");
        }
    }

    #[test]
    fn bounds_hold_and_keep_the_most_recent_over_many_inserts() {
        let cache = SemanticCache::new(CacheLimits {
            max_entries: 100,
            max_bytes: 1 << 20,
        });
        let scope = Scope::new("r", "m", "");
        let vector = |i: usize| -> Arc<[f32]> {
            unit(
                &(0..16)
                    .map(|j| ((i * 31 + j * 17) as f32).sin())
                    .collect::<Vec<_>>(),
            )
        };
        for i in 0..1000 {
            cache.insert(scope, vector(i), same(), answer("x"), HOUR);
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.len(), 100);
        for i in 900..1000 {
            let hit = cache.lookup(scope, &vector(i), &same(), 0.9999);
            assert!(hit.is_some(), "vector {i} kept");
        }
    }

    #[test]
    fn an_expired_answer_is_never_served_even_when_nearest() {
        let cache = SemanticCache::new(CacheLimits::default());
        let (scope, other) = (Scope::new("r", "m", ""), Scope::new("r", "other", ""));
        cache.insert(
            scope,
            unit(&[0.95, 0.05, 0.0]),
            same(),
            answer("live"),
            HOUR,
        );
        cache.insert(
            scope,
            unit(&[1.0, 0.0, 0.0]),
            same(),
            answer("stale"),
            Duration::ZERO,
        );
        let hit = cache.lookup(scope, &unit(&[1.0, 0.0, 0.0]), &same(), 0.9);
        assert_eq!(hit.expect("the live one").answer.content, "live");
        assert_eq!(cache.len(), 1, "the expired one met is dropped");
        // An insert drops what has expired in any scope.
        cache.insert(other, axis(0), same(), answer("gone"), Duration::ZERO);
        assert_eq!(cache.len(), 2);
        cache.insert(scope, axis(1), same(), answer("y"), HOUR);
        assert_eq!(cache.len(), 2);
        assert!(cache.lookup(other, &axis(0), &same(), 0.5).is_none());
    }

    #[test]
    fn an_embedding_of_another_width_is_kept_apart() {
        let cache = SemanticCache::new(CacheLimits::default());
        let scope = Scope::new("r", "m", "");
        cache.insert(scope, unit(&[1.0, 0.0]), same(), answer("two"), HOUR);
        cache.insert(scope, unit(&[1.0, 0.0, 0.0]), same(), answer("three"), HOUR);
        assert_eq!(cache.len(), 2);
        let hit = cache.lookup(scope, &unit(&[1.0, 0.0]), &same(), 0.9);
        assert_eq!(hit.expect("same width").answer.content, "two");
        cache.insert(scope, Arc::from([]), same(), answer("empty"), HOUR);
        assert_eq!(cache.len(), 2, "an empty embedding is not kept");
    }

    #[test]
    fn a_candidate_the_guard_refuses_is_not_served_and_is_counted() {
        let cache = SemanticCache::new(CacheLimits::default());
        let scope = Scope::new("r", "m", "");
        let buy = Fingerprint::of("Should I buy Tesla stock today?");
        let sell = Fingerprint::of("Should I sell Tesla stock today?");
        cache.insert(scope, unit(&[1.0, 0.0]), buy.clone(), answer("buy"), HOUR);
        assert!(
            cache
                .lookup(scope, &unit(&[1.0, 0.0]), &sell, 0.5)
                .is_none()
        );
        let hit = cache.lookup(
            scope,
            &unit(&[1.0, 0.0]),
            &Fingerprint::of("should i BUY tesla stock today"),
            0.5,
        );
        assert_eq!(hit.expect("a paraphrase").answer.content, "buy");
        // With both kept, each prompt gets its own answer.
        cache.insert(
            scope,
            unit(&[0.99, 0.01]),
            sell.clone(),
            answer("sell"),
            HOUR,
        );
        let hit = cache
            .lookup(scope, &unit(&[1.0, 0.0]), &sell, 0.5)
            .expect("sell");
        assert_eq!(hit.answer.content, "sell");
        let mut registry = Registry::default();
        cache.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("semantic_router_semantic_cache_guard_rejections_total 2"),
            "{text}"
        );
    }

    #[test]
    fn serves_the_most_similar_answer_above_the_threshold_in_its_scope() {
        let cache = SemanticCache::new(CacheLimits::default());
        let scope = Scope::new("default/auto", "m", "");
        cache.insert(scope, unit(&[1.0, 0.0, 0.0]), same(), answer("x"), HOUR);
        cache.insert(scope, unit(&[0.0, 1.0, 0.0]), same(), answer("y"), HOUR);
        let hit = cache
            .lookup(scope, &unit(&[0.9, 0.1, 0.0]), &same(), 0.9)
            .expect("close to x");
        assert_eq!(hit.answer.content, "x");
        assert!(hit.similarity > 0.99);
        assert!(
            cache
                .lookup(scope, &unit(&[0.6, 0.6, 0.5]), &same(), 0.9)
                .is_none()
        );
        let other = Scope::new("default/auto", "other-model", "");
        assert!(
            cache
                .lookup(other, &unit(&[1.0, 0.0, 0.0]), &same(), 0.5)
                .is_none()
        );
        let context = Scope::new("default/auto", "m", "system: be terse");
        assert!(
            cache
                .lookup(context, &unit(&[1.0, 0.0, 0.0]), &same(), 0.5)
                .is_none()
        );
    }

    #[test]
    fn scopes_are_stable_and_tenants_apart() {
        let scope = Scope::new("default/auto", "m", "");
        assert_eq!(scope, Scope::new("default/auto", "m", ""));
        assert_ne!(
            scope,
            Scope::new("default/aut", "om", ""),
            "parts are delimited"
        );
        assert_ne!(scope.with_tenant("a"), scope.with_tenant("b"));
        assert_ne!(scope.with_tenant("a"), scope);
        assert_eq!(scope.with_tenant("a"), scope.with_tenant("a"));
    }

    #[test]
    fn lookups_and_size_are_exported() {
        let cache = SemanticCache::new(CacheLimits::default());
        let scope = Scope::new("r", "m", "");
        assert!(
            cache
                .lookup(scope, &unit(&[1.0, 0.0]), &same(), 0.9)
                .is_none()
        );
        cache.insert(scope, unit(&[1.0, 0.0]), same(), answer("x"), HOUR);
        assert!(
            cache
                .lookup(scope, &unit(&[1.0, 0.0]), &same(), 0.9)
                .is_some()
        );
        let mut registry = Registry::default();
        cache.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            "semantic_router_semantic_cache_lookups_total{result=\"miss\"} 1",
            "semantic_router_semantic_cache_lookups_total{result=\"hit\"} 1",
            "semantic_router_semantic_cache_entries 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn expired_answers_are_not_served_and_are_dropped() {
        let cache = SemanticCache::new(CacheLimits::default());
        let scope = Scope::new("r", "m", "");
        cache.insert(
            scope,
            unit(&[1.0, 0.0]),
            same(),
            answer("x"),
            Duration::ZERO,
        );
        assert_eq!(cache.len(), 1);
        assert!(
            cache
                .lookup(scope, &unit(&[1.0, 0.0]), &same(), 0.5)
                .is_none()
        );
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn the_same_prompt_replaces_its_answer() {
        let cache = SemanticCache::new(CacheLimits::default());
        let scope = Scope::new("r", "m", "");
        cache.insert(scope, unit(&[1.0, 0.0]), same(), answer("old"), HOUR);
        cache.insert(scope, unit(&[1.0, 0.0]), same(), answer("new"), HOUR);
        assert_eq!(cache.len(), 1);
        let hit = cache
            .lookup(scope, &unit(&[1.0, 0.0]), &same(), 0.5)
            .expect("hit");
        assert_eq!(hit.answer.content, "new");
    }

    #[test]
    fn bounds_evict_the_least_recently_used() {
        let cache = SemanticCache::new(CacheLimits {
            max_entries: 2,
            max_bytes: 1 << 20,
        });
        let scope = Scope::new("r", "m", "");
        cache.insert(scope, unit(&[1.0, 0.0, 0.0]), same(), answer("a"), HOUR);
        cache.insert(scope, unit(&[0.0, 1.0, 0.0]), same(), answer("b"), HOUR);
        // Using `a` makes `b` the least recently used.
        assert!(
            cache
                .lookup(scope, &unit(&[1.0, 0.0, 0.0]), &same(), 0.9)
                .is_some()
        );
        cache.insert(scope, unit(&[0.0, 0.0, 1.0]), same(), answer("c"), HOUR);
        assert_eq!(cache.len(), 2);
        assert!(
            cache
                .lookup(scope, &unit(&[0.0, 1.0, 0.0]), &same(), 0.9)
                .is_none(),
            "b evicted"
        );
        assert!(
            cache
                .lookup(scope, &unit(&[1.0, 0.0, 0.0]), &same(), 0.9)
                .is_some()
        );

        let small = SemanticCache::new(CacheLimits {
            max_entries: 100,
            max_bytes: 200,
        });
        small.insert(
            scope,
            unit(&[1.0, 0.0]),
            same(),
            answer(&"x".repeat(150)),
            HOUR,
        );
        small.insert(
            scope,
            unit(&[0.0, 1.0]),
            same(),
            answer(&"y".repeat(150)),
            HOUR,
        );
        assert_eq!(small.len(), 1, "bytes bound");
        assert!(small.bytes() <= 200);
        small.insert(
            scope,
            unit(&[1.0, 1.0]),
            same(),
            answer(&"z".repeat(500)),
            HOUR,
        );
        assert_eq!(small.len(), 1, "an answer over the bound is not kept");
    }
}
