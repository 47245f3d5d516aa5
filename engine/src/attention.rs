//! Grouped-query self-attention of Llama 4.
//!
//! Reference: `Llama4TextAttention.forward` in transformers' `modeling_llama4.py`:
//! q/k/v projections; on RoPE layers RoPE on interleaved pairs then (when `use_qk_norm`) a
//! weightless L2 norm of q and k; on NoPE layers with `attn_temperature_tuning`
//! `q *= log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1`; softmax(q·kᵀ / sqrt(d))·v with
//! the chunked causal mask on chunked layers and the full causal mask on the others.

use crate::config::TextConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::rope;
use crate::weights::{Weight, WeightSource};
use candle_core::DType;
use herd_kernels::attention::{KvBlocks, attend_group};
use herd_kernels::matmul::{Layout, Product, products};
use herd_kernels::norm::l2_norm;
use herd_kernels::{SendPtr, pool, scratch};
use std::cell::RefCell;

thread_local! {
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Token layout of a batched step: which sequence each token belongs to and its position.
pub struct StepTokens<'a> {
    pub seq: &'a [usize],
    pub pos: &'a [usize],
    /// Token range `[start, end)` of each sequence in the step.
    pub ranges: &'a [(usize, usize)],
    /// `cos`/`sin` of each token's rotary angles, `[T, head_dim / 2]`.
    pub cos: &'a [f32],
    pub sin: &'a [f32],
    /// Positions per KV block (the same for every cache of the step).
    pub block_rows: usize,
}

/// One attention block.
pub struct Attention {
    q_proj: Weight, // [heads * d, hidden]
    k_proj: Weight, // [kv_heads * d, hidden]
    v_proj: Weight, // [kv_heads * d, hidden]
    o_proj: Weight, // [hidden, heads * d]
    use_rope: bool,
    qk_norm: bool,
    temperature_tuning: bool,
    chunk: Option<usize>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
    eps: f32,
    floor_scale: f64,
    attn_scale: f64,
}

impl Attention {
    /// Loads `{prefix}.{q,k,v,o}_proj.weight` for layer `layer`.
    pub fn new(src: &dyn WeightSource, prefix: &str, cfg: &TextConfig, layer: usize, dtype: DType) -> Result<Self> {
        let (h, d, nh, nkv) = (cfg.hidden_size, cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads);
        let use_rope = cfg.rope[layer];
        Ok(Self {
            q_proj: src.get(&format!("{prefix}.q_proj.weight"), &[nh * d, h], dtype)?,
            k_proj: src.get(&format!("{prefix}.k_proj.weight"), &[nkv * d, h], dtype)?,
            v_proj: src.get(&format!("{prefix}.v_proj.weight"), &[nkv * d, h], dtype)?,
            o_proj: src.get(&format!("{prefix}.o_proj.weight"), &[h, nh * d], dtype)?,
            use_rope,
            qk_norm: cfg.use_qk_norm && use_rope,
            temperature_tuning: cfg.attn_temperature_tuning && !use_rope,
            chunk: cfg.chunk_of(layer),
            heads: nh,
            kv_heads: nkv,
            head_dim: d,
            hidden: h,
            eps: cfg.rms_norm_eps as f32,
            floor_scale: cfg.floor_scale,
            attn_scale: cfg.attn_scale,
        })
    }

    /// `y [T, hidden] += attention(x [T, hidden])` for layer `layer`, appending this step's keys
    /// and values to each sequence's cache (`caches[s]`) and trimming chunked layers afterwards.
    /// Fails when the block pool runs out (the caches of this step are then unusable: callers
    /// check [`KvCache::blocks_to_append`] first).
    pub fn forward_add(&self, x: &[f32], step: &StepTokens<'_>, layer: usize, caches: &mut [&mut KvCache], y: &mut [f32]) -> Result<()> {
        let t = step.seq.len();
        let (d, nh, nkv, h) = (self.head_dim, self.heads, self.kv_heads, self.hidden);
        let (qd, kvd) = (nh * d, nkv * d);
        let mut q = scratch::zeroed(t * qd); // [T, heads * d]
        let mut k = scratch::zeroed(t * kvd); // [T, kv_heads * d]
        let mut v = scratch::zeroed(t * kvd); // [T, kv_heads * d]
        let (lay, in_dim) = (Layout::OutIn, h);
        products(&mut [
            Product { x, t, w: self.q_proj.view(), layout: lay, in_dim, out_dim: qd, y: &mut q },
            Product { x, t, w: self.k_proj.view(), layout: lay, in_dim, out_dim: kvd, y: &mut k },
            Product { x, t, w: self.v_proj.view(), layout: lay, in_dim, out_dim: kvd, y: &mut v },
        ]);

        let half = d / 2;
        for tok in 0..t {
            let (qt, kt) = (&mut q[tok * qd..(tok + 1) * qd], &mut k[tok * kvd..(tok + 1) * kvd]);
            if self.use_rope {
                let (c, s) = (&step.cos[tok * half..(tok + 1) * half], &step.sin[tok * half..(tok + 1) * half]);
                rope::apply(qt, d, c, s);
                rope::apply(kt, d, c, s);
            }
            if self.qk_norm {
                l2_norm(qt, d, self.eps);
                l2_norm(kt, d, self.eps);
            }
            if self.temperature_tuning {
                let p = step.pos[tok] as f64;
                let scale = (((p + 1.0) / self.floor_scale).floor().ln_1p() * self.attn_scale + 1.0) as f32;
                qt.iter_mut().for_each(|v| *v *= scale);
            }
        }

        for (s, &(a, b)) in step.ranges.iter().enumerate() {
            caches[s].append(layer, &k[a * kvd..b * kvd], &v[a * kvd..b * kvd])?;
        }

        let scale = (d as f32).powf(-0.5);
        let group = nh / nkv;
        let mut out = scratch::zeroed(t * qd);
        {
            let caches: Vec<&crate::kv_cache::LayerCache> = caches.iter().map(|c| &c.layers[layer]).collect();
            let block_rows = step.block_rows;
            // (token, key/value head): the `group` query heads sharing that key/value head are
            // adjacent in `q` and `out`, and attend together (each cached row read once for them).
            let pairs = t * nkv;
            let per = pairs.div_ceil(pool::threads() * 4).max(1);
            let outp = SendPtr(out.as_mut_ptr());
            pool::parallel_for(pairs.div_ceil(per), &|task| {
                for i in task * per..((task + 1) * per).min(pairs) {
                    let (tok, kvh) = (i / nkv, i % nkv);
                    let c = caches[step.seq[tok]];
                    let p = step.pos[tok];
                    let lo = match self.chunk {
                        Some(ch) => (p / ch * ch).max(c.start),
                        None => c.start,
                    };
                    let n = p + 1 - lo;
                    let kv = KvBlocks { blocks: &c.blocks, block_rows, stride: kvd, col: kvh * d, first: lo - c.start, n };
                    let span = group * d;
                    // SAFETY: pair i owns out[i*span .. (i+1)*span]; pairs are split disjointly among tasks.
                    let o = unsafe { std::slice::from_raw_parts_mut(outp.get().add(i * span), span) };
                    SCORES.with(|sc| {
                        let mut sc = sc.borrow_mut();
                        if sc.len() < group * n {
                            sc.resize(group * n, 0.0);
                        }
                        let qv = &q[tok * qd + kvh * span..tok * qd + (kvh + 1) * span];
                        attend_group(qv, group, kv, scale, &mut sc, o);
                    });
                }
            });
        }
        for (s, &(a, b)) in step.ranges.iter().enumerate() {
            if b > a {
                caches[s].trim(layer, step.pos[b - 1] + 1);
            }
        }
        // y [T, hidden] += out · o_projᵀ
        products(&mut [Product { x: &out, t, w: self.o_proj.view(), layout: Layout::OutIn, in_dim: qd, out_dim: h, y }]);
        Ok(())
    }

    /// Bytes of weights.
    pub fn bytes(&self) -> usize {
        self.q_proj.bytes() + self.k_proj.bytes() + self.v_proj.bytes() + self.o_proj.bytes()
    }
}
