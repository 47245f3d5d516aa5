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
    let (st, col) = (kv.stride, kv.col);
    let qs: Vec<&[f32]> = q.chunks_exact(d).collect();
    let scores = &mut scores[..g * n];
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
        // 3 blocks of 5 rows, stride 24 (two heads of 8 plus padding), head at column 8; 11 rows from row 2.
        let (br, st, d) = (5usize, 24usize, 8usize);
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
