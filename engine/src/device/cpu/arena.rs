//! KV block storage in host memory: slabs of 64 blocks, allocated as the pool grows.

use crate::error::Result;
use crate::kv_cache::{KvArena, LayerCache};
use std::any::Any;
use std::sync::Mutex;

/// Blocks per slab (`id >> SHIFT` is the slab).
const SHIFT: u32 = 6;

struct Slab(*mut f32);

/// Host memory holding KV blocks of `block_elems` f32 each.
pub struct HostArena {
    block_elems: usize,
    slabs: Mutex<Vec<Slab>>,
}

// SAFETY: the slabs are plain heap allocations owned by the arena; who writes which block is
// governed by the block pool (a block belongs to one cache at a time).
unsafe impl Send for HostArena {}
unsafe impl Sync for HostArena {}

impl HostArena {
    /// An empty arena of blocks of `block_elems` floats.
    pub fn new(block_elems: usize) -> Self {
        Self { block_elems, slabs: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slab>> {
        self.slabs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One sequence's view of its blocks for a step.
    pub fn view<'a>(&self, layers: &'a [LayerCache]) -> SeqKv<'a> {
        SeqKv { layers, slabs: self.lock().iter().map(|s| s.0).collect(), block_elems: self.block_elems }
    }
}

impl KvArena for HostArena {
    fn grow(&self) -> Result<usize> {
        let slab = vec![0f32; (1 << SHIFT) * self.block_elems].into_boxed_slice();
        let mut slabs = self.lock();
        slabs.push(Slab(Box::into_raw(slab) as *mut f32));
        Ok(slabs.len() << SHIFT)
    }

    fn len(&self) -> usize {
        self.lock().len() << SHIFT
    }

    fn block_bytes(&self) -> usize {
        self.block_elems * std::mem::size_of::<f32>()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for HostArena {
    fn drop(&mut self) {
        let n = (1 << SHIFT) * self.block_elems;
        for s in self.lock().drain(..) {
            // SAFETY: each slab came from Box::into_raw of a boxed slice of n floats, freed once.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(s.0, n)) });
        }
    }
}

/// A sequence's KV blocks during a step: its layer caches and where its arena's slabs are.
pub struct SeqKv<'a> {
    pub layers: &'a [LayerCache],
    slabs: Vec<*mut f32>,
    block_elems: usize,
}

// SAFETY: the slab pointers stay valid for the step (the cache holding this view keeps its pool and
// arena alive); blocks are read by many threads, and each reserved row written by one.
unsafe impl Send for SeqKv<'_> {}
unsafe impl Sync for SeqKv<'_> {}

impl SeqKv<'_> {
    fn ptr(&self, id: u32) -> *mut f32 {
        let slab = self.slabs[(id >> SHIFT) as usize];
        // SAFETY: the id came from this arena's pool, so it lies inside slab `id >> SHIFT`.
        unsafe { slab.add((id as usize & ((1 << SHIFT) - 1)) * self.block_elems) }
    }

    /// Block `id`: keys `[block_rows, kv_dim]` then values.
    pub fn block(&self, id: u32) -> &[f32] {
        // SAFETY: see `ptr`; the block is not written while the step reads it.
        unsafe { std::slice::from_raw_parts(self.ptr(id), self.block_elems) }
    }

    /// Block `id`, to write the rows this step reserved in it.
    ///
    /// # Safety
    /// The caller writes only rows reserved for it and nobody reads them meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn block_mut(&self, id: u32) -> &mut [f32] {
        // SAFETY: see `ptr` and the contract above.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(id), self.block_elems) }
    }
}
