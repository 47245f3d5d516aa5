//! The Llama 4 text model (`Llama4ForCausalLM`): embeddings, decoder layers, final norm, LM head,
//! with a batched forward over several sequences at different positions.
//!
//! Reference: transformers `models/llama4/modeling_llama4.py` (`Llama4TextModel`,
//! `Llama4TextDecoderLayer`, `Llama4ForCausalLM`).

use crate::attention::{Attention, StepTokens};
use crate::config::TextConfig;
use crate::error::{Error, Result};
use crate::feed_forward::{FeedForward, Mlp, Moe};
use crate::kv_cache::{BlockPool, KvCache};
use crate::rope::Rope;
use crate::weights::{Checkpoint, Weight, WeightSource};
use candle_core::DType;
use herd_kernels::matmul::linear;
use herd_kernels::norm::rms_norm;
use herd_kernels::scratch;
use std::path::Path;

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

struct Layer {
    input_layernorm: Weight,          // [hidden]
    post_attention_layernorm: Weight, // [hidden]
    self_attn: Attention,
    feed_forward: FeedForward,
}

/// A loaded Llama 4 text model.
pub struct Model {
    cfg: TextConfig,
    dtype: DType,
    embed_tokens: Weight, // [vocab, hidden]
    layers: Vec<Layer>,
    norm: Weight,            // [hidden]
    lm_head: Option<Weight>, // [vocab, hidden]; None when tied to the embeddings
    rope: Rope,
}

impl Model {
    /// Loads `config.json` and the safetensors weights of the folder `dir`, computing in `dtype`.
    pub fn load(dir: &Path, dtype: DType) -> Result<Self> {
        let cfg = TextConfig::from_path(&dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        let tie = cfg.tie_word_embeddings || !ckpt.contains("lm_head.weight");
        let mut cfg = cfg;
        cfg.tie_word_embeddings = tie;
        Self::from_source(cfg, &ckpt, dtype)
    }

    /// Builds the model from any weight source (a checkpoint or random weights).
    pub fn from_source(cfg: TextConfig, src: &dyn WeightSource, dtype: DType) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Request(format!("dtype must be f32, bf16 or f16, got {dtype:?}")));
        }
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let feed_forward = if cfg.moe[l] {
                FeedForward::Moe(Moe::new(src, &format!("{p}.feed_forward"), &cfg, dtype)?)
            } else {
                FeedForward::Dense(Mlp::new(src, &format!("{p}.feed_forward"), h, cfg.intermediate_size_mlp, dtype)?)
            };
            layers.push(Layer {
                input_layernorm: src.get(&format!("{p}.input_layernorm.weight"), &[h], dtype)?,
                post_attention_layernorm: src.get(&format!("{p}.post_attention_layernorm.weight"), &[h], dtype)?,
                self_attn: Attention::new(src, &format!("{p}.self_attn"), &cfg, l, dtype)?,
                feed_forward,
            });
        }
        let embed_tokens = src.get("model.embed_tokens.weight", &[v, h], dtype)?;
        let norm = src.get("model.norm.weight", &[h], dtype)?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(src.get("lm_head.weight", &[v, h], dtype)?) };
        let rope = Rope::new(&cfg);
        Ok(Self { cfg, dtype, embed_tokens, layers, norm, lm_head, rope })
    }

    /// The configuration.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// The dtype weights are held in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A fresh KV cache for one sequence, with its own unbounded block pool.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.cfg, BlockPool::unbounded(&self.cfg))
    }

    /// Bytes of all weights held.
    pub fn weight_bytes(&self) -> usize {
        let head = self.lm_head.as_ref().map_or(0, Weight::bytes);
        self.layer_bytes(false) + self.embed_tokens.bytes() + self.norm.bytes() + head
    }

    /// Bytes of weights read to decode one token (attention, routed `top_k` experts, shared
    /// expert or dense MLP, norms, one embedding row, LM head).
    pub fn active_weight_bytes(&self) -> usize {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens).bytes();
        self.layer_bytes(true) + self.norm.bytes() + head + self.embed_tokens.bytes() / self.cfg.vocab_size
    }

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

    /// Tokens routed to each expert of each MoE layer since load: `(layer, counts per expert)`.
    pub fn expert_counts(&self) -> Vec<(usize, Vec<u64>)> {
        self.layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.feed_forward {
                FeedForward::Moe(m) => Some((i, m.expert_counts())),
                FeedForward::Dense(_) => None,
            })
            .collect()
    }

    /// Runs one batched step over several sequences, each continuing from its cache. Returns,
    /// per sequence, the requested logits row-major (`[rows, vocab]`; empty for `None`).
    pub fn forward(&self, seqs: &mut [SeqStep<'_>]) -> Result<Vec<Vec<f32>>> {
        let (h, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let mut seq = Vec::new();
        let mut pos = Vec::new();
        let mut ranges = Vec::with_capacity(seqs.len());
        for (s, st) in seqs.iter().enumerate() {
            let start = seq.len();
            for (i, &tok) in st.tokens.iter().enumerate() {
                if tok as usize >= v {
                    return Err(Error::Request(format!("token id {tok} (sequence {s}, index {i}) is out of range: vocab_size is {v}")));
                }
                seq.push(s);
                pos.push(st.cache.seen + i);
            }
            ranges.push((start, seq.len()));
        }
        let block_rows = seqs.first().map_or(1, |s| s.cache.pool().block_rows());
        if seqs.iter().any(|s| s.cache.pool().block_rows() != block_rows) {
            return Err(Error::Request("the sequences of one step must use the same KV block size".into()));
        }
        let t = seq.len();
        let all_tokens = seqs.iter().flat_map(|s| s.tokens.iter().copied());
        let mut x = scratch::zeroed(t * h); // [T, hidden]
        let emb = self.embed_tokens.view();
        for (row, tok) in x.chunks_exact_mut(h).zip(all_tokens) {
            emb.to_f32_into(tok as usize * h, row);
        }
        let half = self.cfg.head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for &p in &pos {
            self.rope.angles(p, &mut cos, &mut sin);
        }
        let step = StepTokens { seq: &seq, pos: &pos, ranges: &ranges, cos: &cos, sin: &sin, block_rows };
        let eps = self.cfg.rms_norm_eps as f32;
        let mut normed = scratch::zeroed(t * h);
        for (l, layer) in self.layers.iter().enumerate() {
            normed.copy_from_slice(&x);
            rms_norm(&mut normed, h, layer.input_layernorm.view(), eps);
            let mut caches: Vec<&mut KvCache> = seqs.iter_mut().map(|s| &mut *s.cache).collect();
            layer.self_attn.forward_add(&normed, &step, l, &mut caches, &mut x)?;
            normed.copy_from_slice(&x);
            rms_norm(&mut normed, h, layer.post_attention_layernorm.view(), eps);
            layer.feed_forward.forward_add(&normed, t, &mut x);
        }
        for st in seqs.iter_mut() {
            st.cache.seen += st.tokens.len();
        }

        // Final norm and LM head on the wanted rows only, all sequences in one product (the head
        // is the largest matrix: reading it once per step, not once per sequence).
        let head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens).view();
        let wanted: Vec<std::ops::Range<usize>> = seqs
            .iter()
            .zip(&ranges)
            .map(|(st, &(a, b))| match st.logits {
                LogitsWanted::None => a..a,
                LogitsWanted::Last => b.saturating_sub(1).max(a)..b,
                LogitsWanted::All => a..b,
            })
            .collect();
        let n: usize = wanted.iter().map(|r| r.len()).sum();
        let mut hs = Vec::with_capacity(n * h);
        for r in &wanted {
            hs.extend_from_slice(&x[r.start * h..r.end * h]);
        }
        rms_norm(&mut hs, h, self.norm.view(), eps);
        let mut logits = vec![0f32; n * v];
        linear(&hs, n, head, v, h, &mut logits);
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for r in &wanted {
            out.push(logits[at * v..(at + r.len()) * v].to_vec());
            at += r.len();
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
