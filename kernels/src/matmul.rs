//! Matrix products of activations `x [T, in]` with a weight matrix, in either storage layout:
//! - [`linear`]: `W [out, in]` (PyTorch `nn.Linear`), `y = x · Wᵀ`;
//! - [`matmul_xw`]: `W [in, out]` (Llama 4's fused expert tensors), `y = x · W`.
//!
//! Few tokens (decode) take the streaming kernels of [`crate::simd`]: every weight is read once
//! per call whatever `T` is, which is what bounds decode speed. Many tokens (prefill) take the
//! `gemm` crate; half-precision weights are widened block by block into a scratch buffer first.

use crate::simd::{axpy, dot, dot_multi};
use crate::{SendPtr, WeightRef};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

/// From this many tokens on, products go through `gemm` instead of the streaming kernels.
pub const GEMM_MIN_TOKENS: usize = 8;

/// Weight elements widened per block on the gemm path of half-precision weights (4 MiB of f32).
const WIDEN_BLOCK_ELEMS: usize = 1 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn tasks_for(units: usize, min_per_task: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per = units.div_ceil(threads * 4).max(min_per_task);
    per.min(units.max(1))
}

/// `y[T, out] = x[T, in] · Wᵀ` with `W` stored `[out, in]`.
///
/// # Panics
/// When a slice length does not match the dimensions (a caller bug, never input-dependent).
pub fn linear(x: &[f32], t: usize, w: WeightRef<'_>, out_dim: usize, in_dim: usize, y: &mut [f32]) {
    assert_eq!(x.len(), t * in_dim, "linear: x is not [T, in]");
    assert_eq!(w.len(), out_dim * in_dim, "linear: W is not [out, in]");
    assert_eq!(y.len(), t * out_dim, "linear: y is not [T, out]");
    if t == 0 {
        return;
    }
    if t >= GEMM_MIN_TOKENS {
        linear_gemm(x, t, w, out_dim, in_dim, y);
        return;
    }
    let rows: Vec<&[f32]> = x.chunks_exact(in_dim).collect();
    let yp = SendPtr(y.as_mut_ptr());
    let per = tasks_for(out_dim, 8);
    (0..out_dim.div_ceil(per)).into_par_iter().for_each(|task| {
        let (o0, o1) = (task * per, ((task + 1) * per).min(out_dim));
        let mut out4 = [0f32; 4];
        for o in o0..o1 {
            let wr = w.slice(o * in_dim, in_dim);
            let mut ti = 0;
            while ti + 4 <= t {
                dot_multi(wr, &rows[ti..ti + 4], &mut out4);
                for (j, v) in out4.iter().enumerate() {
                    // SAFETY: (ti + j, o) is written by this task only; o is in this task's range.
                    unsafe { *yp.get().add((ti + j) * out_dim + o) = *v };
                }
                ti += 4;
            }
            for (tt, row) in rows.iter().enumerate().skip(ti) {
                // SAFETY: as above.
                unsafe { *yp.get().add(tt * out_dim + o) = dot(wr, row) };
            }
        }
    });
}

/// `y[T, out] = x[T, in] · W` (or `+=` when `accumulate`) with `W` stored `[in, out]`.
///
/// # Panics
/// When a slice length does not match the dimensions (a caller bug, never input-dependent).
pub fn matmul_xw(
    x: &[f32],
    t: usize,
    w: WeightRef<'_>,
    in_dim: usize,
    out_dim: usize,
    y: &mut [f32],
    accumulate: bool,
) {
    assert_eq!(x.len(), t * in_dim, "matmul_xw: x is not [T, in]");
    assert_eq!(w.len(), out_dim * in_dim, "matmul_xw: W is not [in, out]");
    assert_eq!(y.len(), t * out_dim, "matmul_xw: y is not [T, out]");
    if t == 0 {
        return;
    }
    if t >= GEMM_MIN_TOKENS {
        xw_gemm(x, t, w, in_dim, out_dim, y, accumulate);
        return;
    }
    // Column ranges per task, multiples of 16 so the vector loops have no tails.
    let per = tasks_for(out_dim, 64).next_multiple_of(16).min(out_dim);
    let yp = SendPtr(y.as_mut_ptr());
    (0..out_dim.div_ceil(per)).into_par_iter().for_each(|task| {
        let (c0, c1) = (task * per, ((task + 1) * per).min(out_dim));
        let len = c1 - c0;
        // SAFETY: each task owns columns [c0, c1) of every row of y; the row slices are disjoint
        // from every other task's.
        let mut ys: Vec<&mut [f32]> = (0..t)
            .map(|tt| unsafe { std::slice::from_raw_parts_mut(yp.get().add(tt * out_dim + c0), len) })
            .collect();
        if !accumulate {
            ys.iter_mut().for_each(|r| r.fill(0.0));
        }
        for h in 0..in_dim {
            let seg = w.slice(h * out_dim + c0, len);
            for (tt, yr) in ys.iter_mut().enumerate() {
                let a = x[tt * in_dim + h];
                if a != 0.0 {
                    axpy(yr, a, seg);
                }
            }
        }
    });
}

fn linear_gemm(x: &[f32], t: usize, w: WeightRef<'_>, out_dim: usize, in_dim: usize, y: &mut [f32]) {
    match w {
        // SAFETY: dimensions asserted by the caller; W read as [in, out] with strides (1, in).
        WeightRef::F32(wf) => unsafe {
            gemm_f32(t, out_dim, in_dim, y.as_mut_ptr(), out_dim, false, x.as_ptr(), in_dim, wf.as_ptr(), in_dim as isize, 1);
        },
        _ => {
            let rows_per_block = (WIDEN_BLOCK_ELEMS / in_dim).max(1);
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                for o0 in (0..out_dim).step_by(rows_per_block) {
                    let rows = rows_per_block.min(out_dim - o0);
                    s.resize(rows * in_dim, 0.0);
                    w.to_f32_into(o0 * in_dim, &mut s[..rows * in_dim]);
                    // SAFETY: block of rows [o0, o0+rows) of W written into columns of y.
                    unsafe {
                        gemm_f32(t, rows, in_dim, y.as_mut_ptr().add(o0), out_dim, false, x.as_ptr(), in_dim, s.as_ptr(), in_dim as isize, 1);
                    }
                }
            });
        }
    }
}

fn xw_gemm(x: &[f32], t: usize, w: WeightRef<'_>, in_dim: usize, out_dim: usize, y: &mut [f32], accumulate: bool) {
    match w {
        // SAFETY: dimensions asserted by the caller; W read as [in, out] with strides (out, 1).
        WeightRef::F32(wf) => unsafe {
            gemm_f32(t, out_dim, in_dim, y.as_mut_ptr(), out_dim, accumulate, x.as_ptr(), in_dim, wf.as_ptr(), 1, out_dim as isize);
        },
        _ => {
            let rows_per_block = (WIDEN_BLOCK_ELEMS / out_dim).max(1);
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                for h0 in (0..in_dim).step_by(rows_per_block) {
                    let rows = rows_per_block.min(in_dim - h0);
                    s.resize(rows * out_dim, 0.0);
                    w.to_f32_into(h0 * out_dim, &mut s[..rows * out_dim]);
                    // SAFETY: y += x[:, h0..h0+rows] · W[h0..h0+rows, :]; x columns read with row stride in_dim.
                    unsafe {
                        gemm_f32(t, out_dim, rows, y.as_mut_ptr(), out_dim, accumulate || h0 > 0, x.as_ptr().add(h0), in_dim, s.as_ptr(), 1, out_dim as isize);
                    }
                }
            });
        }
    }
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`; dst and lhs row-major with the given row strides,
/// rhs addressed by (column stride, row stride).
///
/// # Safety
/// Every addressed element must be in bounds of its allocation.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    let par = if rayon::current_num_threads() > 1 { Parallelism::Rayon(0) } else { Parallelism::None };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs as isize, accumulate, lhs, 1, lhs_rs as isize, rhs, rhs_cs, rhs_rs,
            if accumulate { 1.0 } else { 0.0 }, 1.0, false, false, false, par,
        );
    }
}

/// Plain triple-loop reference of [`linear`] (tests).
pub fn linear_reference(x: &[f32], t: usize, w: WeightRef<'_>, out_dim: usize, in_dim: usize) -> Vec<f32> {
    let mut y = vec![0f32; t * out_dim];
    for tt in 0..t {
        for o in 0..out_dim {
            let mut s = 0f64;
            for i in 0..in_dim {
                s += x[tt * in_dim + i] as f64 * w.get(o * in_dim + i) as f64;
            }
            y[tt * out_dim + o] = s as f32;
        }
    }
    y
}

/// Plain triple-loop reference of [`matmul_xw`] (tests).
pub fn matmul_xw_reference(x: &[f32], t: usize, w: WeightRef<'_>, in_dim: usize, out_dim: usize) -> Vec<f32> {
    let mut y = vec![0f32; t * out_dim];
    for tt in 0..t {
        for o in 0..out_dim {
            let mut s = 0f64;
            for i in 0..in_dim {
                s += x[tt * in_dim + i] as f64 * w.get(i * out_dim + o) as f64;
            }
            y[tt * out_dim + o] = s as f32;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn linear_and_xw_match_the_reference_for_all_dtypes_and_token_counts() {
        let (inn, out) = (67, 45);
        let w = data(inn * out, 3);
        let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
        let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
        for t in [1usize, 3, 4, 5, 8, 19] {
            let x = data(t * inn, t as u64);
            for wr in [WeightRef::F32(&w), WeightRef::Bf16(&wb), WeightRef::F16(&wh)] {
                let mut y = vec![f32::NAN; t * out];
                linear(&x, t, wr, out, inn, &mut y);
                close(&y, &linear_reference(&x, t, wr, out, inn), 1e-4);

                let mut y = vec![f32::NAN; t * out];
                matmul_xw(&x, t, wr, inn, out, &mut y, false);
                let want = matmul_xw_reference(&x, t, wr, inn, out);
                close(&y, &want, 1e-4);
                // accumulate adds on top of what is there
                matmul_xw(&x, t, wr, inn, out, &mut y, true);
                let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
                close(&y, &twice, 2e-4);
            }
        }
    }
}
