//! Element-wise activations.

/// `out[i] = silu(gate[i]) * up[i]` with `silu(x) = x / (1 + e^-x)` (the gated MLP of Llama).
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && up.len() == out.len(), "silu_mul: length mismatch");
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Logistic sigmoid.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_mul_matches_hand_values() {
        let mut out = [0f32; 3];
        silu_mul(&[0.0, 1.0, -2.0], &[5.0, 2.0, 3.0], &mut out);
        let want = [0.0, 2.0 / (1.0 + (-1f32).exp()), 3.0 * -2.0 / (1.0 + 2f32.exp())];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
    }
}
