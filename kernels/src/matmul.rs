//! Matrix products of activations `x [T, in]` with a weight matrix, in either storage layout:
//! - [`linear`]: `W [out, in]` (PyTorch `nn.Linear`), `y = x · Wᵀ`;
//! - [`matmul_xw`]: `W [in, out]` (Llama 4's fused expert tensors), `y = x · W`.
//!
//! Few tokens (decode) take streaming kernels: every task reads a contiguous run of weight rows
//! once, whatever `T` is — what bounds decode speed is reading each active weight once. Many
//! tokens (prefill) take the `gemm` crate on column slabs, one per task; half-precision weights
//! are widened slab by slab into a per-thread scratch buffer first.

use crate::pool::{parallel_for, threads};
use crate::simd::{axpy, axpy4, dot, dot_multi, widen};
use crate::{SendPtr, WeightRef};
use gemm::Parallelism;
use std::cell::RefCell;

/// From this many tokens on, products go through `gemm` instead of the streaming kernels
/// (measured on bench16: 8 and 32 give the same batch-16 decode speed).
pub const GEMM_MIN_TOKENS: usize = 8;

/// Output columns per tile of the small-batch `x · W` kernel.
const XW_TILE: usize = 512;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Splits `units` into tasks of at least `min_per_task` units (about four per thread); returns
/// the units per task.
fn per_task(units: usize, min_per_task: usize) -> usize {
    units.div_ceil(threads() * 4).max(min_per_task).min(units.max(1))
}

/// `y[T, out] = x[T, in] · Wᵀ` with `W` stored `[out, in]`.
///
/// # Panics
/// When a slice length does not match the dimensions (a caller bug, never input-dependent).
pub fn linear(x: &[f32], t: usize, w: WeightRef<'_>, out_dim: usize, in_dim: usize, y: &mut [f32]) {
    assert_eq!(x.len(), t * in_dim, "linear: x is not [T, in]");
    assert_eq!(w.len(), out_dim * in_dim, "linear: W is not [out, in]");
    assert_eq!(y.len(), t * out_dim, "linear: y is not [T, out]");
    if t == 0 || out_dim == 0 {
        return;
    }
    if t >= GEMM_MIN_TOKENS {
        y.fill(0.0);
        linear_gemm(x, t, w, out_dim, in_dim, y);
        return;
    }
    let rows: Vec<&[f32]> = x.chunks_exact(in_dim).collect();
    let yp = SendPtr(y.as_mut_ptr());
    let per = per_task(out_dim, 8);
    parallel_for(out_dim.div_ceil(per), &|task| {
        let (o0, o1) = (task * per, ((task + 1) * per).min(out_dim));
        let mut out4 = [0f32; 4];
        for o in o0..o1 {
            let wr = w.slice(o * in_dim, in_dim);
            let mut ti = 0;
            while ti + 4 <= t {
                dot_multi(wr, &rows[ti..ti + 4], &mut out4);
                for (j, v) in out4.iter().enumerate() {
                    // SAFETY: element (ti + j, o) is written by this task only: o is in its range.
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
pub fn matmul_xw(x: &[f32], t: usize, w: WeightRef<'_>, in_dim: usize, out_dim: usize, y: &mut [f32], accumulate: bool) {
    assert_eq!(x.len(), t * in_dim, "matmul_xw: x is not [T, in]");
    assert_eq!(w.len(), out_dim * in_dim, "matmul_xw: W is not [in, out]");
    assert_eq!(y.len(), t * out_dim, "matmul_xw: y is not [T, out]");
    if t == 0 || out_dim == 0 {
        return;
    }
    if !accumulate {
        y.fill(0.0);
    }
    if t >= GEMM_MIN_TOKENS {
        xw_gemm(x, t, w, in_dim, out_dim, y);
        return;
    }
    // Each task streams a contiguous block of weight rows into its own partial sums ([T, out]),
    // which are added up at the end. Within a task: column tiles (the tile's partial sums stay in
    // L1), four weight rows folded into each token's sums at once (one load and store of the sums
    // per four rows), so every weight element is read once for all tokens.
    let tasks = threads().min(in_dim.div_ceil(32)).max(1);
    let per = in_dim.div_ceil(tasks);
    let mut partial = vec![0f32; tasks * t * out_dim];
    let pp = SendPtr(partial.as_mut_ptr());
    parallel_for(tasks, &|task| {
        let (h0, h1) = (task * per, ((task + 1) * per).min(in_dim));
        // SAFETY: each task owns its own [T, out] block of `partial`.
        let part = unsafe { std::slice::from_raw_parts_mut(pp.get().add(task * t * out_dim), t * out_dim) };
        let mut c0 = 0;
        while c0 < out_dim {
            let n = XW_TILE.min(out_dim - c0);
            let mut h = h0;
            while h + 4 <= h1 {
                let rows = [0, 1, 2, 3].map(|j| w.slice((h + j) * out_dim + c0, n));
                for tt in 0..t {
                    let xr = &x[tt * in_dim + h..tt * in_dim + h + 4];
                    if xr.iter().any(|v| *v != 0.0) {
                        let a = [xr[0], xr[1], xr[2], xr[3]];
                        axpy4(&mut part[tt * out_dim + c0..tt * out_dim + c0 + n], a, rows);
                    }
                }
                h += 4;
            }
            for hh in h..h1 {
                let row = w.slice(hh * out_dim + c0, n);
                for tt in 0..t {
                    let a = x[tt * in_dim + hh];
                    if a != 0.0 {
                        axpy(&mut part[tt * out_dim + c0..tt * out_dim + c0 + n], a, row);
                    }
                }
            }
            c0 += n;
        }
    });
    for part in partial.chunks_exact(t * out_dim) {
        for (a, b) in y.iter_mut().zip(part) {
            *a += b;
        }
    }
}

fn linear_gemm(x: &[f32], t: usize, w: WeightRef<'_>, out_dim: usize, in_dim: usize, y: &mut [f32]) {
    // Slabs of output rows: W[o0..o1, :] is contiguous.
    let per = per_task(out_dim, 32).next_multiple_of(16).min(out_dim);
    let yp = SendPtr(y.as_mut_ptr());
    parallel_for(out_dim.div_ceil(per), &|task| {
        let (o0, o1) = (task * per, ((task + 1) * per).min(out_dim));
        let n = o1 - o0;
        let slab = w.slice(o0 * in_dim, n * in_dim);
        with_f32(slab, |ws| {
            // SAFETY: columns [o0, o1) of y belong to this task; W slab read as [in, n] with
            // strides (col = in, row = 1).
            unsafe { gemm_f32(t, n, in_dim, yp.get().add(o0), out_dim, x.as_ptr(), in_dim, ws.as_ptr(), in_dim as isize, 1) };
        });
    });
}

fn xw_gemm(x: &[f32], t: usize, w: WeightRef<'_>, in_dim: usize, out_dim: usize, y: &mut [f32]) {
    // Slabs of output columns: W[:, c0..c1] (strided), widened to [in, n] when half precision.
    let per = per_task(out_dim, 32).next_multiple_of(16).min(out_dim);
    let yp = SendPtr(y.as_mut_ptr());
    parallel_for(out_dim.div_ceil(per), &|task| {
        let (c0, c1) = (task * per, ((task + 1) * per).min(out_dim));
        let n = c1 - c0;
        match w {
            // SAFETY: columns [c0, c1) of y belong to this task; W read with strides (1, out).
            WeightRef::F32(wf) => unsafe {
                gemm_f32(t, n, in_dim, yp.get().add(c0), out_dim, x.as_ptr(), in_dim, wf.as_ptr().add(c0), 1, out_dim as isize);
            },
            _ => SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                s.resize(in_dim * n, 0.0);
                for (h, row) in s.chunks_exact_mut(n).enumerate() {
                    widen(w.slice(h * out_dim + c0, n), row);
                }
                // SAFETY: as above, the slab is [in, n] contiguous.
                unsafe { gemm_f32(t, n, in_dim, yp.get().add(c0), out_dim, x.as_ptr(), in_dim, s.as_ptr(), 1, n as isize) };
            }),
        }
    });
}

/// Calls `f` with the elements of `w` as f32: directly, or widened into this thread's scratch.
fn with_f32(w: WeightRef<'_>, f: impl FnOnce(&[f32])) {
    match w {
        WeightRef::F32(wf) => f(wf),
        _ => SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            s.resize(w.len(), 0.0);
            widen(w, &mut s);
            f(&s);
        }),
    }
}

/// `dst[m, n] += lhs[m, k] · rhs[k, n]` on the calling thread; dst and lhs row-major with the
/// given row strides, rhs addressed by (column stride, row stride).
///
/// # Safety
/// Every addressed element must be in bounds of its allocation, and no other thread may write
/// the addressed part of `dst`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
) {
    // SAFETY: forwarded from the caller. dst = 1·dst + 1·lhs·rhs.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_rs as isize, true, lhs, 1, lhs_rs as isize, rhs, rhs_cs, rhs_rs, 1.0, 1.0, false,
            false, false, Parallelism::None,
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
        for (inn, out) in [(67usize, 45usize), (130, 300)] {
            let w = data(inn * out, 3);
            let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            for t in [1usize, 3, 4, 5, 8, 19, 33] {
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
}
