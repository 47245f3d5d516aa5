//! Normalisations over the last dimension.

use crate::WeightRef;

/// RMSNorm in place over each row of `x [rows, dim]`: `x * rsqrt(mean(x²) + eps) * weight`
/// (Llama4TextRMSNorm; the weight may be any storage dtype).
pub fn rms_norm(x: &mut [f32], dim: usize, weight: WeightRef<'_>, eps: f32) {
    assert_eq!(weight.len(), dim, "rms_norm: weight is not [dim]");
    for row in x.chunks_exact_mut(dim) {
        let r = inv_rms(row, eps);
        for (i, v) in row.iter_mut().enumerate() {
            *v = *v * r * weight.get(i);
        }
    }
}

/// Weightless RMS ("L2") norm in place over each row of `x [rows, dim]` (Llama4TextL2Norm,
/// the QK norm).
pub fn l2_norm(x: &mut [f32], dim: usize, eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let r = inv_rms(row, eps);
        row.iter_mut().for_each(|v| *v *= r);
    }
}

fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_a_hand_computed_row() {
        // mean(x²) = (9 + 16) / 2 = 12.5 ; 1/sqrt(12.5 + 0.5) = 1/sqrt(13)
        let mut x = vec![3.0, 4.0];
        rms_norm(&mut x, 2, WeightRef::F32(&[1.0, 2.0]), 0.5);
        let r = 1.0 / 13f32.sqrt();
        assert!((x[0] - 3.0 * r).abs() < 1e-6 && (x[1] - 8.0 * r).abs() < 1e-6, "{x:?}");
    }

    #[test]
    fn l2_norm_gives_unit_rms_per_row() {
        let mut x = vec![1.0, 2.0, 3.0, -4.0, 0.5, 8.0];
        l2_norm(&mut x, 3, 0.0);
        for row in x.chunks(3) {
            let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / 3.0;
            assert!((ms - 1.0).abs() < 1e-5, "{row:?}");
        }
    }
}
