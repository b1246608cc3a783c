//! Prefix affinity: prompts cut into blocks, each named by a hash chained over every block
//! before it (as vLLM names KV-cache blocks), and a bounded index from block to the endpoint
//! that last served it.

use std::hash::{DefaultHasher, Hasher};
use std::net::SocketAddr;

use super::lru::Lru;

/// At most this many leading blocks of a prompt are hashed and looked up.
pub const MAX_BLOCKS: usize = 256;

/// Separates the pieces of a prompt, so `["ab", "c"]` and `["a", "bc"]` differ.
const SEPARATOR: u8 = 0x1e;

/// The chained hashes of the full blocks of `pieces` (joined with a separator), at most
/// [`MAX_BLOCKS`]. A partial last block has no hash.
pub fn block_hashes(pieces: &[&str], block_size: usize) -> Vec<u64> {
    let block_size = block_size.max(1);
    let mut blocks = Vec::new();
    let mut hasher = DefaultHasher::new();
    let mut filled = 0;
    let bytes = pieces
        .iter()
        .flat_map(|p| [p.as_bytes(), std::slice::from_ref(&SEPARATOR)]);
    'outer: for mut chunk in bytes {
        while !chunk.is_empty() {
            let take = (block_size - filled).min(chunk.len());
            hasher.write(&chunk[..take]);
            filled += take;
            chunk = &chunk[take..];
            if filled == block_size {
                let hash = hasher.finish();
                blocks.push(hash);
                if blocks.len() == MAX_BLOCKS {
                    break 'outer;
                }
                hasher = DefaultHasher::new();
                hasher.write_u64(hash);
                filled = 0;
            }
        }
    }
    blocks
}

/// Block hash → the endpoint that last served a prompt with that block, bounded.
#[derive(Debug)]
pub struct PrefixIndex {
    blocks: Lru<SocketAddr>,
}

impl PrefixIndex {
    /// An index of at most `capacity` blocks.
    pub fn new(capacity: usize) -> Self {
        Self {
            blocks: Lru::new(capacity),
        }
    }

    /// Adapts the bound to the pool's current setting.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.blocks.set_capacity(capacity);
    }

    /// Endpoints that served a prefix of this prompt, longest prefix first, each once, with
    /// the number of leading blocks it matched. Stops at the first block never seen.
    pub fn matches(&mut self, blocks: &[u64]) -> Vec<(SocketAddr, usize)> {
        let mut hits: Vec<(SocketAddr, usize)> = Vec::new();
        for (i, &block) in blocks.iter().enumerate() {
            let Some(endpoint) = self.blocks.get(block) else {
                break;
            };
            match hits.iter_mut().find(|(e, _)| *e == endpoint) {
                Some(hit) => hit.1 = i + 1,
                None => hits.push((endpoint, i + 1)),
            }
        }
        hits.sort_by_key(|hit| std::cmp::Reverse(hit.1));
        hits
    }

    /// Remembers that `endpoint` serves this prompt now. The deepest blocks go in first, so
    /// the shared leading blocks are the most recently used and forgotten last.
    pub fn record(&mut self, blocks: &[u64], endpoint: SocketAddr) {
        for &block in blocks.iter().rev() {
            self.blocks.insert(block, endpoint);
        }
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn hashes_chain_over_earlier_blocks_and_ignore_the_partial_tail() {
        let a = block_hashes(&["aaaabbbbcc"], 4);
        assert_eq!(a.len(), 2, "the separator makes 11 bytes: two full blocks");
        let b = block_hashes(&["aaaabbbbdd", "more"], 4);
        assert_eq!(a[..2], b[..2], "same leading blocks, same hashes");
        let c = block_hashes(&["xxxxbbbb"], 4);
        assert_ne!(a[1], c[1], "a changed first block changes every later hash");
        assert_ne!(
            block_hashes(&["ab", "cd"], 5),
            block_hashes(&["a", "bcd"], 5),
            "piece boundaries count"
        );
        assert!(block_hashes(&["abc"], 8).is_empty());
        let long = "x".repeat(10 * MAX_BLOCKS);
        assert_eq!(block_hashes(&[&long], 4).len(), MAX_BLOCKS);
    }

    #[test]
    fn longest_match_first_and_each_endpoint_once() {
        let mut index = PrefixIndex::new(1000);
        let shared = "s".repeat(64);
        let one = block_hashes(&[&shared, "first conversation goes on and on"], 16);
        let two = block_hashes(&[&shared, "second conversation, longer than one"], 16);
        index.record(&one, addr(1));
        index.record(&two, addr(2));
        // A third prompt with the same system prefix and the first conversation's tail.
        let again = block_hashes(&[&shared, "first conversation goes on and on", "new"], 16);
        // The shared blocks point at endpoint 2 (it served them last); 1 matched deeper.
        assert_eq!(index.matches(&again), [(addr(1), one.len()), (addr(2), 4)]);
        let fresh = block_hashes(&["something else entirely, long enough"], 16);
        assert!(index.matches(&fresh).is_empty());
    }

    #[test]
    fn bounded() {
        let mut index = PrefixIndex::new(64);
        for i in 0..1000 {
            let text = format!("{i:08} prompt text that spans several blocks of sixteen");
            index.record(&block_hashes(&[&text], 16), addr(1));
            assert!(index.len() <= 64);
        }
    }
}
