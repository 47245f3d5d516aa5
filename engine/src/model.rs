//! The Llama 4 text model (`Llama4ForCausalLM`): embeddings, decoder layers, final norm, LM head,
//! with a batched forward over several sequences at different positions — written once, above
//! the device layer ([`crate::device`]): [`Transformer`] is generic over a [`Backend`], and
//! [`Model`] erases which one.
//!
//! Reference: transformers `models/llama4/modeling_llama4.py` (`Llama4TextModel`,
//! `Llama4TextDecoderLayer`, `Llama4ForCausalLM`).

use crate::config::TextConfig;
use crate::device::{self, Backend, Device, DeviceReport, FeedForwardSpec, Held, LayerSpec, MoeWeights, StepPlan};
use crate::error::{Error, Result};
use crate::kv_cache::{BlockPool, DEFAULT_BLOCK_ROWS, KvArena, KvCache};
use crate::weights::{Checkpoint, WeightSource};
use candle_core::DType;
use std::path::Path;
use std::sync::Arc;

/// Which logits a sequence wants from a forward step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None (a prefill chunk whose end is not reached yet).
    None,
    /// The last position's (generation).
    Last,
    /// Every position's (scoring, parity tests).
    All,
}

/// One sequence's part of a batched forward step: its new tokens, continuing at `cache.seen()`.
pub struct SeqStep<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub logits: LogitsWanted,
}

enum FeedForward<B: Backend> {
    Dense(B::Mlp),
    Moe(B::Moe),
}

struct Layer<B: Backend> {
    input_layernorm: B::Vector,          // [hidden]
    post_attention_layernorm: B::Vector, // [hidden]
    self_attn: B::Attn,
    feed_forward: FeedForward<B>,
}

/// The model on one device.
pub(crate) struct Transformer<B: Backend> {
    dev: B,
    embed_tokens: B::Matrix, // [vocab, hidden]
    layers: Vec<Layer<B>>,
    norm: B::Vector,            // [hidden]
    lm_head: Option<B::Matrix>, // [vocab, hidden]; None when tied to the embeddings
}

impl<B: Backend> Transformer<B> {
    /// Loads every tensor of `cfg`'s layers from `src` onto the device.
    pub(crate) fn load(dev: B, cfg: &TextConfig, src: &dyn WeightSource) -> Result<Self> {
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let spec = LayerSpec::of(cfg, l);
            let feed_forward = match &spec.feed_forward {
                FeedForwardSpec::Dense(m) => FeedForward::Dense(dev.load_mlp(src, m)?),
                FeedForwardSpec::Moe(m) => FeedForward::Moe(dev.load_moe(src, m)?),
            };
            layers.push(Layer {
                input_layernorm: dev.load_vector(src, &spec.input_norm, h)?,
                post_attention_layernorm: dev.load_vector(src, &spec.post_attention_norm, h)?,
                self_attn: dev.load_attention(src, &spec.attention)?,
                feed_forward,
            });
        }
        let embed_tokens = dev.load_matrix(src, "model.embed_tokens.weight", v, h)?;
        let norm = dev.load_vector(src, "model.norm.weight", h)?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(dev.load_matrix(src, "lm_head.weight", v, h)?) };
        Ok(Self { dev, embed_tokens, layers, norm, lm_head })
    }
}

/// What [`Model`] needs of a [`Transformer`], whatever its device.
pub(crate) trait Engine: Send + Sync {
    fn run(&self, plan: &StepPlan<'_>) -> Result<Vec<f32>>;
    fn weight_bytes(&self) -> usize;
    fn active_weight_bytes(&self, vocab: usize) -> usize;
    fn expert_counts(&self) -> Result<Vec<(usize, Vec<u64>)>>;
    fn kv_arena(&self, kv_dim: usize, block_rows: usize, capacity: Option<usize>) -> Result<Arc<dyn KvArena>>;
    fn kv_arena_growable(&self, kv_dim: usize, block_rows: usize) -> Arc<dyn KvArena>;
    fn kv_block_bytes(&self, kv_dim: usize, block_rows: usize) -> usize;
    fn report(&self) -> DeviceReport;
}

impl<B: Backend> Transformer<B> {
    /// Bytes of the decoder layers: all of them, or only what one token reads (`active`).
    fn layer_bytes(&self, active: bool) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let ff = match &l.feed_forward {
                    FeedForward::Dense(m) => m.bytes(),
                    FeedForward::Moe(m) if active => m.active_bytes(),
                    FeedForward::Moe(m) => m.bytes(),
                };
                l.input_layernorm.bytes() + l.post_attention_layernorm.bytes() + l.self_attn.bytes() + ff
            })
            .sum()
    }
}

impl<B: Backend> Engine for Transformer<B> {
    fn run(&self, plan: &StepPlan<'_>) -> Result<Vec<f32>> {
        let dev = &self.dev;
        let mut st = dev.begin(plan)?;
        let mut x = dev.embed(&mut st, &self.embed_tokens)?; // [T, hidden]
        for (l, layer) in self.layers.iter().enumerate() {
            dev.attention(&mut st, l, &layer.input_layernorm, &layer.self_attn, &mut x)?;
            match &layer.feed_forward {
                FeedForward::Dense(m) => dev.mlp(&mut st, &layer.post_attention_layernorm, m, &mut x)?,
                FeedForward::Moe(m) => dev.moe(&mut st, &layer.post_attention_layernorm, m, &mut x)?,
            }
        }
        dev.logits(&mut st, &x, &self.norm, self.lm_head.as_ref().unwrap_or(&self.embed_tokens))
    }

    fn weight_bytes(&self) -> usize {
        let head = self.lm_head.as_ref().map_or(0, Held::bytes);
        self.layer_bytes(false) + self.embed_tokens.bytes() + self.norm.bytes() + head
    }

    fn active_weight_bytes(&self, vocab: usize) -> usize {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens).bytes();
        self.layer_bytes(true) + self.norm.bytes() + head + self.embed_tokens.bytes() / vocab.max(1)
    }

    fn expert_counts(&self) -> Result<Vec<(usize, Vec<u64>)>> {
        let mut out = vec![];
        for (i, l) in self.layers.iter().enumerate() {
            if let FeedForward::Moe(m) = &l.feed_forward {
                out.push((i, m.expert_counts()?));
            }
        }
        Ok(out)
    }

    fn kv_arena(&self, kv_dim: usize, block_rows: usize, capacity: Option<usize>) -> Result<Arc<dyn KvArena>> {
        match capacity {
            Some(c) => self.dev.kv_arena_reserved(kv_dim, block_rows, c),
            None => Ok(self.dev.kv_arena(kv_dim, block_rows)),
        }
    }

    fn kv_arena_growable(&self, kv_dim: usize, block_rows: usize) -> Arc<dyn KvArena> {
        self.dev.kv_arena(kv_dim, block_rows)
    }

    fn kv_block_bytes(&self, kv_dim: usize, block_rows: usize) -> usize {
        self.dev.kv_block_bytes(kv_dim, block_rows)
    }

    fn report(&self) -> DeviceReport {
        DeviceReport { weight_bytes: self.weight_bytes(), ..self.dev.report() }
    }
}

/// A loaded Llama 4 text model on a device.
pub struct Model {
    cfg: TextConfig,
    dtype: DType,
    device: Device,
    engine: Box<dyn Engine>,
}

impl Model {
    /// Loads `config.json` and the safetensors weights of the folder `dir` onto the CPU,
    /// holding weights in `dtype`.
    pub fn load(dir: &Path, dtype: DType) -> Result<Self> {
        Self::load_on(dir, dtype, Device::Cpu)
    }

    /// Loads `config.json` and the safetensors weights of the folder `dir` onto `device`.
    pub fn load_on(dir: &Path, dtype: DType, device: Device) -> Result<Self> {
        let cfg = TextConfig::from_path(&dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        let tie = cfg.tie_word_embeddings || !ckpt.contains("lm_head.weight");
        let mut cfg = cfg;
        cfg.tie_word_embeddings = tie;
        Self::from_source_on(cfg, &ckpt, dtype, device)
    }

    /// Builds the model on the CPU from any weight source (a checkpoint or random weights).
    pub fn from_source(cfg: TextConfig, src: &dyn WeightSource, dtype: DType) -> Result<Self> {
        Self::from_source_on(cfg, src, dtype, Device::Cpu)
    }

    /// Builds the model on `device` from any weight source.
    pub fn from_source_on(cfg: TextConfig, src: &dyn WeightSource, dtype: DType, device: Device) -> Result<Self> {
        let engine = device::open(device, &cfg, src, dtype)?;
        Ok(Self { cfg, dtype, device, engine })
    }

    /// The configuration.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// The dtype weights are held in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// What the device says of itself: its name, the bytes of weights on it, kernel launches.
    pub fn report(&self) -> DeviceReport {
        self.engine.report()
    }

    /// A pool of KV blocks of `block_rows` positions on this model's device, holding at most
    /// `bytes` (unbounded when `None`; a bounded pool may be reserved on the device at once).
    pub fn new_pool(&self, block_rows: usize, bytes: Option<usize>) -> Result<Arc<BlockPool>> {
        let br = block_rows.max(1);
        let capacity = bytes.map(|b| b / self.kv_block_bytes(br));
        let arena = self.engine.kv_arena(self.cfg.kv_dim(), br, capacity)?;
        Ok(BlockPool::new(arena, br, capacity.unwrap_or(usize::MAX)))
    }

    /// A fresh KV cache for one sequence, with its own unbounded block pool.
    pub fn new_cache(&self) -> KvCache {
        let arena = self.engine.kv_arena_growable(self.cfg.kv_dim(), DEFAULT_BLOCK_ROWS);
        KvCache::new(&self.cfg, BlockPool::new(arena, DEFAULT_BLOCK_ROWS, usize::MAX))
    }

    /// Bytes of one KV block of `block_rows` positions on this model's device.
    pub fn kv_block_bytes(&self, block_rows: usize) -> usize {
        self.engine.kv_block_bytes(self.cfg.kv_dim(), block_rows.max(1))
    }

    /// Upper bound of the KV bytes a fresh sequence holds after `tokens` positions fed one at a
    /// time with the default block size.
    pub fn kv_bytes_for(&self, tokens: usize) -> usize {
        KvCache::max_blocks_for(&self.cfg, DEFAULT_BLOCK_ROWS, tokens, 1) * self.kv_block_bytes(DEFAULT_BLOCK_ROWS)
    }

    /// Bytes of all weights held.
    pub fn weight_bytes(&self) -> usize {
        self.engine.weight_bytes()
    }

    /// Bytes of weights read to decode one token (attention, routed `top_k` experts, shared
    /// expert or dense MLP, norms, one embedding row, LM head).
    pub fn active_weight_bytes(&self) -> usize {
        self.engine.active_weight_bytes(self.cfg.vocab_size)
    }

    /// Tokens routed to each expert of each MoE layer since load: `(layer, counts per expert)`.
    pub fn expert_counts(&self) -> Result<Vec<(usize, Vec<u64>)>> {
        self.engine.expert_counts()
    }

    /// Runs one batched step over several sequences, each continuing from its cache. Returns,
    /// per sequence, the requested logits row-major (`[rows, vocab]`; empty for `None`). On an
    /// error the caches are as before the step.
    pub fn forward(&self, seqs: &mut [SeqStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let v = self.cfg.vocab_size;
        let (mut tokens, mut seq, mut pos) = (Vec::new(), Vec::new(), Vec::new());
        let mut ranges = Vec::with_capacity(seqs.len());
        let mut wanted = Vec::new();
        for (s, st) in seqs.iter().enumerate() {
            let start = seq.len();
            for (i, &tok) in st.tokens.iter().enumerate() {
                if tok as usize >= v {
                    return Err(Error::Request(format!("token id {tok} (sequence {s}, index {i}) is out of range: vocab_size is {v}")));
                }
                tokens.push(tok);
                seq.push(s);
                pos.push(st.cache.seen + i);
            }
            let end = seq.len();
            ranges.push((start, end));
            wanted.extend(match st.logits {
                LogitsWanted::None => start..start,
                LogitsWanted::Last => end.saturating_sub(1).max(start)..end,
                LogitsWanted::All => start..end,
            });
        }
        let block_rows = seqs.first().map_or(DEFAULT_BLOCK_ROWS, |s| s.cache.pool().block_rows());
        if seqs.iter().any(|s| s.cache.pool().block_rows() != block_rows) {
            return Err(Error::Request("the sequences of one step must use the same KV block size".into()));
        }
        // The rows of the new tokens, in every layer of every sequence, or none at all.
        for i in 0..seqs.len() {
            if let Err(e) = seqs[i].cache.reserve(seqs[i].tokens.len()) {
                seqs[..i].iter_mut().for_each(|s| s.cache.unreserve());
                return Err(e);
            }
        }
        let logits = {
            let caches: Vec<&KvCache> = seqs.iter().map(|s| &*s.cache).collect();
            let plan = StepPlan { tokens, pos, seq, ranges: ranges.clone(), caches, block_rows, wanted };
            self.engine.run(&plan)
        };
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                seqs.iter_mut().for_each(|s| s.cache.unreserve());
                return Err(e);
            }
        };
        seqs.iter_mut().for_each(|s| s.cache.commit());
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for (st, &(a, b)) in seqs.iter().zip(&ranges) {
            let rows = match st.logits {
                LogitsWanted::None => 0,
                LogitsWanted::Last => usize::from(b > a),
                LogitsWanted::All => b - a,
            };
            out.push(logits[at * v..(at + rows) * v].to_vec());
            at += rows;
        }
        Ok(out)
    }

    /// Logits of every position of `ids` for a fresh sequence, `[len, vocab]`.
    pub fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut cache = self.new_cache();
        let mut steps = [SeqStep { tokens: ids, cache: &mut cache, logits: LogitsWanted::All }];
        Ok(self.forward(&mut steps)?.pop().unwrap_or_default())
    }
}
