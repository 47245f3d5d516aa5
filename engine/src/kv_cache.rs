//! Paged key/value cache.
//!
//! Keys and values live in fixed-size blocks of `block_rows` positions taken from a shared
//! [`BlockPool`]; each sequence keeps, per layer, a block table (the list of its blocks in
//! position order). Memory grows a block at a time with the sequence instead of being reserved
//! for the maximum length, and a finished or preempted sequence gives its blocks back at once.
//!
//! Chunked-attention layers keep only the current chunk (a query at position `p` sees keys in
//! `[p / C * C, p]`): after every step they give back the blocks wholly before the chunk, so they
//! never hold more than about `attention_chunk_size` rows whatever the context length;
//! full-attention (NoPE) layers keep every position.

use crate::config::TextConfig;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

/// One block: keys `[block_rows, kv_dim]` followed by values `[block_rows, kv_dim]`.
pub type Block = Box<[f32]>;

/// Default positions per block.
pub const DEFAULT_BLOCK_ROWS: usize = 16;

#[derive(Default)]
struct PoolState {
    free: Vec<Block>,
    used: usize,
    peak: usize,
}

/// A pool of KV blocks shared by the sequences of one model replica, bounded by a block count.
pub struct BlockPool {
    block_rows: usize,
    kv_dim: usize,
    capacity: usize,
    state: Mutex<PoolState>,
}

impl BlockPool {
    /// A pool of at most `capacity` blocks of `block_rows` positions for `cfg`'s layers.
    pub fn new(cfg: &TextConfig, block_rows: usize, capacity: usize) -> Arc<Self> {
        let block_rows = block_rows.max(1);
        Arc::new(Self { block_rows, kv_dim: cfg.kv_dim(), capacity, state: Mutex::default() })
    }

    /// A pool holding at most `bytes` of blocks.
    pub fn with_bytes(cfg: &TextConfig, block_rows: usize, bytes: usize) -> Arc<Self> {
        let per = Self::bytes_per_block(cfg, block_rows.max(1));
        Self::new(cfg, block_rows, bytes / per)
    }

    /// A pool without a bound (single-sequence use: generation, scoring, tests).
    pub fn unbounded(cfg: &TextConfig) -> Arc<Self> {
        Self::new(cfg, DEFAULT_BLOCK_ROWS, usize::MAX)
    }

    /// Bytes of one block for `cfg`.
    pub fn bytes_per_block(cfg: &TextConfig, block_rows: usize) -> usize {
        2 * block_rows * cfg.kv_dim() * std::mem::size_of::<f32>()
    }

    /// Positions per block.
    pub fn block_rows(&self) -> usize {
        self.block_rows
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        2 * self.block_rows * self.kv_dim * std::mem::size_of::<f32>()
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

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves counters that are still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Option<Block> {
        let mut s = self.lock();
        if s.used >= self.capacity {
            return None;
        }
        s.used += 1;
        s.peak = s.peak.max(s.used);
        let reused = s.free.pop();
        drop(s);
        Some(reused.unwrap_or_else(|| vec![0f32; 2 * self.block_rows * self.kv_dim].into_boxed_slice()))
    }

    fn give(&self, blocks: impl Iterator<Item = Block>) {
        let mut s = self.lock();
        for b in blocks {
            s.used -= 1;
            // Keep freed blocks for reuse only while the pool is bounded (a bounded pool's memory
            // is capped anyway; an unbounded one belongs to one sequence and dies with it).
            if self.capacity != usize::MAX {
                s.free.push(b);
            }
        }
    }
}

/// Keys and values of one layer for the positions `[start, start + rows)`.
#[derive(Debug, Default)]
pub struct LayerCache {
    pub(crate) blocks: Vec<Block>,
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

    /// Blocks needed to append `extra` rows (before any trimming).
    fn blocks_to_append(&self, extra: usize, block_rows: usize) -> usize {
        (self.rows + extra).div_ceil(block_rows).saturating_sub(self.blocks.len())
    }
}

/// The cache of one sequence across all layers, and how many of its tokens the model has seen.
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) seen: usize,
    kv_dim: usize,
    pool: Arc<BlockPool>,
}

impl KvCache {
    /// An empty cache shaped for `cfg` drawing blocks from `pool`.
    pub fn new(cfg: &TextConfig, pool: Arc<BlockPool>) -> Self {
        let layers = (0..cfg.num_hidden_layers).map(|l| LayerCache { chunk: cfg.chunk_of(l), ..Default::default() }).collect();
        Self { layers, seen: 0, kv_dim: cfg.kv_dim(), pool }
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
    }

    /// Appends keys and values `[n, kv_dim]` to layer `layer`.
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let (kvd, br) = (self.kv_dim, self.pool.block_rows);
        let need = self.layers[layer].blocks_to_append(k.len() / kvd, br);
        let mut fresh = Vec::with_capacity(need);
        for _ in 0..need {
            match self.pool.take() {
                Some(b) => fresh.push(b),
                None => {
                    let cap = self.pool.capacity;
                    self.pool.give(fresh.into_iter());
                    return Err(Error::KvExhausted(cap));
                }
            }
        }
        let l = &mut self.layers[layer];
        l.blocks.extend(fresh);
        for (kr, vr) in k.chunks_exact(kvd).zip(v.chunks_exact(kvd)) {
            let (b, r) = (l.rows / br, l.rows % br);
            let block = &mut l.blocks[b];
            block[r * kvd..(r + 1) * kvd].copy_from_slice(kr);
            block[(br + r) * kvd..(br + r + 1) * kvd].copy_from_slice(vr);
            l.rows += 1;
        }
        Ok(())
    }

    /// Gives back the blocks of layer `layer` that no future query can see (chunked layers only),
    /// given that the next position is `next`.
    pub(crate) fn trim(&mut self, layer: usize, next: usize) {
        let br = self.pool.block_rows;
        let l = &mut self.layers[layer];
        let Some(c) = l.chunk else { return };
        let keep_from = next / c * c;
        let drop = (keep_from.saturating_sub(l.start) / br).min(l.blocks.len());
        if drop > 0 {
            self.pool.give(l.blocks.drain(..drop));
            l.start += drop * br;
            l.rows -= (drop * br).min(l.rows);
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

    /// Upper bound of the bytes a fresh sequence holds after `tokens` positions fed one at a time
    /// with the default block size.
    pub fn bytes_for(cfg: &TextConfig, tokens: usize) -> usize {
        Self::max_blocks_for(cfg, DEFAULT_BLOCK_ROWS, tokens, 1) * BlockPool::bytes_per_block(cfg, DEFAULT_BLOCK_ROWS)
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
