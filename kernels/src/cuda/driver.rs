//! What [`super::Gpu`] needs from a driver: memory, copies, launches, GEMMs, a stream to wait on.
//! Device addresses are plain `u64` (a `CUdeviceptr`, or a host address under emulation).

use super::Result;
use std::ffi::c_void;

/// Name, architecture and memory of a device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub arch: (u32, u32),
    pub total_mem: usize,
    pub multiprocessors: u32,
    /// True for the CPU emulation.
    pub emulated: bool,
}

/// One kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device address.
    Ptr(u64),
    I32(i32),
    U32(u32),
    F32(f32),
    F64(f64),
    U64(u64),
}

impl Arg {
    /// The argument in an 8-byte slot (4-byte values in the low bytes: little-endian hosts).
    pub(crate) fn bits(&self) -> u64 {
        match *self {
            Arg::Ptr(p) | Arg::U64(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::U32(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
            Arg::F64(v) => v.to_bits(),
        }
    }
}

/// Element types of a GEMM's operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmType {
    /// A and B f32, C f32, f32 arithmetic (no TF32).
    F32,
    /// A and B bf16, C f32, f32 accumulation.
    Bf16,
}

/// `C = alpha · op(A) · op(B) + beta · C` in cuBLAS's column-major convention: `op(A)` is
/// `m × k`, `op(B)` is `k × n`, `C` is `m × n`; `trans_a` means A is stored `k × m` (leading
/// dimension `lda`), and so on.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub b: u64,
    pub ldb: usize,
    pub c: u64,
    pub ldc: usize,
    pub alpha: f32,
    pub beta: f32,
    pub ty: GemmType,
}

impl Gemm {
    /// Row-major `Y [t, n] (+)= X [t, k] · Wᵀ` with `W [n, k]` (a linear layer), as a
    /// column-major GEMM: `Yᵀ [n, t] = W [n, k] · Xᵀ [k, t]`, i.e. `op(A) = Wᵀᵀ`.
    #[allow(clippy::too_many_arguments)]
    pub fn linear(ty: GemmType, x: u64, w: u64, y: u64, t: usize, n: usize, k: usize, accumulate: bool) -> Self {
        Self {
            trans_a: true,
            trans_b: false,
            m: n,
            n: t,
            k,
            a: w,
            lda: k,
            b: x,
            ldb: k,
            c: y,
            ldc: n,
            alpha: 1.0,
            beta: if accumulate { 1.0 } else { 0.0 },
            ty,
        }
    }
}

/// A driver: the real CUDA one or the CPU emulation. Every call is queued on one stream, in
/// order, except [`Driver::dtoh`] and [`Driver::sync`], which wait for it.
pub(crate) trait Driver: Send + Sync {
    fn info(&self) -> DeviceInfo;
    fn mem_free(&self) -> Result<usize>;
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Frees in stream order (work already queued may still use the memory).
    fn free(&self, ptr: u64);
    /// Host to device; `src` may be reused when this returns.
    fn htod(&self, dst: u64, src: &[u8]) -> Result<()>;
    /// Waits for the stream, then copies device to host.
    fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()>;
    fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()>;
    /// Launches kernel number `k` (named `name`) with `params` pointing at each argument's value.
    fn launch(&self, k: usize, name: &str, grid: [u32; 3], block: [u32; 3], smem: u32, params: &mut [*mut c_void]) -> Result<()>;
    fn allow_smem(&self, k: usize, bytes: u32) -> Result<()>;
    fn gemm(&self, g: &Gemm) -> Result<()>;
    fn sync(&self) -> Result<()>;
    /// The CPU emulation's thread order (see [`super::ThreadOrder`]); real devices refuse.
    fn set_thread_order(&self, _order: super::ThreadOrder) -> Result<()> {
        Err(super::Error::Invalid("only the CPU emulation runs threads in a chosen order".into()))
    }
}
