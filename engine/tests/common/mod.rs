//! Helpers shared by the engine's integration tests: fixture paths, golden files, a poisoned checkpoint.
#![allow(dead_code)]

use herd_engine::weights::{Checkpoint, Weight, WeightSource};
use herd_engine::{DType, Model};
use serde_json::Value;
use std::path::PathBuf;

/// The repository: where it was built, or `HERD_REPO_ROOT` (the test binaries run on a GPU machine
/// from another checkout, deploy/gpu/check.sh).
pub fn repo() -> PathBuf {
    std::env::var_os("HERD_REPO_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// `engine/tests/fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("engine/tests/fixtures").join(name)
}

/// The bundled demo chat model, `deploy/models/herd-demo-chat`.
pub fn demo_model() -> PathBuf {
    repo().join("deploy/models/herd-demo-chat")
}

/// The fixtures made by the Hugging Face reference, with what each exercises.
pub const FIXTURES: [&str; 4] = [
    "llama4-tiny-scout",  // every layer MoE, top-1, QK norm, llama3 rope (low == high), chunk 16
    "maverick-like",      // hub layout, dense/MoE interleave, top-2, no QK norm, llama3 blend band
    "plain-rope-sharded", // bf16, sharded with an index, plain RoPE, 4 experts
    "guard4-dense",       // Llama Guard 4's shape: hub layout, no experts (moe_layers []), no chunked attention
];

pub fn golden(dir: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(dir.join("golden.json")).expect("golden.json is readable");
    serde_json::from_str(&text).expect("golden.json is JSON")
}

pub fn cases<'a>(g: &'a Value, kind: &str) -> Vec<&'a Value> {
    g["cases"].as_array().expect("cases").iter().filter(|c| c["kind"] == kind).collect()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub fn tolerance(g: &Value) -> f32 {
    g["tolerance"]["logits_max_abs"].as_f64().expect("tolerance") as f32
}

pub fn load(dir: &std::path::Path) -> Model {
    Model::load(dir, DType::F32).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A checkpoint whose experts that were never routed to are replaced by NaN.
pub struct Poisoned<'a> {
    pub inner: Checkpoint,
    /// `(layer, tokens per expert)`: the experts with 0 tokens are poisoned.
    pub never_routed: &'a [(usize, Vec<u64>)],
}

impl WeightSource for Poisoned<'_> {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> herd_engine::Result<Weight> {
        let w = self.inner.get(name, shape, dtype)?;
        let Some((_, counts)) = self.never_routed.iter().find(|(l, _)| {
            name == format!("model.layers.{l}.feed_forward.experts.gate_up_proj")
                || name == format!("model.layers.{l}.feed_forward.experts.down_proj")
        }) else {
            return Ok(w);
        };
        let per = shape[1] * shape[2];
        let mut data: Vec<f32> = w.tensor().flatten_all()?.to_vec1()?;
        for (e, n) in counts.iter().enumerate() {
            if *n == 0 {
                data[e * per..(e + 1) * per].fill(f32::NAN);
            }
        }
        Weight::from_tensor(candle_core::Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?)
    }
}
