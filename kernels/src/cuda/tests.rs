//! Every kernel against a plain CPU reference, with an explicit tolerance — on the CPU emulation
//! (always) and on a real GPU (`#[ignore]`d here; `deploy/gpu/check.sh` runs them with
//! `--ignored` on a machine with one). Inputs are random and outputs poisoned (NaN) beforehand, so
//! an element a kernel forgets to write fails the comparison.

use super::ops::{self, Dt, SrcDt};
use super::*;
use half::{bf16, f16};
use std::sync::OnceLock;

fn emu() -> Arc<Gpu> {
    static G: OnceLock<Arc<Gpu>> = OnceLock::new();
    G.get_or_init(|| Gpu::emulated().unwrap_or_else(|e| panic!("the CUDA emulation does not build: {e}"))).clone()
}

fn real() -> Arc<Gpu> {
    static G: OnceLock<Arc<Gpu>> = OnceLock::new();
    G.get_or_init(|| Gpu::open(0).unwrap_or_else(|e| panic!("no CUDA device: {e}"))).clone()
}

/// Runs a check on the emulation and (ignored unless asked for) on GPU 0.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn emulated() {
                super::$name(&super::emu())
            }
            #[test]
            #[ignore = "needs a CUDA GPU: run with --ignored where one is (deploy/gpu/check.sh)"]
            fn on_gpu() {
                super::$name(&super::real())
            }
        }
    )*};
}

on_both!(
    conversions_are_exact,
    transposes_move_every_element,
    random_weights_have_the_asked_moments_and_repeat,
    rms_norm_matches_the_reference,
    embedding_rows_are_copied,
    gemv_matches_the_reference_dense_and_grouped,
    gemm_linear_matches_the_reference,
    moe_routing_permutes_by_expert,
    grouped_gemm_matches_the_reference,
    silu_mul_and_combine_match_the_reference,
    attention_matches_the_reference,
    flash_attention_matches_the_reference,
);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

fn poisoned(gpu: &Arc<Gpu>, bytes: usize) -> DevBuf {
    let b = gpu.alloc(bytes).expect("alloc");
    gpu.memset(b.ptr(), 0xFF, bytes).expect("memset"); // NaN as f32 and as bf16
    b
}

/// Uploads f32 values as dtype `dt`.
fn put(gpu: &Arc<Gpu>, dt: Dt, v: &[f32]) -> DevBuf {
    match dt {
        Dt::F32 => gpu.upload(v).expect("upload"),
        Dt::Bf16 => gpu.upload(&v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>()).expect("upload"),
    }
}

/// Reads `n` elements of dtype `dt` as f32.
fn get(buf: &DevBuf, dt: Dt, n: usize) -> Vec<f32> {
    let mut out = match dt {
        Dt::F32 => buf.to_vec::<f32>().expect("read"),
        Dt::Bf16 => buf.to_vec::<bf16>().expect("read").into_iter().map(bf16::to_f32).collect(),
    };
    out.truncate(n);
    out
}

/// The values as dtype `dt` would hold them.
fn round(dt: Dt, v: &[f32]) -> Vec<f32> {
    match dt {
        Dt::F32 => v.to_vec(),
        Dt::Bf16 => v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
    }
}

/// Fails when `got` and `want` differ by more than `atol + rtol·|want|` anywhere (NaN fails).
fn close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs();
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

fn conversions_are_exact(gpu: &Arc<Gpu>) {
    let mut rng = Rng(7);
    let mut v: Vec<f32> = rng.vec(1000).iter().map(|x| x * 1e3).collect();
    v.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -3.4e38, 65504.0, 6e-8]);
    let n = v.len();
    let src = gpu.upload(&v).expect("up");
    let out = poisoned(gpu, n * 2);
    ops::convert(gpu, SrcDt::F32, Dt::Bf16, src.ptr(), out.ptr(), n).expect("convert");
    let got = out.to_vec::<bf16>().expect("read");
    let want: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    assert_eq!(got.iter().map(|b| b.to_bits()).collect::<Vec<_>>(), want.iter().map(|b| b.to_bits()).collect::<Vec<_>>());

    let back = poisoned(gpu, n * 4);
    ops::convert(gpu, SrcDt::Bf16, Dt::F32, out.ptr(), back.ptr(), n).expect("convert");
    let back = back.to_vec::<f32>().expect("read");
    for (b, w) in back.iter().zip(&want) {
        assert_eq!(b.to_bits(), w.to_f32().to_bits());
    }

    let halves: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let hsrc = gpu.upload(&halves).expect("up");
    let hf = poisoned(gpu, n * 4);
    ops::convert(gpu, SrcDt::F16, Dt::F32, hsrc.ptr(), hf.ptr(), n).expect("convert");
    for (g, h) in hf.to_vec::<f32>().expect("read").iter().zip(&halves) {
        assert_eq!(g.to_bits(), h.to_f32().to_bits(), "f16 {h}");
    }
    let hb = poisoned(gpu, n * 2);
    ops::convert(gpu, SrcDt::F16, Dt::Bf16, hsrc.ptr(), hb.ptr(), n).expect("convert");
    for (g, h) in hb.to_vec::<bf16>().expect("read").iter().zip(&halves) {
        assert_eq!(g.to_bits(), bf16::from_f32(h.to_f32()).to_bits(), "f16 {h} to bf16");
    }
}

fn transposes_move_every_element(gpu: &Arc<Gpu>) {
    let mut rng = Rng(3);
    let (b, r, c) = (3, 45, 70);
    let v = rng.vec(b * r * c);
    let want: Vec<f32> = (0..b * c * r)
        .map(|i| {
            let (bi, rest) = (i / (c * r), i % (c * r));
            let (ci, ri) = (rest / r, rest % r);
            v[bi * r * c + ri * c + ci]
        })
        .collect();
    for (src, dst) in [
        (SrcDt::F32, Dt::F32),
        (SrcDt::F32, Dt::Bf16),
        (SrcDt::Bf16, Dt::F32),
        (SrcDt::Bf16, Dt::Bf16),
        (SrcDt::F16, Dt::Bf16),
        (SrcDt::F16, Dt::F32),
    ] {
        let (input, expect): (DevBuf, Vec<f32>) = match src {
            SrcDt::F32 => (gpu.upload(&v).expect("up"), round(dst, &want)),
            SrcDt::Bf16 => (put(gpu, Dt::Bf16, &v), round(dst, &round(Dt::Bf16, &want))),
            SrcDt::F16 => {
                let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                let w: Vec<f32> = want.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                (gpu.upload(&h).expect("up"), round(dst, &w))
            }
        };
        let out = poisoned(gpu, v.len() * dst.size());
        ops::transpose(gpu, src, dst, input.ptr(), out.ptr(), b, r, c).expect("transpose");
        close(&format!("transpose {src:?} -> {dst:?}"), &get(&out, dst, v.len()), &expect, 0.0, 0.0);
    }
}

fn random_weights_have_the_asked_moments_and_repeat(gpu: &Arc<Gpu>) {
    let n = 1 << 16;
    for dt in [Dt::F32, Dt::Bf16] {
        let a = poisoned(gpu, n * dt.size());
        let b = poisoned(gpu, n * dt.size());
        ops::fill_random(gpu, dt, a.ptr(), n, 42, 1.0, 0.1).expect("fill");
        ops::fill_random(gpu, dt, b.ptr(), n, 42, 1.0, 0.1).expect("fill");
        let (a, b) = (get(&a, dt, n), get(&b, dt, n));
        assert_eq!(a, b, "{dt:?}: the same seed gives the same values");
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.003, "{dt:?}: mean {mean}");
        assert!((var.sqrt() - 0.1).abs() < 0.003, "{dt:?}: std {}", var.sqrt());
        let c = poisoned(gpu, n * dt.size());
        ops::fill_random(gpu, dt, c.ptr(), n, 43, 1.0, 0.1).expect("fill");
        assert_ne!(get(&c, dt, n), a, "{dt:?}: another seed, other values");
    }
}

fn rms_norm_matches_the_reference(gpu: &Arc<Gpu>) {
    let mut rng = Rng(11);
    let (rows, dim, eps) = (7, 320, 1e-5);
    let x = rng.vec(rows * dim);
    let w: Vec<f32> = rng.vec(dim).iter().map(|v| 1.0 + 0.2 * v).collect();
    let gather = [6i32, 0, 3];
    for dt in [Dt::F32, Dt::Bf16] {
        let wq = round(dt, &w);
        let (xd, wd) = (gpu.upload(&x).expect("up"), put(gpu, dt, &w));
        for g in [None, Some(&gather[..])] {
            let n = g.map_or(rows, <[i32]>::len);
            let gd = g.map(|g| gpu.upload(g).expect("up"));
            let out = poisoned(gpu, n * dim * dt.size());
            ops::rms_norm(gpu, dt, xd.ptr(), wd.ptr(), out.ptr(), gd.as_ref().map(DevBuf::ptr), n, dim, eps).expect("norm");
            let mut want = Vec::new();
            for r in 0..n {
                let src = g.map_or(r, |g| g[r] as usize);
                let mut row = x[src * dim..(src + 1) * dim].to_vec();
                crate::norm::rms_norm(&mut row, dim, crate::WeightRef::F32(&wq), eps);
                want.extend(round(dt, &row));
            }
            let tol = if dt == Dt::F32 { 1e-5 } else { 8e-3 };
            close(&format!("rms_norm {dt:?} gather {g:?}"), &get(&out, dt, n * dim), &want, tol, tol);
        }
    }
}

fn embedding_rows_are_copied(gpu: &Arc<Gpu>) {
    let mut rng = Rng(5);
    let (vocab, dim) = (50, 72);
    let table = rng.vec(vocab * dim);
    let ids = [3i32, 49, 0, 3];
    for dt in [Dt::F32, Dt::Bf16] {
        let (td, idd) = (put(gpu, dt, &table), gpu.upload(&ids).expect("up"));
        let out = poisoned(gpu, ids.len() * dim * 4);
        ops::embed(gpu, dt, idd.ptr(), td.ptr(), out.ptr(), ids.len(), dim).expect("embed");
        let want: Vec<f32> = ids.iter().flat_map(|&i| round(dt, &table[i as usize * dim..(i as usize + 1) * dim])).collect();
        close(&format!("embed {dt:?}"), &get(&out, Dt::F32, ids.len() * dim), &want, 0.0, 0.0);
    }
}

/// `y[r] = x[r] · W_eᵀ` for row r of expert e's segment.
fn linear_ref(x: &[f32], w: &[f32], rows: std::ops::Range<usize>, n: usize, k: usize) -> Vec<f32> {
    let mut y = Vec::new();
    for r in rows {
        for j in 0..n {
            y.push((0..k).map(|i| x[r * k + i] as f64 * w[j * k + i] as f64).sum::<f64>() as f32);
        }
    }
    y
}

fn gemv_matches_the_reference_dense_and_grouped(gpu: &Arc<Gpu>) {
    let mut rng = Rng(13);
    for dt in [Dt::F32, Dt::Bf16] {
        let tol = if dt == Dt::F32 { 1e-4 } else { 2e-3 };
        for &(t, n, k) in &[(1, 37, 64), (3, 70, 128), (16, 20, 256), (11, 9, 40)] {
            if k % dt.per_16_bytes() != 0 {
                continue;
            }
            let (x, w, y0) = (round(dt, &rng.vec(t * k)), round(dt, &rng.vec(n * k)), rng.vec(t * n));
            let (xd, wd) = (put(gpu, dt, &x), put(gpu, dt, &w));
            for accumulate in [false, true] {
                let yd = if accumulate { gpu.upload(&y0).expect("up") } else { poisoned(gpu, t * n * 4) };
                ops::gemv(gpu, dt, wd.ptr(), xd.ptr(), yd.ptr(), None, t, n, k, accumulate).expect("gemv");
                let mut want = linear_ref(&x, &w, 0..t, n, k);
                if accumulate {
                    want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
                }
                close(&format!("gemv {dt:?} t{t} n{n} k{k} acc {accumulate}"), &get(&yd, Dt::F32, t * n), &want, tol, tol);
            }
        }
        // Grouped: 4 experts, rows 0..3 expert 1, 3..3 none (expert 0 and 2 empty), 3..8 expert 3.
        let (e, n, k) = (4, 24, 64);
        let off = [0i32, 0, 3, 3, 8];
        let active = [1i32, 3, -7, -7];
        let rows = 8;
        let (x, w) = (round(dt, &rng.vec(rows * k)), round(dt, &rng.vec(e * n * k)));
        let (xd, wd) = (put(gpu, dt, &x), put(gpu, dt, &w));
        let (offd, actd, nad) = (gpu.upload(&off).expect("up"), gpu.upload(&active).expect("up"), gpu.upload(&[2i32]).expect("up"));
        let seg = ops::Segments { off: offd.ptr(), active: actd.ptr(), n_active: nad.ptr(), max_active: 4, max_rows: 5 };
        let yd = poisoned(gpu, rows * n * 4);
        ops::gemv(gpu, dt, wd.ptr(), xd.ptr(), yd.ptr(), Some(&seg), rows, n, k, false).expect("grouped gemv");
        let mut want = linear_ref(&x, &w[n * k..2 * n * k], 0..3, n, k);
        want.extend(linear_ref(&x, &w[3 * n * k..4 * n * k], 3..8, n, k));
        close(&format!("grouped gemv {dt:?}"), &get(&yd, Dt::F32, rows * n), &want, tol, tol);
    }
}

fn gemm_linear_matches_the_reference(gpu: &Arc<Gpu>) {
    let mut rng = Rng(17);
    for dt in [Dt::F32, Dt::Bf16] {
        let tol = if dt == Dt::F32 { 1e-4 } else { 2e-3 };
        let (t, n, k) = (33, 48, 80);
        let (x, w, y0) = (round(dt, &rng.vec(t * k)), round(dt, &rng.vec(n * k)), rng.vec(t * n));
        let (xd, wd) = (put(gpu, dt, &x), put(gpu, dt, &w));
        for accumulate in [false, true] {
            let yd = if accumulate { gpu.upload(&y0).expect("up") } else { poisoned(gpu, t * n * 4) };
            ops::linear(gpu, dt, xd.ptr(), wd.ptr(), yd.ptr(), t, n, k, accumulate).expect("linear");
            let mut want = linear_ref(&x, &w, 0..t, n, k);
            if accumulate {
                want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
            }
            close(&format!("cuBLAS linear {dt:?} acc {accumulate}"), &get(&yd, Dt::F32, t * n), &want, tol, tol);
        }
    }
}

/// What the MoE routing kernels produced, read back.
struct Routed {
    topk: Vec<i32>,
    off: Vec<i32>,
    active: Vec<i32>,
    n_active: i32,
    tile_expert: Vec<i32>,
    sorted_tok: Vec<i32>,
    sorted_w: Vec<f32>,
    row_of: Vec<i32>,
    counts: Vec<i32>,
    totals: Vec<u64>,
}

fn route(gpu: &Arc<Gpu>, logits: &[f32], t: usize, e: usize, k: usize, align: usize) -> Routed {
    let pairs = t * k;
    let bound = pairs + e * (align - 1);
    let max_tiles = bound.div_ceil(align);
    let ld = gpu.upload(logits).expect("up");
    let (topk_id, topk_w) = (poisoned(gpu, pairs * 4), poisoned(gpu, pairs * 4));
    let counts = gpu.zeros(e * 4).expect("zeros");
    let totals = gpu.zeros(e * 8).expect("zeros");
    let (off, active, n_active, fill) = (poisoned(gpu, (e + 1) * 4), gpu.zeros(e * 4).expect("z"), poisoned(gpu, 4), poisoned(gpu, e * 4));
    let tile_expert = poisoned(gpu, max_tiles * 4);
    let sorted_tok = gpu.alloc(bound * 4).expect("alloc");
    gpu.memset(sorted_tok.ptr(), 0xFF, bound * 4).expect("memset"); // -1
    let (sorted_w, row_of) = (gpu.zeros(bound * 4).expect("z"), poisoned(gpu, pairs * 4));
    ops::moe_route(gpu, ld.ptr(), t, e, k, topk_id.ptr(), topk_w.ptr(), counts.ptr(), totals.ptr()).expect("route");
    let o = ops::AlignOut {
        off: off.ptr(),
        active: active.ptr(),
        n_active: n_active.ptr(),
        fill: fill.ptr(),
        tile_expert: tile_expert.ptr(),
        max_tiles,
    };
    ops::moe_align(gpu, counts.ptr(), e, align, &o).expect("align");
    ops::moe_scatter(gpu, topk_id.ptr(), topk_w.ptr(), pairs, k, off.ptr(), fill.ptr(), sorted_tok.ptr(), sorted_w.ptr(), row_of.ptr())
        .expect("scatter");
    // The second route call adds to the running totals.
    ops::moe_route(gpu, ld.ptr(), t, e, k, topk_id.ptr(), topk_w.ptr(), gpu.zeros(e * 4).expect("z").ptr(), totals.ptr()).expect("route");
    Routed {
        topk: topk_id.to_vec().expect("r"),
        off: off.to_vec().expect("r"),
        active: active.to_vec().expect("r"),
        n_active: n_active.to_vec::<i32>().expect("r")[0],
        tile_expert: tile_expert.to_vec().expect("r"),
        sorted_tok: sorted_tok.to_vec().expect("r"),
        sorted_w: sorted_w.to_vec().expect("r"),
        row_of: row_of.to_vec().expect("r"),
        counts: counts.to_vec().expect("r"),
        totals: totals.to_vec().expect("r"),
    }
}

fn moe_routing_permutes_by_expert(gpu: &Arc<Gpu>) {
    let mut rng = Rng(19);
    for &(t, e, k, align) in &[(37, 8, 2, 1), (37, 8, 2, 64), (5, 70, 3, 1), (3, 16, 1, 64)] {
        let mut logits = rng.vec(t * e);
        logits[e + 2] = logits[e + 5].max(logits[e + 2]); // a tie: the lower expert wins
        logits[e + 5] = logits[e + 2];
        let r = route(gpu, &logits, t, e, k, align);
        // top-k by the reference order (highest first, ties to the lower index)
        let mut want_counts = vec![0i32; e];
        for tok in 0..t {
            let row = &logits[tok * e..(tok + 1) * e];
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for j in 0..k {
                assert_eq!(r.topk[tok * k + j], order[j] as i32, "token {tok} choice {j}");
                want_counts[order[j]] += 1;
                let slot = r.row_of[tok * k + j] as usize;
                assert_eq!(r.sorted_tok[slot], tok as i32, "row {slot}");
                let score = 1.0 / (1.0 + (-row[order[j]]).exp());
                assert!((r.sorted_w[slot] - score).abs() < 1e-6, "score of token {tok} choice {j}");
                let ex = order[j];
                assert!(slot >= r.off[ex] as usize && slot < r.off[ex + 1] as usize, "row {slot} lies in expert {ex}'s segment");
            }
        }
        assert_eq!(r.counts, want_counts, "counts");
        assert_eq!(r.totals, want_counts.iter().map(|&c| 2 * c as u64).collect::<Vec<_>>(), "totals run on across calls");
        let mut at = 0;
        let mut active = vec![];
        for (ex, &c) in want_counts.iter().enumerate() {
            assert_eq!(r.off[ex], at, "offset of expert {ex}");
            let padded = (c as usize).div_ceil(align) * align;
            for row in at as usize..at as usize + padded {
                if row < (at + c) as usize {
                    assert!(r.sorted_tok[row] >= 0, "row {row} of expert {ex} is taken");
                } else {
                    assert_eq!(r.sorted_tok[row], -1, "padding row {row}");
                }
                if align > 1 && row % align == 0 {
                    assert_eq!(r.tile_expert[row / align], ex as i32, "tile of row {row}");
                }
            }
            if c > 0 {
                active.push(ex as i32);
            }
            at += padded as i32;
        }
        assert_eq!(r.off[e], at, "all rows");
        assert_eq!(r.n_active as usize, active.len());
        assert_eq!(&r.active[..active.len()], &active[..]);
        if align > 1 {
            assert!(r.tile_expert[at as usize / align..].iter().all(|&x| x == -1), "tiles past the end");
        }
    }
}

fn grouped_gemm_matches_the_reference(gpu: &Arc<Gpu>) {
    let mut rng = Rng(23);
    let (e, n, k) = (3, 144, 96);
    // expert 0: 70 rows (2 tiles), expert 1: none, expert 2: 10 rows (1 tile); then a -1 tile.
    let counts = [70usize, 0, 10];
    let tiles = [0i32, 0, 2, -1];
    let rows = tiles.len() * 64;
    let mut x = vec![0f32; rows * k];
    let mut at = 0;
    for &c in &counts {
        for r in at..at + c {
            for i in 0..k {
                x[r * k + i] = rng.f();
            }
        }
        at += c.div_ceil(64) * 64;
    }
    let (x, w) = (round(Dt::Bf16, &x), round(Dt::Bf16, &rng.vec(e * n * k)));
    let (xd, wd, td) = (put(gpu, Dt::Bf16, &x), put(gpu, Dt::Bf16, &w), gpu.upload(&tiles).expect("up"));
    let yd = poisoned(gpu, rows * n * 4);
    ops::grouped_gemm(gpu, xd.ptr(), wd.ptr(), yd.ptr(), td.ptr(), tiles.len(), n, k).expect("gemm");
    let y = get(&yd, Dt::F32, rows * n);
    let mut want = linear_ref(&x, &w[..n * k], 0..128, n, k);
    want.extend(linear_ref(&x, &w[2 * n * k..], 128..192, n, k));
    close("grouped gemm", &y[..192 * n], &want, 2e-3, 2e-3);
    assert!(y[192 * n..].iter().all(|v| v.is_nan()), "the -1 tile is left alone");
}

fn silu_mul_and_combine_match_the_reference(gpu: &Arc<Gpu>) {
    let mut rng = Rng(29);
    let (rows, inter) = (6, 40);
    let gu: Vec<f32> = rng.vec(rows * 2 * inter).iter().map(|v| v * 4.0).collect();
    let gd = gpu.upload(&gu).expect("up");
    let n_rows = gpu.upload(&[4i32]).expect("up");
    for dt in [Dt::F32, Dt::Bf16] {
        let out = poisoned(gpu, rows * inter * dt.size());
        ops::silu_mul(gpu, dt, gd.ptr(), out.ptr(), inter, Some(n_rows.ptr()), rows).expect("silu");
        let mut want = vec![];
        for r in 0..4 {
            let (g, u) = (&gu[r * 2 * inter..r * 2 * inter + inter], &gu[r * 2 * inter + inter..(r + 1) * 2 * inter]);
            let mut a = vec![0f32; inter];
            crate::activation::silu_mul(g, u, &mut a);
            want.extend(round(dt, &a));
        }
        let got = get(&out, dt, rows * inter);
        close(&format!("silu_mul {dt:?}"), &got[..4 * inter], &want, 1e-6, 1e-6);
        assert!(got[4 * inter..].iter().all(|v| v.is_nan()), "rows past *rows are skipped");
    }
    // combine: 3 tokens, k = 2; token 1 chose experts (5, 2): expert 2's row is added first.
    let (t, k, h) = (3, 2, 33);
    let x0 = rng.vec(t * h);
    let out = rng.vec(8 * h);
    let topk = [0i32, 1, 5, 2, 3, 4];
    let row_of = [0i32, 1, 7, 2, 3, 6];
    let xd = gpu.upload(&x0).expect("up");
    let (od, rd, kd) = (gpu.upload(&out).expect("up"), gpu.upload(&row_of).expect("up"), gpu.upload(&topk).expect("up"));
    ops::moe_combine(gpu, xd.ptr(), od.ptr(), rd.ptr(), kd.ptr(), t, k, h).expect("combine");
    let mut want = x0.clone();
    for tok in 0..t {
        let mut pairs: Vec<(i32, usize)> = (0..k).map(|j| (topk[tok * k + j], row_of[tok * k + j] as usize)).collect();
        pairs.sort();
        for (_, r) in pairs {
            for i in 0..h {
                want[tok * h + i] += out[r * h + i];
            }
        }
    }
    close("combine", &get(&xd, Dt::F32, t * h), &want, 0.0, 0.0);
}

/// A KV cache in device memory shaped as the engine lays it out: slabs of blocks, a slab table
/// per sequence, block tables.
struct TestKv {
    _slabs: Vec<DevBuf>,
    _tables: Vec<DevBuf>,
    slab_tab: DevBuf,
    shift: DevBuf,
    start: DevBuf,
    tab_off: DevBuf,
    tab: DevBuf,
    br: usize,
}

impl TestKv {
    /// `rows[s]` cache rows for sequence s starting at position `starts[s]`, blocks of `br` rows
    /// in slabs of 4 blocks, block ids shuffled.
    fn new(gpu: &Arc<Gpu>, dt: Dt, kvd: usize, br: usize, starts: &[usize], rows: &[usize]) -> Self {
        let per_block = 2 * br * kvd;
        let blocks: Vec<usize> = rows.iter().map(|r| r.div_ceil(br)).collect();
        let total: usize = blocks.iter().sum();
        let slabs_n = total.div_ceil(4);
        let slabs: Vec<DevBuf> = (0..slabs_n).map(|_| poisoned(gpu, 4 * per_block * dt.size())).collect();
        let table: Vec<u64> = slabs.iter().map(DevBuf::ptr).collect();
        let table_buf = gpu.upload(&table).expect("up");
        let mut ids: Vec<i32> = (0..total as i32).collect();
        ids.reverse();
        ids.swap(0, total / 2);
        let mut offs = vec![];
        let mut at = 0;
        for b in &blocks {
            offs.push(at as i32);
            at += b;
        }
        let s = starts.len();
        Self {
            slab_tab: gpu.upload(&vec![table_buf.ptr(); s]).expect("up"),
            shift: gpu.upload(&vec![2i32; s]).expect("up"),
            start: gpu.upload(&starts.iter().map(|&x| x as i32).collect::<Vec<_>>()).expect("up"),
            tab_off: gpu.upload(&offs).expect("up"),
            tab: gpu.upload(&ids).expect("up"),
            _slabs: slabs,
            _tables: vec![table_buf],
            br,
        }
    }

    fn args(&self) -> ops::KvArgs {
        ops::KvArgs {
            slab_tab: self.slab_tab.ptr(),
            shift: self.shift.ptr(),
            start: self.start.ptr(),
            tab_off: self.tab_off.ptr(),
            tab: self.tab.ptr(),
            block_rows: self.br,
        }
    }
}

/// One attention problem: `seqs` sequences, each with `new[s]` new tokens after `past[s]`
/// positions already cached (`start[s]` of them trimmed away).
struct AttnCase {
    heads: ops::Heads,
    chunk: usize,
    past: Vec<usize>,
    new: Vec<usize>,
    start: Vec<usize>,
}

/// Runs attn_prep over every token (all positions, so the whole cache is written by the kernel),
/// then attention (per-token kernel, or flash for the tiles), and compares the last `new[s]`
/// tokens' outputs with a reference computed in f64 from the same q/k/v.
fn run_attention(gpu: &Arc<Gpu>, dt: Dt, case: &AttnCase, flash: bool, seed: u64) {
    let ops::Heads { heads: nh, kv_heads: nkv, head_dim: d } = case.heads;
    let (kvd, width, br) = (nkv * d, (nh + 2 * nkv) * d, 16);
    let mut rng = Rng(seed);
    // Tokens of the prep pass: every cached position (from start) of every sequence.
    let (mut pos, mut seq) = (vec![], vec![]);
    for s in 0..case.past.len() {
        for p in case.start[s]..case.past[s] + case.new[s] {
            pos.push(p as i32);
            seq.push(s as i32);
        }
    }
    let t = pos.len();
    let qkv: Vec<f32> = rng.vec(t * width);
    let rows: Vec<usize> = (0..case.past.len()).map(|s| case.past[s] + case.new[s] - case.start[s]).collect();
    let kv = TestKv::new(gpu, dt, kvd, br, &case.start, &rows);
    let inv_freq: Vec<f32> = (0..d / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / d as f32)).collect();
    let prep = ops::Prep { rope: true, qk_norm: true, temperature_tuning: false, eps: 1e-6, floor_scale: 8192.0, attn_scale: 0.1 };
    let (qd, pd, sd, fd) =
        (gpu.upload(&qkv).expect("up"), gpu.upload(&pos).expect("up"), gpu.upload(&seq).expect("up"), gpu.upload(&inv_freq).expect("up"));
    ops::attn_prep(gpu, dt, qd.ptr(), pd.ptr(), sd.ptr(), &kv.args(), fd.ptr(), &case.heads, &prep, t).expect("prep");
    let prepped = get(&qd, Dt::F32, t * width);

    // Reference: rope + l2 norm of q and k per head, keys and values rounded as the cache holds them.
    let mut q = vec![0f32; t * nh * d];
    let (mut k, mut v) = (vec![0f32; t * kvd], vec![0f32; t * kvd]);
    for tok in 0..t {
        let row = &qkv[tok * width..(tok + 1) * width];
        for h in 0..nh + nkv {
            let mut x = row[h * d..(h + 1) * d].to_vec();
            for i in 0..d / 2 {
                let a = inv_freq[i] * pos[tok] as f32;
                let (c, s) = ((a as f64).cos() as f32, (a as f64).sin() as f32);
                let (x0, x1) = (x[2 * i], x[2 * i + 1]);
                x[2 * i] = x0 * c - x1 * s;
                x[2 * i + 1] = x0 * s + x1 * c;
            }
            let ss: f32 = x.iter().map(|y| y * y).sum();
            let inv = 1.0 / (ss / d as f32 + 1e-6).sqrt();
            x.iter_mut().for_each(|y| *y *= inv);
            if h < nh {
                q[tok * nh * d + h * d..tok * nh * d + (h + 1) * d].copy_from_slice(&x);
            } else {
                let kh = h - nh;
                k[tok * kvd + kh * d..tok * kvd + (kh + 1) * d].copy_from_slice(&round(dt, &x));
            }
        }
        v[tok * kvd..(tok + 1) * kvd].copy_from_slice(&round(dt, &row[(nh + nkv) * d..]));
    }
    close("prepped q", &(0..t).flat_map(|tok| prepped[tok * width..tok * width + nh * d].to_vec()).collect::<Vec<_>>(), &q, 2e-5, 2e-5);

    // Attention for the new tokens of each sequence.
    let scale = (d as f32).powf(-0.5);
    let (mut items, mut tiles, mut want_rows) = (vec![], vec![], vec![]);
    let mut first = 0;
    for s in 0..case.past.len() {
        let here = case.past[s] + case.new[s] - case.start[s];
        let new_from = first + case.past[s] - case.start[s];
        let mut i = new_from;
        while i < first + here {
            let cnt = (first + here - i).min(ops::FLASH_ROWS);
            tiles.extend([s as i32, i as i32, cnt as i32]);
            i += cnt;
        }
        items.extend((new_from..first + here).map(|x| x as i32));
        want_rows.extend(new_from..first + here);
        first += here;
    }
    let out = poisoned(gpu, t * nh * d * dt.size());
    if flash {
        let td = gpu.upload(&tiles).expect("up");
        ops::flash_prefill(gpu, qd.ptr(), td.ptr(), tiles.len() / 3, pd.ptr(), &kv.args(), out.ptr(), &case.heads, case.chunk, scale)
            .expect("flash");
    } else {
        let id = gpu.upload(&items).expect("up");
        ops::attend(
            gpu,
            dt,
            qd.ptr(),
            Some(id.ptr()),
            items.len(),
            pd.ptr(),
            sd.ptr(),
            &kv.args(),
            out.ptr(),
            &case.heads,
            case.chunk,
            scale,
        )
        .expect("attend");
    }
    let got = get(&out, dt, t * nh * d);
    let g = nh / nkv;
    let (mut got_rows, mut want) = (vec![], vec![]);
    for &tok in &want_rows {
        let (s, p) = (seq[tok] as usize, pos[tok] as usize);
        let lo = match p.checked_div(case.chunk) {
            Some(c) => (c * case.chunk).max(case.start[s]),
            None => case.start[s],
        };
        // token index of position x of sequence s
        let base = tok - (p - case.start[s]);
        let qq = if flash { round(Dt::Bf16, &q[tok * nh * d..(tok + 1) * nh * d]) } else { q[tok * nh * d..(tok + 1) * nh * d].to_vec() };
        for h in 0..nh {
            let kh = h / g;
            let scores: Vec<f64> = (lo..=p)
                .map(|x| {
                    let kr = &k[(base + x - case.start[s]) * kvd + kh * d..][..d];
                    (0..d).map(|e| qq[h * d + e] as f64 * kr[e] as f64).sum::<f64>() * scale as f64
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let ex: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let sum: f64 = ex.iter().sum();
            for e in 0..d {
                let o: f64 = (lo..=p).zip(&ex).map(|(x, w)| w * v[(base + x - case.start[s]) * kvd + kh * d + e] as f64).sum();
                want.push((o / sum) as f32);
            }
        }
        got_rows.extend_from_slice(&got[tok * nh * d..(tok + 1) * nh * d]);
    }
    let tol = if dt == Dt::F32 {
        2e-5
    } else if flash {
        2e-2
    } else {
        1e-2
    };
    close(&format!("attention {dt:?} flash {flash} chunk {}", case.chunk), &got_rows, &round(dt, &want), tol, tol);
}

fn attention_matches_the_reference(gpu: &Arc<Gpu>) {
    let heads = ops::Heads { heads: 6, kv_heads: 2, head_dim: 32 };
    // Decode-like (one new token after a long past), a prefill run crossing tiles of 128, and a
    // chunked layer whose cache starts past position 0.
    let full = AttnCase { heads, chunk: 0, past: vec![300, 5], new: vec![1, 140], start: vec![0, 0] };
    let chunked = AttnCase { heads, chunk: 48, past: vec![112], new: vec![30], start: vec![96] };
    for dt in [Dt::F32, Dt::Bf16] {
        run_attention(gpu, dt, &full, false, 31);
        run_attention(gpu, dt, &chunked, false, 37);
    }
}

fn flash_attention_matches_the_reference(gpu: &Arc<Gpu>) {
    let heads = ops::Heads { heads: 4, kv_heads: 2, head_dim: 32 };
    let full = AttnCase { heads, chunk: 0, past: vec![0, 40], new: vec![150, 70], start: vec![0, 0] };
    let chunked = AttnCase { heads, chunk: 48, past: vec![100], new: vec![90], start: vec![96] };
    run_attention(gpu, Dt::Bf16, &full, true, 41);
    run_attention(gpu, Dt::Bf16, &chunked, true, 43);
}

#[test]
fn every_kernel_gives_the_same_results_whatever_order_the_threads_run_in() {
    // On the emulation only (a real GPU has its own order): a kernel missing a barrier between a
    // thread's write and another's read passes in one order and fails in another.
    let gpu = emu();
    type Check = fn(&Arc<Gpu>);
    let checks: [(&str, Check); 12] = [
        ("conversions", conversions_are_exact),
        ("transposes", transposes_move_every_element),
        ("random", random_weights_have_the_asked_moments_and_repeat),
        ("rms_norm", rms_norm_matches_the_reference),
        ("embedding", embedding_rows_are_copied),
        ("gemv", gemv_matches_the_reference_dense_and_grouped),
        ("gemm", gemm_linear_matches_the_reference),
        ("moe routing", moe_routing_permutes_by_expert),
        ("grouped gemm", grouped_gemm_matches_the_reference),
        ("silu and combine", silu_mul_and_combine_match_the_reference),
        ("attention", attention_matches_the_reference),
        ("flash attention", flash_attention_matches_the_reference),
    ];
    for order in [ThreadOrder::Reverse, ThreadOrder::Shuffle] {
        gpu.set_thread_order(order).expect("emulation");
        for (name, check) in checks {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&gpu)));
            if r.is_err() {
                gpu.set_thread_order(ThreadOrder::Index).expect("emulation");
                panic!("{name} fails with the threads in {order:?} order");
            }
        }
    }
    gpu.set_thread_order(ThreadOrder::Index).expect("emulation");
    assert!(real_or_none().is_none_or(|g| g.set_thread_order(ThreadOrder::Reverse).is_err()), "a GPU runs its own order");
}

/// GPU 0 when there is one.
fn real_or_none() -> Option<Arc<Gpu>> {
    if driver_present() { Gpu::open(0).ok() } else { None }
}

#[test]
fn the_kernels_compile_with_nvrtc_for_sm_90() {
    // `make test` installs NVRTC and CUDA's headers (deploy/local/cuda-deps.sh) and sets
    // HERD_REQUIRE_NVRTC, so there a missing NVRTC fails instead of skipping.
    if !nvrtc::present() && std::env::var_os("HERD_REQUIRE_NVRTC").is_none() {
        eprintln!("skipped: NVRTC is not installed (make test installs it)");
        return;
    }
    let include = nvrtc::include_dirs().unwrap_or_else(|e| panic!("{e}"));
    let (cubin, log) =
        nvrtc::compile_with(&source::nvrtc_source(), "sm_90", &include, &["--ptxas-options=-v"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(cubin.len() > 1000 && cubin.starts_with(b"\x7fELF"), "a cubin is an ELF image");
    assert!(!log.contains("warning"), "the kernels compile without warnings:\n{log}");
    // No kernel of the bf16 (serving) path keeps values in local memory.
    let mut current = "";
    for line in log.lines() {
        if let Some(at) = line.find("Compiling entry function '") {
            current = line[at + 26..].split('\'').next().unwrap_or("");
        }
        if current.ends_with("bf16") || current.contains("bf16_t") {
            assert!(
                !line.contains("bytes spill") || line.contains(" 0 bytes spill stores, 0 bytes spill loads"),
                "{current} spills: {line}"
            );
        }
    }
    let ptx = nvrtc::compile(&source::nvrtc_source(), "compute_90", &include).unwrap_or_else(|e| panic!("{e}"));
    let ptx = String::from_utf8_lossy(&ptx);
    for name in source::kernel_names() {
        assert!(ptx.contains(&format!(".entry {name}(")), "kernel {name} is in the PTX");
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_reported_with_the_compiler_log() {
    if !nvrtc::present() && std::env::var_os("HERD_REQUIRE_NVRTC").is_none() {
        eprintln!("skipped: NVRTC is not installed (make test installs it)");
        return;
    }
    let include = nvrtc::include_dirs().unwrap_or_else(|e| panic!("{e}"));
    let err = nvrtc::compile("extern \"C\" __global__ void broken(int* x) { x[0] = undefined_name; }", "sm_90", &include)
        .expect_err("does not compile");
    let text = err.to_string();
    assert!(text.contains("undefined_name") && text.contains("sm_90"), "{text}");
}

#[test]
fn opening_a_device_without_a_driver_is_an_error_not_a_panic() {
    if driver_present() {
        eprintln!("skipped: this machine has a CUDA driver");
        return;
    }
    let err = Gpu::open(0).err().expect("no driver, no device");
    assert!(err.to_string().contains("libcuda"), "{err}");
}
