//! Scaled dot-product attention of one query head over a run of cached keys and values.

use crate::WeightRef;
use crate::simd::{axpy, dot};

/// A run of `n` cached keys and values laid out with a row stride: key `j` is
/// `keys[j * stride .. j * stride + d]` (same for values).
#[derive(Clone, Copy)]
pub struct KvRun<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub n: usize,
    pub stride: usize,
}

/// Attention of one query `q [d]` over a run of keys and values:
/// `out [d] = softmax(q·Kᵀ * scale) · V`; `scores` is scratch of at least `n` floats.
pub fn attend(q: &[f32], kv: KvRun<'_>, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let KvRun { keys, values, n, stride } = kv;
    let d = q.len();
    out.fill(0.0);
    if n == 0 {
        return;
    }
    let scores = &mut scores[..n];
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot(WeightRef::F32(&keys[j * stride..j * stride + d]), q) * scale;
        max = max.max(*s);
    }
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    for (j, s) in scores.iter().enumerate() {
        axpy(out, s * inv, WeightRef::F32(&values[j * stride..j * stride + d]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attend_matches_a_two_key_hand_computation() {
        // q·k0 = 1, q·k1 = 0 ; scale 1 → p = [e/(e+1), 1/(e+1)]
        let q = [1.0, 0.0];
        let keys = [1.0, 0.0, 9.9, 0.0, 1.0, 9.9]; // stride 3, the third column is padding
        let values = [10.0, 0.0, 0.0, 0.0, 20.0, 0.0];
        let mut scores = [0f32; 2];
        let mut out = [0f32; 2];
        attend(&q, KvRun { keys: &keys, values: &values, n: 2, stride: 3 }, 1.0, &mut scores, &mut out);
        let e = 1f32.exp();
        assert!((out[0] - 10.0 * e / (e + 1.0)).abs() < 1e-5);
        assert!((out[1] - 20.0 / (e + 1.0)).abs() < 1e-5);
    }
}
