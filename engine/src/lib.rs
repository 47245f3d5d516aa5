//! herd's Llama 4 mixture-of-experts inference engine.
//!
//! - [`config`]: `config.json` of hub checkpoints (text-only and multimodal wrapper).
//! - [`weights`]: memory-mapped safetensors (single or sharded), random weights for benchmarks.
//! - [`model`]: the architecture and its batched forward, written once; [`rope`] and
//!   [`kv_cache`] (the paged KV bookkeeping) are its parts.
//! - [`device`]: where it runs — weights, KV storage and the blocks of a step on the CPU or a
//!   CUDA GPU (`--device cpu|cuda[:N]|auto`).
//! - [`tokenizer`]: `tokenizer.json`, the chat template, stop tokens.
//! - [`sampler`] and [`generate`]: decoding.
//! - [`bench`](mod@bench): throughput measurement on random weights.

pub mod bench;
pub mod config;
pub mod device;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod model;
pub mod rope;
pub mod sampler;
pub mod scheduler;
pub mod tokenizer;
pub mod weights;

pub use candle_core::DType;
pub use config::TextConfig;
pub use device::Device;
pub use error::{Error, Result};
pub use herd_kernels::pool::{set_threads, threads};
pub use kv_cache::{BlockPool, KvCache};
pub use model::{LogitsWanted, Model, SeqStep};

/// Parses a dtype name as the CLI and settings spell it: `f32`, `bf16`, `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(Error::Request(format!("dtype must be one of f32, bf16, f16; got {other:?}"))),
    }
}
