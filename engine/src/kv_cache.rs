//! Paged key/value cache: the bookkeeping, the same on every device.
//!
//! Keys and values live in fixed-size blocks of `block_rows` positions taken from a shared
//! [`BlockPool`]; each sequence keeps, per layer, a block table (the ids of its blocks in position
//! order). Memory grows a block at a time with the sequence instead of being reserved for the
//! maximum length, and a finished or preempted sequence gives its blocks back at once. The blocks'
//! storage belongs to the device ([`KvArena`]): host memory on the CPU, device memory on a GPU;
//! a block holds `block_rows` keys `[block_rows, kv_dim]` followed by as many values.
//!
//! A step first reserves the rows of its new tokens in every layer ([`KvCache::reserve`]: all or
//! nothing), the device writes the keys and values there, then the step is committed
//! ([`KvCache::commit`]). Chunked-attention layers keep only the current chunk (a query at position
//! `p` sees keys in `[p / C * C, p]`): at commit they give back the blocks wholly before the chunk,
//! so they never hold more than about `attention_chunk_size` rows whatever the context length;
//! full-attention (NoPE) layers keep every position.

use crate::config::TextConfig;
use crate::error::{Error, Result};
use std::any::Any;
use std::sync::{Arc, Mutex};

/// Default positions per block.
pub const DEFAULT_BLOCK_ROWS: usize = 16;

/// Storage of KV blocks on a device, grown in slabs. Block `id` lives in slab `id >> shift()` at
/// index `id & ((1 << shift()) - 1)`.
pub trait KvArena: Send + Sync {
    /// Adds a slab; returns how many block ids the arena holds now (ids `0..n` are valid).
    fn grow(&self) -> Result<usize>;
    /// Block ids the arena holds now.
    fn len(&self) -> usize;
    /// True when the arena holds no block yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of one block.
    fn block_bytes(&self) -> usize;
    /// The device's own type, for its kernels.
    fn as_any(&self) -> &dyn Any;
}

#[derive(Default)]
struct PoolState {
    free: Vec<u32>,
    /// Ids `next..arena.len()` were never handed out.
    next: u32,
    used: usize,
    peak: usize,
}

/// A pool of KV blocks shared by the sequences of one model replica, bounded by a block count.
pub struct BlockPool {
    block_rows: usize,
    capacity: usize,
    arena: Arc<dyn KvArena>,
    state: Mutex<PoolState>,
}

impl BlockPool {
    /// A pool of at most `capacity` blocks of `block_rows` positions stored in `arena`.
    pub fn new(arena: Arc<dyn KvArena>, block_rows: usize, capacity: usize) -> Arc<Self> {
        Arc::new(Self { block_rows: block_rows.max(1), capacity, arena, state: Mutex::default() })
    }

    /// Positions per block.
    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.arena.block_bytes()
    }

    /// Blocks the pool may hand out in all.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks held by sequences now.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    /// Blocks that can still be handed out.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.used())
    }

    /// The most blocks ever held at once.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Where the blocks live (the device's kernels look inside).
    pub fn arena(&self) -> &Arc<dyn KvArena> {
        &self.arena
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves counters that are still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `n` blocks, or none: `Ok(None)` when the pool has fewer than `n` left.
    fn take(&self, n: usize) -> Result<Option<Vec<u32>>> {
        let mut s = self.lock();
        if s.used + n > self.capacity {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if let Some(id) = s.free.pop() {
                out.push(id);
                continue;
            }
            if s.next as usize >= self.arena.len()
                && let Err(e) = self.arena.grow()
            {
                s.free.extend(out);
                return Err(e);
            }
            out.push(s.next);
            s.next += 1;
        }
        s.used += n;
        s.peak = s.peak.max(s.used);
        Ok(Some(out))
    }

    fn give(&self, blocks: impl Iterator<Item = u32>) {
        let mut s = self.lock();
        for b in blocks {
            s.used -= 1;
            s.free.push(b);
        }
    }
}

/// Keys and values of one layer for the positions `[start, start + rows)`.
#[derive(Debug, Default)]
pub struct LayerCache {
    pub(crate) blocks: Vec<u32>,
    /// Position of row 0 of `blocks[0]` (a multiple of the block size).
    pub(crate) start: usize,
    pub(crate) rows: usize,
    chunk: Option<usize>,
}

impl LayerCache {
    /// Position of the first cached row.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Number of cached positions.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The block ids, in position order.
    pub fn block_ids(&self) -> &[u32] {
        &self.blocks
    }

    /// Blocks needed to append `extra` rows (before any trimming).
    fn blocks_to_append(&self, extra: usize, block_rows: usize) -> usize {
        (self.rows + extra).div_ceil(block_rows).saturating_sub(self.blocks.len())
    }
}

/// The cache of one sequence across all layers, and how many of its tokens the model has seen.
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) seen: usize,
    /// Rows reserved for the step in progress (not yet committed).
    pending: usize,
    pool: Arc<BlockPool>,
}

impl KvCache {
    /// An empty cache shaped for `cfg` drawing blocks from `pool`.
    pub fn new(cfg: &TextConfig, pool: Arc<BlockPool>) -> Self {
        let layers = (0..cfg.num_hidden_layers).map(|l| LayerCache { chunk: cfg.chunk_of(l), ..Default::default() }).collect();
        Self { layers, seen: 0, pending: 0, pool }
    }

    /// Tokens processed so far: the position of the next token.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Blocks held now, all layers.
    pub fn blocks(&self) -> usize {
        self.layers.iter().map(|l| l.blocks.len()).sum()
    }

    /// Bytes of keys and values held now (whole blocks).
    pub fn bytes(&self) -> usize {
        self.blocks() * self.pool.block_bytes()
    }

    /// Cached positions of layer `layer`.
    pub fn layer_rows(&self, layer: usize) -> usize {
        self.layers[layer].rows
    }

    /// Blocks of layer `layer`.
    pub fn layer_blocks(&self, layer: usize) -> usize {
        self.layers[layer].blocks.len()
    }

    /// The cache of layer `layer`.
    pub fn layer(&self, layer: usize) -> &LayerCache {
        &self.layers[layer]
    }

    /// Blocks the next step needs from the pool to take `tokens` more positions.
    pub fn blocks_to_append(&self, tokens: usize) -> usize {
        self.layers.iter().map(|l| l.blocks_to_append(tokens, self.pool.block_rows)).sum()
    }

    /// Forgets everything (the sequence starts again at position 0) and gives the blocks back.
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            self.pool.give(l.blocks.drain(..));
            l.start = 0;
            l.rows = 0;
        }
        self.seen = 0;
        self.pending = 0;
    }

    /// Reserves the rows of `n` new positions in every layer (all or nothing): they are written by
    /// the step, then [`KvCache::commit`]ted or [`KvCache::unreserve`]d.
    pub(crate) fn reserve(&mut self, n: usize) -> Result<()> {
        let br = self.pool.block_rows;
        let need: Vec<usize> = self.layers.iter().map(|l| l.blocks_to_append(n, br)).collect();
        let Some(mut fresh) = self.pool.take(need.iter().sum())? else {
            return Err(Error::KvExhausted(self.pool.capacity));
        };
        for (l, k) in self.layers.iter_mut().zip(need) {
            l.blocks.extend(fresh.drain(..k));
            l.rows += n;
        }
        self.pending = n;
        Ok(())
    }

    /// Gives back the rows reserved for a step that failed.
    pub(crate) fn unreserve(&mut self) {
        let (br, n) = (self.pool.block_rows, std::mem::take(&mut self.pending));
        for l in &mut self.layers {
            l.rows -= n.min(l.rows);
            let keep = l.rows.div_ceil(br);
            if l.blocks.len() > keep {
                self.pool.give(l.blocks.drain(keep..));
            }
        }
    }

    /// Makes the reserved rows part of the sequence, and gives back the blocks no future query of
    /// a chunked layer can see.
    pub(crate) fn commit(&mut self) {
        self.seen += std::mem::take(&mut self.pending);
        let (br, next) = (self.pool.block_rows, self.seen);
        for l in &mut self.layers {
            let Some(c) = l.chunk else { continue };
            let keep_from = next / c * c;
            let drop = (keep_from.saturating_sub(l.start) / br).min(l.blocks.len());
            if drop > 0 {
                self.pool.give(l.blocks.drain(..drop));
                l.start += drop * br;
                l.rows -= (drop * br).min(l.rows);
            }
        }
    }

    /// The blocks a fresh sequence holds at most while processing `tokens` positions, fed at most
    /// `step` positions at a time (chunked layers hold their chunk plus one step, block-aligned).
    pub fn max_blocks_for(cfg: &TextConfig, block_rows: usize, tokens: usize, step: usize) -> usize {
        let br = block_rows.max(1);
        (0..cfg.num_hidden_layers)
            .map(|l| {
                let all = tokens.div_ceil(br);
                match cfg.chunk_of(l) {
                    Some(c) => all.min((c + step.max(1)).div_ceil(br) + 1),
                    None => all,
                }
            })
            .sum()
    }

    /// The pool this cache draws from.
    pub fn pool(&self) -> &Arc<BlockPool> {
        &self.pool
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Block ids without storage, for the bookkeeping's tests.
#[cfg(test)]
pub(crate) mod test_arena {
    use super::KvArena;
    use crate::error::{Error, Result};
    use std::any::Any;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Grows `step` ids at a time, failing past `limit`.
    pub struct Ids {
        pub len: AtomicUsize,
        pub step: usize,
        pub limit: usize,
    }

    impl Ids {
        pub fn new(step: usize, limit: usize) -> Self {
            Self { len: AtomicUsize::new(0), step, limit }
        }
    }

    impl KvArena for Ids {
        fn grow(&self) -> Result<usize> {
            let n = self.len.load(Ordering::SeqCst) + self.step;
            if n > self.limit {
                return Err(Error::Request("out of device memory".into()));
            }
            self.len.store(n, Ordering::SeqCst);
            Ok(n)
        }
        fn len(&self) -> usize {
            self.len.load(Ordering::SeqCst)
        }
        fn block_bytes(&self) -> usize {
            64
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_arena::Ids;
    use super::*;

    fn cfg() -> TextConfig {
        let json = r#"{"model_type": "llama4_text", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "intermediate_size_mlp": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": 4, "num_local_experts": 2, "attention_chunk_size": 8, "no_rope_layers": [1, 0]}"#;
        TextConfig::from_json_str(json, std::path::Path::new("config.json")).expect("config")
    }

    #[test]
    fn a_reservation_is_all_or_nothing_and_unreserve_gives_it_back() {
        let pool = BlockPool::new(Arc::new(Ids::new(4, 100)), 4, 5);
        let mut c = KvCache::new(&cfg(), pool.clone());
        c.reserve(6).expect("2 blocks per layer");
        assert_eq!((pool.used(), c.layer_rows(0), c.layer_rows(1)), (4, 6, 6));
        c.commit();
        assert!(matches!(c.reserve(8), Err(Error::KvExhausted(5))), "needs 4 more, 1 free");
        assert_eq!((pool.used(), c.layer_rows(0), c.seen()), (4, 6, 6), "nothing taken");
        c.reserve(1).expect("fits in the blocks held");
        c.unreserve();
        assert_eq!((pool.used(), c.layer_rows(1), c.seen()), (4, 6, 6));
    }

    #[test]
    fn chunked_layers_give_back_blocks_before_their_chunk_at_commit() {
        let pool = BlockPool::new(Arc::new(Ids::new(4, 100)), 4, 100);
        let mut c = KvCache::new(&cfg(), pool.clone());
        for _ in 0..19 {
            c.reserve(1).expect("room");
            c.commit();
        }
        // layer 0 is chunked (chunk 8): position 19 is in chunk [16, 24) -> rows 16..19, 1 block.
        assert_eq!((c.layer(0).start(), c.layer_rows(0), c.layer_blocks(0)), (16, 3, 1));
        assert_eq!((c.layer(1).start(), c.layer_rows(1), c.layer_blocks(1)), (0, 19, 5));
        assert_eq!(pool.used(), 6);
        drop(c);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn a_device_that_cannot_grow_is_an_error_and_the_pool_stays_whole() {
        let pool = BlockPool::new(Arc::new(Ids::new(4, 4)), 4, 100);
        let mut c = KvCache::new(&cfg(), pool.clone());
        c.reserve(8).expect("4 blocks fit the first slab");
        c.commit(); // the chunked layer gives its 2 blocks back
        assert_eq!(pool.used(), 2);
        let e = c.reserve(12).expect_err("6 blocks: 2 free ids, then the arena cannot grow");
        assert!(e.to_string().contains("out of device memory"), "{e}");
        assert_eq!((pool.used(), c.layer_rows(1)), (2, 8), "nothing kept of the failed reservation");
    }
}
