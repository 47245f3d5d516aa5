//! Scaled dot-product attention of one query head over cached keys and values held in blocks.

use crate::WeightRef;
use crate::simd::{axpy, axpy4, dot_rows};

/// `n` cached rows starting at row `first` of a block table. Each block holds `block_rows` keys
/// `[block_rows, stride]` followed by as many values; this head's `d` columns start at `col`.
#[derive(Clone, Copy)]
pub struct KvBlocks<'a, B> {
    pub blocks: &'a [B],
    pub block_rows: usize,
    pub stride: usize,
    pub col: usize,
    pub first: usize,
    pub n: usize,
}

impl<B: AsRef<[f32]>> KvBlocks<'_, B> {
    /// Calls `f(j, take, keys, values)` for each run of consecutive rows `j..j + take` held in one
    /// block; row `j + i`'s key (value) starts at `keys[i * stride + col]` (`values[...]`).
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, &[f32], &[f32])) {
        let (br, st) = (self.block_rows, self.stride);
        let (mut j, mut r) = (0, self.first);
        while j < self.n {
            let block = self.blocks[r / br].as_ref();
            let (keys, values) = block.split_at(br * st);
            let at = r % br;
            let take = (br - at).min(self.n - j);
            f(j, take, &keys[at * st..], &values[at * st..]);
            j += take;
            r += take;
        }
    }
}

/// Attention of one query `q [d]` over cached rows:
/// `out [d] = softmax(q·Kᵀ * scale) · V`; `scores` is scratch of at least `n` floats.
pub fn attend<B: AsRef<[f32]>>(q: &[f32], kv: KvBlocks<'_, B>, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    attend_group(q, 1, kv, scale, scores, out);
}

/// Attention of the `g` query heads that share one key/value head (grouped-query attention):
/// `q [g, d]` → `out [g, d]`, row `i` being `softmax(q_i·Kᵀ * scale) · V`; `scores` is scratch of
/// at least `g * n` floats. Each key and value row is read once for the whole group: scores come
/// from register tiles of three keys × up to four queries, values are folded in four rows at a time.
pub fn attend_group<B: AsRef<[f32]>>(q: &[f32], g: usize, kv: KvBlocks<'_, B>, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let d = q.len() / g.max(1);
    out.fill(0.0);
    let n = kv.n;
    if n == 0 || d == 0 {
        return;
    }
    let scores = &mut scores[..g * n];
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2() && d.is_multiple_of(8) {
        // SAFETY: features checked; d is a multiple of 8; every row run lies inside its block.
        unsafe { avx2::attend_group(q, g, d, &kv, scale, scores, out) };
        return;
    }
    let (st, col) = (kv.stride, kv.col);
    let qs: Vec<&[f32]> = q.chunks_exact(d).collect();
    kv.for_each_run(|j0, take, keys, _| {
        let mut i = 0;
        while i < take {
            let r = (take - i).min(3);
            let rows: [WeightRef<'_>; 3] = std::array::from_fn(|k| {
                let o = (i + k.min(r - 1)) * st + col;
                WeightRef::F32(&keys[o..o + d])
            });
            dot_rows(&rows[..r], &qs, None, &mut |c, k, v| scores[c * n + j0 + i + k] = v * scale);
            i += r;
        }
    });
    for row in scores.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in row.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|s| *s *= inv);
    }
    kv.for_each_run(|j0, take, _, values| {
        let row = |i: usize| WeightRef::F32(&values[i * st + col..i * st + col + d]);
        let mut i = 0;
        while i + 4 <= take {
            let rows = [row(i), row(i + 1), row(i + 2), row(i + 3)];
            for (c, o) in out.chunks_exact_mut(d).enumerate() {
                let p = &scores[c * n + j0 + i..c * n + j0 + i + 4];
                axpy4(o, [p[0], p[1], p[2], p[3]], rows, 0);
            }
            i += 4;
        }
        for i in i..take {
            for (c, o) in out.chunks_exact_mut(d).enumerate() {
                axpy(o, scores[c * n + j0 + i], row(i));
            }
        }
    });
}

/// The AVX2 path of [`attend_group`]: scores four keys at a time per query (one transposing
/// reduction for the four dot products), a vectorised `exp`, and each query's output kept in
/// registers, 64 columns at a time, while the value rows stream past.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::KvBlocks;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA are available; `d` is a multiple of 8; `q` is `[g, d]`, `scores` `[g, n]`,
    /// `out` `[g, d]`, and every row run of `kv` has `d` columns from `kv.col`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend_group<B: AsRef<[f32]>>(
        q: &[f32],
        g: usize,
        d: usize,
        kv: &KvBlocks<'_, B>,
        scale: f32,
        scores: &mut [f32],
        out: &mut [f32],
    ) {
        let (n, st, col) = (kv.n, kv.stride, kv.col);
        unsafe {
            kv.for_each_run(|j0, take, keys, _| {
                assert!(keys.len() >= (take - 1) * st + col + d, "attend_group: a key run is short");
                let base = keys.as_ptr().add(col);
                let mut j = 0;
                while j < take {
                    let m = (take - j).min(4);
                    // up to four keys; a short group repeats its last key and stores fewer lanes
                    let kp = [0, 1, 2, 3].map(|r| base.add((j + r.min(m - 1)) * st));
                    for i in 0..g {
                        let s = _mm_mul_ps(dot4(q.as_ptr().add(i * d), kp, d), _mm_set1_ps(scale));
                        let mut lanes = [0f32; 4];
                        _mm_storeu_ps(lanes.as_mut_ptr(), s);
                        scores[i * n + j0 + j..i * n + j0 + j + m].copy_from_slice(&lanes[..m]);
                    }
                    j += m;
                }
            });
            for row in scores.chunks_exact_mut(n) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum = exp_shifted(row, max);
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|s| *s *= inv);
            }
            for i in 0..g {
                let mut c = 0;
                while c < d {
                    let o = out.as_mut_ptr().add(i * d + c);
                    let p = &scores[i * n..(i + 1) * n];
                    match ((d - c) / 8).min(8) {
                        8 => weighted::<8, B>(p, kv, c, o),
                        7 => weighted::<7, B>(p, kv, c, o),
                        6 => weighted::<6, B>(p, kv, c, o),
                        5 => weighted::<5, B>(p, kv, c, o),
                        4 => weighted::<4, B>(p, kv, c, o),
                        3 => weighted::<3, B>(p, kv, c, o),
                        2 => weighted::<2, B>(p, kv, c, o),
                        _ => weighted::<1, B>(p, kv, c, o),
                    }
                    c += 8 * ((d - c) / 8).min(8);
                }
            }
        }
    }

    /// `[q·k0, q·k1, q·k2, q·k3]` over `d` (a multiple of 8) elements.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot4(q: *const f32, k: [*const f32; 4], d: usize) -> __m128 {
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c < d {
                let qv = _mm256_loadu_ps(q.add(c));
                for r in 0..4 {
                    acc[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k[r].add(c)), acc[r]);
                }
                c += 8;
            }
            let s01 = _mm256_hadd_ps(acc[0], acc[1]);
            let s23 = _mm256_hadd_ps(acc[2], acc[3]);
            let s = _mm256_hadd_ps(s01, s23);
            _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s))
        }
    }

    /// `row[i] = exp(row[i] - max)`; returns their sum.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
        unsafe {
            let mv = _mm256_set1_ps(max);
            let mut acc = _mm256_setzero_ps();
            let mut chunks = row.chunks_exact_mut(8);
            for ch in &mut chunks {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(ch.as_ptr()), mv));
                _mm256_storeu_ps(ch.as_mut_ptr(), e);
                acc = _mm256_add_ps(acc, e);
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            let mut sum: f32 = lanes.iter().sum();
            for v in chunks.into_remainder() {
                *v = (*v - max).exp();
                sum += *v;
            }
            sum
        }
    }

    /// `exp(x)` for eight lanes (Cephes' `expf`: `2^n · p(r)` with `r = x − n·ln 2`, a degree-5
    /// polynomial; relative error ~2e-7). Inputs below −87.3 give 0 (they are shifted scores, ≤ 0).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-87.3);
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo);
        let x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
        _mm256_andnot_ps(under, _mm256_mul_ps(p, pow2))
    }

    /// `out[0..8M] = Σ_j p[j] · v_j[c..c + 8M]` over every cached row, the sums held in registers.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn weighted<const M: usize, B: AsRef<[f32]>>(p: &[f32], kv: &KvBlocks<'_, B>, c: usize, out: *mut f32) {
        let (st, col) = (kv.stride, kv.col + c);
        unsafe {
            let mut acc = [_mm256_setzero_ps(); M];
            kv.for_each_run(|j0, take, _, values| {
                assert!(values.len() >= (take - 1) * st + col + 8 * M, "attend_group: a value run is short");
                let base = values.as_ptr().add(col);
                for j in 0..take {
                    let w = _mm256_set1_ps(p[j0 + j]);
                    let v = base.add(j * st);
                    for (m, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(8 * m)), *a);
                    }
                }
            });
            for (m, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(8 * m), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attend_matches_a_hand_computation_across_blocks() {
        // Blocks of 2 rows, stride 3 (the third column is padding), head at column 0.
        // Rows: k = [9,9] (skipped: first = 1), [1,0], | [0,1], unused.
        // q·k1 = 1, q·k2 = 0 ; scale 1 → p = [e/(e+1), 1/(e+1)]
        let b0 = vec![9.0, 9.0, 9.9, 1.0, 0.0, 9.9, /* values */ 7.0, 7.0, 0.0, 10.0, 0.0, 0.0];
        let b1 = vec![0.0, 1.0, 9.9, 5.0, 5.0, 9.9, /* values */ 0.0, 20.0, 0.0, 3.0, 3.0, 0.0];
        let blocks = [b0, b1];
        let q = [1.0, 0.0];
        let mut scores = [0f32; 2];
        let mut out = [0f32; 2];
        let kv = KvBlocks { blocks: &blocks, block_rows: 2, stride: 3, col: 0, first: 1, n: 2 };
        attend(&q, kv, 1.0, &mut scores, &mut out);
        let e = 1f32.exp();
        assert!((out[0] - 10.0 * e / (e + 1.0)).abs() < 1e-5, "{out:?}");
        assert!((out[1] - 20.0 / (e + 1.0)).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn a_group_of_queries_equals_each_query_alone() {
        // 3 blocks of 5 rows, stride 24 (two heads of 8 plus padding), head at column 8; 11 rows
        // from row 2. d = 8 takes the AVX2 path where there is one, d = 6 the portable one.
        for d in [8usize, 6] {
            group_case(d);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_within_a_few_ulp_of_exp() {
        if !crate::simd::has_avx2() {
            return;
        }
        use std::arch::x86_64::*;
        let xs: Vec<f32> = (0..4000).map(|i| -100.0 + i as f32 * 0.0271).chain([0.0, -1e-8, -87.0, -87.5, -200.0]).collect();
        for ch in xs.chunks(8).filter(|c| c.len() == 8) {
            let mut got = [0f32; 8];
            // SAFETY: AVX2/FMA checked above.
            unsafe { _mm256_storeu_ps(got.as_mut_ptr(), avx2::exp8(_mm256_loadu_ps(ch.as_ptr()))) };
            for (x, e) in ch.iter().zip(got) {
                let want = x.exp();
                if *x < -87.3 {
                    assert_eq!(e, 0.0, "exp({x}) flushes to 0");
                } else {
                    assert!((e - want).abs() <= 1e-6 * want, "exp({x}) = {e}, want {want}");
                }
            }
        }
    }

    fn group_case(d: usize) {
        let (br, st) = (5usize, 24usize);
        let val = |i: usize| ((i * 37 % 101) as f32 / 50.0) - 1.0;
        let blocks: Vec<Vec<f32>> = (0..3).map(|b| (0..2 * br * st).map(|i| val(b * 1000 + i)).collect()).collect();
        for g in [1usize, 2, 4, 5, 7] {
            let kv = KvBlocks { blocks: &blocks, block_rows: br, stride: st, col: 8, first: 2, n: 11 };
            let q: Vec<f32> = (0..g * d).map(|i| val(i + 7 * g)).collect();
            let mut out = vec![f32::NAN; g * d];
            let mut scores = vec![0f32; g * 11];
            attend_group(&q, g, kv, 0.3, &mut scores, &mut out);
            for h in 0..g {
                // plain reference: scores, softmax, weighted sum, row by row
                let rows: Vec<usize> = (2..13).collect();
                let key = |r: usize, c: usize| blocks[r / br][(r % br) * st + 8 + c];
                let value = |r: usize, c: usize| blocks[r / br][br * st + (r % br) * st + 8 + c];
                let s: Vec<f32> = rows.iter().map(|&r| (0..d).map(|c| q[h * d + c] * key(r, c)).sum::<f32>() * 0.3).collect();
                let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let p: Vec<f32> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f32 = p.iter().sum();
                for c in 0..d {
                    let want: f32 = rows.iter().zip(&p).map(|(&r, pv)| pv / z * value(r, c)).sum();
                    assert!((out[h * d + c] - want).abs() < 1e-5, "g={g} head {h} col {c}: {} vs {want}", out[h * d + c]);
                }
            }
        }
    }
}
