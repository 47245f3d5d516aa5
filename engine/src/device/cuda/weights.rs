//! Weights in device memory, laid out for the kernels: q/k/v stacked in one matrix, gate and up
//! stacked, experts transposed to `[E, N, K]` (each output row contiguous along K), all in the
//! compute dtype. Tensors go from the source to the device one at a time (a checkpoint's mapped
//! pages are released after each), converted and transposed on the device.

use crate::device::{AttnSpec, Held, MlpSpec, MoeSpec, MoeWeights};
use crate::error::{Error, Result};
use crate::weights::{Raw, WeightSource};
use candle_core::DType;
use herd_kernels::cuda::ops::{self, Dt, SrcDt};
use herd_kernels::cuda::{DevBuf, Gpu};
use std::sync::Arc;

/// One tensor on the device, in the compute dtype.
pub struct DevTensor {
    pub buf: DevBuf,
}

impl DevTensor {
    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }
}

impl Held for DevTensor {
    fn bytes(&self) -> usize {
        self.buf.bytes()
    }
}

/// How a source tensor lands in its destination.
#[derive(Clone, Copy)]
enum Place {
    /// As it is (row-major), `offset` elements into the destination.
    At(usize),
    /// `[batches, rows, cols]` transposed to `[batches, cols, rows]`.
    Transposed { batches: usize, rows: usize, cols: usize },
}

/// Loads tensors of one model onto one device.
pub struct Loader<'a> {
    pub gpu: &'a Arc<Gpu>,
    pub dt: Dt,
    pub src: &'a dyn WeightSource,
}

fn src_dt(d: DType, name: &str) -> Result<SrcDt> {
    match d {
        DType::F32 => Ok(SrcDt::F32),
        DType::BF16 => Ok(SrcDt::Bf16),
        DType::F16 => Ok(SrcDt::F16),
        other => Err(Error::Request(format!("tensor `{name}` holds {other:?}; herd reads F32, BF16 and F16"))),
    }
}

impl Loader<'_> {
    /// A fresh device tensor of `elems` elements.
    fn alloc(&self, elems: usize) -> Result<DevBuf> {
        Ok(self.gpu.alloc(elems * self.dt.size())?)
    }

    /// Puts tensor `name` (`shape`) into `dst` as `place` says.
    fn put(&self, name: &str, shape: &[usize], dst: &DevBuf, place: Place) -> Result<()> {
        let n: usize = shape.iter().product();
        let (gpu, dt) = (self.gpu, self.dt);
        self.src.with_raw(name, shape, &mut |raw| {
            let at = match place {
                Place::At(off) => dst.at(off * dt.size()),
                Place::Transposed { .. } => dst.ptr(),
            };
            match raw {
                Raw::Random { seed, mean, std } => ops::fill_random(gpu, dt, at, n, seed, mean, std)?,
                Raw::Bytes { dtype, bytes } => {
                    let s = src_dt(dtype, name)?;
                    let same = matches!((s, dt), (SrcDt::F32, Dt::F32) | (SrcDt::Bf16, Dt::Bf16));
                    match place {
                        Place::At(_) if same => gpu.htod(at, bytes)?,
                        Place::At(_) => {
                            let staging = gpu.alloc(bytes.len())?;
                            gpu.htod(staging.ptr(), bytes)?;
                            ops::convert(gpu, s, dt, staging.ptr(), at, n)?;
                        }
                        Place::Transposed { batches, rows, cols } => {
                            let staging = gpu.alloc(bytes.len())?;
                            gpu.htod(staging.ptr(), bytes)?;
                            ops::transpose(gpu, s, dt, staging.ptr(), at, batches, rows, cols)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Tensor `name` of `shape`, as it is.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<DevTensor> {
        let buf = self.alloc(shape.iter().product())?;
        self.put(name, shape, &buf, Place::At(0))?;
        Ok(DevTensor { buf })
    }

    /// Several `[rows_i, cols]` tensors stacked along the rows into one matrix.
    pub fn stacked(&self, parts: &[(&str, usize)], cols: usize) -> Result<DevTensor> {
        let rows: usize = parts.iter().map(|p| p.1).sum();
        let buf = self.alloc(rows * cols)?;
        let mut at = 0;
        for &(name, r) in parts {
            self.put(name, &[r, cols], &buf, Place::At(at * cols))?;
            at += r;
        }
        Ok(DevTensor { buf })
    }

    /// `[batches, rows, cols]` tensor `name` as `[batches, cols, rows]`.
    pub fn transposed(&self, name: &str, batches: usize, rows: usize, cols: usize) -> Result<DevTensor> {
        let buf = self.alloc(batches * rows * cols)?;
        self.put(name, &[batches, rows, cols], &buf, Place::Transposed { batches, rows, cols })?;
        Ok(DevTensor { buf })
    }
}

/// An attention layer: `[(nh + 2 nkv) d, hidden]` q/k/v and `[hidden, nh d]` o.
pub struct Attn {
    pub qkv: DevTensor,
    pub o: DevTensor,
    pub spec: AttnSpec,
}

impl Attn {
    pub fn load(l: &Loader<'_>, spec: &AttnSpec) -> Result<Self> {
        let (h, d) = (spec.hidden, spec.head_dim);
        let qkv = l.stacked(&[(&spec.q, spec.heads * d), (&spec.k, spec.kv_heads * d), (&spec.v, spec.kv_heads * d)], h)?;
        let o = l.tensor(&spec.o, &[h, spec.heads * d])?;
        Ok(Self { qkv, o, spec: spec.clone() })
    }
}

impl Held for Attn {
    fn bytes(&self) -> usize {
        self.qkv.bytes() + self.o.bytes()
    }
}

/// A gated MLP: `[2 inter, hidden]` gate then up, `[hidden, inter]` down.
pub struct Mlp {
    pub gate_up: DevTensor,
    pub down: DevTensor,
    pub hidden: usize,
    pub inter: usize,
}

impl Mlp {
    pub fn load(l: &Loader<'_>, spec: &MlpSpec) -> Result<Self> {
        let (h, i) = (spec.hidden, spec.inter);
        let gate_up = l.stacked(&[(&spec.gate, i), (&spec.up, i)], h)?;
        let down = l.tensor(&spec.down, &[h, i])?;
        Ok(Self { gate_up, down, hidden: h, inter: i })
    }
}

impl Held for Mlp {
    fn bytes(&self) -> usize {
        self.gate_up.bytes() + self.down.bytes()
    }
}

/// Router, experts as `[E, 2 inter, hidden]` (gate rows first) and `[E, hidden, inter]`, the
/// shared expert, and the count of tokens routed to each expert since load (`[E]` u64).
pub struct Moe {
    pub router: DevTensor,
    pub gate_up: DevTensor,
    pub down: DevTensor,
    pub shared: Mlp,
    pub totals: DevBuf,
    pub spec: MoeSpec,
}

impl Moe {
    pub fn load(l: &Loader<'_>, spec: &MoeSpec) -> Result<Self> {
        let (e, h, i) = (spec.experts, spec.hidden, spec.inter);
        Ok(Self {
            router: l.tensor(&spec.router, &[e, h])?,
            // checkpoint [E, hidden, 2 inter] -> [E, 2 inter, hidden]
            gate_up: l.transposed(&spec.gate_up, e, h, 2 * i)?,
            // checkpoint [E, inter, hidden] -> [E, hidden, inter]
            down: l.transposed(&spec.down, e, i, h)?,
            shared: Mlp::load(l, &spec.shared)?,
            totals: l.gpu.zeros(e * 8)?,
            spec: spec.clone(),
        })
    }
}

impl Held for Moe {
    fn bytes(&self) -> usize {
        self.router.bytes() + self.gate_up.bytes() + self.down.bytes() + self.shared.bytes()
    }
}

impl MoeWeights for Moe {
    fn active_bytes(&self) -> usize {
        let experts = self.gate_up.bytes() + self.down.bytes();
        self.router.bytes() + self.spec.top_k * experts / self.spec.experts.max(1) + self.shared.bytes()
    }

    fn expert_counts(&self) -> Result<Vec<u64>> {
        Ok(self.totals.to_vec::<u64>()?)
    }
}
