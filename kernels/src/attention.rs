//! Scaled dot-product attention of one query head over cached keys and values held in blocks.

use crate::WeightRef;
use crate::simd::{axpy, dot};

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
    /// Calls `f(j, key_j, value_j)` for the rows `j = 0..n`, block by block.
    fn for_each(&self, d: usize, mut f: impl FnMut(usize, &[f32], &[f32])) {
        let (br, st) = (self.block_rows, self.stride);
        let (mut j, mut r) = (0, self.first);
        while j < self.n {
            let block = self.blocks[r / br].as_ref();
            let (keys, values) = block.split_at(br * st);
            let at = r % br;
            let take = (br - at).min(self.n - j);
            for i in 0..take {
                let o = (at + i) * st + self.col;
                f(j + i, &keys[o..o + d], &values[o..o + d]);
            }
            j += take;
            r += take;
        }
    }
}

/// Attention of one query `q [d]` over cached rows:
/// `out [d] = softmax(q·Kᵀ * scale) · V`; `scores` is scratch of at least `n` floats.
pub fn attend<B: AsRef<[f32]>>(q: &[f32], kv: KvBlocks<'_, B>, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let d = q.len();
    out.fill(0.0);
    if kv.n == 0 {
        return;
    }
    let scores = &mut scores[..kv.n];
    let mut max = f32::NEG_INFINITY;
    kv.for_each(d, |j, k, _| {
        scores[j] = dot(WeightRef::F32(k), q) * scale;
        max = max.max(scores[j]);
    });
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    kv.for_each(d, |j, _, v| axpy(out, scores[j] * inv, WeightRef::F32(v)));
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
}
