//! The CPU backend: weights as candle CPU tensors in f32, bf16 or f16, activations in f32, the
//! kernels of herd-kernels (AVX2/FMA, gemm, the fork-join pool).

mod arena;
pub mod attention;
pub mod feed_forward;

use super::{AttnSpec, Backend, DeviceReport, Held, MlpSpec, MoeSpec, StepPlan};
use crate::config::TextConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvArena;
use crate::rope::Rope;
use crate::weights::{Weight, WeightSource};
use arena::{HostArena, SeqKv};
use attention::{Attention, StepTokens};
use candle_core::DType;
use feed_forward::{Mlp, Moe};
use herd_kernels::matmul::linear;
use herd_kernels::norm::rms_norm;
use herd_kernels::scratch::{self, Buf};
use std::sync::Arc;

/// Runs the model on the CPU, weights held in `dtype`.
pub struct CpuBackend {
    dtype: DType,
    hidden: usize,
    vocab: usize,
    head_dim: usize,
    eps: f32,
    rope: Rope,
}

impl CpuBackend {
    /// A backend for `cfg` holding weights in `dtype`.
    pub fn new(cfg: &TextConfig, dtype: DType) -> Self {
        Self {
            dtype,
            hidden: cfg.hidden_size,
            vocab: cfg.vocab_size,
            head_dim: cfg.head_dim,
            eps: cfg.rms_norm_eps as f32,
            rope: Rope::new(cfg),
        }
    }

    /// `normed = rms_norm(x)` into the step's scratch.
    fn norm_into(&self, st: &mut CpuStep<'_>, x: &[f32], norm: &Weight) {
        st.normed.copy_from_slice(x);
        rms_norm(&mut st.normed, self.hidden, norm.view(), self.eps);
    }
}

impl Held for Weight {
    fn bytes(&self) -> usize {
        Weight::bytes(self)
    }
}

/// A step on the CPU: the rotary angles of its tokens, each sequence's KV blocks, a scratch row set.
pub struct CpuStep<'a> {
    plan: &'a StepPlan<'a>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    kv: Vec<SeqKv<'a>>,
    normed: Buf,
}

impl Backend for CpuBackend {
    type Vector = Weight;
    type Matrix = Weight;
    type Attn = Attention;
    type Mlp = Mlp;
    type Moe = Moe;
    type Act = Buf;
    type Step<'a> = CpuStep<'a>;

    fn report(&self) -> DeviceReport {
        DeviceReport {
            device: "cpu".into(),
            name: format!("CPU, {} threads", herd_kernels::pool::threads()),
            weight_bytes: 0,
            launches: 0,
            logits_copy_ms: 0.0,
        }
    }

    fn load_vector(&self, src: &dyn WeightSource, name: &str, dim: usize) -> Result<Weight> {
        src.get(name, &[dim], self.dtype)
    }

    fn load_matrix(&self, src: &dyn WeightSource, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        src.get(name, &[rows, cols], self.dtype)
    }

    fn load_attention(&self, src: &dyn WeightSource, spec: &AttnSpec) -> Result<Attention> {
        Attention::new(src, spec, self.dtype)
    }

    fn load_mlp(&self, src: &dyn WeightSource, spec: &MlpSpec) -> Result<Mlp> {
        Mlp::new(src, spec, self.dtype)
    }

    fn load_moe(&self, src: &dyn WeightSource, spec: &MoeSpec) -> Result<Moe> {
        Moe::new(src, spec, self.dtype)
    }

    fn kv_arena(&self, kv_dim: usize, block_rows: usize) -> Arc<dyn KvArena> {
        // Host memory grows with use, bounded pools too.
        Arc::new(HostArena::new(2 * block_rows * kv_dim))
    }

    fn kv_block_bytes(&self, kv_dim: usize, block_rows: usize) -> usize {
        2 * block_rows * kv_dim * std::mem::size_of::<f32>()
    }

    fn begin<'a>(&'a self, plan: &'a StepPlan<'a>) -> Result<CpuStep<'a>> {
        let t = plan.tokens.len();
        let half = self.head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for &p in &plan.pos {
            self.rope.angles(p, &mut cos, &mut sin);
        }
        let mut kv = Vec::with_capacity(plan.caches.len());
        for c in &plan.caches {
            let arena = c.pool().arena().as_any().downcast_ref::<HostArena>().ok_or_else(|| Error::Device {
                device: "cpu".into(),
                message: "a KV cache made for another device was passed to the CPU model".into(),
            })?;
            kv.push(arena.view(&c.layers));
        }
        Ok(CpuStep { plan, cos, sin, kv, normed: scratch::zeroed(t * self.hidden) })
    }

    fn embed(&self, st: &mut CpuStep<'_>, table: &Weight) -> Result<Buf> {
        let h = self.hidden;
        let mut x = scratch::zeroed(st.plan.tokens.len() * h); // [T, hidden]
        let emb = table.view();
        for (row, &tok) in x.chunks_exact_mut(h).zip(&st.plan.tokens) {
            emb.to_f32_into(tok as usize * h, row);
        }
        Ok(x)
    }

    fn attention(&self, st: &mut CpuStep<'_>, layer: usize, norm: &Weight, w: &Attention, x: &mut Buf) -> Result<()> {
        self.norm_into(st, x, norm);
        let p = st.plan;
        let tokens = StepTokens { seq: &p.seq, pos: &p.pos, cos: &st.cos, sin: &st.sin, block_rows: p.block_rows };
        w.forward_add(&st.normed, &tokens, layer, &st.kv, x)
    }

    fn mlp(&self, st: &mut CpuStep<'_>, norm: &Weight, w: &Mlp, x: &mut Buf) -> Result<()> {
        self.norm_into(st, x, norm);
        w.forward_add(&st.normed, st.plan.tokens.len(), x);
        Ok(())
    }

    fn moe(&self, st: &mut CpuStep<'_>, norm: &Weight, w: &Moe, x: &mut Buf) -> Result<()> {
        self.norm_into(st, x, norm);
        w.forward_add(&st.normed, st.plan.tokens.len(), x);
        Ok(())
    }

    fn logits(&self, st: &mut CpuStep<'_>, x: &Buf, norm: &Weight, head: &Weight) -> Result<Vec<f32>> {
        // Final norm and LM head on the wanted rows only, all sequences in one product (the head
        // is the largest matrix: reading it once per step, not once per sequence).
        let (h, v) = (self.hidden, self.vocab);
        let n = st.plan.wanted.len();
        let mut hs = Vec::with_capacity(n * h);
        for &r in &st.plan.wanted {
            hs.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        rms_norm(&mut hs, h, norm.view(), self.eps);
        let mut logits = vec![0f32; n * v];
        linear(&hs, n, head.view(), v, h, &mut logits);
        Ok(logits)
    }
}
