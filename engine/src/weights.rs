//! Weights: candle tensors on the CPU, loaded from memory-mapped safetensors (single file or
//! sharded with an index) or made up from a seed for benchmarks.
//!
//! Tensors are copied once from the mapping into their compute dtype; the mapped pages of each
//! tensor are released right after (`MADV_DONTNEED`), so serving holds the weights once.

use crate::error::{Error, Result};
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use herd_kernels::WeightRef;
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One weight matrix or vector: a contiguous CPU tensor and a view of its elements for the kernels.
pub struct Weight {
    // Keeps the storage alive; `ptr` points into it. candle never mutates a tensor's storage in
    // place unless asked to, and the engine never asks.
    tensor: Tensor,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointed-to storage is owned by `tensor` (an Arc'd, immutable buffer) and only read.
unsafe impl Send for Weight {}
unsafe impl Sync for Weight {}

impl Weight {
    /// Wraps a CPU tensor of dtype F32, BF16 or F16 (made contiguous if needed).
    pub fn from_tensor(tensor: Tensor) -> Result<Self> {
        let tensor = tensor.contiguous()?;
        let (ptr, len) = {
            let (storage, layout) = tensor.storage_and_layout();
            let start = layout.start_offset();
            let len = tensor.elem_count();
            let ptr = match &*storage {
                Storage::Cpu(CpuStorage::F32(v)) => v[start..start + len].as_ptr() as *const u8,
                Storage::Cpu(CpuStorage::BF16(v)) => v[start..start + len].as_ptr() as *const u8,
                Storage::Cpu(CpuStorage::F16(v)) => v[start..start + len].as_ptr() as *const u8,
                _ => return Err(Error::Request(format!("weights must be CPU f32/bf16/f16, got {:?}", tensor.dtype()))),
            };
            (ptr, len)
        };
        Ok(Self { tensor, ptr, len })
    }

    /// The elements in their storage dtype.
    pub fn view(&self) -> WeightRef<'_> {
        // SAFETY: ptr/len describe the live, contiguous storage of `self.tensor` (see from_tensor).
        unsafe {
            match self.tensor.dtype() {
                DType::BF16 => WeightRef::Bf16(std::slice::from_raw_parts(self.ptr as *const half::bf16, self.len)),
                DType::F16 => WeightRef::F16(std::slice::from_raw_parts(self.ptr as *const half::f16, self.len)),
                _ => WeightRef::F32(std::slice::from_raw_parts(self.ptr as *const f32, self.len)),
            }
        }
    }

    /// Shape of the tensor.
    pub fn shape(&self) -> &[usize] {
        self.tensor.dims()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.len * self.tensor.dtype().size_in_bytes()
    }

    /// The underlying candle tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
}

/// A tensor as its source holds it, for a device that converts and places it itself.
pub enum Raw<'a> {
    /// Little-endian elements of `dtype` (F32, BF16 or F16), row-major.
    Bytes { dtype: DType, bytes: &'a [u8] },
    /// Random values `mean + std · N(0, 1)` drawn from `seed` (benchmarks): the device makes them.
    Random { seed: u64, mean: f32, std: f32 },
}

/// Where a model's weights come from.
pub trait WeightSource {
    /// The tensor named `name` (a `Llama4ForCausalLM` key such as `model.norm.weight`) with the
    /// given shape, converted to `dtype`, on the CPU.
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Weight>;

    /// Calls `f` with the tensor `name` as the source holds it (its shape checked), then lets go of
    /// it (a checkpoint releases the mapped pages), so a device loading tensor by tensor holds at
    /// most one in host memory. By default the tensor comes from [`WeightSource::get`] in f32.
    fn with_raw(&self, name: &str, shape: &[usize], f: &mut dyn FnMut(Raw<'_>) -> Result<()>) -> Result<()> {
        let w = self.get(name, shape, DType::F32)?;
        let WeightRef::F32(v) = w.view() else {
            return Err(Error::Request(format!("tensor `{name}` did not come back as f32")));
        };
        // SAFETY: f32 slice viewed as its bytes (no padding, any bit pattern is a valid u8).
        let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) };
        f(Raw::Bytes { dtype: DType::F32, bytes })
    }
}

struct TensorEntry {
    file: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A memory-mapped safetensors checkpoint: `model.safetensors`, or shards listed by
/// `model.safetensors.index.json`. Keys may carry the multimodal `language_model.` prefix;
/// vision tensors are present but never read.
pub struct Checkpoint {
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, TensorEntry>,
    prefix: &'static str,
}

impl Checkpoint {
    /// Opens the weights in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let names: Vec<String> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|error| Error::Io { path: index.clone(), error })?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|error| Error::Json { path: index.clone(), error })?;
            let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Config {
                path: index.clone(),
                field: "weight_map".into(),
                message: "missing or not an object".into(),
            })?;
            let mut files: Vec<String> = Vec::new();
            for (key, file) in map {
                let file = file.as_str().ok_or_else(|| Error::Config {
                    path: index.clone(),
                    field: format!("weight_map.{key}"),
                    message: "expected a file name".into(),
                })?;
                if file.contains('/') || file.contains("..") {
                    return Err(Error::Config {
                        path: index.clone(),
                        field: format!("weight_map.{key}"),
                        message: format!("file name {file:?} must be a plain name in the model folder"),
                    });
                }
                if !files.iter().any(|f| f == file) {
                    files.push(file.to_string());
                }
            }
            files.sort();
            files
        } else if single.exists() {
            vec!["model.safetensors".to_string()]
        } else {
            return Err(Error::NoWeights { path: dir.to_path_buf() });
        };

        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let file = std::fs::File::open(&path).map_err(|error| Error::Io { path: path.clone(), error })?;
            // SAFETY: the file is mapped read-only; herd does not modify checkpoints while serving
            // (a concurrent writer would be an operator error, as with every mmap-based loader).
            let mmap = unsafe { Mmap::map(&file) }.map_err(|error| Error::Io { path: path.clone(), error })?;
            let (header, meta) = safetensors::SafeTensors::read_metadata(&mmap)
                .map_err(|e| Error::Safetensors { path: path.clone(), message: e.to_string() })?;
            let base = 8 + header;
            for (key, info) in meta.tensors() {
                let (s, e) = info.data_offsets;
                if base + e > mmap.len() || s > e {
                    return Err(Error::Safetensors { path: path.clone(), message: format!("tensor `{key}` lies outside the file") });
                }
                tensors.insert(key, TensorEntry { file: i, dtype: info.dtype, shape: info.shape.clone(), start: base + s, end: base + e });
            }
            files.push((path, mmap));
        }
        let prefix = if tensors.keys().any(|k| k.starts_with("language_model.")) { "language_model." } else { "" };
        Ok(Self { files, tensors, prefix })
    }

    /// True when the checkpoint holds `name` (after the prefix is applied).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
    }

    fn where_(&self) -> PathBuf {
        match self.files.as_slice() {
            [(p, _)] => p.clone(),
            _ => self.files.first().and_then(|(p, _)| p.parent()).map(Path::to_path_buf).unwrap_or_default(),
        }
    }
}

impl Checkpoint {
    /// The bytes and dtype of tensor `name`, checked against `shape`; and where they lie.
    fn raw(&self, name: &str, shape: &[usize]) -> Result<(DType, &[u8], &Mmap, usize, usize)> {
        let key = format!("{}{name}", self.prefix);
        let entry = self.tensors.get(&key).ok_or_else(|| Error::MissingTensor { path: self.where_(), key: key.clone() })?;
        let (path, mmap) = &self.files[entry.file];
        if entry.shape != shape {
            return Err(Error::Shape { path: path.clone(), key, expected: shape.to_vec(), actual: entry.shape.clone() });
        }
        let src = match entry.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F16 => DType::F16,
            other => return Err(Error::Dtype { path: path.clone(), key, dtype: format!("{other:?}") }),
        };
        let bytes = &mmap[entry.start..entry.end];
        if bytes.len() != shape.iter().product::<usize>() * src.size_in_bytes() {
            return Err(Error::Safetensors { path: path.clone(), message: format!("tensor `{key}` has the wrong byte length") });
        }
        Ok((src, bytes, mmap, entry.start, entry.end))
    }
}

impl WeightSource for Checkpoint {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Weight> {
        let (src, bytes, mmap, start, end) = self.raw(name, shape)?;
        let t = if src == dtype { Tensor::from_raw_buffer(bytes, src, shape, &Device::Cpu)? } else { convert(bytes, src, dtype, shape)? };
        release_pages(mmap, start, end);
        Weight::from_tensor(t)
    }

    fn with_raw(&self, name: &str, shape: &[usize], f: &mut dyn FnMut(Raw<'_>) -> Result<()>) -> Result<()> {
        let (dtype, bytes, mmap, start, end) = self.raw(name, shape)?;
        let done = f(Raw::Bytes { dtype, bytes });
        release_pages(mmap, start, end);
        done
    }
}

/// Converts little-endian `bytes` of dtype `src` straight into a tensor of dtype `dst` (one copy,
/// no intermediate tensor of the source dtype).
fn convert(bytes: &[u8], src: DType, dst: DType, shape: &[usize]) -> Result<Tensor> {
    let f32s = bytes.chunks_exact(src.size_in_bytes()).map(|b| match src {
        DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    });
    let dev = &Device::Cpu;
    Ok(match dst {
        DType::BF16 => Tensor::from_vec(f32s.map(half::bf16::from_f32).collect::<Vec<_>>(), shape, dev)?,
        DType::F16 => Tensor::from_vec(f32s.map(half::f16::from_f32).collect::<Vec<_>>(), shape, dev)?,
        _ => Tensor::from_vec(f32s.collect::<Vec<f32>>(), shape, dev)?,
    })
}

/// Drops the mapped pages of `[start, end)` from this process (they stay in the page cache).
fn release_pages(mmap: &Mmap, start: usize, end: usize) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let s = start.next_multiple_of(PAGE);
        let e = end / PAGE * PAGE;
        if e > s {
            // SAFETY: the range lies inside the mapping; the data was already copied out, and a
            // read-only file mapping simply refaults from the file if touched again.
            let _ = unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, s, e - s) };
        }
    }
}

/// Random weights from a seed, for benchmarks: normal(0, `std`) matrices, norms near 1.
pub struct RandomWeights {
    pub seed: u64,
    pub std: f64,
}

impl RandomWeights {
    /// The seed of tensor `name`: a per-tensor stream, so every tensor is the same whatever the
    /// loading order.
    fn seed_of(&self, name: &str) -> u64 {
        let mut h = self.seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        h
    }
}

impl WeightSource for RandomWeights {
    fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Weight> {
        let n: usize = shape.iter().product();
        let mut rng = crate::sampler::Rng::new(self.seed_of(name));
        let is_norm = name.ends_with("norm.weight");
        let data: Vec<f32> =
            (0..n).map(|_| if is_norm { 1.0 + 0.1 * rng.normal() as f32 } else { (self.std * rng.normal()) as f32 }).collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
        Weight::from_tensor(if dtype == DType::F32 { t } else { t.to_dtype(dtype)? })
    }

    fn with_raw(&self, name: &str, _shape: &[usize], f: &mut dyn FnMut(Raw<'_>) -> Result<()>) -> Result<()> {
        let seed = self.seed_of(name);
        if name.ends_with("norm.weight") {
            f(Raw::Random { seed, mean: 1.0, std: 0.1 })
        } else {
            f(Raw::Random { seed, mean: 0.0, std: self.std as f32 })
        }
    }
}
