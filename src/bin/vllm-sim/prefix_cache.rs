//! A bounded LRU of prompt-prefix blocks, the way vLLM's automatic prefix caching keys
//! KV blocks: each full block is identified by a hash chained over every block before it,
//! so a block hits only when the whole prefix up to it was seen before.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// How much of one prompt the cache already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixHit {
    /// Characters covered by leading blocks that were cached.
    pub hit_chars: usize,
    /// Characters in the prompt.
    pub prompt_chars: usize,
}

impl PrefixHit {
    /// Fraction of the prompt that was cached, 0.0 to 1.0.
    pub fn fraction(self) -> f64 {
        if self.prompt_chars == 0 {
            0.0
        } else {
            self.hit_chars as f64 / self.prompt_chars as f64
        }
    }
}

#[derive(Debug)]
pub struct PrefixCache {
    block_chars: usize,
    capacity: usize,
    tick: u64,
    /// Block hash -> tick of its last use.
    last_used: HashMap<u64, u64>,
    /// Tick of last use -> block hash; the first entry is the eviction candidate.
    by_age: BTreeMap<u64, u64>,
}

impl PrefixCache {
    pub fn new(block_chars: usize, capacity: usize) -> Self {
        Self {
            block_chars: block_chars.max(1),
            capacity,
            tick: 0,
            last_used: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.last_used.len()
    }

    /// Counts the prompt's leading full blocks already cached, then caches (or refreshes)
    /// all of its full blocks. A partial last block is never cached, as in vLLM.
    pub fn lookup_and_insert(&mut self, prompt: &str) -> PrefixHit {
        let chars: Vec<char> = prompt.chars().collect();
        let mut hit_blocks = 0;
        let mut still_hitting = true;
        let mut parent = 0u64;
        for block in chars.chunks_exact(self.block_chars) {
            let mut h = DefaultHasher::new();
            parent.hash(&mut h);
            block.hash(&mut h);
            parent = h.finish();
            if still_hitting && self.last_used.contains_key(&parent) {
                hit_blocks += 1;
            } else {
                still_hitting = false;
            }
            self.touch(parent);
        }
        PrefixHit {
            hit_chars: hit_blocks * self.block_chars,
            prompt_chars: chars.len(),
        }
    }

    fn touch(&mut self, block: u64) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        if let Some(old) = self.last_used.insert(block, self.tick) {
            self.by_age.remove(&old);
        }
        self.by_age.insert(self.tick, block);
        while self.last_used.len() > self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.last_used.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_prefix_hits_only_full_leading_blocks() {
        let mut c = PrefixCache::new(4, 100);
        let first = c.lookup_and_insert("aaaabbbbcc");
        assert_eq!(first.hit_chars, 0);
        assert_eq!(first.prompt_chars, 10);
        // Same two leading blocks, then a different third one.
        let second = c.lookup_and_insert("aaaabbbbdddd");
        assert_eq!(second.hit_chars, 8);
        assert!((second.fraction() - 8.0 / 12.0).abs() < 1e-9);
        // A changed first block breaks the chain even though the second block repeats.
        let third = c.lookup_and_insert("xxxxbbbb");
        assert_eq!(third.hit_chars, 0);
    }

    #[test]
    fn bounded_and_least_recently_used_evicted() {
        let mut c = PrefixCache::new(1, 3);
        c.lookup_and_insert("abc"); // blocks a, ab, abc
        assert_eq!(c.len(), 3);
        c.lookup_and_insert("xy"); // evicts a, ab
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup_and_insert("abc").hit_chars, 0);
        assert!(c.len() <= 3);
    }

    #[test]
    fn zero_capacity_never_hits() {
        let mut c = PrefixCache::new(2, 0);
        c.lookup_and_insert("abcd");
        assert_eq!(c.lookup_and_insert("abcd").hit_chars, 0);
        assert_eq!(c.len(), 0);
    }
}
