//! The bookkeeping behind [`super::SemanticCache`]: each scope's entries beside their
//! [`Index`], and the orders that find what to drop without a scan (least recently used, and
//! soonest expiry).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::answer::Answer;
use super::guard::Fingerprint;
use super::index::{Index, dot};
use super::store::{CacheLimits, Scope};

/// One answer kept, at its slot in its shelf's [`Index`].
pub(super) struct Entry {
    pub(super) id: u64,
    pub(super) fingerprint: Fingerprint,
    /// A hash of `fingerprint`, the key under which [`Shelf::by_fingerprint`] holds it.
    pub(super) fingerprint_hash: u64,
    pub(super) answer: Arc<Answer>,
    pub(super) expires: Instant,
    /// The tick under which [`Inner::order`] holds the entry.
    pub(super) queued: u64,
    /// The tick of its latest use; a lookup sets it under the read lock, and eviction moves
    /// the entry in `order` when it finds the two apart.
    pub(super) used: AtomicU64,
    pub(super) bytes: usize,
}

/// Where entries are shelved: a scope and the width of their embeddings (a new embedding
/// model's width starts a new shelf, and the old one ages out).
pub(super) type ShelfKey = (Scope, usize);

/// One scope's entries of one width; `entries[i]` is row `i` of `index`.
pub(super) struct Shelf {
    pub(super) index: Index,
    pub(super) entries: Vec<Entry>,
    /// Ids by fingerprint hash: the candidates a near-identical prompt replaces.
    pub(super) by_fingerprint: HashMap<u64, Vec<u64>>,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) shelves: HashMap<ShelfKey, Shelf>,
    /// Each entry's shelf and slot, by id.
    pub(super) places: HashMap<u64, (ShelfKey, usize)>,
    /// Ids by the tick they were queued under, least recently used first once the ticks of
    /// later uses are applied.
    pub(super) order: BTreeMap<u64, u64>,
    /// Ids by expiry, soonest first.
    pub(super) expiry: BTreeSet<(Instant, u64)>,
    /// Ticks of inserts and uses.
    pub(super) clock: AtomicU64,
    pub(super) next_id: u64,
    pub(super) bytes: usize,
}

impl Inner {
    pub(super) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn entry(&self, id: u64) -> Option<&Entry> {
        let (key, slot) = self.places.get(&id)?;
        self.shelves.get(key)?.entries.get(*slot)
    }

    /// The entry in `key` a prompt with `fingerprint` and `embedding` replaces.
    pub(super) fn same_prompt(
        &self,
        key: ShelfKey,
        fingerprint_hash: u64,
        fingerprint: &Fingerprint,
        embedding: &[f32],
    ) -> Option<u64> {
        let shelf = self.shelves.get(&key)?;
        let ids = shelf.by_fingerprint.get(&fingerprint_hash)?;
        ids.iter().copied().find(|id| {
            self.places.get(id).is_some_and(|&(_, slot)| {
                shelf.entries.get(slot).is_some_and(|e| {
                    e.fingerprint == *fingerprint
                        && dot(shelf.index.row(slot), embedding) >= SAME_PROMPT
                })
            })
        })
    }

    /// Keeps `entry` with `embedding` in `key`'s shelf.
    pub(super) fn add(&mut self, key: ShelfKey, entry: Entry, embedding: &[f32]) {
        let shelf = self.shelves.entry(key).or_insert_with(|| Shelf {
            index: Index::new(key.1),
            entries: Vec::new(),
            by_fingerprint: HashMap::new(),
        });
        let slot = shelf.index.push(embedding);
        shelf
            .by_fingerprint
            .entry(entry.fingerprint_hash)
            .or_default()
            .push(entry.id);
        self.places.insert(entry.id, (key, slot));
        self.order.insert(entry.queued, entry.id);
        self.expiry.insert((entry.expires, entry.id));
        self.bytes += entry.bytes;
        shelf.entries.push(entry);
    }

    /// Forgets entry `id` everywhere.
    pub(super) fn remove(&mut self, id: u64) {
        let Some((key, slot)) = self.places.remove(&id) else {
            return;
        };
        let Some(shelf) = self.shelves.get_mut(&key) else {
            return;
        };
        if slot >= shelf.entries.len() {
            return;
        }
        let entry = shelf.entries.swap_remove(slot);
        shelf.index.swap_remove(slot);
        if let Some(moved) = shelf.entries.get(slot)
            && let Some(place) = self.places.get_mut(&moved.id)
        {
            place.1 = slot;
        }
        if let Some(ids) = shelf.by_fingerprint.get_mut(&entry.fingerprint_hash) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                shelf.by_fingerprint.remove(&entry.fingerprint_hash);
            }
        }
        if shelf.entries.is_empty() {
            self.shelves.remove(&key);
        }
        self.order.remove(&entry.queued);
        self.expiry.remove(&(entry.expires, id));
        self.bytes -= entry.bytes;
    }

    /// Drops every entry expired by `now`.
    pub(super) fn drop_expired(&mut self, now: Instant) {
        while let Some(&(expires, id)) = self.expiry.first()
            && expires <= now
        {
            self.expiry.pop_first();
            self.remove(id);
        }
    }

    /// Drops the least recently used entries until within `limits`. An entry used since it
    /// was queued is queued again under its use's tick instead; that happens once per use,
    /// so the loop ends.
    pub(super) fn evict(&mut self, limits: CacheLimits) {
        while self.places.len() > limits.max_entries || self.bytes > limits.max_bytes {
            let Some((queued, id)) = self.order.pop_first() else {
                break;
            };
            let used = self
                .entry(id)
                .map(|e| e.used.load(Ordering::Relaxed))
                .unwrap_or(queued);
            if used > queued {
                self.order.insert(used, id);
                if let Some((key, slot)) = self.places.get(&id)
                    && let Some(e) = self
                        .shelves
                        .get_mut(key)
                        .and_then(|s| s.entries.get_mut(*slot))
                {
                    e.queued = used;
                }
            } else {
                self.remove(id);
            }
        }
    }
}

/// Similarity at which two prompts count as the same (one entry replaces the other).
pub(super) const SAME_PROMPT: f32 = 0.9999;

pub(super) fn hash_of(fingerprint: &Fingerprint) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(fingerprint)
}
