//! Rotary position embedding on interleaved pairs (Llama 4's complex-number form).
//!
//! Reference: `Llama4TextRotaryEmbedding` and `apply_rotary_emb` in transformers'
//! `modeling_llama4.py`: pairs `(x[2i], x[2i+1])` are rotated as complex numbers by
//! `pos * inv_freq[i]` — not the half-rotation (`rotate_half`) of Llama 2/3.

use crate::config::{RopeScaling, TextConfig};

/// Inverse frequencies of one head, `inv_freq [head_dim / 2]`, with the configured scaling.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Frequencies for `cfg` (`rope_theta`, `head_dim`, `rope_scaling`).
    pub fn new(cfg: &TextConfig) -> Self {
        let dim = cfg.head_dim;
        // inv_freq = 1 / theta^(2i/dim), computed in f32 like the reference.
        let base: Vec<f64> = (0..dim / 2).map(|i| (1.0f32 / (cfg.rope_theta as f32).powf((2 * i) as f32 / dim as f32)) as f64).collect();
        let inv_freq = match cfg.rope_scaling {
            RopeScaling::Default => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                llama3(&base, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)
            }
        };
        Self { inv_freq: inv_freq.into_iter().map(|f| f as f32).collect() }
    }

    /// The inverse frequencies.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// `(cos, sin)` of every pair's angle at `pos`, appended to `cos`/`sin` (`head_dim / 2` each).
    pub fn angles(&self, pos: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
        for f in &self.inv_freq {
            // The reference multiplies in f32 (inv_freq @ positions) and takes cos/sin of that.
            let a = f * pos as f32;
            cos.push((a as f64).cos() as f32);
            sin.push((a as f64).sin() as f32);
        }
    }
}

/// Rotates every head of `x [heads * head_dim]` in place by the angles of one position.
pub fn apply(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos[i] - b * sin[i];
            pair[1] = a * sin[i] + b * cos[i];
        }
    }
}

/// `_compute_llama3_parameters`: low frequencies divided by `factor`, high ones kept, a smooth
/// blend in between. When `low_freq_factor == high_freq_factor` the blend band is empty
/// (only a wavelength exactly on the boundary lands in it; it then keeps the unscaled frequency
/// instead of the reference's 0/0).
fn llama3(inv_freq: &[f64], factor: f64, low: f64, high: f64, old_ctx: f64) -> Vec<f64> {
    let low_wavelen = old_ctx / low;
    let high_wavelen = old_ctx / high;
    inv_freq
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / factor
            } else if high == low {
                f
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_is_on_interleaved_pairs() {
        // head_dim 4: pairs (x0,x1) and (x2,x3); rotate by 90° and 0°.
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        apply(&mut x, 4, &[0.0, 1.0], &[1.0, 0.0]);
        assert_eq!(x, vec![-2.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_between() {
        // old_ctx 64, low 1, high 4: wavelengths < 16 kept, > 64 divided, between blended.
        let f = [2.0 * std::f64::consts::PI / 8.0, 2.0 * std::f64::consts::PI / 128.0, 2.0 * std::f64::consts::PI / 32.0];
        let out = llama3(&f, 8.0, 1.0, 4.0, 64.0);
        assert_eq!(out[0], f[0]);
        assert!((out[1] - f[1] / 8.0).abs() < 1e-15);
        let smooth = (64.0 / 32.0 - 1.0) / 3.0;
        assert!((out[2] - ((1.0 - smooth) * f[2] / 8.0 + smooth * f[2])).abs() < 1e-15);
        // equal factors: no blend band, no NaN
        let eq = llama3(&f, 16.0, 1.0, 1.0, 64.0);
        assert!(eq.iter().all(|v| v.is_finite()));
        assert_eq!(eq[0], f[0]);
        assert!((eq[1] - f[1] / 16.0).abs() < 1e-15);
    }
}
