//! KV block storage in device memory.
//!
//! Blocks live in slabs; a table of slab addresses on the device lets the kernels find block `id`
//! at `slabs[id >> shift] + (id & mask) * block_elems`. A bounded pool (the scheduler's) reserves
//! all its blocks in one slab when it is made, so a KV cache too large for the GPU fails at start;
//! an unbounded one (a single generation) grows 64 blocks at a time from its first step.

use crate::error::{Error, Result};
use crate::kv_cache::KvArena;
use herd_kernels::cuda::{DevBuf, Gpu};
use std::any::Any;
use std::sync::{Arc, Mutex};

/// Blocks per slab of a growing arena (`id >> GROW_SHIFT` is the slab).
const GROW_SHIFT: u32 = 6;
/// Slabs a growing arena may have (4096 × 64 blocks).
const MAX_SLABS: usize = 4096;

struct Inner {
    slabs: Vec<DevBuf>,
    /// `[MAX_SLABS]` device addresses of the slabs; made with the first slab.
    table: Option<DevBuf>,
}

/// KV blocks of `block_elems` elements of `elem_bytes` each on one GPU.
pub struct DeviceArena {
    gpu: Arc<Gpu>,
    block_elems: usize,
    elem_bytes: usize,
    shift: u32,
    /// Blocks of a reserved arena (its one slab); 0 for a growing one.
    reserved: usize,
    inner: Mutex<Inner>,
}

impl DeviceArena {
    /// An arena that allocates nothing until its first block is taken.
    pub fn growing(gpu: Arc<Gpu>, block_elems: usize, elem_bytes: usize) -> Self {
        Self { gpu, block_elems, elem_bytes, shift: GROW_SHIFT, reserved: 0, inner: Mutex::new(Inner { slabs: vec![], table: None }) }
    }

    /// An arena of `capacity` blocks allocated now, in one slab.
    pub fn reserved(gpu: Arc<Gpu>, block_elems: usize, elem_bytes: usize, capacity: usize) -> Result<Self> {
        if capacity == 0 || capacity > (1 << 31) {
            return Err(Error::Request(format!("a KV pool of {capacity} blocks: between 1 and 2^31 blocks")));
        }
        let slab = gpu.alloc(capacity * block_elems * elem_bytes)?;
        let table = gpu.upload(&[slab.ptr()])?;
        let inner = Inner { slabs: vec![slab], table: Some(table) };
        Ok(Self { gpu, block_elems, elem_bytes, shift: 31, reserved: capacity, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device address of the slab table (0 before the first block).
    pub fn table(&self) -> u64 {
        self.lock().table.as_ref().map_or(0, DevBuf::ptr)
    }

    /// `id >> shift` is a block's slab.
    pub fn shift(&self) -> u32 {
        self.shift
    }

    /// The device the blocks are on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
}

impl KvArena for DeviceArena {
    fn grow(&self) -> Result<usize> {
        if self.reserved > 0 {
            return Err(Error::KvExhausted(self.reserved));
        }
        let mut inner = self.lock();
        if inner.slabs.len() >= MAX_SLABS {
            return Err(Error::KvExhausted(MAX_SLABS << GROW_SHIFT));
        }
        if inner.table.is_none() {
            inner.table = Some(self.gpu.zeros(MAX_SLABS * 8)?);
        }
        let slab = self.gpu.alloc((1 << GROW_SHIFT) * self.block_elems * self.elem_bytes)?;
        let at = inner.slabs.len() * 8;
        let table = inner.table.as_ref().map_or(0, DevBuf::ptr);
        self.gpu.htod(table + at as u64, &slab.ptr().to_le_bytes())?;
        inner.slabs.push(slab);
        Ok(inner.slabs.len() << GROW_SHIFT)
    }

    fn len(&self) -> usize {
        if self.reserved > 0 { self.reserved } else { self.lock().slabs.len() << GROW_SHIFT }
    }

    fn block_bytes(&self) -> usize {
        self.block_elems * self.elem_bytes
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
