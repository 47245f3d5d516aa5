//! Grouped-query self-attention of Llama 4 on the CPU.
//!
//! Reference: `Llama4TextAttention.forward` in transformers' `modeling_llama4.py`:
//! q/k/v projections; on RoPE layers RoPE on interleaved pairs then (when `use_qk_norm`) a
//! weightless L2 norm of q and k; on NoPE layers with `attn_temperature_tuning`
//! `q *= log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1`; softmax(q·kᵀ / sqrt(d))·v with
//! the chunked causal mask on chunked layers and the full causal mask on the others.

use super::arena::SeqKv;
use crate::device::{AttnSpec, Held};
use crate::error::Result;
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
    spec: AttnSpec,
}

impl Attention {
    /// Loads the q/k/v/o projections `spec` names.
    pub fn new(src: &dyn WeightSource, spec: &AttnSpec, dtype: DType) -> Result<Self> {
        let (h, d, nh, nkv) = (spec.hidden, spec.head_dim, spec.heads, spec.kv_heads);
        Ok(Self {
            q_proj: src.get(&spec.q, &[nh * d, h], dtype)?,
            k_proj: src.get(&spec.k, &[nkv * d, h], dtype)?,
            v_proj: src.get(&spec.v, &[nkv * d, h], dtype)?,
            o_proj: src.get(&spec.o, &[h, nh * d], dtype)?,
            spec: spec.clone(),
        })
    }

    /// `y [T, hidden] += attention(x [T, hidden])` for layer `layer`, writing this step's keys and
    /// values into the rows each sequence's cache reserved for them (`kv[s]`).
    pub fn forward_add(&self, x: &[f32], step: &StepTokens<'_>, layer: usize, kv: &[SeqKv<'_>], y: &mut [f32]) -> Result<()> {
        let t = step.seq.len();
        let sp = &self.spec;
        let (d, nh, nkv, h) = (sp.head_dim, sp.heads, sp.kv_heads, sp.hidden);
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
            if sp.rope {
                let (c, s) = (&step.cos[tok * half..(tok + 1) * half], &step.sin[tok * half..(tok + 1) * half]);
                rope::apply(qt, d, c, s);
                rope::apply(kt, d, c, s);
            }
            if sp.qk_norm {
                l2_norm(qt, d, sp.eps);
                l2_norm(kt, d, sp.eps);
            }
            if sp.temperature_tuning {
                let p = step.pos[tok] as f64;
                let scale = (((p + 1.0) / sp.floor_scale).floor().ln_1p() * sp.attn_scale + 1.0) as f32;
                qt.iter_mut().for_each(|v| *v *= scale);
            }
        }

        let br = step.block_rows;
        for tok in 0..t {
            let c = &kv[step.seq[tok]];
            let lc = &c.layers[layer];
            let row = step.pos[tok] - lc.start;
            // SAFETY: the row was reserved for this token by its cache this step; nothing else
            // touches it until the step ends.
            let block = unsafe { c.block_mut(lc.blocks[row / br]) };
            let at = row % br;
            block[at * kvd..(at + 1) * kvd].copy_from_slice(&k[tok * kvd..(tok + 1) * kvd]);
            block[(br + at) * kvd..(br + at + 1) * kvd].copy_from_slice(&v[tok * kvd..(tok + 1) * kvd]);
        }

        let scale = (d as f32).powf(-0.5);
        let group = nh / nkv;
        let mut out = scratch::zeroed(t * qd);
        {
            // Each sequence's blocks of this layer, in position order.
            let blocks: Vec<Vec<&[f32]>> = kv.iter().map(|c| c.layers[layer].blocks.iter().map(|&id| c.block(id)).collect()).collect();
            // (token, key/value head): the `group` query heads sharing that key/value head are
            // adjacent in `q` and `out`, and attend together (each cached row read once for them).
            let pairs = t * nkv;
            let per = pairs.div_ceil(pool::threads() * 4).max(1);
            let outp = SendPtr(out.as_mut_ptr());
            pool::parallel_for(pairs.div_ceil(per), &|task| {
                for i in task * per..((task + 1) * per).min(pairs) {
                    let (tok, kvh) = (i / nkv, i % nkv);
                    let s = step.seq[tok];
                    let start = kv[s].layers[layer].start;
                    let p = step.pos[tok];
                    let lo = match sp.chunk {
                        Some(ch) => (p / ch * ch).max(start),
                        None => start,
                    };
                    let n = p + 1 - lo;
                    let view = KvBlocks { blocks: &blocks[s], block_rows: br, stride: kvd, col: kvh * d, first: lo - start, n };
                    let span = group * d;
                    // SAFETY: pair i owns out[i*span .. (i+1)*span]; pairs are split disjointly among tasks.
                    let o = unsafe { std::slice::from_raw_parts_mut(outp.get().add(i * span), span) };
                    SCORES.with(|sc| {
                        let mut sc = sc.borrow_mut();
                        if sc.len() < group * n {
                            sc.resize(group * n, 0.0);
                        }
                        let qv = &q[tok * qd + kvh * span..tok * qd + (kvh + 1) * span];
                        attend_group(qv, group, view, scale, &mut sc, o);
                    });
                }
            });
        }
        // y [T, hidden] += out · o_projᵀ
        products(&mut [Product { x: &out, t, w: self.o_proj.view(), layout: Layout::OutIn, in_dim: qd, out_dim: h, y }]);
        Ok(())
    }
}

impl Held for Attention {
    fn bytes(&self) -> usize {
        self.q_proj.bytes() + self.k_proj.bytes() + self.v_proj.bytes() + self.o_proj.bytes()
    }
}
