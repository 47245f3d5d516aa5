//! Vector primitives: dot products and `y += a * w` with f32 activations and f32/bf16/f16 weights.
//!
//! `dot_tile` and `axpy*` dispatch once per call on the CPU's features; every public function has a
//! portable scalar twin used on other CPUs and as the test reference.

use crate::WeightRef;
use half::{bf16, f16};

/// True when the AVX2 + FMA + F16C paths can run (checked once, cached by std).
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A register tile of dot products: `out[r][c] = w[r] . x[c]` for `R` weight rows and `C`
/// activation rows of one length. Every weight element is loaded once for all `C` rows, every
/// activation element once for all `R` rows (the small-batch `x · Wᵀ` kernel's inner step).
/// `next` (`R` rows of the same length, e.g. the following tile's) is prefetched meanwhile.
pub fn dot_tile<const R: usize, const C: usize>(w: [WeightRef<'_>; R], x: [&[f32]; C], next: Option<WeightRef<'_>>) -> [[f32; C]; R] {
    let n = x.first().map_or(0, |v| v.len());
    assert!(w.iter().all(|r| r.len() == n) && x.iter().all(|v| v.len() == n), "dot_tile: length mismatch");
    assert!(next.is_none_or(|p| p.len() == R * n), "dot_tile: next is not R rows");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        let xp = x.map(<[f32]>::as_ptr);
        macro_rules! go {
            ($var:ident, $f:ident) => {
                if let WeightRef::$var(_) = w[0] {
                    let pre = match next {
                        Some(WeightRef::$var(s)) => Some(s.as_ptr()),
                        _ => None,
                    };
                    let mut p = [std::ptr::null(); R];
                    if w.iter().zip(p.iter_mut()).all(|(r, p)| match r {
                        WeightRef::$var(s) => {
                            *p = s.as_ptr();
                            true
                        }
                        _ => false,
                    }) {
                        // SAFETY: features checked; every row has n elements.
                        return unsafe { avx2::$f::<R, C>(p, xp, n, pre) };
                    }
                }
            };
        }
        go!(F32, tile_f32);
        go!(Bf16, tile_bf16);
        go!(F16, tile_f16);
    }
    let mut out = [[0f32; C]; R];
    for (o, wr) in out.iter_mut().zip(w) {
        for (v, xr) in o.iter_mut().zip(x) {
            *v = dot_scalar(wr, xr);
        }
    }
    out
}

/// `put(c, r, w[r] · xs[c])` for each of up to three rows `w` and every activation row `xs`, in
/// register tiles of `w.len()` rows × up to four activation rows ([`dot_tile`]); `next` is
/// prefetched during the first tile.
///
/// # Panics
/// With more than three rows, or rows and activations of different lengths.
pub fn dot_rows(w: &[WeightRef<'_>], xs: &[&[f32]], next: Option<WeightRef<'_>>, put: &mut impl FnMut(usize, usize, f32)) {
    let mut c0 = 0;
    while c0 < xs.len() {
        let c = (xs.len() - c0).min(4);
        let pre = if c0 == 0 { next } else { None };
        macro_rules! tile {
            ($r:literal, $c:literal) => {{
                let out = dot_tile::<$r, $c>(std::array::from_fn(|r| w[r]), std::array::from_fn(|j| xs[c0 + j]), pre);
                for (r, vals) in out.iter().enumerate() {
                    for (j, v) in vals.iter().enumerate() {
                        put(c0 + j, r, *v);
                    }
                }
            }};
        }
        match (w.len(), c) {
            (3, 4) => tile!(3, 4),
            (3, 3) => tile!(3, 3),
            (3, 2) => tile!(3, 2),
            (3, _) => tile!(3, 1),
            (2, 4) => tile!(2, 4),
            (2, 3) => tile!(2, 3),
            (2, 2) => tile!(2, 2),
            (2, _) => tile!(2, 1),
            (1, 4) => tile!(1, 4),
            (1, 3) => tile!(1, 3),
            (1, 2) => tile!(1, 2),
            (1, _) => tile!(1, 1),
            (0, _) => return,
            (r, _) => panic!("dot_rows: {r} rows (at most 3)"),
        }
        c0 += c;
    }
}

/// `y[i] += a * w[i]`.
pub fn axpy(y: &mut [f32], a: f32, w: WeightRef<'_>) {
    assert_eq!(w.len(), y.len(), "axpy: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked above; lengths equal.
        unsafe {
            match w {
                WeightRef::F32(w) => avx2::axpy_f32(y.as_mut_ptr(), a, w.as_ptr(), y.len()),
                WeightRef::Bf16(w) => avx2::axpy_bf16(y.as_mut_ptr(), a, w.as_ptr(), y.len()),
                WeightRef::F16(w) => avx2::axpy_f16(y.as_mut_ptr(), a, w.as_ptr(), y.len()),
            }
        }
        return;
    }
    axpy_scalar(y, a, w)
}

/// `y[i] += a[0] * w[0][i] + a[1] * w[1][i] + a[2] * w[2][i] + a[3] * w[3][i]`: four weight rows
/// folded into `y` with one load and store of `y` (the small-batch `x · W` kernel's inner step).
/// When `ahead > 0`, the elements `ahead` past each row's (the rows to come) are prefetched.
pub fn axpy4(y: &mut [f32], a: [f32; 4], w: [WeightRef<'_>; 4], ahead: usize) {
    assert!(w.iter().all(|r| r.len() == y.len()), "axpy4: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked above; all lengths equal (the variants are checked below).
        unsafe {
            match w {
                [WeightRef::F32(a0), WeightRef::F32(a1), WeightRef::F32(a2), WeightRef::F32(a3)] => {
                    return avx2::axpy4_f32(y.as_mut_ptr(), a, [a0.as_ptr(), a1.as_ptr(), a2.as_ptr(), a3.as_ptr()], y.len(), ahead);
                }
                [WeightRef::Bf16(a0), WeightRef::Bf16(a1), WeightRef::Bf16(a2), WeightRef::Bf16(a3)] => {
                    return avx2::axpy4_bf16(y.as_mut_ptr(), a, [a0.as_ptr(), a1.as_ptr(), a2.as_ptr(), a3.as_ptr()], y.len(), ahead);
                }
                [WeightRef::F16(a0), WeightRef::F16(a1), WeightRef::F16(a2), WeightRef::F16(a3)] => {
                    return avx2::axpy4_f16(y.as_mut_ptr(), a, [a0.as_ptr(), a1.as_ptr(), a2.as_ptr(), a3.as_ptr()], y.len(), ahead);
                }
                _ => {}
            }
        }
    }
    for (ai, wi) in a.iter().zip(w) {
        axpy_scalar(y, *ai, wi);
    }
}

/// `out[i] = w[i]` widened to f32 (`w` and `out` have the same length).
pub fn widen(w: WeightRef<'_>, out: &mut [f32]) {
    assert_eq!(w.len(), out.len(), "widen: length mismatch");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked above; lengths equal.
        unsafe {
            match w {
                WeightRef::F32(w) => out.copy_from_slice(w),
                WeightRef::Bf16(w) => avx2::widen_bf16(w.as_ptr(), out.as_mut_ptr(), out.len()),
                WeightRef::F16(w) => avx2::widen_f16(w.as_ptr(), out.as_mut_ptr(), out.len()),
            }
        }
        return;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = w.get(i);
    }
}

/// `sum_i w[i] * x[i]`, portable: the fallback of [`dot_tile`] and its test reference.
pub fn dot_scalar(w: WeightRef<'_>, x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (i, xv) in x.iter().enumerate() {
        acc[i % 8] += w.get(i) * xv;
    }
    acc.iter().sum()
}

/// Portable reference of [`axpy`].
pub fn axpy_scalar(y: &mut [f32], a: f32, w: WeightRef<'_>) {
    for (i, yv) in y.iter_mut().enumerate() {
        *yv += a * w.get(i);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{bf16, f16};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn ld_f32(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn ld_bf16(p: *const bf16) -> __m256 {
        unsafe {
            let v = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(v)))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn ld_f16(p: *const f16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    macro_rules! kernels {
        ($t:ty, $ld:ident, $axpy:ident, $axpy4:ident, $tile:ident) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $tile<const R: usize, const C: usize>(
                w: [*const $t; R],
                x: [*const f32; C],
                n: usize,
                prefetch: Option<*const $t>,
            ) -> [[f32; C]; R] {
                unsafe {
                    let mut acc = [[_mm256_setzero_ps(); C]; R];
                    let mut wv = [_mm256_setzero_ps(); R];
                    let mut i = 0;
                    while i + 8 <= n {
                        for r in 0..R {
                            wv[r] = $ld(w[r].add(i));
                            if let Some(p) = prefetch
                                && (i * size_of::<$t>()) % 64 == 0
                            {
                                _mm_prefetch::<_MM_HINT_T0>(p.add(r * n + i) as *const i8);
                            }
                        }
                        for c in 0..C {
                            let xv = _mm256_loadu_ps(x[c].add(i));
                            for r in 0..R {
                                acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
                            }
                        }
                        i += 8;
                    }
                    let mut out = [[0f32; C]; R];
                    for r in 0..R {
                        for c in 0..C {
                            out[r][c] = hsum(acc[r][c]);
                        }
                    }
                    while i < n {
                        for r in 0..R {
                            let wv = f32::from(*w[r].add(i));
                            for c in 0..C {
                                out[r][c] += wv * *x[c].add(i);
                            }
                        }
                        i += 1;
                    }
                    out
                }
            }

            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $axpy4(y: *mut f32, a: [f32; 4], w: [*const $t; 4], n: usize, ahead: usize) {
                unsafe {
                    let av = [_mm256_set1_ps(a[0]), _mm256_set1_ps(a[1]), _mm256_set1_ps(a[2]), _mm256_set1_ps(a[3])];
                    let mut i = 0;
                    while i + 16 <= n {
                        if ahead > 0 && (i * size_of::<$t>()) % 64 == 0 {
                            for j in 0..4 {
                                // A prefetch never faults; the address may lie past the matrix.
                                _mm_prefetch::<_MM_HINT_T0>(w[j].wrapping_add(i + ahead) as *const i8);
                            }
                        }
                        let mut y0 = _mm256_loadu_ps(y.add(i));
                        let mut y1 = _mm256_loadu_ps(y.add(i + 8));
                        for j in 0..4 {
                            y0 = _mm256_fmadd_ps(av[j], $ld(w[j].add(i)), y0);
                            y1 = _mm256_fmadd_ps(av[j], $ld(w[j].add(i + 8)), y1);
                        }
                        _mm256_storeu_ps(y.add(i), y0);
                        _mm256_storeu_ps(y.add(i + 8), y1);
                        i += 16;
                    }
                    while i + 8 <= n {
                        let mut y0 = _mm256_loadu_ps(y.add(i));
                        for j in 0..4 {
                            y0 = _mm256_fmadd_ps(av[j], $ld(w[j].add(i)), y0);
                        }
                        _mm256_storeu_ps(y.add(i), y0);
                        i += 8;
                    }
                    while i < n {
                        let mut v = *y.add(i);
                        for j in 0..4 {
                            v += a[j] * f32::from(*w[j].add(i));
                        }
                        *y.add(i) = v;
                        i += 1;
                    }
                }
            }

            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $axpy(y: *mut f32, a: f32, w: *const $t, n: usize) {
                unsafe {
                    let av = _mm256_set1_ps(a);
                    let mut i = 0;
                    while i + 16 <= n {
                        let y0 = _mm256_fmadd_ps(av, $ld(w.add(i)), _mm256_loadu_ps(y.add(i)));
                        let y1 = _mm256_fmadd_ps(av, $ld(w.add(i + 8)), _mm256_loadu_ps(y.add(i + 8)));
                        _mm256_storeu_ps(y.add(i), y0);
                        _mm256_storeu_ps(y.add(i + 8), y1);
                        i += 16;
                    }
                    while i + 8 <= n {
                        let y0 = _mm256_fmadd_ps(av, $ld(w.add(i)), _mm256_loadu_ps(y.add(i)));
                        _mm256_storeu_ps(y.add(i), y0);
                        i += 8;
                    }
                    while i < n {
                        *y.add(i) += a * f32::from(*w.add(i));
                        i += 1;
                    }
                }
            }
        };
    }

    macro_rules! widen {
        ($t:ty, $ld:ident, $name:ident) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $name(w: *const $t, out: *mut f32, n: usize) {
                unsafe {
                    let mut i = 0;
                    while i + 8 <= n {
                        _mm256_storeu_ps(out.add(i), $ld(w.add(i)));
                        i += 8;
                    }
                    while i < n {
                        *out.add(i) = f32::from(*w.add(i));
                        i += 1;
                    }
                }
            }
        };
    }

    widen!(bf16, ld_bf16, widen_bf16);
    widen!(f16, ld_f16, widen_f16);

    kernels!(f32, ld_f32, axpy_f32, axpy4_f32, tile_f32);
    kernels!(bf16, ld_bf16, axpy_bf16, axpy4_bf16, tile_bf16);
    kernels!(f16, ld_f16, axpy_f16, axpy4_f16, tile_f16);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn dot_and_axpy_match_the_scalar_reference_for_every_dtype_and_odd_lengths() {
        for n in [1usize, 7, 8, 31, 33, 100, 517] {
            let w = data(n, 1);
            let x = data(n, 2);
            let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            for wr in [WeightRef::F32(&w), WeightRef::Bf16(&wb), WeightRef::F16(&wh)] {
                let want = dot_scalar(wr, &x);
                let one = dot_tile::<1, 1>([wr], [&x[..]], None)[0][0];
                assert!((one - want).abs() < 1e-4 * n as f32, "dot n={n} {wr:?}");
                let (x2, x3) = (data(n, 5), data(n, 6));
                let xs = [&x[..], &w[..], &x2[..], &x3[..]];
                let rows3 = [wr, wr.slice(0, n), wr];
                let pre: Vec<f32> = vec![0.0; 3 * n];
                for next in [None, Some(WeightRef::F32(&pre))] {
                    let out = dot_tile::<3, 4>(rows3, xs, next);
                    let out1 = dot_tile::<1, 3>([wr], [xs[1], xs[2], xs[3]], None);
                    for (r, row) in out.iter().enumerate() {
                        for (c, (o, xv)) in row.iter().zip(xs).enumerate() {
                            let want = dot_scalar(rows3[r], xv);
                            assert!((o - want).abs() < 1e-4 * n as f32, "dot_tile n={n} r={r} c={c}");
                            if c > 0 && r == 0 {
                                assert!((out1[0][c - 1] - want).abs() < 1e-4 * n as f32, "dot_tile<1,3> n={n}");
                            }
                        }
                    }
                }
                let mut wide = vec![0f32; n];
                widen(wr, &mut wide);
                assert!(wide.iter().enumerate().all(|(i, v)| *v == wr.get(i)), "widen n={n}");
                let mut y1 = x.clone();
                let mut y2 = x.clone();
                axpy(&mut y1, 0.37, wr);
                axpy_scalar(&mut y2, 0.37, wr);
                for (a, b) in y1.iter().zip(&y2) {
                    assert!((a - b).abs() < 1e-5, "axpy n={n}");
                }
                let (w2, w3) = (data(n, 3), data(n, 4));
                let rows = match wr {
                    WeightRef::F32(_) => [wr, WeightRef::F32(&x), WeightRef::F32(&w2), WeightRef::F32(&w3)],
                    _ => [wr; 4],
                };
                let a = [0.5, -1.25, 0.75, 2.0];
                let mut y3 = w.clone();
                let mut y4 = w.clone();
                axpy4(&mut y3, a, rows, if n > 16 { n / 2 } else { 0 });
                for (ai, ri) in a.iter().zip(rows) {
                    axpy_scalar(&mut y4, *ai, ri);
                }
                for (p, q) in y3.iter().zip(&y4) {
                    assert!((p - q).abs() < 1e-4, "axpy4 n={n} {wr:?}");
                }
            }
        }
    }
}
