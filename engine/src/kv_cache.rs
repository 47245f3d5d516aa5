//! Per-sequence key/value cache.
//!
//! Chunked-attention layers keep only the current chunk (a query at position `p` sees keys in
//! `[p / C * C, p]`), so their cache never exceeds `attention_chunk_size` rows whatever the
//! context length; full-attention (NoPE) layers keep every position.

use crate::config::TextConfig;

/// Keys and values of one layer for the positions `[start, start + rows)`, row-major
/// `[rows, num_key_value_heads * head_dim]`.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) start: usize,
    chunk: Option<usize>,
}

impl LayerCache {
    /// Position of the first cached row.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Number of cached positions.
    pub fn rows(&self, kv_dim: usize) -> usize {
        self.k.len() / kv_dim
    }

    pub(crate) fn append(&mut self, k: &[f32], v: &[f32]) {
        self.k.extend_from_slice(k);
        self.v.extend_from_slice(v);
    }

    /// Drops rows no future query can see, given that the next position is `next`.
    pub(crate) fn trim(&mut self, next: usize, kv_dim: usize) {
        if let Some(c) = self.chunk {
            let keep_from = next / c * c;
            if keep_from > self.start {
                let drop = (keep_from - self.start).min(self.rows(kv_dim)) * kv_dim;
                self.k.drain(..drop);
                self.v.drain(..drop);
                self.start = keep_from;
            }
        }
    }

    fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f32>()
    }
}

/// The cache of one sequence across all layers, and how many of its tokens the model has seen.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) seen: usize,
    kv_dim: usize,
}

impl KvCache {
    /// An empty cache shaped for `cfg`.
    pub fn new(cfg: &TextConfig) -> Self {
        let layers = (0..cfg.num_hidden_layers).map(|l| LayerCache { chunk: cfg.chunk_of(l), ..Default::default() }).collect();
        Self { layers, seen: 0, kv_dim: cfg.kv_dim() }
    }

    /// Tokens processed so far: the position of the next token.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Bytes of keys and values held now.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Cached positions of layer `layer`.
    pub fn layer_rows(&self, layer: usize) -> usize {
        self.layers[layer].rows(self.kv_dim)
    }

    /// Forgets everything (the sequence starts again at position 0).
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            l.k.clear();
            l.v.clear();
            l.start = 0;
        }
        self.seen = 0;
    }

    /// Upper bound of the bytes this cache holds after `tokens` positions.
    pub fn bytes_for(cfg: &TextConfig, tokens: usize) -> usize {
        (0..cfg.num_hidden_layers)
            .map(|l| {
                let rows = match cfg.chunk_of(l) {
                    Some(c) => tokens.min(c),
                    None => tokens,
                };
                2 * rows * cfg.kv_dim() * std::mem::size_of::<f32>()
            })
            .sum()
    }
}
