//! Compute kernels of the herd engine.
//!
//! Activations are always `f32`; weights may be stored as `f32`, `bf16` or `f16` and are widened to
//! `f32` inside the kernels, so a half-precision checkpoint is read at half the memory traffic
//! without losing accumulation precision. On x86-64 the hot loops use AVX2 + FMA (+ F16C) when the
//! CPU has them (checked once at run time) and a portable fallback otherwise.
//!
//! The CUDA device layer ([`cuda`], feature `cuda`, on by default) holds herd's CUDA kernels and
//! the driver that runs them: cudarc with dynamic loading, so a build needs no CUDA toolkit.

pub mod activation;
pub mod attention;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod scratch;
pub mod simd;

pub use half::{bf16, f16};

/// A borrowed weight matrix in its storage dtype, row-major.
#[derive(Clone, Copy, Debug)]
pub enum WeightRef<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl WeightRef<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            WeightRef::F32(w) => w.len(),
            WeightRef::Bf16(w) => w.len(),
            WeightRef::F16(w) => w.len(),
        }
    }

    /// True when the matrix has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per element.
    pub fn elem_bytes(&self) -> usize {
        match self {
            WeightRef::F32(_) => 4,
            WeightRef::Bf16(_) | WeightRef::F16(_) => 2,
        }
    }

    /// Copies `out.len()` elements starting at `start`, widened to f32.
    pub fn to_f32_into(&self, start: usize, out: &mut [f32]) {
        crate::simd::widen(self.slice(start, out.len()), out);
    }

    /// One element widened to f32 (slow path, for tests and gathers).
    pub fn get(&self, i: usize) -> f32 {
        match self {
            WeightRef::F32(w) => w[i],
            WeightRef::Bf16(w) => w[i].to_f32(),
            WeightRef::F16(w) => w[i].to_f32(),
        }
    }

    /// Sub-range `[start, start + len)` of the elements.
    pub fn slice(&self, start: usize, len: usize) -> Self {
        match self {
            WeightRef::F32(w) => WeightRef::F32(&w[start..start + len]),
            WeightRef::Bf16(w) => WeightRef::Bf16(&w[start..start + len]),
            WeightRef::F16(w) => WeightRef::F16(&w[start..start + len]),
        }
    }
}

/// A raw pointer that may be shared between pool tasks writing disjoint elements.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `SendPtr`, which is `Sync`).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: only used to write disjoint index sets from parallel tasks, see the call sites.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
