//! Matrix products of activations `x [T, in]` with a weight matrix, in either storage layout:
//! - [`linear`]: `W [out, in]` (PyTorch `nn.Linear`), `y = x · Wᵀ`;
//! - [`matmul_xw`]: `W [in, out]` (Llama 4's fused expert tensors), `y = x · W`.
//!
//! Fewer than [`GEMM_MIN_TOKENS`] tokens ([`XW_GEMM_MIN_TOKENS`] for `x · W`: decode, batched
//! decode, the experts' share of a batch) take streaming kernels: every
//! task reads a contiguous run of weight rows from memory once, whatever `T` is, prefetching the
//! rows that follow, and folds them into all tokens from L1 (register tiles of 3 rows × 4 tokens
//! for `linear`, four rows at a time for `matmul_xw`). Many tokens (prefill) take the `gemm` crate
//! on column slabs, one per task; half-precision weights are widened slab by slab into a
//! per-thread scratch buffer first.

use crate::pool::{parallel_for, threads};
use crate::simd::{axpy, axpy4, dot_rows, widen};
use crate::{SendPtr, WeightRef};
use gemm::Parallelism;
use std::cell::RefCell;

/// From this many tokens on, products go through `gemm` instead of the streaming kernels.
/// Measured with `cargo run --release -p herd-kernels --example kbench` (2 threads, bench16
/// shapes): the tiled kernel beats `gemm` up to 64 tokens (145–170 against 70 GFLOP/s at 16),
/// ties at 128 and loses by 5–10% from 256 on.
pub const GEMM_MIN_TOKENS: usize = 128;

/// From this many tokens on, `x · W` products go through `gemm` (the row-streaming kernel folds
/// one weight row into one token at a time; gemm's register tiles win once several tokens share
/// each row). bench16 f32 prefill, where experts get ~8–32 tokens each: 889 tok/s with the
/// streaming kernel up to 128 tokens, 1,220 from 16, 1,254 from 8 (batch 1, `bench16.py`).
pub const XW_GEMM_MIN_TOKENS: usize = 8;

/// Bytes of partial sums ([T, tile columns]) the small-batch `x · W` kernel keeps per tile (in L1).
const XW_TILE_BYTES: usize = 32 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Splits `units` into tasks of at least `min_per_task` units (about four per thread); returns
/// the units per task (`gemm`'s slabs).
fn per_task(units: usize, min_per_task: usize) -> usize {
    units.div_ceil(threads() * 4).max(min_per_task).min(units.max(1))
}

/// `y[T, out] = x[T, in] · Wᵀ` with `W` stored `[out, in]`.
///
/// # Panics
/// When a slice length does not match the dimensions (a caller bug, never input-dependent).
pub fn linear(x: &[f32], t: usize, w: WeightRef<'_>, out_dim: usize, in_dim: usize, y: &mut [f32]) {
    y.fill(0.0);
    products(&mut [Product { x, t, w, layout: Layout::OutIn, in_dim, out_dim, y }]);
}

/// `y[T, out] = x[T, in] · W` (or `+=` when `accumulate`) with `W` stored `[in, out]`.
///
/// # Panics
/// When a slice length does not match the dimensions (a caller bug, never input-dependent).
pub fn matmul_xw(x: &[f32], t: usize, w: WeightRef<'_>, in_dim: usize, out_dim: usize, y: &mut [f32], accumulate: bool) {
    if !accumulate {
        y.fill(0.0);
    }
    products(&mut [Product { x, t, w, layout: Layout::InOut, in_dim, out_dim, y }]);
}

/// How a weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[out, in]` (PyTorch `nn.Linear`): the product is `x · Wᵀ`.
    OutIn,
    /// `[in, out]` (Llama 4's fused expert tensors): the product is `x · W`.
    InOut,
}

/// One product of [`products`]: `y[T, out] += x[T, in] · W` (`W` as `layout` says).
pub struct Product<'a> {
    pub x: &'a [f32],
    pub t: usize,
    pub w: WeightRef<'a>,
    pub layout: Layout,
    pub in_dim: usize,
    pub out_dim: usize,
    pub y: &'a mut [f32],
}

/// Weight bytes per task of the few-token kernels: several tasks per matrix, so that the threads
/// stay busy to the end of a loop over many matrices.
const TASK_BYTES: usize = 512 * 1024;

/// Weight rows per register tile of the few-token `x · Wᵀ` kernel.
const TILE_ROWS: usize = 3;

/// One task of [`products`]: weight rows `rows` of product `job`; `partial` is the offset of its
/// own `[T, out]` sums (`x · W` only: each row block adds to every output).
struct Task {
    job: usize,
    rows: std::ops::Range<usize>,
    partial: usize,
}

/// Runs several `y += x · W` products in one parallel loop: the projections that read the same
/// activations (q, k, v; gate, up), or the routed experts of a layer together with the shared one.
///
/// Few-token products are cut into tasks of contiguous weight rows (about 512 KB each),
/// so a thread streams each block once and the threads share all matrices out with one
/// fork-join; the `x · Wᵀ` blocks are spread among the `x · W` ones, so a compute-bound block (a
/// projection for sixteen tokens) can run beside a memory-bound one (an expert read for one). `x · Wᵀ` tasks write their own
/// outputs; `x · W` tasks write partial sums, added into `y` afterwards. Many-token products go
/// through `gemm` (from [`GEMM_MIN_TOKENS`] / [`XW_GEMM_MIN_TOKENS`] tokens).
///
/// # Panics
/// When a slice length does not match the dimensions (a caller bug, never input-dependent).
pub fn products(jobs: &mut [Product<'_>]) {
    let mut lists: Vec<Vec<Task>> = Vec::with_capacity(jobs.len());
    let mut partial_len = 0;
    for (j, job) in jobs.iter_mut().enumerate() {
        let (t, i, o) = (job.t, job.in_dim, job.out_dim);
        assert_eq!(job.x.len(), t * i, "product: x is not [T, in]");
        assert_eq!(job.w.len(), o * i, "product: W does not have in × out elements");
        assert_eq!(job.y.len(), t * o, "product: y is not [T, out]");
        if t == 0 || o == 0 || i == 0 {
            continue;
        }
        let row_bytes = job.w.elem_bytes() * if job.layout == Layout::OutIn { i } else { o };
        let (dim, step) = match job.layout {
            Layout::OutIn if t >= GEMM_MIN_TOKENS => {
                linear_gemm(job.x, t, job.w, o, i, job.y);
                continue;
            }
            Layout::InOut if t >= XW_GEMM_MIN_TOKENS => {
                xw_gemm(job.x, t, job.w, i, o, job.y);
                continue;
            }
            Layout::OutIn => (o, TILE_ROWS),
            Layout::InOut => (i, 4),
        };
        let rows = (TASK_BYTES / row_bytes).next_multiple_of(step).max(8 * step).min(dim);
        let mut list = Vec::new();
        let mut r = 0;
        while r < dim {
            let end = (r + rows).min(dim);
            list.push(Task { job: j, rows: r..end, partial: partial_len });
            if job.layout == Layout::InOut {
                partial_len += t * o;
            }
            r = end;
        }
        lists.push(list);
    }
    // Each product's blocks in address order (a thread's prefetch past its block's end serves
    // the next block, which the other thread is likely taking); the x·Wᵀ blocks spread evenly
    // among the x·W ones, so a compute-bound block runs beside memory-bound ones.
    let (xwt, xw): (Vec<Task>, Vec<Task>) = lists.into_iter().flatten().partition(|t| jobs[t.job].layout == Layout::OutIn);
    let tasks = spread(xw, xwt);
    if tasks.is_empty() {
        return;
    }
    // Every x·W task clears its own block first (in its own cache, on its own thread).
    let mut partial = crate::scratch::stale(partial_len);
    let pp = SendPtr(partial.as_mut_ptr());
    let ys: Vec<SendPtr> = jobs.iter_mut().map(|job| SendPtr(job.y.as_mut_ptr())).collect();
    let shared: &[Product<'_>] = jobs;
    let xrows: Vec<Vec<&[f32]>> = shared.iter().map(|job| job.x.chunks_exact(job.in_dim.max(1)).collect()).collect();
    parallel_for(tasks.len(), &|k| {
        let task = &tasks[k];
        let job = &shared[task.job];
        match job.layout {
            Layout::OutIn => {
                // SAFETY: output columns `task.rows` of this product's y belong to this task.
                unsafe { xwt_rows(&xrows[task.job], job.w, job.in_dim, job.out_dim, task.rows.clone(), ys[task.job]) };
            }
            Layout::InOut => {
                // SAFETY: each task owns its own [T, out] block of `partial`.
                let part = unsafe { std::slice::from_raw_parts_mut(pp.get().add(task.partial), job.t * job.out_dim) };
                part.fill(0.0);
                xw_rows(job, task.rows.start, task.rows.end, part);
            }
        }
    });
    drop(xrows);
    for task in &tasks {
        if jobs[task.job].layout == Layout::OutIn {
            continue;
        }
        let y = &mut *jobs[task.job].y;
        let len = y.len();
        for (a, b) in y.iter_mut().zip(&partial[task.partial..task.partial + len]) {
            *a += b;
        }
    }
}

/// `a` and `b` merged, each in its order, `b`'s elements spread evenly among `a`'s.
fn spread<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    let (na, nb) = (a.len(), b.len());
    let mut out = Vec::with_capacity(na + nb);
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    let (mut ia, mut ib) = (0usize, 0usize);
    while a.peek().is_some() || b.peek().is_some() {
        // take from b when it is behind a in the fraction done: ib / nb <= ia / na
        let take_b = b.peek().is_some() && (a.peek().is_none() || ib * na <= ia * nb);
        if take_b {
            out.extend(b.next());
            ib += 1;
        } else {
            out.extend(a.next());
            ia += 1;
        }
    }
    out
}

/// `y[tok, o] += rows[tok] · W[o]` for the weight rows `o` in `range`, three at a time: the three
/// rows meet every token, four tokens at a time, in a register tile ([`dot_rows`]), so a weight
/// row is read from memory once and from L1 for the other tokens; the next three are prefetched.
///
/// # Safety
/// `yp` must point to `[rows.len(), out_dim]` floats, and no other thread may access its columns
/// in `range` meanwhile.
unsafe fn xwt_rows(rows: &[&[f32]], w: WeightRef<'_>, in_dim: usize, out_dim: usize, range: std::ops::Range<usize>, yp: SendPtr) {
    let (mut o, o1) = (range.start, range.end);
    while o < o1 {
        let r = (o1 - o).min(TILE_ROWS);
        let wr: [WeightRef<'_>; TILE_ROWS] = std::array::from_fn(|j| w.slice((o + j.min(r - 1)) * in_dim, in_dim));
        let next = (o + 2 * r <= o1).then(|| w.slice((o + r) * in_dim, r * in_dim));
        dot_rows(&wr[..r], rows, next, &mut |tok, j, v| {
            // SAFETY: (tok, o + j) is in bounds and this task's alone (the caller's contract).
            unsafe { *yp.get().add(tok * out_dim + o + j) += v };
        });
        o += r;
    }
}

/// `part[T, out] += x[:, h0..h1] · W[h0..h1, :]` on the calling thread. Column tiles keep the
/// tile's sums in L1 (whole rows when they fit, so rows stream in address order); four weight
/// rows are folded into each token's sums at once, prefetching the four after them, so every
/// weight element is read from memory once for all tokens.
fn xw_rows(job: &Product<'_>, h0: usize, h1: usize, part: &mut [f32]) {
    let (x, t, w, in_dim, out_dim) = (job.x, job.t, job.w, job.in_dim, job.out_dim);
    let tile = (XW_TILE_BYTES / (4 * t)).max(64).min(out_dim);
    let mut c0 = 0;
    while c0 < out_dim {
        let n = tile.min(out_dim - c0);
        let mut h = h0;
        while h + 4 <= h1 {
            let rows = [0, 1, 2, 3].map(|j| w.slice((h + j) * out_dim + c0, n));
            let mut ahead = 4 * out_dim;
            for tt in 0..t {
                let xr = &x[tt * in_dim + h..tt * in_dim + h + 4];
                if xr.iter().any(|v| *v != 0.0) {
                    let a = [xr[0], xr[1], xr[2], xr[3]];
                    axpy4(&mut part[tt * out_dim + c0..tt * out_dim + c0 + n], a, rows, ahead);
                    ahead = 0;
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
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            true,
            lhs,
            1,
            lhs_rs as isize,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
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
    fn many_products_in_one_loop_each_match_the_reference() {
        // Products of different sizes and token counts (x·W takes gemm from 8 tokens; 603 rows
        // make two row blocks, the second ending in three single rows; 4,000 output rows of x·Wᵀ
        // make two blocks, the second ending in a one-row tile), one call; y is added to.
        let shapes = [(64usize, 96usize, 1usize), (130, 40, 3), (603, 300, 2), (64, 96, 9), (48, 32, 0), (40, 4000, 5)];
        let ws: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(k, &(i, o, _))| data(i * o, 10 + k as u64)).collect();
        let xs: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(k, &(i, _, t))| data(t * i, 20 + k as u64)).collect();
        let mut ys: Vec<Vec<f32>> = shapes.iter().map(|&(_, o, t)| vec![1.0; t * o]).collect();
        // Every other product is `x · Wᵀ` (the same numbers read as W [out, in]).
        let layout = |k: usize| if k.is_multiple_of(2) { Layout::InOut } else { Layout::OutIn };
        let mut jobs: Vec<Product<'_>> = ys
            .iter_mut()
            .zip(shapes.iter().zip(ws.iter().zip(&xs)))
            .enumerate()
            .map(|(k, (y, (&(in_dim, out_dim, t), (w, x))))| Product { x, t, w: WeightRef::F32(w), layout: layout(k), in_dim, out_dim, y })
            .collect();
        products(&mut jobs);
        for (k, &(i, o, t)) in shapes.iter().enumerate() {
            let w = WeightRef::F32(&ws[k]);
            let want = match layout(k) {
                Layout::InOut => matmul_xw_reference(&xs[k], t, w, i, o),
                Layout::OutIn => linear_reference(&xs[k], t, w, o, i),
            };
            let want: Vec<f32> = want.iter().map(|v| v + 1.0).collect();
            close(&ys[k], &want, 1e-4);
        }
    }

    #[test]
    fn linear_and_xw_match_the_reference_for_all_dtypes_and_token_counts() {
        for (inn, out) in [(67usize, 45usize), (130, 300)] {
            let w = data(inn * out, 3);
            let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            for t in [1usize, 3, 4, 5, 8, 19, 33, 130] {
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
