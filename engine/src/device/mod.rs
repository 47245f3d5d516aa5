//! The device layer: where weights live and blocks of the model run.
//!
//! Everything above it — the configuration and what each layer is ([`LayerSpec`]), the model's
//! forward ([`crate::model`]), the scheduler, the paged KV bookkeeping, the sampler — is written
//! once. A [`Backend`] owns the weights in its own form (CPU tensors, or device memory laid out for
//! its kernels), the storage of the KV blocks, and runs the blocks of a step: the embedding, one
//! attention block, one feed-forward block, the final norm with the LM head.
//!
//! - [`cpu`]: herd-kernels' CPU kernels (AVX2/FMA, gemm), f32 activations.
//! - [`cuda`]: NVRTC-compiled CUDA kernels and cuBLAS through herd-kernels' CUDA layer (feature
//!   `cuda`), bf16 or f32 weights; also its CPU emulation for tests.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::config::TextConfig;
use crate::error::{Error, Result};
use crate::kv_cache::{KvArena, KvCache};
use crate::model::{Engine, Transformer};
use crate::weights::WeightSource;
use candle_core::DType;
use std::sync::Arc;

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// CUDA device number N.
    Cuda(usize),
    /// The CUDA backend's kernels emulated on the CPU (tests on machines without a GPU; slow).
    CudaEmulated,
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`, `auto` (the first CUDA device when one answers, else the
    /// CPU) or `cuda-emulated`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::Request(format!("device must be cpu, cuda, cuda:N, auto or cuda-emulated; got {s:?}"));
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "cuda-emulated" => Ok(Device::CudaEmulated),
            "auto" => Ok(Self::auto()),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(bad),
        }
    }

    /// The first CUDA device when the driver reports one, else the CPU.
    pub fn auto() -> Self {
        #[cfg(feature = "cuda")]
        if herd_kernels::cuda::device_count().is_ok_and(|n| n > 0) {
            return Device::Cuda(0);
        }
        Device::Cpu
    }

    /// The device's name as the settings and the CLI spell it.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(n) => format!("cuda:{n}"),
            Device::CudaEmulated => "cuda-emulated".into(),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// What the device says of itself.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceReport {
    /// `cpu`, `cuda:0`, …
    pub device: String,
    /// The hardware's name (the GPU's, or the CPU's thread count).
    pub name: String,
    /// Bytes of weights held on the device.
    pub weight_bytes: usize,
    /// Kernel launches (and cuBLAS calls) so far; 0 on the CPU.
    pub launches: u64,
    /// Time spent copying logits from the device to the host so far (the step's work finished
    /// first), milliseconds; 0 on the CPU.
    pub logits_copy_ms: f64,
}

/// One attention layer: its tensors and switches.
#[derive(Clone, Debug)]
pub struct AttnSpec {
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// RoPE on this layer (else NoPE).
    pub rope: bool,
    /// The weightless L2 norm of q and k (RoPE layers with `use_qk_norm`).
    pub qk_norm: bool,
    /// NoPE temperature tuning (`attn_temperature_tuning` on NoPE layers).
    pub temperature_tuning: bool,
    /// Chunked attention: a query sees its chunk only.
    pub chunk: Option<usize>,
    pub eps: f32,
    pub floor_scale: f64,
    pub attn_scale: f64,
}

/// A gated MLP (a dense layer's, or the shared expert).
#[derive(Clone, Debug)]
pub struct MlpSpec {
    pub gate: String,
    pub up: String,
    pub down: String,
    pub hidden: usize,
    pub inter: usize,
}

/// A mixture-of-experts block.
#[derive(Clone, Debug)]
pub struct MoeSpec {
    pub router: String,
    /// `[experts, hidden, 2 * inter]`, gate first along the last dimension.
    pub gate_up: String,
    /// `[experts, inter, hidden]`.
    pub down: String,
    pub shared: MlpSpec,
    pub experts: usize,
    pub top_k: usize,
    pub hidden: usize,
    pub inter: usize,
}

/// What one decoder layer is.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    pub input_norm: String,
    pub post_attention_norm: String,
    pub attention: AttnSpec,
    pub feed_forward: FeedForwardSpec,
}

/// A dense MLP or a mixture of experts.
#[derive(Clone, Debug)]
pub enum FeedForwardSpec {
    Dense(MlpSpec),
    Moe(MoeSpec),
}

impl LayerSpec {
    /// Layer `l` of `cfg`, with the tensor names of the hub checkpoints.
    pub fn of(cfg: &TextConfig, l: usize) -> Self {
        let p = format!("model.layers.{l}");
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mlp = |prefix: String, inter| MlpSpec {
            gate: format!("{prefix}.gate_proj.weight"),
            up: format!("{prefix}.up_proj.weight"),
            down: format!("{prefix}.down_proj.weight"),
            hidden: h,
            inter,
        };
        let rope = cfg.rope[l];
        let feed_forward = if cfg.moe[l] {
            FeedForwardSpec::Moe(MoeSpec {
                router: format!("{p}.feed_forward.router.weight"),
                gate_up: format!("{p}.feed_forward.experts.gate_up_proj"),
                down: format!("{p}.feed_forward.experts.down_proj"),
                shared: mlp(format!("{p}.feed_forward.shared_expert"), i),
                experts: cfg.num_local_experts,
                top_k: cfg.num_experts_per_tok,
                hidden: h,
                inter: i,
            })
        } else {
            FeedForwardSpec::Dense(mlp(format!("{p}.feed_forward"), cfg.intermediate_size_mlp))
        };
        Self {
            input_norm: format!("{p}.input_layernorm.weight"),
            post_attention_norm: format!("{p}.post_attention_layernorm.weight"),
            attention: AttnSpec {
                q: format!("{p}.self_attn.q_proj.weight"),
                k: format!("{p}.self_attn.k_proj.weight"),
                v: format!("{p}.self_attn.v_proj.weight"),
                o: format!("{p}.self_attn.o_proj.weight"),
                hidden: h,
                heads: cfg.num_attention_heads,
                kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
                rope,
                qk_norm: cfg.use_qk_norm && rope,
                temperature_tuning: cfg.attn_temperature_tuning && !rope,
                chunk: cfg.chunk_of(l),
                eps: cfg.rms_norm_eps as f32,
                floor_scale: cfg.floor_scale,
                attn_scale: cfg.attn_scale,
            },
            feed_forward,
        }
    }
}

/// One batched step, as the model above the device planned it: the tokens of every sequence, their
/// positions, the KV rows reserved for them (every layer's block table), which rows want logits.
pub struct StepPlan<'a> {
    /// `[T]` token ids, sequence after sequence.
    pub tokens: Vec<u32>,
    /// `[T]` position of each token.
    pub pos: Vec<usize>,
    /// `[T]` sequence of each token.
    pub seq: Vec<usize>,
    /// Token range `[start, end)` of each sequence.
    pub ranges: Vec<(usize, usize)>,
    /// The cache of each sequence, its rows for this step's tokens reserved.
    pub caches: Vec<&'a KvCache>,
    /// Positions per KV block (the same for every cache of the step).
    pub block_rows: usize,
    /// Token rows whose logits are returned, in order.
    pub wanted: Vec<usize>,
}

/// Weights that know their size.
pub trait Held: Send + Sync {
    /// Bytes held.
    fn bytes(&self) -> usize;
}

/// A mixture of experts' weights and counters.
pub trait MoeWeights: Held {
    /// Bytes one token reads: router, `top_k` experts, the shared expert.
    fn active_bytes(&self) -> usize;
    /// Tokens routed to each expert since load.
    fn expert_counts(&self) -> Result<Vec<u64>>;
}

/// A device: weights in its own form, KV storage, and the blocks of a forward step.
pub trait Backend: Send + Sync + Sized + 'static {
    type Vector: Held;
    type Matrix: Held;
    type Attn: Held;
    type Mlp: Held;
    type Moe: MoeWeights;
    /// The residual stream of a step, `[T, hidden]`.
    type Act;
    /// Per-step state (uploaded metadata, scratch).
    type Step<'a>;

    /// The device's report (weights are counted by the model above).
    fn report(&self) -> DeviceReport;

    fn load_vector(&self, src: &dyn WeightSource, name: &str, dim: usize) -> Result<Self::Vector>;
    fn load_matrix(&self, src: &dyn WeightSource, name: &str, rows: usize, cols: usize) -> Result<Self::Matrix>;
    fn load_attention(&self, src: &dyn WeightSource, spec: &AttnSpec) -> Result<Self::Attn>;
    fn load_mlp(&self, src: &dyn WeightSource, spec: &MlpSpec) -> Result<Self::Mlp>;
    fn load_moe(&self, src: &dyn WeightSource, spec: &MoeSpec) -> Result<Self::Moe>;

    /// Storage for KV blocks of `kv_dim` keys and values, `block_rows` positions each, growing as
    /// blocks are taken (nothing is allocated until then).
    fn kv_arena(&self, kv_dim: usize, block_rows: usize) -> Arc<dyn KvArena>;
    /// Storage for `capacity` KV blocks, which a device may reserve at once (so running out of
    /// device memory shows at start, not under load).
    fn kv_arena_reserved(&self, kv_dim: usize, block_rows: usize, capacity: usize) -> Result<Arc<dyn KvArena>> {
        let _ = capacity;
        Ok(self.kv_arena(kv_dim, block_rows))
    }
    /// Bytes of one KV block.
    fn kv_block_bytes(&self, kv_dim: usize, block_rows: usize) -> usize;

    /// Starts a step.
    fn begin<'a>(&'a self, plan: &'a StepPlan<'a>) -> Result<Self::Step<'a>>;
    /// The embedding rows of the step's tokens.
    fn embed(&self, st: &mut Self::Step<'_>, table: &Self::Matrix) -> Result<Self::Act>;
    /// `x += attention(rms_norm(x))` for layer `layer`, writing the step's keys and values.
    fn attention(&self, st: &mut Self::Step<'_>, layer: usize, norm: &Self::Vector, w: &Self::Attn, x: &mut Self::Act) -> Result<()>;
    /// `x += mlp(rms_norm(x))`.
    fn mlp(&self, st: &mut Self::Step<'_>, norm: &Self::Vector, w: &Self::Mlp, x: &mut Self::Act) -> Result<()>;
    /// `x += moe(rms_norm(x))`.
    fn moe(&self, st: &mut Self::Step<'_>, norm: &Self::Vector, w: &Self::Moe, x: &mut Self::Act) -> Result<()>;
    /// Logits `[wanted, vocab]` of the wanted rows: final norm, then the LM head.
    fn logits(&self, st: &mut Self::Step<'_>, x: &Self::Act, norm: &Self::Vector, head: &Self::Matrix) -> Result<Vec<f32>>;
}

/// The dtypes a device holds weights in, checked before loading.
pub(crate) fn check_dtype(device: Device, dtype: DType) -> Result<()> {
    let ok = match device {
        Device::Cpu => matches!(dtype, DType::F32 | DType::BF16 | DType::F16),
        Device::Cuda(_) | Device::CudaEmulated => matches!(dtype, DType::F32 | DType::BF16),
    };
    if ok {
        return Ok(());
    }
    let held = if device == Device::Cpu { "f32, bf16 or f16" } else { "bf16 or f32 (f16 is CPU-only)" };
    Err(Error::Device { device: device.name(), message: format!("weights are held in {held}; got {dtype:?}") })
}

/// Whether the CUDA driver library can be loaded here (no device is touched).
pub fn cuda_driver_present() -> bool {
    #[cfg(feature = "cuda")]
    return herd_kernels::cuda::driver_present();
    #[cfg(not(feature = "cuda"))]
    return false;
}

/// Free memory of a GPU device, bytes (to size a benchmark stack to it).
pub fn free_memory(device: Device) -> Result<usize> {
    match device {
        Device::Cpu => {
            Err(Error::Device { device: "cpu".into(), message: "sizing a stack to fit is for GPUs; give a layer count on the CPU".into() })
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => Ok(herd_kernels::cuda::mem_info(n)?.0),
        Device::CudaEmulated => Ok(16 << 30),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::Device { device: device.name(), message: "this herd was built without the `cuda` feature".into() }),
    }
}

/// Loads the model of `cfg` from `src` onto `device`: the one place a backend is chosen.
pub(crate) fn open(device: Device, cfg: &TextConfig, src: &dyn WeightSource, dtype: DType) -> Result<Box<dyn Engine>> {
    check_dtype(device, dtype)?;
    match device {
        Device::Cpu => Ok(Box::new(Transformer::load(cpu::CpuBackend::new(cfg, dtype), cfg, src)?)),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => Ok(Box::new(Transformer::load(cuda::CudaBackend::open(n, cfg, dtype)?, cfg, src)?)),
        #[cfg(feature = "cuda")]
        Device::CudaEmulated => Ok(Box::new(Transformer::load(cuda::CudaBackend::emulated(cfg, dtype)?, cfg, src)?)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) | Device::CudaEmulated => {
            Err(Error::Device { device: device.name(), message: "this herd was built without the `cuda` feature".into() })
        }
    }
}
