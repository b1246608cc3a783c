//! A bounded map that forgets the least recently used entries first, approximately: two
//! generations of a hash map. Inserts go to the current generation; when it holds half the
//! capacity it becomes the previous one and the old previous generation is emptied whole
//! (its allocation kept for the next one).
//! A hit in the previous generation moves the entry forward. Every operation is O(1) and the
//! map never holds more than `capacity` entries (at least 2).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes a `u64` key that is already a well-mixed hash by using it as it is.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Hash of a block or a session → value, bounded.
#[derive(Debug)]
pub struct Lru<V> {
    half: usize,
    current: Map<V>,
    previous: Map<V>,
}

impl<V: Copy> Lru<V> {
    /// An empty map that holds at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            half: capacity.div_ceil(2).max(1),
            current: Map::default(),
            previous: Map::default(),
        }
    }

    /// The most entries this map holds.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.half * 2
    }

    /// Changes the bound; shrinking forgets the older generation at once if needed.
    pub fn set_capacity(&mut self, capacity: usize) {
        let half = capacity.div_ceil(2).max(1);
        if half != self.half {
            self.half = half;
            if self.current.len() >= half {
                self.turn_over();
            }
            if self.previous.len() > half {
                self.previous.clear();
            }
            self.current.shrink_to(half);
            self.previous.shrink_to(half);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether the map is empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`, counting as a use.
    pub fn get(&mut self, key: u64) -> Option<V> {
        if let Some(v) = self.current.get(&key) {
            return Some(*v);
        }
        let v = self.previous.remove(&key)?;
        self.put(key, v);
        Some(v)
    }

    /// The value of `key` without counting as a use.
    pub fn peek(&self, key: u64) -> Option<V> {
        self.current
            .get(&key)
            .or_else(|| self.previous.get(&key))
            .copied()
    }

    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: u64, value: V) {
        self.previous.remove(&key);
        self.put(key, value);
    }

    fn put(&mut self, key: u64, value: V) {
        self.current.insert(key, value);
        if self.current.len() >= self.half {
            self.turn_over();
        }
    }

    /// The current generation becomes the previous one; the old previous one is emptied and
    /// reused, keeping its allocation, so a full map's memory stays flat instead of being
    /// freed and grown again at every turn.
    fn turn_over(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_reuses_its_memory_and_a_smaller_bound_returns_it() {
        let mut lru = Lru::new(64);
        for k in 0..64u64 {
            lru.insert(k, k);
        }
        // Two turns: the generation emptied last kept its allocation.
        assert!(lru.current.is_empty());
        assert!(lru.current.capacity() >= 32, "{}", lru.current.capacity());
        assert!(lru.previous.capacity() >= 32);
        lru.set_capacity(4);
        assert!(lru.current.capacity() < 32 && lru.previous.capacity() < 32);
        assert!(lru.len() <= 4);
    }

    #[test]
    fn bounded_and_recently_used_entries_survive() {
        let mut lru = Lru::new(4);
        lru.insert(0, 0);
        lru.insert(1, 1);
        // 0 and 1 are the previous generation now; using 0 moves it forward.
        assert_eq!(lru.get(0), Some(0));
        lru.insert(10, 10);
        lru.insert(11, 11);
        assert!(lru.len() <= 4);
        assert_eq!(lru.peek(1), None, "the unused old entry is forgotten");
        assert_eq!(lru.peek(0), Some(0), "the used one survived a rotation");
        for k in 0..10_000u64 {
            lru.insert(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k);
            assert!(lru.len() <= lru.capacity());
        }
    }

    #[test]
    fn insert_replaces_and_shrinking_bounds_at_once() {
        let mut lru = Lru::new(100);
        lru.insert(7, 1);
        lru.insert(7, 2);
        assert_eq!(lru.get(7), Some(2));
        assert_eq!(lru.len(), 1);
        for k in 0..90u64 {
            lru.insert(k + 100, k);
        }
        lru.set_capacity(10);
        assert!(lru.len() <= 10, "{}", lru.len());
        let mut tiny: Lru<u8> = Lru::new(1);
        tiny.insert(1, 1);
        tiny.insert(2, 2);
        tiny.insert(3, 3);
        assert!(tiny.len() <= 2);
        assert!(!tiny.is_empty());
    }
}
