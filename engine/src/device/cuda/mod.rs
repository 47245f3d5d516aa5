//! The CUDA backend: weights in device memory (bf16, or f32 for exact parity with the CPU), the
//! residual stream in f32, herd's CUDA kernels and cuBLAS through herd-kernels' CUDA layer. A
//! step's bookkeeping goes up in one packed upload; everything after runs on the device, MoE
//! routing included; the only copy back is the logits of the wanted rows.
//!
//! Per layer: RMSNorm → q/k/v in one product → `attn_prep` (RoPE, QK norm, temperature, keys and
//! values into the paged cache) → per-token paged attention (decodes, short runs) and flash
//! attention (prefill runs, bf16) → o-projection added to the residual; RMSNorm → router → top-k →
//! permutation by expert → expert products (GEMV for small batches, the grouped tensor-core GEMM
//! for large ones) → SiLU·mul → shared expert added → expert outputs added in expert order.
//! Products of up to 16 rows are GEMVs (one read of the weights for all rows); larger ones cuBLAS.

mod arena;
mod step;
mod weights;

pub use arena::DeviceArena;

use super::{AttnSpec, Backend, DeviceReport, MlpSpec, MoeSpec, StepPlan};
use crate::config::TextConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvArena;
use crate::rope::Rope;
use crate::weights::WeightSource;
use candle_core::DType;
use herd_kernels::cuda::ops::{self, Dt};
use herd_kernels::cuda::{DevBuf, Gpu};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use step::{Meta, SeqArena};
use weights::{Attn, DevTensor, Loader, Mlp, Moe};

/// Runs the model on one CUDA device (or its CPU emulation).
pub struct CudaBackend {
    gpu: Arc<Gpu>,
    dt: Dt,
    cfg: TextConfig,
    /// `[head_dim / 2]` RoPE frequencies, llama3 scaling applied.
    inv_freq: DevBuf,
    ws: Mutex<Workspace>,
    /// Nanoseconds spent copying logits back (after the step's work finished).
    copy_nanos: AtomicU64,
}

impl CudaBackend {
    /// Opens CUDA device `ordinal` for `cfg` with weights in `dtype` (bf16 or f32).
    pub fn open(ordinal: usize, cfg: &TextConfig, dtype: DType) -> Result<Self> {
        Self::on(Gpu::open(ordinal)?, cfg, dtype)
    }

    /// The CPU emulation of the device (tests).
    pub fn emulated(cfg: &TextConfig, dtype: DType) -> Result<Self> {
        Self::on(Gpu::emulated()?, cfg, dtype)
    }

    fn on(gpu: Arc<Gpu>, cfg: &TextConfig, dtype: DType) -> Result<Self> {
        let dt = match dtype {
            DType::BF16 => Dt::Bf16,
            DType::F32 => Dt::F32,
            other => {
                return Err(Error::Device { device: "cuda".into(), message: format!("weights are held in bf16 or f32, got {other:?}") });
            }
        };
        let heads = ops::Heads { heads: cfg.num_attention_heads, kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim };
        heads.check(dt)?;
        let v = dt.per_16_bytes();
        let widths = [
            ("hidden_size", cfg.hidden_size),
            ("intermediate_size", cfg.intermediate_size),
            ("intermediate_size_mlp", cfg.intermediate_size_mlp),
        ];
        if let Some((name, w)) = widths.iter().find(|(_, w)| !w.is_multiple_of(v)) {
            return Err(Error::Device {
                device: "cuda".into(),
                message: format!("{name} = {w}: the CUDA kernels need widths that are multiples of {v}"),
            });
        }
        if cfg.num_local_experts > 1024 || cfg.num_experts_per_tok > 16 {
            return Err(Error::Device {
                device: "cuda".into(),
                message: format!(
                    "{} experts choosing {}: the CUDA kernels take at most 1024 experts and 16 choices",
                    cfg.num_local_experts, cfg.num_experts_per_tok
                ),
            });
        }
        let inv_freq = gpu.upload(Rope::new(cfg).inv_freq())?;
        Ok(Self { gpu, dt, cfg: cfg.clone(), inv_freq, ws: Mutex::new(Workspace::default()), copy_nanos: AtomicU64::new(0) })
    }

    fn loader<'a>(&'a self, src: &'a dyn WeightSource) -> Loader<'a> {
        Loader { gpu: &self.gpu, dt: self.dt, src }
    }

    fn eps(&self) -> f32 {
        self.cfg.rms_norm_eps as f32
    }

    /// `xn = rms_norm(x)`.
    fn norm(&self, st: &CudaStep<'_>, norm: &DevTensor, x: &DevAct) -> Result<()> {
        Ok(ops::rms_norm(&self.gpu, self.dt, x.0, norm.ptr(), st.at(Slot::Xn), None, st.t, self.cfg.hidden_size, self.eps())?)
    }

    /// `x += mlp(xn)` for a gated MLP (a dense layer's or the shared expert).
    fn mlp_add(&self, st: &CudaStep<'_>, w: &Mlp, x: &DevAct) -> Result<()> {
        let (gpu, dt, t, h, i) = (&self.gpu, self.dt, st.t, w.hidden, w.inter);
        ops::linear(gpu, dt, st.at(Slot::Xn), w.gate_up.ptr(), st.at(Slot::Sgu), t, 2 * i, h, false)?;
        ops::silu_mul(gpu, dt, st.at(Slot::Sgu), st.at(Slot::Sact), i, None, t)?;
        ops::linear(gpu, dt, st.at(Slot::Sact), w.down.ptr(), x.0, t, h, i, true)?;
        Ok(())
    }
}

/// Scratch buffers of a step, grown (never shrunk) to the largest step seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Slot {
    Ints,
    Longs,
    X,
    Xn,
    Qkv,
    Attn,
    Router,
    TopkId,
    TopkW,
    Counts,
    Off,
    Active,
    NActive,
    Fill,
    TileExpert,
    SortedTok,
    SortedW,
    RowOf,
    Xs,
    Gu,
    Act,
    Mo,
    Sgu,
    Sact,
    Hn,
    Logits,
}

const SLOTS: usize = Slot::Logits as usize + 1;

#[derive(Default)]
struct Workspace {
    bufs: Vec<Option<DevBuf>>,
}

impl Workspace {
    /// Makes slot `s` hold at least `bytes`; returns its address.
    fn ensure(&mut self, gpu: &Arc<Gpu>, s: Slot, bytes: usize) -> Result<u64> {
        if self.bufs.len() < SLOTS {
            self.bufs.resize_with(SLOTS, || None);
        }
        let slot = &mut self.bufs[s as usize];
        if slot.as_ref().is_none_or(|b| b.bytes() < bytes) {
            *slot = None; // free the old one first
            *slot = Some(gpu.alloc(bytes.max(256))?);
        }
        Ok(slot.as_ref().map_or(0, DevBuf::ptr))
    }
}

/// How the MoE blocks of a step run.
#[derive(Clone, Copy, Debug, Default)]
struct MoePlan {
    /// (token, choice) pairs.
    pairs: usize,
    /// The grouped tensor-core GEMM (else grouped GEMV).
    gemm: bool,
    /// Rows each expert's segment is padded to a multiple of.
    align: usize,
    /// Rows of all segments at most.
    rows: usize,
    /// GEMM tiles at most.
    tiles: usize,
}

impl MoePlan {
    fn of(cfg: &TextConfig, dt: Dt, t: usize) -> Self {
        let (e, k, h, i) = (cfg.num_local_experts, cfg.num_experts_per_tok, cfg.hidden_size, cfg.intermediate_size);
        let pairs = t * k;
        let gemm = pairs > 64 && ops::grouped_gemm_fits(dt, 2 * i, h) && ops::grouped_gemm_fits(dt, h, i);
        let align = if gemm { ops::GEMM_TILE_ROWS } else { 1 };
        let rows = pairs + e * (align - 1);
        Self { pairs, gemm, align, rows, tiles: if gemm { rows.div_ceil(align) } else { 0 } }
    }
}

/// A step on the device.
pub struct CudaStep<'a> {
    /// Held for the step: the addresses below point into it.
    _ws: MutexGuard<'a, Workspace>,
    addrs: [u64; SLOTS],
    meta: Meta,
    moe: MoePlan,
    t: usize,
    block_rows: usize,
}

impl CudaStep<'_> {
    fn at(&self, s: Slot) -> u64 {
        self.addrs[s as usize]
    }

    /// Device address of element `i` of the packed i32 array.
    fn int(&self, i: usize) -> u64 {
        self.at(Slot::Ints) + 4 * i as u64
    }

    /// Layer `l`'s view of the KV cache.
    fn kv(&self, l: usize) -> ops::KvArgs {
        let m = &self.meta;
        ops::KvArgs {
            slab_tab: self.at(Slot::Longs),
            shift: self.int(m.shift),
            start: self.int(m.layer(m.start, l)),
            tab_off: self.int(m.layer(m.tab_off, l)),
            tab: self.int(m.tab),
            block_rows: self.block_rows,
        }
    }
}

/// The residual stream of a step: `[T, hidden]` f32 in the workspace.
pub struct DevAct(u64);

impl Backend for CudaBackend {
    type Vector = DevTensor;
    type Matrix = DevTensor;
    type Attn = Attn;
    type Mlp = Mlp;
    type Moe = Moe;
    type Act = DevAct;
    type Step<'a> = CudaStep<'a>;

    fn report(&self) -> DeviceReport {
        let info = self.gpu.info();
        let device = if info.emulated { "cuda-emulated".into() } else { "cuda".into() };
        let logits_copy_ms = self.copy_nanos.load(Ordering::Relaxed) as f64 / 1e6;
        DeviceReport { device, name: info.name, weight_bytes: 0, launches: self.gpu.launches(), logits_copy_ms }
    }

    fn load_vector(&self, src: &dyn WeightSource, name: &str, dim: usize) -> Result<DevTensor> {
        self.loader(src).tensor(name, &[dim])
    }

    fn load_matrix(&self, src: &dyn WeightSource, name: &str, rows: usize, cols: usize) -> Result<DevTensor> {
        self.loader(src).tensor(name, &[rows, cols])
    }

    fn load_attention(&self, src: &dyn WeightSource, spec: &AttnSpec) -> Result<Attn> {
        Attn::load(&self.loader(src), spec)
    }

    fn load_mlp(&self, src: &dyn WeightSource, spec: &MlpSpec) -> Result<Mlp> {
        Mlp::load(&self.loader(src), spec)
    }

    fn load_moe(&self, src: &dyn WeightSource, spec: &MoeSpec) -> Result<Moe> {
        Moe::load(&self.loader(src), spec)
    }

    fn kv_arena(&self, kv_dim: usize, block_rows: usize) -> Arc<dyn KvArena> {
        Arc::new(DeviceArena::growing(self.gpu.clone(), 2 * block_rows * kv_dim, self.dt.size()))
    }

    fn kv_arena_reserved(&self, kv_dim: usize, block_rows: usize, capacity: usize) -> Result<Arc<dyn KvArena>> {
        Ok(Arc::new(DeviceArena::reserved(self.gpu.clone(), 2 * block_rows * kv_dim, self.dt.size(), capacity)?))
    }

    fn kv_block_bytes(&self, kv_dim: usize, block_rows: usize) -> usize {
        2 * block_rows * kv_dim * self.dt.size()
    }

    fn begin<'a>(&'a self, plan: &'a StepPlan<'a>) -> Result<CudaStep<'a>> {
        let mut arenas = Vec::with_capacity(plan.caches.len());
        for c in &plan.caches {
            let a =
                c.pool().arena().as_any().downcast_ref::<DeviceArena>().filter(|a| Arc::ptr_eq(a.gpu(), &self.gpu)).ok_or_else(|| {
                    Error::Device { device: "cuda".into(), message: "a KV cache made for another device was passed to this model".into() }
                })?;
            arenas.push(SeqArena { table: a.table(), shift: a.shift() });
        }
        let cfg = &self.cfg;
        let heads = ops::Heads { heads: cfg.num_attention_heads, kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim };
        let meta = step::pack(plan, cfg.num_hidden_layers, &arenas, ops::flash_fits(self.dt, &heads));
        let (t, n, h, w) = (plan.tokens.len(), plan.wanted.len(), cfg.hidden_size, self.dt.size());
        let (e, i) = (cfg.num_local_experts, cfg.intermediate_size);
        let moe = MoePlan::of(cfg, self.dt, t);
        let widest = if cfg.moe.iter().all(|&m| m) { i } else { i.max(cfg.intermediate_size_mlp) };
        let qkvd = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim;
        let sizes = [
            (Slot::Ints, meta.ints.len() * 4),
            (Slot::Longs, meta.longs.len() * 8),
            (Slot::X, t * h * 4),
            (Slot::Xn, t * h * w),
            (Slot::Qkv, t * qkvd * 4),
            (Slot::Attn, t * cfg.num_attention_heads * cfg.head_dim * w),
            (Slot::Router, t * e * 4),
            (Slot::TopkId, moe.pairs * 4),
            (Slot::TopkW, moe.pairs * 4),
            (Slot::Counts, e * 4),
            (Slot::Off, (e + 1) * 4),
            (Slot::Active, e * 4),
            (Slot::NActive, 4),
            (Slot::Fill, e * 4),
            (Slot::TileExpert, moe.tiles.max(1) * 4),
            (Slot::SortedTok, moe.rows * 4),
            (Slot::SortedW, moe.rows * 4),
            (Slot::RowOf, moe.pairs * 4),
            (Slot::Xs, moe.rows * h * w),
            (Slot::Gu, moe.rows * 2 * i * 4),
            (Slot::Act, moe.rows * i * w),
            (Slot::Mo, moe.rows * h * 4),
            (Slot::Sgu, t * 2 * widest * 4),
            (Slot::Sact, t * widest * w),
            (Slot::Hn, n * h * w),
            (Slot::Logits, n * cfg.vocab_size * 4),
        ];
        let mut ws = self.ws.lock().unwrap_or_else(|e| e.into_inner());
        let mut addrs = [0u64; SLOTS];
        for (slot, bytes) in sizes {
            addrs[slot as usize] = ws.ensure(&self.gpu, slot, bytes)?;
        }
        self.gpu.htod(addrs[Slot::Ints as usize], herd_kernels::cuda::as_bytes(&meta.ints))?;
        self.gpu.htod(addrs[Slot::Longs as usize], herd_kernels::cuda::as_bytes(&meta.longs))?;
        Ok(CudaStep { _ws: ws, addrs, meta, moe, t, block_rows: plan.block_rows })
    }

    fn embed(&self, st: &mut CudaStep<'_>, table: &DevTensor) -> Result<DevAct> {
        let x = st.at(Slot::X);
        ops::embed(&self.gpu, self.dt, st.int(st.meta.tok), table.ptr(), x, st.t, self.cfg.hidden_size)?;
        Ok(DevAct(x))
    }

    fn attention(&self, st: &mut CudaStep<'_>, layer: usize, norm: &DevTensor, w: &Attn, x: &mut DevAct) -> Result<()> {
        let (gpu, dt, t, sp) = (&self.gpu, self.dt, st.t, &w.spec);
        let (h, d) = (sp.hidden, sp.head_dim);
        let heads = ops::Heads { heads: sp.heads, kv_heads: sp.kv_heads, head_dim: d };
        self.norm(st, norm, x)?;
        let (qkv, out) = (st.at(Slot::Qkv), st.at(Slot::Attn));
        ops::linear(gpu, dt, st.at(Slot::Xn), w.qkv.ptr(), qkv, t, (sp.heads + 2 * sp.kv_heads) * d, h, false)?;
        let kv = st.kv(layer);
        let prep = ops::Prep {
            rope: sp.rope,
            qk_norm: sp.qk_norm,
            temperature_tuning: sp.temperature_tuning,
            eps: sp.eps,
            floor_scale: sp.floor_scale,
            attn_scale: sp.attn_scale,
        };
        let m = &st.meta;
        let (pos, seq) = (st.int(m.pos), st.int(m.seq));
        ops::attn_prep(gpu, dt, qkv, pos, seq, &kv, self.inv_freq.ptr(), &heads, &prep, t)?;
        let (chunk, scale) = (sp.chunk.unwrap_or(0), (d as f32).powf(-0.5));
        if m.n_items > 0 {
            ops::attend(gpu, dt, qkv, Some(st.int(m.items)), m.n_items, pos, seq, &kv, out, &heads, chunk, scale)?;
        }
        if m.n_tiles > 0 {
            ops::flash_prefill(gpu, qkv, st.int(m.tiles), m.n_tiles, pos, &kv, out, &heads, chunk, scale)?;
        }
        ops::linear(gpu, dt, out, w.o.ptr(), x.0, t, h, sp.heads * d, true)?;
        Ok(())
    }

    fn mlp(&self, st: &mut CudaStep<'_>, norm: &DevTensor, w: &Mlp, x: &mut DevAct) -> Result<()> {
        self.norm(st, norm, x)?;
        self.mlp_add(st, w, x)
    }

    fn moe(&self, st: &mut CudaStep<'_>, norm: &DevTensor, w: &Moe, x: &mut DevAct) -> Result<()> {
        let (gpu, dt, t, mp) = (&self.gpu, self.dt, st.t, st.moe);
        let (e, k, h, i) = (w.spec.experts, w.spec.top_k, w.spec.hidden, w.spec.inter);
        self.norm(st, norm, x)?;
        let a = |s: Slot| st.at(s);
        // Route on the device: logits, top-k and scores, tokens per expert, segments.
        ops::linear(gpu, dt, a(Slot::Xn), w.router.ptr(), a(Slot::Router), t, e, h, false)?;
        gpu.memset(a(Slot::Counts), 0, e * 4)?;
        ops::moe_route(gpu, a(Slot::Router), t, e, k, a(Slot::TopkId), a(Slot::TopkW), a(Slot::Counts), w.totals.ptr())?;
        let out = ops::AlignOut {
            off: a(Slot::Off),
            active: a(Slot::Active),
            n_active: a(Slot::NActive),
            fill: a(Slot::Fill),
            tile_expert: a(Slot::TileExpert),
            max_tiles: mp.tiles,
        };
        ops::moe_align(gpu, a(Slot::Counts), e, mp.align, &out)?;
        gpu.memset(a(Slot::SortedTok), 0xFF, mp.rows * 4)?;
        ops::moe_scatter(
            gpu,
            a(Slot::TopkId),
            a(Slot::TopkW),
            mp.pairs,
            k,
            a(Slot::Off),
            a(Slot::Fill),
            a(Slot::SortedTok),
            a(Slot::SortedW),
            a(Slot::RowOf),
        )?;
        let rows = a(Slot::Off) + 4 * e as u64; // device scalar off[E]: all rows, padding included
        ops::moe_gather(gpu, dt, a(Slot::Xn), a(Slot::SortedTok), a(Slot::SortedW), rows, mp.rows, a(Slot::Xs), h)?;
        // Experts on their rows only.
        let seg = ops::Segments {
            off: a(Slot::Off),
            active: a(Slot::Active),
            n_active: a(Slot::NActive),
            max_active: e.min(mp.pairs),
            max_rows: t,
        };
        if mp.gemm {
            ops::grouped_gemm(gpu, a(Slot::Xs), w.gate_up.ptr(), a(Slot::Gu), a(Slot::TileExpert), mp.tiles, 2 * i, h)?;
        } else {
            ops::gemv(gpu, dt, w.gate_up.ptr(), a(Slot::Xs), a(Slot::Gu), Some(&seg), mp.pairs, 2 * i, h, false)?;
        }
        ops::silu_mul(gpu, dt, a(Slot::Gu), a(Slot::Act), i, Some(rows), mp.rows)?;
        if mp.gemm {
            ops::grouped_gemm(gpu, a(Slot::Act), w.down.ptr(), a(Slot::Mo), a(Slot::TileExpert), mp.tiles, h, i)?;
        } else {
            ops::gemv(gpu, dt, w.down.ptr(), a(Slot::Act), a(Slot::Mo), Some(&seg), mp.pairs, h, i, false)?;
        }
        // x += shared expert, then each token's experts in expert order (the CPU engine's order).
        self.mlp_add(st, &w.shared, x)?;
        ops::moe_combine(gpu, x.0, a(Slot::Mo), a(Slot::RowOf), a(Slot::TopkId), t, k, h)?;
        Ok(())
    }

    fn logits(&self, st: &mut CudaStep<'_>, x: &DevAct, norm: &DevTensor, head: &DevTensor) -> Result<Vec<f32>> {
        let (gpu, dt, h, v) = (&self.gpu, self.dt, self.cfg.hidden_size, self.cfg.vocab_size);
        let n = st.meta.n_wanted;
        let mut out = vec![0f32; n * v];
        if n == 0 {
            return Ok(out);
        }
        let (hn, logits) = (st.at(Slot::Hn), st.at(Slot::Logits));
        ops::rms_norm(gpu, dt, x.0, norm.ptr(), hn, Some(st.int(st.meta.wanted)), n, h, self.eps())?;
        ops::linear(gpu, dt, hn, head.ptr(), logits, n, v, h, false)?;
        // One copy of the wanted rows per step (sampling stays on the host, above the device
        // layer); timed alone, after the step's work.
        gpu.sync()?;
        let t0 = std::time::Instant::now();
        gpu.dtoh(logits, &mut out)?;
        self.copy_nanos.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scout() -> TextConfig {
        TextConfig::from_path(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scout-shaped/config.json")).expect("config")
    }

    #[test]
    fn small_batches_take_the_grouped_gemv_and_prefills_the_tensor_core_gemm() {
        let cfg = scout();
        let decode = MoePlan::of(&cfg, Dt::Bf16, 64);
        assert!(!decode.gemm, "64 (token, expert) pairs: GEMV");
        assert_eq!((decode.align, decode.rows, decode.tiles), (1, 64, 0));
        let prefill = MoePlan::of(&cfg, Dt::Bf16, 2048);
        assert!(prefill.gemm);
        // every expert's segment padded to 64 rows: at most 63 more rows each
        assert_eq!((prefill.align, prefill.rows, prefill.tiles), (64, 2048 + 16 * 63, (2048 + 16 * 63usize).div_ceil(64)));
        assert!(!MoePlan::of(&cfg, Dt::F32, 2048).gemm, "f32 keeps the GEMV");
    }
}
