//! A bounded exact-text cache of encoder outputs, evicting the least recently used entry, so
//! the same text is never embedded twice while it stays in the cache.
//!
//! Entries are keyed by a 128-bit hash of the text (two independently keyed SipHash-1-3
//! hashes); the text itself is not kept, so a long prompt costs the cache no memory. A false
//! hit needs a 128-bit collision.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use super::encoder::EncoderOutput;

/// The cache key of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TextKey(u64, u64);

struct Entry {
    value: Arc<EncoderOutput>,
    stamp: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<TextKey, Entry>,
    /// Last use → key; the first entry is the least recently used.
    order: BTreeMap<u64, TextKey>,
    clock: u64,
}

/// The embedding cache; `capacity` 0 disables it.
pub(crate) struct EmbeddingCache {
    capacity: usize,
    hashers: (RandomState, RandomState),
    lru: Mutex<Lru>,
}

impl EmbeddingCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            hashers: (RandomState::new(), RandomState::new()),
            lru: Mutex::new(Lru::default()),
        }
    }

    /// The key of `text`.
    pub fn key(&self, text: &str) -> TextKey {
        TextKey(self.hashers.0.hash_one(text), self.hashers.1.hash_one(text))
    }

    /// The cached output for `key`, marking it most recently used.
    pub fn get(&self, key: TextKey) -> Option<Arc<EncoderOutput>> {
        if self.capacity == 0 {
            return None;
        }
        let mut lru = self.lru.lock().unwrap_or_else(PoisonError::into_inner);
        lru.clock += 1;
        let now = lru.clock;
        let entry = lru.entries.get_mut(&key)?;
        let old = std::mem::replace(&mut entry.stamp, now);
        let value = entry.value.clone();
        lru.order.remove(&old);
        lru.order.insert(now, key);
        Some(value)
    }

    /// Stores `value` under `key`, evicting the least recently used entry when full; the
    /// number of cached texts after it.
    pub fn insert(&self, key: TextKey, value: Arc<EncoderOutput>) -> usize {
        if self.capacity == 0 {
            return 0;
        }
        let mut lru = self.lru.lock().unwrap_or_else(PoisonError::into_inner);
        lru.clock += 1;
        let stamp = lru.clock;
        if let Some(old) = lru.entries.insert(key, Entry { value, stamp }) {
            lru.order.remove(&old.stamp);
        }
        lru.order.insert(stamp, key);
        while lru.entries.len() > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.entries.remove(&oldest);
        }
        lru.entries.len()
    }

    /// Number of cached texts.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lru
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(v: f32) -> Arc<EncoderOutput> {
        Arc::new(EncoderOutput {
            embedding: vec![v].into(),
            class_probabilities: None,
            tokens: 1,
            truncated: false,
        })
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let cache = EmbeddingCache::new(2);
        let (a, b, c) = (cache.key("a"), cache.key("b"), cache.key("c"));
        cache.insert(a, output(1.0));
        cache.insert(b, output(2.0));
        assert!(cache.get(a).is_some(), "a is now the most recent");
        assert_eq!(cache.insert(c, output(3.0)), 2, "never above its capacity");
        assert_eq!(cache.len(), 2);
        assert!(cache.get(b).is_none(), "b was the least recently used");
        assert_eq!(cache.get(a).map(|o| o.embedding[0]), Some(1.0));
        assert_eq!(cache.get(c).map(|o| o.embedding[0]), Some(3.0));
    }

    #[test]
    fn same_text_same_key_and_reinsert_keeps_one_entry() {
        let cache = EmbeddingCache::new(4);
        assert_eq!(cache.key("hello"), cache.key("hello"));
        assert_ne!(cache.key("hello"), cache.key("hello "));
        cache.insert(cache.key("x"), output(1.0));
        cache.insert(cache.key("x"), output(2.0));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(cache.key("x")).map(|o| o.embedding[0]), Some(2.0));
    }

    #[test]
    fn zero_capacity_disables_it() {
        let cache = EmbeddingCache::new(0);
        cache.insert(cache.key("x"), output(1.0));
        assert!(cache.get(cache.key("x")).is_none());
        assert_eq!(cache.len(), 0);
    }
}
